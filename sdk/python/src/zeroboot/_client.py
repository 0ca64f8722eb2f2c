"""The zeroboot HTTP client: stdlib only (urllib.request), Python >= 3.8."""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_HTTP_TIMEOUT = 60.0
# The server's default for `timeout_seconds` when a request does not set it.
SERVER_DEFAULT_CODE_TIMEOUT = 30.0
# Extra HTTP time on top of the code's own time limit (fork, queueing, transfer).
HTTP_TIMEOUT_MARGIN = 10.0

ExecRequest = Union[str, Mapping[str, Any]]


class ZerobootError(Exception):
    """A request to the zeroboot server failed.

    ``status`` is the HTTP status code of the answer (400, 401, 413, 422,
    429, 503, ...) or 0 when no answer came back at all (connection refused,
    DNS failure, HTTP timeout, connection reset). ``message`` is the server's
    ``error`` text (or a description of the transport failure).
    ``retry_after`` is the Retry-After header in seconds when the server sent
    one (429), else None.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: Any = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.status = int(status)
        self.message = str(message)
        self.body = body
        self.retry_after = retry_after
        super().__init__(self.status, self.message)

    def __str__(self) -> str:
        if self.status == 0:
            return self.message
        return "HTTP %d: %s" % (self.status, self.message)

    def __repr__(self) -> str:
        return "ZerobootError(status=%d, message=%r)" % (self.status, self.message)


@dataclass
class ExecResult:
    """The outcome of one execution (`POST /v1/exec`).

    A non-zero ``exit_code`` or ``timed_out`` is a normal result, not an
    error: the code ran. ``output`` is the same text as ``stdout``. Fields the
    server sends that this version of the SDK does not know are kept in
    ``extra``.
    """

    id: str = ""
    output: str = ""
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    duration_ms: float = 0.0
    fork_time_ms: float = 0.0
    exec_time_ms: float = 0.0
    total_time_ms: float = 0.0
    timed_out: bool = False
    truncated: bool = False
    out_of_memory: bool = False
    # Set when the server could not run this execution (e.g. one item of a batch).
    error: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the code exited with status 0 within its limits."""
        return self.exit_code == 0 and not self.timed_out and not self.error

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExecResult":
        if not isinstance(data, Mapping):
            raise ZerobootError(0, "unexpected execution result: %r" % (data,), body=data)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                if value is not None:
                    kwargs[key] = value
            else:
                extra[key] = value
        result = cls(**kwargs)
        result.extra = extra
        # `output` is stdout; tolerate a server that sends only one of them.
        if "output" not in data and "stdout" in data:
            result.output = result.stdout
        if "stdout" not in data and "output" in data:
            result.stdout = result.output
        return result

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data.update(self.extra)
        return data


def _is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    # Accept a base URL given with the API prefix as well.
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _error_message(status: int, reason: str, raw: bytes) -> Tuple[str, Any]:
    text = raw.decode("utf-8", errors="replace").strip()
    body: Any = text
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text
    if isinstance(body, Mapping):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value, body
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return value["message"], body
    if isinstance(body, str) and body:
        return body[:500], body
    return reason or http.client.responses.get(status, "HTTP error"), body


