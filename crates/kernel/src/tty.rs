//! Pseudo-terminals. The master side is held by the host (envd's `pty` in
//! StartRequest: `sandbox.pty.create()`) or by a guest process that opened
//! `/dev/ptmx` (`openpty`, `pty.spawn`, `script`). The slave is a file kind of the
//! sandbox's kernel with a small line discipline, enough for an
//! interactive bash: termios (canonical or raw input, echo, CR/NL
//! translation, output NL -> CR NL), the window size, the foreground
//! process group, and the characters that raise SIGINT, SIGQUIT and
//! SIGTSTP. Like Linux's n_tty, reduced to what shells and readline use;
//! what it does not model (flow control, parity, baud rates) is accepted
//! and ignored in termios, as a pty ignores it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use zeroboot_abi::signal::{SIGINT, SIGQUIT, SIGTSTP, SIGWINCH};
use zeroboot_abi::Errno;

use crate::kernel::Kernel;
use crate::syscalls::{Args, Ctx, SysError, SysResult};
use crate::task::Wait;

// termios flags (asm-generic/termbits.h).
const IGNCR: u32 = 0o200;
const ICRNL: u32 = 0o400;
const INLCR: u32 = 0o100;
const ISTRIP: u32 = 0o40;
const IXON: u32 = 0o2000;
const OPOST: u32 = 0o1;
const ONLCR: u32 = 0o4;
const ISIG: u32 = 0o1;
const ICANON: u32 = 0o2;
const ECHO: u32 = 0o10;
const ECHOE: u32 = 0o20;
const ECHOK: u32 = 0o40;
const ECHONL: u32 = 0o100;
const ECHOCTL: u32 = 0o1000;
const ECHOKE: u32 = 0o4000;
const IEXTEN: u32 = 0o100000;
// c_cc indexes.
const VINTR: usize = 0;
const VQUIT: usize = 1;
const VERASE: usize = 2;
const VKILL: usize = 3;
const VEOF: usize = 4;
const VSUSP: usize = 10;
const VEOL: usize = 11;
const VWERASE: usize = 14;
const VEOL2: usize = 16;
const NCCS: usize = 19;

/// Size of the kernel's `struct termios` (TCGETS/TCSETS).
pub const TERMIOS_SIZE: usize = 36;

/// Bytes a side may queue before its writer blocks.
const QUEUE_CAP: usize = 64 << 10;

/// The line discipline's settings (the kernel's `struct termios`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; NCCS],
}

impl Default for Termios {
    /// What a new Linux pty starts with.
    fn default() -> Termios {
        let mut cc = [0u8; NCCS];
        let set: [(usize, u8); 14] = [
            (VINTR, 0x03),
            (VQUIT, 0x1c),
            (VERASE, 0x7f),
            (VKILL, 0x15),
            (VEOF, 0x04),
            (6, 1), // VMIN
            (8, 0x11),
            (9, 0x13),
            (VSUSP, 0x1a),
            (12, 0x12),
            (13, 0x0f),
            (VWERASE, 0x17),
            (15, 0x16),
            (5, 0), // VTIME
        ];
        for (i, v) in set {
            cc[i] = v;
        }
        Termios {
            iflag: ICRNL | IXON,
            oflag: OPOST | ONLCR,
            // B38400 | CS8 | CREAD | HUPCL
            cflag: 0o17 | 0o60 | 0o200 | 0o2000,
            lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            line: 0,
            cc,
        }
    }
}

impl Termios {
    pub fn to_bytes(self) -> [u8; TERMIOS_SIZE] {
        let mut b = [0u8; TERMIOS_SIZE];
        b[0..4].copy_from_slice(&self.iflag.to_le_bytes());
        b[4..8].copy_from_slice(&self.oflag.to_le_bytes());
        b[8..12].copy_from_slice(&self.cflag.to_le_bytes());
        b[12..16].copy_from_slice(&self.lflag.to_le_bytes());
        b[16] = self.line;
        b[17..].copy_from_slice(&self.cc);
        b
    }

