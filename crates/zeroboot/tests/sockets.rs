//! Local sockets in the sandbox's kernel: AF_UNIX and the loopback, served
//! by the VMM (never a host socket), tried with Debian's python3 and node.
//! The guest programs are in tests/sockets_py/ (Python, and one Node
//! script). Each prints what Linux prints for it (compared with a native
//! run when written), except where a comment says the sandbox differs: no
//! network beyond its loopback, bounds on the VMM's memory.
#![allow(clippy::unwrap_used)]

mod common;

use common::run_python as py;
use common::*;

fn lines(o: &std::process::Output) -> Vec<String> {
    stdout(o).lines().map(String::from).collect()
}

#[test]
fn asyncio_gather_and_sleep_run() {
    // asyncio's self-pipe is a socketpair.
    let o = py(include_str!("sockets_py/asyncio_gather.py"));
    assert_eq!(stdout(&o), "[0, 1, 4]\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn asyncio_streams_over_tcp_and_unix_subprocess_pipes_and_sigpipe() {
    // Non-blocking connects (EINPROGRESS), epoll readiness, and a child
    // killed by SIGPIPE when it writes to a socket nobody reads.
    let o = py(include_str!("sockets_py/asyncio_streams.py"));
    assert_eq!(
        stdout(&o),
        "[b'HI THERE\\n', b'HI THERE\\n', b'from a subprocess\\n']\nsigpipe True\n",
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn unix_sockets_pairs_fork_fd_passing_servers_readiness_eof_epipe() {
    let o = py(include_str!("sockets_py/unix.py"));
    let want = [
        "p0!",
        "p1!",
        "p2!",
        "child exit 0",
        "b'x' through the passed pipe b''",
        "creds [(1, 2, True)]",
        "S_ISSOCK True",
        "bind again EADDRINUSE",
        "b'HELLO PATH' b'' /tmp/zb.sock",
        "b'abstract' b'' 0",
        "connect ECONNREFUSED",
        "connect ENOENT",
        "accept EAGAIN",
        "idle True",
        "readable True",
        "poll True",
        "eof b'' True",
        "send EPIPE",
        "peer reads eof b''",
        "fstat S_IFSOCK True",
        "SO_TYPE 1",
        "(b'm1', b'\\x00zb-v')",
        "b'm2'",
        "dgram ECONNREFUSED",
        "dgram ENOTCONN",
        "timeout EAGAIN",
    ];
    assert_eq!(lines(&o), want, "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn loopback_tcp_and_nothing_beyond_it() {
    let o = py(include_str!("sockets_py/inet.py"));
    let want = [
        "8.8.8.8:53 ENETUNREACH",
        "v6 ENETUNREACH",
        "closed port ECONNREFUSED",
        "ephemeral True",
        "accept EAGAIN",
        "peer True 1",
        "eof b''",
        "127.0.0.1 ok",
        "127.0.1.1 ECONNREFUSED",
        "0.0.0.0 ok",
        "::1 ECONNREFUSED",
    ];
    assert_eq!(lines(&o), want, "stderr: {}", stderr(&o));
}

#[test]
fn http_server_on_127_0_0_1_fetched_by_urllib_from_a_thread_and_a_process() {
    let o = py(include_str!("sockets_py/loopback_http.py"));
    let want = [
        "hello over loopback",
        "child 0",
        "b'dg' 127.0.0.1 True",
        "b'v6'",
    ];
    assert_eq!(lines(&o), want, "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("\"GET /hello.txt HTTP/1.1\" 200"));
}

#[test]
fn adversarial_socket_arguments_get_linux_errors_and_the_vmm_keeps_serving() {
    let o = py(include_str!("sockets_py/adversarial.py"));
    let want = [
        "huge dgram EMSGSIZE",
        "null stream EFAULT",
        "bad msghdr EFAULT",
        "bad msghdr recv EFAULT",
        "bad iovec EFAULT",
        "iovlen EMSGSIZE",
        "garbage fd EBADF",
        "cmsg_len EINVAL",
        "controllen ENOBUFS",
        "254 fds EINVAL",
        "backlog 2^31 0",
        "addrlen EINVAL",
        "null addr EFAULT",
        "optlen ptr EFAULT",
        "neg optlen EINVAL",
        // Linux as root opens a packet socket; a sandbox has none.
        "packet EAFNOSUPPORT",
        "bad type EINVAL",
        "notsock ENOTSOCK",
        // Bounds on the VMM's own memory (Linux as root would let the
        // forced buffer grow).
        "rcvbufforce 425984",
        "flood bounded True",
        "in flight 4 ETOOMANYREFS",
        "still serving b'ok'",
    ];
    assert_eq!(lines(&o), want, "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn node_child_process_talks_over_socketpairs() {
    // libuv gives children socketpairs for stdio; execSync runs /bin/sh.
    let o = run(&[
        "run",
        "--timeout",
        "60",
        "--image",
        "node",
        "--",
        "node",
        "-e",
        "const cp = require('child_process');\
         console.log(cp.execFileSync(process.execPath, ['-e', 'console.log(\"hi\")']).toString().trim());\
         console.log(cp.execSync('echo hi | tr a-z A-Z').toString().trim());\
         const c = cp.spawn(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)']);\
         c.stdout.on('data', d => console.log('echo', d.toString()));\
         c.stdin.end('ping');",
    ]);
    assert_eq!(stdout(&o), "hi\nHI\necho ping\n", "stderr: {}", stderr(&o));
}

#[test]
fn socketpair_round_trip_between_two_processes() {
    let o = py(include_str!("sockets_py/roundtrip.py"));
    let p50: u64 = stdout(&o)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("stdout: {} stderr: {}", stdout(&o), stderr(&o)));
    eprintln!("socketpair 1-byte round trip, p50: {p50} us");
    // A round trip is a handful of syscall exits; far below a timeslice.
    assert!(p50 < 20_000, "p50 {p50} us");
}

#[test]
fn random_socket_calls_never_break_the_vmm() {
    for seed in ["1", "2", "3"] {
        let o = run(&[
            "run",
            "--timeout",
            "60",
            "--image",
            "python",
            "--",
            "python3",
            "-c",
            include_str!("sockets_py/fuzz.py"),
            seed,
        ]);
        let err = stderr(&o);
        for bad in [
            "panicked",
            "internal error",
            "RUST_BACKTRACE",
            "repeats (rip",
        ] {
            assert!(
                !err.contains(bad),
                "seed {seed}: VMM failure {bad:?}: {err}"
            );
        }
        assert_eq!(stdout(&o), "done True\n", "seed {seed}: {err}");
    }
}

#[test]
fn node_http_and_net_over_loopback_and_a_unix_path() {
    let o = run(&[
        "run",
        "--timeout",
        "60",
        "--image",
        "node",
        "--",
        "node",
        "-e",
        include_str!("sockets_py/node_net.js"),
    ]);
    assert_eq!(
        stdout(&o),
        "bad ENETUNREACH\nnode http /x\nunix echo\n",
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn udp_connect_picks_a_source_address_and_disconnect_forgets_it() {
    // glibc's getaddrinfo connects one AF_INET6 UDP socket to each
    // candidate in turn and aborts unless an IPv4 one shows v4-mapped.
    let o = py(include_str!("sockets_py/udp_source.py"));
    common::check_lines(
        &o,
        &[
            "v6 ::1",
            "still v6 after reconnect ::1",
            "disconnect 0",
            "after disconnect :: True",
            "v4-mapped ::ffff:127.0.0.1",
            "wildcard bound then connected True",
            "after disconnect ('0.0.0.0', 0)",
            "bound port kept True",
            "getaddrinfo True",
        ],
    );
}

#[test]
fn urgent_data_to_an_oobinline_reader_arrives_inline() {
    let o = py(include_str!("sockets_py/urgent.py"));
    check_lines(&o, &["oobinline 1", "inline b'ABOR\\r\\nNOOP\\r\\n'"]);
}

#[test]
fn an_ipv6_only_socket_shares_its_port_with_an_ipv4_one_and_short_waits_wait() {
    // asyncio's create_server(host=None) binds 0.0.0.0 and :: (V6ONLY) on
    // one port; its loop sleeps 1e-4 s in select. Checked natively.
    let o = py(include_str!("sockets_py/dual_stack.py"));
    check_lines(
        &o,
        &[
            "dual-stack beside AF_INET: EADDRINUSE",
            "v6only beside AF_INET: bound",
            "second v6only: EADDRINUSE",
            "127.0.0.1 reached AF_INET b'x'",
            "::1 reached AF_INET6 b'x'",
            "v4 to the v6only port: ECONNREFUSED",
            "select returned early 0 times",
            "poll returned early 0 times",
        ],
    );
}
