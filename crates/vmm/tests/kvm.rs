//! Hand-assembled ring-3 programs on real KVM: the mechanics every layer
//! above relies on (syscall and fault exits, return to ring 3, the shadow
//! MMU rules for changing page-table entries).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use zeroboot_vmm::layout::*;
use zeroboot_vmm::paging::{index, pte};
use zeroboot_vmm::probe::{self, RawGuest};
use zeroboot_vmm::Exit;

const CODE: u64 = probe::CODE;
const DATA: u64 = 0x60_0000;

/// Run to the next syscall and return RDI (the value the loop read).
fn next_value(g: &mut RawGuest) -> u64 {
    match g.vcpu.run(&g.mem).unwrap() {
        Exit::Syscall => {
            let v = g.vcpu.regs().rdi;
            g.vcpu.resume_from_syscall(0);
            v
        }
        other => panic!("unexpected exit {other:?}"),
    }
}

/// `loop: mov rdi, [rbx]; mov eax, 1; syscall; jmp loop`
const READ_LOOP: [u8; 12] = [
    0x48, 0x8b, 0x3b, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf4,
];

#[test]
fn syscall_round_trip_returns_to_ring3() {
    // mov eax, 39; syscall; inc rbx; jmp loop
    let code = [0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0x48, 0xff, 0xc3, 0xeb, 0xf4];
    let mut g = RawGuest::new(&code).unwrap();
    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        match g.vcpu.run(&g.mem).unwrap() {
            Exit::Syscall => {
                assert_eq!(g.vcpu.regs().rax, 39);
                assert_eq!(g.vcpu.regs().rbx, i);
                g.vcpu.resume_from_syscall(1000 + i);
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    eprintln!("syscall round trip: {:?}", t.elapsed() / n as u32);
}

#[test]
fn user_page_fault_reports_cr2_and_frame() {
    let mut g = RawGuest::new(&READ_LOOP).unwrap();
    g.vcpu.regs_mut().rbx = 0xdead_b000;
    g.vcpu.resume_user();
    match g.vcpu.run(&g.mem).unwrap() {
        Exit::Exception(f) => {
            assert_eq!(f.vector, 14);
            assert_eq!(f.cr2, 0xdead_b000);
            assert_eq!(f.rip, CODE);
            assert_eq!(f.error_code & 4, 4, "user-mode fault");
            assert!(f.from_user());
        }
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn host_pte_changes_follow_the_accessed_bit() {
    let mut g = RawGuest::new(&READ_LOOP).unwrap();
    let (f1, f2, f3) = (g.frame(), g.frame(), g.frame());
    g.mem.write_u64(f1, 111).unwrap();
    g.mem.write_u64(f2, 222).unwrap();
    g.mem.write_u64(f3, 333).unwrap();
    let user_rw = pte::PRESENT | pte::USER | pte::WRITABLE | pte::DIRTY;
    // Two mappings; the guest only reads the first.
    g.map(DATA, f1, user_rw);
    g.map(DATA + PAGE_SIZE, f1, user_rw);
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 111);
    let used = g.pte_gpa(DATA);
    let unused = g.pte_gpa(DATA + PAGE_SIZE);
    assert_ne!(
        g.mem.read_u64(used).unwrap() & pte::ACCESSED,
        0,
        "KVM sets A on use"
    );
    assert_eq!(g.mem.read_u64(unused).unwrap() & pte::ACCESSED, 0);

    // An entry never used (A == 0) can be changed from the host.
    g.mem.write_u64(unused, f2 | user_rw).unwrap();
    g.vcpu.regs_mut().rbx = DATA + PAGE_SIZE;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 222);

    // A used entry changed from the host keeps its stale translation...
    g.mem.write_u64(used, f2 | user_rw).unwrap();
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    let stale = next_value(&mut g);
    eprintln!("host-written change of a used PTE reads {stale} (111 = stale)");

    // ...but the ring-0 PTE writer's change takes effect.
    let t = Instant::now();
    g.vcpu
        .run_pte_writer(&g.mem, &[(physmap(used), f3 | user_rw, DATA)])
        .unwrap();
    eprintln!("PTE writer, one entry: {:?}", t.elapsed());
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 333);

    // Removing a used entry with the writer makes the next access fault.
    g.vcpu
        .run_pte_writer(&g.mem, &[(physmap(used), 0, DATA)])
        .unwrap();
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    match g.vcpu.run(&g.mem).unwrap() {
        Exit::Exception(f) => assert_eq!((f.vector, f.cr2), (14, DATA)),
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn a_kick_never_leaves_an_exception_for_the_next_context() {
    // A kick that interrupts the delivery of a fault leaves it queued in
    // KVM; the VMM may then switch the vCPU to another guest thread, and
    // the fault must not be delivered there (guest threads died of faults
    // at address 0 that way).
    let mut g = RawGuest::new(&READ_LOOP).unwrap();
    let f = g.frame();
    g.mem.write_u64(f, 7).unwrap();
    g.map(
        DATA,
        f,
        pte::PRESENT | pte::USER | pte::WRITABLE | pte::DIRTY,
    );
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 7);
    g.vcpu.leave_exception_injected(14, 4).unwrap();
    g.vcpu.set_immediate_exit(true);
    assert!(matches!(g.vcpu.run(&g.mem).unwrap(), Exit::Kicked));
    g.vcpu.set_immediate_exit(false);
    assert_eq!(g.vcpu.dropped_exceptions(), 1);
    // Another thread's registers go on the vCPU: it runs, no stray #PF.
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.regs_mut().rip = CODE;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 7);
}

#[test]
fn replacing_a_page_table_through_its_pde_drops_stale_entries() {
    let mut g = RawGuest::new(&READ_LOOP).unwrap();
    let (f1, f2) = (g.frame(), g.frame());
    g.mem.write_u64(f1, 111).unwrap();
    g.mem.write_u64(f2, 222).unwrap();
    let user_rw = pte::PRESENT | pte::USER | pte::WRITABLE | pte::DIRTY;
    g.map(DATA, f1, user_rw);
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 111);
    // Build a new page table with DATA -> f2 and swap the PDE to it.
    let new_pt = g.frame();
    g.mem
        .write_u64(new_pt + index(DATA, 1) * 8, f2 | user_rw)
        .unwrap();
    let pd = {
        let pml4e = g.mem.read_u64(PML4_GPA + index(DATA, 4) * 8).unwrap() & pte::ADDR_MASK;
        g.mem.read_u64(pml4e + index(DATA, 3) * 8).unwrap() & pte::ADDR_MASK
    };
    let pde = pd + index(DATA, 2) * 8;
    g.vcpu
        .run_pte_writer(&g.mem, &[(physmap(pde), new_pt | pte::TABLE, DATA)])
        .unwrap();
    g.vcpu.regs_mut().rbx = DATA;
    g.vcpu.resume_user();
    assert_eq!(next_value(&mut g), 222);
}

