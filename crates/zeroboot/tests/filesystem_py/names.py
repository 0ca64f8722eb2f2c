# File names are bytes: a name that is not UTF-8 is created, listed,
# stat'ed, renamed, linked to and removed as natively.
import errno
import os
import tempfile

d = tempfile.mkdtemp(prefix="names-")
db = os.fsencode(d)
bad = b"@test-\xff"
# str names with surrogate escapes are the same bytes.
with open(os.path.join(d, "@test-\udcff"), "w") as f:
    f.write("x")
print("listdir bytes", os.listdir(db) == [bad])
print("listdir str", os.listdir(d) == ["@test-\udcff"])
print("scandir", [e.name for e in os.scandir(db)] == [bad])
print("stat size", os.stat(os.path.join(db, bad)).st_size)
# Names that only differ in bytes that are not UTF-8 are different files,
# and the private-use characters a lossless encoding could use are plain
# names.
for n in [b"\x80", b"\xef\xbe\x80", "\uef80".encode(), b"caf\xc3\xa9", b"\xc3"]:
    open(os.path.join(db, n), "wb").close()
print("distinct", sorted(os.listdir(db)) == sorted([bad, b"\x80", b"\xef\xbe\x80", "\uef80".encode(), b"caf\xc3\xa9", b"\xc3"]))
os.rename(os.path.join(db, bad), os.path.join(db, b"renamed-\xfe"))
print("renamed", b"renamed-\xfe" in os.listdir(db), bad in os.listdir(db))
os.symlink(b"target-\xfd", os.path.join(db, b"link-\xfc"))
print("readlink", os.readlink(os.path.join(db, b"link-\xfc")) == b"target-\xfd")
os.mkdir(os.path.join(db, b"dir-\xfb"))
os.chdir(os.path.join(db, b"dir-\xfb"))
print("getcwd", os.getcwdb() == os.path.join(db, b"dir-\xfb"))
os.chdir("/")
# 255 bytes is the longest name, counted in bytes.
long_ok = b"\xff" * 255
open(os.path.join(db, long_ok), "wb").close()
try:
    open(os.path.join(db, b"\xff" * 256), "wb")
except OSError as e:
    print("256 bytes", errno.errorcode[e.errno])
for n in os.listdir(db):
    p = os.path.join(db, n)
    if os.path.isdir(p) and not os.path.islink(p):
        os.rmdir(p)
    else:
        os.unlink(p)
os.rmdir(d)
print("removed", not os.path.exists(d))
