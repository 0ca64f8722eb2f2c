//! `zeroboot bench fork-live`: fork of a live sandbox through the HTTP API
//! of a server it starts. The source holds `--state-mb` of numpy data; the
//! bench measures one fork call of one copy (the source's freeze included),
//! the same after a run in the source each time (the freeze then copies
//! what the run wrote), a call of `--count` copies, a first run in a copy,
//! and the server's host memory with the copies idle; then, on disk, a
//! snapshot of the source, a sandbox made from it (with its first run),
//! and a pause to disk with its resume.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::percentiles;
use crate::bench_api::{start_server_with, Conn};
use crate::bench_sandboxes::{pss_kib, sandbox_id};

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

/// The sandbox ids of a fork answer (every copy must have been made).
fn fork_ids(body: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).context("fork answer")?;
    let items = v.as_array().context("fork answer is not a list")?;
    items
        .iter()
        .map(|i| {
            i.get("sandbox")
                .map(|s| s.to_string())
                .with_context(|| format!("a copy failed: {i}"))
                .and_then(|s| sandbox_id(&s))
        })
        .collect()
}

pub fn run(count: usize, runs: usize, state_mb: usize, vm_pool: usize, json: bool) -> Result<()> {
    if !(1..=100).contains(&count) {
        bail!("--count must be from 1 to 100");
    }
    let max = (count + 2).to_string();
    // Its own state directory (checkpoints are written there).
    let state = std::env::temp_dir().join(format!("zeroboot-bench-state-{}", std::process::id()));
    let state_arg = state.display().to_string();
    let pool_arg = vm_pool.to_string();
    let (server, addr) = start_server_with(&[
        "--max-sandboxes",
        &max,
        "--max-sandboxes-per-key",
        &max,
        "--languages",
        "python",
        "--state-dir",
        &state_arg,
        "--vm-pool",
        &pool_arg,
    ])?;
    let pid = server.0.id();
    let mut c = Conn::new(&addr).context("connecting")?;
    let (st, body) = c.post("/sandboxes", r#"{"templateID": "python", "timeout": 3600}"#)?;
    if st != 201 {
        bail!("create answered {st}: {body}");
    }
    let src = sandbox_id(&body)?;
    let floats = state_mb * (1 << 20) / 8;
    let setup = format!(
        r#"{{"code": "import numpy as np\na = np.random.rand({floats})\ns = float(a.sum())\nprint(len(a))", "timeout_seconds": 120}}"#
    );
    let (st, body) = c.post(&format!("/v1/sandboxes/{src}/exec"), &setup)?;
    if st != 200 || !body.contains(&format!(r#""output":"{floats}\n""#)) {
        bail!("setting up the state answered {st}: {body}");
    }
    let fork_path = format!("/sandboxes/{src}/fork");
    let fork = |c: &mut Conn, n: usize| -> Result<Vec<String>> {
        let (st, body) = c.post(&fork_path, &format!(r#"{{"count": {n}, "timeout": 3600}}"#))?;
        if st != 201 {
            bail!("fork answered {st}: {body}");
        }
        fork_ids(&body)
    };
    let kill = |c: &mut Conn, id: &str| c.request("DELETE", &format!("/sandboxes/{id}"), "");

    // One copy per call: the freeze of the source each time.
    let mut one_ns = Vec::with_capacity(runs);
    let mut first_run_ns = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let ids = fork(&mut c, 1)?;
        one_ns.push(ns(t));
        let t = Instant::now();
        let (st, body) = c.post(
            &format!("/v1/sandboxes/{}/exec", ids[0]),
            r#"{"code": "print(len(a))"}"#,
        )?;
        first_run_ns.push(ns(t));
        if st != 200 || !body.contains(&format!(r#""output":"{floats}\n""#)) {
            bail!("a run in a copy answered {st}: {body}");
        }
        for id in &ids {
            kill(&mut c, id)?;
        }
    }
    // One copy per call after a run in the source each time: its freeze
    // reads the page map and copies what the run wrote into a new layer.
    let mut changed_ns = Vec::with_capacity(runs);
    for i in 0..runs {
        let (st, body) = c.post(
            &format!("/v1/sandboxes/{src}/exec"),
            &format!(r#"{{"code": "a[{i}] = {i}.5"}}"#),
        )?;
        if st != 200 {
            bail!("a run in the source answered {st}: {body}");
        }
        let t = Instant::now();
        let ids = fork(&mut c, 1)?;
        changed_ns.push(ns(t));
        for id in &ids {
            kill(&mut c, id)?;
        }
    }
    let t = Instant::now();
    let ids = fork(&mut c, count)?;
    let all = t.elapsed();
    for id in &ids {
        kill(&mut c, id)?;
    }
    // Host memory of idle copies: a second call of as many, the source
    // unchanged (the first may have folded its layers, which changes the
    // source's own memory too).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pss_before = pss_kib(pid);
    let ids = fork(&mut c, count)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pss_with = pss_kib(pid);
    for id in &ids {
        kill(&mut c, id)?;
    }

    // On disk: each writes the source's pages that differ from the
    // template (about --state-mb), so fewer rounds.
    let disk_runs = runs.clamp(1, 5);
    let (mut snap_ns, mut from_snap_ns, mut pause_ns, mut resume_ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..disk_runs {
        let t = Instant::now();
        let (st, body) = c.post(&format!("/sandboxes/{src}/snapshots"), "{}")?;
        snap_ns.push(ns(t));
        if st != 201 {
            bail!("snapshot answered {st}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body).context("snapshot answer")?;
        let sid = v["snapshotID"]
            .as_str()
            .context("no snapshotID")?
            .to_string();
        let t = Instant::now();
        let (st, body) = c.post(
            "/sandboxes",
            &format!(r#"{{"templateID": "{sid}", "timeout": 600}}"#),
        )?;
        if st != 201 {
            bail!("create from the snapshot answered {st}: {body}");
        }
        let id = sandbox_id(&body)?;
        let (st, body) = c.post(
            &format!("/v1/sandboxes/{id}/exec"),
            r#"{"code": "print(len(a))"}"#,
        )?;
        from_snap_ns.push(ns(t));
        if st != 200 || !body.contains(&format!(r#""output":"{floats}\n""#)) {
            bail!("a run in a sandbox from the snapshot answered {st}: {body}");
        }
        kill(&mut c, &id)?;
        c.request("DELETE", &format!("/templates/{sid}"), "")?;
        let t = Instant::now();
        let (st, body) = c.post(&format!("/sandboxes/{src}/pause"), "{}")?;
        pause_ns.push(ns(t));
        if st != 204 {
            bail!("pause answered {st}: {body}");
        }
        let t = Instant::now();
        let (st, body) = c.post(&format!("/sandboxes/{src}/connect"), r#"{"timeout": 3600}"#)?;
        let (st2, body2) = c.post(
            &format!("/v1/sandboxes/{src}/exec"),
            r#"{"code": "print(len(a))"}"#,
        )?;
        resume_ns.push(ns(t));
        if st != 201 || st2 != 200 || !body2.contains(&format!(r#""output":"{floats}\n""#)) {
            bail!("resume answered {st}: {body}; then a run {st2}: {body2}");
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&state);
    let (s50, _, s99) = percentiles(snap_ns);
    let (f50, _, f99) = percentiles(from_snap_ns);
    let (p50, _, p99) = percentiles(pause_ns);
    let (u50, _, u99) = percentiles(resume_ns);

    let (o50, _, o99) = percentiles(one_ns);
    let (r50, _, r99) = percentiles(first_run_ns);
    let (c50, _, c99) = percentiles(changed_ns);
    let per_copy_kib = pss_with.saturating_sub(pss_before) as f64 / count as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "state_mb": state_mb,
                "vm_pool": vm_pool,
                "fork_one_copy_us": {"p50": o50, "p99": o99},
                "first_run_in_copy_us": {"p50": r50, "p99": r99},
                "fork_one_copy_after_a_run_us": {"p50": c50, "p99": c99},
                "fork_count": count,
                "fork_count_total_ms": all.as_secs_f64() * 1e3,
                "fork_count_per_copy_us": all.as_secs_f64() * 1e6 / count as f64,
                "host_memory_per_idle_copy_kib": per_copy_kib,
                "snapshot_us": {"p50": s50, "p99": s99},
                "create_from_snapshot_and_first_run_us": {"p50": f50, "p99": f99},
                "pause_to_disk_us": {"p50": p50, "p99": p99},
                "resume_and_first_run_us": {"p50": u50, "p99": u99},
            })
        );
        return Ok(());
    }
    println!("fork of a live sandbox holding {state_mb} MiB of numpy data (HTTP, one client, --vm-pool {vm_pool})");
    println!("  fork, 1 copy (freeze + copy)      p50 {o50:>9.1} us   p99 {o99:>9.1} us");
    println!("  first run in the copy (len(a))    p50 {r50:>9.1} us   p99 {r99:>9.1} us");
    println!("  fork, 1 copy after a run in it    p50 {c50:>9.1} us   p99 {c99:>9.1} us");
    println!(
        "  fork, {count} copies in one call      {:.1} ms: {:.1} us per copy",
        all.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e6 / count as f64
    );
    println!(
        "  server PSS: {:.1} MiB before, {:.1} MiB with {count} idle copies: {per_copy_kib:.0} KiB per copy",
        pss_before as f64 / 1024.0,
        pss_with as f64 / 1024.0,
    );
    println!("  on disk ({disk_runs} rounds):");
    println!("  snapshot of the source            p50 {s50:>9.1} us   p99 {s99:>9.1} us");
    println!("  create from it + first run        p50 {f50:>9.1} us   p99 {f99:>9.1} us");
    println!("  pause to disk                     p50 {p50:>9.1} us   p99 {p99:>9.1} us");
    println!("  resume (connect) + first run      p50 {u50:>9.1} us   p99 {u99:>9.1} us");
    Ok(())
}
