//! Connect RPC (connectrpc.com/docs/protocol) with the JSON codec, as E2B's
//! SDKs speak it to envd: unary calls (`application/json` both ways, errors
//! as `{"code": "not_found", "message": ...}` with the code's HTTP status)
//! and server-streaming calls (`application/connect+json`: the request and
//! every response message in a 5-byte envelope, the stream closed by an
//! end-of-stream envelope, flag 0x02, holding `{"error": ..}` or `{}`).
//!
//! Only the framing lives here; services parse their messages with serde
//! and answer with [`unary`] or [`server_stream`]. A stream's messages come
//! from a channel: when the client goes away the body is dropped, so is the
//! receiver, and the producer's next send fails, which ends it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Largest request message accepted (envd's requests are small).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Flag of a compressed envelope (refused: compression is off both ways).
const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-of-stream envelope.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Shortest and longest keep-alive interval a client may ask for.
const KEEPALIVE_RANGE: (u64, u64) = (1, 3600);

/// Connect's error codes (the protocol's full set; each service uses
/// some).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The code's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the protocol's
    /// table).
    pub fn http_status(self) -> StatusCode {
        let s = match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        };
        StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Why an RPC failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> RpcError {
        RpcError::new(Code::InvalidArgument, message)
    }

    pub fn unimplemented(procedure: &str) -> RpcError {
        RpcError::new(
            Code::Unimplemented,
            format!("{procedure} is not implemented by this server"),
        )
    }

    fn json(&self) -> Value {
        json!({ "code": self.code.name(), "message": self.message })
    }
}

/// A unary error response.
impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let mut r = (self.code.http_status(), self.json().to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// What is wrong with a request's framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the request body ends inside an envelope")]
    Truncated,
    #[error("a message of {0} bytes is over the limit of {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    #[error("compressed messages are not accepted")]
    Compressed,
    #[error("a server-streaming request holds exactly one message, not {0}")]
    Count(usize),
    #[error("the message is not valid JSON for this call: {0}")]
    Json(String),
    #[error("unsupported content type {0:?} (expected {1})")]
    ContentType(String, &'static str),
    #[error("unsupported encoding {0:?} (only identity)")]
    Encoding(String),
}

impl From<FrameError> for RpcError {
    fn from(e: FrameError) -> RpcError {
        let code = match e {
            FrameError::TooLarge(_) => Code::ResourceExhausted,
            FrameError::Compressed | FrameError::Encoding(_) => Code::Unimplemented,
            _ => Code::InvalidArgument,
        };
        RpcError::new(code, e.to_string())
    }
}

/// How a call is framed: by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Unary,
    Stream,
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The framing a request uses (JSON only: the SDKs never send protobuf).
pub fn framing(headers: &HeaderMap) -> Result<Framing, FrameError> {
    for h in ["content-encoding", "connect-content-encoding"] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            if !v.eq_ignore_ascii_case("identity") {
                return Err(FrameError::Encoding(v.to_string()));
            }
        }
    }
    match content_type(headers).as_str() {
        "application/json" => Ok(Framing::Unary),
        "application/connect+json" => Ok(Framing::Stream),
        other => Err(FrameError::ContentType(
            other.to_string(),
            "application/json or application/connect+json",
        )),
    }
}

fn parse<T: DeserializeOwned>(data: &[u8]) -> Result<T, FrameError> {
    // An empty unary body is the empty message.
    let data: &[u8] = if data.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        data
    };
    serde_json::from_slice(data).map_err(|e| FrameError::Json(e.to_string()))
}

/// An envelope's flags, its payload, and the bytes it takes.
pub type Envelope<'a> = (u8, &'a [u8], usize);

/// The first complete envelope of `buf`; None while it is incomplete (a
/// streamed body read as it arrives).
pub fn next_envelope(buf: &[u8]) -> Result<Option<Envelope<'_>>, FrameError> {
    let Some(head) = buf.get(..5) else {
        return Ok(None);
    };
    let flags = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_REQUEST_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    if flags & FLAG_COMPRESSED != 0 {
        return Err(FrameError::Compressed);
    }
    Ok(buf.get(5..5 + len).map(|m| (flags, m, 5 + len)))
}

/// Split a body into envelopes: (flags, payload).
pub fn envelopes(mut body: &[u8]) -> Result<Vec<(u8, &[u8])>, FrameError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (flags, m, used) = next_envelope(body)?.ok_or(FrameError::Truncated)?;
        out.push((flags, m));
        body = &body[used..];
    }
    Ok(out)
}

/// One message of a client stream.
pub fn message<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    parse(payload)
}

