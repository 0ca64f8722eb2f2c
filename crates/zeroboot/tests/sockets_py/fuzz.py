# Random socket calls with random, boundary and pointer arguments on
# sockets of every kind (non-blocking, so nothing waits forever), from
# ring 3; the seed is argv[1].
import ctypes, random, socket, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
import sys
rnd = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
# Big enough for any transfer (a call moves at most 4 MiB) from any
# offset used below: the fuzzer never scribbles on its own heap.
buf = ctypes.create_string_buffer(8 << 20)
B = ctypes.addressof(buf)
fds = []
for fam, ty in [(1, 1), (1, 2), (1, 5), (2, 1), (2, 2), (10, 1), (10, 2)]:
    for _ in range(2):
        fds.append(socket.socket(fam, ty | socket.SOCK_NONBLOCK).detach())
for _ in range(3):
    a, b = socket.socketpair(1, rnd.choice([1, 2, 5]) | socket.SOCK_NONBLOCK)
    fds += [a.detach(), b.detach()]
def arg():
    c = rnd.random()
    if c < 0.3: return rnd.choice(fds)
    if c < 0.5: return B + rnd.randrange(0, 4000)
    if c < 0.6: return rnd.choice([0, 1, 2, 16, 28, 110, 128, 4096])
    if c < 0.7: return rnd.choice([-1, 1 << 31, 1 << 63, (1 << 64) - 1, 0xdead0000])
    return rnd.getrandbits(rnd.choice([8, 16, 32, 64]))
calls = [41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 288, 307, 0, 1, 3, 7, 232]
ok = 0
for i in range(20000):
    # keep the buffer holding plausible structures now and then
    if i % 50 == 0:
        raw = bytes(rnd.getrandbits(8) for _ in range(256))
        ctypes.memmove(B, raw, 256)
        ctypes.memmove(B, (rnd.choice([1, 2, 10, 0])).to_bytes(2, "little") + b"\x1f\x90\x7f\x00\x00\x01", 8)
    nr = rnd.choice(calls)
    if nr == 7: args = [B, 0, 0]
    elif nr == 232: continue
    else: args = [arg() for _ in range(6)]
    # The kernel reads descriptors as 32-bit ints: keep stdio alive.
    low = args[0] & 0xffffffff
    if nr == 3 and (rnd.random() < 0.9 or low < 3): continue
    if nr in (1, 0) and low < 3: continue
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a if a < (1 << 63) else a - (1 << 64)) for a in args])
    if r >= 0: ok += 1
    if r > 2 and nr in (41, 43, 288, 47):
        # New descriptors (sockets, accepted, received) never block.
        for fd in range(3, 1024):
            libc.fcntl(fd, 4, os.O_NONBLOCK)
        if nr != 47 and r < 1024: fds.append(r)
    if nr == 53 and r == 0:
        sv = (ctypes.c_int * 2).from_address(args[3]) if args[3] >= B and args[3] < B + 4090 else None
        if sv:
            for fd in sv:
                if 2 < fd < 1024:
                    libc.fcntl(fd, 4, os.O_NONBLOCK); fds.append(fd)
print("done", ok > 100)
