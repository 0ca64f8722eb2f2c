//! The nodes' addresses asked of one DNS server (`--dns-server`), for
//! discovery where the system resolver is not the one to ask (a test's
//! dnsmasq on a high port; a cluster DNS the host does not use). One
//! question per record type (A and AAAA), over UDP with EDNS0 (4096-byte
//! answers: a few hundred nodes), and again over TCP when the answer is
//! still truncated, as RFC 7766 asks of a stub resolver. The name is asked
//! as given (no search list): give the fully qualified name.
//!
//! A whole resolver crate (hickory) would bring some sixty crates,
//! including ring and ICU, for these two questions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0:?} is not a DNS name")]
    BadName(String),
    #[error("DNS server {0}: {1}")]
    Io(SocketAddr, #[source] std::io::Error),
    #[error("DNS server {0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("DNS server {0} sent a malformed answer")]
    Malformed(SocketAddr),
    #[error("DNS server {0} answered {1} for {2:?}")]
    Rcode(SocketAddr, &'static str, String),
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// The UDP answer size we accept (EDNS0).
const UDP_SIZE: u16 = 4096;

/// A query for `name`'s records of type `qtype`, with id `id` and an
/// EDNS0 OPT record offering 4096-byte UDP answers.
fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let bad = || DnsError::BadName(name.to_string());
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // Flags: recursion desired; one question, one additional (OPT).
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(bad());
    }
    for label in trimmed.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(bad());
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type, UDP size as class, no extended flags, no data.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&UDP_SIZE.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(q)
}

/// What an answer said.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Addrs(Vec<IpAddr>),
    /// TC set: ask again over TCP.
    Truncated,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            // A pointer ends the name (RFC 1035 §4.1.4).
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l & 0xC0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// The A and AAAA records of an answer to query `id` (a CNAME chain's
/// final addresses included: the records' owner names are not checked
/// against the question, as any stub resolver trusts its server).
fn parse(b: &[u8], id: u16, name: &str, server: SocketAddr) -> Result<Answer, DnsError> {
    let bad = || DnsError::Malformed(server);
    let flags = u16_at(b, 2).ok_or_else(bad)?;
    if u16_at(b, 0) != Some(id) || flags & 0x8000 == 0 {
        return Err(bad());
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0x000F {
        0 => {}
        3 => return Err(DnsError::Rcode(server, "NXDOMAIN", name.to_string())),
        2 => return Err(DnsError::Rcode(server, "SERVFAIL", name.to_string())),
        5 => return Err(DnsError::Rcode(server, "REFUSED", name.to_string())),
        _ => return Err(DnsError::Rcode(server, "an error", name.to_string())),
    }
    let qd = u16_at(b, 4).ok_or_else(bad)?;
    let an = u16_at(b, 6).ok_or_else(bad)?;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at).ok_or_else(bad)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(b, at).ok_or_else(bad)?;
        let rtype = u16_at(b, at).ok_or_else(bad)?;
        let len = usize::from(u16_at(b, at + 8).ok_or_else(bad)?);
        let data = b.get(at + 10..at + 10 + len).ok_or_else(bad)?;
        match (rtype, data.len()) {
            (TYPE_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(a)));
            }
            (TYPE_A | TYPE_AAAA, _) => return Err(bad()),
            _ => {}
        }
        at += 10 + len;
    }
    Ok(Answer::Addrs(out))
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u16::from_ne_bytes(b)
}

async fn ask_udp(server: SocketAddr, q: &[u8], id: u16, name: &str) -> Result<Answer, DnsError> {
    let io = |e| DnsError::Io(server, e);
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
    // Connected: only the server's datagrams are read.
    sock.connect(server).await.map_err(io)?;
    sock.send(q).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(UDP_SIZE)];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        match parse(&buf[..n], id, name, server) {
            // A stray datagram (an older query's answer): keep waiting.
            Err(DnsError::Malformed(_)) if u16_at(&buf[..n], 0) != Some(id) => continue,
            r => return r,
        }
    }
}

async fn ask_tcp(server: SocketAddr, q: &[u8], id: u16, name: &str) -> Result<Answer, DnsError> {
    let io = |e| DnsError::Io(server, e);
    let mut s = tokio::net::TcpStream::connect(server).await.map_err(io)?;
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(q);
    s.write_all(&msg).await.map_err(io)?;
    let len = s.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.map_err(io)?;
    match parse(&buf, id, name, server)? {
        Answer::Truncated => Err(DnsError::Malformed(server)),
        a => Ok(a),
    }
}

