//! The egress policy: which destinations outside the sandbox a guest may
//! reach through a host socket. Decided here, before any host socket
//! exists (docs/network.md).
//!
//! Two layers: the operator's (server-wide: on or off, the few normally
//! forbidden destinations it allows, the resolver, limits) and the
//! sandbox's (E2B's `allow_internet_access` and `network.allowOut` /
//! `denyOut`). Destinations of the always-denied classes (loopback,
//! link-local, private, unique-local, the server's own addresses, and the
//! IPv6 forms that embed such an IPv4 address) are refused unless the
//! operator allows that exact address and port; the sandbox's rules then
//! still apply.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

use super::limit::{Caps, Dir, Rates, Verdict};

/// Errors of parsing a policy or an operator's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("`{0}` is not an IP address, a CIDR block or a domain name")]
    BadRule(String),
    #[error("`{0}` is not an address:port endpoint (e.g. 127.0.0.1:8080 or [::1]:8080)")]
    BadEndpoint(String),
    #[error("`{0}` is not a name=address[,address...] resolver entry")]
    BadHost(String),
}

/// An IP network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4 network also holds the
    /// IPv6 forms of its addresses, as `canonical` gives them).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix as u32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix as u32)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// The IPv4 address an IPv6 address stands for, if it embeds one in a
/// form that reaches it: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
/// (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48).
/// Policy decisions are made on that address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff {
        return IpAddr::V4(tail);
    }
    // ::a.b.c.d (not :: and ::1, which are IPv6's own).
    if o[..12].iter().all(|&b| b == 0) && u32::from(tail) > 1 {
        return IpAddr::V4(tail);
    }
    if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return IpAddr::V4(tail);
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip
}

/// Why a destination is in the always-denied classes (None: it is not).
pub fn special_class(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            Some(match o {
                [0, ..] => "unspecified (0.0.0.0/8)",
                [127, ..] => "loopback",
                [10, ..] => "private (RFC 1918)",
                [172, b, ..] if (16..32).contains(&b) => "private (RFC 1918)",
                [192, 168, ..] => "private (RFC 1918)",
                [169, 254, ..] => "link-local (cloud metadata)",
                [100, b, ..] if (64..128).contains(&b) => "shared (RFC 6598)",
                [192, 0, 0, _] => "IETF protocol assignments",
                [198, 18 | 19, ..] => "benchmarking",
                [a, ..] if a >= 224 => "multicast or reserved",
                _ => return None,
            })
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            if a == Ipv6Addr::UNSPECIFIED {
                Some("unspecified (::)")
            } else if a == Ipv6Addr::LOCALHOST {
                Some("loopback")
            } else if o[0] == 0xfe && o[1] & 0xc0 == 0x80 {
                Some("link-local")
            } else if o[0] & 0xfe == 0xfc {
                Some("unique-local")
            } else if o[0] == 0xff {
                Some("multicast")
            } else if o[0] == 0xfe && o[1] & 0xc0 == 0xc0 {
                Some("site-local")
            } else {
                None
            }
        }
    }
}

/// One rule of `allowOut` / `denyOut`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Net(Cidr),
    /// A domain name (lower case, no trailing dot); `*.example.com`
    /// matches the names under example.com.
    Domain(String),
}

/// A rule as `Rule::parse` reads it back (a checkpoint keeps rules so).
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Net(c) => write!(f, "{}/{}", c.addr, c.prefix),
            Rule::Domain(d) => f.write_str(d),
        }
    }
}

impl Rule {
    pub fn parse(s: &str) -> Result<Rule, PolicyError> {
        let t = s.trim();
        if let Some(c) = Cidr::parse(t) {
            return Ok(Rule::Net(c));
        }
        let name = t.trim_end_matches('.').to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            && bare.bytes().any(|b| b.is_ascii_alphabetic());
        if !ok {
            return Err(PolicyError::BadRule(s.to_string()));
        }
        Ok(Rule::Domain(name))
    }

