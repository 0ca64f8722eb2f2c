# inotify through the C library: events for creating, writing, closing,
# renaming and removing in a watched directory, and for the watched file
# itself; poll/select readiness, IN_NONBLOCK, rm_watch, errors.
import ctypes
import errno
import os
import select
import struct
import tempfile

libc = ctypes.CDLL(None, use_errno=True)
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_IGNORED, IN_ONLYDIR = 0x400, 0x8000, 0x01000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
NAMES = {IN_MODIFY: "MODIFY", IN_ATTRIB: "ATTRIB", IN_CLOSE_WRITE: "CLOSE_WRITE",
         IN_MOVED_FROM: "MOVED_FROM", IN_MOVED_TO: "MOVED_TO", IN_CREATE: "CREATE",
         IN_DELETE: "DELETE", IN_DELETE_SELF: "DELETE_SELF", IN_IGNORED: "IGNORED"}
WANT = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF


def events(fd):
    out = []
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        return out
    i = 0
    while i < len(buf):
        wd, mask, cookie, n = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b"\0")
        out.append((wd, NAMES.get(mask & 0xffff, hex(mask)), cookie, name))
        i += 16 + n
    return out


def err(r):
    return errno.errorcode[ctypes.get_errno()] if r < 0 else r


d = tempfile.mkdtemp(prefix="inotify-")
fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
print("cloexec", bool(os.get_inheritable(fd)) is False)
wd = libc.inotify_add_watch(fd, d.encode(), WANT)
print("wd", wd)
print("same path same wd", libc.inotify_add_watch(fd, d.encode(), WANT) == wd)
print("empty", events(fd), err(libc.read(fd, ctypes.create_string_buffer(64), 64)))
print("not ready", select.select([fd], [], [], 0)[0])
with open(os.path.join(d, "a"), "w") as f:
    f.write("x")
    f.flush()
print("ready", select.select([fd], [], [], 1)[0] == [fd])
p = select.poll()
p.register(fd, select.POLLIN)
print("poll", p.poll(0) == [(fd, select.POLLIN)])
print("FIONREAD > 0", struct.unpack("i", __import__("fcntl").ioctl(fd, __import__("termios").FIONREAD, b"\0" * 4))[0] > 0)
print([e[1:] for e in events(fd)])
os.rename(os.path.join(d, "a"), os.path.join(d, "b"))
ev = events(fd)
print([(e[1], e[3]) for e in ev], ev[0][2] == ev[1][2] != 0)
os.chmod(os.path.join(d, "b"), 0o600)
os.unlink(os.path.join(d, "b"))
os.mkdir(os.path.join(d, "sub"))
with open(os.path.join(d, "sub", "deep"), "w"):
    pass
print([e[1:] for e in events(fd)])
# A name that is not UTF-8 comes as its bytes.
open(os.path.join(d.encode(), b"\xff"), "w").close()
print([e[3] for e in events(fd)][:1])
os.unlink(os.path.join(d.encode(), b"\xff"))
events(fd)
# A watch on a file: its own events, then DELETE_SELF and IGNORED.
f = os.path.join(d, "watched")
open(f, "w").close()
events(fd)
fw = libc.inotify_add_watch(fd, f.encode(), WANT)
with open(f, "a") as h:
    h.write("y")
os.unlink(f)
# (Linux also queues IN_ATTRIB for the link count before DELETE_SELF; the
# sandbox does not: left out of the comparison.)
print([(e[0] == fw, e[1]) for e in events(fd) if e[0] == fw and e[1] != "ATTRIB"])
print("rm_watch after IGNORED", err(libc.inotify_rm_watch(fd, fw)))
# rm_watch queues IGNORED.
print("rm_watch", err(libc.inotify_rm_watch(fd, wd)), [e[1] for e in events(fd)])
print("rm_watch twice", err(libc.inotify_rm_watch(fd, wd)))
# Errors.
print("missing path", err(libc.inotify_add_watch(fd, (d + "/nope").encode(), WANT)))
open(os.path.join(d, "file"), "w").close()
print("ONLYDIR on a file", err(libc.inotify_add_watch(fd, (d + "/file").encode(), WANT | IN_ONLYDIR)))
print("no events in mask", err(libc.inotify_add_watch(fd, d.encode(), 0)))
print("not inotify", err(libc.inotify_add_watch(0, d.encode(), WANT)))
print("bad flags", err(libc.inotify_init1(1)))
fd2 = libc.inotify_init1(0)
libc.inotify_add_watch(fd2, d.encode(), WANT)
os.unlink(os.path.join(d, "file"))
print("small buffer", err(libc.read(fd2, ctypes.create_string_buffer(8), 8)))
print("then", [e[1:] for e in events(fd2)])
# A blocking read is woken by a change made by another process.
pid = os.fork()
if pid == 0:
    import time
    time.sleep(0.2)
    open(os.path.join(d, "late"), "w").close()
    os._exit(0)
print("blocking read", [e[1:] for e in events(fd2)][:1])
os.waitpid(pid, 0)
os.close(fd)
os.close(fd2)
os.unlink(os.path.join(d, "sub", "deep"))
os.rmdir(os.path.join(d, "sub"))
os.unlink(os.path.join(d, "late"))
os.rmdir(d)
