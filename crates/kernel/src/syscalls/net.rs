//! Socket system calls: AF_UNIX, and AF_INET/AF_INET6 on the sandbox's
//! own loopback. The socket objects are in `crate::net`; this file decodes
//! the guest's arguments (every pointer through the checked `mm`
//! accessors) and turns the objects' answers into Linux's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::{Args, Ctx, SysError, SysResult};
use crate::fd::{FileKind, OpenFile};
use crate::net::{
    self, dns, host, inet, unix, Addr, Domain, Received, Socket, State, Stop, Type, Ucred,
};
use crate::task::Wait;
use crate::vfs::Node;

const SOCK_NONBLOCK: u64 = O_NONBLOCK;
const SOCK_CLOEXEC: u64 = O_CLOEXEC;

const MSG_OOB: u64 = 0x1;
const MSG_PEEK: u64 = 0x2;
const MSG_CTRUNC: i32 = 0x8;
const MSG_TRUNC: u64 = 0x20;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_WAITALL: u64 = 0x100;
const MSG_ERRQUEUE: u64 = 0x2000;
const MSG_NOSIGNAL: u64 = 0x4000;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;

const SOL_SOCKET: i32 = 1;
const IPPROTO_IP: i32 = 0;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_IPV6: i32 = 41;
const IPV6_V6ONLY: i32 = 26;
const SCM_RIGHTS: i32 = 1;
const SCM_CREDENTIALS: i32 = 2;
/// Most descriptors one SCM_RIGHTS message carries (SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;
/// Largest control buffer sendmsg takes (net.core.optmem_max).
const OPTMEM_MAX: u64 = 20480;
/// sizeof(struct sockaddr_storage).
const SOCKADDR_MAX: u64 = 128;
const UIO_MAXIOV: u64 = 1024;
/// Most bytes one call moves (as the file calls).
const MAX_IO: usize = 4 << 20;

// ---- helpers ---------------------------------------------------------------

fn cred(ctx: &Ctx) -> Ucred {
    Ucred {
        pid: ctx.k.proc.pid,
        uid: 0,
        gid: 0,
    }
}

/// The socket behind `fd`, and whether its description is non-blocking.
fn sock_of(ctx: &Ctx, fd: i32) -> Result<(u64, bool), Errno> {
    let f = ctx.k.fds.get(fd)?;
    match f.kind {
        FileKind::Socket(id) => Ok((id, f.flags & O_NONBLOCK != 0)),
        _ => Err(Errno::ENOTSOCK),
    }
}

/// A descriptor for socket `id` (dropped again if none is free).
fn install(ctx: &mut Ctx, id: u64, flags: u64) -> Result<i32, Errno> {
    let f = OpenFile::new(
        FileKind::Socket(id),
        format!("socket:[{id}]"),
        O_RDWR | (flags & SOCK_NONBLOCK),
    );
    match ctx.k.fds.open(f, flags & SOCK_CLOEXEC != 0, 0) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            ctx.k.gc_pipes();
            Err(e)
        }
    }
}

/// Block the call (or EAGAIN), honouring SO_RCVTIMEO / SO_SNDTIMEO.
fn would_block(
    ctx: &mut Ctx,
    id: u64,
    nonblock: bool,
    send: bool,
    reason: &'static str,
) -> SysError {
    if nonblock {
        return Errno::EAGAIN.into();
    }
    let timeo = ctx
        .k
        .sockets
        .get(id)
        .map(|s| {
            if send {
                s.opts.sndtimeo
            } else {
                s.opts.rcvtimeo
            }
        })
        .unwrap_or(0);
    if timeo == 0 {
        return ctx.k.wait(Wait::Retry {
            reason,
            deadline: None,
        });
    }
    if ctx.k.take_timed_out() {
        return Errno::EAGAIN.into();
    }
    let deadline = ctx.k.syscall_deadline(Duration::from_nanos(timeo));
    ctx.k.wait(Wait::Retry {
        reason,
        deadline: Some(deadline),
    })
}

/// Read a socket address argument (move_addr_to_kernel).
fn read_addr(ctx: &mut Ctx, va: u64, len: u64) -> Result<Vec<u8>, Errno> {
    let len = len as u32 as i32;
    if len < 0 || len as u64 > SOCKADDR_MAX {
        return Err(Errno::EINVAL);
    }
    ctx.k.mm.read_vec(ctx.mem, va, len as usize)
}

/// Write an address to `va` with its length at `len_va` (value-result,
/// cut to the caller's buffer, the full length reported).
fn write_addr(ctx: &mut Ctx, va: u64, len_va: u64, addr: &[u8]) -> Result<(), Errno> {
    if va == 0 {
        return Ok(());
    }
    let len: i32 = ctx.k.mm.read_obj(ctx.mem, len_va)?;
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let n = (len as usize).min(addr.len());
    ctx.k.mm.write(ctx.mem, va, &addr[..n])?;
    ctx.k.mm.write_obj(ctx.mem, len_va, &(addr.len() as i32))
}

fn encode(domain: Domain, a: &Addr) -> Vec<u8> {
    match domain {
        Domain::Unix => unix::encode(a),
        _ => inet::encode(domain, a),
    }
}

/// The socket an AF_UNIX name refers to: a socket node in the sandbox's
/// file system (resolved like any path) or an abstract name.
fn find_unix(ctx: &Ctx, name: &unix::Name) -> Result<u64, Errno> {
    match name {
        unix::Name::Abstract(n) => ctx
            .k
            .sockets
            .abstract_names
            .get(n)
            .copied()
            .ok_or(Errno::ECONNREFUSED),
        unix::Name::Path(p) => {
            let l = super::fs::resolve_at(ctx, AT_FDCWD, p, true)?;
            match l.node {
                Node::TmpFile(ino) => ctx
                    .k
                    .sockets
                    .paths
                    .get(&ino)
                    .copied()
                    .ok_or(Errno::ECONNREFUSED),
                _ => Err(Errno::ECONNREFUSED),
            }
        }
        unix::Name::Auto | unix::Name::Unspec => Err(Errno::EINVAL),
    }
}

/// A loopback socket's port, bound to an ephemeral one if it has none.
fn autobind_inet(ctx: &mut Ctx, id: u64, dest: Option<&Addr>) -> Result<(), Errno> {
    let s = ctx.k.sockets.get(id)?;
    if s.local.is_some() {
        return Ok(());
    }
    let (domain, udp) = (s.domain, s.ty == Type::Dgram);
    let port = ctx.k.sockets.ephemeral_port(udp)?;
    let local = match dest {
        Some(d) => inet::client_addr(domain, d, port),
        None if domain == Domain::Inet6 => Addr::V6([0; 16], port),
        None => Addr::V4([0; 4], port),
    };
    ctx.k.sockets.ports.insert((udp, port), id);
    ctx.k.sockets.get_mut(id)?.local = Some(local);
    Ok(())
}

/// A connect through the loopback gives a socket bound to a wildcard the
/// source address of the route (as Linux's `ip4_datagram_connect` and
/// `tcp_v4_connect` do): getsockname shows it, and glibc's getaddrinfo
/// relies on an AF_INET6 socket connected to an IPv4 address showing a
/// v4-mapped one.
fn source_address(ctx: &mut Ctx, id: u64, dest: &Addr) -> Result<(), Errno> {
    let s = ctx.k.sockets.get_mut(id)?;
    if let Some(local) = &s.local {
        if inet::is_wildcard(local) {
            let port = local.port().unwrap_or(0);
            s.local = Some(inet::client_addr(s.domain, dest, port));
        }
    }
    Ok(())
}

/// connect(AF_UNSPEC) on a UDP socket: no default destination, and the
/// source address and port return to what bind(2) chose (Linux's
/// `__udp_disconnect`), so the next connect picks them again.
fn udp_disconnect(ctx: &mut Ctx, id: u64) -> Result<(), Errno> {
    let s = ctx.k.sockets.get_mut(id)?;
    s.remote = None;
    let Some(local) = s.local.clone() else {
        return Ok(());
    };
    if !s.port_locked {
        s.local = None;
        if let Some(port) = local.port() {
            if ctx.k.sockets.ports.get(&(true, port)) == Some(&id) {
                ctx.k.sockets.ports.remove(&(true, port));
            }
        }
    } else if !s.addr_locked {
        let port = local.port().unwrap_or(0);
        s.local = Some(match s.domain {
            Domain::Inet6 => Addr::V6([0; 16], port),
            _ => Addr::V4([0; 4], port),
        });
    }
    Ok(())
}

