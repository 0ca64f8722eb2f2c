//! Sockets of the sandbox's kernel: AF_UNIX, loopback AF_INET/AF_INET6,
//! and egress through host sockets when the policy allows it.
//!
//! Every socket is an object in `Kernel::sockets`, shared (like a pipe) by
//! every descriptor that refers to it, in any process; local data moves
//! between objects of this table only. A socket connected outside the
//! sandbox has a host socket (`host::HostConn`), opened only after
//! `policy` allowed the destination.
//! The objects know nothing of guest memory or descriptors: the syscall
//! layer (`syscalls::net`) decodes arguments and calls these methods.

pub mod dns;
pub mod host;
pub mod inet;
pub mod limit;
pub mod policy;
pub mod unix;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

use crate::fd::{FileKind, OpenFile};

pub const AF_UNSPEC: u16 = 0;
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Linux's default socket buffer (net.core.wmem_default), as getsockopt
/// reports it.
pub const DEFAULT_BUF: u32 = 212_992;
/// The most a listen backlog can be (net.core.somaxconn).
pub const SOMAXCONN: u32 = 4096;
/// What a queued message costs beyond its bytes (Linux charges an skb's
/// truesize): a flood of tiny messages fills a buffer too.
pub const PACKET_OVERHEAD: usize = 256;
/// Most descriptors in flight in a sandbox (Linux: RLIMIT_NOFILE per
/// user; past it sendmsg fails with ETOOMANYREFS).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most bytes (with overheads) all of a sandbox's sockets may hold: the
/// VMM's memory, not the guest's, so it is bounded apart.
pub const MAX_BUFFERED: usize = 64 << 20;
/// Most sockets a sandbox holds at once, in all its processes (pending
/// connections and sockets in flight included): past it socket(2) and
/// socketpair(2) fail with ENFILE (the sandbox is the system here), a
/// local connect with ENOBUFS. One process's descriptor limit (at most
/// 4096) does not bound it: many processes, or a listener's queue, can
/// hold more.
pub const MAX_SOCKETS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Domain {
    Unix,
    Inet,
    Inet6,
}

