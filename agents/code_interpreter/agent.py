"""zeroboot's code-interpreter agent (template `code-interpreter-v1`).

Like the Python agent, it parks reading the control channel (fd
ZEROBOOT_CONTROL_FD, frames of a 4-byte little-endian length and a JSON
object), serves one request, replies and parks again. The template is this
process parked after it imported IPython, numpy, pandas and matplotlib and
drew one figure, so a fork pays nothing for them.

Requests:
- {"code", "seed", "persist", "env"}: run by the Python agent's own code
  (one-shot or live-sandbox runs); the reply is {"exit_code": N}.
- {"cell": {"code", "context", "language", "env"}, "seed"}: run a cell in
  a context ("seed" comes with a sandbox's first request only: the PRNGs
  are reseeded then, and go on from cell to cell after). While it runs
  the agent writes event frames on the channel, E2B's code-interpreter
  events: {"type": "number_of_executions", "execution_count"},
  {"type": "stdout"|"stderr", "text", "timestamp"},
  {"type": "result", "text", "html", "png", ..., "is_main_result"},
  {"type": "error", "name", "value", "traceback"}; then the reply
  {"exit_code": 0}. An interrupt (SIGINT, sent by the VMM when a cell's
  time is up or its client went away) ends the cell with a
  KeyboardInterrupt error; the context stays.
- {"op": "create", "context", "language", "cwd"}, {"op": "restart",
  "context"}, {"op": "remove", "context"}: manage contexts; the reply is
  {"exit_code": 0} or {"exit_code": 1, "error": "..."}.

Contexts: a Python context is an IPython InteractiveShell with its own
namespace, execution count and working directory, all in this process (the
default one is made in the template). A bash context is a bash process
this agent drives; its cells are sourced files, so `cd` and `export` stay.

The framing, the reseeding and the plain runs are the Python agent's
(`agent.py`, installed next to this file in the template and imported:
the script's directory is first on sys.path).
"""

import base64  # noqa: F401
import builtins
import datetime
import gc
import io
import json
import os
import random
import shlex
import subprocess
import sys
import time  # noqa: F401
import traceback
import types

# What the code interpreter's users reach for, imported once here.
import collections  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import pathlib  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import tempfile  # noqa: F401

import numpy  # noqa: F401  (loaded once in the template)
import pandas  # noqa: F401
import matplotlib

matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt  # noqa: E402

from IPython.core.displayhook import DisplayHook  # noqa: E402
from IPython.core.displaypub import DisplayPublisher  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from traitlets.config import Config  # noqa: E402

import agent as plain  # noqa: E402  (the Python agent, next to this file)

# Optional heavy modules: imported when the image has them.
for _name in ("scipy", "scipy.stats", "sklearn", "seaborn", "sympy", "PIL.Image",
              "requests", "bs4", "openpyxl"):
    try:
        __import__(_name)
    except ImportError:
        pass

# Text a cell may stream, and bytes one result may hold; past them the rest
# is dropped with a marker (the server caps what it passes on as well).
MAX_STREAM_CHARS = 4 << 20
MAX_RESULT_BYTES = 16 << 20
DEFAULT_CWD = "/home/user"


# Event frames held back to go out with the next one (see `send`).
held = bytearray()


