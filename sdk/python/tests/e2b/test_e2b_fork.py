"""Fork of a live sandbox through the official E2B SDK (``Sandbox.fork``):
each copy has the source's files and its running processes, which go on
running in the copy."""

from __future__ import annotations

import time

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import SandboxNotFoundException  # noqa: E402


def counter(sb: Sandbox) -> int:
    return int(sb.files.read("/tmp/count").strip() or 0)


def test_fork_copies_files_and_running_processes(e2b_env):
    src = Sandbox.create("base", timeout=120)
    copies = []
    try:
        src.files.write("/home/user/notes.txt", "before\n")
        loop = src.commands.run(
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; done",
            background=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not src.files.exists("/tmp/count"):
            time.sleep(0.05)
        copies = Sandbox.fork(src.sandbox_id, count=2, timeout=60)
        assert all(isinstance(c, Sandbox) for c in copies), copies
        src.files.write("/home/user/notes.txt", "after\n")
        for c in copies:
            assert c.files.read("/home/user/notes.txt") == "before\n"
            assert loop.pid in [p.pid for p in c.commands.list()]
            # The loop runs on in the copy, on its own files.
            first = counter(c)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and counter(c) == first:
                time.sleep(0.05)
            assert counter(c) > first
            c.commands.kill(loop.pid)
        # The source's own loop is untouched by the copies' kills.
        assert loop.pid in [p.pid for p in src.commands.list()]
        assert src.files.read("/home/user/notes.txt") == "after\n"
    finally:
        for c in copies:
            if isinstance(c, Sandbox):
                c.kill()
        src.kill()


def test_fork_of_a_missing_sandbox(e2b_env):
    with pytest.raises(SandboxNotFoundException):
        Sandbox.fork("neverexisted0000000", count=1)
