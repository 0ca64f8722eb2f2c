//! A KVM virtual machine: the VM fd, its one memory slot, and the host facts
//! (supported CPUID, XCR0) gathered once per process.

use std::sync::OnceLock;

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VmFd};

use crate::memory::{GuestMemory, MemoryError, Reserved};
use crate::reaper::Deferred;
use crate::vcpu::Vcpu;

/// Errors of VM creation.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm (is KVM available and are you allowed to use it?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("KVM lacks a capability zeroboot needs: {0}")]
    MissingCap(&'static str),
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION failed")]
    MemorySlot(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_DIRTY_LOG failed")]
    DirtyLog(#[source] kvm_ioctls::Error),
    #[error("KVM is unavailable: {0}")]
    Unavailable(String),
    #[error("creating the vCPU failed")]
    Vcpu(#[from] crate::vcpu::VcpuError),
    #[error("guest memory")]
    Memory(#[from] crate::memory::MemoryError),
    #[error("holding host address space for guest memory")]
    Reserve(#[source] std::io::Error),
}

/// Process-wide KVM state.
pub struct Host {
    kvm: Kvm,
    cpuid: CpuId,
    /// XCR0 the guest gets: the host's supported set limited to x87, SSE,
    /// AVX and AVX-512 (no AMX: its state does not fit the 4 KiB XSAVE area).
    pub xcr0: u64,
    /// The idle vCPU that keeps KVM's no-APIC static key enabled.
    _pin: Option<(VmFd, kvm_ioctls::VcpuFd)>,
    /// The guest TSC's frequency, where KVM tells it.
    tsc_khz: Option<u32>,
    /// Whether a vCPU's TSC offset can be set to zero (see tsc.rs).
    tsc_offset_settable: bool,
}

// SAFETY: `Kvm` is a file descriptor and `CpuId` plain data; both are only
// read after initialisation.
unsafe impl Sync for Host {}
// SAFETY: as above; moving the fd between threads is fine.
unsafe impl Send for Host {}

static HOST: OnceLock<Result<Host, String>> = OnceLock::new();

impl Host {
    /// The process's KVM handle, opened on first use.
    pub fn get() -> Result<&'static Host, VmError> {
        HOST.get_or_init(|| Host::open().map_err(|e| error_chain(&e)))
            .as_ref()
            .map_err(|m| VmError::Unavailable(m.clone()))
    }

    fn open() -> Result<Host, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let v = kvm.get_api_version();
        if v != 12 {
            return Err(VmError::ApiVersion(v));
        }
        for (cap, name) in [
            (kvm_ioctls::Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
            (kvm_ioctls::Cap::Xsave, "KVM_CAP_XSAVE"),
            (kvm_ioctls::Cap::Xcrs, "KVM_CAP_XCRS"),
            (kvm_ioctls::Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)?;
        let mut supported_xcr0 = 0u64;
        for e in cpuid.as_slice() {
            if e.function == 0xd && e.index == 0 {
                supported_xcr0 = (e.eax as u64) | ((e.edx as u64) << 32);
            }
        }
        let xcr0 = supported_xcr0 & 0xe7 | 1;
        // A vCPU without an in-kernel irqchip flips a kernel static key
        // (kvm_has_noapic_vcpu) when the first is created and the last
        // destroyed, and each flip patches kernel text: keep one idle vCPU
        // for the life of the process so forks never pay for it.
        let pin = kvm
            .create_vm()
            .and_then(|vm| vm.create_vcpu(0).map(|vcpu| (vm, vcpu)))
            .ok();
        let tsc_khz = pin
            .as_ref()
            .and_then(|(_, v)| v.get_tsc_khz().ok())
            .filter(|&k| k > 0);
        let tsc_offset_settable = pin
            .as_ref()
            .is_some_and(|(_, v)| crate::tsc::zero_offset_works(v));
        Ok(Host {
            kvm,
            cpuid,
            xcr0,
            _pin: pin,
            tsc_khz,
            tsc_offset_settable,
        })
    }

    /// The guest TSC's frequency in kHz, where KVM tells it.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.tsc_khz
    }

    /// Whether vCPUs get a zero TSC offset.
    pub fn tsc_offset_settable(&self) -> bool {
        self.tsc_offset_settable
    }

    /// CPUID.1:EDX, what Linux reports as AT_HWCAP.
    pub fn hwcap(&self) -> u64 {
        self.cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 1)
            .map(|e| e.edx as u64)
            .unwrap_or(0)
    }

    /// Bytes of the XSAVE area for the guest's XCR0 (standard format), as
    /// signal frames carry it.
    pub fn xsave_size(&self) -> u64 {
        let mut size = 576u64; // legacy area + header
        for e in self.cpuid.as_slice() {
            if e.function == 0xd && (2..64).contains(&e.index) && self.xcr0 & (1 << e.index) != 0 {
                size = size.max(e.ebx as u64 + e.eax as u64);
            }
        }
        size
    }

    pub fn cpuid(&self) -> &CpuId {
        &self.cpuid
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Ask KVM not to write-protect pages as it hands the dirty log over
/// (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2); false where it cannot. It only
/// changes slots registered with the dirty log.
fn enable_manual_log(host: &Host, fd: &VmFd) -> bool {
    if host
        .kvm
        .check_extension_raw(kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.into())
        <= 0
    {
        return false;
    }
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        args: [
            kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE as u64,
            0,
            0,
            0,
        ],
        ..Default::default()
    };
    fd.enable_cap(&cap).is_ok()
}

/// A VM and its vCPU with everything done that does not depend on guest
/// memory: `KVM_CREATE_VM`, the manual dirty-log protection, the vCPU
/// with its CPUID, control registers, MSRs, XCR0, FPU and TSC. No memory
/// slot: the VM's user adds its own memory. Every VM zeroboot forks into
/// starts as one, made on the spot or ahead of need by `crate::pool`, so
/// a pooled VM is the same as a fresh one; one is never reused.
pub struct Blank {
    fd: VmFd,
    /// The manual dirty-log protection is on.
    manual_log: bool,
    vcpu: Vcpu,
    /// Its guest memory's place, when made for a shape (`create_for`).
    place: Option<Place>,
}

/// What a VM made ahead of need can be made for: guest memory of `size`
/// bytes with its first `registered` bytes in one KVM slot, with or
/// without the dirty log (`Vm::over`'s first slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub size: u64,
    pub registered: u64,
    pub log_dirty: bool,
}

impl Shape {
    /// The shape `Vm::with_vcpu(mem, initial, log_dirty)` gives a VM over
    /// memory of `size` bytes.
    pub fn new(size: u64, initial: u64, log_dirty: bool) -> Shape {
        Shape {
            size,
            registered: first_slot(initial).min(size),
            log_dirty,
        }
    }

    /// Whether a VM of this shape serves a request for `want`: the same
    /// memory size and log, and at least as much registered.
    pub fn serves(&self, want: &Shape) -> bool {
        self.size == want.size
            && self.log_dirty == want.log_dirty
            && self.registered >= want.registered
    }
}

/// Host address space held for a VM's guest memory, with its first slot
/// registered over it (see `memory::Reserved`).
struct Place {
    held: Reserved,
    shape: Shape,
}

impl Blank {
    pub fn create(host: &Host) -> Result<Blank, VmError> {
        let fd = host.kvm.create_vm().map_err(VmError::CreateVm)?;
        let manual_log = enable_manual_log(host, &fd);
        let vcpu = Vcpu::new(&fd, host)?;
        Ok(Blank {
            fd,
            manual_log,
            vcpu,
            place: None,
        })
    }

    /// As `create`, with host address space held for guest memory of
    /// `shape` and its first slot registered over it: a VM that
    /// `Vm::with_memory` finishes without a KVM memory-slot change.
    pub fn create_for(host: &Host, shape: Shape) -> Result<Blank, VmError> {
        if shape.registered > shape.size || shape.registered == 0 {
            return Err(VmError::Memory(MemoryError::BadSize(shape.registered)));
        }
        let mut b = Blank::create(host)?;
        let held = Reserved::new(shape.size).map_err(VmError::Reserve)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: if shape.log_dirty {
                kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: 0,
            memory_size: shape.registered,
            userspace_addr: held.addr(),
        };
        // SAFETY: the region lies inside `held` (checked above), an
        // inaccessible mapping the blank keeps; no vCPU runs before guest
        // memory is mapped in its place (`Vm::with_memory`), and a blank
        // dropped unused never runs.
        unsafe { b.fd.set_user_memory_region(region) }.map_err(VmError::MemorySlot)?;
        b.place = Some(Place { held, shape });
        Ok(b)
    }

    /// The shape it was made for, if any.
    pub fn shape(&self) -> Option<Shape> {
        self.place.as_ref().map(|p| p.shape)
    }
}

/// The first slot `Vm::over` registers for `initial` bytes (before the
/// memory's size caps it).
fn first_slot(initial: u64) -> u64 {
    initial.max(SLOT_CHUNK).div_ceil(SLOT_CHUNK) * SLOT_CHUNK
}

/// Guest memory is registered with KVM in slots of this size as it comes
/// into use: KVM's per-slot metadata (rmaps) costs time and kernel memory
/// in proportion to slot size, at creation and at teardown.
pub const SLOT_CHUNK: u64 = 32 << 20;

/// A VM whose guest memory is registered in slots from address 0 up.
pub struct Vm {
    /// Closed by the reaper (`crate::reaper`) once the VM is dropped.
    fd: Deferred<VmFd>,
    registered: u64,
    next_slot: u32,
    /// Slots are registered with KVM's dirty log (for resets).
    log_dirty: bool,
    /// KVM does not write-protect pages as it hands the log over
    /// (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): a page written once stays
    /// writable, so the caller must treat it as written from then on.
    sticky: bool,
    /// (slot, guest-physical start, size) of every slot.
    slots: Vec<(u32, u64, u64)>,
}

impl Vm {
    /// Create a VM over `mem` with at least the first `initial` bytes
    /// registered. The caller keeps `mem` alive for as long as the VM.
    pub fn new(mem: &GuestMemory, initial: u64) -> Result<Vm, VmError> {
        let host = Host::get()?;
        let fd = host.kvm.create_vm().map_err(VmError::CreateVm)?;
        Vm::over(fd, false, mem, initial, false)
    }

    /// As `new`, with the VM's vCPU (no `create_vcpu`): both taken from the
    /// process's pool of VMs made ahead (`crate::pool`) when it holds one,
    /// else made now the same way. With `log_dirty` KVM records every page
    /// the guest writes (see `take_dirty_log`).
    pub fn with_vcpu(
        mem: &GuestMemory,
        initial: u64,
        log_dirty: bool,
    ) -> Result<(Vm, Vcpu), VmError> {
        Vm::with_vcpu_from(crate::pool::global(), mem, initial, log_dirty)
    }

    /// As `with_vcpu`, from `pool` (none: made now).
    pub fn with_vcpu_from(
        pool: Option<&crate::pool::VmPool>,
        mem: &GuestMemory,
        initial: u64,
        log_dirty: bool,
    ) -> Result<(Vm, Vcpu), VmError> {
        let blank = match pool.and_then(|p| p.take()) {
            Some(b) => b,
            None => Blank::create(Host::get()?)?,
        };
        let vm = Vm::over(
            blank.fd,
            log_dirty && blank.manual_log,
            mem,
            initial,
            log_dirty,
        )?;
        Ok((vm, blank.vcpu))
    }

    /// A VM with its vCPU over guest memory that `make` maps, with the
    /// first `shape.registered` bytes registered. The memory is mapped in
    /// the place of a VM the pool made for this shape when it holds one
    /// (`make` gets the place; the slot is already registered there), so
    /// that the fork does not wait for a memory-slot change; else, or if
    /// the place was taken meanwhile, `make` gets none and the VM is made
    /// as by `with_vcpu`.
    pub fn with_memory(
        shape: Shape,
        make: impl Fn(Option<Reserved>) -> Result<GuestMemory, MemoryError>,
    ) -> Result<(GuestMemory, Vm, Vcpu), VmError> {
        Vm::with_memory_from(crate::pool::global(), shape, make)
    }

    /// As `with_memory`, from `pool` (none: made now).
    pub fn with_memory_from(
        pool: Option<&crate::pool::VmPool>,
        shape: Shape,
        make: impl Fn(Option<Reserved>) -> Result<GuestMemory, MemoryError>,
    ) -> Result<(GuestMemory, Vm, Vcpu), VmError> {
        if let Some(blank) = pool.and_then(|p| p.take_for(shape)) {
            let Blank {
                fd,
                manual_log,
                vcpu,
                place,
            } = blank;
            if let Some(Place { held, shape: made }) = place {
                let addr = held.addr();
                match make(Some(held)) {
                    Ok(mem) if mem.host_address() == addr && mem.size() == made.size => {
                        let vm = Vm {
                            fd: Deferred::new(fd),
                            registered: made.registered,
                            next_slot: 1,
                            log_dirty: made.log_dirty,
                            sticky: made.log_dirty && manual_log,
                            slots: vec![(0, 0, made.registered)],
                        };
                        return Ok((mem, vm, vcpu));
                    }
                    // Not where the slot is (never the case): the VM is
                    // dropped without having run.
                    Ok(_) => {}
                    // Another mapping got into the place: the VM (never
                    // run) is dropped, and the memory made anew.
                    Err(MemoryError::Taken) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mem = make(None)?;
        let (vm, vcpu) = Vm::with_vcpu_from(pool, &mem, shape.registered, shape.log_dirty)?;
        Ok((mem, vm, vcpu))
    }

    /// A VM on `fd` (no slot yet) with at least the first `initial` bytes
    /// of `mem` registered.
    fn over(
        fd: VmFd,
        sticky: bool,
        mem: &GuestMemory,
        initial: u64,
        log_dirty: bool,
    ) -> Result<Vm, VmError> {
        let mut vm = Vm {
            fd: Deferred::new(fd),
            registered: 0,
            next_slot: 0,
            log_dirty,
            sticky,
            slots: Vec::new(),
        };
        vm.add_slot(mem, first_slot(initial).min(mem.size()))?;
        Ok(vm)
    }

    fn add_slot(&mut self, mem: &GuestMemory, len: u64) -> Result<(), VmError> {
        let region = kvm_userspace_memory_region {
            slot: self.next_slot,
            flags: if self.log_dirty {
                kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: self.registered,
            memory_size: len,
            userspace_addr: mem.host_address() + self.registered,
        };
        // SAFETY: the region is a part of `mem`'s live mapping (checked
        // against its size by the callers); the caller keeps `mem` alive
        // while the VM uses it.
        unsafe { self.fd.set_user_memory_region(region) }.map_err(VmError::MemorySlot)?;
        self.slots.push((self.next_slot, self.registered, len));
        self.registered += len;
        self.next_slot += 1;
        Ok(())
    }

    /// Make sure guest-physical memory up to `end` is registered.
    pub fn grow(&mut self, mem: &GuestMemory, end: u64) -> Result<(), VmError> {
        while self.registered < end.min(mem.size()) {
            let len = SLOT_CHUNK.min(mem.size() - self.registered);
            self.add_slot(mem, len)?;
        }
        Ok(())
    }

    /// Whether pages stay writable once logged (see the field).
    pub fn sticky_dirty(&self) -> bool {
        self.sticky
    }

    /// Guest-physical page numbers the guest wrote since the last call
    /// (KVM clears its log as it hands it over; unless `sticky_dirty`, it
    /// also write-protects them again).
    pub fn take_dirty_log(&self) -> Result<Vec<u64>, VmError> {
        let mut out = Vec::new();
        if !self.log_dirty {
            return Ok(out);
        }
        for &(slot, start, len) in &self.slots {
            let bitmap = self
                .fd
                .get_dirty_log(slot, len as usize)
                .map_err(VmError::DirtyLog)?;
            let first = start / crate::layout::PAGE_SIZE;
            for (i, w) in bitmap.iter().enumerate() {
                let mut bits = *w;
                while bits != 0 {
                    let b = bits.trailing_zeros() as u64;
                    out.push(first + i as u64 * 64 + b);
                    bits &= bits - 1;
                }
            }
        }
        Ok(out)
    }

    /// Write-protect `pages` (guest-physical page numbers) again and clear
    /// their dirty bits (KVM_CLEAR_DIRTY_LOG), so that only pages written
    /// from now on are logged. Only meaningful when `sticky_dirty`.
    pub fn reprotect(&self, pages: &std::collections::BTreeSet<u64>) -> Result<(), VmError> {
        // _IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log): not in kvm-ioctls.
        const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xc018_aec0;
        if !self.sticky || pages.is_empty() {
            return Ok(());
        }
        for &(slot, start, len) in &self.slots {
            let first = start / crate::layout::PAGE_SIZE;
            let n = len / crate::layout::PAGE_SIZE;
            let mut bitmap = vec![0u64; n.div_ceil(64) as usize];
            let mut any = false;
            for &p in pages.range(first..first + n) {
                let i = p - first;
                bitmap[(i / 64) as usize] |= 1 << (i % 64);
                any = true;
            }
            if !any {
                continue;
            }
            let mut arg = kvm_bindings::kvm_clear_dirty_log {
                slot,
                num_pages: n as u32,
                first_page: 0,
                ..Default::default()
            };
            arg.__bindgen_anon_1.dirty_bitmap = bitmap.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: `arg` is a valid kvm_clear_dirty_log whose bitmap
            // holds `num_pages` bits and lives across the call; KVM only
            // reads it.
            let r = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&*self.fd),
                    KVM_CLEAR_DIRTY_LOG,
                    &arg,
                )
            };
            if r != 0 {
                return Err(VmError::DirtyLog(kvm_ioctls::Error::last()));
            }
        }
        Ok(())
    }

    /// Bytes of guest-physical memory registered.
    pub fn registered(&self) -> u64 {
        self.registered
    }

    /// Create the vCPU with the boot state (long mode, ring 0 skeleton).
    pub fn create_vcpu(&self) -> Result<Vcpu, VmError> {
        Ok(Vcpu::new(&self.fd, Host::get()?)?)
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
