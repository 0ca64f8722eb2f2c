//! MCP through the gateway (docs/fleet.md): each session is pinned to the
//! node it began on. An MCP session is state on one node (rmcp's session,
//! and the sandboxes its tools created, killed when it ends), and its
//! calls name sandboxes only inside tool arguments, so the gateway routes
//! by the session, not by the sandbox:
//!
//! - a request without `Mcp-Session-Id` (an `initialize`) is placed like
//!   a create, on a ready node; the node's session id comes back to the
//!   client as `<node key>.<node's session id>`;
//! - a request with `Mcp-Session-Id: <key>.<id>` goes to node `<key>`
//!   with the node's own id; the gateway keeps no table, so any gateway
//!   routes any session;
//! - a session whose node is gone (or an id the gateway never issued)
//!   gets 404, which MCP's streamable HTTP transport defines as "this
//!   session is over: initialize a new one".

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::proxy::ProxyError;
use super::{buffered, Gateway};

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");

fn session_gone(why: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32001, "message": format!("Session not found: {why}; initialize a new session") },
        })),
    )
        .into_response()
}

/// The client's session id `<key>.<node's id>`: (key, node's id).
fn split(v: &HeaderValue) -> Option<(&str, &str)> {
    let (key, inner) = v.to_str().ok()?.split_once('.')?;
    crate::fleet::check_key(key).ok()?;
    (!inner.is_empty()).then_some((key, inner))
}

/// The node's session id in `resp`, as the client must send it back.
fn keyed(resp: &mut Response, key: &str) {
    let Some(inner) = resp.headers().get(&SESSION).cloned() else {
        return;
    };
    let v = inner
        .to_str()
        .ok()
        .and_then(|i| HeaderValue::from_str(&format!("{key}.{i}")).ok());
    match v {
        Some(v) => {
            resp.headers_mut().insert(SESSION, v);
        }
        None => {
            resp.headers_mut().remove(&SESSION);
        }
    }
}

/// `/mcp` (POST, GET, DELETE).
pub(super) async fn route(g: &Arc<Gateway>, mut req: Request) -> Response {
    let Some(session) = req.headers().get(&SESSION).cloned() else {
        // A new session: placed on a ready node.
        let (parts, body) = match buffered(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let (mut resp, addr) = g.placed_buffered(&parts, &body).await;
        if let Some(addr) = addr {
            keyed(&mut resp, &g.nodes.key_of(&addr));
        }
        return resp;
    };
    let Some((key, inner)) = split(&session) else {
        return session_gone(format!(
            "{:?} is not a session id this fleet's gateways issued",
            session.to_str().unwrap_or("(not text)")
        ));
    };
    let Some(addr) = g.nodes.addr_of(key) else {
        return session_gone(format!("its node {key:?} is not reachable"));
    };
    let Ok(inner) = HeaderValue::from_str(inner) else {
        return session_gone("a malformed session id".into());
    };
    req.headers_mut().insert(SESSION, inner);
    match g.proxy.forward(&addr, req).await {
        Ok(mut r) => {
            keyed(&mut r, key);
            r
        }
        Err(e @ ProxyError::Connect { .. }) => {
            g.nodes.mark_down(&addr, &e.to_string());
            session_gone(format!("its node {key:?} is not reachable"))
        }
        Err(e) => super::e2b_error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_carry_the_node_key() {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(SESSION, HeaderValue::from_static("3f2a-77"));
        keyed(&mut r, "n2");
        let v = r.headers().get(&SESSION).unwrap().clone();
        assert_eq!(v, "n2.3f2a-77");
        assert_eq!(split(&v), Some(("n2", "3f2a-77")));
        for bad in ["3f2a-77", "N2.x", "n2.", ".x", "toolongkey1.x"] {
            assert_eq!(split(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
