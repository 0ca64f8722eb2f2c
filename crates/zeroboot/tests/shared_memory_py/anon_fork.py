# MAP_SHARED anonymous memory across os.fork: the child's stores are the
# parent's loads (and the reverse); MAP_PRIVATE stays private.
import mmap, os

shared = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_SHARED)
private = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)
shared[:5] = b"hello"
private[:5] = b"privy"
pid = os.fork()
if pid == 0:
    ok = shared[:5] == b"hello"
    shared[:5] = b"child"
    shared[60000:60004] = b"tail"
    private[:5] = b"CHILD"
    os._exit(0 if ok else 3)
_, st = os.waitpid(pid, 0)
print("child saw parent", os.waitstatus_to_exitcode(st) == 0)
print("parent sees", shared[:5], shared[60000:60004])
print("private kept", private[:5])
# Many children, each adding to its own slot, all seen by the parent.
kids = []
for i in range(8):
    p = os.fork()
    if p == 0:
        shared[100 + i] = i + 1
        os._exit(0)
    kids.append(p)
for p in kids:
    os.waitpid(p, 0)
print("slots", list(shared[100:108]))
# The parent unmaps; a child forked before still holds the pages.
r, w = os.pipe()
p = os.fork()
if p == 0:
    os.close(w)
    os.read(r, 1)
    os._exit(0 if shared[:5] == b"child" else 4)
os.close(r)
shared.close()
os.write(w, b"x")
_, st = os.waitpid(p, 0)
print("child keeps after parent unmapped", os.waitstatus_to_exitcode(st) == 0)
