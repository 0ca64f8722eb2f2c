//! Teardown of finished VMs off the request path. Closing a VM's and its
//! vCPU's fds (KVM destroys the VM, its memory slots and shadow pages) and
//! unmapping a fork's copy-on-write memory cost ~1.7 ms here, paid by
//! whoever dropped the last handle: a worker killing a sandbox, a request
//! discarding a one-shot fork. With a reaper installed, those host
//! resources go to a thread of its own instead.
//!
//! Only what is no longer reachable is handed over: a `Deferred` value is
//! queued when its owner drops it, so no `Vcpu` exists any more to run
//! the VM (`Vcpu::drop` detaches its kick flag first, inline), and guest
//! memory is only unmapped later, never reused. Nothing the guest or a
//! client could see waits for the reaper: the sandbox's kernel state (its
//! host sockets, terminals, accounting) is dropped by its owner, inline.
//!
//! The queue is bounded: when the reaper lags, the value is dropped inline
//! as before, so a burst of kills cannot pile up fds or memory.
//!
//! A value is torn down no sooner than `GRACE` after it was queued: an
//! unmap holds the process's mmap lock for writing, and a client's next
//! call after a kill (often a fork or a create, which map memory) would
//! otherwise wait for it.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Values a reaper holds queued at most, by default (a VM's fds and
/// mappings each: far below the fd limit).
pub const DEFAULT_CAPACITY: usize = 256;

/// What runs first on the reaper's thread (e.g. its seccomp filter).
pub type Setup = crate::pool::Setup;

/// How long a queued value waits before it is torn down (see the module's
/// documentation; `pool::REFILL_GRACE` has the measurement).
pub const GRACE: Duration = Duration::from_millis(5);

/// A value to drop, and when it was queued.
type Item = (Instant, Box<dyn Send>);

/// Counters of a reaper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaperStats {
    /// Values handed to the thread.
    pub queued: u64,
    /// Values the thread dropped.
    pub reaped: u64,
    /// Values dropped inline because the queue was full.
    pub inline: u64,
}

/// See the module's documentation.
pub struct Reaper {
    tx: SyncSender<Item>,
    queued: AtomicU64,
    reaped: AtomicU64,
    inline: AtomicU64,
    /// Wakes `wait_idle` after each drop.
    idle: (Mutex<()>, Condvar),
}

impl Reaper {
    /// A reaper with a queue of `capacity` and its thread, which runs
    /// `setup` first; its error is returned (no reaper then). Start it
    /// from a thread that may start threads (not one under the vCPU
    /// seccomp filter).
    pub fn start(capacity: usize, setup: Option<Setup>) -> std::io::Result<&'static Reaper> {
        let (tx, rx) = sync_channel::<Item>(capacity);
        // One per process for its lifetime: leaked so that the thread can
        // hold it without a reference count.
        let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
            tx,
            queued: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
            inline: AtomicU64::new(0),
            idle: (Mutex::new(()), Condvar::new()),
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            // 15 characters at most: what /proc/.../comm shows.
            .name("zeroboot-reaper".into())
            .spawn(move || {
                let r = setup.map_or(Ok(()), |f| f());
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    reaper.drain(rx);
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(reaper),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other("the reaper's thread ended at start")),
        }
    }

    fn drain(&self, rx: Receiver<Item>) {
        while let Ok((at, item)) = rx.recv() {
            if let Some(wait) = GRACE.checked_sub(at.elapsed()) {
                std::thread::sleep(wait);
            }
            drop(item);
            self.reaped.fetch_add(1, Ordering::SeqCst);
            let _g = self.idle.0.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.1.notify_all();
        }
    }

    /// Drop `value` on the reaper's thread, or here if its queue is full.
    pub fn reap<T: Send + 'static>(&self, value: T) {
        match self.tx.try_send((Instant::now(), Box::new(value))) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(TrySendError::Full(v)) | Err(TrySendError::Disconnected(v)) => {
                self.inline.fetch_add(1, Ordering::SeqCst);
                drop(v);
            }
        }
    }

    pub fn stats(&self) -> ReaperStats {
        ReaperStats {
            queued: self.queued.load(Ordering::SeqCst),
            reaped: self.reaped.load(Ordering::SeqCst),
            inline: self.inline.load(Ordering::SeqCst),
        }
    }

    /// Wait until every value queued so far is dropped (true) or `timeout`
    /// passes.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut g = self.idle.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let s = self.stats();
            if s.reaped >= s.queued {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Bounded: a notify between the look and the wait is not lost
            // for long.
            g = self
                .idle
                .1
                .wait_timeout(g, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

static GLOBAL: OnceLock<&'static Reaper> = OnceLock::new();

/// Start the process's reaper (the one `Deferred` values go to), with a
/// queue of `capacity`. Called again, it returns the running one.
pub fn install(capacity: usize, setup: Option<Setup>) -> std::io::Result<&'static Reaper> {
    if let Some(r) = GLOBAL.get() {
        return Ok(r);
    }
    let r = Reaper::start(capacity, setup)?;
    // A concurrent install may have won: its reaper is used, this one's
    // thread idles (its queue stays empty).
    Ok(GLOBAL.get_or_init(|| r))
}

/// The process's reaper, once installed.
pub fn global() -> Option<&'static Reaper> {
    GLOBAL.get().copied()
}

