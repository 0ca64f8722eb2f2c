//! The MCP tools: their arguments (whose types give the JSON schemas), the
//! descriptions a model reads, and what each does, on the same primitives
//! as the HTTP handlers: the execution pool (`/v1/exec`) and the live
//! sandboxes' actors (`Sandboxes::run`, `with`).
//!
//! What a caller can fix (a timeout, out of memory, no such sandbox, a
//! missing or mistyped argument) is a tool result with `isError` and a
//! message saying what happened; only an unknown tool is a protocol error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rmcp::handler::server::tool::schema_for_input;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use rmcp::schemars::{self, JsonSchema};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroboot_engine::{CommandEvent, CommandSpec, ExecRequest, ExecResult, Language, LiveError};
use zeroboot_kernel::vfs::host::{HostFsError, HostKind, HOME};

use crate::sandboxes::{SandboxError, Spec};
use crate::AppState;

/// Default and longest time a `run_code` or `run_command` may run (seconds).
const DEFAULT_RUN_TIMEOUT: f64 = 30.0;
const MAX_RUN_TIMEOUT: f64 = crate::api::MAX_TIMEOUT_SECONDS;
/// Default time to live of a sandbox made by `create_sandbox` (seconds):
/// long, since the session's end kills it anyway.
const DEFAULT_SANDBOX_TIMEOUT: u64 = 3600;
/// Most bytes `read_file` returns, and `write_file` accepts.
const MAX_FILE_BYTES: usize = 4 << 20;
/// Most entries `list_files` prints.
const MAX_LISTED: usize = 1000;

/// Who is calling, and the sandboxes their session owns.
pub(super) struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub owner: Option<usize>,
    pub owned: &'a super::session::Owned,
}

/// A user-level failure: the message goes back as an `isError` result.
#[derive(Debug)]
pub(super) struct ToolError(pub String);

impl<T: Into<String>> From<T> for ToolError {
    fn from(m: T) -> ToolError {
        ToolError(m.into())
    }
}

type ToolResult = Result<CallToolResult, ToolError>;

