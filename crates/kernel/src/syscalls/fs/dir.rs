//! Directories: getdents, getcwd, chdir, fchdir, mkdir.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::namei::{dir_of, read_path, resolve_at, resolve_parent_at};
use crate::syscalls::{Args, Ctx, SysResult};

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
        let name = crate::vfs::name::to_bytes(&e.name);
        let name = &name[..];
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

pub fn getcwd(ctx: &mut Ctx, a: Args) -> SysResult {
    let mut cwd = crate::vfs::name::to_bytes(&ctx.k.proc.cwd);
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

/// chroot(2): the sandbox has one root for all its processes (path
/// resolution is confined to it by the VFS). A chroot to the root it
/// already is changes nothing and succeeds; any other is EPERM, Linux's
/// answer without CAP_SYS_CHROOT, after the path's own errors.
pub fn chroot(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    let l = resolve_at(ctx, AT_FDCWD, &p, true)?;
    if !l.node.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    if l.path == "/" {
        return Ok(0);
    }
    Err(Errno::EPERM.into())
}
