//! `zeroboot bench api`: executions per second through HTTP with N
//! concurrent clients, for each language, then a soak at the best N
//! (Python) watching the server's memory and descriptors. For Node it also
//! measures the engine's own reset+exec in this process and checks that
//! the server path stays within a ratio of it (issue 19: timers armed in
//! the template once made every Node request through the server 10x
//! slower, and only Python was measured).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use zeroboot_engine::{ExecRequest, Language, Template, TemplateOptions};

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
        // One write, as HTTP clients send a small request: `write!` on the
        // socket itself would send each formatted piece as its own segment
        // (TCP_NODELAY), waking the server several times per request.
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.w.write_all(req.as_bytes())?;
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

/// A language's hello request through the API (both print 2).
struct Hello {
    lang: Language,
    body: &'static str,
}

const EXPECT: &str = "\"output\":\"2\\n\"";

fn hello(lang: Language) -> Hello {
    let body = match lang {
        Language::Node => r#"{"code": "console.log(1+1)", "language": "node"}"#,
        _ => r#"{"code": "print(1+1)", "language": "python"}"#,
    };
    Hello { lang, body }
}

struct Phase {
    lang: &'static str,
    clients: usize,
    done: u64,
    errors: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` loops posting `h`'s hello for `secs`.
fn load(
    addr: &str,
    h: &Hello,
    clients: usize,
    secs: f64,
    mut sample: impl FnMut(),
) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let addr = addr.to_string();
        let stop = stop.clone();
        let errors = errors.clone();
        let body = h.body;
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
                match c.post("/v1/exec", body) {
                    Ok((200, b)) if b.contains(EXPECT) => lat.push(t.elapsed().as_nanos() as u64),
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
        lang: h.lang.name(),
        clients,
        done,
        errors: errors.load(Ordering::Relaxed),
        rate: done as f64 / elapsed,
        p50_ms: p50 / 1e3,
        p99_ms: p99 / 1e3,
    })
}

/// What `bench api` runs.
pub struct ApiArgs<'a> {
    pub clients: &'a [usize],
    pub seconds: f64,
    pub soak: f64,
    pub languages: &'a [String],
    /// Fail when Node through the server (1 client, p50) is slower than
    /// this many times the engine's reset+exec (0: report only).
    pub max_node_ratio: f64,
    pub json: bool,
}

/// The engine's own reset+exec of `console.log(1+1)` in this process, p50
/// in ms: what `bench fork --template node` reports, the reference the
/// server path is held to.
fn engine_node_p50_ms(execs: usize) -> Result<f64> {
    let lang = Language::Node;
    let cache = crate::cache_dir();
    let root = crate::image::ensure_image(&lang.recipe(), &cache)?;
    let (t, _) = Template::open(lang, &root, &cache, &TemplateOptions::default())
        .context("opening the node template")?;
    let req = ExecRequest::new("console.log(1+1)");
    let mut ns = Vec::with_capacity(execs);
    // The first executions fork; the rest run in reset forks.
    for i in 0..execs + 5 {
        let r = t.exec(&req);
        if r.stdout != "2\n" {
            bail!("the engine's node gave {:?} / {:?}", r.stdout, r.stderr);
        }
        if i >= 5 {
            ns.push(r.total_time.as_nanos() as u64);
        }
    }
    // percentiles() gives µs.
    Ok(percentiles(ns).0 / 1e3)
}

pub fn run(a: ApiArgs) -> Result<()> {
    let mut langs = Vec::new();
    for l in a.languages {
        match Language::parse(l) {
            Some(lang @ (Language::Python | Language::Node)) => langs.push(lang),
            _ => bail!("--languages: {l:?} is not python or node"),
        }
    }
    if langs.is_empty() {
        bail!("--languages: none given");
    }
    let node = langs.contains(&Language::Node);
    // Measured before the server starts, so that it has the CPUs alone.
    let engine_node = if node {
        Some(engine_node_p50_ms(100)?)
    } else {
        None
    };
    let (server, addr) = start_server()?;
    let pid = server.0.id();
    let mut phases = Vec::new();
    for &lang in &langs {
        let h = hello(lang);
        // Warm up (template loaded, first forks).
        load(&addr, &h, 1, 1.0, || {})?;
        for &n in a.clients {
            let p = load(&addr, &h, n, a.seconds, || {})?;
            if !a.json {
                println!(
                    "{:<6} clients {:>3}: {:>7.1} exec/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} done, {} errors)",
                    p.lang, p.clients, p.rate, p.p50_ms, p.p99_ms, p.done, p.errors
                );
            }
            phases.push(p);
        }
    }
    // Node through the server against the engine: one client's p50.
    let node_ratio = engine_node.and_then(|e| {
        phases
            .iter()
            .filter(|p| p.lang == "node" && p.done > 0)
            .min_by_key(|p| p.clients)
            .map(|p| (p.clients, p.p50_ms, e, p.p50_ms / e))
    });
    if let (Some((c, s, e, r)), false) = (node_ratio, a.json) {
        println!(
            "node: server p50 {s:.2} ms ({c} client) / engine reset+exec p50 {e:.2} ms = {r:.2}x (limit {})",
            if a.max_node_ratio > 0.0 {
                format!("{:.1}x", a.max_node_ratio)
            } else {
                "off".into()
            }
        );
    }
    let (soak, json) = (a.soak, a.json);
    let first = langs[0];
    let best = phases
        .iter()
        .filter(|p| p.lang == first.name())
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map(|p| p.clients)
        .unwrap_or(1);
    let mut rss = Vec::new();
    let mut fds = Vec::new();
    let soak_phase = if soak > 0.0 {
        let mut last = Instant::now();
        let p = load(&addr, &hello(first), best, soak, || {
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
                    "{{\"language\":\"{}\",\"clients\":{},\"exec_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"errors\":{}}}",
                    p.lang, p.clients, p.rate, p.p50_ms, p.p99_ms, p.errors
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
        let ratio_json = node_ratio
            .map(|(c, s, e, r)| {
                format!("{{\"clients\":{c},\"server_p50_ms\":{s:.3},\"engine_reset_exec_p50_ms\":{e:.3},\"ratio\":{r:.2}}}")
            })
            .unwrap_or_else(|| "null".into());
        println!(
            "{{\"phases\":[{}],\"node_vs_engine\":{ratio_json},\"soak\":{soak_json}}}",
            ph.join(",")
        );
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
    if let Some((_, s, e, r)) = node_ratio.filter(|_| a.max_node_ratio > 0.0) {
        if r > a.max_node_ratio {
            bail!(
                "node through the server (p50 {s:.2} ms) is {r:.2}x the engine's reset+exec (p50 {e:.2} ms), over the {:.1}x limit",
                a.max_node_ratio
            );
        }
    }
    Ok(())
}