    pub fn from_bytes(b: &[u8; TERMIOS_SIZE]) -> Termios {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut cc = [0u8; NCCS];
        cc.copy_from_slice(&b[17..]);
        Termios {
            iflag: u(0),
            oflag: u(4),
            cflag: u(8),
            lflag: u(12),
            line: b[16],
            cc,
        }
    }
}

/// One pseudo-terminal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pty {
    pub termios: Termios,
    pub rows: u16,
    pub cols: u16,
    /// Input the slave can read: whole lines (or an end-of-file mark, an
    /// empty segment) in canonical mode, any bytes otherwise.
    ready: VecDeque<Vec<u8>>,
    /// The line being edited (canonical mode).
    line: Vec<u8>,
    /// What the slave wrote (and echoes), for the host.
    pub output: VecDeque<u8>,
    /// The foreground process group, and the session it belongs to.
    pub fg_pgrp: u32,
    pub session: u32,
    /// The host closed the master: the slave hangs up.
    pub hung_up: bool,
    /// A guest holds the master (`/dev/ptmx`): the slave opens only after
    /// unlockpt, and becomes a controlling terminal by TIOCSCTTY.
    #[serde(default)]
    pub guest_master: bool,
    /// TIOCSPTLCK: opening the slave fails with EIO.
    #[serde(default)]
    pub locked: bool,
    /// The slave was opened once: when no slave descriptor is left, the
    /// master reads EIO (Linux's TTY_OTHER_CLOSED).
    #[serde(default)]
    pub slave_opened: bool,
    /// Input, output and reads so far: news for edge-triggered epoll on
    /// either side.
    #[serde(default)]
    pub changes: u64,
}

/// What the slave's readers and writers see.
pub enum SlaveRead {
    Data(Vec<u8>),
    /// Nothing yet: block (or EAGAIN).
    Empty,
    /// End of file (VEOF at the start of a line).
    Eof,
}

impl Pty {
    pub fn new(rows: u16, cols: u16, session: u32) -> Pty {
        Pty {
            rows,
            cols,
            fg_pgrp: session,
            session,
            ..Default::default()
        }
    }

    fn canonical(&self) -> bool {
        self.termios.lflag & ICANON != 0
    }

    /// Output processing of the slave's bytes (and of echoes).
    fn put_output(&mut self, data: &[u8]) {
        self.changes += 1;
        let t = self.termios;
        for &c in data {
            if c == b'\n' && t.oflag & OPOST != 0 && t.oflag & ONLCR != 0 {
                self.output.push_back(b'\r');
            }
            self.output.push_back(c);
        }
    }

    fn echo(&mut self, c: u8) {
        let t = self.termios;
        if t.lflag & ECHO == 0 {
            if c == b'\n' && t.lflag & ECHONL != 0 && self.canonical() {
                self.put_output(b"\n");
            }
            return;
        }
        if c < 0x20 && c != b'\n' && c != b'\t' && t.lflag & ECHOCTL != 0 {
            self.put_output(&[b'^', c + 0x40]);
        } else if c == 0x7f && t.lflag & ECHOCTL != 0 {
            self.put_output(b"^?");
        } else {
            self.put_output(&[c]);
        }
    }

    /// Bytes the slave may read now.
    pub fn readable(&self) -> bool {
        self.hung_up || self.ready.iter().any(|s| !s.is_empty() || self.canonical())
    }

