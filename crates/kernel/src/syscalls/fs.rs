//! File system calls: descriptors, reads and writes, paths, directories.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Iovec, Pollfd, Stat, Statfs, Statx, StatxTimestamp, Timespec};
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use std::time::Duration;

use super::{now, Args, Ctx, SysError, SysResult};
use crate::fd::{FileKind, OpenFile};
use crate::file::{verify_area, Io};
use crate::kernel::Pipe;
use crate::proc;
use crate::vfs::{self, Lookup, Node, Synth, PATH_MAX};

/// Most bytes one read or write transfers (callers loop on short counts).
const MAX_IO: usize = 4 << 20;
/// Default pipe capacity (as Linux).
pub const PIPE_CAPACITY: usize = 64 << 10;
const IOV_MAX: u64 = 1024;

// ---- helpers -------------------------------------------------------------

pub(crate) fn read_path(ctx: &mut Ctx, va: u64) -> Result<String, Errno> {
    let b = ctx.k.mm.read_cstr(ctx.mem, va, PATH_MAX)?;
    String::from_utf8(b).map_err(|_| Errno::EILSEQ)
}

/// The canonical directory `dirfd` names (AT_FDCWD: the cwd).
fn dir_of(ctx: &Ctx, dirfd: i32) -> Result<String, Errno> {
    if dirfd == AT_FDCWD {
        return Ok(ctx.k.proc.cwd.clone());
    }
    let f = ctx.k.fds.get(dirfd)?;
    f.kind.with_ops(|o| o.dir_base(ctx, f))
}

pub(crate) fn resolve_at(ctx: &Ctx, dirfd: i32, path: &str, follow: bool) -> Result<Lookup, Errno> {
    let base = if path.starts_with('/') {
        "/".to_string()
    } else {
        dir_of(ctx, dirfd)?
    };
    let pv = ctx.k.proc_view();
    ctx.k.vfs.resolve(&base, path, follow, &pv)
}

pub(crate) fn resolve_parent_at(
    ctx: &Ctx,
    dirfd: i32,
    path: &str,
) -> Result<(Lookup, String), Errno> {
    let base = if path.starts_with('/') {
        "/".to_string()
    } else {
        dir_of(ctx, dirfd)?
    };
    let pv = ctx.k.proc_view();
    ctx.k.vfs.resolve_parent(&base, path, &pv)
}

/// The node an open file refers to, for fstat.
fn node_of(ctx: &Ctx, f: &OpenFile) -> Option<Node> {
    f.kind.with_ops(|o| o.node(ctx, f))
}

fn stat_of_file(ctx: &Ctx, fd: i32) -> Result<Stat, Errno> {
    let f = ctx.k.fds.get(fd)?;
    f.kind.with_ops(|o| o.stat(ctx, f))
}

fn statx_from(st: &Stat, mask: u32) -> Statx {
    let mut x = Statx::new_zeroed();
    x.stx_mask = mask & (STATX_BASIC_STATS | STATX_BTIME);
    x.stx_mask = STATX_BASIC_STATS;
    x.stx_blksize = st.st_blksize as u32;
    x.stx_nlink = st.st_nlink as u32;
    x.stx_uid = st.st_uid;
    x.stx_gid = st.st_gid;
    x.stx_mode = st.st_mode as u16;
    x.stx_ino = st.st_ino;
    x.stx_size = st.st_size as u64;
    x.stx_blocks = st.st_blocks as u64;
    let ts = |s: i64, ns: i64| StatxTimestamp {
        tv_sec: s,
        tv_nsec: ns as u32,
        reserved: 0,
    };
    x.stx_atime = ts(st.st_atime, st.st_atime_nsec);
    x.stx_mtime = ts(st.st_mtime, st.st_mtime_nsec);
    x.stx_ctime = ts(st.st_ctime, st.st_ctime_nsec);
    x.stx_btime = ts(st.st_mtime, st.st_mtime_nsec);
    x.stx_rdev_major = (st.st_rdev >> 8) as u32;
    x.stx_rdev_minor = (st.st_rdev & 0xff) as u32;
    x.stx_dev_major = (st.st_dev >> 8) as u32;
    x.stx_dev_minor = (st.st_dev & 0xff) as u32;
    x
}

// ---- the read/write engine -----------------------------------------------

/// Read up to `count` bytes from `fd` (at `pos`, or the file offset).
pub(crate) fn do_read(
    ctx: &mut Ctx,
    fd: i32,
    count: usize,
    pos: Option<u64>,
) -> Result<Vec<u8>, SysError> {
    let count = count.min(MAX_IO);
    let f = ctx.k.fds.get(fd)?;
    if !f.readable() {
        return Err(Errno::EBADF.into());
    }
    let io = io_of(fd, f, pos);
    f.kind.clone().with_ops(|ops| {
        if ops.has_offset() {
            verify_area(io.at(), count)?;
        }
        let data = ops.read(ctx, io, count)?;
        if pos.is_none() && ops.has_offset() {
            ctx.k.fds.get_mut(fd)?.offset = io.offset + data.len() as u64;
        }
        Ok(data)
    })
}

/// Write `data` to `fd` (at `pos`, or the file offset / end for O_APPEND).
pub(crate) fn do_write(
    ctx: &mut Ctx,
    fd: i32,
    data: &[u8],
    pos: Option<u64>,
) -> Result<usize, SysError> {
    let f = ctx.k.fds.get(fd)?;
    if !f.writable() {
        return Err(Errno::EBADF.into());
    }
    let io = io_of(fd, f, pos);
    f.kind.clone().with_ops(|ops| ops.write(ctx, io, data))
}

fn io_of(fd: i32, f: &OpenFile, pos: Option<u64>) -> Io {
    Io {
        fd,
        pos,
        offset: f.offset,
        nonblock: f.flags & O_NONBLOCK != 0,
        append: f.flags & O_APPEND != 0,
    }
}

// ---- read/write family -----------------------------------------------------

pub fn read(ctx: &mut Ctx, a: Args) -> SysResult {
    let data = do_read(ctx, a.fd(0), a.usize(2), None)?;
    ctx.k.mm.write(ctx.mem, a.ptr(1), &data)?;
    Ok(data.len() as u64)
}

pub fn pread64(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.i64(3)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    let data = do_read(ctx, a.fd(0), a.usize(2), Some(a.u64(3)))?;
    ctx.k.mm.write(ctx.mem, a.ptr(1), &data)?;
    Ok(data.len() as u64)
}

fn check_seekable(ctx: &Ctx, fd: i32) -> Result<(), Errno> {
    ctx.k.fds.get(fd)?.kind.with_ops(|o| o.positional())
}

