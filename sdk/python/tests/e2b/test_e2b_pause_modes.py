"""What a pause keeps, through the official E2B SDK: file-system-only
pauses and snapshots (``mode="filesystem"``, ``lifecycle`` with
``"mode": "filesystem"``), a cold resume of a full pause
(``on_resume="reboot"``), and a pause while a cell runs (its caller is
told; the cell goes on after the resume)."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.sandbox.sandbox_api import SandboxState  # noqa: E402

from test_e2b_snapshots import LOOP, point_at, ticking, wait_for  # noqa: E402


@pytest.fixture()
def workdir():
    return Path(tempfile.mkdtemp(prefix="zeroboot-pause-"))


def loop_gone(sb: Sandbox) -> bool:
    """No command runs in `sb` and /tmp/tick stays as it is."""
    if sb.commands.list():
        return False
    before = sb.files.read("/tmp/tick") if sb.files.exists("/tmp/tick") else None
    time.sleep(0.3)
    after = sb.files.read("/tmp/tick") if sb.files.exists("/tmp/tick") else None
    return before == after


def test_a_filesystem_pause_keeps_the_files_and_cold_boots(server_factory, workdir, monkeypatch):
    srv = server_factory(workdir, workdir / "state")
    point_at(monkeypatch, srv)
    sb = Sandbox.create("base", timeout=300)
    try:
        sb.files.write("/home/user/kept.txt", "kept\n")
        sb.commands.run("mkdir -p /home/user/d && echo deep > /home/user/d/f")
        sb.commands.run(LOOP, background=True)
        wait_for(lambda: sb.files.exists("/tmp/tick"), "the loop")

        assert sb.pause(mode="filesystem")
        assert sb.get_info().state == SandboxState.PAUSED
        back = Sandbox.connect(sb.sandbox_id, timeout=120)
        assert back.get_info().state == SandboxState.RUNNING
        # The files are there; the processes are not (a cold boot).
        assert back.files.read("/home/user/kept.txt") == "kept\n"
        assert back.commands.run("cat /home/user/d/f").stdout == "deep\n"
        assert loop_gone(back)
        assert back.commands.run("echo again").stdout == "again\n"
    finally:
        Sandbox.kill(sb.sandbox_id)


def test_a_full_pause_resumed_with_reboot_is_cold(server_factory, workdir, monkeypatch):
    srv = server_factory(workdir, workdir / "state")
    point_at(monkeypatch, srv)
    sb = Sandbox.create("base", timeout=300)
    try:
        sb.files.write("/home/user/kept.txt", "kept\n")
        sb.commands.run(LOOP, background=True)
        wait_for(lambda: sb.files.exists("/tmp/tick"), "the loop")
        assert sb.pause()
        back = Sandbox.connect(sb.sandbox_id, timeout=120, on_resume="reboot")
        assert back.files.read("/home/user/kept.txt") == "kept\n"
        assert loop_gone(back)
        # A running sandbox: reboot is a no-op (E2B's word), nothing is lost.
        back.commands.run(LOOP, background=True)
        again = Sandbox.connect(sb.sandbox_id, timeout=120, on_resume="reboot")
        assert ticking(again)
    finally:
        Sandbox.kill(sb.sandbox_id)


def test_a_filesystem_snapshot_and_auto_pause(server_factory, workdir, monkeypatch):
    srv = server_factory(workdir, workdir / "state")
    point_at(monkeypatch, srv)
    sb = Sandbox.create("base", timeout=300)
    try:
        sb.files.write("/home/user/snap.txt", "snap\n")
        sb.commands.run(LOOP, background=True)
        wait_for(lambda: sb.files.exists("/tmp/tick"), "the loop")
        snap = sb.create_snapshot(mode="filesystem")
        # The source runs on, whole.
        assert ticking(sb)
        c = Sandbox.create(snap.snapshot_id, timeout=120)
        assert c.files.read("/home/user/snap.txt") == "snap\n"
        assert loop_gone(c)
        c.kill()
    finally:
        Sandbox.kill(sb.sandbox_id)

    # Automatic pause of the files only.
    a = Sandbox.create(
        "base", timeout=8, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}}
    )
    try:
        a.files.write("/home/user/auto.txt", "auto\n")
        a.commands.run(LOOP, background=True)
        wait_for(
            lambda: Sandbox.get_info(a.sandbox_id).state == SandboxState.PAUSED,
            "the automatic pause",
        )
        back = Sandbox.connect(a.sandbox_id, timeout=60)
        assert back.files.read("/home/user/auto.txt") == "auto\n"
        assert loop_gone(back)
    finally:
        Sandbox.kill(a.sandbox_id)


def _serves_code_interpreter(srv) -> bool:
    req = urllib.request.Request(
        srv.url + "/v1/health", headers={"Authorization": "Bearer " + srv.key}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        body = json.loads(resp.read())
    return body.get("templates", {}).get("code-interpreter", {}).get("ready") is True


def test_a_pause_while_a_cell_runs(server_factory, workdir, monkeypatch):
    ci = pytest.importorskip("e2b_code_interpreter")
    srv = server_factory(workdir, workdir / "state", "python,code-interpreter")
    if not _serves_code_interpreter(srv):
        pytest.skip("the code-interpreter template is not served here")
    point_at(monkeypatch, srv)
    sbx = ci.Sandbox.create(timeout=300)
    try:
        sbx.run_code("kept = 41")
        cell = (
            "import time\n"
            "open('/tmp/began', 'w').write('1')\n"
            "time.sleep(2)\n"
            "open('/tmp/after', 'w').write(str(kept + 1))\n"
        )
        got = {}

        def run():
            try:
                got["execution"] = sbx.run_code(cell, timeout=60)
            except Exception as e:  # the SDK may raise instead
                got["raised"] = e

        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: sbx.files.exists("/tmp/began"), "the cell to begin")
        # The pause is not refused for the running cell (it was 409).
        assert ci.Sandbox.pause(sbx.sandbox_id)
        t.join(60)
        assert not t.is_alive()
        # Its caller learns of the pause at once, not at the cell's end.
        ex = got.get("execution")
        said = str(got.get("raised")) if ex is None else f"{ex.error.name}: {ex.error.value}"
        assert "paused" in said.lower(), said
        back = ci.Sandbox.connect(sbx.sandbox_id, timeout=120)
        # The cell went on after the resume, with what the context held.
        wait_for(lambda: back.files.exists("/tmp/after"), "the cell to end", 60)
        assert back.files.read("/tmp/after") == "42"
        # And the context takes new cells once it has.
        deadline = time.monotonic() + 30
        while True:
            ex = back.run_code("kept + 1")
            if ex.error is None or ex.error.name != "SandboxBusy" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ex.error is None, ex.error
        assert ex.text == "42"
    finally:
        ci.Sandbox.kill(sbx.sandbox_id)
