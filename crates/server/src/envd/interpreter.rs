//! E2B's code interpreter (port 49999 inside a `code-interpreter-v1`
//! sandbox; e2b-dev/code-interpreter `template/server`): `POST /execute`
//! streams a cell's events as newline-delimited JSON as they happen, and
//! `/contexts` creates, lists, restarts and removes contexts.
//!
//! No server runs in the guest: a context lives in the sandbox's agent
//! (`agents/code_interpreter/agent.py`, parked on its control channel), and
//! a cell is one agent request (`Sandboxes::request`) whose event frames
//! and fd 1/2 output the actor hands over between guest time slices. This
//! module translates: it keeps the context table, turns a request into an
//! agent request, and the agent's frames into E2B's lines, with caps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};
use zeroboot_engine::{ExecResult, LiveError, RunOutput};

use super::Sbx;
use crate::e2b::rfc3339;
use crate::sandboxes::Entry;

/// Where contexts start unless told otherwise (E2B's user's home).
const DEFAULT_CWD: &str = "/home/user";
/// Languages the agent runs.
const LANGUAGES: &[&str] = &["python", "javascript", "bash"];
/// A line sent when a cell has been quiet this long (E2B's interval): a
/// client that went away is noticed on the write at the latest, and its
/// cell interrupted. Shorter would defeat clients' read timeouts, which
/// is how E2B's SDKs apply `run_code(timeout=...)`.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The longest a cell may run when the client sets no `timeout` (the
/// sandbox's own end comes first when it is sooner).
const MAX_CELL_TIME: Duration = Duration::from_secs(24 * 3600);
/// Bytes of results (images, HTML) one cell may return in all.
const MAX_RESULT_BYTES: usize = 64 << 20;

/// One context: E2B's `Context` and the agent's name for it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Context {
    pub id: String,
    pub language: String,
    pub cwd: String,
    agent_key: String,
}

impl Context {
    fn json(&self) -> Value {
        json!({ "id": self.id, "language": self.language, "cwd": self.cwd })
    }
}

