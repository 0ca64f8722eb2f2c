"""Commands and files of a live sandbox: E2B's envd services as zeroboot
serves them (Connect RPC with the JSON codec, and ``/files``), addressed
to one sandbox by the ``E2b-Sandbox-Id`` header. Stdlib only."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from ._client import LiveSandbox

ENVD_PORT = "49983"
_END_STREAM = 0x02


def _error(status: int, message: str, body: Any = None) -> Exception:
    from ._client import ZerobootError

    return ZerobootError(status, message, body=body)


@dataclass
class CommandResult:
    """How a command ended."""

    pid: int
    exit_code: int
    stdout: str
    stderr: str
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CommandHandle:
    """A started command: :meth:`wait` for it (its output arrives through
    ``on_stdout``/``on_stderr`` as it is written), :meth:`kill` it, write
    its stdin."""

    def __init__(self, commands: "Commands", pid: int, events: Iterator[Dict[str, Any]]) -> None:
        self._commands = commands
        self.pid = pid
        self._events = events

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """The raw events (``{"data": {"stdout": b64}}``, ``{"end": ...}``)."""
        return self._events

    def wait(
        self,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
    ) -> CommandResult:
        out: List[str] = []
        err: List[str] = []
        for ev in self._events:
            data = ev.get("data")
            if data:
                for key, sink, cb in (("stdout", out, on_stdout), ("stderr", err, on_stderr)):
                    if key in data:
                        text = base64.b64decode(data[key]).decode("utf-8", errors="replace")
                        sink.append(text)
                        if cb is not None:
                            cb(text)
            end = ev.get("end")
            if end is not None:
                return CommandResult(
                    pid=self.pid,
                    exit_code=int(end.get("exitCode", 0)),
                    stdout="".join(out),
                    stderr="".join(err),
                    error=end.get("error"),
                )
        raise _error(0, "the command's stream ended without its end event")

    def kill(self) -> bool:
        return self._commands.kill(self.pid)

    def send_stdin(self, data: Union[str, bytes]) -> None:
        self._commands.send_stdin(self.pid, data)

    def close_stdin(self) -> None:
        self._commands.close_stdin(self.pid)


class _Envd:
    def __init__(self, sandbox: "LiveSandbox") -> None:
        self._sb = sandbox

    def _headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        h = {
            "E2b-Sandbox-Id": self._sb.sandbox_id,
            "E2b-Sandbox-Port": ENVD_PORT,
        }
        token = getattr(self._sb, "access_token", None)
        if token:
            h["X-Access-Token"] = token
        if extra:
            h.update(extra)
        return h

    def _open(self, method: str, path: str, data: Optional[bytes], headers: Mapping[str, str], timeout: float) -> Any:
        client = self._sb.client
        req = urllib.request.Request(client.base_url + path, data=data, headers=self._headers(headers), method=method)
        try:
            return client._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            raw = e.read() or b""
            e.close()
            try:
                body = json.loads(raw)
                message = body.get("message") or raw.decode("utf-8", "replace")
            except ValueError:
                body, message = None, raw.decode("utf-8", "replace")
            raise _error(e.code, message, body) from None
        except (urllib.error.URLError, OSError) as e:
            raise _error(0, "cannot reach %s: %s" % (client.base_url, e)) from e

    def _unary(self, procedure: str, message: Mapping[str, Any]) -> Dict[str, Any]:
        with self._open(
            "POST",
            "/" + procedure,
            json.dumps(message).encode(),
            {"Content-Type": "application/json", "Connect-Protocol-Version": "1"},
            self._sb.client.timeout,
        ) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def _stream(self, procedure: str, message: Mapping[str, Any], timeout: Optional[float]) -> Iterator[Dict[str, Any]]:
        payload = json.dumps(message).encode()
        headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
        if timeout:
            headers["Connect-Timeout-Ms"] = str(int(timeout * 1000))
        resp = self._open(
            "POST",
            "/" + procedure,
            struct.pack(">BI", 0, len(payload)) + payload,
            headers,
            (timeout or 3600) + 10,
        )

        def events() -> Iterator[Dict[str, Any]]:
            with resp:
                while True:
                    head = resp.read(5)
                    if len(head) < 5:
                        raise _error(0, "the stream was cut off")
                    flags, n = struct.unpack(">BI", head)
                    body = json.loads(resp.read(n) or b"{}")
                    if flags & _END_STREAM:
                        err = body.get("error")
                        if err:
                            code = err.get("code", "unknown")
                            status = 408 if code == "deadline_exceeded" else 404 if code == "not_found" else 500
                            raise _error(status, "%s: %s" % (code, err.get("message", "")), err)
                        return
                    ev = body.get("event", {})
                    if "keepalive" in ev:
                        continue
                    yield ev

        return events()


class Commands(_Envd):
    """``handle.commands``: run shell commands in the sandbox (each as
    ``/bin/bash -l -c CMD``, as E2B's SDKs do)."""

    def run(
        self,
        cmd: str,
        background: bool = False,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        stdin: bool = False,
        timeout: Optional[float] = 60,
    ) -> Union[CommandResult, CommandHandle]:
        """Run ``cmd``; returns its :class:`CommandResult` (a non-zero exit
        is not an error here), or with ``background=True`` a
        :class:`CommandHandle` at once. ``timeout`` (seconds; 0: none) ends
        and kills it (the error has status 408)."""
        process: Dict[str, Any] = {"cmd": "/bin/bash", "args": ["-l", "-c", cmd], "envs": dict(envs or {})}
        if cwd:
            process["cwd"] = cwd
        events = self._stream("process.Process/Start", {"process": process, "stdin": stdin}, timeout)
        start = next(events, None)
        if not start or "start" not in start:
            raise _error(0, "the command did not start: %r" % (start,))
        h = CommandHandle(self, int(start["start"]["pid"]), events)
        if background:
            return h
        return h.wait(on_stdout=on_stdout, on_stderr=on_stderr)

    def list(self) -> List[Dict[str, Any]]:
        """Running commands: ``[{"pid", "config": {"cmd", "args", ...}, "tag"?}]``."""
        return list(self._unary("process.Process/List", {}).get("processes", []))

    def kill(self, pid: int) -> bool:
        """SIGKILL; False if no such command runs."""
        try:
            self._unary("process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return False
            raise
        return True

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._unary(
            "process.Process/SendInput",
            {"process": {"pid": pid}, "input": {"stdin": base64.b64encode(raw).decode()}},
        )

    def close_stdin(self, pid: int) -> None:
        self._unary("process.Process/CloseStdin", {"process": {"pid": pid}})

    def connect(self, pid: int, timeout: Optional[float] = None) -> CommandHandle:
        """Follow a running command's output from now on."""
        events = self._stream("process.Process/Connect", {"process": {"pid": pid}}, timeout)
        start = next(events, None)
        if not start or "start" not in start:
            raise _error(0, "cannot attach to process %d: %r" % (pid, start))
        return CommandHandle(self, pid, events)


class Files(_Envd):
    """``handle.files``: the sandbox's file system, read and written by the
    server directly (no code runs in the sandbox for it)."""

    def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        """The file at ``path`` (``format="bytes"`` for bytes); status 404 if
        it does not exist."""
        q = urllib.parse.urlencode({"path": path})
        with self._open("GET", "/files?" + q, None, {}, self._sb.client.timeout) as r:
            raw = r.read()
        return raw if format == "bytes" else raw.decode("utf-8", errors="replace")

    def write(self, path: str, data: Union[str, bytes]) -> None:
        """Write (create or replace) ``path``; parents are made."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        q = urllib.parse.urlencode({"path": path})
        with self._open(
            "POST", "/files?" + q, raw, {"Content-Type": "application/octet-stream"}, self._sb.client.timeout
        ) as r:
            r.read()

    def list(self, path: str, depth: int = 1) -> List[Dict[str, Any]]:
        """Entries under ``path``: ``[{"name", "type", "path", "size", ...}]``."""
        return list(self._unary("filesystem.Filesystem/ListDir", {"path": path, "depth": depth}).get("entries", []))

    def exists(self, path: str) -> bool:
        try:
            self._unary("filesystem.Filesystem/Stat", {"path": path})
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return False
            raise
        return True

    def make_dir(self, path: str) -> None:
        self._unary("filesystem.Filesystem/MakeDir", {"path": path})

    def remove(self, path: str) -> None:
        self._unary("filesystem.Filesystem/Remove", {"path": path})

    def rename(self, old_path: str, new_path: str) -> None:
        self._unary("filesystem.Filesystem/Move", {"source": old_path, "destination": new_path})