def send(obj, hold=False):
    """Write one event frame on the control channel. With `hold`, the
    frame waits for the next one and both go out in one write: every write
    is a VM exit and an event the server passes on, and a cell like `1+1`
    would otherwise cost three (its number_of_executions, its result, the
    reply). Only frames that carry no timing are held: the execution count
    and the main result, which is the last thing a cell makes."""
    data = json.dumps(obj).encode()
    held.extend(len(data).to_bytes(4, "little"))
    held.extend(data)
    if hold:
        return
    out = bytes(held)
    held.clear()
    while out:
        out = out[os.write(plain.CONTROL_FD, out):]


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Cell:
    """The cell in progress: where its events go, and its output budget."""

    def __init__(self):
        self.streamed = 0
        self.dropped = 0
        self.errored = False

    def stream(self, name, text):
        if not text:
            return
        room = MAX_STREAM_CHARS - self.streamed
        if room <= 0:
            self.dropped += len(text)
            return
        if len(text) > room:
            self.dropped += len(text) - room
            text = text[:room]
        self.streamed += len(text)
        send({"type": name, "text": text, "timestamp": now_iso()})

    def error(self, name, value, tb):
        # One error per cell, as E2B's server reports it.
        if self.errored:
            return
        self.errored = True
        send({"type": "error", "name": name, "value": value, "traceback": tb})

    def result(self, data, main):
        out = {"type": "result", "is_main_result": bool(main)}
        size = 0
        extra = {}
        for mime, value in data.items():
            field = MIME_FIELDS.get(mime)
            n = len(value) if isinstance(value, (str, bytes)) else len(json.dumps(value))
            if size + n > MAX_RESULT_BYTES:
                self.stream("stderr", f"[zeroboot: the {mime} form of a result is {n} bytes; "
                            f"over the {MAX_RESULT_BYTES} byte limit, it was dropped]\n")
                continue
            size += n
            if field is None:
                extra[mime] = value
            else:
                out[field] = value
        text = out.get("text")
        # E2B shows a string's value without its quotes.
        if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            out["text"] = text[1:-1]
        if extra:
            out["extra"] = extra
        send(out, hold=main)

    def finish(self):
        if self.dropped:
            send({"type": "stderr", "timestamp": now_iso(),
                  "text": f"\n[zeroboot: output truncated: {self.dropped} characters dropped]\n"})


MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

cell = Cell()


class Stream(io.TextIOBase):
    """sys.stdout / sys.stderr during cells: each line an event."""

    def __init__(self, name, fd):
        self.name_ = name
        self.fd = fd
        self.buf = []

    @property
    def encoding(self):
        return "utf-8"

    @property
    def name(self):
        return f"<{self.name_}>"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        # Code that writes to the descriptor itself (subprocesses, C code)
        # reaches the VMM's capture of fd 1 / 2, streamed as well.
        return self.fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.buf.append(s)
        if "\n" in s or sum(map(len, self.buf)) >= 8192:
            self.flush()
        return len(s)

    def flush(self):
        if self.buf:
            text = "".join(self.buf)
            self.buf = []
            cell.stream(self.name_, text)


class Publisher(DisplayPublisher):
    """display(...) and the inline backend's figures: non-main results."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        sys.stdout.flush()
        sys.stderr.flush()
        cell.result(dict(data), main=False)

    def clear_output(self, wait=False):
        pass


class Hook(DisplayHook):
    """The value of a cell's last expression: the main result."""

    def start_displayhook(self):
        self.data = {}

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        self.data = dict(format_dict)

    def finish_displayhook(self):
        sys.stdout.flush()
        sys.stderr.flush()
        if self.data:
            cell.result(self.data, main=True)
        self.data = {}


class Shell(InteractiveShell):
    """An InteractiveShell whose errors are events (as ipykernel's)."""

    def _showtraceback(self, etype, evalue, stb):
        sys.stdout.flush()
        sys.stderr.flush()
        cell.error(getattr(etype, "__name__", str(etype)), str(evalue), "\n".join(stb))

    def init_io(self):
        pass

    def enable_gui(self, gui=None):
        pass


def plain_format_calls():
    """IPython wraps each formatter's __call__ with the `decorator` package,
    whose wrapper binds every call's arguments to the signature (inspect's
    Signature.bind): with a dozen formatters per displayed value that was
    about a fifth of `run_cell("1+1")` in the sandbox (650-690 µs, 550 µs
    without). The same error handling (formatters.catch_format_error's own
    function) is put back around each method by a plain wrapper."""
    from IPython.core import formatters
    import functools

    guard = getattr(formatters.catch_format_error, "__wrapped__", None)
    if guard is None:
        return
    for cls in vars(formatters).values():
        call = vars(cls).get("__call__") if isinstance(cls, type) else None
        method = getattr(call, "__wrapped__", None)
        if method is None:
            continue

        def make(method):
            def call(self, obj, *args, **kwargs):
                return guard(method, self, obj, *args, **kwargs)
            return functools.update_wrapper(call, method)

        cls.__call__ = make(method)


