//! envd's `process.Process` service (spec/envd/process/process.proto),
//! served by the sandbox's kernel: a started command is a process the
//! kernel creates itself (`LiveSandbox::start`), its output streamed as the
//! actor steps the sandbox (`sandboxes.rs`). Proto3 JSON: camelCase names,
//! bytes as base64, enums by name.
//!
//! As envd does, a command outlives its Start stream when the client goes
//! away (it can be re-attached with Connect, listed, signalled), and is
//! killed when the stream's deadline (`Connect-Timeout-Ms`, the SDKs'
//! command `timeout`) passes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zeroboot_engine::{CommandEvent, CommandSpec, LiveError, LiveSandbox};

use super::connect::{self, Code, Framing, RpcError, StreamOptions};
use super::Sbx;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StartRequest {
    process: Option<ProcessConfig>,
    pty: Option<Value>,
    tag: Option<String>,
    /// Absent: true (older clients always had a stdin).
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Selector {
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Selected {
    process: Option<Selector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SendInputRequest {
    process: Option<Selector>,
    input: Option<Input>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SendSignalRequest {
    process: Option<Selector>,
    signal: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateRequest {
    process: Option<Selector>,
    pty: Option<Value>,
}

fn live_error(e: LiveError) -> RpcError {
    match e {
        LiveError::NoCommand(pid) => {
            RpcError::new(Code::NotFound, format!("process with pid {pid} not found"))
        }
        LiveError::Dead(m) => RpcError::new(Code::Unavailable, format!("the sandbox ended: {m}")),
        LiveError::Command(m) => RpcError::new(Code::InvalidArgument, m),
        // As envd, which cannot look the user up.
        LiveError::User(m) => RpcError::new(Code::Unauthenticated, m),
        LiveError::Fork(m) | LiveError::Checkpoint(m) => RpcError::new(Code::Internal, m),
        LiveError::Busy => RpcError::new(Code::FailedPrecondition, "the sandbox is running code"),
        e @ LiveError::Paused => RpcError::new(Code::Unavailable, e.to_string()),
    }
}

/// The pid a selector names.
fn select(sb: &LiveSandbox, sel: Option<&Selector>) -> Result<u32, RpcError> {
    match sel {
        Some(Selector { pid: Some(pid), .. }) => {
            if sb.has_command(*pid) {
                Ok(*pid)
            } else {
                Err(live_error(LiveError::NoCommand(*pid)))
            }
        }
        Some(Selector { tag: Some(tag), .. }) => sb.command_by_tag(tag).ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("process with tag {tag:?} not found"),
            )
        }),
        _ => Err(RpcError::invalid("process: a pid or a tag is required")),
    }
}

/// envd's ProcessEvent for a command event.
fn event_json(ev: &CommandEvent) -> Value {
    match ev {
        CommandEvent::Stdout(d) => json!({"event": {"data": {"stdout": B64.encode(d)}}}),
        CommandEvent::Stderr(d) => json!({"event": {"data": {"stderr": B64.encode(d)}}}),
        CommandEvent::Pty(d) => json!({"event": {"data": {"pty": B64.encode(d)}}}),
        CommandEvent::End {
            exit_code,
            signal,
            error,
            ..
        } => {
            // Go's ProcessState, which envd reports: a signal gives exit
            // code -1, exited false and "signal: <name>".
            let (code, exited, status) = match signal {
                Some(s) => (-1, false, format!("signal: {}", signal_name(*s))),
                None => (*exit_code, true, format!("exit status {exit_code}")),
            };
            let mut end = json!({"exitCode": code, "exited": exited, "status": status});
            if let Some(e) = error {
                end["error"] = json!(e);
            }
            json!({"event": {"end": end}})
        }
    }
}

fn signal_name(sig: u32) -> &'static str {
    match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        6 => "aborted",
        9 => "killed",
        11 => "segmentation fault",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => "signal",
    }
}

