//! `zeroboot gateway` (docs/fleet.md): the stateless front of a fleet of
//! nodes (`zeroboot serve --node-key K`). It places `POST /sandboxes` on
//! a node, and routes every call naming a sandbox to the node whose key is
//! inside the id (`fleet.rs`): E2B's `E2b-Sandbox-Id` header, a
//! `<port>-<id>.<domain>` host, or a `/sandboxes/{id}...` path. Lists fan
//! out to every node; `/v1/exec` one-shots go to any ready node.
//!
//! It holds no sandbox state: any number of gateways serve the same fleet,
//! and one going away loses nothing. Authentication stays with the nodes
//! (the gateway passes the caller's key through).
//!
//! - `nodes`: discovery, health polls, placement.
//! - `dns`: the nodes' name asked of a given DNS server (`--dns-server`).
//! - `proxy`: forwarding one request to one node.
//! - `list`: the fan-out of `GET /sandboxes` and `GET /v2/sandboxes`.
//! - `snapshots`: creates from snapshots, their list and deletes, to the
//!   node holding them.
//! - `mcp`: MCP sessions, each pinned to the node it began on.

mod dns;
mod list;
mod mcp;
mod nodes;
mod proxy;
mod snapshots;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub use nodes::Discovery;
use nodes::Nodes;
use proxy::{Proxy, ProxyError};

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub bind: SocketAddr,
    pub discovery: Discovery,
    /// How often the nodes' health is polled (and DNS re-resolved).
    pub poll: Duration,
    /// Connect timeout to a node: how long a call for a dead node's
    /// sandbox can take before it is answered "not found".
    pub connect_timeout: Duration,
    /// Candidates drawn per placement.
    pub choices: usize,
    /// Nodes with less free memory get new sandboxes only when all have.
    pub min_free_mb: u64,
}

/// Errors of running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("the gateway failed")]
    Io(#[source] std::io::Error),
}

struct Gateway {
    nodes: Arc<Nodes>,
    proxy: Proxy,
    /// Requests answered, by route and status (`/v1/metrics`).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

/// Largest body buffered for a call that may be retried on another node
/// (creates, one-shot execs).
const MAX_RETRY_BODY: usize = 16 << 20;
/// Nodes tried for one create before giving up.
const CREATE_ATTEMPTS: usize = 3;

fn e2b_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": status.as_u16(), "message": message.into() })),
    )
        .into_response()
}

/// How a request names its sandbox, which decides the shape of "not
/// found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// `E2b-Sandbox-Id` or a `<port>-<id>.<domain>` host: envd's calls
    /// (E2B's proxy answers 502 "... was not found").
    Envd,
    /// `/v1/sandboxes/{id}/...`: ours (`{"error": ...}`).
    Ours,
    /// `/sandboxes/{id}...`: E2B's control plane (404 `{code, message}`).
    Control,
    /// A snapshot id (a create's `templateID`, `DELETE /templates/{id}`):
    /// E2B's 404 `{code, message}`.
    Snapshot,
}

/// A request's body read whole (so the request can be sent again).
async fn buffered(req: Request) -> Result<(Parts, Bytes), Response> {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_RETRY_BODY).await {
        Ok(b) => Ok((parts, b)),
        Err(_) => Err(e2b_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body over 16 MiB",
        )),
    }
}

/// The sandbox id a request names, if any.
fn named_id(req: &Request) -> Option<Result<(String, Named), String>> {
    if let Some(t) = crate::envd::target(req.headers()) {
        return Some(t.map(|t| (t.id, Named::Envd)));
    }
    let path = req.uri().path();
    let (rest, named) = if let Some(r) = path.strip_prefix("/v1/sandboxes/") {
        (r, Named::Ours)
    } else if let Some(r) = path
        .strip_prefix("/v2/sandboxes/")
        .or_else(|| path.strip_prefix("/sandboxes/"))
    {
        (r, Named::Control)
    } else {
        return None;
    };
    let id = rest.split('/').next().unwrap_or("");
    if id.is_empty() {
        return None;
    }
    Some(Ok((id.to_string(), named)))
}

