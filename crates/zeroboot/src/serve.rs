//! `zeroboot serve`: the HTTP API. On first start it builds the images and
//! templates of its languages (Python and Node by default, with progress),
//! then serves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use zeroboot_engine::Language;
use zeroboot_server::ServerConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Executions running at once [default: 2 x CPUs].
    #[arg(long)]
    workers: Option<usize>,
    /// Executions that may wait for a worker before requests get 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Requests per second per API key (0: unlimited).
    #[arg(long, default_value_t = 100)]
    rate_limit: u32,
    /// Languages to serve (each has a template, built on first use).
    #[arg(long, value_delimiter = ',', default_value = "python,node")]
    languages: Vec<String>,
}

pub fn run(a: ServeArgs) -> Result<i32> {
    let keys = zeroboot_server::load_keys()?;
    let mut config = ServerConfig {
        bind: SocketAddr::new(a.bind, a.port),
        queue: a.queue,
        rate_limit: a.rate_limit,
        ..ServerConfig::default()
    };
    if let Some(w) = a.workers {
        config.workers = w.max(1);
    }
    if let Some((k, path)) = keys {
        config.keys = Some(k);
        config.keys_file = Some(path);
    }
    let mut templates = HashMap::new();
    for name in &a.languages {
        let Some(lang) = Language::parse(name.trim()) else {
            anyhow::bail!("unknown language {name:?} in --languages (known: python, node)");
        };
        if templates.contains_key(&lang) {
            continue;
        }
        let t = crate::template::load_or_create(lang)?;
        templates.insert(lang, Arc::new(t));
    }
    if templates.is_empty() {
        anyhow::bail!("--languages names no language");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(zeroboot_server::serve(config, templates))?;
    Ok(0)
}
