//! Pipes: each end is a description of `Kernel::pipes[id]`; a read end sees
//! end-of-file once no write end is left, a write end SIGPIPE/EPIPE once no
//! read end is.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::events::{POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::syscalls::{Ctx, SysError};
use crate::task::Wait;

/// One end of pipe `id`.
pub(crate) struct PipeEnd {
    pub id: u64,
    pub write: bool,
}

impl FileOps for PipeEnd {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    // The caller checked the access mode (a FIFO's O_RDWR end does both).
    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        let writers = ctx.k.pipe_ends(self.id, true);
        let p = ctx.k.pipes.get_mut(&self.id).ok_or(Errno::EBADF)?;
        if p.buf.is_empty() {
            if writers == 0 {
                return Ok(Vec::new());
            }
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            return Err(ctx.k.wait(Wait::Retry {
                reason: "read from an empty pipe",
                deadline: None,
            }));
        }
        let n = count.min(p.buf.len());
        Ok(p.take(n))
    }

    fn write(&self, ctx: &mut Ctx, io: Io, data: &[u8]) -> Result<usize, SysError> {
        if ctx.k.pipe_ends(self.id, false) == 0 {
            return Err(crate::syscalls::signal::sigpipe(ctx).into());
        }
        let p = ctx.k.pipes.get_mut(&self.id).ok_or(Errno::EBADF)?;
        let room = p.capacity.saturating_sub(p.buf.len());
        if room == 0 {
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            return Err(ctx.k.wait(Wait::Retry {
                reason: "write to a full pipe",
                deadline: None,
            }));
        }
        let n = room.min(data.len());
        p.put(&data[..n]);
        Ok(n)
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(super::anon_stat(S_IFIFO | 0o600, 0xc, self.id))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        if self.write {
            if ctx.k.pipe_ends(self.id, false) == 0 {
                return POLLERR | POLLOUT;
            }
            let room = ctx
                .k
                .pipes
                .get(&self.id)
                .is_some_and(|p| p.buf.len() < p.capacity);
            return if room { POLLOUT } else { 0 };
        }
        let has = ctx.k.pipes.get(&self.id).is_some_and(|p| !p.buf.is_empty());
        let mut r = if has { POLLIN } else { 0 };
        if ctx.k.pipe_ends(self.id, true) == 0 {
            r |= POLLHUP;
        }
        r
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k
            .pipes
            .get(&self.id)
            .map_or(0, |p| if self.write { p.reads } else { p.writes })
    }

    fn unread(&self, ctx: &Ctx, _offset: u64) -> u64 {
        ctx.k.pipes.get(&self.id).map(|p| p.buf.len()).unwrap_or(0) as u64
    }

    fn pipe_size(&self, ctx: &mut Ctx, set: Option<usize>) -> Result<u64, SysError> {
        let p = ctx.k.pipes.get_mut(&self.id).ok_or(Errno::EBADF)?;
        if let Some(want) = set {
            let want = want.clamp(4096, 1 << 20);
            if want < p.buf.len() {
                return Err(Errno::EBUSY.into());
            }
            p.capacity = want.next_power_of_two();
        }
        Ok(p.capacity as u64)
    }

    fn allocate(&self, _ctx: &mut Ctx, _off: i64, _len: i64) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn fadvise(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        format!("pipe:[{}]", self.id)
    }

    fn released(&self, ctx: &mut Ctx) {
        ctx.k.gc_pipes();
    }
}
