//! Process file descriptors: pidfd_open, pidfd_send_signal, and the pidfd
//! that clone(CLONE_PIDFD) returns. A pidfd names one process of the
//! sandbox; it becomes readable when that process exits, signals reach
//! exactly it (never a later process given the same pid: pids are not
//! reused within a sandbox), and waitid(P_PIDFD) reaps it.

use zeroboot_abi::flags::{O_NONBLOCK, O_RDWR};
use zeroboot_abi::Errno;

use crate::fd::{FileKind, OpenFile};
use crate::kernel::Kernel;
use crate::syscalls::{Args, Ctx, SysResult};

/// PIDFD_NONBLOCK is O_NONBLOCK.
const PIDFD_NONBLOCK: u64 = O_NONBLOCK;

/// Whether process `pid` of the sandbox still runs (not exited, whether
/// or not it was reaped).
pub(crate) fn running(k: &Kernel, pid: u32) -> bool {
    k.process(pid).is_some_and(|p| p.dead.is_none())
}

/// Whether `pid` names a process that exists, running or a zombie.
fn exists(k: &Kernel, pid: u32) -> bool {
    running(k, pid) || k.zombies.contains_key(&pid)
}

/// A new pidfd for `pid` in the caller's table (always close-on-exec, as
/// Linux makes them).
pub(crate) fn install(k: &mut Kernel, pid: u32, nonblock: bool) -> Result<i32, Errno> {
    let flags = O_RDWR | if nonblock { O_NONBLOCK } else { 0 };
    let f = OpenFile::new(FileKind::PidFd(pid), "anon_inode:[pidfd]", flags);
    k.fds.open(f, true, 0)
}

/// The process a pidfd names, and whether it was opened non-blocking.
pub(crate) fn target(ctx: &Ctx, fd: i32) -> Result<(u32, bool), Errno> {
    let f = ctx.k.fds.get(fd)?;
    match f.kind {
        FileKind::PidFd(pid) => Ok((pid, f.flags & O_NONBLOCK != 0)),
        _ => Err(Errno::EBADF),
    }
}

pub fn pidfd_open(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, flags) = (a.int(0), a.u64(1));
    if flags & !PIDFD_NONBLOCK != 0 || pid <= 0 {
        return Err(Errno::EINVAL.into());
    }
    let pid = pid as u32;
    // Threads other than a process's first have their own tids; Linux
    // refuses them (without PIDFD_THREAD) with ENOENT.
    if !exists(ctx.k, pid) {
        let thread = ctx.k.threads.contains_key(&pid)
            || ctx.k.others.values().any(|s| s.threads.contains_key(&pid));
        return Err(if thread { Errno::ENOENT } else { Errno::ESRCH }.into());
    }
    Ok(install(ctx.k, pid, flags & PIDFD_NONBLOCK != 0)? as u64)
}

/// The process a /proc/PID directory names (pidfd_send_signal takes one
/// as a pidfd, as Linux does).
fn proc_dir(ctx: &Ctx, fd: i32) -> Option<u32> {
    let f = ctx.k.fds.get(fd).ok()?;
    if !matches!(f.kind, FileKind::Dir) {
        return None;
    }
    f.path.strip_prefix("/proc/")?.parse().ok()
}

pub fn pidfd_send_signal(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, sig, info, flags) = (a.fd(0), a.u64(1), a.u64(2), a.u64(3));
    let pid = match target(ctx, fd) {
        Ok((pid, _)) => pid,
        Err(e) => proc_dir(ctx, fd).ok_or(e)?,
    };
    if flags != 0 {
        return Err(Errno::EINVAL.into());
    }
    if !crate::syscalls::signal::valid(sig) && sig != 0 {
        return Err(Errno::EINVAL.into());
    }
    let info = crate::syscalls::signal::pidfd_info(ctx, info, sig, pid)?;
    if !running(ctx.k, pid) {
        return Err(Errno::ESRCH.into());
    }
    if sig != 0 {
        let limited = crate::siginfo::code(&info) != crate::siginfo::SI_USER;
        crate::procs::post_signal_info(ctx.k, pid, None, sig as u32, info, limited)?;
    }
    Ok(0)
}