async fn ask(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<IpAddr>, DnsError> {
    let id = random_id();
    let q = query(id, name, qtype)?;
    let a = match ask_udp(server, &q, id, name).await? {
        Answer::Truncated => ask_tcp(server, &q, id, name).await?,
        a => a,
    };
    match a {
        Answer::Addrs(v) => Ok(v),
        Answer::Truncated => Err(DnsError::Malformed(server)),
    }
}

/// Every A and AAAA address of `name` that `server` knows, within
/// `timeout`. A name with records of one type only is fine; an error for
/// both types is the error.
pub async fn lookup(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    let both = async {
        let (a, aaaa) = tokio::join!(ask(server, name, TYPE_A), ask(server, name, TYPE_AAAA));
        match (a, aaaa) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Ok(a)
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
            (Err(e), Err(_)) => Err(e),
        }
    };
    tokio::time::timeout(timeout, both)
        .await
        .unwrap_or(Err(DnsError::Timeout(server, timeout)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        "127.0.0.1:53".parse().unwrap()
    }

    /// An answer to `q` with `records` (type, data), the owner names
    /// compressed as pointers to the question.
    fn answer(q: &[u8], flags: u16, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = q[..2].to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend_from_slice(&(records.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        // The question, without the OPT record.
        let qend = skip_name(q, 12).unwrap() + 4;
        b.extend_from_slice(&q[12..qend]);
        for (t, data) in records {
            b.extend_from_slice(&[0xC0, 12]);
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
            b.extend_from_slice(&(data.len() as u16).to_be_bytes());
            b.extend_from_slice(data);
        }
        b
    }

    #[test]
    fn questions_are_encoded_and_answers_read() {
        let q = query(7, "zb-nodes.fleet.test.", TYPE_A).unwrap();
        assert_eq!(&q[12..21], b"\x08zb-nodes");
        let name = "zb-nodes.fleet.test";
        let a = answer(
            &q,
            0x8180,
            &[
                (5, vec![0xC0, 12]),
                (TYPE_A, vec![127, 0, 0, 11]),
                (TYPE_A, vec![127, 0, 0, 12]),
                (TYPE_AAAA, Ipv6Addr::LOCALHOST.octets().to_vec()),
            ],
        );
        assert_eq!(
            parse(&a, 7, name, server()).unwrap(),
            Answer::Addrs(vec![
                "127.0.0.11".parse().unwrap(),
                "127.0.0.12".parse().unwrap(),
                "::1".parse().unwrap(),
            ])
        );
        // Truncated, NXDOMAIN, another id, cut short, a bad A record.
        assert_eq!(
            parse(&answer(&q, 0x8380, &[]), 7, name, server()).unwrap(),
            Answer::Truncated
        );
        let e = parse(&answer(&q, 0x8183, &[]), 7, name, server()).unwrap_err();
        assert!(e.to_string().contains("NXDOMAIN"), "{e}");
        assert!(parse(&a, 8, name, server()).is_err());
        assert!(parse(&a[..a.len() - 3], 7, name, server()).is_err());
        let bad = answer(&q, 0x8180, &[(TYPE_A, vec![1, 2, 3])]);
        assert!(parse(&bad, 7, name, server()).is_err());
        for bad in ["", ".", "a..b", "has space.x", &"x".repeat(64)] {
            assert!(query(1, bad, TYPE_A).is_err(), "{bad:?}");
        }
    }

    /// A server on loopback that truncates over UDP and answers over TCP.
    #[tokio::test]
    async fn truncated_answers_are_asked_again_over_tcp() {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await.unwrap();
                let _ = udp.send_to(&answer(&buf[..n], 0x8380, &[]), from).await;
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                let len = s.read_u16().await.unwrap();
                let mut q = vec![0u8; usize::from(len)];
                s.read_exact(&mut q).await.unwrap();
                let qtype = u16_at(&q, skip_name(&q, 12).unwrap()).unwrap();
                let recs: Vec<(u16, Vec<u8>)> = if qtype == TYPE_A {
                    (1..=200).map(|i| (TYPE_A, vec![10, 0, 0, i])).collect()
                } else {
                    Vec::new()
                };
                let a = answer(&q, 0x8180, &recs);
                let mut msg = (a.len() as u16).to_be_bytes().to_vec();
                msg.extend_from_slice(&a);
                s.write_all(&msg).await.unwrap();
            }
        });
        let got = lookup(addr, "many.nodes.test", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 200);
        assert_eq!(got[199], "10.0.0.200".parse::<IpAddr>().unwrap());
        // Nobody there: a clear timeout, not a hang.
        let quiet = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let e = lookup(
            quiet.local_addr().unwrap(),
            "x.test",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DnsError::Timeout(..)), "{e}");
    }
}
