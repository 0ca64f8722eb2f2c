//! `zeroboot bench soak`: a server under a mix of normal, failing,
//! timing-out, memory-hungry and flooding executions from C clients for N
//! seconds. Every reply is checked against what that snippet must give;
//! anything else is an unexpected error. The server's RSS and descriptors
//! are sampled all along: they must stay flat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::Value;

use crate::bench::percentiles;
use crate::bench_api::{fd_count, proc_status, start_server, Conn};

#[derive(Args)]
pub struct SoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One kind of execution and the reply it must get.
struct Kind {
    name: &'static str,
    body: &'static str,
    /// How many of every `WEIGHTS_TOTAL` requests are of this kind.
    weight: u32,
    check: fn(&Value) -> bool,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

const KINDS: &[Kind] = &[
    Kind {
        name: "print",
        body: r#"{"code": "print(1+1)"}"#,
        weight: 10,
        check: |v| s(v, "stdout") == "2\n" && v["exit_code"] == 0,
    },
    Kind {
        name: "numpy",
        body: r#"{"code": "import numpy as np; print(np.dot(np.arange(1000), np.arange(1000)))"}"#,
        weight: 4,
        check: |v| s(v, "stdout") == "332833500\n",
    },
    Kind {
        name: "node",
        body: r#"{"code": "console.log([1,2,3].reduce((a, b) => a + b))", "language": "node"}"#,
        weight: 4,
        check: |v| s(v, "stdout") == "6\n" && v["exit_code"] == 0,
    },
    Kind {
        name: "exception",
        body: r#"{"code": "raise ValueError('soak')"}"#,
        weight: 2,
        check: |v| v["exit_code"] == 1 && s(v, "stderr").contains("ValueError: soak"),
    },
    Kind {
        name: "timeout",
        body: r#"{"code": "while True: pass", "timeout_seconds": 0.5}"#,
        weight: 1,
        check: |v| v["timed_out"] == true && v["exit_code"] == 124,
    },
    Kind {
        name: "memory",
        body: r#"{"code": "b = bytearray(200 << 20)", "memory_mb": 64}"#,
        weight: 1,
        check: |v| v["out_of_memory"] == true && s(v, "stderr").contains("MemoryError"),
    },
    Kind {
        name: "flood",
        body: r#"{"code": "import sys\nfor _ in range(20000): sys.stdout.write('x' * 100)", "max_output_bytes": 65536}"#,
        weight: 1,
        check: |v| v["truncated"] == true && s(v, "stdout").len() < 70_000,
    },
    Kind {
        name: "disk",
        body: r#"{"code": "open('/tmp/f', 'wb').write(b'x' * (4 << 20))", "disk_mb": 1}"#,
        weight: 1,
        check: |v| v["disk_full"] == true && s(v, "stderr").contains("Errno 28"),
    },
];

/// The kinds in proportion to their weights, interleaved.
fn schedule() -> Vec<usize> {
    let mut out = Vec::new();
    let max = KINDS.iter().map(|k| k.weight).max().unwrap_or(1);
    for round in 0..max {
        for (i, k) in KINDS.iter().enumerate() {
            if round < k.weight {
                out.push(i);
            }
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    /// Latencies (ns) by kind.
    lat: Vec<Vec<u64>>,
    /// Unexpected replies by kind, with the first few examples.
    unexpected: Vec<u64>,
    examples: Vec<String>,
}

pub fn run(a: SoakArgs) -> Result<()> {
    let (server, addr) = start_server()?;
    let pid = server.0.id();
    // Warm up: each kind once, so that templates and pools are ready.
    {
        let mut c = Conn::new(&addr)?;
        for k in KINDS {
            c.post("/v1/exec", k.body)?;
        }
    }
    let tally = Arc::new(Mutex::new(Tally {
        lat: vec![Vec::new(); KINDS.len()],
        unexpected: vec![0; KINDS.len()],
        examples: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let order = Arc::new(schedule());
    let mut clients = Vec::new();
    for c in 0..a.concurrency.max(1) {
        let (addr, tally, stop, order) = (addr.clone(), tally.clone(), stop.clone(), order.clone());
        clients.push(std::thread::spawn(move || {
            let mut conn = Conn::new(&addr).ok();
            let mut i = c * 7;
            while !stop.load(Ordering::Relaxed) {
                let kind = order[i % order.len()];
                i += 1;
                let k = &KINDS[kind];
                let t = Instant::now();
                let reply = match conn.as_mut() {
                    Some(cn) => cn.post("/v1/exec", k.body).ok(),
                    None => None,
                };
                let ok = match &reply {
                    Some((200, body)) => serde_json::from_str::<Value>(body)
                        .map(|v| v.get("error").is_none() && (k.check)(&v))
                        .unwrap_or(false),
                    _ => false,
                };
                let mut t_ = tally.lock().unwrap_or_else(|e| e.into_inner());
                if ok {
                    t_.lat[kind].push(t.elapsed().as_nanos() as u64);
                } else {
                    t_.unexpected[kind] += 1;
                    if t_.examples.len() < 5 {
                        let what = match &reply {
                            Some((st, b)) => {
                                format!("{} -> {st} {}", k.name, &b[..b.len().min(300)])
                            }
                            None => format!("{} -> connection failed", k.name),
                        };
                        t_.examples.push(what);
                    }
                    drop(t_);
                    conn = Conn::new(&addr).ok();
                }
            }
        }));
    }
    // Sample the server every second.
    let start = Instant::now();
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    while start.elapsed().as_secs_f64() < a.seconds {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((
            start.elapsed().as_secs_f64(),
            proc_status(pid, "VmRSS:"),
            fd_count(pid),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let served: usize = t.lat.iter().map(Vec::len).sum();
    let unexpected: u64 = t.unexpected.iter().sum();
    let (p50, _, p99) = percentiles(t.lat.iter().flatten().copied().collect());
    // RSS after warm-up: the first fifth of the run is warm-up.
    let warm = samples.len() / 5;
    let base = samples.get(warm).map(|s| s.1).unwrap_or(0);
    let after: Vec<u64> = samples.iter().skip(warm).map(|s| s.1).collect();
    let rss_max = after.iter().copied().max().unwrap_or(0);
    let rss_end = after.last().copied().unwrap_or(0);
    let growth = |v: u64| {
        if base > 0 {
            (v as f64 - base as f64) / base as f64 * 100.0
        } else {
            0.0
        }
    };
    let fds: Vec<usize> = samples.iter().map(|s| s.2).collect();
    let (fd_min, fd_max) = (
        fds.iter().copied().min().unwrap_or(0),
        fds.iter().copied().max().unwrap_or(0),
    );
    let kinds: Vec<Value> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (p50, _, p99) = percentiles(t.lat[i].clone());
            serde_json::json!({
                "kind": k.name, "served": t.lat[i].len(), "unexpected": t.unexpected[i],
                "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3,
            })
        })
        .collect();
    let timeline: Vec<Value> = samples
        .iter()
        .map(|(s, r, f)| serde_json::json!({"t_s": (s * 10.0).round() / 10.0, "rss_kib": r, "fds": f}))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "seconds": elapsed, "concurrency": a.concurrency, "served": served,
                "unexpected_errors": unexpected, "exec_per_s": served as f64 / elapsed,
                "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3, "kinds": kinds,
                "rss_kib_after_warmup": base, "rss_kib_max": rss_max, "rss_kib_end": rss_end,
                "rss_growth_max_pct": growth(rss_max), "rss_growth_end_pct": growth(rss_end),
                "fds_min": fd_min, "fds_max": fd_max, "timeline": timeline,
                "examples": t.examples,
            })
        );
    } else {
        println!(
            "soak {elapsed:.0} s, {} clients: {served} served, {unexpected} unexpected errors, {:.1} exec/s, p50 {:.2} ms, p99 {:.2} ms",
            a.concurrency,
            served as f64 / elapsed,
            p50 / 1e3,
            p99 / 1e3
        );
        for k in &kinds {
            println!(
                "  {:<10} {:>7} served {:>4} unexpected   p50 {:>8.2} ms   p99 {:>8.2} ms",
                k["kind"].as_str().unwrap_or(""),
                k["served"],
                k["unexpected"],
                k["p50_ms"].as_f64().unwrap_or(0.0),
                k["p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "server RSS after warm-up {base} KiB, max {rss_max} KiB ({:+.2}%), end {rss_end} KiB ({:+.2}%); fds {fd_min}..{fd_max}",
            growth(rss_max),
            growth(rss_end)
        );
        let step = (samples.len() / 10).max(1);
        let line: Vec<String> = samples
            .iter()
            .step_by(step)
            .map(|(s, r, f)| format!("{s:.0}s:{}MiB/{f}fd", r / 1024))
            .collect();
        println!("  over time: {}", line.join(" "));
        for e in &t.examples {
            println!("  unexpected: {e}");
        }
    }
    drop(server);
    if unexpected > 0 {
        bail!("{unexpected} unexpected replies");
    }
    Ok(())
}
