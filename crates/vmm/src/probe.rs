//! A bare guest running hand-assembled ring-3 code, without any kernel
//! above it: used to test the KVM mechanics and to benchmark raw exit costs.

use crate::layout::{FIRST_FREE_GPA, PAGE_SIZE, PML4_GPA};
use crate::paging::{index, pte};
use crate::{boot, FrameAllocator, GuestMemory, PageTables, Vcpu, Vm, VmPool};

/// Where the code page is mapped.
pub const CODE: u64 = 0x40_0000;

struct Bump(u64);

impl FrameAllocator for Bump {
    fn alloc_table_frame(&mut self, _mem: &GuestMemory) -> Option<u64> {
        let f = self.0;
        self.0 += PAGE_SIZE;
        Some(f)
    }
}

/// A VM with one page of user code at [`CODE`], ready to run it.
pub struct RawGuest {
    pub mem: GuestMemory,
    pub vcpu: Vcpu,
    pub pt: PageTables,
    _vm: Vm,
    alloc: Bump,
}

impl RawGuest {
    pub fn new(code: &[u8]) -> Result<RawGuest, crate::VmError> {
        RawGuest::new_in(None, code)
    }

    /// As `new`, in a VM from `pool` when it holds one.
    pub fn new_in(pool: Option<&VmPool>, code: &[u8]) -> Result<RawGuest, crate::VmError> {
        let mem =
            GuestMemory::new(32 << 20).map_err(|e| crate::VmError::Unavailable(e.to_string()))?;
        boot::write_boot_structures(&mem)
            .map_err(|e| crate::VmError::Unavailable(e.to_string()))?;
        let (vm, vcpu) = Vm::with_vcpu_from(pool, &mem, mem.size(), false)?;
        let mut g = RawGuest {
            mem,
            vcpu,
            pt: PageTables::new(PML4_GPA),
            _vm: vm,
            alloc: Bump(FIRST_FREE_GPA),
        };
        let frame = g.frame();
        g.mem
            .write(frame, code)
            .map_err(|e| crate::VmError::Unavailable(e.to_string()))?;
        g.map(CODE, frame, pte::PRESENT | pte::USER);
        let r = g.vcpu.regs_mut();
        r.rip = CODE;
        r.rflags = 0x2;
        g.vcpu.resume_user();
        Ok(g)
    }

    /// A fresh frame.
    pub fn frame(&mut self) -> u64 {
        let f = self.alloc.0;
        self.alloc.0 += PAGE_SIZE;
        f
    }

    /// Guest-physical address of the leaf entry for `va` (tables created).
    pub fn pte_gpa(&mut self, va: u64) -> u64 {
        match self.pt.table_for_or_create(&self.mem, &mut self.alloc, va) {
            Ok(t) => t + index(va, 1) * 8,
            Err(_) => 0,
        }
    }

    /// Map `va` to `frame` with `flags` (a host write: new entries only).
    pub fn map(&mut self, va: u64, frame: u64, flags: u64) {
        let e = self.pte_gpa(va);
        let _ = self.mem.write_u64(e, frame | flags);
    }
}
