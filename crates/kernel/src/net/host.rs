//! Host sockets a sandbox's egress goes through (gVisor's hostinet model):
//! opened by the VMM on the guest's behalf once the policy allowed the
//! destination, always non-blocking (a guest's blocking call waits in
//! the scheduler, which polls these descriptors), owned by the sandbox's
//! socket table and closed with the socket.
//!
//! A copy of the kernel state (a fork, a template) never shares a host
//! descriptor: `HostFd`'s clone is closed, so the copy's socket behaves
//! as a connection reset by the peer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

use super::{Addr, Stop, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP};

/// A host descriptor with one owner: clones and deserialized copies have
/// none.
#[derive(Debug, Default)]
pub struct HostFd(pub Option<OwnedFd>);

impl Clone for HostFd {
    fn clone(&self) -> HostFd {
        HostFd(None)
    }
}

impl Serialize for HostFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for HostFd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HostFd, D::Error> {
        <()>::deserialize(d)?;
        Ok(HostFd(None))
    }
}

/// Where a host connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// A non-blocking connect is under way.
    Connecting,
    Connected,
    /// A UDP socket (its destinations are checked per datagram).
    Datagram,
}

/// The host side of a guest socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostConn {
    pub fd: HostFd,
    pub phase: Phase,
    pub remote: Option<SocketAddr>,
    /// A send found the host's buffer full: the scheduler watches for
    /// room.
    pub want_out: bool,
    /// The scheduler woke the guest for data on it; it stops watching
    /// for data until the guest reads.
    pub quiet: bool,
    /// A blocking connect waits for this connection (its retry returns 0
    /// where a later connect gets EISCONN).
    pub connect_waiting: bool,
}

impl HostConn {
    fn fd(&self) -> Result<&OwnedFd, Stop> {
        self.fd.0.as_ref().ok_or(Stop::Err(Errno::ECONNRESET))
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error() as u16)
}

fn stop(e: rustix::io::Errno) -> Stop {
    if e == rustix::io::Errno::AGAIN {
        Stop::WouldBlock
    } else if e == rustix::io::Errno::PIPE {
        Stop::Pipe
    } else {
        Stop::Err(errno(e))
    }
}

/// A guest address as a host one.
pub fn sockaddr(a: &Addr) -> Option<SocketAddr> {
    match a {
        Addr::V4(ip, p) => Some(SocketAddr::new(IpAddr::from(*ip), *p)),
        Addr::V6(ip, p) => Some(SocketAddr::new(IpAddr::from(*ip), *p)),
        _ => None,
    }
}

/// A host address as the guest sees it.
pub fn guest_addr(a: SocketAddr) -> Addr {
    match a {
        SocketAddr::V4(v) => Addr::V4(v.ip().octets(), v.port()),
        SocketAddr::V6(v) => Addr::V6(v.ip().octets(), v.port()),
    }
}

/// A mapped IPv6 destination goes out as IPv4 (the host socket's family
/// follows the destination).
fn host_dest(dest: SocketAddr) -> SocketAddr {
    match dest {
        SocketAddr::V6(v) => match v.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v.port()),
            None => dest,
        },
        _ => dest,
    }
}

