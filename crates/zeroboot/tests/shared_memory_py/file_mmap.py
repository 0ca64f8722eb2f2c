# MAP_SHARED of a /tmp file: coherent with read/write, with stat's size
# after ftruncate, across fork, and after the last mapping is gone.
import mmap, os

path = "/tmp/zb-shared-mmap"
with open(path, "wb") as f:
    f.write(b"A" * 8192)
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 8192)
print("mapped reads file", m[:4])
os.pwrite(fd, b"WRIT", 100)
print("write seen in map", m[100:104])
m[200:204] = b"MAPP"
print("map seen by pread", os.pread(fd, 4, 200))
os.lseek(fd, 4096, 0)
os.write(fd, b"second")
print("write seen in second page", m[4096:4102])
pid = os.fork()
if pid == 0:
    m[0:5] = b"child"
    os.pwrite(fd, b"kidw", 300)
    os._exit(0)
os.waitpid(pid, 0)
print("child store seen", m[0:5], os.pread(fd, 5, 0))
print("child write seen", m[300:304])
# Another process maps the file independently and sees the same bytes.
pid = os.fork()
if pid == 0:
    fd2 = os.open(path, os.O_RDWR)
    m2 = mmap.mmap(fd2, 8192)
    ok = m2[200:204] == b"MAPP"
    m2[400:404] = b"indp"
    m2.close()
    os._exit(0 if ok else 5)
_, st = os.waitpid(pid, 0)
print("independent map", os.waitstatus_to_exitcode(st) == 0, m[400:404])
os.ftruncate(fd, 16384)
print("size after ftruncate", os.fstat(fd).st_size)
m.resize(16384)
m[12288:12292] = b"grow"
print("grown page via read", os.pread(fd, 4, 12288))
m.flush()
m.close()
os.close(fd)
# With no mapping left, the bytes are the file's.
with open(path, "rb") as f:
    data = f.read()
print("after close", len(data), data[0:5], data[200:204], data[12288:12292])
# A read-only fd cannot be mapped shared and writable.
ro = os.open(path, os.O_RDONLY)
try:
    mmap.mmap(ro, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
except PermissionError as e:
    print("rdonly shared write", e.errno)
r = mmap.mmap(ro, 4096, prot=mmap.PROT_READ)
print("rdonly shared read", r[0:5])
r.close()
os.close(ro)
# An image file (read-only) maps shared for reading.
with open("/etc/os-release", "rb") as f:
    im = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print("image shared read", im[:4] == f.read(4))
    im.close()
os.unlink(path)
