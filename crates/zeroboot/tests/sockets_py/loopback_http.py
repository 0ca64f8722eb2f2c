import http.server, threading, urllib.request, os, socket
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 8000), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
open("/tmp/hello.txt", "w").write("hello over loopback")
os.chdir("/tmp")
print(urllib.request.urlopen("http://127.0.0.1:8000/hello.txt", timeout=10).read().decode())
pid = os.fork()
if pid == 0:
    body = urllib.request.urlopen("http://localhost:8000/hello.txt", timeout=10).read()
    os._exit(0 if body == b"hello over loopback" else 3)
print("child", os.waitpid(pid, 0)[1] >> 8)
srv.shutdown()
# port 0, udp
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
port = u.getsockname()[1]
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.sendto(b"dg", ("127.0.0.1", port))
d, frm = u.recvfrom(10); print(d, frm[0], 32768 <= port <= 60999)
s6 = socket.socket(socket.AF_INET6); s6.bind(("::1", 0)); s6.listen()
c6 = socket.create_connection(("::1", s6.getsockname()[1])); x, _ = s6.accept(); c6.sendall(b"v6"); print(x.recv(2))
