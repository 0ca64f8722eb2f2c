"""The official MCP Python SDK through a fleet's front (docs/fleet.md;
the fleet: tests/fleet.py): HAProxy, two gateways, three nodes. An MCP
session is pinned to the node it began on (the gateway prefixes the
node's session id with the node's key), so a session works whichever
gateway HAProxy picks for each request, its sandboxes live on its node
and end with it, and a session whose node died is told so (404: start a
new session). Run by ``run-mcp-tests.sh``.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

import conftest  # noqa: E402
import fleet as fleet_mod  # noqa: E402

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "fleet-test", "version": "1"},
    },
}


@pytest.fixture(scope="module")
def fleet():
    work = Path(tempfile.mkdtemp(prefix="zeroboot-mcp-fleet-"))
    keys = work / "keys.json"
    keys.write_text(json.dumps([conftest.TEST_KEY, conftest.OTHER_KEY]))
    f = fleet_mod.start(work, conftest._server_binary(), keys, conftest._die_with_parent)
    try:
        yield f
    finally:
        f.stop()


def client(url: str):
    headers = {"Authorization": "Bearer " + conftest.TEST_KEY}
    return Client(streamable_http_client(url + "/mcp", http_client=create_mcp_http_client(headers=headers)))


def text(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def post(url: str, body: dict, session: str | None = None):
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": "Bearer " + conftest.TEST_KEY,
    }
    if session:
        h["Mcp-Session-Id"] = session
    req = urllib.request.Request(url + "/mcp", data=json.dumps(body).encode(), headers=h, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def key_of(sandbox_id: str) -> str:
    return sandbox_id[1 : 1 + int(sandbox_id[0])]


def test_sessions_are_pinned_to_a_node_through_either_gateway(fleet):
    async def session(i: int):
        async with client(fleet.url) as c:
            r = await c.call_tool("create_sandbox", {})
            assert not r.is_error, text(r)
            sid = r.structured_content["sandbox_id"]
            # Every later request of the session, whichever gateway
            # HAProxy sends it through, reaches that sandbox's node.
            for step in range(4):
                r = await c.call_tool("run_code", {"code": "x = %d" % step if step == 0 else "x += 1", "sandbox_id": sid})
                assert not r.is_error, text(r)
            r = await c.call_tool("run_code", {"code": "print(x)", "sandbox_id": sid})
            assert text(r).strip() == "3", text(r)
            r = await c.call_tool("write_file", {"sandbox_id": sid, "path": "s.txt", "content": "session %d" % i})
            assert not r.is_error, text(r)
            r = await c.call_tool("run_command", {"sandbox_id": sid, "command": "cat s.txt"})
            assert text(r).strip() == "session %d" % i, text(r)
            # One-shot code needs no sandbox of the session's.
            r = await c.call_tool("run_code", {"code": "print(6*7)"})
            assert text(r).strip() == "42", text(r)
            r = await c.call_tool("list_sandboxes", {})
            assert sid in text(r)
            return sid

    sids = [anyio.run(session, i) for i in range(6)]
    assert len({key_of(s) for s in sids}) >= 2, sids
    # Each session ended (DELETE, routed to its node): its sandboxes too.
    deadline = time.monotonic() + 10
    for sid in sids:
        while (st := fleet_mod.get(fleet.url + "/sandboxes/" + sid, conftest.TEST_KEY)[0]) == 200:
            assert time.monotonic() < deadline, sid + " outlived its session"
            time.sleep(0.1)
        assert st == 404, (sid, st)
    # Both gateways carried MCP requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for g in fleet.gateways:
        with opener.open(g + "/v1/metrics", timeout=5) as r:
            assert 'route="mcp"' in r.read().decode(), g


def test_session_ids_name_their_node_and_a_dead_node_ends_its_sessions(fleet):
    status, headers, _ = post(fleet.url, INIT)
    assert status == 200
    sess = headers["Mcp-Session-Id"]
    key, _, inner = sess.partition(".")
    assert key in fleet_mod.NODE_IPS and inner, sess
    # The node's own id, without the key, is not one the fleet issued.
    for bad in (inner, "n9." + inner, "nokey"):
        status, _, body = post(fleet.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, bad)
        assert status == 404, (bad, status, body)
        assert json.loads(body)["error"]["message"].startswith("Session not found"), body
    post(fleet.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sess)
    status, _, body = post(fleet.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sess)
    assert status == 200, body
    assert b"run_code" in body
    # Its node dies: the session's next request gets 404 at once.
    p = fleet.procs[key]
    p.kill()
    p.wait()
    status, _, body = post(fleet.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, sess)
    assert status == 404, body
    assert key in json.loads(body)["error"]["message"], body

    # New sessions go to the nodes left, and work.
    async def fresh():
        async with client(fleet.url) as c:
            r = await c.call_tool("create_sandbox", {})
            assert not r.is_error, text(r)
            return r.structured_content["sandbox_id"]

    fleet.wait_view(lambda v: v.get(key, {}).get("up") is False, key + " down")
    for _ in range(4):
        assert key_of(anyio.run(fresh)) != key
