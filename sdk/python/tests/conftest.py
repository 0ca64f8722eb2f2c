"""Fixtures: a real zeroboot server (one per session) and a scriptable stub server.

The real server is the binary named by ``ZEROBOOT_BIN`` (default: the
repository's ``target/release/zeroboot``), started as
``zeroboot serve --port PORT --bind 127.0.0.1`` with auth on
(``ZEROBOOT_API_KEYS_FILE``) and at most ``SANDBOXES_PER_KEY`` live
sandboxes per key. It is started only when a test asks for it,
so the stub-server tests run without the binary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SDK_DIR.parents[1]
TEST_KEY = "test-key-1"
OTHER_KEY = "test-key-2"
# The languages the server serves (`--languages`): the code-interpreter
# tests need `code-interpreter` here (run-e2b-tests.sh adds it), whose image
# and template are built on the server's first start.
LANGUAGES = os.environ.get("ZEROBOOT_TEST_LANGUAGES", "python,node")
STARTUP_TIMEOUT = float(
    os.environ.get(
        "ZEROBOOT_TEST_STARTUP_TIMEOUT",
        "900" if "code-interpreter" in LANGUAGES else "180",
    )
)
# The server's limit on live sandboxes per key in tests (the 429 test).
SANDBOXES_PER_KEY = 8


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ZerobootServer:
    url: str
    key: str
    other_key: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest dies without tearing down."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def _server_binary() -> Path:
    env = os.environ.get("ZEROBOOT_BIN")
    return Path(env) if env else REPO_ROOT / "target" / "release" / "zeroboot"


def _health(url: str, key: str) -> Tuple[int, Any]:
    req = urllib.request.Request(
        url + "/v1/health", headers={"Authorization": "Bearer " + key}
    )
    try:
        with _no_proxy_opener().open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def start_server(
    workdir: Path, state_dir: Path, languages: str = LANGUAGES, extra: Sequence[str] = ()
) -> Tuple[ZerobootServer, Any]:
    """Start `zeroboot serve` in `workdir` (keys file, log) keeping its
    snapshots and paused sandboxes in `state_dir`, with `extra` flags; wait
    until the python template is ready. Returns the server and its log
    file (to close)."""
    binary = _server_binary()
    if not binary.is_file():
        pytest.fail(
            "zeroboot binary not found at %s (build it with "
            "`cargo build --release -p zeroboot` or set ZEROBOOT_BIN)" % binary
        )
    # Searchable: a server started as root serves as nobody, which must
    # reach its state directory in here.
    workdir.chmod(0o755)
    keys_file = workdir / "keys.json"
    keys_file.write_text(json.dumps([TEST_KEY, OTHER_KEY]))
    log_path = workdir / "server.log"
    port = free_port()
    env = dict(os.environ)
    env["ZEROBOOT_API_KEYS_FILE"] = str(keys_file)
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [
            str(binary),
            "serve",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--max-sandboxes-per-key",
            str(SANDBOXES_PER_KEY),
            "--languages",
            languages,
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        cwd=str(workdir),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if os.name == "posix" else None,
    )
    srv = ZerobootServer(
        url="http://127.0.0.1:%d" % port,
        key=TEST_KEY,
        other_key=OTHER_KEY,
        process=process,
        log_path=log_path,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last: Any = None
        while True:
            if process.poll() is not None:
                pytest.fail(
                    "zeroboot serve exited with %s before becoming ready:\n%s"
                    % (process.returncode, srv.log_tail())
                )
            try:
                status, body = _health(srv.url, TEST_KEY)
                last = (status, body)
                if (
                    status == 200
                    and isinstance(body, dict)
                    and body.get("templates", {}).get("python", {}).get("ready") is True
                ):
                    break
            except (OSError, ValueError) as e:
                last = e
            if time.monotonic() > deadline:
                pytest.fail(
                    "zeroboot serve not ready after %gs (last health: %r):\n%s"
                    % (STARTUP_TIMEOUT, last, srv.log_tail())
                )
            time.sleep(0.25)
    except BaseException:
        stop_server(srv)
        log.close()
        raise
    return srv, log


def stop_server(srv: ZerobootServer) -> None:
    if srv.process.poll() is None:
        srv.process.send_signal(signal.SIGTERM)
        try:
            srv.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.process.kill()
            srv.process.wait()


@pytest.fixture(scope="session")
def server() -> ZerobootServer:
    workdir = Path(tempfile.mkdtemp(prefix="zeroboot-sdk-py-"))
    srv, log = start_server(workdir, workdir / "state")
    try:
        yield srv
    finally:
        stop_server(srv)
        log.close()


@pytest.fixture()
def server_factory():
    """Start servers of one's own (e.g. to kill and start again over the
    same state directory, or with other flags): `start(workdir, state_dir,
    languages, extra)`; all are stopped at the end of the test."""
    started: List[Tuple[ZerobootServer, Any]] = []

    def start(
        workdir: Path, state_dir: Path, languages: str = "python", extra: Sequence[str] = ()
    ) -> ZerobootServer:
        srv, log = start_server(workdir, state_dir, languages, extra)
        started.append((srv, log))
        return srv

    yield start
    for srv, log in started:
        stop_server(srv)
        log.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the SDK's environment variables."""
    monkeypatch.delenv("ZEROBOOT_API_KEY", raising=False)
    monkeypatch.delenv("ZEROBOOT_API_URL", raising=False)


# -- a stub HTTP server for client-side behaviour ---------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: Dict[str, str]
    body: Any


Responder = Callable[[Recorded], Tuple[int, Dict[str, str], bytes]]


@dataclass
class StubServer:
    url: str
    requests: List[Recorded] = field(default_factory=list)
    responder: Optional[Responder] = None

    def reply(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        self.responder = lambda _req: (status, hdrs, raw)


@pytest.fixture()
def stub() -> StubServer:
    state = StubServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            rec = Recorded(self.command, self.path, dict(self.headers.items()), body)
            state.requests.append(rec)
            if state.responder is None:
                status, headers, out = 500, {}, b"no responder"
            else:
                status, headers, out = state.responder(rec)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = _handle
        do_POST = _handle
        do_PUT = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = "http://127.0.0.1:%d" % httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
