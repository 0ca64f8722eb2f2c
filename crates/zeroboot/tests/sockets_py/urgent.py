import functools, socket

# Every line leaves at once (the output is compared line by line).
print = functools.partial(print, flush=True)

# Urgent data (MSG_OOB) to a loopback TCP reader that keeps it inline
# (SO_OOBINLINE, as ftplib's test server does for ABOR) arrives in order
# with the rest of the stream.
srv = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(srv.getsockname())
s, _ = srv.accept()
s.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
print("oobinline", s.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE))
c.sendall(b"ABOR\r\n", socket.MSG_OOB)
c.sendall(b"NOOP\r\n")
data = b""
while len(data) < 12:
    data += s.recv(64)
print("inline", data)