/// A sandbox's contexts, and its turn: one cell or context operation at a
/// time reaches the agent (E2B serializes per context; here one process
/// serves them all).
pub struct Contexts {
    list: Vec<Context>,
    /// The default context id per language.
    defaults: Vec<(String, String)>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Contexts {
    fn default() -> Self {
        let python = Context {
            id: new_context_id(),
            language: "python".into(),
            cwd: DEFAULT_CWD.into(),
            // Made in the template.
            agent_key: "default".into(),
        };
        Contexts {
            defaults: vec![("python".into(), python.id.clone())],
            list: vec![python],
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl Contexts {
    /// A fork's contexts: the same ones (its agent holds them all), with a
    /// turn of its own.
    pub fn copy(&self) -> Contexts {
        Contexts {
            list: self.list.clone(),
            defaults: self.defaults.clone(),
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// What a checkpoint keeps of them (the agent's side is in its memory).
    pub fn saved(&self) -> Value {
        json!({ "list": self.list, "defaults": self.defaults })
    }

    /// The contexts `saved` kept; None if `v` is not such a record.
    pub fn restore(v: &Value) -> Option<Contexts> {
        Some(Contexts {
            list: serde_json::from_value(v.get("list")?.clone()).ok()?,
            defaults: serde_json::from_value(v.get("defaults")?.clone()).ok()?,
            turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn get(&self, id: &str) -> Option<Context> {
        self.list.iter().find(|c| c.id == id).cloned()
    }

    fn default_for(&self, language: &str) -> Option<Context> {
        let id = self.defaults.iter().find(|(l, _)| l == language)?;
        self.get(&id.1)
    }
}

/// A uuid4-shaped id, as Jupyter's kernel ids look.
fn new_context_id() -> String {
    let mut b = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// E2B's language names: lower case, `js` is javascript, `ts` typescript,
/// none is python.
fn normalize_language(l: Option<&str>) -> String {
    match l.map(|s| s.trim().to_ascii_lowercase()) {
        None => "python".into(),
        Some(s) if s.is_empty() => "python".into(),
        Some(s) if s == "js" => "javascript".into(),
        Some(s) if s == "ts" => "typescript".into(),
        Some(s) => s,
    }
}

/// The code interpreter's errors are plain text (FastAPI's
/// PlainTextResponse); the SDKs show the text.
fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn unsupported(language: &str) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "Failed to create context: the language {language:?} is not supported by this server (supported: {})",
            LANGUAGES.join(", ")
        ),
    )
}

async fn body_object(body: Body) -> Result<Map<String, Value>, Response> {
    let bytes = axum::body::to_bytes(body, super::connect::MAX_REQUEST_BYTES)
        .await
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("malformed JSON: {e}"),
        )),
    }
}

/// An optional string field; Err names the field that is not one.
fn opt_str<'a>(b: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match b.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn unprocessable(msg: String) -> Response {
    text(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

/// Serve one request to port 49999 of the sandbox.
pub(crate) async fn serve(
    sbx: &Sbx,
    method: &Method,
    path: &str,
    body: Body,
    output_cap: usize,
) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["health"]) => axum::Json(json!("OK")).into_response(),
        (&Method::POST, ["execute"]) => execute(sbx, body, output_cap).await,
        (&Method::POST, ["contexts"]) => create_context(sbx, body).await,
        (&Method::GET, ["contexts"]) => {
            let list: Vec<Value> = crate::sandboxes::lock_contexts(&sbx.entry)
                .list
                .iter()
                .map(Context::json)
                .collect();
            axum::Json(list).into_response()
        }
        (&Method::POST, ["contexts", id, "restart"]) => manage(sbx, id, "restart").await,
        (&Method::DELETE, ["contexts", id]) => manage(sbx, id, "remove").await,
        (_, ["health"]) | (_, ["execute"]) | (_, ["contexts", ..]) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("the code interpreter has no {method} {path}"),
        ),
    }
}

/// Run an agent operation (no streamed output) and return its reply.
async fn agent_op(sbx: &Sbx, req: Value) -> Result<Value, Response> {
    let (rx, done) = sbx
        .state
        .sandboxes
        .request(&sbx.entry, req, Duration::from_secs(60), 64 << 10)
        .map_err(|e| super::unreachable(e, &sbx.entry.id))?;
    drop_output(rx);
    match done.await {
        Ok(Ok(r)) => Ok(r.reply.unwrap_or(Value::Null)),
        Ok(Err(e)) => Err(text(StatusCode::BAD_GATEWAY, e.to_string())),
        Err(_) => Err(text(
            StatusCode::BAD_GATEWAY,
            format!(
                "the sandbox ended: {}",
                sbx.state.sandboxes.ended_reason(&sbx.entry.id)
            ),
        )),
    }
}

/// Operations print nothing worth keeping; keep the stream drained so
/// that it is not taken for a client that left.
fn drop_output(mut rx: mpsc::UnboundedReceiver<RunOutput>) {
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
}

fn reply_error(reply: &Value) -> Option<String> {
    if reply.get("exit_code").and_then(Value::as_i64) == Some(0) {
        return None;
    }
    Some(
        reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the agent failed")
            .to_string(),
    )
}

async fn create_context(sbx: &Sbx, body: Body) -> Response {
    let b = match body_object(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (language, cwd) = match (opt_str(&b, "language"), opt_str(&b, "cwd")) {
        (Ok(l), Ok(c)) => (
            normalize_language(l),
            c.filter(|c| !c.is_empty())
                .unwrap_or(DEFAULT_CWD)
                .to_string(),
        ),
        (Err(m), _) | (_, Err(m)) => return unprocessable(m),
    };
    if !LANGUAGES.contains(&language.as_str()) {
        return unsupported(&language);
    }
    let turn = turn(&sbx.entry).await;
    let ctx = Context {
        id: new_context_id(),
        language,
        cwd,
        agent_key: String::new(),
    };
    let ctx = Context {
        agent_key: ctx.id.clone(),
        ..ctx
    };
    match create_in_agent(sbx, &ctx).await {
        Ok(()) => {}
        Err(r) => return r,
    }
    drop(turn);
    crate::sandboxes::lock_contexts(&sbx.entry)
        .list
        .push(ctx.clone());
    axum::Json(ctx.json()).into_response()
}

async fn create_in_agent(sbx: &Sbx, ctx: &Context) -> Result<(), Response> {
    let reply = agent_op(
        sbx,
        json!({"op": "create", "context": ctx.agent_key, "language": ctx.language, "cwd": ctx.cwd}),
    )
    .await?;
    match reply_error(&reply) {
        None => Ok(()),
        Some(e) => Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to create context: {e}"),
        )),
    }
}