impl Domain {
    pub fn family(self) -> u16 {
        match self {
            Domain::Unix => AF_UNIX,
            Domain::Inet => AF_INET,
            Domain::Inet6 => AF_INET6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Type {
    Stream,
    Dgram,
    SeqPacket,
}

impl Type {
    pub fn raw(self) -> i32 {
        match self {
            Type::Stream => 1,
            Type::Dgram => 2,
            Type::SeqPacket => 5,
        }
    }

    /// Connection-oriented (connect/listen/accept).
    pub fn connected(self) -> bool {
        self != Type::Dgram
    }
}

/// A socket address, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Addr {
    /// An unbound AF_UNIX socket.
    Unnamed,
    /// A path in the sandbox's file system (canonical).
    Path(String),
    /// The abstract namespace (the name without its leading NUL).
    Abstract(Vec<u8>),
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

impl Addr {
    pub fn port(&self) -> Option<u16> {
        match self {
            Addr::V4(_, p) | Addr::V6(_, p) => Some(*p),
            _ => None,
        }
    }
}

/// struct ucred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ucred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One message (or, on a stream, one write) in a receive queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Packet {
    pub data: Vec<u8>,
    /// Descriptions passed with SCM_RIGHTS (they keep what they refer to
    /// alive while in flight).
    pub rights: Vec<OpenFile>,
    pub cred: Ucred,
    /// The sender's address (datagrams).
    pub from: Option<Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum State {
    Idle,
    Listening {
        backlog: usize,
        /// Server-side sockets of connections not yet accepted.
        pending: VecDeque<u64>,
    },
    /// Connected to socket `0` (for AF_UNIX datagrams: the default peer).
    Connected(u64),
}

/// Options with an effect here, and those only recorded (what runtimes set
/// and read back: keepalive or Nagle have nothing to change on a loopback).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opts {
    pub rcvbuf: u32,
    pub sndbuf: u32,
    pub passcred: bool,
    /// SO_RCVTIMEO / SO_SNDTIMEO in ns (0: none).
    pub rcvtimeo: u64,
    pub sndtimeo: u64,
    /// Recorded options by (level, name): their raw value.
    pub stored: BTreeMap<(i32, i32), Vec<u8>>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            rcvbuf: DEFAULT_BUF,
            sndbuf: DEFAULT_BUF,
            passcred: false,
            rcvtimeo: 0,
            sndtimeo: 0,
            stored: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Socket {
    pub domain: Domain,
    pub ty: Type,
    pub state: State,
    pub local: Option<Addr>,
    /// The peer's address (getpeername; a UDP socket's default destination).
    pub remote: Option<Addr>,
    pub rx: VecDeque<Packet>,
    pub rx_bytes: usize,
    /// Bytes of the front packet already read (streams).
    pub rx_off: usize,
    /// No more data will arrive (we shut reading, or the peer shut writing).
    pub rd_shut: bool,
    /// We may not send (we shut writing, or an AF_UNIX peer shut reading).
    pub wr_shut: bool,
    /// The peer is gone.
    pub hup: bool,
    /// A pending error for SO_ERROR / the next call (errno value; 0: none).
    pub error: u16,
    pub opts: Opts,
    pub cred: Ucred,
    pub peer_cred: Option<Ucred>,
    /// The overlay inode of the path it is bound to.
    pub path_ino: Option<u64>,
    /// The host socket of a connection outside the sandbox.
    #[serde(default)]
    pub host: Option<host::HostConn>,
    /// bind(2) chose the address / the port (Linux's SOCK_BINDADDR_LOCK
    /// and SOCK_BINDPORT_LOCK): a UDP disconnect keeps what bind chose and
    /// forgets what connect chose.
    #[serde(default)]
    pub addr_locked: bool,
    #[serde(default)]
    pub port_locked: bool,
    /// News for edge-triggered epoll: data or connections that arrived
    /// (and, for a host socket whose arrivals are not seen here, each
    /// receive), and reads of this queue (news to the peer's writer).
    #[serde(default)]
    pub arrivals: u64,
    #[serde(default)]
    pub taken: u64,
}

impl Socket {
    pub fn new(domain: Domain, ty: Type, cred: Ucred) -> Socket {
        Socket {
            domain,
            ty,
            state: State::Idle,
            local: None,
            remote: None,
            rx: VecDeque::new(),
            rx_bytes: 0,
            rx_off: 0,
            rd_shut: false,
            wr_shut: false,
            hup: false,
            error: 0,
            opts: Opts::default(),
            cred,
            peer_cred: None,
            path_ino: None,
            host: None,
            addr_locked: false,
            port_locked: false,
            arrivals: 0,
            taken: 0,
        }
    }

    pub fn peer(&self) -> Option<u64> {
        match self.state {
            State::Connected(p) => Some(p),
            _ => None,
        }
    }

    pub fn listening(&self) -> bool {
        matches!(self.state, State::Listening { .. })
    }

    /// Unread bytes (FIONREAD: a datagram socket reports the next one).
    pub fn unread(&self) -> usize {
        match self.ty {
            Type::Stream => self.rx_bytes.saturating_sub(self.rx_off),
            _ => self.rx.front().map(|p| p.data.len()).unwrap_or(0),
        }
    }

    /// What the queue holds (unread bytes), overheads included.
    pub fn cost(&self) -> usize {
        self.rx_bytes.saturating_sub(self.rx_off) + self.rx.len() * PACKET_OVERHEAD
    }

    fn push(&mut self, p: Packet) {
        self.arrivals += 1;
        self.rx_bytes += p.data.len();
        // A stream write joins the previous one when nothing tells them
        // apart (no descriptors, same sender).
        if self.ty == Type::Stream && p.rights.is_empty() {
            if let Some(last) = self.rx.back_mut() {
                if last.rights.is_empty() && last.cred == p.cred {
                    last.data.extend_from_slice(&p.data);
                    return;
                }
            }
        }
        self.rx.push_back(p);
    }

    /// Room left in the receive queue for a write of `len` bytes: streams
    /// take what fits, messages fit whole (an empty queue takes any one
    /// message, so a message up to the send buffer always goes).
    fn room_for(&self, len: usize) -> usize {
        let cap = self.opts.rcvbuf as usize;
        let used = self.cost();
        match self.ty {
            Type::Stream => cap.saturating_sub(used + PACKET_OVERHEAD),
            _ if self.rx.is_empty() || used + len + PACKET_OVERHEAD <= cap => len,
            _ => 0,
        }
    }
}

/// What a receive got.
#[derive(Debug, Default)]
pub struct Received {
    pub data: Vec<u8>,
    /// The message's full length (datagrams: larger than `data` if cut).
    pub full_len: usize,
    pub rights: Vec<OpenFile>,
    pub cred: Option<Ucred>,
    pub from: Option<Addr>,
}

/// Why a socket operation did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Err(Errno),
    /// Nothing to do yet: EAGAIN, or block the thread.
    WouldBlock,
    /// The write side is shut or the peer is gone: EPIPE (with SIGPIPE).
    Pipe,
}

impl From<Errno> for Stop {
    fn from(e: Errno) -> Stop {
        Stop::Err(e)
    }
}

/// Readiness bits (poll(2) values).
pub const POLLIN: i16 = 0x1;
pub const POLLOUT: i16 = 0x4;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;
pub const POLLRDHUP: i16 = 0x2000;

/// Every socket of a sandbox, and the names they are bound to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sockets {
    pub table: BTreeMap<u64, Socket>,
    next: u64,
    /// Abstract AF_UNIX names.
    pub abstract_names: BTreeMap<Vec<u8>, u64>,
    /// Overlay inodes of bound AF_UNIX paths.
    pub paths: BTreeMap<u64, u64>,
    /// Bound loopback ports, by (is_udp, port).
    pub ports: BTreeMap<(bool, u16), u64>,
    next_port: u16,
    next_autobind: u32,
    /// What every queue holds, overheads included (bounded by
    /// MAX_BUFFERED).
    #[serde(default)]
    pub buffered: usize,
    /// Options, flags and families refused as unimplemented, by name.
    pub refused: BTreeMap<String, u64>,
    /// The egress policy and its accounting (set per sandbox by the
    /// engine; never part of a snapshot).
    #[serde(skip)]
    pub egress: policy::Egress,
}

impl Sockets {
    pub fn add(&mut self, s: Socket) -> u64 {
        // Ids double as inode numbers: start clear of the small ones.
        self.next = self.next.max(100) + 1;
        self.table.insert(self.next, s);
        self.next
    }

