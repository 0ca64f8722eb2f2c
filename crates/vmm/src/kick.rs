//! Kicking a vCPU thread out of `KVM_RUN` with a signal, for timeouts and
//! cancellation. The signal's handler does nothing: its only effect is that
//! `KVM_RUN` returns `EINTR`.

use std::sync::Once;

/// The real-time signal used for kicks.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the no-op handler (once per process; without it the signal
/// would kill the process).
pub fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Without SA_RESTART, so that blocking host calls see EINTR too.
        let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick);
    });
}

/// A handle to the thread that runs a vCPU.
///
/// It names the thread by its kernel thread id and signals it with
/// `tgkill` on this process, not with `pthread_kill`: a `pthread_t` of a
/// thread that has exited is undefined behaviour to use, while a stale tid
/// is at worst ESRCH, or (if Linux reused it) a kick of another thread of
/// this process, whose only effect is one EINTR. So `kick` is safe to call
/// at any time, with no contract for the caller.
#[derive(Debug, Clone, Copy)]
pub struct Kicker {
    pid: libc::pid_t,
    tid: libc::pid_t,
}

impl Kicker {
    /// The calling thread.
    pub fn current() -> Kicker {
        install_handler();
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        Kicker {
            pid: std::process::id() as libc::pid_t,
            tid,
        }
    }

    /// Interrupt the thread's `KVM_RUN` (or any blocking call it is in).
    pub fn kick(&self) {
        // SAFETY: tgkill takes plain integers and touches no memory of
        // ours; a stale tid only makes it fail or kick a thread of this
        // process, which has the no-op handler (`current` installed it).
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                self.pid as libc::c_long,
                self.tid as libc::c_long,
                kick_signal() as libc::c_long,
            );
        }
    }
}