async fn manage(sbx: &Sbx, id: &str, op: &str) -> Response {
    let Some(ctx) = crate::sandboxes::lock_contexts(&sbx.entry).get(id) else {
        return text(StatusCode::NOT_FOUND, format!("Context {id} not found"));
    };
    let turn = turn(&sbx.entry).await;
    let reply = match agent_op(sbx, json!({"op": op, "context": ctx.agent_key})).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    drop(turn);
    if let Some(e) = reply_error(&reply) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to {op} context {id}: {e}"),
        );
    }
    if op == "remove" {
        let mut c = crate::sandboxes::lock_contexts(&sbx.entry);
        c.list.retain(|x| x.id != id);
        c.defaults.retain(|(_, d)| d != id);
    }
    axum::Json(Value::Null).into_response()
}

async fn turn(e: &Entry) -> OwnedMutexGuard<()> {
    let t = crate::sandboxes::lock_contexts(e).turn.clone();
    t.lock_owned().await
}

/// `POST /execute` `{"code", "context_id", "language", "env_vars"}`, and
/// ours: `"timeout"` (seconds; the cell is interrupted then).
async fn execute(sbx: &Sbx, body: Body, output_cap: usize) -> Response {
    let b = match body_object(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let code = match b.get("code") {
        Some(Value::String(c)) => c.clone(),
        _ => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "code (a string) is required",
            )
        }
    };
    let (context_id, language) = match (opt_str(&b, "context_id"), opt_str(&b, "language")) {
        (Ok(c), Ok(l)) => (c.map(str::to_string), l.map(str::to_string)),
        (Err(m), _) | (_, Err(m)) => return unprocessable(m),
    };
    if context_id.is_some() && language.is_some() {
        return text(
            StatusCode::BAD_REQUEST,
            "Only one of context_id or language can be provided",
        );
    }
    let mut env = Map::new();
    match b.get("env_vars") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Value::String(v) = v else {
                    return text(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("env_vars.{k} must be a string"),
                    );
                };
                if k.is_empty() || k.contains(['=', '\0']) {
                    return text(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("env_vars has an invalid name {k:?}"),
                    );
                }
                env.insert(k.clone(), Value::String(v.clone()));
            }
        }
        Some(_) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "env_vars must be an object of strings",
            )
        }
    }
    let timeout = match b.get("timeout") {
        None | Some(Value::Null) => MAX_CELL_TIME,
        Some(t) => match t.as_f64() {
            Some(t) if t > 0.0 && t <= MAX_CELL_TIME.as_secs_f64() => Duration::from_secs_f64(t),
            _ => {
                return text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "timeout must be a number of seconds > 0",
                )
            }
        },
    };
    let turn = turn(&sbx.entry).await;
    let found = {
        let c = crate::sandboxes::lock_contexts(&sbx.entry);
        match (&context_id, &language) {
            (Some(id), _) => match c.get(id) {
                Some(x) => Ok(x),
                None => return text(StatusCode::NOT_FOUND, format!("Context {id} not found")),
            },
            (None, l) => {
                let l = normalize_language(l.as_deref());
                match c.default_for(&l) {
                    Some(x) => Ok(x),
                    None if LANGUAGES.contains(&l.as_str()) => Err(l),
                    None => return unsupported(&l),
                }
            }
        }
    };
    let ctx = match found {
        Ok(c) => c,
        // A language's first cell: its default context is made now.
        Err(language) => {
            let id = new_context_id();
            let ctx = Context {
                agent_key: id.clone(),
                id,
                language,
                cwd: DEFAULT_CWD.into(),
            };
            if let Err(r) = create_in_agent(sbx, &ctx).await {
                return r;
            }
            let mut c = crate::sandboxes::lock_contexts(&sbx.entry);
            c.list.push(ctx.clone());
            c.defaults.push((ctx.language.clone(), ctx.id.clone()));
            ctx
        }
    };
    let req = json!({"cell": {
        "code": code,
        "context": ctx.agent_key,
        "language": ctx.language,
        "cwd": ctx.cwd,
        "env": env,
    }});
    let (rx, done) = match sbx
        .state
        .sandboxes
        .request(&sbx.entry, req, timeout, output_cap)
    {
        Ok(x) => x,
        Err(e) => return super::unreachable(e, &sbx.entry.id),
    };
    let cell = CellStream {
        rx,
        done: Some(done),
        lines: Vec::new(),
        stream_cap: output_cap,
        streamed: 0,
        stream_dropped: 0,
        result_bytes: 0,
        finished: false,
        guard: InterruptOnDrop {
            sbx: Some((sbx.state.clone(), sbx.entry.clone())),
            turn: Some(turn),
        },
    };
    let s = futures_util::stream::unfold(cell, |mut c| async move {
        let chunk = c.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), c))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(s),
    )
        .into_response()
}

