"""The official E2B Python SDK against a zeroboot fleet on loopback, as a
new user would run one (docs/fleet.md; the fleet: tests/fleet.py): three
nodes on 127.0.0.11-13, dnsmasq answering the nodes' Service name, two
gateways discovering the nodes through it, HAProxy in front. The SDK
talks to HAProxy only (E2B_API_URL = E2B_SANDBOX_URL). Run by
``run-e2b-tests.sh``; the tests run in file order on one fleet:

1. snapshots route to the node that holds them (by id and by name);
2. 30 sandboxes spread over the three nodes, commands and files on each;
   SIGTERM drains node 2 (new sandboxes avoid it, its own go on, it exits
   0 once they are gone); SIGKILL of node 3 (its ids fail fast, in E2B's
   not-found shapes); SIGKILL of a gateway (HAProxy sends all traffic to
   the other).
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import (  # noqa: E402
    SandboxException,
    SandboxNotFoundException,
    SandboxNotRunningException,
)


def _load(name: str, file: str):
    """A module of tests/ by path (tests/e2b's conftest.py shadows the
    name of tests/conftest.py)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / file
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_s = _load("zeroboot_tests_shared", "conftest.py")
fleet_mod = _load("zeroboot_tests_fleet", "fleet.py")
TEST_KEY, OTHER_KEY = _s.TEST_KEY, _s.OTHER_KEY


def key_of(sandbox_or_id) -> str:
    """The node key inside an id: `<len><key><20 random>` (fleet.rs)."""
    i = getattr(sandbox_or_id, "sandbox_id", None) or sandbox_or_id
    i = i.split(":")[0]
    return i[1 : 1 + int(i[0])]


@pytest.fixture(scope="module")
def fleet():
    work = Path(tempfile.mkdtemp(prefix="zeroboot-fleet-"))
    keys = work / "keys.json"
    keys.write_text(json.dumps([TEST_KEY, OTHER_KEY]))
    f = fleet_mod.start(work, _s._server_binary(), keys, _s._die_with_parent)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture()
