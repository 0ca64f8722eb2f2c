//! File operations: what an open file description does, per kind (gVisor's
//! `FileDescriptionImpl`).
//!
//! The syscalls (`syscalls::fs`, `syscalls::events`, `syscalls::mm`) do the
//! parts every file shares (descriptor lookup, access mode, offsets, guest
//! memory) and hand the rest to [`FileOps`]. Each kind of [`FileKind`]
//! implements it in one module here, so a new kind is one new impl and one
//! arm in [`FileKind::with_ops`]:
//!
//! | kind | module |
//! |---|---|
//! | image file, overlay (tmpfs) file, generated /proc file | [`regular`] |
//! | directory, O_PATH descriptor | [`dir`] |
//! | device (/dev/null, zero, full, random, tty), console stream | [`device`] |
//! | pipe | [`pipe`] |
//! | eventfd, timerfd, epoll | [`event`] |
//! | pseudo-terminal slave and master, control channel, socket | [`channel`] |
//! | inotify instance | [`inotify`] |
//! | process file descriptor (pidfd) | [`pidfd`] |
//!
//! State that the sandbox's processes share about files lives in
//! [`FsObjects`]: FIFOs ([`fifo`]), advisory locks ([`lock`]), inotify
//! instances and dnotify registrations ([`dnotify`]).
//!
//! `FileKind` itself stays plain data: it is what snapshots and
//! checkpoints persist (`persist.rs`), and the handles here are built from
//! it on the stack for one call.

pub(crate) mod channel;
pub(crate) mod device;
pub(crate) mod dir;
pub(crate) mod dnotify;
pub(crate) mod event;
pub(crate) mod fifo;
pub(crate) mod inotify;
pub(crate) mod lock;
pub(crate) mod pidfd;
pub(crate) mod pipe;
pub(crate) mod regular;

/// File state shared by the sandbox's processes (kept in snapshots).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FsObjects {
    /// FIFO nodes that were opened, by overlay inode.
    pub fifos: std::collections::BTreeMap<u64, fifo::Fifo>,
    pub locks: lock::Locks,
    pub inotify: inotify::Instances,
    /// dnotify registrations (fcntl F_NOTIFY) and F_SETSIG signals.
    #[serde(default)]
    pub dnotify: dnotify::Dnotify,
}

use std::sync::Arc;
use std::time::Instant;

use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use crate::fd::{FileKind, OpenFile};
use crate::mm::Backing;
use crate::syscalls::events::{POLLIN, POLLOUT};
use crate::syscalls::fs::rw::MAX_IO;
use crate::syscalls::{Args, Ctx, SysError, SysResult};
use crate::vfs::{DirEntry, Node};

/// One read or write: where, and how the description was opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Io {
    /// The descriptor the call came through.
    pub fd: i32,
    /// An explicit position (pread, pwrite, preadv...); None: the file
    /// offset.
    pub pos: Option<u64>,
    /// The description's offset at the call.
    pub offset: u64,
    pub nonblock: bool,
    pub append: bool,
}

impl Io {
    /// Where a positioned transfer starts.
    pub fn at(&self) -> u64 {
        self.pos.unwrap_or(self.offset)
    }
}

/// What one kind of open file does. Every method has Linux's answer for a
/// file without that operation as its default, so a kind implements only
/// what it has.
pub(crate) trait FileOps {
    /// Whether the description has a file position that reads and writes
    /// advance (regular files); transfers are then checked against the
    /// largest offset (`rw_verify_area`).
    fn has_offset(&self) -> bool {
        false
    }

    /// Whether pread/pwrite (an explicit position) apply: streams answer
    /// ESPIPE, a directory EISDIR.
    fn positional(&self) -> Result<(), Errno> {
        Ok(())
    }

    /// The size lseek's SEEK_END, SEEK_DATA and SEEK_HOLE measure from;
    /// ESPIPE where seeking means nothing.
    fn seek_size(&self, _ctx: &Ctx) -> Result<u64, Errno> {
        Err(Errno::ESPIPE)
    }

