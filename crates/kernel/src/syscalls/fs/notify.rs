//! inotify_init, inotify_init1, inotify_add_watch, inotify_rm_watch. The
//! instance and its events are `file::inotify`; a watch is a hook of the
//! VFS's watch list.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::namei::{read_path, resolve_at};
use crate::fd::{FileKind, OpenFile};
use crate::file::inotify::*;
use crate::syscalls::{Args, Ctx, SysResult};

pub fn inotify_init(ctx: &mut Ctx, _a: Args) -> SysResult {
    inotify_init1(ctx, Args([0; 6]))
}

pub fn inotify_init1(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(0);
    // IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and O_CLOEXEC.
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.fs.inotify.create();
    let f = OpenFile::new(
        FileKind::Inotify(id),
        "anon_inode:inotify",
        O_RDONLY | (flags & O_NONBLOCK),
    );
    match ctx.k.fds.open(f, flags & O_CLOEXEC != 0, 0) {
        Ok(fd) => Ok(fd as u64),
        Err(e) => {
            ctx.k.gc_pipes();
            Err(e.into())
        }
    }
}

/// The instance behind `fd` (EINVAL for another kind of file).
fn instance_of(ctx: &Ctx, fd: i32) -> Result<u64, Errno> {
    match ctx.k.fds.get(fd)?.kind {
        FileKind::Inotify(id) => Ok(id),
        _ => Err(Errno::EINVAL),
    }
}

pub fn inotify_add_watch(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, mask) = (a.fd(0), a.uint(2));
    let id = instance_of(ctx, fd)?;
    if mask & IN_ALL_EVENTS == 0 || (mask & IN_MASK_ADD != 0 && mask & IN_MASK_CREATE != 0) {
        return Err(Errno::EINVAL.into());
    }
    let path = read_path(ctx, a.ptr(1))?;
    let l = resolve_at(ctx, AT_FDCWD, &path, mask & IN_DONT_FOLLOW == 0)?;
    if mask & IN_ONLYDIR != 0 && !l.node.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    let keep = mask & (IN_ALL_EVENTS | IN_ONESHOT | IN_EXCL_UNLINK);
    let inst = ctx.k.fs.inotify.map.get_mut(&id).ok_or(Errno::EBADF)?;
    let (wd, exists) = inst.wd_for(&l.path);
    let mut mask = keep;
    if exists {
        if a.uint(2) & IN_MASK_CREATE != 0 {
            return Err(Errno::EEXIST.into());
        }
        if let Some(w) = inst.watches.get(&wd) {
            if a.uint(2) & IN_MASK_ADD != 0 {
                mask |= w.mask;
            }
            let old = w.hook;
            ctx.k.vfs.watches.remove(old);
        }
    }
    let inst = ctx.k.fs.inotify.map.get_mut(&id).ok_or(Errno::EBADF)?;
    let sink = inst.sink(wd, mask);
    let hook = ctx
        .k
        .vfs
        .watches
        .add_with(l.path.clone(), false, true, sink);
    let inst = ctx.k.fs.inotify.map.get_mut(&id).ok_or(Errno::EBADF)?;
    inst.watches.insert(
        wd,
        Watch {
            path: l.path,
            mask,
            hook,
        },
    );
    Ok(wd as u64)
}

pub fn inotify_rm_watch(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, wd) = (a.fd(0), a.int(1));
    let id = instance_of(ctx, fd)?;
    let inst = ctx.k.fs.inotify.map.get_mut(&id).ok_or(Errno::EBADF)?;
    let w = inst.watches.remove(&wd).ok_or(Errno::EINVAL)?;
    // A watch its hook already ended (IN_IGNORED was queued: the path was
    // removed, or IN_ONESHOT fired) is gone for Linux too.
    if !ctx.k.vfs.watches.remove(w.hook) {
        return Err(Errno::EINVAL.into());
    }
    inst.ignored(wd);
    Ok(0)
}
