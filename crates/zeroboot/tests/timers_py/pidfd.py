import errno, os, select, signal, socket, time
import functools

# Every line leaves at once: children fork with no buffered output.
print = functools.partial(print, flush=True)

def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))

# A pidfd polls readable when its process exits; waitid(P_PIDFD) reaps it.
pid = os.fork()
if pid == 0:
    time.sleep(0.3)
    os._exit(7)
fd = os.pidfd_open(pid)
print("cloexec", not os.get_inheritable(fd))
p = select.poll()
p.register(fd, select.POLLIN)
print("running", p.poll(0))
print("exited", p.poll(5000) == [(fd, select.POLLIN)])
info = os.waitid(os.P_PIDFD, fd, os.WEXITED)
print("waitid", info.si_pid == pid, info.si_status, info.si_code == os.CLD_EXITED)
try:
    signal.pidfd_send_signal(fd, signal.SIGTERM)
except OSError as e:
    print("signal reaped", en(e))
os.close(fd)

# pidfd_send_signal reaches exactly its process.
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
fd = os.pidfd_open(pid)
signal.pidfd_send_signal(fd, 0)
signal.pidfd_send_signal(fd, signal.SIGKILL)
_, st = os.waitpid(pid, 0)
print("killed", os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL)
os.close(fd)

# Errors.
for args, what in (((0,), "pid 0"), ((-1,), "pid -1"), ((99999,), "no such pid"), ((os.getpid(), 1), "bad flags")):
    try:
        os.close(os.pidfd_open(*args))
        print(what, "opened")
    except OSError as e:
        print(what, en(e))
r, w = os.pipe()
try:
    signal.pidfd_send_signal(r, signal.SIGTERM)
except OSError as e:
    print("not a pidfd", en(e))
try:
    os.waitid(os.P_PIDFD, r, os.WEXITED)
except OSError as e:
    print("waitid not a pidfd", en(e))
# A non-blocking pidfd: waitid without WNOHANG is EAGAIN while it runs.
pid = os.fork()
if pid == 0:
    time.sleep(0.5)
    os._exit(0)
fd = os.pidfd_open(pid, os.O_NONBLOCK)
try:
    os.waitid(os.P_PIDFD, fd, os.WEXITED)
except OSError as e:
    print("nonblocking waitid", en(e))
print("WNOHANG", os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG))
os.waitpid(pid, 0)
# Our own process: a pidfd of ourselves is not our child.
me = os.pidfd_open(os.getpid())
try:
    os.waitid(os.P_PIDFD, me, os.WEXITED | os.WNOHANG)
except OSError as e:
    print("waitid self", en(e))
