"""The official MCP Python SDK (``mcp``, pinned in requirements-mcp.txt) as
the client of zeroboot's MCP server, as an agent would use it: over
streamable HTTP (``/mcp`` with an API key) and over stdio (``zeroboot mcp
--url ...``, and ``zeroboot mcp`` with its own engine). Run by
``run-mcp-tests.sh``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from conftest import _server_binary  # noqa: E402

TOOLS = {
    "run_code",
    "create_sandbox",
    "run_command",
    "read_file",
    "write_file",
    "list_files",
    "kill_sandbox",
    "fork_sandbox",
    "list_sandboxes",
}


def _http(server, key):
    headers = {"Authorization": "Bearer " + key} if key else {}
    return streamable_http_client(
        server.url + "/mcp", http_client=create_mcp_http_client(headers=headers)
    )


def _stdio(server, embedded=False):
    args = ["mcp"] if embedded else ["mcp", "--url", server.url]
    env = {"ZEROBOOT_LOG": "warn"}
    if not embedded:
        env["ZEROBOOT_API_KEY"] = server.key
    return StdioServerParameters(command=str(_server_binary()), args=args, env=env)


@asynccontextmanager
async def connect(server, transport, key=None):
    target = _http(server, key or server.key) if transport == "http" else _stdio(server)
    async with Client(target) as client:
        yield client


def text(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def sandbox_status(server, sandbox_id) -> int:
    """The E2B control plane's status for a sandbox: 200 alive, 404 gone."""
    req = urllib.request.Request(
        server.url + "/sandboxes/" + sandbox_id, headers={"X-API-Key": server.key}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def post_mcp(server, body: bytes, key: str | None, headers=None):
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    if key is not None:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    req = urllib.request.Request(server.url + "/mcp", data=body, headers=h, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


TRANSPORTS = ["http", "stdio"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tools_are_listed_with_schemas(server, transport):
    async def go():
        async with connect(server, transport) as c:
            tools = (await c.list_tools()).tools
            by_name = {t.name: t for t in tools}
            assert set(by_name) == TOOLS
            for t in tools:
                assert t.input_schema["type"] == "object", t.name
                assert len(t.description or "") > 40, t.name
            run_code = by_name["run_code"].input_schema
            assert run_code["required"] == ["code"]
            assert set(run_code["properties"]) == {"code", "language", "timeout", "sandbox_id"}
            assert by_name["write_file"].input_schema["required"] == [
                "sandbox_id",
                "path",
                "content",
            ]

    run(go)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_run_code(server, transport):
    async def go():
        async with connect(server, transport) as c:
            r = await c.call_tool("run_code", {"code": "print(6*7)"})
            assert not r.is_error, text(r)
            assert text(r).strip() == "42"
            assert r.structured_content["exit_code"] == 0
            r = await c.call_tool(
                "run_code", {"code": "console.log([1,2].map(x => x * 21).join(' '))", "language": "javascript"}
            )
            assert not r.is_error, text(r)
            assert text(r).strip() == "21 42"
            # An exception is the code's failure: its traceback and isError.
            r = await c.call_tool("run_code", {"code": "1/0"})
            assert r.is_error
            assert "ZeroDivisionError" in text(r) and "Exit code 1" in text(r)

    run(go)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stateful_sandbox_files_and_commands(server, transport):
    async def go():
        async with connect(server, transport) as c:
            r = await c.call_tool("create_sandbox", {})
            assert not r.is_error, text(r)
            sid = r.structured_content["sandbox_id"]
            assert sid in text(r)
            r = await c.call_tool("run_code", {"code": "x = 41", "sandbox_id": sid})
            assert not r.is_error, text(r)
            r = await c.call_tool("run_code", {"code": "print(x + 1)", "sandbox_id": sid})
            assert text(r).strip() == "42", text(r)

            r = await c.call_tool(
                "write_file", {"sandbox_id": sid, "path": "notes/a.txt", "content": "héllo\nworld\n"}
            )
            assert not r.is_error, text(r)
            r = await c.call_tool("read_file", {"sandbox_id": sid, "path": "/home/user/notes/a.txt"})
            assert text(r) == "héllo\nworld\n"
            r = await c.call_tool("list_files", {"sandbox_id": sid, "path": "notes"})
            assert "/home/user/notes/a.txt (13 bytes)" in text(r), text(r)
            # The code sees the file; a file the code writes is readable.
            code = "print(open('/home/user/notes/a.txt').read().split()[1]); open('/home/user/out.txt','w').write('from code')"
            r = await c.call_tool("run_code", {"code": code, "sandbox_id": sid})
            assert text(r).strip() == "world", text(r)
            r = await c.call_tool("read_file", {"sandbox_id": sid, "path": "out.txt"})
            assert text(r) == "from code"

            r = await c.call_tool("run_command", {"sandbox_id": sid, "command": "cat notes/a.txt | wc -l; pwd"})
            assert not r.is_error, text(r)
            assert text(r).split() == ["2", "/home/user"]
            r = await c.call_tool("run_command", {"sandbox_id": sid, "command": "echo oops >&2; exit 3"})
            assert r.is_error and "oops" in text(r) and "Exit code 3" in text(r)
            assert r.structured_content["exit_code"] == 3

            r = await c.call_tool("read_file", {"sandbox_id": sid, "path": "missing.txt"})
            assert r.is_error and "does not exist" in text(r)
            r = await c.call_tool("list_sandboxes", {})
            assert sid in text(r) and "this session's" in text(r)

            # Copies see the state; each goes its own way.
            r = await c.call_tool("fork_sandbox", {"sandbox_id": sid, "count": 2})
            assert not r.is_error, text(r)
            copies = r.structured_content["sandbox_ids"]
            assert len(copies) == 2 and sid not in copies
            r = await c.call_tool("run_code", {"code": "x = 0", "sandbox_id": copies[0]})
            assert not r.is_error, text(r)
            for cid, want in [(copies[0], "1"), (copies[1], "42"), (sid, "42")]:
                r = await c.call_tool("run_code", {"code": "print(x + 1)", "sandbox_id": cid})
                assert text(r).strip() == want, text(r)
            r = await c.call_tool("read_file", {"sandbox_id": copies[1], "path": "out.txt"})
            assert text(r) == "from code"
            r = await c.call_tool("fork_sandbox", {"sandbox_id": sid, "count": 0})
            assert r.is_error and "`count`" in text(r)
            for cid in copies:
                r = await c.call_tool("kill_sandbox", {"sandbox_id": cid})
                assert not r.is_error, text(r)
            r = await c.call_tool("kill_sandbox", {"sandbox_id": sid})
            assert not r.is_error, text(r)
            r = await c.call_tool("run_code", {"code": "print(x)", "sandbox_id": sid})
            assert r.is_error and "not found" in text(r), text(r)

    run(go)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeouts_are_tool_errors(server, transport):
    async def go():
        async with connect(server, transport) as c:
            t = time.monotonic()
            r = await c.call_tool("run_code", {"code": "while True: pass", "timeout": 1})
            assert r.is_error
            assert "timed out" in text(r).lower(), text(r)
            assert time.monotonic() - t < 15
            # In a live sandbox the run ends the sandbox, and says so.
            sid = (await c.call_tool("create_sandbox", {})).structured_content["sandbox_id"]
            r = await c.call_tool("run_code", {"code": "while True: pass", "timeout": 1, "sandbox_id": sid})
            assert r.is_error and "timed out" in text(r).lower() and "has ended" in text(r), text(r)
            sid = (await c.call_tool("create_sandbox", {})).structured_content["sandbox_id"]
            r = await c.call_tool("run_command", {"sandbox_id": sid, "command": "echo start; sleep 30", "timeout": 1})
            assert r.is_error and "timed out" in text(r).lower() and "start" in text(r), text(r)

    run(go)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_argument_errors_name_the_argument(server, transport):
    async def go():
        async with connect(server, transport) as c:
            r = await c.call_tool("run_code", {})
            assert r.is_error and "`code`" in text(r), text(r)
            r = await c.call_tool("run_code", {"code": 5})
            assert r.is_error and "`code`" in text(r), text(r)
            r = await c.call_tool("run_code", {"code": "1", "timeout": "soon"})
            assert r.is_error and "`timeout`" in text(r), text(r)
            r = await c.call_tool("run_code", {"code": "1", "timeout": 0})
            assert r.is_error and "`timeout`" in text(r), text(r)
            r = await c.call_tool("run_code", {"code": "1", "language": "cobol"})
            assert r.is_error and "`language`" in text(r), text(r)
            r = await c.call_tool("read_file", {"sandbox_id": "nosuchsandbox"})
            assert r.is_error and "`path`" in text(r), text(r)
            r = await c.call_tool("read_file", {"sandbox_id": "nosuchsandbox", "path": "a"})
            assert r.is_error and "not found" in text(r), text(r)

    run(go)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_session_sandboxes_end_with_the_session(server, transport):
    async def go():
        async with connect(server, transport) as c:
            r = await c.call_tool("create_sandbox", {"timeout": 600})
            return r.structured_content["sandbox_id"]

    sid = run(go)
    deadline = time.monotonic() + 10
    while sandbox_status(server, sid) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_status(server, sid) == 404


def test_wrong_key_is_401(server):
    init = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
    ).encode()
    for key in ["wrong-key", None]:
        status, headers, _ = post_mcp(server, init, key)
        assert status == 401
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = post_mcp(server, init, server.key)
    assert status == 200

    async def go():
        async with connect(server, "http", key="wrong-key") as c:
            await c.list_tools()

    with pytest.raises(Exception):
        run(go)


def test_malformed_jsonrpc_gets_jsonrpc_errors(server):
    for body in [b"{not json", b'{"jsonrpc": "2.0", "id": 7, "params": 3}', b"[]"]:
        status, _, raw = post_mcp(server, body, server.key)
        assert 400 <= status < 500, (body, status)
        err = json.loads(raw)
        assert err["jsonrpc"] == "2.0" and err["error"]["code"] in (-32700, -32600), (body, err)


def test_malformed_jsonrpc_over_stdio(server):
    """`zeroboot mcp --url`: a malformed line gets the server's JSON-RPC
    error, and the session goes on."""
    env = dict(os.environ, ZEROBOOT_API_KEY=server.key, ZEROBOOT_LOG="warn")
    p = subprocess.Popen(
        [str(_server_binary()), "mcp", "--url", server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in iter(p.stdout.readline, b"")], daemon=True).start()

    def send(obj):
        line = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        p.stdin.write(line + b"\n")
        p.stdin.flush()

    def reply():
        return json.loads(lines.get(timeout=30))

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert reply()["result"]["serverInfo"]["name"] == "zeroboot"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send(b"{not json")
        err = reply()
        assert err["error"]["code"] in (-32700, -32600), err
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_code", "arguments": {"code": "print(6*7)"}}})
        r = reply()
        assert r["id"] == 2 and r["result"]["content"][0]["text"].strip() == "42", r
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}})
        r = reply()
        assert r["id"] == 3 and r["error"]["code"] == -32602, r
    finally:
        p.stdin.close()
        assert p.wait(timeout=20) == 0


def test_embedded_engine_over_stdio(server):
    """`zeroboot mcp` alone: the engine in the process, no server."""

    async def go():
        async with Client(_stdio(server, embedded=True)) as c:
            assert {t.name for t in (await c.list_tools()).tools} == TOOLS
            r = await c.call_tool("run_code", {"code": "print(6*7)"})
            assert text(r).strip() == "42", text(r)
            sid = (await c.call_tool("create_sandbox", {})).structured_content["sandbox_id"]
            await c.call_tool("run_code", {"code": "x = 41", "sandbox_id": sid})
            r = await c.call_tool("run_code", {"code": "print(x + 1)", "sandbox_id": sid})
            assert text(r).strip() == "42", text(r)

    run(go)
