//! AF_UNIX addresses (struct sockaddr_un).

use zeroboot_abi::Errno;

use super::{Addr, AF_UNIX, AF_UNSPEC};

/// sizeof(struct sockaddr_un).
pub const SUN_LEN_MAX: usize = 110;

/// A decoded sockaddr_un: what a bind/connect asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// Only the family: bind autobinds, connect is refused.
    Auto,
    /// AF_UNSPEC (a datagram connect's "disconnect").
    Unspec,
    /// A path as the program wrote it (resolved by the caller).
    Path(String),
    Abstract(Vec<u8>),
}

pub fn decode(raw: &[u8]) -> Result<Name, Errno> {
    if raw.len() < 2 || raw.len() > SUN_LEN_MAX {
        return Err(Errno::EINVAL);
    }
    let family = u16::from_le_bytes([raw[0], raw[1]]);
    if family == AF_UNSPEC {
        return Ok(Name::Unspec);
    }
    if family != AF_UNIX {
        return Err(Errno::EINVAL);
    }
    let path = &raw[2..];
    if path.is_empty() {
        return Ok(Name::Auto);
    }
    if path[0] == 0 {
        return Ok(Name::Abstract(path[1..].to_vec()));
    }
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    let p = crate::vfs::name::from_bytes(&path[..end]);
    Ok(Name::Path(p))
}

/// Encode an address: an unbound socket shows only its family.
pub fn encode(a: &Addr) -> Vec<u8> {
    let mut v = AF_UNIX.to_le_bytes().to_vec();
    match a {
        Addr::Path(p) => {
            v.extend_from_slice(&crate::vfs::name::to_bytes(p));
            v.push(0);
        }
        Addr::Abstract(n) => {
            v.push(0);
            v.extend_from_slice(n);
        }
        _ => {}
    }
    v
}
