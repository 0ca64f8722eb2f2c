import functools, os, shutil

# Every line leaves at once (the output is compared line by line).
print = functools.partial(print, flush=True)


def sane(u):
    return u.total > 0 and u.used > 0 and u.free >= 0 and u.total >= u.used and u.total > u.free


# What shutil.disk_usage (statvfs) says of the root, an image directory and
# a file in it (CPython's test_shutil asks about its own directory).
print("root", sane(shutil.disk_usage("/")))
print("image dir", sane(shutil.disk_usage("/usr/lib")))
print("image file", sane(shutil.disk_usage("/usr/bin/python3")))
# The same file system whatever path is asked, and fstatvfs agrees.
a, b = os.statvfs("/"), os.statvfs("/usr/lib")
print("one fs", a.f_blocks == b.f_blocks, a.f_bsize == b.f_bsize)
fd = os.open("/usr/lib", os.O_RDONLY)
print("fstatvfs", os.fstatvfs(fd).f_blocks == a.f_blocks)
os.close(fd)
print("namemax", a.f_namemax)
print("missing", end=" ")
try:
    os.statvfs("/no/such/dir")
except FileNotFoundError:
    print("ENOENT")
# Data written to the writable layer is used space.
before = shutil.disk_usage("/tmp")
with open("/tmp/statfs-fill", "wb") as f:
    f.write(b"x" * (8 << 20))
    f.flush()
    os.fsync(f.fileno())
after = shutil.disk_usage("/tmp")
print("write uses space", before.free - after.free >= 4 << 20, after.used > before.used)
os.unlink("/tmp/statfs-fill")