/// The loopback socket that takes traffic to `dest` (TCP or UDP): the
/// port's first holder, else another socket bound to it explicitly (an
/// AF_INET and an IPV6_V6ONLY AF_INET6 socket share a port, as on Linux).
fn listener_for(ctx: &Ctx, udp: bool, dest: &Addr) -> Option<u64> {
    let port = dest.port().filter(|&p| p != 0)?;
    let takes = |s: &Socket| {
        s.local.as_ref().is_some_and(|l| {
            inet::accepts(l, dest) && families(l, v6only(s)) & families(dest, false) != 0
        })
    };
    let &first = ctx.k.sockets.ports.get(&(udp, port))?;
    if ctx.k.sockets.get(first).is_ok_and(takes) {
        return Some(first);
    }
    ctx.k
        .sockets
        .table
        .iter()
        .find(|(_, s)| {
            s.port_locked
                && (s.ty == Type::Dgram) == udp
                && s.local.as_ref().and_then(Addr::port) == Some(port)
                && takes(s)
        })
        .map(|(&id, _)| id)
}

const FAMILY_V4: u8 = 1;
const FAMILY_V6: u8 = 2;

/// The address families a loopback address takes traffic of: an AF_INET6
/// one both (Linux's default bindv6only=0), unless it is a v4-mapped
/// address or the socket is IPV6_V6ONLY.
fn families(addr: &Addr, v6only: bool) -> u8 {
    match addr {
        Addr::V4(..) => FAMILY_V4,
        Addr::V6(ip, _) if inet::v4_of_mapped(ip).is_some() => FAMILY_V4,
        Addr::V6(..) if v6only => FAMILY_V6,
        Addr::V6(..) => FAMILY_V4 | FAMILY_V6,
        _ => 0,
    }
}

/// Whether IPV6_V6ONLY is set on `s`.
fn v6only(s: &Socket) -> bool {
    s.domain == Domain::Inet6
        && s.opts
            .stored
            .get(&(IPPROTO_IPV6, IPV6_V6ONLY))
            .is_some_and(|v| v.iter().any(|&b| b != 0))
}

