//! Egress under the policy (docs/network.md), tried through the server as
//! a user would: Python in a sandbox fetching from HTTP servers this test
//! starts on 127.0.0.1, the operator's flags allowing exactly one of their
//! ports. No traffic goes anywhere but to those servers: every other
//! destination here is one the policy refuses before a host socket exists
//! (the tests check that nothing reached the servers, the counts, and the
//! server's descriptors).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// The loopback HTTP server `zeroboot bench net` uses too.
#[path = "../src/test_http.rs"]
mod test_http;
use test_http::TestHttp;

/// An HTTP server on 127.0.0.1 answering every GET with `body`.
fn http_serving(body: &[u8]) -> TestHttp {
    TestHttp::serving(body.to_vec()).unwrap()
}

const CSV: &str = "name,value\nalpha,1\nbeta,2\n";

fn exec(s: &Server, body: Value) -> Value {
    let (st, _, b) = s.post("/v1/exec", None, &body.to_string());
    assert_eq!(st, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

fn py(s: &Server, code: &str, extra: Value) -> Value {
    let mut body = json!({"code": code, "language": "python", "timeout_seconds": 60});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    exec(s, body)
}

/// Descriptors of a process that are sockets.
fn host_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Descriptors of process `pid` that are TCP sockets connected to
/// 127.0.0.1:`port` (its /proc/PID/net/tcp rows, matched by inode).
fn sockets_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let want = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&want) && inodes.contains(f[9])
        })
        .count()
}

