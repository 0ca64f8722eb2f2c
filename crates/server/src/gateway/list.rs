//! `GET /sandboxes` and `GET /v2/sandboxes` through the gateway: the same
//! call to every up node (with the caller's key and query), the answers
//! merged in the nodes' order (start time, newest first unless
//! `order=asc`). For `/v2` the merge is cut to `limit`, `X-Total-Running`
//! is the sum, and `X-Next-Token` is the nodes' cursor (`<ns>.<id>`) made
//! from the last item's `startedAt`: the nodes print it to the
//! millisecond, so an item started in the same millisecond as a page's
//! last one may show on both pages, never on neither.
//!
//! A node that cannot be reached is left out (its sandboxes died with
//! it); a node's refusal (a bad key, a bad filter) is the answer. `gather`
//! is the fan-out itself, shared with the snapshots' list and look-ups.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{proxy::ProxyError, Gateway};

fn started_ns(v: &Value) -> u128 {
    v["startedAt"]
        .as_str()
        .and_then(crate::e2b::parse_rfc3339)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// One node's answer to a fanned-out list.
pub(super) struct NodeList {
    pub addr: String,
    pub headers: HeaderMap,
    pub items: Vec<Value>,
}

/// The same GET (`parts`: its path, query and the caller's headers; no
/// body) to every up node, each answer a JSON array. A node that cannot
/// be reached, or whose answer is cut or not an array, is left out (with
/// a warning); a node's refusal (a bad key, a bad filter) is the answer.
pub(super) async fn gather(g: &Arc<Gateway>, parts: &Parts) -> Result<Vec<NodeList>, Response> {
    let calls = g.nodes.up().into_iter().map(|addr| {
        let req = Request::from_parts(parts.clone(), Body::empty());
        let g = g.clone();
        async move {
            let r = g.proxy.forward(&addr, req).await;
            (addr, r)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut out = Vec::new();
    for (addr, r) in answers {
        let resp = match r {
            Ok(resp) => resp,
            Err(e @ ProxyError::Connect { .. }) => {
                g.nodes.mark_down(&addr, &e.to_string());
                continue;
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "list: node failed; its items are left out");
                continue;
            }
        };
        if resp.status() != StatusCode::OK {
            return Err(resp);
        }
        let (rp, body) = resp.into_parts();
        let body = match axum::body::to_bytes(body, 64 << 20).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "list: node's answer cut; its items are left out");
                continue;
            }
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => out.push(NodeList {
                addr,
                headers: rp.headers,
                items,
            }),
            _ => tracing::warn!(%addr, "list: node's answer is not a JSON array"),
        }
    }
    Ok(out)
}

pub(super) async fn fan_out(g: &Arc<Gateway>, req: Request) -> Response {
    let v2 = req.uri().path().starts_with("/v2/");
    let query = req.uri().query().unwrap_or("").to_string();
    let pairs = crate::e2b::query_pairs(&query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let asc = get("order") == Some("asc");
    // The node checks `limit`; here it only cuts the merge.
    let limit = get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let (parts, _) = req.into_parts();
    let lists = match gather(g, &parts).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut items: Vec<Value> = Vec::new();
    let mut running: u64 = 0;
    let mut more = false;
    for l in lists {
        more |= l.headers.contains_key("x-next-token");
        running += l
            .headers
            .get("x-total-running")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        items.extend(l.items);
    }
    let key = |v: &Value| {
        (
            started_ns(v),
            v["sandboxID"].as_str().unwrap_or("").to_string(),
        )
    };
    items.sort_by_key(|v| std::cmp::Reverse(key(v)));
    if asc {
        items.reverse();
    }
    if !v2 {
        return Json(items).into_response();
    }
    more |= items.len() > limit;
    items.truncate(limit);
    let token = more
        .then(|| items.last().map(key))
        .flatten()
        .map(|(ns, id)| {
            // Rounded so that the rest of its millisecond is on the next
            // page (desc: cursor at the end of the millisecond).
            let ns = if asc { ns } else { ns + 999_999 };
            format!("{ns}.{id}")
        });
    let mut resp = Json(items).into_response();
    let h = resp.headers_mut();
    if let Some(t) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert("x-next-token", t);
    }
    if get("state").is_none_or(|s| s.contains("running")) {
        h.insert("x-total-running", HeaderValue::from(running));
    }
    resp
}
