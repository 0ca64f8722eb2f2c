//! `zeroboot bench mcp`: what MCP adds to a stateless execution. The same
//! snippet's round trip through `POST /v1/exec` (keep-alive HTTP), through
//! `zeroboot mcp --url` over stdio (the client's pipe, then HTTP to the
//! server's `/mcp`), and through `zeroboot mcp` with its own engine,
//! interleaved call by call.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::percentiles;
use crate::bench_api::{start_server, Conn};

const CODE: &str = "print(1+1)";
const WARMUP: usize = 20;

/// An MCP client on a child's stdio: one request at a time.
struct McpPipe {
    child: Child,
    w: ChildStdin,
    r: BufReader<ChildStdout>,
    next: u64,
}

impl McpPipe {
    fn start(args: &[&str]) -> Result<McpPipe> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("ZEROBOOT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting zeroboot mcp")?;
        let w = child.stdin.take().context("no stdin")?;
        let r = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut c = McpPipe {
            child,
            w,
            r,
            next: 0,
        };
        c.call(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "zeroboot-bench", "version": "1"}}),
        )?;
        writeln!(
            c.w,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )?;
        Ok(c)
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        writeln!(self.w, "{msg}")?;
        self.w.flush()?;
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            bail!("zeroboot mcp closed its output");
        }
        let v: Value = serde_json::from_str(&line).context("a reply that is not JSON")?;
        if let Some(e) = v.get("error") {
            bail!("{method}: {e}");
        }
        Ok(v["result"].clone())
    }

    /// run_code's round trip and the execution time it reports (ns).
    fn run_code(&mut self) -> Result<(u64, u64)> {
        let t = Instant::now();
        let r = self.call(
            "tools/call",
            json!({"name": "run_code", "arguments": {"code": CODE}}),
        )?;
        let rt = t.elapsed().as_nanos() as u64;
        if r["isError"] == json!(true) || r["content"][0]["text"].as_str() != Some("2\n") {
            bail!("run_code answered {r}");
        }
        let exec_ms = r["structuredContent"]["exec_time_ms"]
            .as_f64()
            .unwrap_or(0.0);
        Ok((rt, (exec_ms * 1e6) as u64))
    }
}

impl Drop for McpPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    name: &'static str,
    round_trip: Vec<u64>,
    exec: Vec<u64>,
}

type Sampler<'a> = Box<dyn FnMut() -> Result<(u64, u64)> + 'a>;

pub fn run(runs: usize, json_out: bool) -> Result<()> {
    let (_server, addr) = start_server()?;
    let mut conn = Conn::new(&addr)?;
    let body = json!({ "code": CODE }).to_string();
    let url = format!("http://{addr}");
    let mut bridge = McpPipe::start(&["mcp", "--url", &url])?;
    let mut embedded = McpPipe::start(&["mcp", "--languages", "python"])?;
    let mut paths: Vec<(&'static str, Sampler)> = vec![
        (
            "POST /v1/exec (HTTP keep-alive)",
            Box::new(|| {
                let t = Instant::now();
                let (status, reply) = conn.post("/v1/exec", &body)?;
                let rt = t.elapsed().as_nanos() as u64;
                let v: Value = serde_json::from_str(&reply)?;
                if status != 200 || v["stdout"] != "2\n" {
                    bail!("/v1/exec answered {status}: {reply}");
                }
                let exec_ms = v["exec_time_ms"].as_f64().unwrap_or(0.0);
                Ok((rt, (exec_ms * 1e6) as u64))
            }),
        ),
        (
            "MCP stdio, zeroboot mcp --url",
            Box::new(|| bridge.run_code()),
        ),
        (
            "MCP stdio, zeroboot mcp (embedded)",
            Box::new(|| embedded.run_code()),
        ),
    ];
    // Interleaved, one call of each path per round, so the shared
    // machine's drifting load falls on all paths alike.
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|(name, _)| Row {
            name,
            round_trip: Vec::with_capacity(runs),
            exec: Vec::with_capacity(runs),
        })
        .collect();
    for round in 0..WARMUP + runs {
        for (row, (_, f)) in rows.iter_mut().zip(paths.iter_mut()) {
            let (rt, ex) = f()?;
            if round >= WARMUP {
                row.round_trip.push(rt);
                row.exec.push(ex);
            }
        }
    }
    drop(paths);

    let base = percentiles(rows[0].round_trip.clone()).0;
    let mut out = Vec::new();
    for r in &rows {
        let (p50, p90, p99) = percentiles(r.round_trip.clone());
        let (e50, _, _) = percentiles(r.exec.clone());
        if json_out {
            out.push(
                json!({"name": r.name, "runs": runs, "p50_us": p50, "p90_us": p90,
                            "p99_us": p99, "exec_p50_us": e50, "p50_minus_http_us": p50 - base}),
            );
        } else {
            println!(
                "{:<38} n={runs:<5} p50 {p50:>8.1} us  p90 {p90:>8.1} us  p99 {p99:>8.1} us  (exec p50 {e50:>7.1} us; p50 - /v1/exec {:>+7.1} us)",
                r.name,
                p50 - base
            );
        }
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
