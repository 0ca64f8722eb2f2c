//! `zeroboot bench commands`: envd's services in a live sandbox through the
//! HTTP API of a server it starts, as E2B's SDKs call them: a command's
//! round trip (`commands.run("echo hi")`: Connect stream from request to
//! end event), file write + read (1 KiB and 10 MiB through `/files`), and
//! the latency from a guest `write` to the client receiving it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use crate::bench::percentiles;
use crate::bench_api::{start_server_with, Conn};

/// A keep-alive connection that sends the E2B routing headers and reads
/// chunked answers as they arrive.
pub(crate) struct Envd {
    addr: String,
    id: String,
    port: u16,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Envd {
    fn new(addr: &str, id: &str) -> Result<Envd> {
        Envd::with_port(addr, id, 49983)
    }

    /// A connection to another in-sandbox port (49999: the code
    /// interpreter).
    pub(crate) fn with_port(addr: &str, id: &str, port: u16) -> Result<Envd> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Envd {
            addr: addr.into(),
            id: id.into(),
            port,
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Send a request; returns the status and whether the body is chunked
    /// (else its length).
    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> Result<(u16, Option<usize>)> {
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nE2b-Sandbox-Id: {}\r\nE2b-Sandbox-Port: {}\r\nConnect-Protocol-Version: 1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.id,
            self.port,
            body.len()
        )?;
        self.w.write_all(body)?;
        self.w.flush()?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = Some(0);
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse().unwrap_or(0));
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    len = None;
                }
            }
        }
        Ok((status, len))
    }

    /// The next chunk of a chunked body (None at its end).
    pub(crate) fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
        let mut b = vec![0u8; n + 2];
        self.r.read_exact(&mut b)?;
        b.truncate(n);
        Ok((n > 0).then_some(b))
    }

    pub(crate) fn body(&mut self, len: Option<usize>) -> Result<Vec<u8>> {
        match len {
            Some(n) => {
                let mut b = vec![0u8; n];
                self.r.read_exact(&mut b)?;
                Ok(b)
            }
            None => {
                let mut all = Vec::new();
                while let Some(c) = self.chunk()? {
                    all.extend(c);
                }
                Ok(all)
            }
        }
    }

    /// Start `cmd` with bash; calls `on_event` with each process event as
    /// it arrives; returns at the end event.
    fn command(&mut self, cmd: &str, mut on_event: impl FnMut(&serde_json::Value)) -> Result<()> {
        let msg = serde_json::json!({
            "process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]},
            "stdin": false,
        })
        .to_string();
        let mut body = vec![0u8];
        body.extend((msg.len() as u32).to_be_bytes());
        body.extend(msg.as_bytes());
        let (st, len) = self.send(
            "POST",
            "/process.Process/Start",
            "application/connect+json",
            &body,
        )?;
        if st != 200 {
            let b = self.body(len)?;
            bail!("Start answered {st}: {}", String::from_utf8_lossy(&b));
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut ended = false;
        loop {
            let Some(c) = (if len.is_none() { self.chunk()? } else { None }) else {
                break;
            };
            buf.extend(c);
            while buf.len() >= 5 {
                let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + n {
                    break;
                }
                let v: serde_json::Value = serde_json::from_slice(&buf[5..5 + n])?;
                if buf[0] & 2 != 0 {
                    if v.get("error").is_some() {
                        bail!("the command's stream failed: {v}");
                    }
                } else if let Some(ev) = v.get("event") {
                    ended |= ev.get("end").is_some();
                    on_event(ev);
                }
                buf.drain(..5 + n);
            }
        }
        if !ended {
            bail!("the command's stream ended without an end event");
        }
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let (st, len) = self.send(
            "POST",
            &format!("/files?path={path}"),
            "application/octet-stream",
            data,
        )?;
        let b = self.body(len)?;
        if st != 200 {
            bail!("upload answered {st}: {}", String::from_utf8_lossy(&b));
        }
        Ok(())
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        let (st, len) = self.send("GET", &format!("/files?path={path}"), "text/plain", b"")?;
        let b = self.body(len)?;
        if st != 200 {
            bail!("download answered {st}: {}", String::from_utf8_lossy(&b));
        }
        Ok(b)
    }
}

fn us(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

pub(crate) fn line(name: &str, samples: Vec<u64>, json: &mut Vec<serde_json::Value>) {
    let n = samples.len();
    let (p50, p90, p99) = percentiles(samples);
    println!(
        "{name:<34} n={n:<5} p50 {:>9.3} ms   p90 {:>9.3} ms   p99 {:>9.3} ms",
        p50 / 1000.0,
        p90 / 1000.0,
        p99 / 1000.0
    );
    json.push(serde_json::json!({"name": name, "n": n, "p50_ms": p50 / 1000.0, "p90_ms": p90 / 1000.0, "p99_ms": p99 / 1000.0}));
}

pub fn run(runs: usize, json_out: bool) -> Result<()> {
    let (_server, addr) = start_server_with(&["--languages", "python"])?;
    let mut c = Conn::new(&addr).context("connecting")?;
    let (st, body) = c.post("/sandboxes", r#"{"templateID": "base", "timeout": 3600}"#)?;
    if st != 201 {
        bail!("create answered {st}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let id = v["sandboxID"].as_str().context("sandboxID")?.to_string();
    let mut e = Envd::new(&addr, &id)?;
    let mut out = Vec::new();

    // Warm up: bash's pages, the first spawn.
    for _ in 0..5 {
        e.command("echo hi", |_| {})?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let mut got = String::new();
        e.command("echo hi", |ev| {
            if let Some(s) = ev["data"]["stdout"].as_str() {
                if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(s) {
                    got.push_str(&String::from_utf8_lossy(&b));
                }
            }
        })?;
        samples.push(us(t));
        if got != "hi\n" {
            bail!("echo hi printed {got:?}");
        }
    }
    line("commands.run(\"echo hi\")", samples, &mut out);

    for (name, size, n) in [
        ("files write+read 1 KiB", 1usize << 10, runs),
        ("files write+read 10 MiB", 10 << 20, (runs / 20).max(3)),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 2 {
            let t = Instant::now();
            e.write_file("/home/user/bench.bin", &data)?;
            let back = e.read_file("/home/user/bench.bin")?;
            if i >= 2 {
                samples.push(us(t));
            }
            if back != data {
                bail!(
                    "read back {} bytes that differ from the {} written",
                    back.len(),
                    size
                );
            }
        }
        line(name, samples, &mut out);
    }

    // Guest write -> client: the guest stamps each line with the wall
    // clock (the host's), the client compares on arrival.
    let count = runs.clamp(10, 200);
    let script = format!(
        "python3 -c 'import time\nfor i in range({count}):\n print(time.time_ns(), flush=True)\n time.sleep(0.01)'"
    );
    let mut lat = Vec::with_capacity(count);
    e.command(&script, |ev| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if let Some(s) = ev["data"]["stdout"].as_str() {
            if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(s) {
                for l in String::from_utf8_lossy(&b).lines() {
                    if let Ok(t) = l.trim().parse::<u64>() {
                        lat.push(now.saturating_sub(t));
                    }
                }
            }
        }
    })?;
    line("stream: guest write -> client", lat, &mut out);
    let _ = c.request("DELETE", &format!("/sandboxes/{id}"), "");
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
