//! The `zeroboot` command line: the binary's edge, where errors become
//! messages and exit codes.

mod bench;
mod run;

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
    /// Run a Linux x86-64 program in a fresh sandbox.
    Run(run::RunArgs),
    /// Print the syscall compatibility table.
    Syscalls,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZEROBOOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Syscalls => {
            print!("{}", zeroboot_kernel::syscalls::compatibility_table());
            Ok(0)
        }
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

/// The cache directory: `$ZEROBOOT_CACHE`, else `$XDG_CACHE_HOME/zeroboot`,
/// else `~/.cache/zeroboot`.
#[allow(dead_code)]
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZEROBOOT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("zeroboot");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("zeroboot")
}
