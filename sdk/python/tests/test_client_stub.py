"""Client-side behaviour against a scriptable stub HTTP server (no zeroboot needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from zeroboot import AsyncSandbox, ExecResult, Sandbox, ZerobootError

from conftest import free_port

RESULT = {
    "id": "abc",
    "output": "2\n",
    "stdout": "2\n",
    "stderr": "",
    "exit_code": 0,
    "duration_ms": 1.5,
    "fork_time_ms": 0.3,
    "exec_time_ms": 1.0,
    "total_time_ms": 1.6,
    "timed_out": False,
    "truncated": False,
}


def test_run_sends_the_documented_request(stub):
    stub.reply(200, RESULT)
    sb = Sandbox("k1", base_url=stub.url)
    assert sb.run("print(1 + 1)") == "2\n"
    (req,) = stub.requests
    assert req.method == "POST"
    assert req.path == "/v1/exec"
    assert req.headers["Authorization"] == "Bearer k1"
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == {"code": "print(1 + 1)", "language": "python"}


def test_exec_passes_language_and_timeout(stub):
    stub.reply(200, RESULT)
    Sandbox("k", base_url=stub.url).exec("x", language="node", timeout=2.5)
    assert stub.requests[0].body == {"code": "x", "language": "node", "timeout_seconds": 2.5}


def test_no_key_sends_no_authorization_header(stub):
    stub.reply(200, RESULT)
    Sandbox(base_url=stub.url).run("x")
    assert "Authorization" not in stub.requests[0].headers


def test_env_vars(stub, monkeypatch):
    stub.reply(200, RESULT)
    monkeypatch.setenv("ZEROBOOT_API_URL", stub.url + "/")
    monkeypatch.setenv("ZEROBOOT_API_KEY", "from-env")
    sb = Sandbox()
    assert sb.base_url == stub.url
    sb.run("x")
    assert stub.requests[0].headers["Authorization"] == "Bearer from-env"
    # Explicit arguments win over the environment.
    sb2 = Sandbox("explicit", base_url=stub.url)
    sb2.run("x")
    assert stub.requests[1].headers["Authorization"] == "Bearer explicit"


def test_default_base_url():
    assert Sandbox().base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "given,expected",
    [
        ("http://h:1/", "http://h:1"),
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("h:1", "http://h:1"),
        ("https://api.example.com/zb", "https://api.example.com/zb"),
    ],
)
def test_base_url_normalisation(given, expected):
    assert Sandbox(base_url=given).base_url == expected


def test_exec_result_fields_and_extra(stub):
    stub.reply(200, dict(RESULT, exit_code=3, future_field=[1, 2]))
    r = Sandbox(base_url=stub.url).exec("x")
    assert isinstance(r, ExecResult)
    assert r.id == "abc" and r.exit_code == 3 and r.output == r.stdout == "2\n"
    assert r.fork_time_ms == 0.3 and r.total_time_ms == 1.6
    assert r.timed_out is False and r.truncated is False and r.out_of_memory is False
    assert r.extra == {"future_field": [1, 2]}
    assert not r.ok
    assert r.to_dict()["future_field"] == [1, 2]


def test_exec_result_error_field():
    r = ExecResult.from_dict(dict(RESULT, error="fork failed", out_of_memory=True))
    assert r.error == "fork failed" and r.out_of_memory is True and not r.ok
    assert r.extra == {}


def test_exec_result_tolerates_missing_fields():
    r = ExecResult.from_dict({"output": "hi"})
    assert r.stdout == "hi" and r.exit_code == 0 and r.id == ""
    r = ExecResult.from_dict({"stdout": "hi", "exit_code": None})
    assert r.output == "hi" and r.exit_code == 0


def test_run_returns_output_on_nonzero_exit(stub):
    stub.reply(200, dict(RESULT, output="partial\n", stdout="partial\n", exit_code=1))
    assert Sandbox(base_url=stub.url).run("x") == "partial\n"


@pytest.mark.parametrize("status", [400, 401, 413, 422, 503])
def test_json_errors(stub, status):
    stub.reply(status, {"error": "message for %d" % status})
    with pytest.raises(ZerobootError) as info:
        Sandbox(base_url=stub.url).run("x")
    e = info.value
    assert e.status == status
    assert e.message == "message for %d" % status
    assert str(status) in str(e) and e.message in str(e)
    assert e.body == {"error": e.message}


def test_429_retry_after(stub):
    stub.reply(429, {"error": "rate limit exceeded"}, {"Retry-After": "2"})
    with pytest.raises(ZerobootError) as info:
        Sandbox(base_url=stub.url).exec("x")
    assert info.value.status == 429
    assert info.value.retry_after == 2.0


def test_non_json_error_body(stub):
    stub.reply(502, b"Bad Gateway from a proxy", {"Content-Type": "text/plain"})
    with pytest.raises(ZerobootError) as info:
        Sandbox(base_url=stub.url).run("x")
    assert info.value.status == 502
    assert "Bad Gateway" in info.value.message


def test_empty_error_body(stub):
    stub.reply(500, b"")
    with pytest.raises(ZerobootError) as info:
        Sandbox(base_url=stub.url).run("x")
    assert info.value.status == 500
    assert info.value.message


def test_invalid_json_on_200(stub):
    stub.reply(200, b"<html>")
    with pytest.raises(ZerobootError) as info:
        Sandbox(base_url=stub.url).run("x")
    assert info.value.status == 200


def test_connection_refused():
    port = free_port()
    with pytest.raises(ZerobootError) as info:
        Sandbox("k", base_url="http://127.0.0.1:%d" % port).run("print(1)")
    assert info.value.status == 0
    assert "127.0.0.1:%d" % port in str(info.value)


def test_http_timeout_is_status_0(stub):
    def slow(_req):
        time.sleep(1.5)
        return 200, {}, b"{}"

    stub.responder = slow
    sb = Sandbox(base_url=stub.url, timeout=0.3)
    # The HTTP timeout only covers requests; health uses it as is.
    with pytest.raises(ZerobootError) as info:
        sb.health()
    assert info.value.status == 0
    assert "timed out" in info.value.message


def test_http_timeout_grows_with_code_timeout():
    sb = Sandbox(timeout=5)
    assert sb._http_timeout([{"code": "x"}]) == 40
    assert sb._http_timeout([{"timeout_seconds": 100}, {"timeout_seconds": 2}]) == 110
    assert Sandbox(timeout=500)._http_timeout([{"timeout_seconds": 100}]) == 500


def test_batch_mixed_items(stub):
    def echo(req):
        import json

        results = [
            dict(RESULT, output=e["code"], stdout=e["code"], id=str(i))
            for i, e in enumerate(req.body["executions"])
        ]
        return 200, {"Content-Type": "application/json"}, json.dumps({"results": results}).encode()

    stub.responder = echo
    sb = Sandbox(base_url=stub.url)
    results = sb.exec_batch(
        ["a", {"code": "b", "language": "node"}, {"code": "c", "timeout_seconds": 3}],
        timeout=7,
    )
    assert [r.output for r in results] == ["a", "b", "c"]
    assert stub.requests[0].path == "/v1/exec/batch"
    assert stub.requests[0].body == {
        "executions": [
            {"code": "a", "language": "python", "timeout_seconds": 7},
            {"code": "b", "language": "node", "timeout_seconds": 7},
            {"code": "c", "language": "python", "timeout_seconds": 3},
        ]
    }


def test_batch_empty_makes_no_request(stub):
    assert Sandbox(base_url=stub.url).exec_batch([]) == []
    assert stub.requests == []


def test_batch_rejects_other_items():
    with pytest.raises(TypeError):
        Sandbox().exec_batch([42])


def test_batch_result_count_mismatch(stub):
    stub.reply(200, {"results": [RESULT]})
    with pytest.raises(ZerobootError):
        Sandbox(base_url=stub.url).exec_batch(["a", "b"])


def test_health(stub):
    stub.reply(200, {"status": "ok", "templates": {"python": {"ready": True, "memory_mb": 64}}})
    h = Sandbox(base_url=stub.url).health()
    assert h["status"] == "ok"
    assert stub.requests[0].method == "GET" and stub.requests[0].path == "/v1/health"


def test_unicode_round_trip(stub):
    def echo(req):
        import json

        code = req.body["code"]
        return 200, {}, json.dumps(dict(RESULT, output=code, stdout=code)).encode()

    stub.responder = echo
    assert Sandbox(base_url=stub.url).run("héllo ✓ 你好") == "héllo ✓ 你好"


def test_repr_hides_key():
    assert "secret" not in repr(Sandbox("secret"))
    assert "secret" not in repr(AsyncSandbox("secret"))


def test_async_sandbox(stub):
    stub.reply(200, RESULT)

    async def main():
        async with AsyncSandbox("k", base_url=stub.url) as sb:
            outs = await asyncio.gather(*(sb.run("print(%d)" % i) for i in range(5)))
            r = await sb.exec("x")
            return outs, r

    outs, r = asyncio.run(main())
    assert outs == ["2\n"] * 5
    assert r.exit_code == 0
    assert len(stub.requests) == 6


def test_async_errors_propagate():
    port = free_port()

    async def main():
        await AsyncSandbox(base_url="http://127.0.0.1:%d" % port).run("x")

    with pytest.raises(ZerobootError) as info:
        asyncio.run(main())
    assert info.value.status == 0
