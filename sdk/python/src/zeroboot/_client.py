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
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from ._envd import Commands, Files
    from ._interpreter import CodeContext, Execution

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_HTTP_TIMEOUT = 60.0
# The server's default for `timeout_seconds` when a request does not set it.
SERVER_DEFAULT_CODE_TIMEOUT = 30.0
# Extra HTTP time on top of the code's own time limit (fork, queueing, transfer).
HTTP_TIMEOUT_MARGIN = 10.0

ExecRequest = Union[str, Mapping[str, Any]]
# E2B's `network` option: {"allowOut": [...], "denyOut": [...]} (the
# snake_case keys allow_out / deny_out are taken too).
NetworkRules = Mapping[str, Any]


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
    # Network use: enabled, connections, bytes_in, bytes_out, denied,
    # dns_queries, throttled, udp_dropped (and a note when the server's
    # network is off).
    network: Dict[str, Any] = field(default_factory=dict)
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


class _ClientOrClassMethod:
    """A method callable on an instance or on the class itself.

    ``Sandbox(key).create()`` uses that client; ``Sandbox.create()`` (E2B's
    idiom) uses a client made from the environment (``ZEROBOOT_API_KEY``,
    ``ZEROBOOT_API_URL``).
    """

    def __init__(self, func: Any) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, cls: Any) -> Any:
        target = obj if obj is not None else cls()
        return functools.partial(self.func, target)


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

    def run(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        *,
        allow_internet_access: Optional[bool] = None,
        network: Optional[NetworkRules] = None,
    ) -> str:
        """Run ``code`` and return its stdout (the ``output`` field).

        Like the original zeroboot SDK, ``run`` returns the output even when
        the code exits with a non-zero status or hits its time limit; use
        :meth:`exec` to see ``exit_code``, ``stderr`` and ``timed_out``.
        Raises :class:`ZerobootError` when the server answers with an error
        or cannot be reached. ``allow_internet_access`` and ``network`` as
        for :meth:`exec`.
        """
        return self.exec(
            code,
            language=language,
            timeout=timeout,
            allow_internet_access=allow_internet_access,
            network=network,
        ).output

    def exec(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        *,
        allow_internet_access: Optional[bool] = None,
        network: Optional[NetworkRules] = None,
    ) -> ExecResult:
        """Run ``code`` and return the full :class:`ExecResult`.

        ``timeout`` is the code's time limit in seconds (``timeout_seconds``,
        server default 30, at most 300). ``allow_internet_access`` (server
        default true) and ``network`` (E2B's shape:
        ``{"allowOut": [...], "denyOut": [...]}``, addresses, CIDR blocks and,
        in ``allowOut``, domain names) set its egress rules; they take effect
        on a server run with ``--network policy`` (``result.network`` says
        whether it had network).
        """
        request = self._request_body(code, language, timeout, allow_internet_access, network)
        data = self._call("POST", "/v1/exec", request, self._http_timeout([request]))
        return ExecResult.from_dict(data)

    def run_code(self, code: str, language: str = "python", timeout: Optional[float] = None) -> "Execution":
        """Run ``code`` once as a notebook cell and return its rich
        :class:`Execution`: the last expression's value and ``display()``
        calls as :class:`Result` objects (``text``, ``html``, ``png``...),
        an exception as ``Execution.error``. Stateless, like :meth:`exec`
        (``/v1/exec`` with ``results: true``); the server must serve the
        ``code-interpreter`` template. ``language``: ``python``,
        ``javascript`` or ``bash``.

        >>> Sandbox(key).run_code("import math; math.pi").text
        '3.141592653589793'
        """
        from ._interpreter import execution_from_exec

        request = self._request_body(code, language, timeout)
        request["results"] = True
        return execution_from_exec(self._call("POST", "/v1/exec", request, self._http_timeout([request])))

    def stream(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        *,
        allow_internet_access: Optional[bool] = None,
        network: Optional[NetworkRules] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Run ``code`` and yield its events as they happen:
        ``{"type": "stdout" | "stderr", "data": str}`` while it writes, then
        one ``{"type": "result", ...}`` with :meth:`exec`'s fields (or
        ``{"type": "error", "error": str}``). The network arguments as for
        :meth:`exec`."""
        request = self._request_body(code, language, timeout, allow_internet_access, network)
        request["stream"] = True
        url = self.base_url + "/v1/exec"
        headers = {
            "Accept": "application/x-ndjson",
            "Content-Type": "application/json",
            "User-Agent": "zeroboot-python/%s" % __version__,
        }
        if self.api_key:
            headers["Authorization"] = "Bearer %s" % self.api_key
        req = urllib.request.Request(url, data=json.dumps(request).encode(), headers=headers, method="POST")
        try:
            resp = self._opener.open(req, timeout=self._http_timeout([request]))
        except urllib.error.HTTPError as e:
            raw = e.read() or b""
            e.close()
            message, parsed = _error_message(e.code, str(e.reason or ""), raw)
            raise ZerobootError(e.code, message, body=parsed) from None
        except (urllib.error.URLError, OSError) as e:
            raise ZerobootError(0, "cannot reach %s: %s" % (url, e)) from e

        def events() -> Iterator[Dict[str, Any]]:
            with resp:
                for line in resp:
                    line = line.strip()
                    if line:
                        yield json.loads(line)

        return events()

    @_ClientOrClassMethod
    def create(
        self,
        template: str = "python",
        timeout: int = 300,
        metadata: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        snapshot: Optional[str] = None,
        auto_pause: bool = False,
        allow_internet_access: Optional[bool] = None,
        network: Optional[NetworkRules] = None,
    ) -> "LiveSandbox":
        """Create a sandbox you hold: its state (variables, imports, files)
        persists from one :meth:`LiveSandbox.run` to the next until it is
        killed or ``timeout`` seconds pass (see :meth:`LiveSandbox.set_timeout`).

        ``template`` is ``"python"``, ``"node"``, ``"base"`` or
        ``"code-interpreter"`` (for :meth:`LiveSandbox.run_code`). ``metadata``
        tags it (see :meth:`list`); ``envs`` are environment variables.
        ``snapshot`` (an id or name from :meth:`LiveSandbox.snapshot`) starts
        it from that snapshot instead of a template. With ``auto_pause`` it
        is paused, not killed, when its time to live ends.
        ``allow_internet_access`` and ``network`` set its egress rules as for
        :meth:`exec` (change them later with
        :meth:`LiveSandbox.update_network`).
        Uses E2B's ``POST /sandboxes``.
        """
        if snapshot is not None:
            template = snapshot
        body: Dict[str, Any] = {"templateID": template, "timeout": int(timeout)}
        if auto_pause:
            body["autoPause"] = True
        if metadata:
            body["metadata"] = dict(metadata)
        if envs:
            body["envVars"] = dict(envs)
        body.update(_network_fields(allow_internet_access, network))
        data = self._call("POST", "/sandboxes", body, self.timeout)
        if not isinstance(data, Mapping) or not isinstance(data.get("sandboxID"), str):
            raise ZerobootError(0, "unexpected create answer: %r" % (data,), body=data)
        token = data.get("envdAccessToken")
        return LiveSandbox(
            self, data["sandboxID"], template=template, access_token=token if isinstance(token, str) else None
        )

    @_ClientOrClassMethod
    def connect(self, sandbox_id: str, timeout: Optional[int] = None) -> "LiveSandbox":
        """A handle on the live sandbox ``sandbox_id`` (created earlier, by
        this process or another). With ``timeout``, its time to live is
        extended to at least that many seconds from now; a paused sandbox
        is resumed."""
        body: Dict[str, Any] = {"timeout": int(timeout) if timeout is not None else 15}
        if timeout is None:
            # Only check that it exists: connect would change its time to live.
            data = self._call("GET", "/sandboxes/%s" % _quote(sandbox_id), None, self.timeout)
        else:
            data = self._call("POST", "/sandboxes/%s/connect" % _quote(sandbox_id), body, self.timeout)
        template = data.get("templateID") if isinstance(data, Mapping) else None
        return LiveSandbox(self, sandbox_id, template=template)

    @_ClientOrClassMethod
    def snapshots(self) -> List[Dict[str, Any]]:
        """This API key's snapshots: ``[{"snapshotID", "names"}]``."""
        data = self._call("GET", "/snapshots", None, self.timeout)
        return list(data) if isinstance(data, list) else []

    @_ClientOrClassMethod
    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a snapshot; False if there was none of that id or name."""
        try:
            self._call("DELETE", "/templates/%s" % _quote(snapshot_id), None, self.timeout)
        except ZerobootError as e:
            if e.status == 404:
                return False
            raise
        return True

    @_ClientOrClassMethod
    def list(self, metadata: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
        """The live sandboxes of this API key (E2B's ``GET /v2/sandboxes``),
        those whose metadata has every pair of ``metadata`` if given."""
        out: List[Dict[str, Any]] = []
        token: Optional[str] = None
        while True:
            query: List[Tuple[str, str]] = [("limit", "100")]
            if metadata:
                inner = urllib.parse.urlencode(
                    {urllib.parse.quote(k): urllib.parse.quote(v) for k, v in metadata.items()}
                )
                query.append(("metadata", inner))
            if token:
                query.append(("nextToken", token))
            data, headers = self._call_with_headers(
                "GET", "/v2/sandboxes?" + urllib.parse.urlencode(query), None, self.timeout
            )
            if not isinstance(data, list):
                raise ZerobootError(0, "unexpected list answer: %r" % (data,), body=data)
            out.extend(data)
            token = headers.get("x-next-token")
            if not token:
                return out

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
    def _request_body(
        code: str,
        language: str,
        timeout: Optional[float],
        allow_internet_access: Optional[bool] = None,
        network: Optional[NetworkRules] = None,
    ) -> Dict[str, Any]:
        if not isinstance(code, str):
            raise TypeError("code must be a str, not %s" % type(code).__name__)
        body: Dict[str, Any] = {"code": code, "language": language}
        if timeout is not None:
            body["timeout_seconds"] = timeout
        body.update(_network_fields(allow_internet_access, network))
        return body

    def _http_timeout(self, requests: Sequence[Mapping[str, Any]]) -> float:
        longest = SERVER_DEFAULT_CODE_TIMEOUT
        for request in requests:
            t = request.get("timeout_seconds")
            if isinstance(t, (int, float)) and not isinstance(t, bool):
                longest = max(longest, float(t))
        return max(self.timeout, longest + HTTP_TIMEOUT_MARGIN)

    def _call(self, method: str, path: str, body: Optional[Any], timeout: float) -> Any:
        return self._call_with_headers(method, path, body, timeout)[0]

    def _call_with_headers(
        self, method: str, path: str, body: Optional[Any], timeout: float
    ) -> Tuple[Any, Dict[str, str]]:
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
                answer_headers = {k.lower(): v for k, v in resp.headers.items()}
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
            return (json.loads(raw.decode("utf-8")) if raw else None), answer_headers
        except ValueError:
            raise ZerobootError(
                status,
                "invalid JSON in the answer: %r" % raw[:200],
                body=raw.decode("utf-8", errors="replace"),
            ) from None


def _network_fields(
    allow_internet_access: Optional[bool], network: Optional[NetworkRules]
) -> Dict[str, Any]:
    """The request fields for E2B's network options (checked here, so that a
    mistake is a TypeError at the call, not a 400 later)."""
    out: Dict[str, Any] = {}
    if allow_internet_access is not None:
        if not isinstance(allow_internet_access, bool):
            raise TypeError("allow_internet_access must be a bool")
        out["allow_internet_access"] = allow_internet_access
    if network is not None:
        if not isinstance(network, Mapping):
            raise TypeError("network must be a dict like {'allowOut': [...], 'denyOut': [...]}")
        rules: Dict[str, Any] = {}
        for key, value in network.items():
            name = {"allow_out": "allowOut", "deny_out": "denyOut"}.get(key, key)
            if name in ("allowOut", "denyOut"):
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise TypeError("network.%s must be a list of strings" % name)
                value = list(value)
            rules[name] = value
        out["network"] = rules
    return out


def _quote(sandbox_id: str) -> str:
    if not isinstance(sandbox_id, str) or not sandbox_id:
        raise TypeError("sandbox_id must be a non-empty str")
    return urllib.parse.quote(sandbox_id, safe="")


class LiveSandbox:
    """A sandbox you hold (from :meth:`Sandbox.create` or
    :meth:`Sandbox.connect`): each :meth:`run` sees what the previous ones
    left (variables, imports, files), until :meth:`kill` or its time to
    live ends. Code that times out, or ends the interpreter (``os._exit``),
    ends the sandbox: later runs raise :class:`ZerobootError` with status 410.

    >>> h = Sandbox(key).create()
    >>> h.run("x = 41"); h.run("print(x + 1)")
    '42\\n'
    """

    def __init__(
        self,
        client: Sandbox,
        sandbox_id: str,
        template: Optional[str] = None,
        access_token: Optional[str] = None,
    ) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.template = template
        self.access_token = access_token

    @property
    def commands(self) -> "Commands":
        """Shell commands in this sandbox: ``h.commands.run("ls -l")``."""
        from ._envd import Commands

        return Commands(self)

    @property
    def files(self) -> "Files":
        """This sandbox's files: ``h.files.write(path, data)``, ``read``,
        ``list``, ``exists``, ``make_dir``, ``rename``, ``remove``."""
        from ._envd import Files

        return Files(self)

    @property
    def id(self) -> str:
        return self.sandbox_id

    def __repr__(self) -> str:
        return "LiveSandbox(%r, template=%r)" % (self.sandbox_id, self.template)

    def __enter__(self) -> "LiveSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Run ``code`` in this sandbox; returns its stdout (see :meth:`exec`)."""
        return self.exec(code, timeout=timeout).output

    def exec(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """Run ``code`` in this sandbox and return the full :class:`ExecResult`
        (``timeout``: the code's time limit, default 30 s, at most 300)."""
        if not isinstance(code, str):
            raise TypeError("code must be a str, not %s" % type(code).__name__)
        body: Dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout_seconds"] = timeout
        data = self.client._call(
            "POST",
            "/v1/sandboxes/%s/exec" % _quote(self.sandbox_id),
            body,
            self.client._http_timeout([body]),
        )
        return ExecResult.from_dict(data)

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Any = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        on_result: Optional[Callable[[Any], None]] = None,
        on_error: Optional[Callable[[Any], None]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> "Execution":
        """Run a notebook cell (sandboxes of the ``code-interpreter``
        template): state stays between cells, the last expression's value
        and ``display()`` calls are :class:`Result` objects (``text``,
        ``html``, ``png``...), errors are ``Execution.error``. ``language``:
        ``python`` (default) or ``bash``; ``context``: one made by
        :meth:`create_code_context`. ``on_stdout``/``on_stderr`` get text as
        it is printed. ``timeout`` (seconds) interrupts the cell (a
        ``KeyboardInterrupt`` error); the context lives on.

        >>> h = Sandbox(key).create(template="code-interpreter")
        >>> h.run_code("x = 1"); h.run_code("x + 1").text
        '2'
        """
        from ._interpreter import CodeInterpreter

        return CodeInterpreter(self).run_code(
            code,
            language=language,
            context=context,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_result=on_result,
            on_error=on_error,
            envs=envs,
            timeout=timeout,
        )

    def create_code_context(self, language: Optional[str] = None, cwd: Optional[str] = None) -> "CodeContext":
        """A new context (its own namespace and working directory)."""
        from ._interpreter import CodeInterpreter

        return CodeInterpreter(self).create_context(language=language, cwd=cwd)

    def list_code_contexts(self) -> List["CodeContext"]:
        from ._interpreter import CodeInterpreter

        return CodeInterpreter(self).list_contexts()

    def restart_code_context(self, context: Any) -> None:
        """Empty a context's state (its namespace; a new bash)."""
        from ._interpreter import CodeInterpreter

        CodeInterpreter(self).restart_context(context)

    def remove_code_context(self, context: Any) -> None:
        from ._interpreter import CodeInterpreter

        CodeInterpreter(self).remove_context(context)

    def kill(self) -> bool:
        """End the sandbox now; False if it had already ended."""
        try:
            self.client._call("DELETE", "/sandboxes/%s" % _quote(self.sandbox_id), None, self.client.timeout)
        except ZerobootError as e:
            if e.status == 404:
                return False
            raise
        return True

    def fork(self, count: int = 1, timeout: int = 300) -> List[Union["LiveSandbox", ZerobootError]]:
        """``count`` copies (1 to 100) of this sandbox as it is now: its
        variables, files, and running commands; each copy then goes its own
        way, and this one goes on. One entry per copy, in order: a handle,
        or the :class:`ZerobootError` that copy failed with (e.g. 429 over
        the limit of live sandboxes). Each copy lives ``timeout`` seconds.
        Uses E2B's ``POST /sandboxes/{id}/fork``."""
        data = self.client._call(
            "POST",
            "/sandboxes/%s/fork" % _quote(self.sandbox_id),
            {"count": int(count), "timeout": int(timeout)},
            self.client.timeout,
        )
        if not isinstance(data, list):
            raise ZerobootError(0, "unexpected fork answer: %r" % (data,), body=data)
        out: List[Union["LiveSandbox", ZerobootError]] = []
        for item in data:
            sb = item.get("sandbox") if isinstance(item, Mapping) else None
            if isinstance(sb, Mapping) and isinstance(sb.get("sandboxID"), str):
                token = sb.get("envdAccessToken")
                out.append(
                    LiveSandbox(
                        self.client,
                        sb["sandboxID"],
                        template=self.template,
                        access_token=token if isinstance(token, str) else None,
                    )
                )
            else:
                err = item.get("error") if isinstance(item, Mapping) else None
                err = err if isinstance(err, Mapping) else {}
                out.append(ZerobootError(int(err.get("code", 0)), str(err.get("message", item)), body=item))
        return out

    def snapshot(self, name: Optional[str] = None, memory: bool = True) -> str:
        """Snapshot this sandbox as it is now (it goes on running) and return
        the snapshot's id: ``Sandbox(key).create(snapshot=id)`` starts new
        sandboxes from it, also after the server restarts. A ``name`` already
        given to one of your snapshots moves to this one (that one is
        replaced). With ``memory=False`` only its files are kept: sandboxes
        from it start fresh with them. Uses E2B's
        ``POST /sandboxes/{id}/snapshots``."""
        body: Dict[str, Any] = {"name": name} if name else {}
        if not memory:
            body["memory"] = False
        data = self.client._call(
            "POST", "/sandboxes/%s/snapshots" % _quote(self.sandbox_id), body, self.client.timeout
        )
        if not isinstance(data, Mapping) or not isinstance(data.get("snapshotID"), str):
            raise ZerobootError(0, "unexpected snapshot answer: %r" % (data,), body=data)
        return data["snapshotID"]

    def pause(self, memory: bool = True) -> bool:
        """Pause it (written to disk; it runs nothing and does not expire)
        until :meth:`Sandbox.connect` resumes it; False if it was paused
        already. With ``memory=False`` only its files are kept: the resume
        is a cold boot (no processes, no variables). A code run in progress
        is paused too and goes on after the resume; its caller gets a 409."""
        body: Dict[str, Any] = {} if memory else {"memory": False}
        try:
            self.client._call("POST", "/sandboxes/%s/pause" % _quote(self.sandbox_id), body, self.client.timeout)
        except ZerobootError as e:
            if e.status == 409 and "already paused" in str(e):
                return False
            raise
        return True

    def set_timeout(self, timeout: int) -> None:
        """End the sandbox ``timeout`` seconds from now (replaces the previous
        time to live)."""
        self.client._call(
            "POST",
            "/sandboxes/%s/timeout" % _quote(self.sandbox_id),
            {"timeout": int(timeout)},
            self.client.timeout,
        )

    def update_network(
        self,
        allow_out: Optional[Sequence[str]] = None,
        deny_out: Optional[Sequence[str]] = None,
        allow_internet_access: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """Replace the sandbox's egress rules (``PUT /sandboxes/{id}/network``):
        connections already open stay, new ones are decided under the new
        rules. What is not given takes its default (no ``allowOut`` or
        ``denyOut`` entries, internet access allowed). Returns the sandbox's
        detail (its ``network`` and ``allowInternetAccess``)."""
        rules = _network_fields(
            allow_internet_access,
            {"allowOut": list(allow_out or []), "denyOut": list(deny_out or [])},
        )
        data = self.client._call(
            "PUT", "/sandboxes/%s/network" % _quote(self.sandbox_id), rules, self.client.timeout
        )
        if not isinstance(data, dict):
            raise ZerobootError(0, "unexpected network answer: %r" % (data,), body=data)
        return data

    def info(self) -> Dict[str, Any]:
        """E2B's sandbox detail: ``templateID``, ``startedAt``, ``endAt``,
        ``metadata``, ``state``, ..."""
        data = self.client._call("GET", "/sandboxes/%s" % _quote(self.sandbox_id), None, self.client.timeout)
        if not isinstance(data, dict):
            raise ZerobootError(0, "unexpected sandbox answer: %r" % (data,), body=data)
        return data

    def is_running(self) -> bool:
        """Whether the sandbox is still there."""
        try:
            self.info()
        except ZerobootError as e:
            if e.status == 404:
                return False
            raise
        return True


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

    async def run(
        self, code: str, language: str = "python", timeout: Optional[float] = None, **network: Any
    ) -> str:
        """See :meth:`Sandbox.run` (``allow_internet_access``, ``network``)."""
        return await _to_thread(functools.partial(self.sync.run, **network), code, language, timeout)

    async def exec(
        self, code: str, language: str = "python", timeout: Optional[float] = None, **network: Any
    ) -> ExecResult:
        """See :meth:`Sandbox.exec` (``allow_internet_access``, ``network``)."""
        return await _to_thread(functools.partial(self.sync.exec, **network), code, language, timeout)

    async def run_code(self, code: str, language: str = "python", timeout: Optional[float] = None) -> "Execution":
        """See :meth:`Sandbox.run_code`."""
        return await _to_thread(self.sync.run_code, code, language, timeout)

    async def stream(
        self, code: str, language: str = "python", timeout: Optional[float] = None, **network: Any
    ) -> AsyncIterator[Dict[str, Any]]:
        """See :meth:`Sandbox.stream`: ``async for event in sb.stream(code)``."""
        events = await _to_thread(functools.partial(self.sync.stream, **network), code, language, timeout)
        while True:
            event = await _to_thread(next, events, None)
            if event is None:
                return
            yield event

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
