//! `zeroboot run`: one program in one fresh sandbox.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroboot_kernel::vfs::Image;
use zeroboot_kernel::{Exit, Limits, Outcome, Sandbox, SandboxConfig, Source};

#[derive(Args)]
pub struct RunArgs {
    /// Directory the sandbox sees as `/` (read-only; writes go to a
    /// private in-memory layer). Without it the root is empty and PROGRAM
    /// is a host file copied into it.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Memory limit in MiB (mmap and brk fail with ENOMEM above it).
    #[arg(long, default_value_t = 512)]
    memory: u64,
    /// Environment variables (KEY=VALUE); repeatable.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Print syscall counts to stderr at exit.
    #[arg(long)]
    stats: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

pub fn run(a: RunArgs) -> Result<i32> {
    if a.memory == 0 || a.memory > 8192 {
        bail!("--memory must be between 1 and 8192 MiB");
    }
    let program = a.argv[0].clone();
    let (image, path, host_copy) = match &a.rootfs {
        Some(r) => {
            let img =
                Image::new(r).with_context(|| format!("cannot use {} as the root", r.display()))?;
            (img, program.clone(), None)
        }
        None => {
            let data = std::fs::read(&program).with_context(|| format!("cannot read {program}"))?;
            let name = std::path::Path::new(&program)
                .file_name()
                .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                .unwrap_or_else(|| "program".into());
            let inner = format!("/{name}");
            (Image::empty()?, inner.clone(), Some((inner, data)))
        }
    };
    let mut cfg = SandboxConfig::new(Arc::new(image));
    cfg.limits = Limits {
        memory: a.memory << 20,
        ..Limits::default()
    };
    cfg.stdin = Source::Host;
    let mut sb = Sandbox::new(cfg).context("cannot create the sandbox VM")?;
    if let Some((p, data)) = host_copy {
        sb.add_file(&p, data, 0o755)
            .map_err(|e| anyhow::anyhow!("cannot place {program} in the sandbox: {e}"))?;
    }
    let mut envp: Vec<Vec<u8>> = vec![
        b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_vec(),
        b"HOME=/root".to_vec(),
        b"LANG=C.UTF-8".to_vec(),
    ];
    for e in &a.env {
        if !e.contains('=') {
            bail!("--env wants KEY=VALUE, got {e:?}");
        }
        let key = e.split('=').next().unwrap_or("");
        envp.retain(|x| !x.starts_with(format!("{key}=").as_bytes()));
        envp.push(e.as_bytes().to_vec());
    }
    let argv: Vec<Vec<u8>> = a.argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut argv0 = argv.clone();
    argv0[0] = path.as_bytes().to_vec();
    sb.exec(
        &path,
        if host_copy_is_used(&a) { &argv0 } else { &argv },
        &envp,
    )?;
    let deadline = match a.timeout {
        Some(t) if t > 0.0 && t.is_finite() => Some(Instant::now() + Duration::from_secs_f64(t)),
        Some(_) => bail!("--timeout must be a positive number of seconds"),
        None => None,
    };
    let outcome = sb.run(deadline)?;
    if a.stats {
        let mut line = String::from("zeroboot: syscalls:");
        for (name, n) in sb.k.stats.by_name() {
            line.push_str(&format!(" {name}={n}"));
        }
        eprintln!("{line}");
        for (name, n) in sb.k.stats.unimplemented_by_name() {
            eprintln!("zeroboot: unimplemented syscall {name} called {n} times");
        }
    }
    Ok(match outcome {
        Outcome::Exited(Exit::Code(c)) => c & 0xff,
        Outcome::Exited(e @ Exit::Signal(..)) => e.status(),
        Outcome::TimedOut => {
            eprintln!("zeroboot: timed out after {} s", a.timeout.unwrap_or(0.0));
            124
        }
        Outcome::Parked => {
            eprintln!("zeroboot: the program blocked reading its control channel");
            125
        }
    })
}

fn host_copy_is_used(a: &RunArgs) -> bool {
    a.rootfs.is_none()
}