    pub fn get(&self, id: u64) -> Result<&Socket, Errno> {
        self.table.get(&id).ok_or(Errno::EBADF)
    }

    pub fn get_mut(&mut self, id: u64) -> Result<&mut Socket, Errno> {
        self.table.get_mut(&id).ok_or(Errno::EBADF)
    }

    /// Whether `n` more sockets fit under MAX_SOCKETS (counted and logged
    /// when not).
    pub fn room_for_sockets(&mut self, n: usize) -> Result<(), Errno> {
        if self.table.len() + n <= MAX_SOCKETS {
            return Ok(());
        }
        self.egress.socket_limit(MAX_SOCKETS);
        Err(Errno::ENFILE)
    }

    /// Count an unimplemented option or flag (logged the first time).
    pub fn refuse(&mut self, what: String) {
        // A guest probing thousands of names must not grow the map.
        let what = if self.refused.len() >= 64 && !self.refused.contains_key(&what) {
            "others".to_string()
        } else {
            what
        };
        let n = self.refused.entry(what.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            tracing::debug!(what, "unsupported socket option or flag");
        }
    }

    /// A connected pair (socketpair).
    pub fn pair(&mut self, domain: Domain, ty: Type, cred: Ucred) -> (u64, u64) {
        let mut a = Socket::new(domain, ty, cred);
        let mut b = Socket::new(domain, ty, cred);
        a.peer_cred = Some(cred);
        b.peer_cred = Some(cred);
        a.local = Some(Addr::Unnamed);
        b.local = Some(Addr::Unnamed);
        a.remote = Some(Addr::Unnamed);
        b.remote = Some(Addr::Unnamed);
        let a = self.add(a);
        let b = self.add(b);
        if let Some(s) = self.table.get_mut(&a) {
            s.state = State::Connected(b);
        }
        if let Some(s) = self.table.get_mut(&b) {
            s.state = State::Connected(a);
        }
        (a, b)
    }

    /// An abstract name for an AF_UNIX socket bound without one (autobind:
    /// five hex digits, as Linux).
    pub fn autobind_name(&mut self) -> Vec<u8> {
        loop {
            self.next_autobind = (self.next_autobind + 1) & 0xfffff;
            let name = format!("{:05x}", self.next_autobind).into_bytes();
            if !self.abstract_names.contains_key(&name) {
                return name;
            }
        }
    }

    /// A free ephemeral port (Linux's ip_local_port_range: 32768-60999).
    pub fn ephemeral_port(&mut self, udp: bool) -> Result<u16, Errno> {
        for _ in 0..(60999 - 32768 + 1) {
            self.next_port = if (32768..60999).contains(&self.next_port) {
                self.next_port + 1
            } else {
                32768
            };
            if !self.ports.contains_key(&(udp, self.next_port)) {
                return Ok(self.next_port);
            }
        }
        Err(Errno::EADDRINUSE)
    }

    /// Host sockets open now.
    pub fn host_open(&self) -> usize {
        self.table
            .values()
            .filter(|s| s.host.as_ref().is_some_and(|h| h.fd.0.is_some()))
            .count()
    }

    /// Whether a host socket may wake a waiting thread (one is open and
    /// watched for data, room or a connect's end).
    pub fn host_watched(&self) -> bool {
        // A thread slowed by a cap waits for the bucket to refill.
        self.egress.caps.wake().is_some()
            || self.table.values().any(|s| {
                s.host.as_ref().is_some_and(|h| {
                    h.fd.0.is_some()
                        && (!h.quiet || h.want_out || h.phase == host::Phase::Connecting)
                })
            })
    }

    /// Close every host socket (the sandbox's run ended, or it is being
    /// recycled): its guest sockets read as reset connections.
    pub fn close_host(&mut self) {
        for s in self.table.values_mut() {
            if let Some(h) = &mut s.host {
                h.fd.0 = None;
            }
        }
    }

    /// Wait up to `timeout` for a host socket a guest thread may wait on;
    /// true: one is ready (the caller wakes the waiting threads).
    pub fn wait_host(&mut self, timeout: std::time::Duration) -> bool {
        // A thread slowed by a cap goes on when its bucket has refilled.
        let timeout = match self.egress.caps.wake() {
            Some(w) => timeout.min(w.saturating_duration_since(std::time::Instant::now())),
            None => timeout,
        };
        let ready = host::wait(
            self.table.values_mut().filter_map(|s| s.host.as_mut()),
            timeout,
        );
        self.egress.caps.due(std::time::Instant::now()) || ready
    }

