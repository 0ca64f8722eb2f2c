//! The gateway's view of the nodes: where they are (a static list, or the
//! addresses a DNS name resolves to, as a Kubernetes headless Service
//! answers), what each one's `/v1/health` last said (its key, whether it
//! takes new sandboxes, its live sandboxes, its free memory), and where a
//! new sandbox goes (the best of a few random candidates).
//!
//! Polled every `poll` in the background; a node that fails a poll or a
//! proxied connection is marked down at once, so calls for its ids are
//! answered "not found" without waiting on it again.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Where the nodes are.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// `(key, host:port)`: the key each node must report ("" to learn it).
    Static(Vec<(String, String)>),
    /// `name:port`: every address the name resolves to, on that port;
    /// asked of `server` (`--dns-server`), else of the system resolver.
    Dns {
        name: String,
        server: Option<std::net::SocketAddr>,
    },
}

/// One node as last seen.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:port`.
    pub addr: String,
    /// Its key (from its health; for a static entry, the configured one).
    pub key: String,
    /// It answered its last health poll (and no proxied call since failed
    /// to connect).
    pub up: bool,
    /// It takes new sandboxes (not draining).
    pub ready: bool,
    pub sandboxes: u64,
    pub max_sandboxes: u64,
    pub memory_available_mb: Option<u64>,
    /// Creates sent to it since its last poll (so a burst spreads before
    /// the next poll shows them).
    pub placed: u64,
    /// Why it is down or unusable, for /v1/health.
    pub problem: Option<String>,
}

impl Node {
    /// A node not (yet) seen answering.
    fn unseen(addr: &str, key: &str, problem: Option<String>) -> Node {
        Node {
            addr: addr.to_string(),
            key: key.to_string(),
            up: false,
            ready: false,
            sandboxes: 0,
            max_sandboxes: 1,
            memory_available_mb: None,
            placed: 0,
            problem,
        }
    }

    /// Lower is better: the share of its sandbox limit in use.
    fn load(&self) -> f64 {
        (self.sandboxes + self.placed) as f64 / self.max_sandboxes.max(1) as f64
    }
}

pub struct Nodes {
    discovery: Discovery,
    table: RwLock<Vec<Node>>,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Health poll deadline (connect and answer together).
    poll_timeout: Duration,
    /// A node below this much free memory gets new sandboxes only when
    /// every candidate is.
    min_free_mb: u64,
    /// Candidates drawn per placement.
    choices: usize,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A random number (the kernel's; placement only needs it unpredictable
/// enough to spread gateways' choices).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_le_bytes(b)
}

impl Nodes {
    pub fn new(
        discovery: Discovery,
        connect_timeout: Duration,
        poll_timeout: Duration,
        choices: usize,
        min_free_mb: u64,
    ) -> Arc<Nodes> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_nodelay(true);
        let table = match &discovery {
            Discovery::Static(list) => list
                .iter()
                .map(|(key, addr)| Node::unseen(addr, key, Some("not polled yet".into())))
                .collect(),
            Discovery::Dns { .. } => Vec::new(),
        };
        Arc::new(Nodes {
            discovery,
            table: RwLock::new(table),
            client: Client::builder(TokioExecutor::new()).build(conn),
            poll_timeout,
            min_free_mb,
            choices,
        })
    }

    /// All nodes as last seen.
    pub fn snapshot(&self) -> Vec<Node> {
        read(&self.table).clone()
    }

    /// The address of the up node keyed `key`.
    pub fn addr_of(&self, key: &str) -> Option<String> {
        read(&self.table)
            .iter()
            .find(|n| n.up && n.key == key)
            .map(|n| n.addr.clone())
    }