    /// After lseek moved the offset to `new`.
    fn seeked(&self, _f: &mut OpenFile, _new: u64) {}

    /// Read up to `count` bytes (the caller has checked the access mode).
    fn read(&self, _ctx: &mut Ctx, _io: Io, _count: usize) -> Result<Vec<u8>, SysError> {
        Err(Errno::EINVAL.into())
    }

    /// Write `data`; the number of bytes taken (the caller has checked the
    /// access mode).
    fn write(&self, _ctx: &mut Ctx, _io: Io, _data: &[u8]) -> Result<usize, SysError> {
        Err(Errno::EBADF.into())
    }

    /// `read` into guest memory at `va`: the bytes moved. A file that
    /// holds its bytes in the VMM copies them into the guest directly
    /// instead of through a buffer as large as the read.
    fn read_user(&self, ctx: &mut Ctx, io: Io, va: u64, count: usize) -> Result<usize, SysError> {
        let data = self.read(ctx, io, count.min(MAX_IO))?;
        ctx.k.mm.write(ctx.mem, va, &data)?;
        Ok(data.len())
    }

    /// `write` from guest memory at `va`, as `read_user`.
    fn write_user(&self, ctx: &mut Ctx, io: Io, va: u64, len: usize) -> Result<usize, SysError> {
        let data = ctx.k.mm.read_vec(ctx.mem, va, len.min(MAX_IO))?;
        self.write(ctx, io, &data)
    }

    /// The file system node behind the description, where there is one
    /// (fstat, fchmod, futimens).
    fn node(&self, ctx: &Ctx, f: &OpenFile) -> Option<Node> {
        let pv = ctx.k.proc_view();
        ctx.k.vfs.lookup(&f.path, &pv)
    }

    /// fstat(2).
    fn stat(&self, ctx: &Ctx, f: &OpenFile) -> Result<Stat, Errno> {
        match self.node(ctx, f) {
            Some(n) => Ok(ctx.k.vfs.stat(&n)),
            None => Err(Errno::ENOENT),
        }
    }

    /// Readiness as poll(2) bits; `depth` counts epolls nested around it.
    fn readiness(&self, _ctx: &mut Ctx, _depth: u32) -> i16 {
        POLLIN | POLLOUT
    }

    /// A count that changes whenever something happens that Linux wakes
    /// the file's pollers for (data in, room out, a timer firing): what
    /// edge-triggered epoll reports as a new event. Kinds without one are
    /// seen only through their readiness rising (epoll compares it with
    /// what it saw last).
    fn activity(&self, _ctx: &Ctx) -> u64 {
        0
    }

    /// When the description becomes ready by itself (a timer), so that a
    /// blocked poll wakes then; `nested`: asked through an epoll.
    fn wakes_at(&self, _ctx: &Ctx, _nested: bool) -> Option<Instant> {
        None
    }

    /// Whether epoll may watch it (Linux refuses regular files and
    /// directories, which are always ready).
    fn pollable(&self) -> bool {
        true
    }

    /// The ioctl requests of this kind; None: not one of them (the generic
    /// FIO* requests are answered by the caller).
    fn ioctl(&self, _ctx: &mut Ctx, _a: Args) -> Option<SysResult> {
        None
    }

    /// Bytes a read would return now (FIONREAD).
    fn unread(&self, _ctx: &Ctx, _offset: u64) -> u64 {
        0
    }

    /// F_GETPIPE_SZ / F_SETPIPE_SZ (`set`: the size asked for).
    fn pipe_size(&self, _ctx: &mut Ctx, _set: Option<usize>) -> Result<u64, SysError> {
        Err(Errno::EBADF.into())
    }

