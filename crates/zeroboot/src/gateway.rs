//! `zeroboot gateway`: the stateless front of a fleet of `zeroboot serve
//! --node-key` nodes (docs/fleet.md).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use zeroboot_server::gateway::{Discovery, GatewayConfig};

#[derive(Args)]
pub struct GatewayArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// A node, as KEY=http://HOST:PORT (its --node-key and address;
    /// repeatable). The static list, for fleets without DNS discovery.
    #[arg(long = "node", value_name = "KEY=URL")]
    nodes: Vec<String>,
    /// Find the nodes by DNS: every address NAME resolves to, on PORT (a
    /// Kubernetes headless Service, e.g.
    /// zeroboot-nodes.default.svc.cluster.local:8080).
    #[arg(long, value_name = "NAME:PORT", conflicts_with = "nodes")]
    nodes_dns: Option<String>,
    /// Ask this DNS server (IP:PORT, UDP then TCP) for --nodes-dns instead
    /// of the system resolver (/etc/resolv.conf); the name is asked as
    /// given, with no search domains, so give it fully qualified.
    #[arg(long, value_name = "IP:PORT", requires = "nodes_dns")]
    dns_server: Option<SocketAddr>,
    /// How often the nodes' health is polled (and the name re-resolved),
    /// in milliseconds.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Connect timeout to a node, in milliseconds: how long a call for a
    /// vanished node's sandbox may wait before it is answered "not found".
    #[arg(long, default_value_t = 500)]
    connect_timeout_ms: u64,
    /// Random candidates compared per placement (the least loaded wins).
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// Nodes with less free memory (MiB) get new sandboxes only when all
    /// candidates are that low.
    #[arg(long, default_value_t = 512)]
    min_free_mb: u64,
}

/// `KEY=http://HOST:PORT` (or a bare URL: the key is learned from it).
fn parse_node(s: &str) -> Result<(String, String)> {
    let (key, url) = match s.split_once('=') {
        Some((k, u)) => (k.trim().to_string(), u.trim()),
        None => (String::new(), s.trim()),
    };
    if !key.is_empty() {
        zeroboot_server::fleet::check_key(&key)?;
    }
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--node {s:?}: the address must be http://HOST:PORT"))?;
    let addr = rest.trim_end_matches('/');
    if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
        bail!("--node {s:?}: the address must be http://HOST:PORT (no path)");
    }
    Ok((key, addr.to_string()))
}

pub fn run(a: GatewayArgs) -> Result<i32> {
    let discovery = match (&a.nodes_dns, a.nodes.is_empty()) {
        (Some(name), _) => {
            if !name.contains(':') {
                bail!("--nodes-dns {name:?}: give NAME:PORT (the nodes' port)");
            }
            Discovery::Dns {
                name: name.clone(),
                server: a.dns_server,
            }
        }
        (None, false) => Discovery::Static(
            a.nodes
                .iter()
                .map(|n| parse_node(n))
                .collect::<Result<_>>()?,
        ),
        (None, true) => bail!(
            "no nodes: give --node KEY=http://HOST:PORT (repeatable) or --nodes-dns NAME:PORT"
        ),
    };
    let config = GatewayConfig {
        bind: SocketAddr::new(a.bind, a.port),
        discovery,
        poll: Duration::from_millis(a.poll_ms.max(50)),
        connect_timeout: Duration::from_millis(a.connect_timeout_ms.max(1)),
        choices: a.choices.max(1),
        min_free_mb: a.min_free_mb,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(zeroboot_server::gateway::serve(config))?;
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_node;

    #[test]
    fn node_flags() {
        assert_eq!(
            parse_node("n1=http://10.0.0.1:8080").unwrap(),
            ("n1".into(), "10.0.0.1:8080".into())
        );
        assert_eq!(
            parse_node("http://h:1/").unwrap(),
            (String::new(), "h:1".into())
        );
        for bad in [
            "n1=10.0.0.1:8080",
            "N1=http://h:1",
            "n1=http://h:1/x",
            "n1=http://h",
        ] {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
    }
}