    /// Whether this domain rule covers `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            Rule::Domain(d) => match d.strip_prefix("*.") {
                Some(base) => name.len() > base.len() && name.ends_with(&format!(".{base}")),
                None => d == name,
            },
            Rule::Net(_) => false,
        }
    }

    /// Whether this rule covers every address (0.0.0.0/0 or ::/0).
    pub fn is_everything(&self) -> bool {
        matches!(self, Rule::Net(c) if c.prefix == 0)
    }
}

/// A sandbox's own rules (E2B's shape): with `allow_internet` every
/// destination is allowed unless `deny_out` covers it; `allow_out` wins
/// over `deny_out`. A domain in `allow_out` allows the addresses the
/// VMM's resolver gave this sandbox for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRules {
    pub allow_internet: bool,
    pub allow_out: Vec<Rule>,
    pub deny_out: Vec<Rule>,
}

impl Default for SandboxRules {
    fn default() -> Self {
        SandboxRules {
            allow_internet: true,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
        }
    }
}

impl SandboxRules {
    pub fn parse(
        allow_internet: bool,
        allow_out: &[String],
        deny_out: &[String],
    ) -> Result<SandboxRules, PolicyError> {
        let parse = |v: &[String]| {
            v.iter()
                .map(|s| Rule::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        let deny_out = parse(deny_out)?;
        if deny_out.iter().any(|r| matches!(r, Rule::Domain(_))) {
            // E2B takes only addresses in denyOut: a name's addresses
            // change under it.
            let bad = deny_out
                .iter()
                .find_map(|r| match r {
                    Rule::Domain(d) => Some(d.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(PolicyError::BadRule(format!(
                "{bad} (denyOut takes IP addresses and CIDR blocks only)"
            )));
        }
        Ok(SandboxRules {
            allow_internet,
            allow_out: parse(allow_out)?,
            deny_out,
        })
    }

    /// Nothing is allowed but what `allow_out` names.
    pub fn denies_all(&self) -> bool {
        !self.allow_internet || self.deny_out.iter().any(Rule::is_everything)
    }

    /// Whether a name may be resolved and what its addresses are granted:
    /// `Some(true)` it is in `allow_out`, `Some(false)` resolve it without
    /// a grant, None refuse.
    pub fn name_verdict(&self, name: &str) -> Option<bool> {
        if self.allow_out.iter().any(|r| r.matches_name(name)) {
            Some(true)
        } else if self.denies_all() {
            None
        } else {
            Some(false)
        }
    }
}

/// Counters of the whole server (metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub denied: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dns_queries: AtomicU64,
    /// Sends and receives that waited for the bandwidth cap.
    pub throttled: AtomicU64,
    /// Datagrams dropped (or refused with EAGAIN) by the UDP cap.
    pub udp_dropped: AtomicU64,
    /// Attempts refused by the connection or socket cap (also in
    /// `denied`).
    pub limited: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The operator's side: server-wide.
#[derive(Debug, Default)]
pub struct Operator {
    /// `--network policy` (false: no sandbox has network).
    pub enabled: bool,
    /// Destinations of the always-denied classes the operator allows,
    /// exactly (address, port).
    pub allow_special: Vec<(IpAddr, u16)>,
    /// The resolver's names (lower case) and their addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Names not in `hosts` go to the host's resolver (false: they do
    /// not resolve).
    pub system_resolver: bool,
    /// Most host sockets one sandbox holds at once.
    pub max_connections: usize,
    /// Bandwidth and UDP caps per sandbox.
    pub rates: Rates,
    /// The server's own addresses (always denied unless allowed).
    pub own_addrs: Vec<IpAddr>,
    pub counters: Counters,
}

/// Default of `Operator::max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Operator {
    /// An operator with the network on and nothing special allowed.
    pub fn enabled() -> Operator {
        Operator {
            enabled: true,
            system_resolver: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ..Operator::default()
        }
    }

    /// Parse `address:port` (e.g. 127.0.0.1:8080, [::1]:8080).
    pub fn parse_endpoint(s: &str) -> Result<(IpAddr, u16), PolicyError> {
        let a: std::net::SocketAddr = s
            .trim()
            .parse()
            .map_err(|_| PolicyError::BadEndpoint(s.to_string()))?;
        Ok((a.ip(), a.port()))
    }

    /// Parse `name=address[,address...]` into the resolver's names.
    pub fn parse_host(s: &str) -> Result<(String, Vec<IpAddr>), PolicyError> {
        let bad = || PolicyError::BadHost(s.to_string());
        let (name, addrs) = s.split_once('=').ok_or_else(bad)?;
        let Rule::Domain(name) = Rule::parse(name).map_err(|_| bad())? else {
            return Err(bad());
        };
        let addrs = addrs
            .split(',')
            .map(|a| a.trim().parse::<IpAddr>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((name, addrs))
    }

    /// Whether the operator allows `ip` (in an always-denied class) on
    /// `port`; port None: on some port (the resolver may return it).
    fn allows_special(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let ip = canonical(ip);
        self.allow_special
            .iter()
            .any(|&(a, p)| canonical(a) == ip && port.is_none_or(|q| q == p))
    }

    /// Why `ip` is always denied here (None: it is not, or the operator
    /// allows it on `port`).
    pub fn forbidden(&self, ip: IpAddr, port: Option<u16>) -> Option<&'static str> {
        let class = special_class(ip).or_else(|| {
            self.own_addrs
                .iter()
                .any(|&a| canonical(a) == canonical(ip))
                .then_some("the server's own address")
        })?;
        // 0.0.0.0 and :: mean "this host": never.
        if class.starts_with("unspecified") {
            return Some(class);
        }
        (!self.allows_special(ip, port)).then_some(class)
    }
}

/// What one sandbox runs under: the operator's side, its own rules, its
/// id for the logs.
#[derive(Debug)]
pub struct Setup {
    pub operator: Arc<Operator>,
    pub rules: SandboxRules,
    pub sandbox: String,
}

/// A sandbox's network use (reported with each result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Host connections opened (TCP connects, UDP sockets).
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Attempts refused by the policy or a limit.
    pub denied: u64,
    pub dns_queries: u64,
    /// Sends and receives slowed by the bandwidth cap.
    #[serde(default)]
    pub throttled: u64,
    /// Datagrams dropped by the UDP cap.
    #[serde(default)]
    pub udp_dropped: u64,
}

/// The per-sandbox side, kept in the kernel's socket table: the setup, the
/// addresses resolution granted, the counts. Not part of a snapshot (a
/// fork gets its own setup from the engine).
#[derive(Debug, Clone, Default)]
pub struct Egress {
    pub setup: Option<Arc<Setup>>,
    /// Addresses the resolver gave this sandbox for an allowed name.
    pub granted: BTreeMap<IpAddr, String>,
    pub stats: NetStats,
    /// The bandwidth and UDP buckets.
    pub caps: Caps,
}

/// Most addresses a sandbox's grants hold (oldest dropped first would
/// need an order; past it new grants are refused).
const MAX_GRANTS: usize = 4096;

impl Egress {
    /// Whether the network is on for this sandbox.
    pub fn enabled(&self) -> bool {
        self.setup.as_ref().is_some_and(|s| s.operator.enabled)
    }

    fn deny(&mut self, dest: &str, why: &str) {
        self.stats.denied += 1;
        if let Some(s) = &self.setup {
            Counters::add(&s.operator.counters.denied, 1);
            tracing::warn!(sandbox = %s.sandbox, destination = dest, reason = why, "network: denied");
        } else {
            tracing::debug!(
                destination = dest,
                reason = why,
                "network: denied (network off)"
            );
        }
    }

    /// The decision for a connection (or datagram) to `ip:port`. Counted
    /// and logged when denied. `Err`: the guest's error.
    pub fn decide(&mut self, ip: IpAddr, port: u16, open_now: usize) -> Result<(), Errno> {
        let dest = std::net::SocketAddr::new(ip, port).to_string();
        let Some(setup) = self.setup.clone().filter(|s| s.operator.enabled) else {
            self.deny(&dest, "network is off");
            return Err(Errno::ENETUNREACH);
        };
        if let Some(class) = setup.operator.forbidden(ip, Some(port)) {
            self.deny(&dest, class);
            return Err(if special_class(ip) == Some("loopback") {
                // As a closed port of the sandbox's own loopback.
                Errno::ECONNREFUSED
            } else {
                Errno::EACCES
            });
        }
        let rules = &setup.rules;
        let canon = canonical(ip);
        let allowed = rules.allow_out.iter().any(|r| match r {
            Rule::Net(c) => c.contains(canon),
            Rule::Domain(_) => self
                .granted
                .get(&canon)
                .is_some_and(|name| r.matches_name(name)),
        });
        let denied = !rules.allow_internet
            || rules.deny_out.iter().any(|r| match r {
                Rule::Net(c) => c.contains(canon),
                Rule::Domain(_) => false,
            });
        if !allowed && denied {
            self.deny(&dest, "the sandbox's policy");
            return Err(Errno::EACCES);
        }
        if open_now >= setup.operator.max_connections {
            self.deny(&dest, "connection limit");
            Counters::add(&setup.operator.counters.limited, 1);
            return Err(Errno::ENOBUFS);
        }
        self.stats.connections += 1;
        Counters::add(&setup.operator.counters.connections, 1);
        Ok(())
    }

    /// A name the guest asked the resolver for: its addresses, those of
    /// the always-denied classes left out (a name cannot open a way to
    /// them: DNS rebinding), granted if the name is allowed.
    pub fn resolve(&mut self, name: &str) -> Result<Vec<IpAddr>, crate::net::dns::Failure> {
        use crate::net::dns::Failure;
        self.stats.dns_queries += 1;
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(setup) = self.setup.clone().filter(|s| s.operator.enabled) else {
            self.deny(&name, "network is off");
            return Err(Failure::Refused);
        };
        Counters::add(&setup.operator.counters.dns_queries, 1);
        let Some(grant) = setup.rules.name_verdict(&name) else {
            self.deny(&name, "name not in the sandbox's allowOut");
            return Err(Failure::Refused);
        };
        let found = match setup.operator.hosts.get(&name) {
            Some(a) => a.clone(),
            None if setup.operator.system_resolver => system_lookup(&name),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for ip in found {
            if let Some(class) = setup.operator.forbidden(ip, None) {
                self.deny(&format!("{name} -> {ip}"), class);
                continue;
            }
            if grant && (self.granted.len() < MAX_GRANTS || self.granted.contains_key(&ip)) {
                self.granted.insert(canonical(ip), name.clone());
            }
            out.push(ip);
        }
        Ok(out)
    }

    /// Whether the operator opened `ip:port` (of the always-denied
    /// classes) to sandboxes.
    pub fn operator_allows(&self, ip: IpAddr, port: u16) -> bool {
        self.setup
            .as_ref()
            .is_some_and(|s| s.operator.enabled && s.operator.allows_special(ip, Some(port)))
    }

    pub fn count_in(&mut self, n: usize) {
        self.stats.bytes_in += n as u64;
        if let Some(s) = &self.setup {
            Counters::add(&s.operator.counters.bytes_in, n as u64);
        }
    }

    pub fn count_out(&mut self, n: usize) {
        self.stats.bytes_out += n as u64;
        if let Some(s) = &self.setup {
            Counters::add(&s.operator.counters.bytes_out, n as u64);
        }
    }

    /// A socket refused for the sandbox's socket cap (`max` sockets).
    pub fn socket_limit(&mut self, max: usize) {
        self.stats.denied += 1;
        let n = self.stats.denied;
        match &self.setup {
            Some(s) => {
                Counters::add(&s.operator.counters.limited, 1);
                if n.is_power_of_two() {
                    tracing::warn!(sandbox = %s.sandbox, max, refused = n,
                        "network: socket cap, socket refused (ENFILE)");
                }
            }
            None => tracing::debug!(max, "socket cap, socket refused (ENFILE)"),
        }
    }

    fn rates(&self) -> Rates {
        self.setup
            .as_ref()
            .map_or(Rates::default(), |s| s.operator.rates)
    }

    /// How much of a stream transfer of `want` bytes the bandwidth cap
    /// lets go now; a wait is counted (and logged now and then).
    pub fn stream_room(&mut self, dir: Dir, want: usize) -> Verdict {
        let rates = self.rates();
        let v = self.caps.stream(dir, want, rates, Instant::now());
        if let Verdict::Wait(_) = v {
            self.throttled(dir, rates);
        }
        v
    }

    /// Whether a datagram may be received now.
    pub fn datagram_in_room(&mut self) -> Verdict {
        let rates = self.rates();
        let v = self.caps.datagram_in(rates, Instant::now());
        if let Verdict::Wait(_) = v {
            self.throttled(Dir::In, rates);
        }
        v
    }

    /// Pay the bandwidth cap for `n` bytes moved.
    pub fn used(&mut self, dir: Dir, n: usize) {
        let rates = self.rates();
        self.caps.used(dir, n, rates, Instant::now());
    }

    /// Whether a datagram of `len` bytes to `dest` may go out (paid for
    /// if so); a refusal is counted and logged now and then.
    pub fn datagram_out(&mut self, len: usize, dest: std::net::SocketAddr) -> bool {
        let rates = self.rates();
        if self.caps.datagram_out(len, rates, Instant::now()) {
            return true;
        }
        self.stats.udp_dropped += 1;
        let n = self.stats.udp_dropped;
        if let Some(s) = &self.setup {
            Counters::add(&s.operator.counters.udp_dropped, 1);
            if n.is_power_of_two() {
                tracing::warn!(sandbox = %s.sandbox, destination = %dest, dropped = n,
                    udp_per_s = rates.udp, bandwidth = rates.bandwidth,
                    "network: UDP cap, datagrams dropped");
            }
        }
        false
    }

    fn throttled(&mut self, dir: Dir, rates: Rates) {
        self.stats.throttled += 1;
        let n = self.stats.throttled;
        if let Some(s) = &self.setup {
            Counters::add(&s.operator.counters.throttled, 1);
            if n.is_power_of_two() {
                tracing::info!(sandbox = %s.sandbox, direction = ?dir, bytes_per_s = rates.bandwidth,
                    waits = n, "network: bandwidth cap, the sandbox is slowed");
            }
        }
    }
}

/// The host's resolution of `name` (getaddrinfo).
fn system_lookup(name: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    match (name, 0u16).to_socket_addrs() {
        Ok(it) => {
            let mut v: Vec<IpAddr> = it.map(|a| a.ip()).collect();
            v.dedup();
            v
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn egress(op: Operator, rules: SandboxRules) -> Egress {
        Egress {
            setup: Some(Arc::new(Setup {
                operator: Arc::new(op),
                rules,
                sandbox: "t".into(),
            })),
            ..Egress::default()
        }
    }

    #[test]
    fn the_always_denied_classes_include_their_ipv6_forms() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(special_class(ip(a)).is_some(), "{a}");
        }
        for a in ["1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "172.32.0.1"] {
            assert!(special_class(ip(a)).is_none(), "{a}");
        }
    }

    #[test]
    fn the_operator_allows_exact_endpoints_but_never_the_unspecified_address() {
        let mut op = Operator::enabled();
        op.allow_special = vec![(ip("127.0.0.1"), 8080), (ip("0.0.0.0"), 8080)];
        let mut e = egress(op, SandboxRules::default());
        assert_eq!(e.decide(ip("127.0.0.1"), 8080, 0), Ok(()));
        assert_eq!(e.decide(ip("::ffff:127.0.0.1"), 8080, 0), Ok(()));
        assert_eq!(e.decide(ip("127.0.0.1"), 8081, 0), Err(Errno::ECONNREFUSED));
        assert_eq!(e.decide(ip("0.0.0.0"), 8080, 0), Err(Errno::EACCES));
        assert_eq!(e.decide(ip("169.254.169.254"), 80, 0), Err(Errno::EACCES));
        assert_eq!(e.decide(ip("1.1.1.1"), 443, 0), Ok(()));
        assert_eq!(e.decide(ip("1.1.1.1"), 443, 256), Err(Errno::ENOBUFS));
        assert_eq!(e.stats.denied, 4);
        assert_eq!(e.stats.connections, 3);
    }

    #[test]
    fn network_off_denies_everything() {
        let mut e = Egress::default();
        assert_eq!(e.decide(ip("1.1.1.1"), 443, 0), Err(Errno::ENETUNREACH));
        let mut e = egress(Operator::default(), SandboxRules::default());
        assert_eq!(e.decide(ip("1.1.1.1"), 443, 0), Err(Errno::ENETUNREACH));
        assert!(e.resolve("example.com").is_err());
    }

    #[test]
    fn allow_out_wins_over_deny_out_and_a_domain_grants_its_resolved_addresses() {
        let mut op = Operator::enabled();
        op.system_resolver = false;
        op.hosts
            .insert("pypi.org".into(), vec![ip("151.101.0.223")]);
        op.hosts.insert("evil.test".into(), vec![ip("151.101.0.9")]);
        op.hosts.insert(
            "rebind.test".into(),
            vec![ip("151.101.0.223"), ip("169.254.169.254")],
        );
        let rules = SandboxRules::parse(
            true,
            &["pypi.org".into(), "rebind.test".into(), "9.9.9.0/24".into()],
            &["0.0.0.0/0".into()],
        )
        .unwrap();
        let mut e = egress(op, rules);
        assert_eq!(e.decide(ip("151.101.0.223"), 443, 0), Err(Errno::EACCES));
        assert_eq!(e.resolve("PyPI.org."), Ok(vec![ip("151.101.0.223")]));
        assert_eq!(e.decide(ip("151.101.0.223"), 443, 0), Ok(()));
        assert_eq!(e.decide(ip("9.9.9.9"), 53, 0), Ok(()));
        assert!(e.resolve("evil.test").is_err());
        // Rebinding: the metadata address is never handed out.
        assert_eq!(e.resolve("rebind.test"), Ok(vec![ip("151.101.0.223")]));
        assert_eq!(e.decide(ip("169.254.169.254"), 80, 0), Err(Errno::EACCES));
    }

    #[test]
    fn rules_parse_cidrs_names_and_wildcards_and_refuse_junk() {
        assert_eq!(
            Rule::parse("10.0.0.0/8"),
            Ok(Rule::Net(Cidr {
                addr: ip("10.0.0.0"),
                prefix: 8
            }))
        );
        let w = Rule::parse("*.npmjs.org").unwrap();
        assert!(w.matches_name("registry.npmjs.org") && !w.matches_name("npmjs.org"));
        for bad in ["", "1.2.3.4/33", "a b", "exa mple.com", "-/-", "123"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
        assert!(SandboxRules::parse(true, &[], &["example.com".into()]).is_err());
        assert_eq!(Operator::parse_endpoint("[::1]:80"), Ok((ip("::1"), 80)));
        assert!(Operator::parse_host("a.test=1.2.3.4,::1").is_ok());
        assert!(Operator::parse_host("a.test").is_err());
    }

    #[test]
    fn rules_read_back_what_they_print() {
        for r in [
            "10.0.0.0/8",
            "::1/128",
            "1.2.3.4/32",
            "*.npmjs.org",
            "pypi.org",
        ] {
            let rule = Rule::parse(r).unwrap();
            assert_eq!(Rule::parse(&rule.to_string()), Ok(rule), "{r}");
        }
        assert_eq!(Rule::parse("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
    }
}
