//! Signal dispositions, masks and self-directed signals.

use zeroboot_abi::flags::{SIG_BLOCK, SIG_SETMASK, SIG_UNBLOCK};
use zeroboot_abi::signal::*;
use zeroboot_abi::structs::{KernelSigaction, StackT};
use zeroboot_abi::Errno;

use super::{Args, Ctx, SysError, SysResult};

pub(crate) fn valid(sig: u64) -> bool {
    (1..=NSIG as u64).contains(&sig)
}

/// Signals that can never be blocked or caught.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

pub fn rt_sigaction(ctx: &mut Ctx, a: Args) -> SysResult {
    let (sig, act, oact, size) = (a.u64(0), a.u64(1), a.u64(2), a.u64(3));
    if size != 8 || !valid(sig) {
        return Err(Errno::EINVAL.into());
    }
    if act != 0 && (sig == SIGKILL as u64 || sig == SIGSTOP as u64) {
        return Err(Errno::EINVAL.into());
    }
    let old = ctx.k.proc.sigactions[sig as usize - 1];
    if act != 0 {
        let mut n: KernelSigaction = ctx.k.mm.read_obj(ctx.mem, act)?;
        n.mask &= !UNBLOCKABLE;
        ctx.k.proc.sigactions[sig as usize - 1] = n;
    }
    if oact != 0 {
        ctx.k.mm.write_obj(ctx.mem, oact, &old)?;
    }
    Ok(0)
}

/// Never reached: the run loop serves rt_sigreturn itself, because it
/// restores vCPU state a handler cannot touch.
/// The run loop restores the frame: it rewrites every register.
pub fn rt_sigreturn(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Err(SysError::Sigreturn)
}

pub fn rt_sigprocmask(ctx: &mut Ctx, a: Args) -> SysResult {
    let (how, set, oset, size) = (a.u64(0), a.u64(1), a.u64(2), a.u64(3));
    if size != 8 {
        return Err(Errno::EINVAL.into());
    }
    let old = ctx.k.thread_mut().sigmask;
    if set != 0 {
        let s: u64 = ctx.k.mm.read_obj(ctx.mem, set)?;
        let new = match how {
            SIG_BLOCK => old | s,
            SIG_UNBLOCK => old & !s,
            SIG_SETMASK => s,
            _ => return Err(Errno::EINVAL.into()),
        };
        ctx.k.thread_mut().sigmask = new & !UNBLOCKABLE;
    }
    if oset != 0 {
        ctx.k.mm.write_obj(ctx.mem, oset, &old)?;
    }
    Ok(0)
}

pub fn rt_sigpending(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(1) > 8 {
        return Err(Errno::EINVAL.into());
    }
    let p = (ctx.k.proc.pending | ctx.k.thread().pending) & ctx.k.thread().sigmask;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &p)?;
    Ok(0)
}

pub fn sigaltstack(ctx: &mut Ctx, a: Args) -> SysResult {
    const SS_ONSTACK: i32 = 1;
    const SS_DISABLE: i32 = 2;
    const MINSIGSTKSZ: u64 = 2048;
    let old = ctx.k.thread_mut().altstack;
    if a.u64(0) != 0 {
        let n: StackT = ctx.k.mm.read_obj(ctx.mem, a.ptr(0))?;
        if n.ss_flags & !(SS_DISABLE | (1 << 31)) != 0 {
            return Err(Errno::EINVAL.into());
        }
        if n.ss_flags & SS_DISABLE == 0 && n.ss_size < MINSIGSTKSZ {
            return Err(Errno::ENOMEM.into());
        }
        if old.ss_flags & SS_ONSTACK != 0 {
            return Err(Errno::EPERM.into());
        }
        ctx.k.thread_mut().altstack = n;
    }
    if a.u64(1) != 0 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &old)?;
    }
    Ok(0)
}

/// Raise `sig` at the process (`tid` None) or one of its threads; it is
/// acted on before ring 3 runs again.
fn raise(ctx: &mut Ctx, sig: u64, tid: Option<u32>) -> SysResult {
    if !valid(sig) && sig != 0 {
        return Err(Errno::EINVAL.into());
    }
    if let Some(t) = tid {
        if !ctx.k.threads.contains_key(&t) {
            return Err(Errno::ESRCH.into());
        }
    }
    if sig == 0 {
        return Ok(0);
    }
    let info = sender_info(ctx, sig as u32, crate::siginfo::SI_TKILL);
    let pid = ctx.k.proc.pid;
    crate::procs::post_signal_info(ctx.k, pid, tid, sig as u32, info, false)?;
    Ok(0)
}

/// The siginfo of `sig` sent by the caller with `code`.
pub(crate) fn sender_info(ctx: &Ctx, sig: u32, code: i32) -> Vec<u8> {
    crate::siginfo::from_sender(sig, code, ctx.k.proc.pid, ctx.k.proc.cred.uid)
}