def front(fleet, monkeypatch):
    """The SDK pointed at HAProxy, as at E2B."""
    monkeypatch.setenv("E2B_API_URL", fleet.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", fleet.url)
    monkeypatch.setenv("E2B_API_KEY", TEST_KEY)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_ACCESS_TOKEN", raising=False)
    return fleet


def on_nodes(n_keys: int, limit: int = 12):
    """Sandboxes until `n_keys` nodes hold one: {key: sandbox}, and the
    extras to kill."""
    by_key, extra = {}, []
    for _ in range(limit):
        s = Sandbox.create("python", timeout=120)
        if key_of(s) in by_key:
            extra.append(s)
        else:
            by_key[key_of(s)] = s
        if len(by_key) == n_keys:
            return by_key, extra
    pytest.fail("%d creates landed on %s only" % (limit, sorted(by_key)))


def test_snapshots_go_to_the_node_that_holds_them(front):
    by_key, extra = on_nodes(2)
    for s in extra:
        s.kill()
    (ka, a), (kb, b) = sorted(by_key.items())
    made = []
    try:
        a.files.write("/home/user/who", "a")
        b.files.write("/home/user/who", "b")
        snap_a = a.create_snapshot(name="warm")
        snap_b = b.create_snapshot(name="only-b")
        # Snapshot ids carry their node's key, as sandbox ids do.
        assert key_of(snap_a.snapshot_id) == ka and key_of(snap_b.snapshot_id) == kb
        # By id: always on the snapshot's node (placement would spread
        # four creates over the nodes), with the snapshot's files.
        for _ in range(4):
            c = Sandbox.create(snap_b.snapshot_id, timeout=60)
            made.append(c)
            assert key_of(c) == kb, (c.sandbox_id, snap_b.snapshot_id)
            assert c.files.read("/home/user/who") == "b"
        # By name (names are per node): the one node holding it.
        for _ in range(3):
            c = Sandbox.create("only-b", timeout=60)
            made.append(c)
            assert key_of(c) == kb
            assert c.files.read("/home/user/who") == "b"
        # The list fans out over the nodes.
        listed = {s.snapshot_id for s in Sandbox.list_snapshots().next_items()}
        assert {snap_a.snapshot_id, snap_b.snapshot_id} <= listed, listed
        # One name on two nodes is ambiguous: refused, naming both ids.
        snap_b2 = b.create_snapshot(name="warm")
        with pytest.raises(SandboxException) as e:
            Sandbox.create("warm", timeout=60)
        msg = str(e.value)
        assert "several nodes" in msg, msg
        assert snap_a.snapshot_id.split(":")[0] in msg and snap_b2.snapshot_id.split(":")[0] in msg
        # Deleted by id on its node: then "warm" is a's alone again.
        assert Sandbox.delete_snapshot(snap_b2.snapshot_id) is True
        assert Sandbox.delete_snapshot(snap_b2.snapshot_id) is False
        c = Sandbox.create("warm", timeout=60)
        made.append(c)
        assert key_of(c) == ka and c.files.read("/home/user/who") == "a"
        # Deleted by name, through whichever node has it.
        assert Sandbox.delete_snapshot("only-b") is True
        assert Sandbox.delete_snapshot("only-b") is False
        for gone in ("only-b", snap_b.snapshot_id):
            with pytest.raises(SandboxException) as e:
                Sandbox.create(gone, timeout=60)
            assert "not found" in str(e.value), str(e.value)
        assert Sandbox.delete_snapshot(snap_a.snapshot_id) is True
        listed = {s.snapshot_id for s in Sandbox.list_snapshots().next_items()}
        assert not {snap_a.snapshot_id, snap_b.snapshot_id, snap_b2.snapshot_id} & listed
    finally:
        for s in [a, b, *made]:
            s.kill()


def gateway_counts(fleet, i: int) -> int:
    """Creates gateway `i` (0-based) answered, from its metrics."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(fleet.gateways[i] + "/v1/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('zeroboot_gateway_requests_total{route="create"')
    )


def test_thirty_sandboxes_drain_node_death_and_gateway_death(front):
    fleet = front
    # Placement weighs live sandboxes: start from empty nodes (the
    # gateways' view: what they place by).
    fleet.wait_view(
        lambda v: all(v.get(k, {}).get("sandboxes") == 0 for k in fleet_mod.NODE_IPS),
        "three empty nodes",
    )
    before = fleet.gateway_view(fleet.gateways[0])
    sbxs = [Sandbox.create("python", timeout=300) for _ in range(30)]
    per = {}
    for s in sbxs:
        per.setdefault(key_of(s), []).append(s)
    assert sorted(per) == ["n1", "n2", "n3"], {k: len(v) for k, v in per.items()}
    assert all(4 <= len(v) <= 16 for v in per.values()), (
        {k: len(v) for k, v in per.items()},
        before,
        fleet.gateway_view(fleet.gateways[0]),
    )
    # HAProxy shared the creates between the two gateways.
    assert gateway_counts(fleet, 0) > 0 and gateway_counts(fleet, 1) > 0
    # Commands and files on each, each call reaching the sandbox's node.
    for s in sbxs:
        r = s.commands.run("echo %s > /tmp/me && cat /tmp/me" % s.sandbox_id)
        assert (r.exit_code, r.stdout) == (0, s.sandbox_id + "\n")
        s.files.write("/home/user/note.txt", "note of " + s.sandbox_id)
    for s in sbxs:
        assert s.files.read("/home/user/note.txt") == "note of " + s.sandbox_id
    # Streamed output through HAProxy and a gateway.
    seen = []
    r = sbxs[0].commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done", on_stdout=seen.append)
    assert r.stdout == "line1\nline2\nline3\n" and "".join(seen) == r.stdout
    listed = {x.sandbox_id for x in Sandbox.list(limit=100).next_items()}
    assert {s.sandbox_id for s in sbxs} <= listed

    # Drain node 2: readiness goes, new sandboxes avoid it, its own go on.
    n2 = fleet.procs["n2"]
    n2.send_signal(signal.SIGTERM)
    fleet.wait_view(lambda v: v.get("n2", {}).get("ready") is False, "n2 draining")
    later = [Sandbox.create("python", timeout=300) for _ in range(8)]
    assert "n2" not in {key_of(s) for s in later}, [s.sandbox_id for s in later]
    for s in per["n2"]:
        assert s.commands.run("cat /tmp/me").stdout == s.sandbox_id + "\n"
    assert n2.poll() is None, "n2 left while it had sandboxes"
    for s in per["n2"]:
        s.kill()
    assert n2.wait(timeout=15) == 0

    # SIGKILL node 3: its ids fail fast in E2B's not-found shapes; the
    # others are unaffected.
    n3 = fleet.procs["n3"]
    n3.kill()
    n3.wait()
    dead = per["n3"][0]
    t = time.monotonic()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(dead.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(dead.sandbox_id)
    with pytest.raises(SandboxNotRunningException):
        dead.commands.run("true")
    with pytest.raises(SandboxNotRunningException):
        dead.files.read("/home/user/note.txt")
    assert time.monotonic() - t < 5, "calls for a dead node's sandboxes hung"
    alive = per["n1"] + [s for s in later if key_of(s) == "n1"]
    for s in per["n1"]:
        assert s.files.read("/home/user/note.txt") == "note of " + s.sandbox_id
    for s in alive:
        assert s.commands.run("echo ok").stdout == "ok\n"
    fleet.wait_view(lambda v: v.get("n3", {}).get("up") is False, "n3 down")
    assert key_of(Sandbox.create("python", timeout=60)) == "n1"

    # SIGKILL a gateway: HAProxy's checks take it out; nothing fails.
    g1 = fleet.procs["g1"]
    before = gateway_counts(fleet, 1)
    g1.kill()
    g1.wait()
    for s in alive:
        assert s.commands.run("echo still").stdout == "still\n"
    more = [Sandbox.create("python", timeout=60) for _ in range(4)]
    assert {key_of(s) for s in more} == {"n1"}
    assert gateway_counts(fleet, 1) >= before + 4
    for s in alive + more:
        s.kill()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(alive[0].sandbox_id)
