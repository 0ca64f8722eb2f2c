//! A bounded pool of vCPU threads with a bounded queue in front: at most
//! `workers` executions run at once, at most `queue` wait, and beyond that
//! requests are refused (503) instead of piling up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use zeroboot_engine::{ExecRequest, ExecResult, Template};

pub struct Pool {
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    max_waiting: usize,
}

/// The queue is full.
pub struct Busy;

impl Pool {
    pub fn new(workers: usize, queue: usize) -> Pool {
        Pool {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            max_waiting: queue,
        }
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
        let r = tokio::task::spawn_blocking(move || {
            let r = template.exec(&req);
            drop(permit);
            r
        })
        .await;
        self.pool.running.fetch_sub(1, Ordering::AcqRel);
        r.unwrap_or_else(|e| ExecResult {
            exit_code: -1,
            error: Some(format!("the execution thread failed: {e}")),
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