    /// Send on socket `id`'s host socket (to `to`, a datagram) under the
    /// sandbox's caps, counting the bytes. A stream past the bandwidth cap
    /// sends what the cap allows now, or WouldBlock until it refills; a
    /// datagram past a cap is dropped (reported sent), or WouldBlock for
    /// a non-blocking sender (EAGAIN), as on a full buffer.
    pub fn send_host(
        &mut self,
        id: u64,
        data: &[u8],
        to: Option<std::net::SocketAddr>,
        nonblock: bool,
    ) -> Result<usize, Stop> {
        let s = self.table.get_mut(&id).ok_or(Stop::Err(Errno::EBADF))?;
        // What the host socket received is not seen here: each receive
        // (the one that drains it too) is news to edge-triggered epoll.
        s.arrivals += 1;
        let Some(h) = s.host.as_mut() else {
            return Err(Errno::ENOTCONN.into());
        };
        let data = if h.phase == host::Phase::Datagram {
            let dest = to.or(h.remote);
            let dest = dest.unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            if h.fd.0.is_some() && !self.egress.datagram_out(data.len(), dest) {
                return if nonblock {
                    Err(Stop::WouldBlock)
                } else {
                    Ok(data.len())
                };
            }
            data
        } else {
            match self.egress.stream_room(limit::Dir::Out, data.len()) {
                limit::Verdict::Go(n) => &data[..n.min(data.len())],
                limit::Verdict::Wait(_) => return Err(Stop::WouldBlock),
            }
        };
        let n = h.send(data, to)?;
        if h.phase != host::Phase::Datagram {
            self.egress.used(limit::Dir::Out, n);
        }
        self.egress.count_out(n);
        Ok(n)
    }

    /// Receive from socket `id`'s host socket under the sandbox's
    /// bandwidth cap (WouldBlock until it refills), counting the bytes.
    pub fn recv_host(
        &mut self,
        id: u64,
        want: usize,
        peek: bool,
        waitall: bool,
    ) -> Result<(Vec<u8>, usize, Option<std::net::SocketAddr>), Stop> {
        let s = self.table.get_mut(&id).ok_or(Stop::Err(Errno::EBADF))?;
        let Some(h) = s.host.as_mut() else {
            return Err(Errno::ENOTCONN.into());
        };
        let datagram = h.phase == host::Phase::Datagram;
        let verdict = if datagram {
            self.egress.datagram_in_room()
        } else {
            self.egress.stream_room(limit::Dir::In, want)
        };
        let want = match verdict {
            // A datagram, or MSG_WAITALL (which must not return less),
            // comes whole and its excess is paid for after (the next
            // transfer waits longer).
            limit::Verdict::Go(_) if datagram || waitall => want,
            limit::Verdict::Go(n) => n.min(want),
            limit::Verdict::Wait(_) => return Err(Stop::WouldBlock),
        };
        let r = h.recv(want, peek, waitall)?;
        if !peek {
            self.egress.used(limit::Dir::In, r.0.len());
            self.egress.count_in(r.0.len());
        }
        Ok(r)
    }

    /// Put a datagram in socket `id`'s queue as if `from` sent it (the
    /// VMM's DNS answers).
    pub fn inject(&mut self, id: u64, data: Vec<u8>, from: Addr) -> Result<(), Stop> {
        let s = self.get_mut(id)?;
        if s.room_for(data.len()) < data.len() {
            // A full queue drops it, as a socket buffer would.
            return Ok(());
        }
        let cost = data.len() + PACKET_OVERHEAD;
        let cred = s.cred;
        s.push(Packet {
            data,
            rights: Vec::new(),
            cred,
            from: Some(from),
        });
        self.buffered += cost;
        Ok(())
    }

    /// Readiness of socket `id` as poll(2) bits.
    pub fn readiness(&self, id: u64) -> i16 {
        let Some(s) = self.table.get(&id) else {
            return POLLERR | POLLHUP;
        };
        let mut r = 0;
        if s.error != 0 {
            r |= POLLERR;
        }
        if let Some(h) = &s.host {
            // A UDP socket's own queue (DNS answers) counts too.
            if !s.rx.is_empty() {
                r |= POLLIN;
            }
            let mut h = h.readiness();
            // A cap that makes the call wait makes it not ready (else an
            // event loop spins on EAGAIN until the bucket refills).
            let now = std::time::Instant::now();
            if self.egress.caps.empty(limit::Dir::In, now) {
                h &= !POLLIN;
            }
            if self.egress.caps.empty(limit::Dir::Out, now) {
                h &= !POLLOUT;
            }
            return r | h;
        }
        if let State::Listening { pending, .. } = &s.state {
            if !pending.is_empty() {
                r |= POLLIN;
            }
            return r;
        }
        if !s.rx.is_empty() || s.rd_shut || s.hup {
            r |= POLLIN;
        }
        if s.rd_shut || s.hup {
            r |= POLLRDHUP;
        }
        if s.hup || (s.rd_shut && s.wr_shut) {
            r |= POLLHUP;
        }
        let writable = match (s.ty, s.peer()) {
            (_, Some(p)) => self
                .table
                .get(&p)
                .is_some_and(|peer| peer.room_for(1) > 0 || s.ty != Type::Stream),
            // Never connected: Linux reports a closed stream socket as
            // writable and hung up.
            (Type::Dgram, None) => true,
            (_, None) => {
                r |= POLLHUP;
                true
            }
        };
        if writable || s.wr_shut || s.hup {
            r |= POLLOUT;
        }
        r
    }

