//! Snapshots through the gateway (docs/fleet.md). A snapshot lives on the
//! node that took it (its checkpoint is in that node's state directory),
//! and its id carries that node's key as a sandbox id does, so:
//!
//! - `POST /sandboxes` whose `templateID` is a snapshot id goes to the
//!   snapshot's node (a sandbox from a snapshot is loaded where the
//!   snapshot is); any other template is placed as usual.
//! - A snapshot *name* is per node (each node keeps its own names). A
//!   create whose template is not a built-in one asks every node for a
//!   snapshot of that name (`GET /snapshots?name=`) and goes to the one
//!   that has it, so a name means the same snapshot whichever node a
//!   create would have been placed on; the built-in templates pay
//!   nothing for names. A name held on several nodes is ambiguous: 409,
//!   use the id. A name no node holds: 404.
//! - `GET /snapshots` fans out and concatenates, nodes in key order.
//! - `DELETE /templates/{id}`: an id to its node, a name to the one node
//!   holding it (as above).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{buffered, e2b_error, list, Gateway, Named};

/// The templates every node serves by name (`e2b::resolve_template`):
/// never snapshot names (a node looks these up first), so creates from
/// them are placed at once. A name missing here costs only a look-up.
const BUILT_IN: [&str; 5] = [
    "python",
    "base",
    "node",
    "code-interpreter",
    "code-interpreter-v1",
];

/// `templateID:tag` without a `:default` tag.
fn untagged(t: &str) -> &str {
    t.strip_suffix(":default").unwrap_or(t)
}

/// Whether `t` can be a snapshot name (what the nodes accept as one).
fn name_shaped(t: &str) -> bool {
    let t = untagged(t);
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// The node holding a snapshot named `name` for this caller (`parts`
/// carries the caller's key): its address, or the answer to give.
async fn holder(g: &Arc<Gateway>, parts: &Parts, name: &str) -> Result<String, Response> {
    let mut p = parts.clone();
    p.method = Method::GET;
    p.uri = Uri::try_from(format!("/snapshots?name={}", untagged(name)))
        .map_err(|_| e2b_error(StatusCode::BAD_REQUEST, "not a snapshot name"))?;
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        p.headers.remove(h);
    }
    let found: Vec<(String, String)> = list::gather(g, &p)
        .await?
        .into_iter()
        .filter_map(|l| {
            let id = l.items.first()?["snapshotID"].as_str()?.to_string();
            Some((l.addr, id))
        })
        .collect();
    match found.as_slice() {
        [] => Err(e2b_error(
            StatusCode::NOT_FOUND,
            format!("template or snapshot '{name}' not found on any node"),
        )),
        [(addr, _)] => Ok(addr.clone()),
        several => Err(e2b_error(
            StatusCode::CONFLICT,
            format!(
                "snapshot name '{name}' is taken on several nodes (snapshot names are per node): use one of the ids {}",
                several
                    .iter()
                    .map(|(_, id)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Send a buffered request to the node at `addr`.
async fn to_addr(g: &Gateway, addr: &str, parts: Parts, body: Bytes) -> Response {
    match g
        .proxy
        .forward(addr, Request::from_parts(parts, Body::from(body)))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            g.nodes.mark_down(addr, &e.to_string());
            e2b_error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

/// `POST /sandboxes`, `/v2/sandboxes`.
pub(super) async fn create(g: &Arc<Gateway>, req: Request) -> Response {
    let (parts, body) = match buffered(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The node checks the body; here only the template is looked at.
    let template = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("templateID")?.as_str().map(str::to_string));
    if let Some(t) = &template {
        let id = untagged(t);
        if crate::fleet::node_of(id).is_some() {
            let req = Request::from_parts(parts, Body::from(body));
            return g.to_sandbox(id, Named::Snapshot, req).await;
        }
    }
    match template.filter(|t| name_shaped(t) && !BUILT_IN.contains(&untagged(t))) {
        // A snapshot's name: to the one node holding it.
        Some(name) => match holder(g, &parts, &name).await {
            Ok(addr) => to_addr(g, &addr, parts, body).await,
            Err(r) => r,
        },
        None => g.placed_buffered(&parts, &body).await.0,
    }
}

/// `GET /snapshots`: every node's, nodes in key order (each node's
/// oldest first).
pub(super) async fn list(g: &Arc<Gateway>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let mut lists = match list::gather(g, &parts).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    lists.sort_by_key(|l| g.nodes.key_of(&l.addr));
    let all: Vec<Value> = lists.into_iter().flat_map(|l| l.items).collect();
    Json(all).into_response()
}

/// `DELETE /templates/{id}`.
pub(super) async fn delete(g: &Arc<Gateway>, req: Request, id: &str) -> Response {
    if crate::fleet::node_of(untagged(id)).is_some() {
        let id = untagged(id).to_string();
        return g.to_sandbox(&id, Named::Snapshot, req).await;
    }
    if !name_shaped(id) {
        return e2b_error(
            StatusCode::NOT_FOUND,
            format!("snapshot '{id}' not found (built-in templates cannot be deleted)"),
        );
    }
    let (parts, body) = match buffered(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match holder(g, &parts, id).await {
        Ok(addr) => to_addr(g, &addr, parts, body).await,
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(untagged("warm:default"), "warm");
        assert_eq!(untagged("warm"), "warm");
        assert!(name_shaped("warm-1.x_y:default"));
        for bad in ["", ":default", "a b", "a/b", "a?b=c", &"x".repeat(129)] {
            assert!(!name_shaped(bad), "{bad:?}");
        }
    }
}