    /// Input from the host (the user typing): the line discipline runs
    /// over it. Returns the signals to raise at the foreground group.
    /// The whole input is taken; past the queue cap it is dropped, as a
    /// full tty drops input.
    pub fn input(&mut self, data: &[u8]) -> Vec<u32> {
        self.changes += 1;
        let mut signals = Vec::new();
        for &b in data {
            let t = self.termios;
            let mut c = b;
            if t.iflag & ISTRIP != 0 {
                c &= 0x7f;
            }
            if c == b'\r' {
                if t.iflag & IGNCR != 0 {
                    continue;
                }
                if t.iflag & ICRNL != 0 {
                    c = b'\n';
                }
            } else if c == b'\n' && t.iflag & INLCR != 0 {
                c = b'\r';
            }
            if t.lflag & ISIG != 0 {
                let sig = if c == t.cc[VINTR] && c != 0 {
                    Some(SIGINT)
                } else if c == t.cc[VQUIT] && c != 0 {
                    Some(SIGQUIT)
                } else if c == t.cc[VSUSP] && c != 0 {
                    Some(SIGTSTP)
                } else {
                    None
                };
                if let Some(s) = sig {
                    self.line.clear();
                    self.echo(c);
                    signals.push(s);
                    continue;
                }
            }
            if !self.canonical() {
                if self.queued() < QUEUE_CAP {
                    match self.ready.back_mut() {
                        Some(seg) if !seg.is_empty() => seg.push(c),
                        _ => self.ready.push_back(vec![c]),
                    }
                }
                self.echo(c);
                continue;
            }
            if c == t.cc[VERASE] && c != 0 {
                if self.line.pop().is_some() && t.lflag & ECHO != 0 && t.lflag & ECHOE != 0 {
                    self.put_output(b"\x08 \x08");
                }
                continue;
            }
            if c == t.cc[VWERASE] && c != 0 && t.lflag & IEXTEN != 0 {
                while self.line.last() == Some(&b' ') {
                    self.line.pop();
                    self.put_output(b"\x08 \x08");
                }
                while self.line.last().is_some_and(|&x| x != b' ') {
                    self.line.pop();
                    self.put_output(b"\x08 \x08");
                }
                continue;
            }
            if c == t.cc[VKILL] && c != 0 {
                let n = self.line.len();
                self.line.clear();
                if t.lflag & ECHOK != 0 || t.lflag & ECHOKE != 0 {
                    for _ in 0..n {
                        self.put_output(b"\x08 \x08");
                    }
                }
                continue;
            }
            if c == t.cc[VEOF] && c != 0 {
                // The line so far, without a newline; at the start of a
                // line, end of file (an empty segment).
                self.ready.push_back(std::mem::take(&mut self.line));
                continue;
            }
            if self.line.len() < 4095 {
                self.line.push(c);
            }
            self.echo(c);
            let eol = c == b'\n' || (c != 0 && (c == t.cc[VEOL] || c == t.cc[VEOL2]));
            if eol && self.queued() < QUEUE_CAP {
                self.ready.push_back(std::mem::take(&mut self.line));
            }
        }
        signals
    }

    fn queued(&self) -> usize {
        self.ready.iter().map(Vec::len).sum()
    }

    /// A read of up to `count` bytes by the slave.
    pub fn read(&mut self, count: usize) -> SlaveRead {
        self.changes += 1;
        if self.canonical() {
            let Some(seg) = self.ready.front_mut() else {
                return if self.hung_up {
                    SlaveRead::Eof
                } else {
                    SlaveRead::Empty
                };
            };
            if seg.is_empty() {
                self.ready.pop_front();
                return SlaveRead::Eof;
            }
            let n = count.min(seg.len());
            let data: Vec<u8> = seg.drain(..n).collect();
            if seg.is_empty() {
                self.ready.pop_front();
            }
            return SlaveRead::Data(data);
        }
        let mut data = Vec::new();
        while data.len() < count {
            let Some(seg) = self.ready.front_mut() else {
                break;
            };
            let n = (count - data.len()).min(seg.len());
            data.extend(seg.drain(..n));
            if seg.is_empty() {
                self.ready.pop_front();
            }
        }
        if data.is_empty() {
            if self.hung_up {
                SlaveRead::Eof
            } else {
                SlaveRead::Empty
            }
        } else {
            SlaveRead::Data(data)
        }
    }

    /// A write by the slave: how much fitted (0: block).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let room = QUEUE_CAP.saturating_sub(self.output.len());
        let n = room.min(data.len());
        self.put_output(&data[..n]);
        n
    }

    pub fn writable(&self) -> bool {
        self.output.len() < QUEUE_CAP
    }

    /// Drop queued input (TCSETSF, TCFLSH).
    pub fn flush_input(&mut self) {
        self.ready.clear();
        self.line.clear();
    }
}

