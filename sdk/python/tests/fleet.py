"""A zeroboot fleet on loopback for the SDK tests (docs/fleet.md), built
from the parts a cluster has: three nodes (``zeroboot serve --node-key
nK``) on 127.0.0.11-13, one port (as a headless Service's endpoints),
dnsmasq answering the Service's name with the three addresses, two
gateways discovering the nodes through that name (``--nodes-dns`` with
``--dns-server``: the same code path as cluster DNS), and HAProxy in
front of the gateways, health-checking their ``/v1/health/ready``.
Clients talk to HAProxy only.

HAProxy and dnsmasq are Debian's (``apt-get install haproxy
dnsmasq-base``; scripts/test.sh installs them): without them the tests
fail and say so, they do not skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

NAME = "zb-nodes.fleet.test"
NODE_IPS = {"n1": "127.0.0.11", "n2": "127.0.0.12", "n3": "127.0.0.13"}


def get(url: str, key: Optional[str] = None, timeout: float = 5):
    """(status, JSON body or None), with API key `key`; status 0 when
    nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        pytest.fail(
            "the fleet tests need %s (Debian: apt-get install haproxy dnsmasq-base; "
            "scripts/test.sh installs them)" % name
        )
    return path


def _free(ip: str, port: int, kind=socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


def _port_free_on(ips: List[str]) -> int:
    """One TCP port free on every address (a Service's one port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        if all(_free(ip, port) for ip in ips[1:]):
            return port
    pytest.fail("no TCP port free on all of %s" % ips)


def _udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq takes both)."""
    for _ in range(100):
        port = _port_free_on(["127.0.0.1"])
        if _free("127.0.0.1", port, socket.SOCK_DGRAM):
            return port
    pytest.fail("no port free for DNS on 127.0.0.1")


@dataclass
class Fleet:
    work: Path
    url: str  # HAProxy: what clients use
    gateways: List[str]
    node_urls: Dict[str, str]
    procs: Dict[str, subprocess.Popen] = field(default_factory=dict)
    log: Optional[object] = None

    def log_tail(self, n: int = 80) -> str:
        try:
            lines = (self.work / "fleet.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def gateway_view(self, gateway: str) -> Dict[str, dict]:
        """The nodes as `gateway` sees them, by key."""
        _, h = get(gateway + "/v1/health")
        return {n["key"]: n for n in (h or {}).get("nodes", []) if n.get("key")}

    def wait_view(self, pred, what: str, secs: float = 15) -> None:
        """Until `pred(view)` holds for every gateway still running."""
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            live = [
                g
                for i, g in enumerate(self.gateways)
                if self.procs["g%d" % (i + 1)].poll() is None
            ]
            if live and all(pred(self.gateway_view(g)) for g in live):
                return
            time.sleep(0.05)
        pytest.fail("the gateways never saw %s:\n%s" % (what, self.log_tail()))

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.log:
            self.log.close()


def start(work: Path, binary: Path, keys_file: Path, die_with_parent, drain_grace: int = 60) -> Fleet:
    """Start the fleet in `work` (its log: work/fleet.log)."""
    haproxy, dnsmasq = _tool("haproxy"), _tool("dnsmasq")
    if not binary.is_file():
        pytest.fail("zeroboot binary not found at %s (cargo build --release)" % binary)
    ips = list(NODE_IPS.values())
    if not all(_free(ip, 0) for ip in ips):
        pytest.fail("the fleet tests need 127.0.0.11-13 on loopback (Linux has them)")
    # The nodes serve as an unprivileged user (--user) that must reach
    # their state directories in here.
    work.chmod(0o755)
    log = open(work / "fleet.log", "wb")
    env = dict(os.environ, ZEROBOOT_API_KEYS_FILE=str(keys_file), ZEROBOOT_LOG="warn")
    port = _port_free_on(ips)
    dns_port = _udp_tcp_port()
    g_ports = [_port_free_on(["127.0.0.1"]) for _ in range(2)]
    front = _port_free_on(["127.0.0.1"])
    fleet = Fleet(
        work=work,
        url="http://127.0.0.1:%d" % front,
        gateways=["http://127.0.0.1:%d" % p for p in g_ports],
        node_urls={k: "http://%s:%d" % (ip, port) for k, ip in NODE_IPS.items()},
        log=log,
    )

    def spawn(name, args):
        fleet.procs[name] = subprocess.Popen(
            args,
            cwd=str(work),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def wait(url, what, path="/v1/health/live"):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if get(url + path)[0] == 200:
                return
            for n, p in fleet.procs.items():
                if p.poll() is not None:
                    pytest.fail("%s exited (%s) while starting:\n%s" % (n, p.returncode, fleet.log_tail()))
            time.sleep(0.1)
        pytest.fail("%s did not come up:\n%s" % (what, fleet.log_tail()))

    try:
        for key, ip in NODE_IPS.items():
            state = work / ("state-" + key)
            state.mkdir()
            spawn(
                key,
                [str(binary), "serve", "--bind", ip, "--port", str(port), "--node-key", key,
                 "--languages", "python", "--drain-grace", str(drain_grace),
                 "--state-dir", str(state), "--sandbox-workers", "2", "--workers", "2"],
            )
        # The headless Service's name: one A record per node.
        records = ["--host-record=%s,%s" % (NAME, ip) for ip in ips]
        spawn(
            "dnsmasq",
            [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
             "--port=%d" % dns_port, "--pid-file=", "--log-facility=-", *records],
        )
        for key, url in fleet.node_urls.items():
            wait(url, "node " + key)
        for i, gp in enumerate(g_ports):
            spawn(
                "g%d" % (i + 1),
                [str(binary), "gateway", "--port", str(gp), "--poll-ms", "200",
                 "--connect-timeout-ms", "300", "--nodes-dns", "%s:%d" % (NAME, port),
                 "--dns-server", "127.0.0.1:%d" % dns_port],
            )
        cfg = work / "haproxy.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "global",
                    "  maxconn 2000",
                    "defaults",
                    "  mode http",
                    "  timeout connect 1s",
                    "  timeout client 120s",
                    "  timeout server 120s",
                    # A gateway gone between health checks: the request is
                    # sent to the other one (it never reached the first).
                    "  retries 2",
                    "  option redispatch 1",
                    "  retry-on conn-failure empty-response",
                    "frontend zeroboot",
                    "  bind 127.0.0.1:%d" % front,
                    "  default_backend gateways",
                    "backend gateways",
                    "  balance roundrobin",
                    "  option httpchk GET /v1/health/ready",
                    "  default-server inter 200ms fall 1 rise 2",
                    *["  server g%d 127.0.0.1:%d check" % (i + 1, p) for i, p in enumerate(g_ports)],
                    "",
                ]
            )
        )
        spawn("haproxy", [haproxy, "-db", "-f", str(cfg)])
        for g in fleet.gateways:
            wait(g, "gateway " + g, "/v1/health/ready")
        fleet.wait_view(
            lambda v: all(v.get(k, {}).get("ready") for k in NODE_IPS),
            "all three nodes ready (found through DNS)",
        )
        wait(fleet.url, "HAProxy", "/v1/health/ready")
        return fleet
    except BaseException:
        fleet.stop()
        raise