pub fn write(ctx: &mut Ctx, a: Args) -> SysResult {
    let len = (a.usize(2)).min(MAX_IO);
    let data = ctx.k.mm.read_vec(ctx.mem, a.ptr(1), len)?;
    Ok(do_write(ctx, a.fd(0), &data, None)? as u64)
}

pub fn pwrite64(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.i64(3)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    let len = (a.usize(2)).min(MAX_IO);
    let data = ctx.k.mm.read_vec(ctx.mem, a.ptr(1), len)?;
    Ok(do_write(ctx, a.fd(0), &data, Some(a.u64(3)))? as u64)
}

fn read_iovecs(ctx: &mut Ctx, va: u64, n: u64) -> Result<Vec<Iovec>, Errno> {
    if n > IOV_MAX {
        return Err(Errno::EINVAL);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let iov: Iovec = ctx.k.mm.read_obj(ctx.mem, va + i * 16)?;
        if (iov.len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        v.push(iov);
    }
    Ok(v)
}

fn readv_at(ctx: &mut Ctx, fd: i32, va: u64, n: u64, pos: Option<u64>) -> SysResult {
    let iovs = read_iovecs(ctx, va, n)?;
    // Each length is below 2^63 (read_iovecs), but their sum may not be;
    // Linux caps a transfer (MAX_RW_COUNT) rather than failing, and
    // do_read caps it at MAX_IO.
    let total = iovs.iter().fold(0u64, |t, i| t.saturating_add(i.len));
    let data = do_read(ctx, fd, usize::try_from(total).unwrap_or(usize::MAX), pos)?;
    let mut done = 0usize;
    for iov in iovs {
        if done >= data.len() {
            break;
        }
        let n = (iov.len as usize).min(data.len() - done);
        ctx.k.mm.write(ctx.mem, iov.base, &data[done..done + n])?;
        done += n;
    }
    Ok(done as u64)
}

fn writev_at(ctx: &mut Ctx, fd: i32, va: u64, n: u64, pos: Option<u64>) -> SysResult {
    let iovs = read_iovecs(ctx, va, n)?;
    let mut data = Vec::new();
    for iov in iovs {
        let room = MAX_IO - data.len();
        let len = (iov.len as usize).min(room);
        if len == 0 {
            continue;
        }
        data.extend_from_slice(&ctx.k.mm.read_vec(ctx.mem, iov.base, len)?);
        if data.len() >= MAX_IO {
            break;
        }
    }
    Ok(do_write(ctx, fd, &data, pos)? as u64)
}

pub fn readv(ctx: &mut Ctx, a: Args) -> SysResult {
    readv_at(ctx, a.fd(0), a.u64(1), a.u64(2), None)
}

pub fn writev(ctx: &mut Ctx, a: Args) -> SysResult {
    writev_at(ctx, a.fd(0), a.u64(1), a.u64(2), None)
}

pub fn preadv(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.i64(3) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    readv_at(ctx, a.fd(0), a.u64(1), a.u64(2), Some(a.u64(3)))
}

pub fn pwritev(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.i64(3) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    writev_at(ctx, a.fd(0), a.u64(1), a.u64(2), Some(a.u64(3)))
}

pub fn sendfile(ctx: &mut Ctx, a: Args) -> SysResult {
    let (out, inp) = (a.fd(0), a.fd(1));
    let count = (a.usize(3)).min(MAX_IO);
    let data = if a.u64(2) != 0 {
        let off: i64 = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
        if off < 0 {
            return Err(Errno::EINVAL.into());
        }
        let d = do_read(ctx, inp, count, Some(off as u64))?;
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(2), &(off + d.len() as i64))?;
        d
    } else {
        do_read(ctx, inp, count, None)?
    };
    Ok(do_write(ctx, out, &data, None)? as u64)
}

pub fn copy_file_range(ctx: &mut Ctx, a: Args) -> SysResult {
    let (inp, out) = (a.fd(0), a.fd(2));
    if a.u64(5) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let count = (a.usize(4)).min(MAX_IO);
    let in_off = if a.u64(1) != 0 {
        Some(ctx.k.mm.read_obj::<i64>(ctx.mem, a.ptr(1))? as u64)
    } else {
        None
    };
    let data = do_read(ctx, inp, count, in_off)?;
    let out_off = if a.u64(3) != 0 {
        Some(ctx.k.mm.read_obj::<i64>(ctx.mem, a.ptr(3))? as u64)
    } else {
        None
    };
    let n = do_write(ctx, out, &data, out_off)?;
    if let Some(o) = in_off {
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(1), &((o + data.len() as u64) as i64))?;
    }
    if let Some(o) = out_off {
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(3), &((o + n as u64) as i64))?;
    }
    Ok(n as u64)
}

// ---- open/close ------------------------------------------------------------

/// Resolve for open(2): follows symlinks, and a /proc/<pid>/fd/N link
/// reopens what that descriptor refers to (as Linux's magic links do).
enum OpenTarget {
    Node(Lookup),
    Reopen(OpenFile),
}

fn resolve_for_open(ctx: &Ctx, dirfd: i32, path: &str, follow: bool) -> Result<OpenTarget, Errno> {
    let mut l = resolve_at(ctx, dirfd, path, false)?;
    for _ in 0..40 {
        if !l.node.is_symlink() || !follow {
            return Ok(OpenTarget::Node(l));
        }
        let pid = ctx.k.proc.pid.to_string();
        let parts: Vec<&str> = l.path.split('/').filter(|s| !s.is_empty()).collect();
        if let ["proc", p, "fd", n] = parts.as_slice() {
            if *p == pid {
                let fd: i32 = n.parse().map_err(|_| Errno::ENOENT)?;
                let f = ctx.k.fds.get(fd)?;
                let mut nf = f.clone();
                nf.offset = 0;
                nf.dir_entries = None;
                return Ok(OpenTarget::Reopen(nf));
            }
        }
        let target = ctx.k.vfs.readlink(&l.path, &l.node)?;
        let base = vfs::parent(&l.path).to_string();
        let pv = ctx.k.proc_view();
        l = ctx.k.vfs.resolve(&base, &target, false, &pv)?;
    }
    Err(Errno::ELOOP)
}