/// Open a host socket and start connecting it to `dest` (stream) or
/// associate it (datagram). The caller decided the policy.
pub fn open(dest: SocketAddr, stream: bool) -> Result<HostConn, Errno> {
    let dest = host_dest(dest);
    let family = if dest.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let ty = if stream {
        SocketType::STREAM
    } else {
        SocketType::DGRAM
    };
    let fd = rustix::net::socket_with(
        family,
        ty,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(errno)?;
    let phase = if !stream {
        Phase::Datagram
    } else {
        match rustix::net::connect(&fd, &dest) {
            Ok(()) => Phase::Connected,
            Err(e) if e == rustix::io::Errno::INPROGRESS => Phase::Connecting,
            // The descriptor closes here: nothing is left open.
            Err(e) => return Err(errno(e)),
        }
    };
    Ok(HostConn {
        fd: HostFd(Some(fd)),
        phase,
        remote: stream.then_some(dest),
        want_out: false,
        quiet: false,
        connect_waiting: false,
    })
}

/// Poll one host descriptor without waiting.
fn poll_now(fd: &OwnedFd, events: PollFlags) -> PollFlags {
    let mut p = [PollFd::new(fd, events)];
    match rustix::event::poll(&mut p, Some(&rustix::time::Timespec::default())) {
        Ok(_) => p[0].revents(),
        Err(_) => PollFlags::ERR,
    }
}

impl HostConn {
    /// Finish a connect under way: Ok(true) connected, Ok(false) not yet.
    pub fn finish_connect(&mut self) -> Result<bool, Errno> {
        if self.phase != Phase::Connecting {
            return Ok(true);
        }
        let fd = self.fd.0.as_ref().ok_or(Errno::ECONNRESET)?;
        let r = poll_now(fd, PollFlags::OUT);
        if r.is_empty() {
            return Ok(false);
        }
        match rustix::net::sockopt::socket_error(fd).map_err(errno)? {
            Ok(()) => {
                self.phase = Phase::Connected;
                Ok(true)
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// SO_ERROR: a connect's outcome (taken once).
    pub fn take_error(&mut self) -> Errno {
        let Some(fd) = self.fd.0.as_ref() else {
            return Errno::ECONNRESET;
        };
        if self.phase == Phase::Connecting {
            if poll_now(fd, PollFlags::OUT).is_empty() {
                return Errno(0);
            }
            self.phase = Phase::Connected;
        }
        match rustix::net::sockopt::socket_error(fd) {
            Ok(Ok(())) => Errno(0),
            Ok(Err(e)) | Err(e) => errno(e),
        }
    }

    pub fn send(&mut self, data: &[u8], to: Option<SocketAddr>) -> Result<usize, Stop> {
        let fd = self.fd()?;
        if self.phase == Phase::Connecting {
            return Err(Stop::WouldBlock);
        }
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        let r = match to {
            Some(dest) => rustix::net::sendto(fd, data, flags, &host_dest(dest)),
            None => rustix::net::send(fd, data, flags),
        };
        match r {
            Ok(n) => {
                self.want_out = false;
                Ok(n)
            }
            Err(e) => {
                let s = stop(e);
                if s == Stop::WouldBlock {
                    self.want_out = true;
                }
                Err(s)
            }
        }
    }

    /// Receive up to `want` bytes; for a datagram, its sender.
    pub fn recv(
        &mut self,
        want: usize,
        peek: bool,
        waitall: bool,
    ) -> Result<(Vec<u8>, usize, Option<SocketAddr>), Stop> {
        self.quiet = false;
        let fd = self.fd()?;
        if self.phase == Phase::Connecting {
            return Err(Stop::WouldBlock);
        }
        let mut flags = RecvFlags::DONTWAIT;
        if peek {
            flags |= RecvFlags::PEEK;
        }
        if self.phase == Phase::Datagram {
            flags |= RecvFlags::TRUNC;
        }
        if self.phase == Phase::Datagram {
            let mut buf = vec![0u8; want.min(1 << 16)];
            let (n, full, from) = rustix::net::recvfrom(fd, &mut buf[..], flags).map_err(stop)?;
            buf.truncate(n);
            let from = from.and_then(|a| SocketAddr::try_from(a).ok());
            return Ok((buf, full, from));
        }
        // Uninitialised room: a large read does not pay for zeroing.
        let mut buf: Vec<u8> = Vec::with_capacity(want);
        if waitall {
            // All `want` bytes, or wait for them (unless the stream ends).
            let mut p = [PollFd::new(fd, PollFlags::IN)];
            let _ = rustix::event::poll(&mut p, Some(&rustix::time::Timespec::default()));
            let mut peek: Vec<u8> = Vec::with_capacity(want);
            let (avail, _) = rustix::net::recv(
                fd,
                rustix::buffer::spare_capacity(&mut peek),
                flags | RecvFlags::PEEK,
            )
            .map_err(stop)?;
            if avail < want && avail != 0 && !p[0].revents().contains(PollFlags::HUP) {
                return Err(Stop::WouldBlock);
            }
        }
        let (n, _) =
            rustix::net::recv(fd, rustix::buffer::spare_capacity(&mut buf), flags).map_err(stop)?;
        Ok((buf, n, None))
    }

    pub fn shutdown(&self, rd: bool, wr: bool) -> Result<(), Errno> {
        let fd = self.fd.0.as_ref().ok_or(Errno::ENOTCONN)?;
        let how = match (rd, wr) {
            (true, true) => rustix::net::Shutdown::Both,
            (true, false) => rustix::net::Shutdown::Read,
            _ => rustix::net::Shutdown::Write,
        };
        rustix::net::shutdown(fd, how).map_err(errno)
    }

    /// The host socket's local address (getsockname).
    pub fn local(&self) -> Option<SocketAddr> {
        let fd = self.fd.0.as_ref()?;
        rustix::net::getsockname(fd)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
    }

    /// Options with an effect on a host connection, passed on.
    pub fn set_option(&self, level: i32, name: i32, value: i32) {
        let Some(fd) = self.fd.0.as_ref() else {
            return;
        };
        let on = value != 0;
        let r = match (level, name) {
            (6, 1) => rustix::net::sockopt::set_tcp_nodelay(fd, on),
            (1, 9) => rustix::net::sockopt::set_socket_keepalive(fd, on),
            (6, 4) if value > 0 => {
                rustix::net::sockopt::set_tcp_keepidle(fd, Duration::from_secs(value as u64))
            }
            (6, 5) if value > 0 => {
                rustix::net::sockopt::set_tcp_keepintvl(fd, Duration::from_secs(value as u64))
            }
            (6, 6) if value > 0 => rustix::net::sockopt::set_tcp_keepcnt(fd, value as u32),
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!(level, name, error = %e, "host socket option not applied");
        }
    }

    /// Readiness as poll(2) bits.
    pub fn readiness(&self) -> i16 {
        let Some(fd) = self.fd.0.as_ref() else {
            // Closed in a copy: a reset connection.
            return POLLIN | POLLOUT | POLLERR | POLLHUP;
        };
        let r = poll_now(
            fd,
            PollFlags::IN | PollFlags::OUT | PollFlags::RDHUP | PollFlags::PRI,
        );
        let mut v = 0;
        if r.contains(PollFlags::IN) {
            v |= POLLIN;
        }
        if r.contains(PollFlags::OUT) {
            v |= POLLOUT;
        }
        if r.contains(PollFlags::ERR) {
            v |= POLLERR;
        }
        if r.contains(PollFlags::HUP) {
            v |= POLLHUP;
        }
        if r.contains(PollFlags::RDHUP) {
            v |= POLLRDHUP;
        }
        v
    }
}

/// Wait up to `timeout` for one of `conns` to be ready for what a guest
/// thread waits on (data, room after a full send, a connect's end).
/// Returns whether one is; with none to watch it only sleeps.
pub fn wait<'a>(conns: impl Iterator<Item = &'a mut HostConn>, timeout: Duration) -> bool {
    let mut watched: Vec<(&'a mut HostConn, PollFlags)> = Vec::new();
    for c in conns {
        if c.fd.0.is_none() {
            continue;
        }
        let mut ev = PollFlags::empty();
        if !c.quiet {
            ev |= PollFlags::IN;
        }
        if c.want_out || c.phase == Phase::Connecting {
            ev |= PollFlags::OUT;
        }
        if !ev.is_empty() {
            watched.push((c, ev));
        }
    }
    if watched.is_empty() {
        if !timeout.is_zero() {
            std::thread::sleep(timeout);
        }
        return false;
    }
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let ready: Vec<PollFlags> = {
        let mut fds: Vec<PollFd<'_>> = watched
            .iter()
            .filter_map(|(c, ev)| c.fd.0.as_ref().map(|f| PollFd::new(f, *ev)))
            .collect();
        if rustix::event::poll(&mut fds, Some(&ts)).is_err() {
            return false;
        }
        fds.iter().map(|p| p.revents()).collect()
    };
    let mut any = false;
    for ((c, _), r) in watched.into_iter().zip(ready) {
        if r.is_empty() {
            continue;
        }
        any = true;
        // Once woken for data, the guest must read before it is woken for
        // it again (else a thread busy elsewhere makes this spin).
        if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            c.quiet = true;
        }
        if r.contains(PollFlags::OUT) {
            c.want_out = false;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::net::{Domain, Socket, Sockets, Type, Ucred};

    #[test]
    fn a_copy_of_the_table_never_shares_a_host_socket_and_reads_as_reset() {
        // A listener this test starts on the host's loopback.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = l.local_addr().unwrap();
        let mut t = Sockets::default();
        let id = t.add(Socket::new(Domain::Inet, Type::Stream, Ucred::default()));
        t.get_mut(id).unwrap().host = Some(open(dest, true).unwrap());
        let (mut peer, _) = l.accept().unwrap();
        assert_eq!(t.host_open(), 1);
        let mut copy = t.clone();
        let bytes = bincode::serialize(&t).unwrap();
        let mut loaded: Sockets = bincode::deserialize(&bytes).unwrap();
        for other in [&mut copy, &mut loaded] {
            assert_eq!(other.host_open(), 0);
            assert_eq!(other.readiness(id) & POLLERR, POLLERR);
            let h = other.get_mut(id).unwrap().host.as_mut().unwrap();
            assert_eq!(h.send(b"x", None), Err(Stop::Err(Errno::ECONNRESET)));
        }
        // The original still talks to the peer.
        std::io::Write::write_all(&mut peer, b"hi").unwrap();
        let h = t.get_mut(id).unwrap().host.as_mut().unwrap();
        while h.finish_connect() == Ok(false) {}
        assert_eq!(h.send(b"yo", None), Ok(2));
        let mut got = Vec::new();
        for _ in 0..1000 {
            match h.recv(16, false, false) {
                Ok((d, _, _)) => {
                    got = d;
                    break;
                }
                Err(Stop::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(got, b"hi");
        // Closing the table's host sockets ends the connection for the peer.
        t.close_host();
        assert_eq!(t.host_open(), 0);
        let mut buf = [0u8; 8];
        let n = std::io::Read::read(&mut peer, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"yo");
        assert_eq!(std::io::Read::read(&mut peer, &mut buf).unwrap(), 0);
    }
}