fn not_found(id: &str, named: Named, why: &str) -> Response {
    match named {
        Named::Envd => e2b_error(
            StatusCode::BAD_GATEWAY,
            format!("The sandbox {id} was not found: {why}"),
        ),
        Named::Ours => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("sandbox \"{id}\" not found: {why}") })),
        )
            .into_response(),
        Named::Control => e2b_error(
            StatusCode::NOT_FOUND,
            format!("sandbox \"{id}\" not found: {why}"),
        ),
        Named::Snapshot => e2b_error(
            StatusCode::NOT_FOUND,
            format!("snapshot '{id}' not found: {why}"),
        ),
    }
}

impl Gateway {
    fn count(&self, route: &'static str, status: StatusCode) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route, status.as_u16())).or_insert(0) += 1;
    }

    /// A call for sandbox `id`: to its node, or "not found" at once when
    /// its node is gone.
    async fn to_sandbox(&self, id: &str, named: Named, req: Request) -> Response {
        let Some(key) = crate::fleet::node_of(id) else {
            return not_found(id, named, "the id names no node of this fleet");
        };
        let Some(addr) = self.nodes.addr_of(key) else {
            return not_found(id, named, &format!("its node {key:?} is not reachable"));
        };
        match self.proxy.forward(&addr, req).await {
            Ok(r) => r,
            Err(e @ ProxyError::Connect { .. }) => {
                self.nodes.mark_down(&addr, &e.to_string());
                not_found(id, named, &format!("its node {key:?} is not reachable"))
            }
            Err(e) => e2b_error(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }

    /// A call that may go to any ready node (a create, a one-shot exec):
    /// placed, and tried on another node when the chosen one is gone or
    /// drains.
    async fn placed(&self, req: Request) -> Response {
        match buffered(req).await {
            Ok((parts, body)) => self.placed_buffered(&parts, &body).await.0,
            Err(r) => r,
        }
    }

    /// `placed`, for a request already read: the answer, and the address
    /// of the node that gave it (None when no node did).
    async fn placed_buffered(&self, parts: &Parts, body: &Bytes) -> (Response, Option<String>) {
        let mut tried = Vec::new();
        let mut last: Option<(Response, String)> = None;
        while tried.len() < CREATE_ATTEMPTS {
            let Some(addr) = self.nodes.place(&tried) else {
                break;
            };
            let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
            match self.proxy.forward(&addr, req).await {
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    // Draining (or its queue is full): another node.
                    self.nodes.mark_draining(&addr);
                    last = Some((r, addr.clone()));
                }
                Ok(r) => return (r, Some(addr)),
                Err(e @ ProxyError::Connect { .. }) => {
                    self.nodes.mark_down(&addr, &e.to_string());
                }
                Err(e) => return (e2b_error(StatusCode::BAD_GATEWAY, e.to_string()), None),
            }
            tried.push(addr);
        }
        match last {
            Some((r, addr)) => (r, Some(addr)),
            None => (
                e2b_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no node is taking new sandboxes now (all are draining, full or unreachable); retry shortly",
                ),
                None,
            ),
        }
    }

    /// To any up node (documents the nodes all serve alike).
    async fn any(&self, req: Request) -> Response {
        let Some(addr) = self.nodes.up().into_iter().next() else {
            return e2b_error(StatusCode::SERVICE_UNAVAILABLE, "no node is up");
        };
        match self.proxy.forward(&addr, req).await {
            Ok(r) => r,
            Err(e) => {
                self.nodes.mark_down(&addr, &e.to_string());
                e2b_error(StatusCode::BAD_GATEWAY, e.to_string())
            }
        }
    }

    fn health(&self) -> Response {
        let nodes: Vec<_> = self
            .nodes
            .snapshot()
            .into_iter()
            .map(|n| {
                json!({
                    "key": n.key, "address": n.addr, "up": n.up, "ready": n.ready,
                    "sandboxes": n.sandboxes, "max_sandboxes": n.max_sandboxes,
                    "memory_available_mb": n.memory_available_mb, "problem": n.problem,
                })
            })
            .collect();
        let ready = nodes.iter().any(|n| n["ready"] == true);
        Json(json!({
            "status": if ready { "ok" } else { "no ready node" },
            "role": "gateway",
            "nodes": nodes,
        }))
        .into_response()
    }

