//! Limits and accounting: rlimits, sysinfo, CPU affinity and scheduling
//! policy, priorities, getrusage, times, getcpu.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Rlimit, Rusage, Sysinfo, Timeval, Tms};
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use crate::syscalls::{Args, Ctx, SysResult};

fn apply_rlimit(ctx: &mut Ctx, res: u64, new: Rlimit) -> Result<(), Errno> {
    if new.rlim_cur > new.rlim_max {
        return Err(Errno::EINVAL);
    }
    if res == RLIMIT_NOFILE {
        if new.rlim_cur > 1 << 20 {
            return Err(Errno::EPERM);
        }
        ctx.k.fds.max_fds = new.rlim_cur.min(ctx.k.limits.fds);
    }
    ctx.k.proc.rlimits[res as usize] = new;
    Ok(())
}

pub fn prlimit64(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, res, new, old) = (a.uint(0), a.u64(1), a.u64(2), a.u64(3));
    if pid != 0 && pid != ctx.k.proc.pid {
        return Err(Errno::ESRCH.into());
    }
    if res >= RLIMIT_NLIMITS {
        return Err(Errno::EINVAL.into());
    }
    let cur = ctx.k.proc.rlimits[res as usize];
    if new != 0 {
        let n: Rlimit = ctx.k.mm.read_obj(ctx.mem, new)?;
        apply_rlimit(ctx, res, n)?;
    }
    if old != 0 {
        ctx.k.mm.write_obj(ctx.mem, old, &cur)?;
    }
    Ok(0)
}

pub fn getrlimit(ctx: &mut Ctx, a: Args) -> SysResult {
    prlimit64(ctx, Args([0, a.u64(0), 0, a.u64(1), 0, 0]))
}

pub fn setrlimit(ctx: &mut Ctx, a: Args) -> SysResult {
    prlimit64(ctx, Args([0, a.u64(0), a.u64(1), 0, 0, 0]))
}

pub fn sysinfo(ctx: &mut Ctx, a: Args) -> SysResult {
    let mut s = Sysinfo::new_zeroed();
    s.uptime = (crate::syscalls::uptime_ns(ctx) / 1_000_000_000) as i64;
    s.totalram = ctx.k.mm.limit();
    s.freeram = ctx.k.mm.limit().saturating_sub(ctx.k.mm.resident());
    s.procs = 1;
    s.mem_unit = 1;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &s)?;
    Ok(0)
}

pub fn sched_getaffinity(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, len, mask) = (a.uint(0), a.u64(1), a.u64(2));
    if pid != 0 && pid != ctx.k.proc.pid {
        return Err(Errno::ESRCH.into());
    }
    if len < 8 || len % 8 != 0 {
        return Err(Errno::EINVAL.into());
    }
    ctx.k.mm.write_obj(ctx.mem, mask, &1u64)?;
    Ok(8)
}

pub fn sched_setaffinity(ctx: &mut Ctx, a: Args) -> SysResult {
    // Any pid that names no process (negative ones too) is ESRCH here.
    sched_target(ctx, a.int(0)).map_err(|_| Errno::ESRCH)?;
    if a.u64(1) < 8 {
        return Err(Errno::EINVAL.into());
    }
    let m: u64 = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
    if m & 1 == 0 {
        return Err(Errno::EINVAL.into());
    }
    Ok(0)
}

pub fn sched_yield(ctx: &mut Ctx, _a: Args) -> SysResult {
    ctx.k.yield_now = true;
    Ok(0)
}

/// The process a sched_* call names: 0 is the caller; a negative pid is
/// EINVAL, one that names no live process ESRCH.
fn sched_target(ctx: &Ctx, pid: i32) -> Result<u32, Errno> {
    match pid {
        p if p < 0 => Err(Errno::EINVAL),
        0 => Ok(ctx.k.proc.pid),
        p if p as u32 == ctx.k.proc.pid || ctx.k.others.contains_key(&(p as u32)) => Ok(p as u32),
        _ => Err(Errno::ESRCH),
    }
}

