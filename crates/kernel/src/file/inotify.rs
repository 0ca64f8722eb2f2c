//! inotify descriptors: each watch is a hook of the VFS's watch list
//! (`vfs::watch`, the one envd's WatchDir uses) whose sink queues Linux's
//! `struct inotify_event` records on the instance; reading the descriptor
//! takes them.
//!
//! What is reported: IN_CREATE, IN_DELETE, IN_MODIFY, IN_ATTRIB,
//! IN_CLOSE_WRITE, IN_MOVED_FROM/IN_MOVED_TO (paired by a cookie), and on
//! the watched path itself IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE,
//! IN_MOVE_SELF, IN_DELETE_SELF then IN_IGNORED. Not reported: IN_ACCESS,
//! IN_OPEN, IN_CLOSE_NOWRITE, and the IN_ISDIR flag (the hook does not say
//! whether a name is a directory). The hooks are host-side, so a fork or
//! snapshot of the sandbox gets the instance with its queue but silent
//! watches (as envd's watchers, they belong to the live sandbox).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::events::POLLIN;
use crate::syscalls::{Ctx, SysError};
use crate::task::Wait;
use crate::vfs::{FsEvent, FsEventKind, WatchSink};

pub const IN_MODIFY: u32 = 0x2;
pub const IN_ATTRIB: u32 = 0x4;
pub const IN_CLOSE_WRITE: u32 = 0x8;
pub const IN_MOVED_FROM: u32 = 0x40;
pub const IN_MOVED_TO: u32 = 0x80;
pub const IN_CREATE: u32 = 0x100;
pub const IN_DELETE: u32 = 0x200;
pub const IN_DELETE_SELF: u32 = 0x400;
pub const IN_MOVE_SELF: u32 = 0x800;
pub const IN_Q_OVERFLOW: u32 = 0x4000;
pub const IN_IGNORED: u32 = 0x8000;
pub const IN_ALL_EVENTS: u32 = 0xfff;
pub const IN_ONLYDIR: u32 = 0x0100_0000;
pub const IN_DONT_FOLLOW: u32 = 0x0200_0000;
pub const IN_EXCL_UNLINK: u32 = 0x0400_0000;
pub const IN_MASK_CREATE: u32 = 0x1000_0000;
pub const IN_MASK_ADD: u32 = 0x2000_0000;
pub const IN_ONESHOT: u32 = 0x8000_0000;

/// Most events queued (Linux's default max_queued_events).
const MAX_QUEUED: usize = 16384;
/// sizeof(struct inotify_event).
const EVENT_SIZE: usize = 16;

/// Queued events, each already in its wire form.
#[derive(Debug, Clone, Default)]
struct Queue {
    events: VecDeque<Vec<u8>>,
    bytes: usize,
    cookie: u32,
    /// Events queued so far (news for edge-triggered epoll).
    pushed: u64,
}

impl Queue {
    fn push(&mut self, wd: i32, mask: u32, cookie: u32, name: &[u8]) {
        if self.events.len() >= MAX_QUEUED {
            let overflow = event(-1, IN_Q_OVERFLOW, 0, b"");
            if self.events.back() != Some(&overflow) {
                self.bytes += overflow.len();
                self.events.push_back(overflow);
                self.pushed += 1;
            }
            return;
        }
        let e = event(wd, mask, cookie, name);
        // An event equal to the last unread one is merged into it.
        if self.events.back() == Some(&e) {
            return;
        }
        self.bytes += e.len();
        self.events.push_back(e);
        self.pushed += 1;
    }
}

/// `struct inotify_event` with its name NUL-padded to a multiple of 16.
fn event(wd: i32, mask: u32, cookie: u32, name: &[u8]) -> Vec<u8> {
    let len = if name.is_empty() {
        0
    } else {
        (name.len() + 1).div_ceil(EVENT_SIZE) * EVENT_SIZE
    };
    let mut v = Vec::with_capacity(EVENT_SIZE + len);
    v.extend_from_slice(&wd.to_le_bytes());
    v.extend_from_slice(&mask.to_le_bytes());
    v.extend_from_slice(&cookie.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(name);
    v.resize(EVENT_SIZE + len, 0);
    v
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// One watch of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watch {
    /// Canonical path watched.
    pub path: String,
    pub mask: u32,
    /// Its hook in `Vfs::watches`.
    pub hook: u64,
}

/// One inotify instance.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Instance {
    pub watches: BTreeMap<i32, Watch>,
    next_wd: i32,
    #[serde(skip)]
    queue: Arc<Mutex<Queue>>,
}

