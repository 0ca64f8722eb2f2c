//! Advisory locks: flock(2) and fcntl(2)'s record locks (F_GETLK,
//! F_SETLK, F_SETLKW and the F_OFD_ forms). The lock table and its rules
//! are `file::lock`; this is the calls' side: `struct flock`, ranges,
//! access modes, blocking.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::file::lock::{Key, Locks, Owner, WAIT};
use crate::syscalls::{Args, Ctx, SysResult};
use crate::task::Wait;

const LOCK_SH: u32 = 1;
const LOCK_EX: u32 = 2;
const LOCK_NB: u32 = 4;
const LOCK_UN: u32 = 8;

const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;

/// The file `fd` refers to, as locks name it.
fn key_of(ctx: &Ctx, fd: i32) -> Result<Key, Errno> {
    let f = ctx.k.fds.get(fd)?;
    let st = f.kind.with_ops(|o| o.stat(ctx, f))?;
    Ok((st.st_dev, st.st_ino))
}

fn block(ctx: &mut Ctx) -> crate::syscalls::SysError {
    ctx.k.wait(Wait::Retry {
        reason: WAIT,
        deadline: None,
    })
}

pub fn flock(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, op) = (a.fd(0), a.uint(1));
    let f = ctx.k.fds.get(fd)?;
    if f.flags & O_PATH != 0 {
        return Err(Errno::EBADF.into());
    }
    let ofd = f.ofd;
    let key = key_of(ctx, fd)?;
    Locks::prune(ctx.k);
    match op & !LOCK_NB {
        LOCK_UN => {
            ctx.k.fs.locks.flock_unlock(key, ofd);
            Ok(0)
        }
        kind @ (LOCK_SH | LOCK_EX) => match ctx.k.fs.locks.flock(key, ofd, kind == LOCK_EX) {
            Ok(()) => Ok(0),
            Err(e) if op & LOCK_NB != 0 => Err(e.into()),
            Err(_) => Err(block(ctx)),
        },
        _ => Err(Errno::EINVAL.into()),
    }
}

/// `struct flock`'s fields (32 bytes: l_type, l_whence, pad, l_start,
/// l_len, l_pid, pad).
struct FlockArg {
    ty: i16,
    whence: i16,
    start: i64,
    len: i64,
    pid: i32,
}

fn read_flock(ctx: &mut Ctx, va: u64) -> Result<FlockArg, Errno> {
    let b: [u8; 32] = ctx.k.mm.read_obj(ctx.mem, va)?;
    let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
    let i64_at = |o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        i64::from_le_bytes(x)
    };
    Ok(FlockArg {
        ty: i16_at(0),
        whence: i16_at(2),
        start: i64_at(8),
        len: i64_at(16),
        pid: i32::from_le_bytes([b[24], b[25], b[26], b[27]]),
    })
}

fn write_flock(ctx: &mut Ctx, va: u64, l: &FlockArg) -> Result<(), Errno> {
    let mut b = [0u8; 32];
    b[0..2].copy_from_slice(&l.ty.to_le_bytes());
    b[2..4].copy_from_slice(&l.whence.to_le_bytes());
    b[8..16].copy_from_slice(&l.start.to_le_bytes());
    b[16..24].copy_from_slice(&l.len.to_le_bytes());
    b[24..28].copy_from_slice(&l.pid.to_le_bytes());
    ctx.k.mm.write_obj(ctx.mem, va, &b)
}

