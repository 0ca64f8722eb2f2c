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
    crate::sched::post_signal(ctx.k, sig as u32, tid);
    Ok(0)
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
    // Others first: a signal that ends the caller must not stop the rest.
    for &p in targets.iter().filter(|&&p| p != me) {
        crate::procs::post_signal_process(ctx.k, p, sig as u32);
    }
    if targets.contains(&me) {
        crate::sched::post_signal(ctx.k, sig as u32, None);
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
        let bit = 1u64 << (sig - 1);
        if thread != 0 {
            ctx.k.thread_mut().pending &= !bit;
        } else {
            ctx.k.proc.pending &= !bit;
        }
        if info != 0 {
            // si_signo, si_errno, si_code (SI_TKILL: the sender is not
            // recorded), the sender's pid.
            let mut si = [0u8; 128];
            si[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
            si[8..12].copy_from_slice(&(-6i32).to_le_bytes());
            si[16..20].copy_from_slice(&ctx.k.proc.pid.to_le_bytes());
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
