//! `zeroboot bench code`: the code interpreter in a live sandbox of the
//! `code-interpreter-v1` template, through the HTTP API of a server it
//! starts, as E2B's `e2b-code-interpreter` SDK calls it (`POST /execute`
//! with `E2b-Sandbox-Port: 49999`, read to `end_of_execution`):
//! `run_code("1+1")`'s round trip, a matplotlib plot to PNG, and create
//! sandbox + first `run_code`.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench_api::{start_server_with, Conn};
use crate::bench_commands::{line, Envd};

/// Run `code` in the sandbox's default context; the events, in order.
fn run_code(e: &mut Envd, code: &str) -> Result<Vec<serde_json::Value>> {
    let body = serde_json::json!({ "code": code }).to_string();
    let (st, len) = e.send("POST", "/execute", "application/json", body.as_bytes())?;
    let raw = e.body(len)?;
    if st != 200 {
        bail!("/execute answered {st}: {}", String::from_utf8_lossy(&raw));
    }
    let mut events = Vec::new();
    for l in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        events.push(serde_json::from_slice::<serde_json::Value>(l).context("an event line")?);
    }
    if events.last().and_then(|v| v["type"].as_str()) != Some("end_of_execution") {
        bail!("the execution did not end with end_of_execution: {events:?}");
    }
    if let Some(err) = events.iter().find(|v| v["type"] == "error") {
        bail!("the cell failed: {err}");
    }
    Ok(events)
}

fn main_text(events: &[serde_json::Value]) -> Option<&str> {
    events
        .iter()
        .find(|v| v["type"] == "result" && v["is_main_result"] == true)
        .and_then(|v| v["text"].as_str())
}

fn create(c: &mut Conn) -> Result<String> {
    let (st, body) = c.post(
        "/sandboxes",
        r#"{"templateID": "code-interpreter-v1", "timeout": 3600}"#,
    )?;
    if st != 201 {
        bail!("create answered {st}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["sandboxID"].as_str().context("sandboxID")?.to_string())
}

const PLOT: &str = "import matplotlib.pyplot as plt, numpy as np\nxs = np.linspace(0, 6.3, 100)\nplt.plot(xs, np.sin(xs))\nplt.show()";

pub fn run(runs: usize, json_out: bool) -> Result<()> {
    let (_server, addr) = start_server_with(&["--languages", "code-interpreter"])?;
    let mut c = Conn::new(&addr).context("connecting")?;
    let id = create(&mut c)?;
    let mut e = Envd::with_port(&addr, &id, 49999)?;
    let mut out = Vec::new();

    for _ in 0..5 {
        run_code(&mut e, "1+1")?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let ev = run_code(&mut e, "1+1")?;
        samples.push(t.elapsed().as_nanos() as u64);
        if main_text(&ev) != Some("2") {
            bail!("1+1 gave {ev:?}");
        }
    }
    line("run_code(\"1+1\")", samples, &mut out);

    let plots = (runs / 10).max(5);
    run_code(&mut e, PLOT)?;
    let mut samples = Vec::with_capacity(plots);
    for _ in 0..plots {
        let t = Instant::now();
        let ev = run_code(&mut e, PLOT)?;
        samples.push(t.elapsed().as_nanos() as u64);
        if !ev.iter().any(|v| v["png"].is_string()) {
            bail!("the plot gave no PNG: {ev:?}");
        }
    }
    line("run_code(matplotlib plot -> PNG)", samples, &mut out);
    let _ = c.request("DELETE", &format!("/sandboxes/{id}"), "");

    let firsts = (runs / 4).max(5);
    let mut samples = Vec::with_capacity(firsts);
    for _ in 0..firsts {
        let t = Instant::now();
        let id = create(&mut c)?;
        let mut e = Envd::with_port(&addr, &id, 49999)?;
        let ev = run_code(&mut e, "1+1")?;
        samples.push(t.elapsed().as_nanos() as u64);
        if main_text(&ev) != Some("2") {
            bail!("1+1 gave {ev:?}");
        }
        c.request("DELETE", &format!("/sandboxes/{id}"), "")?;
    }
    line("create + first run_code(\"1+1\")", samples, &mut out);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