// ioctl requests (asm-generic/ioctls.h).
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TCSBRK: u64 = 0x5409;
const TCXONC: u64 = 0x540A;
const TCFLSH: u64 = 0x540B;
const TIOCSCTTY: u64 = 0x540E;
const TIOCGPGRP: u64 = 0x540F;
const TIOCSPGRP: u64 = 0x5410;
const TIOCOUTQ: u64 = 0x5411;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;
const FIONREAD: u64 = 0x541B;
const TIOCNOTTY: u64 = 0x5422;
const TIOCGSID: u64 = 0x5429;
const TIOCGPTN: u64 = 0x80045430;
const TIOCSPTLCK: u64 = 0x40045431;
const TIOCGPTLCK: u64 = 0x80045439;
const TIOCGPTPEER: u64 = 0x5441;

/// read(2) on a slave.
pub(crate) fn slave_read(
    ctx: &mut Ctx,
    id: u64,
    count: usize,
    nonblock: bool,
) -> Result<Vec<u8>, SysError> {
    let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
    match p.read(count) {
        SlaveRead::Data(d) => {
            crate::sched::wake_retriers(ctx.k);
            Ok(d)
        }
        SlaveRead::Eof => Ok(Vec::new()),
        SlaveRead::Empty if nonblock => Err(Errno::EAGAIN.into()),
        SlaveRead::Empty => Err(ctx.k.wait(Wait::Retry {
            reason: "read from a terminal",
            deadline: None,
        })),
    }
}

/// write(2) on a slave.
pub(crate) fn slave_write(
    ctx: &mut Ctx,
    id: u64,
    data: &[u8],
    nonblock: bool,
) -> Result<usize, SysError> {
    let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
    if p.hung_up {
        return Err(Errno::EIO.into());
    }
    match p.write(data) {
        0 if data.is_empty() => Ok(0),
        0 if nonblock => Err(Errno::EAGAIN.into()),
        0 => Err(ctx.k.wait(Wait::Retry {
            reason: "write to a full terminal",
            deadline: None,
        })),
        n => Ok(n),
    }
}

/// poll(2) bits of a slave.
pub(crate) fn readiness(ctx: &mut Ctx, id: u64) -> i16 {
    use crate::syscalls::events::{POLLHUP, POLLIN, POLLOUT};
    let Some(p) = ctx.k.ptys.get(&id) else {
        return POLLHUP;
    };
    let mut r = 0;
    if p.readable() {
        r |= POLLIN;
    }
    if p.writable() && !p.hung_up {
        r |= POLLOUT;
    }
    if p.hung_up {
        r |= POLLHUP;
    }
    r
}