/// A value whose drop is handed to the process's reaper (dropped inline
/// when none is installed or its queue is full). For host resources of a
/// VM that cost time to free and that nothing can reach once their owner
/// dropped them.
pub struct Deferred<T: Send + 'static>(ManuallyDrop<T>);

impl<T: Send + 'static> Deferred<T> {
    pub fn new(value: T) -> Deferred<T> {
        Deferred(ManuallyDrop::new(value))
    }
}

impl<T: Send + 'static> Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + 'static> DerefMut for Deferred<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Send + 'static> Drop for Deferred<T> {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again (`self` is being
        // dropped; ManuallyDrop does not drop it a second time).
        let value = unsafe { ManuallyDrop::take(&mut self.0) };
        match global() {
            Some(r) => r.reap(value),
            None => drop(value),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::Sender;
    use std::sync::Arc;

    /// Counts its drops and those that ran on the thread that made it;
    /// with a gate, it says it started dropping and waits for the gate.
    struct Probe {
        drops: Arc<AtomicUsize>,
        on_caller: Arc<AtomicUsize>,
        caller: std::thread::ThreadId,
        gate: Option<(Sender<()>, Arc<Mutex<()>>)>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some((started, gate)) = &self.gate {
                started.send(()).unwrap();
                drop(gate.lock().unwrap());
            }
            if std::thread::current().id() == self.caller {
                self.on_caller.fetch_add(1, Ordering::SeqCst);
            }
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_are_dropped_on_the_thread_and_a_full_queue_drops_inline() {
        let r = Reaper::start(1, None).unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let on_caller = Arc::new(AtomicUsize::new(0));
        let probe = |gate| Probe {
            drops: drops.clone(),
            on_caller: on_caller.clone(),
            caller: std::thread::current().id(),
            gate,
        };
        r.reap(probe(None));
        assert!(r.wait_idle(Duration::from_secs(5)));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(on_caller.load(Ordering::SeqCst), 0);

        // Stall the thread in a drop; one more fills the queue (1); the
        // next is dropped here, at once.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        r.reap(probe(Some((started_tx, gate.clone()))));
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        r.reap(probe(None));
        assert_eq!(r.stats().inline, 0);
        r.reap(probe(None));
        assert_eq!(r.stats().inline, 1);
        assert_eq!(on_caller.load(Ordering::SeqCst), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(held);
        assert!(r.wait_idle(Duration::from_secs(5)));
        assert_eq!(drops.load(Ordering::SeqCst), 4);
        assert_eq!(on_caller.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.stats(),
            ReaperStats {
                queued: 3,
                reaped: 3,
                inline: 1
            }
        );
    }
}
