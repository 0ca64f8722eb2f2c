//! Path resolution relative to a directory descriptor (the `*at` calls'
//! base), and the calls that change names: unlink, rmdir, rename, symlink,
//! link, readlink.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::syscalls::{now, Args, Ctx, SysResult};
use crate::vfs::{self, Lookup, PATH_MAX};

pub(crate) fn read_path(ctx: &mut Ctx, va: u64) -> Result<String, Errno> {
    let b = ctx.k.mm.read_cstr(ctx.mem, va, PATH_MAX)?;
    // Names are bytes: carried losslessly (vfs::name).
    Ok(vfs::name::from_bytes(&b))
}

/// The canonical directory `dirfd` names (AT_FDCWD: the cwd).
pub(super) fn dir_of(ctx: &Ctx, dirfd: i32) -> Result<String, Errno> {
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
    ctx.k.vfs.may_remove(&parent.node, &node)?;
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
    let target = vfs::name::to_bytes(&target);
    let n = target.len().min(size as usize);
    ctx.k.mm.write(ctx.mem, buf, &target[..n])?;
    Ok(n as u64)
}

pub fn readlink(ctx: &mut Ctx, a: Args) -> SysResult {
    do_readlink(ctx, AT_FDCWD, a.u64(0), a.u64(1), a.u64(2))
}

pub fn readlinkat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_readlink(ctx, a.fd(0), a.u64(1), a.u64(2), a.u64(3))
}

/// mknod(2): regular files, FIFOs and socket nodes in the overlay; device
/// nodes are EPERM (the sandbox has no CAP_MKNOD: devices are its own
/// /dev), as in a container without that capability.
fn do_mknod(ctx: &mut Ctx, dirfd: i32, path_va: u64, mode: u32) -> SysResult {
    let path = read_path(ctx, path_va)?;
    match mode & S_IFMT {
        0 | S_IFREG | S_IFIFO | S_IFSOCK => {}
        S_IFCHR | S_IFBLK | S_IFDIR => return Err(Errno::EPERM.into()),
        _ => return Err(Errno::EINVAL.into()),
    }
    if resolve_at(ctx, dirfd, &path, false).is_ok() {
        return Err(Errno::EEXIST.into());
    }
    let (parent, name) = resolve_parent_at(ctx, dirfd, &path)?;
    if name == "." || name == ".." || path.ends_with('/') {
        return Err(Errno::EEXIST.into());
    }
    let mode = (mode & S_IFMT) | (mode & 0o7777 & !ctx.k.proc.umask);
    ctx.k.vfs.mknod(&parent, &name, mode, now())?;
    Ok(0)
}

pub fn mknod(ctx: &mut Ctx, a: Args) -> SysResult {
    do_mknod(ctx, AT_FDCWD, a.ptr(0), a.uint(1))
}

pub fn mknodat(ctx: &mut Ctx, a: Args) -> SysResult {
    do_mknod(ctx, a.fd(0), a.ptr(1), a.uint(2))
}
