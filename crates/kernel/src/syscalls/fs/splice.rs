//! splice, tee and vmsplice: moving bytes to and from pipes without the
//! guest's buffers. There is no page-moving here: the VMM copies, so what
//! these save the guest is its own read/write round trips. Linux's rules
//! are kept: one end of splice must be a pipe (EINVAL otherwise), an
//! offset for a pipe end is ESPIPE, both ends of tee are pipes, the same
//! pipe at both ends is EINVAL, and an output open with O_APPEND is
//! EINVAL. Bytes leave a pipe only once the other side took them.

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::rw::{do_read, do_write, read_iovecs, MAX_IO};
use crate::fd::{FileKind, OpenFile};
use crate::syscalls::{Args, Ctx, SysError, SysResult};
use crate::task::Wait;

const SPLICE_F_NONBLOCK: u32 = 2;
const SPLICE_F_ALL: u32 = 0xf;

fn pipe_id(f: &OpenFile) -> Option<u64> {
    match f.kind {
        FileKind::Pipe { id, .. } => Some(id),
        _ => None,
    }
}

fn block(ctx: &mut Ctx, reason: &'static str) -> SysError {
    ctx.k.wait(Wait::Retry {
        reason,
        deadline: None,
    })
}

/// How many bytes pipe `id` holds now, or what its emptiness means: end of
/// file (Ok(0)) with no writer left, EAGAIN or a block otherwise.
fn available(ctx: &mut Ctx, id: u64, nonblock: bool) -> Result<usize, SysError> {
    let n = ctx.k.pipes.get(&id).map_or(0, |p| p.buf.len());
    if n > 0 || ctx.k.pipe_ends(id, true) == 0 {
        return Ok(n);
    }
    if nonblock {
        return Err(Errno::EAGAIN.into());
    }
    Err(block(ctx, "splice from an empty pipe"))
}

/// How many bytes pipe `id` takes now (EPIPE with no reader, EAGAIN or a
/// block when full).
fn room(ctx: &mut Ctx, id: u64, nonblock: bool) -> Result<usize, SysError> {
    if ctx.k.pipe_ends(id, false) == 0 {
        return Err(crate::syscalls::signal::sigpipe(ctx).into());
    }
    let r = ctx
        .k
        .pipes
        .get(&id)
        .map_or(0, |p| p.capacity.saturating_sub(p.buf.len()));
    if r > 0 {
        return Ok(r);
    }
    if nonblock {
        return Err(Errno::EAGAIN.into());
    }
    Err(block(ctx, "splice to a full pipe"))
}

/// The first `n` bytes of pipe `id`, taken out (`consume`) or copied.
fn take(ctx: &mut Ctx, id: u64, n: usize, consume: bool) -> Vec<u8> {
    let Some(p) = ctx.k.pipes.get_mut(&id) else {
        return Vec::new();
    };
    let n = n.min(p.buf.len());
    if consume {
        p.take(n)
    } else {
        p.buf.iter().take(n).copied().collect()
    }
}

fn put(ctx: &mut Ctx, id: u64, data: &[u8]) {
    if let Some(p) = ctx.k.pipes.get_mut(&id) {
        p.put(data);
    }
}

/// Pipe to pipe (splice, or tee without `consume`).
fn pipe_to_pipe(
    ctx: &mut Ctx,
    from: u64,
    to: u64,
    len: usize,
    nonblock: bool,
    consume: bool,
) -> SysResult {
    if from == to {
        return Err(Errno::EINVAL.into());
    }
    let avail = available(ctx, from, nonblock)?;
    if avail == 0 {
        return Ok(0);
    }
    let room = room(ctx, to, nonblock)?;
    let data = take(ctx, from, len.min(avail).min(room), consume);
    put(ctx, to, &data);
    Ok(data.len() as u64)
}

/// An offset argument of splice: None for a null pointer.
fn offset_arg(ctx: &mut Ctx, va: u64) -> Result<Option<u64>, Errno> {
    if va == 0 {
        return Ok(None);
    }
    let off: i64 = ctx.k.mm.read_obj(ctx.mem, va)?;
    if off < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(Some(off as u64))
}

fn positional(ctx: &Ctx, fd: i32) -> Result<(), Errno> {
    ctx.k.fds.get(fd)?.kind.with_ops(|o| o.positional())
}

