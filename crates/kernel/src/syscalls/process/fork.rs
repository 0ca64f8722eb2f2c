//! A process or thread begins and ends: clone, clone3, fork, vfork,
//! execve, execveat, exit, exit_group.

use zeroboot_abi::flags::*;
use zeroboot_abi::signal::SIGCHLD;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::USER_END;

use crate::syscalls::{Args, Ctx, ExecArgs, SysError, SysResult};
use crate::task::{CpuContext, Thread, Wait};
use crate::{procs, sched};

/// exit(2) ends the calling thread; the last thread's exit ends the process.
pub fn exit(ctx: &mut Ctx, a: Args) -> SysResult {
    if ctx.k.threads.len() <= 1 {
        return exit_group(ctx, a);
    }
    let tid = ctx.k.current;
    let ctid = ctx.k.thread().clear_child_tid;
    if ctid != 0 && ctx.k.mm.write_obj(ctx.mem, ctid, &0u32).is_ok() {
        sched::futex_wake(ctx.k, sched::FutexKey::Private(ctid), 1, u32::MAX);
    }
    ctx.k.threads.remove(&tid);
    Ok(0)
}

pub fn exit_group(ctx: &mut Ctx, a: Args) -> SysResult {
    procs::exit_current(ctx.k, ctx.mem, procs::exited(a.int(0)), None);
    Ok(0)
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
    // CLONE_PIDFD names processes, not threads.
    if flags & 0x1000 != 0 {
        return Err(Errno::EINVAL.into());
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
    const CLONE_PIDFD: u64 = 0x1000;
    const UNSUPPORTED: u64 = 0x200 | 0x400 | 0x800 | 0x7e02_0000;
    // clone(2) returns the pidfd through the parent-tid pointer, so the
    // two cannot be asked together.
    if flags & CLONE_PIDFD != 0 && flags & CLONE_PARENT_SETTID != 0 {
        return Err(Errno::EINVAL.into());
    }
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
    proc.queued.clear();
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
    if flags & CLONE_PIDFD != 0 {
        // In the parent's table only (the child's copy is taken).
        let fd = super::pidfd::install(ctx.k, pid, false)?;
        if let Err(e) = ctx.k.mm.write_obj(ctx.mem, ptid, &fd) {
            let _ = ctx.k.fds.close(fd);
            return Err(e.into());
        }
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
