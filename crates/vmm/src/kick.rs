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
#[derive(Debug, Clone, Copy)]
pub struct Kicker {
    thread: libc::pthread_t,
}

impl Kicker {
    /// The calling thread.
    pub fn current() -> Kicker {
        install_handler();
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        Kicker { thread }
    }

    /// Interrupt the thread's `KVM_RUN`.
    ///
    /// The caller must know the thread is still alive (the sandbox's
    /// watchdog only kicks while the run loop holds its registration).
    pub fn kick(&self) {
        // SAFETY: `thread` is a live thread (caller's contract) and the
        // signal has a handler installed in `current`.
        unsafe {
            libc::pthread_kill(self.thread, kick_signal());
        }
    }
}
