//! Signal delivery: default actions, and running a user handler on a
//! Linux-compatible `rt_sigframe` (so glibc's restorer and `ucontext_t`
//! users work), undone by `rt_sigreturn`.

use zeroboot_abi::signal::*;
use zeroboot_abi::structs::StackT;
use zeroboot_vmm::layout::USER_END;
use zeroboot_vmm::vcpu::USER_RFLAGS;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::{Sandbox, SandboxError};
use crate::task::{SIG_DFL, SIG_IGN};

const SA_SIGINFO: u64 = 0x4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;
const UC_FP_XSTATE: u64 = 1;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;

/// `struct sigcontext` (x86-64).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct SigContext {
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rax: u64,
    rcx: u64,
    rsp: u64,
    rip: u64,
    eflags: u64,
    cs: u16,
    gs: u16,
    fs: u16,
    ss: u16,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved1: [u64; 8],
}

/// The kernel's `rt_sigframe`: return address, ucontext, siginfo.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct RtSigframe {
    pretcode: u64,
    uc_flags: u64,
    uc_link: u64,
    uc_stack: StackT,
    mcontext: SigContext,
    sigmask: u64,
    info: [u8; 128],
}

/// Default action of a signal.
enum Default_ {
    Terminate,
    Core,
    Ignore,
}

fn default_action(sig: u32) -> Default_ {
    match sig {
        _ if crate::task::default_ignored(sig) => Default_::Ignore,
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => Default_::Core,
        _ => Default_::Terminate,
    }
}

/// Syscalls Linux never restarts after a handler, SA_RESTART or not
/// (they return -ERESTARTNOHAND or -ERESTART_RESTARTBLOCK): sleeps,
/// waits for readiness, for signals, and timed futex waits.
fn never_restarted(nr: u64, regs: &kvm_bindings::kvm_regs) -> bool {
    use zeroboot_abi::sysno::*;
    // The command without FUTEX_PRIVATE_FLAG / FUTEX_CLOCK_REALTIME.
    const FUTEX_CMD_MASK: u64 = 0x7f;
    match nr {
        NANOSLEEP | CLOCK_NANOSLEEP | POLL | PPOLL | SELECT | PSELECT6 | EPOLL_WAIT
        | EPOLL_PWAIT | EPOLL_PWAIT2 | RT_SIGSUSPEND | PAUSE | RT_SIGTIMEDWAIT => true,
        // FUTEX_WAIT (0) / WAIT_BITSET (9) with a timeout.
        FUTEX => matches!(regs.rsi & FUTEX_CMD_MASK, 0 | 9) && regs.r10 != 0,
        _ => false,
    }
}

fn siginfo(sig: u32, code: i32, addr: u64, pid: u32) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
    b[8..12].copy_from_slice(&code.to_le_bytes());
    if matches!(sig, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP) && code > 0 {
        b[16..24].copy_from_slice(&addr.to_le_bytes());
    } else {
        b[16..20].copy_from_slice(&pid.to_le_bytes());
    }
    b
}

impl Sandbox {
    /// Whether the current thread has a raised signal it does not block.
    pub(super) fn signal_ready(&self) -> bool {
        self.k.exit.is_none()
            && self.k.proc.dead.is_none()
            && self
                .k
                .threads
                .get(&self.k.current)
                .is_some_and(|t| (self.k.proc.pending | t.pending) & !t.sigmask != 0)
    }

    /// Act on raised, unblocked signals (after a syscall returned).
    pub(super) fn deliver_pending(&mut self) -> Result<(), SandboxError> {
        loop {
            if self.k.exit.is_some() || self.k.proc.dead.is_some() {
                return Ok(());
            }
            let Some(t) = self.k.threads.get(&self.k.current) else {
                return Ok(());
            };
            let ready = (self.k.proc.pending | t.pending) & !t.sigmask;
            if ready == 0 {
                return Ok(());
            }
            let sig = ready.trailing_zeros() + 1;
            let info = crate::siginfo::take(&mut self.k, sig);
            self.signal(sig, info, format!("raised by the program ({})", name(sig)))?;
        }
    }

