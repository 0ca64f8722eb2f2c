//! One process-wide thread that enforces every sandbox's wall-clock
//! deadline by kicking its vCPU thread out of `KVM_RUN` (and again every
//! few milliseconds, in case a kick lands outside `KVM_RUN`), until the
//! sandbox's run loop notices and unregisters.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use zeroboot_vmm::Kicker;

const REKICK: Duration = Duration::from_millis(5);

struct Armed {
    deadline: Instant,
    kicker: Kicker,
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
                if a.deadline <= now {
                    // The thread is alive: it unregisters under this lock
                    // before it can exit.
                    a.kicker.kick();
                    a.deadline = now + REKICK;
                }
                next = Some(next.map_or(a.deadline, |n: Instant| n.min(a.deadline)));
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

/// While alive, the calling thread is kicked once `deadline` passes.
pub struct Guard {
    id: u64,
}

/// Arm a deadline for the calling thread.
pub fn arm(deadline: Instant) -> Guard {
    let w = watchdog();
    let kicker = Kicker::current();
    let id = match w.state.lock() {
        Ok(mut st) => {
            st.next_id += 1;
            let id = st.next_id;
            st.armed.insert(id, Armed { deadline, kicker });
            id
        }
        Err(_) => 0,
    };
    w.wake.notify_one();
    Guard { id }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut st) = watchdog().state.lock() {
            st.armed.remove(&self.id);
        }
    }
}