// -- arguments ---------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunCodeArgs {
    /// The program to run. Python runs as a script: print what you want to
    /// see. JavaScript runs under Node.js (CommonJS, top-level await).
    code: String,
    /// "python" (default) or "javascript". With sandbox_id, the sandbox's
    /// own language is used and this must match it if given.
    #[serde(default)]
    language: Option<String>,
    /// Seconds the code may run before it is stopped (default 30, at most
    /// 300).
    #[serde(default)]
    timeout: Option<f64>,
    /// Run in this live sandbox (from create_sandbox), keeping variables,
    /// imports and files between calls. Omit it for a fresh, throwaway
    /// sandbox.
    #[serde(default)]
    sandbox_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateSandboxArgs {
    /// "python" (default: Python 3 with numpy, plus bash, coreutils, git
    /// and pip) or "node" (Node.js).
    #[serde(default)]
    template: Option<String>,
    /// Seconds the sandbox lives (default 3600). It is also killed when
    /// this MCP session ends.
    #[serde(default)]
    timeout: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SandboxArgs {
    /// The sandbox's id (from create_sandbox or list_sandboxes).
    sandbox_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ForkSandboxArgs {
    /// The sandbox to copy (from create_sandbox).
    sandbox_id: String,
    /// How many copies (1 to 100, default 1).
    #[serde(default)]
    count: Option<u64>,
    /// Seconds each copy lives (default 3600). Copies are also killed when
    /// this MCP session ends.
    #[serde(default)]
    timeout: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunCommandArgs {
    /// The sandbox's id (from create_sandbox).
    sandbox_id: String,
    /// A shell command line, run as `bash -l -c COMMAND` (`sh -c` where
    /// the sandbox has no bash), e.g. "ls -la" or "python3 script.py".
    command: String,
    /// Working directory (default /home/user).
    #[serde(default)]
    cwd: Option<String>,
    /// Seconds the command may run before it is killed (default 30, at
    /// most 300).
    #[serde(default)]
    timeout: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadFileArgs {
    /// The sandbox's id.
    sandbox_id: String,
    /// The file's path; relative paths start at /home/user.
    path: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteFileArgs {
    /// The sandbox's id.
    sandbox_id: String,
    /// The file's path; relative paths start at /home/user. Missing
    /// directories are created; an existing file is replaced.
    path: String,
    /// The file's new content (text).
    content: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListFilesArgs {
    /// The sandbox's id.
    sandbox_id: String,
    /// The directory to list (default /home/user).
    #[serde(default)]
    path: Option<String>,
    /// Levels to descend (default 1: the directory's entries only).
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

// -- the list ----------------------------------------------------------------

fn tool<T: JsonSchema + 'static>(name: &'static str, description: &'static str) -> Tool {
    let schema = match schema_for_input::<T>() {
        Ok(s) => s,
        // Our argument types are all structs (objects): a bug otherwise.
        Err(e) => {
            tracing::error!(tool = name, error = %e, "tool schema");
            rmcp::handler::server::common::schema_for_empty_input()
        }
    };
    Tool::new(name, description, schema)
}

/// Every tool, as `tools/list` shows them.
pub(super) fn list() -> Vec<Tool> {
    let ro = || ToolAnnotations::new().read_only(true);
    vec![
        tool::<RunCodeArgs>(
            "run_code",
            "Run Python or JavaScript code in a secure, isolated sandbox (its own KVM virtual \
             machine, started in about a millisecond) and get back its stdout, stderr and exit \
             code. Without sandbox_id each call starts from a clean interpreter and nothing \
             persists. With the sandbox_id of a sandbox from create_sandbox, the code runs in that \
             sandbox and variables, imports and files persist between calls, as in a notebook. \
             Python has numpy. There is no network access. A run that exceeds its timeout is \
             stopped (and, in a live sandbox, ends that sandbox).",
        )
        .annotate(ToolAnnotations::new().open_world(false)),
        tool::<CreateSandboxArgs>(
            "create_sandbox",
            "Create a live sandbox that keeps its state between calls: run_code with its \
             sandbox_id keeps Python/JavaScript variables, run_command runs shell commands in it, \
             and read_file/write_file/list_files reach its files. Returns the sandbox_id. The \
             sandbox is killed when this MCP session ends, at its timeout, or by kill_sandbox.",
        ),
        tool::<RunCommandArgs>(
            "run_command",
            "Run a shell command in a live sandbox (from create_sandbox) and get back its stdout, \
             stderr and exit code, e.g. \"ls -la\", \"python3 main.py\", \"git init\". It runs \
             in /home/user unless cwd is given. There is no network access.",
        ),
        tool::<ReadFileArgs>(
            "read_file",
            "Read a file in a live sandbox. Text comes back as text, PNG/JPEG/GIF/WebP images as \
             images, other binary files as base64.",
        )
        .annotate(ro()),
        tool::<WriteFileArgs>(
            "write_file",
            "Write a text file in a live sandbox, creating missing directories and replacing an \
             existing file.",
        ),
        tool::<ListFilesArgs>(
            "list_files",
            "List a directory in a live sandbox (default /home/user): one entry a line, \
             directories ending in /, files with their size.",
        )
        .annotate(ro()),
        tool::<ForkSandboxArgs>(
            "fork_sandbox",
            "Copy a live sandbox as it is now, in about a millisecond per copy: each copy has \
             its variables, files and running commands, then goes its own way (the original \
             is unchanged). Use it to try several approaches from the same state. Returns the \
             copies' sandbox ids.",
        ),
        tool::<SandboxArgs>(
            "kill_sandbox",
            "Kill a live sandbox now, freeing its memory. Its state is lost.",
        )
        .annotate(ToolAnnotations::new().destructive(true)),
        tool::<NoArgs>(
            "list_sandboxes",
            "List the live sandboxes you can use, with their template, how long they have left, \
             and whether this session owns them (those are killed when it ends).",
        )
        .annotate(ro()),
    ]
}

// -- dispatch ----------------------------------------------------------------

/// Parse a tool's arguments, naming the argument that is missing or wrong.
fn args<T: DeserializeOwned>(raw: Option<JsonObject>) -> Result<T, ToolError> {
    let v = Value::Object(raw.unwrap_or_default());
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names Rust types ("f64", "u32"); a model wants words.
        let inner = inner
            .replace("expected f64", "expected a number")
            .replace("expected u64", "expected a non-negative integer")
            .replace("expected u32", "expected a non-negative integer");
        if path == "." {
            // Missing and unknown fields: serde's message names the field.
            ToolError(format!("invalid arguments: {inner}"))
        } else {
            ToolError(format!("invalid argument `{path}`: {inner}"))
        }
    })
}

/// Call tool `name`; None: there is no such tool.
pub(super) async fn call(
    ctx: &Ctx<'_>,
    name: &str,
    raw: Option<JsonObject>,
) -> Option<CallToolResult> {
    let r = match name {
        "run_code" => match args(raw) {
            Ok(a) => run_code(ctx, a).await,
            Err(e) => Err(e),
        },
        "create_sandbox" => match args(raw) {
            Ok(a) => create_sandbox(ctx, a).await,
            Err(e) => Err(e),
        },
        "run_command" => match args(raw) {
            Ok(a) => run_command(ctx, a).await,
            Err(e) => Err(e),
        },
        "read_file" => match args(raw) {
            Ok(a) => read_file(ctx, a).await,
            Err(e) => Err(e),
        },
        "write_file" => match args(raw) {
            Ok(a) => write_file(ctx, a).await,
            Err(e) => Err(e),
        },
        "list_files" => match args(raw) {
            Ok(a) => list_files(ctx, a).await,
            Err(e) => Err(e),
        },
        "fork_sandbox" => match args(raw) {
            Ok(a) => fork_sandbox(ctx, a).await,
            Err(e) => Err(e),
        },
        "kill_sandbox" => match args(raw) {
            Ok(a) => kill_sandbox(ctx, a),
            Err(e) => Err(e),
        },
        "list_sandboxes" => match args::<NoArgs>(raw) {
            Ok(_) => Ok(list_sandboxes(ctx)),
            Err(e) => Err(e),
        },
        _ => return None,
    };
    Some(r.unwrap_or_else(|ToolError(m)| CallToolResult::error(vec![ContentBlock::text(m)])))
}

// -- helpers -----------------------------------------------------------------

fn timeout_arg(t: Option<f64>) -> Result<Duration, ToolError> {
    let t = t.unwrap_or(DEFAULT_RUN_TIMEOUT);
    if !(t > 0.0 && t <= MAX_RUN_TIMEOUT) {
        return Err(format!(
            "invalid argument `timeout`: must be > 0 and <= {MAX_RUN_TIMEOUT} seconds"
        )
        .into());
    }
    Ok(Duration::from_secs_f64(t))
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

fn sandbox_error(e: SandboxError) -> ToolError {
    match e {
        SandboxError::NotFound(m) => ToolError(format!(
            "{m}: create one with create_sandbox (list_sandboxes shows yours)"
        )),
        SandboxError::Ended(m)
        | SandboxError::TooMany(m)
        | SandboxError::Conflict(m)
        | SandboxError::Internal(m)
        | SandboxError::Draining(m) => ToolError(m),
    }
}

fn live_error(id: &str, e: LiveError) -> ToolError {
    match e {
        LiveError::Dead(why) => ToolError(format!("sandbox \"{id}\" has ended: {why}")),
        LiveError::Busy => ToolError(format!(
            "sandbox \"{id}\" is already running code; wait for that run to finish"
        )),
        e => ToolError(e.to_string()),
    }
}

fn fs_error(e: HostFsError) -> ToolError {
    match e {
        HostFsError::NoSpace => {
            ToolError("the sandbox's disk is full (its writable space is limited)".into())
        }
        e => ToolError(e.to_string()),
    }
}

/// The language a name stands for, if this server has its template.
fn language(state: &AppState, name: &str, what: &str) -> Result<Language, ToolError> {
    let mut have: Vec<&str> = state.templates.keys().map(|l| l.name()).collect();
    have.sort_unstable();
    match Language::parse(name) {
        Some(lang) if state.templates.contains_key(&lang) => Ok(lang),
        Some(_) => Err(format!(
            "invalid argument `{what}`: {name:?} is not available on this server (it has: {})",
            have.join(", ")
        )
        .into()),
        None => Err(format!(
            "invalid argument `{what}`: unknown {what} {name:?} (this server has: {})",
            have.join(", ")
        )
        .into()),
    }
}

/// An execution's result as a model reads it: the output, then what went
/// wrong if anything did (`isError` then).
fn exec_result(r: &ExecResult, timeout: Duration, live: Option<(&str, bool)>) -> CallToolResult {
    let mut text = r.stdout.clone();
    if !r.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&r.stderr);
    }
    let mut problems = Vec::new();
    if let Some(e) = &r.error {
        problems.push(format!("zeroboot failed to run the code: {e}"));
    } else if r.timed_out {
        problems.push(format!(
            "Timed out: the code ran past its timeout of {} and was stopped.",
            seconds(timeout)
        ));
    } else if r.out_of_memory {
        problems.push(
            "Out of memory: the code used more memory than the sandbox allows and was stopped."
                .into(),
        );
    } else if r.exit_code != 0 {
        problems.push(format!("Exit code {}.", r.exit_code));
    }
    if r.disk_full {
        problems.push("The sandbox's disk filled up: a write failed with ENOSPC.".into());
    }
    if r.fds_exhausted {
        problems.push("The code hit the limit on open files (EMFILE).".into());
    }
    if r.stdout_truncated || r.stderr_truncated {
        problems.push("The output was cut at the output limit.".into());
    }
    if let Some((id, false)) = live {
        problems.push(format!(
            "Sandbox \"{id}\" has ended with this run (its state is gone); create a new one."
        ));
    }
    let failed = r.error.is_some() || r.timed_out || r.out_of_memory || r.exit_code != 0;
    if !problems.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&problems.join("\n"));
    }
    if text.is_empty() {
        text = "(no output)".into();
    }
    let mut out = if failed {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    out.structured_content = Some(json!({
        "stdout": r.stdout,
        "stderr": r.stderr,
        "exit_code": r.exit_code,
        "timed_out": r.timed_out,
        "out_of_memory": r.out_of_memory,
        "truncated": r.stdout_truncated || r.stderr_truncated,
        "exec_time_ms": (r.exec_time.as_secs_f64() * 1e6).round() / 1e3,
    }));
    out
}

// -- the tools ---------------------------------------------------------------

async fn run_code(ctx: &Ctx<'_>, a: RunCodeArgs) -> ToolResult {
    let state = ctx.state;
    if a.code.len() > state.config.max_code_bytes {
        return Err(format!(
            "invalid argument `code`: {} bytes; the limit is {}",
            a.code.len(),
            state.config.max_code_bytes
        )
        .into());
    }
    let timeout = timeout_arg(a.timeout)?;
    if let Some(id) = a.sandbox_id {
        let entry = state.sandboxes.get(&id, ctx.owner).map_err(sandbox_error)?;
        if let Some(name) = &a.language {
            let lang = Language::parse(name)
                .ok_or_else(|| format!("invalid argument `language`: unknown language {name:?}"))?;
            if lang != entry.spec.language {
                return Err(format!(
                    "sandbox \"{id}\" runs {}, not {}; omit language or create a {} sandbox",
                    entry.spec.language.name(),
                    lang.name(),
                    lang.name()
                )
                .into());
            }
        }
        let r = state
            .sandboxes
            .run(&id, ctx.owner, a.code, timeout, state.config.output_cap)
            .await
            .map_err(sandbox_error)?
            .map_err(|e| live_error(&id, e))?;
        crate::api::record(state, "sandbox", &r);
        let alive = state.sandboxes.get(&id, ctx.owner).is_ok();
        if !alive {
            ctx.owned.forget(&id);
        }
        return Ok(exec_result(&r, timeout, Some((&id, alive))));
    }
    let lang = language(state, a.language.as_deref().unwrap_or("python"), "language")?;
    let template = state
        .templates
        .get(&lang)
        .cloned()
        .ok_or("language not available")?;
    let mut req = ExecRequest::new(a.code);
    req.timeout = timeout;
    req.output_cap = state.config.output_cap;
    let adm = state
        .pool
        .admit(1)
        .map_err(|_| "the server is busy (too many executions queued); try again shortly")?;
    let r = adm.run(template, req).await;
    crate::api::record(state, lang.name(), &r);
    Ok(exec_result(&r, timeout, None))
}

async fn create_sandbox(ctx: &Ctx<'_>, a: CreateSandboxArgs) -> ToolResult {
    let state = ctx.state;
    let name = a.template.unwrap_or_else(|| "python".into());
    let lang = match name.as_str() {
        "base" => Language::Python,
        n => language(state, n, "template")?,
    };
    let template = state
        .templates
        .get(&lang)
        .cloned()
        .ok_or_else(|| format!("template {name:?} is not available on this server"))?;
    let max = state.sandboxes.limits.max_timeout;
    let ttl = a.timeout.unwrap_or(DEFAULT_SANDBOX_TIMEOUT.min(max));
    if ttl == 0 || ttl > max {
        return Err(
            format!("invalid argument `timeout`: must be between 1 and {max} seconds").into(),
        );
    }
    let spec = Spec {
        template: lang.name().to_string(),
        language: lang,
        owner: ctx.owner,
        metadata: [("created_by".to_string(), "mcp".to_string())].into(),
        secure: false,
        memory_mb: state.config.max_memory_mb,
        disk_mb: state.config.max_disk_mb,
        // The server's default egress (none unless its network is on).
        network: Arc::new(std::sync::Mutex::new(
            crate::network::setup(&state.config.network, None, None, String::new())
                .map_err(|e| e.message)?,
        )),
        auto_pause: false,
        auto_pause_memory: true,
    };
    let e = state
        .sandboxes
        .create(template, spec, Vec::new(), Duration::from_secs(ttl))
        .await
        .map_err(sandbox_error)?;
    ctx.owned.add(&e.id, ctx.owner);
    tracing::info!(sandbox = %e.id, template = lang.name(), "sandbox created (mcp)");
    let mut r = CallToolResult::success(vec![ContentBlock::text(format!(
        "Created sandbox {} ({}), living {ttl} s (or until this session ends). Pass \
         sandbox_id \"{}\" to run_code, run_command, read_file, write_file and list_files.",
        e.id,
        lang.name(),
        e.id
    ))]);
    r.structured_content = Some(json!({
        "sandbox_id": e.id,
        "template": lang.name(),
        "timeout": ttl,
    }));
    Ok(r)
}

async fn run_command(ctx: &Ctx<'_>, a: RunCommandArgs) -> ToolResult {
    let state = ctx.state;
    let timeout = timeout_arg(a.timeout)?;
    if a.command.trim().is_empty() {
        return Err("invalid argument `command`: it is empty".into());
    }
    let id = a.sandbox_id;
    let entry = state.sandboxes.get(&id, ctx.owner).map_err(sandbox_error)?;
    let started = {
        let entry = entry.clone();
        let command = a.command;
        let cwd = a.cwd.filter(|c| !c.is_empty());
        state
            .sandboxes
            .with(&id, ctx.owner, move |sb| {
                let Some(sb) = sb.filter(|sb| sb.is_alive()) else {
                    return Err(LiveError::Dead("it is not running".into()));
                };
                let bash = sb
                    .sandbox_mut()
                    .is_some_and(|s| s.k.vfs_mut().host_stat("/bin/bash").is_ok());
                let (cmd, mut args) = if bash {
                    ("/bin/bash", vec!["-l".to_string()])
                } else {
                    ("/bin/sh", Vec::new())
                };
                args.extend(["-c".to_string(), command]);
                let spec = CommandSpec {
                    cmd: cmd.into(),
                    args,
                    cwd,
                    ..CommandSpec::default()
                };
                let pid = sb.start(spec)?;
                Ok((pid, entry.subscribe(pid)))
            })
            .await
            .map_err(sandbox_error)?
    };
    let (pid, mut events) = started.map_err(|e| live_error(&id, e))?;
    let cap = state.config.output_cap;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let start = Instant::now();
    let end = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(CommandEvent::Stdout(d))) | Ok(Some(CommandEvent::Pty(d))) => {
                truncated |= push_capped(&mut out, &d, cap);
            }
            Ok(Some(CommandEvent::Stderr(d))) => truncated |= push_capped(&mut err, &d, cap),
            Ok(Some(CommandEvent::End {
                exit_code,
                signal,
                error,
                ..
            })) => break Some((exit_code, signal, error)),
            Ok(None) => break None,
            Err(_) => {
                let _ = state
                    .sandboxes
                    .with(&id, ctx.owner, move |sb| {
                        if let Some(sb) = sb {
                            let _ = sb.signal(pid, 9);
                        }
                    })
                    .await;
                let mut text = String::from_utf8_lossy(&out).into_owned();
                append_stderr(&mut text, &err);
                text.push_str(&format!(
                    "Timed out: the command ran past its timeout of {} and was killed.",
                    seconds(timeout)
                ));
                return Err(text.into());
            }
        }
    };
    let mut text = String::from_utf8_lossy(&out).into_owned();
    append_stderr(&mut text, &err);
    let (exit_code, failed) = match end {
        None => {
            text.push_str(&format!(
                "Sandbox \"{id}\" ended while the command ran; its state is gone."
            ));
            ctx.owned.forget(&id);
            return Err(text.into());
        }
        Some((_, _, Some(e))) => {
            text.push_str(&e);
            return Err(text.into());
        }
        Some((code, Some(sig), None)) => {
            text.push_str(&format!("Killed by signal {sig}."));
            (code, true)
        }
        Some((code, None, None)) => {
            if code != 0 {
                text.push_str(&format!("Exit code {code}."));
            }
            (code, code != 0)
        }
    };
    if truncated {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("The output was cut at the output limit.");
    }
    if text.is_empty() {
        text = "(no output)".into();
    }
    let mut r = if failed {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    r.structured_content = Some(json!({
        "stdout": String::from_utf8_lossy(&out),
        "stderr": String::from_utf8_lossy(&err),
        "exit_code": exit_code,
        "duration_ms": (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
    }));
    Ok(r)
}

/// Append `data` to `buf` up to `cap` bytes; whether some was dropped.
fn push_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

fn append_stderr(text: &mut String, err: &[u8]) {
    if !err.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&String::from_utf8_lossy(err));
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

/// Run `f` on the sandbox's file system (on its actor).
async fn on_vfs<R: Send + 'static>(
    ctx: &Ctx<'_>,
    id: &str,
    f: impl FnOnce(&mut zeroboot_kernel::vfs::Vfs) -> Result<R, HostFsError> + Send + 'static,
) -> Result<R, ToolError> {
    let r = ctx
        .state
        .sandboxes
        .with(id, ctx.owner, move |sb| {
            sb.and_then(|sb| sb.sandbox_mut()).map(|s| f(s.k.vfs_mut()))
        })
        .await
        .map_err(sandbox_error)?;
    match r {
        Some(r) => r.map_err(fs_error),
        None => Err(format!("sandbox \"{id}\" has ended").into()),
    }
}

