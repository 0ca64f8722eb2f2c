# splice, tee and vmsplice (through os.splice and ctypes), and their
# errors: no pipe end, an offset for a pipe, the same pipe twice.
import ctypes
import errno
import os
import sys
import tempfile
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
libc.tee.restype = ctypes.c_ssize_t


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


libc.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(Iovec), ctypes.c_ulong, ctypes.c_uint]
libc.vmsplice.restype = ctypes.c_ssize_t


def err(f, *a, **kw):
    try:
        f(*a, **kw)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def cerr(r):
    return errno.errorcode[ctypes.get_errno()] if r < 0 else r


d = tempfile.mkdtemp(prefix="splice-")
src = os.path.join(d, "src")
with open(src, "wb") as f:
    f.write(bytes(range(256)) * 40)
r, w = os.pipe()
fin = os.open(src, os.O_RDONLY)
print("file to pipe", os.splice(fin, w, 1000))
print("offset kept", os.lseek(fin, 0, os.SEEK_CUR))
print("at offset", os.splice(fin, w, 24, offset_src=5000), os.lseek(fin, 0, os.SEEK_CUR))
out = os.open(os.path.join(d, "out"), os.O_WRONLY | os.O_CREAT, 0o644)
print("pipe to file", os.splice(r, out, 4096))
os.close(out)
with open(os.path.join(d, "out"), "rb") as f:
    data = f.read()
print("bytes right", data == (bytes(range(256)) * 40)[:1000] + (bytes(range(256)) * 40)[5000:5024])
# Errors.
print("no pipe", err(os.splice, fin, os.open(os.path.join(d, "out"), os.O_WRONLY), 10))
wout = os.open(os.path.join(d, "out"), os.O_WRONLY)
print("offset on a pipe", err(os.splice, r, wout, 10, offset_src=0))
print("read-only output", err(os.splice, r, fin, 10))
r2, w2 = os.pipe()
print("same pipe", err(os.splice, r2, w2, 10))
os.set_blocking(r2, False)
print("empty nonblocking", err(os.splice, r2, w, 10))
print("bad fd", err(os.splice, 999, w, 10))
# tee copies without consuming.
os.write(w, b"tee me")
print("tee", cerr(libc.tee(r, w2, 100, 0)))
print("tee left", os.read(r, 100), os.read(r2, 100))
print("tee not pipes", cerr(libc.tee(fin, w2, 10, 0)))
# vmsplice in both directions.
buf = ctypes.create_string_buffer(b"vmspliced", 9)
iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), 9)
print("vmsplice in", cerr(libc.vmsplice(w, ctypes.byref(iov), 1, 0)))
back = ctypes.create_string_buffer(9)
iov2 = Iovec(ctypes.cast(back, ctypes.c_void_p), 9)
print("vmsplice out", cerr(libc.vmsplice(r, ctypes.byref(iov2), 1, 0)), back.raw)
print("vmsplice not a pipe", cerr(libc.vmsplice(fin, ctypes.byref(iov2), 1, 0)))
# A reader with no writer left sees end of file.
os.close(w)
print("eof", os.splice(r, w2, 10))
os.close(wout)
for f in os.listdir(d):
    os.unlink(os.path.join(d, f))
os.rmdir(d)
