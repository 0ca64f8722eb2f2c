# read and write of an overlay file with a buffer that ends in an unmapped
# page: Linux copies up to that page and returns a short count, or EFAULT
# when not one byte could be copied. Large transfers go in one call.
import ctypes, errno, os

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.write.argtypes = libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
PG = 4096
p = libc.mmap(None, 3 * PG, 3, 0x22, -1, 0)
ctypes.memset(p, 65, 3 * PG)
libc.munmap(ctypes.c_void_p(p + 2 * PG), PG)

fd = os.open("/tmp/partial", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
print("short write", libc.write(fd, p + 100, 3 * PG))
r = libc.write(fd, p + 2 * PG, 10)
print("write from unmapped", r, errno.errorcode.get(ctypes.get_errno()))
print("empty write", libc.write(fd, p, 0))
os.close(fd)
print("size", os.path.getsize("/tmp/partial"))

fd = os.open("/tmp/partial", os.O_RDONLY)
print("short read", libc.read(fd, p + PG, 3 * PG))
print("offset", os.lseek(fd, 0, os.SEEK_CUR))
os.lseek(fd, 0, os.SEEK_SET)
r = libc.read(fd, p + 2 * PG, 10)
print("read into unmapped", r, errno.errorcode.get(ctypes.get_errno()))
os.close(fd)

data = bytes(range(256)) * 40960 * 3  # 30 MiB
fd = os.open("/tmp/big", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
print("big write", os.write(fd, data))
print("big pread", os.pread(fd, len(data), 0) == data)
os.close(fd)
with open("/tmp/big", "ab") as f:
    f.write(b"tail")
with open("/tmp/big", "rb") as f:
    back = f.read()
print("appended", len(back), back[-4:], back[:len(data)] == data)
