//! `zeroboot serve`: the HTTP API. On first start it builds the images and
//! templates of its languages (Python and Node by default, with progress),
//! then serves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use zeroboot_engine::Language;
use zeroboot_server::ServerConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Executions running at once [default: 2 x CPUs].
    #[arg(long)]
    workers: Option<usize>,
    /// Executions that may wait for a worker before requests get 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Requests per second per API key (0: unlimited).
    #[arg(long, default_value_t = 100)]
    rate_limit: u32,
    /// Languages to serve (each has a template, built on first use):
    /// python, node, code-interpreter (E2B's `code-interpreter-v1`).
    #[arg(long, value_delimiter = ',', default_value = "python,node")]
    languages: Vec<String>,
    /// Live sandboxes (E2B's /sandboxes) held at once, all keys together.
    #[arg(long, default_value_t = 1000)]
    max_sandboxes: usize,
    /// Live sandboxes held at once per API key.
    #[arg(long, default_value_t = 100)]
    max_sandboxes_per_key: usize,
    /// Longest time to live a sandbox may be given, in seconds.
    #[arg(long, default_value_t = 86400)]
    max_sandbox_timeout: u64,
    /// Threads running live sandboxes' code [default: 2 x CPUs].
    #[arg(long)]
    sandbox_workers: Option<usize>,
    /// Where snapshots and sandboxes paused to disk are kept (they outlive
    /// the server; one server per directory) [default: /var/lib/zeroboot
    /// as root, else $XDG_STATE_HOME/zeroboot or ~/.local/state/zeroboot].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// When started as root: the user to serve as, once the templates are
    /// ready (`root` keeps root).
    #[arg(long, default_value = "nobody")]
    user: String,
    /// Sandboxes' network: `off` (none), or `policy` (egress through host
    /// sockets under each sandbox's allow/deny rules; docs/network.md).
    #[arg(long, value_enum, default_value_t = NetworkMode::Off)]
    network: NetworkMode,
    /// A normally forbidden destination (loopback, private, link-local,
    /// this host's addresses) sandboxes may reach, as ADDRESS:PORT
    /// (repeatable; e.g. a test server on 127.0.0.1:8000).
    #[arg(long = "net-allow-host", value_name = "ADDRESS:PORT")]
    net_allow_host: Vec<String>,
    /// A name the VMM's resolver answers, as NAME=ADDRESS[,ADDRESS...]
    /// (repeatable).
    #[arg(long = "net-host", value_name = "NAME=ADDRESSES")]
    net_host: Vec<String>,
    /// Where other names are resolved: `system` (this host's resolver) or
    /// `static` (only --net-host names resolve).
    #[arg(long, value_enum, default_value_t = NetResolver::System)]
    net_resolver: NetResolver,
    /// Most host connections one sandbox holds at once.
    #[arg(long, default_value_t = zeroboot_engine::NetOperator::enabled().max_connections)]
    net_max_connections: usize,
    /// Bandwidth cap per sandbox, each way, in bytes per second (K, M, G
    /// suffixes: KiB, MiB, GiB; `off`: none). Past it the sandbox's sends
    /// and receives are slowed, not failed.
    #[arg(long, value_name = "BYTES_PER_S", default_value = "100M", value_parser = net_rate)]
    net_bandwidth: u64,
    /// UDP datagrams per second one sandbox may send (`off`: no cap); past
    /// it datagrams are dropped (EAGAIN for a non-blocking sender).
    #[arg(long, value_name = "DATAGRAMS_PER_S", default_value = "2000", value_parser = net_rate)]
    net_udp_rate: u64,
    /// This node's key in a fleet (docs/fleet.md): 1 to 9 of [a-z0-9],
    /// put inside every sandbox id so a gateway routes by id; `auto` makes
    /// one up at start. None: plain ids (a single server).
    #[arg(long, value_name = "KEY")]
    node_key: Option<String>,
    /// After SIGTERM, seconds to drain before stopping: no new sandboxes
    /// (readiness 503), the live ones served until they are gone. 0 stops
    /// at once (live sandboxes end).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    drain_grace: u64,
    /// VMs (each with its vCPU set up) a background thread keeps made
    /// ahead of need, so that creating or forking a sandbox does not wait
    /// for KVM_CREATE_VM; about 180 KiB of host kernel memory each. The
    /// pool is emptied while host memory is short (MemAvailable under a
    /// tenth of MemTotal). 0: none, every fork makes its VM.
    #[arg(long, value_name = "VMS", default_value_t = zeroboot_vmm::pool::DEFAULT_SIZE)]
    vm_pool: usize,
    /// Finished VMs a background thread may hold queued for teardown
    /// (closing the VM's fds, unmapping its memory: ~1.7 ms each), so
    /// that killing or discarding a sandbox does not pay for it; when the
    /// queue is full, a VM is torn down where it is dropped. 0: always
    /// there.
    #[arg(long, value_name = "VMS", default_value_t = zeroboot_vmm::reaper::DEFAULT_CAPACITY)]
    vm_reaper: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetworkMode {
    Off,
    Policy,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetResolver {
    System,
    Static,
}

/// A rate flag's value (a number with an optional K/M/G suffix, or `off`).
fn net_rate(s: &str) -> Result<u64, String> {
    zeroboot_engine::parse_net_rate(s).ok_or_else(|| {
        format!("`{s}` is not a rate: a number with an optional K, M or G suffix, or `off`")
    })
}

/// The operator's egress policy from the flags.
fn network_operator(a: &ServeArgs) -> Result<zeroboot_engine::NetOperator> {
    use zeroboot_engine::NetOperator;
    let mut op = if a.network == NetworkMode::Policy {
        NetOperator::enabled()
    } else {
        NetOperator::default()
    };
    for e in &a.net_allow_host {
        op.allow_special.push(NetOperator::parse_endpoint(e)?);
    }
    for h in &a.net_host {
        let (name, addrs) = NetOperator::parse_host(h)?;
        op.hosts.insert(name, addrs);
    }
    op.system_resolver = a.net_resolver == NetResolver::System;
    op.max_connections = a.net_max_connections;
    op.rates = zeroboot_engine::NetRates {
        bandwidth: a.net_bandwidth,
        udp: a.net_udp_rate,
    };
    op.own_addrs = zeroboot_server::network::own_addrs();
    if !a.bind.is_unspecified() {
        op.own_addrs.push(a.bind);
    }
    Ok(op)
}

/// uid and gid of `name` from /etc/passwd (system users, no NSS).
fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .with_context(|| format!("no user {name:?} in /etc/passwd (see --user)"))
}

