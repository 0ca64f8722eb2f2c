//! Who a process is: pids, tids, user and group ids, process groups and
//! sessions, uname and the host name, capabilities, personality.

use zeroboot_abi::structs::{fill_cstr, Utsname};
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use crate::syscalls::{Args, Ctx, SysResult, KERNEL_RELEASE};

pub fn getpid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.pid as u64)
}

pub fn gettid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.current as u64)
}

pub fn getppid(ctx: &mut Ctx, _a: Args) -> SysResult {
    // The sandbox's first process has no parent inside it (as a
    // container's init has none in its namespace).
    if ctx.k.proc.pid == ctx.k.init_pid {
        return Ok(0);
    }
    Ok(ctx.k.proc.ppid as u64)
}

/// getuid and friends: the sandbox runs as root.
pub fn getid(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(0)
}

pub fn getresid(ctx: &mut Ctx, a: Args) -> SysResult {
    for i in 0..3 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(i), &0u32)?;
    }
    Ok(0)
}

pub fn getgroups(_ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.int(0)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    Ok(0)
}

pub fn setid(_ctx: &mut Ctx, a: Args) -> SysResult {
    if a.uint(0) == 0 {
        Ok(0)
    } else {
        Err(Errno::EPERM.into())
    }
}

/// The process `pid` of the sandbox (0: the caller), live.
pub(super) fn process<'a>(ctx: &'a Ctx, pid: u32) -> Option<&'a crate::task::Process> {
    if pid == 0 || pid == ctx.k.proc.pid {
        Some(&ctx.k.proc)
    } else {
        ctx.k.others.get(&pid).map(|s| &s.proc)
    }
}

/// A process's session; 0 (state saved before sessions were kept) is the
/// first process's.
fn sid_of(ctx: &Ctx, p: &crate::task::Process) -> u32 {
    if p.sid == 0 {
        ctx.k.init_pid
    } else {
        p.sid
    }
}

pub fn getpgrp(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.pgid as u64)
}

pub fn getpgid(ctx: &mut Ctx, a: Args) -> SysResult {
    let pid = a.uint(0);
    if let Some(p) = process(ctx, pid) {
        return Ok(p.pgid as u64);
    }
    match ctx.k.zombies.get(&pid) {
        Some(z) => Ok(z.pgid as u64),
        None => Err(Errno::ESRCH.into()),
    }
}

pub fn getsid(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = process(ctx, a.uint(0)).ok_or(Errno::ESRCH)?;
    Ok(sid_of(ctx, p) as u64)
}

/// setpgid(2): the caller or one of its children joins (or starts) a
/// process group of the caller's session.
pub fn setpgid(ctx: &mut Ctx, a: Args) -> SysResult {
    let (pid, pgid) = (a.int(0), a.int(1));
    if pgid < 0 || pid < 0 {
        return Err(Errno::EINVAL.into());
    }
    let me = ctx.k.proc.pid;
    let pid = if pid == 0 { me } else { pid as u32 };
    let my_sid = sid_of(ctx, &ctx.k.proc);
    let target = process(ctx, pid).ok_or(Errno::ESRCH)?;
    if pid != me && target.ppid != me {
        return Err(Errno::ESRCH.into());
    }
    let target_sid = sid_of(ctx, target);
    if target_sid != my_sid {
        return Err(Errno::EPERM.into());
    }
    if pid != me && target.execed {
        return Err(Errno::EACCES.into());
    }
    if target_sid == pid {
        // A session leader cannot move.
        return Err(Errno::EPERM.into());
    }
    let pgid = if pgid == 0 { pid } else { pgid as u32 };
    if pgid != pid {
        // Joining a group: it must exist in the same session.
        let exists = std::iter::once(&ctx.k.proc)
            .chain(ctx.k.others.values().map(|s| &s.proc))
            .any(|p| p.pgid == pgid && sid_of(ctx, p) == my_sid);
        if !exists {
            return Err(Errno::EPERM.into());
        }
    }
    if pid == me {
        ctx.k.proc.pgid = pgid;
    } else if let Some(s) = ctx.k.others.get_mut(&pid) {
        s.proc.pgid = pgid;
    }
    Ok(0)
}

/// setsid(2): a process that does not lead a group starts a session and
/// a group, both with its pid (and no controlling terminal).
pub fn setsid(ctx: &mut Ctx, _a: Args) -> SysResult {
    let me = ctx.k.proc.pid;
    let leads = std::iter::once(&ctx.k.proc)
        .chain(ctx.k.others.values().map(|s| &s.proc))
        .any(|p| p.pgid == me);
    if leads {
        return Err(Errno::EPERM.into());
    }
    ctx.k.proc.pgid = me;
    ctx.k.proc.sid = me;
    Ok(me as u64)
}

pub fn uname(ctx: &mut Ctx, a: Args) -> SysResult {
    let mut u = Utsname::new_zeroed();
    fill_cstr(&mut u.sysname, "Linux");
    fill_cstr(&mut u.nodename, &ctx.k.hostname);
    fill_cstr(&mut u.release, KERNEL_RELEASE);
    fill_cstr(&mut u.version, "#1 SMP PREEMPT zeroboot");
    fill_cstr(&mut u.machine, "x86_64");
    fill_cstr(&mut u.domainname, "(none)");
    ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &u)?;
    Ok(0)
}

pub fn sethostname(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(1) > 64 {
        return Err(Errno::EINVAL.into());
    }
    let b = ctx.k.mm.read_vec(ctx.mem, a.ptr(0), a.usize(1))?;
    ctx.k.hostname = String::from_utf8_lossy(&b).into_owned();
    Ok(0)
}

pub fn capget(ctx: &mut Ctx, a: Args) -> SysResult {
    const V3: u32 = 0x2008_0522;
    let hdr: [u32; 2] = ctx.k.mm.read_obj(ctx.mem, a.ptr(0))?;
    if hdr[0] != V3 && hdr[0] != 0x1998_0330 && hdr[0] != 0x2007_1026 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &[V3, hdr[1]])?;
        return if a.u64(1) == 0 {
            Ok(0)
        } else {
            Err(Errno::EINVAL.into())
        };
    }
    if a.u64(1) != 0 {
        // No capabilities: nothing privileged exists in a sandbox.
        ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &[0u32; 6])?;
    }
    Ok(0)
}

pub fn personality(_ctx: &mut Ctx, a: Args) -> SysResult {
    match a.uint(0) {
        0 | 0xffff_ffff => Ok(0),
        _ => Err(Errno::EINVAL.into()),
    }
}
