"""Snapshots, pause to disk and autoPause through the official E2B SDK
(``create_snapshot``, ``list_snapshots``, ``delete_snapshot``, ``pause``,
``connect``, ``lifecycle={"on_timeout": "pause"}``), on servers of the
test's own, one of which is killed (SIGKILL) and started again over the
same state directory: what was on disk comes back."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import SandboxException, SandboxNotFoundException  # noqa: E402
from e2b.sandbox.sandbox_api import SandboxState  # noqa: E402

LOOP = "while true; do date +%s%N > /tmp/tick; sleep 0.05; done"


def point_at(monkeypatch, srv) -> None:
    monkeypatch.setenv("E2B_API_URL", srv.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", srv.url)
    monkeypatch.setenv("E2B_API_KEY", srv.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_ACCESS_TOKEN", raising=False)


def wait_for(pred, what: str, secs: float = 30) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def ticking(sb: Sandbox) -> bool:
    """Whether the loop still writes /tmp/tick."""
    first = sb.files.read("/tmp/tick")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sb.files.read("/tmp/tick") != first:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture()
def workdir():
    d = Path(tempfile.mkdtemp(prefix="zeroboot-snap-"))
    return d


def test_snapshots_and_pause_survive_a_restart(server_factory, workdir, monkeypatch):
    state = workdir / "state"
    srv = server_factory(workdir, state)
    point_at(monkeypatch, srv)
    sb = Sandbox.create("base", timeout=300)
    sb.files.write("/home/user/notes.txt", "before\n")
    loop = sb.commands.run(LOOP, background=True)
    wait_for(lambda: sb.files.exists("/tmp/tick"), "the loop")
    snap = sb.create_snapshot(name="warm")
    assert snap.snapshot_id and any("warm" in n for n in snap.names)
    sb.files.write("/home/user/notes.txt", "after\n")

    # A sandbox from the snapshot has the state of that moment, and the
    # loop runs on in it.
    c = Sandbox.create(snap.snapshot_id, timeout=120)
    assert c.sandbox_id != sb.sandbox_id
    assert c.files.read("/home/user/notes.txt") == "before\n"
    assert loop.pid in [p.pid for p in c.commands.list()]
    assert ticking(c)
    c.kill()
    assert snap.snapshot_id in [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]

    # Paused to disk: then the server dies without warning.
    assert sb.pause()
    assert sb.get_info().state == SandboxState.PAUSED
    assert list((state / "paused" / sb.sandbox_id).iterdir())
    # A snapshot of it is made from its checkpoint on disk; it stays
    # paused there.
    paused_snap = Sandbox.create_snapshot(sb.sandbox_id)
    assert sb.get_info().state == SandboxState.PAUSED
    assert list((state / "paused" / sb.sandbox_id).iterdir())
    srv.process.send_signal(signal.SIGKILL)
    srv.process.wait()

    srv = server_factory(workdir, state)
    point_at(monkeypatch, srv)
    assert Sandbox.get_info(sb.sandbox_id).state == SandboxState.PAUSED
    back = Sandbox.connect(sb.sandbox_id, timeout=120)
    assert back.get_info().state == SandboxState.RUNNING
    assert back.files.read("/home/user/notes.txt") == "after\n"
    assert loop.pid in [p.pid for p in back.commands.list()]
    assert ticking(back)
    assert not (state / "paused" / sb.sandbox_id).exists()
    # The snapshot taken while it was on disk has its state of then.
    p = Sandbox.create(paused_snap.snapshot_id, timeout=60)
    assert p.files.read("/home/user/notes.txt") == "after\n"
    assert ticking(p)
    p.kill()
    # The snapshot outlived the server too, by id and by name.
    for key in (snap.snapshot_id, "warm"):
        d = Sandbox.create(key, timeout=60)
        assert d.files.read("/home/user/notes.txt") == "before\n"
        d.kill()
    back.kill()
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    with pytest.raises(SandboxException) as e:
        Sandbox.create(snap.snapshot_id)
    assert "not found" in str(e.value)


def test_auto_pause_at_the_timeout_then_resume(server_factory, workdir, monkeypatch):
    srv = server_factory(workdir, workdir / "state")
    point_at(monkeypatch, srv)
    # Long enough for the write below on a loaded machine.
    sb = Sandbox.create("base", timeout=8, lifecycle={"on_timeout": "pause"})
    try:
        sb.files.write("/home/user/kept.txt", "kept\n")
        wait_for(
            lambda: Sandbox.get_info(sb.sandbox_id).state == SandboxState.PAUSED,
            "the automatic pause",
        )
        back = Sandbox.connect(sb.sandbox_id, timeout=60)
        assert back.files.read("/home/user/kept.txt") == "kept\n"
    finally:
        Sandbox.kill(sb.sandbox_id)


def test_a_damaged_snapshot_is_refused_and_the_server_goes_on(
    server_factory, workdir, monkeypatch
):
    state = workdir / "state"
    srv = server_factory(workdir, state)
    point_at(monkeypatch, srv)
    sb = Sandbox.create("base", timeout=120)
    try:
        snap = sb.create_snapshot()
        sid = snap.snapshot_id.split(":")[0]
        f = state / "snapshots" / sid / "state.bin"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
        with pytest.raises(SandboxException) as e:
            Sandbox.create(snap.snapshot_id)
        assert "corrupt" in str(e.value) and "checksum" in str(e.value)
        # Truncated memory: refused as well.
        f.write_bytes(bytes(data[: len(data) // 3]))
        with pytest.raises(SandboxException):
            Sandbox.create(snap.snapshot_id)
        # Nothing else is disturbed.
        assert sb.commands.run("echo ok").stdout == "ok\n"
        Sandbox.create("base", timeout=30).kill()
    finally:
        sb.kill()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.create_snapshot("neverexisted0000000")
    with pytest.raises(SandboxException) as e:
        Sandbox.create_snapshot(sb.sandbox_id)
    assert "not found" in str(e.value) or "404" in str(e.value)


def test_a_full_disk_fails_the_write_cleanly(server_factory, workdir, monkeypatch):
    """The state directory on a 1 MiB file system: snapshots and pauses
    fail with the reason, nothing is left behind, the sandbox runs on."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    state = workdir / "state"
    state.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(state)], check=True
    )
    try:
        srv = server_factory(workdir, state)
        point_at(monkeypatch, srv)
        sb = Sandbox.create("base", timeout=120)
        sb.commands.run("head -c 4000000 /dev/urandom > /tmp/big")
        with pytest.raises(SandboxException) as e:
            sb.create_snapshot()
        assert "No space left" in str(e.value)
        with pytest.raises(SandboxException) as e:
            sb.pause()
        assert "No space left" in str(e.value)
        assert sb.get_info().state == SandboxState.RUNNING
        assert sb.commands.run("echo still here").stdout == "still here\n"
        assert not list((state / "snapshots").iterdir())
        assert not list((state / "paused").iterdir())
        assert Sandbox.list_snapshots().next_items() == []
        sb.kill()
    finally:
        r = subprocess.run(["umount", "-l", str(state)], check=False)
        assert r.returncode == 0
