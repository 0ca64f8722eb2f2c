//! One execution: fork the template, run the code, collect the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroboot_kernel::net::policy::{Egress, NetStats, Setup as NetSetup};
use zeroboot_kernel::{Exit, ForkOptions, Outcome, Sandbox, Sink, Source, Tee};

use crate::template::Template;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub code: String,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Memory limit (bytes); None: the template's.
    pub memory: Option<u64>,
    /// Bytes the writable file system may hold; None: the template's.
    pub disk: Option<u64>,
    /// Most open descriptors per process; None: the template's.
    pub fds: Option<u64>,
    /// Most bytes of stdout and of stderr kept (each).
    pub output_cap: usize,
    /// Shown the output as the guest writes it (streaming executions).
    #[serde(skip)]
    pub on_output: Option<OutputTee>,
    /// The egress policy it runs under (None: no network).
    #[serde(skip)]
    pub network: Option<Arc<NetSetup>>,
    /// Run `code` as a notebook cell in this language ("python",
    /// "javascript", "bash") instead of as a script: only the
    /// code-interpreter template's agent serves it, and the cell's events
    /// (rich results, its error, printed text) come back in
    /// [`ExecResult::events`].
    #[serde(default)]
    pub cell: Option<String>,
}

/// Which output stream a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A callback shown each chunk of output an execution keeps, as it is
/// written (within the output cap).
#[derive(Clone)]
pub struct OutputTee(pub Arc<OutputFn>);

/// What an [`OutputTee`] calls.
pub type OutputFn = dyn Fn(OutputStream, &[u8]) + Send + Sync;

impl std::fmt::Debug for OutputTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputTee")
    }
}

impl OutputTee {
    /// The kernel's sink for `stream`, with a cap of `cap` bytes.
    fn sink(&self, stream: OutputStream, cap: usize) -> Sink {
        let f = self.0.clone();
        Sink::capture_tee(cap, Tee(Arc::new(move |b: &[u8]| f(stream, b))))
    }
}

/// The capture sinks (stdout, stderr) of a request.
pub(crate) fn sinks(cap: usize, tee: Option<&OutputTee>) -> (Sink, Sink) {
    match tee {
        Some(t) => (
            t.sink(OutputStream::Stdout, cap),
            t.sink(OutputStream::Stderr, cap),
        ),
        None => (Sink::capture(cap), Sink::capture(cap)),
    }
}

impl ExecRequest {
    pub fn new(code: impl Into<String>) -> ExecRequest {
        ExecRequest {
            code: code.into(),
            timeout: Duration::from_secs(30),
            memory: None,
            disk: None,
            fds: None,
            output_cap: 1 << 20,
            on_output: None,
            network: None,
            cell: None,
        }
    }
}

/// How an execution ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub timed_out: bool,
    /// Killed for using more memory than allowed.
    pub out_of_memory: bool,
    /// A write failed for the disk limit (ENOSPC).
    pub disk_full: bool,
    /// A descriptor was refused for the fd limit (EMFILE).
    pub fds_exhausted: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Set when zeroboot itself failed (not the code).
    pub error: Option<String>,
    /// The execution ran in a reset fork rather than a new one.
    pub reused: bool,
    pub fork_time: Duration,
    pub exec_time: Duration,
    pub total_time: Duration,
    /// What the execution cost the VMM.
    pub stats: ExecStats,
    /// Its network use (connections, bytes, denied attempts).
    pub network: NetStats,
    /// The agent's reply frame, for requests whose reply carries more than
    /// the exit code (a live sandbox's `begin_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<serde_json::Value>,
    /// The event frames the agent wrote before its reply (a cell's
    /// results, error and printed text; see [`ExecRequest::cell`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<serde_json::Value>,
}

/// VMM work of one execution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecStats {
    /// System calls by name, most frequent first.
    pub syscalls: Vec<(String, u64)>,
    /// CPU exceptions served (page faults, mostly).
    pub exceptions: u64,
    /// vCPU kicks (timeslices, timers).
    pub kicks: u64,
}

