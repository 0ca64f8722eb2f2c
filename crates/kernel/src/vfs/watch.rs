//! Watching the sandbox's file system: a hook the VFS calls on every change
//! of a name or of a file's contents or mode, whoever made it (the guest's
//! system calls or the host file API), and the watchers it feeds.
//!
//! A watcher is a directory (with or without its subtree) and a sink. The
//! sink is a trait object so that each consumer decides what an event
//! becomes: envd's WatchDir streams it to a client; the guest's inotify can
//! later queue it on an inotify descriptor with the same hook.
//!
//! Watchers belong to a live sandbox's VFS only: a clone (a fork, a
//! snapshot) starts with none, so a fork never reports to its parent's
//! clients.

use std::sync::Arc;

/// What happened to a name (envd's and fsnotify's kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsEventKind {
    Create,
    Write,
    Remove,
    /// The name went away by a rename (its new name gets a MovedTo).
    Rename,
    Chmod,
    /// The new name of a rename (envd reports it as a Create).
    MovedTo,
    /// A description open for writing was closed (inotify's
    /// IN_CLOSE_WRITE; envd does not report it).
    CloseWrite,
}

/// One change, with the canonical path of the name it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEvent {
    pub kind: FsEventKind,
    pub path: String,
}

/// Where a watcher's events go.
pub trait WatchSink: Send + Sync {
    /// Deliver one event, with `name` relative to the watched directory.
    /// False: the consumer is gone and the watcher can be dropped.
    fn deliver(&self, event: &FsEvent, name: &str) -> bool;
}

struct Watcher {
    id: u64,
    /// Canonical directory.
    dir: String,
    recursive: bool,
    /// Also told of events on `dir` itself (inotify watches on a file or
    /// a directory), with an empty name.
    itself: bool,
    sink: Arc<dyn WatchSink>,
}

/// The watchers of one VFS.
#[derive(Default)]
pub struct Watches {
    list: Vec<Watcher>,
    next_id: u64,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watches({})", self.list.len())
    }
}

impl Clone for Watches {
    /// A copy of a VFS starts unwatched (see the module comment).
    fn clone(&self) -> Watches {
        Watches::default()
    }
}

/// The path of `path` below `dir`, when it is below it (not `dir` itself).
fn below<'a>(dir: &str, path: &'a str) -> Option<&'a str> {
    if dir == "/" {
        return path.strip_prefix('/').filter(|r| !r.is_empty());
    }
    path.strip_prefix(dir)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty())
}

impl Watches {
    /// Watch canonical directory `dir`; returns the watcher's id.
    pub fn add(&mut self, dir: String, recursive: bool, sink: Arc<dyn WatchSink>) -> u64 {
        self.add_with(dir, recursive, false, sink)
    }

    /// Watch canonical path `dir`, and with `itself` the path's own
    /// events too (delivered with an empty name).
    pub fn add_with(
        &mut self,
        dir: String,
        recursive: bool,
        itself: bool,
        sink: Arc<dyn WatchSink>,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.list.push(Watcher {
            id,
            dir,
            recursive,
            itself,
            sink,
        });
        id
    }

    /// Stop watcher `id`; false if there was none.
    pub fn remove(&mut self, id: u64) -> bool {
        let n = self.list.len();
        self.list.retain(|w| w.id != id);
        self.list.len() != n
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Tell the watchers concerned; drop those whose consumer is gone.
    pub fn notify(&mut self, event: &FsEvent) {
        self.list.retain(|w| {
            if w.itself && w.dir == event.path {
                return w.sink.deliver(event, "");
            }
            let Some(rel) = below(&w.dir, &event.path) else {
                return true;
            };
            if !w.recursive && rel.contains('/') {
                return true;
            }
            w.sink.deliver(event, rel)
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<(FsEventKind, String)>>);
    impl WatchSink for Log {
        fn deliver(&self, e: &FsEvent, name: &str) -> bool {
            self.0.lock().unwrap().push((e.kind, name.to_string()));
            true
        }
    }

    fn ev(kind: FsEventKind, path: &str) -> FsEvent {
        FsEvent {
            kind,
            path: path.into(),
        }
    }

    #[test]
    fn recursive_and_flat_watchers_see_what_is_theirs() {
        let mut w = Watches::default();
        let flat = Arc::new(Log::default());
        let deep = Arc::new(Log::default());
        w.add("/home/user".into(), false, flat.clone());
        w.add("/".into(), true, deep.clone());
        w.notify(&ev(FsEventKind::Create, "/home/user/a"));
        w.notify(&ev(FsEventKind::Write, "/home/user/d/b"));
        w.notify(&ev(FsEventKind::Remove, "/home/userx"));
        w.notify(&ev(FsEventKind::Chmod, "/home/user"));
        assert_eq!(
            *flat.0.lock().unwrap(),
            vec![(FsEventKind::Create, "a".to_string())]
        );
        assert_eq!(deep.0.lock().unwrap().len(), 4);
        assert_eq!(deep.0.lock().unwrap()[1].1, "home/user/d/b");
    }

    #[test]
    fn gone_consumers_are_dropped_and_clones_start_empty() {
        struct Gone;
        impl WatchSink for Gone {
            fn deliver(&self, _: &FsEvent, _: &str) -> bool {
                false
            }
        }
        let mut w = Watches::default();
        let id = w.add("/".into(), true, Arc::new(Gone));
        assert_eq!(w.clone().len(), 0);
        w.notify(&ev(FsEventKind::Create, "/x"));
        assert!(w.is_empty());
        assert!(!w.remove(id));
    }
}
