//! The seccomp filter of vCPU threads: defence in depth behind the VM
//! boundary (as Firecracker filters its vCPU threads). A thread that runs
//! guests only needs KVM's ioctls, its own memory, the template's memory
//! file and the image's files; it never needs to start a process, open a
//! socket, or change credentials, so a VMM bug the guest could exploit
//! still cannot do those.
//!
//! A call outside the list is not fatal to the server: the thread gets a
//! SIGSYS whose handler makes the call fail with EPERM and counts it by
//! number; `take_denied` reports the counts so the caller can log them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors of building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter failed: {0}")]
    Build(String),
    #[error("installing the SIGSYS handler failed")]
    Handler(#[source] std::io::Error),
    #[error("installing the seccomp filter failed: {0}")]
    Install(String),
}

/// System calls a vCPU thread makes, with why.
const ALLOWED: &[(i64, &str)] = &[
    (libc::SYS_read, "image files"),
    (libc::SYS_pread64, "template memory, image files"),
    (libc::SYS_write, "logs"),
    (libc::SYS_writev, "logs"),
    (libc::SYS_pwrite64, "a fork's memory file"),
    (libc::SYS_open, "image directories (rustix opens them so)"),
    (libc::SYS_openat, "image files"),
    (
        libc::SYS_openat2,
        "image files, resolved beneath the image root",
    ),
    (libc::SYS_close, "image files, a finished VM's fds"),
    (libc::SYS_fstat, "image files"),
    (libc::SYS_newfstatat, "image files"),
    (libc::SYS_statx, "image files"),
    (libc::SYS_lseek, "image files"),
    (libc::SYS_getdents64, "image directories"),
    (libc::SYS_readlink, "image symlinks"),
    (libc::SYS_readlinkat, "image symlinks"),
    (libc::SYS_fcntl, "file status flags"),
    (libc::SYS_mmap, "guest memory, allocations"),
    (libc::SYS_munmap, "guest memory, allocations"),
    (libc::SYS_mremap, "allocations"),
    (libc::SYS_mprotect, "allocations"),
    (libc::SYS_madvise, "allocations, dropping guest memory"),
    (libc::SYS_brk, "allocations"),
    (libc::SYS_memfd_create, "guest memory of a new sandbox"),
    (libc::SYS_ftruncate, "guest memory of a new sandbox"),
    (libc::SYS_fallocate, "guest memory"),
    (libc::SYS_futex, "locks"),
    (libc::SYS_sched_yield, "locks"),
    (libc::SYS_sched_getaffinity, "std's available_parallelism"),
    (libc::SYS_clock_gettime, "time"),
    (libc::SYS_clock_nanosleep, "sleeps"),
    (libc::SYS_nanosleep, "sleeps"),
    (libc::SYS_gettimeofday, "time"),
    (libc::SYS_getrandom, "AT_RANDOM, seeds, guest getrandom"),
    (libc::SYS_getpid, "logs"),
    (libc::SYS_gettid, "kicks"),
    (libc::SYS_rt_sigreturn, "the kick signal's handler"),
    (libc::SYS_rt_sigprocmask, "std, signal masks"),
    (libc::SYS_sigaltstack, "thread exit"),
    (libc::SYS_restart_syscall, "interrupted sleeps"),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_exit_group, "aborts"),
    (libc::SYS_rseq, "glibc"),
];

/// With the network on (`--network policy`), what a vCPU thread needs to
/// serve a sandbox's egress through host sockets (docs/network.md):
/// sockets of the IP families only, and the calls on them.
const NETWORK: &[(i64, &str)] = &[
    (libc::SYS_connect, "egress connections"),
    (libc::SYS_sendto, "egress"),
    (libc::SYS_sendmmsg, "the host's resolver"),
    (libc::SYS_recvfrom, "egress"),
    (libc::SYS_shutdown, "egress"),
    (libc::SYS_getsockopt, "a connect's outcome"),
    (libc::SYS_setsockopt, "TCP_NODELAY, keepalive"),
    (libc::SYS_getsockname, "the local address"),
    (libc::SYS_getpeername, "the host's resolver"),
    (libc::SYS_poll, "readiness of host sockets"),
    (libc::SYS_ppoll, "readiness of host sockets"),
];

static NETWORK_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Let the filters installed from now on allow the network calls (the
/// server's network is on).
pub fn allow_network(on: bool) {
    NETWORK_ON.store(on, Ordering::Relaxed);
}

/// KVM's ioctl type (`KVMIO`): the only ioctls allowed.
const KVMIO: u64 = 0xae;

/// The prctl options allowed: reading the auxiliary vector (CPU feature
/// detection) and thread names.
const PRCTL_OPTIONS: &[u64] = &[0x4155_5856 /* PR_GET_AUXV */, 15, 16];

static DENIED: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];
static DENIED_OTHER: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: the kernel passes the interrupted thread's ucontext for an
    // SA_SIGINFO handler; it is valid for the handler's duration, and only
    // this thread touches it.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let gregs = &mut uc.uc_mcontext.gregs;
    let nr = gregs[libc::REG_RAX as usize];
    match DENIED.get(nr as usize) {
        Some(c) => c.fetch_add(1, Ordering::Relaxed),
        None => DENIED_OTHER.fetch_add(1, Ordering::Relaxed),
    };
    // The call returns EPERM, as SECCOMP_RET_ERRNO would.
    gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
}

fn install_handler() -> Result<(), SeccompError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only does atomic
        // operations and writes the interrupted context's RAX, both
        // async-signal-safe.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            result = Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    });
    result
}

/// The vCPU threads' filter.
pub fn vcpu_filter() -> Result<BpfProgram, SeccompError> {
    fn build(e: impl std::fmt::Display) -> SeccompError {
        SeccompError::Build(e.to_string())
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xff00),
            KVMIO << 8,
        )
        .map_err(build)?])
        .map_err(build)?],
    );
    let prctl = PRCTL_OPTIONS
        .iter()
        .map(|&op| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                op,
            )
            .map_err(build)?])
            .map_err(build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_prctl, prctl);
    if NETWORK_ON.load(Ordering::Relaxed) {
        for &(nr, _) in NETWORK {
            rules.insert(nr, Vec::new());
        }
        let families = [libc::AF_INET, libc::AF_INET6]
            .iter()
            .map(|&f| {
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    f as u64,
                )
                .map_err(build)?])
                .map_err(build)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_socket, families);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    filter.try_into().map_err(build)
}

/// Install the filter on the calling thread (and threads it starts).
pub fn install_vcpu_filter() -> Result<(), SeccompError> {
    install_handler()?;
    let prog = vcpu_filter()?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install(e.to_string()))
}

/// Calls the filter refused since the last call, by syscall number.
pub fn take_denied() -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = DENIED
        .iter()
        .enumerate()
        .filter_map(|(nr, c)| {
            let n = c.swap(0, Ordering::Relaxed);
            (n > 0).then_some((nr as i64, n))
        })
        .collect();
    let other = DENIED_OTHER.swap(0, Ordering::Relaxed);
    if other > 0 {
        out.push((-1, other));
    }
    out
}