/// A caller-supplied siginfo for `sig` sent to process `pid` (si_signo
/// set to `sig`): a process may not pretend to be the kernel, kill() or
/// tgkill() (si_code >= 0 or SI_TKILL) towards another process (EPERM).
fn user_info(ctx: &mut Ctx, va: u64, sig: u64, pid: u32) -> Result<Vec<u8>, Errno> {
    let mut info = ctx.k.mm.read_vec(ctx.mem, va, crate::siginfo::SIZE)?;
    let code = crate::siginfo::code(&info);
    if (code >= 0 || code == crate::siginfo::SI_TKILL) && pid != ctx.k.proc.pid {
        return Err(Errno::EPERM);
    }
    info[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
    Ok(info)
}

/// Queue `info` for `sig` at `pid` (or its thread `tid`): what
/// rt_sigqueueinfo and rt_tgsigqueueinfo share.
fn queue_info(ctx: &mut Ctx, pid: u32, tid: Option<u32>, sig: u64, info: Vec<u8>) -> SysResult {
    let exists = pid == ctx.k.proc.pid || ctx.k.others.contains_key(&pid);
    let thread_ok = tid.is_none_or(|t| {
        if pid == ctx.k.proc.pid {
            ctx.k.threads.contains_key(&t)
        } else {
            ctx.k
                .others
                .get(&pid)
                .is_some_and(|s| s.threads.contains_key(&t))
        }
    });
    if !exists || !thread_ok {
        // A zombie takes (and drops) what is sent to it.
        return if tid.is_none() && ctx.k.zombies.contains_key(&pid) {
            Ok(0)
        } else {
            Err(Errno::ESRCH.into())
        };
    }
    if !valid(sig) && sig != 0 {
        return Err(Errno::EINVAL.into());
    }
    if sig == 0 {
        return Ok(0);
    }
    let limited = crate::siginfo::code(&info) != crate::siginfo::SI_USER;
    crate::procs::post_signal_info(ctx.k, pid, tid, sig as u32, info, limited)?;
    Ok(0)
}

/// rt_sigqueueinfo (sigqueue): `sig` with the caller's siginfo (its
/// si_value) to process `pid`.
pub fn rt_sigqueueinfo(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, sig) = (a.int(0), a.u64(1));
    let info = user_info(ctx, a.ptr(2), sig, pid.max(0) as u32)?;
    if pid <= 0 {
        return Err(Errno::ESRCH.into());
    }
    queue_info(ctx, pid as u32, None, sig, info)
}

/// rt_tgsigqueueinfo: the same to thread `tid` of process `tgid`.
pub fn rt_tgsigqueueinfo(ctx: &mut Ctx, a: Args) -> SysResult {
    let (tgid, tid, sig) = (a.int(0), a.int(1), a.u64(2));
    if tgid <= 0 || tid <= 0 {
        return Err(Errno::EINVAL.into());
    }
    let info = user_info(ctx, a.ptr(3), sig, tgid as u32)?;
    queue_info(ctx, tgid as u32, Some(tid as u32), sig, info)
}

/// pidfd_send_signal's siginfo for `sig` to process `pid`: the caller's
/// (whose si_signo must be `sig`), or kill()'s.
pub(crate) fn pidfd_info(ctx: &mut Ctx, va: u64, sig: u64, pid: u32) -> Result<Vec<u8>, Errno> {
    if va == 0 {
        return Ok(sender_info(ctx, sig as u32, crate::siginfo::SI_USER));
    }
    let info = ctx.k.mm.read_vec(ctx.mem, va, crate::siginfo::SIZE)?;
    if info[0..4] != (sig as i32).to_le_bytes() {
        return Err(Errno::EINVAL);
    }
    user_info(ctx, va, sig, pid)
}

