//! One process-wide thread that kicks vCPU threads out of `KVM_RUN`: at a
//! sandbox's wall-clock deadline (and again every few milliseconds until
//! its run loop notices), and at the end of a thread's timeslice when
//! several guest threads share the vCPU.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use zeroboot_vmm::{ExitFlag, Kicker};

const REKICK: Duration = Duration::from_millis(5);

struct Armed {
    hard: Option<Instant>,
    slice: Option<Instant>,
    kicker: Kicker,
    /// Raised before each kick, so that a kick landing while the thread is
    /// outside `KVM_RUN` still stops its next one (`zeroboot_vmm::kick`).
    exit: ExitFlag,
}

impl Armed {
    fn next(&self) -> Option<Instant> {
        match (self.hard, self.slice) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Default)]
struct State {
    armed: BTreeMap<u64, Armed>,
    next_id: u64,
}

struct Watchdog {
    state: Mutex<State>,
    wake: Condvar,
}

/// Start the watchdog thread now (it otherwise starts with the first
/// sandbox), e.g. before a thread's seccomp filter forbids starting one.
pub fn start() {
    watchdog();
}

fn watchdog() -> &'static Arc<Watchdog> {
    static W: OnceLock<Arc<Watchdog>> = OnceLock::new();
    W.get_or_init(|| {
        let w = Arc::new(Watchdog {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let t = w.clone();
        let spawned = std::thread::Builder::new()
            .name("zeroboot-watchdog".into())
            .spawn(move || t.run());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the watchdog thread: timeouts are not enforced");
        }
        w
    })
}

impl Watchdog {
    fn run(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for a in st.armed.values_mut() {
                if a.next().is_some_and(|t| t <= now) {
                    // The thread is alive: it unregisters under this lock
                    // before it can exit.
                    a.exit.raise();
                    a.kicker.kick();
                    if a.slice.is_some_and(|s| s <= now) {
                        a.slice = None;
                    }
                    if a.hard.is_some_and(|h| h <= now) {
                        a.hard = Some(now + REKICK);
                    }
                }
                if let Some(t) = a.next() {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
            st = match next {
                Some(n) => match self
                    .wake
                    .wait_timeout(st, n.saturating_duration_since(Instant::now()))
                {
                    Ok((g, _)) => g,
                    Err(_) => return,
                },
                None => match self.wake.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                },
            };
        }
    }
}

/// While alive, the calling thread is kicked at its deadline and at the
/// end of each timeslice it sets.
pub struct Guard {
    id: u64,
}

/// Register the calling thread, which runs the vCPU of `exit`, with an
/// optional hard deadline.
pub fn arm(deadline: Option<Instant>, exit: ExitFlag) -> Guard {
    let w = watchdog();
    let kicker = Kicker::current();
    let id = match w.state.lock() {
        Ok(mut st) => {
            st.next_id += 1;
            let id = st.next_id;
            st.armed.insert(
                id,
                Armed {
                    hard: deadline,
                    slice: None,
                    kicker,
                    exit,
                },
            );
            id
        }
        Err(_) => 0,
    };
    w.wake.notify_one();
    Guard { id }
}

impl Guard {
    /// Kick once at `at` (None: no timeslice).
    pub fn set_slice(&self, at: Option<Instant>) {
        let w = watchdog();
        if let Ok(mut st) = w.state.lock() {
            if let Some(a) = st.armed.get_mut(&self.id) {
                a.slice = at;
            }
        }
        if at.is_some() {
            w.wake.notify_one();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut st) = watchdog().state.lock() {
            st.armed.remove(&self.id);
        }
    }
}
