//! `zeroboot bench sandboxes`: live sandboxes through the HTTP API of a
//! server it starts: create latency, create + first run, a run in a live
//! sandbox, kill latency, the limit answering 429, and the server's host
//! memory before, with and after N live idle sandboxes.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::percentiles;
use crate::bench_api::{proc_status, start_server_with, Conn};

pub(crate) fn sandbox_id(body: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(body).context("create answer")?;
    v.get("sandboxID")
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .with_context(|| format!("no sandboxID in {body}"))
}

/// Proportional set size (KiB): shared pages (the template's, mapped by
/// every fork) counted once, where RSS counts them in every mapping.
pub(crate) fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

pub fn run(template: &str, count: usize, runs: usize, json: bool) -> Result<()> {
    if count < 2 {
        bail!("--count must be at least 2");
    }
    let n = count.to_string();
    let (server, addr) = start_server_with(&[
        "--max-sandboxes",
        &n,
        "--max-sandboxes-per-key",
        &n,
        "--languages",
        if template == "node" { "node" } else { "python" },
    ])?;
    let pid = server.0.id();
    let mut c = Conn::new(&addr).context("connecting")?;
    let create_body = format!(r#"{{"templateID": "{template}", "timeout": 3600}}"#);
    let hello = if template == "node" {
        r#"{"code": "console.log(1+1)"}"#
    } else {
        r#"{"code": "print(1+1)"}"#
    };
    let create = |c: &mut Conn| -> Result<String> {
        let (st, body) = c.post("/sandboxes", &create_body)?;
        if st != 201 {
            bail!("create answered {st}: {body}");
        }
        sandbox_id(&body)
    };
    // Warm up: the first forks map the template.
    for _ in 0..5 {
        let id = create(&mut c)?;
        c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rss_before = proc_status(pid, "VmRSS:");
    let anon_before = proc_status(pid, "RssAnon:");
    let pss_before = pss_kib(pid);

    let mut ids = Vec::with_capacity(count);
    let mut create_ns = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        ids.push(create(&mut c)?);
        create_ns.push(ns(t));
    }
    let all_created = started.elapsed();
    let (st, body) = c.post("/sandboxes", &create_body)?;
    let over_limit = st;
    if st != 429 {
        eprintln!("warning: sandbox {} answered {st}: {body}", count + 1);
    }
    let rss_with = proc_status(pid, "VmRSS:");
    let anon_with = proc_status(pid, "RssAnon:");
    let pss_with = pss_kib(pid);

    // A run in a live sandbox (the first pays its fork's first touches).
    let mut run_ns = Vec::with_capacity(runs);
    let first = ids[0].clone();
    let path = format!("/v1/sandboxes/{first}/exec");
    let (st, body) = c.post(&path, hello)?;
    if st != 200 || !body.contains(r#""output":"2\n""#) {
        bail!("run answered {st}: {body}");
    }
    for _ in 0..runs {
        let t = Instant::now();
        let (st, _) = c.post(&path, hello)?;
        run_ns.push(ns(t));
        if st != 200 {
            bail!("run answered {st}");
        }
    }

    // Kill half, then create + first run as many.
    let half = count / 2;
    let mut kill_ns = Vec::with_capacity(count);
    for id in ids.drain(..half) {
        let t = Instant::now();
        let (st, body) = c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
        kill_ns.push(ns(t));
        if st != 204 {
            bail!("kill answered {st}: {body}");
        }
    }
    let mut create_run_ns = Vec::with_capacity(half);
    for _ in 0..half.min(runs) {
        let t = Instant::now();
        let id = create(&mut c)?;
        let (st, body) = c.post(&format!("/v1/sandboxes/{id}/exec"), hello)?;
        create_run_ns.push(ns(t));
        if st != 200 || !body.contains(r#""output":"2\n""#) {
            bail!("first run answered {st}: {body}");
        }
        ids.push(id);
    }
    for id in ids.drain(..) {
        let t = Instant::now();
        c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
        kill_ns.push(ns(t));
    }
    // Churn: one sandbox at a time created, run once, killed (its VM goes
    // back to the template's idle forks, so the next create reuses it).
    let mut churn_ns = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let id = create(&mut c)?;
        let (st, body) = c.post(&format!("/v1/sandboxes/{id}/exec"), hello)?;
        if st != 200 || !body.contains(r#""output":"2\n""#) {
            bail!("churn run answered {st}: {body}");
        }
        c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
        churn_ns.push(ns(t));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rss_after = proc_status(pid, "VmRSS:");
    let anon_after = proc_status(pid, "RssAnon:");
    let pss_after = pss_kib(pid);
    drop(server);

    let (c50, _, c99) = percentiles(create_ns);
    let (cr50, _, cr99) = percentiles(create_run_ns);
    let (r50, _, r99) = percentiles(run_ns);
    let (k50, _, k99) = percentiles(kill_ns);
    let (ch50, _, ch99) = percentiles(churn_ns);
    let per_kib = pss_with.saturating_sub(pss_before) as f64 / count as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "template": template,
                "sandboxes": count,
                "create_us": {"p50": c50, "p99": c99},
                "create_all_s": all_created.as_secs_f64(),
                "create_and_first_run_us": {"p50": cr50, "p99": cr99},
                "run_in_live_sandbox_us": {"p50": r50, "p99": r99},
                "kill_us": {"p50": k50, "p99": k99},
                "churn_create_run_kill_us": {"p50": ch50, "p99": ch99},
                "over_limit_status": over_limit,
                "server_rss_kib": {"before": rss_before, "with": rss_with, "after": rss_after},
                "server_rss_anon_kib": {"before": anon_before, "with": anon_with, "after": anon_after},
                "server_pss_kib": {"before": pss_before, "with": pss_with, "after": pss_after},
                "host_memory_per_idle_sandbox_kib": per_kib,
            })
        );
        return Ok(());
    }
    println!("live sandboxes through HTTP ({template}, {count} held at once, one client)");
    println!("  create (POST /sandboxes)          p50 {:>9.1} us   p99 {:>9.1} us   all {count}: {:.2} s", c50, c99, all_created.as_secs_f64());
    println!(
        "  create + first run (print 1+1)    p50 {:>9.1} us   p99 {:>9.1} us",
        cr50, cr99
    );
    println!(
        "  run in a live sandbox (1+1)       p50 {:>9.1} us   p99 {:>9.1} us",
        r50, r99
    );
    println!(
        "  kill (DELETE /sandboxes/id)       p50 {:>9.1} us   p99 {:>9.1} us",
        k50, k99
    );
    println!("  churn: create + run + kill        p50 {ch50:>9.1} us   p99 {ch99:>9.1} us");
    println!(
        "  sandbox {} over the limit          HTTP {over_limit}",
        count + 1
    );
    println!(
        "  server PSS: before {:.1} MiB, with {count} {:.1} MiB, after kill {:.1} MiB: {:.0} KiB per idle sandbox",
        pss_before as f64 / 1024.0,
        pss_with as f64 / 1024.0,
        pss_after as f64 / 1024.0,
        per_kib
    );
    println!(
        "  server RSS (shared template pages counted per mapping): before {:.1} MiB, with {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_with as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  of which anonymous: before {:.1} MiB, with {:.1} MiB, after {:.1} MiB",
        anon_before as f64 / 1024.0,
        anon_with as f64 / 1024.0,
        anon_after as f64 / 1024.0
    );
    Ok(())
}