/// kill(2) within the sandbox: a process, a process group (0: the
/// caller's, -pgid), or every process but the sandbox's first (-1).
pub fn kill(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, sig) = (a.int(0), a.u64(1));
    if !valid(sig) && sig != 0 {
        return Err(Errno::EINVAL.into());
    }
    let me = ctx.k.proc.pid;
    let targets: Vec<u32> = match pid {
        p if p > 0 => {
            let p = p as u32;
            if p != me && !ctx.k.others.contains_key(&p) {
                // A zombie still exists until it is reaped.
                return if ctx.k.zombies.contains_key(&p) {
                    Ok(0)
                } else {
                    Err(Errno::ESRCH.into())
                };
            }
            vec![p]
        }
        -1 => std::iter::once(me)
            .chain(ctx.k.others.keys().copied())
            .filter(|&p| p == me || p != ctx.k.init_pid)
            .collect(),
        i32::MIN => return Err(Errno::ESRCH.into()),
        p => {
            let group = if p == 0 { ctx.k.proc.pgid } else { (-p) as u32 };
            let mut v: Vec<u32> = ctx
                .k
                .others
                .iter()
                .filter(|(_, s)| s.proc.pgid == group)
                .map(|(&p, _)| p)
                .collect();
            if ctx.k.proc.pgid == group {
                v.push(me);
            }
            if v.is_empty() {
                return Err(Errno::ESRCH.into());
            }
            v
        }
    };
    if sig == 0 {
        return Ok(0);
    }
    let info = sender_info(ctx, sig as u32, crate::siginfo::SI_USER);
    // Others first: a signal that ends the caller must not stop the rest.
    for &p in targets.iter().filter(|&&p| p != me) {
        let _ = crate::procs::post_signal_info(ctx.k, p, None, sig as u32, info.clone(), false);
    }
    if targets.contains(&me) {
        let _ = crate::procs::post_signal_info(ctx.k, me, None, sig as u32, info, false);
    }
    Ok(0)
}

pub fn tkill(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.int(0)) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    raise(ctx, a.u64(1), Some(a.uint(0)))
}

pub fn tgkill(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.int(0)) <= 0 || (a.int(1)) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    if a.uint(0) != ctx.k.proc.pid {
        return Err(Errno::ESRCH.into());
    }
    raise(ctx, a.u64(2), Some(a.uint(1)))
}

/// A write to a pipe nobody reads: SIGPIPE, and EPIPE if that is ignored
/// or handled.
pub fn sigpipe(ctx: &mut Ctx) -> Errno {
    let tid = ctx.k.current;
    crate::sched::post_signal(ctx.k, SIGPIPE, Some(tid));
    Errno::EPIPE
}

/// Block until a signal is acted on (pause, rt_sigsuspend): the wait ends
/// only by an interrupting signal (EINTR).
fn wait_for_signal(ctx: &mut Ctx) -> SysResult {
    let forever = ctx.k.syscall_deadline(std::time::Duration::MAX);
    Err(ctx.k.wait(crate::task::Wait::Sleep { until: forever }))
}

/// Whether the calling thread has a signal it does not block.
fn signal_ready(ctx: &Ctx) -> bool {
    let t = ctx.k.thread();
    (ctx.k.proc.pending | t.pending) & !t.sigmask != 0
}

pub fn pause(ctx: &mut Ctx, _a: Args) -> SysResult {
    if signal_ready(ctx) {
        return Err(Errno::EINTR.into());
    }
    wait_for_signal(ctx)
}

pub fn rt_sigsuspend(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(1) != 8 {
        return Err(Errno::EINVAL.into());
    }
    // A retry (after another thread ran) finds the mask already swapped.
    if ctx.k.thread().saved_sigmask.is_none() {
        let m: u64 = ctx.k.mm.read_obj(ctx.mem, a.ptr(0))?;
        let t = ctx.k.thread_mut();
        t.saved_sigmask = Some(t.sigmask);
        t.sigmask = m & !UNBLOCKABLE;
    }
    if signal_ready(ctx) {
        return Err(Errno::EINTR.into());
    }
    wait_for_signal(ctx)
}

/// rt_sigtimedwait (sigwaitinfo, sigtimedwait, sigwait): take a pending
/// signal of `set` without running its handler. The wait is retried
/// whenever something may have raised one (a syscall, a timer).
pub fn rt_sigtimedwait(ctx: &mut Ctx, a: Args) -> SysResult {
    let (set, info, timeout, size) = (a.ptr(0), a.ptr(1), a.ptr(2), a.u64(3));
    if size != 8 {
        return Err(Errno::EINVAL.into());
    }
    let set: u64 = ctx.k.mm.read_obj(ctx.mem, set)?;
    let set = set & !UNBLOCKABLE;
    let thread = ctx.k.thread().pending & set;
    let process = ctx.k.proc.pending & set;
    if thread | process != 0 {
        let ready = if thread != 0 { thread } else { process };
        let sig = ready.trailing_zeros() + 1;
        let si = crate::siginfo::take(ctx.k, sig);
        if info != 0 {
            ctx.k.mm.write(ctx.mem, info, &si)?;
        }
        return Ok(sig as u64);
    }
    let deadline = if timeout == 0 {
        None
    } else {
        let ns = super::time::read_ts(ctx, timeout)?;
        if ns == 0 {
            return Err(Errno::EAGAIN.into());
        }
        Some(ctx.k.syscall_deadline(std::time::Duration::from_nanos(ns)))
    };
    if ctx.k.take_timed_out() {
        return Err(Errno::EAGAIN.into());
    }
    Err(ctx.k.wait(crate::task::Wait::Retry {
        reason: "rt_sigtimedwait",
        deadline,
    }))
}
