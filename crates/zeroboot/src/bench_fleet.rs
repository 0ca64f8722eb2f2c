//! `zeroboot bench fleet`: what the gateway costs (docs/fleet.md). One
//! node (`serve --node-key n1`) and one `zeroboot gateway` in front of it,
//! both started here on loopback; the same calls, in turn straight to the
//! node and through the gateway, each on its own keep-alive connection:
//! create (`POST /sandboxes`), a run in the live sandbox
//! (`POST /v1/sandboxes/{id}/exec`, `print(1+1)`), kill. With
//! `--haproxy`, a third path: Debian's HAProxy in front of the gateway,
//! as a fleet's front balancer (tests/fleet.py's settings).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::percentiles;
use crate::bench_api::{start_server_with, Conn, ServerProc};

fn start_gateway(node: &str) -> Result<(ServerProc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(std::env::current_exe()?)
        .args(["gateway", "--port", &port.to_string(), "--node"])
        .arg(format!("n1=http://{node}"))
        .env("ZEROBOOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting zeroboot gateway")?;
    let gw = ServerProc(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::new(&addr) {
            if let Ok((200, _)) = c.request("GET", "/v1/health/ready", "") {
                return Ok((gw, addr));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway did not become ready")
}

/// HAProxy (from PATH) on a free loopback port in front of `gateway`,
/// with a fleet's settings (health checks, redispatch).
fn start_haproxy(gateway: &str) -> Result<(ServerProc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // HAProxy reads its file at start; it is removed once it is running.
    let cfg =
        std::env::temp_dir().join(format!("zeroboot-bench-haproxy-{}.cfg", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 2000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  retries 2\n  option redispatch 1\n  retry-on conn-failure empty-response\nfrontend zeroboot\n  bind 127.0.0.1:{port}\n  default_backend gateways\nbackend gateways\n  option httpchk GET /v1/health/ready\n  default-server inter 1s\n  server g1 {gateway} check\n"
        ),
    )?;
    let child = Command::new("haproxy")
        .args(["-db", "-q", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting haproxy (Debian: apt-get install haproxy)")?;
    let proc = ServerProc(child);
    let addr = format!("127.0.0.1:{port}");
    let _remove = RemoveOnDrop(cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::new(&addr) {
            if let Ok((200, _)) = c.request("GET", "/v1/health/ready", "") {
                return Ok((proc, addr));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("haproxy did not pass the gateway's health check")
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Default)]
struct Samples {
    create: Vec<u64>,
    run: Vec<u64>,
    kill: Vec<u64>,
}

impl Samples {
    /// The samples of call `i` (create, run, kill), moved out.
    fn take(&mut self, i: usize) -> Vec<u64> {
        std::mem::take(match i {
            0 => &mut self.create,
            1 => &mut self.run,
            _ => &mut self.kill,
        })
    }
}

/// One create, `runs_each` runs, one kill on `c`.
fn round(c: &mut Conn, runs_each: usize, s: &mut Samples) -> Result<()> {
    let t = Instant::now();
    let (st, body) = c.post("/sandboxes", r#"{"templateID": "python", "timeout": 600}"#)?;
    s.create.push(t.elapsed().as_nanos() as u64);
    if st != 201 {
        bail!("create answered {st}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let id = v["sandboxID"].as_str().context("sandboxID")?.to_string();
    let path = format!("/v1/sandboxes/{id}/exec");
    for _ in 0..runs_each {
        let t = Instant::now();
        let (st, body) = c.post(&path, r#"{"code": "print(1+1)"}"#)?;
        s.run.push(t.elapsed().as_nanos() as u64);
        if st != 200 || !body.contains("\"output\":\"2\\n\"") {
            bail!("run answered {st}: {body}");
        }
    }
    let t = Instant::now();
    let (st, body) = c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
    s.kill.push(t.elapsed().as_nanos() as u64);
    if st != 204 {
        bail!("kill answered {st}: {body}");
    }
    Ok(())
}

pub fn run(sandboxes: usize, runs_each: usize, haproxy: bool, json_out: bool) -> Result<()> {
    let (_node, node) = start_server_with(&["--languages", "python", "--node-key", "n1"])?;
    let (_gw, gw) = start_gateway(&node)?;
    let mut paths: Vec<(&str, Conn, Samples)> = vec![
        ("direct", Conn::new(&node)?, Samples::default()),
        ("gateway", Conn::new(&gw)?, Samples::default()),
    ];
    let _front = if haproxy {
        let (p, addr) = start_haproxy(&gw)?;
        paths.push(("haproxy+gateway", Conn::new(&addr)?, Samples::default()));
        Some(p)
    } else {
        None
    };
    // Warm every path (spare forks, pooled connections).
    let mut warm = Samples::default();
    for _ in 0..5 {
        for (_, c, _) in paths.iter_mut() {
            round(c, 3, &mut warm)?;
        }
    }
    for _ in 0..sandboxes {
        for (_, c, s) in paths.iter_mut() {
            round(c, runs_each, s)?;
        }
    }
    println!(
        "fleet: one node, one gateway{}, loopback; {sandboxes} sandboxes, {runs_each} runs each",
        if haproxy { ", HAProxy in front" } else { "" }
    );
    print!("{:<26}", "");
    for (name, _, _) in &paths {
        print!(" {:>24}", format!("{name} p50 / p99 ms"));
    }
    println!(" {:>14}", "added p50");
    let mut out = Vec::new();
    let calls = [
        "create (POST /sandboxes)",
        "run in it (print(1+1))",
        "kill (DELETE)",
    ];
    for (i, call) in calls.into_iter().enumerate() {
        print!("{call:<26}");
        let mut row = serde_json::Map::new();
        let mut p50s = Vec::new();
        for (name, _, s) in paths.iter_mut() {
            let v = s.take(i);
            let n = v.len();
            let (p50, _, p99) = percentiles(v);
            print!(" {:>11.3} / {:>9.3}", p50 / 1000.0, p99 / 1000.0);
            p50s.push(p50);
            row.insert(
                (*name).to_string(),
                serde_json::json!({"n": n, "p50_ms": p50 / 1000.0, "p99_ms": p99 / 1000.0}),
            );
        }
        // Each path over the one before it (the gateway over direct,
        // HAProxy over the gateway).
        let added: Vec<String> = p50s
            .windows(2)
            .map(|w| format!("{:+.3}", (w[1] - w[0]) / 1000.0))
            .collect();
        println!(" {:>14}", format!("{} ms", added.join(" ")));
        out.push(serde_json::json!({ "name": call, "paths": row }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
