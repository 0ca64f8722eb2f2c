//! Named pipes: a FIFO node of the overlay (mknod S_IFIFO) opens as an end
//! of one pipe shared by everyone who has it open, with Linux's rules for
//! the open itself: a reader waits for a writer to open and a writer for a
//! reader (O_NONBLOCK: a reader goes on at once, a writer without a reader
//! gets ENXIO); O_RDWR never waits. As in Linux, a waiting opener counts
//! "opens of the other side since I started waiting", so that a writer
//! that opens and closes again still releases it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::fd::{FileKind, OpenFile};
use crate::kernel::{Kernel, Pipe};
use crate::syscalls::fs::open::PIPE_CAPACITY;
use crate::syscalls::{Ctx, SysResult};
use crate::task::{Resume, ThreadState, Wait};

/// Why a FIFO opener waits (also how a stale waiter is told apart).
const WAIT: &str = "open of a FIFO";

/// One FIFO inode's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fifo {
    /// The pipe its open ends share (made again once all were closed).
    pipe: u64,
    reader_opens: u64,
    writer_opens: u64,
    /// Threads waiting in open: tid -> (waits as reader, the other side's
    /// open count when it started).
    waiting: BTreeMap<u32, (bool, u64)>,
}

/// Whether thread `tid` is still in a call that waits for `reason`:
/// blocked in it, or woken and about to run it again (a wake-up only
/// means "look again"). A thread a signal interrupted is neither.
pub(crate) fn blocked_for(k: &Kernel, tid: u32, reason: &str) -> bool {
    k.threads
        .get(&tid)
        .or_else(|| k.others.values().find_map(|s| s.threads.get(&tid)))
        .is_some_and(|t| match &t.state {
            ThreadState::Blocked(Wait::Retry { reason: r, .. }) => *r == reason,
            ThreadState::Runnable(Resume::Retry) => true,
            _ => false,
        })
}

/// Open FIFO inode `ino` at `path` with open flags `flags`.
pub(crate) fn open(ctx: &mut Ctx, ino: u64, path: String, flags: u64, cloexec: bool) -> SysResult {
    let acc = flags & O_ACCMODE;
    let nonblock = flags & O_NONBLOCK != 0;
    let me = ctx.k.current;
    let mut st = ctx.k.fs.fifos.remove(&ino).unwrap_or_default();
    if !ctx.k.pipes.contains_key(&st.pipe) || st.pipe == 0 {
        let id = ctx.k.next_pipe;
        ctx.k.next_pipe += 1;
        ctx.k.pipes.insert(
            id,
            Pipe {
                capacity: PIPE_CAPACITY,
                ..Default::default()
            },
        );
        st.pipe = id;
    }
    let k = &*ctx.k;
    st.waiting
        .retain(|&tid, _| tid == me || blocked_for(k, tid, WAIT));
    // Other openers waiting count (`waiters`); this one, running, not.
    let readers = ctx.k.pipe_ends(st.pipe, false) + waiters(ctx.k, &st, false);
    let writers = ctx.k.pipe_ends(st.pipe, true) + waiters(ctx.k, &st, true);
    let outcome = match acc {
        O_RDONLY if writers == 0 && !nonblock => wait_for(&mut st, me, true),
        O_WRONLY if readers == 0 && nonblock => Err(Errno::ENXIO),
        O_WRONLY if readers == 0 => wait_for(&mut st, me, false),
        _ => Ok(()),
    };
    let pipe = st.pipe;
    if outcome.is_ok() {
        st.waiting.remove(&me);
        if acc != O_WRONLY {
            st.reader_opens += 1;
        }
        if acc != O_RDONLY {
            st.writer_opens += 1;
        }
    }
    let waits = outcome == Err(Errno::EAGAIN);
    ctx.k.fs.fifos.insert(ino, st);
    if waits {
        return Err(ctx.k.wait(Wait::Retry {
            reason: WAIT,
            deadline: None,
        }));
    }
    outcome?;
    // An O_RDWR description is both ends: reads and writes are checked
    // against its access mode, and it counts as a reader and a writer.
    let f = OpenFile::new(
        FileKind::Pipe {
            id: pipe,
            write: acc == O_WRONLY,
        },
        path,
        flags,
    );
    Ok(ctx.k.fds.open(f, cloexec, 0)? as u64)
}

/// Openers of `st` blocked in open as writers (`write`) or readers. As in
/// Linux, where a waiting opener already counts as a reader or writer of
/// the pipe, they count as ends: a writer that a waiting reader let
/// through writes into the pipe rather than getting EPIPE.
fn waiters(k: &Kernel, st: &Fifo, write: bool) -> usize {
    st.waiting
        .iter()
        .filter(|(&t, &(reader, _))| reader != write && blocked_for(k, t, WAIT))
        .count()
}

/// Ends of pipe `pipe` held by openers of its FIFO still waiting in open.
pub(crate) fn waiting_ends(k: &Kernel, pipe: u64, write: bool) -> usize {
    k.fs.fifos
        .values()
        .filter(|f| f.pipe == pipe)
        .map(|f| waiters(k, f, write))
        .sum()
}

/// The pipes of FIFOs someone is waiting in open for: kept while no
/// description refers to them, so that what a writer wrote before its
/// close reaches the reader it let through.
pub(crate) fn awaited_pipes(k: &Kernel) -> std::collections::BTreeSet<u64> {
    k.fs.fifos
        .values()
        .filter(|f| waiters(k, f, false) + waiters(k, f, true) > 0)
        .map(|f| f.pipe)
        .collect()
}

/// Whether the opener may go on (the other side opened since it started
/// waiting), or must wait (EAGAIN here).
fn wait_for(st: &mut Fifo, me: u32, reader: bool) -> Result<(), Errno> {
    let now = if reader {
        st.writer_opens
    } else {
        st.reader_opens
    };
    match st.waiting.get(&me) {
        Some(&(r, seen)) if r == reader && seen != now => Ok(()),
        Some(&(r, _)) if r == reader => Err(Errno::EAGAIN),
        _ => {
            st.waiting.insert(me, (reader, now));
            Err(Errno::EAGAIN)
        }
    }
}
