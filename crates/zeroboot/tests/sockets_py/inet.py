import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("8.8.8.8", 53))
except OSError as e:
    print("8.8.8.8:53", errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_INET6).connect(("2001:4860:4860::8888", 53))
except OSError as e:
    print("v6", errno.errorcode[e.errno])
try:
    socket.create_connection(("127.0.0.1", 9))
except OSError as e:
    print("closed port", errno.errorcode[e.errno])
l = socket.socket()
l.bind(("127.0.0.1", 0))
print("ephemeral", 32768 <= l.getsockname()[1] <= 60999)
l.listen()
l.setblocking(False)
try:
    l.accept()
except BlockingIOError as e:
    print("accept", errno.errorcode[e.errno])
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.connect(l.getsockname())
s, peer = l.accept()
print("peer", peer == c.getsockname(), c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
c.close()
print("eof", s.recv(10))
# A listener on one loopback address takes only that one (and 0.0.0.0,
# which means this host); it is not the IPv6 one.
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
for host in ("127.0.0.1", "127.0.1.1", "0.0.0.0", "::1"):
    try:
        socket.create_connection((host, l.getsockname()[1])).close()
        print(host, "ok")
    except OSError as e:
        print(host, errno.errorcode[e.errno])
