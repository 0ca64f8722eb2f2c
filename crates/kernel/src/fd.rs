//! File descriptors and open file descriptions.
//!
//! Descriptions live in a table with reference counts so that dup'd
//! descriptors share an offset, and the whole structure clones (for a fork)
//! with that sharing intact.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::vfs::{Device, DirEntry, HostFile};

/// Which standard stream a console descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

/// What an open file description refers to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file of the image (read-only).
    Image(#[serde(with = "crate::persist::host_file")] Arc<HostFile>),
    /// A regular file of the overlay.
    Tmp(u64),
    /// A directory (any layer); entries are read at the first getdents.
    Dir,
    Device(Device),
    /// A generated /proc file, contents fixed at open.
    Generated(Arc<[u8]>),
    Console(Stream),
    Pipe {
        id: u64,
        write: bool,
    },
    /// The agent's control channel (templates and forks).
    Control,
    /// An O_PATH descriptor: usable only as a directory base or for fstat.
    Path,
    EventFd(u64),
    TimerFd(u64),
    Epoll(u64),
    /// The slave side of a pseudo-terminal (`Kernel::ptys`).
    Pty(u64),
    /// The master side of a pseudo-terminal a guest opened (/dev/ptmx).
    PtyMaster(u64),
    /// A socket of `Kernel::sockets` (its operations are in `crate::net`
    /// and `syscalls::net`).
    Socket(u64),
    /// An inotify instance of `Kernel::fs.inotify`.
    Inotify(u64),
    /// A process file descriptor naming process `pid` (pidfd_open).
    PidFd(u32),
}

/// An open file description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenFile {
    pub kind: FileKind,
    /// Canonical path (for /proc/self/fd and fstat).
    pub path: String,
    /// O_ACCMODE | O_APPEND | O_NONBLOCK | ...
    pub flags: u64,
    pub offset: u64,
    /// Directory listing snapshot taken by the first getdents.
    #[serde(skip)]
    pub dir_entries: Option<Arc<Vec<DirEntry>>>,
    /// Which open file description this is, across the processes that
    /// share it after fork or SCM_RIGHTS (their tables hold copies): what
    /// flock and OFD locks are owned by.
    #[serde(default = "description_id")]
    pub ofd: u64,
}

/// A new description's id: unique within the host process, and started at
/// a random point so that descriptions restored from a snapshot made by
/// another host process do not collide with new ones.
pub fn description_id() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x6f6664u64);
        AtomicU64::new(seed >> 1)
    })
    .fetch_add(1, Ordering::Relaxed)
}

impl OpenFile {
    pub fn new(kind: FileKind, path: impl Into<String>, flags: u64) -> OpenFile {
        OpenFile {
            kind,
            path: path.into(),
            flags,
            offset: 0,
            dir_entries: None,
            ofd: description_id(),
        }
    }

    pub fn readable(&self) -> bool {
        self.flags & O_PATH == 0 && matches!(self.flags & O_ACCMODE, O_RDONLY | O_RDWR)
    }

    pub fn writable(&self) -> bool {
        self.flags & O_PATH == 0 && matches!(self.flags & O_ACCMODE, O_WRONLY | O_RDWR)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Slot {
    file: u64,
    cloexec: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Description {
    file: OpenFile,
    refs: usize,
}

/// A process's descriptor table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdTable {
    fds: BTreeMap<i32, Slot>,
    files: BTreeMap<u64, Description>,
    next_id: u64,
    /// RLIMIT_NOFILE.
    pub max_fds: u64,
    /// Times a new descriptor was refused for the limit (EMFILE).
    #[serde(default)]
    pub exhausted: u64,
}

impl FdTable {
    pub fn new(max_fds: u64) -> FdTable {
        FdTable {
            fds: BTreeMap::new(),
            files: BTreeMap::new(),
            next_id: 1,
            max_fds,
            exhausted: 0,
        }
    }

    fn lowest_free(&mut self, min: i32) -> Result<i32, Errno> {
        let mut want = min.max(0);
        for (&fd, _) in self.fds.range(want..) {
            if fd != want {
                break;
            }
            want += 1;
        }
        if want as u64 >= self.max_fds {
            self.exhausted += 1;
            return Err(Errno::EMFILE);
        }
        Ok(want)
    }

    /// Install a new description at the lowest free fd >= `min`.
    pub fn open(&mut self, file: OpenFile, cloexec: bool, min: i32) -> Result<i32, Errno> {
        let fd = self.lowest_free(min)?;
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, Description { file, refs: 1 });
        self.fds.insert(fd, Slot { file: id, cloexec });
        Ok(fd)
    }

    /// Install at exactly `fd` (closing what was there).
    pub fn open_at(&mut self, fd: i32, file: OpenFile, cloexec: bool) -> Result<(), Errno> {
        if fd < 0 || fd as u64 >= self.max_fds {
            return Err(Errno::EBADF);
        }
        let _ = self.close(fd);
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, Description { file, refs: 1 });
        self.fds.insert(fd, Slot { file: id, cloexec });
        Ok(())
    }