plain_format_calls()


def new_shell():
    # No history: no sqlite file and no history-saving thread.
    config = Config()
    config.HistoryManager.enabled = False
    sh = Shell(config=config, colors="NoColor", history_length=0, displayhook_class=Hook)
    sh.display_pub = Publisher(shell=sh)
    sh.display_pub_class = Publisher
    # The inline backend's figure formatters and its end-of-cell flush.
    sh.enable_matplotlib("inline")
    return sh


class PythonContext:
    def __init__(self, cwd, shell=None):
        self.cwd = cwd
        self.shell = shell
        if self.shell is None:
            self.shell = new_shell()
            self.shell.user_ns.update(fresh_namespace())

    def run(self, code):
        sh = self.shell
        # display() and get_ipython() reach the shell running now.
        InteractiveShell._instance = sh
        send({"type": "number_of_executions", "execution_count": sh.execution_count}, hold=True)
        sh.run_cell(code, store_history=True)

    def close(self):
        pass


def fresh_namespace():
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    return main.__dict__


class BashContext:
    """A bash process; each cell is a file it sources, then a sentinel."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.count = 0
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["/bin/bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # Not a session of its own: the sandbox's kernel has no
            # setsid (EPERM), so an interrupt ends bash itself.
            cwd=self.cwd if os.path.isdir(self.cwd) else "/")

    def run(self, code):
        import select
        self.count += 1
        send({"type": "number_of_executions", "execution_count": self.count}, hold=True)
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        token = "__zeroboot_%016x" % random.getrandbits(64)
        path = f"/tmp/.zeroboot-cell-{os.getpid()}-{self.count}.sh"
        with open(path, "w") as f:
            f.write(code)
            f.write("\n")
        env = getattr(self, "pending_env", None) or {}
        self.pending_env = None
        prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items()
                         if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k))
        unset = "".join(f"unset {k}; " for k in env
                        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k))
        script = (f"{prefix}source {path}\n__zb_rc=$?; {unset}rm -f {path}; "
                  f"printf '%s %s\\n' {token} \"$__zb_rc\"; printf '%s\\n' {token} >&2\n")
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        fds = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        pending = {"stdout": b"", "stderr": b""}
        done = {"stdout": False, "stderr": False}
        rc = None
        mark = token.encode()
        try:
            while not all(done.values()):
                ready, _, _ = select.select([fd for fd, n in fds.items() if not done[n]], [], [])
                for fd in ready:
                    name = fds[fd]
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        done[name] = True
                        continue
                    pending[name] += chunk
                    buf = pending[name]
                    at = buf.find(mark)
                    if at >= 0:
                        rest = buf[at + len(mark):].split(b"\n", 1)[0].strip()
                        if name == "stdout" and rest.lstrip(b"-").isdigit():
                            rc = int(rest)
                        if name == "stdout" and rc is None and b"\n" not in buf[at:]:
                            continue
                        cell.stream(name, buf[:at].decode(errors="replace"))
                        pending[name] = b""
                        done[name] = True
                        continue
                    # Keep what could be the start of the sentinel.
                    cut = buf.rfind(b"\n") + 1
                    if len(buf) - cut < len(mark) + 32 and cut > 0:
                        out, pending[name] = buf[:cut], buf[cut:]
                    elif cut == 0 and len(buf) < len(mark) + 32:
                        continue
                    else:
                        out, pending[name] = buf, b""
                    cell.stream(name, out.decode(errors="replace"))
        except KeyboardInterrupt:
            self.kill()
            cell.error("KeyboardInterrupt", "",
                       "KeyboardInterrupt: the cell was interrupted; the bash context was restarted")
            return
        for name in ("stdout", "stderr"):
            if pending[name]:
                cell.stream(name, pending[name].decode(errors="replace"))
        if rc is None:
            code = self.proc.wait()
            self.proc = None
            cell.error("ExitError", f"bash exited with status {code}",
                       f"bash exited with status {code}; the context starts a new bash next time")
        elif rc != 0:
            cell.error("ExitCodeError", str(rc), f"the cell's last command exited with status {rc}")

    def kill(self):
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait()
            except Exception:
                pass
            self.proc = None

    def close(self):
        self.kill()


# The JavaScript context's driver: node's REPL evaluator (declarations
# persist between cells, top-level await), cells as JSON lines on stdin,
# events as JSON lines on stdout.
JS_DRIVER = r"""// zeroboot's JavaScript context: node's REPL evaluator (declarations
// persist, top-level await) driven by JSON lines on stdin; events as JSON
// lines on stdout.
const repl = require("repl");
const util = require("util");
const { PassThrough, Writable } = require("stream");
// The real streams, taken before the context gets its own process.
const stdout = process.stdout;
const stdin = process.stdin;
const out = (o) => stdout.write(JSON.stringify(o) + "\n");
const fmt = (args) => util.formatWithOptions({ colors: false }, ...args) + "\n";
// What the cell writes to console / process.stdout: an event per write.
const stream = (type) => {
  const w = new Writable({
    decodeStrings: false,
    write(chunk, _enc, cb) { out({ type, text: String(chunk) }); cb(); },
  });
  w.isTTY = false;
  return w;
};
const con = new console.Console({ stdout: stream("stdout"), stderr: stream("stderr") });
// The REPL's evaluator reports a cell's runtime error to its domain, not
// to the callback: ours ends the cell with it.
const domain = require("domain").create();
const sink = new Writable({ write(_c, _e, cb) { cb(); } });
const r = repl.start({
  input: new PassThrough(), output: sink, prompt: "", domain,
  terminal: false, useGlobal: false, ignoreUndefined: true, useColors: false,
});
// Defined, not assigned: the REPL's context passes assignments of
// builtins through to the real global.
const own = (name, value) =>
  Object.defineProperty(r.context, name, { value, writable: true, configurable: true, enumerable: false });
