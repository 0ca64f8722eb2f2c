"""``LiveSandbox.run_code`` (the code interpreter) through this SDK against
a real server serving the ``code-interpreter`` template (the server's
``--languages``; run-tests.sh asks for it)."""

from __future__ import annotations

import base64
import json
import urllib.request
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
