//! A node's state as a fleet sees it (docs/fleet.md): liveness ("the
//! process serves": `GET /v1/health/live`), readiness ("it takes new
//! sandboxes": `GET /v1/health/ready`, 503 while draining), and what a
//! gateway places sandboxes by (the `node` object of `GET /v1/health`:
//! its key, live sandboxes, free memory).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Bytes of memory the host can still give (`MemAvailable`), if known.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `node` object of `/v1/health`.
pub fn status(state: &AppState) -> Value {
    let s = &state.sandboxes;
    json!({
        "key": s.limits.node_key,
        "accepting": !s.draining(),
        "draining": s.draining(),
        "sandboxes": s.live(),
        "max_sandboxes": s.limits.max_total,
        "memory_available_mb": memory_available().map(|b| b >> 20),
    })
}

/// `GET /v1/health/live`: 200 while the process serves (draining too).
pub async fn live(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request("health", 200);
    Json(json!({ "status": "alive" })).into_response()
}

/// `GET /v1/health/ready`: 200 when it takes new sandboxes, 503 while it
/// drains (a load balancer or a gateway then sends it none).
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let (code, status) = if state.sandboxes.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    };
    state.metrics.request("health", code.as_u16());
    (
        code,
        Json(json!({ "status": status, "node": status_json_min(&state) })),
    )
        .into_response()
}

fn status_json_min(state: &AppState) -> Value {
    json!({ "key": state.sandboxes.limits.node_key, "sandboxes": state.sandboxes.live() })
}

/// Prometheus lines for /v1/metrics.
pub fn render_metrics(state: &AppState, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP zeroboot_node_draining 1 while this node drains (takes no new sandboxes).\n# TYPE zeroboot_node_draining gauge\nzeroboot_node_draining {}",
        u8::from(state.sandboxes.draining())
    );
}
