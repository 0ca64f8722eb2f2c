//! The handlers: request parsing and validation, auth, execution, replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroboot_engine::{ExecRequest, ExecResult, Language, OutputStream, OutputTee};

use crate::auth::Denied;
use crate::AppState;

/// Largest request body read (a batch of maximal snippets would not fit;
/// the per-snippet limit is what users hit).
const MAX_BODY: usize = 16 << 20;
pub(crate) const MAX_TIMEOUT_SECONDS: f64 = 300.0;

/// An error answer: status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}

#[derive(Deserialize)]
struct ExecBody {
    code: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<f64>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    disk_mb: Option<u64>,
    #[serde(default)]
    max_open_files: Option<u64>,
    #[serde(default)]
    max_output_bytes: Option<u64>,
    /// E2B's network fields (docs/network.md).
    #[serde(default)]
    allow_internet_access: Option<bool>,
    #[serde(default)]
    network: Option<crate::network::NetworkBody>,
    /// Run the code as a notebook cell on the code-interpreter template and
    /// return its rich results (charts, tables, the last expression).
    #[serde(default)]
    results: Option<bool>,
}

/// `value` when in `lo..=hi`, else a 400 naming the field.
fn in_range(name: &str, value: Option<u64>, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} must be between {lo} and {hi}"),
        )),
        v => Ok(v),
    }
}

#[derive(Deserialize)]
struct BatchBody {
    executions: Vec<Value>,
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let h = headers.get("authorization").and_then(|v| v.to_str().ok());
    authorize_with(state, state.auth.check(h))
}

/// An auth check's outcome as our error answers.
pub(crate) fn authorize_with(
    state: &AppState,
    checked: Result<Option<usize>, Denied>,
) -> Result<Option<usize>, ApiError> {
    checked.map_err(|d| match d {
        Denied::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
        Denied::RateLimited(s) => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "rate limit of {} requests per second exceeded",
                state.config.rate_limit
            ),
            retry_after: Some(s),
        },
    })
}

pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} MiB", MAX_BODY >> 20),
        )
    })
}

pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        // Well-formed JSON of the wrong shape.
        Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request: {e}"),
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    }
}

/// Validate one execution request.
fn parse_exec(state: &AppState, v: Value) -> Result<(Language, ExecRequest), ApiError> {
    let b: ExecBody = serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request: {e}"),
        )
    })?;
    if b.code.len() > state.config.max_code_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "code is {} bytes; the limit is {}",
                b.code.len(),
                state.config.max_code_bytes
            ),
        ));
    }
    let lang_name = b.language.unwrap_or_else(|| "python".into());
    let cell = match b.results {
        Some(true) => Some(cell_language(&lang_name)?),
        _ => None,
    };
    let lang = match (&cell, Language::parse(&lang_name)) {
        (Some(_), _) => Language::CodeInterpreter,
        (None, Some(l)) => l,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown language {lang_name:?}: use \"python\", \"node\" or \"javascript\""
                ),
            ))
        }
    };
    if cell.is_some() && !state.templates.contains_key(&lang) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "results: true runs the code on the code-interpreter template, which this server does not serve (start it with --languages python,node,code-interpreter)",
        ));
    }
    if !state.templates.contains_key(&lang) {
        let mut have: Vec<&str> = state.templates.keys().map(|l| l.name()).collect();
        have.sort_unstable();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "language {lang_name:?} is not available on this server (templates: {})",
                have.join(", ")
            ),
        ));
    }
    let timeout = b.timeout_seconds.unwrap_or(30.0);
    if !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECONDS) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("timeout_seconds must be > 0 and <= {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    let c = &state.config;
    let memory = in_range("memory_mb", b.memory_mb, 16, c.max_memory_mb)?;
    let disk = in_range("disk_mb", b.disk_mb, 0, c.max_disk_mb)?;
    let fds = in_range("max_open_files", b.max_open_files, 16, c.max_open_files)?;
    let output = in_range(
        "max_output_bytes",
        b.max_output_bytes,
        0,
        c.max_output_bytes as u64,
    )?;
    let mut req = ExecRequest::new(b.code);
    req.timeout = Duration::from_secs_f64(timeout);
    req.memory = memory.map(|m| m << 20);
    req.disk = disk.map(|d| d << 20);
    req.fds = fds;
    req.output_cap = output.map_or(c.output_cap, |o| o as usize);
    req.network = Some(crate::network::setup(
        &c.network,
        b.allow_internet_access,
        b.network,
        format!("exec-{}", new_id()),
    )?);
    req.cell = cell;
    Ok((lang, req))
}

