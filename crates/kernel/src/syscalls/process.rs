//! Process identity, limits, scheduling and the thread-library hooks.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{fill_cstr, Rlimit, Rusage, Sysinfo, Timeval, Tms, Utsname};
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::USER_END;
use zerocopy::FromZeros;

use std::time::{Duration, Instant};

use super::{Args, Ctx, ExecArgs, SysError, SysResult, KERNEL_RELEASE};
use crate::task::{CpuContext, Thread, Wait};
use crate::{procs, sched};
use zeroboot_abi::signal::SIGCHLD;

/// exit(2) ends the calling thread; the last thread's exit ends the process.
pub fn exit(ctx: &mut Ctx, a: Args) -> SysResult {
    if ctx.k.threads.len() <= 1 {
        return exit_group(ctx, a);
    }
    let tid = ctx.k.current;
    let ctid = ctx.k.thread().clear_child_tid;
    if ctid != 0 && ctx.k.mm.write_obj(ctx.mem, ctid, &0u32).is_ok() {
        sched::futex_wake(ctx.k, ctid, 1, u32::MAX);
    }
    ctx.k.threads.remove(&tid);
    Ok(0)
}

pub fn exit_group(ctx: &mut Ctx, a: Args) -> SysResult {
    procs::exit_current(ctx.k, ctx.mem, procs::exited(a.int(0)), None);
    Ok(0)
}

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
fn process<'a>(ctx: &'a Ctx, pid: u32) -> Option<&'a crate::task::Process> {
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

pub fn set_tid_address(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.thread_mut().clear_child_tid = a.u64(0);
    Ok(ctx.k.current as u64)
}

pub fn set_robust_list(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(1) != 24 {
        return Err(Errno::EINVAL.into());
    }
    ctx.k.thread_mut().robust_list = (a.u64(0), a.u64(1));
    Ok(0)
}

pub fn get_robust_list(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(0) != 0 && a.uint(0) != ctx.k.proc.pid {
        return Err(Errno::ESRCH.into());
    }
    let (head, len) = ctx.k.thread_mut().robust_list;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &head)?;
    ctx.k.mm.write_obj(ctx.mem, a.ptr(2), &len)?;
    Ok(0)
}

pub fn rseq(ctx: &mut Ctx, a: Args) -> SysResult {
    const UNREGISTER: u64 = 1;
    let (addr, len, flags, sig) = (a.u64(0), a.uint(1), a.u64(2), a.uint(3));
    if flags & UNREGISTER != 0 {
        match ctx.k.thread_mut().rseq {
            Some((r, s)) if r == addr && s == sig => {
                ctx.k.thread_mut().rseq = None;
                return Ok(0);
            }
            _ => return Err(Errno::EINVAL.into()),
        }
    }
    if flags != 0 || len < 32 || addr % 32 != 0 {
        return Err(Errno::EINVAL.into());
    }
    if let Some((r, s)) = ctx.k.thread_mut().rseq {
        return Err(if r == addr && s == sig {
            Errno::EBUSY.into()
        } else {
            Errno::EINVAL.into()
        });
    }
    // cpu_id_start and cpu_id: there is one CPU.
    ctx.k.mm.write_obj(ctx.mem, addr, &[0u32, 0u32])?;
    ctx.k.thread_mut().rseq = Some((addr, sig));
    Ok(0)
}

pub fn arch_prctl(ctx: &mut Ctx, a: Args) -> SysResult {
    match a.u64(0) {
        ARCH_SET_FS | ARCH_SET_GS => {
            if a.u64(1) >= USER_END {
                return Err(Errno::EPERM.into());
            }
            if a.u64(0) == ARCH_SET_FS {
                ctx.k.thread_mut().fs_base = a.u64(1);
            } else {
                ctx.k.thread_mut().gs_base = a.u64(1);
            }
            Ok(0)
        }
        ARCH_GET_FS => {
            let v = ctx.k.thread_mut().fs_base;
            ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &v)?;
            Ok(0)
        }
        ARCH_GET_GS => {
            let v = ctx.k.thread_mut().gs_base;
            ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &v)?;
            Ok(0)
        }
        ARCH_GET_CPUID => Ok(1),
        _ => Err(Errno::EINVAL.into()),
    }
}