/// Where sandboxes kept on disk live by default (state, not cache: they
/// are not rebuilt when lost).
fn default_state_dir() -> std::path::PathBuf {
    if rustix::process::geteuid().is_root() {
        return "/var/lib/zeroboot".into();
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("XDG_STATE_HOME").filter(|d| std::path::Path::new(d).is_absolute()) {
        return std::path::PathBuf::from(d).join("zeroboot");
    }
    var("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/tmp".into())
        .join(".local/state/zeroboot")
}

/// The serving user must be able to write the state directory (a parent
/// private to root makes it unreachable): found now, not at the first
/// pause.
fn check_state_dir(dir: &std::path::Path, user: &str) -> Result<()> {
    let probe = dir.join("paused").join(".probe");
    std::fs::create_dir(&probe)
        .and_then(|()| std::fs::remove_dir(&probe))
        .with_context(|| {
            format!(
                "the state directory {} is not writable by the user the server runs as{}; \
                 choose another with --state-dir (every parent must be searchable by that user)",
                dir.display(),
                if rustix::process::geteuid().is_root() {
                    String::new()
                } else {
                    format!(" (not {user})")
                }
            )
        })
}

/// Create the state directory; when serving as another user than root,
/// hand it (and what earlier runs left in it) to that user.
fn prepare_state_dir(dir: &std::path::Path, user: &str) -> Result<()> {
    for sub in ["snapshots", "paused"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
    }
    if !rustix::process::geteuid().is_root() || user == "root" {
        return Ok(());
    }
    let (uid, gid) = lookup_user(user)?;
    fn walk(p: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(dir, uid, gid).with_context(|| format!("handing {} to user {user:?}", dir.display()))
}

/// The templates of `languages` (built on first use).
pub(crate) fn load_templates(
    languages: &[String],
) -> Result<HashMap<Language, Arc<zeroboot_engine::Template>>> {
    let mut templates = HashMap::new();
    for name in languages {
        let Some(lang) = Language::parse(name.trim()) else {
            anyhow::bail!(
                "unknown language {name:?} in --languages (known: python, node, code-interpreter)"
            );
        };
        if templates.contains_key(&lang) {
            continue;
        }
        let t = crate::template::load_or_create(lang)?;
        templates.insert(lang, Arc::new(t));
    }
    if templates.is_empty() {
        anyhow::bail!("--languages names no language");
    }
    Ok(templates)
}

/// Started as root: become `user` (unless it is `root`). Root was needed
/// for the cache and /dev/kvm only (docs/security.md).
pub(crate) fn drop_root(user: &str) -> Result<()> {
    if rustix::process::geteuid().is_root() && user != "root" {
        let (uid, gid) = lookup_user(user)?;
        zeroboot_kernel::hardening::drop_privileges(uid, gid)
            .with_context(|| format!("dropping root for user {user:?}"))?;
        tracing::info!(user = %user, uid, gid, "serving without root");
    }
    Ok(())
}

/// Run each vCPU thread under the seccomp filter.
pub(crate) fn harden_vcpu() -> Result<(), String> {
    zeroboot_kernel::hardening::harden_vcpu_thread().map_err(|e| e.to_string())
}

pub fn run(a: ServeArgs) -> Result<i32> {
    let keys = zeroboot_server::load_keys()?;
    let mut config = ServerConfig {
        bind: SocketAddr::new(a.bind, a.port),
        queue: a.queue,
        rate_limit: a.rate_limit,
        ..ServerConfig::default()
    };
    if let Some(w) = a.workers {
        config.workers = w.max(1);
    }
    config.sandboxes.max_total = a.max_sandboxes;
    config.sandboxes.max_per_key = a.max_sandboxes_per_key;
    config.sandboxes.max_timeout = a.max_sandbox_timeout;
    if let Some(k) = &a.node_key {
        let k = if k == "auto" {
            zeroboot_server::fleet::random_key()
        } else {
            zeroboot_server::fleet::check_key(k)?;
            k.clone()
        };
        config.sandboxes.node_key = k;
    }
    config.drain_grace = std::time::Duration::from_secs(a.drain_grace);
    if let Some(w) = a.sandbox_workers {
        config.sandboxes.workers = w.max(1);
    }
    let network = network_operator(&a)?;
    // The vCPU threads' seccomp filter lets them use IP sockets only
    // when the network is on.
    zeroboot_vmm::seccomp::allow_network(network.enabled);
    if network.enabled {
        tracing::info!(
            allowed_hosts = ?network.allow_special,
            names = network.hosts.len(),
            system_resolver = network.system_resolver,
            max_connections = network.max_connections,
            bandwidth_bytes_per_s = network.rates.bandwidth,
            udp_datagrams_per_s = network.rates.udp,
            "network: egress policy on"
        );
    }
    config.network = Arc::new(network);
    config.vcpu_setup = harden_vcpu;
    if let Some((k, path)) = keys {
        config.keys = Some(k);
        config.keys_file = Some(path);
    }
    let templates = load_templates(&a.languages)?;
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    prepare_state_dir(&state_dir, &a.user)?;
    drop_root(&a.user)?;
    check_state_dir(&state_dir, &a.user)?;
    // After dropping root (glibc's set*id calls reach every thread, which
    // the filter would refuse); its thread runs under the vCPU filter.
    if a.vm_pool > 0 {
        zeroboot_vmm::pool::install(a.vm_pool, Some(harden_vcpu))
            .context("starting the VM pool's thread")?;
    }
    if a.vm_reaper > 0 {
        zeroboot_vmm::reaper::install(a.vm_reaper, Some(harden_vcpu))
            .context("starting the VM reaper's thread")?;
    }
    config.state_dir = Some(state_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(zeroboot_server::serve(config, templates))?;
    Ok(0)
}