/// (rows, columns) of a PTY message (`{"size": {"cols", "rows"}}`).
fn pty_size(v: &Value) -> Result<(u16, u16), RpcError> {
    let size = v.get("size").unwrap_or(&Value::Null);
    let dim = |name: &str| -> Result<u16, RpcError> {
        match size.get(name) {
            None | Some(Value::Null) => Ok(if name == "rows" { 24 } else { 80 }),
            Some(n) => n
                .as_u64()
                .filter(|&n| (1..=4096).contains(&n))
                .map(|n| n as u16)
                .ok_or_else(|| RpcError::invalid(format!("pty.size.{name} must be 1..4096"))),
        }
    };
    Ok((dim("rows")?, dim("cols")?))
}

fn start_json(pid: u32) -> Value {
    json!({"event": {"start": {"pid": pid}}})
}

/// Run `f` on the live sandbox (its actor).
async fn with_live<R: Send + 'static>(
    sbx: &Sbx,
    f: impl FnOnce(&mut LiveSandbox) -> Result<R, RpcError> + Send + 'static,
) -> Result<R, RpcError> {
    let r = sbx
        .state
        .sandboxes
        .with(&sbx.entry.id, sbx.entry.spec.owner, move |sb| match sb {
            Some(sb) if sb.is_alive() => f(sb),
            _ => Err(RpcError::new(Code::Unavailable, "the sandbox has ended")),
        })
        .await;
    match r {
        Ok(r) => r,
        Err(e) => Err(RpcError::new(
            Code::Unavailable,
            format!("the sandbox is not running: {e:?}"),
        )),
    }
}

/// Serve `process.Process/<method>`.
pub(crate) async fn call(
    sbx: &Sbx,
    method: &str,
    framing: Framing,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match method {
        "Start" => start(sbx, framing, headers, body).await,
        "Connect" => attach(sbx, framing, headers, body).await,
        "List" => connect::reply(framing, list(sbx).await),
        "SendInput" => connect::reply(framing, send_input(sbx, framing, body).await),
        "SendSignal" => connect::reply(framing, send_signal(sbx, framing, body).await),
        "CloseStdin" => connect::reply(framing, close_stdin(sbx, framing, body).await),
        "Update" => connect::reply(framing, update(sbx, framing, body).await),
        // Client streaming: served by `stream_input` before the body is
        // read whole; reaching here means it was sent unary.
        "StreamInput" => connect::reply::<()>(
            framing,
            Err(RpcError::invalid(
                "process.Process/StreamInput is client streaming: send application/connect+json envelopes",
            )),
        ),
        _ => connect::reply::<()>(
            framing,
            Err(RpcError::new(
                Code::NotFound,
                format!("process.Process has no method {method:?}"),
            )),
        ),
    }
}

fn parse<T: serde::de::DeserializeOwned>(framing: Framing, body: &[u8]) -> Result<T, RpcError> {
    connect::request(framing, body).map_err(RpcError::from)
}

fn keepalive() -> Value {
    json!({"event": {"keepalive": {}}})
}

async fn start(sbx: &Sbx, framing: Framing, headers: &HeaderMap, body: &[u8]) -> Response {
    let r = async {
        let req: StartRequest = parse(framing, body)?;
        let pty = req.pty.as_ref().map(pty_size).transpose()?;
        let p = req
            .process
            .ok_or_else(|| RpcError::invalid("process: the command to start is required"))?;
        if p.cmd.is_empty() {
            return Err(RpcError::invalid("process.cmd is empty"));
        }
        let spec = CommandSpec {
            cmd: p.cmd,
            args: p.args,
            env: p.envs.into_iter().collect(),
            cwd: p.cwd.filter(|c| !c.is_empty()),
            stdin: req.stdin.unwrap_or(true),
            tag: req.tag,
            pty,
            user: Some(super::user::from_headers(headers)),
        };
        let entry = sbx.entry.clone();
        with_live(sbx, move |sb| {
            let pid = sb.start(spec).map_err(live_error)?;
            Ok((pid, entry.subscribe(pid)))
        })
        .await
    }
    .await;
    match r {
        Ok((pid, rx)) => stream(sbx, pid, rx, headers, true),
        Err(e) => error_stream(framing, e),
    }
}