/// The MIME type of an image file by its first bytes.
fn image_type(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

async fn read_file(ctx: &Ctx<'_>, a: ReadFileArgs) -> ToolResult {
    let path = a.path;
    let data = on_vfs(ctx, &a.sandbox_id, move |v| v.host_read(&path)).await?;
    if data.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is {} bytes; read_file returns at most {MAX_FILE_BYTES}: use run_command \
             with head, tail or grep to see part of it",
            data.len()
        )
        .into());
    }
    let b64 = || base64::engine::general_purpose::STANDARD.encode(data.as_slice());
    let content = if let Some(mime) = image_type(&data) {
        ContentBlock::image(b64(), mime)
    } else {
        match std::str::from_utf8(&data) {
            Ok(s) => ContentBlock::text(s),
            Err(_) => ContentBlock::text(format!(
                "(binary file, {} bytes, base64:)\n{}",
                data.len(),
                b64()
            )),
        }
    };
    Ok(CallToolResult::success(vec![content]))
}

async fn write_file(ctx: &Ctx<'_>, a: WriteFileArgs) -> ToolResult {
    if a.content.len() > MAX_FILE_BYTES {
        return Err(format!(
            "invalid argument `content`: {} bytes; write_file takes at most {MAX_FILE_BYTES}",
            a.content.len()
        )
        .into());
    }
    let (path, data) = (a.path, a.content.into_bytes());
    let e = on_vfs(ctx, &a.sandbox_id, move |v| v.host_write(&path, data)).await?;
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "Wrote {} bytes to {}.",
        e.size, e.path
    ))]))
}

