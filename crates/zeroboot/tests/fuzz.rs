//! Syscall fuzzing through the real VM path (issue 8): the static guest
//! program tests/guest/fuzz_syscalls.c issues random syscalls with random
//! and boundary arguments and random pointers from worker processes
//! inside one sandbox; the VMM must never fail, panic or report an
//! internal error. CI runs a short version; the long runs and their
//! figures are in docs/fuzzing.md.
//!
//! `ZEROBOOT_FUZZ_SYSCALLS` (default 20000) and `ZEROBOOT_FUZZ_SEED`
//! (default 1) change the run.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A root with /tmp, /etc and the fuzzer at /bin/fuzz_syscalls (the
/// sandbox writes only to its private in-memory layer).
fn fuzz_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/hello.txt"), "hello file\n").unwrap();
    std::fs::copy(guest_program("fuzz_syscalls"), r.join("bin/fuzz_syscalls")).unwrap();
    dir
}

/// The value of `key=` in the fuzzer's summary line.
fn field(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary:?}"))
}

/// What in the VMM's stderr means the VMM, not the guest, failed: a Rust
/// panic, an internal error (reported for the first process, logged for
/// the others), a fault the VMM resolved but the guest kept taking, or an
/// error of the run itself.
const VMM_FAILURES: &[&str] = &[
    "panicked",
    "internal error",
    "repeats (rip",
    "RUST_BACKTRACE",
    "cannot create the sandbox",
];

/// Run the fuzzer with `args` in a sandbox and check that the VMM never
/// failed; returns the summary line.
fn run_fuzzer(args: &[&str]) -> String {
    let root = fuzz_root();
    let start = std::time::Instant::now();
    let o = zeroboot()
        // Children's deaths (with the VMM's reason) are logged at debug.
        .env("ZEROBOOT_LOG", "zeroboot_kernel::sandbox=debug")
        .args([
            "run",
            "--timeout",
            "900",
            "--rootfs",
            root.path().to_str().unwrap(),
            "--",
            "/bin/fuzz_syscalls",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    let tail: String = err
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        o.status.code(),
        Some(0),
        "zeroboot or the fuzzer's parent failed\nstdout:\n{out}\nstderr (tail):\n{tail}"
    );
    for bad in VMM_FAILURES {
        let hits: Vec<&str> = err.lines().filter(|l| l.contains(bad)).take(5).collect();
        assert!(hits.is_empty(), "VMM failure {bad:?}:\n{}", hits.join("\n"));
    }
    let summary = out
        .lines()
        .find(|l| l.starts_with("fuzz: done"))
        .unwrap_or_else(|| panic!("no summary\nstdout:\n{out}\nstderr (tail):\n{tail}"))
        .to_string();
    assert_eq!(field(&summary, "abandoned"), 0, "{summary}");
    eprintln!("{out}(in {:.1} s)", start.elapsed().as_secs_f64());
    summary
}

#[test]
fn random_syscalls_never_break_the_vmm() {
    let count: u64 = std::env::var("ZEROBOOT_FUZZ_SYSCALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("ZEROBOOT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let summary = run_fuzzer(&[&seed.to_string(), &count.to_string()]);
    assert!(field(&summary, "syscalls") >= count, "{summary}");
}

/// Every syscall number 0..=460 with boundary arguments (0, -1, 2^63-1,
/// 2^64-1, 32-bit -1, unmapped and kernel-half pointers), one pattern at
/// a time (the sentry issue's sweep).
#[test]
fn every_syscall_number_with_boundary_arguments_never_breaks_the_vmm() {
    let summary = run_fuzzer(&["sweep"]);
    // 461 numbers x 57 patterns.
    assert_eq!(field(&summary, "syscalls"), 461 * 57, "{summary}");
}

#[test]
fn the_fuzzer_refuses_to_run_outside_a_sandbox() {
    // Random syscalls as root on a real kernel are destructive: the guest
    // program checks uname before doing anything.
    let o = std::process::Command::new(guest_program("fuzz_syscalls"))
        .args(["1", "10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("refusing"), "{}", stderr(&o));
}
