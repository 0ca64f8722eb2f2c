//! Interval timers (setitimer, getitimer, alarm) and POSIX timers
//! (timer_create and friends). State and firing are in `crate::timers`.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Timespec, Timeval};
use zeroboot_abi::Errno;

use super::{Args, Ctx, SysResult};
use crate::timers::{clock_now, Notify, Timer, MAX_POSIX_TIMERS};

const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD: i32 = 2;
const SIGEV_THREAD_ID: i32 = 4;
const CLOCK_REALTIME_ALARM: u64 = 8;
const CLOCK_BOOTTIME_ALARM: u64 = 9;

fn timeval(ns: u64) -> Timeval {
    Timeval {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_usec: ((ns % 1_000_000_000) / 1000) as i64,
    }
}

fn timespec(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

fn tv_ns(tv: Timeval) -> Result<u64, Errno> {
    if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
        return Err(Errno::EINVAL);
    }
    Ok((tv.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(tv.tv_usec as u64 * 1000))
}

fn itimer<'a>(ctx: &'a mut Ctx, which: u64) -> Result<&'a mut Timer, Errno> {
    ctx.k
        .proc
        .timers
        .itimers
        .get_mut(which as usize)
        .ok_or(Errno::EINVAL)
}

/// (value left, interval) of interval timer `which`.
fn itimer_setting(ctx: &mut Ctx, which: u64) -> Result<(u64, u64), Errno> {
    let clock = itimer(ctx, which)?.clock;
    let now = clock_now(ctx.k, clock);
    Ok(itimer(ctx, which)?.setting(now))
}

/// Arm interval timer `which` `value` ns from now (0: disarm).
fn arm_itimer(ctx: &mut Ctx, which: u64, value: u64, interval: u64) -> Result<(), Errno> {
    let clock = itimer(ctx, which)?.clock;
    let now = clock_now(ctx.k, clock);
    let at = (value > 0).then(|| now.saturating_add(value));
    itimer(ctx, which)?.arm(at, interval);
    Ok(())
}

pub fn getitimer(ctx: &mut Ctx, a: Args) -> SysResult {
    let (value, interval) = itimer_setting(ctx, a.u64(0))?;
    ctx.k
        .mm
        .write_obj(ctx.mem, a.ptr(1), &[timeval(interval), timeval(value)])?;
    Ok(0)
}

pub fn setitimer(ctx: &mut Ctx, a: Args) -> SysResult {
    let (which, new, old) = (a.u64(0), a.ptr(1), a.ptr(2));
    let (value, interval) = itimer_setting(ctx, which)?;
    // A null new value disarms (as Linux accepts, with a warning).
    let set = if new == 0 {
        [
            Timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            Timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        ]
    } else {
        ctx.k.mm.read_obj::<[Timeval; 2]>(ctx.mem, new)?
    };
    let (new_interval, new_value) = (tv_ns(set[0])?, tv_ns(set[1])?);
    if old != 0 {
        ctx.k
            .mm
            .write_obj(ctx.mem, old, &[timeval(interval), timeval(value)])?;
    }
    arm_itimer(ctx, which, new_value, new_interval)?;
    Ok(0)
}

/// alarm(2): ITIMER_REAL as a one-shot of whole seconds; returns the
/// seconds that were left, rounded as Linux rounds them.
pub fn alarm(ctx: &mut Ctx, a: Args) -> SysResult {
    const REAL: u64 = 0;
    let (left, _) = itimer_setting(ctx, REAL)?;
    let secs = a.uint(0) as u64;
    arm_itimer(ctx, REAL, secs * 1_000_000_000, 0)?;
    let (s, rem) = (left / 1_000_000_000, left % 1_000_000_000);
    Ok(if rem >= 500_000_000 || (s == 0 && rem > 0) {
        s + 1
    } else {
        s
    })
}

fn posix_timer<'a>(ctx: &'a mut Ctx, id: i32) -> Result<&'a mut Timer, Errno> {
    ctx.k.proc.timers.posix.get_mut(&id).ok_or(Errno::EINVAL)
}

