//! `zeroboot bench`: measured costs, printed as percentiles.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use zeroboot_vmm::probe::RawGuest;
use zeroboot_vmm::Exit;

#[derive(Subcommand)]
pub enum Bench {
    /// Executions per second through the HTTP API, then a soak.
    Api {
        /// Concurrent clients to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,8,32")]
        clients: Vec<usize>,
        /// Seconds per client count.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of soak at the best client count (0: none).
        #[arg(long, default_value_t = 60.0)]
        soak: f64,
        /// Languages to measure, each separately, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "python,node")]
        languages: Vec<String>,
        /// Fail when Node through the server (1 client, p50) takes more
        /// than this many times the engine's own reset+exec (0: report only).
        #[arg(long, default_value_t = 2.0)]
        max_node_ratio: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Template creation, fork, fork+exec, many live forks, isolation.
    Fork {
        /// The template to fork: python or node.
        #[arg(long, default_value = "python")]
        template: String,
        /// Forks for the fork-only measurement.
        #[arg(long, default_value_t = 1000)]
        forks: usize,
        /// Executions of the hello snippet (print(1+1), console.log(1+1)).
        #[arg(long, default_value_t = 200)]
        execs: usize,
        /// Forks held alive at once; several, comma-separated, are
        /// measured one after the other (the cost per fork at each).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        live: Vec<usize>,
        /// VMs made ahead of need by a background thread (`serve
        /// --vm-pool`; 0: every fork makes its VM itself).
        #[arg(long, default_value_t = zeroboot_vmm::pool::DEFAULT_SIZE)]
        vm_pool: usize,
        /// Finished VMs a background thread may hold queued for teardown
        /// (`serve --vm-reaper`; 0: torn down where they are dropped).
        #[arg(long, default_value_t = zeroboot_vmm::reaper::DEFAULT_CAPACITY)]
        vm_reaper: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// zeroboot against host python3, bubblewrap, a forkserver and other
    /// sandboxes: the same snippets, interleaved; writes docs/benchmarks.md.
    Compare(crate::bench_compare::CompareArgs),
    /// A server under a mix of normal, failing, timing-out, memory-hungry
    /// and flooding executions: unexpected replies, latency, RSS and fds
    /// over time.
    Soak(crate::bench_soak::SoakArgs),
    /// Live sandboxes through the HTTP API: create, create + first run,
    /// run, kill, the limit, and host memory per idle sandbox.
    Sandboxes {
        /// The template: python or node.
        #[arg(long, default_value = "python")]
        template: String,
        /// Sandboxes held at once (the server's limit; one more gets 429).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Runs measured (in one live sandbox; and creates + first run).
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// envd's services in a live sandbox through the HTTP API: a command's
    /// round trip, file write + read, guest-write-to-client latency.
    Commands {
        /// Samples per measurement.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Print JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Fork of a live sandbox holding numpy state, through the HTTP API:
    /// one copy per call, many copies in one call, host memory per copy.
    ForkLive {
        /// Copies made by the one big call (at most 100).
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// One-copy fork calls measured.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// MiB of numpy data in the source.
        #[arg(long, default_value_t = 80)]
        state_mb: usize,
        /// VMs made ahead of need by a background thread (`serve
        /// --vm-pool`; 0: every fork makes its VM itself).
        #[arg(long, default_value_t = zeroboot_vmm::pool::DEFAULT_SIZE)]
        vm_pool: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What MCP adds to a stateless run_code: /v1/exec against MCP over
    /// stdio (to a server, and with an embedded engine).
    Mcp {
        /// Samples per transport.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// HTTP GETs of 1 KiB and 10 MiB from a loopback server, inside a
    /// sandbox (egress through host sockets) and from the host: p50, ratio.
    Net {
        /// GETs of 1 KiB measured.
        #[arg(long, default_value_t = 200)]
        small: usize,
        /// GETs of 10 MiB measured.
        #[arg(long, default_value_t = 20)]
        big: usize,
        /// Print JSON too.
        #[arg(long)]
        json: bool,
    },
    /// The code interpreter (template code-interpreter-v1) through the
    /// HTTP API: run_code("1+1"), a matplotlib plot to PNG, create + first
    /// run_code.
    Code {
        /// Samples of run_code("1+1") (a tenth as many plots, a quarter as
        /// many creates).
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Print JSON too.
        #[arg(long)]
        json: bool,
    },
    /// What the gateway adds (docs/fleet.md): create, a run in a live
    /// sandbox and kill, straight to a node and through `zeroboot gateway`.
    Fleet {
        /// Sandboxes created per path.
        #[arg(long, default_value_t = 200)]
        sandboxes: usize,
        /// Runs in each sandbox.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// A third path: HAProxy (from PATH) in front of the gateway.
        #[arg(long)]
        haproxy: bool,
        /// Print JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Round trip of a null syscall and of a ring-3 exception exit.
    Syscall {
        /// Iterations per measurement.
        #[arg(long, default_value_t = 20000)]
        iterations: u32,
    },
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Syscall { iterations } => syscall(iterations),
        Bench::Api {
            clients,
            seconds,
            soak,
            languages,
            max_node_ratio,
            json,
        } => crate::bench_api::run(crate::bench_api::ApiArgs {
            clients: &clients,
            seconds,
            soak,
            languages: &languages,
            max_node_ratio,
            json,
        }),
        Bench::Fork {
            template,
            forks,
            execs,
            live,
            vm_pool,
            vm_reaper,
            json,
        } => crate::bench_fork::run(crate::bench_fork::ForkArgs {
            template: &template,
            forks,
            execs,
            live: &live,
            vm_pool,
            vm_reaper,
            json,
        }),
        Bench::Compare(a) => crate::bench_compare::run(a),
        Bench::Sandboxes {
            template,
            count,
            runs,
            json,
        } => crate::bench_sandboxes::run(&template, count, runs, json),
        Bench::Soak(a) => crate::bench_soak::run(a),
        Bench::Commands { runs, json } => crate::bench_commands::run(runs, json),
        Bench::ForkLive {
            count,
            runs,
            state_mb,
            vm_pool,
            json,
        } => crate::bench_fork_live::run(count, runs, state_mb, vm_pool, json),
        Bench::Net { small, big, json } => crate::bench_net::run(small, big, json),
        Bench::Mcp { runs, json } => crate::bench_mcp::run(runs, json),
        Bench::Code { runs, json } => crate::bench_code::run(runs, json),
        Bench::Fleet {
            sandboxes,
            runs,
            haproxy,
            json,
        } => crate::bench_fleet::run(sandboxes, runs, haproxy, json),
    }
}

/// p50/p90/p99 of nanosecond samples.
pub fn percentiles(mut v: Vec<u64>) -> (f64, f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (at(0.5), at(0.9), at(0.99))
}

fn report(name: &str, samples: Vec<u64>) {
    let n = samples.len();
    let (p50, p90, p99) = percentiles(samples);
    println!("{name:<40} n={n:<7} p50 {p50:>8.2} us   p90 {p90:>8.2} us   p99 {p99:>8.2} us");
}

fn syscall(iterations: u32) -> Result<()> {
    // mov eax, 39; syscall; jmp back
    let mut g =
        RawGuest::new(&[0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]).context("creating the VM")?;
    let mut samples = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let t = Instant::now();
        match g.vcpu.run(&g.mem)? {
            Exit::Syscall => g.vcpu.resume_from_syscall(0),
            other => anyhow::bail!("unexpected exit {other:?}"),
        }
        samples.push(t.elapsed().as_nanos() as u64);
    }
    report("null syscall (exit + return to ring 3)", samples);

    // int3; jmp back: a trap-type exception, resumed after the instruction.
    let mut g = RawGuest::new(&[0xcc, 0xeb, 0xfd]).context("creating the VM")?;
    let mut samples = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let t = Instant::now();
        match g.vcpu.run(&g.mem)? {
            Exit::Exception(f) if f.vector == 3 => g.vcpu.resume_from_exception(&f),
            other => anyhow::bail!("unexpected exit {other:?}"),
        }
        samples.push(t.elapsed().as_nanos() as u64);
    }
    report("ring-3 exception exit (int3 + resume)", samples);
    Ok(())
}