    /// The current thread's blocked syscall was interrupted by a signal:
    /// EINTR, or a restart, as Linux decides for the signal it acts on
    /// first. A handled signal restarts the call after the handler when
    /// its action has SA_RESTART and the call is restartable; a signal
    /// discarded on delivery restarts it at once (as if never sent).
    pub(super) fn interrupted(&mut self) -> Result<(), SandboxError> {
        let regs = *self.vcpu.regs();
        let nr = regs.rax;
        let ready = self
            .k
            .threads
            .get(&self.k.current)
            .map_or(0, |t| (self.k.proc.pending | t.pending) & !t.sigmask);
        if ready == 0 {
            self.k.thread_mut().state =
                crate::task::ThreadState::Runnable(crate::task::Resume::Retry);
            return Ok(());
        }
        let sig = ready.trailing_zeros() + 1;
        let act = self.k.proc.sigactions[sig as usize - 1];
        if self.k.proc.ignores_signal(sig) {
            let bit = 1u64 << (sig - 1);
            self.k.proc.pending &= !bit;
            crate::siginfo::discard(&mut self.k.proc.queued, bit);
            let t = self.k.thread_mut();
            t.pending &= !bit;
            crate::siginfo::discard(&mut t.queued, bit);
            self.k.thread_mut().state =
                crate::task::ThreadState::Runnable(crate::task::Resume::Retry);
            return Ok(());
        }
        let handled = act.handler != SIG_DFL;
        if handled && act.flags & SA_RESTART != 0 && !never_restarted(nr, &regs) {
            self.finish_syscall_then(nr, true)
        } else {
            self.finish_syscall_then(zeroboot_abi::Errno::EINTR.as_return(), false)
        }
    }

    /// A synchronous signal from a fault: handled if the program has a
    /// handler and does not block it, otherwise fatal.
    pub(super) fn force_signal(
        &mut self,
        sig: u32,
        code: i32,
        addr: u64,
        reason: String,
    ) -> Result<(), SandboxError> {
        let blocked = self.k.thread_mut().sigmask & (1 << (sig - 1)) != 0;
        let h = self.k.proc.sigactions[sig as usize - 1].handler;
        if blocked || h == SIG_IGN || h == SIG_DFL {
            self.kill(sig, reason);
            return Ok(());
        }
        let info = siginfo(sig, code, addr, self.k.proc.pid);
        self.signal(sig, info, reason)
    }

    fn signal(&mut self, sig: u32, info: [u8; 128], reason: String) -> Result<(), SandboxError> {
        let act = self.k.proc.sigactions[sig as usize - 1];
        match act.handler {
            SIG_IGN => Ok(()),
            SIG_DFL => {
                match default_action(sig) {
                    Default_::Ignore => {}
                    Default_::Terminate | Default_::Core => self.kill(sig, reason),
                }
                Ok(())
            }
            handler => {
                if !self.setup_frame(sig, info, handler, act.flags, act.restorer, act.mask)? {
                    self.kill(
                        SIGSEGV,
                        format!("cannot deliver {}: bad signal stack", name(sig)),
                    );
                }
                Ok(())
            }
        }
    }