async fn attach(sbx: &Sbx, framing: Framing, headers: &HeaderMap, body: &[u8]) -> Response {
    let r = async {
        let req: Selected = parse(framing, body)?;
        let entry = sbx.entry.clone();
        with_live(sbx, move |sb| {
            let pid = select(sb, req.process.as_ref())?;
            Ok((pid, entry.subscribe(pid)))
        })
        .await
    }
    .await;
    match r {
        // Only a Start stream's deadline kills its command.
        Ok((pid, rx)) => stream(sbx, pid, rx, headers, false),
        Err(e) => error_stream(framing, e),
    }
}

fn error_stream(framing: Framing, e: RpcError) -> Response {
    connect::reply::<()>(framing, Err(e))
}

/// The stream of command `pid`: its start event, its output, its end.
fn stream(
    sbx: &Sbx,
    pid: u32,
    mut events: mpsc::Receiver<CommandEvent>,
    headers: &HeaderMap,
    kill_at_deadline: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Value, RpcError>>(16);
    let deadline = connect::deadline(headers)
        .filter(|d| !d.is_zero())
        .map(|d| tokio::time::Instant::now() + d);
    let state = sbx.state.clone();
    let (id, owner) = (sbx.entry.id.clone(), sbx.entry.spec.owner);
    tokio::spawn(async move {
        if tx.send(Ok(start_json(pid))).await.is_err() {
            return;
        }
        loop {
            let next = match deadline {
                Some(t) => match tokio::time::timeout_at(t, events.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        if kill_at_deadline {
                            let _ = state
                                .sandboxes
                                .with(&id, owner, move |sb| {
                                    if let Some(sb) = sb {
                                        let _ = sb.signal(pid, 9);
                                    }
                                })
                                .await;
                        }
                        let _ = tx
                            .send(Err(RpcError::new(
                                Code::DeadlineExceeded,
                                format!(
                                    "the command's time limit (Connect-Timeout-Ms) passed{}",
                                    if kill_at_deadline {
                                        "; it was killed"
                                    } else {
                                        ""
                                    }
                                ),
                            )))
                            .await;
                        return;
                    }
                },
                None => events.recv().await,
            };
            let Some(ev) = next else {
                // The sandbox ended under the command.
                let _ = tx
                    .send(Err(RpcError::new(
                        Code::Unavailable,
                        "the sandbox ended while the command ran",
                    )))
                    .await;
                return;
            };
            let end = matches!(ev, CommandEvent::End { .. });
            // A client that went away: stop following (the command runs on).
            if tx.send(Ok(event_json(&ev))).await.is_err() || end {
                return;
            }
        }
    });
    let opts = StreamOptions {
        keepalive: connect::keepalive_interval(headers).or(Some(Duration::from_secs(30))),
        keepalive_message: keepalive(),
        deadline: None,
    };
    connect::server_stream(rx, opts)
}

async fn list(sbx: &Sbx) -> Result<Value, RpcError> {
    with_live(sbx, |sb| {
        let processes: Vec<Value> = sb
            .commands()
            .into_iter()
            .map(|c| {
                let envs: serde_json::Map<String, Value> = c
                    .spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let mut config = json!({"cmd": c.spec.cmd, "args": c.spec.args, "envs": envs});
                if let Some(cwd) = &c.spec.cwd {
                    config["cwd"] = json!(cwd);
                }
                let mut info = json!({"config": config, "pid": c.pid});
                if let Some(tag) = &c.spec.tag {
                    info["tag"] = json!(tag);
                }
                info
            })
            .collect();
        Ok(json!({ "processes": processes }))
    })
    .await
}