    /// Connect `client` (stream or seqpacket) to `listener`: a server-side
    /// socket joins the listener's queue.
    pub fn connect_to(&mut self, client: u64, listener: u64) -> Result<(), Stop> {
        if self.room_for_sockets(1).is_err() {
            return Err(Errno::ENOBUFS.into());
        }
        let l = self.get(listener)?;
        let c = self.get(client)?;
        let State::Listening { backlog, pending } = &l.state else {
            return Err(Errno::ECONNREFUSED.into());
        };
        if l.ty != c.ty {
            return Err(Errno::EPROTOTYPE.into());
        }
        if pending.len() > *backlog {
            return Err(Stop::WouldBlock);
        }
        let mut server = Socket::new(l.domain, l.ty, l.cred);
        server.peer_cred = Some(c.cred);
        server.local = l
            .local
            .clone()
            .map(|a| inet::concrete(a, c.remote.as_ref()));
        server.remote = c.local.clone().or(Some(Addr::Unnamed));
        server.opts.stored = l.opts.stored.clone();
        let listener_cred = l.cred;
        let listener_addr = l.local.clone();
        let server = self.add(server);
        if let Some(State::Listening { pending, .. }) =
            self.table.get_mut(&listener).map(|l| &mut l.state)
        {
            pending.push_back(server);
        }
        if let Some(l) = self.table.get_mut(&listener) {
            l.arrivals += 1;
        }
        let c = self.get_mut(client)?;
        c.state = State::Connected(server);
        c.peer_cred = Some(listener_cred);
        if c.domain == Domain::Unix {
            c.remote = listener_addr;
        }
        if let Ok(s) = self.get_mut(server) {
            s.state = State::Connected(client);
        }
        Ok(())
    }

    /// Take the next pending connection of a listener.
    pub fn accept(&mut self, listener: u64) -> Result<u64, Stop> {
        match &mut self.get_mut(listener)?.state {
            State::Listening { pending, .. } => pending.pop_front().ok_or(Stop::WouldBlock),
            _ => Err(Errno::EINVAL.into()),
        }
    }

    /// Queue `data` from `from` to socket `to` (whole, or what fits for a
    /// stream). Returns the bytes queued.
    pub fn deliver(
        &mut self,
        from: u64,
        to: u64,
        data: &[u8],
        rights: Vec<OpenFile>,
        cred: Ucred,
    ) -> Result<usize, Stop> {
        let sender_addr = self.get(from)?.local.clone();
        if !rights.is_empty() && self.in_flight().count() + rights.len() > MAX_IN_FLIGHT {
            return Err(Errno::ETOOMANYREFS.into());
        }
        let sandbox_room = MAX_BUFFERED
            .saturating_sub(self.buffered)
            .saturating_sub(PACKET_OVERHEAD);
        let Some(t) = self.table.get_mut(&to) else {
            return Err(Errno::ECONNREFUSED.into());
        };
        if t.rd_shut && t.ty != Type::Dgram {
            return Err(Stop::Pipe);
        }
        let mut room = t.room_for(data.len());
        if t.ty != Type::Stream && room < data.len() {
            room = 0;
        }
        let room = if t.ty == Type::Stream {
            room.min(sandbox_room)
        } else if data.len() > sandbox_room {
            0
        } else {
            room
        };
        if room == 0 && !data.is_empty() {
            return Err(Stop::WouldBlock);
        }
        let n = room.min(data.len());
        let before = t.cost();
        t.push(Packet {
            data: data[..n].to_vec(),
            rights,
            cred,
            from: sender_addr,
        });
        self.buffered += t.cost() - before;
        Ok(n)
    }

    /// Take up to `want` bytes (streams) or one message from `id`'s queue.
    /// `peek` leaves them there; `waitall` waits for `want` bytes.
    pub fn receive(
        &mut self,
        id: u64,
        want: usize,
        peek: bool,
        waitall: bool,
    ) -> Result<Received, Stop> {
        let s = self.get(id)?;
        let (before, queued) = (s.cost(), s.rx.len());
        // An AF_UNIX reader wakes the writer each time it finishes a
        // write's data; TCP only once the queue had filled up.
        let news = s.domain == Domain::Unix || s.room_for(1) == 0;
        let r = self.take(id, want, peek, waitall);
        let s = self.get_mut(id)?;
        let after = s.cost();
        if s.rx.len() < queued && news {
            s.taken += 1;
        }
        self.buffered = self.buffered.saturating_sub(before.saturating_sub(after));
        r
    }

