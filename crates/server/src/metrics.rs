//! Prometheus metrics, kept by hand: a few counters and histograms do not
//! need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds (seconds).
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub fork: Histogram,
    pub exec: Histogram,
    pub total: Histogram,
    /// Requests by (endpoint, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Executions by (language, outcome).
    executions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint, status)).or_insert(0) += 1;
    }

    pub fn execution(&self, language: &'static str, outcome: &'static str) {
        let mut m = self.executions.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((language, outcome)).or_insert(0) += 1;
    }

    /// The text exposition format.
    pub fn render(
        &self,
        running: usize,
        waiting: usize,
        templates: &[(&'static str, u64)],
        live: &crate::sandboxes::Sandboxes,
    ) -> String {
        let mut out = String::new();
        render_sandboxes(live, &mut out);
        self.fork.render(
            "zeroboot_fork_seconds",
            "Time to fork a sandbox from its template.",
            &mut out,
        );
        self.exec.render(
            "zeroboot_exec_seconds",
            "Time the code ran in its sandbox.",
            &mut out,
        );
        self.total.render(
            "zeroboot_total_seconds",
            "Fork, run and tear down one execution.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP zeroboot_requests_total HTTP requests by endpoint and status."
        );
        let _ = writeln!(out, "# TYPE zeroboot_requests_total counter");
        for ((ep, st), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "zeroboot_requests_total{{endpoint=\"{ep}\",status=\"{st}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP zeroboot_executions_total Executions by language and outcome."
        );
        let _ = writeln!(out, "# TYPE zeroboot_executions_total counter");
        for ((l, o), n) in self
            .executions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "zeroboot_executions_total{{language=\"{l}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP zeroboot_seccomp_denied_total Host system calls of vCPU threads the seccomp filter refused."
        );
        let _ = writeln!(
            out,
            "# TYPE zeroboot_seccomp_denied_total counter\nzeroboot_seccomp_denied_total {}",
            zeroboot_engine::seccomp_denied_total()
        );
        let _ = writeln!(out, "# HELP zeroboot_live_sandboxes Sandboxes running now.");
        let _ = writeln!(
            out,
            "# TYPE zeroboot_live_sandboxes gauge\nzeroboot_live_sandboxes {running}"
        );
        let _ = writeln!(
            out,
            "# HELP zeroboot_queued_executions Executions waiting for a worker."
        );
        let _ = writeln!(
            out,
            "# TYPE zeroboot_queued_executions gauge\nzeroboot_queued_executions {waiting}"
        );
        if let Some(pool) = zeroboot_engine::vm_pool() {
            let p = pool.stats();
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_pool_ready VMs made ahead of need, ready for forks.\n# TYPE zeroboot_vm_pool_ready gauge\nzeroboot_vm_pool_ready {}",
                p.ready
            );
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_pool_takes_total Forks that found a VM in the pool (hit) or made their own (miss).\n# TYPE zeroboot_vm_pool_takes_total counter\nzeroboot_vm_pool_takes_total{{result=\"hit\"}} {}\nzeroboot_vm_pool_takes_total{{result=\"miss\"}} {}",
                p.hits, p.misses
            );
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_pool_placed_ready VMs made ahead for the memory shape of live forks (guest address space held, first memory slot registered).\n# TYPE zeroboot_vm_pool_placed_ready gauge\nzeroboot_vm_pool_placed_ready {}",
                p.placed
            );
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_pool_placed_takes_total Live forks that found a VM made for their memory shape (hit) or not (miss).\n# TYPE zeroboot_vm_pool_placed_takes_total counter\nzeroboot_vm_pool_placed_takes_total{{result=\"hit\"}} {}\nzeroboot_vm_pool_placed_takes_total{{result=\"miss\"}} {}",
                p.placed_hits, p.placed_misses
            );
        }
        if let Some(r) = zeroboot_engine::vm_reaper() {
            let r = r.stats();
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_teardowns_total Finished VMs' host resources freed by the reaper thread (reaped) or, its queue full, where they were dropped (inline).\n# TYPE zeroboot_vm_teardowns_total counter\nzeroboot_vm_teardowns_total{{by=\"reaper\"}} {}\nzeroboot_vm_teardowns_total{{by=\"inline\"}} {}",
                r.reaped, r.inline
            );
            let _ = writeln!(
                out,
                "# HELP zeroboot_vm_teardowns_queued Finished VMs' host resources waiting for the reaper.\n# TYPE zeroboot_vm_teardowns_queued gauge\nzeroboot_vm_teardowns_queued {}",
                r.queued.saturating_sub(r.reaped)
            );
        }
        let _ = writeln!(
            out,
            "# HELP zeroboot_template_memory_bytes Guest memory each template holds."
        );
        let _ = writeln!(out, "# TYPE zeroboot_template_memory_bytes gauge");
        for (name, bytes) in templates {
            let _ = writeln!(
                out,
                "zeroboot_template_memory_bytes{{template=\"{name}\"}} {bytes}"
            );
        }
        out
    }
}

/// Live sandboxes: how many by template and state, creations, kills by
/// reason, create latency.
fn render_sandboxes(live: &crate::sandboxes::Sandboxes, out: &mut String) {
    let c = &live.counters;
    let _ = writeln!(
        out,
        "# HELP zeroboot_sandboxes Live sandboxes held, by template and state.\n# TYPE zeroboot_sandboxes gauge"
    );
    for ((t, st), n) in live.census() {
        let _ = writeln!(
            out,
            "zeroboot_sandboxes{{template=\"{t}\",state=\"{st}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP zeroboot_sandbox_creations_total Live sandboxes created, by template.\n# TYPE zeroboot_sandbox_creations_total counter"
    );
    for (t, n) in c.created.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "zeroboot_sandbox_creations_total{{template=\"{t}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP zeroboot_sandbox_kills_total Live sandboxes ended, by reason (timeout: time to live; request: killed by a client; limit: its code hit a limit; exit: its process ended).\n# TYPE zeroboot_sandbox_kills_total counter"
    );
    let kills = c.kills.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for reason in ["timeout", "request", "limit", "exit"] {
        let _ = writeln!(
            out,
            "zeroboot_sandbox_kills_total{{reason=\"{reason}\"}} {}",
            kills.get(reason).copied().unwrap_or(0)
        );
    }
    c.create_latency.render(
        "zeroboot_sandbox_create_seconds",
        "Time to create a live sandbox (fork included).",
        out,
    );
    c.fork_latency.render(
        "zeroboot_sandbox_fork_seconds",
        "Time of a fork of a live sandbox: its freeze and all the copies asked for.",
        out,
    );
    let _ = writeln!(
        out,
        "# HELP zeroboot_sandbox_runs_total Runs of code in live sandboxes.\n# TYPE zeroboot_sandbox_runs_total counter\nzeroboot_sandbox_runs_total {}",
        c.runs.load(Ordering::Relaxed)
    );
}
