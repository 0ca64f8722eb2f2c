//! The vCPU: boot state, the run loop turning KVM exits into typed events,
//! and the return to ring 3.
//!
//! Registers travel through `kvm_run`'s sync-regs area: KVM stores the GPRs
//! there on every exit and loads whatever we mark dirty on the next
//! `KVM_RUN`, so a syscall round trip costs one ioctl.

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcr, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd, VmFd};

use std::ptr::NonNull;

use crate::boot::{self, has_error_code};
use crate::kick::ExitFlag;
use crate::layout::*;
use crate::memory::GuestMemory;
use crate::reaper::Deferred;
use crate::tsc::{self, TscInfo};
use crate::vm::Host;

/// Errors of vCPU set-up and running.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM ioctl {0} failed")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    #[error("the PTE writer did not finish: {0}")]
    PteWriter(String),
    #[error("guest memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
}

fn io(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |e| VcpuError::Ioctl(name, e)
}

/// The `syscall` entry point (MSR_LSTAR).
fn syscall_entry() -> u64 {
    physmap(STUBS_GPA + stubs::SYSCALL)
}

/// The RFLAGS bits a program may set (CF PF AF ZF SF TF DF OF AC ID), as
/// Linux lets sigreturn and ptrace set them; IOPL, NT, VM and the
/// interrupt flag stay the VMM's (IF always on in ring 3).
pub const USER_RFLAGS: u64 = 0x24_0dd5;

/// What the CPU pushed for an exception, plus CR2 for page faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExceptionFrame {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub cr2: u64,
}

impl ExceptionFrame {
    /// Whether the exception interrupted ring 3.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Why `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Ring 3 executed `syscall`. Number and arguments are in the registers;
    /// RCX holds the return address and R11 the user RFLAGS.
    Syscall,
    /// A CPU exception in ring 3.
    Exception(ExceptionFrame),
    /// An exception in ring 0: a VMM bug or a corrupted guest, never the
    /// program's doing; the sandbox must be killed.
    KernelException(ExceptionFrame),
    /// The PTE writer finished its list.
    PteWriterDone,
    /// `KVM_RUN` was interrupted by a signal (a timeout or cancellation kick).
    Kicked,
    /// Anything else KVM reported (shutdown, emulation failure, ...).
    Unexpected(String),
}

/// The vCPU state a template keeps and a fork starts from. Everything else
/// (GDT, IDT, MSRs, CPUID, XCR0) is the same for every VM.
#[derive(Clone, Debug)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
    /// Page-table root of the running process.
    pub cr3: u64,
    /// XSAVE area (standard format, 4 KiB).
    pub xsave: Vec<u8>,
}

/// The guest's one vCPU.
pub struct Vcpu {
    /// Closed (with its `kvm_run` mapping) by the reaper
    /// (`crate::reaper`) once the vCPU is dropped.
    fd: Deferred<VcpuFd>,
    tsc: Option<TscInfo>,
    /// The next `run` returns to ring 3 (a `resume_*` was called).
    to_user: bool,
    /// Exceptions whose delivery a kick interrupted, dropped.
    dropped_exceptions: u64,
    kernel_sregs: kvm_sregs,
    user_sregs: kvm_sregs,
    /// `kvm_run.immediate_exit`, raised by kickers (`kick.rs`).
    exit_flag: ExitFlag,
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // Before `fd` (and its `kvm_run` mapping) goes.
        self.exit_flag.detach();
    }
}

impl Vcpu {
    pub(crate) fn new(vm: &VmFd, host: &Host) -> Result<Vcpu, VcpuError> {
        let mut fd = vm.create_vcpu(0).map_err(io("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(host.cpuid()).map_err(io("KVM_SET_CPUID2"))?;
        let base = fd.get_sregs().map_err(io("KVM_GET_SREGS"))?;
        let kernel_sregs = boot::kernel_sregs(&base);
        fd.set_sregs(&kernel_sregs).map_err(io("KVM_SET_SREGS"))?;
        let entries: Vec<kvm_msr_entry> = boot::syscall_msrs()
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| VcpuError::Ioctl("KVM_SET_MSRS", kvm_ioctls::Error::new(libc::E2BIG)))?;
        let n = fd.set_msrs(&msrs).map_err(io("KVM_SET_MSRS"))?;
        if n != entries.len() {
            return Err(VcpuError::Ioctl(
                "KVM_SET_MSRS",
                kvm_ioctls::Error::new(libc::EINVAL),
            ));
        }
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0] = kvm_xcr {
            xcr: 0,
            reserved: 0,
            value: host.xcr0,
        };
        fd.set_xcrs(&xcrs).map_err(io("KVM_SET_XCRS"))?;
        // The FPU state a fresh Linux process starts with.
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        fd.set_fpu(&fpu).map_err(io("KVM_SET_FPU"))?;
        fd.set_sync_valid_reg(SyncReg::Register);
        let user_sregs = boot::user_sregs(&kernel_sregs);
        let tsc = tsc::attach(&fd, host);
        let exit_flag = ExitFlag::new(NonNull::from(&mut fd.get_kvm_run().immediate_exit));
        Ok(Vcpu {
            fd: Deferred::new(fd),
            tsc,
            to_user: false,
            dropped_exceptions: 0,
            kernel_sregs,
            user_sregs,
            exit_flag,
        })
    }

