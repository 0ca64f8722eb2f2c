//! Preemption of a process that spins in ring 3: it makes no system call
//! and takes no fault, so only a kick of the vCPU (at the end of a
//! timeslice, or when a sleeper's timeout is due) gives the other
//! processes their turn. A kick that landed while the vCPU thread was in
//! the VMM, just before it entered `KVM_RUN`, used to be lost, and the
//! spinner then ran until the sandbox's own timeout (CPython's
//! `subprocess.call(..., timeout=...)` hung). Tried on both ways a
//! sandbox starts: a boot of the image and a fork of the template. The
//! guest program is tests/preemption_py/spinning_children.py; it prints
//! what Linux prints for it (compared with a native run when written).
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::*;

const SCRIPT: &str = include_str!("preemption_py/spinning_children.py");

const WANT: &[&str] = &[
    "subprocess timeout True",
    "short sleeps polled True True",
    "killed True",
    "select timeouts True True",
    "killed True",
    "two spinners [True, True] True",
    "killed [True, True]",
    "alarm to the sleeper True",
    "alarm to pause True",
    "killed True",
    "spinner killed by SIGALRM True",
];

#[test]
fn spinning_children_are_preempted_in_a_booted_image() {
    check(&run_python(SCRIPT), WANT);
}

#[test]
fn spinning_children_are_preempted_in_a_template_fork() {
    check(&run(&["exec", "--timeout", "60", SCRIPT]), WANT);
}

/// The same script natively: the expected lines are Linux's.
#[test]
fn the_expected_lines_are_what_linux_prints() {
    let o = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .unwrap();
    check(&o, WANT);
}

/// A signal that reaches a thread between two waits (a system call of
/// another process had woken it to retry its wait) interrupts the next
/// wait, as on Linux; a SIGKILL used to wait for the wait to end
/// (test_subprocess's test_run_with_shell_timeout_and_capture_output).
#[test]
fn a_signal_pending_before_a_wait_interrupts_it() {
    let script = include_str!("preemption_py/kill_after_poll.py");
    let want = ["plain 9 True", "polled first 9 True"];
    check(&run_python(script), &want);
    let native = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    check(&native, &want);
}
