//! A fleet on loopback (docs/fleet.md): three `zeroboot serve --node-key`
//! nodes on 127.0.0.11-13 (distinct ports on 127.0.0.1 where those do not
//! bind) and two `zeroboot gateway`s with the static node list. Creates
//! through the gateways spread over the nodes; every call for a sandbox
//! reaches its node (control plane, envd headers, the host form, our
//! exec); lists fan out; a one-shot exec streams through; SIGTERM drains a
//! node (new sandboxes avoid it, its own go on, it exits 0 once they are
//! gone); a SIGKILLed node's ids answer E2B's not-found at once; with one
//! gateway killed the other serves.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, zeroboot, Reply};
use serde_json::Value;

struct Proc {
    child: Child,
    addr: String,
    /// A node's own state directory (one server per directory).
    _state: Option<tempfile::TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The exit status within `limit`, or None.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn free_port(ip: &str) -> Option<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).ok()?;
    Some(l.local_addr().ok()?.port())
}

fn wait_up(p: &mut Proc, what: &str) {
    let end = Instant::now() + Duration::from_secs(180);
    while Instant::now() < end {
        if let Ok((200, _, _)) = http(&p.addr, "GET", "/v1/health/live", &[], b"") {
            return;
        }
        if let Some(s) = p.child.try_wait().unwrap() {
            panic!("{what} exited while starting: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not come up");
}

fn spawn(args: &[&str], addr: String) -> Proc {
    let child = zeroboot()
        .args(args)
        .env_remove("ZEROBOOT_API_KEYS_FILE")
        .env("ZEROBOOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc {
        child,
        addr,
        _state: None,
    }
}

fn node(key: &str, ip: &str) -> Proc {
    let port = free_port(ip).unwrap().to_string();
    node_at(ip, &port, key, &["--drain-grace", "120"])
}

/// `zeroboot serve` as node `key` (`auto`: made up) on `ip:port`.
fn node_at(ip: &str, port: &str, key: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "serve",
        "--bind",
        ip,
        "--port",
        port,
        "--languages",
        "python",
        "--node-key",
        key,
        "--sandbox-workers",
        "2",
        "--workers",
        "2",
    ];
    // Its own state directory (nodes started at once must not share the
    // default one); a server serving as nobody must reach it.
    let state = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = state.path().join("state");
    let dir = dir.to_str().unwrap().to_string();
    args.extend_from_slice(&["--state-dir", &dir]);
    args.extend_from_slice(extra);
    let mut p = spawn(&args, format!("{ip}:{port}"));
    p._state = Some(state);
    p
}

fn gateway(nodes: &[&Proc]) -> Proc {
    let port = free_port("127.0.0.1").unwrap().to_string();
    let mut args: Vec<String> = vec![
        "gateway".into(),
        "--port".into(),
        port.clone(),
        "--poll-ms".into(),
        "200".into(),
        "--connect-timeout-ms".into(),
        "300".into(),
    ];
    for (i, n) in nodes.iter().enumerate() {
        args.push("--node".into());
        args.push(format!("n{}=http://{}", i + 1, n.addr));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(&args, format!("127.0.0.1:{port}"))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn post(addr: &str, path: &str, body: &str) -> Reply {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

fn create(gw: &str) -> String {
    let (st, _, b) = post(
        gw,
        "/sandboxes",
        r#"{"templateID": "python", "timeout": 300}"#,
    );
    assert_eq!(st, 201, "{b}");
    json(&b)["sandboxID"].as_str().unwrap().to_string()
}

fn node_key(id: &str) -> &str {
    // `<len><key><20 random>` (fleet.rs); the test's keys are n1..n3.
    assert_eq!(id.len(), 23, "{id}");
    &id[1..3]
}

fn run(gw: &str, id: &str, code: &str) -> Reply {
    let body = serde_json::json!({ "code": code }).to_string();
    post(gw, &format!("/v1/sandboxes/{id}/exec"), &body)
}

/// Wait until `gw`'s view of node `key` (its polls) satisfies `want`;
/// `what` names the wait in the failure.
fn wait_node(gw: &str, key: &str, what: &str, want: impl Fn(&Value) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let (_, _, b) = http(gw, "GET", "/v1/health", &[], b"").unwrap();
        let h = json(&b);
        let seen = h["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["key"] == key && want(n));
        if seen {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway {gw} never saw node {key} {what}");
}

/// Wait until `gw`'s view of node `key` has `ready` (its polls).
fn wait_ready(gw: &str, key: &str, ready: bool) {
    wait_node(gw, key, &format!("ready={ready}"), |n| {
        n["ready"] == ready && (n["up"] == true || !ready)
    });
}

/// Wait until `gw`'s view of node `key` has `up` (its polls).
fn wait_node_up(gw: &str, key: &str, up: bool) {
    wait_node(gw, key, &format!("up={up}"), |n| n["up"] == up);
}

#[test]
fn fleet_places_routes_drains_and_survives_deaths() {
    // 127.0.0.11-13 where loopback takes them (Linux does), else ports.
    let ips: Vec<&str> = if free_port("127.0.0.11").is_some() {
        vec!["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    } else {
        vec!["127.0.0.1"; 3]
    };
    let mut n1 = node("n1", ips[0]);
    let mut n2 = node("n2", ips[1]);
    let mut n3 = node("n3", ips[2]);
    for (p, w) in [(&mut n1, "n1"), (&mut n2, "n2"), (&mut n3, "n3")] {
        wait_up(p, w);
    }
    let mut g1 = gateway(&[&n1, &n2, &n3]);
    let mut g2 = gateway(&[&n1, &n2, &n3]);
    wait_up(&mut g1, "gateway 1");
    wait_up(&mut g2, "gateway 2");
    let (a, b) = (g1.addr.clone(), g2.addr.clone());
    for g in [&a, &b] {
        for k in ["n1", "n2", "n3"] {
            wait_ready(g, k, true);
        }
    }

    // Spread: 15 creates through both gateways land on all three nodes,
    // none holding most of them.
    let ids: Vec<String> = (0..15)
        .map(|i| create(if i % 2 == 0 { &a } else { &b }))
        .collect();
    let mut per = std::collections::BTreeMap::<&str, usize>::new();
    for id in &ids {
        *per.entry(node_key(id)).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.values().all(|&n| (2..=9).contains(&n)), "{per:?}");
    // The nodes agree: each holds exactly the ids with its key.
    for (n, k) in [(&n1, "n1"), (&n2, "n2"), (&n3, "n3")] {
        let (_, _, h) = http(&n.addr, "GET", "/v1/health", &[], b"").unwrap();
        let h = json(&h);
        assert_eq!(h["node"]["key"], k);
        assert_eq!(h["node"]["sandboxes"], per[k] as u64, "{h}");
    }

    // Routing: every sandbox answers through the other gateway, with its
    // own state (a file written by one call is read by the next).
    for (i, id) in ids.iter().enumerate() {
        let gw = if i % 2 == 0 { &b } else { &a };
        let (st, _, r) = run(
            gw,
            id,
            &format!("open('/tmp/who', 'w').write('{id}'); print(6 * 7)"),
        );
        assert_eq!(st, 200, "{id}: {r}");
        assert_eq!(json(&r)["output"], "42\n", "{r}");
        let (st, _, r) = http(gw, "GET", &format!("/sandboxes/{id}"), &[], b"").unwrap();
        assert_eq!(st, 200, "{r}");
        assert_eq!(json(&r)["sandboxID"], id.as_str());
        // envd by headers and by host: the file the exec wrote.
        let (st, _, r) = http(
            gw,
            "GET",
            "/files?path=/tmp/who",
            &[("E2b-Sandbox-Id", id), ("E2b-Sandbox-Port", "49983")],
            b"",
        )
        .unwrap();
        assert_eq!((st, r.as_str()), (200, id.as_str()));
        let host = format!("49983-{id}.fleet.test");
        let (st, _, r) = http(gw, "GET", "/files?path=/tmp/who", &[("Host", &host)], b"").unwrap();
        assert_eq!((st, r.as_str()), (200, id.as_str()));
    }

    // Lists fan out: v1 whole, v2 paged by the gateway's cursor.
    let (st, _, r) = http(&a, "GET", "/sandboxes", &[], b"").unwrap();
    assert_eq!(st, 200, "{r}");
    let listed: std::collections::BTreeSet<String> = json(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sandboxID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect());
    let mut paged = std::collections::BTreeSet::new();
    let mut token = String::new();
    for _ in 0..10 {
        let q = if token.is_empty() {
            "/v2/sandboxes?limit=4".to_string()
        } else {
            format!("/v2/sandboxes?limit=4&nextToken={token}")
        };
        let (st, h, r) = http(&b, "GET", &q, &[], b"").unwrap();
        assert_eq!(st, 200, "{r}");
        let page = json(&r);
        assert!(page.as_array().unwrap().len() <= 4);
        for v in page.as_array().unwrap() {
            paged.insert(v["sandboxID"].as_str().unwrap().to_string());
        }
        match h.iter().find(|(k, _)| k == "x-next-token") {
            Some((_, t)) => token = t.clone(),
            None => break,
        }
    }
    assert_eq!(paged, listed);

    // One-shot exec goes to a ready node, and streams through: the first
    // line arrives well before the run ends.
    let (first, total, text) = streamed_exec(
        &a,
        r#"{"code": "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')", "stream": true}"#,
    );
    assert!(text.contains("early") && text.contains("late"), "{text}");
    assert!(
        first < Duration::from_millis(1200),
        "first line after {first:?}"
    );
    assert!(total >= Duration::from_millis(1500), "{total:?}");

    // Drain n2: its readiness drops, creates avoid it (and a create sent
    // to it directly is refused clearly), its sandboxes keep answering.
    n2.signal("-TERM");
    let (st, _, r) = {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let r = http(&n2.addr, "GET", "/v1/health/ready", &[], b"").unwrap();
            if r.0 == 503 || Instant::now() > end {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(st, 503, "{r}");
    let (st, _, _) = http(&n2.addr, "GET", "/v1/health/live", &[], b"").unwrap();
    assert_eq!(st, 200);
    let (st, _, r) = post(&n2.addr, "/sandboxes", r#"{"templateID": "python"}"#);
    assert_eq!(st, 503, "{r}");
    assert!(
        json(&r)["message"].as_str().unwrap().contains("draining"),
        "{r}"
    );
    for g in [&a, &b] {
        wait_ready(g, "n2", false);
    }
    let later: Vec<String> = (0..6)
        .map(|i| create(if i % 2 == 0 { &a } else { &b }))
        .collect();
    assert!(later.iter().all(|id| node_key(id) != "n2"), "{later:?}");
    let on_n2: Vec<&String> = ids.iter().filter(|id| node_key(id) == "n2").collect();
    for id in &on_n2 {
        let (st, _, r) = run(&b, id, "print(open('/tmp/who').read())");
        assert_eq!(st, 200, "{r}");
        assert_eq!(json(&r)["output"], format!("{id}\n"));
    }
    assert!(
        n2.wait_exit(Duration::from_millis(500)).is_none(),
        "n2 left while it had sandboxes"
    );
    // Its last sandbox gone, it exits 0.
    for id in &on_n2 {
        let (st, _, r) = http(&a, "DELETE", &format!("/sandboxes/{id}"), &[], b"").unwrap();
        assert_eq!(st, 204, "{r}");
    }
    let status = n2
        .wait_exit(Duration::from_secs(10))
        .expect("n2 did not exit after draining");
    assert!(status.success(), "{status:?}");

    // SIGKILL n3: calls for its ids fail fast in E2B's shapes; the others
    // are unaffected.
    n3.signal("-KILL");
    n3.wait_exit(Duration::from_secs(5)).unwrap();
    let dead = ids.iter().find(|id| node_key(id) == "n3").unwrap();
    for gw in [&a, &b] {
        let t = Instant::now();
        let (st, _, r) = http(gw, "GET", &format!("/sandboxes/{dead}"), &[], b"").unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(st, 404, "{r}");
        let e = json(&r);
        assert_eq!(e["code"], 404);
        assert!(e["message"].as_str().unwrap().contains("not found"), "{r}");
        let t = Instant::now();
        let (st, _, r) = http(
            gw,
            "GET",
            "/files?path=/tmp/who",
            &[("E2b-Sandbox-Id", dead)],
            b"",
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(st, 502, "{r}");
        assert!(
            json(&r)["message"]
                .as_str()
                .unwrap()
                .contains("was not found"),
            "{r}"
        );
    }
    let live_n1: Vec<&String> = ids
        .iter()
        .chain(&later)
        .filter(|id| node_key(id) == "n1")
        .collect();
    for id in &live_n1 {
        let (st, _, r) = run(&a, id, "print('ok')");
        assert_eq!(st, 200, "{r}");
    }
    // New sandboxes go to the one node left.
    assert_eq!(node_key(&create(&b)), "n1");

    // Kill gateway 1: gateway 2 serves on.
    g1.signal("-KILL");
    g1.wait_exit(Duration::from_secs(5)).unwrap();
    for id in &live_n1 {
        let (st, _, r) = run(&b, id, "print('still')");
        assert_eq!(st, 200, "{r}");
    }

    // Bad input through the gateway: clear answers.
    let (st, _, r) = http(&b, "GET", "/sandboxes/zzzzzzzzzzzzzzzzzzzz", &[], b"").unwrap();
    assert_eq!(st, 404, "{r}");
    assert!(r.contains("names no node"), "{r}");
    let (st, _, r) = http(&b, "GET", "/sandboxes/2n9aaaaaaaaaaaaaaaaaaaa", &[], b"").unwrap();
    assert_eq!(st, 404, "{r}");
    let (st, _, r) = http(&b, "GET", "/files", &[("E2b-Sandbox-Id", "bad id!")], b"").unwrap();
    assert_eq!(st, 400, "{r}");
    // An MCP session of the dead node: over (404), said at once.
    let (st, _, r) = http(
        &b,
        "POST",
        "/mcp",
        &[
            ("Mcp-Session-Id", "n3.0a1b2c"),
            ("Content-Type", "application/json"),
        ],
        br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#,
    )
    .unwrap();
    assert_eq!(st, 404, "{r}");
    assert!(r.contains("Session not found"), "{r}");
    // n2 left on its own (no request failed on it): the gateway learns of
    // it from its polls, so wait for them before reading the gauge.
    wait_node_up(&b, "n2", false);
    let (st, _, r) = http(&b, "GET", "/v1/metrics", &[], b"").unwrap();
    assert_eq!(st, 200);
    assert!(r.contains("zeroboot_gateway_nodes{state=\"up\"} 1"), "{r}");
    // The gateway stops on SIGTERM.
    g2.signal("-TERM");
    assert!(g2.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn gateway_refuses_bad_flags() {
    for (args, says) in [
        (vec!["gateway"], "no nodes"),
        (
            vec!["gateway", "--node", "N1=http://127.0.0.1:1"],
            "node key",
        ),
        (
            vec!["gateway", "--node", "n1=127.0.0.1:1"],
            "http://HOST:PORT",
        ),
        (vec!["gateway", "--nodes-dns", "nodes.local"], "NAME:PORT"),
    ] {
        let o = common::run(&args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(
            common::stderr(&o).contains(says),
            "{args:?}: {}",
            common::stderr(&o)
        );
    }
    let o = common::run(&["serve", "--node-key", "Bad-Key", "--languages", "python"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        common::stderr(&o).contains("node key"),
        "{}",
        common::stderr(&o)
    );
}

/// POST a streamed /v1/exec: (time to the first output line, total time,
/// everything read).
fn streamed_exec(addr: &str, body: &str) -> (Duration, Duration, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    write!(
        s,
        "POST /v1/exec HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut text = String::new();
    let mut first = None;
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        if first.is_none() && line.contains("early") {
            first = Some(start.elapsed());
        }
        text.push_str(&line);
        line.clear();
    }
    (first.unwrap_or(Duration::MAX), start.elapsed(), text)
}

/// Discovery by DNS, as in Kubernetes (a headless Service's name resolves
/// to every node): the gateway runs in a private mount namespace whose
/// /etc/hosts maps one name to 127.0.0.11-13, through the system resolver
/// (getaddrinfo), the code path cluster DNS takes. Nodes make up their
/// keys (`--node-key auto`); the gateway learns them from their health.
/// Skipped (with a note) where a mount namespace cannot be made.
#[test]
fn gateway_discovers_nodes_by_dns_name() {
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .status();
    if !probe.is_ok_and(|s| s.success()) || free_port("127.0.0.12").is_none() {
        eprintln!("SKIPPED: needs unshare -m (root) and 127.0.0.11-13");
        return;
    }
    // One port free on all three addresses (a headless Service's port).
    let port = (0..50)
        .filter_map(|_| free_port("127.0.0.11"))
        .find(|&p| {
            ["127.0.0.12", "127.0.0.13"]
                .iter()
                .all(|ip| std::net::TcpListener::bind((*ip, p)).is_ok())
        })
        .unwrap()
        .to_string();
    let nodes: Vec<Proc> = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        .iter()
        .map(|ip| node_at(ip, &port, "auto", &[]))
        .collect();
    let mut nodes = nodes;
    for n in nodes.iter_mut() {
        wait_up(n, "node");
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.11 zb-nodes.fleet.test\n127.0.0.12 zb-nodes.fleet.test\n127.0.0.13 zb-nodes.fleet.test\n",
    )
    .unwrap();
    let gport = free_port("127.0.0.1").unwrap().to_string();
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} gateway --port {gport} --poll-ms 200 --connect-timeout-ms 300 --nodes-dns zb-nodes.fleet.test:{port}",
        hosts.display(),
        env!("CARGO_BIN_EXE_zeroboot")
    );
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("ZEROBOOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut gw = Proc {
        child,
        addr: format!("127.0.0.1:{gport}"),
        _state: None,
    };
    wait_up(&mut gw, "gateway");
    let g = gw.addr.clone();
    // The three nodes, found by name, with the keys they made up.
    let mut keys = Vec::new();
    for n in &nodes {
        let (_, _, h) = http(&n.addr, "GET", "/v1/health", &[], b"").unwrap();
        let k = json(&h)["node"]["key"].as_str().unwrap().to_string();
        assert_eq!(k.len(), 6, "{h}");
        wait_ready(&g, &k, true);
        keys.push(k);
    }
    let ids: Vec<String> = (0..9).map(|_| create(&g)).collect();
    let used: std::collections::BTreeSet<&str> = ids.iter().map(|id| &id[1..7]).collect();
    assert!(used.len() >= 2, "{ids:?}");
    assert!(
        used.iter().all(|k| keys.iter().any(|m| m == k)),
        "{used:?} {keys:?}"
    );
    for id in &ids {
        let (st, _, r) = run(&g, id, "print('hi')");
        assert_eq!(st, 200, "{r}");
    }
    // A node that dies stays in the name's answers; its ids fail fast.
    nodes[0].signal("-KILL");
    nodes[0].wait_exit(Duration::from_secs(5)).unwrap();
    for id in &ids {
        let t = Instant::now();
        let (st, _, r) = run(&g, id, "print('hi')");
        if id[1..7] == keys[0] {
            assert_eq!(st, 404, "{r}");
            assert!(t.elapsed() < Duration::from_secs(2));
        } else {
            assert_eq!(st, 200, "{r}");
        }
    }
}
