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