    /// The key of the node at `addr` ("" when unknown).
    pub fn key_of(&self, addr: &str) -> String {
        read(&self.table)
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.key.clone())
            .unwrap_or_default()
    }

    /// Addresses of the up nodes.
    pub fn up(&self) -> Vec<String> {
        read(&self.table)
            .iter()
            .filter(|n| n.up)
            .map(|n| n.addr.clone())
            .collect()
    }

    /// A proxied call could not connect to `addr`: down until its next
    /// good poll.
    pub fn mark_down(&self, addr: &str, why: &str) {
        for n in write(&self.table).iter_mut().filter(|n| n.addr == addr) {
            if n.up {
                tracing::warn!(node = %n.key, %addr, why, "node down");
            }
            n.up = false;
            n.ready = false;
            n.problem = Some(why.to_string());
        }
    }

    /// A node answered that it drains: no more creates until a poll says
    /// otherwise.
    pub fn mark_draining(&self, addr: &str) {
        for n in write(&self.table).iter_mut().filter(|n| n.addr == addr) {
            n.ready = false;
        }
    }

    /// Where a new sandbox goes, best first, skipping `tried`: the best of
    /// `choices` random ready nodes (the lower load; the more free memory
    /// on a tie), preferring nodes with at least `min_free_mb` free. The
    /// chosen node's `placed` goes up by one.
    pub fn place(&self, tried: &[String]) -> Option<String> {
        let mut t = write(&self.table);
        let ready: Vec<usize> = (0..t.len())
            .filter(|&i| t[i].up && t[i].ready && !tried.contains(&t[i].addr))
            .collect();
        if ready.is_empty() {
            return None;
        }
        let roomy: Vec<usize> = ready
            .iter()
            .copied()
            .filter(|&i| {
                t[i].memory_available_mb
                    .is_none_or(|m| m >= self.min_free_mb)
            })
            .collect();
        let pool = if roomy.is_empty() { ready } else { roomy };
        // Draw `choices` distinct candidates (a partial shuffle).
        let mut pool = pool;
        let k = self.choices.clamp(1, pool.len());
        for i in 0..k {
            let j = i + (random_u64() % (pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        let best = pool[..k].iter().copied().min_by(|&a, &b| {
            t[a].load()
                .total_cmp(&t[b].load())
                .then(t[b].memory_available_mb.cmp(&t[a].memory_available_mb))
        })?;
        t[best].placed += 1;
        Some(t[best].addr.clone())
    }

    /// One round of discovery and health polls (concurrently).
    pub async fn poll(&self) {
        let addrs: Vec<(String, String)> = match &self.discovery {
            Discovery::Static(list) => list.clone(),
            Discovery::Dns { name, server } => match self.resolve(name, *server).await {
                Ok(addrs) => {
                    let mut seen = HashSet::new();
                    addrs
                        .into_iter()
                        .filter(|a| seen.insert(*a))
                        .map(|a| (String::new(), a.to_string()))
                        .collect()
                }
                Err(e) => {
                    // Keep the last table: a DNS hiccup must not empty it.
                    tracing::warn!(%name, error = %e, "node discovery: cannot resolve");
                    return;
                }
            },
        };
        let polls = addrs.iter().map(|(_, a)| self.health(a));
        let answers = futures_util::future::join_all(polls).await;
        let mut table = Vec::with_capacity(addrs.len());
        let old = self.snapshot();
        for ((want, addr), answer) in addrs.into_iter().zip(answers) {
            let prev = old.iter().find(|n| n.addr == addr);
            // A discovered node that stops answering keeps its last key,
            // so /v1/health says which node is down.
            let known = match (want.is_empty(), prev) {
                (true, Some(p)) => p.key.as_str(),
                _ => want.as_str(),
            };
            let mut n = Node::unseen(&addr, known, None);
            match answer {
                Ok(h) => {
                    let node = &h["node"];
                    let key = node["key"].as_str().unwrap_or("").to_string();
                    if key.is_empty() {
                        n.problem = Some("it has no node key (start it with --node-key)".into());
                    } else if !want.is_empty() && key != want {
                        n.problem = Some(format!("it reports node key {key:?}, not {want:?}"));
                    } else {
                        n.key = key;
                        n.up = true;
                        n.ready = node["accepting"].as_bool().unwrap_or(false);
                        n.sandboxes = node["sandboxes"].as_u64().unwrap_or(0);
                        n.max_sandboxes = node["max_sandboxes"].as_u64().unwrap_or(1);
                        n.memory_available_mb = node["memory_available_mb"].as_u64();
                    }
                }
                Err(e) => n.problem = Some(e),
            }
            if let Some(p) = &n.problem {
                if prev.is_none_or(|p| p.up) {
                    tracing::warn!(%addr, problem = %p, "node not usable");
                }
            } else if prev.is_none_or(|p| !p.up) {
                tracing::info!(%addr, node = %n.key, ready = n.ready, "node up");
            }
            table.push(n);
        }
        *write(&self.table) = table;
    }

    /// The addresses of `name` (`host:port`), from `server` or the system
    /// resolver.
    async fn resolve(
        &self,
        name: &str,
        server: Option<std::net::SocketAddr>,
    ) -> Result<Vec<std::net::SocketAddr>, String> {
        let Some(server) = server else {
            return tokio::net::lookup_host(name)
                .await
                .map(|it| it.collect())
                .map_err(|e| e.to_string());
        };
        let (host, port) = name
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{name:?} is not NAME:PORT"))?;
        let ips = super::dns::lookup(server, host, self.poll_timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ips
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, port))
            .collect())
    }

    /// `GET /v1/health` of the node at `addr`.
    async fn health(&self, addr: &str) -> Result<Value, String> {
        let uri: hyper::Uri = format!("http://{addr}/v1/health")
            .parse()
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let get = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("health answered {}", resp.status()));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("health body: {e}"))?
                .to_bytes();
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("health is not JSON: {e}"))
        };
        tokio::time::timeout(self.poll_timeout, get)
            .await
            .unwrap_or_else(|_| Err("health poll timed out".into()))
    }

    /// Poll every `every` until the gateway stops (a weak handle).
    pub fn start_polling(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(nodes) = weak.upgrade() else { return };
                let start = Instant::now();
                nodes.poll().await;
                tracing::trace!(took_ms = start.elapsed().as_millis() as u64, "nodes polled");
            }
        });
    }
}
