//! A file's size and metadata: truncate, fallocate, fsync, fadvise,
//! chmod, chown, utimensat, umask, and the xattr family.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Timespec;
use zeroboot_abi::Errno;

use super::namei::{read_path, resolve_at};
use super::stat::node_of;
use crate::syscalls::{now, Args, Ctx, SysResult};
use crate::vfs::{self, Lookup, Node};

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
    ctx.k.vfs.permit(&l.node, crate::cred::Want::WRITE)?;
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
    // Only the owner (or CAP_FOWNER) changes the mode.
    if !ctx.k.proc.cred.owns(ctx.k.vfs.owner(&l.node).0) {
        return Err(Errno::EPERM.into());
    }
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
            // The image's inode number stays (and with it the owner).
            let ino = m.ino;
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

/// chown's rules (Linux's `chown_ok`/`chgrp_ok`): CAP_CHOWN (fsuid 0)
/// changes anything; the owner may keep its uid and give the file one of
/// its own groups; everyone else gets EPERM. -1 leaves an id as it is.
fn set_owner(ctx: &mut Ctx, l: &Lookup, uid: u32, gid: u32) -> SysResult {
    let (cur_uid, cur_gid) = ctx.k.vfs.owner(&l.node);
    let c = &ctx.k.proc.cred;
    if !c.fs_privileged() {
        let owner = c.fsuid == cur_uid;
        let uid_ok = uid == u32::MAX || (owner && uid == cur_uid);
        let gid_ok = gid == u32::MAX || (owner && (gid == cur_gid || c.in_group(gid)));
        if !(uid_ok && gid_ok) {
            return Err(Errno::EPERM.into());
        }
    }
    let new_uid = if uid == u32::MAX { cur_uid } else { uid };
    let new_gid = if gid == u32::MAX { cur_gid } else { gid };
    ctx.k.vfs.set_owner(&l.node, (new_uid, new_gid))?;
    ctx.k.vfs.notify(&l.path, vfs::FsEventKind::Chmod);
    Ok(0)
}

pub fn chown(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, true)?;
    set_owner(ctx, &l, a.uint(1), a.uint(2))
}

pub fn lchown(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, false)?;
    set_owner(ctx, &l, a.uint(1), a.uint(2))
}

pub fn fchown(ctx: &mut Ctx, a: Args) -> SysResult {
    let f = ctx.k.fds.get(a.fd(0))?.clone();
    let node = node_of(ctx, &f).ok_or(Errno::EBADF)?;
    set_owner(ctx, &Lookup { path: f.path, node }, a.uint(1), a.uint(2))
}

pub fn fchownat(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(4);
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let p = read_path(ctx, a.ptr(1))?;
    let l = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        let f = ctx.k.fds.get(a.fd(0))?.clone();
        let node = node_of(ctx, &f).ok_or(Errno::EBADF)?;
        Lookup { path: f.path, node }
    } else {
        resolve_at(ctx, a.fd(0), &p, flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    set_owner(ctx, &l, a.uint(2), a.uint(3))
}

pub fn utimensat(ctx: &mut Ctx, a: Args) -> SysResult {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let dirfd = a.fd(0);
    let (atime, mtime) = if a.u64(2) == 0 {
        (Some(now()), Some(now()))
    } else {
        let t: [Timespec; 2] = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
        let time = |t: &Timespec| -> Result<Option<(i64, i64)>, Errno> {
            match t.tv_nsec {
                UTIME_OMIT => Ok(None),
                UTIME_NOW => Ok(Some(now())),
                ns if !(0..1_000_000_000).contains(&ns) => Err(Errno::EINVAL),
                ns => Ok(Some((t.tv_sec, ns))),
            }
        };
        (time(&t[0])?, time(&t[1])?)
    };
    let l = if a.u64(1) == 0 {
        let f = ctx.k.fds.get(dirfd)?.clone();
        let node = node_of(ctx, &f).ok_or(Errno::EBADF)?;
        Lookup { path: f.path, node }
    } else {
        let p = read_path(ctx, a.ptr(1))?;
        resolve_at(ctx, dirfd, &p, a.u64(3) & AT_SYMLINK_NOFOLLOW == 0)?
    };
    if atime.is_none() && mtime.is_none() {
        return Ok(0);
    }
    let ino = match &l.node {
        Node::TmpFile(ino) => *ino,
        Node::Image(m) if m.file_type() == S_IFREG => {
            ctx.k.vfs.writable_file(&l.path, &l.node, now())?
        }
        Node::TmpDir { ino, .. } | Node::TmpSymlink { ino, .. } => {
            ctx.k.vfs.tmp.set_node_times(*ino, atime, mtime);
            return Ok(0);
        }
        // An image directory's times are kept in the overlay, from what
        // the image says.
        Node::Image(m) if m.file_type() == S_IFDIR => {
            let tmp = &mut ctx.k.vfs.tmp;
            if tmp.node_times(m.ino).is_none() {
                tmp.set_node_times(m.ino, Some((m.atime, 0)), Some((m.mtime, m.mtime_nsec)));
            }
            tmp.set_node_times(m.ino, atime, mtime);
            return Ok(0);
        }
        // Times of the image's symlinks are not recorded.
        _ => return Ok(0),
    };
    if let Some(i) = ctx.k.vfs.tmp.inode_mut(ino) {
        // An access time left alone keeps showing what it showed.
        let shown = i.atime.unwrap_or(i.mtime);
        if let Some(mt) = mtime {
            i.mtime = mt;
        }
        i.atime = Some(atime.unwrap_or(shown));
    }
    Ok(0)
}

pub fn umask(ctx: &mut Ctx, a: Args) -> SysResult {
    let old = ctx.k.proc.umask;
    ctx.k.proc.umask = a.uint(0) & 0o777;
    Ok(old as u64)
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
