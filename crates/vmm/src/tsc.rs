//! The guest's time-stamp counter. The vDSO turns the TSC into time in ring
//! 3 and the VMM does the same for the clocks it serves, so each vCPU's TSC
//! must relate to the host's by a known offset: zeroboot sets it to zero
//! where KVM lets it (KVM_VCPU_TSC_OFFSET, Linux 5.16+) and measures it
//! otherwise.

use std::os::fd::AsRawFd;

use kvm_bindings::{kvm_device_attr, kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use crate::vm::Host;

/// How a vCPU's TSC relates to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscInfo {
    /// Ticks per millisecond.
    pub khz: u32,
    /// Guest TSC minus host TSC.
    pub offset: i64,
}

/// The host's TSC now.
pub fn host_tsc() -> u64 {
    // SAFETY: RDTSC reads a counter and has no memory effects; every x86-64
    // CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

const IA32_TSC: u32 = 0x10;
const KVM_VCPU_TSC_CTRL: u32 = 0;
const KVM_VCPU_TSC_OFFSET: u64 = 0;
// _IOW(KVMIO, 0xe1, struct kvm_device_attr): kvm-ioctls offers the vCPU
// device-attribute ioctls on aarch64 only.
const KVM_SET_DEVICE_ATTR: libc::c_ulong = 0x4018_aee1;

/// Set the vCPU's TSC offset to zero. False where KVM cannot.
pub(crate) fn zero_offset(fd: &VcpuFd) -> bool {
    let offset: u64 = 0;
    let attr = kvm_device_attr {
        group: KVM_VCPU_TSC_CTRL,
        attr: KVM_VCPU_TSC_OFFSET,
        addr: &offset as *const u64 as u64,
        flags: 0,
    };
    // SAFETY: KVM reads a `kvm_device_attr` and, through `addr`, one u64
    // that lives across the call; the vCPU fd is valid.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_SET_DEVICE_ATTR, &attr) };
    r == 0
}

/// (host TSC before, guest TSC, host TSC after) from one KVM_GET_MSRS.
pub(crate) fn sample(fd: &VcpuFd) -> Option<(u64, u64, u64)> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: IA32_TSC,
        ..Default::default()
    }])
    .ok()?;
    let before = host_tsc();
    let n = fd.get_msrs(&mut msrs).ok()?;
    let after = host_tsc();
    (n == 1).then(|| (before, msrs.as_slice()[0].data, after))
}

/// Most host ticks a measurement may span to be trusted (about 25 us).
const MAX_WINDOW: u64 = 50_000;

/// The TSC relation of a new vCPU.
pub(crate) fn attach(fd: &VcpuFd, host: &Host) -> Option<TscInfo> {
    let khz = host.tsc_khz()?;
    let offset = if host.tsc_offset_settable() && zero_offset(fd) {
        0
    } else {
        let (b, g, a) = sample(fd)?;
        if a.wrapping_sub(b) > MAX_WINDOW {
            return None;
        }
        g as i64 - (b / 2 + a / 2) as i64
    };
    Some(TscInfo { khz, offset })
}

/// Whether setting `fd`'s offset to zero makes it read the host's TSC
/// (no TSC scaling in the way): checked once, on the host's idle vCPU.
pub(crate) fn zero_offset_works(fd: &VcpuFd) -> bool {
    zero_offset(fd) && sample(fd).is_some_and(|(b, g, a)| b <= g && g <= a && a - b <= MAX_WINDOW)
}