async fn list_files(ctx: &Ctx<'_>, a: ListFilesArgs) -> ToolResult {
    let path = a
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| HOME.into());
    let depth = a.depth.unwrap_or(1).clamp(1, 10);
    let shown = path.clone();
    let entries = on_vfs(ctx, &a.sandbox_id, move |v| v.host_list(&path, depth)).await?;
    let mut text = String::new();
    for e in entries.iter().take(MAX_LISTED) {
        match e.kind {
            HostKind::Dir => text.push_str(&format!("{}/\n", e.path)),
            HostKind::Symlink => text.push_str(&format!(
                "{} -> {}\n",
                e.path,
                e.symlink_target.as_deref().unwrap_or("?")
            )),
            _ => text.push_str(&format!("{} ({} bytes)\n", e.path, e.size)),
        }
    }
    if entries.len() > MAX_LISTED {
        text.push_str(&format!(
            "... and {} more entries (list a subdirectory, or a smaller depth)\n",
            entries.len() - MAX_LISTED
        ));
    }
    if entries.is_empty() {
        text = format!("{shown} is empty\n");
    }
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

async fn fork_sandbox(ctx: &Ctx<'_>, a: ForkSandboxArgs) -> ToolResult {
    let count = a.count.unwrap_or(1);
    if !(1..=100).contains(&count) {
        return Err("invalid argument `count`: must be from 1 to 100"
            .to_string()
            .into());
    }
    let max = ctx.state.sandboxes.limits.max_timeout;
    let ttl = a.timeout.unwrap_or(DEFAULT_SANDBOX_TIMEOUT.min(max));
    if ttl == 0 || ttl > max {
        return Err(
            format!("invalid argument `timeout`: must be between 1 and {max} seconds").into(),
        );
    }
    let copies = ctx
        .state
        .sandboxes
        .fork(
            &a.sandbox_id,
            ctx.owner,
            count as usize,
            Duration::from_secs(ttl),
        )
        .await
        .map_err(sandbox_error)?;
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    for c in copies {
        match c {
            Ok(e) => {
                ctx.owned.add(&e.id, ctx.owner);
                ids.push(e.id.clone());
            }
            Err(err) => failed.push(sandbox_error(err).0),
        }
    }
    if ids.is_empty() {
        return Err(format!("no copy could be made: {}", failed.join("; ")).into());
    }
    let mut text = format!(
        "Made {} cop{} of sandbox {}: {}.",
        ids.len(),
        if ids.len() == 1 { "y" } else { "ies" },
        a.sandbox_id,
        ids.join(", ")
    );
    if !failed.is_empty() {
        text.push_str(&format!(
            " {} could not be made: {}",
            failed.len(),
            failed.join("; ")
        ));
    }
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({ "sandbox_ids": ids, "errors": failed }));
    Ok(r)
}

