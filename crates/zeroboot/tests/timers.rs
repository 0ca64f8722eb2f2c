//! Timers, signals and sessions in the sandbox's kernel: interval timers
//! (setitimer, alarm), POSIX timers, SIGALRM interrupting blocking calls
//! (EINTR and SA_RESTART as Linux decides), pause, sessions and process
//! groups, and the NUMA policy calls, tried with Debian's python3 (and
//! node for process groups). The guest programs are in tests/timers_py/;
//! each prints what Linux prints for it (compared with a native run when
//! written).
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::run_python as py;
use common::*;

#[test]
fn interval_timers_alarm_eintr_and_sa_restart() {
    let o = py(include_str!("timers_py/itimers.py"));
    check(
        &o,
        &[
            "two sleeps True",
            "alarm interrupted sleep True",
            "alarm returns 10",
            "alarm(0) when disarmed 0",
            "getitimer True True",
            "periodic True True",
            "disarmed (0.0, 0.0)",
            "no more after disarm True",
            "busy loop interrupted True",
            "EINTR read b'x' True",
            "restarted read b'x' True",
            "read interrupted True",
            "child killed by SIGALRM",
            "child timers cleared True",
            "negative itimer_error",
            "bad which itimer_error",
            "ITIMER_PROF fired True",
            "pause returned",
            "sigwait SIGALRM",
            "sigtimedwait True True",
            "timeout None True",
            "from a child True",
        ],
    );
}

#[test]
fn posix_timers_signal_none_thread_id_overruns() {
    let o = py(include_str!("timers_py/posix_timers.py"));
    check(
        &o,
        &[
            "gettime True True",
            "periodic SIGUSR1 True",
            "one signal for many expiries True",
            "overrun counted True",
            "delete 0",
            "none after delete True",
            "SIGEV_NONE left True",
            "to the thread True",
            "past time fires True",
            "bad thread Invalid argument",
            "bad signal Invalid argument",
            "bad clock Invalid argument",
            "delete twice -1 Invalid argument",
        ],
    );
}

#[test]
fn sessions_process_groups_and_killpg() {
    let o = py(include_str!("timers_py/sessions.py"));
    check(
        &o,
        &[
            "leader setsid EPERM",
            "own group True True",
            "start_new_session child True True",
            "setsid in a forked child 0",
            "child leads True True",
            "killpg -15 True",
            "process_group True True",
            "killed -9",
            "joined True True",
            "no such group EPERM",
            "both killed [9, 9]",
            "after execve True",
            "setpgid ESRCH",
            "getpgid ESRCH",
            "getsid ESRCH",
            "killpg ESRCH",
        ],
    );
}

#[test]
fn node_detached_children_and_group_kill() {
    let o = run(&[
        "run",
        "--timeout",
        "60",
        "--image",
        "node",
        "--",
        "node",
        "-e",
        include_str!("timers_py/node_groups.js"),
    ]);
    check(
        &o,
        &["group killed SIGTERM", "execSync timeout ETIMEDOUT SIGTERM"],
    );
}

#[test]
fn numa_policy_calls_answer_as_a_one_node_linux() {
    let o = py(include_str!("timers_py/mempolicy.py"));
    check(
        &o,
        &[
            "get default 0 0 0",
            "bind node 0 0",
            "get bind 0 2 1",
            "bind node 1 -22",
            "default with nodes -22",
            "bind without nodes -22",
            "back to default 0",
            "mems allowed 0 1",
            "mbind 0",
            "mbind node 1 -22",
            "node of page 0 0",
            "bad flags -22",
        ],
    );
}