/// Whether binding `port` for families `fams` conflicts with a socket
/// that holds it: the port's first holder, or one bound to it explicitly.
fn port_taken(ctx: &Ctx, id: u64, udp: bool, port: u16, fams: u8) -> bool {
    let conflicts = |oid: u64, o: &Socket| {
        oid != id
            && (o.ty == Type::Dgram) == udp
            && o.local
                .as_ref()
                .is_some_and(|l| l.port() == Some(port) && families(l, v6only(o)) & fams != 0)
    };
    if let Some(&first) = ctx.k.sockets.ports.get(&(udp, port)) {
        match ctx.k.sockets.get(first) {
            Ok(o) if conflicts(first, o) => return true,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    ctx.k
        .sockets
        .table
        .iter()
        .any(|(&oid, o)| o.port_locked && conflicts(oid, o))
}

// ---- socket, socketpair ----------------------------------------------------

fn kind(ctx: &mut Ctx, domain: i32, ty: u64, proto: i32) -> Result<(Domain, Type), Errno> {
    let d = match domain as u16 {
        net::AF_UNIX => Domain::Unix,
        net::AF_INET => Domain::Inet,
        net::AF_INET6 => Domain::Inet6,
        // Families Linux has (below AF_MAX) are counted as unimplemented;
        // other numbers are no family at all.
        _ if (0..46).contains(&domain) => {
            ctx.k.sockets.refuse(format!("socket family {domain}"));
            return Err(Errno::EAFNOSUPPORT);
        }
        _ => return Err(Errno::EAFNOSUPPORT),
    };
    if domain as u32 > u16::MAX as u32 {
        return Err(Errno::EAFNOSUPPORT);
    }
    let t = match (d, ty, proto) {
        (Domain::Unix, _, p) if p != 0 && p != 1 => return Err(Errno::EPROTONOSUPPORT),
        (Domain::Unix, 1, _) => Type::Stream,
        // SOCK_RAW on AF_UNIX is a datagram socket, as Linux has it.
        (Domain::Unix, 2 | 3, _) => Type::Dgram,
        (Domain::Unix, 5, _) => Type::SeqPacket,
        (_, 1, 0 | 6) => Type::Stream,
        (_, 2, 0 | 17) => Type::Dgram,
        (Domain::Inet | Domain::Inet6, 1 | 2, _) => return Err(Errno::EPROTONOSUPPORT),
        _ => {
            ctx.k.sockets.refuse(format!("socket type {ty}"));
            return Err(Errno::ESOCKTNOSUPPORT);
        }
    };
    Ok((d, t))
}

fn split_type(ty: u64) -> Result<(u64, u64), Errno> {
    let ty = ty as u32 as u64;
    let flags = ty & (SOCK_NONBLOCK | SOCK_CLOEXEC);
    let base = ty & !flags;
    if base & !0xf != 0 || base == 0 || base > 10 {
        return Err(Errno::EINVAL);
    }
    Ok((base, flags))
}

pub fn socket(ctx: &mut Ctx, a: Args) -> SysResult {
    let (base, flags) = split_type(a.u64(1))?;
    let (d, t) = kind(ctx, a.int(0), base, a.int(2))?;
    let c = cred(ctx);
    ctx.k.sockets.room_for_sockets(1)?;
    let id = ctx.k.sockets.add(Socket::new(d, t, c));
    Ok(install(ctx, id, flags)? as u64)
}

pub fn socketpair(ctx: &mut Ctx, a: Args) -> SysResult {
    let (base, flags) = split_type(a.u64(1))?;
    let (d, t) = kind(ctx, a.int(0), base, a.int(2))?;
    if d != Domain::Unix {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let c = cred(ctx);
    ctx.k.sockets.room_for_sockets(2)?;
    let (x, y) = ctx.k.sockets.pair(d, t, c);
    let fx = install(ctx, x, flags)?;
    let fy = match install(ctx, y, flags) {
        Ok(f) => f,
        Err(e) => {
            super::fs::close_fd(ctx, fx)?;
            return Err(e.into());
        }
    };
    if let Err(e) = ctx.k.mm.write_obj(ctx.mem, a.ptr(3), &[fx, fy]) {
        super::fs::close_fd(ctx, fx)?;
        super::fs::close_fd(ctx, fy)?;
        return Err(e.into());
    }
    Ok(0)
}

// ---- bind, listen, accept, connect -------------------------------------------

pub fn bind(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let raw = read_addr(ctx, a.ptr(1), a.u64(2))?;
    let s = ctx.k.sockets.get(id)?;
    let domain = s.domain;
    if domain == Domain::Unix {
        if matches!(s.local, Some(Addr::Path(_) | Addr::Abstract(_))) {
            return Err(Errno::EINVAL.into());
        }
        let addr = match unix::decode(&raw)? {
            unix::Name::Unspec => return Err(Errno::EINVAL.into()),
            unix::Name::Auto => {
                let n = ctx.k.sockets.autobind_name();
                ctx.k.sockets.abstract_names.insert(n.clone(), id);
                Addr::Abstract(n)
            }
            unix::Name::Abstract(n) => {
                if ctx.k.sockets.abstract_names.contains_key(&n) {
                    return Err(Errno::EADDRINUSE.into());
                }
                ctx.k.sockets.abstract_names.insert(n.clone(), id);
                Addr::Abstract(n)
            }
            unix::Name::Path(p) => {
                let ino = bind_path(ctx, &p)?;
                ctx.k.sockets.paths.insert(ino, id);
                ctx.k.sockets.get_mut(id)?.path_ino = Some(ino);
                Addr::Path(p)
            }
        };
        ctx.k.sockets.get_mut(id)?.local = Some(addr);
        return Ok(0);
    }
    if s.local.is_some() {
        return Err(Errno::EINVAL.into());
    }
    let udp = s.ty == Type::Dgram;
    let Some(addr) = inet::decode(domain, &raw)? else {
        return Err(Errno::EAFNOSUPPORT.into());
    };
    if !inet::is_local(&addr) {
        return Err(Errno::EADDRNOTAVAIL.into());
    }
    let port_locked = !matches!(addr.port(), Some(0) | None);
    let addr_locked = !inet::is_wildcard(&addr);
    let fams = families(&addr, v6only(s));
    let port = match addr.port() {
        Some(0) | None => ctx.k.sockets.ephemeral_port(udp)?,
        Some(p) if port_taken(ctx, id, udp, p, fams) => return Err(Errno::EADDRINUSE.into()),
        Some(p) => p,
    };
    let addr = match addr {
        Addr::V4(ip, _) => Addr::V4(ip, port),
        Addr::V6(ip, _) => Addr::V6(ip, port),
        other => other,
    };
    // The port's first holder; an IPV6_V6ONLY socket beside an AF_INET
    // one (or the reverse) is found by `listener_for`'s scan.
    ctx.k.sockets.ports.entry((udp, port)).or_insert(id);
    let s = ctx.k.sockets.get_mut(id)?;
    s.local = Some(addr);
    s.addr_locked = addr_locked;
    s.port_locked = port_locked;
    Ok(0)
}

/// Create the socket node of an AF_UNIX bind in the overlay.
fn bind_path(ctx: &mut Ctx, p: &str) -> Result<u64, Errno> {
    match super::fs::resolve_at(ctx, AT_FDCWD, p, false) {
        Ok(_) => return Err(Errno::EADDRINUSE),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let (parent, name) = super::fs::resolve_parent_at(ctx, AT_FDCWD, p)?;
    if name == "." || name == ".." || p.ends_with('/') {
        return Err(Errno::EADDRINUSE);
    }
    let mode = 0o777 & !ctx.k.proc.umask;
    let (_, ino) = ctx.k.vfs.create_file(&parent, &name, mode, super::now())?;
    if let Some(i) = ctx.k.vfs.tmp.inode_mut(ino) {
        i.mode = S_IFSOCK | mode;
    }
    Ok(ino)
}

pub fn listen(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let s = ctx.k.sockets.get(id)?;
    if s.ty == Type::Dgram {
        return Err(Errno::EOPNOTSUPP.into());
    }
    if matches!(s.state, State::Connected(_)) || s.host.is_some() {
        return Err(Errno::EINVAL.into());
    }
    if s.domain == Domain::Unix && !matches!(s.local, Some(Addr::Path(_) | Addr::Abstract(_))) {
        return Err(Errno::EINVAL.into());
    }
    if s.domain != Domain::Unix {
        autobind_inet(ctx, id, None)?;
    }
    // A negative or huge backlog is capped at somaxconn, as Linux does.
    let backlog = (a.uint(1)).min(net::SOMAXCONN) as usize;
    let s = ctx.k.sockets.get_mut(id)?;
    match &mut s.state {
        State::Listening { backlog: b, .. } => *b = backlog,
        st => {
            *st = State::Listening {
                backlog,
                pending: Default::default(),
            }
        }
    }
    Ok(0)
}

pub fn accept(ctx: &mut Ctx, a: Args) -> SysResult {
    accept4(ctx, Args([a.u64(0), a.u64(1), a.u64(2), 0, 0, 0]))
}

pub fn accept4(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(3);
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let s = ctx.k.sockets.get(id)?;
    if s.ty == Type::Dgram {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let domain = s.domain;
    let new = match ctx.k.sockets.accept(id) {
        Ok(n) => n,
        Err(Stop::WouldBlock) => return Err(would_block(ctx, id, nonblock, false, "accept")),
        Err(Stop::Err(e)) => return Err(e.into()),
        Err(Stop::Pipe) => return Err(Errno::EINVAL.into()),
    };
    let fd = match install(ctx, new, flags) {
        Ok(fd) => fd,
        Err(e) => {
            // No descriptor: the connection stays queued.
            if let Ok(State::Listening { pending, .. }) =
                ctx.k.sockets.get_mut(id).map(|s| &mut s.state)
            {
                pending.push_front(new);
            }
            return Err(e.into());
        }
    };
    let peer = ctx
        .k
        .sockets
        .get(new)
        .ok()
        .and_then(|s| s.remote.clone())
        .unwrap_or(Addr::Unnamed);
    if let Err(e) = write_addr(ctx, a.ptr(1), a.ptr(2), &encode(domain, &peer)) {
        super::fs::close_fd(ctx, fd)?;
        return Err(e.into());
    }
    Ok(fd as u64)
}

pub fn connect(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let raw = read_addr(ctx, a.ptr(1), a.u64(2))?;
    let s = ctx.k.sockets.get(id)?;
    let (domain, ty) = (s.domain, s.ty);
    let target = if domain == Domain::Unix {
        let name = unix::decode(&raw)?;
        if ty == Type::Dgram && name == unix::Name::Unspec {
            let s = ctx.k.sockets.get_mut(id)?;
            s.state = State::Idle;
            s.remote = None;
            return Ok(0);
        }
        if ty.connected() {
            match s.state {
                State::Connected(_) => return Err(Errno::EISCONN.into()),
                State::Listening { .. } => return Err(Errno::EINVAL.into()),
                State::Idle => {}
            }
        }
        let t = find_unix(ctx, &name)?;
        if ty == Type::Dgram {
            let peer = ctx.k.sockets.get(t)?;
            if peer.ty != Type::Dgram {
                return Err(Errno::EPROTOTYPE.into());
            }
            let remote = peer.local.clone();
            let s = ctx.k.sockets.get_mut(id)?;
            s.state = State::Connected(t);
            s.remote = remote;
            return Ok(0);
        }
        t
    } else {
        let Some(dest) = inet::decode(domain, &raw)? else {
            // AF_UNSPEC: dissolve a datagram socket's association.
            if ty == Type::Dgram {
                udp_disconnect(ctx, id)?;
            }
            return Ok(0);
        };
        if ty.connected() && s.host.is_some() {
            return connect_again(ctx, id, nonblock);
        }
        if ty.connected() && !matches!(s.state, State::Idle) {
            return Err(Errno::EISCONN.into());
        }
        if let inet::Route::Refused(_) = inet::route(&dest) {
            // Outside the sandbox: the policy decides.
            return connect_host(ctx, id, dest, nonblock);
        }
        autobind_inet(ctx, id, Some(&dest))?;
        if ty == Type::Dgram {
            source_address(ctx, id, &dest)?;
            ctx.k.sockets.get_mut(id)?.remote = Some(dest);
            return Ok(0);
        }
        let t = match listener_for(ctx, false, &dest) {
            Some(t) => t,
            // No socket of the sandbox listens there: a loopback port the
            // operator opened to the host, or refused as a closed port.
            None if ctx.k.sockets.egress.enabled() => {
                return connect_host(ctx, id, dest, nonblock);
            }
            None => {
                ctx.k.sockets.get_mut(id)?.remote = None;
                return Err(Errno::ECONNREFUSED.into());
            }
        };
        source_address(ctx, id, &dest)?;
        ctx.k.sockets.get_mut(id)?.remote = Some(dest);
        t
    };
    match ctx.k.sockets.connect_to(id, target) {
        Ok(()) => {}
        Err(Stop::WouldBlock) if nonblock => return Err(Errno::EAGAIN.into()),
        Err(Stop::WouldBlock) => return Err(would_block(ctx, id, false, true, "connect")),
        Err(Stop::Err(e)) => {
            if domain != Domain::Unix {
                ctx.k.sockets.get_mut(id)?.remote = None;
            }
            return Err(e.into());
        }
        Err(Stop::Pipe) => return Err(Errno::ECONNREFUSED.into()),
    }
    if nonblock && domain != Domain::Unix {
        // TCP completes a non-blocking connect later, even on a loopback:
        // the socket is writable at once and SO_ERROR says 0.
        return Err(Errno::EINPROGRESS.into());
    }
    Ok(0)
}

// ---- egress through host sockets ------------------------------------------------

/// Connect socket `id` outside the sandbox: the policy decides before a
/// host socket exists; then one is opened and connected (non-blocking).
fn connect_host(ctx: &mut Ctx, id: u64, dest: Addr, nonblock: bool) -> SysResult {
    let sa = host::sockaddr(&dest).ok_or(Errno::EAFNOSUPPORT)?;
    let stream = ctx.k.sockets.get(id)?.ty == Type::Stream;
    let open = ctx.k.sockets.host_open();
    ctx.k.sockets.egress.decide(sa.ip(), sa.port(), open)?;
    let mut conn = host::open(sa, stream)?;
    let s = ctx.k.sockets.get_mut(id)?;
    for (&(level, name), v) in &s.opts.stored {
        if let Ok(b) = <[u8; 4]>::try_from(v.as_slice()) {
            conn.set_option(level, name, i32::from_le_bytes(b));
        }
    }
    if let Some(l) = conn.local() {
        let l = host::guest_addr(l);
        s.local = Some(match (s.domain, l) {
            (Domain::Inet6, Addr::V4(ip, p)) => {
                Addr::V6(Ipv4Addr::from(ip).to_ipv6_mapped().octets(), p)
            }
            (_, l) => l,
        });
    }
    s.remote = Some(dest);
    let connecting = conn.phase == host::Phase::Connecting;
    conn.connect_waiting = connecting && !nonblock;
    s.host = Some(conn);
    if !connecting {
        return Ok(0);
    }
    if nonblock {
        return Err(Errno::EINPROGRESS.into());
    }
    Err(would_block(ctx, id, false, true, "connect to a host"))
}

/// connect(2) again on a socket with a host connection: a blocking
/// connect waiting for its end, or a program asking after one.
fn connect_again(ctx: &mut Ctx, id: u64, nonblock: bool) -> SysResult {
    let s = ctx.k.sockets.get_mut(id)?;
    let Some(h) = s.host.as_mut() else {
        return Err(Errno::EISCONN.into());
    };
    let waiting = std::mem::take(&mut h.connect_waiting);
    match h.finish_connect() {
        Ok(true) if waiting => Ok(0),
        Ok(true) => Err(Errno::EISCONN.into()),
        Ok(false) if waiting => {
            h.connect_waiting = true;
            if ctx.k.take_timed_out() {
                // SO_SNDTIMEO ran out (Linux: EINPROGRESS for connect).
                return Err(Errno::EINPROGRESS.into());
            }
            Err(would_block(ctx, id, nonblock, true, "connect to a host"))
        }
        Ok(false) => Err(Errno::EALREADY.into()),
        Err(e) => {
            // The connect failed: the socket can connect again.
            let s = ctx.k.sockets.get_mut(id)?;
            s.host = None;
            s.remote = None;
            Err(e.into())
        }
    }
}

fn send_host(
    ctx: &mut Ctx,
    id: u64,
    data: &[u8],
    to: Option<SocketAddr>,
    nonblock: bool,
) -> Result<usize, SysError> {
    match ctx.k.sockets.send_host(id, data, to, nonblock) {
        Ok(n) => Ok(n),
        Err(Stop::WouldBlock) => Err(Errno::EAGAIN.into()),
        Err(Stop::Pipe) => Err(Errno::EPIPE.into()),
        Err(Stop::Err(e)) => Err(e.into()),
    }
}

fn recv_host(
    ctx: &mut Ctx,
    id: u64,
    nonblock: bool,
    want: usize,
    flags: u64,
    waitall: bool,
) -> Result<Received, SysError> {
    let s = ctx.k.sockets.get_mut(id)?;
    if s.rd_shut {
        return Ok(Received::default());
    }
    match ctx
        .k
        .sockets
        .recv_host(id, want, flags & MSG_PEEK != 0, waitall)
    {
        Ok((data, full_len, from)) => Ok(Received {
            data,
            full_len,
            from: from.map(host::guest_addr),
            ..Received::default()
        }),
        Err(Stop::WouldBlock) => Err(would_block(
            ctx,
            id,
            nonblock,
            false,
            "receive on a host socket",
        )),
        Err(Stop::Pipe) => Ok(Received::default()),
        Err(Stop::Err(e)) => Err(e.into()),
    }
}

/// A datagram to `addr` outside the sandbox (or to a loopback port the
/// operator opened): checked per destination, sent from the socket's
/// host UDP socket (opened at the first one allowed).
fn udp_host(
    ctx: &mut Ctx,
    id: u64,
    addr: Addr,
    data: &[u8],
    nonblock: bool,
) -> Result<usize, SysError> {
    let sa = host::sockaddr(&addr).ok_or(Errno::EAFNOSUPPORT)?;
    let s = ctx.k.sockets.get(id)?;
    let known = s.host.is_some() && s.remote.as_ref() == Some(&addr);
    if !known {
        let open = ctx.k.sockets.host_open();
        // A socket that has its host socket does not count twice.
        let open = open - usize::from(s.host.is_some());
        ctx.k.sockets.egress.decide(sa.ip(), sa.port(), open)?;
    }
    if ctx.k.sockets.get(id)?.host.is_none() {
        let conn = host::open(sa, false)?;
        ctx.k.sockets.get_mut(id)?.host = Some(conn);
    }
    match send_host(ctx, id, data, Some(sa), nonblock) {
        Err(SysError::Errno(Errno::EAGAIN)) => Err(would_block(
            ctx,
            id,
            nonblock,
            true,
            "send on a host socket",
        )),
        r => r,
    }
}

fn is_resolver(a: &Addr) -> bool {
    let v4 = match a {
        Addr::V4(ip, p) => Some((*ip, *p)),
        Addr::V6(ip, p) => Ipv6Addr::from(*ip)
            .to_ipv4_mapped()
            .map(|v| (v.octets(), *p)),
        _ => None,
    };
    v4 == Some((dns::RESOLVER, dns::PORT))
}

/// A query to the VMM's resolver: answered into the socket's queue.
fn serve_dns(ctx: &mut Ctx, id: u64, data: &[u8]) -> Result<(), SysError> {
    let reply = match dns::parse(data) {
        Err(None) => return Ok(()),
        Err(Some(r)) => r,
        Ok(q) => match ctx.k.sockets.egress.resolve(&q.name) {
            Ok(addrs) if addrs.is_empty() => dns::answer(&q, Err(dns::Failure::NoSuchName)),
            Ok(addrs) => dns::answer(&q, Ok(&addrs)),
            Err(f) => dns::answer(&q, Err(f)),
        },
    };
    let from = Addr::V4(dns::RESOLVER, dns::PORT);
    match ctx.k.sockets.inject(id, reply, from) {
        Ok(()) => Ok(()),
        Err(Stop::Err(e)) => Err(e.into()),
        Err(_) => Ok(()),
    }
}

// ---- data --------------------------------------------------------------------

/// Send `data` on socket `id` to its peer or to `dest` (a raw sockaddr).
#[allow(clippy::too_many_arguments)]
fn send_data(
    ctx: &mut Ctx,
    id: u64,
    nonblock: bool,
    data: &[u8],
    dest: Option<Vec<u8>>,
    rights: Vec<OpenFile>,
    cred_override: Option<Ucred>,
    nosignal: bool,
) -> Result<usize, SysError> {
    let c = cred_override.unwrap_or_else(|| cred(ctx));
    let s = ctx.k.sockets.get(id)?;
    let (domain, ty) = (s.domain, s.ty);
    let pipe = |ctx: &mut Ctx| -> SysError {
        if nosignal || ty == Type::Dgram {
            Errno::EPIPE.into()
        } else {
            super::signal::sigpipe(ctx).into()
        }
    };
    if s.host.is_some() && ty == Type::Stream {
        if s.wr_shut {
            return Err(pipe(ctx));
        }
        return match send_host(ctx, id, data, None, nonblock) {
            Err(SysError::Errno(Errno::EPIPE)) => Err(pipe(ctx)),
            Err(SysError::Errno(Errno::EAGAIN)) => Err(would_block(
                ctx,
                id,
                nonblock,
                true,
                "send on a host socket",
            )),
            r => r,
        };
    }
    let target = if ty.connected() {
        if dest.is_some() && domain == Domain::Unix {
            return Err(if s.peer().is_some() {
                Errno::EISCONN
            } else {
                Errno::EOPNOTSUPP
            }
            .into());
        }
        if s.hup && s.error != 0 {
            let e = std::mem::take(&mut ctx.k.sockets.get_mut(id)?.error);
            return Err(Errno(e).into());
        }
        if s.wr_shut || s.hup {
            return Err(pipe(ctx));
        }
        let Some(peer) = s.peer() else {
            return Err(if domain == Domain::Unix {
                Errno::ENOTCONN.into()
            } else {
                pipe(ctx)
            });
        };
        if ty == Type::SeqPacket && data.len() > s.opts.sndbuf as usize {
            return Err(Errno::EMSGSIZE.into());
        }
        if ty == Type::Stream && data.is_empty() {
            return Ok(0);
        }
        peer
    } else {
        if s.wr_shut {
            return Err(Errno::EPIPE.into());
        }
        if data.len() > s.opts.sndbuf as usize {
            return Err(Errno::EMSGSIZE.into());
        }
        match domain {
            Domain::Unix => {
                let t = match &dest {
                    Some(raw) => find_unix(ctx, &unix::decode(raw)?)?,
                    None => s.peer().ok_or(Errno::ENOTCONN)?,
                };
                let Ok(peer) = ctx.k.sockets.get(t) else {
                    // The default peer was closed: refused once, then
                    // the socket is unconnected (Linux).
                    let s = ctx.k.sockets.get_mut(id)?;
                    s.state = State::Idle;
                    s.remote = None;
                    return Err(Errno::ECONNREFUSED.into());
                };
                if peer.ty != Type::Dgram {
                    return Err(Errno::EPROTOTYPE.into());
                }
                if peer.peer().is_some_and(|p| p != id) {
                    // Connected elsewhere: it takes nothing from us.
                    return Err(Errno::EPERM.into());
                }
                t
            }
            _ => {
                let addr = match &dest {
                    Some(raw) => inet::decode(domain, raw)?.ok_or(Errno::EAFNOSUPPORT)?,
                    None => s.remote.clone().ok_or(Errno::EDESTADDRREQ)?,
                };
                let local = !matches!(inet::route(&addr), inet::Route::Refused(_));
                let connected = dest.is_none();
                if local {
                    autobind_inet(ctx, id, Some(&addr))?;
                }
                match listener_for(ctx, true, &addr) {
                    Some(t) => t,
                    None if is_resolver(&addr) => {
                        serve_dns(ctx, id, data)?;
                        return Ok(data.len());
                    }
                    // Outside, or a loopback port the operator opened to
                    // the host (other local datagrams are lost, as before).
                    None if !local
                        || host::sockaddr(&addr).is_some_and(|a| {
                            ctx.k.sockets.egress.operator_allows(a.ip(), a.port())
                        }) =>
                    {
                        return udp_host(ctx, id, addr, data, nonblock);
                    }
                    None => {
                        // Nobody listens: the datagram is lost; a connected
                        // socket hears of it (ICMP port unreachable).
                        if connected {
                            ctx.k.sockets.get_mut(id)?.error = Errno::ECONNREFUSED.0;
                        }
                        return Ok(data.len());
                    }
                }
            }
        }
    };
    match ctx.k.sockets.deliver(id, target, data, rights, c) {
        Ok(n) => Ok(n),
        Err(Stop::WouldBlock) => Err(would_block(ctx, id, nonblock, true, "send on a socket")),
        Err(Stop::Pipe) => Err(pipe(ctx)),
        Err(Stop::Err(e)) => Err(e.into()),
    }
}

/// Receive up to `want` bytes (or one message) from socket `id`.
fn recv_data(
    ctx: &mut Ctx,
    id: u64,
    nonblock: bool,
    want: usize,
    flags: u64,
) -> Result<Received, SysError> {
    let s = ctx.k.sockets.get(id)?;
    if flags & MSG_OOB != 0 {
        return Err(if s.domain == Domain::Unix {
            Errno::EOPNOTSUPP
        } else {
            Errno::EINVAL
        }
        .into());
    }
    if flags & MSG_ERRQUEUE != 0 {
        // No error queue is ever filled here.
        return Err(Errno::EAGAIN.into());
    }
    if s.listening() {
        return Err(if s.domain == Domain::Unix {
            Errno::EINVAL
        } else {
            Errno::ENOTCONN
        }
        .into());
    }
    if want == 0 && s.ty == Type::Stream {
        return Ok(Received::default());
    }
    let waitall = flags & MSG_WAITALL != 0 && s.ty == Type::Stream;
    if s.host.is_some() && s.rx.is_empty() {
        return recv_host(
            ctx,
            id,
            nonblock || flags & MSG_DONTWAIT != 0,
            want,
            flags,
            waitall,
        );
    }
    match ctx
        .k
        .sockets
        .receive(id, want, flags & MSG_PEEK != 0, waitall)
    {
        Ok(r) => Ok(r),
        Err(Stop::WouldBlock) => Err(would_block(
            ctx,
            id,
            nonblock || flags & MSG_DONTWAIT != 0,
            false,
            "receive on a socket",
        )),
        Err(Stop::Err(e)) => Err(e.into()),
        Err(Stop::Pipe) => Ok(Received::default()),
    }
}

/// read(2) on a socket: `SocketFile`'s `FileOps::read` (file/channel.rs).
pub(crate) fn read(
    ctx: &mut Ctx,
    id: u64,
    count: usize,
    nonblock: bool,
) -> Result<Vec<u8>, SysError> {
    let r = recv_data(ctx, id, nonblock, count.min(MAX_IO), 0)?;
    if !r.rights.is_empty() {
        // read(2) has nowhere to put descriptors: they are closed.
        drop(r.rights);
        ctx.k.gc_pipes();
    }
    Ok(r.data)
}

/// write(2) on a socket: `SocketFile`'s `FileOps::write` (file/channel.rs).
pub(crate) fn write(
    ctx: &mut Ctx,
    id: u64,
    data: &[u8],
    nonblock: bool,
) -> Result<usize, SysError> {
    send_data(ctx, id, nonblock, data, None, Vec::new(), None, false)
}

/// Guest iovecs as (base, len), checked as Linux does.
fn read_iovecs(ctx: &mut Ctx, va: u64, n: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if n > UIO_MAXIOV {
        return Err(Errno::EMSGSIZE);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let iov: zeroboot_abi::structs::Iovec = ctx.k.mm.read_obj(ctx.mem, va + i * 16)?;
        if (iov.len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        v.push((iov.base, iov.len));
    }
    Ok(v)
}

fn iov_total(iovs: &[(u64, u64)]) -> u64 {
    iovs.iter().fold(0u64, |t, i| t.saturating_add(i.1))
}

/// Gather the bytes to send: a datagram whole (too big: EMSGSIZE before
/// any copy), a stream up to MAX_IO.
fn gather(ctx: &mut Ctx, id: u64, iovs: &[(u64, u64)]) -> Result<Vec<u8>, Errno> {
    let s = ctx.k.sockets.get(id)?;
    let total = iov_total(iovs);
    if s.ty != Type::Stream && total > s.opts.sndbuf as u64 {
        return Err(Errno::EMSGSIZE);
    }
    let limit = (total as usize).min(MAX_IO);
    let mut data = Vec::with_capacity(limit);
    for &(base, len) in iovs {
        let n = (len as usize).min(limit - data.len());
        if n == 0 {
            continue;
        }
        data.extend_from_slice(&ctx.k.mm.read_vec(ctx.mem, base, n)?);
        if data.len() >= limit {
            break;
        }
    }
    Ok(data)
}

fn scatter(ctx: &mut Ctx, iovs: &[(u64, u64)], data: &[u8]) -> Result<(), Errno> {
    let mut done = 0usize;
    for &(base, len) in iovs {
        if done >= data.len() {
            break;
        }
        let n = (len as usize).min(data.len() - done);
        ctx.k.mm.write(ctx.mem, base, &data[done..done + n])?;
        done += n;
    }
    Ok(())
}

pub fn sendto(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let flags = a.u64(3);
    let dest = if a.ptr(4) != 0 && a.u64(5) as u32 != 0 {
        Some(read_addr(ctx, a.ptr(4), a.u64(5))?)
    } else {
        None
    };
    check_send_flags(ctx, id, flags)?;
    let data = gather(ctx, id, &[(a.ptr(1), a.u64(2).min(i64::MAX as u64))])?;
    let nb = nonblock || flags & MSG_DONTWAIT != 0;
    let n = send_data(
        ctx,
        id,
        nb,
        &data,
        dest,
        Vec::new(),
        None,
        flags & MSG_NOSIGNAL != 0,
    )?;
    Ok(n as u64)
}

fn check_send_flags(ctx: &mut Ctx, id: u64, flags: u64) -> Result<(), Errno> {
    let s = ctx.k.sockets.get(id)?;
    if flags & MSG_OOB != 0 && !urgent_inline(&ctx.k.sockets, s) {
        // Out-of-band data is not kept apart (AF_UNIX has none either):
        // only a loopback TCP peer that reads it inline can take it.
        ctx.k.sockets.refuse("MSG_OOB".into());
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

/// Whether urgent data (MSG_OOB) sent on `s` reaches its reader as
/// ordinary bytes: a loopback TCP connection whose peer set
/// SO_OOBINLINE, where Linux leaves the urgent byte in the stream too
/// (ftplib's ABOR is sent so).
fn urgent_inline(sockets: &crate::net::Sockets, s: &crate::net::Socket) -> bool {
    if s.domain == Domain::Unix || s.ty != Type::Stream || s.host.is_some() {
        return false;
    }
    let peer = s.peer().and_then(|p| sockets.get(p).ok());
    peer.and_then(|p| p.opts.stored.get(&(SOL_SOCKET, SO_OOBINLINE)))
        .is_some_and(|v| v.iter().any(|&b| b != 0))
}

pub fn recvfrom(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let flags = a.u64(3);
    let want = a.usize(2).min(MAX_IO);
    let r = recv_data(ctx, id, nonblock, want, flags)?;
    ctx.k.mm.write(ctx.mem, a.ptr(1), &r.data)?;
    if !r.rights.is_empty() {
        drop(r.rights);
        ctx.k.gc_pipes();
    }
    if let Some(from) = &r.from {
        let domain = ctx.k.sockets.get(id)?.domain;
        let ty = ctx.k.sockets.get(id)?.ty;
        // Only datagram sockets name the sender (a stream's is known).
        if ty == Type::Dgram && (domain != Domain::Unix || *from != Addr::Unnamed) {
            write_addr(ctx, a.ptr(4), a.ptr(5), &encode(domain, from))?;
        } else if a.ptr(4) != 0 {
            ctx.k.mm.write_obj(ctx.mem, a.ptr(5), &0i32)?;
        }
    } else if a.ptr(4) != 0 {
        ctx.k.mm.write_obj(ctx.mem, a.ptr(5), &0i32)?;
    }
    Ok(if flags & MSG_TRUNC != 0 {
        r.full_len
    } else {
        r.data.len()
    } as u64)
}

/// struct msghdr, decoded.
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
}

fn read_msghdr(ctx: &mut Ctx, va: u64) -> Result<MsgHdr, Errno> {
    let raw: [u64; 7] = ctx.k.mm.read_obj(ctx.mem, va)?;
    Ok(MsgHdr {
        name: raw[0],
        namelen: raw[1] as u32,
        iov: raw[2],
        iovlen: raw[3],
        control: raw[4],
        controllen: raw[5],
    })
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

pub fn sendmsg(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let flags = a.u64(2);
    let m = read_msghdr(ctx, a.ptr(1))?;
    let dest = if m.name != 0 && m.namelen != 0 {
        Some(read_addr(ctx, m.name, m.namelen as u64)?)
    } else {
        None
    };
    let iovs = read_iovecs(ctx, m.iov, m.iovlen)?;
    check_send_flags(ctx, id, flags)?;
    let (rights, creds) = if m.controllen > 0 {
        read_control(ctx, id, m.control, m.controllen)?
    } else {
        (Vec::new(), None)
    };
    let data = gather(ctx, id, &iovs)?;
    let nb = nonblock || flags & MSG_DONTWAIT != 0;
    let had_rights = !rights.is_empty();
    let r = send_data(
        ctx,
        id,
        nb,
        &data,
        dest,
        rights,
        creds,
        flags & MSG_NOSIGNAL != 0,
    );
    if had_rights && r.is_err() {
        // The copies taken for the message were dropped with it.
        ctx.k.gc_pipes();
    }
    Ok(r? as u64)
}

/// sendmmsg(2): sendmsg for each message until one fails; the count sent
/// (or the first message's error).
pub fn sendmmsg(ctx: &mut Ctx, a: Args) -> SysResult {
    let (fd, vec, flags) = (a.fd(0), a.ptr(1), a.u64(3));
    let vlen = (a.uint(2) as u64).min(UIO_MAXIOV);
    sock_of(ctx, fd)?;
    let mut sent = 0u64;
    for i in 0..vlen {
        // struct mmsghdr: a msghdr, then msg_len (and padding): 64 bytes.
        let hdr = vec.checked_add(i * 64).ok_or(Errno::EFAULT)?;
        match sendmsg(ctx, Args([fd as u64, hdr, flags, 0, 0, 0])) {
            Ok(n) => {
                ctx.k.mm.write_obj(ctx.mem, hdr + 56, &(n as u32))?;
                sent += 1;
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Parse sendmsg's control messages: descriptors (SCM_RIGHTS) and
/// credentials (SCM_CREDENTIALS).
fn read_control(
    ctx: &mut Ctx,
    id: u64,
    va: u64,
    len: u64,
) -> Result<(Vec<OpenFile>, Option<Ucred>), Errno> {
    if len > OPTMEM_MAX {
        return Err(Errno::ENOBUFS);
    }
    let unix = ctx.k.sockets.get(id)?.domain == Domain::Unix;
    let buf = ctx.k.mm.read_vec(ctx.mem, va, len as usize)?;
    let mut rights = Vec::new();
    let mut creds = None;
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let word = |at: usize| -> Result<[u8; 8], Errno> {
            buf.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or(Errno::EINVAL)
        };
        let clen = u64::from_le_bytes(word(off)?) as usize;
        let kinds = word(off + 8)?;
        let level = i32::from_le_bytes([kinds[0], kinds[1], kinds[2], kinds[3]]);
        let ty = i32::from_le_bytes([kinds[4], kinds[5], kinds[6], kinds[7]]);
        if clen < 16 || clen > buf.len() - off {
            return Err(Errno::EINVAL);
        }
        let data = &buf[off + 16..off + clen];
        match (level, ty) {
            (SOL_SOCKET, SCM_RIGHTS) if unix => {
                let n = data.len() / 4;
                if rights.len() + n > SCM_MAX_FD {
                    return Err(Errno::EINVAL);
                }
                for c in data.chunks_exact(4) {
                    let fd = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    let mut f = ctx.k.fds.get(fd)?.clone();
                    f.dir_entries = None;
                    rights.push(f);
                }
            }
            (SOL_SOCKET, SCM_CREDENTIALS) if unix => {
                if data.len() != 12 {
                    return Err(Errno::EINVAL);
                }
                let w =
                    |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                // The sandbox's one user is root, who may name any pid
                // (Linux checks CAP_SYS_ADMIN); it must exist.
                let pid = w(0);
                if pid != ctx.k.proc.pid && !ctx.k.others.contains_key(&pid) {
                    return Err(Errno::ESRCH);
                }
                creds = Some(Ucred {
                    pid,
                    uid: w(4),
                    gid: w(8),
                });
            }
            (SOL_SOCKET, _) => return Err(Errno::EINVAL),
            (l, t) => {
                // Other levels are not for AF_UNIX (Linux skips them); IP
                // ancillary data (IP_PKTINFO...) is not implemented.
                if !unix {
                    ctx.k.sockets.refuse(format!("cmsg {l}/{t}"));
                    return Err(Errno::EINVAL);
                }
            }
        }
        off += align8(clen);
    }
    Ok((rights, creds))
}

pub fn recvmsg(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, nonblock) = sock_of(ctx, a.fd(0))?;
    let flags = a.u64(2);
    let hdr = a.ptr(1);
    let m = read_msghdr(ctx, hdr)?;
    let iovs = read_iovecs(ctx, m.iov, m.iovlen)?;
    let want = (iov_total(&iovs) as usize).min(MAX_IO);
    let r = recv_data(ctx, id, nonblock, want, flags)?;
    let (domain, ty) = {
        let s = ctx.k.sockets.get(id)?;
        (s.domain, s.ty)
    };
    let mut out_flags = 0i32;
    if r.full_len > r.data.len() {
        out_flags |= MSG_TRUNC as i32;
    }
    // Control messages: credentials first, then descriptors (Linux's order).
    let mut ctl = Vec::new();
    let room = if m.control == 0 {
        0
    } else {
        m.controllen.min(OPTMEM_MAX) as usize
    };
    if let Some(c) = r.cred {
        if room >= ctl.len() + 28 {
            ctl.extend_from_slice(&28u64.to_le_bytes());
            ctl.extend_from_slice(&SOL_SOCKET.to_le_bytes());
            ctl.extend_from_slice(&SCM_CREDENTIALS.to_le_bytes());
            for v in [c.pid, c.uid, c.gid] {
                ctl.extend_from_slice(&v.to_le_bytes());
            }
            ctl.resize(align8(ctl.len()).min(room), 0);
        } else {
            out_flags |= MSG_CTRUNC;
        }
    }
    let mut dropped = false;
    if !r.rights.is_empty() {
        let fit = room.saturating_sub(ctl.len() + 16) / 4;
        let cloexec = flags & MSG_CMSG_CLOEXEC != 0;
        let mut fds = Vec::new();
        for f in r.rights {
            if fds.len() < fit {
                match ctx.k.fds.open(f, cloexec, 0) {
                    Ok(fd) => fds.push(fd),
                    Err(_) => {
                        out_flags |= MSG_CTRUNC;
                        dropped = true;
                    }
                }
            } else {
                out_flags |= MSG_CTRUNC;
                dropped = true;
            }
        }
        if !fds.is_empty() {
            let clen = 16 + 4 * fds.len();
            ctl.extend_from_slice(&(clen as u64).to_le_bytes());
            ctl.extend_from_slice(&SOL_SOCKET.to_le_bytes());
            ctl.extend_from_slice(&SCM_RIGHTS.to_le_bytes());
            for fd in &fds {
                ctl.extend_from_slice(&fd.to_le_bytes());
            }
            ctl.resize(align8(ctl.len()).min(room), 0);
        }
    }
    if dropped {
        ctx.k.gc_pipes();
    }
    scatter(ctx, &iovs, &r.data)?;
    if !ctl.is_empty() {
        ctx.k.mm.write(ctx.mem, m.control, &ctl)?;
    }
    let namelen = match (&r.from, m.name) {
        (Some(from), name) if name != 0 && ty == Type::Dgram => {
            let enc = encode(domain, from);
            if domain == Domain::Unix && *from == Addr::Unnamed {
                0
            } else {
                let n = (m.namelen as usize).min(enc.len());
                ctx.k.mm.write(ctx.mem, name, &enc[..n])?;
                enc.len() as u32
            }
        }
        _ => 0,
    };
    ctx.k.mm.write_obj(ctx.mem, hdr + 8, &namelen)?;
    ctx.k.mm.write_obj(ctx.mem, hdr + 40, &(ctl.len() as u64))?;
    ctx.k.mm.write_obj(ctx.mem, hdr + 48, &out_flags)?;
    Ok(if flags & MSG_TRUNC != 0 && ty != Type::Stream {
        r.full_len
    } else {
        r.data.len()
    } as u64)
}

pub fn shutdown(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let how = a.int(1);
    if !(0..=2).contains(&how) {
        return Err(Errno::EINVAL.into());
    }
    let s = ctx.k.sockets.get(id)?;
    if let Some(h) = &s.host {
        h.shutdown(how != 1, how != 0)?;
        let s = ctx.k.sockets.get_mut(id)?;
        s.rd_shut |= how != 1;
        s.wr_shut |= how != 0;
        return Ok(0);
    }
    if s.domain != Domain::Unix && s.ty == Type::Stream && matches!(s.state, State::Idle) {
        return Err(Errno::ENOTCONN.into());
    }
    ctx.k.sockets.shutdown(id, how != 1, how != 0)?;
    Ok(0)
}

pub fn getsockname(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let s = ctx.k.sockets.get(id)?;
    let addr = match (&s.local, s.domain) {
        (Some(l), _) => l.clone(),
        (None, Domain::Unix) => Addr::Unnamed,
        (None, Domain::Inet) => Addr::V4([0; 4], 0),
        (None, Domain::Inet6) => Addr::V6([0; 16], 0),
    };
    let enc = encode(s.domain, &addr);
    write_addr(ctx, a.ptr(1), a.ptr(2), &enc)?;
    Ok(0)
}

pub fn getpeername(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let s = ctx.k.sockets.get(id)?;
    let connected = match s.ty {
        Type::Dgram if s.domain == Domain::Unix => s.peer().is_some(),
        Type::Dgram => s.remote.is_some(),
        _ if s.host.is_some() => s.remote.is_some(),
        _ => s.peer().is_some(),
    };
    if !connected {
        return Err(Errno::ENOTCONN.into());
    }
    let enc = encode(s.domain, s.remote.as_ref().unwrap_or(&Addr::Unnamed));
    write_addr(ctx, a.ptr(1), a.ptr(2), &enc)?;
    Ok(0)
}

// ---- options -------------------------------------------------------------------

const SO_REUSEADDR: i32 = 2;
const SO_TYPE: i32 = 3;
const SO_ERROR: i32 = 4;
const SO_DONTROUTE: i32 = 5;
const SO_BROADCAST: i32 = 6;
const SO_SNDBUF: i32 = 7;
const SO_RCVBUF: i32 = 8;
const SO_KEEPALIVE: i32 = 9;
const SO_OOBINLINE: i32 = 10;
const SO_PRIORITY: i32 = 12;
const SO_LINGER: i32 = 13;
const SO_REUSEPORT: i32 = 15;
const SO_PASSCRED: i32 = 16;
const SO_PEERCRED: i32 = 17;
const SO_RCVLOWAT: i32 = 18;
const SO_SNDLOWAT: i32 = 19;
const SO_RCVTIMEO: i32 = 20;
const SO_SNDTIMEO: i32 = 21;
const SO_ACCEPTCONN: i32 = 30;
const SO_SNDBUFFORCE: i32 = 32;
const SO_RCVBUFFORCE: i32 = 33;
const SO_PROTOCOL: i32 = 38;
const SO_DOMAIN: i32 = 39;

/// Options recorded and read back (no behaviour to emulate on a
/// loopback), with whether Linux reads them back as 0/1, and their
/// default.
fn recorded(domain: Domain, ty: Type, level: i32, name: i32) -> Option<(bool, i32)> {
    let inet = domain != Domain::Unix;
    match (level, name) {
        (SOL_SOCKET, SO_REUSEADDR | SO_KEEPALIVE | SO_BROADCAST | SO_OOBINLINE) => Some((true, 0)),
        (SOL_SOCKET, SO_DONTROUTE | SO_REUSEPORT) => Some((true, 0)),
        (SOL_SOCKET, SO_PRIORITY) => Some((false, 0)),
        (SOL_SOCKET, SO_RCVLOWAT) => Some((false, 1)),
        // TCP_NODELAY, TCP_CORK, TCP_QUICKACK; TCP_MAXSEG, TCP_KEEPIDLE,
        // TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT, TCP_NOTSENT_LOWAT.
        (IPPROTO_TCP, 1 | 3 | 12) if inet && ty == Type::Stream => Some((true, 0)),
        (IPPROTO_TCP, 2) if inet && ty == Type::Stream => Some((false, 536)),
        (IPPROTO_TCP, 4) if inet && ty == Type::Stream => Some((false, 7200)),
        (IPPROTO_TCP, 5) if inet && ty == Type::Stream => Some((false, 75)),
        (IPPROTO_TCP, 6) if inet && ty == Type::Stream => Some((false, 9)),
        (IPPROTO_TCP, 18 | 25) if inet && ty == Type::Stream => Some((false, 0)),
        // IP_RECVERR, IPV6_RECVERR: glibc's resolver sets them (and gives
        // up without them); no ICMP errors are queued here.
        (IPPROTO_IP, 11) if inet => Some((true, 0)),
        (IPPROTO_IPV6, 25) if domain == Domain::Inet6 => Some((true, 0)),
        // IP_TOS, IP_TTL.
        (IPPROTO_IP, 1) if inet => Some((false, 0)),
        (IPPROTO_IP, 2) if inet => Some((false, 64)),
        // IPV6_UNICAST_HOPS, IPV6_V6ONLY.
        (IPPROTO_IPV6, 16) if domain == Domain::Inet6 => Some((false, 64)),
        (IPPROTO_IPV6, 26) if domain == Domain::Inet6 => Some((true, 0)),
        _ => None,
    }
}

fn level_error(domain: Domain, level: i32) -> Errno {
    // AF_UNIX has only socket-level options.
    if domain == Domain::Unix && level != SOL_SOCKET {
        Errno::EOPNOTSUPP
    } else {
        Errno::ENOPROTOOPT
    }
}

fn timeval_ns(raw: &[u8]) -> Result<u64, Errno> {
    let sec = i64::from_le_bytes(raw[0..8].try_into().map_err(|_| Errno::EINVAL)?);
    let usec = i64::from_le_bytes(raw[8..16].try_into().map_err(|_| Errno::EINVAL)?);
    if !(0..1_000_000).contains(&usec) {
        return Err(Errno::EDOM);
    }
    if sec < 0 {
        return Ok(0);
    }
    Ok((sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(usec as u64 * 1000))
}

pub fn setsockopt(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let (level, name, val, len) = (a.int(1), a.int(2), a.ptr(3), a.int(4));
    if len < 0 {
        return Err(Errno::EINVAL.into());
    }
    let (domain, ty) = {
        let s = ctx.k.sockets.get(id)?;
        (s.domain, s.ty)
    };
    let read_int = |ctx: &mut Ctx| -> Result<i32, Errno> {
        if len < 4 {
            return Err(Errno::EINVAL);
        }
        ctx.k.mm.read_obj(ctx.mem, val)
    };
    if let Some((boolean, _)) = recorded(domain, ty, level, name) {
        let v = read_int(ctx)?;
        let v = if boolean { (v != 0) as i32 } else { v };
        let s = ctx.k.sockets.get_mut(id)?;
        if let Some(h) = &s.host {
            h.set_option(level, name, v);
        }
        s.opts
            .stored
            .insert((level, name), v.to_le_bytes().to_vec());
        return Ok(0);
    }
    if level != SOL_SOCKET {
        ctx.k.sockets.refuse(format!("setsockopt {level}/{name}"));
        return Err(level_error(domain, level).into());
    }
    match name {
        SO_SNDBUF | SO_RCVBUF | SO_SNDBUFFORCE | SO_RCVBUFFORCE => {
            let v = read_int(ctx)?;
            // As Linux: capped at wmem_max/rmem_max, doubled for
            // bookkeeping, with a floor.
            // The *FORCE variants get no higher cap: the buffers are the
            // VMM's memory.
            let v = (v as u32).min(net::DEFAULT_BUF);
            let snd = matches!(name, SO_SNDBUF | SO_SNDBUFFORCE);
            let s = ctx.k.sockets.get_mut(id)?;
            if snd {
                s.opts.sndbuf = (v * 2).max(4608);
            } else {
                s.opts.rcvbuf = (v * 2).max(2304);
            }
        }
        SO_PASSCRED => {
            let v = read_int(ctx)?;
            ctx.k.sockets.get_mut(id)?.opts.passcred = v != 0;
        }
        SO_LINGER => {
            if len < 8 {
                return Err(Errno::EINVAL.into());
            }
            let raw = ctx.k.mm.read_vec(ctx.mem, val, 8)?;
            let s = ctx.k.sockets.get_mut(id)?;
            s.opts.stored.insert((level, name), raw);
        }
        SO_RCVTIMEO | SO_SNDTIMEO => {
            if len < 16 {
                return Err(Errno::EINVAL.into());
            }
            let raw = ctx.k.mm.read_vec(ctx.mem, val, 16)?;
            let ns = timeval_ns(&raw)?;
            let s = ctx.k.sockets.get_mut(id)?;
            if name == SO_RCVTIMEO {
                s.opts.rcvtimeo = ns;
            } else {
                s.opts.sndtimeo = ns;
            }
        }
        SO_TYPE | SO_ERROR | SO_PEERCRED | SO_ACCEPTCONN | SO_PROTOCOL | SO_DOMAIN
        | SO_SNDLOWAT => return Err(Errno::ENOPROTOOPT.into()),
        _ => {
            ctx.k.sockets.refuse(format!("setsockopt {level}/{name}"));
            return Err(Errno::ENOPROTOOPT.into());
        }
    }
    Ok(0)
}

pub fn getsockopt(ctx: &mut Ctx, a: Args) -> SysResult {
    let (id, _) = sock_of(ctx, a.fd(0))?;
    let (level, name, val, len_va) = (a.int(1), a.int(2), a.ptr(3), a.ptr(4));
    let len: i32 = ctx.k.mm.read_obj(ctx.mem, len_va)?;
    if len < 0 {
        return Err(Errno::EINVAL.into());
    }
    let s = ctx.k.sockets.get(id)?;
    let (domain, ty) = (s.domain, s.ty);
    let int = |v: i32| v.to_le_bytes().to_vec();
    let value: Vec<u8> = if let Some((_, default)) = recorded(domain, ty, level, name) {
        s.opts
            .stored
            .get(&(level, name))
            .cloned()
            .unwrap_or_else(|| int(default))
    } else if level != SOL_SOCKET {
        ctx.k.sockets.refuse(format!("getsockopt {level}/{name}"));
        return Err(level_error(domain, level).into());
    } else {
        match name {
            SO_TYPE => int(ty.raw()),
            SO_ERROR => {
                let s = ctx.k.sockets.get_mut(id)?;
                let mut e = std::mem::take(&mut s.error);
                if let (0, Some(h)) = (e, s.host.as_mut()) {
                    e = h.take_error().0;
                }
                int(e as i32)
            }
            SO_SNDBUF => int(s.opts.sndbuf as i32),
            SO_RCVBUF => int(s.opts.rcvbuf as i32),
            SO_PASSCRED => int(s.opts.passcred as i32),
            SO_ACCEPTCONN => int(s.listening() as i32),
            SO_DOMAIN => int(domain.family() as i32),
            SO_PROTOCOL => int(match (domain, ty) {
                (Domain::Unix, _) => 0,
                (_, Type::Dgram) => 17,
                _ => 6,
            }),
            SO_SNDLOWAT => int(1),
            SO_PEERCRED => {
                // No peer: Linux reports the overflow ids and pid 0.
                let c = s.peer_cred.unwrap_or(Ucred {
                    pid: 0,
                    uid: 65534,
                    gid: 65534,
                });
                let mut v = Vec::with_capacity(12);
                for x in [c.pid, c.uid, c.gid] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v
            }
            SO_LINGER => s
                .opts
                .stored
                .get(&(level, name))
                .cloned()
                .unwrap_or_else(|| vec![0; 8]),
            SO_RCVTIMEO | SO_SNDTIMEO => {
                let ns = if name == SO_RCVTIMEO {
                    s.opts.rcvtimeo
                } else {
                    s.opts.sndtimeo
                };
                let mut v = ((ns / 1_000_000_000) as i64).to_le_bytes().to_vec();
                v.extend_from_slice(&(((ns % 1_000_000_000) / 1000) as i64).to_le_bytes());
                v
            }
            _ => {
                ctx.k.sockets.refuse(format!("getsockopt {level}/{name}"));
                return Err(Errno::ENOPROTOOPT.into());
            }
        }
    };
    let n = (len as usize).min(value.len());
    ctx.k.mm.write(ctx.mem, val, &value[..n])?;
    ctx.k.mm.write_obj(ctx.mem, len_va, &(n as i32))?;
    Ok(0)
}