#[test]
fn avx2_and_avx512_state_work_in_ring3() {
    // vpcmpeqd ymm0, ymm0, ymm0; vmovmskps eax, ymm0; mov edi, eax; mov eax,1; syscall
    let code = [
        0xc5, 0xfd, 0x76, 0xc0, 0xc5, 0xfc, 0x50, 0xc0, 0x89, 0xc7, 0xb8, 1, 0, 0, 0, 0x0f, 0x05,
        0xeb, 0xfe,
    ];
    let mut g = RawGuest::new(&code).unwrap();
    match g.vcpu.run(&g.mem).unwrap() {
        Exit::Syscall => assert_eq!(g.vcpu.regs().rdi, 0xff),
        other => panic!("unexpected exit {other:?}"),
    }
}

/// The guest reads the host's TSC plus the offset the vCPU reports: what
/// the vDSO's clocks rely on.
#[test]
fn guest_tsc_matches_the_reported_offset() {
    // loop: rdtsc; shl rdx, 32; or rax, rdx; mov rdi, rax; mov eax, 1; syscall; jmp loop
    let code = [
        0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb8, 0x01, 0, 0,
        0, 0x0f, 0x05, 0xeb, 0xeb,
    ];
    let mut g = RawGuest::new(&code).unwrap();
    let Some(tsc) = g.vcpu.tsc() else {
        eprintln!("KVM does not expose the TSC relation here; nothing to check");
        return;
    };
    assert!(
        tsc.khz > 100_000,
        "implausible TSC frequency {} kHz",
        tsc.khz
    );
    // A measured offset is good to a few microseconds.
    let slack = if zeroboot_vmm::Host::get().unwrap().tsc_offset_settable() {
        0
    } else {
        tsc.khz as i64 / 100
    };
    for _ in 0..20 {
        let before = zeroboot_vmm::tsc::host_tsc() as i64 + tsc.offset;
        let guest = next_value(&mut g) as i64;
        let after = zeroboot_vmm::tsc::host_tsc() as i64 + tsc.offset;
        assert!(
            before - slack <= guest && guest <= after + slack,
            "guest TSC {guest} outside [{before}, {after}] (slack {slack})"
        );
    }
}

