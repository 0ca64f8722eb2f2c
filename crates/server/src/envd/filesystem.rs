//! envd's `filesystem.Filesystem` service (e2b-dev/E2B
//! `spec/envd/filesystem/filesystem.proto`) over the host file API of the
//! sandbox's kernel (`zeroboot_kernel::vfs::host`), in proto3 JSON:
//! camelCase fields, enums by name, int64 as strings.
//!
//! Watches are VFS hooks (`Vfs::watches`): `WatchDir` streams a watcher's
//! events; `CreateWatcher` buffers them for `GetWatcherEvents`. Events are
//! delivered from the sandbox's actor without blocking it: a client too
//! slow to take them loses the excess (bounded buffers), never the guest
//! its progress.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zeroboot_kernel::vfs::host::{HostEntry, HostFsError, HostKind};
use zeroboot_kernel::vfs::{FsEvent, FsEventKind, Vfs, WatchSink};

use super::connect::{self, Code, Framing, RpcError, StreamOptions};
use super::Sbx;

/// Events a streamed watch buffers for a slow client.
const STREAM_BUFFER: usize = 4096;
/// Events a polled watcher keeps between two `GetWatcherEvents`.
const POLL_BUFFER: usize = 10_000;
/// Polled watchers on the server, all sandboxes together.
const MAX_POLLED: usize = 10_000;

/// A polled watcher (`CreateWatcher`).
pub(crate) struct Polled {
    sandbox: String,
    vfs_id: u64,
    events: Arc<Mutex<VecDeque<Value>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a call failed: as an RPC error, or the sandbox could not be
/// reached (E2B's proxy's plain 502).
enum Fail {
    Rpc(RpcError),
    Http(Response),
}

impl From<RpcError> for Fail {
    fn from(e: RpcError) -> Fail {
        Fail::Rpc(e)
    }
}

fn rpc_error(e: HostFsError) -> RpcError {
    let code = match &e {
        HostFsError::NotFound(_) => Code::NotFound,
        HostFsError::IsADirectory(_) | HostFsError::NotADirectory(_) | HostFsError::Invalid(..) => {
            Code::InvalidArgument
        }
        HostFsError::AlreadyExists(_) => Code::AlreadyExists,
        HostFsError::NoSpace => Code::ResourceExhausted,
        HostFsError::Denied(..) => Code::PermissionDenied,
        HostFsError::Other(..) => Code::Internal,
    };
    RpcError::new(code, e.to_string())
}

/// Run `f` on the sandbox's VFS.
async fn on_vfs<R: Send + 'static>(
    sbx: &Sbx,
    f: impl FnOnce(&mut Vfs) -> Result<R, HostFsError> + Send + 'static,
) -> Result<R, Fail> {
    match sbx.with(move |k| f(k.vfs_mut())).await {
        Ok(r) => r.map_err(|e| Fail::Rpc(rpc_error(e))),
        Err(resp) => Err(Fail::Http(resp)),
    }
}

/// `on_vfs` as the user the request names: its changes are checked with
/// that user's permissions, and what it creates is that user's.
async fn on_vfs_as<R: Send + 'static>(
    sbx: &Sbx,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Vfs) -> Result<R, HostFsError> + Send + 'static,
) -> Result<R, Fail> {
    let name = super::user::from_headers(headers);
    let r = sbx
        .with(move |k| {
            let cred = super::user::cred(k.vfs(), &name).map_err(|e| e.to_string())?;
            Ok::<_, String>(k.vfs_mut().with_actor(&cred, f))
        })
        .await;
    match r {
        Ok(Ok(r)) => r.map_err(|e| Fail::Rpc(rpc_error(e))),
        Ok(Err(unknown)) => Err(Fail::Rpc(RpcError::new(Code::Unauthenticated, unknown))),
        Err(resp) => Err(Fail::Http(resp)),
    }
}

fn owner_name(id: u32) -> String {
    match id {
        0 => "root".into(),
        1000 => "user".into(),
        n => n.to_string(),
    }
}