fn policy_of(ctx: &Ctx, pid: u32) -> u32 {
    ctx.k.process(pid).map_or(0, |p| p.sched_policy)
}

pub fn sched_getscheduler(ctx: &mut Ctx, a: Args) -> SysResult {
    let pid = sched_target(ctx, a.int(0))?;
    Ok(policy_of(ctx, pid) as u64)
}

pub fn sched_getparam(ctx: &mut Ctx, a: Args) -> SysResult {
    sched_target(ctx, a.int(0))?;
    if a.u64(1) == 0 {
        return Err(Errno::EINVAL.into());
    }
    // Every policy allowed here has static priority 0.
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &0i32)?;
    Ok(0)
}

/// Set `pid`'s policy to `policy` with `priority`: the non-real-time
/// policies (priority 0) are kept; SCHED_FIFO and SCHED_RR are EPERM, as
/// for a process without CAP_SYS_NICE (a sandbox cannot promise real
/// time).
fn set_scheduler(ctx: &mut Ctx, pid: u32, policy: u64, priority: i32) -> SysResult {
    const SCHED_RESET_ON_FORK: u64 = 0x4000_0000;
    let policy = policy & !SCHED_RESET_ON_FORK;
    let (min, max) = priority_range(policy)?;
    if priority < min || priority > max || policy == SCHED_DEADLINE {
        return Err(Errno::EINVAL.into());
    }
    if matches!(policy, SCHED_FIFO | SCHED_RR) {
        tracing::debug!(policy, "real-time scheduling refused: EPERM");
        return Err(Errno::EPERM.into());
    }
    if let Some(p) = ctx.k.process_mut(pid) {
        p.sched_policy = policy as u32;
    }
    Ok(0)
}

pub fn sched_setscheduler(ctx: &mut Ctx, a: Args) -> SysResult {
    let pid = sched_target(ctx, a.int(0))?;
    if a.u64(2) == 0 {
        return Err(Errno::EINVAL.into());
    }
    let priority: i32 = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
    set_scheduler(ctx, pid, a.u64(1), priority)
}

pub fn sched_setparam(ctx: &mut Ctx, a: Args) -> SysResult {
    let pid = sched_target(ctx, a.int(0))?;
    if a.u64(1) == 0 {
        return Err(Errno::EINVAL.into());
    }
    let priority: i32 = ctx.k.mm.read_obj(ctx.mem, a.ptr(1))?;
    let policy = policy_of(ctx, pid) as u64;
    set_scheduler(ctx, pid, policy, priority)
}

const PRIO_PROCESS: u64 = 0;
const PRIO_PGRP: u64 = 1;
const PRIO_USER: u64 = 2;

/// The processes getpriority/setpriority(which, who) name, with their
/// nice values; ESRCH when none.
fn prio_targets(ctx: &Ctx, which: u64, who: u32) -> Result<Vec<(u32, i32)>, Errno> {
    let me = &ctx.k.proc;
    let all = std::iter::once(me).chain(ctx.k.others.values().map(|s| &s.proc));
    let v: Vec<(u32, i32)> = match which {
        PRIO_PROCESS => {
            let pid = if who == 0 { me.pid } else { who };
            all.filter(|p| p.pid == pid)
                .map(|p| (p.pid, p.nice))
                .collect()
        }
        PRIO_PGRP => {
            let g = if who == 0 { me.pgid } else { who };
            all.filter(|p| p.pgid == g)
                .map(|p| (p.pid, p.nice))
                .collect()
        }
        PRIO_USER => {
            let u = if who == 0 { me.cred.uid } else { who };
            all.filter(|p| p.cred.uid == u)
                .map(|p| (p.pid, p.nice))
                .collect()
        }
        _ => return Err(Errno::EINVAL),
    };
    if v.is_empty() {
        return Err(Errno::ESRCH);
    }
    Ok(v)
}

/// The highest priority (lowest nice) among the targets, as the raw
/// syscall reports it: 20 - nice (glibc turns it back).
pub fn getpriority(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = prio_targets(ctx, a.u64(0), a.uint(1))?;
    let nice = t.iter().map(|&(_, n)| n).min().unwrap_or(0);
    Ok((20 - nice) as u64)
}

