//! Per-thread runtime set-up: set_tid_address, robust futex lists, rseq,
//! arch_prctl (FS/GS bases) and prctl.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::USER_END;

use crate::syscalls::{Args, Ctx, SysResult};

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
