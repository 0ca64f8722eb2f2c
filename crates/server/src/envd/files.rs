//! envd's `/files` (e2b-dev/E2B `spec/envd/envd.yaml`): `GET` downloads a
//! file, `POST` uploads one or more (`multipart/form-data`, or
//! `application/octet-stream` with `Content-Encoding: gzip` allowed),
//! creating parent directories and replacing what was there. Served from
//! the sandbox's VFS on its actor; uploads are charged to its disk limit
//! (over it: 507, E2B's "not enough disk space").

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use zeroboot_kernel::vfs::host::{HostEntry, HostFsError};

use super::{http_error, Sbx};

/// Most bytes of an over-limit upload read (and dropped) so the client
/// gets the 507 rather than a reset connection; past it the connection
/// is cut.
const DRAIN_MAX: u64 = 4 << 30;
/// Most bytes reserved up front for an upload's body.
const RESERVE_MAX: u64 = 64 << 20;
/// Slack over the disk limit for multipart framing.
const FRAMING_SLACK: usize = 1 << 20;

/// Why an upload or download failed.
#[derive(Debug, thiserror::Error)]
enum FilesError {
    #[error(transparent)]
    Fs(#[from] HostFsError),
    #[error("{0}")]
    Bad(String),
    #[error("error looking up user '{0}': no such account in the sandbox's /etc/passwd")]
    User(String),
    #[error("not enough disk space available: the upload ({0} bytes or more) is over the sandbox's disk limit of {1} bytes")]
    TooLarge(u64, u64),
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = match &self {
            FilesError::Fs(e) => match e {
                HostFsError::NotFound(_) => StatusCode::NOT_FOUND,
                HostFsError::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
                HostFsError::AlreadyExists(_) => StatusCode::CONFLICT,
                HostFsError::Denied(..) => StatusCode::FORBIDDEN,
                HostFsError::Other(..) => StatusCode::INTERNAL_SERVER_ERROR,
                HostFsError::IsADirectory(_)
                | HostFsError::NotADirectory(_)
                | HostFsError::Invalid(..) => StatusCode::BAD_REQUEST,
            },
            FilesError::Bad(_) => StatusCode::BAD_REQUEST,
            FilesError::User(_) => StatusCode::UNAUTHORIZED,
            FilesError::TooLarge(..) => StatusCode::INSUFFICIENT_STORAGE,
        };
        http_error(status, self.to_string())
    }
}

struct Query {
    path: Option<String>,
    /// The account the transfer acts as (E2B's default user when none).
    user: String,
}

fn query(parts: &Parts) -> Result<Query, FilesError> {
    let (mut path, mut user) = (None, None);
    for (k, v) in crate::e2b::query_pairs(parts.uri.query().unwrap_or("")) {
        match k.as_str() {
            "path" => path = Some(v),
            // Checked against the sandbox's accounts where used (an
            // unknown one is E2B's 401).
            "username" => user = Some(v),
            _ => {}
        }
    }
    Ok(Query {
        path,
        user: super::user::or_default(user),
    })
}

