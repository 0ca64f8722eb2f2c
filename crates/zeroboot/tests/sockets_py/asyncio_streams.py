import asyncio, os, signal, socket
async def handle(r, w):
    w.write((await r.readline()).upper()); await w.drain(); w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    usrv = await asyncio.start_unix_server(handle, "/tmp/aio.sock")
    out = []
    for opener in (lambda: asyncio.open_connection("127.0.0.1", port), lambda: asyncio.open_unix_connection("/tmp/aio.sock")):
        r, w = await opener()
        w.write(b"hi there\n"); await w.drain()
        out.append(await r.readline()); w.close()
    p = await asyncio.create_subprocess_exec("echo", "from a subprocess", stdout=asyncio.subprocess.PIPE)
    out.append((await p.communicate())[0])
    srv.close(); usrv.close()
    return out
print(asyncio.run(main()))
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    b.close()
    try:
        a.send(b"x", socket.MSG_NOSIGNAL)
    except BrokenPipeError:
        a.send(b"x")
    os._exit(0)
a.close(); b.close()
print("sigpipe", os.waitpid(pid, 0)[1] & 0x7f == signal.SIGPIPE)
