//! The vDSO: `clock_gettime`, `gettimeofday` and `time` answered in ring 3,
//! as Linux does, so that the calls programs make most (Node makes
//! hundreds per request, CPython hundreds at start-up) cost no exit.
//!
//! Each process gets two mappings, as on Linux: `[vvar]`, one read-only
//! page of clock data the VMM writes, and `[vdso]` right above it, a small
//! shared object (vdso/vdso.c, built by build.rs) that reads the TSC and
//! that data. The clocks the VMM serves itself (`syscalls/time.rs`) use the
//! same data, so a program mixing both never sees time go back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroboot_abi::flags::{
    CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_MONOTONIC_RAW, CLOCK_REALTIME,
    CLOCK_REALTIME_COARSE, PROT_EXEC, PROT_READ,
};
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::PAGE_SIZE;
use zeroboot_vmm::tsc::{host_tsc, TscInfo};
use zeroboot_vmm::GuestMemory;
use zerocopy::{Immutable, IntoBytes};

use crate::kernel::Kernel;
use crate::mm::{page_up, Backing};
use crate::vfs::tmpfs::TmpContents;

/// The vDSO image.
pub const IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vdso.so"));

/// The `[vvar]` page's layout; must match `struct vvar` in vdso/vdso.c.
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable)]
#[repr(C)]
struct VvarData {
    enabled: u32,
    shift: u32,
    mult: u64,
    tsc_base: u64,
    mono_base_ns: u64,
    real_base_ns: u64,
}

/// ns = (ticks * mult) >> SHIFT: 32 bits keep the rounding of `mult`
/// below a part in 10^9 at any TSC frequency.
const SHIFT: u32 = 32;

/// The sandbox's clocks: the host's, extrapolated from one sample by the
/// TSC. Re-sampled at every fork and reset, so the extrapolation never
/// runs long.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Clock {
    /// False where the TSC's relation to the host is unknown: then every
    /// clock is the host's, through the VMM.
    enabled: bool,
    mult: u64,
    /// Guest TSC at the sample.
    tsc_base: u64,
    mono_base_ns: u64,
    real_base_ns: u64,
    /// Guest TSC minus host TSC.
    tsc_offset: i64,
}

fn host_ns(id: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Clock {
    /// Sample the host's clocks for a vCPU whose TSC relates to the host's
    /// as `tsc` says.
    pub fn sample(tsc: Option<TscInfo>) -> Clock {
        let Some(tsc) = tsc.filter(|t| t.khz > 0) else {
            return Clock::default();
        };
        let host = host_tsc();
        let mono_base_ns = host_ns(rustix::time::ClockId::Monotonic);
        let real_base_ns = host_ns(rustix::time::ClockId::Realtime);
        Clock {
            enabled: true,
            mult: ((1_000_000u128 << SHIFT) / tsc.khz as u128) as u64,
            tsc_base: host.wrapping_add(tsc.offset as u64),
            mono_base_ns,
            real_base_ns,
            tsc_offset: tsc.offset,
        }
    }

    /// Nanoseconds since the sample, as the vDSO computes them.
    fn elapsed_ns(&self) -> u64 {
        let now = host_tsc().wrapping_add(self.tsc_offset as u64);
        let delta = now.saturating_sub(self.tsc_base);
        ((delta as u128 * self.mult as u128) >> SHIFT) as u64
    }

    /// `clock` now, where the vDSO serves it; `None` for the clocks it
    /// leaves to the VMM (CPU time) or when the clock is disabled.
    pub fn now_ns(&self, clock: u64) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        match clock {
            CLOCK_REALTIME | CLOCK_REALTIME_COARSE => {
                Some(self.real_base_ns.saturating_add(self.elapsed_ns()))
            }
            CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
                Some(self.mono_base_ns.saturating_add(self.elapsed_ns()))
            }
            _ => None,
        }
    }

    /// The `[vvar]` page's contents for this clock.
    pub fn vvar_bytes(&self) -> Vec<u8> {
        self.vvar().as_bytes().to_vec()
    }

    fn vvar(&self) -> VvarData {
        VvarData {
            enabled: self.enabled as u32,
            shift: SHIFT,
            mult: self.mult,
            tsc_base: self.tsc_base,
            mono_base_ns: self.mono_base_ns,
            real_base_ns: self.real_base_ns,
        }
    }
}

/// Map `[vvar]` and `[vdso]` into the current process (at exec); returns
/// the vDSO's address for AT_SYSINFO_EHDR.
pub fn map(k: &mut Kernel, mem: &GuestMemory) -> Result<u64, Errno> {
    let image_len = page_up(IMAGE.len() as u64).ok_or(Errno::ENOMEM)?;
    let vvar = k.mm.find_free(0, PAGE_SIZE + image_len)?;
    let base = vvar + PAGE_SIZE;
    k.mm.map(
        mem,
        vvar,
        PAGE_SIZE,
        PROT_READ,
        Backing::Anon,
        Arc::from("[vvar]"),
        false,
    )?;
    k.mm.map(
        mem,
        base,
        image_len,
        PROT_READ | PROT_EXEC,
        Backing::File {
            data: Arc::new(TmpContents(Arc::new(IMAGE.to_vec()))),
            offset: 0,
        },
        Arc::from("[vdso]"),
        false,
    )?;
    k.mm.vvar = vvar;
    let data = k.clock.vvar();
    k.mm.write_forced(mem, vvar, data.as_bytes())?;
    Ok(base)
}

/// Take a new clock sample for a vCPU whose TSC relates to the host's as
/// `tsc` says (a new or reset VM), and give it to every process.
pub fn rebase(k: &mut Kernel, mem: &GuestMemory, tsc: Option<TscInfo>) {
    k.clock = Clock::sample(tsc);
    let data = k.clock.vvar();
    let mut spaces = vec![&mut k.mm];
    spaces.extend(k.others.values_mut().map(|s| &mut s.mm));
    for mm in spaces {
        // Only into the page mapped as [vvar]: a process may have unmapped
        // it and put its own data there.
        let intact = mm
            .vmas
            .find(mm.vvar)
            .is_some_and(|v| v.start == mm.vvar && &*v.name == "[vvar]");
        if mm.vvar != 0 && intact {
            let _ = mm.write_forced(mem, mm.vvar, data.as_bytes());
        }
    }
}
