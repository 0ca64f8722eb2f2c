//! The pool of VMs made ahead of need (`zeroboot_vmm::pool`): it fills to
//! its target off the caller's thread, a take is refilled, it empties
//! under memory pressure and when disabled, and a pooled VM runs a guest
//! exactly as a fresh one does.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zeroboot_vmm::probe::{self, RawGuest};
use zeroboot_vmm::{Exit, GuestMemory, Reserved, Shape, Vcpu, Vm, VmPool};

const WAIT: Duration = Duration::from_secs(20);

fn never_short() -> bool {
    false
}

/// `loop: mov rdi, [rbx]; mov eax, 1; syscall; jmp loop` reading the code
/// page itself: a program that exits to the VMM with what it read.
const READ_LOOP: [u8; 12] = [
    0x48, 0x8b, 0x3b, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf4,
];

/// Run `READ_LOOP` in a guest from `pool` (or a fresh VM) three times:
/// each round must exit by a syscall with the bytes the loop read.
fn run_read_loop(pool: Option<&VmPool>) -> Vec<u64> {
    let mut g = RawGuest::new_in(pool, &READ_LOOP).unwrap();
    g.vcpu.regs_mut().rbx = probe::CODE;
    g.vcpu.resume_user();
    (0..3)
        .map(|_| match g.vcpu.run(&g.mem).unwrap() {
            Exit::Syscall => {
                let r = g.vcpu.regs();
                assert_eq!(r.rax, 1);
                let v = r.rdi;
                g.vcpu.resume_from_syscall(0);
                v
            }
            other => panic!("unexpected exit {other:?}"),
        })
        .collect()
}

#[test]
fn fills_to_its_target_and_refills_after_a_take() {
    let pool = VmPool::start(4, never_short, None).unwrap();
    assert!(pool.wait_full(WAIT), "{:?}", pool.stats());
    let s = pool.stats();
    assert_eq!((s.ready, s.target, s.hits, s.misses), (4, 4, 0, 0));
    assert!(s.made >= 4);

    let values = run_read_loop(Some(&pool));
    let first = u64::from_le_bytes(READ_LOOP[..8].try_into().unwrap());
    assert_eq!(values, vec![first; 3]);
    let s = pool.stats();
    assert_eq!(s.hits, 1);
    assert_eq!(s.misses, 0);
    // The filler makes another one.
    assert!(pool.wait_full(WAIT), "{:?}", pool.stats());
    assert!(pool.stats().made >= 5);
}

#[test]
fn a_pooled_vm_starts_in_the_state_a_fresh_one_does() {
    let pool = VmPool::start(1, never_short, None).unwrap();
    assert!(pool.wait_full(WAIT));
    // Made a while before it is used, as a pooled VM is.
    std::thread::sleep(Duration::from_millis(200));
    let mut pooled = RawGuest::new_in(Some(&pool), &READ_LOOP).unwrap();
    assert_eq!(pool.stats().hits, 1);
    let mut fresh = RawGuest::new(&READ_LOOP).unwrap();
    let a = pooled.vcpu.save_state().unwrap();
    let b = fresh.vcpu.save_state().unwrap();
    assert_eq!(a.regs, b.regs);
    assert_eq!((a.fs_base, a.gs_base, a.cr3), (b.fs_base, b.gs_base, b.cr3));
    assert_eq!(a.xsave, b.xsave);
    assert_eq!(pooled.vcpu.tsc().is_some(), fresh.vcpu.tsc().is_some());
    assert_eq!(run_read_loop(Some(&pool)), run_read_loop(None));
}

