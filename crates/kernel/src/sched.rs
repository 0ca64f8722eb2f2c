//! Thread scheduling state: futex wait queues, wakeups, timeouts, and
//! signals aimed at threads. The vCPU side of a switch (registers, FPU,
//! TLS) is in `sandbox`; this module only decides.

use std::time::Instant;

use zeroboot_abi::Errno;

use crate::kernel::Kernel;
use crate::task::{Resume, Thread, ThreadState, Wait};

/// Block the current thread on `w` (the syscall returned `SysError::Block`).
/// A signal it would act on that is already pending interrupts the wait at
/// once, as Linux checks for one before it sleeps: such a signal came while
/// the thread was runnable (a retry had woken it), so nothing else would
/// interrupt it, and a SIGKILL did nothing until the wait ended.
pub fn block_current(k: &mut Kernel, w: Wait) {
    k.wait_seq += 1;
    let seq = k.wait_seq;
    let interrupt = w.interruptible() && acts_on_pending(k);
    let t = k.thread_mut();
    t.state = if interrupt {
        ThreadState::Runnable(Resume::Interrupted)
    } else {
        ThreadState::Blocked(w)
    };
    t.blocked_seq = seq;
}

/// Whether the current thread has a pending signal that it does not block
/// and its process does not ignore.
fn acts_on_pending(k: &Kernel) -> bool {
    let Some(t) = k.threads.get(&k.current) else {
        return false;
    };
    let ready = (k.proc.pending | t.pending) & !t.sigmask;
    (1..=64u32).any(|sig| ready & (1u64 << (sig - 1)) != 0 && !k.proc.ignores_signal(sig))
}

/// What identifies a futex: its user address in the current process, or
/// the guest-physical address of a word in shared memory (as Linux keys a
/// non-private futex by its page), whoever waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexKey {
    Private(u64),
    Shared(u64),
}

impl FutexKey {
    fn matches(self, w: &Wait) -> bool {
        match (self, w) {
            (FutexKey::Private(a), Wait::Futex { addr, shared, .. }) => !shared && *addr == a,
            (FutexKey::Shared(a), Wait::Futex { addr, shared, .. }) => *shared && *addr == a,
            _ => false,
        }
    }

    /// The waiter's `(addr, shared)`.
    pub fn wait_fields(self) -> (u64, bool) {
        match self {
            FutexKey::Private(a) => (a, false),
            FutexKey::Shared(a) => (a, true),
        }
    }
}

/// The threads a futex key may have waiting: the current process's for a
/// private one, every process's for a shared one.
fn futex_waiters(k: &mut Kernel, key: FutexKey) -> Vec<&mut Thread> {
    let others: Box<dyn Iterator<Item = &mut Thread>> = match key {
        FutexKey::Private(_) => Box::new(std::iter::empty()),
        FutexKey::Shared(_) => Box::new(k.others.values_mut().flat_map(|s| s.threads.values_mut())),
    };
    k.threads
        .values_mut()
        .chain(others)
        .filter(|t| matches!(&t.state, ThreadState::Blocked(w) if key.matches(w)))
        .collect()
}

/// Wake up to `n` threads waiting on futex `key` whose bitset matches.
pub fn futex_wake(k: &mut Kernel, key: FutexKey, n: u32, bitset: u32) -> u32 {
    let mut waiters: Vec<&mut Thread> = futex_waiters(k, key)
        .into_iter()
        .filter(|t| matches!(&t.state, ThreadState::Blocked(Wait::Futex { bitset: b, .. }) if b & bitset != 0))
        .collect();
    waiters.sort_unstable_by_key(|t| t.blocked_seq);
    let mut woken = 0;
    for t in waiters.into_iter().take(n as usize) {
        t.state = ThreadState::Runnable(Resume::Complete(0));
        woken += 1;
    }
    woken
}

/// Wake `n` waiters of `key` and move up to `m` more to `key2`.
pub fn futex_requeue(k: &mut Kernel, key: FutexKey, n: u32, key2: FutexKey, m: u32) -> u32 {
    let woken = futex_wake(k, key, n, u32::MAX);
    let mut waiters = futex_waiters(k, key);
    waiters.sort_unstable_by_key(|t| t.blocked_seq);
    let (addr2, shared2) = key2.wait_fields();
    let mut moved = 0;
    for t in waiters.into_iter().take(m as usize) {
        if let ThreadState::Blocked(Wait::Futex { addr, shared, .. }) = &mut t.state {
            *addr = addr2;
            *shared = shared2;
            moved += 1;
        }
    }
    woken + moved
}

/// Every thread of every live process.
fn all_threads_mut(k: &mut Kernel) -> impl Iterator<Item = &mut Thread> {
    k.threads
        .values_mut()
        .chain(k.others.values_mut().flat_map(|s| s.threads.values_mut()))
}

fn all_threads(k: &Kernel) -> impl Iterator<Item = &Thread> {
    k.threads
        .values()
        .chain(k.others.values().flat_map(|s| s.threads.values()))
}