/// Python that connects to each (host, port) and prints the outcome (the
/// errno's name, or "connected") and whether it took under a second.
fn probe(targets: &[(&str, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(h, p)| format!("({h:?}, {p})"))
        .collect();
    format!(
        r#"
import errno, socket, time
for host, port in [{}]:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    t = time.time()
    try:
        s.connect((host, port))
        r = "connected"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    print(host, port, r, "fast" if time.time() - t < 1 else "slow")
    s.close()
"#,
        list.join(", ")
    )
}

fn serve_policy(allowed: u16, extra: &[&str]) -> Server {
    let allow = format!("127.0.0.1:{allowed}");
    let mut args = vec![
        "--languages",
        "python",
        "--network",
        "policy",
        "--net-allow-host",
        &allow,
        "--net-resolver",
        "static",
        "--net-host",
        "data.test=127.0.0.1",
        "--net-host",
        "other.test=127.0.0.1",
        "--net-host",
        "rebind.test=127.0.0.1,169.254.169.254,10.0.0.1",
    ];
    args.extend_from_slice(extra);
    Server::start(None, &args)
}

#[test]
fn an_allowed_loopback_port_serves_urlopen_and_every_other_destination_is_refused_before_a_host_socket(
) {
    let allowed = http_serving(CSV.as_bytes());
    let other = http_serving(b"must not be reached");
    let s = serve_policy(allowed.port, &[]);
    let pid = s.child.id();
    let api_port: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();

    let url = format!("http://127.0.0.1:{}/data.csv", allowed.port);
    let r = py(
        &s,
        &format!(
            "import urllib.request\nprint(urllib.request.urlopen({url:?}).read().decode(), end='')"
        ),
        json!({}),
    );
    assert_eq!(r["stdout"], CSV, "{r}");
    assert_eq!(r["network"]["enabled"], true);
    assert_eq!(r["network"]["connections"], 1, "{r}");
    assert!(
        r["network"]["bytes_in"].as_u64().unwrap() > CSV.len() as u64,
        "{r}"
    );
    assert!(r["network"]["bytes_out"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(allowed.accepted(), 1);

    // Refused destinations: the not-allowed port, the metadata address,
    // the server's own API port (also in its IPv6-mapped form), the
    // unspecified address, a private one.
    let sockets_before = host_sockets(pid);
    let targets = [
        ("127.0.0.1", other.port),
        ("169.254.169.254", 80),
        ("127.0.0.1", api_port),
        ("::ffff:127.0.0.1", api_port),
        ("::ffff:169.254.169.254", 80),
        ("0.0.0.0", allowed.port),
        ("10.0.0.1", 80),
        ("::1", other.port),
    ];
    let r = py(&s, &probe(&targets), json!({}));
    let want = [
        format!("127.0.0.1 {} ECONNREFUSED fast", other.port),
        "169.254.169.254 80 EACCES fast".to_string(),
        format!("127.0.0.1 {api_port} ECONNREFUSED fast"),
        format!("::ffff:127.0.0.1 {api_port} ECONNREFUSED fast"),
        "::ffff:169.254.169.254 80 EACCES fast".to_string(),
        format!("0.0.0.0 {} EACCES fast", allowed.port),
        "10.0.0.1 80 EACCES fast".to_string(),
        format!("::1 {} ECONNREFUSED fast", other.port),
    ];
    let got: Vec<&str> = r["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(got, want, "{r}");
    assert_eq!(r["network"]["denied"], targets.len(), "{r}");
    assert_eq!(r["network"]["connections"], 0, "{r}");
    assert_eq!(other.accepted(), 0);
    assert_eq!(allowed.accepted(), 1);
    // (It may end one lower: the HTTP connection of the request before was
    // still closing when it was taken.)
    assert!(
        settled_sockets(pid, sockets_before) <= sockets_before,
        "a host socket stayed open"
    );
    assert_eq!(
        sockets_to(pid, other.port) + sockets_to(pid, allowed.port),
        0
    );

    // The denials are in the metrics.
    let (_, _, m) = s.get("/v1/metrics");
    let denied: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("zeroboot_network_denied_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(denied >= targets.len() as u64, "{m}");
}

#[test]
fn a_domain_allow_list_resolves_through_the_vmm_and_rebinding_gets_no_forbidden_address() {
    let allowed = http_serving(CSV.as_bytes());
    let s = serve_policy(allowed.port, &[]);
    let only_data = json!({"allow_internet_access": false, "network": {"allowOut": ["data.test"]}});
    let url = format!("http://data.test:{}/data.csv", allowed.port);
    let r = py(
        &s,
        &format!(
            "import urllib.request\nprint(urllib.request.urlopen({url:?}).read().decode(), end='')"
        ),
        only_data.clone(),
    );
    assert_eq!(r["stdout"], CSV, "{r}");
    assert!(r["network"]["dns_queries"].as_u64().unwrap() >= 1, "{r}");

    // A name outside the list does not resolve; its address, not granted
    // by an allowed name in this sandbox, is refused by number too.
    let code = format!(
        r#"
import errno, socket
try:
    socket.getaddrinfo("other.test", {p})
    print("resolved")
except socket.gaierror as e:
    print("gaierror")
s = socket.socket()
try:
    s.connect(("127.0.0.1", {p}))
    print("connected")
except OSError as e:
    print(errno.errorcode[e.errno])
"#,
        p = allowed.port
    );
    let r = py(&s, &code, only_data);
    assert_eq!(r["stdout"], "gaierror\nEACCES\n", "{r}");
    // The A and AAAA queries, and the connect.
    assert_eq!(r["network"]["denied"], 3, "{r}");
    assert_eq!(allowed.accepted(), 1);

    // Rebinding: the name's other addresses (metadata, private) are never
    // handed out.
    let r = py(
        &s,
        "import socket\nprint(sorted({a[4][0] for a in socket.getaddrinfo('rebind.test', 80)}))",
        json!({}),
    );
    assert_eq!(r["stdout"], "['127.0.0.1']\n", "{r}");
}

#[test]
fn connections_per_sandbox_are_capped() {
    let allowed = http_serving(CSV.as_bytes());
    let s = serve_policy(allowed.port, &["--net-max-connections", "8"]);
    let code = format!(
        r#"
import errno, socket
held = []
for i in range(10000):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {p}))
    except OSError as e:
        print(len(held), errno.errorcode[e.errno])
        break
    held.append(s)
"#,
        p = allowed.port
    );
    let r = py(&s, &code, json!({}));
    assert_eq!(r["stdout"], "8 ENOBUFS\n", "{r}");
    assert_eq!(r["network"]["connections"], 8, "{r}");
    assert_eq!(r["network"]["denied"], 1, "{r}");
}

#[test]
fn with_the_network_off_connections_fail_clearly_and_the_result_says_so() {
    let allowed = http_serving(CSV.as_bytes());
    // E2B's default `allow_internet_access: true` is accepted.
    let s = Server::start(None, &["--languages", "python"]);
    let r = py(
        &s,
        &probe(&[("127.0.0.1", allowed.port), ("192.0.2.1", 80)]),
        json!({"allow_internet_access": true}),
    );
    let want = format!(
        "127.0.0.1 {} ECONNREFUSED fast\n192.0.2.1 80 ENETUNREACH fast\n",
        allowed.port
    );
    assert_eq!(r["stdout"], want, "{r}");
    assert_eq!(r["network"]["enabled"], false, "{r}");
    assert!(r["network"]["note"]
        .as_str()
        .unwrap()
        .contains("--network policy"));
    assert_eq!(r["network"]["denied"], 1, "{r}");
    assert_eq!(allowed.accepted(), 0);
}

fn create_sandbox(s: &Server, body: Value) -> (String, Value) {
    let (st, _, b) = s.post("/sandboxes", None, &body.to_string());
    assert_eq!(st, 201, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let (_, _, d) = s.get(&format!("/sandboxes/{id}"));
    (id, serde_json::from_str(&d).unwrap())
}

#[test]
fn live_sandboxes_take_e2bs_network_fields_and_fetch_under_them() {
    let allowed = http_serving(CSV.as_bytes());
    let s = serve_policy(allowed.port, &[]);
    // E2B's default: internet allowed.
    let (id, detail) = create_sandbox(
        &s,
        json!({"templateID": "python", "allow_internet_access": true}),
    );
    assert_eq!(detail["allowInternetAccess"], true, "{detail}");
    let url = format!("http://127.0.0.1:{}/data.csv", allowed.port);
    let code = format!(
        "import urllib.request\nprint(urllib.request.urlopen({url:?}).read().decode(), end='')"
    );
    let (st, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["stdout"], CSV, "{r}");
    assert_eq!(r["network"]["connections"], 1, "{r}");

    // Denied by its own rules: the detail says so, the connect is refused.
    let (id, detail) = create_sandbox(
        &s,
        json!({"templateID": "python", "allow_internet_access": false, "network": {"allowOut": ["data.test"], "allowPublicTraffic": false}}),
    );
    assert_eq!(detail["allowInternetAccess"], false, "{detail}");
    assert_eq!(detail["network"]["allowOut"], json!(["data.test"]));
    let (_, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code}).to_string(),
    );
    let r: Value = serde_json::from_str(&b).unwrap();
    assert!(
        r["stderr"].as_str().unwrap().contains("Permission denied"),
        "{r}"
    );
    assert_eq!(allowed.accepted(), 1);

    // PUT /sandboxes/{id}/network opens it while it lives.
    let (st, _, b) = http(
        &s.addr,
        "PUT",
        &format!("/sandboxes/{id}/network"),
        &[("Content-Type", "application/json")],
        json!({"allow_internet_access": true})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");
    let detail: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(detail["allowInternetAccess"], true, "{detail}");
    let (_, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code}).to_string(),
    );
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["stdout"], CSV, "{r}");
    assert_eq!(allowed.accepted(), 2);

    // A bad rule is a clear 400.
    let (st, _, b) = s.post(
        "/sandboxes",
        None,
        &json!({"templateID": "python", "network": {"allowOut": ["not a host!"]}}).to_string(),
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("not a host!"), "{b}");
}