fn kill_sandbox(ctx: &Ctx<'_>, a: SandboxArgs) -> ToolResult {
    ctx.state
        .sandboxes
        .kill(&a.sandbox_id, ctx.owner)
        .map_err(sandbox_error)?;
    ctx.owned.forget(&a.sandbox_id);
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "Killed sandbox {}.",
        a.sandbox_id
    ))]))
}

fn list_sandboxes(ctx: &Ctx<'_>) -> CallToolResult {
    let now = std::time::SystemTime::now();
    let mut list = ctx.state.sandboxes.list(ctx.owner);
    list.sort_by_key(|e| e.started_at);
    let mut text = String::new();
    let mut items = Vec::new();
    for e in &list {
        let left = e
            .life()
            .end_at
            .duration_since(now)
            .unwrap_or_default()
            .as_secs();
        let mine = ctx.owned.has(&e.id);
        text.push_str(&format!(
            "{}  {}  {left} s left{}\n",
            e.id,
            e.spec.template,
            if mine { "  (this session's)" } else { "" }
        ));
        items.push(json!({
            "sandbox_id": e.id,
            "template": e.spec.template,
            "seconds_left": left,
            "owned_by_this_session": mine,
        }));
    }
    if list.is_empty() {
        text = "No live sandboxes: create one with create_sandbox.".into();
    }
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({ "sandboxes": items }));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn obj(v: Value) -> Option<JsonObject> {
        match v {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let e = args::<RunCodeArgs>(obj(json!({}))).err().unwrap().0;
        assert!(e.contains("missing field `code`"), "{e}");
        let e = args::<RunCodeArgs>(obj(json!({"code": 5})))
            .err()
            .unwrap()
            .0;
        assert!(e.starts_with("invalid argument `code`"), "{e}");
        let e = args::<RunCodeArgs>(obj(json!({"code": "", "timeout": "x"})))
            .err()
            .unwrap()
            .0;
        assert!(e.contains("`timeout`") && e.contains("a number"), "{e}");
        let e = args::<RunCodeArgs>(obj(json!({"code": "", "timeout_seconds": 1})))
            .err()
            .unwrap()
            .0;
        assert!(e.contains("unknown field `timeout_seconds`"), "{e}");
        assert!(args::<NoArgs>(None).is_ok());
    }

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = list();
        assert_eq!(tools.len(), 9);
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                t.name
            );
        }
        let run = tools.iter().find(|t| t.name == "run_code").unwrap();
        assert_eq!(run.input_schema["required"], json!(["code"]));
        assert!(run.input_schema["properties"]["code"]["description"].is_string());
    }

    #[test]
    fn images_are_recognised() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_type(b"hello"), None);
    }
}
