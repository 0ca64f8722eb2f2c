//! Directory notification (dnotify: `fcntl(fd, F_NOTIFY, mask)`): a
//! process asks to be signalled when the entries of a directory it holds
//! open change. Each registration is a hook of the VFS's watch list, as
//! inotify's watches are, that only notes that an event it asked for
//! happened; after each system call the kernel sends the signal to the
//! process that registered (SIGIO, or the signal F_SETSIG chose, with
//! si_code POLL_MSG and si_fd). Without DN_MULTISHOT a registration ends
//! at its first signal; closing a descriptor of the directory ends it.
//! DN_ACCESS is accepted but never reported: the hook does not see reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

use crate::fd::FileKind;
use crate::syscalls::{Ctx, SysResult};
use crate::vfs::{FsEvent, FsEventKind, WatchSink};

pub const DN_MODIFY: u32 = 0x2;
pub const DN_CREATE: u32 = 0x4;
pub const DN_DELETE: u32 = 0x8;
pub const DN_RENAME: u32 = 0x10;
pub const DN_ATTRIB: u32 = 0x20;
pub const DN_MULTISHOT: u32 = 0x8000_0000;
const SIGIO: u32 = 29;
/// si_code of a signal chosen by F_SETSIG (a message arrived), and its
/// si_band (POLLIN | POLLRDNORM | POLLMSG).
const POLL_MSG: i32 = 3;
const POLL_MSG_BAND: i64 = 0x441;
/// si_code of a signal the kernel sends (plain SIGIO).
const SI_KERNEL: i32 = 0x80;

/// The sandbox's dnotify registrations and F_SETSIG choices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dnotify {
    pub list: Vec<Registration>,
    /// F_SETSIG's signal by open file description (0: plain SIGIO).
    pub setsig: BTreeMap<u64, u32>,
}

/// One process's dnotify on one open directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registration {
    pub pid: u32,
    pub fd: i32,
    pub ofd: u64,
    pub mask: u32,
    /// Its hook in `Vfs::watches`.
    pub hook: u64,
    /// Set by the hook when an event of `mask` happened.
    #[serde(skip)]
    fired: Arc<AtomicBool>,
}

impl Clone for Registration {
    /// A copy (a fork of the sandbox) is not fed by the original's hook.
    fn clone(&self) -> Registration {
        Registration {
            pid: self.pid,
            fd: self.fd,
            ofd: self.ofd,
            mask: self.mask,
            hook: self.hook,
            fired: Arc::new(AtomicBool::new(self.fired.load(Ordering::Relaxed))),
        }
    }
}

/// A registration's hook.
struct Sink {
    fired: Weak<AtomicBool>,
    mask: u32,
}

impl WatchSink for Sink {
    fn deliver(&self, e: &FsEvent, _name: &str) -> bool {
        let Some(fired) = self.fired.upgrade() else {
            return false;
        };
        let bit = match e.kind {
            FsEventKind::Create => DN_CREATE,
            FsEventKind::Write => DN_MODIFY,
            FsEventKind::Remove => DN_DELETE,
            FsEventKind::Rename | FsEventKind::MovedTo => DN_RENAME,
            FsEventKind::Chmod => DN_ATTRIB,
            FsEventKind::CloseWrite => 0,
        };
        if bit & self.mask != 0 {
            fired.store(true, Ordering::Relaxed);
        }
        true
    }
}

/// fcntl(fd, F_NOTIFY, arg).
pub(crate) fn fcntl_notify(ctx: &mut Ctx, fd: i32, arg: u32) -> SysResult {
    let f = ctx.k.fds.get(fd)?;
    let (ofd, path, kind) = (f.ofd, f.path.clone(), f.kind.clone());
    let pid = ctx.k.proc.pid;
    if matches!(kind, FileKind::Path) {
        return Err(Errno::EBADF.into());
    }
    if arg & !DN_MULTISHOT == 0 {
        // No events: the registration of this description ends.
        forget(ctx, |r| r.pid == pid && r.ofd == ofd);
        return Ok(0);
    }
    if !matches!(kind, FileKind::Dir) {
        return Err(Errno::ENOTDIR.into());
    }
    // More events for an existing registration add to its mask.
    let mut mask = arg;
    if let Some(i) = ctx
        .k
        .fs
        .dnotify
        .list
        .iter()
        .position(|r| r.pid == pid && r.ofd == ofd)
    {
        let old = ctx.k.fs.dnotify.list.remove(i);
        ctx.k.vfs.watches.remove(old.hook);
        mask |= old.mask;
    }
    let fired = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(Sink {
        fired: Arc::downgrade(&fired),
        mask,
    });
    let hook = ctx.k.vfs.watches.add(path, false, sink);
    ctx.k.fs.dnotify.list.push(Registration {
        pid,
        fd,
        ofd,
        mask,
        hook,
        fired,
    });
    Ok(0)
}

/// F_SETSIG: the signal dnotify (and SIGIO users) send for `ofd`.
pub(crate) fn set_signal(ctx: &mut Ctx, ofd: u64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(Errno::EINVAL.into());
    }
    if sig == 0 {
        ctx.k.fs.dnotify.setsig.remove(&ofd);
    } else {
        ctx.k.fs.dnotify.setsig.insert(ofd, sig as u32);
    }
    Ok(0)
}

pub(crate) fn get_signal(ctx: &Ctx, ofd: u64) -> u64 {
    ctx.k.fs.dnotify.setsig.get(&ofd).copied().unwrap_or(0) as u64
}

/// Descriptor `fd` of the caller is being closed: its description's
/// registrations by the caller end.
pub(crate) fn closing(ctx: &mut Ctx, fd: i32) {
    if ctx.k.fs.dnotify.list.is_empty() {
        return;
    }
    let Ok(f) = ctx.k.fds.get(fd) else {
        return;
    };
    let (pid, ofd) = (ctx.k.proc.pid, f.ofd);
    forget(ctx, |r| r.pid == pid && r.ofd == ofd);
}

fn forget(ctx: &mut Ctx, which: impl Fn(&Registration) -> bool) {
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.k.fs.dnotify.list)
        .into_iter()
        .partition(|r| which(r));
    ctx.k.fs.dnotify.list = kept;
    for r in gone {
        ctx.k.vfs.watches.remove(r.hook);
    }
}

/// Send the signals of the registrations whose directories changed (after
/// each system call; nothing to do without registrations).
pub(crate) fn deliver(ctx: &mut Ctx) {
    let due: Vec<(u32, i32, u64, u32)> = ctx
        .k
        .fs
        .dnotify
        .list
        .iter()
        .filter(|r| r.fired.swap(false, Ordering::Relaxed))
        .map(|r| (r.pid, r.fd, r.ofd, r.mask))
        .collect();
    for (pid, fd, ofd, mask) in due {
        let chosen = ctx.k.fs.dnotify.setsig.get(&ofd).copied().unwrap_or(0);
        let (sig, info) = if chosen == 0 {
            (SIGIO, crate::siginfo::from_sender(SIGIO, SI_KERNEL, 0, 0))
        } else {
            let mut info = crate::siginfo::from_sender(chosen, POLL_MSG, 0, 0);
            info[16..24].copy_from_slice(&POLL_MSG_BAND.to_le_bytes());
            info[24..28].copy_from_slice(&fd.to_le_bytes());
            (chosen, info)
        };
        let gone = crate::procs::post_signal_info(ctx.k, pid, None, sig, info, false).is_err();
        if gone || mask & DN_MULTISHOT == 0 {
            forget(ctx, |r| r.pid == pid && r.ofd == ofd);
        }
    }
}
