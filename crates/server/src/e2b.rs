//! E2B's control plane (e2b-dev/E2B `spec/openapi.yml`) over our live
//! sandboxes: the same paths, bodies, status codes and error shape
//! (`{"code": N, "message": "..."}`), so E2B's SDKs work against zeroboot
//! with `E2B_API_URL` pointing here. Also our own `POST
//! /v1/sandboxes/{id}/exec`, which runs code in a live sandbox and answers
//! as `/v1/exec` does.
//!
//! Thin on purpose: validation and translation here, the sandboxes in
//! `sandboxes.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use zeroboot_engine::{Language, LiveError};

use crate::api::ApiError;
use crate::auth::Denied;
use crate::sandboxes::{Entry, SandboxError, Spec};
use crate::AppState;

/// The envd version sandboxes report: the SDKs gate features on it.
/// 0.5.7 turns on what `envd/` serves: default user (0.4.0), recursive
/// watches (0.1.4), octet-stream and gzip uploads (0.5.7). Above it, file
/// metadata (0.6.2), watch events with entries (0.6.3) and network mounts
/// (0.6.4), which are not served: the SDKs refuse them themselves.
pub const ENVD_VERSION: &str = "0.5.7";
/// `clientID` (deprecated in the spec; always one value here).
const CLIENT_ID: &str = "zeroboot";
/// The spec's default time to live (seconds).
const DEFAULT_TIMEOUT: u64 = 15;
/// Most bytes of metadata (keys and values together) and of envVars.
pub const MAX_METADATA_BYTES: usize = 8 << 10;
pub const MAX_ENV_BYTES: usize = 64 << 10;

/// An error in E2B's shape.
pub struct E2bError {
    status: StatusCode,
    message: String,
}

impl E2bError {
    fn new(status: StatusCode, message: impl Into<String>) -> E2bError {
        E2bError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> E2bError {
        E2bError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.status.as_u16(), "message": self.message })),
        )
            .into_response()
    }
}

impl From<SandboxError> for E2bError {
    fn from(e: SandboxError) -> E2bError {
        match e {
            SandboxError::NotFound(m) | SandboxError::Ended(m) => {
                E2bError::new(StatusCode::NOT_FOUND, m)
            }
            SandboxError::TooMany(m) => E2bError::new(StatusCode::TOO_MANY_REQUESTS, m),
            SandboxError::Conflict(m) => E2bError::new(StatusCode::CONFLICT, m),
            SandboxError::Internal(m) => E2bError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            SandboxError::Draining(m) => E2bError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

fn finish(state: &AppState, endpoint: &'static str, r: Result<Response, E2bError>) -> Response {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    state.metrics.request(endpoint, resp.status().as_u16());
    resp
}

/// The frame of every control-plane handler: authorize the caller, run
/// `handler` with the caller's key, answer its error in E2B's shape, and
/// count the request under `endpoint`.
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &'static str,
    handler: impl AsyncFnOnce(Option<usize>) -> Result<Response, E2bError>,
) -> Response {
    let r = match authorize(state, headers) {
        Ok(owner) => handler(owner).await,
        Err(e) => Err(e),
    };
    finish(state, endpoint, r)
}

/// `respond` for a handler of a JSON object body (read once the caller is
/// authorized, so an unauthorized caller is told so whatever it sent).
async fn respond_json(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &'static str,
    body: Body,
    handler: impl AsyncFnOnce(Option<usize>, Map<String, Value>) -> Result<Response, E2bError>,
) -> Response {
    respond(state, headers, endpoint, async |owner| {
        handler(owner, body_object(body).await?).await
    })
    .await
}

/// The caller's key: `X-API-Key` (E2B's header) or `Authorization: Bearer`.
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<usize>, Denied> {
    let x = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("Bearer {}", k.trim()));
    let h = x.or_else(|| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    state.auth.check(h.as_deref())
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Option<usize>, E2bError> {
    caller(state, headers).map_err(|d| match d {
        Denied::Unauthorized(m) => E2bError::new(
            StatusCode::UNAUTHORIZED,
            m.replace("(Authorization: Bearer <key>)", "(X-API-Key: <key>)"),
        ),
        Denied::RateLimited(s) => E2bError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit of {} requests per second exceeded; retry in {s} s",
                state.config.rate_limit
            ),
        ),
    })
}

/// The JSON object of a request body (an empty body is `{}`).
async fn body_object(body: Body) -> Result<Map<String, Value>, E2bError> {
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| E2bError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body over 1 MiB"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(E2bError::bad("request body must be a JSON object")),
        Err(e) => Err(E2bError::bad(format!("malformed JSON: {e}"))),
    }
}

