//! Per-process interval timers (setitimer/alarm) and POSIX timers
//! (timer_create): their state, and firing them as signals. Times are
//! nanoseconds on the timer's clock (the guest's clocks, so a fork or a
//! restored snapshot keeps the time left). The state is part of
//! `Process`, so it is cloned, serialized and reset with the kernel; a
//! child created by fork starts with none (as on Linux).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroboot_abi::flags::{CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID};
use zeroboot_abi::signal::SIGALRM;

use crate::kernel::Kernel;

/// SIGVTALRM and SIGPROF (ITIMER_VIRTUAL and ITIMER_PROF).
pub const SIGVTALRM: u32 = 26;
pub const SIGPROF: u32 = 27;

/// Most POSIX timers one process may hold (Linux bounds them by
/// RLIMIT_SIGPENDING; EAGAIN beyond).
pub const MAX_POSIX_TIMERS: usize = 1024;

/// What an expiry does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notify {
    /// SIGEV_NONE: nothing (the program polls timer_gettime).
    #[default]
    None,
    /// SIGEV_SIGNAL: a signal to the process.
    Signal(u32),
    /// SIGEV_THREAD_ID: a signal to one thread.
    Thread(u32, u32),
}

/// One timer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The clock it counts (CLOCK_* id).
    pub clock: u64,
    /// Next expiry in ns on `clock`; `None`: disarmed.
    pub next: Option<u64>,
    /// Reload value (0: one shot).
    pub interval: u64,
    pub notify: Notify,
    /// Overruns of the signal delivered before the latest one.
    pub overrun: u64,
    /// Overruns of the latest signal: expiries beyond its first, while it
    /// was pending (Linux counts them until delivery).
    pub queued_overrun: u64,
}

impl Timer {
    /// Arm (value > 0) or disarm (value 0) at absolute `at`.
    pub fn arm(&mut self, at: Option<u64>, interval: u64) {
        self.next = at;
        self.interval = if at.is_some() { interval } else { 0 };
        self.overrun = 0;
        self.queued_overrun = 0;
    }

    /// Time left to the next expiry and the interval, in ns.
    pub fn setting(&self, now: u64) -> (u64, u64) {
        let left = self.next.map(|n| n.saturating_sub(now).max(1)).unwrap_or(0);
        (left, self.interval)
    }

    /// Expiries due by `now` (0: none), re-arming a periodic timer.
    fn due(&mut self, now: u64) -> u64 {
        let Some(next) = self.next.filter(|&n| n <= now) else {
            return 0;
        };
        match (now - next).checked_div(self.interval) {
            Some(periods) => {
                let n = 1 + periods;
                self.next = next.checked_add(n.saturating_mul(self.interval));
                n
            }
            None => {
                self.next = None;
                1
            }
        }
    }
}

/// The timers of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// ITIMER_REAL (also alarm), ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: [Timer; 3],
    /// POSIX timers by id.
    pub posix: BTreeMap<i32, Timer>,
}

impl Default for Timers {
    fn default() -> Timers {
        let it = |clock, sig| Timer {
            clock,
            notify: Notify::Signal(sig),
            ..Default::default()
        };
        Timers {
            itimers: [
                it(CLOCK_MONOTONIC, SIGALRM),
                it(CLOCK_PROCESS_CPUTIME_ID, SIGVTALRM),
                it(CLOCK_PROCESS_CPUTIME_ID, SIGPROF),
            ],
            posix: BTreeMap::new(),
        }
    }
}

