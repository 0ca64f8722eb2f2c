//! Pseudo-terminals a guest opens itself (/dev/ptmx, `openpty`,
//! `pty.fork`): the master and slave ends, the line discipline between
//! them, unlockpt, a controlling terminal by TIOCSCTTY, /dev/tty, and the
//! master's EIO once every slave is closed. The guest program is in
//! tests/terminals_py/; it prints what Linux prints for it (python3 3.11
//! as root on Linux 6.x). The host-held ptys of envd's `pty` are tested
//! through the E2B SDK (sdk/python/tests/e2b).
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::run_python as py;

#[test]
fn openpty_line_discipline_and_pty_fork_with_a_controlling_terminal() {
    let o = py(include_str!("terminals_py/openpty.py"));
    check(
        &o,
        &[
            "openpty True True True",
            "ptsname matches True True",
            "TIOCGPTN names it True",
            "master reads b'hello\\r\\n'",
            "slave reads b'typed\\n'",
            "echo b'typed\\r\\n'",
            "raw reads b'abc'",
            "no echo in raw True",
            "winsize (30, 100)",
            "locked slave EIO",
            "unlocked slave opens True",
            "drain b'last'",
            "read after close EIO",
            "from child: child isatty True True",
            "from child: child tty True",
            "from child: via dev tty",
            "from child: sid is pid True",
            "from child: fg group True",
            "from child: ready",
            "from child: ^Cchild got SIGINT",
            "from child: <EIO>",
            "child status 3",
        ],
    );
}
