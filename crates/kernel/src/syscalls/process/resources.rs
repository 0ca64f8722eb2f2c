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

pub fn sched_getscheduler(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(0)
}

pub fn sched_getparam(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &0i32)?;
    Ok(0)
}

pub fn getpriority(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(20)
}

pub fn setpriority(_ctx: &mut Ctx, _a: Args) -> SysResult {
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
