//! Hardening of the host threads that run sandboxes (docs/security.md):
//! everything such a thread needs from the host is set up first, then the
//! seccomp filter of `zeroboot_vmm::seccomp` confines it.

use std::sync::atomic::{AtomicU64, Ordering};

use zeroboot_abi::sysno;
use zeroboot_vmm::seccomp::{self, SeccompError};
use zeroboot_vmm::Host;

/// Run as `uid`/`gid` from now on (all threads, irrevocably), keeping the
/// KVM handle: it is opened first, as root.
pub fn drop_privileges(uid: u32, gid: u32) -> std::io::Result<()> {
    Host::get().map_err(|e| std::io::Error::other(e.to_string()))?;
    zeroboot_vmm::credentials::drop_to(uid, gid)
}

/// Confine the calling thread to what running sandboxes needs. The
/// watchdog thread, the kick handler and the KVM handle are set up before,
/// since the filter forbids starting threads and installing handlers.
pub fn harden_vcpu_thread() -> Result<(), SeccompError> {
    crate::watchdog::start();
    zeroboot_vmm::kick::install_handler();
    // Opening /dev/kvm (once per process) is allowed anyway; doing it here
    // keeps its errors out of the first request.
    let _ = Host::get();
    seccomp::install_vcpu_filter()
}

static DENIED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Host calls the filter refused so far, in this process.
pub fn denied_total() -> u64 {
    DENIED_TOTAL.load(Ordering::Relaxed)
}

/// Log, by name, the host calls the filter refused since the last report
/// (a bug in zeroboot, or an attack on it).
pub fn report_denials() {
    for (nr, n) in seccomp::take_denied() {
        DENIED_TOTAL.fetch_add(n, Ordering::Relaxed);
        let name = u64::try_from(nr)
            .ok()
            .and_then(sysno::name)
            .unwrap_or("unknown");
        tracing::error!(
            syscall = name,
            nr,
            count = n,
            "seccomp refused a host system call of a vCPU thread (returned EPERM)"
        );
    }
}