/// After a syscall that may have changed pipes, files, children or the
/// control channel: threads waiting to retry get another go.
pub fn wake_retriers(k: &mut Kernel) {
    for t in all_threads_mut(k) {
        if matches!(t.state, ThreadState::Blocked(Wait::Retry { .. })) {
            t.state = ThreadState::Runnable(Resume::Retry);
        }
    }
}

/// The host put a request in the control channel: unpark its reader.
pub fn unpark(k: &mut Kernel) {
    for t in all_threads_mut(k) {
        if matches!(t.state, ThreadState::Blocked(Wait::Park)) {
            t.state = ThreadState::Runnable(Resume::Retry);
        }
    }
}

/// Whether some thread is parked on the control channel.
pub fn parked(k: &Kernel) -> bool {
    all_threads(k).any(|t| matches!(t.state, ThreadState::Blocked(Wait::Park)))
}

/// Wake every thread whose wait has timed out by `now`.
pub fn expire(k: &mut Kernel, now: Instant) {
    crate::timers::fire(k);
    for t in all_threads_mut(k) {
        let ThreadState::Blocked(w) = &t.state else {
            continue;
        };
        if w.deadline().is_none_or(|d| d > now) {
            continue;
        }
        t.state = match w {
            Wait::Futex { .. } => {
                ThreadState::Runnable(Resume::Complete(Errno::ETIMEDOUT.as_return()))
            }
            Wait::Sleep { .. } => ThreadState::Runnable(Resume::Complete(0)),
            Wait::Retry { .. } => {
                t.timed_out = true;
                ThreadState::Runnable(Resume::Retry)
            }
            Wait::Park | Wait::Vfork => continue,
        };
    }
}

/// The earliest deadline of any blocked thread.
pub fn earliest_deadline(k: &Kernel) -> Option<Instant> {
    all_threads(k)
        .filter_map(|t| match &t.state {
            ThreadState::Blocked(w) => w.deadline(),
            _ => None,
        })
        .chain(crate::timers::next_wake(k))
        .min()
}

/// The next runnable thread, as (pid, tid): the current process's threads
/// after the current one, then the other processes, round robin. A
/// process suspended by vfork does not run.
pub fn pick_next(k: &Kernel) -> Option<(u32, u32)> {
    let runnable = |t: &&Thread| t.is_runnable();
    let cur_pid = k.proc.pid;
    let here_ok = k.proc.vfork_child.is_none() && k.proc.dead.is_none();
    if here_ok {
        if let Some(t) = k
            .threads
            .range(k.current + 1..)
            .map(|(_, t)| t)
            .find(runnable)
        {
            return Some((cur_pid, t.tid));
        }
    }
    let others = k
        .others
        .range(cur_pid + 1..)
        .chain(k.others.range(..cur_pid));
    for (pid, slot) in others {
        if slot.proc.vfork_child.is_some() {
            continue;
        }
        if let Some(t) = slot.threads.values().find(runnable) {
            return Some((*pid, t.tid));
        }
    }
    if here_ok {
        if let Some(t) = k.threads.range(..=k.current).map(|(_, t)| t).find(runnable) {
            return Some((cur_pid, t.tid));
        }
    }
    None
}

/// Number of runnable threads (in processes that may run).
pub fn runnable(k: &Kernel) -> usize {
    let here = if k.proc.vfork_child.is_none() {
        k.threads.values().filter(|t| t.is_runnable()).count()
    } else {
        0
    };
    here + k
        .others
        .values()
        .filter(|s| s.proc.vfork_child.is_none())
        .flat_map(|s| s.threads.values())
        .filter(|t| t.is_runnable())
        .count()
}

/// Make `sig` pending for thread `tid`, or for the process (None). A
/// thread blocked in a syscall with the signal unmasked is interrupted
/// (`Resume::Interrupted`: the run loop decides between EINTR and a
/// restart); a process-directed signal goes to the current thread when it
/// is running and does not block it, else to one that does not block it.
pub fn post_signal(k: &mut Kernel, sig: u32, tid: Option<u32>) {
    let bit = 1u64 << (sig - 1);
    let wants = |t: &Thread| t.sigmask & bit == 0;
    let blocked = |t: &Thread| matches!(t.state, ThreadState::Blocked(ref w) if w.interruptible());
    let target = match tid {
        Some(t) => {
            if let Some(th) = k.threads.get_mut(&t) {
                th.pending |= bit;
            }
            Some(t)
        }
        None => {
            k.proc.pending |= bit;
            match k.threads.get(&k.current) {
                Some(t) if wants(t) && !blocked(t) => None,
                _ => k
                    .threads
                    .values()
                    .find(|t| wants(t) && blocked(t))
                    .map(|t| t.tid),
            }
        }
    };
    if k.proc.ignores_signal(sig) {
        // Discarded at delivery; a blocked call goes on undisturbed.
        return;
    }
    if let Some(t) = target.and_then(|t| k.threads.get_mut(&t)) {
        if wants(t) && blocked(t) {
            t.state = ThreadState::Runnable(Resume::Interrupted);
        }
    }
}
