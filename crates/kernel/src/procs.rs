//! Process lifecycle inside one sandbox: exit into a zombie, reaping,
//! handing a borrowed (vfork) address space back, and wait statuses.
//! Creation (clone/fork/vfork) is in `syscalls::process::fork`, execve in
//! `sandbox`, because it needs the vCPU.

use zeroboot_abi::signal::SIGCHLD;
use zeroboot_abi::Errno;
use zeroboot_vmm::GuestMemory;

use crate::kernel::{Exit, Kernel, Zombie};
use crate::sched;
use crate::task::{Resume, ThreadState};

/// wait(2) status of a normal exit.
pub fn exited(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// wait(2) status of a death by signal.
pub fn killed(sig: u32) -> i32 {
    sig as i32 & 0x7f
}

/// The sandbox's result for a wait status.
pub fn exit_of(status: i32, reason: Option<String>) -> Exit {
    if status & 0x7f == 0 {
        Exit::Code((status >> 8) & 0xff)
    } else {
        Exit::Signal((status & 0x7f) as u32, reason.unwrap_or_default())
    }
}

/// The current process ends with wait status `status`. The first process
/// ending ends the sandbox; any other becomes a zombie for its parent and
/// is switched out by the run loop.
pub fn exit_current(k: &mut Kernel, mem: &GuestMemory, status: i32, reason: Option<String>) {
    let pid = k.proc.pid;
    if pid == k.init_pid {
        k.exit = Some(exit_of(status, reason));
        return;
    }
    for fd in k.fds.fds() {
        let _ = k.fds.close(fd);
    }
    k.gc_pipes();
    if let Some((ppid, ptid)) = k.proc.vfork_parent.take() {
        // The layout is the parent's: give it back untouched.
        release_vfork_parent(k, ppid, ptid, None);
    } else {
        k.mm.release(mem, true);
    }
    let init = k.init_pid;
    for slot in k.others.values_mut() {
        if slot.proc.ppid == pid {
            slot.proc.ppid = init;
        }
    }
    for z in k.zombies.values_mut() {
        if z.ppid == pid {
            z.ppid = init;
        }
    }
    let ppid = k.proc.ppid;
    k.zombies.insert(
        pid,
        Zombie {
            ppid,
            pgid: k.proc.pgid,
            status,
        },
    );
    k.proc.dead = Some(status);
    k.threads.clear();
    post_signal_process(k, ppid, SIGCHLD);
    sched::wake_retriers(k);
}

/// A vfork child execs or exits: its parent gets its address space back
/// (`layout`, or what the current process holds) and its clone returns.
pub fn release_vfork_parent(
    k: &mut Kernel,
    ppid: u32,
    ptid: u32,
    layout: Option<&mut crate::mm::AddressSpace>,
) {
    let child = k.proc.pid;
    let Some(slot) = k.others.get_mut(&ppid) else {
        return;
    };
    match layout {
        Some(l) => slot.mm.swap_layout(l),
        None => slot.mm.swap_layout(&mut k.mm),
    }
    slot.proc.vfork_child = None;
    if let Some(t) = slot.threads.get_mut(&ptid) {
        t.state = ThreadState::Runnable(Resume::Complete(child as u64));
    }
}

/// Raise `sig` at process `pid` (current or parked).
pub fn post_signal_process(k: &mut Kernel, pid: u32, sig: u32) {
    if pid == k.proc.pid && k.proc.dead.is_none() {
        sched::post_signal(k, sig, None);
        return;
    }
    let bit = 1u64 << (sig - 1);
    if let Some(slot) = k.others.get_mut(&pid) {
        if slot.proc.sigactions[sig as usize - 1].handler == crate::task::SIG_DFL && sig == SIGCHLD
        {
            // SIGCHLD's default is to be ignored: nothing to deliver.
            return;
        }
        slot.proc.pending |= bit;
        if slot.proc.ignores_signal(sig) {
            return;
        }
        if let Some(t) = slot.threads.values_mut().find(|t| {
            t.sigmask & bit == 0
                && matches!(t.state, ThreadState::Blocked(ref w) if w.interruptible())
        }) {
            t.state = ThreadState::Runnable(Resume::Interrupted);
        }
    }
}

/// Raise `sig` at process `pid` (or its thread `tid`) with its siginfo,
/// queued as `crate::siginfo` says; `limited`: a sigqueue, which a full
/// real-time queue refuses with EAGAIN. ESRCH without such a target.
pub fn post_signal_info(
    k: &mut Kernel,
    pid: u32,
    tid: Option<u32>,
    sig: u32,
    info: Vec<u8>,
    limited: bool,
) -> Result<(), Errno> {
    let (proc, threads) = if pid == k.proc.pid && k.proc.dead.is_none() {
        (&mut k.proc, &mut k.threads)
    } else {
        let s = k.others.get_mut(&pid).ok_or(Errno::ESRCH)?;
        (&mut s.proc, &mut s.threads)
    };
    // An ignored signal is discarded as it is sent: nothing to keep.
    if !proc.ignores_signal(sig) {
        match tid {
            Some(t) => {
                let t = threads.get_mut(&t).ok_or(Errno::ESRCH)?;
                crate::siginfo::enqueue(t.pending, &mut t.queued, sig, info, limited)?;
            }
            None => crate::siginfo::enqueue(proc.pending, &mut proc.queued, sig, info, limited)?,
        }
    }
    post_signal_to(k, pid, tid, sig);
    Ok(())
}

/// Raise `sig` at process `pid`, or at its thread `tid`.
pub fn post_signal_to(k: &mut Kernel, pid: u32, tid: Option<u32>, sig: u32) {
    let Some(tid) = tid else {
        post_signal_process(k, pid, sig);
        return;
    };
    if pid == k.proc.pid {
        if k.proc.dead.is_none() {
            sched::post_signal(k, sig, Some(tid));
        }
        return;
    }
    let bit = 1u64 << (sig - 1);
    if let Some(t) = k.others.get_mut(&pid).and_then(|s| s.threads.get_mut(&tid)) {
        t.pending |= bit;
        let ignored = k
            .others
            .get(&pid)
            .is_some_and(|s| s.proc.ignores_signal(sig));
        let Some(t) = k.others.get_mut(&pid).and_then(|s| s.threads.get_mut(&tid)) else {
            return;
        };
        if !ignored
            && t.sigmask & bit == 0
            && matches!(t.state, ThreadState::Blocked(ref w) if w.interruptible())
        {
            t.state = ThreadState::Runnable(Resume::Interrupted);
        }
    }
}

/// Whether `sig` is pending at process `pid` (or its thread `tid`).
pub fn signal_pending(k: &Kernel, pid: u32, tid: Option<u32>, sig: u32) -> bool {
    let bit = 1u64 << (sig - 1);
    let (proc, threads) = if pid == k.proc.pid {
        (&k.proc, &k.threads)
    } else {
        match k.others.get(&pid) {
            Some(s) => (&s.proc, &s.threads),
            None => return false,
        }
    };
    let thread = tid.and_then(|t| threads.get(&t)).map_or(0, |t| t.pending);
    (proc.pending | thread) & bit != 0
}
