"""The official E2B Python SDK through `zeroboot gateway` (docs/fleet.md):
two nodes (`zeroboot serve --node-key`) and a gateway on loopback, the SDK
pointed at the gateway as at E2B. Sandboxes land on both nodes; commands
and files work on each; list fans out; a killed sandbox is gone. Run by
``run-e2b-tests.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402

def _shared():
    """tests/conftest.py (the server fixture's helpers), by path: the
    nearer conftest.py of tests/e2b shadows its module name."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("zeroboot_tests_shared", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_s = _shared()
TEST_KEY, OTHER_KEY = _s.TEST_KEY, _s.OTHER_KEY
_die_with_parent, _server_binary, free_port = _s._die_with_parent, _s._server_binary, _s.free_port


def _get(url: str) -> tuple[int, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


@pytest.fixture(scope="module")
def fleet():
    binary = _server_binary()
    work = Path(tempfile.mkdtemp(prefix="zeroboot-fleet-"))
    keys = work / "keys.json"
    keys.write_text(json.dumps([TEST_KEY, OTHER_KEY]))
    env = dict(os.environ, ZEROBOOT_API_KEYS_FILE=str(keys))
    procs = []
    log = open(work / "fleet.log", "wb")

    def start(args):
        p = subprocess.Popen(
            [str(binary), *args],
            cwd=str(work),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        procs.append(p)
        return p

    def wait(url, what):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if _get(url + "/v1/health/live")[0] == 200:
                return
            time.sleep(0.1)
        pytest.fail("%s did not come up:\n%s" % (what, (work / "fleet.log").read_text(errors="replace")[-3000:]))

    try:
        nodes = []
        for key in ("fa", "fb"):
            port = free_port()
            start(["serve", "--port", str(port), "--node-key", key, "--languages", "python"])
            nodes.append((key, "http://127.0.0.1:%d" % port))
        for key, url in nodes:
            wait(url, "node " + key)
        gport = free_port()
        args = ["gateway", "--port", str(gport), "--poll-ms", "200"]
        for key, url in nodes:
            args += ["--node", "%s=%s" % (key, url)]
        start(args)
        gurl = "http://127.0.0.1:%d" % gport
        wait(gurl, "gateway")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, h = _get(gurl + "/v1/health")
            if h and sum(1 for n in h["nodes"] if n["ready"]) == 2:
                break
            time.sleep(0.1)
        yield gurl
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


@pytest.fixture()
def via_gateway(fleet, monkeypatch):
    monkeypatch.setenv("E2B_API_URL", fleet)
    monkeypatch.setenv("E2B_SANDBOX_URL", fleet)
    monkeypatch.setenv("E2B_API_KEY", TEST_KEY)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_ACCESS_TOKEN", raising=False)
    return fleet


def test_sandboxes_on_both_nodes_commands_and_files(via_gateway):
    sbxs = [Sandbox.create("python", timeout=120) for _ in range(6)]
    try:
        # The id names its node: `<len><key><random>` (fleet.rs).
        keys = {s.sandbox_id[1:3] for s in sbxs}
        assert keys == {"fa", "fb"}, [s.sandbox_id for s in sbxs]
        for s in sbxs:
            r = s.commands.run("echo hello from $(hostname) && echo %s > /tmp/me" % s.sandbox_id)
            assert r.exit_code == 0
            assert r.stdout.startswith("hello from")
            s.files.write("/home/user/note.txt", "note of " + s.sandbox_id)
        for s in sbxs:
            assert s.files.read("/home/user/note.txt") == "note of " + s.sandbox_id
            assert s.commands.run("cat /tmp/me").stdout == s.sandbox_id + "\n"
        # Streamed output through the gateway.
        seen = []
        s = sbxs[0]
        r = s.commands.run("for i in 1 2 3; do echo line$i; sleep 0.2; done", on_stdout=seen.append)
        assert r.stdout == "line1\nline2\nline3\n"
        assert "".join(seen) == r.stdout
        listed = {x.sandbox_id for x in Sandbox.list().next_items()}
        assert {s.sandbox_id for s in sbxs} <= listed
    finally:
        for s in sbxs:
            s.kill()
    with pytest.raises(Exception) as e:
        Sandbox.connect(sbxs[0].sandbox_id)
    assert "not found" in str(e.value).lower()