/// Interrupts the cell when its response is dropped before the end (the
/// client went away): the actor also notices at its next slice, but a cell
/// asleep in the guest has no slice until it wakes. The sandbox's turn is
/// held until the interrupted cell has ended.
struct InterruptOnDrop {
    sbx: Option<(Arc<crate::AppState>, Arc<Entry>)>,
    turn: Option<OwnedMutexGuard<()>>,
}

/// What an abandoned cell leaves to wait for.
type Abandoned = (
    mpsc::UnboundedReceiver<RunOutput>,
    Option<oneshot::Receiver<Result<ExecResult, LiveError>>>,
);

impl InterruptOnDrop {
    fn abandon(&mut self, rest: Abandoned) {
        let Some((state, e)) = self.sbx.take() else {
            return;
        };
        state.sandboxes.post_with(&e, |sb| {
            if let Some(sb) = sb {
                sb.interrupt_run();
            }
        });
        let turn = self.turn.take();
        let (mut rx, done) = rest;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while rx.recv().await.is_some() {}
                if let Some(d) = done {
                    let _ = d.await;
                }
                drop(turn);
            });
        }
    }
}

impl Drop for CellStream {
    fn drop(&mut self) {
        if !self.finished {
            let (_, rx) = mpsc::unbounded_channel();
            let rest = (std::mem::replace(&mut self.rx, rx), self.done.take());
            self.guard.abandon(rest);
        }
    }
}

/// A cell's response in progress.
struct CellStream {
    rx: mpsc::UnboundedReceiver<RunOutput>,
    done: Option<oneshot::Receiver<Result<ExecResult, LiveError>>>,
    /// Lines ready to send.
    lines: Vec<u8>,
    /// Bytes of stdout/stderr text passed on, and dropped past the cap.
    stream_cap: usize,
    streamed: usize,
    stream_dropped: usize,
    result_bytes: usize,
    finished: bool,
    /// Interrupts the cell if the response goes before its end; holds the
    /// sandbox's turn until the cell has ended.
    guard: InterruptOnDrop,
}

