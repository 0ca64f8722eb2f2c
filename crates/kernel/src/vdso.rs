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
///
/// CLOCK_MONOTONIC (and BOOTTIME) of a fork continues from its template's
/// at the moment it was frozen, as after a VM snapshot restore: the time a
/// template spends parked is not seen by its forks. Otherwise every timer
/// armed in the template (libuv's, V8's memory reducer and GC tasks) would
/// be long due in each fork of a template made more than a few seconds
/// before, and run inside every request. CLOCK_REALTIME is the host's.
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
    /// Guest CLOCK_MONOTONIC minus the host's (ns).
    mono_offset_ns: i64,
    /// The guest's CLOCK_MONOTONIC when the sandbox was frozen into a
    /// template: where its forks' monotonic clock starts.
    frozen_mono_ns: Option<u64>,
}

fn host_ns(id: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Clock {
    /// Sample the host's clocks for a vCPU whose TSC relates to the host's
    /// as `tsc` says; the guest's monotonic clock is the host's.
    pub fn sample(tsc: Option<TscInfo>) -> Clock {
        Clock::sample_from(tsc, None)
    }

    /// As `sample`, with the guest's monotonic clock reading `mono_ns` now
    /// (None: the host's).
    fn sample_from(tsc: Option<TscInfo>, mono_ns: Option<u64>) -> Clock {
        let host_mono = host_ns(rustix::time::ClockId::Monotonic);
        let mono_offset_ns = mono_ns.map_or(0, |m| m.wrapping_sub(host_mono) as i64);
        let Some(tsc) = tsc.filter(|t| t.khz > 0) else {
            return Clock {
                mono_offset_ns,
                ..Clock::default()
            };
        };
        let host = host_tsc();
        let real_base_ns = host_ns(rustix::time::ClockId::Realtime);
        Clock {
            enabled: true,
            mult: ((1_000_000u128 << SHIFT) / tsc.khz as u128) as u64,
            tsc_base: host.wrapping_add(tsc.offset as u64),
            mono_base_ns: host_mono.saturating_add_signed(mono_offset_ns),
            real_base_ns,
            tsc_offset: tsc.offset,
            mono_offset_ns,
            frozen_mono_ns: None,
        }
    }

    /// The guest's reading of a host monotonic time `host_ns` (for the
    /// clocks the VMM serves when the vDSO's are disabled).
    pub fn guest_mono(&self, host_ns: u64) -> u64 {
        host_ns.saturating_add_signed(self.mono_offset_ns)
    }

    /// The guest's CLOCK_MONOTONIC now.
    fn mono_now_ns(&self) -> u64 {
        self.now_ns(CLOCK_MONOTONIC)
            .unwrap_or_else(|| self.guest_mono(host_ns(rustix::time::ClockId::Monotonic)))
    }

    /// Record the guest's monotonic time now as where forks of this
    /// (parked, frozen) sandbox start theirs.
    pub fn freeze(&mut self) {
        self.frozen_mono_ns = Some(self.mono_now_ns());
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
    rebase_via(k, mem, None, tsc)
}

/// `rebase`, walking the page tables in `tables` where given (a new
/// fork's template: `AddressSpace::write_via`).
pub fn rebase_via(
    k: &mut Kernel,
    mem: &GuestMemory,
    tables: Option<&GuestMemory>,
    tsc: Option<TscInfo>,
) {
    k.clock = Clock::sample_from(tsc, k.clock.frozen_mono_ns);
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
            let via = tables.and_then(|t| mm.write_via(t, mem, mm.vvar, data.as_bytes(), true));
            if via.is_none() {
                let _ = mm.write_forced(mem, mm.vvar, data.as_bytes());
            }
        }
    }
}