own("console", con);
own("process", Object.create(process, {
  stdout: { value: stream("stdout") },
  stderr: { value: stream("stderr") },
}));
process.on("uncaughtException", (e) => out({ type: "stderr", text: "Uncaught " + (e && e.stack || String(e)) + "\n" }));
process.on("unhandledRejection", (e) => String(e && e.stack).includes("node:repl") || out({ type: "stderr", text: "Unhandled rejection " + (e && e.stack || String(e)) + "\n" }));
let buf = "";
stdin.setEncoding("utf8");
stdin.on("data", (chunk) => {
  buf += chunk;
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    let req;
    try { req = JSON.parse(line); } catch { continue; }
    queue.push(req);
  }
  next();
});
// One cell at a time (the agent sends the next after "done" anyway).
const queue = [];
let busy = false;
function next() {
  if (busy || queue.length === 0) return;
  busy = true;
  run(queue.shift());
}
let finish = null;
domain.on("error", (e) => { if (finish) finish(e); });
function run(req) {
  const code = String(req.code ?? "");
  // The cell's env_vars, for this cell only.
  const saved = {};
  for (const [k, v] of Object.entries(req.env || {})) {
    saved[k] = process.env[k];
    process.env[k] = String(v);
  }
  let ended = false;
  finish = (err, value) => {
    if (ended) return;
    ended = true;
    finish = null;
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    if (err) {
      // An incomplete cell is a syntax error here (no next line comes).
      const e = err instanceof repl.Recoverable && err.err ? err.err : err;
      const name = (e && e.constructor && e.constructor.name) || (e && e.name) || "Error";
      // The stack down to the cell's own frames (not this driver's).
      const stack = String((e && e.stack) || e).split("\n");
      const cut = stack.findIndex((l) => l.includes("node:vm") || l.includes("node:repl"));
      const traceback = (cut > 0 ? stack.slice(0, cut) : stack).join("\n");
      out({ type: "error", name, value: (e && e.message) || String(e), traceback });
    } else if (value !== undefined) {
      out({ type: "result", text: util.inspect(value, { colors: false }), is_main_result: true });
    }
    out({ type: "done" });
    busy = false;
    next();
  };
  r.eval(code, r.context, "cell", (err, value) => finish && finish(err, value));
}
"""


class JsContext:
    """A node process running JS_DRIVER; this agent relays its events."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.count = 0
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/bin/node", "-e", JS_DRIVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.cwd if os.path.isdir(self.cwd) else "/")

    def run(self, code):
        import select
        self.count += 1
        send({"type": "number_of_executions", "execution_count": self.count}, hold=True)
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            env = getattr(self, "pending_env", None) or {}
            self.pending_env = None
            self.proc.stdin.write((json.dumps({"code": code, "env": env}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        out_fd, err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([out_fd, err_fd], [], [])
                if err_fd in ready:
                    chunk = os.read(err_fd, 65536)
                    if chunk:
                        cell.stream("stderr", chunk.decode(errors="replace"))
                if out_fd in ready:
                    chunk = os.read(out_fd, 65536)
                    if not chunk:
                        code = self.proc.wait()
                        self.proc = None
                        cell.error("ExitError", f"node exited with status {code}",
                                   f"node exited with status {code}; the context starts a new one next time")
                        return
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if self.event(line):
                            return
        except KeyboardInterrupt:
            self.kill()
            cell.error("KeyboardInterrupt", "",
                       "KeyboardInterrupt: the cell was interrupted; the JavaScript context was restarted")

    def event(self, line):
        """Pass one driver event on; True at the cell's end."""
        try:
            ev = json.loads(line)
        except ValueError:
            return False
        kind = ev.get("type")
        if kind == "done":
            return True
        if kind in ("stdout", "stderr"):
            cell.stream(kind, str(ev.get("text", "")))
        elif kind == "result":
            cell.result({"text/plain": str(ev.get("text", ""))}, main=True)
        elif kind == "error":
            cell.error(str(ev.get("name", "Error")), str(ev.get("value", "")), str(ev.get("traceback", "")))
        return False

    def kill(self):
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait()
            except Exception:
                pass
            self.proc = None

    def close(self):
        self.kill()


LANGUAGES = {"python": PythonContext, "bash": BashContext, "javascript": JsContext}

# The default Python context, made in the template.
default_shell = new_shell()
default_shell.user_ns.update(fresh_namespace())
contexts = {"default": PythonContext(DEFAULT_CWD, default_shell)}


def create_context(cid, language, cwd):
    if cid in contexts:
        return f"context {cid} exists"
    make = LANGUAGES.get(language)
    if make is None:
        return f"unsupported language {language!r}"
    if not os.path.isdir(cwd):
        return f"the working directory {cwd} does not exist"
    contexts[cid] = make(cwd)
    return None


# The Python context whose working directory the process has now (None: no
# context's). A context's `cwd` is read back from the process only when
# another context takes the process over, so cells in one context cost no
# chdir or getcwd (each a VM exit).
cwd_owner = None


def take_cwd(ctx):
    global cwd_owner
    if cwd_owner is ctx:
        return
    release_cwd()
    try:
        os.chdir(ctx.cwd)
    except OSError:
        pass
    cwd_owner = ctx


def release_cwd():
    global cwd_owner
    if cwd_owner is not None:
        try:
            cwd_owner.cwd = os.getcwd()
        except OSError:
            pass
    cwd_owner = None


def run_cell(req):
    global cell
    cid = str(req.get("context", "default"))
    ctx = contexts.get(cid)
    if ctx is None:
        err = create_context(cid, str(req.get("language", "python")), str(req.get("cwd", DEFAULT_CWD)))
        if err:
            send({"type": "error", "name": "ContextError", "value": err, "traceback": err})
            return
        ctx = contexts[cid]
    cell = Cell()
    # The cell's env_vars hold for this cell only (as E2B's server does).
    env = req.get("env")
    saved_env = {}
    if isinstance(env, dict):
        for k, v in env.items():
            saved_env[str(k)] = os.environ.get(str(k))
            os.environ[str(k)] = str(v)
    if isinstance(ctx, (BashContext, JsContext)) and saved_env:
        ctx.pending_env = {k: os.environ[k] for k in saved_env}
    if isinstance(ctx, PythonContext):
        take_cwd(ctx)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Stream("stdout", 1), Stream("stderr", 2)
    try:
        ctx.run(str(req.get("code", "")))
    except KeyboardInterrupt:
        cell.error("KeyboardInterrupt", "", "KeyboardInterrupt")
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        sys.stdout, sys.stderr = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cell.finish()


def manage(req):
    op = req.get("op")
    cid = str(req.get("context", ""))
    if op == "create":
        return create_context(cid, str(req.get("language", "python")), str(req.get("cwd", DEFAULT_CWD)))
    ctx = contexts.get(cid)
    if ctx is None:
        return f"context {cid} not found"
    if op == "restart":
        ctx.close()
        if cid == "default" or isinstance(ctx, PythonContext):
            ctx.shell.reset(new_session=True)
            ctx.shell.user_ns.update(fresh_namespace())
            ctx.shell.execution_count = 1
        else:
            contexts[cid] = type(ctx)(ctx.cwd)
        return None
    if op == "remove":
        if cid == "default":
            return "the default context cannot be removed"
        ctx.close()
        if cwd_owner is ctx:
            release_cwd()
        del contexts[cid]
        return None
    return f"unknown op {op!r}"


def warm_up():
    """Draw and encode one figure and one table, so the fonts, the PNG
    writer and pandas' HTML formatter are loaded in the template."""
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    pandas.DataFrame({"a": [1, 2]})._repr_html_()


home_set = False


def serve(req):
    # A sandbox's first request only: later cells go on from the state
    # the earlier ones left (a seed set in one cell holds for the next).
    if "seed" in req:
        plain.reseed(int(req["seed"]))
    env = req.get("env")
    global home_set
    if ("cell" in req or "op" in req) and not home_set and os.path.isdir(DEFAULT_CWD):
        # E2B's user's home, where the server made it after the fork.
        os.environ["HOME"] = DEFAULT_CWD
        home_set = True
    if "cell" in req or "op" in req:
        # The sandbox's environment (with its first request).
        if isinstance(env, dict):
            os.environ.update({str(k): str(v) for k, v in env.items()})
    if "cell" in req:
        run_cell(req["cell"] if isinstance(req["cell"], dict) else {})
        return {"exit_code": 0}
    if "op" in req:
        err = manage(req)
        return {"exit_code": 0} if err is None else {"exit_code": 1, "error": err}
    env = req.get("env")
    if isinstance(env, dict):
        os.environ.update({str(k): str(v) for k, v in env.items()})
    release_cwd()
    return {"exit_code": plain.run(req.get("code", ""), bool(req.get("persist", False)))}


WARM_UP_CELLS = (
    "1+1",
    "print('warm-up')",
    "import pandas as pd\npd.DataFrame({'a': [1, 2]})",
    "display(1, 'a')",
    "1/0",
    "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
)


def warm_up_cells():
    """Run a few cells through the default context, so the first cell in a
    new sandbox finds IPython's code paths warm (it took ~10 ms, later ones
    ~1 ms), then put the context back as new: namespace, history and
    execution count."""
    global send
    sent = send
    send = lambda obj, hold=False: None  # noqa: E731  (no channel yet)
    try:
        for code in WARM_UP_CELLS:
            run_cell({"code": code})
    finally:
        send = sent
        held.clear()
    plt.close("all")
    ctx = contexts["default"]
    ctx.shell.reset(new_session=True)
    ctx.shell.user_ns.update(fresh_namespace())
    ctx.shell.execution_count = 1
    release_cwd()
    ctx.cwd = DEFAULT_CWD


def main():
    warm_up()
    warm_up_cells()
    gc.collect()
    gc.freeze()
    while True:
        req = plain.read_request()
        try:
            reply = serve(req)
        except KeyboardInterrupt:
            # An interrupt that came between cells.
            reply = {"exit_code": 130, "error": "interrupted"}
        except Exception as e:
            # A failure of the agent itself: said, and the agent stays.
            msg = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            try:
                send({"type": "error", "name": "AgentError", "value": str(e), "traceback": msg})
            except Exception:
                pass
            reply = {"exit_code": 1, "error": f"{type(e).__name__}: {e}"}
        send(reply)


if __name__ == "__main__":
    main()