#[test]
fn e2bs_default_fields_still_create_a_sandbox_on_a_server_without_network() {
    let s = Server::start(None, &["--languages", "python"]);
    let (_, detail) = create_sandbox(
        &s,
        json!({"templateID": "python", "allow_internet_access": true, "network": {"allowOut": [], "denyOut": []}}),
    );
    assert_eq!(detail["allowInternetAccess"], false, "{detail}");
    assert_eq!(detail["network"]["enabled"], false, "{detail}");
}

#[test]
fn node_fetch_gets_the_data_through_an_allowed_name() {
    let allowed = http_serving(CSV.as_bytes());
    let allow = format!("127.0.0.1:{}", allowed.port);
    let s = Server::start(
        None,
        &[
            "--languages",
            "node",
            "--network",
            "policy",
            "--net-allow-host",
            &allow,
            "--net-resolver",
            "static",
            "--net-host",
            "data.test=127.0.0.1",
        ],
    );
    for host in ["127.0.0.1", "data.test"] {
        let code = format!(
            "const r = await fetch('http://{host}:{}/data.csv'); process.stdout.write(await r.text());",
            allowed.port
        );
        let r = exec(
            &s,
            json!({"code": code, "language": "node", "timeout_seconds": 60, "network": {"allowOut": ["data.test"]}}),
        );
        assert_eq!(r["stdout"], CSV, "{r}");
    }
}