    /// A count that changes when something happened that edge-triggered
    /// epoll reports on socket `id`: data arrived, or its peer read
    /// (room to write).
    pub fn activity(&self, id: u64) -> u64 {
        let Some(s) = self.table.get(&id) else {
            return 0;
        };
        let peer = s.peer().and_then(|p| self.table.get(&p));
        s.arrivals.wrapping_add(peer.map_or(0, |p| p.taken))
    }

    fn take(&mut self, id: u64, want: usize, peek: bool, waitall: bool) -> Result<Received, Stop> {
        let s = self.get_mut(id)?;
        if s.rx.is_empty() {
            if s.error != 0 {
                let e = std::mem::take(&mut s.error);
                return Err(Errno(e).into());
            }
            if s.rd_shut || s.hup {
                return Ok(Received::default());
            }
            if s.ty.connected() && s.peer().is_none() {
                // Never connected: Linux says EINVAL for AF_UNIX, ENOTCONN
                // for TCP.
                return Err(if s.domain == Domain::Unix {
                    Errno::EINVAL
                } else {
                    Errno::ENOTCONN
                }
                .into());
            }
            return Err(Stop::WouldBlock);
        }
        let passcred = s.opts.passcred;
        if s.ty != Type::Stream {
            let p = if peek {
                s.rx.front().cloned()
            } else {
                s.rx.pop_front()
            };
            let p = p.ok_or(Stop::WouldBlock)?;
            if !peek {
                s.rx_bytes -= p.data.len();
            }
            let full_len = p.data.len();
            let mut data = p.data;
            data.truncate(want);
            return Ok(Received {
                data,
                full_len,
                rights: if peek { Vec::new() } else { p.rights },
                cred: passcred.then_some(p.cred),
                from: p.from,
            });
        }
        let avail = s.rx_bytes - s.rx_off;
        if waitall && avail < want && !(s.rd_shut || s.hup) && avail < s.opts.rcvbuf as usize {
            return Err(Stop::WouldBlock);
        }
        let mut out = Received::default();
        let mut off = s.rx_off;
        let mut idx = 0;
        while out.data.len() < want && idx < s.rx.len() {
            let p = &s.rx[idx];
            // Descriptors and credentials travel with the first byte of
            // their write: a read does not run past a write carrying
            // descriptors, nor into one after it has read bytes.
            if !out.data.is_empty() && (!p.rights.is_empty() || out.cred != Some(p.cred)) {
                break;
            }
            if out.data.is_empty() {
                out.cred = Some(p.cred);
            }
            let n = (p.data.len() - off).min(want - out.data.len());
            out.data.extend_from_slice(&p.data[off..off + n]);
            if off == 0 && !peek && !p.rights.is_empty() {
                out.rights = std::mem::take(&mut s.rx[idx].rights);
            }
            let carried = !out.rights.is_empty();
            off += n;
            let p = &s.rx[idx];
            if off < p.data.len() {
                break;
            }
            off = 0;
            idx += 1;
            if carried {
                break;
            }
        }
        if !passcred {
            out.cred = None;
        }
        out.full_len = out.data.len();
        if !peek {
            for _ in 0..idx {
                if let Some(p) = s.rx.pop_front() {
                    s.rx_bytes -= p.data.len();
                }
            }
            s.rx_off = off;
            if s.rx.is_empty() {
                s.rx_off = 0;
            }
        }
        Ok(out)
    }

    /// shutdown(2): `rd` / `wr` for this side; an AF_UNIX peer sees the
    /// mirror image (our SHUT_RD stops its writes).
    pub fn shutdown(&mut self, id: u64, rd: bool, wr: bool) -> Result<(), Errno> {
        let s = self.get_mut(id)?;
        s.rd_shut |= rd;
        s.wr_shut |= wr;
        let (peer, unix) = (s.peer(), s.domain == Domain::Unix);
        if let Some(p) = peer.and_then(|p| self.table.get_mut(&p)) {
            if wr {
                p.rd_shut = true;
            }
            if rd && unix {
                p.wr_shut = true;
            }
        }
        Ok(())
    }

    /// The descriptions in flight (SCM_RIGHTS not yet received).
    pub fn in_flight(&self) -> impl Iterator<Item = &OpenFile> {
        self.table
            .values()
            .flat_map(|s| s.rx.iter().flat_map(|p| p.rights.iter()))
    }

