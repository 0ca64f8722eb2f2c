# mknod/mkfifo: FIFOs in the file system open as pipes between processes,
# with Linux's open rules; regular files by mknod; device nodes refused.
import errno
import os
import stat
import tempfile
import time

d = tempfile.mkdtemp(prefix="fifo-")
p = os.path.join(d, "f")
os.mkfifo(p, 0o600)
st = os.stat(p)
print("is fifo", stat.S_ISFIFO(st.st_mode), oct(stat.S_IMODE(st.st_mode)))
print("listed", [(e.name, e.is_file()) for e in os.scandir(d)])
try:
    os.open(p, os.O_WRONLY | os.O_NONBLOCK)
except OSError as e:
    print("writer without reader", errno.errorcode[e.errno])
r = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
print("nonblocking reader opens")
w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
os.write(w, b"hello")
print("read", os.read(r, 100))
os.close(w)
print("eof", os.read(r, 100))
os.close(r)
# A blocking reader waits for a writer in another process.
pid = os.fork()
if pid == 0:
    time.sleep(0.2)
    with open(p, "wb") as f:
        f.write(b"from the child")
    os._exit(0)
t = time.monotonic()
with open(p, "rb") as f:
    waited = time.monotonic() - t
    print("blocking reader", f.read(), waited > 0.1)
os.waitpid(pid, 0)
# A blocking writer waits for a reader.
pid = os.fork()
if pid == 0:
    with open(p, "wb") as f:
        f.write(b"x" * 100000)
    os._exit(0)
time.sleep(0.2)
with open(p, "rb") as f:
    print("big write", len(f.read()))
_, status = os.waitpid(pid, 0)
print("writer status", status)
# O_RDWR never waits.
fd = os.open(p, os.O_RDWR)
os.write(fd, b"self")
print("rdwr", os.read(fd, 10))
os.close(fd)
# mknod: a regular file, a FIFO; devices are not for the sandbox.
os.mknod(os.path.join(d, "reg"), 0o644 | stat.S_IFREG)
print("mknod regular", stat.S_ISREG(os.stat(os.path.join(d, "reg")).st_mode))
os.mknod(os.path.join(d, "fifo2"), 0o644 | stat.S_IFIFO)
print("mknod fifo", stat.S_ISFIFO(os.stat(os.path.join(d, "fifo2")).st_mode))
try:
    os.mknod(os.path.join(d, "reg"), 0o644)
except OSError as e:
    print("exists", errno.errorcode[e.errno])
try:
    os.mknod(os.path.join(d, "missing", "x"), 0o644 | stat.S_IFIFO)
except OSError as e:
    print("missing dir", errno.errorcode[e.errno])
for f in os.listdir(d):
    os.unlink(os.path.join(d, f))
os.rmdir(d)