/// The line appended to a capped stream.
fn truncation_marker(dropped: u64) -> String {
    format!("\n[zeroboot: output truncated, {dropped} more bytes dropped]\n")
}

pub(crate) fn collect(sink: &mut Sink) -> (String, bool) {
    let (data, dropped) = sink.take();
    let mut s = String::from_utf8_lossy(&data).into_owned();
    if dropped > 0 {
        s.push_str(&truncation_marker(dropped));
    }
    (s, dropped > 0)
}

pub(crate) fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_le_bytes(b)
}

impl Template {
    /// Fork and run `req`.
    pub fn exec(&self, req: &ExecRequest) -> ExecResult {
        let start = Instant::now();
        let request = match &req.cell {
            Some(language) => cell_request_frame(&req.code, language),
            None => request_frame(&req.code),
        };
        let (stdout, stderr) = sinks(req.output_cap, req.on_output.as_ref());
        let opts = ForkOptions {
            stdout,
            stderr,
            stdin: Source::Empty,
            memory: req.memory,
            disk: req.disk,
            fds: req.fds,
            request,
        };
        let (mut sb, reused) = match self.acquire(opts) {
            Ok(x) => x,
            Err(e) => {
                return ExecResult {
                    exit_code: -1,
                    error: Some(format!("fork failed: {e}")),
                    total_time: start.elapsed(),
                    ..Default::default()
                }
            }
        };
        let forked = Instant::now();
        sb.k.sockets_mut().egress = Egress {
            setup: req.network.clone(),
            ..Egress::default()
        };
        let outcome = sb.run(Some(forked + req.timeout));
        let ran = Instant::now();
        // The run is over: its host connections close now, not when the
        // fork is reused.
        sb.k.sockets_mut().close_host();
        let mut r = ExecResult {
            reused,
            fork_time: forked - start,
            exec_time: ran - forked,
            network: std::mem::take(&mut sb.k.sockets_mut().egress).stats,
            ..Default::default()
        };
        let hits = sb.k.limit_hits();
        r.out_of_memory |= hits.memory;
        r.disk_full = hits.disk;
        r.fds_exhausted = hits.fds;
        r.stats = ExecStats {
            syscalls: sb.k.stats().by_name(),
            exceptions: sb.k.stats().exceptions,
            kicks: sb.k.stats().kicks,
        };
        (r.stdout, r.stdout_truncated) = collect(sb.k.stdout_mut());
        (r.stderr, r.stderr_truncated) = collect(sb.k.stderr_mut());
        if req.cell.is_some() {
            // A cell's events first, the reply last (also after a time-out:
            // what the cell produced until then).
            let mut frames = take_frames(&mut sb.k.control_mut().outbox);
            if matches!(outcome, Ok(Outcome::Parked)) {
                if let Some(reply) = frames.pop_if(|f| f.get("exit_code").is_some()) {
                    sb.k.control_mut().outbox = frame(&reply);
                }
            }
            r.events = frames;
        }
        match outcome {
            Ok(Outcome::Parked) => {
                // The agent replied and is waiting for the next request.
                r.exit_code = reply_exit_code(&sb.k.control_mut().outbox).unwrap_or_else(|| {
                    r.error = Some("the agent's reply was malformed".into());
                    -1
                });
            }
            Ok(Outcome::Exited(Exit::Code(c))) => r.exit_code = c,
            Ok(Outcome::Exited(e @ Exit::Signal(sig, _))) => {
                r.exit_code = e.status();
                r.out_of_memory |=
                    sig == 9 && matches!(&e, Exit::Signal(_, why) if why.contains("out of memory"));
            }
            Ok(Outcome::TimedOut) => {
                r.timed_out = true;
                r.exit_code = 124;
                r.stderr.push_str(&format!(
                    "\n[zeroboot: timed out after {:.3} s]\n",
                    req.timeout.as_secs_f64()
                ));
            }
            Err(e) => {
                r.exit_code = -1;
                r.error = Some(format!("sandbox failed: {e}"));
            }
        }
        if r.error.is_none() {
            self.release(sb);
        }
        zeroboot_kernel::hardening::report_denials();
        r.total_time = start.elapsed();
        r
    }
}