/// The request message of a call framed as `framing`.
pub fn request<T: DeserializeOwned>(framing: Framing, body: &[u8]) -> Result<T, FrameError> {
    match framing {
        Framing::Unary => {
            if body.len() > MAX_REQUEST_BYTES {
                return Err(FrameError::TooLarge(body.len()));
            }
            parse(body)
        }
        Framing::Stream => {
            let env = envelopes(body)?;
            match env.as_slice() {
                [(_, m)] => parse(m),
                other => Err(FrameError::Count(other.len())),
            }
        }
    }
}

/// One envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + payload.len());
    b.push(flags);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

/// The end-of-stream envelope (with the error, if the call failed).
pub fn end_stream(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        Some(e) => json!({ "error": e.json() }),
        None => json!({}),
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// A unary success response.
pub fn unary<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(b) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            b,
        )
            .into_response(),
        Err(e) => {
            RpcError::new(Code::Internal, format!("encoding the response: {e}")).into_response()
        }
    }
}

/// The answer to a call: a message or an error.
pub fn reply<T: Serialize>(framing: Framing, r: Result<T, RpcError>) -> Response {
    match (framing, r) {
        (Framing::Unary, Ok(m)) => unary(&m),
        (Framing::Unary, Err(e)) => e.into_response(),
        (Framing::Stream, r) => {
            // A unary procedure called with streaming framing (allowed by
            // the protocol for clients that only stream).
            let mut body = Vec::new();
            let err = match r {
                Ok(m) => match serde_json::to_vec(&m) {
                    Ok(b) => {
                        body.extend_from_slice(&envelope(0, &b));
                        None
                    }
                    Err(e) => Some(RpcError::new(Code::Internal, e.to_string())),
                },
                Err(e) => Some(e),
            };
            body.extend_from_slice(&end_stream(err.as_ref()));
            stream_response(Body::from(body))
        }
    }
}

fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/connect+json")],
        body,
    )
        .into_response()
}

/// The keep-alive interval a client asked for (E2B's
/// `Keepalive-Ping-Interval`, seconds).
pub fn keepalive_interval(headers: &HeaderMap) -> Option<Duration> {
    let s: u64 = headers
        .get("keepalive-ping-interval")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(
        s.clamp(KEEPALIVE_RANGE.0, KEEPALIVE_RANGE.1),
    ))
}