/// The byte range `start..end` a `struct flock` names (end u64::MAX: to
/// infinity), as Linux's flock_to_posix_lock computes it.
fn range(ctx: &Ctx, fd: i32, l: &FlockArg) -> Result<(u64, u64), Errno> {
    let f = ctx.k.fds.get(fd)?;
    let base: i64 = match l.whence as u64 {
        SEEK_SET => 0,
        SEEK_CUR => f.offset as i64,
        SEEK_END => f.kind.with_ops(|o| o.stat(ctx, f))?.st_size,
        _ => return Err(Errno::EINVAL),
    };
    let start = base.checked_add(l.start).ok_or(Errno::EOVERFLOW)?;
    let (start, end) = match l.len {
        0 => (start, None),
        n if n > 0 => (start, Some(start.checked_add(n).ok_or(Errno::EOVERFLOW)?)),
        n => (start.checked_add(n).ok_or(Errno::EINVAL)?, Some(start)),
    };
    if start < 0 {
        return Err(Errno::EINVAL);
    }
    Ok((start as u64, end.map_or(u64::MAX, |e| e as u64)))
}

/// fcntl(fd, F_GETLK | F_SETLK | F_SETLKW | F_OFD_..., &flock).
pub(crate) fn fcntl_lock(ctx: &mut Ctx, fd: i32, cmd: u64, va: u64) -> SysResult {
    let f = ctx.k.fds.get(fd)?;
    if f.flags & O_PATH != 0 {
        return Err(Errno::EBADF.into());
    }
    let (ofd, readable, writable) = (f.ofd, f.readable(), f.writable());
    let mut l = read_flock(ctx, va)?;
    let by_description = matches!(cmd, F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW);
    if by_description && l.pid != 0 {
        return Err(Errno::EINVAL.into());
    }
    if !matches!(l.ty, F_RDLCK | F_WRLCK | F_UNLCK) {
        return Err(Errno::EINVAL.into());
    }
    let (start, end) = range(ctx, fd, &l)?;
    let key = key_of(ctx, fd)?;
    let pid = ctx.k.proc.pid;
    let owner = if by_description {
        Owner::Description(ofd)
    } else {
        Owner::Process(pid)
    };
    Locks::prune(ctx.k);
    let write = l.ty == F_WRLCK;
    if matches!(cmd, F_GETLK | F_OFD_GETLK) {
        if l.ty == F_UNLCK {
            return Err(Errno::EINVAL.into());
        }
        match ctx.k.fs.locks.conflict(key, owner, write, start, end) {
            Some(r) => {
                l.ty = if r.write { F_WRLCK } else { F_RDLCK };
                l.whence = SEEK_SET as i16;
                l.start = r.start as i64;
                l.len = if r.end == u64::MAX {
                    0
                } else {
                    (r.end - r.start) as i64
                };
                l.pid = match r.owner {
                    Owner::Process(p) => p as i32,
                    Owner::Description(_) => -1,
                };
            }
            None => l.ty = F_UNLCK,
        }
        write_flock(ctx, va, &l)?;
        return Ok(0);
    }
    let tid = ctx.k.current;
    if l.ty == F_UNLCK {
        ctx.k.fs.locks.set_record(key, owner, None, start, end);
        return Ok(0);
    }
    if (write && !writable) || (!write && !readable) {
        return Err(Errno::EBADF.into());
    }
    if let Some(r) = ctx.k.fs.locks.conflict(key, owner, write, start, end) {
        if matches!(cmd, F_SETLK | F_OFD_SETLK) {
            return Err(Errno::EAGAIN.into());
        }
        if !by_description && ctx.k.fs.locks.would_deadlock(pid, r.owner) {
            ctx.k.fs.locks.done_waiting(tid);
            return Err(Errno::EDEADLK.into());
        }
        ctx.k.fs.locks.wait(tid, pid, r.owner);
        return Err(block(ctx));
    }
    ctx.k.fs.locks.done_waiting(tid);
    ctx.k
        .fs
        .locks
        .set_record(key, owner, Some(write), start, end);
    Ok(0)
}

/// The current process is about to close `fd`: its process-owned record
/// locks on that file go (POSIX: any close of the file releases them).
pub(crate) fn closing(ctx: &mut Ctx, fd: i32) {
    let pid = ctx.k.proc.pid;
    if !ctx.k.fs.locks.holds_records(pid) {
        return;
    }
    if let Ok(key) = key_of(ctx, fd) {
        ctx.k.fs.locks.closed(key, pid);
    }
}
