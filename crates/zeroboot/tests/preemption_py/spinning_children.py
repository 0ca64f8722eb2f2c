# A process that spins in ring 3 (no system call, no fault) must not keep
# the others from running: a parent waiting with a timeout, polling with
# waitpid(WNOHANG), sleeping or blocked in select, and a SIGALRM due to a
# process that is not the one running, all come back in time. Prints what
# Linux prints (each line was compared with a native run).
import os
import select
import signal
import subprocess
import sys
import time

now = time.monotonic
SPIN = "while True: pass"


def spinner():
    """A forked child that spins until killed."""
    pid = os.fork()
    if pid == 0:
        while True:
            pass
    return pid


def reap(pid):
    os.kill(pid, signal.SIGKILL)
    _, st = os.waitpid(pid, 0)
    return os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL


# CPython's subprocess timeout: Popen.wait polls waitpid(WNOHANG) between
# sleeps that double from 0.5 ms up to 50 ms.
start = now()
try:
    subprocess.call([sys.executable, "-c", SPIN], timeout=0.5)
    print("subprocess returned")
except subprocess.TimeoutExpired:
    print("subprocess timeout", 0.45 < now() - start < 5)

# Many short sleeps while a child spins: each one's end must stop the
# child, however soon it comes after the switch to it.
pid = spinner()
start = now()
polls = 0
while now() - start < 0.5:
    got, _ = os.waitpid(pid, os.WNOHANG)
    polls += got == 0
    time.sleep(0.0005)
print("short sleeps polled", polls > 20, now() - start < 5)
print("killed", reap(pid))

# select() with a timeout on a pipe nobody writes, several times.
pid = spinner()
r, w = os.pipe()
start = now()
ready = [select.select([r], [], [], 0.05)[0] for _ in range(6)]
print("select timeouts", ready == [[]] * 6, 0.29 < now() - start < 5)
print("killed", reap(pid))
os.close(r)
os.close(w)

# Two spinning children at once, the parent sleeping between polls.
pids = [spinner(), spinner()]
start = now()
for _ in range(10):
    time.sleep(0.02)
alive = [os.waitpid(p, os.WNOHANG)[0] == 0 for p in pids]
print("two spinners", alive, 0.19 < now() - start < 5)
print("killed", [reap(p) for p in pids])


class Alarm(Exception):
    pass


def on_alarm(signum, frame):
    raise Alarm()


# SIGALRM for the parent, blocked in a sleep while its child spins.
signal.signal(signal.SIGALRM, on_alarm)
pid = spinner()
start = now()
signal.setitimer(signal.ITIMER_REAL, 0.2)
try:
    time.sleep(30)
    print("sleep not interrupted")
except Alarm:
    print("alarm to the sleeper", 0.15 < now() - start < 5)
# And for the parent in signal.pause().
signal.setitimer(signal.ITIMER_REAL, 0.1)
start = now()
try:
    signal.pause()
except Alarm:
    print("alarm to pause", 0.05 < now() - start < 5)
print("killed", reap(pid))

# SIGALRM for the spinner itself, its parent blocked in waitpid: the
# default action ends the child.
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    while True:
        pass
start = now()
_, st = os.waitpid(pid, 0)
print("spinner killed by", signal.Signals(os.WTERMSIG(st)).name, now() - start < 5)
signal.signal(signal.SIGALRM, signal.SIG_DFL)