/// A time to live in seconds: an integer in 0..=max; `default` if absent.
fn timeout_field(
    state: &AppState,
    body: &Map<String, Value>,
    default: Option<u64>,
) -> Result<Duration, E2bError> {
    let max = state.sandboxes.limits.max_timeout;
    let v = match body.get("timeout") {
        None | Some(Value::Null) => {
            return default
                .map(Duration::from_secs)
                .ok_or_else(|| E2bError::bad("timeout is required"))
        }
        Some(v) => v,
    };
    match v.as_i64() {
        Some(t) if (0..=max as i64).contains(&t) => Ok(Duration::from_secs(t as u64)),
        Some(_) => Err(E2bError::bad(format!(
            "timeout must be between 0 and {max} seconds"
        ))),
        None => Err(E2bError::bad(
            "timeout must be an integer number of seconds",
        )),
    }
}

/// A string-to-string map field of at most `max` bytes.
fn string_map(
    body: &Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<BTreeMap<String, String>, E2bError> {
    let mut out = BTreeMap::new();
    match body.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let mut size = 0;
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(E2bError::bad(format!("{name}.{k} must be a string")));
                };
                size += k.len() + s.len();
                out.insert(k.clone(), s.clone());
            }
            if size > max {
                return Err(E2bError::bad(format!(
                    "{name} is {size} bytes; the limit is {max}"
                )));
            }
        }
        Some(_) => {
            return Err(E2bError::bad(format!(
                "{name} must be an object of strings"
            )))
        }
    }
    Ok(out)
}

fn bool_field(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, E2bError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(E2bError::bad(format!("{name} must be a boolean"))),
    }
}

/// The template a name stands for. `base` is the Python template for now.
fn resolve_template(state: &AppState, name: &str) -> Result<Language, E2bError> {
    let lang = match name {
        "python" | "base" => Some(Language::Python),
        "node" => Some(Language::Node),
        "code-interpreter-v1" | "code-interpreter" => Some(Language::CodeInterpreter),
        _ => None,
    };
    match lang {
        Some(l) if state.templates.contains_key(&l) => Ok(l),
        Some(Language::CodeInterpreter) => Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!(
                "template '{name}' not found: this server does not serve it; start it with `zeroboot serve --languages python,node,code-interpreter` (its image is built on first start)"
            ),
        )),
        _ => Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template '{name}' not found"),
        )),
    }
}

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Parse RFC 3339 (`2024-01-02T03:04:05[.frac](Z|±hh:mm)`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") => {
            let m = tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?;
            if &tz[..1] == "-" {
                -m * 60
            } else {
                m * 60
            }
        }
        _ => return None,
    };
    // Days from civil (the inverse of rfc3339's).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se - offset;
    if secs < 0 {
        return Some(UNIX_EPOCH);
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

fn state_name(e: &Entry) -> &'static str {
    if e.life().paused {
        "paused"
    } else {
        "running"
    }
}

/// The spec's `Sandbox` (create, connect, resume).
fn sandbox_json(e: &Entry) -> Value {
    let mut v = json!({
        "templateID": e.spec.template,
        "alias": e.spec.template,
        "sandboxID": e.id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "trafficAccessToken": null,
        "domain": null,
    });
    if e.spec.secure {
        v["envdAccessToken"] = json!(e.access_token);
    }
    v
}

/// The spec's `ListedSandbox`.
fn listed_json(e: &Entry) -> Value {
    json!({
        "templateID": e.spec.template,
        "alias": e.spec.template,
        "sandboxID": e.id,
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(e.started_at),
        "endAt": rfc3339(e.life().end_at),
        "cpuCount": 1,
        "memoryMB": e.spec.memory_mb,
        "diskSizeMB": e.spec.disk_mb,
        "metadata": e.spec.metadata,
        "state": state_name(e),
        "envdVersion": ENVD_VERSION,
        "volumeMounts": [],
    })
}

