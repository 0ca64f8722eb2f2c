//! AF_INET/AF_INET6 on the sandbox's loopback: address codecs and the one
//! place that decides where a connection may go.

use zeroboot_abi::Errno;

use super::{Addr, Domain, AF_INET, AF_INET6, AF_UNSPEC};

/// Where traffic to an address goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Another socket of this sandbox.
    Loopback,
    /// Nowhere: the call fails with this error.
    Refused(Errno),
}

/// The egress decision: loopback addresses reach this sandbox's own
/// sockets; everything else is unreachable (a later policy-checked egress
/// path plugs in here, and only here).
pub fn route(addr: &Addr) -> Route {
    if is_local(addr) {
        Route::Loopback
    } else {
        Route::Refused(Errno::ENETUNREACH)
    }
}

pub fn v4_of_mapped(ip: &[u8; 16]) -> Option<[u8; 4]> {
    (ip[..10].iter().all(|&b| b == 0) && ip[10] == 0xff && ip[11] == 0xff)
        .then(|| [ip[12], ip[13], ip[14], ip[15]])
}

/// 127.0.0.0/8, ::1, and the wildcard addresses (which mean this host).
pub fn is_local(addr: &Addr) -> bool {
    match addr {
        Addr::V4(ip, _) => ip[0] == 127 || *ip == [0; 4],
        Addr::V6(ip, _) => {
            let mut one = [0u8; 16];
            one[15] = 1;
            *ip == one || *ip == [0; 16] || v4_of_mapped(ip).is_some_and(|v| v[0] == 127)
        }
        _ => false,
    }
}

/// 0.0.0.0 or :: (any port).
pub fn is_wildcard(addr: &Addr) -> bool {
    match addr {
        Addr::V4(ip, _) => *ip == [0; 4],
        Addr::V6(ip, _) => *ip == [0; 16],
        _ => false,
    }
}

/// Whether a socket bound to `local` takes traffic sent to `dest` (both
/// loopback): a wildcard takes its family's addresses (an AF_INET6 one
/// also v4-mapped ones), a specific address only itself. A destination of
/// 0.0.0.0 or :: means this host's 127.0.0.1 / ::1, as Linux.
pub fn accepts(local: &Addr, dest: &Addr) -> bool {
    let norm = |a: &Addr| -> Option<[u8; 16]> {
        match a {
            Addr::V4(ip, _) => Some(mapped(*ip)),
            Addr::V6(ip, _) => Some(*ip),
            _ => None,
        }
    };
    let (Some(l), Some(mut d)) = (norm(local), norm(dest)) else {
        return false;
    };
    if d == [0; 16] {
        d = loopback6();
    } else if d == mapped([0; 4]) {
        d = mapped([127, 0, 0, 1]);
    }
    let dest_v4 = v4_of_mapped(&d).is_some();
    match local {
        Addr::V4([0, 0, 0, 0], _) => dest_v4,
        Addr::V6(ip, _) if *ip == [0; 16] => true,
        _ => l == d,
    }
}

/// An address to report for a socket bound to a wildcard: the loopback
/// address the peer used (`via`), else 127.0.0.1 / ::1.
pub fn concrete(a: Addr, via: Option<&Addr>) -> Addr {
    match (a, via) {
        (Addr::V4([0, 0, 0, 0], p), Some(Addr::V4(ip, _))) => Addr::V4(*ip, p),
        (Addr::V4([0, 0, 0, 0], p), _) => Addr::V4([127, 0, 0, 1], p),
        (Addr::V6(ip, p), via) if ip == [0; 16] => match via {
            Some(Addr::V6(v, _)) => Addr::V6(*v, p),
            Some(Addr::V4(v, _)) => Addr::V6(mapped(*v), p),
            _ => Addr::V6(loopback6(), p),
        },
        (a, _) => a,
    }
}

pub fn loopback6() -> [u8; 16] {
    let mut one = [0u8; 16];
    one[15] = 1;
    one
}

fn mapped(v: [u8; 4]) -> [u8; 16] {
    let mut ip = [0u8; 16];
    ip[10] = 0xff;
    ip[11] = 0xff;
    ip[12..].copy_from_slice(&v);
    ip
}

/// The address a client of `domain` gets when it connects to `dest`.
pub fn client_addr(domain: Domain, dest: &Addr, port: u16) -> Addr {
    match (domain, dest) {
        (Domain::Inet6, Addr::V6(ip, _)) if v4_of_mapped(ip).is_some() => {
            Addr::V6(mapped([127, 0, 0, 1]), port)
        }
        (Domain::Inet6, _) => Addr::V6(loopback6(), port),
        _ => Addr::V4([127, 0, 0, 1], port),
    }
}

/// Decode a sockaddr_in / sockaddr_in6 of `len` bytes. `Ok(None)` is
/// AF_UNSPEC (connect's "disconnect").
pub fn decode(domain: Domain, raw: &[u8]) -> Result<Option<Addr>, Errno> {
    if raw.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = u16::from_le_bytes([raw[0], raw[1]]);
    if family == AF_UNSPEC {
        return Ok(None);
    }
    match domain {
        Domain::Inet => {
            if raw.len() < 16 {
                return Err(Errno::EINVAL);
            }
            if family != AF_INET {
                return Err(Errno::EAFNOSUPPORT);
            }
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            Ok(Some(Addr::V4([raw[4], raw[5], raw[6], raw[7]], port)))
        }
        Domain::Inet6 => {
            if family == AF_INET && raw.len() >= 16 {
                // Linux accepts an AF_INET address on an AF_INET6 socket
                // for connect (as a v4-mapped address).
                let port = u16::from_be_bytes([raw[2], raw[3]]);
                return Ok(Some(Addr::V6(
                    mapped([raw[4], raw[5], raw[6], raw[7]]),
                    port,
                )));
            }
            if raw.len() < 24 {
                return Err(Errno::EINVAL);
            }
            if family != AF_INET6 {
                return Err(Errno::EAFNOSUPPORT);
            }
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&raw[8..24]);
            Ok(Some(Addr::V6(ip, port)))
        }
        Domain::Unix => Err(Errno::EINVAL),
    }
}

/// Encode an address as the socket's family shows it.
pub fn encode(domain: Domain, a: &Addr) -> Vec<u8> {
    let (ip6, port) = match a {
        Addr::V4(ip, port) if domain == Domain::Inet => {
            let mut v = vec![0u8; 16];
            v[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            v[2..4].copy_from_slice(&port.to_be_bytes());
            v[4..8].copy_from_slice(ip);
            return v;
        }
        Addr::V6(ip, port) if domain == Domain::Inet => {
            let v4 = v4_of_mapped(ip).unwrap_or([127, 0, 0, 1]);
            return encode(domain, &Addr::V4(v4, *port));
        }
        Addr::V4(ip, port) => (mapped(*ip), *port),
        Addr::V6(ip, port) => (*ip, *port),
        _ => ([0; 16], 0),
    };
    let mut v = vec![0u8; 28];
    v[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
    v[2..4].copy_from_slice(&port.to_be_bytes());
    v[8..24].copy_from_slice(&ip6);
    v
}