pub fn prctl(ctx: &mut Ctx, a: Args) -> SysResult {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_PDEATHSIG: u64 = 2;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_CAPBSET_READ: u64 = 23;
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    const PR_GET_NO_NEW_PRIVS: u64 = 39;
    match a.u64(0) {
        PR_SET_PDEATHSIG | PR_SET_DUMPABLE | PR_SET_NO_NEW_PRIVS => Ok(0),
        PR_GET_PDEATHSIG => {
            ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &0i32)?;
            Ok(0)
        }
        PR_GET_DUMPABLE => Ok(1),
        PR_GET_NO_NEW_PRIVS => Ok(1),
        PR_CAPBSET_READ => Ok(0),
        PR_SET_NAME => {
            let mut name = ctx.k.mm.read_cstr(ctx.mem, a.ptr(1), 4096)?;
            name.truncate(15);
            ctx.k.thread_mut().comm = String::from_utf8_lossy(&name).into_owned();
            Ok(0)
        }
        PR_GET_NAME => {
            let mut b = [0u8; 16];
            let n = ctx.k.thread_mut().comm.len().min(15);
            b[..n].copy_from_slice(&ctx.k.thread_mut().comm.as_bytes()[..n]);
            ctx.k.mm.write(ctx.mem, a.ptr(1), &b)?;
            Ok(0)
        }
        other => {
            tracing::debug!(option = other, "unsupported prctl: EINVAL");
            Err(Errno::EINVAL.into())
        }
    }
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
    s.uptime = (super::uptime_ns(ctx) / 1_000_000_000) as i64;
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
    let cpu = super::cpu_ns(ctx);
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
    let ticks = (super::cpu_ns(ctx) / 10_000_000) as i64;
    if a.u64(0) != 0 {
        let t = Tms {
            tms_utime: ticks,
            tms_stime: 0,
            tms_cutime: 0,
            tms_cstime: 0,
        };
        ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &t)?;
    }
    Ok(super::uptime_ns(ctx) / 10_000_000)
}

pub fn getcpu(ctx: &mut Ctx, a: Args) -> SysResult {
    for p in [a.u64(0), a.u64(1)] {
        if p != 0 {
            ctx.k.mm.write_obj(ctx.mem, p, &0u32)?;
        }
    }
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

/// Most threads one sandbox may have.
pub const MAX_THREADS: usize = 256;

/// clone(2): new threads only. Creating a process (no CLONE_THREAD) is not
/// supported yet and answers EAGAIN, as a process at its limit would.
pub fn clone(ctx: &mut Ctx, a: Args) -> SysResult {
    const CLONE_VM: u64 = 0x100;
    const CLONE_FS: u64 = 0x200;
    const CLONE_FILES: u64 = 0x400;
    const CLONE_SIGHAND: u64 = 0x800;
    const CLONE_SETTLS: u64 = 0x80000;
    const CLONE_PARENT_SETTID: u64 = 0x100000;
    const CLONE_CHILD_CLEARTID: u64 = 0x200000;
    const CLONE_CHILD_SETTID: u64 = 0x1000000;
    const CLONE_THREAD: u64 = 0x10000;
    const THREAD: u64 = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
    let (flags, newsp, ptid, ctid, tls) = (a.u64(0), a.u64(1), a.u64(2), a.u64(3), a.u64(4));
    if flags & CLONE_THREAD == 0 {
        return new_process(ctx, flags, newsp, ptid, ctid, tls);
    }
    if flags & THREAD != THREAD {
        return Err(Errno::EINVAL.into());
    }
    if ctx.k.threads.len() >= MAX_THREADS {
        return Err(Errno::EAGAIN.into());
    }
    if flags & CLONE_SETTLS != 0 && tls >= USER_END {
        return Err(Errno::EPERM.into());
    }
    let tid = ctx.k.alloc_id();
    let parent = ctx.k.thread();
    let mut t = Thread::new(tid);
    t.sigmask = parent.sigmask;
    t.fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        parent.fs_base
    };
    t.gs_base = parent.gs_base;
    t.comm = parent.comm.clone();
    let mut regs = *ctx.regs;
    regs.rax = 0;
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & zeroboot_vmm::vcpu::USER_RFLAGS) | 0x202;
    if newsp != 0 {
        regs.rsp = newsp;
    }
    t.ctx = Some(CpuContext {
        regs,
        xsave: Vec::new(),
    });
    if flags & CLONE_PARENT_SETTID != 0 {
        ctx.k.mm.write_obj(ctx.mem, ptid, &tid)?;
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        ctx.k.mm.write_obj(ctx.mem, ctid, &tid)?;
    }
    if flags & CLONE_CHILD_CLEARTID != 0 {
        t.clear_child_tid = ctid;
    }
    ctx.k.threads.insert(tid, t);
    ctx.k.new_threads.push(tid);
    Ok(tid as u64)
}