/// The terminal ioctls of a slave; None for requests that are not a
/// terminal's (the caller answers those).
pub(crate) fn ioctl(ctx: &mut Ctx, id: u64, a: Args) -> Option<SysResult> {
    let arg = a.ptr(2);
    let r = (|| -> SysResult {
        let mem = ctx.mem;
        let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
        match a.u64(1) {
            TCGETS => {
                let b = p.termios.to_bytes();
                ctx.k.mm.write(mem, arg, &b)?;
            }
            req @ (TCSETS | TCSETSW | TCSETSF) => {
                let mut b = [0u8; TERMIOS_SIZE];
                ctx.k.mm.read(mem, arg, &mut b)?;
                let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
                p.termios = Termios::from_bytes(&b);
                if req == TCSETSF {
                    p.flush_input();
                }
                crate::sched::wake_retriers(ctx.k);
            }
            TIOCGWINSZ => {
                let ws: [u16; 4] = [p.rows, p.cols, 0, 0];
                ctx.k.mm.write_obj(mem, arg, &ws)?;
            }
            TIOCSWINSZ => {
                let ws: [u16; 4] = ctx.k.mm.read_obj(mem, arg)?;
                ctx.k.pty_resize(id, ws[0], ws[1])?;
            }
            TIOCGPGRP => {
                let g = p.fg_pgrp;
                ctx.k.mm.write_obj(mem, arg, &g)?;
            }
            TIOCSPGRP => {
                let g: i32 = ctx.k.mm.read_obj(mem, arg)?;
                if g <= 0 {
                    return Err(Errno::EINVAL.into());
                }
                let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
                p.fg_pgrp = g as u32;
            }
            TIOCGSID => {
                let s = p.session;
                ctx.k.mm.write_obj(mem, arg, &s)?;
            }
            FIONREAD => {
                let n = p.ready.iter().map(Vec::len).sum::<usize>() as i32;
                ctx.k.mm.write_obj(mem, arg, &n)?;
            }
            TIOCOUTQ => {
                let n = p.output.len() as i32;
                ctx.k.mm.write_obj(mem, arg, &n)?;
            }
            TCFLSH => {
                // 0: input, 1: output, 2: both.
                match a.u64(2) {
                    0 => p.flush_input(),
                    1 => p.output.clear(),
                    2 => {
                        p.flush_input();
                        p.output.clear();
                    }
                    _ => return Err(Errno::EINVAL.into()),
                }
            }
            // A host pty is already its session's controlling terminal
            // (the host made it so); a guest's becomes the caller's.
            TIOCSCTTY if p.guest_master => {
                let (sid, pgid) = (ctx.k.proc.sid, ctx.k.proc.pgid);
                let p = ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
                p.session = sid;
                p.fg_pgrp = pgid;
            }
            // Draining and flow control have nothing to wait for here.
            TIOCSCTTY | TIOCNOTTY | TCSBRK | TCXONC => {}
            TIOCGPTN | TIOCSPTLCK | TIOCGPTLCK | TIOCGPTPEER => return Err(Errno::ENOTTY.into()),
            _ => return Err(SysError::Errno(Errno::ENOSYS)),
        }
        Ok(0)
    })();
    match r {
        Err(SysError::Errno(Errno::ENOSYS)) => None,
        r => Some(r),
    }
}

/// Whether any descriptor (in any process, or in flight) holds the slave
/// of pty `id`.
fn slave_open(k: &Kernel, id: u64) -> bool {
    k.live_descriptions()
        .any(|f| matches!(f.kind, crate::fd::FileKind::Pty(i) if i == id))
}

/// open("/dev/ptmx"): a new pty whose master the caller holds, locked
/// until unlockpt, with no session yet.
pub(crate) fn open_master(k: &mut Kernel) -> u64 {
    let id = k.new_pty(0, 0, 0);
    if let Some(p) = k.ptys.get_mut(&id) {
        p.guest_master = true;
        p.locked = true;
    }
    id
}

/// open("/dev/pts/N"): EIO while the master keeps it locked.
pub(crate) fn open_slave(k: &mut Kernel, id: u64) -> Result<(), Errno> {
    let p = k.ptys.get_mut(&id).ok_or(Errno::EIO)?;
    if p.locked || p.hung_up {
        return Err(Errno::EIO);
    }
    p.slave_opened = true;
    Ok(())
}

/// read(2) on a guest-held master: what the slave wrote.
pub(crate) fn master_read(
    ctx: &mut Ctx,
    id: u64,
    count: usize,
    nonblock: bool,
) -> Result<Vec<u8>, SysError> {
    let data = ctx.k.pty_output(id, count);
    if !data.is_empty() || count == 0 {
        return Ok(data);
    }
    let p = ctx.k.ptys.get(&id).ok_or(Errno::EIO)?;
    if p.slave_opened && !slave_open(ctx.k, id) {
        return Err(Errno::EIO.into());
    }
    if nonblock {
        return Err(Errno::EAGAIN.into());
    }
    Err(ctx.k.wait(Wait::Retry {
        reason: "read from a terminal master",
        deadline: None,
    }))
}

/// write(2) on a guest-held master: typed input, through the line
/// discipline. Input past the queue cap is dropped, as `pty_input` does.
pub(crate) fn master_write(ctx: &mut Ctx, id: u64, data: &[u8]) -> Result<usize, SysError> {
    ctx.k.pty_input(id, data)?;
    Ok(data.len())
}

