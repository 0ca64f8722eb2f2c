"""The code interpreter of a live sandbox of the ``code-interpreter``
template: notebook cells that keep their state, with rich results (charts
as PNG, tables as HTML), streamed as they run. The wire protocol is E2B's
code interpreter (``POST /execute``, ``/contexts``, newline-delimited JSON),
addressed by the ``E2b-Sandbox-Id`` header to port 49999. Stdlib only."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Union

from ._envd import _Envd, _error

if TYPE_CHECKING:  # pragma: no cover
    from ._client import LiveSandbox

INTERPRETER_PORT = "49999"

_FORMATS = (
    "text",
    "html",
    "markdown",
    "svg",
    "png",
    "jpeg",
    "pdf",
    "latex",
    "json",
    "javascript",
    "data",
    "chart",
)


@dataclass
class Result:
    """One rich result of a cell: the value of its last expression
    (``is_main_result``) or something it displayed. Each format present is
    set: ``text``, ``html``, ``png`` (base64), ``svg``, ``markdown``, ..."""

    text: Optional[str] = None
    html: Optional[str] = None
    markdown: Optional[str] = None
    svg: Optional[str] = None
    png: Optional[str] = None
    jpeg: Optional[str] = None
    pdf: Optional[str] = None
    latex: Optional[str] = None
    json: Optional[Any] = None
    javascript: Optional[str] = None
    data: Optional[Any] = None
    chart: Optional[Any] = None
    is_main_result: bool = False
    extra: Optional[Dict[str, Any]] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Result":
        kw = {k: d.get(k) for k in _FORMATS}
        return cls(is_main_result=bool(d.get("is_main_result")), extra=d.get("extra"), **kw)

    def formats(self) -> List[str]:
        return [k for k in _FORMATS if getattr(self, k) is not None]


@dataclass
class ExecutionError:
    """The error a cell ended with (``name``, ``value``, ``traceback``)."""

    name: str
    value: str
    traceback: str


@dataclass
class Logs:
    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)


@dataclass
class Execution:
    """What a cell produced: ``results``, ``logs``, ``error`` and its
    ``execution_count``; ``text`` is the main result's text."""

    results: List[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: Optional[ExecutionError] = None
    execution_count: Optional[int] = None

    @property
    def text(self) -> Optional[str]:
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None


def execution_from_exec(d: Mapping[str, Any]) -> Execution:
    """An :class:`Execution` from a one-shot ``/v1/exec`` answer with
    ``results: true`` (``Sandbox.run_code``): its printed text is one log
    entry per stream, and a run past its time limit is a ``TimeoutError``."""
    if d.get("error"):
        raise _error(0, str(d["error"]), d)
    ex = Execution(
        results=[Result.from_dict(r) for r in d.get("results") or []],
        execution_count=d.get("execution_count"),
    )
    if d.get("stdout"):
        ex.logs.stdout.append(d["stdout"])
    if d.get("stderr"):
        ex.logs.stderr.append(d["stderr"])
    e = d.get("exception")
    if e:
        ex.error = ExecutionError(str(e.get("name") or ""), str(e.get("value") or ""), str(e.get("traceback") or ""))
    elif d.get("timed_out"):
        msg = "the cell ran past its time limit and was stopped"
        ex.error = ExecutionError("TimeoutError", msg, msg)
    return ex


@dataclass
class CodeContext:
    """An interpreter state of its own (namespace, working directory)."""

    id: str
    language: str
    cwd: str


class CodeInterpreter(_Envd):
    """``handle.run_code`` and the context calls (see :class:`LiveSandbox`)."""

    def _headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        h = super()._headers(extra)
        h["E2b-Sandbox-Port"] = INTERPRETER_PORT
        return h

    def _json(self, method: str, path: str, body: Optional[Any]) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data, {"Content-Type": "application/json"}, self._sb.client.timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[Union[CodeContext, str]] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
        on_result: Optional[Callable[[Result], None]] = None,
        on_error: Optional[Callable[[ExecutionError], None]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Execution:
        if not isinstance(code, str):
            raise TypeError("code must be a str, not %s" % type(code).__name__)
        if language is not None and context is not None:
            raise ValueError("give language or context, not both")
        body: Dict[str, Any] = {"code": code}
        if language is not None:
            body["language"] = language
        if context is not None:
            body["context_id"] = context.id if isinstance(context, CodeContext) else context
        if envs:
            body["env_vars"] = dict(envs)
        if timeout is not None:
            # Interrupted in the sandbox then (a KeyboardInterrupt error);
            # the context lives on.
            body["timeout"] = timeout
        resp = self._open(
            "POST",
            "/execute",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
            (timeout or 3600) + 30,
        )
        ex = Execution()
        with resp:
            for raw in resp:
                line = raw.strip()
                if not line:
                    continue
                ev = json.loads(line)
                kind = ev.get("type")
                if kind == "stdout":
                    ex.logs.stdout.append(ev["text"])
                    if on_stdout:
                        on_stdout(ev["text"])
                elif kind == "stderr":
                    ex.logs.stderr.append(ev["text"])
                    if on_stderr:
                        on_stderr(ev["text"])
                elif kind == "result":
                    r = Result.from_dict(ev)
                    ex.results.append(r)
                    if on_result:
                        on_result(r)
                elif kind == "error":
                    ex.error = ExecutionError(ev.get("name", ""), ev.get("value", ""), ev.get("traceback", ""))
                    if on_error:
                        on_error(ex.error)
                elif kind == "number_of_executions":
                    ex.execution_count = ev.get("execution_count")
                elif kind == "end_of_execution":
                    return ex
        raise _error(0, "the execution's stream was cut off")

    def create_context(self, language: Optional[str] = None, cwd: Optional[str] = None) -> CodeContext:
        body: Dict[str, Any] = {}
        if language:
            body["language"] = language
        if cwd:
            body["cwd"] = cwd
        d = self._json("POST", "/contexts", body)
        return CodeContext(d["id"], d["language"], d["cwd"])

    def list_contexts(self) -> List[CodeContext]:
        return [CodeContext(d["id"], d["language"], d["cwd"]) for d in self._json("GET", "/contexts", None)]

    def restart_context(self, context: Union[CodeContext, str]) -> None:
        cid = context.id if isinstance(context, CodeContext) else context
        self._json("POST", "/contexts/%s/restart" % urllib.parse.quote(cid, safe=""), None)

    def remove_context(self, context: Union[CodeContext, str]) -> None:
        cid = context.id if isinstance(context, CodeContext) else context
        self._json("DELETE", "/contexts/%s" % urllib.parse.quote(cid, safe=""), None)