/// The call's deadline (`Connect-Timeout-Ms`).
pub fn deadline(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers
        .get("connect-timeout-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}

/// Options of a server stream.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Send `keepalive_message` when nothing else was sent for this long.
    pub keepalive: Option<Duration>,
    pub keepalive_message: Value,
    /// End the stream with deadline_exceeded after this long.
    pub deadline: Option<Duration>,
}

impl StreamOptions {
    /// The options a request asks for, with the service's keep-alive
    /// message.
    pub fn from_headers(headers: &HeaderMap, keepalive_message: Value) -> StreamOptions {
        StreamOptions {
            keepalive: keepalive_interval(headers),
            keepalive_message,
            deadline: deadline(headers),
        }
    }
}

/// Stream what `rx` yields: each Ok message in an envelope; an Err ends
/// the stream with that error; the channel closing ends it cleanly.
pub fn server_stream(rx: mpsc::Receiver<Result<Value, RpcError>>, opts: StreamOptions) -> Response {
    let until = opts.deadline.map(|d| tokio::time::Instant::now() + d);
    let state = (rx, opts, until, false);
    let s = futures_util::stream::unfold(state, |(mut rx, opts, until, done)| async move {
        if done {
            return None;
        }
        let next = async {
            match opts.keepalive {
                Some(k) => tokio::time::timeout(k, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            }
        };
        let got = match until {
            Some(t) => match tokio::time::timeout_at(t, next).await {
                Ok(x) => x,
                Err(_) => Some(Some(Err(RpcError::new(
                    Code::DeadlineExceeded,
                    "the stream reached its deadline (Connect-Timeout-Ms)",
                )))),
            },
            None => next.await,
        };
        let (frame, done) = match got {
            // Nothing for a keep-alive interval.
            None => (
                envelope(0, opts.keepalive_message.to_string().as_bytes()),
                false,
            ),
            Some(Some(Ok(m))) => (envelope(0, m.to_string().as_bytes()), false),
            Some(Some(Err(e))) => (end_stream(Some(&e)), true),
            Some(None) => (end_stream(None), true),
        };
        Some((
            Ok::<Bytes, std::convert::Infallible>(frame),
            (rx, opts, until, done),
        ))
    });
    stream_response(Body::from_stream(s))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::to_bytes;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Req {
        path: String,
    }

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn envelopes_round_trip_and_bad_frames_are_refused() {
        let mut body = envelope(0, br#"{"path":"/a"}"#).to_vec();
        assert_eq!(&body[..5], &[0, 0, 0, 0, 13]);
        let r: Req = request(Framing::Stream, &body).unwrap();
        assert_eq!(r.path, "/a");
        body.extend_from_slice(&envelope(0, b"{}"));
        assert_eq!(
            request::<Req>(Framing::Stream, &body).unwrap_err(),
            FrameError::Count(2)
        );
        assert_eq!(envelopes(&body[..7]).unwrap_err(), FrameError::Truncated);
        assert_eq!(envelopes(&[0, 0]).unwrap_err(), FrameError::Truncated);
        assert_eq!(
            envelopes(&[1, 0, 0, 0, 0]).unwrap_err(),
            FrameError::Compressed
        );
        assert_eq!(
            envelopes(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
            FrameError::TooLarge(0xffff_ffff)
        );
    }

    #[test]
    fn unary_requests_and_errors() {
        let r: Req = request(Framing::Unary, br#"{"path":"x"}"#).unwrap();
        assert_eq!(r.path, "x");
        let e = request::<Req>(Framing::Unary, b"{nope").unwrap_err();
        assert!(matches!(e, FrameError::Json(_)));
        assert_eq!(RpcError::from(e).code, Code::InvalidArgument);
        assert_eq!(
            framing(&headers("application/json; charset=utf-8")).unwrap(),
            Framing::Unary
        );
        assert_eq!(
            framing(&headers("application/connect+json")).unwrap(),
            Framing::Stream
        );
        assert!(framing(&headers("application/proto")).is_err());
        let mut h = headers("application/json");
        h.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
        assert_eq!(
            RpcError::from(framing(&h).unwrap_err()).code,
            Code::Unimplemented
        );
        assert_eq!(Code::NotFound.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::Unimplemented.http_status().as_u16(), 501);
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
        assert_eq!(Code::ResourceExhausted.http_status().as_u16(), 429);
    }

    #[tokio::test]
    async fn unary_error_body_is_connects() {
        let r = RpcError::new(Code::NotFound, "no such file").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let b = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"code": "not_found", "message": "no such file"}));
    }

    fn split(body: &[u8]) -> Vec<(u8, Value)> {
        envelopes(body)
            .unwrap()
            .into_iter()
            .map(|(f, m)| (f, serde_json::from_slice(m).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn streams_end_with_an_end_stream_message() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(json!({"start": {}}))).await.unwrap();
        tx.send(Err(RpcError::new(Code::NotFound, "gone")))
            .await
            .unwrap();
        let r = server_stream(rx, StreamOptions::default());
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/connect+json"
        );
        let b = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            split(&b),
            vec![
                (0, json!({"start": {}})),
                (
                    FLAG_END_STREAM,
                    json!({"error": {"code": "not_found", "message": "gone"}})
                )
            ]
        );
        let (tx, rx) = mpsc::channel::<Result<Value, RpcError>>(1);
        drop(tx);
        let b = to_bytes(
            server_stream(rx, StreamOptions::default()).into_body(),
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(split(&b), vec![(FLAG_END_STREAM, json!({}))]);
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_and_deadlines() {
        let (tx, rx) = mpsc::channel::<Result<Value, RpcError>>(1);
        let opts = StreamOptions {
            keepalive: Some(Duration::from_secs(1)),
            keepalive_message: json!({"keepalive": {}}),
            deadline: Some(Duration::from_millis(2500)),
        };
        let b = to_bytes(server_stream(rx, opts).into_body(), 1 << 20)
            .await
            .unwrap();
        drop(tx);
        let got = split(&b);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], (0, json!({"keepalive": {}})));
        assert_eq!(got[2].0, FLAG_END_STREAM);
        assert_eq!(got[2].1["error"]["code"], "deadline_exceeded");
    }

    #[tokio::test]
    async fn a_dropped_stream_drops_the_receiver() {
        let (tx, rx) = mpsc::channel::<Result<Value, RpcError>>(1);
        let r = server_stream(rx, StreamOptions::default());
        drop(r);
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn unary_procedures_answer_streaming_clients_too() {
        let r = reply(Framing::Stream, Ok(json!({"a": 1})));
        let b = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            split(&b),
            vec![(0, json!({"a": 1})), (FLAG_END_STREAM, json!({}))]
        );
        let r = reply::<Value>(
            Framing::Unary,
            Err(RpcError::unimplemented("process.Process/Start")),
        );
        assert_eq!(r.status().as_u16(), 501);
    }
}
