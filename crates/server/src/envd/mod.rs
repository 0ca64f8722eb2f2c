//! E2B's in-sandbox services (envd, DESIGN.md §6) served by the VMM: a
//! request naming a sandbox (`E2b-Sandbox-Id` and `E2b-Sandbox-Port`
//! headers, or a `<port>-<id>.<domain>` host) goes to that sandbox's
//! envd, whatever its path, before the server's own routes.
//!
//! - `connect`: Connect RPC framing (JSON codec), shared by the services.
//! - `filesystem`: `filesystem.Filesystem/*`, on the sandbox's VFS through
//!   its actor (`Sandboxes::with`), never by running code in the guest.
//! - `files`: `GET/POST /files` (download, upload).
//!
//! - `process`: `process.Process/*`, commands the kernel starts itself
//!   (`LiveSandbox::start`), streamed as the actor steps the sandbox.
//! - `user`: which of the sandbox's accounts a request acts as.

pub mod connect;
mod files;
mod filesystem;
pub(crate) mod interpreter;
mod process;
mod user;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroboot_engine::LiveSandbox;

use crate::sandboxes::{Entry, SandboxError};
use crate::AppState;

/// envd's port.
pub const ENVD_PORT: u16 = 49983;
/// The code interpreter's port (`interpreter`, in sandboxes of the
/// code-interpreter template).
pub const CODE_INTERPRETER_PORT: u16 = 49999;

/// envd state the server keeps across requests: the polled watchers
/// (`CreateWatcher` / `GetWatcherEvents`).
#[derive(Default)]
pub struct EnvdState {
    watchers: Mutex<HashMap<String, filesystem::Polled>>,
    /// WatchDir streams open (a gauge: streams a client dropped must go).
    streams: std::sync::atomic::AtomicU64,
}

impl EnvdState {
    /// Prometheus lines for /v1/metrics.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let polled = self.watchers.lock().map(|w| w.len()).unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP zeroboot_envd_watch_streams envd WatchDir streams open.\n# TYPE zeroboot_envd_watch_streams gauge\nzeroboot_envd_watch_streams {}\n# HELP zeroboot_envd_watchers envd polled watchers (CreateWatcher) held.\n# TYPE zeroboot_envd_watchers gauge\nzeroboot_envd_watchers {polled}",
            self.streams.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// Which sandbox and port a request is for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub id: String,
    port: u16,
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// The target named by the headers, or by a `<port>-<id>.<domain>` host.
/// `Err` for a named target that is malformed.
pub(crate) fn target(headers: &HeaderMap) -> Option<Result<Target, String>> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(id) = h("e2b-sandbox-id") {
        let port = match h("e2b-sandbox-port") {
            None => Ok(ENVD_PORT),
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("E2b-Sandbox-Port {p:?} is not a port")),
        };
        return Some(port.and_then(|port| {
            if is_id(id) {
                Ok(Target {
                    id: id.to_string(),
                    port,
                })
            } else {
                Err(format!("E2b-Sandbox-Id {id:?} is not a sandbox id"))
            }
        }));
    }
    let host = h("host")?;
    let (label, rest) = host.split_once('.')?;
    let (port, id) = label.split_once('-')?;
    let port = port.parse::<u16>().ok()?;
    // A domain after the label, and an id's shape: anything else is an
    // ordinary host name for the server itself.
    if rest.is_empty() || !is_id(id) {
        return None;
    }
    Some(Ok(Target {
        id: id.to_ascii_lowercase(),
        port,
    }))
}

/// An error in envd's (and E2B's proxy's) JSON shape.
pub(crate) fn http_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message.into() })),
    )
        .into_response()
}

/// The middleware: in-sandbox requests to envd, others on to the routes.
pub async fn route(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(t) = target(req.headers()) else {
        return next.run(req).await;
    };
    let resp = match t {
        Ok(t) => serve(&state, t, req).await,
        Err(m) => http_error(StatusCode::BAD_REQUEST, m),
    };
    state.metrics.request("envd", resp.status().as_u16());
    resp
}

/// Why the sandbox cannot be reached: E2B's proxy answers 502 with "was
/// not found" in the message (the SDKs raise SandboxNotRunning on it) or
/// "port is not open" (SandboxUnreachable).
fn unreachable(e: SandboxError, id: &str) -> Response {
    let m = match e {
        SandboxError::NotFound(_) => format!("The sandbox {id} was not found"),
        SandboxError::Ended(m) => match m.split_once("not found: ") {
            Some((_, why)) => format!("The sandbox {id} was not found: {why}"),
            None => format!("The sandbox {id} was not found: {m}"),
        },
        SandboxError::Conflict(m) => format!("{m}: its port is not open while it is paused"),
        SandboxError::TooMany(m) | SandboxError::Internal(m) | SandboxError::Draining(m) => m,
    };
    http_error(StatusCode::BAD_GATEWAY, m)
}

/// A sandbox as envd's handlers see it.
pub(crate) struct Sbx {
    pub state: Arc<AppState>,
    pub entry: Arc<Entry>,
}

impl Sbx {
    /// Run `f` on the sandbox's kernel, on its actor. None: it ended.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut zeroboot_kernel::Kernel) -> R + Send + 'static,
    ) -> Result<R, Response> {
        let id = self.entry.id.clone();
        let r = self
            .state
            .sandboxes
            .with(
                &id,
                self.entry.spec.owner,
                move |sb: Option<&mut LiveSandbox>| {
                    sb.and_then(|s| s.sandbox_mut()).map(|s| f(&mut s.k))
                },
            )
            .await;
        match r {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(unreachable(
                SandboxError::NotFound(String::new()),
                &self.entry.id,
            )),
            Err(e) => Err(unreachable(e, &id)),
        }
    }
}