    pub fn get(&self, fd: i32) -> Result<&OpenFile, Errno> {
        let s = self.fds.get(&fd).ok_or(Errno::EBADF)?;
        self.files.get(&s.file).map(|d| &d.file).ok_or(Errno::EBADF)
    }

    pub fn get_mut(&mut self, fd: i32) -> Result<&mut OpenFile, Errno> {
        let s = self.fds.get(&fd).ok_or(Errno::EBADF)?;
        self.files
            .get_mut(&s.file)
            .map(|d| &mut d.file)
            .ok_or(Errno::EBADF)
    }

    /// Close `fd`; returns the description if this was its last reference.
    pub fn close(&mut self, fd: i32) -> Result<Option<OpenFile>, Errno> {
        let s = self.fds.remove(&fd).ok_or(Errno::EBADF)?;
        let last = match self.files.get_mut(&s.file) {
            Some(d) => {
                d.refs -= 1;
                d.refs == 0
            }
            None => false,
        };
        if last {
            Ok(self.files.remove(&s.file).map(|d| d.file))
        } else {
            Ok(None)
        }
    }

    /// dup(2) / F_DUPFD: a new fd >= `min` sharing the description.
    pub fn dup(&mut self, fd: i32, min: i32, cloexec: bool) -> Result<i32, Errno> {
        let s = *self.fds.get(&fd).ok_or(Errno::EBADF)?;
        let new = self
            .lowest_free(min)
            .map_err(|e| if min > 0 { Errno::EINVAL } else { e })?;
        if let Some(d) = self.files.get_mut(&s.file) {
            d.refs += 1;
        }
        self.fds.insert(
            new,
            Slot {
                file: s.file,
                cloexec,
            },
        );
        Ok(new)
    }

    /// dup2/dup3 onto `new`; returns the description `new` held if that
    /// was its last reference.
    pub fn dup_to(&mut self, fd: i32, new: i32, cloexec: bool) -> Result<Option<OpenFile>, Errno> {
        let s = *self.fds.get(&fd).ok_or(Errno::EBADF)?;
        if new < 0 || new as u64 >= self.max_fds {
            return Err(Errno::EBADF);
        }
        if fd == new {
            return Ok(None);
        }
        let old = if self.fds.contains_key(&new) {
            self.close(new)?
        } else {
            None
        };
        if let Some(d) = self.files.get_mut(&s.file) {
            d.refs += 1;
        }
        self.fds.insert(
            new,
            Slot {
                file: s.file,
                cloexec,
            },
        );
        Ok(old)
    }

    pub fn cloexec(&self, fd: i32) -> Result<bool, Errno> {
        self.fds.get(&fd).map(|s| s.cloexec).ok_or(Errno::EBADF)
    }

    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), Errno> {
        self.fds
            .get_mut(&fd)
            .map(|s| s.cloexec = on)
            .ok_or(Errno::EBADF)
    }

    /// Open fds in order.
    pub fn fds(&self) -> Vec<i32> {
        self.fds.keys().copied().collect()
    }

    /// Every open description (for pipe reference counting).
    pub fn descriptions(&self) -> impl Iterator<Item = &OpenFile> {
        self.files.values().map(|d| &d.file)
    }

    pub fn count(&self) -> usize {
        self.fds.len()
    }
}
