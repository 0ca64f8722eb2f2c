//! The event descriptors: eventfd, timerfd and epoll. Their objects live
//! in `Kernel::events` (`syscalls::events`, with the calls that make and
//! set them); this is what reading, writing and polling them does.

use std::time::{Duration, Instant};

use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::events::{
    clock_now, entry_report, tick, timer_clock, Interest, POLLIN, POLLNVAL, POLLOUT,
};
use crate::syscalls::{Ctx, SysError};
use crate::task::Wait;

/// eventfd `id` of `Kernel::events`.
pub(crate) struct EventFdFile(pub u64);

/// timerfd `id` of `Kernel::events`.
pub(crate) struct TimerFdFile(pub u64);

/// epoll instance `id` of `Kernel::events`.
pub(crate) struct EpollFile(pub u64);

/// Anonymous inodes, as Linux shows them.
fn anon_inode(id: u64) -> Stat {
    super::anon_stat(0o600, 0xd, id)
}

impl FileOps for EventFdFile {
    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        if count < 8 {
            return Err(Errno::EINVAL.into());
        }
        let e = ctx.k.events.eventfds.get_mut(&self.0).ok_or(Errno::EBADF)?;
        if e.count == 0 {
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            return Err(ctx.k.wait(Wait::Retry {
                reason: "read from an eventfd at zero",
                deadline: None,
            }));
        }
        e.changes += 1;
        let v = if e.semaphore {
            e.count -= 1;
            1
        } else {
            std::mem::take(&mut e.count)
        };
        Ok(v.to_le_bytes().to_vec())
    }

    fn write(&self, ctx: &mut Ctx, io: Io, data: &[u8]) -> Result<usize, SysError> {
        if data.len() < 8 {
            return Err(Errno::EINVAL.into());
        }
        let v = u64::from_le_bytes(data[..8].try_into().map_err(|_| Errno::EINVAL)?);
        if v == u64::MAX {
            return Err(Errno::EINVAL.into());
        }
        let e = ctx.k.events.eventfds.get_mut(&self.0).ok_or(Errno::EBADF)?;
        if e.count.checked_add(v).is_none_or(|s| s > u64::MAX - 1) {
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            return Err(ctx.k.wait(Wait::Retry {
                reason: "write to a full eventfd",
                deadline: None,
            }));
        }
        e.count += v;
        e.changes += 1;
        Ok(8)
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(anon_inode(self.0))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        let Some(e) = ctx.k.events.eventfds.get(&self.0) else {
            return POLLNVAL;
        };
        let mut r = 0;
        if e.count > 0 {
            r |= POLLIN;
        }
        if e.count < u64::MAX - 1 {
            r |= POLLOUT;
        }
        r
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k.events.eventfds.get(&self.0).map_or(0, |e| e.changes)
    }
}

impl FileOps for TimerFdFile {
    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        if count < 8 {
            return Err(Errno::EINVAL.into());
        }
        let clock = ctx
            .k
            .events
            .timerfds
            .get(&self.0)
            .map(|t| t.clock)
            .ok_or(Errno::EBADF)?;
        let now = clock_now(ctx, clock);
        let t = ctx.k.events.timerfds.get_mut(&self.0).ok_or(Errno::EBADF)?;
        tick(t, now);
        if t.expirations == 0 {
            if io.nonblock {
                return Err(Errno::EAGAIN.into());
            }
            let wake = self.wakes_at(ctx, false);
            return Err(ctx.k.wait(Wait::Retry {
                reason: "read from a timerfd",
                deadline: wake,
            }));
        }
        Ok(std::mem::take(&mut t.expirations).to_le_bytes().to_vec())
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(anon_inode(self.0))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        let clock = timer_clock(ctx, self.0);
        let now = clock_now(ctx, clock);
        match ctx.k.events.timerfds.get_mut(&self.0) {
            Some(t) => {
                tick(t, now);
                if t.expirations > 0 {
                    POLLIN
                } else {
                    0
                }
            }
            None => POLLNVAL,
        }
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k.events.timerfds.get(&self.0).map_or(0, |t| t.fired)
    }

    fn wakes_at(&self, ctx: &Ctx, _nested: bool) -> Option<Instant> {
        let t = ctx.k.events.timerfds.get(&self.0)?;
        let next = t.next?;
        let now = clock_now(ctx, t.clock);
        Some(Instant::now() + Duration::from_nanos(next.saturating_sub(now)))
    }
}

impl FileOps for EpollFile {
    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(anon_inode(self.0))
    }

    /// Readable when a watched descriptor has an event it asked for
    /// (looking at most three epolls deep).
    fn readiness(&self, ctx: &mut Ctx, depth: u32) -> i16 {
        if depth > 2 {
            return 0;
        }
        let entries: Vec<(i32, Interest)> = ctx
            .k
            .events
            .epolls
            .get(&self.0)
            .map(|e| {
                e.interest
                    .iter()
                    .filter(|(_, i)| !i.disabled)
                    .map(|(f, i)| (*f, i.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (fd, i) in entries {
            if entry_report(ctx, fd, &i, depth + 1).0 != 0 {
                return POLLIN;
            }
        }
        0
    }

    /// The soonest timer among the watched descriptors (one level: an
    /// epoll inside is not looked into).
    fn wakes_at(&self, ctx: &Ctx, nested: bool) -> Option<Instant> {
        if nested {
            return None;
        }
        let ep = ctx.k.events.epolls.get(&self.0)?;
        ep.interest
            .keys()
            .filter_map(|&fd| {
                let f = ctx.k.fds.get(fd).ok()?;
                f.kind.with_ops(|o| o.wakes_at(ctx, true))
            })
            .min()
    }
}