impl CellStream {
    /// The next chunk of lines; None after the end marker.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if !self.lines.is_empty() {
                return Some(Bytes::from(std::mem::take(&mut self.lines)));
            }
            if self.finished {
                return None;
            }
            match tokio::time::timeout(KEEPALIVE, self.rx.recv()).await {
                Err(_) => self.line(&json!({"type": "keepalive"})),
                Ok(Some(out)) => self.output(out),
                Ok(None) => {
                    let r = match self.done.take() {
                        Some(d) => d.await.ok(),
                        None => None,
                    };
                    self.end(r);
                }
            }
        }
    }

    fn line(&mut self, v: &Value) {
        self.lines.extend_from_slice(v.to_string().as_bytes());
        self.lines.push(b'\n');
    }

    /// A stdout/stderr event, within the cap.
    fn text(&mut self, kind: &str, text: &str, timestamp: Option<&Value>) {
        if text.is_empty() {
            return;
        }
        let room = self.stream_cap.saturating_sub(self.streamed);
        if room == 0 {
            self.stream_dropped += text.len();
            return;
        }
        let mut t = text;
        if t.len() > room {
            let mut cut = room;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            self.stream_dropped += t.len() - cut;
            t = &t[..cut];
        }
        self.streamed += t.len();
        let ts = timestamp
            .cloned()
            .unwrap_or_else(|| Value::String(rfc3339(SystemTime::now())));
        self.line(&json!({"type": kind, "text": t, "timestamp": ts}));
    }

    fn output(&mut self, out: RunOutput) {
        // What the agent's descriptors got (subprocesses, C code).
        if !out.stdout.is_empty() {
            self.text("stdout", &String::from_utf8_lossy(&out.stdout), None);
        }
        if !out.stderr.is_empty() {
            self.text("stderr", &String::from_utf8_lossy(&out.stderr), None);
        }
        self.stream_dropped += out.dropped as usize;
        for f in out.frames {
            let kind = f.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "stdout" | "stderr" => {
                    let kind = kind.to_string();
                    let t = f.get("text").and_then(Value::as_str).unwrap_or("");
                    self.text(&kind, t, f.get("timestamp"));
                }
                "result" => {
                    let n = f.to_string().len();
                    if self.result_bytes + n > MAX_RESULT_BYTES {
                        self.text(
                            "stderr",
                            &format!("[zeroboot: a result of {n} bytes was dropped: this cell's results are over {MAX_RESULT_BYTES} bytes]\n"),
                            None,
                        );
                        continue;
                    }
                    self.result_bytes += n;
                    self.line(&f);
                }
                "error" | "number_of_executions" => self.line(&f),
                other => tracing::warn!(kind = other, "the agent sent an unknown event; dropped"),
            }
        }
    }

    fn end(&mut self, r: Option<Result<ExecResult, LiveError>>) {
        // What the descriptors got last (taken with the result).
        if let Some(Ok(x)) = &r {
            self.text("stdout", &x.stdout, None);
            self.text("stderr", &x.stderr, None);
        }
        if self.stream_dropped > 0 {
            let msg = format!(
                "\n[zeroboot: output truncated: {} bytes over the {} byte limit dropped]\n",
                self.stream_dropped, self.stream_cap
            );
            self.streamed = 0;
            let cap = std::mem::replace(&mut self.stream_cap, usize::MAX);
            self.text("stderr", &msg, None);
            self.stream_cap = cap;
        }
        let error = match r {
            Some(Ok(x)) if x.timed_out => Some((
                "TimeoutError",
                "the cell did not stop when interrupted; the sandbox was ended".to_string(),
            )),
            // Out of memory with a reply: the cell got a MemoryError and
            // said so itself; without one, the agent was killed.
            Some(Ok(x)) if x.out_of_memory && x.reply.is_none() => Some((
                "OutOfMemoryError",
                "the cell ran out of memory; the sandbox was ended".to_string(),
            )),
            Some(Ok(x)) if x.reply.is_none() => Some((
                "ContextDied",
                format!(
                    "the interpreter ended (status {}); the sandbox ended with it",
                    x.exit_code
                ),
            )),
            Some(Ok(_)) => None,
            Some(Err(e @ LiveError::Busy)) => Some(("SandboxBusy", e.to_string())),
            Some(Err(e @ LiveError::Paused)) => Some(("SandboxPaused", e.to_string())),
            Some(Err(e)) => Some(("ContextDied", e.to_string())),
            None => Some((
                "ContextDied",
                "the sandbox ended while the cell ran".to_string(),
            )),
        };
        if let Some((name, value)) = error {
            self.line(&json!({"type": "error", "name": name, "value": value, "traceback": value}));
        }
        self.line(&json!({"type": "end_of_execution"}));
        self.finished = true;
        // Ended: nothing to interrupt, and the next cell's turn.
        self.guard.sbx = None;
        self.guard.turn = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn languages_as_e2b_names_them() {
        assert_eq!(normalize_language(None), "python");
        assert_eq!(normalize_language(Some("")), "python");
        assert_eq!(normalize_language(Some(" JS ")), "javascript");
        assert_eq!(normalize_language(Some("ts")), "typescript");
        assert_eq!(normalize_language(Some("Bash")), "bash");
    }

    #[test]
    fn context_ids_are_uuid4_shaped_and_distinct() {
        let a = new_context_id();
        let b = new_context_id();
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_default_python_context_exists_from_the_start() {
        let c = Contexts::default();
        let py = c.default_for("python").unwrap();
        assert_eq!(py.agent_key, "default");
        assert_eq!(py.cwd, DEFAULT_CWD);
        assert!(c.default_for("bash").is_none());
        assert_eq!(c.get(&py.id).unwrap().id, py.id);
    }

    fn stream() -> (CellStream, mpsc::UnboundedSender<RunOutput>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_done_tx, done) = oneshot::channel();
        (
            CellStream {
                rx,
                done: Some(done),
                lines: Vec::new(),
                stream_cap: 10,
                streamed: 0,
                stream_dropped: 0,
                result_bytes: 0,
                finished: true,
                guard: InterruptOnDrop {
                    sbx: None,
                    turn: None,
                },
            },
            tx,
        )
    }

    fn lines(c: &mut CellStream) -> Vec<Value> {
        std::mem::take(&mut c.lines)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn text_is_capped_with_a_marker_and_unknown_events_dropped() {
        let (mut c, _tx) = stream();
        c.output(RunOutput {
            stdout: b"0123456789abc".to_vec(),
            frames: vec![
                json!({"type": "result", "text": "2", "is_main_result": true}),
                json!({"type": "bogus"}),
                json!({"type": "stderr", "text": "more", "timestamp": "t"}),
            ],
            ..Default::default()
        });
        let got = lines(&mut c);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["text"], "0123456789");
        assert_eq!(got[1]["type"], "result");
        c.end(None);
        let got = lines(&mut c);
        assert_eq!(got[0]["type"], "stderr");
        assert!(got[0]["text"].as_str().unwrap().contains("7 bytes"));
        assert_eq!(got[1]["name"], "ContextDied");
        assert_eq!(got[2]["type"], "end_of_execution");
    }
}
