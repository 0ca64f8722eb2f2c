"""``LiveSandbox.run_code`` (the code interpreter) through this SDK against
a real server serving the ``code-interpreter`` template (the server's
``--languages``; run-tests.sh asks for it)."""

from __future__ import annotations

import base64
import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List

import pytest

from zeroboot import CodeContext, Execution, Result, Sandbox, ZerobootError


def _served(server: Any) -> bool:
    req = urllib.request.Request(server.url + "/v1/health", headers={"Authorization": "Bearer " + server.key})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        body = json.loads(r.read())
    return body.get("templates", {}).get("code-interpreter", {}).get("ready") is True


@pytest.fixture()
def handle(server: Any):
    if not _served(server):
        pytest.skip("the server does not serve code-interpreter (ZEROBOOT_TEST_LANGUAGES)")
    h = Sandbox(server.key, base_url=server.url).create(template="code-interpreter", timeout=120)
    try:
        yield h
    finally:
        h.kill()


def test_run_code_state_results_and_callbacks(handle: Any) -> None:
    assert handle.run_code("x = 20").error is None
    out: List[str] = []
    results: List[Result] = []
    ex = handle.run_code(
        "print('hello')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\nx * 2 + 2",
        on_stdout=out.append,
        on_result=results.append,
    )
    assert isinstance(ex, Execution)
    assert ex.text == "42"
    assert out == ["hello\n"] and ex.logs.stdout == ["hello\n"]
    assert len(results) == 2 and results == ex.results
    assert base64.b64decode(results[0].png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "png" in results[0].formats() and not results[0].is_main_result
    assert ex.execution_count == 2


def test_run_code_errors_timeout_and_contexts(handle: Any) -> None:
    ex = handle.run_code("{}['missing']")
    assert ex.error is not None and ex.error.name == "KeyError"
    # Our timeout interrupts the cell in the sandbox; the context lives on.
    handle.run_code("kept = 1")
    ex = handle.run_code("while True: pass", timeout=1)
    assert ex.error is not None and ex.error.name == "KeyboardInterrupt"
    assert handle.run_code("kept + 1").text == "2"

    ctx = handle.create_code_context()
    assert isinstance(ctx, CodeContext)
    assert handle.run_code("kept", context=ctx).error.name == "NameError"
    assert ctx.id in [c.id for c in handle.list_code_contexts()]
    handle.remove_code_context(ctx)
    with pytest.raises(ZerobootError) as e:
        handle.run_code("1", context=ctx)
    assert e.value.status == 404
    assert handle.run_code("echo $((6 * 7))", language="bash").logs.stdout == ["42\n"]
    with pytest.raises(ZerobootError):
        handle.run_code("1", language="cobol")


def test_one_shot_run_code_returns_rich_results(server: Any) -> None:
    """``Sandbox.run_code``: ``/v1/exec`` with ``results: true``, a
    stateless cell on the code-interpreter template."""
    if not _served(server):
        pytest.skip("the server does not serve code-interpreter (ZEROBOOT_TEST_LANGUAGES)")
    sb = Sandbox(server.key, base_url=server.url)
    ex = sb.run_code("import matplotlib.pyplot as plt\nprint('hi')\nplt.plot([1, 2]); plt.show()\n6 * 7")
    assert isinstance(ex, Execution)
    assert ex.text == "42" and ex.error is None
    assert ex.logs.stdout == ["hi\n"]
    pngs = [r for r in ex.results if r.png]
    assert len(pngs) == 1 and not pngs[0].is_main_result
    assert base64.b64decode(pngs[0].png)[:8] == b"\x89PNG\r\n\x1a\n"
    # A DataFrame as the last value: html and text.
    ex = sb.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert ex.results and "<table" in (ex.results[0].html or "") and ex.results[0].text
    # An exception is the execution's error, not an HTTP error.
    ex = sb.run_code("1 / 0")
    assert ex.error is not None and ex.error.name == "ZeroDivisionError"
    assert "ZeroDivisionError" in ex.error.traceback
    # Stateless: the next call does not see this one's names.
    assert sb.run_code("y = 5").error is None
    assert sb.run_code("y").error.name == "NameError"
    assert sb.run_code("echo $((6 * 7))", language="bash").logs.stdout == ["42\n"]
    ex = sb.run_code("console.log(6 * 7); 6 * 7", language="javascript")
    assert ex.logs.stdout == ["42\n"] and ex.text == "42"
    # A cell past its time limit.
    ex = sb.run_code("while True: pass", timeout=1)
    assert ex.error is not None and ex.error.name == "TimeoutError"
    assert sb.run_code("2 + 2").text == "4"


def test_one_shot_results_bad_input(server: Any, server_factory: Any) -> None:
    if not _served(server):
        pytest.skip("the server does not serve code-interpreter (ZEROBOOT_TEST_LANGUAGES)")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(srv: Any, body: Any) -> Any:
        req = urllib.request.Request(
            srv.url + "/v1/exec",
            data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + srv.key, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with opener.open(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = post(server, {"code": "raise ValueError('x')", "results": True})
    assert status == 200 and body["exit_code"] == 1
    assert body["exception"]["name"] == "ValueError" and body["results"] == []
    status, body = post(server, {"code": "1", "results": True, "language": "cobol"})
    assert status == 400 and "cobol" in body["error"]
    status, body = post(server, {"code": "1", "results": True, "stream": True})
    assert status == 400 and "stream" in body["error"]
    status, body = post(server, {"code": "1", "results": "yes"})
    assert status == 422
    # A flood is capped like a plain run's output, with the marker.
    status, body = post(server, {"code": "print('x' * 100000)", "results": True, "max_output_bytes": 1000})
    assert status == 200 and body["truncated"] is True and "output truncated" in body["stdout"]
    assert len(body["stdout"]) < 2000
    # A server without the template says how to get it.
    work = Path(tempfile.mkdtemp(prefix="zeroboot-sdk-py-"))
    plain = server_factory(work, work / "state", "python")
    status, body = post(plain, {"code": "1", "results": True})
    assert status == 400 and "code-interpreter" in body["error"]


def test_contexts_survive_pause_snapshot_and_fork(server: Any, handle: Any) -> None:
    """The server's table of contexts goes with the sandbox: into its
    checkpoint (pause to disk, snapshots) and into its copies (fork)."""
    ctx = handle.create_code_context()
    assert handle.run_code("v = 7", context=ctx).error is None
    (copy,) = handle.fork(count=1, timeout=60)
    try:
        assert copy.run_code("v", context=ctx.id).text == "7"
    finally:
        copy.kill()
    snap = handle.snapshot()
    assert handle.pause() is True
    c = Sandbox(server.key, base_url=server.url)
    back = c.connect(handle.sandbox_id, timeout=60)
    assert back.run_code("v", context=ctx.id).text == "7"
    assert ctx.id in [x.id for x in back.list_code_contexts()]
    made = c.create(snapshot=snap, timeout=60)
    try:
        assert made.run_code("v + 1", context=ctx.id).text == "8"
    finally:
        made.kill()
        c.delete_snapshot(snap)
