//! The reaper (`zeroboot_vmm::reaper`): VMs dropped by their owner are torn
//! down on its thread, which runs under the vCPU seccomp filter, and once
//! it drains the process holds as many VMs and fds as before.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zeroboot_vmm::probe::RawGuest;
use zeroboot_vmm::{reaper, seccomp, Exit};

/// `mov eax, 1; syscall; jmp $-7`: exits to the VMM by a syscall.
const SYSCALL_LOOP: [u8; 9] = [0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];

/// This process's open fds, and those that are KVM VMs.
fn fds() -> (usize, usize) {
    let mut all = 0;
    let mut vms = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("kvm-vm")) {
            vms += 1;
        }
    }
    (all, vms)
}

fn filtered() -> Result<(), String> {
    seccomp::install_vcpu_filter().map_err(|e| e.to_string())
}

#[test]
fn dropped_vms_are_torn_down_off_the_callers_thread_and_nothing_leaks() {
    // A small queue: with 40 VMs of three deferred parts each, some are
    // dropped inline (the full-queue fallback) and some by the thread.
    let r = reaper::install(4, Some(filtered)).unwrap();
    // One guest first: the process's KVM handle and its pinned VM exist
    // before the count.
    drop(RawGuest::new(&SYSCALL_LOOP).unwrap());
    assert!(r.wait_idle(Duration::from_secs(20)));
    let before = fds();
    let s0 = r.stats();
    let mut guests: Vec<RawGuest> = (0..40)
        .map(|_| RawGuest::new(&SYSCALL_LOOP).unwrap())
        .collect();
    for g in &mut guests {
        g.vcpu.resume_user();
        assert_eq!(g.vcpu.run(&g.mem).unwrap(), Exit::Syscall);
    }
    let with = fds();
    assert!(with.1 >= before.1 + 40, "{before:?} {with:?}");
    drop(guests);
    assert!(r.wait_idle(Duration::from_secs(20)), "{:?}", r.stats());
    let s = r.stats();
    // Every VM's memory, VM fd and vCPU went one way or the other.
    assert_eq!(
        (s.queued - s0.queued) + (s.inline - s0.inline),
        3 * 40,
        "{s:?}"
    );
    assert!(s.queued > s0.queued, "{s:?}");
    assert_eq!(s.reaped, s.queued);
    // The thread's drops were not refused by its seccomp filter (a refused
    // close or munmap would leave the fd or the VM behind).
    assert_eq!(fds(), before);
    assert!(seccomp::take_denied().is_empty());
}
