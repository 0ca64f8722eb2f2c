# AF_UNIX as programs use it: socketpairs across fork, descriptor passing,
# servers on a path and on an abstract name, readiness, EOF and EPIPE.
import errno, os, select, socket, stat, struct, threading

a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    for _ in range(3):
        b.send(b.recv(10) + b"!")
    os._exit(0)
for i in range(3):
    a.send(b"p%d" % i)
    print(a.recv(10).decode())
print("child exit", os.waitpid(pid, 0)[1])

# SCM_RIGHTS: a pipe's write end crosses a socketpair.
r, w = os.pipe()
socket.send_fds(a, [b"x"], [w])
os.close(w)
msg, fds, _, _ = socket.recv_fds(b, 10, 4)
os.write(fds[0], b"through the passed pipe")
os.close(fds[0])
print(msg, os.read(r, 100).decode(), os.read(r, 100))

# SCM_CREDENTIALS with SO_PASSCRED.
b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
a.send(b"c")
_, anc, _, _ = b.recvmsg(1, socket.CMSG_SPACE(12))
print("creds", [(l, t, struct.unpack("3i", d)[0] == os.getpid()) for l, t, d in anc])

# A server on a path in /tmp.
path = "/tmp/zb.sock"
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
print("S_ISSOCK", stat.S_ISSOCK(os.stat(path).st_mode))
try:
    socket.socket(socket.AF_UNIX).bind(path)
except OSError as e:
    print("bind again", errno.errorcode[e.errno])
def serve():
    c, _ = srv.accept()
    c.sendall(c.recv(100).upper())
    c.close()
t = threading.Thread(target=serve)
t.start()
c = socket.socket(socket.AF_UNIX)
c.connect(path)
c.sendall(b"hello path")
print(c.recv(100), c.recv(100), c.getpeername())
t.join()

# A server on an abstract name, its client in another process.
srv2 = socket.socket(socket.AF_UNIX)
srv2.bind("\0zb-abstract")
srv2.listen(1)
pid = os.fork()
if pid == 0:
    c = socket.socket(socket.AF_UNIX)
    c.connect("\0zb-abstract")
    c.sendall(b"abstract")
    os._exit(0)
conn, _ = srv2.accept()
print(conn.recv(20), conn.recv(20), os.waitpid(pid, 0)[1])
for name in ("\0nobody", "/tmp/nobody.sock"):
    try:
        socket.socket(socket.AF_UNIX).connect(name)
    except OSError as e:
        print("connect", errno.errorcode[e.errno])

# Non-blocking accept on an empty queue.
srv.setblocking(False)
try:
    srv.accept()
except BlockingIOError as e:
    print("accept", errno.errorcode[e.errno])

# Readiness, EOF after the peer closes, EPIPE after shutdown.
a, b = socket.socketpair()
print("idle", select.select([a], [], [], 0)[0] == [])
b.send(b"z")
print("readable", select.select([a], [], [], 0)[0] == [a])
p = select.poll()
p.register(a, select.POLLIN)
print("poll", p.poll(0) == [(a.fileno(), select.POLLIN)])
a.recv(1)
b.close()
print("eof", a.recv(10), select.select([a], [], [], 0)[0] == [a])
a, b = socket.socketpair()
a.shutdown(socket.SHUT_WR)
try:
    a.send(b"x")
except BrokenPipeError as e:
    print("send", errno.errorcode[e.errno])
print("peer reads eof", b.recv(5))
print("fstat S_IFSOCK", stat.S_ISSOCK(os.fstat(a.fileno()).st_mode))
print("SO_TYPE", a.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE))

# Datagrams on a path and from an abstract name; the default peer closes.
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
u.bind("/tmp/zb-dgram.sock")
v = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
v.bind("\0zb-v")
v.sendto(b"m1", "/tmp/zb-dgram.sock")
print(u.recvfrom(10))
v.connect("/tmp/zb-dgram.sock")
v.send(b"m2")
print(u.recv(10))
u.close()
for _ in range(2):
    try:
        v.send(b"m3")
    except OSError as e:
        print("dgram", errno.errorcode[e.errno])
# SO_RCVTIMEO bounds a blocking receive.
a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100000))
try:
    a.recv(1)
except OSError as e:
    print("timeout", errno.errorcode[e.errno])
