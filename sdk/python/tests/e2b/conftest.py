"""Fixtures of the official-SDK tests: the E2B SDK pointed at our server,
as an E2B user would point it here."""

from __future__ import annotations

import pytest


@pytest.fixture()
def e2b_env(server, monkeypatch):
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", server.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_ACCESS_TOKEN", raising=False)
    return server
