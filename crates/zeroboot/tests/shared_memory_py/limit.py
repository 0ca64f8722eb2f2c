# Shared memory and the memory limit (run with --memory 128): a mapping
# larger than the limit is refused, a shared mapping touched by parent and
# child counts once, and touching more shared memory than the limit kills
# the program cleanly.
import mmap, os, sys

try:
    mmap.mmap(-1, 1 << 30, flags=mmap.MAP_SHARED)
except OSError as e:
    print("too large refused", e.errno)
n = 48 << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_SHARED)
for i in range(0, n, 4096):
    m[i] = 1
p = os.fork()
if p == 0:
    for i in range(0, n, 4096):
        m[i] = 2
    os._exit(0)
_, st = os.waitpid(p, 0)
print("child touched it all", os.waitstatus_to_exitcode(st), m[0], m[n - 4096])
sys.stdout.flush()
more = [mmap.mmap(-1, n, flags=mmap.MAP_SHARED) for _ in range(3)]
for x in more:
    for i in range(0, n, 4096):
        x[i] = 3
print("not reached")