/// The code interpreter's language for a cell of `name` (`results: true`).
fn cell_language(name: &str) -> Result<String, ApiError> {
    let l = match name {
        "python" | "python3" | "code-interpreter" | "code-interpreter-v1" => "python",
        "node" | "javascript" | "js" | "nodejs" => "javascript",
        "bash" | "sh" => "bash",
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                "unknown language {name:?} for results: use \"python\", \"javascript\" or \"bash\""
            ),
            ))
        }
    };
    Ok(l.to_string())
}

fn new_id() -> String {
    let mut b = [0u8; 12];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A result as JSON; `network_on`: the server's network is on (the
/// result's `network` object says so).
pub(crate) fn result_json(r: &ExecResult, duration: Duration, network_on: bool) -> Value {
    let mut v = json!({
        "id": new_id(),
        "output": r.stdout,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "exit_code": r.exit_code,
        "timed_out": r.timed_out,
        "out_of_memory": r.out_of_memory,
        "disk_full": r.disk_full,
        "fds_exhausted": r.fds_exhausted,
        "truncated": r.stdout_truncated || r.stderr_truncated,
        "duration_ms": ms(duration),
        "fork_time_ms": ms(r.fork_time),
        "exec_time_ms": ms(r.exec_time),
        "total_time_ms": ms(r.total_time),
    });
    if let Some(e) = &r.error {
        v["error"] = json!(e);
    }
    v["network"] = crate::network::stats_json(network_on, &r.network);
    v
}

/// A cell's events folded into its result (`results: true`): the text it
/// printed joins `stdout`/`stderr` (before what its descriptors got, since
/// the two do not share a clock), within the request's output cap; plus
/// `results` (E2B's result objects), `exception` (the cell's error, or
/// null; the exit code is then 1) and `execution_count`.
fn add_cell_results(v: &mut Value, r: &ExecResult, output_cap: usize) {
    let mut printed = (String::new(), String::new());
    let mut results = Vec::new();
    let mut exception = Value::Null;
    let mut count = Value::Null;
    for e in &r.events {
        let text = || e.get("text").and_then(Value::as_str).unwrap_or("");
        match e.get("type").and_then(Value::as_str) {
            Some("stdout") => printed.0.push_str(text()),
            Some("stderr") => printed.1.push_str(text()),
            Some("result") => {
                let mut x = e.clone();
                if let Some(o) = x.as_object_mut() {
                    o.remove("type");
                }
                results.push(x);
            }
            Some("error") => {
                exception = json!({
                    "name": e.get("name").cloned().unwrap_or(Value::Null),
                    "value": e.get("value").cloned().unwrap_or(Value::Null),
                    "traceback": e.get("traceback").cloned().unwrap_or(Value::Null),
                })
            }
            Some("number_of_executions") => {
                count = e.get("execution_count").cloned().unwrap_or(Value::Null)
            }
            _ => {}
        }
    }
    let mut truncated = r.stdout_truncated || r.stderr_truncated;
    let stdout = capped(printed.0 + &r.stdout, output_cap, &mut truncated);
    let stderr = capped(printed.1 + &r.stderr, output_cap, &mut truncated);
    v["output"] = json!(stdout);
    v["stdout"] = json!(stdout);
    v["stderr"] = json!(stderr);
    v["truncated"] = json!(truncated);
    if !exception.is_null() && r.exit_code == 0 {
        v["exit_code"] = json!(1);
    }
    v["results"] = Value::Array(results);
    v["exception"] = exception;
    v["execution_count"] = count;
}

/// `s` cut to `cap` bytes (at a character boundary) with the engine's
/// truncation marker.
fn capped(mut s: String, cap: usize, truncated: &mut bool) -> String {
    if s.len() <= cap {
        return s;
    }
    let mut cut = cap;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!(
        "\n[zeroboot: output truncated, {dropped} more bytes dropped]\n"
    ));
    *truncated = true;
    s
}