/// The spec's `SandboxDetail`.
fn detail_json(e: &Entry) -> Value {
    let mut v = listed_json(e);
    // Whether it has network: the server's is on and its rules do not
    // deny everything.
    let n = e.network();
    v["allowInternetAccess"] = json!(n.operator.enabled && !n.rules.denies_all());
    v["network"] = json!({
        "enabled": n.operator.enabled,
        "allowOut": n.rules.allow_out.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "denyOut": n.rules.deny_out.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    v["domain"] = Value::Null;
    v["lifecycle"] = json!({
        "autoResume": false,
        "onTimeout": if e.spec.auto_pause { "pause" } else { "kill" },
    });
    if e.spec.secure {
        v["envdAccessToken"] = json!(e.access_token);
    }
    v
}

/// `POST /sandboxes`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_create",
        body,
        async |owner, b| create_sandbox(&state, owner, b, false).await,
    )
    .await
}

/// `POST /v2/sandboxes` (every sandbox secured).
pub async fn create_v2(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_create",
        body,
        async |owner, b| create_sandbox(&state, owner, b, true).await,
    )
    .await
}

async fn create_sandbox(
    state: &Arc<AppState>,
    owner: Option<usize>,
    b: Map<String, Value>,
    always_secure: bool,
) -> Result<Response, E2bError> {
    let template = match b.get("templateID") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(E2bError::bad("templateID is required (a template name)")),
    };
    let timeout = timeout_field(state, &b, Some(DEFAULT_TIMEOUT))?;
    let metadata = string_map(&b, "metadata", MAX_METADATA_BYTES)?;
    let env = string_map(&b, "envVars", MAX_ENV_BYTES)?;
    if let Some(k) = env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(E2bError::bad(format!(
            "envVars has an invalid variable name {k:?}"
        )));
    }
    let secure = always_secure || bool_field(&b, "secure")?.unwrap_or(false);
    // E2B's SDK sends allow_internet_access: true by default; on a server
    // whose network is off the sandbox is made without network (its
    // detail says so).
    let allow_internet = bool_field(&b, "allow_internet_access")?;
    let network_body = match b.get("network") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<crate::network::NetworkBody>(v.clone())
                .map_err(|e| E2bError::bad(format!("network: {e}")))?,
        ),
    };
    let network = crate::network::setup(
        &state.config.network,
        allow_internet,
        network_body,
        String::new(),
    )
    .map_err(|e| E2bError::bad(e.message))?;
    let auto_pause = bool_field(&b, "autoPause")?.unwrap_or(false);
    // false: the automatic pause keeps the files only (a cold boot on resume).
    let auto_pause_memory = bool_field(&b, "autoPauseMemory")?.unwrap_or(true);
    if matches!(b.get("volumeMounts"), Some(Value::Array(a)) if !a.is_empty()) {
        return Err(E2bError::bad(
            "volumeMounts are not supported by this server",
        ));
    }
    // A snapshot is a template too (E2B's snapshotID), by id or name.
    let snapshot = match resolve_template(state, &template) {
        Ok(_) => None,
        Err(not_found) => Some(
            state
                .sandboxes
                .store
                .as_ref()
                .and_then(|s| s.find_snapshot(&template, owner))
                .ok_or(not_found)?,
        ),
    };
    let language = match &snapshot {
        Some(m) => Language::parse(&m.language),
        None => Some(resolve_template(state, &template)?),
    };
    let Some((language, tmpl)) =
        language.and_then(|l| Some((l, state.templates.get(&l).cloned()?)))
    else {
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!("template '{template}' not found (its language is not served)"),
        ));
    };
    let mut spec = Spec {
        template,
        language,
        owner,
        metadata,
        secure,
        memory_mb: state.config.max_memory_mb,
        disk_mb: state.config.max_disk_mb,
        network: Arc::new(std::sync::Mutex::new(network)),
        auto_pause,
        auto_pause_memory,
    };
    let e = match snapshot {
        Some(snap) => {
            if !env.is_empty() {
                return Err(E2bError::bad(
                    "envVars cannot be set on a sandbox made from a snapshot (its processes already run with the snapshot's)",
                ));
            }
            spec.memory_mb = snap.memory_mb;
            spec.disk_mb = snap.disk_mb;
            state
                .sandboxes
                .create_from_snapshot(&snap, tmpl, spec, timeout)
                .await?
        }
        None => {
            state
                .sandboxes
                .create(tmpl, spec, env.into_iter().collect(), timeout)
                .await?
        }
    };
    tracing::info!(sandbox = %e.id, template = %e.spec.template, "sandbox created");
    Ok((StatusCode::CREATED, Json(sandbox_json(&e))).into_response())
}

