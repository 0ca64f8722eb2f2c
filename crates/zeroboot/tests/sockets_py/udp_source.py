import ctypes, socket, struct
import functools

# Every line leaves at once: children fork with no buffered output.
print = functools.partial(print, flush=True)

# UDP connect picks a source address; an AF_INET6 socket connected to an
# IPv4 address shows it v4-mapped; a disconnect forgets what connect chose.
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect(("::1", 9))
print("v6", s.getsockname()[0])
s.connect(("::ffff:127.0.0.1", 9))
print("still v6 after reconnect", s.getsockname()[0])

libc = ctypes.CDLL(None, use_errno=True)
unspec = struct.pack("HH12x", 0, 0)
print("disconnect", libc.connect(s.fileno(), unspec, len(unspec)))
print("after disconnect", s.getsockname()[0], s.getsockname()[1] == 0)
s.connect(("::ffff:127.0.0.1", 9))
print("v4-mapped", s.getsockname()[0])
s.close()
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("0.0.0.0", 0))
port = b.getsockname()[1]
b.connect(("127.0.0.1", 9))
print("wildcard bound then connected", b.getsockname() == ("127.0.0.1", port))
libc.connect(b.fileno(), unspec, len(unspec))
print("after disconnect", b.getsockname())
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.bind(("0.0.0.0", port))
c.connect(("127.0.0.1", 9))
libc.connect(c.fileno(), unspec, len(unspec))
print("bound port kept", c.getsockname() == ("0.0.0.0", port))
c.close()
b.close()
# glibc's getaddrinfo sorts with such sockets (it aborted on a non-mapped answer).
print("getaddrinfo", "127.0.0.1" in {a[4][0] for a in socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP)})
