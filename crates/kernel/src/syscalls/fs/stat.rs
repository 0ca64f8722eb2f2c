//! stat and its variants (fstat, lstat, newfstatat, statx), statfs,
//! fstatfs, and access/faccessat.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Stat, Statfs, Statx, StatxTimestamp};
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use super::namei::{read_path, resolve_at};
use crate::cred::Want;
use crate::fd::OpenFile;
use crate::syscalls::{Args, Ctx, SysResult};
use crate::vfs::{Node, Synth};

/// The node an open file refers to, for fstat.
pub(super) fn node_of(ctx: &Ctx, f: &OpenFile) -> Option<Node> {
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

/// The sandbox's one file system, image and overlay together, whatever
/// path or descriptor is asked about: the image's files are used space,
/// the overlay's disk limit the room left beyond what it holds.
fn statfs_buf(ctx: &Ctx) -> Statfs {
    let mut s = Statfs::new_zeroed();
    s.f_type = 0x0102_1994; // TMPFS_MAGIC
    s.f_bsize = 4096;
    s.f_frsize = 4096;
    let image = ctx.k.vfs.image.used_bytes().div_ceil(4096);
    let total = image + ctx.k.vfs.tmp.limit / 4096;
    let used = image + ctx.k.vfs.tmp.bytes().div_ceil(4096);
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
    // With the real ids (the effective ones for AT_EACCESS), as Linux.
    let cred = ctx.k.proc.cred.for_access(flags & AT_EACCESS != 0);
    cred.may(st.st_mode, st.st_uid, st.st_gid, Want(mode as u32))?;
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
