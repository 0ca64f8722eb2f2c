//! Clocks, sleeping and randomness.

use std::time::Duration;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Timespec, Timeval, Timezone};
use zeroboot_abi::Errno;

use super::{Args, Ctx, SysResult};
use crate::task::Wait;

fn host_ns(id: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Current value of `clock` in nanoseconds.
pub fn clock_ns(ctx: &Ctx, clock: u64) -> Result<u64, Errno> {
    kernel_clock_ns(ctx.k, clock)
}

/// Current value of `clock` in nanoseconds, from the kernel state alone.
pub fn kernel_clock_ns(k: &crate::kernel::Kernel, clock: u64) -> Result<u64, Errno> {
    use rustix::time::ClockId;
    // The clocks the vDSO serves come from the same data here.
    if let Some(ns) = k.clock.now_ns(clock) {
        return Ok(ns);
    }
    Ok(match clock {
        CLOCK_REALTIME => host_ns(ClockId::Realtime),
        CLOCK_REALTIME_COARSE => host_ns(ClockId::RealtimeCoarse),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_BOOTTIME => {
            k.clock.guest_mono(host_ns(ClockId::Monotonic))
        }
        CLOCK_MONOTONIC_COARSE => k.clock.guest_mono(host_ns(ClockId::MonotonicCoarse)),
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => k.cpu_ns(),
        c if cpu_clock_exists(k, c) => k.cpu_ns(),
        _ => return Err(Errno::EINVAL),
    })
}

/// A CPU-time clock of a given process or thread, as
/// clock_getcpuclockid(3) and pthread_getcpuclockid(3) make them: a
/// negative id holding ~pid << 3, a per-thread bit (4) and the kind (0
/// profiling, 1 virtual, 2 scheduler; 3 is a clock descriptor, which the
/// sandbox has none of). Its value is the sandbox's CPU time, as
/// CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID are here.
fn cpu_clock_exists(k: &crate::kernel::Kernel, clock: u64) -> bool {
    let id = clock as i32;
    if id >= 0 || id & 3 == 3 {
        return false;
    }
    let who = !(id >> 3) as u32;
    if id & 4 != 0 {
        // A thread's clock, of the caller's own process only (Linux's
        // lookup_task).
        who == 0 || k.threads.contains_key(&who)
    } else {
        who == 0 || who == k.proc.pid || k.others.contains_key(&who)
    }
}

fn to_ts(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

pub fn clock_gettime(ctx: &mut Ctx, a: Args) -> SysResult {
    let ns = clock_ns(ctx, a.u64(0))?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &to_ts(ns))?;
    Ok(0)
}

/// clock_settime(2). The sandbox has no CAP_SYS_TIME (as a container
/// without it): the real-time clock is EPERM, after the checks Linux
/// makes first (the time is read, the clock is known); clocks Linux never
/// sets are EINVAL.
pub fn clock_settime(ctx: &mut Ctx, a: Args) -> SysResult {
    let clock = a.u64(0);
    read_ts(ctx, a.u64(1))?;
    clock_ns(ctx, clock)?;
    Err(if clock == CLOCK_REALTIME {
        Errno::EPERM
    } else {
        Errno::EINVAL
    }
    .into())
}

pub fn clock_getres(ctx: &mut Ctx, a: Args) -> SysResult {
    clock_ns(ctx, a.u64(0))?;
    let res = match a.u64(0) {
        CLOCK_REALTIME_COARSE | CLOCK_MONOTONIC_COARSE => 4_000_000,
        _ => 1,
    };
    if a.u64(1) != 0 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &to_ts(res))?;
    }
    Ok(0)
}

pub fn gettimeofday(ctx: &mut Ctx, a: Args) -> SysResult {
    let ns = clock_ns(ctx, CLOCK_REALTIME)?;
    if a.u64(0) != 0 {
        let tv = Timeval {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_usec: ((ns % 1_000_000_000) / 1000) as i64,
        };
        ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &tv)?;
    }
    if a.u64(1) != 0 {
        ctx.k.mm.write_obj(
            ctx.mem,
            a.u64(1),
            &Timezone {
                tz_minuteswest: 0,
                tz_dsttime: 0,
            },
        )?;
    }
    Ok(0)
}

pub fn time(ctx: &mut Ctx, a: Args) -> SysResult {
    let s = clock_ns(ctx, CLOCK_REALTIME)? / 1_000_000_000;
    if a.u64(0) != 0 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &(s as i64))?;
    }
    Ok(s)
}

/// Block the calling thread for `ns` (other threads run meanwhile; the
/// sandbox's deadline still ends the run).
fn sleep(ctx: &mut Ctx, ns: u64) -> SysResult {
    if ns == 0 {
        return Ok(0);
    }
    let until = ctx.k.syscall_deadline(Duration::from_nanos(ns));
    Err(ctx.k.wait(Wait::Sleep { until }))
}

/// A guest `struct timespec` as nanoseconds (EINVAL for a negative or
/// malformed one; saturating, so a timeout of centuries stays huge
/// instead of wrapping to a short one).
pub(super) fn read_ts(ctx: &mut Ctx, va: u64) -> Result<u64, Errno> {
    let ts: Timespec = ctx.k.mm.read_obj(ctx.mem, va)?;
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64))
}

pub fn nanosleep(ctx: &mut Ctx, a: Args) -> SysResult {
    let ns = read_ts(ctx, a.u64(0))?;
    sleep(ctx, ns)
}

pub fn clock_nanosleep(ctx: &mut Ctx, a: Args) -> SysResult {
    let (clock, flags, req) = (a.u64(0), a.u64(1), a.u64(2));
    if matches!(clock, CLOCK_THREAD_CPUTIME_ID) {
        return Err(Errno::EINVAL.into());
    }
    let now = clock_ns(ctx, clock)?;
    let ns = read_ts(ctx, req)?;
    let rel = if flags & TIMER_ABSTIME != 0 {
        ns.saturating_sub(now)
    } else {
        ns
    };
    sleep(ctx, rel)
}

pub fn getrandom(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(2) & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0
        || a.u64(2) & (GRND_RANDOM | GRND_INSECURE) == (GRND_RANDOM | GRND_INSECURE)
    {
        return Err(Errno::EINVAL.into());
    }
    let len = (a.usize(1)).min((32 << 20) - 1).min(1 << 20);
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        done += rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Errno(e.raw_os_error() as u16))?;
    }
    ctx.k.mm.write(ctx.mem, a.ptr(0), &buf)?;
    Ok(len as u64)
}
