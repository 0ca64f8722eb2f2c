"""The SDK against a real `zeroboot serve` (started once per session by conftest)."""

from __future__ import annotations

import asyncio

import pytest

from zeroboot import AsyncSandbox, ExecResult, Sandbox, ZerobootError

from conftest import free_port


@pytest.fixture()
def sb(server):
    return Sandbox(server.key, base_url=server.url)


def test_seed_style_run(server, monkeypatch):
    # The seed SDK's users write exactly this (the URL comes from the env).
    monkeypatch.setenv("ZEROBOOT_API_URL", server.url)
    key = server.key
    from zeroboot import Sandbox

    sb = Sandbox(key)
    assert sb.run("print(1 + 1)") == "2\n"


def test_exec_fields(sb):
    r = sb.exec("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert isinstance(r, ExecResult)
    assert isinstance(r.id, str) and r.id
    assert r.stdout == "out\n"
    assert r.output == r.stdout
    assert r.stderr == "err\n"
    assert r.exit_code == 0
    assert r.timed_out is False
    assert r.truncated is False
    assert r.out_of_memory is False
    assert r.error is None
    assert r.ok
    for name in ("duration_ms", "fork_time_ms", "exec_time_ms", "total_time_ms"):
        value = getattr(r, name)
        assert isinstance(value, (int, float)) and value >= 0, name
    assert r.total_time_ms >= r.exec_time_ms


def test_ids_are_unique(sb):
    ids = {sb.exec("pass").id for _ in range(3)}
    assert len(ids) == 3


def test_exit_code(sb):
    r = sb.exec("print('bye')\nraise SystemExit(3)")
    assert r.exit_code == 3
    assert r.stdout == "bye\n"
    assert not r.ok
    # run() still returns the output of code that exits non-zero.
    assert sb.run("print('bye')\nraise SystemExit(3)") == "bye\n"


def test_uncaught_exception(sb):
    r = sb.exec("1 / 0")
    assert r.exit_code == 1
    assert "ZeroDivisionError" in r.stderr
    assert r.stdout == ""


def test_code_timeout(sb):
    r = sb.exec("while True:\n    pass", timeout=1)
    assert r.timed_out is True
    assert r.exit_code != 0


def test_truncated_output(sb):
    r = sb.exec("import sys\nsys.stdout.write('y' * (8 * 1024 * 1024))")
    assert r.truncated is True
    assert r.exit_code == 0
    assert 0 < len(r.stdout) < 8 * 1024 * 1024


def test_unicode(sb):
    assert sb.run("print('héllo ✓ 你好')") == "héllo ✓ 你好\n"


def test_batch_order(sb):
    codes = ["print(%d * %d)" % (i, i) for i in range(8)]
    results = sb.exec_batch(codes)
    assert [r.output for r in results] == ["%d\n" % (i * i) for i in range(8)]
    assert len({r.id for r in results}) == 8


def test_batch_dicts_and_exit_codes(sb):
    results = sb.exec_batch(
        [
            {"code": "print('a')"},
            {"code": "raise SystemExit(5)", "language": "python"},
            "print('c')",
            {"code": "while True: pass", "timeout_seconds": 1},
        ]
    )
    assert [r.exit_code for r in results[:3]] == [0, 5, 0]
    assert results[0].output == "a\n" and results[2].output == "c\n"
    assert results[3].timed_out is True


def test_asyncio_to_thread_example(sb):
    # The seed's documented concurrency pattern.
    codes = ["print(%d + 1)" % i for i in range(10)]

    async def main():
        return await asyncio.gather(*[asyncio.to_thread(sb.run, code) for code in codes])

    outputs = asyncio.run(main())
    assert outputs == ["%d\n" % (i + 1) for i in range(10)]


def test_async_sandbox(server):
    async def main():
        async with AsyncSandbox(server.key, base_url=server.url) as asb:
            outs = await asyncio.gather(*(asb.run("print(%d)" % i) for i in range(10)))
            r = await asb.exec("raise SystemExit(3)")
            batch = await asb.exec_batch(["print('x')", "print('y')"])
            health = await asb.health()
            return outs, r, batch, health

    outs, r, batch, health = asyncio.run(main())
    assert outs == ["%d\n" % i for i in range(10)]
    assert r.exit_code == 3
    assert [b.output for b in batch] == ["x\n", "y\n"]
    assert health["status"] == "ok"


def test_second_key_works(server):
    assert Sandbox(server.other_key, base_url=server.url).run("print(7)") == "7\n"


def test_wrong_key_is_401(server):
    with pytest.raises(ZerobootError) as info:
        Sandbox("wrong-key", base_url=server.url).run("print(1)")
    assert info.value.status == 401
    assert info.value.message
    assert "401" in str(info.value)


def test_missing_key_is_401(server):
    sb = Sandbox(base_url=server.url)  # no ZEROBOOT_API_KEY in the env either
    assert sb.api_key is None
    with pytest.raises(ZerobootError) as info:
        sb.exec("print(1)")
    assert info.value.status == 401


def test_wrong_key_batch_is_401(server):
    with pytest.raises(ZerobootError) as info:
        Sandbox("nope", base_url=server.url).exec_batch(["print(1)"])
    assert info.value.status == 401


def test_health(sb):
    h = sb.health()
    assert h["status"] == "ok"
    python = h["templates"]["python"]
    assert python["ready"] is True
    assert isinstance(python["memory_mb"], (int, float)) and python["memory_mb"] > 0


def test_unknown_language_is_400(sb):
    with pytest.raises(ZerobootError) as info:
        sb.run("print(1)", language="cobol")
    assert info.value.status == 400
    assert info.value.message


@pytest.mark.parametrize("timeout", [0, -1, 301])
def test_bad_timeout_is_400(sb, timeout):
    with pytest.raises(ZerobootError) as info:
        sb.exec("print(1)", timeout=timeout)
    assert info.value.status == 400


def test_missing_code_is_422(sb):
    with pytest.raises(ZerobootError) as info:
        sb._call("POST", "/v1/exec", {"language": "python"}, 30)
    assert info.value.status == 422
    assert info.value.message


def test_connection_refused():
    with pytest.raises(ZerobootError) as info:
        Sandbox("k", base_url="http://127.0.0.1:%d" % free_port()).run("print(1)")
    assert info.value.status == 0


def test_env_vars(server, monkeypatch):
    monkeypatch.setenv("ZEROBOOT_API_URL", server.url)
    monkeypatch.setenv("ZEROBOOT_API_KEY", server.key)
    sb = Sandbox()
    assert sb.base_url == server.url and sb.api_key == server.key
    assert sb.run("print(1 + 1)") == "2\n"
    monkeypatch.setenv("ZEROBOOT_API_KEY", "wrong-key")
    with pytest.raises(ZerobootError) as info:
        Sandbox().run("print(1)")
    assert info.value.status == 401
