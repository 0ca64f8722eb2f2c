import errno, os
import functools

# Every line leaves at once: children fork with no buffered output.
print = functools.partial(print, flush=True)

def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))

# Nice values are kept per process and inherited by children.
print("nice", os.getpriority(os.PRIO_PROCESS, 0))
os.setpriority(os.PRIO_PROCESS, 0, 5)
print("after set", os.getpriority(os.PRIO_PROCESS, 0), os.nice(0))
print("nice(2)", os.nice(2))
pid = os.fork()
if pid == 0:
    print("child inherits", os.getpriority(os.PRIO_PROCESS, 0))
    os._exit(0)
os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    import time
    time.sleep(5)
    os._exit(0)
os.setpriority(os.PRIO_PROCESS, pid, 10)
print("other process", os.getpriority(os.PRIO_PROCESS, pid))
os.kill(pid, 9)
os.waitpid(pid, 0)
os.setpriority(os.PRIO_PGRP, 0, 3)
print("group", os.getpriority(os.PRIO_PGRP, 0))
print("clamped", (os.setpriority(os.PRIO_PROCESS, 0, 100), os.getpriority(os.PRIO_PROCESS, 0))[1])
for which, who, what in ((os.PRIO_PROCESS, 99999, "no such process"), (7, 0, "bad which")):
    try:
        os.getpriority(which, who)
    except OSError as e:
        print(what, en(e))
# An unprivileged process may raise its nice value, not lower it.
pid = os.fork()
if pid == 0:
    os.setuid(1000)
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError as e:
        print("user lowers", en(e))
    try:
        os.setpriority(os.PRIO_PROCESS, 1, 19) if os.getppid() != 1 else None
        os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)
    except OSError as e:
        print("user sets root's", en(e))
    os._exit(0)
os.waitpid(pid, 0)

# Scheduling policies' priority ranges and the round-robin quantum.
print("fifo", os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO))
print("rr", os.sched_get_priority_min(os.SCHED_RR), os.sched_get_priority_max(os.SCHED_RR))
print("other", os.sched_get_priority_min(os.SCHED_OTHER), os.sched_get_priority_max(os.SCHED_OTHER))
try:
    os.sched_get_priority_max(77)
except OSError as e:
    print("bad policy", en(e))
q = os.sched_rr_get_interval(0)
print("quantum", 0 <= q < 1)
try:
    os.sched_rr_get_interval(99999)
except OSError as e:
    print("quantum of nobody", en(e))

# preadv2/pwritev2: offsets, -1 for the file position, and the flags.
fd = os.open("/tmp/rw2", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
print("pwritev2", os.pwritev(fd, [b"hello ", b"world"], 0, os.RWF_SYNC))
buf = [bytearray(5), bytearray(6)]
print("preadv2", os.preadv(fd, buf, 0, os.RWF_HIPRI), bytes(buf[0] + buf[1]))
os.lseek(fd, 6, 0)
b = bytearray(5)
print("at position", os.preadv(fd, [b], -1), bytes(b), os.lseek(fd, 0, 1))
try:
    os.preadv(fd, [bytearray(1)], 0, 0x1000)
except OSError as e:
    print("unknown flag", en(e))
try:
    os.preadv(fd, [bytearray(1)], -2)
except OSError as e:
    print("negative offset", en(e))
os.close(fd)

# Scheduling policies: the non-real-time ones are kept per process.
print("policy", os.sched_getscheduler(0) == os.SCHED_OTHER, os.sched_getparam(0).sched_priority)
os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
print("batch", os.sched_getscheduler(0) == os.SCHED_BATCH)
os.sched_setparam(0, os.sched_param(0))
for f, args, what in ((os.sched_getscheduler, (-1,), "getscheduler -1"), (os.sched_getparam, (-1,), "getparam -1"),
                      (os.sched_getscheduler, (99999,), "getscheduler nobody"),
                      (os.sched_setscheduler, (0, os.SCHED_BATCH, os.sched_param(5)), "batch priority 5"),
                      (os.sched_setaffinity, (-1, {0}), "setaffinity -1")):
    try:
        f(*args)
        print(what, "ok")
    except OSError as e:
        print(what, en(e))
os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

# utime sets the access and the modification time apart; SEEK_HOLE past
# the data is ENXIO.
with open("/tmp/times", "wb") as f:
    f.write(b"x" * 10)
os.utime("/tmp/times", ns=(1_002_003_000, 4_005_006_000))
st = os.stat("/tmp/times")
print("times", st.st_atime_ns, st.st_mtime_ns)
os.utime("/tmp/times", ns=(7_000_000_000, 4_005_006_000))
print("atime only", os.stat("/tmp/times").st_atime_ns)
fd = os.open("/tmp/times", os.O_RDONLY)
print("hole", os.lseek(fd, 0, os.SEEK_HOLE))
try:
    os.lseek(fd, 10, os.SEEK_HOLE)
except OSError as e:
    print("hole at end", en(e))
os.close(fd)
import shutil, time
os.mkdir("/tmp/timesdir")
os.symlink("x", "/tmp/timesdir/link")
print("new dir and link show now", abs(os.stat("/tmp/timesdir").st_mtime - time.time()) < 60,
      abs(os.lstat("/tmp/timesdir/link").st_mtime - time.time()) < 60)
# zip refuses entries dated before 1980.
print("zip", os.path.basename(shutil.make_archive("/tmp/timesarchive", "zip", "/tmp", "timesdir")))
os.unlink("/tmp/timesarchive.zip")
os.unlink("/tmp/timesdir/link")
os.utime("/tmp/timesdir", ns=(5_000_000_000, 6_000_000_000))
st = os.stat("/tmp/timesdir")
print("dir times", st.st_atime_ns, st.st_mtime_ns)
os.rename("/tmp/timesdir", "/tmp/timesdir2")
print("renamed keeps them", os.stat("/tmp/timesdir2").st_mtime_ns)
os.rmdir("/tmp/timesdir2")
