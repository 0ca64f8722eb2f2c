//! read, write and their positioned and vectored forms, sendfile,
//! copy_file_range and lseek: the parts every file shares (access mode,
//! offsets, guest buffers); what a read or write does is the file's
//! `FileOps`.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Iovec;
use zeroboot_abi::Errno;

use crate::fd::OpenFile;
use crate::file::{verify_area, FileOps, Io};
use crate::syscalls::{Args, Ctx, SysError, SysResult};

/// Most bytes one read or write staged in a buffer of the VMM transfers
/// (callers loop on short counts).
pub(crate) const MAX_IO: usize = 4 << 20;

/// Most bytes any one read or write transfers (Linux's MAX_RW_COUNT), for
/// files that copy between guest memory and their own bytes directly
/// (`FileOps::read_user`); the others stop at MAX_IO.
pub(crate) const MAX_RW_COUNT: usize = 0x7fff_f000;

const IOV_MAX: u64 = 1024;

/// A read of up to `count` bytes from `fd` (at `pos`, or the file offset)
/// by `op`, which answers what it returns and the bytes it moved: the
/// access mode, the offset checks and the offset's advance around it.
fn read_op<T>(
    ctx: &mut Ctx,
    fd: i32,
    count: usize,
    pos: Option<u64>,
    op: impl FnOnce(&dyn FileOps, &mut Ctx, Io, usize) -> Result<(T, usize), SysError>,
) -> Result<T, SysError> {
    let f = ctx.k.fds.get(fd)?;
    if !f.readable() {
        return Err(Errno::EBADF.into());
    }
    let io = io_of(fd, f, pos);
    f.kind.clone().with_ops(|ops| {
        if ops.has_offset() {
            verify_area(io.at(), count)?;
        }
        let (out, n) = op(ops, ctx, io, count)?;
        if pos.is_none() && ops.has_offset() {
            ctx.k.fds.get_mut(fd)?.offset = io.offset + n as u64;
        }
        Ok(out)
    })
}

/// A write to `fd` by `op` (at `pos`, or the file offset / end for
/// O_APPEND), after the access-mode check.
fn write_op(
    ctx: &mut Ctx,
    fd: i32,
    pos: Option<u64>,
    op: impl FnOnce(&dyn FileOps, &mut Ctx, Io) -> Result<usize, SysError>,
) -> Result<usize, SysError> {
    let f = ctx.k.fds.get(fd)?;
    if !f.writable() {
        return Err(Errno::EBADF.into());
    }
    let io = io_of(fd, f, pos);
    f.kind.clone().with_ops(|ops| op(ops, ctx, io))
}

/// Read up to `count` bytes from `fd` (at `pos`, or the file offset).
pub(crate) fn do_read(
    ctx: &mut Ctx,
    fd: i32,
    count: usize,
    pos: Option<u64>,
) -> Result<Vec<u8>, SysError> {
    read_op(ctx, fd, count.min(MAX_IO), pos, |ops, ctx, io, count| {
        let data = ops.read(ctx, io, count)?;
        let n = data.len();
        Ok((data, n))
    })
}

/// Write `data` to `fd` (at `pos`, or the file offset / end for O_APPEND).
pub(crate) fn do_write(
    ctx: &mut Ctx,
    fd: i32,
    data: &[u8],
    pos: Option<u64>,
) -> Result<usize, SysError> {
    write_op(ctx, fd, pos, |ops, ctx, io| ops.write(ctx, io, data))
}

/// read(2) and pread(2): up to `count` bytes of `fd` into guest memory at
/// `va`, without staging them in a buffer where the file allows
/// (`FileOps::read_user`).
fn do_read_user(
    ctx: &mut Ctx,
    fd: i32,
    va: u64,
    count: usize,
    pos: Option<u64>,
) -> Result<usize, SysError> {
    read_op(
        ctx,
        fd,
        count.min(MAX_RW_COUNT),
        pos,
        |ops, ctx, io, count| {
            let n = ops.read_user(ctx, io, va, count)?;
            Ok((n, n))
        },
    )
}

/// write(2) and pwrite(2), as `do_read_user`.
fn do_write_user(
    ctx: &mut Ctx,
    fd: i32,
    va: u64,
    len: usize,
    pos: Option<u64>,
) -> Result<usize, SysError> {
    let len = len.min(MAX_RW_COUNT);
    write_op(ctx, fd, pos, |ops, ctx, io| {
        ops.write_user(ctx, io, va, len)
    })
}