fn do_open(ctx: &mut Ctx, dirfd: i32, path: &str, flags: u64, mode: u32) -> SysResult {
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let acc = flags & O_ACCMODE;
    if acc == 3 {
        return Err(Errno::EINVAL.into());
    }
    let writing = acc != O_RDONLY || flags & O_TRUNC != 0;
    let cloexec = flags & O_CLOEXEC != 0;
    let keep = flags
        & (O_ACCMODE
            | O_APPEND
            | O_NONBLOCK
            | O_DSYNC
            | O_DIRECT
            | O_LARGEFILE
            | O_NOATIME
            | O_PATH
            | O_DIRECTORY);
    let follow = flags & O_NOFOLLOW == 0;
    let target = match resolve_for_open(ctx, dirfd, path, follow) {
        Ok(t) => {
            if flags & O_CREAT != 0 && flags & O_EXCL != 0 {
                return Err(Errno::EEXIST.into());
            }
            t
        }
        Err(Errno::ENOENT) if flags & O_CREAT != 0 => {
            let (parent, name) = resolve_parent_at(ctx, dirfd, path)?;
            if name == "." || name == ".." || path.ends_with('/') {
                return Err(Errno::EISDIR.into());
            }
            let mode = mode & !ctx.k.proc.umask;
            let (cpath, ino) = ctx.k.vfs.create_file(&parent, &name, mode, now())?;
            let f = OpenFile::new(FileKind::Tmp(ino), cpath, keep);
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        Err(e) => return Err(e.into()),
    };
    let l = match target {
        OpenTarget::Reopen(mut f) => {
            f.flags = keep;
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        OpenTarget::Node(l) => l,
    };
    if l.node.is_symlink() {
        if flags & O_PATH != 0 {
            let f = OpenFile::new(FileKind::Path, l.path, keep);
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        return Err(Errno::ELOOP.into());
    }
    if flags & O_DIRECTORY != 0 && !l.node.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    if flags & O_PATH != 0 {
        let f = OpenFile::new(FileKind::Path, l.path, keep);
        return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
    }
    if l.node.is_dir() {
        if writing || flags & O_CREAT != 0 {
            return Err(Errno::EISDIR.into());
        }
        let f = OpenFile::new(FileKind::Dir, l.path, keep);
        return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
    }
    let kind = match &l.node {
        Node::Synth(Synth::Device(crate::vfs::Device::Pts(id))) => FileKind::Pty(*id),
        Node::Synth(Synth::Device(d)) => FileKind::Device(*d),
        Node::Synth(Synth::File(pf)) => {
            if writing {
                return Err(Errno::EACCES.into());
            }
            FileKind::Generated(Arc::from(proc::generate(ctx, pf)))
        }
        Node::TmpFile(ino) if ctx.k.vfs.is_socket(&l.node) => {
            // A socket node cannot be opened (Linux: ENXIO).
            let _ = ino;
            return Err(Errno::ENXIO.into());
        }
        Node::TmpFile(ino) => {
            if flags & O_TRUNC != 0 && acc != O_RDONLY {
                ctx.k.vfs.tmp.truncate(*ino, 0, now())?;
            }
            FileKind::Tmp(*ino)
        }
        Node::Image(m) if m.file_type() == S_IFREG => {
            if writing {
                if flags & O_TRUNC != 0 && acc != O_RDONLY {
                    // No need to copy what is about to be truncated.
                    let ino = ctx.k.vfs.tmp.new_file(m.mode & 0o7777, Vec::new(), now())?;
                    ctx.k.vfs.tmp.set(l.path.clone(), vfs::Entry::File(ino))?;
                    FileKind::Tmp(ino)
                } else {
                    FileKind::Tmp(ctx.k.vfs.writable_file(&l.path, &l.node, now())?)
                }
            } else {
                FileKind::Image(ctx.k.vfs.image.open(&l.path).map_err(Errno::from)?)
            }
        }
        _ => return Err(Errno::EACCES.into()),
    };
    let f = OpenFile::new(kind, l.path, keep);
    Ok(ctx.k.fds.open(f, cloexec, 0)? as u64)
}

pub fn open(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    do_open(ctx, AT_FDCWD, &p, a.u64(1), a.uint(2))
}

pub fn openat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(1))?;
    do_open(ctx, a.fd(0), &p, a.u64(2), a.uint(3))
}

pub fn creat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    do_open(ctx, AT_FDCWD, &p, O_CREAT | O_WRONLY | O_TRUNC, a.uint(1))
}

pub(crate) fn close_fd(ctx: &mut Ctx, fd: i32) -> Result<(), Errno> {
    let last = ctx.k.fds.close(fd)?;
    release(ctx, last);
    Ok(())
}

/// A description whose last descriptor went away (close, dup2 over it).
fn release(ctx: &mut Ctx, last: Option<OpenFile>) {
    if let Some(f) = last {
        f.kind.with_ops(|o| o.released(ctx));
    }
}

pub fn close(ctx: &mut Ctx, a: Args) -> SysResult {
    close_fd(ctx, a.fd(0))?;
    Ok(0)
}

pub fn close_range(ctx: &mut Ctx, a: Args) -> SysResult {
    let (first, last, flags) = (a.uint(0), a.uint(1), a.u64(2));
    if first > last || flags & !4 /* CLOSE_RANGE_CLOEXEC */ & !2 != 0 {
        return Err(Errno::EINVAL.into());
    }
    for fd in ctx.k.fds.fds() {
        if (fd as u32) >= first && (fd as u32) <= last {
            if flags & 4 != 0 {
                ctx.k.fds.set_cloexec(fd, true)?;
            } else {
                close_fd(ctx, fd)?;
            }
        }
    }
    Ok(0)
}

// ---- stat family -------------------------------------------------------------

pub fn fstat(ctx: &mut Ctx, a: Args) -> SysResult {
    let st = stat_of_file(ctx, a.fd(0))?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &st)?;
    Ok(0)
}

fn stat_path(ctx: &mut Ctx, dirfd: i32, path_va: u64, flags: u64) -> Result<Stat, Errno> {
    let path = read_path(ctx, path_va)?;
    if path.is_empty() {
        if flags & AT_EMPTY_PATH != 0 {
            if dirfd == AT_FDCWD {
                let l = resolve_at(ctx, AT_FDCWD, ".", true)?;
                return Ok(ctx.k.vfs.stat(&l.node));
            }
            return stat_of_file(ctx, dirfd);
        }
        return Err(Errno::ENOENT);
    }
    let l = resolve_at(ctx, dirfd, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(ctx.k.vfs.stat(&l.node))
}

pub fn stat(ctx: &mut Ctx, a: Args) -> SysResult {
    let st = stat_path(ctx, AT_FDCWD, a.u64(0), 0)?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &st)?;
    Ok(0)
}

pub fn lstat(ctx: &mut Ctx, a: Args) -> SysResult {
    let st = stat_path(ctx, AT_FDCWD, a.u64(0), AT_SYMLINK_NOFOLLOW)?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &st)?;
    Ok(0)
}

pub fn newfstatat(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(3) & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let st = stat_path(ctx, a.fd(0), a.u64(1), a.u64(3))?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(2), &st)?;
    Ok(0)
}

pub fn statx(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(2);
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let st = stat_path(ctx, a.fd(0), a.u64(1), flags)?;
    let x = statx_from(&st, a.uint(3));
    ctx.k.mm.write_obj(ctx.mem, a.ptr(4), &x)?;
    Ok(0)
}

