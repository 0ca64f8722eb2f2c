//! Process identity, limits, scheduling and the thread-library hooks.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{fill_cstr, Rlimit, Rusage, Sysinfo, Timeval, Tms, Utsname};
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::USER_END;
use zerocopy::FromZeros;

use super::{Ctx, SysResult, BLOCK, KERNEL_RELEASE};
use crate::kernel::Exit;

pub fn exit(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    // One thread: the thread's exit is the process's.
    exit_group(ctx, a)
}

pub fn exit_group(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    ctx.k.exit = Some(Exit::Code(a[0] as i32));
    Ok(0)
}

pub fn getpid(ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(ctx.k.task.pid as u64)
}

pub fn getppid(ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(ctx.k.task.ppid as u64)
}

/// getuid and friends: the sandbox runs as root.
pub fn getid(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(0)
}

pub fn getresid(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    for p in &a[..3] {
        ctx.k.mm.write_obj(ctx.mem, *p, &0u32)?;
    }
    Ok(0)
}

pub fn getgroups(_ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if (a[0] as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

pub fn setid(_ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if a[0] as u32 == 0 {
        Ok(0)
    } else {
        Err(Errno::EPERM)
    }
}

pub fn getpgid(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let pid = a[0] as u32;
    if pid == 0 || pid == ctx.k.task.pid {
        Ok(ctx.k.task.pid as u64)
    } else {
        Err(Errno::ESRCH)
    }
}

pub fn setpgid(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let (pid, pgid) = (a[0] as u32, a[1] as u32);
    if (pid != 0 && pid != ctx.k.task.pid) || (pgid != 0 && pgid != ctx.k.task.pid) {
        return Err(Errno::ESRCH);
    }
    Ok(0)
}

pub fn setsid(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    // The process already leads its process group.
    Err(Errno::EPERM)
}

pub fn set_tid_address(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    ctx.k.task.clear_child_tid = a[0];
    Ok(ctx.k.task.pid as u64)
}

pub fn set_robust_list(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if a[1] != 24 {
        return Err(Errno::EINVAL);
    }
    ctx.k.task.robust_list = (a[0], a[1]);
    Ok(0)
}

pub fn get_robust_list(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if a[0] != 0 && a[0] as u32 != ctx.k.task.pid {
        return Err(Errno::ESRCH);
    }
    let (head, len) = ctx.k.task.robust_list;
    ctx.k.mm.write_obj(ctx.mem, a[1], &head)?;
    ctx.k.mm.write_obj(ctx.mem, a[2], &len)?;
    Ok(0)
}

pub fn rseq(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    const UNREGISTER: u64 = 1;
    let (addr, len, flags, sig) = (a[0], a[1] as u32, a[2], a[3] as u32);
    if flags & UNREGISTER != 0 {
        match ctx.k.task.rseq {
            Some((r, s)) if r == addr && s == sig => {
                ctx.k.task.rseq = None;
                return Ok(0);
            }
            _ => return Err(Errno::EINVAL),
        }
    }
    if flags != 0 || len < 32 || addr % 32 != 0 {
        return Err(Errno::EINVAL);
    }
    if let Some((r, s)) = ctx.k.task.rseq {
        return Err(if r == addr && s == sig {
            Errno::EBUSY
        } else {
            Errno::EINVAL
        });
    }
    // cpu_id_start and cpu_id: there is one CPU.
    ctx.k.mm.write_obj(ctx.mem, addr, &[0u32, 0u32])?;
    ctx.k.task.rseq = Some((addr, sig));
    Ok(0)
}

pub fn arch_prctl(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    match a[0] {
        ARCH_SET_FS | ARCH_SET_GS => {
            if a[1] >= USER_END {
                return Err(Errno::EPERM);
            }
            if a[0] == ARCH_SET_FS {
                ctx.k.task.fs_base = a[1];
            } else {
                ctx.k.task.gs_base = a[1];
            }
            Ok(0)
        }
        ARCH_GET_FS => {
            let v = ctx.k.task.fs_base;
            ctx.k.mm.write_obj(ctx.mem, a[1], &v)?;
            Ok(0)
        }
        ARCH_GET_GS => {
            let v = ctx.k.task.gs_base;
            ctx.k.mm.write_obj(ctx.mem, a[1], &v)?;
            Ok(0)
        }
        ARCH_GET_CPUID => Ok(1),
        _ => Err(Errno::EINVAL),
    }
}

pub fn prctl(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_PDEATHSIG: u64 = 2;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_CAPBSET_READ: u64 = 23;
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    const PR_GET_NO_NEW_PRIVS: u64 = 39;
    match a[0] {
        PR_SET_PDEATHSIG | PR_SET_DUMPABLE | PR_SET_NO_NEW_PRIVS => Ok(0),
        PR_GET_PDEATHSIG => {
            ctx.k.mm.write_obj(ctx.mem, a[1], &0i32)?;
            Ok(0)
        }
        PR_GET_DUMPABLE => Ok(1),
        PR_GET_NO_NEW_PRIVS => Ok(1),
        PR_CAPBSET_READ => Ok(0),
        PR_SET_NAME => {
            let mut name = ctx.k.mm.read_cstr(ctx.mem, a[1], 4096)?;
            name.truncate(15);
            ctx.k.task.comm = String::from_utf8_lossy(&name).into_owned();
            Ok(0)
        }
        PR_GET_NAME => {
            let mut b = [0u8; 16];
            let n = ctx.k.task.comm.len().min(15);
            b[..n].copy_from_slice(&ctx.k.task.comm.as_bytes()[..n]);
            ctx.k.mm.write(ctx.mem, a[1], &b)?;
            Ok(0)
        }
        other => {
            tracing::debug!(option = other, "unsupported prctl: EINVAL");
            Err(Errno::EINVAL)
        }
    }
}

pub fn uname(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let mut u = Utsname::new_zeroed();
    fill_cstr(&mut u.sysname, "Linux");
    fill_cstr(&mut u.nodename, &ctx.k.hostname);
    fill_cstr(&mut u.release, KERNEL_RELEASE);
    fill_cstr(&mut u.version, "#1 SMP PREEMPT zeroboot");
    fill_cstr(&mut u.machine, "x86_64");
    fill_cstr(&mut u.domainname, "(none)");
    ctx.k.mm.write_obj(ctx.mem, a[0], &u)?;
    Ok(0)
}

pub fn sethostname(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if a[1] > 64 {
        return Err(Errno::EINVAL);
    }
    let b = ctx.k.mm.read_vec(ctx.mem, a[0], a[1] as usize)?;
    ctx.k.hostname = String::from_utf8_lossy(&b).into_owned();
    Ok(0)
}

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
    ctx.k.task.rlimits[res as usize] = new;
    Ok(())
}

pub fn prlimit64(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let (pid, res, new, old) = (a[0] as u32, a[1], a[2], a[3]);
    if pid != 0 && pid != ctx.k.task.pid {
        return Err(Errno::ESRCH);
    }
    if res >= RLIMIT_NLIMITS {
        return Err(Errno::EINVAL);
    }
    let cur = ctx.k.task.rlimits[res as usize];
    if new != 0 {
        let n: Rlimit = ctx.k.mm.read_obj(ctx.mem, new)?;
        apply_rlimit(ctx, res, n)?;
    }
    if old != 0 {
        ctx.k.mm.write_obj(ctx.mem, old, &cur)?;
    }
    Ok(0)
}

pub fn getrlimit(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    prlimit64(ctx, [0, a[0], 0, a[1], 0, 0])
}

pub fn setrlimit(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    prlimit64(ctx, [0, a[0], a[1], 0, 0, 0])
}

pub fn sysinfo(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let mut s = Sysinfo::new_zeroed();
    s.uptime = (super::uptime_ns(ctx) / 1_000_000_000) as i64;
    s.totalram = ctx.k.mm.limit();
    s.freeram = ctx.k.mm.limit().saturating_sub(ctx.k.mm.resident());
    s.procs = 1;
    s.mem_unit = 1;
    ctx.k.mm.write_obj(ctx.mem, a[0], &s)?;
    Ok(0)
}

pub fn sched_getaffinity(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let (pid, len, mask) = (a[0] as u32, a[1], a[2]);
    if pid != 0 && pid != ctx.k.task.pid {
        return Err(Errno::ESRCH);
    }
    if len < 8 || len % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    ctx.k.mm.write_obj(ctx.mem, mask, &1u64)?;
    Ok(8)
}

pub fn sched_setaffinity(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    if a[1] < 8 {
        return Err(Errno::EINVAL);
    }
    let m: u64 = ctx.k.mm.read_obj(ctx.mem, a[2])?;
    if m & 1 == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

pub fn sched_yield(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(0)
}

pub fn sched_getscheduler(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(0)
}

pub fn sched_getparam(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    ctx.k.mm.write_obj(ctx.mem, a[1], &0i32)?;
    Ok(0)
}

pub fn getpriority(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(20)
}

pub fn setpriority(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Ok(0)
}

pub fn getrusage(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let cpu = super::cpu_ns(ctx);
    let mut r = Rusage::new_zeroed();
    r.ru_utime = Timeval {
        tv_sec: (cpu / 1_000_000_000) as i64,
        tv_usec: ((cpu % 1_000_000_000) / 1000) as i64,
    };
    // ru_maxrss (kB) is the first of the remaining fields.
    r.rest[0] = (ctx.k.mm.resident() / 1024) as i64;
    ctx.k.mm.write_obj(ctx.mem, a[1], &r)?;
    Ok(0)
}

pub fn times(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let ticks = (super::cpu_ns(ctx) / 10_000_000) as i64;
    if a[0] != 0 {
        let t = Tms {
            tms_utime: ticks,
            tms_stime: 0,
            tms_cutime: 0,
            tms_cstime: 0,
        };
        ctx.k.mm.write_obj(ctx.mem, a[0], &t)?;
    }
    Ok(super::uptime_ns(ctx) / 10_000_000)
}

pub fn getcpu(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    for p in [a[0], a[1]] {
        if p != 0 {
            ctx.k.mm.write_obj(ctx.mem, p, &0u32)?;
        }
    }
    Ok(0)
}

pub fn capget(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    const V3: u32 = 0x2008_0522;
    let hdr: [u32; 2] = ctx.k.mm.read_obj(ctx.mem, a[0])?;
    if hdr[0] != V3 && hdr[0] != 0x1998_0330 && hdr[0] != 0x2007_1026 {
        ctx.k.mm.write_obj(ctx.mem, a[0], &[V3, hdr[1]])?;
        return if a[1] == 0 { Ok(0) } else { Err(Errno::EINVAL) };
    }
    if a[1] != 0 {
        // No capabilities: nothing privileged exists in a sandbox.
        ctx.k.mm.write_obj(ctx.mem, a[1], &[0u32; 6])?;
    }
    Ok(0)
}

pub fn personality(_ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    match a[0] as u32 {
        0 | 0xffff_ffff => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

pub fn clone(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::EAGAIN)
}

pub fn clone3(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::ENOSYS)
}

pub fn fork(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::EAGAIN)
}

pub fn execve(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::ENOSYS)
}