pub fn splice(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd_in, off_in, fd_out, off_out) = (a.fd(0), a.ptr(1), a.fd(2), a.ptr(3));
    let (len, flags) = (a.usize(4).min(MAX_IO), a.uint(5));
    if flags & !SPLICE_F_ALL != 0 {
        return Err(Errno::EINVAL.into());
    }
    let fin = ctx.k.fds.get(fd_in)?.clone();
    let fout = ctx.k.fds.get(fd_out)?.clone();
    if !fin.readable() || !fout.writable() {
        return Err(Errno::EBADF.into());
    }
    let (pin, pout) = (pipe_id(&fin), pipe_id(&fout));
    if pin.is_none() && pout.is_none() {
        return Err(Errno::EINVAL.into());
    }
    if (pin.is_some() && off_in != 0) || (pout.is_some() && off_out != 0) {
        return Err(Errno::ESPIPE.into());
    }
    if fout.flags & O_APPEND != 0 {
        return Err(Errno::EINVAL.into());
    }
    let flag_nb = flags & SPLICE_F_NONBLOCK != 0;
    let nb_in = flag_nb || fin.flags & O_NONBLOCK != 0;
    let nb_out = flag_nb || fout.flags & O_NONBLOCK != 0;
    if len == 0 {
        return Ok(0);
    }
    match (pin, pout) {
        (Some(from), Some(to)) => pipe_to_pipe(ctx, from, to, len, nb_in || nb_out, true),
        (Some(from), None) => {
            let pos = offset_arg(ctx, off_out)?;
            if pos.is_some() {
                positional(ctx, fd_out)?;
            }
            let avail = available(ctx, from, nb_in)?;
            if avail == 0 {
                return Ok(0);
            }
            let data = take(ctx, from, len.min(avail), false);
            let n = do_write(ctx, fd_out, &data, pos)?;
            take(ctx, from, n, true);
            if let Some(p) = pos {
                ctx.k
                    .mm
                    .write_obj(ctx.mem, off_out, &((p + n as u64) as i64))?;
            }
            Ok(n as u64)
        }
        (None, Some(to)) => {
            let pos = offset_arg(ctx, off_in)?;
            if pos.is_some() {
                positional(ctx, fd_in)?;
            }
            let room = room(ctx, to, nb_out)?;
            let data = do_read(ctx, fd_in, len.min(room), pos)?;
            put(ctx, to, &data);
            if let Some(p) = pos {
                ctx.k
                    .mm
                    .write_obj(ctx.mem, off_in, &((p + data.len() as u64) as i64))?;
            }
            Ok(data.len() as u64)
        }
        (None, None) => Err(Errno::EINVAL.into()),
    }
}

pub fn tee(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd_in, fd_out, len, flags) = (a.fd(0), a.fd(1), a.usize(2).min(MAX_IO), a.uint(3));
    if flags & !SPLICE_F_ALL != 0 {
        return Err(Errno::EINVAL.into());
    }
    let fin = ctx.k.fds.get(fd_in)?.clone();
    let fout = ctx.k.fds.get(fd_out)?.clone();
    let (Some(from), Some(to)) = (pipe_id(&fin), pipe_id(&fout)) else {
        return Err(Errno::EINVAL.into());
    };
    if !fin.readable() || !fout.writable() {
        return Err(Errno::EBADF.into());
    }
    if len == 0 {
        return Ok(0);
    }
    let nb = flags & SPLICE_F_NONBLOCK != 0
        || fin.flags & O_NONBLOCK != 0
        || fout.flags & O_NONBLOCK != 0;
    pipe_to_pipe(ctx, from, to, len, nb, false)
}

pub fn vmsplice(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, iov_va, nr, flags) = (a.fd(0), a.ptr(1), a.u64(2), a.uint(3));
    if flags & !SPLICE_F_ALL != 0 {
        return Err(Errno::EINVAL.into());
    }
    let f = ctx.k.fds.get(fd)?.clone();
    let Some(id) = pipe_id(&f) else {
        return Err(Errno::EBADF.into());
    };
    let iovs = read_iovecs(ctx, iov_va, nr)?;
    let nonblock = flags & SPLICE_F_NONBLOCK != 0 || f.flags & O_NONBLOCK != 0;
    let total = iovs
        .iter()
        .fold(0usize, |t, i| t.saturating_add(i.len as usize))
        .min(MAX_IO);
    if f.writable() {
        // User memory into the pipe (the caller may reuse it at once: it
        // is copied, which is what SPLICE_F_GIFT would not promise).
        let room = room(ctx, id, nonblock)?;
        let mut data = Vec::new();
        for iov in &iovs {
            let want = (iov.len as usize).min(total.min(room) - data.len());
            if want == 0 {
                continue;
            }
            data.extend_from_slice(&ctx.k.mm.read_vec(ctx.mem, iov.base, want)?);
        }
        put(ctx, id, &data);
        return Ok(data.len() as u64);
    }
    if !f.readable() {
        return Err(Errno::EBADF.into());
    }
    let avail = available(ctx, id, nonblock)?;
    let data = take(ctx, id, total.min(avail), false);
    let mut done = 0usize;
    for iov in &iovs {
        if done >= data.len() {
            break;
        }
        let n = (iov.len as usize).min(data.len() - done);
        ctx.k.mm.write(ctx.mem, iov.base, &data[done..done + n])?;
        done += n;
    }
    take(ctx, id, done, true);
    Ok(done as u64)
}