/// The decoded `key=value` pairs of a query string.
pub(crate) fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `metadata` filter: `k=v&k2=v2` with keys and values URL-encoded
/// once more (as the SDKs send it).
fn metadata_filter(q: &[(String, String)]) -> Vec<(String, String)> {
    q.iter()
        .filter(|(k, _)| k == "metadata")
        .flat_map(|(_, v)| query_pairs(v))
        .map(|(k, v)| (form_decode(&k), form_decode(&v)))
        .collect()
}

fn matches_metadata(e: &Entry, filter: &[(String, String)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| e.spec.metadata.get(k).is_some_and(|x| x == v))
}

/// `GET /sandboxes` (v1, deprecated in the spec): running sandboxes.
pub async fn list_v1(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    respond(&state, &headers, "sandboxes_list", async |owner| {
        let q = query_pairs(uri.query().unwrap_or(""));
        let filter = metadata_filter(&q);
        let mut list = state.sandboxes.list(owner);
        list.retain(|e| !e.life().paused && matches_metadata(e, &filter));
        list.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        let items: Vec<Value> = list.iter().map(|e| listed_json(e)).collect();
        Ok(Json(items).into_response())
    })
    .await
}

/// `GET /v2/sandboxes`: filters by metadata, state and template, ordered
/// by start time, paged with `limit` and `nextToken` (`X-Next-Token`).
pub async fn list_v2(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    respond(&state, &headers, "sandboxes_list", async |owner| {
        let q = query_pairs(uri.query().unwrap_or(""));
        let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let filter = metadata_filter(&q);
        let (mut running, mut paused) = (true, true);
        if let Some(s) = get("state") {
            (running, paused) = (false, false);
            for st in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match st {
                    "running" => running = true,
                    "paused" => paused = true,
                    other => {
                        return Err(E2bError::bad(format!(
                            "invalid state {other:?}: use running, paused"
                        )))
                    }
                }
            }
        }
        let limit = match get("limit") {
            None => 100,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(E2bError::bad("limit must be an integer from 1 to 100")),
            },
        };
        let asc = match get("order") {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(o) => return Err(E2bError::bad(format!("invalid order {o:?}: use asc, desc"))),
        };
        let after = match get("startedAfter") {
            None => None,
            Some(s) => Some(
                parse_rfc3339(s)
                    .ok_or_else(|| E2bError::bad(format!("invalid startedAfter {s:?}")))?,
            ),
        };
        let template = get("template");
        let key = |e: &Entry| {
            (
                e.started_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
                e.id.clone(),
            )
        };
        let cursor = match get("nextToken") {
            None | Some("") => None,
            Some(t) => Some(
                t.split_once('.')
                    .and_then(|(ns, id)| Some((ns.parse::<u128>().ok()?, id.to_string())))
                    .ok_or_else(|| E2bError::bad("invalid nextToken"))?,
            ),
        };
        let mut list = state.sandboxes.list(owner);
        list.retain(|e| {
            let p = e.life().paused;
            ((running && !p) || (paused && p))
                && matches_metadata(e, &filter)
                && after.is_none_or(|a| e.started_at >= a)
                && template.is_none_or(|t| t == e.spec.template || t == e.spec.language.name())
        });
        let total_running = list.iter().filter(|e| !e.life().paused).count();
        list.sort_by_key(|e| key(e));
        if !asc {
            list.reverse();
        }
        if let Some(c) = &cursor {
            list.retain(|e| if asc { key(e) > *c } else { key(e) < *c });
        }
        let more = list.len() > limit;
        list.truncate(limit);
        let items: Vec<Value> = list.iter().map(|e| listed_json(e)).collect();
        let mut resp = Json(items).into_response();
        let h = resp.headers_mut();
        if more {
            if let Some(last) = list.last() {
                let (ns, id) = key(last);
                if let Ok(v) = HeaderValue::from_str(&format!("{ns}.{id}")) {
                    h.insert("x-next-token", v);
                }
            }
        }
        if running {
            h.insert("x-total-running", HeaderValue::from(total_running));
        }
        Ok(resp)
    })
    .await
}