pub fn wait4(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::ECHILD)
}

pub fn futex(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    let (uaddr, op, val, timeout) = (a[0], a[1], a[2] as u32, a[3]);
    if uaddr % 4 != 0 {
        return Err(Errno::EINVAL);
    }
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
            if cur != val {
                return Err(Errno::EAGAIN);
            }
            if cmd == FUTEX_WAIT_BITSET && a[5] as u32 == 0 {
                return Err(Errno::EINVAL);
            }
            // Nobody else can change the word: wait out the timeout.
            if timeout == 0 {
                ctx.k.blocked = Some("futex wait with no other thread to wake it");
                return Err(BLOCK);
            }
            let ts: zeroboot_abi::structs::Timespec = ctx.k.mm.read_obj(ctx.mem, timeout)?;
            if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
                return Err(Errno::EINVAL);
            }
            let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            let rel = if cmd == FUTEX_WAIT_BITSET {
                // Absolute on the chosen clock.
                let clock = if op & FUTEX_CLOCK_REALTIME != 0 {
                    CLOCK_REALTIME
                } else {
                    CLOCK_MONOTONIC
                };
                ns.saturating_sub(super::time::clock_ns(ctx, clock)?)
            } else {
                ns
            };
            super::time::sleep_ns(ctx, rel)?;
            Err(Errno::ETIMEDOUT)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(0),
        FUTEX_REQUEUE => Ok(0),
        FUTEX_CMP_REQUEUE => {
            let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
            if cur != a[5] as u32 {
                return Err(Errno::EAGAIN);
            }
            Ok(0)
        }
        FUTEX_WAKE_OP => {
            let (uaddr2, encoded) = (a[4], a[5] as u32);
            let old: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr2)?;
            let shift = encoded & (8 << 28) != 0;
            let oparg = ((encoded << 8) as i32 >> 20) as u32;
            let oparg = if shift {
                1u32.wrapping_shl(oparg & 31)
            } else {
                oparg
            };
            let new = match (encoded >> 28) & 7 {
                0 => oparg,
                1 => old.wrapping_add(oparg),
                2 => old | oparg,
                3 => old & !oparg,
                4 => old ^ oparg,
                _ => return Err(Errno::ENOSYS),
            };
            ctx.k.mm.write_obj(ctx.mem, uaddr2, &new)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