fn statfs_buf(ctx: &Ctx) -> Statfs {
    let mut s = Statfs::new_zeroed();
    s.f_type = 0x0102_1994; // TMPFS_MAGIC
    s.f_bsize = 4096;
    s.f_frsize = 4096;
    let total = ctx.k.vfs.tmp.limit / 4096;
    let used = ctx.k.vfs.tmp.bytes() / 4096;
    s.f_blocks = total;
    s.f_bfree = total.saturating_sub(used);
    s.f_bavail = s.f_bfree;
    s.f_files = 1 << 20;
    s.f_ffree = 1 << 19;
    s.f_namelen = 255;
    s
}

pub fn statfs(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    resolve_at(ctx, AT_FDCWD, &p, true)?;
    let s = statfs_buf(ctx);
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &s)?;
    Ok(0)
}

pub fn fstatfs(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.fds.get(a.fd(0))?;
    let s = statfs_buf(ctx);
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &s)?;
    Ok(0)
}

// ---- seeking and directories --------------------------------------------------

pub fn lseek(ctx: &mut Ctx, a: Args) -> SysResult {
    let fd = a.fd(0);
    let off = a.i64(1);
    let whence = a.u64(2);
    let kind = ctx.k.fds.get(fd)?.kind.clone();
    kind.with_ops(|ops| {
        let size = ops.seek_size(ctx)?;
        let f = ctx.k.fds.get_mut(fd)?;
        let base: i64 = match whence {
            SEEK_SET => 0,
            SEEK_CUR => f.offset as i64,
            SEEK_END => size as i64,
            SEEK_DATA => {
                if off < 0 || off as u64 >= size {
                    return Err(Errno::ENXIO.into());
                }
                f.offset = off as u64;
                return Ok(off as u64);
            }
            SEEK_HOLE => {
                if off < 0 || off as u64 > size {
                    return Err(Errno::ENXIO.into());
                }
                f.offset = size;
                return Ok(size);
            }
            _ => return Err(Errno::EINVAL.into()),
        };
        // Linux's sum wraps negative: EINVAL, as for any negative offset.
        let new = base.checked_add(off).ok_or(Errno::EINVAL)?;
        if new < 0 {
            return Err(Errno::EINVAL.into());
        }
        ops.seeked(f, new as u64);
        f.offset = new as u64;
        Ok(new as u64)
    })
}

fn getdents_common(ctx: &mut Ctx, a: Args, legacy: bool) -> SysResult {
    let fd = a.fd(0);
    let (buf, size) = (a.u64(1), a.usize(2));
    let kind = ctx.k.fds.get(fd)?.kind.clone();
    let entries = kind.with_ops(|o| o.dir_entries(ctx, fd))?;
    let start = ctx.k.fds.get(fd)?.offset as usize;
    let mut out = Vec::new();
    let mut idx = start;
    while idx < entries.len() {
        let e = &entries[idx];
        let name = e.name.as_bytes();
        let rec = if legacy {
            // ino, off, reclen, name, NUL, pad, d_type (last byte)
            (8 + 8 + 2 + name.len() + 2).div_ceil(8) * 8
        } else {
            (8 + 8 + 2 + 1 + name.len() + 1).div_ceil(8) * 8
        };
        if out.len() + rec > size {
            break;
        }
        let mut r = vec![0u8; rec];
        r[0..8].copy_from_slice(&e.ino.to_le_bytes());
        r[8..16].copy_from_slice(&((idx + 1) as i64).to_le_bytes());
        r[16..18].copy_from_slice(&(rec as u16).to_le_bytes());
        if legacy {
            r[18..18 + name.len()].copy_from_slice(name);
            r[rec - 1] = e.d_type;
        } else {
            r[18] = e.d_type;
            r[19..19 + name.len()].copy_from_slice(name);
        }
        out.extend_from_slice(&r);
        idx += 1;
    }
    if out.is_empty() && idx < entries.len() {
        return Err(Errno::EINVAL.into());
    }
    ctx.k.mm.write(ctx.mem, buf, &out)?;
    ctx.k.fds.get_mut(fd)?.offset = idx as u64;
    Ok(out.len() as u64)
}

pub fn getdents64(ctx: &mut Ctx, a: Args) -> SysResult {
    getdents_common(ctx, a, false)
}

pub fn getdents(ctx: &mut Ctx, a: Args) -> SysResult {
    getdents_common(ctx, a, true)
}

fn do_readlink(ctx: &mut Ctx, dirfd: i32, path_va: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    let path = read_path(ctx, path_va)?;
    let l = if path.is_empty() {
        let f = ctx.k.fds.get(dirfd)?;
        let p = f.kind.with_ops(|o| o.link_itself(f))?;
        let pv = ctx.k.proc_view();
        let node = ctx.k.vfs.lookup(&p, &pv).ok_or(Errno::ENOENT)?;
        Lookup { path: p, node }
    } else {
        resolve_at(ctx, dirfd, &path, false)?
    };
    if !l.node.is_symlink() {
        return Err(Errno::EINVAL.into());
    }
    let target = ctx.k.vfs.readlink(&l.path, &l.node)?;
    let n = target.len().min(size as usize);
    ctx.k.mm.write(ctx.mem, buf, &target.as_bytes()[..n])?;
    Ok(n as u64)
}

pub fn readlink(ctx: &mut Ctx, a: Args) -> SysResult {
    do_readlink(ctx, AT_FDCWD, a.u64(0), a.u64(1), a.u64(2))
}

pub fn readlinkat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_readlink(ctx, a.fd(0), a.u64(1), a.u64(2), a.u64(3))
}

fn do_access(ctx: &mut Ctx, dirfd: i32, path_va: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let path = read_path(ctx, path_va)?;
    let st = if path.is_empty() && flags & AT_EMPTY_PATH != 0 {
        stat_of_file(ctx, dirfd)?
    } else {
        let l = resolve_at(ctx, dirfd, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
        if mode & W_OK != 0 && matches!(l.node, Node::Synth(Synth::Dir(_) | Synth::File(_))) {
            return Err(Errno::EACCES.into());
        }
        ctx.k.vfs.stat(&l.node)
    };
    // The sandbox runs as root: read and write are granted; execute needs
    // an x bit on anything but a directory.
    if mode & X_OK != 0 && st.st_mode & S_IFMT != S_IFDIR && st.st_mode & 0o111 == 0 {
        return Err(Errno::EACCES.into());
    }
    Ok(0)
}

pub fn access(ctx: &mut Ctx, a: Args) -> SysResult {
    do_access(ctx, AT_FDCWD, a.u64(0), a.u64(1), 0)
}

pub fn faccessat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_access(ctx, a.fd(0), a.u64(1), a.u64(2), 0)
}

