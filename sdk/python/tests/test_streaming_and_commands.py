"""Streaming executions and a live sandbox's commands and files through
this SDK, against a real server."""

from __future__ import annotations

import asyncio
import time

import pytest

from zeroboot import AsyncSandbox, CommandHandle, Sandbox, ZerobootError


def client(server):
    return Sandbox(server.key, base_url=server.url)


def test_stream_yields_output_as_it_is_written(server):
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)\n"
    seen = []
    for ev in client(server).stream(code):
        seen.append((time.monotonic(), ev))
    kinds = [e["type"] for _, e in seen]
    assert kinds[-1] == "result", kinds
    assert seen[-1][1]["exit_code"] == 0
    out = [(t, e["data"]) for t, e in seen if e["type"] == "stdout"]
    assert "".join(d for _, d in out) == "0\n1\n2\n"
    assert len(out) == 3, out
    # Each line arrived when it was printed, not all at the end.
    assert out[2][0] - out[0][0] >= 0.4, out


def test_stream_bad_input_raises(server):
    with pytest.raises(ZerobootError) as e:
        list(client(server).stream("1", language="cobol"))
    assert e.value.status == 400


def test_async_stream(server):
    async def go():
        sb = AsyncSandbox(server.key, base_url=server.url)
        return [ev async for ev in sb.stream("print('hi')")]

    events = asyncio.run(go())
    assert events[0] == {"type": "stdout", "data": "hi\n"}
    assert events[-1]["type"] == "result"


def test_commands_and_files_on_a_handle(server):
    h = client(server).create(template="python", timeout=120)
    try:
        r = h.commands.run("echo hello; echo oops >&2; exit 4")
        assert (r.exit_code, r.stdout, r.stderr) == (4, "hello\n", "oops\n")
        lines = []
        r = h.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=lines.append)
        assert r.ok and "".join(lines) == "1\n2\n3\n"

        bg = h.commands.run("cat", background=True, stdin=True)
        assert isinstance(bg, CommandHandle)
        assert [p["pid"] for p in h.commands.list()] == [bg.pid]
        bg.send_stdin("piped\n")
        bg.close_stdin()
        assert bg.wait().stdout == "piped\n"

        h.files.write("/home/user/data.csv", "a,b\n1,2\n3,4\n")
        assert h.commands.run("wc -l < /home/user/data.csv").stdout == "3\n"
        assert h.files.read("/home/user/data.csv") == "a,b\n1,2\n3,4\n"
        # Code, commands and files share one file system.
        assert h.run("print(open('/home/user/data.csv').read().count(','))") == "3\n"
        assert h.files.exists("/home/user/data.csv")
        assert not h.files.exists("/home/user/nope")
        with pytest.raises(ZerobootError) as e:
            h.files.read("/home/user/nope")
        assert e.value.status == 404

        with pytest.raises(ZerobootError) as e:
            h.commands.run("sleep 10", timeout=1)
        assert e.value.status == 408
    finally:
        h.kill()
