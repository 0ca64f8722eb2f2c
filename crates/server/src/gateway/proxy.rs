//! Forwarding one request to one node, streaming both ways (a command's
//! output or a watch stream flows through as the node sends it). Only the
//! connection can fail fast: once connected, the call lasts as long as
//! the node's answer does.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Headers that belong to one hop, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(listed.iter()) {
        h.remove(n);
    }
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No connection: the node is gone (or unreachable).
    #[error("cannot connect to node {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Connected, then the call failed (the node died mid-call).
    #[error("node {addr} failed: {source}")]
    Failed {
        addr: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("cannot address node {0}")]
    Address(String),
}

pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    pub fn new(connect_timeout: std::time::Duration) -> Proxy {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_nodelay(true);
        Proxy {
            client: Client::builder(TokioExecutor::new()).build(conn),
        }
    }

    /// Send `req` (its path, query, headers and body; its Host too, which
    /// a `<port>-<id>.<domain>` call routes by) to the node at `addr`.
    pub async fn forward(
        &self,
        addr: &str,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("http://{addr}{pq}")
            .parse()
            .map_err(|_| ProxyError::Address(addr.to_string()))?;
        *req.uri_mut() = uri;
        *req.version_mut() = axum::http::Version::HTTP_11;
        strip_hop_by_hop(req.headers_mut());
        let resp = self.client.request(req).await.map_err(|source| {
            if source.is_connect() {
                ProxyError::Connect {
                    addr: addr.to_string(),
                    source,
                }
            } else {
                ProxyError::Failed {
                    addr: addr.to_string(),
                    source,
                }
            }
        })?;
        let mut resp = resp.map(Body::new);
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}