    /// Run until the next event. After it returns the vCPU is parked in a
    /// ring-0 trampoline; call one of the `resume_*` methods (or change the
    /// registers) before running again.
    pub fn run(&mut self, mem: &GuestMemory) -> Result<Exit, VcpuError> {
        if std::mem::take(&mut self.to_user) {
            if let Some(fault) = self.bad_return() {
                return Ok(Exit::Exception(fault));
            }
        }
        mem.note_run();
        let res = self.fd.run();
        // A kick that came before this point is the caller's to see (it
        // looks at the time before it runs again); a later one must stop
        // the next `KVM_RUN`.
        self.exit_flag.clear();
        let port = match res {
            Ok(VcpuExit::IoOut(port, _)) => port,
            Ok(other) => return Ok(Exit::Unexpected(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.drop_interrupted_exception()?;
                return Ok(Exit::Kicked);
            }
            Err(e) => return Err(VcpuError::Ioctl("KVM_RUN", e)),
        };
        match port {
            ports::SYSCALL => Ok(Exit::Syscall),
            ports::PTE_WRITER_DONE => Ok(Exit::PteWriterDone),
            p if (ports::EXCEPTION_BASE..ports::EXCEPTION_BASE + 32).contains(&p) => {
                let vector = (p - ports::EXCEPTION_BASE) as u8;
                let mut frame = self.exception_frame(mem, vector)?;
                if vector == 14 && frame.from_user() && frame.rip == syscall_entry() {
                    // On PVM hosts `syscall` jumps to LSTAR but stays in
                    // CPL 3, so fetching the supervisor-only stub faults
                    // right there. RCX and R11 were set by `syscall`; only
                    // the stack pointer must come back from the frame.
                    self.regs_mut().rsp = frame.rsp;
                    return Ok(Exit::Syscall);
                }
                if vector == 14 {
                    frame.cr2 = self.fd.get_sregs().map_err(io("KVM_GET_SREGS"))?.cr2;
                }
                if frame.from_user() {
                    Ok(Exit::Exception(frame))
                } else {
                    Ok(Exit::KernelException(frame))
                }
            }
            p => Ok(Exit::Unexpected(format!("out to unknown port {p:#x}"))),
        }
    }

    /// A kick can land while KVM is delivering an exception: the entry that
    /// would have delivered it is cancelled and the exception stays queued
    /// as injected, to be delivered at the next entry whatever the VMM did
    /// to the vCPU meanwhile: into another thread after a switch, with the
    /// CR2 of the sregs the VMM wrote (a guest thread then died of a fault
    /// at address 0 now and then). The exceptions of our guests are faults,
    /// which recur when their instruction runs again (RIP still points at
    /// it), so the VMM drops it and a kicked vCPU is always between
    /// instructions.
    fn drop_interrupted_exception(&mut self) -> Result<(), VcpuError> {
        let mut ev = self
            .fd
            .get_vcpu_events()
            .map_err(io("KVM_GET_VCPU_EVENTS"))?;
        if ev.exception.injected == 0 && ev.exception.pending == 0 {
            return Ok(());
        }
        ev.exception = Default::default();
        // Only what `ev` names is set; the rest (NMI, SMM) is left alone.
        ev.flags = 0;
        self.fd
            .set_vcpu_events(&ev)
            .map_err(io("KVM_SET_VCPU_EVENTS"))?;
        self.dropped_exceptions += 1;
        Ok(())
    }

    /// For tests: leave exception `vector` queued as injected, the state a
    /// kick that interrupts its delivery leaves behind.
    #[doc(hidden)]
    pub fn leave_exception_injected(
        &mut self,
        vector: u8,
        error_code: u32,
    ) -> Result<(), VcpuError> {
        let mut ev = self
            .fd
            .get_vcpu_events()
            .map_err(io("KVM_GET_VCPU_EVENTS"))?;
        ev.exception.injected = 1;
        ev.exception.nr = vector;
        ev.exception.has_error_code = 1;
        ev.exception.error_code = error_code;
        ev.flags = 0;
        self.fd
            .set_vcpu_events(&ev)
            .map_err(io("KVM_SET_VCPU_EVENTS"))
    }

    /// How many exceptions kicks interrupted (see
    /// `drop_interrupted_exception`).
    pub fn dropped_exceptions(&self) -> u64 {
        self.dropped_exceptions
    }

    /// A return to ring 3 at an address ring 3 cannot execute (the kernel
    /// half, or a non-canonical one, as a forged sigreturn frame or RCX
    /// may ask for) faults as the CPU would make it fault there: #PF for a
    /// supervisor page, #GP for a non-canonical address. Checked before
    /// entering, since some CPUs refuse the entry outright instead.
    fn bad_return(&mut self) -> Option<ExceptionFrame> {
        let r = *self.regs();
        if r.rip < USER_END {
            return None;
        }
        let canonical = r.rip >= 0xffff_8000_0000_0000;
        Some(ExceptionFrame {
            vector: if canonical { 14 } else { 13 },
            // present | user | instruction fetch
            error_code: if canonical { 0x15 } else { 0 },
            rip: r.rip,
            cs: self.user_sregs.cs.selector as u64,
            rflags: r.rflags,
            rsp: r.rsp,
            ss: self.user_sregs.ss.selector as u64,
            cr2: if canonical { r.rip } else { 0 },
        })
    }

    fn exception_frame(
        &mut self,
        mem: &GuestMemory,
        vector: u8,
    ) -> Result<ExceptionFrame, VcpuError> {
        let rsp = self.regs().rsp;
        let gpa = rsp.wrapping_sub(PHYSMAP_BASE);
        let mut words = [0u64; 6];
        let n = if has_error_code(vector) { 6 } else { 5 };
        for (i, w) in words.iter_mut().take(n).enumerate() {
            *w = mem.read_u64(gpa + 8 * i as u64)?;
        }
        let w = if n == 6 { &words[1..] } else { &words[..5] };
        Ok(ExceptionFrame {
            vector,
            error_code: if n == 6 { words[0] } else { 0 },
            rip: w[0],
            cs: w[1],
            rflags: w[2],
            rsp: w[3],
            ss: w[4],
            cr2: 0,
        })
    }

    /// The general-purpose registers as of the last exit.
    pub fn regs(&mut self) -> &kvm_regs {
        &self.fd.sync_regs_mut().regs
    }

    /// Mutable registers; changes take effect at the next run.
    pub fn regs_mut(&mut self) -> &mut kvm_regs {
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        &mut self.fd.sync_regs_mut().regs
    }

    /// FS base of the user program (TLS pointer).
    pub fn fs_base(&self) -> u64 {
        self.user_sregs.fs.base
    }

    pub fn set_fs_base(&mut self, base: u64) {
        self.user_sregs.fs.base = base;
    }

    pub fn gs_base(&self) -> u64 {
        self.user_sregs.gs.base
    }

    pub fn set_gs_base(&mut self, base: u64) {
        self.user_sregs.gs.base = base;
    }

    /// Switch address space (the page-table root) for ring 3 and ring 0.
    pub fn set_cr3(&mut self, root: u64) {
        self.user_sregs.cr3 = root;
        self.kernel_sregs.cr3 = root;
    }

    /// Return to ring 3 with the current registers (set RIP/RSP/RFLAGS first).
    pub fn resume_user(&mut self) {
        self.to_user = true;
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        self.fd.sync_regs_mut().sregs = self.user_sregs;
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
    }

    /// Finish a syscall: RAX = `ret`, back to the instruction after
    /// `syscall` with the saved RFLAGS (RCX and R11 stay clobbered, as Linux
    /// leaves them).
    pub fn resume_from_syscall(&mut self, ret: u64) {
        let r = self.regs_mut();
        r.rax = ret;
        r.rip = r.rcx;
        // As sysret, but only the flags ring 3 may set (never IOPL).
        r.rflags = (r.r11 & USER_RFLAGS) | 0x202;
        self.resume_user();
    }

    /// Return to the user context an exception interrupted.
    pub fn resume_from_exception(&mut self, frame: &ExceptionFrame) {
        let r = self.regs_mut();
        r.rip = frame.rip;
        r.rsp = frame.rsp;
        r.rflags = (frame.rflags & USER_RFLAGS) | 0x202;
        self.resume_user();
    }

    /// Run the ring-0 PTE writer over `entries` of (entry virtual address in
    /// the physmap, new value, user address to invlpg). KVM traps each
    /// write, so its shadow of the changed entries is dropped. The user
    /// registers are kept; call a `resume_*` afterwards as usual.
    pub fn run_pte_writer(
        &mut self,
        mem: &GuestMemory,
        entries: &[(u64, u64, u64)],
    ) -> Result<(), VcpuError> {
        if entries.is_empty() {
            return Ok(());
        }
        let saved = *self.regs();
        // The writer runs in ring 0; a pending return to ring 3 waits.
        let to_user = std::mem::take(&mut self.to_user);
        // A kick during the writer is handed on to the caller's next run.
        let mut kicked = false;
        for chunk in entries.chunks(PTE_LIST_CAPACITY) {
            let mut buf = Vec::with_capacity(chunk.len() * PTE_LIST_ENTRY as usize);
            for &(entry, value, va) in chunk {
                buf.extend_from_slice(&entry.to_le_bytes());
                buf.extend_from_slice(&value.to_le_bytes());
                buf.extend_from_slice(&va.to_le_bytes());
            }
            mem.write(PTE_LIST_GPA, &buf)?;
            {
                let r = self.regs_mut();
                r.rip = physmap(STUBS_GPA + stubs::PTE_WRITER);
                r.rdi = physmap(PTE_LIST_GPA);
                r.rcx = chunk.len() as u64;
                r.rsp = physmap(KSTACK_TOP_GPA);
                r.rflags = 0x2;
            }
            self.fd.sync_regs_mut().sregs = self.kernel_sregs;
            self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
            loop {
                match self.run(mem)? {
                    Exit::PteWriterDone => break,
                    // A kick during the writer: finish the list first.
                    Exit::Kicked => kicked = true,
                    other => return Err(VcpuError::PteWriter(format!("{other:?}"))),
                }
            }
        }
        *self.regs_mut() = saved;
        if to_user {
            self.resume_user();
        }
        if kicked {
            self.exit_flag.raise();
        }
        Ok(())
    }

    /// The XSAVE area (standard format, 4 KiB), e.g. for a signal frame.
    pub fn xsave_bytes(&self) -> Result<Vec<u8>, VcpuError> {
        let x = self.fd.get_xsave().map_err(io("KVM_GET_XSAVE"))?;
        Ok(x.region.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    /// Load an XSAVE area (at most 4 KiB; the rest is zero). KVM rejects
    /// invalid contents (reserved bits), which the caller treats as a bad
    /// frame.
    pub fn set_xsave_bytes(&mut self, bytes: &[u8]) -> Result<(), VcpuError> {
        let mut xsave = kvm_xsave::default();
        if bytes.len() > xsave.region.len() * 4 {
            return Err(VcpuError::Ioctl(
                "KVM_SET_XSAVE",
                kvm_ioctls::Error::new(libc::EINVAL),
            ));
        }
        for (i, c) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            xsave.region[i] = u32::from_le_bytes(w);
        }
        // SAFETY: `xsave` is a full legacy `kvm_xsave` (4 KiB region, no
        // trailing extension) and XCR0 is limited to features whose state
        // fits in it, so KVM reads nothing past the struct.
        unsafe { self.fd.set_xsave(&xsave) }.map_err(io("KVM_SET_XSAVE"))
    }

    /// Capture the state a template stores (call while stopped at an exit).
    pub fn save_state(&mut self) -> Result<VcpuState, VcpuError> {
        Ok(VcpuState {
            regs: *self.regs(),
            fs_base: self.user_sregs.fs.base,
            gs_base: self.user_sregs.gs.base,
            cr3: self.user_sregs.cr3,
            xsave: self.xsave_bytes()?,
        })
    }

    /// Load a saved state. The vCPU is then stopped where the template
    /// was; the caller resumes it (e.g. by finishing the parked syscall).
    pub fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuError> {
        self.set_xsave_bytes(&state.xsave)?;
        self.user_sregs.fs.base = state.fs_base;
        self.user_sregs.gs.base = state.gs_base;
        self.set_cr3(state.cr3);
        *self.regs_mut() = state.regs;
        Ok(())
    }

    /// Drop any exception or interrupt KVM has queued for injection (an
    /// exit interrupted by a kick can leave one), so that a reset vCPU
    /// starts clean.
    pub fn clear_events(&mut self) -> Result<(), VcpuError> {
        let ev = kvm_bindings::kvm_vcpu_events::default();
        self.fd
            .set_vcpu_events(&ev)
            .map_err(io("KVM_SET_VCPU_EVENTS"))
    }

    /// How this vCPU's TSC relates to the host's; `None` when unknown
    /// (the vDSO then leaves time to the VMM).
    pub fn tsc(&self) -> Option<TscInfo> {
        self.tsc
    }

    /// Set `immediate_exit`: the next `run` returns `Exit::Kicked` at once
    /// (each `run` clears it again).
    pub fn set_immediate_exit(&mut self, on: bool) {
        if on {
            self.exit_flag.raise();
        } else {
            self.exit_flag.clear();
        }
    }

    /// The `immediate_exit` flag, for a kicker on another thread to raise
    /// before it signals this vCPU's thread, so that the kick is not lost
    /// when it lands outside `KVM_RUN`.
    pub fn exit_flag(&self) -> ExitFlag {
        self.exit_flag.clone()
    }
}