    /// Build the frame and enter the handler. `false` if the frame cannot
    /// be written (the caller kills the program, as Linux does).
    fn setup_frame(
        &mut self,
        sig: u32,
        info: [u8; 128],
        handler: u64,
        flags: u64,
        restorer: u64,
        mask: u64,
    ) -> Result<bool, SandboxError> {
        if flags & SA_RESTORER == 0 || restorer == 0 {
            return Ok(false);
        }
        let r = *self.vcpu.regs();
        // After rt_sigsuspend, the frame keeps the mask from before it.
        let old_mask = {
            let t = self.k.thread_mut();
            t.saved_sigmask.take().unwrap_or(t.sigmask)
        };
        let alt = self.k.thread_mut().altstack;
        let on_alt =
            alt.ss_flags & SS_DISABLE == 0 && r.rsp > alt.ss_sp && r.rsp <= alt.ss_sp + alt.ss_size;
        let mut sp = if flags & SA_ONSTACK != 0 && alt.ss_flags & SS_DISABLE == 0 && !on_alt {
            alt.ss_sp + alt.ss_size
        } else {
            r.rsp.wrapping_sub(128)
        };
        // FPU state first, 64-byte aligned.
        let xsize = self.xsave_size;
        sp = sp.wrapping_sub(xsize + 4) & !63;
        let fpstate = sp;
        let frame_size = std::mem::size_of::<RtSigframe>() as u64;
        sp = (sp.wrapping_sub(frame_size) & !15).wrapping_sub(8);
        if !(0x1000..USER_END).contains(&sp) {
            return Ok(false);
        }
        let mut xsave = self.vcpu.xsave_bytes()?;
        xsave.truncate(xsize as usize);
        // The software-reserved bytes that mark an XSAVE frame.
        xsave[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        xsave[468..472].copy_from_slice(&((xsize + 4) as u32).to_le_bytes());
        let xcr0 = zeroboot_vmm::Host::get().map(|h| h.xcr0).unwrap_or(3);
        xsave[472..480].copy_from_slice(&xcr0.to_le_bytes());
        xsave[480..484].copy_from_slice(&(xsize as u32).to_le_bytes());
        xsave.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        let mc = SigContext {
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rdi: r.rdi,
            rsi: r.rsi,
            rbp: r.rbp,
            rbx: r.rbx,
            rdx: r.rdx,
            rax: r.rax,
            rcx: r.rcx,
            rsp: r.rsp,
            rip: r.rip,
            eflags: r.rflags,
            cs: 0x33,
            gs: 0,
            fs: 0,
            ss: 0x2b,
            err: 0,
            trapno: 0,
            oldmask: old_mask,
            // A fault's address is the siginfo's si_addr.
            cr2: if sig == SIGSEGV {
                u64::from_le_bytes(info[16..24].try_into().unwrap_or_default())
            } else {
                0
            },
            fpstate,
            reserved1: [0; 8],
        };
        let mut uc_stack = alt;
        if on_alt {
            uc_stack.ss_flags |= SS_ONSTACK;
        }
        let frame = RtSigframe {
            pretcode: restorer,
            uc_flags: UC_FP_XSTATE,
            uc_link: 0,
            uc_stack,
            mcontext: mc,
            sigmask: old_mask,
            info,
        };
        if self.k.mm.write(&self.mem, fpstate, &xsave).is_err()
            || self.k.mm.write_obj(&self.mem, sp, &frame).is_err()
        {
            return Ok(false);
        }
        let mut newmask = self.k.thread_mut().sigmask | mask;
        if flags & SA_NODEFER == 0 {
            newmask |= 1 << (sig - 1);
        }
        self.k.thread_mut().sigmask = newmask & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)));
        if flags & SA_RESETHAND != 0 {
            self.k.proc.sigactions[sig as usize - 1] =
                zeroboot_abi::structs::KernelSigaction::new_zeroed();
        }
        let regs = self.vcpu.regs_mut();
        regs.rdi = sig as u64;
        regs.rsi = sp + std::mem::offset_of!(RtSigframe, info) as u64;
        regs.rdx = sp + std::mem::offset_of!(RtSigframe, uc_flags) as u64;
        regs.rax = 0;
        regs.rip = handler;
        regs.rsp = sp;
        // DF and TF cleared for the handler, as Linux does.
        regs.rflags &= !(0x400 | 0x100);
        let _ = flags & SA_SIGINFO;
        self.vcpu.resume_user();
        Ok(true)
    }

    /// rt_sigreturn: restore the context saved by `setup_frame`.
    pub(super) fn sigreturn(&mut self) -> Result<(), SandboxError> {
        let rsp = self.vcpu.regs().rsp;
        let frame_at = rsp.wrapping_sub(8);
        let frame: RtSigframe = match self.k.mm.read_obj(&self.mem, frame_at) {
            Ok(f) => f,
            Err(_) => {
                self.kill(SIGSEGV, "rt_sigreturn with a bad signal frame".into());
                return Ok(());
            }
        };
        let mc = frame.mcontext;
        if mc.fpstate != 0 {
            let size = self.xsave_size as usize;
            match self.k.mm.read_vec(&self.mem, mc.fpstate, size) {
                Ok(x) => {
                    if self.vcpu.set_xsave_bytes(&x).is_err() {
                        self.kill(SIGSEGV, "rt_sigreturn with invalid FPU state".into());
                        return Ok(());
                    }
                }
                Err(_) => {
                    self.kill(SIGSEGV, "rt_sigreturn with a bad FPU state pointer".into());
                    return Ok(());
                }
            }
        }
        self.k.thread_mut().sigmask =
            frame.sigmask & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)));
        let r = self.vcpu.regs_mut();
        r.r8 = mc.r8;
        r.r9 = mc.r9;
        r.r10 = mc.r10;
        r.r11 = mc.r11;
        r.r12 = mc.r12;
        r.r13 = mc.r13;
        r.r14 = mc.r14;
        r.r15 = mc.r15;
        r.rdi = mc.rdi;
        r.rsi = mc.rsi;
        r.rbp = mc.rbp;
        r.rbx = mc.rbx;
        r.rdx = mc.rdx;
        r.rax = mc.rax;
        r.rcx = mc.rcx;
        r.rsp = mc.rsp;
        r.rip = mc.rip;
        // One mask for every way back to ring 3 (the vCPU's syscall and
        // exception returns use it too).
        r.rflags = (r.rflags & !USER_RFLAGS) | (mc.eflags & USER_RFLAGS) | 0x202;
        self.vcpu.resume_user();
        self.deliver_pending()
    }
}
