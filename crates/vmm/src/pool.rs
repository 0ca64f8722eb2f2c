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
//!
//! Registering a memory slot waits for KVM's SRCU grace period (0.1-0.6
//! ms on our nested hosts, more when the other CPUs are idle), so the
//! pool also keeps a few VMs made for one memory shape (`take_for`):
//! host address space held for the guest memory and the first slot
//! registered over it, which the fork maps its memory into
//! (`Vm::with_memory`). The shape is the last one asked for that none
//! served (the forks of live sandboxes of one template share it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::vm::{Blank, Host, Shape};

/// VMs a server keeps ready by default.
pub const DEFAULT_SIZE: usize = 64;

/// Most VMs kept made for a shape (each holds its first slot's KVM
/// metadata, ~2 KiB per MiB registered).
pub const MAX_PLACED: usize = 16;

/// How long after a take the filler waits before it makes the next VM,
/// unless the pool runs low: `KVM_CREATE_VM` holds the process's mmap
/// lock for writing (`mm_take_all_locks`), so a VM made right after a
/// take stalls the fork that took it (mapping its memory waits for the
/// lock). `bench fork-live`, one copy per call, with the reaper's grace
/// too: p50 1.18-1.28 ms without, 0.39-0.51 ms with 5 ms.
pub const REFILL_GRACE: Duration = Duration::from_millis(5);

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
    /// VMs dropped unused (memory pressure, a lower target, a new shape).
    pub dropped: u64,
    /// VMs made for a shape, ready now (`take_for`).
    pub placed: usize,
    /// Takes for a shape served by one.
    pub placed_hits: u64,
    /// Takes for a shape that found none.
    pub placed_misses: u64,
}

struct State {
    ready: Vec<Blank>,
    target: usize,
    /// VMs made for `shape`.
    placed: Vec<Blank>,
    /// The shape to make VMs for: the last asked for that none served.
    shape: Option<Shape>,
    /// When a VM was last taken (see `REFILL_GRACE`).
    last_take: Option<Instant>,
}

impl State {
    /// VMs to keep made for `shape`.
    fn placed_target(&self) -> usize {
        if self.shape.is_some() {
            self.target.min(MAX_PLACED)
        } else {
            0
        }
    }
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
    placed_hits: AtomicU64,
    placed_misses: AtomicU64,
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
                placed: Vec::new(),
                shape: None,
                last_take: None,
            }),
            changed: Condvar::new(),
            pressure,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            made: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            placed_hits: AtomicU64::new(0),
            placed_misses: AtomicU64::new(0),
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
        let b = {
            let mut s = self.lock();
            s.last_take = Some(Instant::now());
            s.ready.pop()
        };
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

    /// A VM made for a shape that serves `want` (`Shape::serves`), if the
    /// pool holds one; the filler then makes another. If none does, the
    /// filler makes VMs for `want` from now on (those of another shape are
    /// dropped).
    pub fn take_for(&self, want: Shape) -> Option<Blank> {
        let mut s = self.lock();
        s.last_take = Some(Instant::now());
        let at = s
            .placed
            .iter()
            .position(|b| b.shape().is_some_and(|h| h.serves(&want)));
        let b = at.map(|i| s.placed.swap_remove(i));
        match b {
            Some(_) => {
                self.placed_hits.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.placed_misses.fetch_add(1, Ordering::Relaxed);
                if !s.shape.is_some_and(|h| h.serves(&want)) {
                    s.shape = Some(want);
                }
            }
        }
        drop(s);
        self.changed.notify_all();
        b
    }

    /// Keep `n` VMs ready from now on (0: none; those beyond are dropped
    /// by the filler).
    pub fn set_target(&self, n: usize) {
        self.lock().target = n;
        self.changed.notify_all();
    }

    pub fn stats(&self) -> PoolStats {
        let (ready, target, placed) = {
            let s = self.lock();
            (s.ready.len(), s.target, s.placed.len())
        };
        PoolStats {
            ready,
            target,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            made: self.made.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            placed,
            placed_hits: self.placed_hits.load(Ordering::Relaxed),
            placed_misses: self.placed_misses.load(Ordering::Relaxed),
        }
    }

    /// Wait until the pool holds its target (true) or `timeout` passes.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.ready.len() >= s.target)
    }

    /// Wait until the pool holds `n` VMs made for its shape (true) or
    /// `timeout` passes.
    pub fn wait_placed(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.placed.len() == n)
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

/// The filler: make VMs up to the targets (those for the shape first:
/// they serve forks on a request's path), one at a time, without holding
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
        let want_placed = if short { 0 } else { s.placed_target() };
        let shape = s.shape;
        // Too many, or made for a shape no longer asked for.
        let n = want.min(s.ready.len());
        let mut extra = s.ready.split_off(n);
        let (keep, stale): (Vec<Blank>, Vec<Blank>) = std::mem::take(&mut s.placed)
            .into_iter()
            .partition(|b| b.shape() == shape);
        s.placed = keep;
        extra.extend(stale);
        let n = want_placed.min(s.placed.len());
        extra.extend(s.placed.split_off(n));
        if !extra.is_empty() {
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
        let make_for = match shape {
            Some(h) if s.placed.len() < want_placed => Some(h),
            _ => None,
        };
        if (make_for.is_none() && s.ready.len() == want) || failing {
            failing = false;
            // Until a take or a new target, or the next look at memory.
            drop(
                pool.changed
                    .wait_timeout(s, RECHECK)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            continue;
        }
        // Not yet while a fork is likely still mapping its memory, unless
        // the pool runs low (a burst of forks).
        let low = (shape.is_some() && s.placed.is_empty()) || s.ready.len() * 2 < want;
        let since = s.last_take.map(|t| t.elapsed());
        if let Some(wait) = since
            .filter(|_| !low)
            .and_then(|d| REFILL_GRACE.checked_sub(d))
            .filter(|w| !w.is_zero())
        {
            drop(
                pool.changed
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            continue;
        }
        drop(s);
        let made = match make_for {
            Some(h) => Blank::create_for(host, h),
            None => Blank::create(host),
        };
        match made {
            Ok(b) => {
                pool.made.fetch_add(1, Ordering::Relaxed);
                let mut s = pool.lock();
                let fits = match b.shape() {
                    Some(h) => s.shape == Some(h) && s.placed.len() < s.placed_target(),
                    None => s.ready.len() < s.target,
                };
                if fits {
                    match b.shape() {
                        Some(_) => s.placed.push(b),
                        None => s.ready.push(b),
                    }
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
