# setitimer/getitimer/alarm, and SIGALRM interrupting blocking calls with
# Linux's EINTR / SA_RESTART rules. Prints what Linux prints.
import os
import signal
import time

now = time.monotonic


class Timeout(Exception):
    pass


def raise_timeout(signum, frame):
    raise Timeout()


# A sleep's deadline ends with it: the next sleep is as long as asked.
start = now()
time.sleep(0.2)
time.sleep(0.2)
print("two sleeps", now() - start >= 0.39)

# alarm() interrupts a sleep (the handler raises) and reports what was left.
signal.signal(signal.SIGALRM, raise_timeout)
start = now()
signal.alarm(1)
try:
    time.sleep(5)
    print("sleep not interrupted")
except Timeout:
    print("alarm interrupted sleep", 0.8 < now() - start < 2.5)
signal.alarm(10)
print("alarm returns", signal.alarm(0))
print("alarm(0) when disarmed", signal.alarm(0))

# A periodic ITIMER_REAL; getitimer sees it; setitimer returns the old one.
hits = []
signal.signal(signal.SIGALRM, lambda s, f: hits.append(now()))
signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
value, interval = signal.getitimer(signal.ITIMER_REAL)
print("getitimer", interval == 0.05, 0 < value <= 0.05)
deadline = now() + 5
while len(hits) < 5 and now() < deadline:
    time.sleep(0.01)
old = signal.setitimer(signal.ITIMER_REAL, 0)
print("periodic", len(hits) >= 5, old[1] == 0.05)
print("disarmed", signal.getitimer(signal.ITIMER_REAL))
time.sleep(0.15)
n = len(hits)
time.sleep(0.15)
print("no more after disarm", len(hits) == n)

# A busy loop is interrupted too (the timer kicks the vCPU).
signal.signal(signal.SIGALRM, raise_timeout)
signal.setitimer(signal.ITIMER_REAL, 0.2)
start = now()
try:
    while True:
        pass
except Timeout:
    print("busy loop interrupted", now() - start < 2)

# A blocking pipe read: without SA_RESTART (Python's default) the read
# fails with EINTR and the handler runs at once.
r, w = os.pipe()
got = []
signal.signal(signal.SIGALRM, lambda s, f: got.append(now()))


def read_with_late_writer(restart):
    got.clear()
    signal.siginterrupt(signal.SIGALRM, not restart)
    pid = os.fork()
    if pid == 0:
        time.sleep(1.0)
        os.write(w, b"x")
        os._exit(0)
    start = now()
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    data = os.read(r, 1)
    os.waitpid(pid, 0)
    return data, round(got[0] - start, 1) if got else None


data, at = read_with_late_writer(restart=False)
print("EINTR read", data, at is not None and at < 0.7)
# With SA_RESTART the read goes on after the handler: the handler only
# reaches Python when the read returns, a second later.
data, at = read_with_late_writer(restart=True)
print("restarted read", data, at is not None and at >= 0.9)

# A raising handler ends a blocked read at the alarm.
signal.signal(signal.SIGALRM, raise_timeout)
signal.setitimer(signal.ITIMER_REAL, 0.2)
start = now()
try:
    os.read(r, 1)
    print("read returned")
except Timeout:
    print("read interrupted", now() - start < 1.5)

# SIGALRM left at its default kills the process that armed it.
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(1)
    time.sleep(10)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child killed by", signal.Signals(os.WTERMSIG(status)).name)

# A child does not inherit its parent's timers.
signal.signal(signal.SIGALRM, lambda s, f: None)
signal.setitimer(signal.ITIMER_REAL, 5)
pid = os.fork()
if pid == 0:
    os._exit(0 if signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) else 1)
_, status = os.waitpid(pid, 0)
print("child timers cleared", os.waitstatus_to_exitcode(status) == 0)
signal.setitimer(signal.ITIMER_REAL, 0)

# Errors as Linux gives them.
try:
    signal.setitimer(signal.ITIMER_REAL, -1)
except Exception as e:
    print("negative", type(e).__name__)
try:
    signal.setitimer(7, 1)
except Exception as e:
    print("bad which", type(e).__name__)

# ITIMER_PROF counts CPU time: it fires during a busy loop.
prof = []
signal.signal(signal.SIGPROF, lambda s, f: prof.append(1))
signal.setitimer(signal.ITIMER_PROF, 0.05)
start = now()
while not prof and now() - start < 5:
    pass
print("ITIMER_PROF fired", bool(prof))

# pause() returns after a handled signal.
signal.signal(signal.SIGALRM, lambda s, f: None)
signal.setitimer(signal.ITIMER_REAL, 0.1)
signal.pause()
print("pause returned")

# sigwait / sigtimedwait / sigwaitinfo take a blocked signal without its
# handler: from a timer, from the process itself, from a child.
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGALRM])
signal.setitimer(signal.ITIMER_REAL, 0.1)
print("sigwait", signal.Signals(signal.sigwait([signal.SIGALRM])).name)
os.kill(os.getpid(), signal.SIGUSR1)
info = signal.sigtimedwait([signal.SIGUSR1], 1)
print("sigtimedwait", info.si_signo == signal.SIGUSR1, info.si_pid == os.getpid())
start = now()
print("timeout", signal.sigtimedwait([signal.SIGUSR1], 0.2), now() - start >= 0.15)
pid = os.fork()
if pid == 0:
    time.sleep(0.2)
    os.kill(os.getppid(), signal.SIGUSR1)
    os._exit(0)
print("from a child", signal.sigwaitinfo([signal.SIGUSR1]).si_signo == signal.SIGUSR1)
os.waitpid(pid, 0)
