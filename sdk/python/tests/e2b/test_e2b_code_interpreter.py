"""The official ``e2b-code-interpreter`` SDK (pinned in requirements-e2b.txt)
against a real zeroboot server serving the ``code-interpreter-v1`` template
(``--languages ...,code-interpreter``; run-e2b-tests.sh asks for it): cells
that keep state, rich results, errors, streaming, contexts, bash, timeouts
and bad input, as an E2B user would see them.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import urllib.request

import pytest

pytest.importorskip("e2b_code_interpreter")

from e2b import NotFoundException, SandboxException, TimeoutException  # noqa: E402
from e2b_code_interpreter import Sandbox  # noqa: E402
from e2b_code_interpreter.models import Context  # noqa: E402


def _served(server) -> bool:
    req = urllib.request.Request(
        server.url + "/v1/health", headers={"Authorization": "Bearer " + server.key}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        body = json.loads(resp.read())
    return body.get("templates", {}).get("code-interpreter", {}).get("ready") is True


@pytest.fixture()
def sbx(e2b_env):
    if not _served(e2b_env):
        pytest.skip("the server does not serve code-interpreter (ZEROBOOT_TEST_LANGUAGES)")
    s = Sandbox.create(timeout=300)
    try:
        yield s
    finally:
        s.kill()


def test_state_and_last_expression(sbx):
    assert sbx.run_code("x = 1").text is None
    ex = sbx.run_code("x += 1; x")
    assert ex.text == "2"
    assert ex.results[0].is_main_result
    assert ex.error is None
    # A string's value is shown without its quotes, as E2B does.
    assert sbx.run_code("'abc'").text == "abc"
    assert sbx.run_code("print(x)").logs.stdout == ["2\n"]


def test_matplotlib_figure_is_a_png_of_its_size(sbx):
    ex = sbx.run_code(
        "import matplotlib.pyplot as plt, numpy as np\n"
        "xs = np.linspace(0, 2 * np.pi, 200)\n"
        "fig = plt.figure(figsize=(5, 3), dpi=80)\n"
        "plt.plot(xs, np.sin(xs))\n"
        "plt.show()\n"
    )
    assert ex.error is None, ex.error
    pngs = [r for r in ex.results if r.png]
    assert len(pngs) == 1
    data = base64.b64decode(pngs[0].png)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    # 5 x 3 inches at 80 dpi, cropped to the drawing as Jupyter's inline
    # backend does (bbox_inches="tight").
    assert 320 <= width <= 400 and 190 <= height <= 240, (width, height)
    assert not pngs[0].is_main_result
    # A figure as the cell's value is a PNG too.
    ex = sbx.run_code("fig2, ax = plt.subplots(); ax.bar([1, 2], [3, 4]); fig2")
    assert any(r.png and r.is_main_result for r in ex.results)


def test_dataframe_gives_html_and_text(sbx):
    ex = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    r = ex.results[0]
    assert r.is_main_result
    assert "<table" in r.html and "<td>x</td>" in r.html
    assert "a" in r.text and "x" in r.text


def test_display_calls_are_results(sbx):
    ex = sbx.run_code(
        "from IPython.display import display, HTML, Markdown\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# title'))\n"
        "42"
    )
    assert [r.html for r in ex.results if r.html] == ["<b>bold</b>"]
    assert [r.markdown for r in ex.results if r.markdown] == ["# title"]
    assert ex.results[-1].text == "42" and ex.results[-1].is_main_result


def test_exception_is_an_execution_error(sbx):
    ex = sbx.run_code("print('before')\n1 / 0")
    assert ex.logs.stdout == ["before\n"]
    assert ex.error.name == "ZeroDivisionError"
    assert ex.error.value == "division by zero"
    assert "ZeroDivisionError" in ex.error.traceback
    assert "1 / 0" in ex.error.traceback
    # The context lives on.
    assert sbx.run_code("2 + 2").text == "4"


def test_syntax_error_is_an_execution_error(sbx):
    ex = sbx.run_code("def f(:\n    pass")
    assert ex.error.name == "SyntaxError"
    assert sbx.run_code("3").text == "3"


def test_stdout_streams_as_printed(sbx):
    seen = []
    start = time.monotonic()
    ex = sbx.run_code(
        "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')",
        on_stdout=lambda m: seen.append((m.line, time.monotonic())),
    )
    end = time.monotonic()
    assert [line for line, _ in seen] == ["first\n", "second\n"]
    # The first line came while the cell slept, not with the end.
    assert end - seen[0][1] >= 1.0, (start, seen, end)
    assert ex.logs.stdout == ["first\n", "second\n"]


def test_stderr_and_subprocess_output(sbx):
    ex = sbx.run_code("import sys, os\nprint('oops', file=sys.stderr)\nos.system('echo from-shell')")
    assert ex.logs.stderr == ["oops\n"]
    assert "from-shell\n" in "".join(ex.logs.stdout)


def test_contexts_are_separate(sbx):
    sbx.run_code("secret = 'default'")
    ctx = sbx.create_code_context()
    assert ctx.language == "python" and ctx.cwd == "/home/user"
    ex = sbx.run_code("secret", context=ctx)
    assert ex.error.name == "NameError"
    sbx.run_code("secret = 'ctx'", context=ctx)
    assert sbx.run_code("secret").text == "default"
    assert sbx.run_code("secret", context=ctx).text == "ctx"
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]

    sbx.restart_code_context(ctx)
    assert sbx.run_code("secret", context=ctx).error.name == "NameError"

    sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]
    with pytest.raises(NotFoundException):
        sbx.run_code("1", context=ctx)


def test_context_cwd(sbx):
    ctx = sbx.create_code_context(cwd="/tmp")
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    with pytest.raises(SandboxException):
        sbx.create_code_context(cwd="/no/such/dir")


def test_each_context_keeps_its_own_working_directory(sbx):
    # The agent changes directory only when another context ran last.
    ctx = sbx.create_code_context(cwd="/tmp")
    sbx.run_code("import os; os.chdir('/usr')")
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    sbx.run_code("os.chdir('/etc')", context=ctx)
    assert sbx.run_code("os.getcwd()").text == "/usr"
    assert sbx.run_code("os.getcwd()", context=ctx).text == "/etc"
    assert sbx.run_code("os.getcwd()").text == "/usr"


def test_a_new_sandbox_keeps_nothing_of_the_templates_warm_up_cells(sbx):
    # The template runs a few cells (1+1, pandas as pd, ...) to warm
    # IPython up, then resets the context: a new sandbox counts from 1 and
    # its namespace and history are empty.
    ex = sbx.run_code("len(Out), len(In), 'pd' in dir()")
    assert ex.execution_count == 1
    assert ex.text == "(0, 2, False)"


def test_a_seed_set_in_one_cell_holds_for_the_next(sbx):
    # As in a notebook: the PRNGs are reseeded with the sandbox's first
    # cell only (a new sandbox must not draw its template's numbers), then
    # go on from cell to cell.
    sbx.run_code("import numpy as np, random\nnp.random.seed(0)\nrandom.seed(1)")
    assert sbx.run_code("(np.random.rand(), random.random())").text == (
        "(0.5488135039273248, 0.13436424411240122)"
    )
    # Two new sandboxes draw different numbers.
    others = [Sandbox.create(timeout=60) for _ in range(2)]
    try:
        draws = {o.run_code("import random; random.random()").text for o in others}
        assert len(draws) == 2, draws
    finally:
        for o in others:
            o.kill()


def test_bash_keeps_cwd_and_exports(sbx):
    ex = sbx.run_code("echo $HOME", language="bash")
    assert ex.logs.stdout == ["/home/user\n"]
    sbx.run_code("cd /tmp && export GREETING=hello", language="bash")
    ex = sbx.run_code("pwd; echo $GREETING", language="bash")
    assert "".join(ex.logs.stdout) == "/tmp\nhello\n"
    ex = sbx.run_code("echo bad >&2; false", language="bash")
    assert ex.logs.stderr == ["bad\n"]
    assert ex.error is not None


def test_javascript_keeps_state_and_awaits(sbx):
    ex = sbx.run_code("console.log(1)", language="js")
    assert ex.logs.stdout == ["1\n"]
    sbx.run_code("const xs = [1, 2, 3]; let total = 0", language="javascript")
    ex = sbx.run_code("for (const x of xs) total += x; total", language="js")
    assert ex.text == "6"
    ex = sbx.run_code("await new Promise((r) => setTimeout(r, 50)); total * 7", language="js")
    assert ex.text == "42"
    ex = sbx.run_code("null.x", language="js")
    assert ex.error.name == "TypeError"
    ex = sbx.run_code("function f( {", language="js")
    assert ex.error.name == "SyntaxError"
    ctx = sbx.create_code_context(language="javascript")
    assert sbx.run_code("typeof total", context=ctx).text == "undefined"


def test_env_vars_hold_for_one_cell(sbx):
    ex = sbx.run_code("import os; os.environ['ZB_TEST']", envs={"ZB_TEST": "yes"})
    assert ex.text == "yes"
    assert sbx.run_code("os.environ.get('ZB_TEST', 'unset')").text == "unset"


def test_timeout_interrupts_and_the_context_survives(sbx):
    sbx.run_code("kept = 7")
    with pytest.raises(TimeoutException):
        sbx.run_code("while True:\n    pass", timeout=2)
    # The interrupted cell ended (KeyboardInterrupt); state stays.
    ex = sbx.run_code("kept * 6", timeout=60)
    assert ex.text == "42"


def test_unknown_context_and_language(sbx):
    with pytest.raises(NotFoundException):
        sbx.run_code("1", context=Context("no-such-context", "python", "/home/user"))
    with pytest.raises(SandboxException) as e:
        sbx.run_code("1", language="cobol")
    assert "cobol" in str(e.value)


def test_output_flood_is_capped(sbx):
    ex = sbx.run_code("print('x' * 20_000_000)")
    out = "".join(ex.logs.stdout)
    assert 0 < len(out) < 20_000_000
    assert "truncated" in "".join(ex.logs.stderr)
    assert sbx.run_code("1 + 1").text == "2"


def test_execution_count(sbx):
    a = sbx.run_code("1").execution_count
    b = sbx.run_code("2").execution_count
    assert b == a + 1
