//! The sandbox's DNS server, in the VMM: queries sent to the resolver
//! address of the image's /etc/resolv.conf are answered here, from the
//! policy's resolution (`policy::Egress::resolve`), so that a domain
//! allowed by name allows the addresses given to this sandbox and nothing
//! else. Only what resolvers send is understood: one question, A / AAAA
//! (other types get an empty answer).

use std::net::IpAddr;

/// The resolver's address (written in the images' /etc/resolv.conf): an
/// address of the sandbox's own loopback, so no guest route leads out.
pub const RESOLVER: [u8; 4] = [127, 0, 0, 53];
pub const PORT: u16 = 53;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;
/// TTL of the answers: short, so that a program asks again (and the
/// policy sees it) rather than trusting an old answer.
const TTL: u32 = 30;

/// A decoded question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub name: String,
    pub qtype: u16,
    /// The question as sent (echoed in the answer).
    question: Vec<u8>,
    rd: bool,
}

/// Why a query could not be answered with addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The policy refuses the name.
    Refused,
    /// The name has no address.
    NoSuchName,
}

/// Decode a query. Err(Some(reply)): malformed but answerable (FORMERR /
/// NOTIMP); Err(None): not even a header (dropped).
pub fn parse(msg: &[u8]) -> Result<Query, Option<Vec<u8>>> {
    if msg.len() < 12 {
        return Err(None);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let rd = flags & 0x0100 != 0;
    let fail = |rcode: u8| Some(header(id, rd, rcode, 0, 0));
    if flags & 0x8000 != 0 {
        // A response sent to us: ignore it.
        return Err(None);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(fail(RCODE_NOTIMP));
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd != 1 {
        return Err(fail(RCODE_FORMERR));
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let Some(&len) = msg.get(i) else {
            return Err(fail(RCODE_FORMERR));
        };
        i += 1;
        if len == 0 {
            break;
        }
        // Compression pointers have no place in a question.
        if len & 0xc0 != 0 || len > 63 {
            return Err(fail(RCODE_FORMERR));
        }
        let Some(l) = msg.get(i..i + len as usize) else {
            return Err(fail(RCODE_FORMERR));
        };
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        i += len as usize;
    }
    let Some(tail) = msg.get(i..i + 4) else {
        return Err(fail(RCODE_FORMERR));
    };
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    if qclass != CLASS_IN || labels.is_empty() {
        return Err(fail(RCODE_REFUSED));
    }
    Ok(Query {
        id,
        name: labels.join("."),
        qtype,
        question: msg[12..i + 4].to_vec(),
        rd,
    })
}

fn header(id: u16, rd: bool, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(&id.to_be_bytes());
    // QR, RD as asked, RA, the rcode.
    let flags: u16 = 0x8000 | if rd { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
    h.extend_from_slice(&flags.to_be_bytes());
    for n in [qd, an, 0, 0] {
        h.extend_from_slice(&n.to_be_bytes());
    }
    h
}

/// The answer to `q`: its addresses of the asked type, or the failure.
pub fn answer(q: &Query, result: Result<&[IpAddr], Failure>) -> Vec<u8> {
    let addrs = match result {
        Err(Failure::Refused) => {
            let mut m = header(q.id, q.rd, RCODE_REFUSED, 1, 0);
            m.extend_from_slice(&q.question);
            return m;
        }
        Err(Failure::NoSuchName) => {
            let mut m = header(q.id, q.rd, RCODE_NXDOMAIN, 1, 0);
            m.extend_from_slice(&q.question);
            return m;
        }
        Ok(a) => a,
    };
    let records: Vec<Vec<u8>> = addrs
        .iter()
        .filter_map(|a| match (q.qtype, a) {
            (TYPE_A, IpAddr::V4(v)) => Some(v.octets().to_vec()),
            (TYPE_AAAA, IpAddr::V6(v)) => Some(v.octets().to_vec()),
            _ => None,
        })
        // Within a UDP answer's 512 bytes.
        .take(16)
        .collect();
    let mut m = header(q.id, q.rd, 0, 1, records.len() as u16);
    m.extend_from_slice(&q.question);
    for r in records {
        // The name: a pointer to the question's (offset 12).
        m.extend_from_slice(&[0xc0, 12]);
        m.extend_from_slice(&q.qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&TTL.to_be_bytes());
        m.extend_from_slice(&(r.len() as u16).to_be_bytes());
        m.extend_from_slice(&r);
    }
    m
}

/// A SERVFAIL for `q` (the network is off).
pub fn server_failure(q: &Query) -> Vec<u8> {
    let mut m = header(q.id, q.rd, RCODE_SERVFAIL, 1, 0);
    m.extend_from_slice(&q.question);
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn an_a_query_gets_its_v4_addresses_and_an_aaaa_query_its_v6_ones() {
        let q = parse(&query("Data.Test", TYPE_A)).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "data.test", TYPE_A)
        );
        let addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let a = answer(&q, Ok(&addrs));
        assert_eq!(&a[..4], &[0x12, 0x34, 0x81, 0x80]);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);
        let q6 = parse(&query("data.test", TYPE_AAAA)).unwrap();
        let a6 = answer(&q6, Ok(&addrs));
        assert_eq!(a6[a6.len() - 1], 1);
        let r = answer(&q, Err(Failure::Refused));
        assert_eq!(r[3] & 0xf, RCODE_REFUSED);
    }

    #[test]
    fn malformed_queries_are_answered_formerr_or_dropped() {
        assert_eq!(parse(&[1, 2, 3]), Err(None));
        let mut m = query("a.test", TYPE_A);
        m.truncate(m.len() - 3);
        let e = parse(&m).unwrap_err().unwrap();
        assert_eq!(e[3] & 0xf, RCODE_FORMERR);
        let mut p = query("a.test", TYPE_A);
        p[12] = 0xc0;
        assert!(parse(&p).is_err());
    }
}
