//! Descriptors: close, close_range, dup, dup2, dup3, fcntl, ioctl (record
//! locks are `lock.rs`).

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::fd::{FileKind, OpenFile};
use crate::syscalls::{Args, Ctx, SysResult};

/// fcntl commands not in `zeroboot_abi::flags` (asm-generic/fcntl.h,
/// linux/fcntl.h).
const F_SETSIG: u64 = 10;
const F_GETSIG: u64 = 11;
const F_NOTIFY: u64 = 1026;

pub(crate) fn close_fd(ctx: &mut Ctx, fd: i32) -> Result<(), Errno> {
    super::lock::closing(ctx, fd);
    crate::file::dnotify::closing(ctx, fd);
    let last = ctx.k.fds.close(fd)?;
    release(ctx, last);
    Ok(())
}

/// A description whose last descriptor went away (close, dup2 over it).
fn release(ctx: &mut Ctx, last: Option<OpenFile>) {
    if let Some(f) = last {
        if f.writable() && matches!(f.kind, FileKind::Tmp(_)) {
            ctx.k
                .vfs
                .notify(&f.path, crate::vfs::FsEventKind::CloseWrite);
        }
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

pub fn dup(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx.k.fds.dup(a.fd(0), 0, false)? as u64)
}

pub fn dup2(ctx: &mut Ctx, a: Args) -> SysResult {
    let (old, new) = (a.fd(0), a.fd(1));
    if old == new {
        ctx.k.fds.get(old)?;
        return Ok(new as u64);
    }
    if ctx.k.fds.get(old).is_ok() {
        super::lock::closing(ctx, new);
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
    if ctx.k.fds.get(old).is_ok() {
        super::lock::closing(ctx, new);
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
        cmd @ (F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW) => {
            super::lock::fcntl_lock(ctx, fd, cmd, a.ptr(2))
        }
        cmd @ (F_GETPIPE_SZ | F_SETPIPE_SZ) => {
            let set = (cmd == F_SETPIPE_SZ).then(|| a.usize(2));
            let kind = ctx.k.fds.get(fd)?.kind.clone();
            kind.with_ops(|o| o.pipe_size(ctx, set))
        }
        F_GETOWN => Ok(0),
        F_SETOWN => Ok(0),
        F_SETSIG => {
            let ofd = ctx.k.fds.get(fd)?.ofd;
            crate::file::dnotify::set_signal(ctx, ofd, a.u64(2))
        }
        F_GETSIG => Ok(crate::file::dnotify::get_signal(
            ctx,
            ctx.k.fds.get(fd)?.ofd,
        )),
        F_NOTIFY => crate::file::dnotify::fcntl_notify(ctx, fd, a.uint(2)),
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