impl Timers {
    fn all(&self) -> impl Iterator<Item = &Timer> {
        self.itimers.iter().chain(self.posix.values())
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Timer> {
        self.itimers.iter_mut().chain(self.posix.values_mut())
    }

    /// Whether any timer is armed.
    pub fn armed(&self) -> bool {
        self.all().any(|t| t.next.is_some())
    }
}

/// `clock`'s time now in ns (CPU clocks: the sandbox's CPU time).
pub fn clock_now(k: &Kernel, clock: u64) -> u64 {
    match clock {
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => k.cpu_ns(),
        c => crate::syscalls::kernel_clock_ns(k, c).unwrap_or(0),
    }
}

/// Fire every due timer of every process: their signals become pending
/// (and interrupt a blocked thread, as any signal does).
pub fn fire(k: &mut Kernel) {
    let cheap = !k.proc.timers.armed() && k.others.values().all(|s| !s.proc.timers.armed());
    if cheap {
        return;
    }
    // One reading per clock kind for the whole pass.
    let (mono, cpu) = (clock_now(k, CLOCK_MONOTONIC), k.cpu_ns());
    let at = |k: &Kernel, clock: u64| match clock {
        CLOCK_MONOTONIC => mono,
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => cpu,
        c => clock_now(k, c),
    };
    let pids: Vec<u32> = std::iter::once(k.proc.pid)
        .chain(k.others.keys().copied())
        .collect();
    for pid in pids {
        let timers = if pid == k.proc.pid {
            if k.proc.dead.is_some() {
                continue;
            }
            &k.proc.timers
        } else {
            match k.others.get(&pid) {
                Some(s) => &s.proc.timers,
                None => continue,
            }
        };
        if !timers.armed() {
            continue;
        }
        let clocks: Vec<u64> = timers.all().map(|t| t.clock).collect();
        let nows: Vec<u64> = clocks.iter().map(|&c| at(k, c)).collect();
        let mut fired: Vec<(Notify, usize, u64)> = Vec::new();
        {
            let timers = if pid == k.proc.pid {
                &mut k.proc.timers
            } else {
                match k.others.get_mut(&pid) {
                    Some(s) => &mut s.proc.timers,
                    None => continue,
                }
            };
            for (i, (t, now)) in timers.all_mut().zip(nows).enumerate() {
                let n = t.due(now);
                if n > 0 {
                    fired.push((t.notify, i, n));
                }
            }
        }
        for (notify, i, n) in fired {
            let target = notify.target();
            let pending =
                target.is_some_and(|(sig, tid)| crate::procs::signal_pending(k, pid, tid, sig));
            if let Some((sig, tid)) = target.filter(|_| !pending) {
                crate::procs::post_signal_to(k, pid, tid, sig);
                // A thread in sigwaitinfo looks again.
                crate::sched::wake_retriers(k);
            }
            if let Some(t) = timer_mut(k, pid, i) {
                if pending {
                    // The queued signal absorbs these expiries.
                    t.queued_overrun = t.queued_overrun.saturating_add(n);
                } else {
                    // The previous signal was delivered: a new one starts.
                    t.overrun = t.queued_overrun;
                    t.queued_overrun = n - 1;
                }
            }
        }
    }
}

impl Notify {
    /// The signal and thread it goes to, if any.
    pub fn target(self) -> Option<(u32, Option<u32>)> {
        match self {
            Notify::None => None,
            Notify::Signal(s) => Some((s, None)),
            Notify::Thread(s, t) => Some((s, Some(t))),
        }
    }
}

/// timer_getoverrun: the overruns of the timer's last delivered signal.
pub fn overrun(k: &Kernel, t: &Timer) -> u64 {
    let pending = t
        .notify
        .target()
        .is_some_and(|(sig, tid)| crate::procs::signal_pending(k, k.proc.pid, tid, sig));
    if pending {
        t.overrun
    } else {
        t.queued_overrun
    }
}

fn timer_mut(k: &mut Kernel, pid: u32, i: usize) -> Option<&mut Timer> {
    let timers = if pid == k.proc.pid {
        &mut k.proc.timers
    } else {
        &mut k.others.get_mut(&pid)?.proc.timers
    };
    timers.all_mut().nth(i)
}

/// When the next timer of any process is due, as an instant (for a CPU
/// clock, the earliest it can be: the CPU time left as wall time).
pub fn next_wake(k: &Kernel) -> Option<Instant> {
    let procs = std::iter::once(&k.proc)
        .filter(|p| p.dead.is_none())
        .chain(k.others.values().map(|s| &s.proc));
    // CPU time only passes while something runs.
    let running = crate::sched::runnable(k) > 0;
    let mut best: Option<u64> = None;
    for p in procs {
        for t in p.timers.all() {
            let cpu = matches!(t.clock, CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID);
            if cpu && !running {
                continue;
            }
            if let Some(next) = t.next {
                let left = next.saturating_sub(clock_now(k, t.clock));
                best = Some(best.map_or(left, |b| b.min(left)));
            }
        }
    }
    best.map(|ns| Instant::now() + Duration::from_nanos(ns))
}
