//! A bounded pool of vCPU threads with a bounded queue in front: at most
//! `workers` executions run at once, at most `queue` wait, and beyond that
//! requests are refused (503) instead of piling up.
//!
//! The vCPU threads are the pool's own, not tokio's blocking threads: each
//! runs only executions, under the seccomp filter its setup installs
//! (`zeroboot_vmm::seccomp`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};
use zeroboot_engine::{ExecRequest, ExecResult, Template};

type Job = (Arc<Template>, ExecRequest, oneshot::Sender<ExecResult>);

pub struct Pool {
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    max_waiting: usize,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// Run jobs until the pool is dropped.
fn worker(jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((template, req, reply)) = job else {
            return;
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| template.exec(&req)))
            .unwrap_or_else(|_| ExecResult {
                exit_code: -1,
                error: Some("the execution failed inside zeroboot (a bug; see the log)".into()),
                ..Default::default()
            });
        let _ = reply.send(r);
        // Restore the fork just used while the reply goes out, so that the
        // next request does not wait for it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| template.tidy()));
        // Then keep a few VMs ready, so that a burst beyond the idle
        // forks does not wait for KVM_CREATE_VM either.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            template.refill_spares(EXEC_SPARES)
        }));
    }
}

/// Fresh forks kept ready per template by the execution workers.
const EXEC_SPARES: usize = 2;

/// The queue is full.
pub struct Busy;

impl Pool {
    /// Start `workers` vCPU threads, each calling `setup` first (it
    /// installs the seccomp filter; an error stops the server).
    pub fn new(
        workers: usize,
        queue: usize,
        setup: fn() -> Result<(), String>,
    ) -> std::io::Result<Pool> {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        for i in 0..workers {
            let rx = rx.clone();
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("zeroboot-vcpu-{i}"))
                .spawn(move || {
                    let r = setup();
                    let ok = r.is_ok();
                    let _ = ready.send(r);
                    if ok {
                        worker(rx);
                    }
                })?;
        }
        drop(ready_tx);
        for r in ready_rx.iter().take(workers) {
            r.map_err(std::io::Error::other)?;
        }
        Ok(Pool {
            workers: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            max_waiting: queue,
            jobs: Mutex::new(tx),
        })
    }

    /// Executions running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Executions waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Reserve queue places for `n` executions (all or nothing).
    pub fn admit(&self, n: usize) -> Result<Admission<'_>, Busy> {
        let prev = self.waiting.fetch_add(n, Ordering::AcqRel);
        if prev + n > self.max_waiting + self.workers.available_permits() {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(Busy);
        }
        Ok(Admission {
            pool: self,
            left: AtomicUsize::new(n),
        })
    }
}

/// Queue places held for a request's executions.
pub struct Admission<'a> {
    pool: &'a Pool,
    left: AtomicUsize,
}

impl Admission<'_> {
    /// Run one execution on a worker thread.
    pub async fn run(&self, template: Arc<Template>, req: ExecRequest) -> ExecResult {
        let permit = self.pool.workers.clone().acquire_owned().await;
        if self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(1))
            .is_ok()
        {
            self.pool.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        self.pool.running.fetch_add(1, Ordering::AcqRel);
        let (reply, result) = oneshot::channel();
        let sent = match self.pool.jobs.lock() {
            Ok(tx) => tx.send((template, req, reply)).is_ok(),
            Err(_) => false,
        };
        let r = if sent { result.await.ok() } else { None };
        drop(permit);
        self.pool.running.fetch_sub(1, Ordering::AcqRel);
        r.unwrap_or_else(|| ExecResult {
            exit_code: -1,
            error: Some("no execution thread is left".into()),
            ..Default::default()
        })
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let left = self.left.load(Ordering::Acquire);
        if left > 0 {
            self.pool.waiting.fetch_sub(left, Ordering::AcqRel);
        }
    }
}
