"""The official E2B Python SDK (``e2b``, pinned in requirements-e2b.txt)
against a real zeroboot server, as a user of E2B would point it here:
``E2B_API_URL = E2B_SANDBOX_URL = http://127.0.0.1:PORT`` and
``E2B_API_KEY`` a key of our keys file. Run by ``run-e2b-tests.sh``.

This file covers the control plane (create, list, info, timeout, connect,
pause, kill); test_e2b_files.py covers envd's files.
"""

from __future__ import annotations

import time
import uuid

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import (  # noqa: E402
    AuthenticationException,
    SandboxException,
    SandboxNotFoundException,
)
from e2b.sandbox.sandbox_api import SandboxQuery, SandboxState  # noqa: E402


def test_create_info_list_connect_kill(e2b_env):
    tag = uuid.uuid4().hex
    sb = Sandbox.create("python", metadata={"suite": tag}, timeout=120)
    other = Sandbox.create("python", metadata={"suite": "not-" + tag})
    try:
        assert sb.sandbox_id
        info = sb.get_info()
        assert info.sandbox_id == sb.sandbox_id
        assert info.template_id == "python"
        assert info.metadata == {"suite": tag}
        assert info.state == SandboxState.RUNNING
        assert 100 < (info.end_at - info.started_at).total_seconds() <= 121

        found = Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items()
        assert [s.sandbox_id for s in found] == [sb.sandbox_id]

        again = Sandbox.connect(sb.sandbox_id)
        assert again.sandbox_id == sb.sandbox_id
        assert Sandbox.get_info(sb.sandbox_id).sandbox_id == sb.sandbox_id

        assert sb.kill() is True
        with pytest.raises(SandboxNotFoundException):
            Sandbox.get_info(sb.sandbox_id)
        assert Sandbox.kill(sb.sandbox_id) is False
        assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items() == []
    finally:
        Sandbox.kill(sb.sandbox_id)
        other.kill()


def test_set_timeout_ends_the_sandbox(e2b_env):
    sb = Sandbox.create("python", timeout=60)
    start = time.monotonic()
    sb.set_timeout(5)
    gone = None
    while time.monotonic() - start < 10:
        try:
            Sandbox.get_info(sb.sandbox_id)
        except SandboxNotFoundException:
            gone = time.monotonic() - start
            break
        time.sleep(0.2)
    assert gone is not None, "still there 10 s after set_timeout(5)"
    assert 4.5 <= gone <= 7, gone
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sb.sandbox_id)


def test_pause_and_connect_resumes(e2b_env):
    sb = Sandbox.create("node")
    try:
        sb.pause()
        assert sb.get_info().state == SandboxState.PAUSED
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        assert sb.sandbox_id in [s.sandbox_id for s in paused]
        Sandbox.connect(sb.sandbox_id, timeout=30)
        assert sb.get_info().state == SandboxState.RUNNING
    finally:
        sb.kill()


def test_errors(e2b_env, monkeypatch):
    with pytest.raises(SandboxException) as e:
        Sandbox.create("no-such-template")
    assert "404" in str(e.value) and "not found" in str(e.value)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("neverexisted0000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("neverexisted0000000")
    assert Sandbox.kill("neverexisted0000000") is False
    monkeypatch.setenv("E2B_API_KEY", "not-a-key")
    with pytest.raises(AuthenticationException):
        Sandbox.create("python")
