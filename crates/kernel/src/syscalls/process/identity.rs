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

pub fn getuid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.uid as u64)
}

pub fn geteuid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.euid as u64)
}

pub fn getgid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.gid as u64)
}

pub fn getegid(ctx: &mut Ctx, _a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.egid as u64)
}

fn write_ids(ctx: &mut Ctx, a: Args, ids: [u32; 3]) -> SysResult {
    for (i, id) in ids.iter().enumerate() {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(i), id)?;
    }
    Ok(0)
}

pub fn getresuid(ctx: &mut Ctx, a: Args) -> SysResult {
    let c = &ctx.k.proc.cred;
    let ids = [c.uid, c.euid, c.suid];
    write_ids(ctx, a, ids)
}

pub fn getresgid(ctx: &mut Ctx, a: Args) -> SysResult {
    let c = &ctx.k.proc.cred;
    let ids = [c.gid, c.egid, c.sgid];
    write_ids(ctx, a, ids)
}

/// getgroups(2): the count for size 0, EINVAL when the list does not fit.
pub fn getgroups(ctx: &mut Ctx, a: Args) -> SysResult {
    let size = a.int(0);
    if size < 0 {
        return Err(Errno::EINVAL.into());
    }
    let groups = ctx.k.proc.cred.groups.clone();
    if size == 0 {
        return Ok(groups.len() as u64);
    }
    if (size as usize) < groups.len() {
        return Err(Errno::EINVAL.into());
    }
    for (i, g) in groups.iter().enumerate() {
        ctx.k
            .mm
            .write_obj(ctx.mem, a.u64(1).wrapping_add(4 * i as u64), g)?;
    }
    Ok(groups.len() as u64)
}

/// setgroups(2): EPERM without privilege, EINVAL past NGROUPS_MAX.
pub fn setgroups(ctx: &mut Ctx, a: Args) -> SysResult {
    let n = a.int(0);
    if n < 0 || n as usize > crate::cred::NGROUPS_MAX {
        return Err(Errno::EINVAL.into());
    }
    if !ctx.k.proc.cred.privileged() {
        return Err(Errno::EPERM.into());
    }
    let mut groups = Vec::with_capacity(n as usize);
    for i in 0..n as u64 {
        groups.push(
            ctx.k
                .mm
                .read_obj::<u32>(ctx.mem, a.u64(1).wrapping_add(4 * i))?,
        );
    }
    // Kept sorted, as Linux's groups_sort.
    groups.sort_unstable();
    ctx.k.proc.cred.setgroups(groups)?;
    Ok(0)
}

pub fn setuid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setuid(a.uint(0))?;
    Ok(0)
}

pub fn setgid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setgid(a.uint(0))?;
    Ok(0)
}

pub fn setreuid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setreuid(a.uint(0), a.uint(1))?;
    Ok(0)
}

pub fn setregid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setregid(a.uint(0), a.uint(1))?;
    Ok(0)
}

pub fn setresuid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setresuid(a.uint(0), a.uint(1), a.uint(2))?;
    Ok(0)
}

pub fn setresgid(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.proc.cred.setresgid(a.uint(0), a.uint(1), a.uint(2))?;
    Ok(0)
}

pub fn setfsuid(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.setfsuid(a.uint(0)) as u64)
}

pub fn setfsgid(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx.k.proc.cred.setfsgid(a.uint(0)) as u64)
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

/// Capabilities 32..=40 (CAP_LAST_CAP of Linux 6.1 is 40).
const CAP_HIGH: u32 = 0x1ff;

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
    let c = process(ctx, hdr[1]).ok_or(Errno::ESRCH)?.cred.clone();
    if a.u64(1) != 0 {
        // As Linux without securebits: euid 0 holds every capability in
        // its effective set; any root id among the three keeps them
        // permitted (seteuid(0) gets them back).
        let all = |on: bool| if on { [u32::MAX, CAP_HIGH] } else { [0, 0] };
        let eff = all(c.euid == 0);
        let perm = all(c.uid == 0 || c.euid == 0 || c.suid == 0);
        // struct __user_cap_data_struct[2]: {effective, permitted, inheritable}.
        // Version 1 has one struct (32 capabilities), later ones two.
        if hdr[0] == 0x1998_0330 {
            ctx.k
                .mm
                .write_obj(ctx.mem, a.ptr(1), &[eff[0], perm[0], 0])?;
        } else {
            let data: [u32; 6] = [eff[0], perm[0], 0, eff[1], perm[1], 0];
            ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &data)?;
        }
    }
    Ok(0)
}

pub fn personality(_ctx: &mut Ctx, a: Args) -> SysResult {
    match a.uint(0) {
        0 | 0xffff_ffff => Ok(0),
        _ => Err(Errno::EINVAL.into()),
    }
}
