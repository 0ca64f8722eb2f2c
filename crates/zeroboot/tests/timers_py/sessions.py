# Sessions and process groups: setsid, setpgid, getsid/getpgid, killpg.
import os
import signal
import subprocess
import sys
import time

# The sandbox's first process leads its group and session (a container's
# init does): setsid is EPERM for it, as for any group leader.
if os.getpgrp() == os.getpid():
    try:
        os.setsid()
        print("leader setsid succeeded")
    except PermissionError:
        print("leader setsid EPERM")
else:
    print("leader setsid EPERM")
print("own group", os.getpgrp() == os.getpgid(0), os.getsid(0) == os.getsid(os.getpid()))

code = "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())"
p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
print("start_new_session child", p.communicate()[0].decode().strip())

pid = os.fork()
if pid == 0:
    os.setsid()
    ok = os.getpid() == os.getpgrp() == os.getsid(0)
    try:
        os.setsid()
        ok = False
    except PermissionError:
        pass
    os._exit(0 if ok else 1)
print("setsid in a forked child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

# A shell and its background jobs in a new session, ended by one killpg.
p = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
time.sleep(0.5)
print("child leads", os.getsid(p.pid) == p.pid, os.getpgid(p.pid) == p.pid)
start = time.monotonic()
os.killpg(p.pid, signal.SIGTERM)
print("killpg", p.wait(timeout=10), time.monotonic() - start < 5)

# setpgid for a child (Popen's process_group), in the caller's session.
p = subprocess.Popen(["sleep", "30"], process_group=0)
time.sleep(0.2)
print("process_group", os.getpgid(p.pid) == p.pid, os.getsid(p.pid) == os.getsid(0))
os.killpg(os.getpgid(p.pid), signal.SIGKILL)
print("killed", p.wait(timeout=10))

# A child joins its sibling's group; a group that does not exist is EPERM;
# a child that has called execve cannot move (EACCES).
def sleeper():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    return pid


a, b = sleeper(), sleeper()
os.setpgid(a, a)
os.setpgid(b, a)
print("joined", os.getpgid(b) == a, os.getpgid(a) == a)
try:
    os.setpgid(b, 1 << 20)
except PermissionError:
    print("no such group EPERM")
os.killpg(a, signal.SIGKILL)
print("both killed", [os.WTERMSIG(os.waitpid(p, 0)[1]) for p in (a, b)])
p = subprocess.Popen(["sleep", "30"])
time.sleep(0.2)
try:
    os.setpgid(p.pid, 0)
except PermissionError as e:
    print("after execve", e.errno == 13)
p.kill()
p.wait()

for f, args in [(os.setpgid, (1 << 20, 0)), (os.getpgid, (1 << 20,)), (os.getsid, (1 << 20,)), (os.killpg, (1 << 20, 0))]:
    try:
        f(*args)
        print(f.__name__, "succeeded")
    except ProcessLookupError:
        print(f.__name__, "ESRCH")