/// Run `READ_LOOP` on `vcpu` over `mem` (a copy of a `RawGuest`'s
/// memory) once: what it read.
fn read_once(vcpu: &mut Vcpu, mem: &GuestMemory) -> u64 {
    let r = vcpu.regs_mut();
    r.rip = probe::CODE;
    r.rbx = probe::CODE;
    r.rflags = 0x2;
    vcpu.resume_user();
    match vcpu.run(mem).unwrap() {
        Exit::Syscall => vcpu.regs().rdi,
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn vms_made_for_a_shape_serve_forks_of_that_shape() {
    let pool = VmPool::start(2, never_short, None).unwrap();
    assert!(pool.wait_full(WAIT));
    // A template: the code and its page tables in shared memory.
    let t = RawGuest::new(&READ_LOOP).unwrap();
    let size = t.mem.size();
    let make = |place: Option<Reserved>| match place {
        Some(held) => GuestMemory::new_cow_in(held, t.mem.file().clone(), size, size, None),
        None => GuestMemory::new_cow(t.mem.file().clone(), size, size),
    };
    let first = u64::from_le_bytes(READ_LOOP[..8].try_into().unwrap());
    let shape = Shape::new(size, size, false);
    // None is made for a shape before one is asked for: this fork is made
    // on the spot, and the pool makes VMs for its shape from then on.
    let (mem, _vm, mut vcpu) = Vm::with_memory_from(Some(&pool), shape, make).unwrap();
    assert_eq!(read_once(&mut vcpu, &mem), first);
    assert_eq!(
        (pool.stats().placed_hits, pool.stats().placed_misses),
        (0, 1)
    );
    assert!(pool.wait_placed(2, WAIT), "{:?}", pool.stats());
    // Made a while before it is used.
    std::thread::sleep(Duration::from_millis(200));
    let (mem, _vm, mut vcpu) = Vm::with_memory_from(Some(&pool), shape, make).unwrap();
    assert_eq!(pool.stats().placed_hits, 1);
    assert_eq!(read_once(&mut vcpu, &mem), first);
    // The copy is its own: a write stays in it.
    mem.write_u64(0x10_0000, 7).unwrap();
    assert_eq!(t.mem.read_u64(0x10_0000).unwrap(), 0);
    // Another shape is not served by them: those are dropped, and the
    // pool makes VMs for the new one.
    let other = Shape::new(size, size, true);
    let dropped = pool.stats().dropped;
    let (mem, _vm, mut vcpu) = Vm::with_memory_from(Some(&pool), other, make).unwrap();
    assert_eq!(read_once(&mut vcpu, &mem), first);
    assert_eq!(pool.stats().placed_misses, 2);
    assert!(pool.wait_placed(2, WAIT), "{:?}", pool.stats());
    assert!(pool.stats().dropped > dropped, "{:?}", pool.stats());
    let (mem, vm, mut vcpu) = Vm::with_memory_from(Some(&pool), other, make).unwrap();
    assert_eq!(pool.stats().placed_hits, 2);
    assert_eq!(read_once(&mut vcpu, &mem), first);
    // Its slot has the dirty log, as one `with_vcpu` registers would.
    assert!(!vm.take_dirty_log().unwrap().is_empty());
    // Plain takes never get one of them.
    assert!(pool.take().is_some_and(|b| b.shape().is_none()));
}

#[test]
fn target_zero_keeps_none_and_forks_still_get_a_vm() {
    let pool = VmPool::start(3, never_short, None).unwrap();
    assert!(pool.wait_full(WAIT));
    pool.set_target(0);
    assert!(pool.wait_len(0, WAIT), "{:?}", pool.stats());
    assert_eq!(pool.stats().dropped, 3);
    assert!(pool.take().is_none());
    // Made on the spot instead.
    assert_eq!(run_read_loop(Some(&pool)).len(), 3);
    let s = pool.stats();
    assert_eq!((s.ready, s.hits, s.misses), (0, 0, 2));
    // Nothing is made while disabled.
    let made = s.made;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.stats().made, made);
    assert_eq!(pool.stats().ready, 0);
}

static SHORT: AtomicBool = AtomicBool::new(false);

fn short() -> bool {
    SHORT.load(Ordering::Relaxed)
}

#[test]
fn empties_while_memory_is_short_and_refills_after() {
    let pool = VmPool::start(3, short, None).unwrap();
    assert!(pool.wait_full(WAIT));
    SHORT.store(true, Ordering::Relaxed);
    // The filler looks at memory at least once a second.
    assert!(pool.wait_len(0, WAIT), "{:?}", pool.stats());
    assert_eq!(pool.stats().dropped, 3);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pool.stats().ready, 0, "refilled while memory is short");
    SHORT.store(false, Ordering::Relaxed);
    assert!(pool.wait_full(WAIT), "{:?}", pool.stats());
}

#[test]
fn a_failing_setup_is_an_error() {
    let e = VmPool::start(2, never_short, Some(|| Err("refused".into())))
        .err()
        .unwrap();
    assert!(e.to_string().contains("refused"), "{e}");
}