    /// ftruncate(2) on a description open for writing.
    fn truncate(&self, _ctx: &mut Ctx, _len: u64) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }

    /// fallocate(2) mode 0 of `len` bytes at `off` (both checked
    /// non-negative and `len` positive by the caller).
    fn allocate(&self, _ctx: &mut Ctx, _off: i64, _len: i64) -> Result<(), Errno> {
        Err(Errno::ENODEV)
    }

    /// posix_fadvise(2): advice is ignored where it applies.
    fn fadvise(&self) -> Result<(), Errno> {
        Ok(())
    }

    /// What mmap(2) of the description maps, and the name /proc/self/maps
    /// shows (None: the description's path).
    fn mmap(&self, _ctx: &Ctx, _offset: u64) -> Result<(Backing, Option<Arc<str>>), Errno> {
        Err(Errno::ENODEV)
    }

    /// The directory a *at() call resolves relative paths against.
    fn dir_base(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<String, Errno> {
        Err(Errno::ENOTDIR)
    }

    /// The entries getdents lists (taken at the first call, kept until a
    /// rewind).
    fn dir_entries(&self, _ctx: &mut Ctx, _fd: i32) -> Result<Arc<Vec<DirEntry>>, Errno> {
        Err(Errno::ENOTDIR)
    }

    /// The path readlinkat(fd, "") reads: only an O_PATH descriptor names
    /// a link itself.
    fn link_itself(&self, _f: &OpenFile) -> Result<String, Errno> {
        Err(Errno::ENOENT)
    }

    /// What /proc/self/fd/N points to.
    fn proc_link(&self, f: &OpenFile) -> String {
        f.path.clone()
    }

    /// The last descriptor of the description was closed.
    fn released(&self, _ctx: &mut Ctx) {}
}

impl FileKind {
    /// Run `op` with this kind's operations: the one place a kind is
    /// matched to its implementation. The kind is usually a clone of the
    /// description's (an operation may change the descriptor table).
    pub(crate) fn with_ops<R>(&self, op: impl FnOnce(&dyn FileOps) -> R) -> R {
        match self {
            FileKind::Image(h) => op(&regular::ImageFile(h)),
            FileKind::Tmp(ino) => op(&regular::TmpFile(*ino)),
            FileKind::Generated(d) => op(&regular::GeneratedFile(d)),
            FileKind::Dir => op(&dir::DirFile),
            FileKind::Path => op(&dir::PathFile),
            FileKind::Device(d) => op(&device::DeviceFile(*d)),
            FileKind::Console(s) => op(&device::ConsoleFile(*s)),
            FileKind::Pipe { id, write } => op(&pipe::PipeEnd {
                id: *id,
                write: *write,
            }),
            FileKind::EventFd(id) => op(&event::EventFdFile(*id)),
            FileKind::TimerFd(id) => op(&event::TimerFdFile(*id)),
            FileKind::Epoll(id) => op(&event::EpollFile(*id)),
            FileKind::Pty(id) => op(&channel::PtyFile(*id)),
            FileKind::PtyMaster(id) => op(&channel::PtyMasterFile(*id)),
            FileKind::Control => op(&channel::ControlFile),
            FileKind::Socket(id) => op(&channel::SocketFile(*id)),
            FileKind::Inotify(id) => op(&inotify::InotifyFile(*id)),
            FileKind::PidFd(pid) => op(&pidfd::PidFdFile(*pid)),
        }
    }
}

/// Linux's `rw_verify_area` for files with offsets: a transfer may not
/// start at a negative offset or end past the largest one (i64::MAX).
pub(crate) fn verify_area(pos: u64, count: usize) -> Result<(), Errno> {
    let end = (pos as i64).checked_add(count as i64);
    if (pos as i64) < 0 || end.is_none() {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// A stat for a file with no node (pipes, sockets, anonymous inodes): the
/// device and inode Linux shows, one link.
pub(crate) fn anon_stat(mode: u32, dev: u64, ino: u64) -> Stat {
    let mut st = Stat::new_zeroed();
    st.st_blksize = 4096;
    st.st_mode = mode;
    st.st_dev = dev;
    st.st_ino = ino;
    st.st_nlink = 1;
    st
}