pub fn clone3(_ctx: &mut Ctx, _a: Args) -> SysResult {
    // glibc falls back to clone(2).
    Err(Errno::ENOSYS.into())
}

pub fn fork(ctx: &mut Ctx, _a: Args) -> SysResult {
    new_process(ctx, SIGCHLD as u64, 0, 0, 0, 0)
}

pub fn vfork(ctx: &mut Ctx, _a: Args) -> SysResult {
    const CLONE_VM: u64 = 0x100;
    const CLONE_VFORK: u64 = 0x4000;
    new_process(ctx, CLONE_VM | CLONE_VFORK | SIGCHLD as u64, 0, 0, 0, 0)
}

/// Most processes one sandbox may have at once (zombies included).
pub const MAX_PROCESSES: usize = 64;

/// fork, vfork and clone without CLONE_THREAD. A vfork child (CLONE_VM |
/// CLONE_VFORK, also what posix_spawn does) borrows the parent's address
/// space and the parent waits until the child execs or exits. A fork child
/// gets a copy of every populated page. Other CLONE_VM sharing between
/// processes, and shared descriptor tables or handlers, are not supported
/// (EINVAL).
fn new_process(ctx: &mut Ctx, flags: u64, newsp: u64, ptid: u64, ctid: u64, tls: u64) -> SysResult {
    const CLONE_VM: u64 = 0x100;
    const CLONE_VFORK: u64 = 0x4000;
    const CLONE_SETTLS: u64 = 0x80000;
    const CLONE_PARENT_SETTID: u64 = 0x100000;
    const CLONE_CHILD_CLEARTID: u64 = 0x200000;
    const CLONE_CHILD_SETTID: u64 = 0x1000000;
    const UNSUPPORTED: u64 = 0x200 | 0x400 | 0x800 | 0x7e02_0000;
    let vfork = flags & (CLONE_VM | CLONE_VFORK) == (CLONE_VM | CLONE_VFORK);
    if flags & UNSUPPORTED != 0 || (flags & CLONE_VM != 0 && !vfork) {
        tracing::debug!(
            flags = format!("{flags:#x}"),
            "unsupported clone of a process: EINVAL"
        );
        return Err(Errno::EINVAL.into());
    }
    if ctx.k.others.len() + ctx.k.zombies.len() + 1 >= MAX_PROCESSES {
        return Err(Errno::EAGAIN.into());
    }
    let layout = if vfork {
        crate::mm::AddressSpace::new(0, crate::mm::Frames::placeholder(), ctx.k.mm.limit())
    } else {
        ctx.k.mm.copy_layout(ctx.mem)?
    };
    let pid = ctx.k.alloc_id();
    let parent = ctx.k.thread();
    let mut t = Thread::new(pid);
    t.sigmask = parent.sigmask;
    t.fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        parent.fs_base
    };
    t.gs_base = parent.gs_base;
    t.comm = parent.comm.clone();
    t.altstack = parent.altstack;
    let mut regs = *ctx.regs;
    regs.rax = 0;
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & zeroboot_vmm::vcpu::USER_RFLAGS) | 0x202;
    if newsp != 0 {
        regs.rsp = newsp;
    }
    t.ctx = Some(CpuContext {
        regs,
        xsave: Vec::new(),
    });
    if flags & CLONE_CHILD_CLEARTID != 0 {
        t.clear_child_tid = ctid;
    }
    let mut proc = ctx.k.proc.clone();
    proc.pid = pid;
    proc.ppid = ctx.k.proc.pid;
    proc.pending = 0;
    // A child inherits no timer (itimers, alarm, POSIX timers).
    proc.timers = Default::default();
    proc.execed = false;
    proc.vfork_child = None;
    proc.dead = None;
    proc.vfork_parent = if vfork {
        Some((ctx.k.proc.pid, ctx.k.current))
    } else {
        None
    };
    let mut slot = crate::kernel::ProcessSlot {
        proc,
        mm: layout,
        fds: ctx.k.fds.clone(),
        threads: [(pid, t)].into_iter().collect(),
    };
    if flags & CLONE_PARENT_SETTID != 0 {
        ctx.k.mm.write_obj(ctx.mem, ptid, &pid)?;
    }
    if vfork {
        if flags & CLONE_CHILD_SETTID != 0 {
            ctx.k.mm.write_obj(ctx.mem, ctid, &pid)?;
        }
        // The child runs on our address space; this process waits.
        ctx.k.mm.swap_layout(&mut slot.mm);
        ctx.k.proc.vfork_child = Some(pid);
        ctx.k.others.insert(pid, slot);
        ctx.k.new_threads.push(pid);
        return Err(ctx.k.wait(Wait::Vfork));
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        // In the child's copy of memory.
        ctx.k.mm.swap_layout(&mut slot.mm);
        let r = ctx.k.mm.write_obj(ctx.mem, ctid, &pid);
        ctx.k.mm.swap_layout(&mut slot.mm);
        r?;
    }
    ctx.k.others.insert(pid, slot);
    ctx.k.new_threads.push(pid);
    Ok(pid as u64)
}