pub fn timer_create(ctx: &mut Ctx, a: Args) -> SysResult {
    let (clock, sevp, out) = (a.u64(0), a.ptr(1), a.ptr(2));
    let clock = match clock {
        CLOCK_REALTIME
        | CLOCK_MONOTONIC
        | CLOCK_BOOTTIME
        | CLOCK_PROCESS_CPUTIME_ID
        | CLOCK_THREAD_CPUTIME_ID => clock,
        // No suspend in a sandbox: the alarm clocks are their plain ones.
        CLOCK_REALTIME_ALARM => CLOCK_REALTIME,
        CLOCK_BOOTTIME_ALARM => CLOCK_BOOTTIME,
        _ => return Err(Errno::EINVAL.into()),
    };
    let timers = &ctx.k.proc.timers.posix;
    if timers.len() >= MAX_POSIX_TIMERS {
        return Err(Errno::EAGAIN.into());
    }
    // Linux hands out the lowest free id from 0.
    let id = (0..).find(|i| !timers.contains_key(i)).unwrap_or(0);
    let notify = if sevp == 0 {
        Notify::Signal(zeroboot_abi::signal::SIGALRM)
    } else {
        // struct sigevent: value (8), signo, notify, then the thread id.
        let ev: [i32; 5] = ctx.k.mm.read_obj(ctx.mem, sevp)?;
        let (signo, how, tid) = (ev[2], ev[3], ev[4]);
        let sig_ok = (1..=64).contains(&signo);
        match how {
            SIGEV_NONE => Notify::None,
            // SIGEV_THREAD: the C library's helper thread; the kernel
            // sees a plain signal.
            SIGEV_SIGNAL | SIGEV_THREAD if sig_ok => Notify::Signal(signo as u32),
            // SIGEV_SIGNAL | SIGEV_THREAD_ID (SIGEV_SIGNAL is 0).
            SIGEV_THREAD_ID if sig_ok => {
                if tid <= 0 || !ctx.k.threads.contains_key(&(tid as u32)) {
                    return Err(Errno::EINVAL.into());
                }
                Notify::Thread(signo as u32, tid as u32)
            }
            _ => return Err(Errno::EINVAL.into()),
        }
    };
    ctx.k.mm.write_obj(ctx.mem, out, &id)?;
    ctx.k.proc.timers.posix.insert(
        id,
        Timer {
            clock,
            notify,
            ..Default::default()
        },
    );
    Ok(0)
}

fn posix_setting(ctx: &mut Ctx, id: i32) -> Result<[Timespec; 2], Errno> {
    let clock = posix_timer(ctx, id)?.clock;
    let now = clock_now(ctx.k, clock);
    let (value, interval) = posix_timer(ctx, id)?.setting(now);
    Ok([timespec(interval), timespec(value)])
}

pub fn timer_settime(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, flags, new, old) = (a.int(0), a.u64(1), a.ptr(2), a.ptr(3));
    let cur = posix_setting(ctx, id)?;
    if flags & !TIMER_ABSTIME != 0 {
        return Err(Errno::EINVAL.into());
    }
    let interval = super::time::read_ts(ctx, new)?;
    let value = super::time::read_ts(ctx, new + 16)?;
    if old != 0 {
        ctx.k.mm.write_obj(ctx.mem, old, &cur)?;
    }
    let clock = posix_timer(ctx, id)?.clock;
    let now = clock_now(ctx.k, clock);
    let at = match value {
        0 => None,
        // An absolute time already past fires at once.
        v if flags & TIMER_ABSTIME != 0 => Some(v),
        v => Some(now.saturating_add(v)),
    };
    posix_timer(ctx, id)?.arm(at, interval);
    Ok(0)
}

pub fn timer_gettime(ctx: &mut Ctx, a: Args) -> SysResult {
    let cur = posix_setting(ctx, a.int(0))?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &cur)?;
    Ok(0)
}

pub fn timer_getoverrun(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = ctx
        .k
        .proc
        .timers
        .posix
        .get(&a.int(0))
        .ok_or(Errno::EINVAL)?;
    Ok(crate::timers::overrun(ctx.k, t).min(i32::MAX as u64))
}

pub fn timer_delete(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k
        .proc
        .timers
        .posix
        .remove(&a.int(0))
        .ok_or(Errno::EINVAL)?;
    Ok(0)
}