async fn send_input(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, RpcError> {
    let req: SendInputRequest = parse(framing, body)?;
    let input = req.input.unwrap_or_default();
    // A terminal's input and a pipe's go the same way: the command's
    // descriptor 0 is whichever it has.
    let data = B64
        .decode(input.pty.or(input.stdin).unwrap_or_default())
        .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))?;
    with_live(sbx, move |sb| {
        let pid = select(sb, req.process.as_ref())?;
        sb.send_stdin(pid, &data).map_err(live_error)?;
        Ok(json!({}))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StreamInputRequest {
    start: Option<Selected>,
    data: Option<StreamInputData>,
    keepalive: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StreamInputData {
    input: Option<Input>,
}

/// `process.Process/StreamInput` (client streaming): a `start` naming the
/// process, then `data` messages, each written to its stdin (or terminal)
/// as it arrives, and `keepalive`s; the client ends it by closing its
/// side. The answer is one empty message.
pub(crate) async fn stream_input(sbx: &Sbx, framing: Framing, body: axum::body::Body) -> Response {
    use futures_util::StreamExt as _;
    if framing != Framing::Stream {
        return connect::reply::<()>(
            framing,
            Err(RpcError::invalid(
                "process.Process/StreamInput is client streaming: send application/connect+json envelopes",
            )),
        );
    }
    let r = async {
        let mut body = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut pid = None;
        loop {
            while let Some((_, m, used)) = connect::next_envelope(&buf)? {
                let req: StreamInputRequest = connect::message(m)?;
                buf.drain(..used);
                if let Some(start) = req.start {
                    if pid.is_some() {
                        return Err(RpcError::invalid("start was sent twice"));
                    }
                    pid = Some(with_live(sbx, move |sb| select(sb, start.process.as_ref())).await?);
                } else if let Some(d) = req.data {
                    let Some(p) = pid else {
                        return Err(RpcError::invalid("data came before start"));
                    };
                    let input = d.input.unwrap_or_default();
                    let data = B64
                        .decode(input.pty.or(input.stdin).unwrap_or_default())
                        .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))?;
                    with_live(sbx, move |sb| sb.send_stdin(p, &data).map_err(live_error)).await?;
                } else if req.keepalive.is_none() {
                    return Err(RpcError::invalid(
                        "a message must be start, data or keepalive",
                    ));
                }
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(RpcError::new(
                        Code::Canceled,
                        format!("the request stream broke: {e}"),
                    ))
                }
                None if buf.is_empty() => return Ok(json!({})),
                None => return Err(RpcError::from(connect::FrameError::Truncated)),
            }
        }
    }
    .await;
    connect::reply(framing, r)
}

async fn send_signal(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, RpcError> {
    let req: SendSignalRequest = parse(framing, body)?;
    let sig = match &req.signal {
        Value::String(s) if s == "SIGNAL_SIGKILL" => 9,
        Value::String(s) if s == "SIGNAL_SIGTERM" => 15,
        Value::Number(n) if matches!(n.as_u64(), Some(9 | 15)) => n.as_u64().unwrap_or(9) as u32,
        other => {
            return Err(RpcError::invalid(format!(
                "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM, not {other}"
            )))
        }
    };
    with_live(sbx, move |sb| {
        let pid = select(sb, req.process.as_ref())?;
        sb.signal(pid, sig).map_err(live_error)?;
        Ok(json!({}))
    })
    .await
}

async fn close_stdin(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, RpcError> {
    let req: Selected = parse(framing, body)?;
    with_live(sbx, move |sb| {
        let pid = select(sb, req.process.as_ref())?;
        sb.close_stdin(pid).map_err(live_error)?;
        Ok(json!({}))
    })
    .await
}

async fn update(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, RpcError> {
    let req: UpdateRequest = parse(framing, body)?;
    let Some(pty) = req.pty.as_ref() else {
        return Ok(json!({}));
    };
    let (rows, cols) = pty_size(pty)?;
    with_live(sbx, move |sb| {
        let pid = select(sb, req.process.as_ref())?;
        sb.resize_pty(pid, rows, cols).map_err(live_error)?;
        Ok(json!({}))
    })
    .await
}
