//! Event-loop primitives: epoll, eventfd and timerfd (their objects and the
//! calls that make and set them; reading and polling them is
//! `file::event`), and the readiness that poll, select and epoll share
//! (each kind's own is its `FileOps::readiness`).
//!
//! epoll looks at its files' readiness when waited on (there are no wait
//! queues to call it back). A level-triggered entry reports whenever its
//! file is ready. An edge-triggered one (EPOLLET) reports only news since
//! epoll last looked: it was just added or modified, the file's activity
//! count moved (data arrived, room was made, a timer fired:
//! `FileOps::activity`), or a readiness bit it asks for rose. EPOLLONESHOT
//! disables an entry once reported, until EPOLL_CTL_MOD.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{Pollfd, Timespec};
use zeroboot_abi::Errno;

use super::time::read_ts;
use super::{Args, Ctx, SysResult};
use crate::fd::{FileKind, OpenFile};
use crate::task::Wait;

pub const POLLIN: i16 = 0x1;
pub const POLLPRI: i16 = 0x2;
pub const POLLOUT: i16 = 0x4;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;
pub const POLLNVAL: i16 = 0x20;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLLONESHOT: u32 = 1 << 30;
const EPOLLET: u32 = 1 << 31;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventFd {
    pub count: u64,
    pub semaphore: bool,
    /// Reads and writes so far (news for edge-triggered epoll).
    #[serde(default)]
    pub changes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerFd {
    pub clock: u64,
    /// Next expiry, in ns on `clock`.
    pub next: Option<u64>,
    pub interval: u64,
    pub expirations: u64,
    /// Expirations ever (news for edge-triggered epoll).
    #[serde(default)]
    pub fired: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interest {
    pub events: u32,
    pub data: u64,
    pub disabled: bool,
    /// Added or modified since epoll last looked (Linux looks at the file
    /// then, and queues the entry if it is ready).
    #[serde(default)]
    pub fresh: bool,
    /// The file's activity count and the events it had when epoll last
    /// looked (edge-triggered entries report only what is new).
    #[serde(default)]
    pub seen: u64,
    #[serde(default)]
    pub last: u32,
}

impl Interest {
    /// What the entry reports for readiness `r` and activity count
    /// `activity` (0: nothing).
    fn report(&self, r: i16, activity: u64) -> u32 {
        let mut got = (r as u32) & (self.events | POLLERR as u32 | POLLHUP as u32);
        if self.events & EPOLLRDHUP != 0 && r & POLLHUP != 0 {
            got |= EPOLLRDHUP;
        }
        let edge = self.events & EPOLLET != 0;
        if edge && !self.fresh && activity == self.seen && got & !self.last == 0 {
            return 0;
        }
        got
    }

    /// Epoll looked at the file and saw `r` and `activity`.
    fn looked(&mut self, r: i16, activity: u64) {
        self.fresh = false;
        self.seen = activity;
        self.last = (r as u32) & (self.events | POLLERR as u32 | POLLHUP as u32);
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Epoll {
    /// By fd number (what the program registered).
    pub interest: BTreeMap<i32, Interest>,
}

/// The event objects of a sandbox (shared by every descriptor of them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Objects {
    pub eventfds: BTreeMap<u64, EventFd>,
    pub timerfds: BTreeMap<u64, TimerFd>,
    pub epolls: BTreeMap<u64, Epoll>,
    pub next: u64,
}

impl Objects {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Drop objects no descriptor refers to.
    pub fn retain(&mut self, live: &std::collections::BTreeSet<u64>) {
        self.eventfds.retain(|id, _| live.contains(id));
        self.timerfds.retain(|id, _| live.contains(id));
        self.epolls.retain(|id, _| live.contains(id));
    }
}

/// Bring a timer's expiration count up to `now_ns`.
pub(crate) fn tick(t: &mut TimerFd, now_ns: u64) {
    if let Some(next) = t.next {
        if now_ns >= next {
            if let Some(periods) = (now_ns - next).checked_div(t.interval) {
                let n = 1 + periods;
                t.expirations = t.expirations.saturating_add(n);
                t.fired = t.fired.wrapping_add(n);
                t.next = next.checked_add(n.saturating_mul(t.interval));
            } else {
                t.expirations += 1;
                t.fired = t.fired.wrapping_add(1);
                t.next = None;
            }
        }
    }
}

pub(crate) fn clock_now(ctx: &Ctx, clock: u64) -> u64 {
    super::time::clock_ns(ctx, clock).unwrap_or(0)
}

/// Readiness of `fd` as poll(2) bits.
pub fn readiness(ctx: &mut Ctx, fd: i32) -> i16 {
    readiness_depth(ctx, fd, 0)
}

/// Readiness of `fd`, asked through `depth` epolls (their own readiness
/// is that of what they watch).
pub(crate) fn readiness_depth(ctx: &mut Ctx, fd: i32, depth: u32) -> i16 {
    let Ok(f) = ctx.k.fds.get(fd) else {
        return POLLNVAL;
    };
    f.kind.clone().with_ops(|o| o.readiness(ctx, depth))
}

/// What entry `i` of an epoll, watching `fd`, reports now (asked through
/// `depth` epolls), with the readiness and activity it saw.
pub(crate) fn entry_report(ctx: &mut Ctx, fd: i32, i: &Interest, depth: u32) -> (u32, i16, u64) {
    let r = readiness_depth(ctx, fd, depth);
    let activity = match ctx.k.fds.get(fd) {
        Ok(f) => f.kind.with_ops(|o| o.activity(ctx)),
        Err(_) => 0,
    };
    (i.report(r, activity), r, activity)
}

/// Nothing is ready: block, waking at `timeout` (None: never) or when a
/// timer among `fds` fires; or answer 0 if the timeout has passed.
pub fn block_until_ready(
    ctx: &mut Ctx,
    reason: &'static str,
    timeout: Option<Duration>,
    fds: &[i32],
) -> SysResult {
    let _ = ctx.k.take_timed_out();
    if timeout == Some(Duration::ZERO) {
        return Ok(0);
    }
    let deadline = timeout.map(|t| ctx.k.syscall_deadline(t));
    let now = Instant::now();
    if deadline.is_some_and(|d| now >= d) {
        return Ok(0);
    }
    let timer = fds
        .iter()
        .filter_map(|&fd| {
            let f = ctx.k.fds.get(fd).ok()?;
            f.kind.with_ops(|o| o.wakes_at(ctx, false))
        })
        .min();
    let wake = match (deadline, timer) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Err(ctx.k.wait(Wait::Retry {
        reason,
        deadline: wake,
    }))
}

fn new_file(ctx: &mut Ctx, kind: FileKind, name: &str, flags: u64) -> SysResult {
    let f = OpenFile::new(kind, name, O_RDWR | (flags & O_NONBLOCK));
    Ok(ctx.k.fds.open(f, flags & O_CLOEXEC != 0, 0)? as u64)
}

// ---- eventfd ---------------------------------------------------------------

pub fn eventfd(ctx: &mut Ctx, a: Args) -> SysResult {
    eventfd2(ctx, Args([a.u64(0), 0, 0, 0, 0, 0]))
}

pub fn eventfd2(ctx: &mut Ctx, a: Args) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    let flags = a.u64(1);
    if flags & !(EFD_SEMAPHORE | O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.events.id();
    ctx.k.events.eventfds.insert(
        id,
        EventFd {
            count: a.uint(0) as u64,
            semaphore: flags & EFD_SEMAPHORE != 0,
            changes: 0,
        },
    );
    new_file(ctx, FileKind::EventFd(id), "anon_inode:[eventfd]", flags)
}

// ---- timerfd ---------------------------------------------------------------

/// The clock timerfd `id` counts on.
pub(crate) fn timer_clock(ctx: &Ctx, id: u64) -> u64 {
    ctx.k
        .events
        .timerfds
        .get(&id)
        .map(|t| t.clock)
        .unwrap_or(CLOCK_MONOTONIC)
}

fn ts(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

pub fn timerfd_create(ctx: &mut Ctx, a: Args) -> SysResult {
    const CLOCK_REALTIME_ALARM: u64 = 8;
    const CLOCK_BOOTTIME_ALARM: u64 = 9;
    let (clock, flags) = (a.u64(0), a.u64(1));
    let clock = match clock {
        CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_BOOTTIME => clock,
        CLOCK_REALTIME_ALARM => CLOCK_REALTIME,
        CLOCK_BOOTTIME_ALARM => CLOCK_BOOTTIME,
        _ => return Err(Errno::EINVAL.into()),
    };
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.events.id();
    ctx.k.events.timerfds.insert(
        id,
        TimerFd {
            clock,
            next: None,
            interval: 0,
            expirations: 0,
            fired: 0,
        },
    );
    new_file(ctx, FileKind::TimerFd(id), "anon_inode:[timerfd]", flags)
}

fn timer_id(ctx: &Ctx, fd: i32) -> Result<u64, Errno> {
    match ctx.k.fds.get(fd)?.kind {
        FileKind::TimerFd(id) => Ok(id),
        _ => Err(Errno::EINVAL),
    }
}

fn current_setting(ctx: &Ctx, id: u64) -> [Timespec; 2] {
    let Some(t) = ctx.k.events.timerfds.get(&id) else {
        return [ts(0), ts(0)];
    };
    let now = clock_now(ctx, t.clock);
    let left = t.next.map(|n| n.saturating_sub(now).max(1)).unwrap_or(0);
    [ts(t.interval), ts(left)]
}

pub fn timerfd_settime(ctx: &mut Ctx, a: Args) -> SysResult {
    const TFD_TIMER_ABSTIME: u64 = 1;
    const TFD_TIMER_CANCEL_ON_SET: u64 = 2;
    let (fd, flags, new, old) = (a.fd(0), a.u64(1), a.u64(2), a.u64(3));
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = timer_id(ctx, fd)?;
    let interval = read_ts(ctx, new)?;
    let value = read_ts(ctx, new + 16)?;
    if old != 0 {
        let cur = current_setting(ctx, id);
        ctx.k.mm.write_obj(ctx.mem, old, &cur)?;
    }
    let clock = timer_clock(ctx, id);
    let now = clock_now(ctx, clock);
    let t = ctx.k.events.timerfds.get_mut(&id).ok_or(Errno::EBADF)?;
    t.interval = interval;
    t.expirations = 0;
    t.next = if value == 0 {
        None
    } else if flags & TFD_TIMER_ABSTIME != 0 {
        Some(value)
    } else {
        Some(now.saturating_add(value))
    };
    Ok(0)
}

pub fn timerfd_gettime(ctx: &mut Ctx, a: Args) -> SysResult {
    let id = timer_id(ctx, a.fd(0))?;
    let cur = current_setting(ctx, id);
    ctx.k.mm.write_obj(ctx.mem, a.ptr(1), &cur)?;
    Ok(0)
}

// ---- epoll -----------------------------------------------------------------

pub fn epoll_create(ctx: &mut Ctx, a: Args) -> SysResult {
    if (a.int(0)) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    epoll_create1(ctx, Args([0; 6]))
}

pub fn epoll_create1(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(0) & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.events.id();
    ctx.k.events.epolls.insert(id, Epoll::default());
    new_file(ctx, FileKind::Epoll(id), "anon_inode:[eventpoll]", a.u64(0))
}

fn epoll_id(ctx: &Ctx, epfd: i32) -> Result<u64, Errno> {
    match ctx.k.fds.get(epfd)?.kind {
        FileKind::Epoll(id) => Ok(id),
        _ => Err(Errno::EINVAL),
    }
}

pub fn epoll_ctl(ctx: &mut Ctx, a: Args) -> SysResult {
    const ADD: u64 = 1;
    const DEL: u64 = 2;
    const MOD: u64 = 3;
    let (epfd, op, fd, ev) = (a.fd(0), a.u64(1), a.fd(2), a.u64(3));
    let id = epoll_id(ctx, epfd)?;
    let target = ctx.k.fds.get(fd)?.kind.clone();
    if fd == epfd {
        return Err(Errno::EINVAL.into());
    }
    if !target.with_ops(|o| o.pollable()) {
        // Regular files and directories are always ready: Linux refuses them.
        return Err(Errno::EPERM.into());
    }
    let interest = if op == DEL {
        None
    } else {
        let raw = ctx.k.mm.read_vec(ctx.mem, ev, 12)?;
        let events = u32::from_le_bytes(raw[0..4].try_into().map_err(|_| Errno::EFAULT)?);
        let data = u64::from_le_bytes(raw[4..12].try_into().map_err(|_| Errno::EFAULT)?);
        Some(Interest {
            events,
            data,
            disabled: false,
            fresh: true,
            seen: 0,
            last: 0,
        })
    };
    let ep = ctx.k.events.epolls.get_mut(&id).ok_or(Errno::EBADF)?;
    match (op, interest) {
        (ADD, Some(i)) => {
            if ep.interest.contains_key(&fd) {
                return Err(Errno::EEXIST.into());
            }
            ep.interest.insert(fd, i);
        }
        (MOD, Some(i)) => {
            let slot = ep.interest.get_mut(&fd).ok_or(Errno::ENOENT)?;
            *slot = i;
        }
        (DEL, _) => {
            ep.interest.remove(&fd).ok_or(Errno::ENOENT)?;
        }
        _ => return Err(Errno::EINVAL.into()),
    }
    Ok(0)
}

fn do_epoll_wait(
    ctx: &mut Ctx,
    epfd: i32,
    events: u64,
    max: i32,
    timeout: Option<Duration>,
) -> SysResult {
    if max <= 0 || max > 1 << 20 {
        return Err(Errno::EINVAL.into());
    }
    let id = epoll_id(ctx, epfd)?;
    let list: Vec<(i32, Interest)> = ctx
        .k
        .events
        .epolls
        .get(&id)
        .map(|e| e.interest.iter().map(|(f, i)| (*f, i.clone())).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut stale = Vec::new();
    for (fd, i) in &list {
        if out.len() >= max as usize * 12 {
            break;
        }
        if i.disabled {
            continue;
        }
        let (got, r, activity) = entry_report(ctx, *fd, i, 0);
        if r & POLLNVAL != 0 {
            // The descriptor was closed: its registration goes with it.
            stale.push(*fd);
            continue;
        }
        if got != 0 {
            out.extend_from_slice(&got.to_le_bytes());
            out.extend_from_slice(&i.data.to_le_bytes());
        }
        if let Some(e) = ctx
            .k
            .events
            .epolls
            .get_mut(&id)
            .and_then(|e| e.interest.get_mut(fd))
        {
            e.looked(r, activity);
            if got != 0 && i.events & EPOLLONESHOT != 0 {
                e.disabled = true;
            }
        }
    }
    if let Some(e) = ctx.k.events.epolls.get_mut(&id) {
        for fd in stale {
            e.interest.remove(&fd);
        }
    }
    if out.is_empty() {
        let fds: Vec<i32> = list.iter().map(|(f, _)| *f).collect();
        return block_until_ready(ctx, "epoll_wait", timeout, &fds);
    }
    ctx.k.mm.write(ctx.mem, events, &out)?;
    Ok((out.len() / 12) as u64)
}

fn ms_timeout(t: u64) -> Option<Duration> {
    let t = t as i32;
    (t >= 0).then(|| Duration::from_millis(t as u64))
}

pub fn epoll_wait(ctx: &mut Ctx, a: Args) -> SysResult {
    do_epoll_wait(ctx, a.fd(0), a.u64(1), a.int(2), ms_timeout(a.u64(3)))
}

pub fn epoll_pwait(ctx: &mut Ctx, a: Args) -> SysResult {
    // The signal mask would apply only while waiting; signals are acted on
    // between syscalls here, so it changes nothing observable.
    epoll_wait(ctx, a)
}

pub fn epoll_pwait2(ctx: &mut Ctx, a: Args) -> SysResult {
    let timeout = if a.u64(3) == 0 {
        None
    } else {
        Some(Duration::from_nanos(read_ts(ctx, a.u64(3))?))
    };
    do_epoll_wait(ctx, a.fd(0), a.u64(1), a.int(2), timeout)
}

/// pkey_alloc: there are no protection keys (the guest's CR4.PKE is off),
/// which Linux reports as ENOSPC.
pub fn pkey_alloc(_ctx: &mut Ctx, a: Args) -> SysResult {
    if a.u64(0) != 0 || a.u64(1) & !3 != 0 {
        return Err(Errno::EINVAL.into());
    }
    Err(Errno::ENOSPC.into())
}

pub fn pkey_mprotect(ctx: &mut Ctx, a: Args) -> SysResult {
    if a.i64(3) != -1 {
        return Err(Errno::EINVAL.into());
    }
    super::mm::mprotect(ctx, Args([a.u64(0), a.u64(1), a.u64(2), 0, 0, 0]))
}
// ---- poll and select -------------------------------------------------------

fn do_poll(ctx: &mut Ctx, fds_va: u64, nfds: u64, timeout: Option<Duration>) -> SysResult {
    if nfds
        > ctx.k.proc.rlimits[RLIMIT_NOFILE as usize]
            .rlim_cur
            .max(1024)
    {
        return Err(Errno::EINVAL.into());
    }
    let mut ready = 0;
    let mut out = Vec::with_capacity(nfds as usize);
    for i in 0..nfds {
        let mut p: Pollfd = ctx.k.mm.read_obj(ctx.mem, fds_va + 8 * i)?;
        p.revents = if p.fd < 0 {
            0
        } else {
            let r = readiness(ctx, p.fd);
            r & (p.events | POLLERR | POLLHUP | POLLNVAL)
        };
        if p.revents != 0 {
            ready += 1;
        }
        out.push(p);
    }
    for (i, p) in out.iter().enumerate() {
        ctx.k.mm.write_obj(ctx.mem, fds_va + 8 * i as u64, p)?;
    }
    if ready == 0 {
        let fds: Vec<i32> = out.iter().map(|p| p.fd).filter(|&f| f >= 0).collect();
        return block_until_ready(ctx, "poll", timeout, &fds);
    }
    Ok(ready)
}

pub fn poll(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = a.int(2);
    do_poll(
        ctx,
        a.u64(0),
        a.u64(1),
        if t < 0 {
            None
        } else {
            Some(Duration::from_millis(t as u64))
        },
    )
}

pub fn ppoll(ctx: &mut Ctx, a: Args) -> SysResult {
    // To the nanosecond: a timeout under a millisecond is a wait, not a
    // poll (asyncio's loop sleeps 1e-4 s and expects to have slept).
    let t = if a.u64(2) == 0 {
        None
    } else {
        Some(Duration::from_nanos(super::time::read_ts(ctx, a.u64(2))?))
    };
    do_poll(ctx, a.u64(0), a.u64(1), t)
}

fn do_select(
    ctx: &mut Ctx,
    nfds: u64,
    rd: u64,
    wr: u64,
    ex: u64,
    timeout: Option<Duration>,
) -> SysResult {
    if nfds > 1024 {
        return Err(Errno::EINVAL.into());
    }
    let words = nfds.div_ceil(64) as usize;
    let read_set = |ctx: &mut Ctx, va: u64| -> Result<Vec<u64>, Errno> {
        if va == 0 {
            return Ok(vec![0; words]);
        }
        let mut v = vec![0u64; words];
        for (i, w) in v.iter_mut().enumerate() {
            *w = ctx.k.mm.read_obj(ctx.mem, va + 8 * i as u64)?;
        }
        Ok(v)
    };
    let (r, w, e) = (read_set(ctx, rd)?, read_set(ctx, wr)?, read_set(ctx, ex)?);
    let (mut ro, mut wo) = (vec![0u64; words], vec![0u64; words]);
    let mut count = 0;
    for fd in 0..nfds as usize {
        let bit = 1u64 << (fd % 64);
        let (wi, want_r, want_w) = (fd / 64, r[fd / 64] & bit != 0, w[fd / 64] & bit != 0);
        if !want_r && !want_w && e[wi] & bit == 0 {
            continue;
        }
        let rv = readiness(ctx, fd as i32);
        if rv & POLLNVAL != 0 {
            return Err(Errno::EBADF.into());
        }
        if want_r && rv & (POLLIN | POLLHUP | POLLERR) != 0 {
            ro[wi] |= bit;
            count += 1;
        }
        if want_w && rv & (POLLOUT | POLLERR) != 0 {
            wo[wi] |= bit;
            count += 1;
        }
    }
    if count == 0 {
        // The sets are the question until the call returns: a blocked
        // select is retried with them as the caller wrote them.
        let fds: Vec<i32> = (0..nfds as i32).collect();
        count = block_until_ready(ctx, "select", timeout, &fds)?;
    }
    for (va, set) in [(rd, &ro), (wr, &wo), (ex, &vec![0u64; words])] {
        if va != 0 {
            for (i, word) in set.iter().enumerate() {
                ctx.k.mm.write_obj(ctx.mem, va + 8 * i as u64, word)?;
            }
        }
    }
    Ok(count)
}

pub fn select(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = if a.u64(4) == 0 {
        None
    } else {
        let tv: zeroboot_abi::structs::Timeval = ctx.k.mm.read_obj(ctx.mem, a.ptr(4))?;
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            return Err(Errno::EINVAL.into());
        }
        // To the microsecond (a timeout under a millisecond once
        // truncated to none: select returned at once).
        Some(
            Duration::from_secs(tv.tv_sec as u64)
                .saturating_add(Duration::from_micros(tv.tv_usec as u64)),
        )
    };
    do_select(ctx, a.u64(0), a.u64(1), a.u64(2), a.u64(3), t)
}

pub fn pselect6(ctx: &mut Ctx, a: Args) -> SysResult {
    let t = if a.u64(4) == 0 {
        None
    } else {
        Some(Duration::from_nanos(super::time::read_ts(ctx, a.u64(4))?))
    };
    do_select(ctx, a.u64(0), a.u64(1), a.u64(2), a.u64(3), t)
}
