//! Readiness and notification in the sandbox's kernel: edge-triggered
//! epoll, queued signals with their siginfo, and directory notification
//! (dnotify), tried with Debian's python3. The guest programs are in
//! tests/events_py/; each prints what Linux prints for it (compared with
//! a native run when written).
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::run_python as py;

#[test]
fn epoll_edge_triggered_and_oneshot() {
    let o = py(include_str!("events_py/epoll_edge.py"));
    check(
        &o,
        &[
            "empty []",
            "write True",
            "no news []",
            "more data True",
            "read b'a' []",
            "drain b'b' []",
            "after drain True",
            "level True True",
            "level drained []",
            "writable True []",
            "full 65536 []",
            "room True []",
            "pair writable True",
            "pair no news []",
            "pair data True",
            "pair read b'he' []",
            "pair read all b'llo' True",
            "pair data again True []",
            "modify rearms True []",
            "after unregister True",
            "hangup True []",
            "oneshot True []",
            "oneshot disabled []",
            "rearmed True []",
            "nested news True",
            "inner True",
            "nested quiet [] []",
            "nested again True",
            "inner drained True",
            "blocked wait True",
        ],
    );
}

#[test]
fn signal_queues_siginfo_and_sigqueue() {
    let o = py(include_str!("events_py/sigqueue.py"));
    check(
        &o,
        &[
            "pending True",
            "rt True -1 True 11",
            "rt True -1 True 22",
            "rt True -1 True 33",
            "drained EAGAIN",
            "standard -1 7 EAGAIN",
            "tgkill True True True",
            "kill True 0 True",
            "child SI_USER EPERM",
            "child SI_TKILL EPERM",
            "child queue 0",
            "from child -1 True 99 EAGAIN",
            "self SI_USER 0 0",
            "bad pid ESRCH ESRCH",
            "bad signal EINVAL",
            "tgsigqueueinfo 0",
            "thread 44",
            "bad tid -1 EINVAL",
            "pidfd 0 55",
            "pidfd mismatch -1 EINVAL",
            "pidfd plain 0",
            "proc dir 0",
            "handled True",
            "default action True",
        ],
    );
}

#[test]
fn dnotify_signals_directory_changes() {
    let o = py(include_str!("events_py/dnotify.py"));
    check(
        &o,
        &[
            "multishot 0",
            "create ['SIGIO']",
            "again ['SIGIO', 'SIGIO']",
            "cleared 0",
            "oneshot ['SIGIO']",
            "setsig 0 34",
            "not asked []",
            "rename ['RT']",
            "after close []",
            "file ENOTDIR",
            "bad signal EINVAL",
            "file cleared 0",
        ],
    );
}
