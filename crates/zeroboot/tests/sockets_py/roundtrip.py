# 1-byte round trips over a socketpair between two processes (p50, µs).
import os, socket, time
a, b = socket.socketpair()
N = 2000
pid = os.fork()
if pid == 0:
    for _ in range(N + 100):
        b.send(b.recv(1))
    os._exit(0)
ts = []
for _ in range(N + 100):
    t = time.perf_counter_ns()
    a.send(b"x")
    a.recv(1)
    ts.append(time.perf_counter_ns() - t)
os.waitpid(pid, 0)
ts = sorted(ts[100:])
print(ts[len(ts) // 2] // 1000)