/// Whether a `/files` query carries a valid signature of a secure
/// sandbox's URL (the SDKs' `download_url`/`upload_url`): `v1_` and the
/// unpadded base64 of sha256(`path:operation:user:token[:expiration]`),
/// not expired.
pub(super) fn signed(query: &str, write: bool, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (mut path, mut user, mut sig, mut exp) = (String::new(), String::new(), None, None);
    for (k, v) in crate::e2b::query_pairs(query) {
        match k.as_str() {
            "path" => path = v,
            "username" => user = v,
            "signature" => sig = Some(v),
            "signature_expiration" => exp = Some(v),
            _ => {}
        }
    }
    let Some(sig) = sig else { return false };
    let op = if write { "write" } else { "read" };
    let raw = match &exp {
        None => format!("{path}:{op}:{user}:{token}"),
        Some(e) => {
            let Ok(at) = e.parse::<u64>() else {
                return false;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(u64::MAX);
            if at < now {
                return false;
            }
            format!("{path}:{op}:{user}:{token}:{e}")
        }
    };
    let want = format!("v1_{}", base64_unpadded(&Sha256::digest(raw.as_bytes())));
    bool::from(want.as_bytes().ct_eq(sig.as_bytes()))
}

fn base64_unpadded(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        let chars = c.len() + 1;
        for i in 0..chars {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// File bytes shared with the VFS (no copy for overlay files).
struct Shared(Arc<Vec<u8>>);
impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Whether the client asked for gzip alone (the SDKs' `gzip=True`
/// sends exactly `gzip`; clients' defaults list several encodings and get
/// the bytes as they are, which is faster on a local link).
fn wants_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

pub(super) async fn download(sbx: &Sbx, parts: &Parts) -> Response {
    let q = match query(parts) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let path = q.path.unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    let user = q.user;
    let read = sbx.with(move |k| {
        if super::user::cred(k.vfs(), &user).is_err() {
            return Err(FilesError::User(user));
        }
        k.vfs_mut().host_read(&path).map_err(FilesError::Fs)
    });
    let data = match read.await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return e.into_response(),
        Err(resp) => return resp,
    };
    let mut r = if wants_gzip(&parts.headers) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let out = std::io::Write::write_all(&mut enc, &data).and_then(|_| enc.finish());
        match out {
            Ok(z) => {
                let mut r = Body::from(z).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Err(e) => {
                return http_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("compressing: {e}"),
                )
            }
        }
    } else {
        Body::from(Bytes::from_owner(Shared(data))).into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let disp = format!(
        "inline; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disp) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Read a body of at most `limit` bytes; past it, drain and refuse.
async fn read_limited(body: Body, limit: u64, hint: Option<u64>) -> Result<Vec<u8>, FilesError> {
    // The client's Content-Length sizes the buffer, within bounds: a
    // request does not reserve more than it may send, nor much up front.
    let mut buf = Vec::with_capacity(hint.unwrap_or(0).min(limit).min(RESERVE_MAX) as usize);
    let mut total: u64 = 0;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| FilesError::Bad(format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            buf = Vec::new();
            if total > DRAIN_MAX {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if total > limit {
        return Err(FilesError::TooLarge(total, limit));
    }
    Ok(buf)
}

fn gunzip(data: &[u8], limit: u64) -> Result<Vec<u8>, FilesError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| FilesError::Bad(format!("the gzip body is invalid: {e}")))?;
    if out.len() as u64 > limit {
        return Err(FilesError::TooLarge(out.len() as u64, limit));
    }
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let p = hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)?;
        let at = i + p;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// A `Content-Disposition` parameter, unquoted (browsers' and httpx's
/// escapes of `"`, CR and LF undone).
fn disposition_param(h: &str, name: &str) -> Option<String> {
    for p in h.split(';').map(str::trim) {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case(name) {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(
                    v.replace("%22", "\"")
                        .replace("%0D", "\r")
                        .replace("%0A", "\n")
                        .replace("\\\"", "\""),
                );
            }
        }
    }
    None
}

/// One part of a multipart body: its filename and bytes.
type Part = (Option<String>, Vec<u8>);

/// The parts of a `multipart/form-data` body.
fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, FilesError> {
    let bad = |m: &str| FilesError::Bad(format!("invalid multipart body: {m}"));
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let mut at = find(body, delim.as_bytes(), 0).ok_or_else(|| bad("no boundary"))? + delim.len();
    let mut out = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(out);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err(bad("a boundary is not followed by CRLF"));
        }
        at += 2;
        let head_end =
            find(body, b"\r\n\r\n", at).ok_or_else(|| bad("a part has no header end"))?;
        let head = String::from_utf8_lossy(&body[at..head_end]);
        let mut filename = None;
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    filename = disposition_param(v, "filename");
                }
            }
        }
        let start = head_end + 4;
        let end = find(body, next_delim.as_bytes(), start)
            .ok_or_else(|| bad("a part has no closing boundary"))?;
        out.push((filename, body[start..end].to_vec()));
        at = end + next_delim.len();
    }
}

fn write_info(e: &HostEntry) -> Value {
    json!({ "name": e.name, "type": "file", "path": e.path })
}

