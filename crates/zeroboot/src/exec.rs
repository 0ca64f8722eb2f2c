//! `zeroboot exec`: run a snippet in a fork of a template.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroboot_engine::{ExecRequest, Language};

#[derive(Args)]
pub struct ExecArgs {
    /// The template (language) to fork: python, node (alias javascript).
    #[arg(long, default_value = "python")]
    template: String,
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Memory limit in MiB (at most the template's).
    #[arg(long)]
    memory: Option<u64>,
    /// Bytes the writable file system may hold, in MiB (at most the
    /// template's).
    #[arg(long)]
    disk: Option<u64>,
    /// Most open descriptors per process (at most the template's).
    #[arg(long)]
    max_open_files: Option<u64>,
    /// Most bytes of stdout and of stderr kept (each); more is truncated
    /// with a marker.
    #[arg(long, default_value_t = 1 << 20)]
    output_cap: usize,
    /// Print timings to stderr.
    #[arg(long)]
    timings: bool,
    /// Print the execution's syscall and fault counts to stderr.
    #[arg(long)]
    stats: bool,
    /// The code to run.
    code: String,
}

pub fn run(a: ExecArgs) -> Result<i32> {
    let Some(lang) = Language::parse(&a.template) else {
        bail!("unknown template {:?} (known: python, node)", a.template);
    };
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    // The fork's VM is made by the pool's thread while the template
    // loads (as a server's are, ahead of need), so the fork only maps
    // memory into it.
    let pool = zeroboot_vmm::pool::install(1, Some(crate::serve::harden_vcpu))
        .context("starting the VM pool's thread")?;
    let template = crate::template::load_or_create(lang)?;
    pool.wait_full(Duration::from_secs(1));
    let mut req = ExecRequest::new(a.code);
    req.timeout = Duration::from_secs_f64(a.timeout);
    req.memory = a.memory.map(|m| m << 20);
    req.disk = a.disk.map(|d| d << 20);
    req.fds = a.max_open_files;
    req.output_cap = a.output_cap;
    // From here on this thread only runs the sandbox (docs/security.md).
    zeroboot_kernel::hardening::harden_vcpu_thread()?;
    let r = template.exec(&req);
    std::io::stdout().write_all(r.stdout.as_bytes())?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(r.stderr.as_bytes())?;
    if let Some(e) = &r.error {
        bail!("{e}");
    }
    for (hit, what) in [
        (r.out_of_memory, "the memory limit"),
        (r.disk_full, "the disk limit"),
        (r.fds_exhausted, "the open-files limit"),
    ] {
        if hit {
            eprintln!("zeroboot: the code ran into {what}");
        }
    }
    if a.timings {
        eprintln!(
            "zeroboot: fork {:.3} ms, exec {:.3} ms, total {:.3} ms",
            r.fork_time.as_secs_f64() * 1e3,
            r.exec_time.as_secs_f64() * 1e3,
            r.total_time.as_secs_f64() * 1e3
        );
    }
    if a.stats {
        let mut line = format!(
            "zeroboot: exceptions={} kicks={} syscalls:",
            r.stats.exceptions, r.stats.kicks
        );
        for (name, n) in &r.stats.syscalls {
            line.push_str(&format!(" {name}={n}"));
        }
        eprintln!("{line}");
    }
    Ok(r.exit_code)
}