#[test]
fn udp_to_an_allowed_loopback_port_round_trips_and_other_destinations_are_refused() {
    // A UDP echo server this test starts.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });
    let s = serve_policy(port, &[]);
    let code = format!(
        r#"
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"ping", ("127.0.0.1", {port}))
data, frm = s.recvfrom(100)
print(data, frm[1] == {port})
for dest in [("169.254.169.254", 53), ("10.1.1.1", 53)]:
    try:
        s.sendto(b"x", dest)
        print("sent")
    except OSError as e:
        print(errno.errorcode[e.errno])
"#
    );
    let r = py(&s, &code, json!({}));
    assert_eq!(r["stdout"], "b'ping' True\nEACCES\nEACCES\n", "{r}");
    assert_eq!(r["network"]["denied"], 2, "{r}");
    assert_eq!(r["network"]["bytes_out"], 4, "{r}");
    assert_eq!(r["network"]["bytes_in"], 4, "{r}");
}

#[test]
fn a_live_sandboxs_host_connections_close_when_it_is_killed() {
    // A server that holds connections open until the client closes.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let closed = Arc::new(AtomicUsize::new(0));
    let c2 = closed.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let closed = c2.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let s = serve_policy(port, &[]);
    let pid = s.child.id();
    let (id, _) = create_sandbox(&s, json!({"templateID": "python"}));
    assert_eq!(sockets_to(pid, port), 0);
    let code = format!(
        "import socket\nheld = [socket.create_connection(('127.0.0.1', {port})) for _ in range(3)]\nprint(len(held))"
    );
    let (st, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"stdout\":\"3\\n\""), "{b}");
    // The connections outlive the run (the sandbox keeps `held`).
    assert_eq!(sockets_to(pid, port), 3);
    assert_eq!(closed.load(Ordering::SeqCst), 0);
    let (st, _, _) = http(&s.addr, "DELETE", &format!("/sandboxes/{id}"), &[], b"").unwrap();
    assert_eq!(st, 204);
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(closed.load(Ordering::SeqCst), 3);
    assert_eq!(sockets_to(pid, port), 0);
}

