"""The network options: `allow_internet_access` and `network` (E2B's shape)
on one-shot runs and sandbox creation, and `LiveSandbox.update_network`
(`PUT /sandboxes/{id}/network`). The request shapes against the stub
server; the behaviour against a real server run with `--network policy`
that allows exactly one loopback port, where this test's own HTTP server
listens (no traffic leaves the loopback)."""

from __future__ import annotations

import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zeroboot import ExecResult, Sandbox

from conftest import TEST_KEY

RESULT = {"id": "a", "output": "", "stdout": "", "stderr": "", "exit_code": 0,
          "network": {"enabled": True, "connections": 1, "bytes_in": 10, "bytes_out": 5,
                      "denied": 0, "dns_queries": 0, "throttled": 0, "udp_dropped": 0}}
CREATED = {"sandboxID": "sb1", "templateID": "python", "envdAccessToken": "t"}


def test_exec_sends_the_network_fields_and_reads_the_accounting(stub):
    stub.reply(200, RESULT)
    sb = Sandbox("k", base_url=stub.url)
    r = sb.exec("x", allow_internet_access=False, network={"allowOut": ["pypi.org"], "deny_out": ["0.0.0.0/0"]})
    assert stub.requests[0].body == {
        "code": "x",
        "language": "python",
        "allow_internet_access": False,
        "network": {"allowOut": ["pypi.org"], "denyOut": ["0.0.0.0/0"]},
    }
    assert isinstance(r, ExecResult)
    assert r.network["connections"] == 1 and "network" not in r.extra
    # Left out, nothing is sent: the server's defaults apply.
    sb.run("y")
    assert stub.requests[1].body == {"code": "y", "language": "python"}


def test_create_sends_them_and_update_network_puts_the_rules(stub):
    stub.reply(200, CREATED)
    sb = Sandbox("k", base_url=stub.url)
    h = sb.create(allow_internet_access=False, network={"allowOut": ["10.0.0.0/8"]})
    body = stub.requests[0].body
    assert body["allow_internet_access"] is False and body["network"] == {"allowOut": ["10.0.0.0/8"]}
    detail = {"sandboxID": "sb1", "allowInternetAccess": False,
              "network": {"enabled": True, "allowOut": ["pypi.org"], "denyOut": []}}
    stub.reply(200, detail)
    assert h.update_network(allow_out=["pypi.org"], allow_internet_access=False) == detail
    req = stub.requests[1]
    assert (req.method, req.path) == ("PUT", "/sandboxes/sb1/network")
    assert req.body == {"allow_internet_access": False, "network": {"allowOut": ["pypi.org"], "denyOut": []}}


def test_bad_network_arguments_are_refused_before_a_request(stub):
    sb = Sandbox("k", base_url=stub.url)
    with pytest.raises(TypeError):
        sb.exec("x", network={"allowOut": "pypi.org"})
    with pytest.raises(TypeError):
        sb.exec("x", network=["pypi.org"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sb.create(allow_internet_access="yes")  # type: ignore[arg-type]
    assert stub.requests == []


@pytest.fixture()
def data_server():
    """An HTTP server on 127.0.0.1 answering every GET with `hello`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


FETCH = """
import urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:%d/", timeout=10).read().decode())
except OSError as e:
    print("refused", getattr(e, "reason", e))
"""


def test_the_rules_take_effect_on_a_server_with_network(server_factory, data_server):
    work = Path(tempfile.mkdtemp(prefix="zeroboot-sdk-net-"))
    srv = server_factory(
        work, work / "state", "python",
        ["--network", "policy", "--net-allow-host", "127.0.0.1:%d" % data_server, "--net-resolver", "static"],
    )
    sb = Sandbox(TEST_KEY, base_url=srv.url)
    code = FETCH % data_server
    # One-shot: allowed by default, refused without internet access
    # unless allowOut names the address.
    r = sb.exec(code)
    assert r.stdout == "hello\n" and r.network["enabled"] is True and r.network["connections"] == 1, r
    r = sb.exec(code, allow_internet_access=False)
    assert r.stdout.startswith("refused") and r.network["denied"] == 1, r
    assert sb.run(code, allow_internet_access=False, network={"allowOut": ["127.0.0.1/32"]}) == "hello\n"
    # A live sandbox created without internet access, then allowed.
    h = sb.create(allow_internet_access=False)
    try:
        assert h.info()["allowInternetAccess"] is False
        assert h.run(code).startswith("refused")
        d = h.update_network(allow_out=["127.0.0.1"], allow_internet_access=False)
        assert d["network"]["allowOut"] == ["127.0.0.1/32"] and d["network"]["enabled"] is True, d
        assert h.run(code) == "hello\n"
        # A malformed rule is the server's 400, naming it; nothing changes.
        with pytest.raises(Exception) as e:
            h.update_network(allow_out=["not a rule"])
        assert "not a rule" in str(e.value)
        assert h.info()["network"]["allowOut"] == ["127.0.0.1/32"]
    finally:
        h.kill()