/// Never reached: the run loop serves execve itself, because it replaces
/// the vCPU state.
/// The run loop loads the program: it resets the vCPU
/// (`sandbox::exec`).
pub fn execve(_ctx: &mut Ctx, a: Args) -> SysResult {
    Err(SysError::Exec(ExecArgs {
        dirfd: AT_FDCWD,
        path: a.ptr(0),
        argv: a.ptr(1),
        envp: a.ptr(2),
        flags: 0,
    }))
}

pub fn execveat(_ctx: &mut Ctx, a: Args) -> SysResult {
    Err(SysError::Exec(ExecArgs {
        dirfd: a.fd(0),
        path: a.ptr(1),
        argv: a.ptr(2),
        envp: a.ptr(3),
        flags: a.u64(4),
    }))
}

const WNOHANG: u64 = 1;
const WUNTRACED: u64 = 2;
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;
const WALL: u64 = 0x4000_0000;
const WCLONE: u64 = 0x8000_0000;

/// Which children a wait selects: -1 any, >0 one pid, 0 our group, < -1 a
/// group.
fn child_matches(sel: i64, pid: u32, pgid: u32, own_pgid: u32) -> bool {
    match sel {
        -1 => true,
        0 => pgid == own_pgid,
        s if s > 0 => pid as i64 == s,
        s => pgid as i64 == -s,
    }
}

/// A zombie child for `sel` to reap (Some), matching children that still
/// run (None), or ECHILD when there are none.
fn find_zombie(ctx: &Ctx, sel: i64) -> Result<Option<(u32, i32)>, Errno> {
    let me = ctx.k.proc.pid;
    let own = ctx.k.proc.pgid;
    if let Some((pid, z)) = ctx
        .k
        .zombies
        .iter()
        .find(|(pid, z)| z.ppid == me && child_matches(sel, **pid, z.pgid, own))
    {
        return Ok(Some((*pid, z.status)));
    }
    let alive = ctx
        .k
        .others
        .values()
        .any(|s| s.proc.ppid == me && child_matches(sel, s.proc.pid, s.proc.pgid, own));
    if alive {
        Ok(None)
    } else {
        Err(Errno::ECHILD)
    }
}

pub fn wait4(ctx: &mut Ctx, a: Args) -> SysResult {
    let (sel, status_va, options, rusage) = (a.int(0) as i64, a.u64(1), a.u64(2), a.u64(3));
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WALL | WCLONE) != 0 {
        return Err(Errno::EINVAL.into());
    }
    match find_zombie(ctx, sel)? {
        Some((pid, status)) => {
            if status_va != 0 {
                ctx.k.mm.write_obj(ctx.mem, status_va, &status)?;
            }
            if rusage != 0 {
                ctx.k.mm.write_obj(ctx.mem, rusage, &Rusage::new_zeroed())?;
            }
            ctx.k.zombies.remove(&pid);
            Ok(pid as u64)
        }
        None if options & WNOHANG != 0 => Ok(0),
        None => Err(ctx.k.wait(Wait::Retry {
            reason: "wait for a child",
            deadline: None,
        })),
    }
}