pub fn faccessat2(ctx: &mut Ctx, a: Args) -> SysResult {
    do_access(ctx, a.fd(0), a.u64(1), a.u64(2), a.u64(3))
}

pub fn getcwd(ctx: &mut Ctx, a: Args) -> SysResult {
    let mut cwd = ctx.k.proc.cwd.clone().into_bytes();
    cwd.push(0);
    if (a.usize(1)) < cwd.len() {
        return Err(Errno::ERANGE.into());
    }
    ctx.k.mm.write(ctx.mem, a.ptr(0), &cwd)?;
    Ok(cwd.len() as u64)
}

pub fn chdir(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, true)?;
    if !l.node.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    ctx.k.proc.cwd = l.path;
    Ok(0)
}

pub fn fchdir(ctx: &mut Ctx, a: Args) -> SysResult {
    let path = dir_of(ctx, a.fd(0))?;
    ctx.k.proc.cwd = path;
    Ok(0)
}

// ---- descriptors ---------------------------------------------------------------

pub fn dup(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx.k.fds.dup(a.fd(0), 0, false)? as u64)
}

pub fn dup2(ctx: &mut Ctx, a: Args) -> SysResult {
    let (old, new) = (a.fd(0), a.fd(1));
    if old == new {
        ctx.k.fds.get(old)?;
        return Ok(new as u64);
    }
    let replaced = ctx.k.fds.dup_to(old, new, false)?;
    release(ctx, replaced);
    Ok(new as u64)
}

pub fn dup3(ctx: &mut Ctx, a: Args) -> SysResult {
    let (old, new) = (a.fd(0), a.fd(1));
    if old == new || a.u64(2) & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL.into());
    }
    let replaced = ctx.k.fds.dup_to(old, new, a.u64(2) & O_CLOEXEC != 0)?;
    release(ctx, replaced);
    Ok(new as u64)
}

pub fn fcntl(ctx: &mut Ctx, a: Args) -> SysResult {
    let fd = a.fd(0);
    match a.u64(1) {
        F_DUPFD => Ok(ctx.k.fds.dup(fd, a.int(2), false)? as u64),
        F_DUPFD_CLOEXEC => Ok(ctx.k.fds.dup(fd, a.int(2), true)? as u64),
        F_GETFD => Ok(if ctx.k.fds.cloexec(fd)? {
            FD_CLOEXEC
        } else {
            0
        }),
        F_SETFD => {
            ctx.k.fds.set_cloexec(fd, a.u64(2) & FD_CLOEXEC != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(ctx.k.fds.get(fd)?.flags),
        F_SETFL => {
            let f = ctx.k.fds.get_mut(fd)?;
            let changeable = O_APPEND | O_NONBLOCK | O_NOATIME | O_DIRECT;
            f.flags = (f.flags & !changeable) | (a.u64(2) & changeable);
            Ok(0)
        }
        F_GETLK | F_OFD_GETLK => {
            ctx.k.fds.get(fd)?;
            // struct flock: l_type (short) first; F_UNLCK = 2.
            ctx.k.mm.write_obj(ctx.mem, a.ptr(2), &2u16)?;
            Ok(0)
        }
        F_SETLK | F_SETLKW | F_OFD_SETLK | F_OFD_SETLKW => {
            ctx.k.fds.get(fd)?;
            Ok(0)
        }
        cmd @ (F_GETPIPE_SZ | F_SETPIPE_SZ) => {
            let set = (cmd == F_SETPIPE_SZ).then(|| a.usize(2));
            let kind = ctx.k.fds.get(fd)?.kind.clone();
            kind.with_ops(|o| o.pipe_size(ctx, set))
        }
        F_GETOWN => Ok(0),
        F_SETOWN => Ok(0),
        F_ADD_SEALS | F_GET_SEALS => Err(Errno::EINVAL.into()),
        _ => Err(Errno::EINVAL.into()),
    }
}

pub fn ioctl(ctx: &mut Ctx, a: Args) -> SysResult {
    let fd = a.fd(0);
    let f = ctx.k.fds.get(fd)?.clone();
    if let Some(r) = f.kind.with_ops(|o| o.ioctl(ctx, a)) {
        return r;
    }
    match a.u64(1) {
        FIOCLEX => {
            ctx.k.fds.set_cloexec(fd, true)?;
            Ok(0)
        }
        FIONCLEX => {
            ctx.k.fds.set_cloexec(fd, false)?;
            Ok(0)
        }
        FIONBIO => {
            let on: i32 = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
            let f = ctx.k.fds.get_mut(fd)?;
            if on != 0 {
                f.flags |= O_NONBLOCK;
            } else {
                f.flags &= !O_NONBLOCK;
            }
            Ok(0)
        }
        FIONREAD => {
            // An int, as Linux's: a count past i32::MAX wraps as there.
            let n = f.kind.with_ops(|o| o.unread(ctx, f.offset)) as i32;
            ctx.k.mm.write_obj(ctx.mem, a.ptr(2), &n)?;
            Ok(0)
        }
        // No terminal exists: the console answers like a pipe would.
        TCGETS | TCSETS | TIOCGWINSZ | TIOCGPGRP => Err(Errno::ENOTTY.into()),
        other => {
            tracing::debug!(request = format!("{other:#x}"), "unsupported ioctl: ENOTTY");
            Err(Errno::ENOTTY.into())
        }
    }
}

pub fn pipe(ctx: &mut Ctx, a: Args) -> SysResult {
    pipe2(ctx, Args([a.u64(0), 0, 0, 0, 0, 0]))
}

pub fn pipe2(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(1);
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.next_pipe;
    ctx.k.next_pipe += 1;
    ctx.k.pipes.insert(
        id,
        Pipe {
            buf: Default::default(),
            capacity: PIPE_CAPACITY,
            ..Default::default()
        },
    );
    let nb = flags & O_NONBLOCK;
    let cloexec = flags & O_CLOEXEC != 0;
    let name = format!("pipe:[{id}]");
    let r = ctx.k.fds.open(
        OpenFile::new(
            FileKind::Pipe { id, write: false },
            name.clone(),
            O_RDONLY | nb,
        ),
        cloexec,
        0,
    )?;
    let w = match ctx.k.fds.open(
        OpenFile::new(FileKind::Pipe { id, write: true }, name, O_WRONLY | nb),
        cloexec,
        0,
    ) {
        Ok(w) => w,
        Err(e) => {
            close_fd(ctx, r)?;
            return Err(e.into());
        }
    };
    let fds = [r, w];
    ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &fds)?;
    Ok(0)
}

// ---- namespace changes ----------------------------------------------------------

fn do_mkdir(ctx: &mut Ctx, dirfd: i32, path_va: u64, mode: u64) -> SysResult {
    let path = read_path(ctx, path_va)?;
    if resolve_at(ctx, dirfd, &path, false).is_ok() {
        return Err(Errno::EEXIST.into());
    }
    let (parent, name) = resolve_parent_at(ctx, dirfd, &path)?;
    if name == "." || name == ".." {
        return Err(Errno::EEXIST.into());
    }
    let mode = mode as u32 & !ctx.k.proc.umask;
    ctx.k.vfs.mkdir(&parent, &name, mode)?;
    Ok(0)
}

pub fn mkdir(ctx: &mut Ctx, a: Args) -> SysResult {
    do_mkdir(ctx, AT_FDCWD, a.u64(0), a.u64(1))
}

pub fn mkdirat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_mkdir(ctx, a.fd(0), a.u64(1), a.u64(2))
}

