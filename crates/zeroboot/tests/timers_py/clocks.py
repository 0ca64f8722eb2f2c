# clock_settime without CAP_SYS_TIME, and the CPU-time clocks of a thread
# or a process by id (pthread_getcpuclockid, clock_getcpuclockid).
import errno
import functools
import os
import threading
import time

print = functools.partial(print, flush=True)


def attempt(what, f, *args):
    try:
        r = f(*args)
        print(what, "ok", r if r is None or isinstance(r, bool) else "")
    except OSError as e:
        print(what, errno.errorcode[e.errno])


now = time.clock_gettime(time.CLOCK_REALTIME)
attempt("set realtime", time.clock_settime, time.CLOCK_REALTIME, now)
attempt("set monotonic", time.clock_settime, time.CLOCK_MONOTONIC, 1.0)
attempt("set unknown clock", time.clock_settime, 12345, 1.0)

clk = time.pthread_getcpuclockid(threading.get_ident())
print("thread clock is its own id", clk < 0)
a = time.clock_gettime(clk)
b = time.clock_gettime(clk)
print("thread clock advances", 0 <= a <= b)
print("thread clock resolution", time.clock_getres(clk) > 0)


def process_clock(pid):
    return ((~pid) << 3) | 2


attempt("own process clock", lambda: time.clock_gettime(process_clock(os.getpid())) >= 0)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    os._exit(0)
attempt("child process clock", lambda: time.clock_gettime(process_clock(pid)) >= 0)
os.write(w, b"x")
os.waitpid(pid, 0)
attempt("reaped child's clock", time.clock_gettime, process_clock(pid))
attempt("clock descriptor kind", time.clock_gettime, ((~os.getpid()) << 3) | 3)