pub fn waitid(ctx: &mut Ctx, a: Args) -> SysResult {
    const P_ALL: u64 = 0;
    const P_PID: u64 = 1;
    const P_PGID: u64 = 2;
    let (idtype, id, info, options) = (a.u64(0), a.i64(1), a.u64(2), a.u64(3));
    if options & !(WNOHANG | WEXITED | WNOWAIT | WUNTRACED | WCONTINUED | WALL | WCLONE) != 0
        || options & WEXITED == 0
    {
        return Err(Errno::EINVAL.into());
    }
    let sel = match idtype {
        P_ALL => -1,
        P_PID if id > 0 => id,
        P_PGID if id == 0 => 0,
        P_PGID => -id,
        _ => return Err(Errno::EINVAL.into()),
    };
    let mut si = [0u8; 128];
    match find_zombie(ctx, sel)? {
        Some((pid, status)) => {
            // CLD_EXITED (1) or CLD_KILLED (2).
            let (code, st) = if status & 0x7f == 0 {
                (1i32, (status >> 8) & 0xff)
            } else {
                (2i32, status & 0x7f)
            };
            si[0..4].copy_from_slice(&(SIGCHLD as i32).to_le_bytes());
            si[8..12].copy_from_slice(&code.to_le_bytes());
            si[16..20].copy_from_slice(&pid.to_le_bytes());
            si[24..28].copy_from_slice(&st.to_le_bytes());
            if info != 0 {
                ctx.k.mm.write(ctx.mem, info, &si)?;
            }
            if options & WNOWAIT == 0 {
                ctx.k.zombies.remove(&pid);
            }
            Ok(0)
        }
        None if options & WNOHANG != 0 => {
            if info != 0 {
                ctx.k.mm.write(ctx.mem, info, &si)?;
            }
            Ok(0)
        }
        None => Err(ctx.k.wait(Wait::Retry {
            reason: "wait for a child",
            deadline: None,
        })),
    }
}

pub fn futex(ctx: &mut Ctx, a: Args) -> SysResult {
    let (uaddr, op, val, timeout, uaddr2, val3) =
        (a.u64(0), a.u64(1), a.uint(2), a.u64(3), a.u64(4), a.uint(5));
    if uaddr % 4 != 0 {
        return Err(Errno::EINVAL.into());
    }
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT_BITSET {
                val3
            } else {
                u32::MAX
            };
            if bitset == 0 {
                return Err(Errno::EINVAL.into());
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let ns = super::time::read_ts(ctx, timeout)?;
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
                Some(ctx.k.syscall_deadline(Duration::from_nanos(rel)))
            };
            let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
            if cur != val {
                return Err(Errno::EAGAIN.into());
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Err(Errno::ETIMEDOUT.into());
            }
            Err(ctx.k.wait(Wait::Futex {
                addr: uaddr,
                bitset,
                deadline,
            }))
        }
        FUTEX_WAKE => Ok(sched::futex_wake(ctx.k, uaddr, val, u32::MAX) as u64),
        FUTEX_WAKE_BITSET => {
            if val3 == 0 {
                return Err(Errno::EINVAL.into());
            }
            Ok(sched::futex_wake(ctx.k, uaddr, val, val3) as u64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if cmd == FUTEX_CMP_REQUEUE {
                let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
                if cur != val3 {
                    return Err(Errno::EAGAIN.into());
                }
            }
            // The fourth argument is the requeue count here.
            let n2 = timeout as u32;
            Ok(sched::futex_requeue(ctx.k, uaddr, val, uaddr2, n2) as u64)
        }
        FUTEX_WAKE_OP => {
            let encoded = val3;
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
                _ => return Err(Errno::ENOSYS.into()),
            };
            ctx.k.mm.write_obj(ctx.mem, uaddr2, &new)?;
            let cmparg = ((encoded << 20) as i32 >> 20) as i64;
            let o = old as i32 as i64;
            let hit = match (encoded >> 24) & 15 {
                0 => o == cmparg,
                1 => o != cmparg,
                2 => o < cmparg,
                3 => o <= cmparg,
                4 => o > cmparg,
                5 => o >= cmparg,
                _ => return Err(Errno::ENOSYS.into()),
            };
            let mut woken = sched::futex_wake(ctx.k, uaddr, val, u32::MAX);
            if hit {
                woken += sched::futex_wake(ctx.k, uaddr2, timeout as u32, u32::MAX);
            }
            Ok(woken as u64)
        }
        _ => Err(Errno::ENOSYS.into()),
    }
}
