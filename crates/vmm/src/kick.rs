//! Kicking a vCPU thread out of `KVM_RUN` with a signal, for timeouts and
//! cancellation. The signal's handler does nothing: its only effect is that
//! `KVM_RUN` returns `EINTR`.
//!
//! A signal only interrupts a `KVM_RUN` under way: one that lands while
//! the thread is in the VMM, after its run loop decided to go on and
//! before it enters `KVM_RUN`, is lost, and a guest spinning in ring 3
//! then runs on for good. So a kicker also raises the vCPU's
//! `kvm_run.immediate_exit` ([`ExitFlag`]), which KVM reads on entry: that
//! `KVM_RUN` returns `EINTR` at once (the KVM API's answer to this race).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once};

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

/// The `immediate_exit` byte of a vCPU's `kvm_run` area, for another thread
/// to raise before it kicks the vCPU's thread. Safe to use at any time: once
/// the vCPU is gone, `raise` does nothing.
#[derive(Debug, Clone)]
pub struct ExitFlag(Arc<Mutex<Option<RunByte>>>);

#[derive(Debug)]
struct RunByte(NonNull<u8>);

// SAFETY: the byte lies in the vCPU's `kvm_run` mapping, which is shared
// memory (KVM reads it from the kernel); it is only ever accessed as an
// atomic, and only while the vCPU, and so the mapping, exists (`detach`
// runs before the vCPU's fd is closed, under the same lock).
unsafe impl Send for RunByte {}

impl ExitFlag {
    /// The flag at `byte`, which must be `kvm_run.immediate_exit` of a
    /// vCPU that calls `detach` before its mapping goes away.
    pub(crate) fn new(byte: NonNull<u8>) -> ExitFlag {
        ExitFlag(Arc::new(Mutex::new(Some(RunByte(byte)))))
    }

    fn store(&self, v: u8) {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(RunByte(p)) = g.as_ref() {
            // SAFETY: the mapping is alive while the pointer is in the
            // slot (see `RunByte`); the byte is aligned (u8) and every
            // access from our side is atomic.
            unsafe { AtomicU8::from_ptr(p.as_ptr()) }.store(v, Ordering::SeqCst);
        }
    }

    /// Make the vCPU's next `KVM_RUN` (or the one it is entering) return
    /// `EINTR` at once.
    pub fn raise(&self) {
        self.store(1);
    }

    /// Back to normal runs (the vCPU's thread, after each `KVM_RUN`).
    pub(crate) fn clear(&self) {
        self.store(0);
    }

    /// The vCPU is going away: later `raise` calls do nothing.
    pub(crate) fn detach(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