    /// Drop the sockets no descriptor refers to (`roots`: those the
    /// descriptor tables hold). Pending connections of a live listener
    /// and sockets in flight stay. A peer of a dropped socket sees end of
    /// file, or ECONNRESET if data it had sent was never read.
    pub fn gc(&mut self, roots: &BTreeSet<u64>) {
        let mut live: BTreeSet<u64> = roots.clone();
        let mut todo: Vec<u64> = live.iter().copied().collect();
        while let Some(id) = todo.pop() {
            let Some(s) = self.table.get(&id) else {
                continue;
            };
            let mut more: Vec<u64> =
                s.rx.iter()
                    .flat_map(|p| p.rights.iter())
                    .filter_map(|f| match f.kind {
                        FileKind::Socket(i) => Some(i),
                        _ => None,
                    })
                    .collect();
            if let State::Listening { pending, .. } = &s.state {
                more.extend(pending.iter().copied());
            }
            for m in more {
                if live.insert(m) {
                    todo.push(m);
                }
            }
        }
        let dead: BTreeSet<u64> = self
            .table
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        if dead.is_empty() {
            return;
        }
        // Connections never accepted (Linux's embryos) reset their clients.
        let embryos: BTreeSet<u64> = self
            .table
            .values()
            .filter_map(|s| match &s.state {
                State::Listening { pending, .. } => Some(pending.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut resets = BTreeSet::new();
        for id in &dead {
            let Some(s) = self.table.remove(id) else {
                continue;
            };
            if !s.rx.is_empty() || embryos.contains(id) {
                resets.insert(*id);
            }
            self.buffered = self.buffered.saturating_sub(s.cost());
        }
        // Connected streams hear of it now; a datagram socket finds its
        // default peer gone at its next send (ECONNREFUSED).
        for p in self.table.values_mut() {
            match p.peer() {
                Some(gone) if p.ty != Type::Dgram && dead.contains(&gone) => {
                    p.hup = true;
                    if resets.contains(&gone) {
                        p.error = Errno::ECONNRESET.0;
                    }
                }
                _ => {}
            }
        }
        self.abstract_names.retain(|_, id| live.contains(id));
        self.paths.retain(|_, id| live.contains(id));
        self.ports.retain(|_, id| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cred() -> Ucred {
        Ucred {
            pid: 7,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn a_stream_pair_moves_bytes_and_the_close_of_one_end_is_eof_or_reset() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Stream, cred());
        assert_eq!(t.deliver(a, b, b"hello", Vec::new(), cred()), Ok(5));
        assert_eq!(t.deliver(a, b, b" world", Vec::new(), cred()), Ok(6));
        let r = t.receive(b, 7, false, false).unwrap();
        assert_eq!(r.data, b"hello w");
        assert_eq!(t.readiness(b) & POLLIN, POLLIN);
        // b closes with unread bytes: a hears ECONNRESET once, then EOF.
        t.gc(&[a].into_iter().collect());
        assert_eq!(
            t.receive(a, 1, false, false).unwrap_err(),
            Stop::Err(Errno::ECONNRESET)
        );
        assert!(t.receive(a, 1, false, false).unwrap().data.is_empty());
        assert_eq!(t.readiness(a) & POLLHUP, POLLHUP);
    }

    #[test]
    fn a_full_stream_takes_what_fits_then_blocks() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Stream, cred());
        let big = vec![1u8; DEFAULT_BUF as usize + 10];
        assert_eq!(
            t.deliver(a, b, &big, Vec::new(), cred()),
            Ok(DEFAULT_BUF as usize - PACKET_OVERHEAD)
        );
        assert_eq!(t.buffered, DEFAULT_BUF as usize);
        assert_eq!(
            t.deliver(a, b, b"x", Vec::new(), cred()),
            Err(Stop::WouldBlock)
        );
        assert_eq!(t.readiness(a) & POLLOUT, 0);
        assert_eq!(t.receive(b, 4096, false, false).unwrap().data.len(), 4096);
        assert_eq!(t.readiness(a) & POLLOUT, POLLOUT);
        assert_eq!(t.buffered, DEFAULT_BUF as usize - 4096);
        t.gc(&[a].into_iter().collect());
        assert_eq!(t.buffered, 0);
    }

    #[test]
    fn tiny_messages_fill_a_queue_by_their_overhead() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Dgram, cred());
        let mut n = 0;
        while t.deliver(a, b, b"x", Vec::new(), cred()).is_ok() {
            n += 1;
        }
        assert_eq!(n, DEFAULT_BUF as usize / (PACKET_OVERHEAD + 1));
    }

    #[test]
    fn messages_keep_their_boundaries_and_are_cut_to_the_buffer() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::SeqPacket, cred());
        t.deliver(a, b, b"one", Vec::new(), cred()).unwrap();
        t.deliver(a, b, b"three", Vec::new(), cred()).unwrap();
        let r = t.receive(b, 100, false, false).unwrap();
        assert_eq!(r.data, b"one");
        let r = t.receive(b, 2, false, false).unwrap();
        assert_eq!((r.data.as_slice(), r.full_len), (&b"th"[..], 5));
        assert_eq!(t.receive(b, 2, false, false).unwrap_err(), Stop::WouldBlock);
    }

