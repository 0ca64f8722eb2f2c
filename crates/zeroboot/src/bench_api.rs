//! `zeroboot bench api`: executions per second through HTTP with N
//! concurrent clients, then a soak at the best N watching the server's
//! memory and descriptors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::percentiles;

/// A keep-alive HTTP/1.1 connection, enough for our own JSON API.
pub(crate) struct Conn {
    addr: String,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    pub(crate) fn new(addr: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            addr: addr.into(),
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    pub(crate) fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.request("POST", path, body)
    }

    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        self.w.flush()?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

pub(crate) fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub(crate) struct ServerProc(pub(crate) Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_server() -> Result<(ServerProc, String)> {
    start_server_with(&[])
}

/// A server with `extra` arguments to `serve`.
pub(crate) fn start_server_with(extra: &[&str]) -> Result<(ServerProc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--rate-limit",
            "0",
            "--queue",
            "4096",
        ])
        .args(extra)
        .env_remove("ZEROBOOT_API_KEYS_FILE")
        .env("ZEROBOOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting zeroboot serve")?;
    let server = ServerProc(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if TcpStream::connect(&addr).is_ok() {
            return Ok((server, addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the server did not start")
}

const BODY: &str = r#"{"code": "print(1+1)"}"#;

struct Phase {
    clients: usize,
    done: u64,
    errors: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` loops posting print(1+1) for `secs`.
fn load(addr: &str, clients: usize, secs: f64, mut sample: impl FnMut()) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let addr = addr.to_string();
        let stop = stop.clone();
        let errors = errors.clone();
        handles.push(std::thread::spawn(move || -> Vec<u64> {
            let mut lat = Vec::new();
            let mut conn = Conn::new(&addr).ok();
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    conn = Conn::new(&addr).ok();
                    continue;
                };
                let t = Instant::now();
                match c.post("/v1/exec", BODY) {
                    Ok((200, b)) if b.contains("\"output\":\"2\\n\"") => {
                        lat.push(t.elapsed().as_nanos() as u64)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = Conn::new(&addr).ok();
                    }
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(200));
        sample();
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap_or_default());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = all.len() as u64;
    let (p50, _, p99) = percentiles(all);
    Ok(Phase {
        clients,
        done,
        errors: errors.load(Ordering::Relaxed),
        rate: done as f64 / elapsed,
        p50_ms: p50 / 1e3,
        p99_ms: p99 / 1e3,
    })
}

pub fn run(clients: &[usize], seconds: f64, soak: f64, json: bool) -> Result<()> {
    let (server, addr) = start_server()?;
    let pid = server.0.id();
    // Warm up (template loaded, first forks).
    load(&addr, 1, 1.0, || {})?;
    let mut phases = Vec::new();
    for &n in clients {
        let p = load(&addr, n, seconds, || {})?;
        if !json {
            println!(
                "clients {:>3}: {:>7.1} exec/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} done, {} errors)",
                p.clients, p.rate, p.p50_ms, p.p99_ms, p.done, p.errors
            );
        }
        phases.push(p);
    }
    let best = phases
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map(|p| p.clients)
        .unwrap_or(1);
    let mut rss = Vec::new();
    let mut fds = Vec::new();
    let soak_phase = if soak > 0.0 {
        let mut last = Instant::now();
        let p = load(&addr, best, soak, || {
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                rss.push(proc_status(pid, "VmRSS:"));
                fds.push(fd_count(pid));
            }
        })?;
        Some(p)
    } else {
        None
    };
    // RSS after warm-up: skip the first fifth of the soak.
    let warm = rss.len() / 5;
    let after_warmup = rss.get(warm).copied().unwrap_or(0);
    let end = rss.last().copied().unwrap_or(0);
    let rss_max = rss.iter().skip(warm).copied().max().unwrap_or(0);
    let drift = if after_warmup > 0 {
        (rss_max as f64 - after_warmup as f64) / after_warmup as f64 * 100.0
    } else {
        0.0
    };
    let (fd_min, fd_max) = (
        fds.iter().copied().min().unwrap_or(0),
        fds.iter().copied().max().unwrap_or(0),
    );
    if json {
        let ph: Vec<String> = phases
            .iter()
            .map(|p| {
                format!(
                    "{{\"clients\":{},\"exec_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"errors\":{}}}",
                    p.clients, p.rate, p.p50_ms, p.p99_ms, p.errors
                )
            })
            .collect();
        let soak_json = soak_phase
            .as_ref()
            .map(|p| {
                format!(
                    "{{\"clients\":{},\"seconds\":{soak},\"done\":{},\"errors\":{},\"exec_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"rss_kib_after_warmup\":{after_warmup},\"rss_kib_max\":{rss_max},\"rss_kib_end\":{end},\"rss_growth_pct\":{drift:.2},\"fds_min\":{fd_min},\"fds_max\":{fd_max}}}",
                    p.clients, p.done, p.errors, p.rate, p.p50_ms, p.p99_ms
                )
            })
            .unwrap_or_else(|| "null".into());
        println!("{{\"phases\":[{}],\"soak\":{soak_json}}}", ph.join(","));
    } else if let Some(p) = &soak_phase {
        println!(
            "soak {soak:.0} s at {} clients: {} executions, {} errors, {:.1} exec/s, p50 {:.2} ms, p99 {:.2} ms",
            p.clients, p.done, p.errors, p.rate, p.p50_ms, p.p99_ms
        );
        println!(
            "server RSS after warm-up {after_warmup} KiB, max {rss_max} KiB ({drift:+.2}%), end {end} KiB; fds {fd_min}..{fd_max}"
        );
    }
    let errors: u64 =
        phases.iter().map(|p| p.errors).sum::<u64>() + soak_phase.map(|p| p.errors).unwrap_or(0);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