fn do_unlink(ctx: &mut Ctx, dirfd: i32, path_va: u64, rmdir: bool) -> SysResult {
    let path = read_path(ctx, path_va)?;
    let (parent, name) = resolve_parent_at(ctx, dirfd, &path)?;
    if name == "." {
        return Err(Errno::EINVAL.into());
    }
    if name == ".." {
        return Err(Errno::ENOTEMPTY.into());
    }
    let full = vfs::join(&parent.path, &name);
    let pv = ctx.k.proc_view();
    let node = ctx.k.vfs.lookup(&full, &pv).ok_or(Errno::ENOENT)?;
    if vfs::synthetic::covers(&full) {
        return Err(Errno::EACCES.into());
    }
    if rmdir {
        if !node.is_dir() {
            return Err(Errno::ENOTDIR.into());
        }
        if full == "/" {
            return Err(Errno::EBUSY.into());
        }
        if !ctx.k.vfs.is_empty_dir(&full, &node, &pv)? {
            return Err(Errno::ENOTEMPTY.into());
        }
    } else {
        if node.is_dir() {
            return Err(Errno::EISDIR.into());
        }
        if path.ends_with('/') {
            return Err(Errno::ENOTDIR.into());
        }
    }
    ctx.k.vfs.remove(&full);
    if ctx.k.proc.cwd == full || ctx.k.proc.cwd.starts_with(&format!("{full}/")) {
        // Linux keeps a removed cwd usable as a dangling directory; we keep
        // the path, and lookups below it simply fail.
    }
    Ok(0)
}

pub fn unlink(ctx: &mut Ctx, a: Args) -> SysResult {
    do_unlink(ctx, AT_FDCWD, a.u64(0), false)
}

pub fn rmdir(ctx: &mut Ctx, a: Args) -> SysResult {
    do_unlink(ctx, AT_FDCWD, a.u64(0), true)
}

pub fn unlinkat(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(2) & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL.into());
    }
    do_unlink(ctx, a.fd(0), a.u64(1), a.u64(2) & AT_REMOVEDIR != 0)
}

fn do_rename(
    ctx: &mut Ctx,
    olddir: i32,
    old_va: u64,
    newdir: i32,
    new_va: u64,
    flags: u64,
) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let old = read_path(ctx, old_va)?;
    let new = read_path(ctx, new_va)?;
    let (op, oname) = resolve_parent_at(ctx, olddir, &old)?;
    if oname == "." || oname == ".." {
        return Err(Errno::EBUSY.into());
    }
    let opath = vfs::join(&op.path, &oname);
    let pv = ctx.k.proc_view();
    let onode = ctx.k.vfs.lookup(&opath, &pv).ok_or(Errno::ENOENT)?;
    let (np, nname) = resolve_parent_at(ctx, newdir, &new)?;
    if nname == "." || nname == ".." {
        return Err(Errno::EBUSY.into());
    }
    let npath = vfs::join(&np.path, &nname);
    let pv = ctx.k.proc_view();
    let replaced = ctx.k.vfs.lookup(&npath, &pv);
    if replaced.is_some() && flags & RENAME_NOREPLACE != 0 {
        return Err(Errno::EEXIST.into());
    }
    let l = Lookup {
        path: opath,
        node: onode,
    };
    ctx.k.vfs.rename(&l, &npath, replaced.as_ref(), now())?;
    Ok(0)
}

pub fn rename(ctx: &mut Ctx, a: Args) -> SysResult {
    do_rename(ctx, AT_FDCWD, a.u64(0), AT_FDCWD, a.u64(1), 0)
}

pub fn renameat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_rename(ctx, a.fd(0), a.u64(1), a.fd(2), a.u64(3), 0)
}

pub fn renameat2(ctx: &mut Ctx, a: Args) -> SysResult {
    do_rename(ctx, a.fd(0), a.u64(1), a.fd(2), a.u64(3), a.u64(4))
}

fn do_symlink(ctx: &mut Ctx, target_va: u64, dirfd: i32, path_va: u64) -> SysResult {
    let target = read_path(ctx, target_va)?;
    if target.is_empty() {
        return Err(Errno::ENOENT.into());
    }
    let path = read_path(ctx, path_va)?;
    if resolve_at(ctx, dirfd, &path, false).is_ok() {
        return Err(Errno::EEXIST.into());
    }
    let (parent, name) = resolve_parent_at(ctx, dirfd, &path)?;
    ctx.k.vfs.symlink(&parent, &name, &target)?;
    Ok(0)
}

pub fn symlink(ctx: &mut Ctx, a: Args) -> SysResult {
    do_symlink(ctx, a.u64(0), AT_FDCWD, a.u64(1))
}

pub fn symlinkat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_symlink(ctx, a.u64(0), a.fd(1), a.u64(2))
}

fn do_link(
    ctx: &mut Ctx,
    olddir: i32,
    old_va: u64,
    newdir: i32,
    new_va: u64,
    flags: u64,
) -> SysResult {
    let old = read_path(ctx, old_va)?;
    let new = read_path(ctx, new_va)?;
    let l = resolve_at(ctx, olddir, &old, flags & AT_SYMLINK_FOLLOW != 0)?;
    if l.node.is_dir() {
        return Err(Errno::EPERM.into());
    }
    if resolve_at(ctx, newdir, &new, false).is_ok() {
        return Err(Errno::EEXIST.into());
    }
    let (parent, name) = resolve_parent_at(ctx, newdir, &new)?;
    ctx.k.vfs.link(&l, &parent, &name, now())?;
    Ok(0)
}

pub fn link(ctx: &mut Ctx, a: Args) -> SysResult {
    do_link(ctx, AT_FDCWD, a.u64(0), AT_FDCWD, a.u64(1), 0)
}

pub fn linkat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_link(ctx, a.fd(0), a.u64(1), a.fd(2), a.u64(3), a.u64(4))
}

