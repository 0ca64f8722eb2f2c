//! The guest's memory layout: where the VMM puts its ring-0 structures in
//! guest-physical memory and where that memory appears in the guest's
//! virtual address space.
//!
//! Guest-physical (one KVM memory slot at 0, backed by a memfd):
//!
//! | GPA                 | what                                                   |
//! |---------------------|--------------------------------------------------------|
//! | `0x0000`            | unused (a null guest-physical page is never handed out) |
//! | `PML4_GPA`          | the root page table                                    |
//! | `PHYSMAP_PDPT_GPA`  | PDPT of the physmap                                     |
//! | `PHYSMAP_PD_GPA`..  | 2 MiB-page directories of the physmap (1 per GiB)       |
//! | `GDT_GPA`           | GDT                                                    |
//! | `IDT_GPA`           | IDT (256 gates)                                        |
//! | `TSS_GPA`           | 64-bit TSS (RSP0 = top of the ring-0 stack)            |
//! | `STUBS_GPA`         | ring-0 trampolines (exceptions, `syscall`, PTE writer) |
//! | `PTE_LIST_GPA`..    | the list of page-table writes the PTE writer performs  |
//! | `KSTACK_GPA`..      | ring-0 stack: exception frames land here               |
//! | `FIRST_FREE_GPA`..  | frames for page tables and user memory                 |
//!
//! Guest-virtual: the lower half belongs to the user program. All of
//! guest-physical memory is mapped, supervisor-only, at `PHYSMAP_BASE` with
//! 2 MiB pages, so ring-0 code reaches every structure (and every page table)
//! at `PHYSMAP_BASE + gpa`. Ring 3 cannot touch any of it.

/// The version of this layout and of the ring-0 trampolines (`boot`):
/// saved templates record it and are rebuilt, never loaded, by a VMM with
/// another. Bump it with any change to either.
pub const LAYOUT_VERSION: u32 = 1;

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large (PD-level) page.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

pub const PML4_GPA: u64 = 0x1000;
pub const PHYSMAP_PDPT_GPA: u64 = 0x2000;
pub const PHYSMAP_PD_GPA: u64 = 0x3000;
/// Number of physmap page directories: the most guest memory we can map (GiB).
pub const PHYSMAP_PD_PAGES: u64 = 16;
pub const GDT_GPA: u64 = PHYSMAP_PD_GPA + PHYSMAP_PD_PAGES * PAGE_SIZE;
pub const IDT_GPA: u64 = GDT_GPA + PAGE_SIZE;
pub const TSS_GPA: u64 = IDT_GPA + PAGE_SIZE;
pub const STUBS_GPA: u64 = TSS_GPA + PAGE_SIZE;
pub const PTE_LIST_GPA: u64 = STUBS_GPA + PAGE_SIZE;
/// Pages reserved for the PTE writer's list.
pub const PTE_LIST_PAGES: u64 = 8;
/// Bytes per entry of the PTE writer's list: (pte address, value, address to invlpg).
pub const PTE_LIST_ENTRY: u64 = 24;
/// Entries that fit in one PTE-writer run.
pub const PTE_LIST_CAPACITY: usize = (PTE_LIST_PAGES * PAGE_SIZE / PTE_LIST_ENTRY) as usize;
pub const KSTACK_GPA: u64 = PTE_LIST_GPA + PTE_LIST_PAGES * PAGE_SIZE;
pub const KSTACK_PAGES: u64 = 2;
pub const KSTACK_TOP_GPA: u64 = KSTACK_GPA + KSTACK_PAGES * PAGE_SIZE;
/// First guest-physical frame the kernel's allocator may hand out.
pub const FIRST_FREE_GPA: u64 = KSTACK_TOP_GPA;

/// Largest guest-physical memory the physmap can cover.
pub const MAX_GUEST_MEMORY: u64 = PHYSMAP_PD_PAGES << 30;

/// Where all guest-physical memory is mapped for ring 0 (as Linux's direct map).
pub const PHYSMAP_BASE: u64 = 0xffff_8880_0000_0000;
/// PML4 slot of the physmap.
pub const PHYSMAP_PML4_INDEX: u64 = (PHYSMAP_BASE >> 39) & 0x1ff;

/// End (exclusive) of the user half of the address space, as on Linux x86-64
/// with 4-level paging: the last page below 2^47 is kept unmapped.
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;

/// Ring-0 virtual address of a guest-physical address.
pub const fn physmap(gpa: u64) -> u64 {
    PHYSMAP_BASE + gpa
}

/// I/O ports the trampolines use to name events to the VMM.
pub mod ports {
    /// `out` from the exception stub for vector v uses `EXCEPTION_BASE + v`.
    pub const EXCEPTION_BASE: u16 = 0x80;
    /// `out` from the `syscall` (LSTAR) entry.
    pub const SYSCALL: u16 = 0xa0;
    /// `out` after the PTE writer finished its list.
    pub const PTE_WRITER_DONE: u16 = 0xa1;
}

/// Offsets of the trampolines inside the stubs page.
pub mod stubs {
    /// Exception stub for vector v is at `EXCEPTION + v * EXCEPTION_STRIDE`.
    pub const EXCEPTION: u64 = 0x000;
    pub const EXCEPTION_STRIDE: u64 = 8;
    /// Number of vectors with a dedicated stub (the CPU exceptions).
    pub const EXCEPTION_VECTORS: u64 = 32;
    /// Stub every other IDT vector points at.
    pub const SPURIOUS: u64 = EXCEPTION + EXCEPTION_VECTORS * EXCEPTION_STRIDE;
    /// The `syscall` entry (MSR_LSTAR).
    pub const SYSCALL: u64 = 0x200;
    /// The PTE writer.
    pub const PTE_WRITER: u64 = 0x300;
}

/// GDT selectors, the same values as Linux x86-64 so that programs that look
/// at their segment registers see what they expect.
pub mod selectors {
    pub const KERNEL_CS: u16 = 0x10;
    pub const KERNEL_DS: u16 = 0x18;
    pub const USER32_CS: u16 = 0x23;
    pub const USER_DS: u16 = 0x2b;
    pub const USER_CS: u16 = 0x33;
    pub const TSS: u16 = 0x40;
}