pub(crate) fn record(state: &AppState, lang: &'static str, r: &ExecResult) {
    let m = &state.metrics;
    m.fork.observe(r.fork_time);
    m.exec.observe(r.exec_time);
    m.total.observe(r.total_time);
    let outcome = if r.error.is_some() {
        "error"
    } else if r.timed_out {
        "timeout"
    } else if r.out_of_memory {
        "out_of_memory"
    } else if r.exit_code == 0 {
        "ok"
    } else {
        "nonzero_exit"
    };
    m.execution(lang, outcome);
}

fn finish(state: &AppState, endpoint: &'static str, r: Result<Response, ApiError>) -> Response {
    let resp = match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    state.metrics.request(endpoint, resp.status().as_u16());
    resp
}

pub async fn exec(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let r = async {
        let key = authorize(&state, &headers)?;
        let bytes = read_body(body).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(json_error)?;
        let stream = match v.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid request: stream must be a boolean",
                ))
            }
        };
        let (lang, req) = parse_exec(&state, v)?;
        let template = state
            .templates
            .get(&lang)
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "language not available"))?;
        let cell = req.cell.is_some().then_some(req.output_cap);
        if stream {
            if cell.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "stream and results cannot be combined: stream a cell's results with a live sandbox's run_code (POST /execute)",
                ));
            }
            return Ok(exec_stream(state.clone(), lang, template, req, start));
        }
        let adm = state.pool.admit(1).map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many executions queued; try again",
            )
        })?;
        let res = adm.run(template, req).await;
        record(&state, lang.name(), &res);
        tracing::info!(
            %peer,
            key = key.map(|k| format!("#{k}")).unwrap_or_else(|| "-".into()),
            exit_code = res.exit_code,
            timed_out = res.timed_out,
            total_ms = ms(res.total_time),
            "exec"
        );
        let mut v = result_json(&res, start.elapsed(), state.config.network.enabled);
        if let Some(cap) = cell {
            add_cell_results(&mut v, &res, cap);
        }
        Ok::<_, ApiError>(Json(v).into_response())
    }
    .await;
    finish(&state, "exec", r)
}

/// What a streamed execution sends its reader.
enum StreamEvent {
    Output(OutputStream, Vec<u8>),
    Done(Box<Result<ExecResult, String>>),
}

/// Text of `data` appended to `carry`, keeping an incomplete UTF-8
/// sequence at the end for the next chunk (a chunk may split a character).
fn utf8_text(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let keep = match std::str::from_utf8(carry) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => carry.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let tail = carry.split_off(carry.len() - keep);
    let text = String::from_utf8_lossy(carry).into_owned();
    *carry = tail;
    text
}