/// poll(2) bits of a guest-held master.
pub(crate) fn master_readiness(ctx: &mut Ctx, id: u64) -> i16 {
    use crate::syscalls::events::{POLLHUP, POLLIN, POLLOUT};
    let Some(p) = ctx.k.ptys.get(&id) else {
        return POLLHUP;
    };
    let mut r = POLLOUT;
    if !p.output.is_empty() {
        r |= POLLIN;
    }
    if p.slave_opened && !slave_open(ctx.k, id) {
        r |= POLLHUP;
    }
    r
}

/// The ioctls of a guest-held master: the pty's own (TIOCGPTN, the lock,
/// TIOCGPTPEER) and the terminal ones, which act on the pair.
pub(crate) fn master_ioctl(ctx: &mut Ctx, id: u64, a: Args) -> Option<SysResult> {
    let arg = a.ptr(2);
    let r = (|| -> SysResult {
        let mem = ctx.mem;
        match a.u64(1) {
            TIOCGPTN => {
                let n = (id + 1) as u32;
                ctx.k.mm.write_obj(mem, arg, &n)?;
            }
            TIOCSPTLCK => {
                let lock: i32 = ctx.k.mm.read_obj(mem, arg)?;
                ctx.k.ptys.get_mut(&id).ok_or(Errno::EIO)?.locked = lock != 0;
            }
            TIOCGPTLCK => {
                let lock = ctx.k.ptys.get(&id).ok_or(Errno::EIO)?.locked as i32;
                ctx.k.mm.write_obj(mem, arg, &lock)?;
            }
            TIOCGPTPEER => {
                use zeroboot_abi::flags::*;
                let flags = a.u64(2);
                if flags & !(O_ACCMODE | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) != 0 {
                    return Err(Errno::EINVAL.into());
                }
                open_slave(ctx.k, id)?;
                let f = crate::fd::OpenFile::new(
                    crate::fd::FileKind::Pty(id),
                    format!("/dev/pts/{}", id + 1),
                    flags & (O_ACCMODE | O_NONBLOCK),
                );
                return Ok(ctx.k.fds.open(f, flags & O_CLOEXEC != 0, 0)? as u64);
            }
            FIONREAD => {
                let n = ctx.k.ptys.get(&id).ok_or(Errno::EIO)?.output.len() as i32;
                ctx.k.mm.write_obj(mem, arg, &n)?;
            }
            _ => return Err(SysError::Errno(Errno::ENOSYS)),
        }
        Ok(0)
    })();
    match r {
        Err(SysError::Errno(Errno::ENOSYS)) => ioctl(ctx, id, a),
        r => Some(r),
    }
}

impl Kernel {
    /// A new pty for session `session` (its slave is opened by the caller).
    pub(crate) fn new_pty(&mut self, rows: u16, cols: u16, session: u32) -> u64 {
        let id = self.next_pty;
        self.next_pty += 1;
        self.ptys.insert(id, Pty::new(rows, cols, session));
        id
    }

    /// The user typed `data` at pty `id`.
    pub fn pty_input(&mut self, id: u64, data: &[u8]) -> Result<(), Errno> {
        let p = self.ptys.get_mut(&id).ok_or(Errno::EBADF)?;
        let signals = p.input(data);
        let fg = p.fg_pgrp;
        for s in signals {
            self.signal_group(fg, s);
        }
        crate::sched::wake_retriers(self);
        Ok(())
    }

    /// Up to `max` bytes of what pty `id` printed.
    pub fn pty_output(&mut self, id: u64, max: usize) -> Vec<u8> {
        let Some(p) = self.ptys.get_mut(&id) else {
            return Vec::new();
        };
        let n = max.min(p.output.len());
        if n > 0 {
            p.changes += 1;
        }
        let data: Vec<u8> = p.output.drain(..n).collect();
        if !data.is_empty() {
            crate::sched::wake_retriers(self);
        }
        data
    }