/// `GET /sandboxes/{id}`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(&state, &headers, "sandboxes_get", async |owner| {
        let e = state.sandboxes.get(&id, owner)?;
        Ok(Json(detail_json(&e)).into_response())
    })
    .await
}

/// `DELETE /sandboxes/{id}`: 204.
pub async fn kill(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(&state, &headers, "sandboxes_kill", async |owner| {
        state.sandboxes.kill(&id, owner)?;
        tracing::info!(sandbox = %id, "sandbox killed");
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `POST /sandboxes/{id}/timeout` `{"timeout": seconds}`: 204.
pub async fn set_timeout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_timeout",
        body,
        async |owner, b| {
            let t = timeout_field(&state, &b, None)?;
            state.sandboxes.set_timeout(&id, owner, t)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        },
    )
    .await
}

/// `PUT /sandboxes/{id}/network` `{"allow_internet_access": bool,
/// "allowOut": [...], "denyOut": [...]}` (or those inside `network`):
/// replaces the live sandbox's egress rules; answers its detail.
pub async fn set_network(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_network",
        body,
        async |owner, b| {
            let allow_internet = bool_field(&b, "allow_internet_access")?;
            let rules = match b.get("network") {
                Some(v) if !v.is_null() => v.clone(),
                _ => Value::Object(b.clone()),
            };
            let body: crate::network::NetworkBody = serde_json::from_value(rules)
                .map_err(|e| E2bError::bad(format!("network: {e}")))?;
            let setup = crate::network::setup(
                &state.config.network,
                allow_internet,
                Some(body),
                id.clone(),
            )
            .map_err(|e| E2bError::bad(e.message))?;
            let e = state
                .sandboxes
                .set_network(&id, owner, setup.rules.clone())
                .await?;
            Ok(Json(detail_json(&e)).into_response())
        },
    )
    .await
}

/// `POST /sandboxes/{id}/connect` `{"timeout": seconds, "memory"?}`: 200
/// (running; the time to live only grows) or 201 (resumed; with `memory`
/// false, cold-booted with its files: the SDK's `on_resume="reboot"`).
pub async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_connect",
        body,
        async |owner, b| {
            let t = timeout_field(&state, &b, Some(DEFAULT_TIMEOUT))?;
            let memory = bool_field(&b, "memory")?.unwrap_or(true);
            let (e, resumed) =
                blocking(&state, move |s| s.connect_blocking(&id, owner, t, memory)).await?;
            let status = if resumed {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(sandbox_json(&e))).into_response())
        },
    )
    .await
}

/// Most copies one fork call may ask for (E2B's spec).
const MAX_FORK_COUNT: i64 = 100;

/// `POST /sandboxes/{id}/fork` `{count?, timeout?}`: 201 with one entry per
/// copy, `{"sandbox": ...}` or `{"error": {code, message}}` (a copy over a
/// limit fails alone); 404 unknown, 409 paused or running code.
pub async fn fork(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_fork",
        body,
        async |owner, b| {
            let t = timeout_field(&state, &b, Some(DEFAULT_TIMEOUT))?;
            let count = match b.get("count") {
                None | Some(Value::Null) => 1,
                Some(v) => match v.as_i64() {
                    Some(n) if (1..=MAX_FORK_COUNT).contains(&n) => n as usize,
                    _ => {
                        return Err(E2bError::bad(format!(
                            "count must be an integer from 1 to {MAX_FORK_COUNT}"
                        )))
                    }
                },
            };
            let copies = state.sandboxes.fork(&id, owner, count, t).await?;
            let out: Vec<Value> = copies
                .into_iter()
                .map(|c| match c {
                    Ok(e) => json!({ "sandbox": sandbox_json(&e) }),
                    Err(err) => {
                        let e = E2bError::from(err);
                        json!({ "error": { "code": e.status.as_u16(), "message": e.message } })
                    }
                })
                .collect();
            Ok((StatusCode::CREATED, Json(Value::Array(out))).into_response())
        },
    )
    .await
}

