//! An MCP (Model Context Protocol) server: zeroboot's sandboxes as tools of
//! any agent (docs/mcp.md). One tool layer (`tools`) on the server's own
//! primitives, two transports from the official SDK (rmcp): streamable
//! HTTP at `/mcp`, behind the API keys, and stdio (`zeroboot mcp`).

mod session;
mod tools;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use serde_json::{json, Value};

use crate::AppState;
pub use session::Session;

/// Largest MCP message accepted over HTTP: code (1 MiB) or a file for
/// write_file (4 MiB), JSON-escaped.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How long an HTTP session may go without a request.
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The API key a request to `/mcp` was authorized with (its index), for
/// the tools: each request carries its own key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub Option<usize>);

/// Errors of serving MCP over stdio.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP client did not complete the handshake: {0}")]
    Handshake(String),
    #[error("the MCP session failed")]
    Session(#[source] tokio::task::JoinError),
}

/// `/mcp`: MCP's streamable HTTP transport, one session per client, behind
/// the same API keys as the rest of the API.
pub(crate) fn router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(state.shutdown.child_token())
        .with_max_request_body_bytes(MAX_MESSAGE_BYTES);
    // rmcp checks Host against loopback names to stop DNS rebinding. That
    // is the guard a keyless server on loopback needs; with keys (or a
    // server bound for others to reach), the key is the guard and any
    // Host may reach /mcp, as it may reach /v1/exec.
    if state.config.keys.is_some() || !state.config.bind.ip().is_loopback() {
        config = config.disable_allowed_hosts();
    }
    // A session without requests for this long ends (and its sandboxes
    // with it): as long as a sandbox's default time to live, so an agent
    // that thinks a while between calls keeps its sandboxes, while a
    // client that vanished without DELETE frees them within the hour.
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE);
    let st = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Session::new(st.clone(), None)),
        Arc::new(sessions),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
}

/// The API key check of `/mcp` (401 without a valid key, 429 over the
/// rate limit); the key travels to the tools as a `Caller`.
async fn authorize(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let checked = crate::e2b::caller(&state, req.headers());
    let resp = match crate::api::authorize_with(&state, checked) {
        Ok(key) => {
            req.extensions_mut().insert(Caller(key));
            let delete = req.method() == axum::http::Method::DELETE;
            match checked_message(req).await {
                Ok(req) => {
                    let mut r = next.run(req).await;
                    // rmcp accepts a session's DELETE with 202; the
                    // official Python SDK expects 200 or 204 (and logs a
                    // warning otherwise). The session is closed either way.
                    if delete && r.status() == StatusCode::ACCEPTED {
                        *r.status_mut() = StatusCode::NO_CONTENT;
                    }
                    r
                }
                Err(r) => r,
            }
        }
        Err(e) => {
            let mut r = e.into_response();
            if r.status() == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"zeroboot\""),
                );
            }
            r
        }
    };
    state.metrics.request("mcp", resp.status().as_u16());
    resp
}

/// A POST's body checked as one JSON-RPC message first, so a malformed
/// one gets a JSON-RPC error (parse error, invalid request) rather than
/// rmcp's plain-text 415.
async fn checked_message(req: Request) -> Result<Request, Response> {
    if req.method() != axum::http::Method::POST {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|_| {
            jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                -32600,
                format!(
                    "Invalid Request: a message over {} MiB",
                    MAX_MESSAGE_BYTES >> 20
                ),
            )
        })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        jsonrpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32700,
            format!("Parse error: the body is not JSON ({e})"),
        )
    })?;
    if let Err(e) = serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(v.clone()) {
        let id = match v.get("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
            _ => Value::Null,
        };
        let why = if v.is_array() {
            "batches are not supported: send one message per request".to_string()
        } else {
            e.to_string()
        };
        return Err(jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            format!(
                "Invalid Request: not a JSON-RPC 2.0 request, notification or response ({why})"
            ),
        ));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn jsonrpc_error(status: StatusCode, id: Value, code: i64, message: String) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Serve one MCP session over stdin/stdout until the client closes it;
/// then the session's sandboxes are killed. `state` has no API keys in
/// play: the process itself is the client's (`zeroboot mcp`).
pub async fn serve_stdio(state: Arc<AppState>) -> Result<(), McpError> {
    let running = Session::new(state, None)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Handshake(e.to_string()))?;
    let reason = running.waiting().await.map_err(McpError::Session)?;
    tracing::debug!(?reason, "MCP stdio session ended");
    Ok(())
}
