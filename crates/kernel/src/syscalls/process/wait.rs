//! wait4 and waitid: reaping children (waitid also by pidfd).

use zeroboot_abi::signal::SIGCHLD;
use zeroboot_abi::structs::Rusage;
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use crate::syscalls::{Args, Ctx, SysResult};
use crate::task::Wait;

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
    const P_PIDFD: u64 = 3;
    let (idtype, id, info, mut options) = (a.u64(0), a.i64(1), a.u64(2), a.u64(3));
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
        P_PIDFD => {
            let fd = i32::try_from(id).map_err(|_| Errno::EBADF)?;
            let (pid, nonblock) = super::pidfd::target(ctx, fd)?;
            // A pidfd opened non-blocking makes the wait EAGAIN instead
            // of blocking (Linux 5.10+).
            if nonblock
                && options & WNOHANG == 0
                && super::pidfd::running(ctx.k, pid)
                && find_zombie(ctx, pid as i64)?.is_none()
            {
                return Err(Errno::EAGAIN.into());
            }
            if nonblock {
                options |= WNOHANG;
            }
            pid as i64
        }
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
