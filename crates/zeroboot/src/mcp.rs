//! `zeroboot mcp`: an MCP server on stdin/stdout, the way agents (Claude
//! Desktop, Claude Code, Cursor, ...) spawn local tools. With `--url` it
//! carries the session to a running `zeroboot serve` (`mcp_bridge`);
//! without, it runs the engine itself with the default templates, as
//! `zeroboot serve` builds them. Either way the tools are the server
//! crate's (`zeroboot_server::mcp`). stdout carries only MCP: logs and
//! template building go to stderr.

use anyhow::{Context, Result};
use clap::Args;
use zeroboot_server::ServerConfig;

#[derive(Args)]
pub struct McpArgs {
    /// A running `zeroboot serve` (http://host:port, or its /mcp URL).
    /// Without it, sandboxes run in this process.
    #[arg(long)]
    url: Option<String>,
    /// The server's API key (default: $ZEROBOOT_API_KEY). Only with --url.
    #[arg(long)]
    api_key: Option<String>,
    /// Without --url: the languages to serve (templates built on first use).
    #[arg(long, value_delimiter = ',', default_value = "python,node")]
    languages: Vec<String>,
    /// Without --url, when started as root: the user to run as once the
    /// templates are ready (`root` keeps root).
    #[arg(long, default_value = "nobody")]
    user: String,
}

pub fn run(a: McpArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = match &a.url {
        Some(url) => {
            let url = crate::mcp_bridge::endpoint(url)?;
            let key = a
                .api_key
                .clone()
                .or_else(|| std::env::var("ZEROBOOT_API_KEY").ok())
                .filter(|k| !k.is_empty());
            rt.block_on(crate::mcp_bridge::run(url, key))
        }
        None => {
            if a.api_key.is_some() {
                anyhow::bail!("--api-key is for --url (a server's key)");
            }
            embedded(&rt, &a)
        }
    };
    // A read of stdin may still be pending on a blocking thread.
    rt.shutdown_background();
    r.map(|_| 0)
}

/// The engine in this process: the state `zeroboot serve` would have,
/// served to one client over stdio.
fn embedded(rt: &tokio::runtime::Runtime, a: &McpArgs) -> Result<()> {
    // Building templates may run programs that print: keep stdout for MCP.
    let templates = stdout_to_stderr(|| crate::serve::load_templates(&a.languages))??;
    crate::serve::drop_root(&a.user)?;
    let config = ServerConfig {
        vcpu_setup: crate::serve::harden_vcpu,
        ..ServerConfig::default()
    };
    let _guard = rt.enter();
    let state = zeroboot_server::state(config, templates)?;
    tracing::info!("zeroboot MCP server on stdio (embedded engine)");
    rt.block_on(zeroboot_server::mcp::serve_stdio(state))?;
    Ok(())
}

/// Run `f` with file descriptor 1 pointing at stderr.
fn stdout_to_stderr<T>(f: impl FnOnce() -> T) -> Result<T> {
    let saved = rustix::io::dup(std::io::stdout()).context("dup(stdout)")?;
    rustix::stdio::dup2_stdout(std::io::stderr()).context("dup2(stderr, stdout)")?;
    let r = f();
    rustix::stdio::dup2_stdout(&saved).context("restoring stdout")?;
    Ok(r)
}