impl Clone for Instance {
    /// A copy (a fork of the sandbox) gets its own queue: the original's
    /// hooks keep feeding only the original.
    fn clone(&self) -> Instance {
        Instance {
            watches: self.watches.clone(),
            next_wd: self.next_wd,
            queue: Arc::new(Mutex::new(lock(&self.queue).clone())),
        }
    }
}

impl Instance {
    /// Events queued so far.
    pub fn activity(&self) -> u64 {
        lock(&self.queue).pushed
    }

    /// The watch descriptor for a new watch of `path`, or the existing
    /// one's.
    pub fn wd_for(&mut self, path: &str) -> (i32, bool) {
        if let Some((&wd, _)) = self.watches.iter().find(|(_, w)| w.path == path) {
            return (wd, true);
        }
        self.next_wd += 1;
        (self.next_wd, false)
    }

    /// The sink feeding this instance's queue for watch `wd`.
    pub fn sink(&self, wd: i32, mask: u32) -> Arc<dyn WatchSink> {
        Arc::new(Sink {
            queue: Arc::downgrade(&self.queue),
            wd,
            mask,
        })
    }

    /// Queue IN_IGNORED for a removed watch.
    pub fn ignored(&self, wd: i32) {
        lock(&self.queue).push(wd, IN_IGNORED, 0, b"");
    }

    fn unread(&self) -> usize {
        lock(&self.queue).bytes
    }
}

/// The sandbox's inotify instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Instances {
    pub map: BTreeMap<u64, Instance>,
    next: u64,
}

impl Instances {
    pub fn create(&mut self) -> u64 {
        self.next += 1;
        self.map.insert(self.next, Instance::default());
        self.next
    }

    /// Drop the instances no description refers to (their hooks see the
    /// queue gone and unregister themselves).
    pub fn retain(&mut self, live: &std::collections::BTreeSet<u64>) {
        self.map.retain(|id, _| live.contains(id));
    }
}

/// A watch's hook: turns the VFS's events into inotify events.
struct Sink {
    queue: Weak<Mutex<Queue>>,
    wd: i32,
    mask: u32,
}

impl WatchSink for Sink {
    fn deliver(&self, e: &FsEvent, name: &str) -> bool {
        let Some(q) = self.queue.upgrade() else {
            return false;
        };
        let mut q = lock(&q);
        let itself = name.is_empty();
        let bits = match (e.kind, itself) {
            (FsEventKind::Create, false) => IN_CREATE,
            (FsEventKind::Write, _) => IN_MODIFY,
            (FsEventKind::Chmod, _) => IN_ATTRIB,
            (FsEventKind::CloseWrite, _) => IN_CLOSE_WRITE,
            (FsEventKind::Remove, false) => IN_DELETE,
            (FsEventKind::Rename, false) => IN_MOVED_FROM,
            (FsEventKind::MovedTo, false) => IN_MOVED_TO,
            (FsEventKind::Rename, true) => IN_MOVE_SELF,
            (FsEventKind::Remove, true) => {
                if self.mask & IN_DELETE_SELF != 0 {
                    q.push(self.wd, IN_DELETE_SELF, 0, b"");
                }
                q.push(self.wd, IN_IGNORED, 0, b"");
                return false;
            }
            (FsEventKind::Create | FsEventKind::MovedTo, true) => 0,
        };
        // A rename's two halves share a cookie (they come one after the
        // other).
        if e.kind == FsEventKind::Rename {
            q.cookie = q.cookie.wrapping_add(1).max(1);
        }
        if bits & self.mask == 0 {
            return true;
        }
        let cookie = match e.kind {
            FsEventKind::Rename | FsEventKind::MovedTo if !itself => q.cookie,
            _ => 0,
        };
        q.push(self.wd, bits, cookie, &crate::vfs::name::to_bytes(name));
        if self.mask & IN_ONESHOT != 0 {
            q.push(self.wd, IN_IGNORED, 0, b"");
            return false;
        }
        true
    }
}