impl Template {
    /// A sandbox for `opts`: an idle fork reset to the template (one
    /// already restored by `tidy` first: only the request begins on it),
    /// a spare fork made ahead by `refill_spares` (its VM, slots and vCPU
    /// already created), or a new fork. Returns whether it was reused.
    pub(crate) fn acquire(
        &self,
        opts: ForkOptions,
    ) -> Result<(Sandbox, bool), zeroboot_kernel::SandboxError> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                match idle.iter().rposition(|sb| sb.is_restored()) {
                    Some(i) => Some(idle.swap_remove(i)),
                    None => idle.pop(),
                }
            };
            let Some(mut sb) = idle else { break };
            match sb.reset(&self.snapshot, opts.clone()) {
                Ok(true) => return Ok((sb, true)),
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reset failed; discarding the fork");
                    continue;
                }
            }
        }
        loop {
            let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sb) = spare else { break };
            match sb.begin_unrun(&self.snapshot, opts.clone()) {
                Ok(true) => return Ok((sb, false)),
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "a spare fork is unusable; discarding it");
                    continue;
                }
            }
        }
        Ok((Sandbox::fork(&self.snapshot, opts)?, false))
    }

    /// Restore one used idle fork to the template, so that the next
    /// request only begins on it (see `Sandbox::restore`). Callers run it
    /// after delivering a result, off the request's path: the server's
    /// vCPU threads after each reply. Returns whether one was restored.
    pub fn tidy(&self) -> bool {
        let used = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            match idle.iter().rposition(|sb| !sb.is_restored()) {
                Some(i) => idle.swap_remove(i),
                None => return false,
            }
        };
        let mut sb = used;
        match sb.restore(&self.snapshot) {
            Ok(true) => {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(sb);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "restore failed; discarding the fork");
                false
            }
        }
    }

    /// Keep a used sandbox for reuse (restored by `tidy`, or when taken).
    pub(crate) fn release(&self, sb: Sandbox) {
        let max = self.max_idle.load(std::sync::atomic::Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push(sb);
        }
    }

    /// Drop every idle fork.
    pub fn clear_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The control-channel frame carrying `code` (with a fresh seed).
pub fn request_frame(code: &str) -> Vec<u8> {
    let body = serde_json::json!({ "code": code, "seed": seed() })
        .to_string()
        .into_bytes();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The control-channel frame running `code` as a one-shot cell in
/// `language` (see [`ExecRequest::cell`]). Python runs in the template's
/// default context; the others get a context of their own in the fork.
pub fn cell_request_frame(code: &str, language: &str) -> Vec<u8> {
    let context = match language {
        "python" => "default".to_string(),
        other => format!("one-shot-{other}"),
    };
    frame(&serde_json::json!({
        "cell": { "code": code, "context": context, "language": language, "cwd": "/tmp" },
        "seed": seed(),
    }))
}

/// A value as a control-channel frame: its length (u32 LE) and its JSON.
pub(crate) fn frame(v: &serde_json::Value) -> Vec<u8> {
    let body = v.to_string().into_bytes();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The complete frames at the start of `outbox`, removed from it (a
/// partial frame stays); frames that are not JSON objects are dropped.
pub(crate) fn take_frames(outbox: &mut Vec<u8>) -> Vec<serde_json::Value> {
    let mut at = 0;
    let mut out = Vec::new();
    while let Some(len) = outbox
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
    {
        let Some(body) = outbox.get(at + 4..at + 4 + len) else {
            break;
        };
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if v.is_object() => out.push(v),
            _ => tracing::warn!(bytes = len, "the agent wrote a malformed frame; dropped"),
        }
        at += 4 + len;
    }
    outbox.drain(..at);
    out
}

/// The exit code in the agent's reply frame.
pub(crate) fn reply_exit_code(outbox: &[u8]) -> Option<i32> {
    let len = u32::from_le_bytes(outbox.get(..4)?.try_into().ok()?) as usize;
    let body = outbox.get(4..4 + len)?;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("exit_code")?.as_i64().map(|c| c as i32)
}