class Sandbox:
    """A client for a zeroboot server.

    >>> from zeroboot import Sandbox
    >>> sb = Sandbox("my-key")            # or ZEROBOOT_API_KEY
    >>> sb.run("print(1 + 1)")
    '2\\n'

    ``api_key`` falls back to the ``ZEROBOOT_API_KEY`` environment variable
    (no key: no Authorization header, for servers with auth off).
    ``base_url`` falls back to ``ZEROBOOT_API_URL``, then to
    ``http://127.0.0.1:8080``. ``timeout`` is the HTTP timeout in seconds; it
    is raised automatically for a request whose code may run longer
    (``timeout_seconds`` + 10 s).

    One ``Sandbox`` may be shared by many threads: each request opens its own
    connection.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("ZEROBOOT_API_KEY") or None
        if base_url is None:
            base_url = os.environ.get("ZEROBOOT_API_URL") or DEFAULT_BASE_URL
        self.api_key: Optional[str] = api_key
        self.base_url: str = _normalize_base_url(base_url)
        self.timeout: float = float(timeout)
        host = urllib.parse.urlsplit(self.base_url).hostname
        if _is_loopback(host):
            # Never send requests for a local server through an HTTP proxy
            # from the environment.
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        else:
            self._opener = urllib.request.build_opener()

    def __repr__(self) -> str:
        return "Sandbox(base_url=%r, api_key=%s)" % (
            self.base_url,
            "set" if self.api_key else "None",
        )

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (no pooled connections); kept for symmetry."""

    # -- the API ---------------------------------------------------------

    def run(self, code: str, language: str = "python", timeout: Optional[float] = None) -> str:
        """Run ``code`` and return its stdout (the ``output`` field).

        Like the original zeroboot SDK, ``run`` returns the output even when
        the code exits with a non-zero status or hits its time limit; use
        :meth:`exec` to see ``exit_code``, ``stderr`` and ``timed_out``.
        Raises :class:`ZerobootError` when the server answers with an error
        or cannot be reached.
        """
        return self.exec(code, language=language, timeout=timeout).output

    def exec(self, code: str, language: str = "python", timeout: Optional[float] = None) -> ExecResult:
        """Run ``code`` and return the full :class:`ExecResult`.

        ``timeout`` is the code's time limit in seconds (``timeout_seconds``,
        server default 30, at most 300).
        """
        request = self._request_body(code, language, timeout)
        data = self._call("POST", "/v1/exec", request, self._http_timeout([request]))
        return ExecResult.from_dict(data)

    def exec_batch(
        self,
        codes_or_requests: Iterable[ExecRequest],
        language: str = "python",
        timeout: Optional[float] = None,
    ) -> List[ExecResult]:
        """Run many snippets in one request (at most 100); results keep their order.

        Each item is a code string or a request dict
        (``{"code": ..., "language": ..., "timeout_seconds": ...}``);
        ``language`` and ``timeout`` fill in what a dict leaves out.
        """
        executions: List[Dict[str, Any]] = []
        for item in codes_or_requests:
            if isinstance(item, str):
                executions.append(self._request_body(item, language, timeout))
            elif isinstance(item, Mapping):
                request = dict(item)
                request.setdefault("language", language)
                if timeout is not None and "timeout_seconds" not in request:
                    request["timeout_seconds"] = timeout
                executions.append(request)
            else:
                raise TypeError(
                    "exec_batch items must be code strings or request dicts, not %s"
                    % type(item).__name__
                )
        if not executions:
            return []
        data = self._call(
            "POST",
            "/v1/exec/batch",
            {"executions": executions},
            self._http_timeout(executions),
        )
        results = data.get("results") if isinstance(data, Mapping) else None
        if not isinstance(results, list):
            raise ZerobootError(0, "batch answer has no 'results' list", body=data)
        if len(results) != len(executions):
            raise ZerobootError(
                0,
                "batch answer has %d results for %d executions" % (len(results), len(executions)),
                body=data,
            )
        return [ExecResult.from_dict(r) for r in results]

    def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: ``{"status": "ok", "templates": {...}}``."""
        data = self._call("GET", "/v1/health", None, self.timeout)
        if not isinstance(data, dict):
            raise ZerobootError(0, "unexpected health answer: %r" % (data,), body=data)
        return data

    # -- plumbing --------------------------------------------------------

    @staticmethod
    def _request_body(code: str, language: str, timeout: Optional[float]) -> Dict[str, Any]:
        if not isinstance(code, str):
            raise TypeError("code must be a str, not %s" % type(code).__name__)
        body: Dict[str, Any] = {"code": code, "language": language}
        if timeout is not None:
            body["timeout_seconds"] = timeout
        return body

    def _http_timeout(self, requests: Sequence[Mapping[str, Any]]) -> float:
        longest = SERVER_DEFAULT_CODE_TIMEOUT
        for request in requests:
            t = request.get("timeout_seconds")
            if isinstance(t, (int, float)) and not isinstance(t, bool):
                longest = max(longest, float(t))
        return max(self.timeout, longest + HTTP_TIMEOUT_MARGIN)

    def _call(self, method: str, path: str, body: Optional[Any], timeout: float) -> Any:
        url = self.base_url + path
        headers = {
            "Accept": "application/json",
            "User-Agent": "zeroboot-python/%s" % __version__,
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = "Bearer %s" % self.api_key
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                status = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                raw = e.read() or b""
            except Exception:  # pragma: no cover - body unreadable
                raw = b""
            finally:
                e.close()
            message, parsed = _error_message(e.code, str(e.reason or ""), raw)
            retry_after = _parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            raise ZerobootError(e.code, message, body=parsed, retry_after=retry_after) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                msg = "request to %s timed out after %gs" % (url, timeout)
            else:
                msg = "cannot reach %s: %s" % (url, reason)
            raise ZerobootError(0, msg) from e
        except (socket.timeout, TimeoutError) as e:
            raise ZerobootError(0, "request to %s timed out after %gs" % (url, timeout)) from e
        except (OSError, http.client.HTTPException) as e:
            raise ZerobootError(0, "request to %s failed: %s" % (url, e or type(e).__name__)) from e
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            raise ZerobootError(
                status,
                "invalid JSON in the answer: %r" % raw[:200],
                body=raw.decode("utf-8", errors="replace"),
            ) from None


async def _to_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    to_thread = getattr(asyncio, "to_thread", None)
    if to_thread is not None:  # Python >= 3.9
        return await to_thread(func, *args, **kwargs)
    loop = asyncio.get_event_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


class AsyncSandbox:
    """The asyncio flavour of :class:`Sandbox`: the same methods, as coroutines.

    Each call runs the blocking client in a worker thread (``asyncio.to_thread``),
    so many calls may be awaited concurrently::

        sb = AsyncSandbox()
        outputs = await asyncio.gather(*(sb.run(code) for code in codes))
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        self.sync = Sandbox(api_key=api_key, base_url=base_url, timeout=timeout)

    @property
    def api_key(self) -> Optional[str]:
        return self.sync.api_key

    @property
    def base_url(self) -> str:
        return self.sync.base_url

    @property
    def timeout(self) -> float:
        return self.sync.timeout

    def __repr__(self) -> str:
        return "Async" + repr(self.sync)

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        self.sync.close()

    async def run(self, code: str, language: str = "python", timeout: Optional[float] = None) -> str:
        """See :meth:`Sandbox.run`."""
        return await _to_thread(self.sync.run, code, language, timeout)

    async def exec(self, code: str, language: str = "python", timeout: Optional[float] = None) -> ExecResult:
        """See :meth:`Sandbox.exec`."""
        return await _to_thread(self.sync.exec, code, language, timeout)

    async def exec_batch(
        self,
        codes_or_requests: Iterable[ExecRequest],
        language: str = "python",
        timeout: Optional[float] = None,
    ) -> List[ExecResult]:
        """See :meth:`Sandbox.exec_batch`."""
        items = list(codes_or_requests)
        return await _to_thread(self.sync.exec_batch, items, language, timeout)

    async def health(self) -> Dict[str, Any]:
        """See :meth:`Sandbox.health`."""
        return await _to_thread(self.sync.health)


# Tracebacks show `zeroboot.ZerobootError: HTTP 401: ...`.
ZerobootError.__module__ = "zeroboot"