    fn metrics(&self) -> Response {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP zeroboot_gateway_requests_total Requests the gateway answered, by route and status.\n# TYPE zeroboot_gateway_requests_total counter\n",
        );
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "zeroboot_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let nodes = self.nodes.snapshot();
        let _ = writeln!(
            out,
            "# HELP zeroboot_gateway_nodes Nodes known, up, and ready (taking new sandboxes).\n# TYPE zeroboot_gateway_nodes gauge\nzeroboot_gateway_nodes{{state=\"known\"}} {}\nzeroboot_gateway_nodes{{state=\"up\"}} {}\nzeroboot_gateway_nodes{{state=\"ready\"}} {}",
            nodes.len(),
            nodes.iter().filter(|n| n.up).count(),
            nodes.iter().filter(|n| n.ready).count(),
        );
        ([("content-type", "text/plain; version=0.0.4")], out).into_response()
    }
}

/// Every request: by the sandbox it names, else by its route.
async fn handle(State(g): State<Arc<Gateway>>, req: Request) -> Response {
    let (route, resp) = match named_id(&req) {
        Some(Err(m)) => ("sandbox", e2b_error(StatusCode::BAD_REQUEST, m)),
        Some(Ok((id, named))) => ("sandbox", g.to_sandbox(&id, named, req).await),
        None => {
            let method = req.method().clone();
            match (method, req.uri().path()) {
                (Method::POST, "/sandboxes" | "/v2/sandboxes") => {
                    ("create", snapshots::create(&g, req).await)
                }
                (Method::GET, "/snapshots") => ("list", snapshots::list(&g, req).await),
                (Method::DELETE, p) if p.starts_with("/templates/") => {
                    // Ids and names are `[A-Za-z0-9._-]` with a `:tag`.
                    let id = p["/templates/".len()..]
                        .replace("%3A", ":")
                        .replace("%3a", ":");
                    ("snapshot", snapshots::delete(&g, req, &id).await)
                }
                (Method::GET, "/sandboxes" | "/v2/sandboxes") => {
                    ("list", list::fan_out(&g, req).await)
                }
                (Method::POST, "/v1/exec" | "/v1/exec/batch") => ("exec", g.placed(req).await),
                (Method::GET, "/health") => ("health", StatusCode::NO_CONTENT.into_response()),
                (Method::GET, "/v1/health") => ("health", g.health()),
                (Method::GET, "/v1/health/live") => {
                    ("health", Json(json!({ "status": "alive" })).into_response())
                }
                (Method::GET, "/v1/health/ready") => {
                    let ready = g.nodes.snapshot().iter().any(|n| n.ready);
                    let code = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        "health",
                        (code, Json(json!({ "ready": ready }))).into_response(),
                    )
                }
                (Method::GET, "/v1/metrics") => ("metrics", g.metrics()),
                (Method::GET, "/v1/openapi.json") => ("other", g.any(req).await),
                (_, "/mcp") => ("mcp", mcp::route(&g, req).await),
                _ => (
                    "other",
                    e2b_error(
                        StatusCode::NOT_FOUND,
                        "no such endpoint (see /v1/openapi.json)",
                    ),
                ),
            }
        }
    };
    g.count(route, resp.status());
    resp
}

/// Serve until SIGTERM or SIGINT (in-flight calls finish first).
pub async fn serve(config: GatewayConfig) -> Result<(), GatewayError> {
    let nodes = Nodes::new(
        config.discovery.clone(),
        config.connect_timeout,
        config.poll.max(Duration::from_millis(200)),
        config.choices.max(1),
        config.min_free_mb,
    );
    // The first poll before the first call: routes are known at once.
    nodes.poll().await;
    nodes.start_polling(config.poll);
    let g = Arc::new(Gateway {
        nodes,
        proxy: Proxy::new(config.connect_timeout),
        requests: Mutex::new(BTreeMap::new()),
    });
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| GatewayError::Bind(config.bind, e))?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    tracing::info!(bind = %config.bind, discovery = ?config.discovery, "zeroboot gateway serving");
    let app = axum::Router::new().fallback(handle).with_state(g);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = crate::next_signal(&mut term) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("gateway stopping: finishing in-flight calls");
        })
        .await
        .map_err(GatewayError::Io)?;
    Ok(())
}