// ---- contents and metadata -------------------------------------------------------

pub fn ftruncate(ctx: &mut Ctx, a: Args) -> SysResult {
    let fd = a.fd(0);
    if (a.i64(1)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    let f = ctx.k.fds.get(fd)?;
    if !f.writable() {
        return Err(Errno::EINVAL.into());
    }
    let kind = f.kind.clone();
    kind.with_ops(|o| o.truncate(ctx, a.u64(1)))?;
    Ok(0)
}

pub fn truncate(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.i64(1)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, true)?;
    if l.node.is_dir() {
        return Err(Errno::EISDIR.into());
    }
    let ino = ctx.k.vfs.writable_file(&l.path, &l.node, now())?;
    ctx.k.vfs.tmp.truncate(ino, a.u64(1), now())?;
    Ok(0)
}

pub fn fsync(ctx: &mut Ctx, a: Args) -> SysResult {
    // Everything lives in memory: there is nothing to flush.
    ctx.k.fds.get(a.fd(0))?;
    Ok(0)
}

pub fn sync(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(0)
}

pub fn flock(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.fds.get(a.fd(0))?;
    Ok(0)
}

pub fn fadvise64(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.fds.get(a.fd(0))?.kind.with_ops(|o| o.fadvise())?;
    Ok(0)
}

/// fallocate(2), mode 0 only. The checks and their order are Linux's
/// (`vfs_fallocate`); the length is guest-controlled, so the end is
/// computed checked.
pub fn fallocate(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, mode, off, len) = (a.fd(0), a.int(1), a.i64(2), a.i64(3));
    let f = ctx.k.fds.get(fd)?;
    if off < 0 || len <= 0 {
        return Err(Errno::EINVAL.into());
    }
    if mode != 0 {
        return Err(Errno::EOPNOTSUPP.into());
    }
    if !f.writable() {
        return Err(Errno::EBADF.into());
    }
    let kind = f.kind.clone();
    kind.with_ops(|o| o.allocate(ctx, off, len))?;
    Ok(0)
}

fn set_mode(ctx: &mut Ctx, l: &Lookup, mode: u32) -> SysResult {
    let mode = mode & 0o7777;
    match &l.node {
        Node::TmpFile(ino) => {
            if let Some(i) = ctx.k.vfs.tmp.inode_mut(*ino) {
                // Keep the file type (a socket node stays one).
                i.mode = (i.mode & S_IFMT) | mode;
            }
        }
        Node::TmpDir { ino, .. } => {
            let ino = *ino;
            ctx.k
                .vfs
                .tmp
                .set(l.path.clone(), vfs::Entry::Dir { mode, ino })?;
        }
        Node::Image(m) if m.file_type() == S_IFDIR => {
            let ino = ctx.k.vfs.tmp.alloc_ino();
            ctx.k
                .vfs
                .tmp
                .set(l.path.clone(), vfs::Entry::Dir { mode, ino })?;
        }
        Node::Image(m) if m.file_type() == S_IFREG => {
            let ino = ctx.k.vfs.writable_file(&l.path, &l.node, now())?;
            if let Some(i) = ctx.k.vfs.tmp.inode_mut(ino) {
                i.mode = mode;
            }
        }
        Node::TmpSymlink { .. } => {}
        _ => return Err(Errno::EPERM.into()),
    }
    ctx.k.vfs.notify(&l.path, vfs::FsEventKind::Chmod);
    Ok(0)
}

pub fn chmod(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, true)?;
    set_mode(ctx, &l, a.uint(1))
}

pub fn fchmodat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(1))?;
    let l = resolve_at(ctx, a.fd(0), &p, true)?;
    set_mode(ctx, &l, a.uint(2))
}

pub fn fchmod(ctx: &mut Ctx, a: Args) -> SysResult {
    let f = ctx.k.fds.get(a.fd(0))?.clone();
    let node = node_of(ctx, &f).ok_or(Errno::EBADF)?;
    set_mode(ctx, &Lookup { path: f.path, node }, a.uint(1))
}

pub fn chown(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    resolve_at(ctx, AT_FDCWD, &p, true)?;
    Ok(0)
}

pub fn fchown(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.fds.get(a.fd(0))?;
    Ok(0)
}

pub fn fchownat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(1))?;
    if !(p.is_empty() && a.u64(4) & AT_EMPTY_PATH != 0) {
        resolve_at(ctx, a.fd(0), &p, a.u64(4) & AT_SYMLINK_NOFOLLOW == 0)?;
    }
    Ok(0)
}

pub fn utimensat(ctx: &mut Ctx, a: Args) -> SysResult {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let dirfd = a.fd(0);
    let mtime = if a.u64(2) == 0 {
        Some(now())
    } else {
        let t: [Timespec; 2] = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
        match t[1].tv_nsec {
            UTIME_OMIT => None,
            UTIME_NOW => Some(now()),
            ns if !(0..1_000_000_000).contains(&ns) => return Err(Errno::EINVAL.into()),
            ns => Some((t[1].tv_sec, ns)),
        }
    };
    let l = if a.u64(1) == 0 {
        let f = ctx.k.fds.get(dirfd)?.clone();
        let node = node_of(ctx, &f).ok_or(Errno::EBADF)?;
        Lookup { path: f.path, node }
    } else {
        let p = read_path(ctx, a.ptr(1))?;
        resolve_at(ctx, dirfd, &p, a.u64(3) & AT_SYMLINK_NOFOLLOW == 0)?
    };
    let Some(mt) = mtime else { return Ok(0) };
    match &l.node {
        Node::TmpFile(ino) => {
            if let Some(i) = ctx.k.vfs.tmp.inode_mut(*ino) {
                i.mtime = mt;
            }
        }
        Node::Image(m) if m.file_type() == S_IFREG => {
            let ino = ctx.k.vfs.writable_file(&l.path, &l.node, now())?;
            if let Some(i) = ctx.k.vfs.tmp.inode_mut(ino) {
                i.mtime = mt;
            }
        }
        // Directory and symlink times are not recorded.
        _ => {}
    }
    Ok(0)
}

pub fn umask(ctx: &mut Ctx, a: Args) -> SysResult {
    let old = ctx.k.proc.umask;
    ctx.k.proc.umask = a.uint(0) & 0o777;
    Ok(old as u64)
}

pub fn memfd_create(ctx: &mut Ctx, a: Args) -> SysResult {
    let name = read_path(ctx, a.ptr(0))?;
    if name.len() > 249 {
        return Err(Errno::EINVAL.into());
    }
    const MFD_CLOEXEC: u64 = 1;
    const MFD_ALLOW_SEALING: u64 = 2;
    if a.u64(1) & !(MFD_CLOEXEC | MFD_ALLOW_SEALING) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let ino = ctx.k.vfs.tmp.new_file(0o777, Vec::new(), now())?;
    let f = OpenFile::new(
        FileKind::Tmp(ino),
        format!("/memfd:{name} (deleted)"),
        O_RDWR,
    );
    Ok(ctx.k.fds.open(f, a.u64(1) & MFD_CLOEXEC != 0, 0)? as u64)
}

