//! `zeroboot bench fleet`: what the gateway costs (docs/fleet.md). One
//! node (`serve --node-key n1`) and one `zeroboot gateway` in front of it,
//! both started here on loopback; the same calls, alternately straight to
//! the node and through the gateway, each on its own keep-alive
//! connection: create (`POST /sandboxes`), a run in the live sandbox
//! (`POST /v1/sandboxes/{id}/exec`, `print(1+1)`), kill.

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

#[derive(Default)]
struct Samples {
    create: Vec<u64>,
    run: Vec<u64>,
    kill: Vec<u64>,
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

pub fn run(sandboxes: usize, runs_each: usize, json_out: bool) -> Result<()> {
    let (_node, node) = start_server_with(&["--languages", "python", "--node-key", "n1"])?;
    let (_gw, gw) = start_gateway(&node)?;
    let mut direct = Conn::new(&node)?;
    let mut via = Conn::new(&gw)?;
    // Warm both paths (spare forks, pooled connections).
    let mut warm = Samples::default();
    for _ in 0..5 {
        round(&mut direct, 3, &mut warm)?;
        round(&mut via, 3, &mut warm)?;
    }
    let (mut d, mut g) = (Samples::default(), Samples::default());
    for _ in 0..sandboxes {
        round(&mut direct, runs_each, &mut d)?;
        round(&mut via, runs_each, &mut g)?;
    }
    let rows = [
        ("create (POST /sandboxes)", d.create, g.create),
        ("run in it (print(1+1))", d.run, g.run),
        ("kill (DELETE)", d.kill, g.kill),
    ];
    let mut out = Vec::new();
    println!(
        "fleet: one node, one gateway, loopback; {sandboxes} sandboxes, {runs_each} runs each"
    );
    println!(
        "{:<26} {:>21} {:>21} {:>12}",
        "", "direct p50 / p99 ms", "gateway p50 / p99 ms", "added p50"
    );
    for (name, direct, via) in rows {
        let (dn, vn) = (direct.len(), via.len());
        let (d50, _, d99) = percentiles(direct);
        let (g50, _, g99) = percentiles(via);
        println!(
            "{name:<26} {:>9.3} / {:>9.3} {:>9.3} / {:>9.3} {:>9.3} ms",
            d50 / 1000.0,
            d99 / 1000.0,
            g50 / 1000.0,
            g99 / 1000.0,
            (g50 - d50) / 1000.0
        );
        out.push(serde_json::json!({
            "name": name, "n": [dn, vn],
            "direct_ms": {"p50": d50 / 1000.0, "p99": d99 / 1000.0},
            "gateway_ms": {"p50": g50 / 1000.0, "p99": g99 / 1000.0},
            "added_p50_ms": (g50 - d50) / 1000.0,
        }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
