//! `zeroboot run` with statically linked programs, tried as a user would.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn busybox_echo_prints_hello() {
    let r = Rootfs::new(&[]);
    let o = run(&[
        "run",
        "--rootfs",
        r.path(),
        "--",
        "/bin/busybox",
        "echo",
        "hello",
    ]);
    assert_eq!(stdout(&o), "hello\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn busybox_sha256sum_matches_the_host() {
    let r = Rootfs::new(&[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    r.write("data/blob", &data);
    let o = run(&[
        "run",
        "--rootfs",
        r.path(),
        "--",
        "/bin/busybox",
        "sha256sum",
        "/data/blob",
    ]);
    let host = std::process::Command::new("sha256sum")
        .arg(r.dir.path().join("data/blob"))
        .output()
        .unwrap();
    let guest_digest = stdout(&o)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let host_digest = stdout(&host).split_whitespace().next().unwrap().to_string();
    assert_eq!(guest_digest, host_digest, "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn busybox_ls_lists_the_rootfs_not_the_host() {
    let r = Rootfs::new(&[]);
    r.write("only-in-rootfs", b"x");
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/busybox", "ls", "/"]);
    let out = stdout(&o);
    let names: Vec<&str> = out.split_whitespace().collect();
    assert!(names.contains(&"only-in-rootfs"), "{out}");
    assert!(names.contains(&"bin"), "{out}");
    assert!(!names.contains(&"usr"), "host directories leaked: {out}");
    assert!(!names.contains(&"root"), "host directories leaked: {out}");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn static_c_program_allocates_uses_avx2_reads_a_file_and_returns_7() {
    let r = Rootfs::new(&["alloc_avx_file"]);
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/alloc_avx_file"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(7),
        "stdout: {out} stderr: {}",
        stderr(&o)
    );
    // Every page got (page index & 0xff); 25600 pages sum to this.
    let expect: u64 = (0..25600u64).map(|i| i & 0xff).sum();
    assert!(
        out.contains(&format!("touched 100 MiB, check {expect}")),
        "{out}"
    );
    assert!(out.contains("avx2 sum 2016"), "{out}");
    assert!(out.contains("read 11 bytes: hello file"), "{out}");
}

#[test]
fn null_dereference_exits_139_with_a_reason() {
    let r = Rootfs::new(&["faults"]);
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/faults", "null"]);
    assert_eq!(o.status.code(), Some(139));
    let err = stderr(&o);
    assert!(
        err.contains("SIGSEGV") && err.contains("address 0x0"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("zeroboot:")).count(),
        1,
        "{err}"
    );
}

#[test]
fn cpu_exceptions_map_to_linux_signals() {
    let r = Rootfs::new(&["faults"]);
    for (case, code, sig) in [
        ("divzero", 136, "SIGFPE"),
        ("ud", 132, "SIGILL"),
        ("abort", 134, "SIGABRT"),
    ] {
        let o = run(&["run", "--rootfs", r.path(), "--", "/bin/faults", case]);
        assert_eq!(o.status.code(), Some(code), "{case}: {}", stderr(&o));
        assert!(stderr(&o).contains(sig), "{case}: {}", stderr(&o));
    }
}

#[test]
fn signal_handlers_run_on_a_linux_frame() {
    let r = Rootfs::new(&["faults"]);
    let o = run(&[
        "run",
        "--rootfs",
        r.path(),
        "--",
        "/bin/faults",
        "segv-handler",
    ]);
    assert_eq!(
        stdout(&o),
        "handler: signal 11 at 0x1234\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(42));
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/faults", "raise"]);
    assert_eq!(stdout(&o), "ignored SIGUSR1\n");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn infinite_loop_is_stopped_by_the_timeout() {
    let r = Rootfs::new(&["faults"]);
    let t = Instant::now();
    let o = run(&[
        "run",
        "--timeout",
        "1",
        "--rootfs",
        r.path(),
        "--",
        "/bin/faults",
        "spin",
    ]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
}

#[test]
fn allocation_loop_under_the_memory_limit_sees_enomem() {
    let r = Rootfs::new(&["faults"]);
    let o = run(&[
        "run",
        "--memory",
        "64",
        "--rootfs",
        r.path(),
        "--",
        "/bin/faults",
        "alloc",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("Cannot allocate memory"),
        "{out} {}",
        stderr(&o)
    );
    let mib: u64 = out.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((32..=64).contains(&mib), "{out}");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn unsupported_syscall_gets_enosys_and_is_logged_by_name() {
    let r = Rootfs::new(&["faults"]);
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/faults", "enosys"]);
    assert!(
        stdout(&o).contains("Function not implemented"),
        "{}",
        stdout(&o)
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("io_uring_setup"), "{}", stderr(&o));
}

#[test]
fn paths_cannot_escape_the_rootfs() {
    let r = Rootfs::new(&[]);
    // Symlinks in the image that point outside it, absolute and relative.
    std::os::unix::fs::symlink("/etc/passwd", r.dir.path().join("abs-link")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../etc/passwd",
        r.dir.path().join("etc/rel-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/", r.dir.path().join("rootlink")).unwrap();
    for path in [
        "/../../../../etc/passwd",
        "/abs-link",
        "/etc/rel-link",
        "/rootlink/../etc/passwd",
        "/proc/self/root/../etc/passwd",
        "/proc/self/cwd/../../etc/passwd",
        "/dev/../../etc/passwd",
    ] {
        let o = run(&[
            "run",
            "--rootfs",
            r.path(),
            "--",
            "/bin/busybox",
            "cat",
            path,
        ]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "{path} was readable: {}",
            stdout(&o)
        );
        assert!(
            !stdout(&o).contains("root:"),
            "{path} leaked the host's passwd"
        );
    }
    let o = run(&[
        "run",
        "--rootfs",
        r.path(),
        "--",
        "/bin/busybox",
        "ls",
        "/rootlink/",
    ]);
    assert!(!stdout(&o).contains("usr"), "{}", stdout(&o));
}

#[test]
fn missing_and_corrupt_programs_get_clear_errors() {
    let r = Rootfs::new(&[]);
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/nope"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
    r.write(
        "bin/corrupt",
        b"\x7fELF\x02\x01\x01garbage that is not an ELF header at all....",
    );
    std::fs::set_permissions(
        r.dir.path().join("bin/corrupt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/corrupt"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("ELF"), "{}", stderr(&o));
    let o = run(&["run", "--rootfs", r.path(), "--", "/etc/hello.txt"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("not an executable"), "{}", stderr(&o));
}

#[test]
fn host_program_without_a_rootfs_sees_an_empty_root() {
    let prog = guest_program("alloc_avx_file");
    let o = run(&["run", "--", prog.to_str().unwrap(), "/etc/hello.txt"]);
    // The file does not exist in the empty root.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

#[test]
fn syscalls_command_prints_the_table() {
    let o = run(&["syscalls"]);
    let out = stdout(&o);
    assert!(out.contains("| 257 | openat | partial |"), "{out}");
    assert!(
        out.contains("| 425 | io_uring_setup | unimplemented |"),
        "{out}"
    );
    assert!(out.contains("| 41 | socket | partial |"), "{out}");
}

#[test]
fn memory_changes_to_touched_pages_take_effect_as_on_linux() {
    let r = Rootfs::new(&["mm_ops"]);
    let native = std::process::Command::new(guest_program("mm_ops"))
        .output()
        .unwrap();
    assert_eq!(
        native.status.code(),
        Some(0),
        "the check itself fails natively"
    );
    let o = run(&["run", "--rootfs", r.path(), "--", "/bin/mm_ops"]);
    assert_eq!(stdout(&o), stdout(&native), "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn threads_share_the_vcpu_with_futexes_preemption_and_signals() {
    let r = Rootfs::new(&["threads"]);
    let o = run(&[
        "run",
        "--timeout",
        "20",
        "--rootfs",
        r.path(),
        "--",
        "/bin/threads",
    ]);
    let out = stdout(&o);
    assert!(!out.contains("FAIL"), "{out}\n{}", stderr(&o));
    assert_eq!(out.lines().count(), 7, "{out}\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn processes_fork_vfork_exec_wait_and_scripts() {
    let r = Rootfs::new(&["procs"]);
    let o = run(&[
        "run",
        "--timeout",
        "20",
        "--rootfs",
        r.path(),
        "--",
        "/bin/procs",
    ]);
    let out = stdout(&o);
    assert!(!out.contains("FAIL"), "{out}\n{}", stderr(&o));
    assert_eq!(out.matches("ok ").count(), 7, "{out}\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}