pub(super) async fn upload(sbx: &Sbx, parts: &Parts, body: Body) -> Response {
    match upload_inner(sbx, parts, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn upload_inner(sbx: &Sbx, parts: &Parts, body: Body) -> Result<Response, FilesError> {
    let q = query(parts)?;
    if parts
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("x-metadata-"))
    {
        return Err(FilesError::Bad(
            "file metadata (X-Metadata-*) is not supported by this server (its envd version is 0.5.7)"
                .into(),
        ));
    }
    let disk = sbx.entry.spec.disk_mb << 20;
    let hint = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let files: Vec<(String, Vec<u8>)> = match mime.as_str() {
        "multipart/form-data" => {
            if encoding.as_deref().is_some_and(|e| e != "identity") {
                return Err(FilesError::Bad(
                    "Content-Encoding applies to octet-stream uploads only".into(),
                ));
            }
            let boundary = disposition_param(&ct, "boundary")
                .filter(|b| !b.is_empty() && b.len() <= 200)
                .ok_or_else(|| FilesError::Bad("multipart upload without a boundary".into()))?;
            let raw = read_limited(body, disk + FRAMING_SLACK as u64, hint).await?;
            let list = multipart(&raw, &boundary)?;
            drop(raw);
            let single = list.len() == 1;
            let mut out = Vec::with_capacity(list.len());
            for (filename, data) in list {
                let path = match (&q.path, filename) {
                    (Some(p), _) if single => p.clone(),
                    (_, Some(f)) if !f.is_empty() => f,
                    _ => {
                        return Err(FilesError::Bad(
                            "a file part has no path: give ?path= or a filename".into(),
                        ))
                    }
                };
                out.push((path, data));
            }
            out
        }
        "application/octet-stream" | "" => {
            let path = q.path.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
                FilesError::Bad(
                    "the path query parameter is required for octet-stream uploads".into(),
                )
            })?;
            let data = match encoding.as_deref() {
                None | Some("identity") => read_limited(body, disk, hint).await?,
                Some("gzip") => {
                    let z = read_limited(body, disk + FRAMING_SLACK as u64, hint).await?;
                    gunzip(&z, disk)?
                }
                Some(e) => {
                    return Err(FilesError::Bad(format!(
                        "unsupported Content-Encoding {e:?} (identity or gzip)"
                    )))
                }
            };
            vec![(path, data)]
        }
        other => {
            return Err(FilesError::Bad(format!(
            "unsupported Content-Type {other:?}: multipart/form-data or application/octet-stream"
        )))
        }
    };
    if files.is_empty() {
        return Err(FilesError::Bad("the upload holds no file".into()));
    }
    let name = q.user.clone();
    let written = sbx
        .with(move |k| {
            let cred = super::user::cred(k.vfs(), &name).map_err(|_| FilesError::User(name))?;
            k.vfs_mut().with_actor(&cred, |v| {
                let mut out = Vec::with_capacity(files.len());
                for (path, data) in files {
                    out.push(v.host_write(&path, data)?);
                }
                Ok::<_, FilesError>(out)
            })
        })
        .await;
    let written = match written {
        Ok(w) => w?,
        Err(resp) => return Ok(resp),
    };
    let list: Vec<Value> = written.iter().map(write_info).collect();
    Ok(Json(list).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn multipart_bodies_are_split() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a%22b\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n\r\n\x00\r\n--\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.as_deref(), Some("/home/user/a\"b"));
        assert_eq!(parts[0].1, b"hello");
        assert_eq!(parts[1].0.as_deref(), Some("b.bin"));
        assert_eq!(parts[1].1, b"\x00\r\n--");
        assert!(multipart(b"--XyZ\r\nno end", "XyZ").is_err());
        assert!(multipart(b"nothing", "XyZ").is_err());
        assert_eq!(
            disposition_param("multipart/form-data; boundary=abc", "boundary").as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn signed_urls_as_the_sdks_sign_them() {
        // e2b.sandbox.signature.get_signature("/home/user/a.txt", "read",
        // None, "tok"), computed with the SDK.
        let sig = "v1_Zkbb3914oLJLvMBzCAHQhm2ydBLxbSx2eQUR%2FkLdvIY";
        let q = format!("path=%2Fhome%2Fuser%2Fa.txt&signature={sig}");
        assert!(signed(&q, false, "tok"));
        assert!(!signed(&q, true, "tok"));
        assert!(!signed(&q, false, "other"));
        assert!(!signed("path=%2Fhome%2Fuser%2Fa.txt", false, "tok"));
        assert!(!signed(
            &format!("{q}&signature_expiration=1"),
            false,
            "tok"
        ));
        assert_eq!(base64_unpadded(b"ab"), "YWI");
        assert_eq!(base64_unpadded(b"abc"), "YWJj");
        assert_eq!(base64_unpadded(b"abcd"), "YWJjZA");
    }

    #[test]
    fn gzip_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[7u8; 10_000]).unwrap();
        let z = enc.finish().unwrap();
        assert_eq!(gunzip(&z, 10_000).unwrap().len(), 10_000);
        assert!(matches!(gunzip(&z, 9_999), Err(FilesError::TooLarge(..))));
        assert!(matches!(gunzip(b"not gzip", 10), Err(FilesError::Bad(_))));
    }

    #[tokio::test]
    async fn over_limit_bodies_are_drained_and_refused() {
        let r = read_limited(Body::from(vec![1u8; 100]), 99, Some(100)).await;
        assert!(matches!(r, Err(FilesError::TooLarge(100, 99))));
        let r = read_limited(Body::from(vec![1u8; 99]), 99, None)
            .await
            .unwrap();
        assert_eq!(r.len(), 99);
    }
}