/// Through the server, as a user's code runs: an alarm-based timeout
/// works, and a timer armed by one execution never reaches the next one
/// (the fork reset restores the kernel's timers with the rest).
#[test]
fn alarm_timeouts_over_v1_exec_and_no_timer_survives_a_reset() {
    let s = Server::start(None, &[]);
    let timeout = r#"{"code": "import signal\nclass T(Exception): pass\ndef h(s, f): raise T()\nsignal.signal(signal.SIGALRM, h)\nsignal.alarm(1)\ntry:\n    while True:\n        pass\nexcept T:\n    print('timed out')\nsignal.setitimer(signal.ITIMER_REAL, 0.3)\ntry:\n    import time; time.sleep(10)\nexcept T:\n    print('sleep timed out')"}"#;
    let (st, _, b) = s.post("/v1/exec", None, timeout);
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["stdout"], "timed out\nsleep timed out\n", "{b}");
    assert_eq!(v["exit_code"], 0, "{b}");
    // Arm a timer that would kill the process (SIGALRM's default), then
    // run more code on the reused forks after it would have fired.
    let arm = r#"{"code": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_DFL)\nsignal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)\nsignal.alarm(1)\nprint('armed')"}"#;
    let check = r#"{"code": "import signal, time\ntime.sleep(1.5)\nprint(signal.getitimer(signal.ITIMER_REAL), signal.alarm(0))"}"#;
    for _ in 0..3 {
        let (st, _, b) = s.post("/v1/exec", None, arm);
        assert_eq!(st, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["stdout"], "armed\n", "{b}");
        let (st, _, b) = s.post("/v1/exec", None, check);
        assert_eq!(st, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["stdout"], "(0.0, 0.0) 0\n", "{b}");
        assert_eq!(v["exit_code"], 0, "{b}");
    }
}

#[test]
fn pidfds_poll_signal_and_reap_exactly_their_process() {
    let o = py(include_str!("timers_py/pidfd.py"));
    check(
        &o,
        &[
            "cloexec True",
            "running []",
            "exited True",
            "waitid True 7 True",
            "signal reaped ESRCH",
            "killed True",
            "pid 0 EINVAL",
            "pid -1 EINVAL",
            "no such pid ESRCH",
            "bad flags EINVAL",
            "not a pidfd EBADF",
            "waitid not a pidfd EBADF",
            "nonblocking waitid EAGAIN",
            "WNOHANG None",
            "waitid self ECHILD",
        ],
    );
}

#[test]
fn nice_values_scheduling_policies_preadv2_utime_and_seek_hole() {
    let o = py(include_str!("timers_py/priorities.py"));
    check(
        &o,
        &[
            "nice 0",
            "after set 5 5",
            "nice(2) 7",
            "child inherits 7",
            "other process 10",
            "group 3",
            "clamped 19",
            "no such process ESRCH",
            "bad which EINVAL",
            "user lowers EACCES",
            "user sets root's EPERM",
            "fifo 1 99",
            "rr 1 99",
            "other 0 0",
            "bad policy EINVAL",
            "quantum True",
            "quantum of nobody ESRCH",
            "pwritev2 11",
            "preadv2 11 b'hello world'",
            "at position 5 b'world' 11",
            "unknown flag ENOTSUP",
            "negative offset EINVAL",
            "policy True 0",
            "batch True",
            "getscheduler -1 EINVAL",
            "getparam -1 EINVAL",
            "getscheduler nobody ESRCH",
            "batch priority 5 EINVAL",
            "setaffinity -1 ESRCH",
            "times 1002003000 4005006000",
            "atime only 7000000000",
            "hole 10",
            "hole at end ENXIO",
            "new dir and link show now True True",
            "zip timesarchive.zip",
            "dir times 5000000000 6000000000",
            "renamed keeps them 6000000000",
        ],
    );
}

/// clock_settime as Linux answers a process without CAP_SYS_TIME, and
/// the CPU-time clocks named by a thread or process id (time.
/// pthread_getcpuclockid; test_time used both). Checked natively as an
/// unprivileged user.
#[test]
fn clock_settime_is_refused_and_cpu_clocks_by_id_work() {
    let o = py(include_str!("timers_py/clocks.py"));
    check(
        &o,
        &[
            "set realtime EPERM",
            "set monotonic EINVAL",
            "set unknown clock EINVAL",
            "thread clock is its own id True",
            "thread clock advances True",
            "thread clock resolution True",
            "own process clock ok True",
            "child process clock ok True",
            "reaped child's clock EINVAL",
            "clock descriptor kind EINVAL",
        ],
    );
}
