import errno, fcntl, os, pty, select, signal, struct, sys, termios, time, tty
import functools

# Every line leaves at once: children fork with no buffered output.
print = functools.partial(print, flush=True)

TIOCGPTN, TIOCSPTLCK = 0x80045430, 0x40045431

def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))

# openpty: a pair, the slave a tty with a name under /dev/pts.
m, s = os.openpty()
name = os.ttyname(s)
print("openpty", os.isatty(m), os.isatty(s), name.startswith("/dev/pts/"))
print("ptsname matches", os.path.exists(name), os.stat(name).st_rdev == os.fstat(s).st_rdev)
n = struct.unpack("I", fcntl.ioctl(m, TIOCGPTN, b"\0\0\0\0"))[0]
print("TIOCGPTN names it", name == "/dev/pts/%d" % n)

# Slave output reaches the master with NL -> CR NL (OPOST|ONLCR).
os.write(s, b"hello\n")
print("master reads", os.read(m, 100))
# Master input is a line for the slave in canonical mode, echoed back.
os.write(m, b"typed\n")
print("slave reads", os.read(s, 100))
print("echo", os.read(m, 100))
# Raw mode: bytes as they come, no echo.
tty.setraw(s)
os.write(m, b"abc")
print("raw reads", os.read(s, 100))
r, _, _ = select.select([m], [], [], 0.2)
print("no echo in raw", r == [])
# Window size set on the master shows on the slave.
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
print("winsize", struct.unpack("HHHH", fcntl.ioctl(s, termios.TIOCGWINSZ, b"\0" * 8))[:2])
# A locked pty's slave cannot be opened.
m2 = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
n2 = struct.unpack("I", fcntl.ioctl(m2, TIOCGPTN, b"\0\0\0\0"))[0]
try:
    os.open("/dev/pts/%d" % n2, os.O_RDWR | os.O_NOCTTY)
    print("locked slave opened")
except OSError as e:
    print("locked slave", en(e))
fcntl.ioctl(m2, TIOCSPTLCK, struct.pack("i", 0))
s2 = os.open("/dev/pts/%d" % n2, os.O_RDWR | os.O_NOCTTY)
print("unlocked slave opens", os.isatty(s2))
# All slaves closed: the master reads EIO once drained.
os.write(s2, b"last")
os.close(s2)
print("drain", os.read(m2, 100))
try:
    os.read(m2, 100)
    print("read after close: data")
except OSError as e:
    print("read after close", en(e))
os.close(m2)
os.close(m)
os.close(s)

# pty.fork: the child has a controlling terminal; its output and exit
# reach the parent; Ctrl-C typed at the master signals the child.
sys.stdout.flush()
pid, fd = pty.fork()
if pid == 0:
    print("child isatty", os.isatty(0), os.isatty(1))
    print("child tty", os.ttyname(0) == os.ttyname(1))
    t = os.open("/dev/tty", os.O_RDWR)
    os.write(t, b"via dev tty\n")
    print("sid is pid", os.getsid(0) == os.getpid())
    print("fg group", os.tcgetpgrp(0) == os.getpgrp())
    sys.stdout.flush()
    signal.signal(signal.SIGINT, lambda *a: (print("child got SIGINT"), sys.stdout.flush(), os._exit(3)))
    print("ready"); sys.stdout.flush()
    time.sleep(10)
    os._exit(0)
out = b""
while b"ready" not in out:
    out += os.read(fd, 1000)
os.write(fd, b"\x03")
while True:
    try:
        d = os.read(fd, 1000)
    except OSError as e:
        out += ("<%s>" % en(e)).encode()
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
for line in out.decode().replace("\r\n", "\n").split("\n"):
    if line:
        print("from child:", line)
print("child status", os.waitstatus_to_exitcode(st))
