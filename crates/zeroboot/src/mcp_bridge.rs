//! `zeroboot mcp --url`: MCP over stdio for a client that spawns us,
//! carried to a running server's `/mcp` (MCP's streamable HTTP transport),
//! so the tools and the session (which owns its sandboxes) live in one
//! place, the server. Each line from stdin is one JSON-RPC message, POSTed
//! as it comes (concurrently); what the server answers, a JSON body or an
//! SSE stream of messages, goes to stdout one line per message. At the
//! end of stdin (or SIGTERM/SIGINT) the session is closed with DELETE,
//! which kills its sandboxes.
//!
//! The server never starts requests of its own (no sampling, no
//! list-changed notifications), so there is no standalone GET stream.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// JSON-RPC's "server error" range: the server could not be reached or
/// refused the message at the HTTP level.
const BRIDGE_ERROR: i64 = -32000;

struct Bridge {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    auth: Option<HeaderValue>,
    /// Set by the server's answer to `initialize`.
    session: Mutex<Option<HeaderValue>>,
    version: Mutex<Option<HeaderValue>>,
    out: mpsc::UnboundedSender<String>,
}

/// The `/mcp` endpoint of a server URL (`http://host:port` or the full
/// endpoint).
pub fn endpoint(url: &str) -> Result<Uri> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => bail!(
            "--url {url:?}: only http:// is supported here ({s}:// servers: point the MCP client at their /mcp endpoint directly)"
        ),
        None => bail!("--url {url:?} needs a scheme, e.g. http://127.0.0.1:8080"),
    }
    let Some(auth) = uri.authority() else {
        bail!("--url {url:?} has no host");
    };
    let path = match uri.path() {
        "" | "/" => "/mcp",
        p => p,
    };
    format!("http://{auth}{path}")
        .parse()
        .context("building the /mcp URL")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bridge {
    fn request(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(a) = &self.auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        if let Some(s) = lock(&self.session).clone() {
            b = b.header(SESSION_HEADER, s);
        }
        if let Some(v) = lock(&self.version).clone() {
            b = b.header(VERSION_HEADER, v);
        }
        Ok(b.body(Full::new(body))?)
    }

    fn emit(&self, v: &Value) {
        let _ = self.out.send(v.to_string());
    }

    /// A JSON-RPC error for request `id` (None: a notification, which gets
    /// no answer; the log says what happened).
    fn fail(&self, id: Option<&Value>, message: String) {
        match id {
            Some(id) => self.emit(&json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": BRIDGE_ERROR, "message": message},
            })),
            None => tracing::warn!("{message}"),
        }
    }

    /// A message from the server: note the protocol version `initialize`
    /// settled on, then pass it on.
    fn deliver(&self, v: Value) {
        if let Some(pv) = v
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(Value::as_str)
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            *lock(&self.version) = Some(pv);
        }
        self.emit(&v);
    }

    /// Send one message and pass on what comes back.
    async fn forward(self: Arc<Self>, line: String) {
        // Who gets an error if the server cannot answer: a request (by
        // its id), or a line that is not JSON (id null, as JSON-RPC's
        // parse errors); a notification or a response gets none.
        let id = match serde_json::from_str::<Value>(&line) {
            Ok(v) => v.get("id").filter(|_| v.get("method").is_some()).cloned(),
            Err(_) => Some(Value::Null),
        };
        let req = match self.request(Method::POST, Bytes::from(line)) {
            Ok(r) => r,
            Err(e) => return self.fail(id.as_ref(), format!("zeroboot mcp: {e:#}")),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                return self.fail(
                    id.as_ref(),
                    format!("cannot reach the zeroboot server at {}: {e}", self.url),
                )
            }
        };
        let status = resp.status();
        if let Some(s) = resp.headers().get(SESSION_HEADER) {
            *lock(&self.session) = Some(s.clone());
        }
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        if sse {
            let mut sse = Sse::default();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    for event in sse.feed(data) {
                        if let Ok(v) = serde_json::from_str::<Value>(&event) {
                            self.deliver(v);
                        }
                    }
                }
            }
            return;
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return self.fail(
                    id.as_ref(),
                    format!("the zeroboot server's answer broke off: {e}"),
                )
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            // A JSON-RPC answer, success or error, whatever the status.
            Ok(v) if v.get("jsonrpc").is_some() => self.deliver(v),
            _ if status == StatusCode::ACCEPTED || (status.is_success() && bytes.is_empty()) => {}
            Ok(v) => {
                let why = v
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                self.fail(
                    id.as_ref(),
                    format!("the zeroboot server answered {status}: {why}"),
                );
            }
            Err(_) => self.fail(
                id.as_ref(),
                format!(
                    "the zeroboot server answered {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                ),
            ),
        }
    }

    /// End the session on the server (it kills the session's sandboxes).
    async fn close(&self) {
        if lock(&self.session).is_none() {
            return;
        }
        match self.request(Method::DELETE, Bytes::new()) {
            Ok(req) => match self.client.request(req).await {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                Ok(r) => tracing::warn!(status = %r.status(), "closing the MCP session"),
                Err(e) => tracing::warn!(error = %e, "closing the MCP session"),
            },
            Err(e) => tracing::warn!(error = %e, "closing the MCP session"),
        }
    }
}

/// Server-sent events, fed in chunks: the `data` of each complete event.
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl Sse {
    fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let event = self.data.join("\n");
                self.data.clear();
                // Priming events (an id, no data) have nothing to pass on.
                if !event.is_empty() {
                    events.push(event);
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                self.data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
            // id:, event:, retry: and comments carry nothing we pass on.
        }
        events
    }
}

/// Carry MCP between stdin/stdout and the server at `url` until stdin ends.
pub async fn run(url: Uri, key: Option<String>) -> Result<()> {
    let auth = key
        .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
        .transpose()
        .context("the API key is not a valid header value")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let bridge = Arc::new(Bridge {
        client: Client::builder(TokioExecutor::new()).build(connector),
        url,
        auth,
        session: Mutex::new(None),
        version: Mutex::new(None),
        out: out_tx,
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(mut line) = out_rx.recv().await {
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = true;
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = stop_signal() => break,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        // The first message (initialize) sets up the session that every
        // later one names: it goes alone.
        if first {
            first = false;
            bridge.clone().forward(line).await;
            continue;
        }
        tasks.spawn(bridge.clone().forward(line));
        while tasks.try_join_next().is_some() {}
    }
    // Answers still due go out, then the session ends.
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = stop_signal() => {}
    }
    bridge.close().await;
    drop(bridge);
    let _ = writer.await;
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            tokio::select! {
                _ = s.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sse_events_across_chunks() {
        let mut s = Sse::default();
        assert!(s.feed(b"id: 0\nretry: 3000\ndata:\n\n").is_empty());
        assert!(s.feed(b"data: {\"a\":").is_empty());
        assert_eq!(s.feed(b"1}\r\n\r\ndata: x\n"), vec!["{\"a\":1}"]);
        assert_eq!(s.feed(b"data: y\n\n"), vec!["x\ny"]);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080/mcp"
        );
        assert_eq!(
            endpoint("http://h:1/custom/mcp").unwrap().to_string(),
            "http://h:1/custom/mcp"
        );
        assert!(endpoint("https://h/mcp").is_err());
        assert!(endpoint("127.0.0.1:8080").is_err());
    }
}