/// The server's socket count once it is `want` (its HTTP connections
/// close a moment after the reply), or what it is after 2 s.
fn settled_sockets(pid: u32, want: usize) -> usize {
    for _ in 0..100 {
        let n = host_sockets(pid);
        if n == want {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    host_sockets(pid)
}

/// A metric's value in the server's /v1/metrics.
fn metric(s: &Server, name: &str) -> u64 {
    let (st, _, body) = s.get("/v1/metrics");
    assert_eq!(st, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn a_udp_flood_to_an_allowed_loopback_port_is_capped_and_counted() {
    // The test's receiver counts what arrives.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while u.recv_from(&mut buf).is_ok() {
            g.fetch_add(1, Ordering::SeqCst);
        }
    });
    let s = serve_policy(port, &["--net-udp-rate", "100"]);
    // A blocking sender: every sendto returns its length (the excess is
    // dropped, as on a full buffer); then a non-blocking one gets EAGAIN.
    let code = format!(
        r#"
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(sum(s.sendto(b"x" * 100, ("127.0.0.1", {port})) for _ in range(3000)))
s.setblocking(False)
for i in range(1000):
    try:
        s.sendto(b"y" * 100, ("127.0.0.1", {port}))
    except OSError as e:
        print(errno.errorcode[e.errno])
        break
"#
    );
    let t = std::time::Instant::now();
    let r = py(&s, &code, json!({}));
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(r["stdout"], "300000\nEAGAIN\n", "{r}");
    // What left the sandbox arrives (loopback); give it a moment.
    let forwarded = r["network"]["bytes_out"].as_u64().unwrap() as usize / 100;
    for _ in 0..100 {
        if got.load(Ordering::SeqCst) >= forwarded {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let received = got.load(Ordering::SeqCst);
    assert_eq!(received, forwarded, "{r}");
    // 100/s with a burst of 16: nowhere near the 3000 sent.
    let most = 16 + (100.0 * elapsed).ceil() as usize + 1;
    assert!(
        received >= 16 && received <= most,
        "{received} received in {elapsed:.2} s (at most {most}): {r}"
    );
    let dropped = r["network"]["udp_dropped"].as_u64().unwrap() as usize;
    eprintln!("UDP cap 100/s: 3000 sent, {received} received in {elapsed:.2} s, {dropped} dropped");
    assert!(dropped >= 3001 - received, "{dropped} dropped: {r}");
    assert_eq!(
        metric(&s, "zeroboot_network_udp_dropped_total") as usize,
        dropped
    );
}

/// A TCP server on 127.0.0.1 that reads each connection to its end and
/// adds up the bytes.
fn start_sink() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let total = Arc::new(AtomicUsize::new(0));
    let t = total.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let t = t.clone();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 1 << 16];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    t.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (port, total)
}

#[test]
fn a_bandwidth_capped_sandbox_moves_data_no_faster_than_its_cap() {
    const SIZE: usize = 10 << 20;
    const UP: usize = 4 << 20;
    const CAP: f64 = (8 << 20) as f64;
    // The bucket starts full: 100 ms of the cap.
    let least = |n: usize| (n as f64 - CAP * 0.1) / CAP;
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let want_sum: u64 = body.iter().map(|&b| b as u64).sum();
    let web = http_serving(&body);
    let (sink, sunk) = start_sink();
    let sink_allowed = format!("127.0.0.1:{sink}");
    let s = serve_policy(
        web.port,
        &["--net-allow-host", &sink_allowed, "--net-bandwidth", "8M"],
    );
    // A blocking reader (urllib), a non-blocking one under epoll
    // (asyncio), and a blocking writer; each timed by the guest.
    let code = format!(
        r#"
import asyncio, socket, time, urllib.request
t = time.monotonic()
d = urllib.request.urlopen("http://127.0.0.1:{web}/big").read()
print(len(d), sum(d), round(time.monotonic() - t, 3))
async def get():
    r, w = await asyncio.open_connection("127.0.0.1", {web})
    w.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await r.read()
    w.close()
    return data
t = time.monotonic()
d = asyncio.run(get())
print(len(d.split(b"\r\n\r\n", 1)[1]), round(time.monotonic() - t, 3))
t = time.monotonic()
c = socket.create_connection(("127.0.0.1", {sink}))
c.sendall(b"u" * {UP})
c.close()
print(round(time.monotonic() - t, 3))
"#,
        web = web.port
    );
    let t = std::time::Instant::now();
    let r = py(&s, &code, json!({"timeout_seconds": 120}));
    let wall = t.elapsed().as_secs_f64();
    let out = r["stdout"].as_str().unwrap_or_default().to_string();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "{r}");
    assert_eq!(
        lines[0][..2],
        [SIZE.to_string(), want_sum.to_string()],
        "{r}"
    );
    assert_eq!(lines[1][0], SIZE.to_string(), "{r}");
    let secs = |s: &str| s.parse::<f64>().unwrap();
    let (get, async_get, up) = (secs(lines[0][2]), secs(lines[1][1]), secs(lines[2][0]));
    eprintln!(
        "8 MiB/s cap: 10 MiB GET {get} s (urllib), {async_get} s (asyncio), 4 MiB upload {up} s; bounds {:.3} s, {:.3} s",
        least(SIZE),
        least(UP)
    );
    assert!(get >= least(SIZE), "urllib: {get} s < {}", least(SIZE));
    assert!(
        async_get >= least(SIZE),
        "asyncio: {async_get} s < {}",
        least(SIZE)
    );
    assert!(up >= least(UP), "upload: {up} s < {}", least(UP));
    assert!(wall >= get + async_get + up, "{wall} {r}");
    for _ in 0..100 {
        if sunk.load(Ordering::SeqCst) == UP {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(sunk.load(Ordering::SeqCst), UP);
    assert!(r["network"]["throttled"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["network"]["bytes_in"].as_u64().unwrap() >= 2 * SIZE as u64,
        "{r}"
    );
    assert!(metric(&s, "zeroboot_network_throttled_total") > 0);
    // A live sandbox (served in slices by its actor, which must wake the
    // throttled thread when the bucket refills) is capped alike.
    let (id, _) = create_sandbox(&s, json!({"templateID": "python"}));
    let code = format!(
        "import time, urllib.request\nt = time.monotonic()\nd = urllib.request.urlopen('http://127.0.0.1:{}/big').read()\nprint(len(d), time.monotonic() - t)",
        web.port
    );
    let (st, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code, "timeout_seconds": 60}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    let out = r["stdout"].as_str().unwrap_or_default().trim().to_string();
    let (n, live) = out.split_once(' ').unwrap_or_else(|| panic!("{r}"));
    assert_eq!(n, SIZE.to_string(), "{r}");
    let live = secs(live);
    eprintln!("live sandbox: 10 MiB GET {live:.3} s");
    assert!(live >= least(SIZE), "live: {live} s < {}", least(SIZE));
}

#[test]
fn ten_thousand_sockets_are_capped_in_the_sandbox_and_on_the_host() {
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    let s = serve_policy(port, &["--net-max-connections", "8"]);
    let pid = s.child.id();
    let before = host_sockets(pid);
    // Guest sockets: one process stops at its descriptor limit (EMFILE);
    // a chain of processes, each holding its sockets while its child
    // makes more, at the sandbox's socket cap (ENFILE). Host sockets: UDP
    // sockets each sending to the allowed port stop at the connection cap
    // (ENOBUFS).
    let code = format!(
        r#"
import errno, os, socket
def fill(limit):
    held = []
    for i in range(limit):
        try:
            held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        except OSError as e:
            return held, errno.errorcode[e.errno]
    return held, "none"
r, w = os.pipe()
def chain(level):
    # Fill this process's descriptors; a child (its copies of ours
    # closed: the sockets stay, ours) goes on from there.
    held, e = fill(10000)
    os.write(w, f"{{len(held)}} {{e}}\n".encode())
    if e == "EMFILE" and level < 8:
        pid = os.fork()
        if pid == 0:
            os.closerange(3, w)
            os.closerange(w + 1, 4096)
            chain(level + 1)
            os._exit(0)
        os.waitpid(pid, 0)
chain(0)
os.close(w)
levels = [l.split() for l in os.read(r, 4096).decode().split("\n") if l]
total = sum(int(n) for n, _ in levels)
print("one process", int(levels[0][0]) > 1000, levels[0][1])
print("processes", len(levels) > 2, total <= 4096, total > 4000, levels[-1][1])
sent = []
for i in range(10000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", ("127.0.0.1", {port}))
    except OSError as e:
        print("host sockets", len(sent), errno.errorcode[e.errno])
        break
    sent.append(s)
"#
    );
    let r = py(&s, &code, json!({}));
    assert_eq!(
        r["stdout"],
        "one process True EMFILE\nprocesses True True True ENFILE\nhost sockets 8 ENOBUFS\n",
        "{r}"
    );
    assert_eq!(r["network"]["connections"], 8, "{r}");
    // Both caps are counted (ENFILE in the last process, ENOBUFS).
    assert_eq!(metric(&s, "zeroboot_network_limited_total"), 2);
    assert!(
        settled_sockets(pid, before) <= before,
        "host sockets left open"
    );
}

#[test]
fn a_sandboxs_rules_survive_a_pause_to_disk_and_a_server_restart() {
    use std::os::unix::fs::PermissionsExt;
    let allowed = http_serving(CSV.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let s = serve_policy(allowed.port, &["--state-dir", state]);
    let (id, _) = create_sandbox(
        &s,
        json!({"templateID": "python", "allow_internet_access": false, "network": {"allowOut": ["data.test"], "denyOut": ["10.0.0.0/8"]}}),
    );
    let (st, _, b) = s.post(&format!("/sandboxes/{id}/pause"), None, "{}");
    assert_eq!(st, 204, "{b}");
    drop(s); // SIGKILL: what was paused is on disk.
    let s = serve_policy(allowed.port, &["--state-dir", state]);
    let (st, _, b) = s.post(
        &format!("/sandboxes/{id}/connect"),
        None,
        &json!({"timeout": 60}).to_string(),
    );
    assert_eq!(st, 201, "{b}");
    let (_, _, d) = s.get(&format!("/sandboxes/{id}"));
    let detail: Value = serde_json::from_str(&d).unwrap();
    assert_eq!(detail["allowInternetAccess"], false, "{detail}");
    assert_eq!(
        detail["network"]["allowOut"],
        json!(["data.test"]),
        "{detail}"
    );
    assert_eq!(
        detail["network"]["denyOut"],
        json!(["10.0.0.0/8"]),
        "{detail}"
    );
    // And they are what the sandbox runs under: an address its rules
    // leave out is refused (before the allowed name has granted it), the
    // allowed name works.
    let by_name = format!("http://data.test:{}/data.csv", allowed.port);
    let by_addr = format!("http://127.0.0.1:{}/data.csv", allowed.port);
    let code = format!(
        "import urllib.request\ntry:\n    urllib.request.urlopen({by_addr:?})\nexcept OSError as e:\n    print('refused', e)\nprint(urllib.request.urlopen({by_name:?}).read().decode(), end='')"
    );
    let (st, _, b) = s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        None,
        &json!({"code": code}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("refused") && out.ends_with(CSV), "{r}");
    assert_eq!(allowed.accepted(), 1);
}
