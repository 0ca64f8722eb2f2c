"""The official E2B Python SDK's commands (envd's process service, served
by zeroboot's kernel) against a real zeroboot server. Run by
``run-e2b-tests.sh``; fixtures as in test_e2b_sdk.py.
"""

from __future__ import annotations

import os
import time

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import TimeoutException  # noqa: E402
from e2b.sandbox.commands.command_handle import CommandExitException  # noqa: E402


@pytest.fixture()
def sbx(e2b_env):
    sb = Sandbox.create("base", timeout=120)
    try:
        yield sb
    finally:
        sb.kill()


def test_run_echo(sbx):
    r = sbx.commands.run('echo "Hello, World!"')
    assert r.exit_code == 0
    assert r.stdout == "Hello, World!\n"
    assert r.stderr == ""


def test_exit_code_stderr_env_and_cwd(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo oops >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "oops\n"
    r = sbx.commands.run("echo $GREETING; pwd", envs={"GREETING": "hi"}, cwd="/tmp")
    assert r.stdout == "hi\n/tmp\n"
    assert sbx.commands.run("pwd").stdout == "/home/user\n"
    # A command that does not exist: bash's answer.
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("no-such-command-here")
    assert e.value.exit_code == 127


def test_shell_pipelines(sbx):
    r = sbx.commands.run("for i in $(seq 100); do echo $i; done | sort -n | tail -1")
    assert r.stdout == "100\n"
    r = sbx.commands.run("printf 'b\\na\\n' | sort | tr a-z A-Z | head -1; ls / | grep -c usr")
    assert r.stdout == "A\n1\n"


def test_timeout_kills_the_command(sbx):
    start = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 10", timeout=2)
    assert time.monotonic() - start < 8
    # It was killed: nothing left running.
    deadline = time.monotonic() + 5
    while sbx.commands.list() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sbx.commands.list() == []


def test_background_output_streams(sbx):
    seen = []
    h = sbx.commands.run(
        "python3 -c 'import time\nfor i in range(5): print(i, flush=True); time.sleep(0.2)'",
        background=True,
        on_stdout=lambda line: seen.append((time.monotonic(), line)),
    )
    r = h.wait(on_stdout=lambda line: seen.append((time.monotonic(), line)))
    assert r.exit_code == 0
    assert "".join(line for _, line in seen) == "0\n1\n2\n3\n4\n"
    assert len(seen) == 5, seen
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert all(g >= 0.12 for g in gaps), gaps


def test_list_kill_and_stdin(sbx):
    h = sbx.commands.run("sleep 30", background=True)
    procs = sbx.commands.list()
    assert [p.pid for p in procs] == [h.pid]
    assert procs[0].cmd == "/bin/bash"
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        h.wait()
    assert sbx.commands.kill(h.pid) is False

    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "line one\n")
    sbx.commands.send_stdin(cat.pid, "line two\n")
    sbx.commands.close_stdin(cat.pid)
    r = cat.wait()
    assert r.stdout == "line one\nline two\n"


def test_connect_to_a_running_command(sbx):
    h = sbx.commands.run(
        "for i in 1 2 3; do echo $i; sleep 0.3; done", background=True
    )
    h.disconnect()
    again = sbx.commands.connect(h.pid)
    r = again.wait()
    assert r.exit_code == 0
    # Output from the moment of re-attaching on.
    assert r.stdout.strip().endswith("3")


def test_commands_and_code_share_files(sbx, e2b_env):
    sbx.commands.run("echo -n from a command > /tmp/shared.txt")
    r = sbx.commands.run("cat /tmp/shared.txt; wc -c < /tmp/shared.txt")
    assert r.stdout == "from a command14\n"


def test_many_commands_at_once(sbx):
    hs = [sbx.commands.run(f"sleep 0.5; echo {i}", background=True) for i in range(8)]
    outs = [h.wait().stdout for h in hs]
    assert outs == [f"{i}\n" for i in range(8)]


def test_pty_runs_an_interactive_shell(sbx):
    from e2b.sandbox.commands.command_handle import PtySize

    h = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(h.pid, b"echo $((6*7)); stty size\n")
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; exit 3\n")
    out = bytearray()
    with pytest.raises(CommandExitException) as e:
        h.wait(on_pty=out.extend)
    assert e.value.exit_code == 3
    text = out.decode(errors="replace")
    assert "\r\n42\r\n" in text, text
    assert "30 100" in text, text


def test_base_has_the_tools_agents_run(sbx):
    r = sbx.commands.run(
        "cd /tmp && git init -q r && cd r && git -c user.email=a@b -c user.name=a"
        " commit -q --allow-empty -m x && git log --oneline | wc -l"
    )
    assert r.stdout == "1\n"
    r = sbx.commands.run("find /usr/bin -name 'sed' | xargs -n1 basename; echo a,b | awk -F, '{print $2}'; which tar gzip")
    assert r.stdout == "sed\nb\n/usr/bin/tar\n/usr/bin/gzip\n"


# Heavy tools (pip, venv, npm), each a tree of processes doing much I/O.
# CI runs one round; ZEROBOOT_STRESS=N runs N (a long-run check: it found
# faults whose delivery a kick had interrupted reaching the wrong thread).
def test_heavy_tools_many_times(sbx):
    failures = []
    for _ in range(int(os.environ.get("ZEROBOOT_STRESS", "1"))):
        sbx.set_timeout(120)
        for cmd, want in [
            ("pip list 2>/dev/null | grep -c numpy", "1\n"),
            ("rm -rf /tmp/v && python3 -m venv /tmp/v && /tmp/v/bin/python -c 'import sys; print(sys.prefix)'", "/tmp/v\n"),
            ("npm --version > /dev/null && node -e 'console.log(6*7)' && rm -rf /tmp/p && mkdir /tmp/p && cd /tmp/p && npm init -y > /dev/null && ls", "42\npackage.json\n"),
        ]:
            try:
                out = sbx.commands.run(cmd, timeout=120).stdout
                if out != want:
                    failures.append((cmd, out))
            except CommandExitException as e:
                failures.append((cmd, e.exit_code, e.stderr[-300:]))
    assert failures == []


def test_files_and_commands_see_one_file_system(sbx):
    sbx.files.write("/home/user/a.csv", "x,y\n1,2\n3,4\n")
    assert sbx.commands.run("wc -l /home/user/a.csv").stdout == "3 /home/user/a.csv\n"
    sbx.files.make_dir("/home/user/w")
    w = sbx.files.watch_dir("/home/user/w")
    sbx.commands.run("echo made > /home/user/w/by-a-command.txt")
    deadline = time.monotonic() + 5
    names = set()
    while time.monotonic() < deadline and "by-a-command.txt" not in names:
        names |= {e.name for e in w.get_new_events()}
        time.sleep(0.05)
    w.stop()
    assert "by-a-command.txt" in names
    assert sbx.files.read("/home/user/w/by-a-command.txt") == "made\n"
