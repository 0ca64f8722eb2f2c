//! The network fields of requests (E2B's shape: `allow_internet_access`
//! and `network: {allowOut, denyOut}`), turned into a sandbox's egress
//! setup under the operator's policy; the result's and the metrics'
//! network accounting (docs/network.md).

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroboot_engine::{NetOperator, NetSetup, NetStats, SandboxRules};

use crate::api::ApiError;

/// `network` of a request.
/// Other fields of E2B's (allowPublicTraffic, maskRequestHost: inbound
/// traffic, which no sandbox here takes) are ignored.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct NetworkBody {
    #[serde(default, rename = "allowOut", alias = "allow_out")]
    pub allow_out: Vec<String>,
    #[serde(default, rename = "denyOut", alias = "deny_out")]
    pub deny_out: Vec<String>,
}

/// Most rules in one list.
const MAX_RULES: usize = 256;

/// The setup a sandbox runs under: the request's rules (allow by default,
/// as E2B) under the operator's policy. A server whose network is off
/// still takes the fields (E2B's SDK always sends them): the sandbox runs
/// without network and its result says so.
pub fn setup(
    operator: &Arc<NetOperator>,
    allow_internet_access: Option<bool>,
    network: Option<NetworkBody>,
    sandbox: String,
) -> Result<Arc<NetSetup>, ApiError> {
    let n = network.unwrap_or_default();
    if n.allow_out.len() > MAX_RULES || n.deny_out.len() > MAX_RULES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("network.allowOut and network.denyOut take at most {MAX_RULES} entries each"),
        ));
    }
    let rules = SandboxRules::parse(
        allow_internet_access.unwrap_or(true),
        &n.allow_out,
        &n.deny_out,
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("network: {e}")))?;
    Ok(Arc::new(NetSetup {
        operator: operator.clone(),
        rules,
        sandbox,
    }))
}

/// The `network` object of a result.
pub fn stats_json(enabled: bool, s: &NetStats) -> Value {
    let mut v = json!({
        "enabled": enabled,
        "connections": s.connections,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "denied": s.denied,
        "dns_queries": s.dns_queries,
        "throttled": s.throttled,
        "udp_dropped": s.udp_dropped,
    });
    if !enabled {
        v["note"] =
            json!("the server's network is off (zeroboot serve --network policy turns it on)");
    }
    v
}

/// Prometheus lines of the network counters.
pub fn render_metrics(op: &NetOperator, out: &mut String) {
    let c = &op.counters;
    for (name, help, v) in [
        (
            "connections",
            "Host connections sandboxes opened.",
            &c.connections,
        ),
        (
            "denied",
            "Network attempts the egress policy or a limit refused.",
            &c.denied,
        ),
        (
            "bytes_in",
            "Bytes sandboxes received from host connections.",
            &c.bytes_in,
        ),
        (
            "bytes_out",
            "Bytes sandboxes sent through host connections.",
            &c.bytes_out,
        ),
        (
            "dns_queries",
            "Queries to the VMM's resolver.",
            &c.dns_queries,
        ),
        (
            "throttled",
            "Sandbox sends and receives slowed by the bandwidth cap.",
            &c.throttled,
        ),
        (
            "udp_dropped",
            "Sandbox UDP datagrams dropped by the UDP cap.",
            &c.udp_dropped,
        ),
        (
            "limited",
            "Sandbox connections and sockets refused by the connection or socket cap.",
            &c.limited,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP zeroboot_network_{name}_total {help}\n# TYPE zeroboot_network_{name}_total counter\nzeroboot_network_{name}_total {}",
            v.load(Ordering::Relaxed)
        );
    }
}

/// This host's own addresses (always denied to sandboxes): the local
/// routes of /proc/net/fib_trie and the addresses of /proc/net/if_inet6.
pub fn own_addrs() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in t.lines() {
            let l = line.trim_start_matches([' ', '|', '+', '-']);
            if let Ok(ip) = l.trim().parse::<IpAddr>() {
                last = Some(ip);
            } else if l.trim() == "/32 host LOCAL" {
                if let Some(ip) = last {
                    out.push(ip);
                }
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in t.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if hex.len() != 32 {
                continue;
            }
            let mut b = [0u8; 16];
            let ok = (0..16).all(|i| match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(v) => {
                    b[i] = v;
                    true
                }
                Err(_) => false,
            });
            if ok {
                out.push(IpAddr::from(b));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_requests_rules_are_checked_and_bad_ones_named() {
        let op = Arc::new(NetOperator::enabled());
        let body: NetworkBody = serde_json::from_value(
            json!({"allowOut": ["pypi.org", "1.2.3.0/24"], "denyOut": ["0.0.0.0/0"]}),
        )
        .unwrap();
        let s = setup(&op, None, Some(body), "x".into()).unwrap();
        assert!(s.rules.denies_all());
        let bad: NetworkBody = serde_json::from_value(json!({"allowOut": ["not a name"]})).unwrap();
        let e = setup(&op, Some(true), Some(bad), "x".into()).unwrap_err();
        assert!(e.message.contains("not a name"), "{}", e.message);
        assert!(serde_json::from_value::<NetworkBody>(json!({"allowOut": "x"})).is_err());
    }

    #[test]
    fn the_hosts_own_addresses_include_loopback() {
        let a = own_addrs();
        assert!(a.contains(&"127.0.0.1".parse().unwrap()), "{a:?}");
    }
}