fn io_of(fd: i32, f: &OpenFile, pos: Option<u64>) -> Io {
    Io {
        fd,
        pos,
        offset: f.offset,
        nonblock: f.flags & O_NONBLOCK != 0,
        append: f.flags & O_APPEND != 0,
    }
}

pub fn read(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(do_read_user(ctx, a.fd(0), a.ptr(1), a.usize(2), None)? as u64)
}

pub fn pread64(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.i64(3)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    Ok(do_read_user(ctx, a.fd(0), a.ptr(1), a.usize(2), Some(a.u64(3)))? as u64)
}

fn check_seekable(ctx: &Ctx, fd: i32) -> Result<(), Errno> {
    ctx.k.fds.get(fd)?.kind.with_ops(|o| o.positional())
}

pub fn write(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(do_write_user(ctx, a.fd(0), a.ptr(1), a.usize(2), None)? as u64)
}

pub fn pwrite64(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.i64(3)) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    Ok(do_write_user(ctx, a.fd(0), a.ptr(1), a.usize(2), Some(a.u64(3)))? as u64)
}

pub(crate) fn read_iovecs(ctx: &mut Ctx, va: u64, n: u64) -> Result<Vec<Iovec>, Errno> {
    if n > IOV_MAX {
        return Err(Errno::EINVAL);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let iov: Iovec = ctx.k.mm.read_obj(ctx.mem, va + i * 16)?;
        if (iov.len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        v.push(iov);
    }
    Ok(v)
}

fn readv_at(ctx: &mut Ctx, fd: i32, va: u64, n: u64, pos: Option<u64>) -> SysResult {
    let iovs = read_iovecs(ctx, va, n)?;
    // Each length is below 2^63 (read_iovecs), but their sum may not be;
    // Linux caps a transfer (MAX_RW_COUNT) rather than failing, and
    // do_read caps it at MAX_IO.
    let total = iovs.iter().fold(0u64, |t, i| t.saturating_add(i.len));
    let data = do_read(ctx, fd, usize::try_from(total).unwrap_or(usize::MAX), pos)?;
    let mut done = 0usize;
    for iov in iovs {
        if done >= data.len() {
            break;
        }
        let n = (iov.len as usize).min(data.len() - done);
        ctx.k.mm.write(ctx.mem, iov.base, &data[done..done + n])?;
        done += n;
    }
    Ok(done as u64)
}

fn writev_at(ctx: &mut Ctx, fd: i32, va: u64, n: u64, pos: Option<u64>) -> SysResult {
    let iovs = read_iovecs(ctx, va, n)?;
    let mut data = Vec::new();
    for iov in iovs {
        let room = MAX_IO - data.len();
        let len = (iov.len as usize).min(room);
        if len == 0 {
            continue;
        }
        data.extend_from_slice(&ctx.k.mm.read_vec(ctx.mem, iov.base, len)?);
        if data.len() >= MAX_IO {
            break;
        }
    }
    Ok(do_write(ctx, fd, &data, pos)? as u64)
}

pub fn readv(ctx: &mut Ctx, a: Args) -> SysResult {
    readv_at(ctx, a.fd(0), a.u64(1), a.u64(2), None)
}

pub fn writev(ctx: &mut Ctx, a: Args) -> SysResult {
    writev_at(ctx, a.fd(0), a.u64(1), a.u64(2), None)
}

/// Which way a vectored transfer goes.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

fn vectored_at(ctx: &mut Ctx, dir: Dir, a: Args, pos: Option<u64>) -> SysResult {
    match dir {
        Dir::Read => readv_at(ctx, a.fd(0), a.u64(1), a.u64(2), pos),
        Dir::Write => writev_at(ctx, a.fd(0), a.u64(1), a.u64(2), pos),
    }
}

/// preadv/pwritev(fd, iov, iovcnt, offset).
fn positioned(ctx: &mut Ctx, a: Args, dir: Dir) -> SysResult {
    if a.i64(3) < 0 {
        return Err(Errno::EINVAL.into());
    }
    check_seekable(ctx, a.fd(0))?;
    vectored_at(ctx, dir, a, Some(a.u64(3)))
}

pub fn preadv(ctx: &mut Ctx, a: Args) -> SysResult {
    positioned(ctx, a, Dir::Read)
}

pub fn pwritev(ctx: &mut Ctx, a: Args) -> SysResult {
    positioned(ctx, a, Dir::Write)
}

const RWF_HIPRI: u64 = 1;
const RWF_DSYNC: u64 = 2;
const RWF_SYNC: u64 = 4;
const RWF_NOWAIT: u64 = 8;
const RWF_APPEND: u64 = 0x10;

/// preadv2/pwritev2's flags: the hints that change nothing here (polling,
/// syncing: overlay writes are durable for the sandbox at once) are
/// accepted; RWF_NOWAIT and RWF_APPEND are not supported (EOPNOTSUPP, as
/// Linux answers for a file without them); others are EOPNOTSUPP too.
fn rwf_flags(flags: u64) -> Result<(), Errno> {
    if flags & !(RWF_HIPRI | RWF_DSYNC | RWF_SYNC) != 0 {
        if flags & (RWF_NOWAIT | RWF_APPEND) != 0 {
            tracing::debug!(flags, "preadv2/pwritev2 flag unsupported: EOPNOTSUPP");
        }
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

/// preadv2/pwritev2(fd, iov, iovcnt, offset, _, flags): offset -1 is the
/// file position, as readv/writev.
fn positioned2(ctx: &mut Ctx, a: Args, dir: Dir) -> SysResult {
    rwf_flags(a.u64(5))?;
    let pos = match a.i64(3) {
        -1 => None,
        off if off < 0 => return Err(Errno::EINVAL.into()),
        off => {
            check_seekable(ctx, a.fd(0))?;
            Some(off as u64)
        }
    };
    vectored_at(ctx, dir, a, pos)
}

pub fn preadv2(ctx: &mut Ctx, a: Args) -> SysResult {
    positioned2(ctx, a, Dir::Read)
}

pub fn pwritev2(ctx: &mut Ctx, a: Args) -> SysResult {
    positioned2(ctx, a, Dir::Write)
}

pub fn sendfile(ctx: &mut Ctx, a: Args) -> SysResult {
    let (out, inp) = (a.fd(0), a.fd(1));
    let count = (a.usize(3)).min(MAX_IO);
    let data = if a.u64(2) != 0 {
        let off: i64 = ctx.k.mm.read_obj(ctx.mem, a.ptr(2))?;
        if off < 0 {
            return Err(Errno::EINVAL.into());
        }
        let d = do_read(ctx, inp, count, Some(off as u64))?;
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(2), &(off + d.len() as i64))?;
        d
    } else {
        do_read(ctx, inp, count, None)?
    };
    Ok(do_write(ctx, out, &data, None)? as u64)
}

pub fn copy_file_range(ctx: &mut Ctx, a: Args) -> SysResult {
    let (inp, out) = (a.fd(0), a.fd(2));
    if a.u64(5) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let count = (a.usize(4)).min(MAX_IO);
    let in_off = if a.u64(1) != 0 {
        Some(ctx.k.mm.read_obj::<i64>(ctx.mem, a.ptr(1))? as u64)
    } else {
        None
    };
    let data = do_read(ctx, inp, count, in_off)?;
    let out_off = if a.u64(3) != 0 {
        Some(ctx.k.mm.read_obj::<i64>(ctx.mem, a.ptr(3))? as u64)
    } else {
        None
    };
    let n = do_write(ctx, out, &data, out_off)?;
    if let Some(o) = in_off {
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(1), &((o + data.len() as u64) as i64))?;
    }
    if let Some(o) = out_off {
        ctx.k
            .mm
            .write_obj(ctx.mem, a.ptr(3), &((o + n as u64) as i64))?;
    }
    Ok(n as u64)
}

pub fn lseek(ctx: &mut Ctx, a: Args) -> SysResult {
    let fd = a.fd(0);
    let off = a.i64(1);
    let whence = a.u64(2);
    let kind = ctx.k.fds.get(fd)?.kind.clone();
    kind.with_ops(|ops| {
        let size = ops.seek_size(ctx)?;
        let f = ctx.k.fds.get_mut(fd)?;
        let base: i64 = match whence {
            SEEK_SET => 0,
            SEEK_CUR => f.offset as i64,
            SEEK_END => size as i64,
            SEEK_DATA => {
                if off < 0 || off as u64 >= size {
                    return Err(Errno::ENXIO.into());
                }
                f.offset = off as u64;
                return Ok(off as u64);
            }
            SEEK_HOLE => {
                if off < 0 || off as u64 >= size {
                    return Err(Errno::ENXIO.into());
                }
                f.offset = size;
                return Ok(size);
            }
            _ => return Err(Errno::EINVAL.into()),
        };
        // Linux's sum wraps negative: EINVAL, as for any negative offset.
        let new = base.checked_add(off).ok_or(Errno::EINVAL)?;
        if new < 0 {
            return Err(Errno::EINVAL.into());
        }
        ops.seeked(f, new as u64);
        f.offset = new as u64;
        Ok(new as u64)
    })
}