/// One misaligned write by the ring-0 writer into a page-table frame
/// (8 bytes straddling two entries) makes KVM drop every shadow of that
/// frame, so a dead table needs one write instead of one per entry it
/// had (mm's `retire_tables`). Checked here for a leaf table and for the
/// directory above it: after the write, entries the host changed behind
/// KVM's back take effect.
#[test]
fn a_misaligned_write_drops_a_whole_table_shadow() {
    for level in [1u64, 2] {
        let mut g = RawGuest::new(&READ_LOOP).unwrap();
        let (f1, f2) = (g.frame(), g.frame());
        g.mem.write_u64(f1, 111).unwrap();
        g.mem.write_u64(f2, 222).unwrap();
        let user_rw = pte::PRESENT | pte::USER | pte::WRITABLE | pte::DIRTY;
        g.map(DATA, f1, user_rw);
        g.map(DATA + PAGE_SIZE, f1, user_rw);
        for va in [DATA, DATA + PAGE_SIZE] {
            g.vcpu.regs_mut().rbx = va;
            g.vcpu.resume_user();
            assert_eq!(next_value(&mut g), 111);
        }
        let leaf = g.pte_gpa(DATA);
        let table = leaf & !(PAGE_SIZE - 1);
        let pd = {
            let pml4e = g.mem.read_u64(PML4_GPA + index(DATA, 4) * 8).unwrap() & pte::ADDR_MASK;
            g.mem.read_u64(pml4e + index(DATA, 3) * 8).unwrap() & pte::ADDR_MASK
        };
        // The leaf table alone, or it and the directory above it (a
        // shadow of a table is only dropped by a write into that table:
        // one orphaned by its parent's would be found again by frame).
        let targets: &[u64] = if level == 1 { &[table] } else { &[table, pd] };
        // Entries 510 and 511 are unused in both tables here.
        let writes: Vec<(u64, u64, u64)> = targets
            .iter()
            .map(|&t| (physmap(t) + 510 * 8 + 1, 0, 0))
            .collect();
        let t = Instant::now();
        g.vcpu.run_pte_writer(&g.mem, &writes).unwrap();
        eprintln!("level {level}: misaligned write: {:?}", t.elapsed());
        // Behind KVM's back: both used entries now map f2.
        g.mem.write_u64(leaf, f2 | user_rw).unwrap();
        g.mem.write_u64(leaf + 8, f2 | user_rw).unwrap();
        for va in [DATA, DATA + PAGE_SIZE] {
            g.vcpu.regs_mut().rbx = va;
            g.vcpu.resume_user();
            assert_eq!(
                next_value(&mut g),
                222,
                "level {level}, {va:#x}: stale shadow"
            );
        }
    }
}