// ---- readiness -------------------------------------------------------------------

use super::events::{readiness, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

fn do_poll(ctx: &mut Ctx, fds_va: u64, nfds: u64, timeout_ms: Option<u64>) -> SysResult {
    if nfds
        > ctx.k.proc.rlimits[RLIMIT_NOFILE as usize]
            .rlim_cur
            .max(1024)
    {
        return Err(Errno::EINVAL.into());
    }
    let mut ready = 0;
    let mut out = Vec::with_capacity(nfds as usize);
    for i in 0..nfds {
        let mut p: Pollfd = ctx.k.mm.read_obj(ctx.mem, fds_va + 8 * i)?;
        p.revents = if p.fd < 0 {
            0
        } else {
            let r = readiness(ctx, p.fd);
            r & (p.events | POLLERR | POLLHUP | POLLNVAL)
        };
        if p.revents != 0 {
            ready += 1;
        }
        out.push(p);
    }
    for (i, p) in out.iter().enumerate() {
        ctx.k.mm.write_obj(ctx.mem, fds_va + 8 * i as u64, p)?;
    }
    if ready == 0 {
        let fds: Vec<i32> = out.iter().map(|p| p.fd).filter(|&f| f >= 0).collect();
        return super::events::block_until_ready(
            ctx,
            "poll",
            timeout_ms.map(Duration::from_millis),
            &fds,
        );
    }
    Ok(ready)
}

pub fn poll(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = a.int(2);
    do_poll(
        ctx,
        a.u64(0),
        a.u64(1),
        if t < 0 { None } else { Some(t as u64) },
    )
}

pub fn ppoll(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = if a.u64(2) == 0 {
        None
    } else {
        // In milliseconds, from saturating nanoseconds (a timeout of
        // 1 << 62 s once wrapped to 0 here).
        Some(super::time::read_ts(ctx, a.u64(2))? / 1_000_000)
    };
    do_poll(ctx, a.u64(0), a.u64(1), t)
}

fn do_select(
    ctx: &mut Ctx,
    nfds: u64,
    rd: u64,
    wr: u64,
    ex: u64,
    timeout_ms: Option<u64>,
) -> SysResult {
    if nfds > 1024 {
        return Err(Errno::EINVAL.into());
    }
    let words = nfds.div_ceil(64) as usize;
    let read_set = |ctx: &mut Ctx, va: u64| -> Result<Vec<u64>, Errno> {
        if va == 0 {
            return Ok(vec![0; words]);
        }
        let mut v = vec![0u64; words];
        for (i, w) in v.iter_mut().enumerate() {
            *w = ctx.k.mm.read_obj(ctx.mem, va + 8 * i as u64)?;
        }
        Ok(v)
    };
    let (r, w, e) = (read_set(ctx, rd)?, read_set(ctx, wr)?, read_set(ctx, ex)?);
    let (mut ro, mut wo) = (vec![0u64; words], vec![0u64; words]);
    let mut count = 0;
    for fd in 0..nfds as usize {
        let bit = 1u64 << (fd % 64);
        let (wi, want_r, want_w) = (fd / 64, r[fd / 64] & bit != 0, w[fd / 64] & bit != 0);
        if !want_r && !want_w && e[wi] & bit == 0 {
            continue;
        }
        let rv = readiness(ctx, fd as i32);
        if rv & POLLNVAL != 0 {
            return Err(Errno::EBADF.into());
        }
        if want_r && rv & (POLLIN | POLLHUP | POLLERR) != 0 {
            ro[wi] |= bit;
            count += 1;
        }
        if want_w && rv & (POLLOUT | POLLERR) != 0 {
            wo[wi] |= bit;
            count += 1;
        }
    }
    if count == 0 {
        // The sets are the question until the call returns: a blocked
        // select is retried with them as the caller wrote them.
        let fds: Vec<i32> = (0..nfds as i32).collect();
        count = super::events::block_until_ready(
            ctx,
            "select",
            timeout_ms.map(Duration::from_millis),
            &fds,
        )?;
    }
    for (va, set) in [(rd, &ro), (wr, &wo), (ex, &vec![0u64; words])] {
        if va != 0 {
            for (i, word) in set.iter().enumerate() {
                ctx.k.mm.write_obj(ctx.mem, va + 8 * i as u64, word)?;
            }
        }
    }
    Ok(count)
}

pub fn select(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = if a.u64(4) == 0 {
        None
    } else {
        let tv: zeroboot_abi::structs::Timeval = ctx.k.mm.read_obj(ctx.mem, a.ptr(4))?;
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            return Err(Errno::EINVAL.into());
        }
        Some(
            (tv.tv_sec as u64)
                .saturating_mul(1000)
                .saturating_add(tv.tv_usec as u64 / 1000),
        )
    };
    do_select(ctx, a.u64(0), a.u64(1), a.u64(2), a.u64(3), t)
}

pub fn pselect6(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = if a.u64(4) == 0 {
        None
    } else {
        // In milliseconds, from saturating nanoseconds (a timeout of
        // 1 << 62 s once wrapped to 0 here).
        Some(super::time::read_ts(ctx, a.u64(4))? / 1_000_000)
    };
    do_select(ctx, a.u64(0), a.u64(1), a.u64(2), a.u64(3), t)
}

/// The xattr family ({set,get,list,remove}xattr, with the l- and f-
/// variants): no file system of a sandbox stores extended attributes, so
/// they answer as Linux does for one without them (EOPNOTSUPP, which
/// shutil.copystat and cp -a treat as "nothing to copy"), after the
/// checks that come first on Linux (the path or fd must exist).
pub fn xattr(ctx: &mut Ctx, a: Args) -> SysResult {
    use zeroboot_abi::sysno::*;
    let nr = ctx.regs.rax;
    match nr {
        FSETXATTR | FGETXATTR | FLISTXATTR | FREMOVEXATTR => {
            ctx.k.fds.get(a.fd(0))?;
        }
        _ => {
            let path = read_path(ctx, a.ptr(0))?;
            if path.is_empty() {
                return Err(Errno::ENOENT.into());
            }
            let follow = !matches!(nr, LSETXATTR | LGETXATTR | LLISTXATTR | LREMOVEXATTR);
            resolve_at(ctx, AT_FDCWD, &path, follow)?;
        }
    }
    Err(Errno::EOPNOTSUPP.into())
}
