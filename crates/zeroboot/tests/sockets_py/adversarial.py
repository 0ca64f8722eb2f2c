import ctypes, socket, errno, os, struct
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "OK") if r == -1 else r
SENDTO, RECVFROM, SENDMSG, RECVMSG, BIND, LISTEN, CONNECT, GETSOCKOPT, SOCKET = 44, 45, 46, 47, 49, 50, 42, 55, 41
d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
s1, s2 = socket.socketpair()
buf = ctypes.create_string_buffer(64)
addr = ctypes.addressof(buf)
out = []
out.append(("huge dgram", sc(SENDTO, d1.fileno(), addr, 1 << 62, 0, 0, 0)))
out.append(("null stream", sc(SENDTO, s1.fileno(), 0, 1 << 40, 0, 0, 0)))
out.append(("bad msghdr", sc(SENDMSG, s1.fileno(), 1, 0)))
out.append(("bad msghdr recv", sc(RECVMSG, s1.fileno(), 0xdead0000, 0)))
def msghdr(iov, iovlen, ctl=0, ctllen=0):
    m = ctypes.create_string_buffer(struct.pack("QI4xQQQQi4x", 0, 0, iov, iovlen, ctl, ctllen, 0))
    return m, ctypes.addressof(m)
iov = ctypes.create_string_buffer(struct.pack("QQ", addr, 1))
m, ma = msghdr(0xdead0000, 1)
out.append(("bad iovec", sc(SENDMSG, s1.fileno(), ma, 0)))
m, ma = msghdr(ctypes.addressof(iov), 5000)
out.append(("iovlen", sc(SENDMSG, s1.fileno(), ma, 0)))
ctl = ctypes.create_string_buffer(struct.pack("QiiI4x", 20, socket.SOL_SOCKET, socket.SCM_RIGHTS, 9999))
m, ma = msghdr(ctypes.addressof(iov), 1, ctypes.addressof(ctl), 24)
out.append(("garbage fd", sc(SENDMSG, s1.fileno(), ma, 0)))
ctl2 = ctypes.create_string_buffer(struct.pack("Qii8x", 1 << 40, socket.SOL_SOCKET, socket.SCM_RIGHTS))
m, ma = msghdr(ctypes.addressof(iov), 1, ctypes.addressof(ctl2), 24)
out.append(("cmsg_len", sc(SENDMSG, s1.fileno(), ma, 0)))
m, ma = msghdr(ctypes.addressof(iov), 1, ctypes.addressof(ctl2), 1 << 40)
out.append(("controllen", sc(SENDMSG, s1.fileno(), ma, 0)))
many = ctypes.create_string_buffer(struct.pack("Qii", 16 + 4 * 254, socket.SOL_SOCKET, socket.SCM_RIGHTS) + struct.pack("254i", *([s1.fileno()] * 254)) + b"\0" * 8)
m, ma = msghdr(ctypes.addressof(iov), 1, ctypes.addressof(many), 16 + 4 * 254 + 8)
out.append(("254 fds", sc(SENDMSG, s1.fileno(), ma, 0)))
l = socket.socket(socket.AF_UNIX); l.bind("\0adv")
out.append(("backlog 2^31", sc(LISTEN, l.fileno(), 1 << 31)))
u1 = socket.socket(socket.AF_UNIX); u2 = socket.socket(socket.AF_UNIX)
out.append(("addrlen", sc(BIND, u1.fileno(), addr, 1 << 20)))
out.append(("null addr", sc(CONNECT, u2.fileno(), 0, 16)))
out.append(("optlen ptr", sc(GETSOCKOPT, s1.fileno(), socket.SOL_SOCKET, socket.SO_TYPE, addr, 0xdead0000)))
neg = ctypes.c_int(-1)
out.append(("neg optlen", sc(GETSOCKOPT, s1.fileno(), socket.SOL_SOCKET, socket.SO_TYPE, addr, ctypes.addressof(neg))))
out.append(("packet", sc(SOCKET, 17, 3, 0)))
out.append(("bad type", sc(SOCKET, 1, 99, 0)))
out.append(("notsock", sc(LISTEN, 0, 1)))
# The VMM's memory is bounded: forced buffers get the ordinary cap, a
# flood of full sockets stops at the sandbox's bound, descriptors in
# flight at 1024 (ETOOMANYREFS).
s1.setsockopt(socket.SOL_SOCKET, 33, 1 << 30)
out.append(("rcvbufforce", s1.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)))
held, pairs = 0, []
chunk = b"y" * 65536
for i in range(400):
    x, y = socket.socketpair()
    x.setblocking(False)
    pairs.append((x, y))
    while True:
        try:
            held += x.send(chunk)
        except BlockingIOError:
            break
out.append(("flood bounded", held <= 64 << 20))
del pairs
p1, p2 = socket.socketpair()
res = "OK"
for i in range(6):
    try:
        socket.send_fds(p1, [b"f"], [p1.fileno()] * 253)
    except OSError as e:
        res = "%d %s" % (i, errno.errorcode[e.errno])
        break
out.append(("in flight", res))
for k, v in out: print(k, v)
c = socket.socket(socket.AF_UNIX); c.connect("\0adv"); a, _ = l.accept(); c.send(b"ok"); print("still serving", a.recv(2))
