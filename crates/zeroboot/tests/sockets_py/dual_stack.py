import errno, functools, select, socket, time

print = functools.partial(print, flush=True)

# An AF_INET socket and an IPV6_V6ONLY AF_INET6 socket share a port (what
# asyncio's create_server(host=None) binds); without V6ONLY the AF_INET6
# one takes IPv4 too, so it conflicts.
a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
a.bind(("0.0.0.0", 0))
a.listen()
port = a.getsockname()[1]
b = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
try:
    b.bind(("::", port))
    print("dual-stack beside AF_INET: bound")
except OSError as e:
    print("dual-stack beside AF_INET:", errno.errorcode[e.errno])
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
c.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
c.bind(("::", port))
c.listen()
print("v6only beside AF_INET: bound")
d = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
try:
    d.bind(("::", port))
except OSError as e:
    print("second v6only:", errno.errorcode[e.errno])

# Each family's connection reaches its own listener.
for fam, host, lst in ((socket.AF_INET, "127.0.0.1", a), (socket.AF_INET6, "::1", c)):
    k = socket.socket(fam, socket.SOCK_STREAM)
    k.connect((host, port))
    conn, peer = lst.accept()
    k.sendall(b"x")
    print(host, "reached", "AF_INET6" if lst is c else "AF_INET", conn.recv(1))
    k.close()
    conn.close()

# With the AF_INET listener gone, an IPv4 connect is refused: the
# V6ONLY one does not take it.
a.close()
k = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
print("v4 to the v6only port:", errno.errorcode.get(k.connect_ex(("127.0.0.1", port))))
c.close()

# select and poll wait out timeouts under a millisecond (they were
# truncated to no wait at all).
r, w = socket.socketpair()
for name, wait in (("select", lambda t: select.select([r], [], [], t)),
                   ("poll", lambda t: select.poll().poll(t * 1000))):
    short = 0
    for t in (1e-4, 5e-4, 9e-4):
        t0 = time.monotonic()
        wait(t)
        short += time.monotonic() - t0 < t
    print(name, "returned early", short, "times")
