//! The ring-0 skeleton every VM gets: GDT, IDT, TSS, the physmap and the
//! trampolines. Ring 0 only ever runs one `out` (or the short PTE writer);
//! the VMM does everything else and returns to ring 3 itself, because
//! `sysret`/`iret` are not emulated on the nested (PVM) hosts we run on.

use kvm_bindings::{kvm_dtable, kvm_segment, kvm_sregs};

use crate::layout::*;
use crate::memory::{GuestMemory, MemoryError};
use crate::paging::pte;

/// Vectors whose exception pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SFMASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// RFLAGS bits cleared on `syscall` entry, as Linux does (TF, DF, IF, AC, NT...).
const SFMASK: u64 = 0x47700;

/// The MSRs that make `syscall` land on our trampoline.
pub fn syscall_msrs() -> [(u32, u64); 5] {
    let star = ((selectors::USER32_CS as u64) << 48) | ((selectors::KERNEL_CS as u64) << 32);
    [
        (MSR_STAR, star),
        (MSR_LSTAR, physmap(STUBS_GPA + stubs::SYSCALL)),
        // 32-bit `syscall` from compat mode is not supported; land on the
        // spurious stub so the VMM sees it and kills the program.
        (MSR_CSTAR, physmap(STUBS_GPA + stubs::SPURIOUS)),
        (MSR_SFMASK, SFMASK),
        (MSR_KERNEL_GS_BASE, 0),
    ]
}

fn gdt_entry(flags: u64) -> u64 {
    // Base 0, limit 0xfffff: only the access byte and flags differ.
    flags | 0x0000_0000_0000_ffff | (0xf << 48)
}

/// Write GDT, IDT, TSS, trampolines and the physmap into fresh memory, and
/// the kernel half of the root page table.
pub fn write_boot_structures(mem: &GuestMemory) -> Result<(), MemoryError> {
    // GDT, laid out as Linux's.
    let mut gdt = [0u64; 10];
    gdt[1] = gdt_entry(0x00cf_9b00_0000_0000); // kernel 32-bit code (unused)
    gdt[(selectors::KERNEL_CS >> 3) as usize] = gdt_entry(0x00af_9b00_0000_0000);
    gdt[(selectors::KERNEL_DS >> 3) as usize] = gdt_entry(0x00cf_9300_0000_0000);
    gdt[(selectors::USER32_CS >> 3) as usize] = gdt_entry(0x00cf_fb00_0000_0000);
    gdt[(selectors::USER_DS >> 3) as usize] = gdt_entry(0x00cf_f300_0000_0000);
    gdt[(selectors::USER_CS >> 3) as usize] = gdt_entry(0x00af_fb00_0000_0000);
    let tss_base = physmap(TSS_GPA);
    let tss_limit = 0x67u64;
    let ti = (selectors::TSS >> 3) as usize;
    gdt[ti] = (tss_limit & 0xffff)
        | ((tss_base & 0xff_ffff) << 16)
        | (0x89u64 << 40) // present, 64-bit available TSS
        | (((tss_base >> 24) & 0xff) << 56);
    gdt[ti + 1] = tss_base >> 32;
    for (i, e) in gdt.iter().enumerate() {
        mem.write_u64(GDT_GPA + i as u64 * 8, *e)?;
    }

    // TSS: RSP0 is where exception frames from ring 3 land. The I/O map base
    // lies past the limit, so ring 3 has no port access at all.
    let mut tss = [0u8; 0x68];
    tss[4..12].copy_from_slice(&physmap(KSTACK_TOP_GPA).to_le_bytes());
    tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
    mem.write(TSS_GPA, &tss)?;

    // Trampolines.
    let mut code = vec![0xccu8; PAGE_SIZE as usize]; // int3 filler
    for v in 0..stubs::EXCEPTION_VECTORS {
        let off = (stubs::EXCEPTION + v * stubs::EXCEPTION_STRIDE) as usize;
        code[off..off + 4].copy_from_slice(&[
            0xe6,
            (ports::EXCEPTION_BASE + v as u16) as u8,
            0x0f,
            0x0b,
        ]);
    }
    let off = stubs::SPURIOUS as usize;
    code[off..off + 4].copy_from_slice(&[0xe6, (ports::EXCEPTION_BASE + 31) as u8, 0x0f, 0x0b]);
    let off = stubs::SYSCALL as usize;
    code[off..off + 4].copy_from_slice(&[0xe6, ports::SYSCALL as u8, 0x0f, 0x0b]);
    // PTE writer: rdi = list, rcx = count of (entry va, value, va to invlpg).
    let writer: [u8; 35] = [
        0x48,
        0x85,
        0xc9, // test rcx, rcx
        0x74,
        0x1a, // jz done
        // loop:
        0x48,
        0x8b,
        0x07, // mov rax, [rdi]
        0x48,
        0x8b,
        0x57,
        0x08, // mov rdx, [rdi+8]
        0x48,
        0x89,
        0x10, // mov [rax], rdx
        0x48,
        0x8b,
        0x47,
        0x10, // mov rax, [rdi+16]
        0x0f,
        0x01,
        0x38, // invlpg [rax]
        0x48,
        0x83,
        0xc7,
        0x18, // add rdi, 24
        0x48,
        0xff,
        0xc9, // dec rcx
        0x75,
        0xe6, // jnz loop
        // done:
        0xe6,
        ports::PTE_WRITER_DONE as u8, // out PTE_WRITER_DONE, al
        0x0f,
        0x0b, // ud2
    ];
    let off = stubs::PTE_WRITER as usize;
    code[off..off + writer.len()].copy_from_slice(&writer);
    mem.write(STUBS_GPA, &code)?;

    // IDT: every vector is an interrupt gate to a stub. #BP and #OF are
    // reachable from ring 3 (int3/into), as on Linux.
    let mut idt = vec![0u8; PAGE_SIZE as usize];
    for v in 0..256u64 {
        let target = if v < stubs::EXCEPTION_VECTORS {
            physmap(STUBS_GPA + stubs::EXCEPTION + v * stubs::EXCEPTION_STRIDE)
        } else {
            physmap(STUBS_GPA + stubs::SPURIOUS)
        };
        let dpl: u64 = if v == 3 || v == 4 { 3 } else { 0 };
        let lo = (target & 0xffff)
            | ((selectors::KERNEL_CS as u64) << 16)
            | ((0x8e | (dpl << 5)) << 40)
            | (((target >> 16) & 0xffff) << 48);
        let hi = target >> 32;
        let o = (v * 16) as usize;
        idt[o..o + 8].copy_from_slice(&lo.to_le_bytes());
        idt[o + 8..o + 16].copy_from_slice(&hi.to_le_bytes());
    }
    mem.write(IDT_GPA, &idt)?;

    // Physmap: all guest memory, supervisor-only, 2 MiB pages.
    let gib = mem.size().div_ceil(1 << 30);
    for g in 0..gib {
        let pd = PHYSMAP_PD_GPA + g * PAGE_SIZE;
        mem.write_u64(
            PHYSMAP_PDPT_GPA + g * 8,
            pd | pte::PRESENT | pte::WRITABLE | pte::ACCESSED,
        )?;
        for i in 0..512u64 {
            let pa = (g << 30) + i * LARGE_PAGE_SIZE;
            if pa >= mem.size() {
                break;
            }
            mem.write_u64(
                pd + i * 8,
                pa | pte::PRESENT
                    | pte::WRITABLE
                    | pte::HUGE
                    | pte::ACCESSED
                    | pte::DIRTY
                    | pte::GLOBAL,
            )?;
        }
    }
    mem.write_u64(
        PML4_GPA + PHYSMAP_PML4_INDEX * 8,
        PHYSMAP_PDPT_GPA | pte::PRESENT | pte::WRITABLE | pte::ACCESSED,
    )?;
    Ok(())
}

fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: if code { 0 } else { 1 },
        s: 1,
        l: if code { 1 } else { 0 },
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// System registers for long mode with our GDT/IDT/TSS, in ring 0.
/// `base` is what the vCPU reported (for fields KVM owns, e.g. apic_base).
pub fn kernel_sregs(base: &kvm_sregs) -> kvm_sregs {
    let mut s = *base;
    s.cs = segment(selectors::KERNEL_CS, true, 0);
    let kds = segment(selectors::KERNEL_DS, false, 0);
    s.ds = kds;
    s.es = kds;
    s.fs = kds;
    s.gs = kds;
    s.ss = kds;
    s.tr = kvm_segment {
        base: physmap(TSS_GPA),
        limit: 0x67,
        selector: selectors::TSS,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment {
        selector: 0,
        type_: 0x2,
        present: 1,
        unusable: 1,
        limit: 0xffff,
        ..Default::default()
    };
    s.gdt = kvm_dtable {
        base: physmap(GDT_GPA),
        limit: (10 * 8 - 1) as u16,
        padding: [0; 3],
    };
    s.idt = kvm_dtable {
        base: physmap(IDT_GPA),
        limit: (256 * 16 - 1) as u16,
        padding: [0; 3],
    };
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = PML4_GPA;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
    // With SCE set, `syscall` enters the LSTAR stub in ring 0 on bare-metal
    // KVM. PVM hosts jump to LSTAR but stay in CPL 3 (measured: SCE is
    // ignored there); the supervisor-only stub then faults at exactly
    // LSTAR, which the VMM also reads as a syscall (see vcpu.rs).
    s.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    s
}

/// The same system registers with ring-3 code and stack segments, as the
/// VMM sets them to return to the user program.
pub fn user_sregs(kernel: &kvm_sregs) -> kvm_sregs {
    let mut s = *kernel;
    s.cs = segment(selectors::USER_CS, true, 3);
    let uds = segment(selectors::USER_DS, false, 3);
    s.ss = uds;
    s.ds = uds;
    s.es = uds;
    s.fs = uds;
    s.gs = uds;
    s
}