/// `POST /sandboxes/{id}/pause`: 204, 409 when already paused.
pub async fn pause(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_pause",
        body,
        async |owner, b| {
            // false: only the files are kept; resuming cold-boots the sandbox.
            let memory = bool_field(&b, "memory")?.unwrap_or(true);
            blocking(&state, move |s| s.pause_blocking(&id, owner, memory)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        },
    )
    .await
}

/// `POST /sandboxes/{id}/resume` `{"timeout": seconds}`: 201, 409 when
/// running.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_resume",
        body,
        async |owner, b| {
            let t = timeout_field(&state, &b, Some(DEFAULT_TIMEOUT))?;
            let memory = bool_field(&b, "memory")?.unwrap_or(true);
            let e = blocking(&state, move |s| s.resume_blocking(&id, owner, t, memory)).await?;
            Ok((StatusCode::CREATED, Json(sandbox_json(&e))).into_response())
        },
    )
    .await
}

/// Run `f` on the sandboxes off the async threads (it reads or writes a
/// sandbox's checkpoint on disk).
async fn blocking<R: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&crate::sandboxes::Sandboxes) -> Result<R, SandboxError> + Send + 'static,
) -> Result<R, E2bError> {
    let s = state.sandboxes.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| E2bError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(E2bError::from)
}

/// The spec's `SnapshotInfo`.
fn snapshot_json(m: &crate::store::SavedMeta) -> Value {
    let names: Vec<String> = m
        .name
        .iter()
        .map(|n| format!("{n}:default"))
        .chain(std::iter::once(format!("{}:default", m.id)))
        .collect();
    json!({ "snapshotID": format!("{}:default", m.id), "names": names })
}

/// `POST /sandboxes/{id}/snapshots` `{name?}`: 201 `SnapshotInfo`; the
/// sandbox goes on running. 404 unknown, 409 running code.
pub async fn snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond_json(
        &state,
        &headers,
        "sandboxes_snapshot",
        body,
        async |owner, b| {
            let name = match b.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n))
                    if !n.is_empty()
                        && n.len() <= 128
                        && n.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) =>
                {
                    Some(n.clone())
                }
                Some(_) => {
                    return Err(E2bError::bad(
                        "name must be 1 to 128 letters, digits, '-', '_' or '.'",
                    ))
                }
            };
            // false: a snapshot of the files only; sandboxes made from it start
            // as fresh ones of its template with those files.
            let memory = bool_field(&b, "memory")?.unwrap_or(true);
            let source = id.clone();
            let m = blocking(&state, move |s| {
                s.snapshot_blocking(&source, owner, name, memory)
            })
            .await?;
            tracing::info!(sandbox = %id, snapshot = %m.id, bytes = m.bytes, "snapshot taken");
            Ok((StatusCode::CREATED, Json(snapshot_json(&m))).into_response())
        },
    )
    .await
}

/// `GET /snapshots?sandboxID=&name=`: the caller's snapshots.
pub async fn list_snapshots(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    respond(&state, &headers, "snapshots_list", async |owner| {
        let q = query_pairs(uri.query().unwrap_or(""));
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (source, name) = (get("sandboxID"), get("name"));
        let list: Vec<Value> = state
            .sandboxes
            .store
            .as_ref()
            .map(|s| s.snapshots(owner))
            .unwrap_or_default()
            .iter()
            .filter(|m| source.as_ref().is_none_or(|s| &m.source == s))
            .filter(|m| {
                name.as_ref().is_none_or(|n| {
                    let n = n.strip_suffix(":default").unwrap_or(n);
                    m.id == n || m.name.as_deref() == Some(n)
                })
            })
            .map(snapshot_json)
            .collect();
        Ok(Json(Value::Array(list)).into_response())
    })
    .await
}

