//! The `zeroboot` command line: the binary's edge, where errors become
//! messages and exit codes.

mod bench;
mod bench_api;
mod bench_code;
mod bench_commands;
mod bench_compare;
mod bench_fleet;
mod bench_fork;
mod bench_fork_live;
mod bench_mcp;
mod bench_net;
mod bench_sandboxes;
mod bench_soak;
mod conformance;
mod conformance_report;
mod exec;
mod gateway;
mod image;
mod mcp;
mod mcp_bridge;
mod run;
mod serve;
mod template;
mod test_http;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "zeroboot",
    version,
    about = "Hardware-isolated code sandboxes: KVM VMs whose kernel lives in the VMM"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API (builds the Python image and template on first use).
    Serve(serve::ServeArgs),
    /// Front a fleet of nodes (`serve --node-key`): place sandboxes, route
    /// calls by sandbox id (docs/fleet.md).
    Gateway(gateway::GatewayArgs),
    /// Serve MCP (Model Context Protocol) over stdio, for an agent that
    /// spawns it: to a running server (--url), or with its own engine.
    Mcp(mcp::McpArgs),
    /// Run a Linux x86-64 program in a fresh sandbox.
    Run(run::RunArgs),
    /// Run a code snippet in a fresh fork of a template.
    Exec(exec::ExecArgs),
    /// Create templates (parked runtimes to fork).
    Template(template::TemplateArgs),
    /// Build, find and list runtime images (root filesystems from Debian packages).
    Image(image::ImageArgs),
    /// Print the syscall compatibility table.
    Syscalls,
    /// A platform's own tests per file, natively and in the sandbox, side
    /// by side; writes docs/conformance.md.
    Conformance {
        #[command(subcommand)]
        which: conformance::Suite,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() {
    let default_level = if matches!(
        std::env::args().nth(1).as_deref(),
        Some("serve" | "gateway")
    ) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZEROBOOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Gateway(a) => gateway::run(a),
        Cmd::Mcp(a) => mcp::run(a),
        Cmd::Image(a) => image::run(a),
        Cmd::Exec(a) => exec::run(a),
        Cmd::Template(a) => template::run(a),
        Cmd::Syscalls => {
            print!("{}", zeroboot_kernel::syscalls::compatibility_table());
            Ok(0)
        }
        Cmd::Conformance { which } => conformance::run(which),
        Cmd::Bench { which } => bench::run(which).map(|_| 0),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("zeroboot: {e:#}");
            std::process::exit(125);
        }
    }
}

/// The cache directory (images, templates).
pub fn cache_dir() -> PathBuf {
    zeroboot_image::default_cache_dir()
}
