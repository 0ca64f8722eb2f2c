//! A pool of VMs made ahead of need (`Blank`: the VM, its manual
//! dirty-log protection, its vCPU with its static set-up), so that a fork
//! of a template or of a live sandbox does not wait for `KVM_CREATE_VM`
//! on the request path. That call is the flat cost of a fork here, and it
//! grows with the mappings the process holds (KVM's MMU notifier takes
//! every mapping's lock: `mm_take_all_locks`).
//!
//! A thread of the pool's own fills it, one VM at a time, up to its
//! target; a take wakes it. The VMs carry no guest memory (the fork adds
//! its own slot over its own copy-on-write mapping), so one pool serves
//! every template. A pooled VM is only ever fresh: never one a sandbox
//! ran in. Under host memory pressure the pool is emptied and not
//! refilled until memory is back (`crate::pressure`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::vm::{Blank, Host};

/// VMs a server keeps ready by default.
pub const DEFAULT_SIZE: usize = 64;

/// How often an idle filler looks at the host's memory again.
const RECHECK: Duration = Duration::from_secs(1);

/// What runs first on the filler thread (e.g. its seccomp filter).
pub type Setup = fn() -> Result<(), String>;

/// Counters of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// VMs ready now.
    pub ready: usize,
    /// VMs it keeps ready when memory allows.
    pub target: usize,
    /// Takes served from the pool.
    pub hits: u64,
    /// Takes that found it empty (the caller made its VM itself).
    pub misses: u64,
    /// VMs the filler made.
    pub made: u64,
    /// VMs dropped unused (memory pressure, a lower target).
    pub dropped: u64,
}

struct State {
    ready: Vec<Blank>,
    target: usize,
}

/// See the module's documentation.
pub struct VmPool {
    state: Mutex<State>,
    /// Wakes the filler (a take, a new target) and `wait_full`.
    changed: Condvar,
    /// Whether host memory is short.
    pressure: fn() -> bool,
    hits: AtomicU64,
    misses: AtomicU64,
    made: AtomicU64,
    dropped: AtomicU64,
}

impl VmPool {
    /// A pool keeping `target` VMs ready while `pressure` says memory is
    /// not short, and its filler thread, which runs `setup` first; its
    /// error is returned (no pool then). The thread ends when the pool is
    /// dropped. Start it from a thread that may start threads (not one
    /// under the vCPU seccomp filter).
    pub fn start(
        target: usize,
        pressure: fn() -> bool,
        setup: Option<Setup>,
    ) -> std::io::Result<Arc<VmPool>> {
        let pool = Arc::new(VmPool {
            state: Mutex::new(State {
                ready: Vec::new(),
                target,
            }),
            changed: Condvar::new(),
            pressure,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            made: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&pool);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            // 15 characters: what /proc/.../comm shows.
            .name("zeroboot-vmpool".into())
            .spawn(move || {
                let r = setup.map_or(Ok(()), |f| f());
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    fill(weak);
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other("the VM pool's thread ended at start")),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready VM, if the pool holds one; the filler then makes another.
    pub fn take(&self) -> Option<Blank> {
        let b = self.lock().ready.pop();
        match b {
            Some(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.changed.notify_all();
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        b
    }

    /// Keep `n` VMs ready from now on (0: none; those beyond are dropped
    /// by the filler).
    pub fn set_target(&self, n: usize) {
        self.lock().target = n;
        self.changed.notify_all();
    }

    pub fn stats(&self) -> PoolStats {
        let (ready, target) = {
            let s = self.lock();
            (s.ready.len(), s.target)
        };
        PoolStats {
            ready,
            target,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            made: self.made.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Wait until the pool holds its target (true) or `timeout` passes.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.ready.len() >= s.target)
    }

    /// Wait until the pool holds exactly `n` VMs (true) or `timeout`
    /// passes.
    pub fn wait_len(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.ready.len() == n)
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if done(&s) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // The filler notifies after each change; the bound keeps a
            // missed one from stalling the wait.
            s = self
                .changed
                .wait_timeout(s, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The filler: make VMs up to the target, one at a time, without holding
/// the lock; drop them all while memory is short.
fn fill(weak: Weak<VmPool>) {
    let host = match Host::get() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "no KVM: the VM pool stays empty");
            return;
        }
    };
    let mut failing = false;
    loop {
        let Some(pool) = weak.upgrade() else { return };
        let short = (pool.pressure)();
        let mut s = pool.lock();
        let want = if short { 0 } else { s.target };
        if s.ready.len() > want {
            let extra = s.ready.split_off(want);
            drop(s);
            pool.dropped
                .fetch_add(extra.len() as u64, Ordering::Relaxed);
            if short {
                tracing::info!(
                    vms = extra.len(),
                    "host memory is short: pooled VMs dropped"
                );
            }
            drop(extra);
            pool.changed.notify_all();
            continue;
        }
        if s.ready.len() == want || failing {
            failing = false;
            // Until a take or a new target, or the next look at memory.
            drop(
                pool.changed
                    .wait_timeout(s, RECHECK)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            continue;
        }
        drop(s);
        match Blank::create(host) {
            Ok(b) => {
                pool.made.fetch_add(1, Ordering::Relaxed);
                let mut s = pool.lock();
                if s.ready.len() < s.target {
                    s.ready.push(b);
                } else {
                    drop(s);
                    pool.dropped.fetch_add(1, Ordering::Relaxed);
                    drop(b);
                }
                pool.changed.notify_all();
            }
            Err(e) => {
                // E.g. the host's VM limit: try again after a pause.
                tracing::warn!(error = %e, "cannot make a VM ahead of need");
                failing = true;
            }
        }
    }
}

static GLOBAL: OnceLock<Arc<VmPool>> = OnceLock::new();

/// Start the process's pool (the one `Vm::with_vcpu` takes from) with
/// `target` VMs, its memory pressure judged by `crate::pressure`. Called
/// again, it only sets the target.
pub fn install(target: usize, setup: Option<Setup>) -> std::io::Result<&'static VmPool> {
    if let Some(p) = GLOBAL.get() {
        p.set_target(target);
        return Ok(p);
    }
    let pool = VmPool::start(target, crate::pressure::memory_tight, setup)?;
    // A concurrent install may have won: its pool is kept, this one ends.
    let p = GLOBAL.get_or_init(|| pool);
    p.set_target(target);
    Ok(p)
}

/// The process's pool, once installed.
pub fn global() -> Option<&'static VmPool> {
    GLOBAL.get().map(|p| &**p)
}
