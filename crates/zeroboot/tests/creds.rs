//! Credentials in the sandbox's kernel: the setuid family with Linux's
//! rules, ownership of what a process creates, chown's rules, and the
//! permission checks (EACCES, EPERM, the sticky /tmp) an unprivileged
//! process meets, tried with Debian's python3 as root. The guest program
//! is tests/creds_py/creds.py; the expected lines are what it prints when
//! run natively as root on Linux.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn setuid_family_ownership_and_permission_checks_as_linux() {
    let o = run_python(include_str!("creds_py/creds.py"));
    let got = stdout(&o);
    let got: Vec<&str> = got.lines().collect();
    let want = [
        "root (0, 0, 0) (0, 0, 0) []",
        "root's file (0, 0)",
        "groups [27]",
        "user (1000, 1000, 1000) (1000, 1000, 1000)",
        "setuid(0) EPERM",
        "setreuid(-1, 0) EPERM",
        "setresuid(-1, 0, -1) EPERM",
        "setgid(0) EPERM",
        "setgroups EPERM",
        "setuid(1000) ok",
        "write root's file EACCES",
        "read root's file root's",
        "create in /etc EACCES",
        "mkdir in /etc EACCES",
        "unlink in /etc EACCES",
        "chmod root's file EPERM",
        "list /root EACCES",
        "mine (1000, 1000) (1000, 1000)",
        "give away EPERM",
        "to a group of mine ok (1000, 27)",
        "to another group EPERM",
        "chown root's file ok EPERM",
        "access True False True True",
        "chmod mine ok",
        "unlink root's file ok",
        "sticky unlink EPERM EPERM",
        "own in sticky ok ok",
        "root chowns ok (0, 0)",
        "seteuid (0, 1000, 0) write EACCES",
        "back (0, 0, 0) write ok",
        "setfsuid 0 1000 1000",
        "setfsuid unprivileged 1000 1000",
        "after exec (1000, 1000, 1000) (1000, 1000, 1000)",
    ];
    assert_eq!(got, want, "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}
