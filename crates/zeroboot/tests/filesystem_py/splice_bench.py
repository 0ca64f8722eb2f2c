# 10 MiB from a file to a pipe read by a child: splice vs read/write
# (one run each; prints MiB/s).
import os
import sys
import tempfile
import time

SIZE = 10 << 20
CHUNK = 64 << 10
d = tempfile.mkdtemp(prefix="splice-bench-")
src = os.path.join(d, "src")
with open(src, "wb") as f:
    f.write(os.urandom(SIZE))


def run(use_splice):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        n = 0
        while True:
            b = os.read(r, CHUNK)
            if not b:
                break
            n += len(b)
        os._exit(0 if n == SIZE else 1)
    os.close(r)
    fd = os.open(src, os.O_RDONLY)
    t = time.perf_counter()
    left = SIZE
    while left:
        if use_splice:
            n = os.splice(fd, w, min(CHUNK, left))
        else:
            n = os.write(w, os.read(fd, min(CHUNK, left)))
        left -= n
    os.close(w)
    _, st = os.waitpid(pid, 0)
    dt = time.perf_counter() - t
    os.close(fd)
    assert st == 0
    return dt


for name, s in (("read/write", False), ("splice", True)):
    dt = run(s)
    print(f"{name}: {SIZE / dt / (1 << 20):.0f} MiB/s ({dt * 1000:.1f} ms)")
os.unlink(src)
os.rmdir(d)