/// An inotify descriptor of instance `id`.
pub(crate) struct InotifyFile(pub u64);

impl FileOps for InotifyFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        let inst = ctx.k.fs.inotify.map.get(&self.0).ok_or(Errno::EBADF)?;
        let mut q = lock(&inst.queue);
        let Some(first) = q.events.front() else {
            drop(q);
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            return Err(ctx.k.wait(Wait::Retry {
                reason: "read of an inotify descriptor",
                deadline: None,
            }));
        };
        if first.len() > count {
            return Err(Errno::EINVAL.into());
        }
        let mut out = Vec::new();
        while let Some(e) = q.events.front() {
            if out.len() + e.len() > count {
                break;
            }
            out.extend_from_slice(e);
            q.bytes -= e.len();
            q.events.pop_front();
        }
        Ok(out)
    }

    fn write(&self, _ctx: &mut Ctx, _io: Io, _data: &[u8]) -> Result<usize, SysError> {
        Err(Errno::EINVAL.into())
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(super::anon_stat(0o600, 0xd, self.0))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        let ready = ctx
            .k
            .fs
            .inotify
            .map
            .get(&self.0)
            .is_some_and(|i| i.unread() > 0);
        if ready {
            POLLIN
        } else {
            0
        }
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k
            .fs
            .inotify
            .map
            .get(&self.0)
            .map_or(0, |i| i.activity())
    }

    fn unread(&self, ctx: &Ctx, _offset: u64) -> u64 {
        ctx.k
            .fs
            .inotify
            .map
            .get(&self.0)
            .map_or(0, |i| i.unread() as u64)
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        "anon_inode:inotify".into()
    }

    fn released(&self, ctx: &mut Ctx) {
        ctx.k.gc_pipes();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(kind: FsEventKind, path: &str) -> FsEvent {
        FsEvent {
            kind,
            path: path.into(),
        }
    }

    #[test]
    fn events_are_coded_paired_and_merged() {
        let inst = Instance::default();
        let mut w = crate::vfs::Watches::default();
        w.add_with("/d".into(), false, true, inst.sink(1, IN_ALL_EVENTS));
        w.notify(&ev(FsEventKind::Create, "/d/a"));
        w.notify(&ev(FsEventKind::Write, "/d/a"));
        w.notify(&ev(FsEventKind::Write, "/d/a"));
        w.notify(&ev(FsEventKind::Rename, "/d/a"));
        w.notify(&ev(FsEventKind::MovedTo, "/d/b"));
        w.notify(&ev(FsEventKind::Create, "/d/sub/deep"));
        w.notify(&ev(FsEventKind::Remove, "/d"));
        let q = lock(&inst.queue);
        let masks: Vec<u32> = q
            .events
            .iter()
            .map(|e| u32::from_le_bytes(e[4..8].try_into().unwrap()))
            .collect();
        assert_eq!(
            masks,
            [
                IN_CREATE,
                IN_MODIFY,
                IN_MOVED_FROM,
                IN_MOVED_TO,
                IN_DELETE_SELF,
                IN_IGNORED
            ]
        );
        let cookie = |i: usize| u32::from_le_bytes(q.events[i][8..12].try_into().unwrap());
        assert_eq!(cookie(2), cookie(3));
        assert_ne!(cookie(2), 0);
        assert_eq!(q.events[0].len(), 32);
        assert_eq!(&q.events[0][16..18], b"a\0");
        drop(q);
        assert!(w.is_empty());
    }

    #[test]
    fn a_copy_of_an_instance_never_sees_the_originals_events() {
        // A fork of the sandbox clones the kernel state: its instance must
        // not share the queue the original's hooks feed.
        let inst = Instance::default();
        let mut w = crate::vfs::Watches::default();
        w.add_with("/d".into(), false, false, inst.sink(1, IN_ALL_EVENTS));
        w.notify(&ev(FsEventKind::Create, "/d/before"));
        let copy = inst.clone();
        w.notify(&ev(FsEventKind::Create, "/d/after"));
        assert_eq!(lock(&copy.queue).events.len(), 1);
        assert_eq!(lock(&inst.queue).events.len(), 2);
    }
}