    #[test]
    fn a_listener_closed_with_pending_connections_resets_its_clients() {
        let mut t = Sockets::default();
        let l = t.add(Socket::new(Domain::Unix, Type::Stream, cred()));
        t.get_mut(l).unwrap().state = State::Listening {
            backlog: 0,
            pending: VecDeque::new(),
        };
        let c = t.add(Socket::new(Domain::Unix, Type::Stream, cred()));
        let c2 = t.add(Socket::new(Domain::Unix, Type::Stream, cred()));
        assert_eq!(t.connect_to(c, l), Ok(()));
        // Backlog 0 holds one pending connection, as Linux.
        assert_eq!(t.connect_to(c2, l), Err(Stop::WouldBlock));
        assert_eq!(t.readiness(l) & POLLIN, POLLIN);
        // The pending server side lives while the listener does.
        t.gc(&[l, c, c2].into_iter().collect());
        assert_eq!(t.table.len(), 4);
        t.gc(&[c, c2].into_iter().collect());
        assert!(t.get(c).unwrap().hup);
        assert_eq!(
            t.receive(c, 1, false, false).unwrap_err(),
            Stop::Err(Errno::ECONNRESET)
        );
        assert_eq!(t.table.len(), 2);
    }

    #[test]
    fn a_read_stops_at_a_write_carrying_descriptors() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Stream, cred());
        let (x, _) = t.pair(Domain::Unix, Type::Stream, cred());
        let f = OpenFile::new(FileKind::Socket(x), "socket", 2);
        t.deliver(a, b, b"ab", Vec::new(), cred()).unwrap();
        t.deliver(a, b, b"cd", vec![f], cred()).unwrap();
        t.deliver(a, b, b"ef", Vec::new(), cred()).unwrap();
        // Only b is held by a descriptor; x is in flight inside b.
        t.gc(&[b].into_iter().collect());
        assert!(t.get(x).is_ok());
        let r = t.receive(b, 10, false, false).unwrap();
        assert_eq!((r.data.as_slice(), r.rights.len()), (&b"ab"[..], 0));
        let r = t.receive(b, 10, false, false).unwrap();
        assert_eq!((r.data.as_slice(), r.rights.len()), (&b"cd"[..], 1));
        let r = t.receive(b, 10, false, false).unwrap();
        assert_eq!(r.data, b"ef");
    }

    #[test]
    fn sockets_survive_a_snapshot_with_their_queues_and_descriptors_in_flight() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Stream, cred());
        let f = OpenFile::new(FileKind::Pipe { id: 3, write: true }, "pipe:[3]", 1);
        t.deliver(a, b, b"kept", vec![f], cred()).unwrap();
        t.abstract_names.insert(b"name".to_vec(), a);
        let bytes = bincode::serialize(&t).unwrap();
        let mut u: Sockets = bincode::deserialize(&bytes).unwrap();
        assert_eq!(u.in_flight().count(), 1);
        assert_eq!(u.abstract_names.get(&b"name"[..]), Some(&a));
        let r = u.receive(b, 10, false, false).unwrap();
        assert_eq!((r.data.as_slice(), r.rights.len()), (&b"kept"[..], 1));
        assert_eq!(u.buffered, 0);
    }

    #[test]
    fn shutdown_is_mirrored_on_an_af_unix_peer() {
        let mut t = Sockets::default();
        let (a, b) = t.pair(Domain::Unix, Type::Stream, cred());
        t.shutdown(a, true, false).unwrap();
        assert_eq!(t.deliver(b, a, b"x", Vec::new(), cred()), Err(Stop::Pipe));
        t.shutdown(a, false, true).unwrap();
        assert!(t.receive(b, 1, false, false).unwrap().data.is_empty());
        assert_eq!(t.readiness(a) & POLLHUP, POLLHUP);
    }

    #[test]
    fn only_loopback_addresses_route() {
        assert_eq!(
            inet::route(&Addr::V4([127, 3, 2, 1], 80)),
            inet::Route::Loopback
        );
        assert_eq!(
            inet::route(&Addr::V6(inet::loopback6(), 80)),
            inet::Route::Loopback
        );
        assert_eq!(
            inet::route(&Addr::V4([8, 8, 8, 8], 53)),
            inet::Route::Refused(Errno::ENETUNREACH)
        );
        let any4 = Addr::V4([0; 4], 80);
        let lo4 = Addr::V4([127, 0, 0, 1], 80);
        let lo6 = Addr::V6(inet::loopback6(), 80);
        assert!(inet::accepts(&any4, &lo4) && !inet::accepts(&any4, &lo6));
        assert!(inet::accepts(&Addr::V6([0; 16], 80), &lo4));
        assert!(!inet::accepts(&lo4, &Addr::V4([127, 0, 1, 1], 80)));
        assert!(inet::accepts(&lo4, &Addr::V4([0; 4], 80)));
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            inet::route(&Addr::V6(mapped, 1)),
            inet::Route::Refused(Errno::ENETUNREACH)
        );
    }
}