/// `ls -l`'s type and permission letters (as Go's `FileMode.String`,
/// which envd reports).
fn permissions(e: &HostEntry) -> String {
    let t = match e.kind {
        HostKind::Dir => 'd',
        HostKind::Symlink => 'L',
        HostKind::File => '-',
        HostKind::Other => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    for shift in [6, 3, 0] {
        let b = (e.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn mtime(e: &HostEntry) -> std::time::SystemTime {
    let (s, ns) = e.mtime;
    if s < 0 {
        return std::time::UNIX_EPOCH;
    }
    std::time::UNIX_EPOCH + std::time::Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
}

/// An `EntryInfo`.
pub(crate) fn entry_json(e: &HostEntry) -> Value {
    let kind = match e.kind {
        HostKind::File => "FILE_TYPE_FILE",
        HostKind::Dir => "FILE_TYPE_DIRECTORY",
        HostKind::Symlink => "FILE_TYPE_SYMLINK",
        HostKind::Other => "FILE_TYPE_UNSPECIFIED",
    };
    let mut v = json!({
        "name": e.name,
        "type": kind,
        "path": e.path,
        "size": e.size.to_string(),
        "mode": e.mode & 0o777,
        "permissions": permissions(e),
        "owner": owner_name(e.uid),
        "group": owner_name(e.gid),
        "modifiedTime": crate::e2b::rfc3339(mtime(e)),
    });
    if let Some(t) = &e.symlink_target {
        v["symlinkTarget"] = json!(t);
    }
    v
}

/// envd's name for a kind; None: envd does not report it.
fn event_type(k: FsEventKind) -> Option<&'static str> {
    Some(match k {
        FsEventKind::Create | FsEventKind::MovedTo => "EVENT_TYPE_CREATE",
        FsEventKind::Write => "EVENT_TYPE_WRITE",
        FsEventKind::Remove => "EVENT_TYPE_REMOVE",
        FsEventKind::Rename => "EVENT_TYPE_RENAME",
        FsEventKind::Chmod => "EVENT_TYPE_CHMOD",
        FsEventKind::CloseWrite => return None,
    })
}

/// A `FilesystemEvent` (None for a kind envd does not report). Names that
/// are not UTF-8 are shown lossily.
fn event_json(e: &FsEvent, name: &str) -> Option<Value> {
    let t = event_type(e.kind)?;
    Some(json!({ "name": zeroboot_kernel::vfs::name::display(name), "type": t }))
}

#[derive(Deserialize)]
struct PathReq {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct ListReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: u32,
}

#[derive(Deserialize)]
struct MoveReq {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

#[derive(Deserialize)]
struct WatchReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
struct WatcherReq {
    #[serde(default, rename = "watcherId", alias = "watcher_id")]
    watcher_id: String,
}

fn parse<T: DeserializeOwned>(framing: Framing, body: &[u8]) -> Result<T, RpcError> {
    connect::request(framing, body).map_err(RpcError::from)
}

fn required(what: &str, v: &str) -> Result<(), RpcError> {
    if v.is_empty() {
        return Err(RpcError::invalid(format!("{what} is required")));
    }
    Ok(())
}

/// Serve `filesystem.Filesystem/<method>`.
pub(crate) async fn call(
    sbx: &Sbx,
    method: &str,
    framing: Framing,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let r: Result<Value, Fail> = match method {
        "Stat" => stat(sbx, framing, body).await,
        "MakeDir" => make_dir(sbx, framing, headers, body).await,
        "Move" => move_(sbx, framing, headers, body).await,
        "ListDir" => list_dir(sbx, framing, body).await,
        "Remove" => remove(sbx, framing, headers, body).await,
        "WatchDir" => return watch_dir(sbx, framing, headers, body).await,
        "CreateWatcher" => create_watcher(sbx, framing, body).await,
        "GetWatcherEvents" => get_watcher_events(sbx, framing, body).await,
        "RemoveWatcher" => remove_watcher(sbx, framing, body).await,
        m => Err(Fail::Rpc(RpcError::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem/{m} does not exist"),
        ))),
    };
    match r {
        Ok(v) => connect::reply(framing, Ok(v)),
        Err(Fail::Rpc(e)) => connect::reply::<Value>(framing, Err(e)),
        Err(Fail::Http(resp)) => resp,
    }
}

async fn stat(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, Fail> {
    let r: PathReq = parse(framing, body)?;
    let e = on_vfs(sbx, move |v| v.host_stat(&r.path)).await?;
    Ok(json!({ "entry": entry_json(&e) }))
}

async fn make_dir(
    sbx: &Sbx,
    framing: Framing,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Fail> {
    let r: PathReq = parse(framing, body)?;
    required("path", &r.path)?;
    let e = on_vfs_as(sbx, headers, move |v| {
        if !v.host_mkdir_p(&r.path)? {
            return Err(HostFsError::AlreadyExists(r.path));
        }
        v.host_stat(&r.path)
    })
    .await?;
    Ok(json!({ "entry": entry_json(&e) }))
}

async fn move_(
    sbx: &Sbx,
    framing: Framing,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Fail> {
    let r: MoveReq = parse(framing, body)?;
    required("source", &r.source)?;
    required("destination", &r.destination)?;
    let e = on_vfs_as(sbx, headers, move |v| {
        v.host_rename(&r.source, &r.destination)
    })
    .await?;
    Ok(json!({ "entry": entry_json(&e) }))
}

async fn list_dir(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, Fail> {
    let r: ListReq = parse(framing, body)?;
    let list = on_vfs(sbx, move |v| v.host_list(&r.path, r.depth.max(1))).await?;
    let entries: Vec<Value> = list.iter().map(entry_json).collect();
    Ok(json!({ "entries": entries }))
}

async fn remove(
    sbx: &Sbx,
    framing: Framing,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Fail> {
    let r: PathReq = parse(framing, body)?;
    required("path", &r.path)?;
    on_vfs_as(sbx, headers, move |v| v.host_remove(&r.path)).await?;
    Ok(json!({}))
}

/// A streamed watch's sink: never blocks the actor.
struct StreamSink(mpsc::Sender<Result<Value, RpcError>>);

impl WatchSink for StreamSink {
    fn deliver(&self, e: &FsEvent, name: &str) -> bool {
        let Some(ev) = event_json(e, name) else {
            return true;
        };
        let msg = json!({ "filesystem": ev });
        match self.0.try_send(Ok(msg)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Resolve a directory to watch.
fn watch_target(v: &Vfs, path: &str) -> Result<String, HostFsError> {
    let l = v.host_resolve(path, true)?;
    if !l.node.is_dir() {
        return Err(HostFsError::NotADirectory(l.path));
    }
    Ok(l.path)
}

async fn watch_dir(sbx: &Sbx, framing: Framing, headers: &HeaderMap, body: &[u8]) -> Response {
    let r: WatchReq = match parse(framing, body) {
        Ok(r) => r,
        Err(e) => return connect::reply::<Value>(framing, Err(e)),
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let sink_tx = tx.clone();
    let added = on_vfs(sbx, move |v| {
        let dir = watch_target(v, &r.path)?;
        // The start message goes first, before any event can.
        let _ = sink_tx.try_send(Ok(json!({ "start": {} })));
        Ok(v.watches
            .add(dir, r.recursive, Arc::new(StreamSink(sink_tx))))
    })
    .await;
    let id = match added {
        Ok(id) => id,
        Err(Fail::Rpc(e)) => return connect::reply::<Value>(framing, Err(e)),
        Err(Fail::Http(resp)) => return resp,
    };
    // Unwatch as soon as the client goes (the stream, and with it the
    // receiver, is dropped), not at the next event.
    let state = sbx.state.clone();
    let entry = sbx.entry.clone();
    state.envd.streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        // Counted out however the stream ends.
        struct Open(Arc<crate::AppState>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.envd.streams.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _open = Open(state.clone());
        // Also end the stream when the sandbox ends (its VFS, and the
        // sink's sender with it, are gone; this one is the last).
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                    if let Err(e) = state.sandboxes.find(&entry.id) {
                        let _ = tx.try_send(Err(RpcError::new(
                            Code::Unavailable,
                            format!("The sandbox {} was not found: {e:?}", entry.id),
                        )));
                        return;
                    }
                }
            }
        }
        let again = Sbx { state, entry };
        let _ = again
            .with(move |k| {
                k.vfs_mut().watches.remove(id);
            })
            .await;
    });
    let opts = StreamOptions::from_headers(headers, json!({ "keepalive": {} }));
    connect::server_stream(rx, opts)
}

/// A polled watcher's sink.
struct PollSink(Arc<Mutex<VecDeque<Value>>>);

impl WatchSink for PollSink {
    fn deliver(&self, e: &FsEvent, name: &str) -> bool {
        let mut q = lock(&self.0);
        let Some(ev) = event_json(e, name) else {
            return Arc::strong_count(&self.0) > 1;
        };
        if q.len() >= POLL_BUFFER {
            q.pop_front();
        }
        q.push_back(ev);
        // Held by the server's table: RemoveWatcher unregisters it.
        Arc::strong_count(&self.0) > 1
    }
}

fn watcher_id() -> String {
    let mut b = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn create_watcher(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, Fail> {
    let r: WatchReq = parse(framing, body)?;
    {
        // Forget watchers of sandboxes that ended.
        let mut w = lock(&sbx.state.envd.watchers);
        let live = &sbx.state.sandboxes;
        w.retain(|_, p| live.find(&p.sandbox).is_ok());
        if w.len() >= MAX_POLLED {
            return Err(Fail::Rpc(RpcError::new(
                Code::ResourceExhausted,
                format!("this server holds its maximum of {MAX_POLLED} watchers; remove one first"),
            )));
        }
    }
    let events = Arc::new(Mutex::new(VecDeque::new()));
    let sink = PollSink(events.clone());
    let vfs_id = on_vfs(sbx, move |v| {
        let dir = watch_target(v, &r.path)?;
        Ok(v.watches.add(dir, r.recursive, Arc::new(sink)))
    })
    .await?;
    let id = watcher_id();
    lock(&sbx.state.envd.watchers).insert(
        id.clone(),
        Polled {
            sandbox: sbx.entry.id.clone(),
            vfs_id,
            events,
        },
    );
    Ok(json!({ "watcherId": id }))
}

fn no_watcher(id: &str) -> Fail {
    Fail::Rpc(RpcError::new(
        Code::NotFound,
        format!("watcher {id:?} not found"),
    ))
}

async fn get_watcher_events(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, Fail> {
    let r: WatcherReq = parse(framing, body)?;
    let events = {
        let w = lock(&sbx.state.envd.watchers);
        match w.get(&r.watcher_id) {
            Some(p) if p.sandbox == sbx.entry.id => p.events.clone(),
            _ => return Err(no_watcher(&r.watcher_id)),
        }
    };
    let list: Vec<Value> = lock(&events).drain(..).collect();
    Ok(json!({ "events": list }))
}

async fn remove_watcher(sbx: &Sbx, framing: Framing, body: &[u8]) -> Result<Value, Fail> {
    let r: WatcherReq = parse(framing, body)?;
    let p = {
        let mut w = lock(&sbx.state.envd.watchers);
        match w.get(&r.watcher_id) {
            Some(p) if p.sandbox == sbx.entry.id => w.remove(&r.watcher_id),
            _ => None,
        }
    };
    let Some(p) = p else {
        return Err(no_watcher(&r.watcher_id));
    };
    let vfs_id = p.vfs_id;
    drop(p);
    sbx.with(move |k| k.vfs_mut().watches.remove(vfs_id))
        .await
        .map_err(Fail::Http)?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_proto3_json() {
        let e = HostEntry {
            name: "a.txt".into(),
            path: "/home/user/a.txt".into(),
            kind: HostKind::File,
            size: 5,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 5_000_000),
            symlink_target: None,
        };
        let v = entry_json(&e);
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["size"], "5");
        assert_eq!(v["mode"], 0o644);
        assert_eq!(v["permissions"], "-rw-r--r--");
        assert_eq!(v["owner"], "root");
        assert_eq!(v["modifiedTime"], "2023-11-14T22:13:20.005Z");
        assert!(v.get("symlinkTarget").is_none());
        let ev = FsEvent {
            kind: FsEventKind::Rename,
            path: "/x/y".into(),
        };
        assert_eq!(
            event_json(&ev, "y"),
            Some(json!({"name": "y", "type": "EVENT_TYPE_RENAME"}))
        );
        let closed = FsEvent {
            kind: FsEventKind::CloseWrite,
            path: "/x/y".into(),
        };
        assert_eq!(event_json(&closed, "y"), None);
    }

    #[test]
    fn requests_accept_both_field_spellings() {
        let r: WatcherReq = parse(Framing::Unary, br#"{"watcher_id":"a"}"#).unwrap_or(WatcherReq {
            watcher_id: String::new(),
        });
        assert_eq!(r.watcher_id, "a");
        let r: WatcherReq = parse(Framing::Unary, br#"{"watcherId":"b"}"#).unwrap_or(WatcherReq {
            watcher_id: String::new(),
        });
        assert_eq!(r.watcher_id, "b");
        let bad = parse::<ListReq>(Framing::Unary, br#"{"depth":"deep"}"#);
        assert!(matches!(bad, Err(e) if e.code == Code::InvalidArgument));
    }
}
