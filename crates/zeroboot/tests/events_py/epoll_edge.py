import functools, os, select, socket

# Every line leaves at once (the output is compared line by line).
print = functools.partial(print, flush=True)

IN, OUT, ET = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET

# A pipe's read end, edge-triggered: each write is one event; reading is
# not news; after a drain the next write is.
r, w = os.pipe()
os.set_blocking(r, False)
ep = select.epoll()
ep.register(r, IN | ET)
print("empty", ep.poll(0))
os.write(w, b"a")
print("write", ep.poll(0) == [(r, IN)])
print("no news", ep.poll(0))
os.write(w, b"b")
print("more data", ep.poll(0) == [(r, IN)])
print("read", os.read(r, 1), ep.poll(0))
print("drain", os.read(r, 10), ep.poll(0))
os.write(w, b"c")
print("after drain", ep.poll(0) == [(r, IN)])
# The same pipe level-triggered reports while readable.
lt = select.epoll()
lt.register(r, IN)
print("level", lt.poll(0) == [(r, IN)], lt.poll(0) == [(r, IN)])
os.read(r, 10)
print("level drained", lt.poll(0))

# The write end: reported once; a read of a full pipe makes room (news).
ew = select.epoll()
os.set_blocking(w, False)
ew.register(w, OUT | ET)
print("writable", ew.poll(0) == [(w, OUT)], ew.poll(0))
n = 0
try:
    while True:
        n += os.write(w, b"x" * 4096)
except BlockingIOError:
    pass
print("full", n, ew.poll(0))
os.read(r, 8192)
print("room", ew.poll(0) == [(w, OUT)], ew.poll(0))
os.close(r)
os.close(w)

# A connected pair, as CPython's test_epoll checks it.
a, b = socket.socketpair()
a.setblocking(False)
b.setblocking(False)
e = select.epoll()
e.register(a.fileno(), IN | OUT | ET)
e.register(b.fileno(), IN | OUT | ET)
print("pair writable", sorted(e.poll(0)) == sorted([(a.fileno(), OUT), (b.fileno(), OUT)]))
print("pair no news", e.poll(0.1))
a.send(b"hello")
print("pair data", e.poll(0) == [(b.fileno(), IN | OUT)])
print("pair read", b.recv(2), e.poll(0))
print("pair read all", b.recv(3), e.poll(0) == [(a.fileno(), OUT)])
a.send(b"z")
print("pair data again", e.poll(0) == [(b.fileno(), IN | OUT)], e.poll(0))
e.modify(b.fileno(), IN | ET)
print("modify rearms", e.poll(0) == [(b.fileno(), IN)], e.poll(0))
e.unregister(a.fileno())
b.recv(10)
a.send(b"x")
print("after unregister", e.poll(0) == [(b.fileno(), IN)])
a.close()
print("hangup", e.poll(0) == [(b.fileno(), IN | select.EPOLLHUP)], e.poll(0))
b.close()

# EPOLLONESHOT: one report, then nothing until EPOLL_CTL_MOD re-arms it.
r, w = os.pipe()
o = select.epoll()
o.register(r, IN | select.EPOLLONESHOT)
os.write(w, b"1")
print("oneshot", o.poll(0) == [(r, IN)], o.poll(0))
os.write(w, b"2")
print("oneshot disabled", o.poll(0))
o.modify(r, IN | select.EPOLLONESHOT)
print("rearmed", o.poll(0) == [(r, IN)], o.poll(0))

# An epoll watching an edge-triggered epoll: readable only with news.
inner = select.epoll()
inner.register(r, IN | ET)
outer = select.epoll()
outer.register(inner.fileno(), IN)
print("nested news", outer.poll(0) == [(inner.fileno(), IN)])
print("inner", inner.poll(0) == [(r, IN)])
print("nested quiet", outer.poll(0), inner.poll(0))
os.write(w, b"3")
print("nested again", outer.poll(0) == [(inner.fileno(), IN)])

# A blocked wait wakes for new data written by a child.
pid = os.fork()
if pid == 0:
    import time
    time.sleep(0.2)
    os.write(w, b"4")
    os._exit(0)
print("inner drained", inner.poll(0) == [(r, IN)])
print("blocked wait", inner.poll(5) == [(r, IN)])
os.waitpid(pid, 0)