/// `POST /v1/exec` with `"stream": true`: newline-delimited JSON events,
/// `{"type": "stdout"|"stderr", "data"}` as the guest writes, then
/// `{"type": "result", ...}` (the non-streamed reply's fields) or
/// `{"type": "error", "error"}`. The output cap applies as without
/// streaming.
fn exec_stream(
    state: Arc<AppState>,
    lang: Language,
    template: Arc<zeroboot_engine::Template>,
    mut req: ExecRequest,
    start: Instant,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<StreamEvent>();
    let network_on = state.config.network.enabled;
    let out = tx.clone();
    req.on_output = Some(OutputTee(Arc::new(move |s, b| {
        let _ = out.send(StreamEvent::Output(s, b.to_vec()));
    })));
    tokio::spawn(async move {
        let r = match state.pool.admit(1) {
            Ok(adm) => {
                let res = adm.run(template, req).await;
                record(&state, lang.name(), &res);
                Ok(res)
            }
            Err(_) => Err("too many executions queued; try again".to_string()),
        };
        let _ = tx.send(StreamEvent::Done(Box::new(r)));
    });
    let carries = (Vec::new(), Vec::new());
    let body = futures_util::stream::unfold(
        (rx, carries, false),
        move |(mut rx, mut carries, done)| async move {
            if done {
                return None;
            }
            let (line, done) = match rx.recv().await {
                Some(StreamEvent::Output(s, data)) => {
                    let (name, carry) = match s {
                        OutputStream::Stdout => ("stdout", &mut carries.0),
                        OutputStream::Stderr => ("stderr", &mut carries.1),
                    };
                    (
                        json!({"type": name, "data": utf8_text(carry, &data)}),
                        false,
                    )
                }
                Some(StreamEvent::Done(done)) => match *done {
                    Ok(res) => {
                        let mut v = result_json(&res, start.elapsed(), network_on);
                        v["type"] = json!("result");
                        (v, true)
                    }
                    Err(e) => (json!({"type": "error", "error": e}), true),
                },
                None => (
                    json!({"type": "error", "error": "the execution was lost (a bug)"}),
                    true,
                ),
            };
            let mut b = line.to_string().into_bytes();
            b.push(b'\n');
            Some((
                Ok::<Bytes, std::convert::Infallible>(Bytes::from(b)),
                (rx, carries, done),
            ))
        },
    );
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

pub async fn exec_batch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let r = async {
        authorize(&state, &headers)?;
        let bytes = read_body(body).await?;
        let b: BatchBody = serde_json::from_slice(&bytes).map_err(json_error)?;
        if b.executions.len() > state.config.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} executions in one batch; the limit is {}",
                    b.executions.len(),
                    state.config.max_batch
                ),
            ));
        }
        let mut parsed = Vec::with_capacity(b.executions.len());
        for (i, v) in b.executions.into_iter().enumerate() {
            let p = parse_exec(&state, v).map_err(|mut e| {
                e.message = format!("executions[{i}]: {}", e.message);
                e
            })?;
            parsed.push(p);
        }
        let adm = state.pool.admit(parsed.len()).map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many executions queued; try again",
            )
        })?;
        let cells: Vec<Option<usize>> = parsed
            .iter()
            .map(|(_, req)| req.cell.is_some().then_some(req.output_cap))
            .collect();
        let runs = parsed.into_iter().map(|(lang, req)| {
            let template = state.templates.get(&lang).cloned();
            let adm = &adm;
            let state = &state;
            async move {
                match template {
                    Some(t) => {
                        let r = adm.run(t, req).await;
                        record(state, lang.name(), &r);
                        r
                    }
                    None => ExecResult {
                        exit_code: -1,
                        error: Some("language not available".into()),
                        ..Default::default()
                    },
                }
            }
        });
        let results = join_all(runs).await;
        let elapsed = start.elapsed();
        tracing::info!(%peer, executions = results.len(), "exec batch");
        let results: Vec<Value> = results
            .iter()
            .zip(cells)
            .map(|(r, cell)| {
                let mut v = result_json(r, elapsed, state.config.network.enabled);
                if let Some(cap) = cell {
                    add_cell_results(&mut v, r, cap);
                }
                v
            })
            .collect();
        Ok(Json(json!({ "results": results })).into_response())
    }
    .await;
    finish(&state, "exec_batch", r)
}

/// Run futures concurrently, keeping their order (no extra dependency).
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut pending = futs.into_iter().enumerate().collect::<Vec<_>>();
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let mut templates = serde_json::Map::new();
    for (lang, t) in &state.templates {
        templates.insert(
            lang.name().into(),
            json!({ "ready": true, "memory_mb": (t.memory_bytes() as f64 / 1048576.0 * 10.0).round() / 10.0 }),
        );
    }
    let status = if state.sandboxes.draining() {
        "draining"
    } else {
        "ok"
    };
    let r = Json(json!({
        "status": status,
        "templates": templates,
        "node": crate::node::status(&state),
    }))
    .into_response();
    finish(&state, "health", Ok(r))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let templates: Vec<(&'static str, u64)> = state
        .templates
        .iter()
        .map(|(l, t)| (l.name(), t.memory_bytes()))
        .collect();
    let mut text = state.metrics.render(
        state.pool.running(),
        state.pool.waiting(),
        &templates,
        &state.sandboxes,
    );
    state.envd.render_metrics(&mut text);
    crate::node::render_metrics(&state, &mut text);
    crate::network::render_metrics(&state.config.network, &mut text);
    let r = ([("content-type", "text/plain; version=0.0.4")], text).into_response();
    finish(&state, "metrics", Ok(r))
}

pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let doc = crate::openapi::document(&state.config);
    finish(&state, "openapi", Ok(Json(doc).into_response()))
}

pub async fn method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    finish(
        &state,
        "other",
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed (see /v1/openapi.json)",
        )),
    )
}

pub async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    finish(
        &state,
        "other",
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such endpoint (see /v1/openapi.json)",
        )),
    )
}