/// Set the nice value (clamped to -20..=19, as Linux); lowering it needs
/// root (CAP_SYS_NICE), and changing another user's process needs
/// matching ids.
pub fn setpriority(ctx: &mut Ctx, a: Args) -> SysResult {
    let nice = a.int(2).clamp(-20, 19);
    let t = prio_targets(ctx, a.u64(0), a.uint(1))?;
    let cred = ctx.k.proc.cred.clone();
    for (pid, old) in t {
        let Some(owner) = ctx.k.process(pid).map(|p| p.cred.clone()) else {
            continue;
        };
        if cred.euid != 0 && cred.euid != owner.euid && cred.euid != owner.uid {
            return Err(Errno::EPERM.into());
        }
        if nice < old && cred.euid != 0 {
            return Err(Errno::EACCES.into());
        }
        if let Some(p) = ctx.k.process_mut(pid) {
            p.nice = nice;
        }
    }
    Ok(0)
}

const SCHED_OTHER: u64 = 0;
const SCHED_FIFO: u64 = 1;
const SCHED_RR: u64 = 2;
const SCHED_BATCH: u64 = 3;
const SCHED_IDLE: u64 = 5;
const SCHED_DEADLINE: u64 = 6;

/// The static priority range of a policy: 1..=99 for the real-time ones,
/// 0 for the others (as Linux).
fn priority_range(policy: u64) -> Result<(i32, i32), Errno> {
    match policy {
        SCHED_FIFO | SCHED_RR => Ok((1, 99)),
        SCHED_OTHER | SCHED_BATCH | SCHED_IDLE | SCHED_DEADLINE => Ok((0, 0)),
        _ => Err(Errno::EINVAL),
    }
}

pub fn sched_get_priority_max(_ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(priority_range(a.u64(0))?.1 as u64)
}

pub fn sched_get_priority_min(_ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(priority_range(a.u64(0))?.0 as u64)
}

/// The round-robin quantum: every process here is SCHED_OTHER and gets
/// the sandbox's time slice.
pub fn sched_rr_get_interval(ctx: &mut Ctx, a: Args) -> SysResult {
    let pid = a.int(0);
    if pid < 0 {
        return Err(Errno::EINVAL.into());
    }
    let pid = pid as u32;
    if pid != 0 && pid != ctx.k.proc.pid && !ctx.k.others.contains_key(&pid) {
        return Err(Errno::ESRCH.into());
    }
    let slice = crate::sandbox::TIMESLICE;
    let ts = zeroboot_abi::structs::Timespec {
        tv_sec: slice.as_secs() as i64,
        tv_nsec: slice.subsec_nanos() as i64,
    };
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &ts)?;
    Ok(0)
}

pub fn getrusage(ctx: &mut Ctx, a: Args) -> SysResult {
    let cpu = crate::syscalls::cpu_ns(ctx);
    let mut r = Rusage::new_zeroed();
    r.ru_utime = Timeval {
        tv_sec: (cpu / 1_000_000_000) as i64,
        tv_usec: ((cpu % 1_000_000_000) / 1000) as i64,
    };
    // ru_maxrss (kB) is the first of the remaining fields.
    r.rest[0] = (ctx.k.mm.resident() / 1024) as i64;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &r)?;
    Ok(0)
}

pub fn times(ctx: &mut Ctx, a: Args) -> SysResult {
    let ticks = (crate::syscalls::cpu_ns(ctx) / 10_000_000) as i64;
    if a.u64(0) != 0 {
        let t = Tms {
            tms_utime: ticks,
            tms_stime: 0,
            tms_cutime: 0,
            tms_cstime: 0,
        };
        ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &t)?;
    }
    Ok(crate::syscalls::uptime_ns(ctx) / 10_000_000)
}

pub fn getcpu(ctx: &mut Ctx, a: Args) -> SysResult {
    for p in [a.u64(0), a.u64(1)] {
        if p != 0 {
            ctx.k.mm.write_obj(ctx.mem, p, &0u32)?;
        }
    }
    Ok(0)
}
