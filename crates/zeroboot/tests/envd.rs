//! envd inside `zeroboot serve`: in-sandbox routing (E2B's headers and
//! hosts, unknown sandboxes, access tokens), Connect RPC answers and
//! errors, `/files`, and a streamed WatchDir seeing a guest's write.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const KEY: &str = "envd-test-key";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn create(s: &Server, body: &str) -> serde_json::Value {
    let (st, _, b) = http(
        &s.addr,
        "POST",
        "/sandboxes",
        &[("X-API-Key", KEY), ("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 201, "{b}");
    json(&b)
}

/// A request to sandbox `id`'s envd.
fn envd(
    s: &Server,
    id: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut h = vec![("E2b-Sandbox-Id", id), ("E2b-Sandbox-Port", "49983")];
    h.extend_from_slice(extra);
    http(&s.addr, method, path, &h, body).unwrap()
}

fn rpc(s: &Server, id: &str, method: &str, body: &str) -> Reply {
    envd(
        s,
        id,
        "POST",
        &format!("/filesystem.Filesystem/{method}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn routing_tokens_and_unknown_sandboxes() {
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let (st, _, b) = envd(&s, "nosuchsandbox", "GET", "/health", &[], b"");
    assert_eq!(st, 502, "{b}");
    assert!(json(&b)["message"]
        .as_str()
        .unwrap()
        .contains("was not found"));

    let sb = create(&s, r#"{"templateID": "python"}"#);
    let id = sb["sandboxID"].as_str().unwrap();
    assert_eq!(sb["envdVersion"], "0.5.7");
    let (st, _, _) = envd(&s, id, "GET", "/health", &[], b"");
    assert_eq!(st, 204);
    // The host form reaches the same sandbox (one Host header: a raw
    // request, the helper sends its own).
    let raw = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        let body = r#"{"path": "/home/user"}"#;
        write!(
            c,
            "POST /filesystem.Filesystem/Stat HTTP/1.1\r\nHost: 49983-{id}.localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("FILE_TYPE_DIRECTORY"), "{raw}");
    // The code interpreter's port is not served: a clear 502.
    let (st, _, b) = http(
        &s.addr,
        "GET",
        "/health",
        &[("E2b-Sandbox-Id", id), ("E2b-Sandbox-Port", "49999")],
        b"",
    )
    .unwrap();
    assert_eq!(st, 502);
    assert!(b.contains("port 49999 is not open"), "{b}");
    let (st, _, _) = envd(&s, "../etc", "GET", "/health", &[], b"");
    assert_eq!(st, 400);
    // Without the headers, /files is not a route of the server.
    let (st, _, _) = http(&s.addr, "GET", "/files?path=x", &[], b"").unwrap();
    assert_eq!(st, 404);

    // A secure sandbox wants its access token.
    let sec = create(&s, r#"{"templateID": "python", "secure": true}"#);
    let sid = sec["sandboxID"].as_str().unwrap();
    let token = sec["envdAccessToken"].as_str().unwrap();
    let (st, _, _) = envd(&s, sid, "GET", "/files?path=/etc/hostname", &[], b"");
    assert_eq!(st, 401);
    let (st, _, _) = envd(
        &s,
        sid,
        "GET",
        "/files?path=/etc/hostname",
        &[("X-Access-Token", "wrong")],
        b"",
    );
    assert_eq!(st, 401);
    let (st, _, b) = envd(
        &s,
        sid,
        "POST",
        "/files?path=t.txt",
        &[
            ("X-Access-Token", token),
            ("Content-Type", "application/octet-stream"),
        ],
        b"secure",
    );
    assert_eq!(st, 200, "{b}");

    // A killed sandbox: E2B's 502 "was not found".
    let (st, _, _) = http(
        &s.addr,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("X-API-Key", KEY)],
        b"",
    )
    .unwrap();
    assert_eq!(st, 204);
    let (st, _, b) = rpc(&s, id, "Stat", r#"{"path": "/"}"#);
    assert_eq!(st, 502);
    assert!(b.contains("was not found"), "{b}");
}

#[test]
fn files_and_filesystem_rpcs() {
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let sb = create(&s, r#"{"templateID": "python"}"#);
    let id = sb["sandboxID"].as_str().unwrap();
    let oct = [("Content-Type", "application/octet-stream")];
    let (st, _, b) = envd(&s, id, "POST", "/files?path=d/a.txt", &oct, b"hello");
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        json(&b),
        serde_json::json!([{"name": "a.txt", "type": "file", "path": "/home/user/d/a.txt"}])
    );
    let (st, _, b) = envd(&s, id, "GET", "/files?path=/home/user/d/a.txt", &[], b"");
    assert_eq!((st, b.as_str()), (200, "hello"));
    let (st, _, b) = envd(&s, id, "GET", "/files?path=/nope", &[], b"");
    assert_eq!(st, 404, "{b}");
    let (st, _, b) = envd(&s, id, "GET", "/files?path=/home", &[], b"");
    assert_eq!(st, 400, "{b}");
    // `..` stays inside the sandbox (written as root: `/` is root's, and
    // the default user may not create there).
    let (st, _, b) = envd(
        &s,
        id,
        "POST",
        "/files?path=../../../../../../zz",
        &oct,
        b"in",
    );
    assert_eq!(st, 403, "{b}");
    assert!(b.contains("permission denied"), "{b}");
    let (st, _, b) = envd(
        &s,
        id,
        "POST",
        "/files?path=../../../../../../zz&username=root",
        &oct,
        b"in",
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)[0]["path"], "/zz");
    assert!(!std::path::Path::new("/zz").exists());
    // Multipart, two files.
    let mp = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m1\"\r\n\r\none\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/m2\"\r\n\r\ntwo\r\n--B--\r\n";
    let (st, _, b) = envd(
        &s,
        id,
        "POST",
        "/files",
        &[("Content-Type", "multipart/form-data; boundary=B")],
        mp,
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)[1]["path"], "/tmp/m2");

    let (st, _, b) = rpc(&s, id, "ListDir", r#"{"path": "", "depth": 2}"#);
    assert_eq!(st, 200, "{b}");
    let names: Vec<String> = json(&b)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["/home/user/d", "/home/user/d/a.txt", "/home/user/m1"]
    );
    let (st, _, b) = rpc(&s, id, "Stat", r#"{"path": "nope"}"#);
    assert_eq!(st, 404);
    assert_eq!(json(&b)["code"], "not_found");
    let (st, _, b) = rpc(&s, id, "Stat", r#"{"path": "#);
    assert_eq!(st, 400);
    assert_eq!(json(&b)["code"], "invalid_argument");
    let (st, _, b) = rpc(&s, id, "MakeDir", r#"{"path": "d"}"#);
    assert_eq!(
        (st, json(&b)["code"].as_str()),
        (409, Some("already_exists"))
    );
    let (st, _, b) = rpc(&s, id, "Move", r#"{"source": "d", "destination": "e/f"}"#);
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)["entry"]["path"], "/home/user/e/f");
    let (st, _, _) = rpc(&s, id, "Remove", r#"{"path": "e"}"#);
    assert_eq!(st, 200);
    let (st, _, _) = rpc(&s, id, "Stat", r#"{"path": "e/f/a.txt"}"#);
    assert_eq!(st, 404);
    let (st, _, b) = envd(
        &s,
        id,
        "POST",
        "/filesystem.Filesystem/NoSuchMethod",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(
        (st, json(&b)["code"].as_str()),
        (501, Some("unimplemented"))
    );
}

#[test]
fn watch_dir_streams_a_guest_write() {
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let sb = create(&s, r#"{"templateID": "python"}"#);
    let id = sb["sandboxID"].as_str().unwrap().to_string();
    let addr = s.addr.clone();
    let wid = id.clone();
    // The stream ends at its Connect deadline, with deadline_exceeded.
    let watch = std::thread::spawn(move || {
        let mut req = vec![0u8, 0, 0, 0, 0];
        let msg = br#"{"path": "/home/user", "recursive": true}"#;
        req[4] = msg.len() as u8;
        req.extend_from_slice(msg);
        http(
            &addr,
            "POST",
            "/filesystem.Filesystem/WatchDir",
            &[
                ("E2b-Sandbox-Id", &wid),
                ("Content-Type", "application/connect+json"),
                ("Connect-Timeout-Ms", "3000"),
            ],
            &req,
        )
        .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (st, _, b) = http(
        &s.addr,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"code": "import os; os.makedirs('/home/user/g', exist_ok=True); open('/home/user/g/out.txt', 'w').write('guest')"}"#,
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");
    let (st, h, b) = watch.join().unwrap();
    assert_eq!(st, 200, "{b}");
    assert!(h
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/connect+json"));
    for want in [
        r#"{"start":{}}"#,
        r#"{"filesystem":{"name":"g","type":"EVENT_TYPE_CREATE"}}"#,
        r#"{"filesystem":{"name":"g/out.txt","type":"EVENT_TYPE_CREATE"}}"#,
        r#"{"filesystem":{"name":"g/out.txt","type":"EVENT_TYPE_WRITE"}}"#,
        r#""code":"deadline_exceeded""#,
    ] {
        assert!(b.contains(want), "no {want} in {b:?}");
    }
    let (st, _, b) = envd(&s, &id, "GET", "/files?path=g/out.txt", &[], b"");
    assert_eq!((st, b.as_str()), (200, "guest"));
}

/// The value of an unlabelled gauge in /v1/metrics.
fn gauge(s: &Server, name: &str) -> u64 {
    let (_, _, b) = http(
        &s.addr,
        "GET",
        "/v1/metrics",
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"",
    )
    .unwrap();
    b.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {b}"))
}

#[test]
fn a_client_dropping_a_watch_stream_ends_it() {
    use std::io::{Read, Write};
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let sb = create(&s, r#"{"templateID": "python"}"#);
    let id = sb["sandboxID"].as_str().unwrap();
    let msg = br#"{"path": "/home/user"}"#;
    for round in 0..50 {
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        write!(
            c,
            "POST /filesystem.Filesystem/WatchDir HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\nContent-Type: application/connect+json\r\n{}Content-Length: {}\r\n\r\n",
            // With and without keep-alives: hyper sees the closed
            // connection either way.
            if round % 2 == 0 { "Keepalive-Ping-Interval: 1\r\n" } else { "" },
            msg.len() + 5
        )
        .unwrap();
        c.write_all(&[0, 0, 0, 0, msg.len() as u8]).unwrap();
        c.write_all(msg).unwrap();
        // Read until the start message has come.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(r#"{"start":{}}"#) {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed before the start message");
            got.extend_from_slice(&buf[..n]);
        }
        if round == 0 {
            assert_eq!(gauge(&s, "zeroboot_envd_watch_streams"), 1);
        }
        drop(c);
    }
    // Gone within a keep-alive interval or two (the write that finds the
    // connection closed ends the stream).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge(&s, "zeroboot_envd_watch_streams") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "streams still open 10 s after their clients left"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Polled watchers: created and removed, none left.
    let (st, _, b) = rpc(&s, id, "CreateWatcher", r#"{"path": "/home/user"}"#);
    assert_eq!(st, 200, "{b}");
    let wid = json(&b)["watcherId"].as_str().unwrap().to_string();
    assert_eq!(gauge(&s, "zeroboot_envd_watchers"), 1);
    let (st, _, _) = rpc(
        &s,
        id,
        "RemoveWatcher",
        &format!(r#"{{"watcherId": "{wid}"}}"#),
    );
    assert_eq!(st, 200);
    assert_eq!(gauge(&s, "zeroboot_envd_watchers"), 0);
    let (st, _, b) = rpc(
        &s,
        id,
        "GetWatcherEvents",
        &format!(r#"{{"watcherId": "{wid}"}}"#),
    );
    assert_eq!((st, json(&b)["code"].as_str()), (404, Some("not_found")));
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Start command `msg` (a StartRequest) over a raw connection, read its
/// stream until `want` appears, then drop the connection (the client goes
/// away). Returns whether `want` came before the stream ended.
fn start_and_leave(s: &Server, id: &str, msg: &[u8], want: &str) -> bool {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        c,
        "POST /process.Process/Start HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\nContent-Type: application/connect+json\r\nContent-Length: {}\r\n\r\n",
        msg.len() + 5
    )
    .unwrap();
    c.write_all(&[0, 0, 0, 0, msg.len() as u8]).unwrap();
    c.write_all(msg).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&buf[..n]);
    }
    true
}

#[test]
fn commands_whose_clients_go_away_leak_nothing() {
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let pid = s.child.id();
    let sb = create(&s, r#"{"templateID": "python", "timeout": 600}"#);
    let id = sb["sandboxID"].as_str().unwrap();
    let msg = br#"{"process": {"cmd": "/bin/echo", "args": ["hi"]}, "stdin": true}"#;
    let round = |i: usize| {
        // Every other client leaves as soon as the command has started,
        // the others after a few bytes more.
        let want = if i.is_multiple_of(2) {
            "\"start\""
        } else {
            "\"data\""
        };
        start_and_leave(&s, id, msg, want);
    };
    for i in 0..50 {
        round(i);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));
    for i in 0..1000 {
        round(i);
    }
    // Every command ended and was reaped; the server holds what it held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (st, _, b) = envd(
            &s,
            id,
            "POST",
            "/process.Process/List",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(st, 200, "{b}");
        if json(&b)["processes"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "commands left: {b}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (fds1, rss1) = (fd_count(pid), rss_kib(pid));
    eprintln!("after 1000 dropped command streams: descriptors {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB");
    assert!(fds1 <= fds0 + 8, "descriptors {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + 64 * 1024, "RSS {rss0} KiB -> {rss1} KiB");
    // The sandbox still works.
    let (st, _, b) = envd(&s, id, "GET", "/files?path=/etc/hostname", &[], b"");
    assert!(st == 200 || st == 404, "{st} {b}");
}

#[test]
fn files_and_kill_are_served_while_code_runs() {
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let sb = create(&s, r#"{"templateID": "python", "timeout": 600}"#);
    let id = sb["sandboxID"].as_str().unwrap().to_string();
    let addr = s.addr.clone();
    let path = format!("/v1/sandboxes/{id}/exec");
    let runner = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = http(
            &addr,
            "POST",
            &path,
            &[
                ("Authorization", &format!("Bearer {KEY}")),
                ("Content-Type", "application/json"),
            ],
            br#"{"code": "open('/tmp/started', 'w').write('yes')\nimport time\ntime.sleep(20)", "timeout_seconds": 60}"#,
        )
        .unwrap();
        (r, t.elapsed())
    });
    // The code has started; a file read is answered while it sleeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let t = std::time::Instant::now();
        let (st, _, b) = envd(&s, &id, "GET", "/files?path=/tmp/started", &[], b"");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "a read waited for the code"
        );
        if st == 200 {
            assert_eq!(b, "yes");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st} {b}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A command runs meanwhile too.
    let msg = br#"{"process": {"cmd": "/bin/echo", "args": ["side by side"]}}"#;
    let mut body = vec![0, 0, 0, 0, msg.len() as u8];
    body.extend_from_slice(msg);
    let (st, _, b) = envd(
        &s,
        &id,
        "POST",
        "/process.Process/Start",
        &[("Content-Type", "application/connect+json")],
        &body,
    );
    assert_eq!(st, 200);
    assert!(b.contains("\"end\""), "{b}");
    // A kill ends the run at once, not when its sleep is over.
    let (st, _, _) = http(
        &s.addr,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("X-API-Key", KEY)],
        b"",
    )
    .unwrap();
    assert_eq!(st, 204);
    let ((st, _, b), took) = runner.join().unwrap();
    assert_eq!(st, 410, "{b}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

/// One Connect envelope of `msg`.
fn envelope(msg: &str) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg.as_bytes());
    b
}

/// `process.Process/StreamInput` with its body sent in `chunks` (HTTP/1.1
/// chunked, a pause between them, as a client streams); the answer's body.
fn stream_input(s: &Server, id: &str, chunks: &[Vec<u8>]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        c,
        "POST /process.Process/StreamInput HTTP/1.1\r\nHost: x\r\nConnection: close\r\nE2b-Sandbox-Id: {id}\r\nContent-Type: application/connect+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    // A stream the server refuses is answered and closed at once: the
    // rest of the body may then meet a closed socket (EPIPE, ECONNRESET),
    // and the answer is still there to read.
    let mut send = |b: &[u8]| c.write_all(b).and_then(|_| c.flush());
    let mut sent = true;
    for ch in chunks {
        sent = send(format!("{:x}\r\n", ch.len()).as_bytes()).is_ok()
            && send(ch).is_ok()
            && send(b"\r\n").is_ok();
        if !sent {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if sent {
        let _ = send(b"0\r\n\r\n");
    }
    let mut raw = Vec::new();
    // A reset after the answer (our unread body) keeps what was read.
    let _ = c.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn stream_input_feeds_a_command_as_it_arrives() {
    use base64::Engine as _;
    let s = Server::start(Some(&[KEY]), &["--languages", "python"]);
    let sb = create(&s, r#"{"templateID": "python", "timeout": 600}"#);
    let id = sb["sandboxID"].as_str().unwrap().to_string();
    // A command reading two lines; its Start stream is left once it has
    // started (the command lives on, as with envd).
    let msg = br#"{"process": {"cmd": "/bin/sh", "args": ["-c", "head -n 2 > /tmp/streamed"]}, "stdin": true, "tag": "sink"}"#;
    assert!(
        start_and_leave(&s, &id, msg, "\"start\""),
        "the Start stream ended early"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let first = envelope(&format!(
        r#"{{"data": {{"input": {{"stdin": "{}"}}}}}}"#,
        b64("line one\n")
    ));
    let (half_a, half_b) = first.split_at(3);
    let (st, body) = stream_input(
        &s,
        &id,
        &[
            envelope(r#"{"start": {"process": {"tag": "sink"}}}"#),
            // An envelope split across two chunks.
            half_a.to_vec(),
            half_b.to_vec(),
            envelope(r#"{"keepalive": {}}"#),
            envelope(&format!(
                r#"{{"data": {{"input": {{"stdin": "{}"}}}}}}"#,
                b64("line two\n")
            )),
        ],
    );
    assert_eq!(st, 200, "{body}");
    assert!(!body.contains("\"error\""), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (st, _, b) = envd(&s, &id, "GET", "/files?path=/tmp/streamed", &[], b"");
        if st == 200 && b == "line one\nline two\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st} {b:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Bad streams: data before start, an unknown process, a unary call.
    let (st, body) = stream_input(
        &s,
        &id,
        &[envelope(r#"{"data": {"input": {"stdin": "eA=="}}}"#)],
    );
    assert_eq!(st, 200);
    assert!(
        body.contains("invalid_argument") && body.contains("before start"),
        "{body}"
    );
    let (_, body) = stream_input(
        &s,
        &id,
        &[envelope(r#"{"start": {"process": {"pid": 999999}}}"#)],
    );
    assert!(body.contains("not_found"), "{body}");
    let (st, _, b) = envd(
        &s,
        &id,
        "POST",
        "/process.Process/StreamInput",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("client streaming"), "{b}");
}
