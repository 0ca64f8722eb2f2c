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
    /// private in-memory layer). Without it (and without --image) the root
    /// is empty and PROGRAM is a host file copied into it.
    #[arg(long, conflicts_with = "image")]
    rootfs: Option<PathBuf>,
    /// A runtime image as the root (`python`, `node`, or one built with
    /// `zeroboot image build`), built on first use. Its environment (PATH,
    /// and for Python PYTHONDONTWRITEBYTECODE=1 and OPENBLAS_NUM_THREADS=1)
    /// is the program's.
    #[arg(long)]
    image: Option<String>,
    /// Extra Debian packages for --image (a separate, cached image).
    #[arg(long = "apt", value_name = "PKG", requires = "image")]
    apt: Vec<String>,
    /// Extra pip packages for --image (a separate, cached image).
    #[arg(long = "pip", value_name = "PKG", requires = "image")]
    pip: Vec<String>,
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
    /// Write the syscall counts (all, unimplemented, refused socket kinds)
    /// and the outcome as JSON to FILE at exit (for `zeroboot conformance`).
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Copy a host file into the sandbox's writable layer before the
    /// program starts: HOST=GUEST (GUEST absolute); repeatable.
    #[arg(long = "copy", value_name = "HOST=GUEST")]
    copy: Vec<String>,
    /// The program and its arguments. A name without `/` is looked up in
    /// the sandbox's PATH.
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

/// The environment a program gets when the image says nothing.
fn base_env() -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

pub fn run(a: RunArgs) -> Result<i32> {
    if a.memory == 0 || a.memory > 8192 {
        bail!("--memory must be between 1 and 8192 MiB");
    }
    let program = a.argv[0].clone();
    let mut env = base_env();
    let root = match (&a.rootfs, &a.image) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(name)) => {
            let recipe = zeroboot_image::Recipe::named(name, &a.apt, &a.pip)?;
            env = recipe.default_env();
            Some(crate::image::ensure_image(&recipe, &crate::cache_dir())?)
        }
        (None, None) => None,
    };
    let (image, path, host_copy) = match &root {
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
    for c in &a.copy {
        let Some((host, guest)) = c.split_once('=') else {
            bail!("--copy wants HOST=GUEST, got {c:?}");
        };
        if !guest.starts_with('/') {
            bail!("--copy: the guest path must be absolute, got {guest:?}");
        }
        let data = std::fs::read(host).with_context(|| format!("cannot read {host}"))?;
        sb.add_file(guest, data, 0o644)
            .map_err(|e| anyhow::anyhow!("cannot place {host} at {guest} in the sandbox: {e}"))?;
    }
    if let Some((p, data)) = host_copy {
        sb.add_file(&p, data, 0o755)
            .map_err(|e| anyhow::anyhow!("cannot place {program} in the sandbox: {e}"))?;
    }
    for e in &a.env {
        let Some((key, value)) = e.split_once('=') else {
            bail!("--env wants KEY=VALUE, got {e:?}");
        };
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    let envp: Vec<Vec<u8>> = env
        .iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    let mut argv: Vec<Vec<u8>> = a.argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    // A bare name is looked up in the sandbox's PATH, as execvp does.
    let path = if path.contains('/') {
        path
    } else {
        let search = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        sb.find_program(&path, &search)
            .ok_or_else(|| anyhow::anyhow!("{path}: not found in the sandbox's PATH ({search})"))?
    };
    if host_copy_used(&a) {
        argv[0] = path.as_bytes().to_vec();
    }
    sb.exec(&path, &argv, &envp)?;
    let deadline = match a.timeout {
        Some(t) if t > 0.0 && t.is_finite() => Some(Instant::now() + Duration::from_secs_f64(t)),
        Some(_) => bail!("--timeout must be a positive number of seconds"),
        None => None,
    };
    // From here on this thread only runs the sandbox (docs/security.md).
    zeroboot_kernel::hardening::harden_vcpu_thread()?;
    let outcome = sb.run(deadline)?;
    zeroboot_kernel::hardening::report_denials();
    if a.stats {
        let mut line = String::from("zeroboot: syscalls:");
        for (name, n) in sb.k.stats().by_name() {
            line.push_str(&format!(" {name}={n}"));
        }
        eprintln!("{line}");
        for (name, n) in sb.k.stats().unimplemented_by_name() {
            eprintln!("zeroboot: unimplemented syscall {name} called {n} times");
        }
        for (what, n) in &sb.k.sockets_mut().refused {
            eprintln!("zeroboot: unsupported socket option or kind refused: {what} ({n} times)");
        }
    }
    if let Some(path) = &a.stats_json {
        write_stats_json(path, &sb, &outcome)?;
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

fn host_copy_used(a: &RunArgs) -> bool {
    a.rootfs.is_none() && a.image.is_none()
}

/// The counts `--stats` prints, as one JSON object.
fn write_stats_json(path: &std::path::Path, sb: &Sandbox, outcome: &Outcome) -> Result<()> {
    let pairs = |v: Vec<(String, u64)>| {
        serde_json::Value::Object(
            v.into_iter()
                .map(|(k, n)| (k, serde_json::Value::from(n)))
                .collect(),
        )
    };
    let outcome = match outcome {
        Outcome::Exited(Exit::Code(c)) => format!("exit {c}"),
        Outcome::Exited(e @ Exit::Signal(..)) => format!("signal (status {})", e.status()),
        Outcome::TimedOut => "timed out".to_string(),
        Outcome::Parked => "parked".to_string(),
    };
    let refused: Vec<(String, u64)> =
        sb.k.sockets()
            .refused
            .iter()
            .map(|(what, n)| (what.to_string(), *n))
            .collect();
    let v = serde_json::json!({
        "outcome": outcome,
        "syscalls": pairs(sb.k.stats().by_name()),
        "unimplemented": pairs(sb.k.stats().unimplemented_by_name()),
        "sockets_refused": pairs(refused),
    });
    std::fs::write(path, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
