"""Sandboxes you hold, through this SDK and E2B's control plane over plain
HTTP (bad input, limits, paging): against a real server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Optional, Tuple

import pytest

from zeroboot import LiveSandbox, Sandbox, ZerobootError

from conftest import SANDBOXES_PER_KEY


def client(server: Any, key: Optional[str] = None) -> Sandbox:
    return Sandbox(key or server.key, base_url=server.url)


def http(
    server: Any,
    method: str,
    path: str,
    body: Any = None,
    key: Optional[str] = "default",
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Dict[str, str], Any]:
    """One raw request; returns (status, headers, parsed JSON body or None)."""
    h = dict(headers or {})
    if key == "default":
        key = server.key
    if key is not None:
        h["X-API-Key"] = key
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url + path, data=data, headers=h, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            raw, status, hdrs = r.read(), r.status, dict(r.headers.items())
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers.items())
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    return status, hdrs, (json.loads(raw) if raw else None)


def assert_e2b_error(answer: Tuple[int, Dict[str, str], Any], status: int) -> None:
    got, _, body = answer
    assert got == status, answer
    assert isinstance(body, dict) and body.get("code") == status, answer
    assert isinstance(body.get("message"), str) and body["message"], answer


def test_state_persists_and_stays_private(server):
    sb = client(server)
    h = sb.create(template="python", timeout=300)
    other = sb.create()
    try:
        assert isinstance(h, LiveSandbox)
        assert h.run("x = 41") == ""
        assert h.run("print(x + 1)") == "42\n"
        r = other.exec("print(x)")
        assert r.exit_code == 1 and "NameError" in r.stderr
        # Files persist too; one-shot executions stay fresh.
        h.run("open('/tmp/kept', 'w').write('yes')")
        assert h.run("print(open('/tmp/kept').read())") == "yes\n"
        assert sb.exec("print('x' in globals())").output == "False\n"
    finally:
        assert h.kill() is True
        assert other.kill() is True
    assert h.kill() is False


def test_connect_set_timeout_and_info(server, monkeypatch):
    h = client(server).create(timeout=60, metadata={"suite": "connect"}, envs={"GREETING": "hi"})
    try:
        h.run("n = 1")
        # E2B's idiom: the class method takes the key from the environment.
        monkeypatch.setenv("ZEROBOOT_API_KEY", server.key)
        monkeypatch.setenv("ZEROBOOT_API_URL", server.url)
        again = Sandbox.connect(h.id)
        assert again.run("import os; print(n + 1, os.environ['GREETING'])") == "2 hi\n"
        info = again.info()
        assert info["sandboxID"] == h.id and info["templateID"] == "python"
        assert info["metadata"] == {"suite": "connect"} and info["state"] == "running"
        ids = [s["sandboxID"] for s in Sandbox.list(metadata={"suite": "connect"})]
        assert ids == [h.id]
        h.set_timeout(1)
        deadline = time.monotonic() + 5
        while h.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not h.is_running()
        with pytest.raises(ZerobootError) as e:
            h.run("print(n)")
        assert e.value.status == 410 and "time to live" in e.value.message
    finally:
        h.kill()


def test_code_timeout_or_exit_ends_the_sandbox(server):
    sb = client(server)
    h = sb.create()
    r = h.exec("while True: pass", timeout=0.5)
    assert r.timed_out and r.exit_code == 124
    with pytest.raises(ZerobootError) as e:
        h.run("print(1)")
    assert e.value.status == 410 and "timed out" in e.value.message
    h2 = sb.create()
    assert h2.exec("import sys; sys.exit(3)").exit_code == 3
    assert h2.run("print('still here')") == "still here\n"
    assert h2.exec("import os; os._exit(5)").exit_code == 5
    with pytest.raises(ZerobootError) as e:
        h2.run("print(1)")
    assert e.value.status == 410


def test_node_sandbox_keeps_globals(server):
    h = client(server).create(template="node")
    try:
        h.run("var total = 40; globalThis.seen = ['a']")
        assert h.run("seen.push('b'); console.log(total + 2, seen.join(''))") == "42 ab\n"
    finally:
        h.kill()


def test_e2b_bad_input(server):
    create = lambda body, **kw: http(server, "POST", "/sandboxes", body, **kw)  # noqa: E731
    assert_e2b_error(create({"templateID": "no-such-template"}), 404)
    assert_e2b_error(create({}), 400)
    assert_e2b_error(create({"templateID": "python", "timeout": -1}), 400)
    assert_e2b_error(create({"templateID": "python", "timeout": 10**12}), 400)
    assert_e2b_error(create({"templateID": "python", "timeout": "soon"}), 400)
    assert_e2b_error(create({"templateID": "python", "metadata": {"k": "v" * 10000}}), 400)
    assert_e2b_error(create({"templateID": "python", "metadata": {"k": 1}}), 400)
    assert_e2b_error(create({"templateID": "python", "envVars": {"A=B": "x"}}), 400)
    assert_e2b_error(create(b"{not json"), 400)
    assert_e2b_error(create(b"[1, 2]"), 400)
    assert_e2b_error(create({"templateID": "python"}, key=None), 401)
    assert_e2b_error(create({"templateID": "python"}, key="wrong"), 401)
    bogus = "never" + uuid.uuid4().hex[:15]
    for method, path, body in [
        ("GET", "/sandboxes/%s" % bogus, None),
        ("DELETE", "/sandboxes/%s" % bogus, None),
        ("POST", "/sandboxes/%s/timeout" % bogus, {"timeout": 5}),
        ("POST", "/sandboxes/%s/connect" % bogus, {"timeout": 5}),
        ("POST", "/sandboxes/%s/pause" % bogus, None),
        ("POST", "/sandboxes/%s/resume" % bogus, {"timeout": 5}),
    ]:
        assert_e2b_error(http(server, method, path, body), 404)
    assert_e2b_error(http(server, "GET", "/v2/sandboxes?state=sleeping"), 400)
    assert_e2b_error(http(server, "GET", "/v2/sandboxes?limit=0"), 400)
    assert_e2b_error(http(server, "GET", "/v2/sandboxes?limit=101"), 400)
    assert_e2b_error(http(server, "GET", "/v2/sandboxes?nextToken=garbage"), 400)
    assert http(server, "GET", "/health", key=None)[0] == 204

    status, _, made = create({"templateID": "base", "timeout": 30, "secure": True})
    assert status == 201, made
    sid = made["sandboxID"]
    assert made["templateID"] == "base" and made["envdVersion"] and made["envdAccessToken"]
    assert made["domain"] is None and made["clientID"]
    try:
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/timeout" % sid, {"timeout": -5}), 400)
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/timeout" % sid, {}), 400)
        # Another key does not see it.
        assert_e2b_error(http(server, "GET", "/sandboxes/%s" % sid, key=server.other_key), 404)
        assert_e2b_error(http(server, "DELETE", "/sandboxes/%s" % sid, key=server.other_key), 404)
        # What to keep must be a boolean.
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/pause" % sid, {"memory": "no"}), 400)
        # Pause (in memory) and resume.
        assert http(server, "POST", "/sandboxes/%s/pause" % sid)[0] == 204
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/pause" % sid), 409)
        assert http(server, "GET", "/sandboxes/%s" % sid)[2]["state"] == "paused"
        status, _, _ = http(
            server, "POST", "/v1/sandboxes/%s/exec" % sid, {"code": "print(1)"}
        )
        assert status == 409
        status, _, body = http(server, "POST", "/sandboxes/%s/resume" % sid, {"timeout": 30})
        assert status == 201 and body["sandboxID"] == sid
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/resume" % sid, {"timeout": 30}), 409)
        assert http(server, "POST", "/sandboxes/%s/connect" % sid, {"timeout": 30})[0] == 200
        assert http(server, "POST", "/sandboxes/%s/pause" % sid)[0] == 204
        assert http(server, "POST", "/sandboxes/%s/connect" % sid, {"timeout": 30})[0] == 201
    finally:
        assert http(server, "DELETE", "/sandboxes/%s" % sid)[0] == 204
    assert_e2b_error(http(server, "DELETE", "/sandboxes/%s" % sid), 404)
    assert_e2b_error(http(server, "GET", "/sandboxes/%s" % sid), 404)


def test_e2b_list_filters_and_paging(server):
    tag = uuid.uuid4().hex
    made = []
    try:
        for i in range(3):
            status, _, body = http(
                server,
                "POST",
                "/sandboxes",
                {"templateID": "python", "timeout": 60, "metadata": {"tag": tag, "i": str(i), "odd": "a b&c=d"}},
            )
            assert status == 201, body
            made.append(body["sandboxID"])
        meta = urllib.parse.quote(
            urllib.parse.urlencode({"tag": tag, "odd": urllib.parse.quote("a b&c=d")})
        )
        seen = []
        token = None
        pages = 0
        while True:
            q = "/v2/sandboxes?limit=1&metadata=%s" % meta
            if token:
                q += "&nextToken=" + urllib.parse.quote(token)
            status, headers, body = http(server, "GET", q)
            assert status == 200, body
            assert headers.get("x-total-running") == "3"
            seen += [s["sandboxID"] for s in body]
            pages += 1
            token = headers.get("x-next-token")
            if not token:
                break
        assert pages == 3 and seen == list(reversed(made))
        status, _, body = http(server, "GET", "/v2/sandboxes?order=asc&metadata=%s" % meta)
        assert [s["sandboxID"] for s in body] == made
        listed = body[0]
        for field in ("templateID", "sandboxID", "clientID", "startedAt", "endAt", "cpuCount",
                      "memoryMB", "diskSizeMB", "state", "envdVersion", "metadata"):
            assert field in listed, field
        status, _, body = http(server, "GET", "/sandboxes?metadata=%s" % meta)
        assert status == 200 and sorted(s["sandboxID"] for s in body) == sorted(made)
        http(server, "POST", "/sandboxes/%s/pause" % made[0])
        status, _, body = http(server, "GET", "/v2/sandboxes?state=paused&metadata=%s" % meta)
        assert [s["sandboxID"] for s in body] == [made[0]]
        status, _, body = http(server, "GET", "/sandboxes?metadata=%s" % meta)
        assert sorted(s["sandboxID"] for s in body) == sorted(made[1:])
    finally:
        for sid in made:
            http(server, "DELETE", "/sandboxes/%s" % sid)


def test_limit_per_key_answers_429(server):
    made = []
    try:
        for _ in range(SANDBOXES_PER_KEY):
            status, _, body = http(
                server, "POST", "/sandboxes", {"templateID": "python"}, key=server.other_key
            )
            assert status == 201, body
            made.append(body["sandboxID"])
        answer = http(server, "POST", "/sandboxes", {"templateID": "python"}, key=server.other_key)
        assert_e2b_error(answer, 429)
        # The other key is not affected.
        h = client(server).create()
        h.kill()
    finally:
        for sid in made:
            http(server, "DELETE", "/sandboxes/%s" % sid, key=server.other_key)
    status, _, body = http(server, "POST", "/sandboxes", {"templateID": "python"}, key=server.other_key)
    assert status == 201
    http(server, "DELETE", "/sandboxes/%s" % body["sandboxID"], key=server.other_key)


def test_sandbox_metrics(server):
    h = client(server).create()
    h.run("import subprocess, threading; print(subprocess.run(['echo', 'hi'], capture_output=True).stdout)")
    h.kill()
    req = urllib.request.Request(
        server.url + "/v1/metrics", headers={"Authorization": "Bearer " + server.key}
    )
    text = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).read().decode()
    assert 'zeroboot_sandbox_creations_total{template="python"}' in text
    assert 'zeroboot_sandbox_kills_total{reason="request"}' in text
    assert "zeroboot_sandbox_create_seconds_count" in text
    assert "# TYPE zeroboot_sandboxes gauge" in text
    # Live sandboxes run (and spare forks are made) on threads under the
    # seccomp filter, which refused nothing they needed.
    assert "\nzeroboot_seccomp_denied_total 0\n" in text


def test_a_seed_set_in_one_run_holds_for_the_next(server):
    # The PRNGs are reseeded with a sandbox's first request only.
    c = client(server)
    sb = c.create(timeout=60)
    try:
        sb.run("import numpy as np, random\nnp.random.seed(0)\nrandom.seed(1)")
        got = sb.run("print(np.random.rand(), random.random())")
        assert got == "0.5488135039273248 0.13436424411240122\n", got
    finally:
        sb.kill()


def test_fork_copies_state_files_and_commands(server):
    c = client(server)
    src = c.create(timeout=120)
    copies = []
    try:
        src.run("import numpy as np\na = np.random.rand(10**6)\ns = float(a.sum())")
        src.files.write("/tmp/before.txt", "made before the fork\n")
        bg = src.commands.run("sleep 600", background=True)
        copies = src.fork(count=3, timeout=120)
        assert all(isinstance(h, LiveSandbox) for h in copies), copies
        assert len({h.sandbox_id for h in copies} | {src.sandbox_id}) == 4
        src.files.write("/tmp/after.txt", "made after the fork\n")
        want = src.run("print(s)")
        draws = {src.run("print(np.random.rand())")}
        for h in copies:
            # The same variables...
            assert h.run("print(s)") == want
            # ...and fresh random numbers in each copy.
            draws.add(h.run("print(np.random.rand())"))
            assert h.files.read("/tmp/before.txt") == "made before the fork\n"
            assert not h.files.exists("/tmp/after.txt")
            # The background command runs on in every copy.
            assert bg.pid in [p["pid"] for p in h.commands.list()]
        assert len(draws) == 4, draws
        # Each copy diverges alone.
        copies[0].run("s = -1")
        assert copies[1].run("print(s)") == want
        assert src.run("print(s)") == want
        # A fork of a fork.
        (grand,) = copies[0].fork(count=1, timeout=60)
        copies.append(grand)
        assert grand.run("print(s)") == "-1\n"
        assert grand.files.read("/tmp/before.txt") == "made before the fork\n"
    finally:
        for h in copies + [src]:
            if isinstance(h, LiveSandbox):
                h.kill()


def test_snapshot_and_pause_through_our_sdk(server):
    c = client(server)
    src = c.create(timeout=120)
    made = []
    try:
        src.run("import numpy as np\nx = np.arange(10**6)\nt = int(x.sum())")
        sid = src.snapshot(name="np-%s" % uuid.uuid4().hex[:8])
        src.run("t = -1")
        assert sid in [s["snapshotID"] for s in c.snapshots()]
        # Two sandboxes from the snapshot: the variable as it was, each
        # with fresh random numbers.
        made = [c.create(snapshot=sid, timeout=60) for _ in range(2)]
        for h in made:
            assert h.run("print(t)") == "499999500000\n"
        assert made[0].run("print(np.random.rand())") != made[1].run("print(np.random.rand())")
        # Of the files only: a fresh interpreter, the files there.
        src.run("open('/tmp/kept', 'w').write('k')")
        files_only = src.snapshot(memory=False)
        cold = c.create(snapshot=files_only, timeout=60)
        made.append(cold)
        assert cold.run("print(open('/tmp/kept').read(), 't' in globals())") == "k False\n"
        assert src.pause() is True
        assert src.pause() is False
        assert src.info()["state"] == "paused"
        with pytest.raises(ZerobootError) as e:
            src.run("print(t)")
        assert e.value.status == 409
        back = c.connect(src.sandbox_id, timeout=60)
        assert back.run("print(t)") == "-1\n"
        assert c.delete_snapshot(sid) is True
        assert c.delete_snapshot(sid) is False
        with pytest.raises(ZerobootError) as e:
            c.create(snapshot=sid)
        assert e.value.status == 404
    finally:
        for h in made + [src]:
            h.kill()


def test_fork_while_code_runs(server):
    """A fork in the middle of a run: the run goes on in the copy too
    (unheard there), and only the source's caller gets its result."""
    import threading

    c = client(server)
    src = c.create(timeout=120)
    copies = []
    try:
        src.run("import time")
        out = []
        runner = threading.Thread(
            target=lambda: out.append(src.run("time.sleep(1.5)\nopen('/tmp/done', 'w').write('ran on')\nprint('ran')"))
        )
        runner.start()
        time.sleep(0.5)
        copies = src.fork(count=1, timeout=60)
        assert isinstance(copies[0], LiveSandbox), copies
        runner.join(30)
        assert out == ["ran\n"]
        # The copy's run wrote the file after the fork; until it has ended
        # the copy is busy (409), then it takes runs again.
        deadline = time.monotonic() + 20
        while True:
            try:
                got = copies[0].run("print(open('/tmp/done').read())")
                break
            except ZerobootError as e:
                assert e.status == 409 and time.monotonic() < deadline, e
                time.sleep(0.2)
        assert got == "ran on\n"
        assert src.run("print(open('/tmp/done').read())") == "ran on\n"
    finally:
        for h in copies + [src]:
            if isinstance(h, LiveSandbox):
                h.kill()


def test_fork_bad_input_and_limits(server):
    assert_e2b_error(http(server, "POST", "/sandboxes/neverexisted0000/fork", {"count": 1}), 404)
    h = client(server, server.other_key).create(timeout=60)
    try:
        for bad in [{"count": 0}, {"count": 101}, {"count": "3"}, {"timeout": -1}]:
            assert_e2b_error(http(server, "POST", "/sandboxes/%s/fork" % h.sandbox_id, bad, key=server.other_key), 400)
        # Another key cannot fork it.
        assert_e2b_error(http(server, "POST", "/sandboxes/%s/fork" % h.sandbox_id, {"count": 1}), 404)
        # Over the per-key limit: the copies that fit are made, each of the
        # others fails alone with 429.
        out = h.fork(count=SANDBOXES_PER_KEY + 2, timeout=60)
        made = [x for x in out if isinstance(x, LiveSandbox)]
        failed = [x for x in out if isinstance(x, ZerobootError)]
        try:
            assert len(made) == SANDBOXES_PER_KEY - 1
            assert len(failed) == 3 and all(e.status == 429 for e in failed), failed
            assert all(x.run("print(1)") == "1\n" for x in made)
        finally:
            for x in made:
                x.kill()
    finally:
        h.kill()