    /// Resize pty `id` (SIGWINCH to its foreground group).
    pub fn pty_resize(&mut self, id: u64, rows: u16, cols: u16) -> Result<(), Errno> {
        let p = self.ptys.get_mut(&id).ok_or(Errno::EBADF)?;
        if (p.rows, p.cols) != (rows, cols) {
            p.rows = rows;
            p.cols = cols;
            let fg = p.fg_pgrp;
            self.signal_group(fg, SIGWINCH);
            crate::sched::wake_retriers(self);
        }
        Ok(())
    }

    /// The host closes the master: the slave's readers see end of file.
    pub fn pty_hangup(&mut self, id: u64) {
        if let Some(p) = self.ptys.get_mut(&id) {
            p.hung_up = true;
        }
        self.gc_ptys();
        crate::sched::wake_retriers(self);
    }

    /// Drop ptys no slave descriptor refers to whose master is closed.
    pub(crate) fn gc_ptys(&mut self) {
        // Descriptors in flight (SCM_RIGHTS) keep a pty too.
        let live: std::collections::BTreeSet<u64> = self
            .live_descriptions()
            .filter_map(|f| match f.kind {
                crate::fd::FileKind::Pty(id) | crate::fd::FileKind::PtyMaster(id) => Some(id),
                _ => None,
            })
            .collect();
        // A guest's master hangs up when its last descriptor is gone
        // (closed, or its process exited); its slave readers, and a
        // master reader waiting for slaves that all closed, wake.
        let masters: std::collections::BTreeSet<u64> = self
            .live_descriptions()
            .filter_map(|f| match f.kind {
                crate::fd::FileKind::PtyMaster(id) => Some(id),
                _ => None,
            })
            .collect();
        let mut guest = false;
        for (id, p) in self.ptys.iter_mut().filter(|(_, p)| p.guest_master) {
            guest = true;
            if !masters.contains(id) {
                p.hung_up = true;
            }
        }
        self.ptys.retain(|id, p| live.contains(id) || !p.hung_up);
        if guest {
            crate::sched::wake_retriers(self);
        }
    }

    /// Signal every live process of group `pgid` (as the tty driver does).
    pub(crate) fn signal_group(&mut self, pgid: u32, sig: u32) {
        let mut pids: Vec<u32> = self
            .others
            .iter()
            .filter(|(_, s)| s.proc.pgid == pgid)
            .map(|(&p, _)| p)
            .collect();
        if self.proc.pgid == pgid && self.proc.dead.is_none() {
            pids.push(self.proc.pid);
        }
        for pid in pids {
            let _ = self.signal_process(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(p: &mut Pty) -> Vec<u8> {
        match p.read(4096) {
            SlaveRead::Data(d) => d,
            _ => Vec::new(),
        }
    }

    #[test]
    fn canonical_lines_echo_and_erase() {
        let mut p = Pty::new(24, 80, 1);
        assert!(p.input(b"ecx\x7fho hi\r").is_empty());
        assert_eq!(read_all(&mut p), b"echo hi\n");
        let out: Vec<u8> = p.output.drain(..).collect();
        assert_eq!(out, b"ecx\x08 \x08ho hi\r\n");
        // Nothing until a line is complete.
        p.input(b"par");
        assert!(matches!(p.read(10), SlaveRead::Empty));
        p.input(b"tial\x04");
        assert_eq!(read_all(&mut p), b"partial");
        // VEOF at the start of a line: end of file.
        p.input(b"\x04");
        assert!(matches!(p.read(10), SlaveRead::Eof));
    }

    #[test]
    fn raw_mode_and_signals() {
        let mut p = Pty::new(24, 80, 1);
        p.termios.lflag &= !(ICANON | ECHO);
        p.input(b"ab");
        assert_eq!(read_all(&mut p), b"ab");
        assert_eq!(p.input(b"x\x03y"), vec![SIGINT]);
        assert_eq!(read_all(&mut p), b"xy");
        assert!(p.output.is_empty());
        assert_eq!(p.write(b"1\n2"), 3);
        assert_eq!(p.output.iter().copied().collect::<Vec<u8>>(), b"1\r\n2");
    }

    #[test]
    fn termios_round_trips() {
        let t = Termios::default();
        assert_eq!(Termios::from_bytes(&t.to_bytes()), t);
    }
}