/// `DELETE /templates/{id}`: delete a snapshot (E2B's SDK deletes
/// snapshots as templates): 204, 404 when it is not one of the caller's.
pub async fn delete_template(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(&state, &headers, "templates_delete", async |owner| {
        let deleted = state
            .sandboxes
            .store
            .as_ref()
            .is_some_and(|s| s.delete_snapshot(&id, owner));
        if deleted {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(E2bError::new(
                StatusCode::NOT_FOUND,
                format!("snapshot '{id}' not found (built-in templates cannot be deleted)"),
            ))
        }
    })
    .await
}

/// `GET /health`: 204.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    finish(&state, "health", Ok(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/sandboxes/{id}/exec` `{"code", "timeout_seconds",
/// "max_output_bytes"}`: run code in a live sandbox; the reply is
/// `/v1/exec`'s. Errors are ours (`{"error": ...}`): 404 unknown, 410
/// ended, 409 paused.
pub async fn exec(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let r = async {
        let owner = crate::api::authorize_with(&state, caller(&state, &headers))?;
        let bytes = crate::api::read_body(body).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(crate::api::json_error)?;
        let code = match v.get("code") {
            Some(Value::String(c)) => c.clone(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid request: code (a string) is required",
                ))
            }
        };
        if code.len() > state.config.max_code_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "code is {} bytes; the limit is {}",
                    code.len(),
                    state.config.max_code_bytes
                ),
            ));
        }
        let timeout = match v.get("timeout_seconds") {
            None | Some(Value::Null) => 30.0,
            Some(t) => t.as_f64().unwrap_or(-1.0),
        };
        if !(timeout > 0.0 && timeout <= crate::api::MAX_TIMEOUT_SECONDS) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "timeout_seconds must be > 0 and <= {}",
                    crate::api::MAX_TIMEOUT_SECONDS
                ),
            ));
        }
        let cap = match v.get("max_output_bytes") {
            None | Some(Value::Null) => state.config.output_cap,
            Some(c) => match c.as_u64() {
                Some(c) if c <= state.config.max_output_bytes as u64 => c as usize,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "max_output_bytes must be between 0 and {}",
                            state.config.max_output_bytes
                        ),
                    ))
                }
            },
        };
        let res = state
            .sandboxes
            .run(&id, owner, code, Duration::from_secs_f64(timeout), cap)
            .await
            .map_err(|e| match e {
                SandboxError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
                SandboxError::Ended(m) => ApiError::new(StatusCode::GONE, m),
                SandboxError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
                SandboxError::TooMany(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
                SandboxError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
                SandboxError::Draining(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            })?;
        match res {
            Ok(r) => {
                crate::api::record(&state, "sandbox", &r);
                Ok(Json(crate::api::result_json(
                    &r,
                    start.elapsed(),
                    state.config.network.enabled,
                ))
                .into_response())
            }
            Err(LiveError::Dead(why)) => Err(ApiError::new(
                StatusCode::GONE,
                format!("sandbox \"{id}\" has ended: {why}"),
            )),
            Err(LiveError::Fork(m) | LiveError::Checkpoint(m)) => {
                Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m))
            }
            Err(LiveError::Busy) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("sandbox \"{id}\" is already running code; wait for that run"),
            )),
            Err(e @ LiveError::Paused) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("sandbox \"{id}\": {e}"),
            )),
            Err(e @ (LiveError::Command(_) | LiveError::User(_) | LiveError::NoCommand(_))) => Err(
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            ),
        }
    }
    .await;
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    state
        .metrics
        .request("sandboxes_exec", resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn time_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let s = rfc3339(t);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20.123+01:00"), Some(t));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z")
                .map(rfc3339)
                .as_deref(),
            Some("2024-02-29T00:00:00.000Z")
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn metadata_query() {
        // What the SDKs send for {"user": "a b", "k&": "="}: each key and
        // value quoted, the pairs form-encoded, the whole encoded again.
        let q = query_pairs("metadata=user%3Da%2520b%26k%2526%3D%253D&limit=5");
        let f = metadata_filter(&q);
        assert_eq!(
            f,
            vec![("user".into(), "a b".into()), ("k&".into(), "=".into())]
        );
    }
}
