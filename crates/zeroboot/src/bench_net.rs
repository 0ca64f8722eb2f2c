//! `zeroboot bench net`: HTTP GETs of 1 KiB and 10 MiB from a loopback
//! server this benchmark starts, made by Python inside a sandbox (through
//! the VMM's host sockets, under `--network policy` with that one port
//! allowed) and by the host's python3: p50 of each and their ratio. No
//! traffic leaves the loopback.

use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::bench::percentiles;
use crate::bench_api::{start_server_with, Conn};
use crate::test_http::TestHttp;

/// Serve GET /1k and /10m (else 404), one request per connection.
fn start_http() -> Result<u16> {
    let small = Arc::new(vec![b'k'; 1 << 10]);
    let big = Arc::new((0..10 << 20).map(|i| (i % 251) as u8).collect());
    let s = TestHttp::start(vec![("/1k", small), ("/10m", big)])?;
    Ok(s.port)
}

/// Python timing `n` GETs of each path (after two warm-ups), printing
/// {path: [ns...]} as JSON.
fn script(port: u16, small: usize, big: usize) -> String {
    format!(
        r#"
import http.client, json, time
out = {{}}
for path, size, n in [("/1k", 1 << 10, {small}), ("/10m", 10 << 20, {big})]:
    s = []
    for i in range(n + 2):
        t = time.perf_counter_ns()
        c = http.client.HTTPConnection("127.0.0.1", {port})
        c.request("GET", path)
        d = c.getresponse().read()
        c.close()
        if len(d) != size:
            raise SystemExit(f"{{path}}: got {{len(d)}} bytes")
        if i >= 2:
            s.append(time.perf_counter_ns() - t)
    out[path] = s
print(json.dumps(out))
"#
    )
}

fn samples(v: &serde_json::Value, path: &str) -> Result<Vec<u64>> {
    v[path]
        .as_array()
        .with_context(|| format!("no samples for {path}"))?
        .iter()
        .map(|x| x.as_u64().context("a sample"))
        .collect()
}

pub fn run(small: usize, big: usize, json_out: bool) -> Result<()> {
    let port = start_http()?;
    let allow = format!("127.0.0.1:{port}");
    let (_server, addr) = start_server_with(&[
        "--languages",
        "python",
        "--network",
        "policy",
        "--net-allow-host",
        &allow,
        "--net-resolver",
        "static",
        // The VMM's path, not the cap (docs/network.md).
        "--net-bandwidth",
        "off",
    ])?;
    let code = script(port, small, big);
    let mut c = Conn::new(&addr).context("connecting")?;
    let body =
        serde_json::json!({"code": code, "timeout_seconds": 300, "max_output_bytes": 1 << 20});
    let (st, reply) = c.post("/v1/exec", &body.to_string())?;
    if st != 200 {
        bail!("exec answered {st}: {reply}");
    }
    let r: serde_json::Value = serde_json::from_str(&reply)?;
    let guest: serde_json::Value = serde_json::from_str(r["stdout"].as_str().unwrap_or(""))
        .with_context(|| format!("the sandbox's run failed: {r}"))?;
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .context("running the host's python3")?;
    if !out.status.success() {
        bail!(
            "host python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let host: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut rows = Vec::new();
    println!("HTTP GET from a loopback server (new connection each), python3 http.client");
    for (path, name) in [("/1k", "1 KiB"), ("/10m", "10 MiB")] {
        let g = samples(&guest, path)?;
        let h = samples(&host, path)?;
        let n = g.len();
        let (gp50, _, gp99) = percentiles(g);
        let (hp50, _, hp99) = percentiles(h);
        let ratio = if hp50 > 0.0 { gp50 / hp50 } else { 0.0 };
        println!(
            "GET {name:<7} n={n:<4} sandbox p50 {:>9.3} ms p99 {:>9.3} ms   host p50 {:>9.3} ms p99 {:>9.3} ms   ratio {ratio:.2}x",
            gp50 / 1000.0,
            gp99 / 1000.0,
            hp50 / 1000.0,
            hp99 / 1000.0
        );
        rows.push(serde_json::json!({
            "name": format!("GET {name}"), "n": n,
            "sandbox_p50_ms": gp50 / 1000.0, "sandbox_p99_ms": gp99 / 1000.0,
            "host_p50_ms": hp50 / 1000.0, "host_p99_ms": hp99 / 1000.0, "ratio": ratio,
        }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