async fn serve(state: &Arc<AppState>, t: Target, req: Request) -> Response {
    if t.port != ENVD_PORT && t.port != CODE_INTERPRETER_PORT {
        return http_error(
            StatusCode::BAD_GATEWAY,
            format!(
                "The sandbox {} is running but port {} is not open: only envd (49983) and the code interpreter (49999) are served inside sandboxes",
                t.id, t.port
            ),
        );
    }
    let entry = match state.sandboxes.find(&t.id) {
        Ok(e) => e,
        Err(e) => return unreachable(e, &t.id),
    };
    if t.port == CODE_INTERPRETER_PORT {
        if entry.spec.language != zeroboot_engine::Language::CodeInterpreter {
            return http_error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "The sandbox {} is running but port {} is not open: the code interpreter runs in sandboxes of the code-interpreter-v1 template (this one is {})",
                    t.id, t.port, entry.spec.template
                ),
            );
        }
        // As E2B's code interpreter, which checks no envd token (its SDKs
        // send none to /contexts); the sandbox id is the secret.
        let sbx = Sbx {
            state: state.clone(),
            entry,
        };
        let (parts, body) = req.into_parts();
        let cap = state.config.max_output_bytes;
        return interpreter::serve(&sbx, &parts.method, parts.uri.path(), body, cap).await;
    }
    if entry.spec.secure {
        let token = req
            .headers()
            .get("x-access-token")
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        let signed = req.uri().path() == "/files"
            && files::signed(
                req.uri().query().unwrap_or(""),
                req.method() == Method::POST,
                &entry.access_token,
            );
        if !signed && !bool::from(token.ct_eq(entry.access_token.as_bytes())) {
            return http_error(
                StatusCode::UNAUTHORIZED,
                "this sandbox is secure: X-Access-Token must be its envdAccessToken (or /files URLs signed with it)",
            );
        }
    }
    let sbx = Sbx {
        state: state.clone(),
        entry,
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/health") => StatusCode::NO_CONTENT.into_response(),
        (&Method::POST, "/init") => {
            // The orchestrator's call; accepted (and its body read) so
            // clients that send it get envd's answer.
            let _ = axum::body::to_bytes(body, connect::MAX_REQUEST_BYTES).await;
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::GET, "/files") => files::download(&sbx, &parts).await,
        (&Method::POST, "/files") => files::upload(&sbx, &parts, body).await,
        (_, "/files") | (_, "/health") | (_, "/init") => http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", parts.method),
        ),
        (m, p)
            if p.starts_with("/filesystem.Filesystem/") || p.starts_with("/process.Process/") =>
        {
            if m != Method::POST {
                return http_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Connect calls are POST requests",
                );
            }
            rpc(&sbx, &parts, body, p).await
        }
        _ => http_error(
            StatusCode::NOT_FOUND,
            format!("envd has no {} {path}", parts.method),
        ),
    }
}

async fn rpc(sbx: &Sbx, parts: &axum::http::request::Parts, body: Body, path: &str) -> Response {
    let framing = match connect::framing(&parts.headers) {
        Ok(f) => f,
        Err(e) => return connect::RpcError::from(e).into_response(),
    };
    if path == "/process.Process/StreamInput" {
        return process::stream_input(sbx, framing, body).await;
    }
    let body = match axum::body::to_bytes(body, connect::MAX_REQUEST_BYTES + 5).await {
        Ok(b) => b,
        Err(_) => {
            return connect::reply::<()>(
                framing,
                Err(connect::RpcError::new(
                    connect::Code::ResourceExhausted,
                    format!("request body over {} bytes", connect::MAX_REQUEST_BYTES),
                )),
            )
        }
    };
    let procedure = &path[1..];
    if let Some(method) = procedure.strip_prefix("filesystem.Filesystem/") {
        return filesystem::call(sbx, method, framing, &parts.headers, &body).await;
    }
    if let Some(method) = procedure.strip_prefix("process.Process/") {
        return process::call(sbx, method, framing, &parts.headers, &body).await;
    }
    connect::reply::<()>(framing, Err(connect::RpcError::unimplemented(procedure)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn targets_from_headers_and_hosts() {
        let t = |p: &[(&'static str, &str)]| target(&h(p));
        assert_eq!(t(&[("host", "127.0.0.1:8080")]), None);
        assert_eq!(t(&[("host", "localhost")]), None);
        assert_eq!(t(&[("host", "my-server.example.com")]), None);
        assert_eq!(
            t(&[("e2b-sandbox-id", "abc123"), ("e2b-sandbox-port", "49983")]),
            Some(Ok(Target {
                id: "abc123".into(),
                port: 49983
            }))
        );
        assert_eq!(
            t(&[("e2b-sandbox-id", "abc")]).unwrap().unwrap().port,
            ENVD_PORT
        );
        assert!(t(&[("e2b-sandbox-id", "../x")]).unwrap().is_err());
        assert!(t(&[("e2b-sandbox-id", "a"), ("e2b-sandbox-port", "x")])
            .unwrap()
            .is_err());
        assert_eq!(
            t(&[("host", "49983-abc123.localhost:8080")]),
            Some(Ok(Target {
                id: "abc123".into(),
                port: 49983
            }))
        );
    }
}
