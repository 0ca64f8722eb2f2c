# flock and fcntl record locks between processes: conflicts, EAGAIN,
# blocking until unlock / close / exit, F_GETLK, OFD locks, EDEADLK.
import errno
import fcntl
import os
import struct
import tempfile
import time

d = tempfile.mkdtemp(prefix="locks-")
p = os.path.join(d, "f")
with open(p, "wb") as f:
    f.write(b"0" * 100)


def err(f, *a):
    try:
        f(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def child(fn):
    """Run fn in a child; it writes one line to a pipe; returns (pid, r)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except OSError as e:
            out = errno.errorcode[e.errno]
        os.write(w, (str(out) + "\n").encode())
        os._exit(0)
    os.close(w)
    return pid, r


def result(pid, r):
    line = os.read(r, 200).decode().strip()
    os.waitpid(pid, 0)
    os.close(r)
    return line


# flock: exclusive vs exclusive in another process (own description).
a = os.open(p, os.O_RDWR)
fcntl.flock(a, fcntl.LOCK_EX)
print("flock other", result(*child(lambda: err(fcntl.flock, os.open(p, os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB))))
# A forked child shares the description, so it shares the lock.
print("flock shared description", result(*child(lambda: err(fcntl.flock, a, fcntl.LOCK_EX | fcntl.LOCK_NB))))
# Another description in the same process conflicts too.
b = os.open(p, os.O_RDONLY)
print("flock same process", err(fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB))


def wait_flock():
    os.close(a)  # the inherited copy of the parent's locked description
    fd = os.open(p, os.O_RDONLY)
    t = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    return round(time.monotonic() - t, 1) >= 0.2


pid, r = child(wait_flock)
time.sleep(0.3)
os.close(a)  # the last descriptor: the lock goes
print("flock waits for close", result(pid, r))
fcntl.flock(b, fcntl.LOCK_SH)
c = os.open(p, os.O_RDONLY)
print("shared with shared", err(fcntl.flock, c, fcntl.LOCK_SH | fcntl.LOCK_NB))
fcntl.flock(b, fcntl.LOCK_UN)
fcntl.flock(c, fcntl.LOCK_UN)
print("bad op", err(fcntl.flock, c, 0))
os.close(b)
os.close(c)

# fcntl record locks (process-owned).
fd = os.open(p, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)  # bytes 0..9
print("other range", result(*child(lambda: err(fcntl.lockf, os.open(p, os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10))))
print("overlap", result(*child(lambda: err(fcntl.lockf, os.open(p, os.O_RDWR), fcntl.LOCK_SH | fcntl.LOCK_NB, 5, 8))))


def getlk():
    fd2 = os.open(p, os.O_RDWR)
    arg = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)
    t, w, s, l, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd2, fcntl.F_GETLK, arg))
    return (t == fcntl.F_WRLCK, s, l, pid == os.getppid())


print("F_GETLK", result(*child(getlk)))
own = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)))
print("own locks do not conflict", own[0] == fcntl.F_UNLCK)
print("write lock on read-only", err(fcntl.lockf, os.open(p, os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB))


def wait_lockf():
    fd2 = os.open(p, os.O_RDWR)
    t = time.monotonic()
    fcntl.lockf(fd2, fcntl.LOCK_EX, 1, 0)
    return time.monotonic() - t >= 0.2


pid, r = child(wait_lockf)
time.sleep(0.3)
# Closing any descriptor of the file releases the process's locks.
os.close(os.dup(fd))
print("lockf waits for close", result(pid, r))
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)


# Released at exit: a child locks and exits; the parent then gets it.
def lock_and_exit():
    fd2 = os.open(p, os.O_RDWR)
    fcntl.lockf(fd2, fcntl.LOCK_EX, 10, 50)
    return "locked"


os.close(fd)
print("child", result(*child(lock_and_exit)))
fd = os.open(p, os.O_RDWR)
print("after exit", err(fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50))

# EDEADLK: parent holds 0..9 and waits for 20..29, held by a child that
# waits for 0..9.
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
r1, w1 = os.pipe()
pid = os.fork()
if pid == 0:
    fd2 = os.open(p, os.O_RDWR)
    fcntl.lockf(fd2, fcntl.LOCK_EX, 10, 20)
    os.write(w1, b"1")
    # Blocks until the parent gives up 0..9 (after its EDEADLK).
    fcntl.lockf(fd2, fcntl.LOCK_EX, 10, 0)
    os._exit(0)
os.read(r1, 1)
time.sleep(0.3)
print("deadlock", err(fcntl.lockf, fd, fcntl.LOCK_EX, 10, 20))
fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
_, st = os.waitpid(pid, 0)
print("child got it", st)

# OFD locks: owned by the description, so two in one process conflict.
F_OFD_SETLK = 37
o1 = os.open(p, os.O_RDWR)
o2 = os.open(p, os.O_RDWR)
fcntl.fcntl(o1, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 10, 0))
print("OFD conflict", err(fcntl.fcntl, o2, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 10, 0)))
print("OFD pid must be 0", err(fcntl.fcntl, o2, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 50, 10, 1)))
print("OFD vs process lock", err(fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0))
os.close(o1)
print("OFD released on close", err(fcntl.fcntl, o2, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 10, 0)))
print("bad whence", err(fcntl.fcntl, o2, fcntl.F_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 7, 0, 10, 0)))
os.unlink(p)
os.rmdir(d)
