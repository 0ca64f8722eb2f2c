# SIGKILL for a child blocked in waitpid on its own child, sent just after
# the parent polled it with waitpid(WNOHANG) (CPython's Popen.kill polls
# first): the child dies at once, not when its child ends. Prints what
# Linux prints.
import os
import signal
import time

for poll_first in (False, True):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", "sleep 3; echo"])
    time.sleep(0.3)
    start = time.monotonic()
    if poll_first:
        os.waitpid(pid, os.WNOHANG)
    os.kill(pid, signal.SIGKILL)
    _, st = os.waitpid(pid, 0)
    print("polled first" if poll_first else "plain", os.WTERMSIG(st), time.monotonic() - start < 1)
