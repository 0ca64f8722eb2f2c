//! Commands in a live sandbox: processes the kernel starts itself, with
//! their pipes' far ends on the host, stepped by the sandbox's owner.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zeroboot_engine::{
    CommandEvent, CommandSpec, Language, LiveError, LiveOptions, LiveSandbox, Template,
    TemplateOptions,
};

fn python() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let root = zeroboot_image::ensure(
            &Language::Python.recipe(),
            &zeroboot_image::default_cache_dir(),
            &zeroboot_image::NoProgress,
        )
        .expect("the image");
        Template::create(Language::Python, &root, &TemplateOptions::default()).unwrap()
    })
}

fn live() -> LiveSandbox {
    LiveSandbox::create(python(), LiveOptions::default()).unwrap()
}

fn sh(cmd: &str) -> CommandSpec {
    CommandSpec {
        cmd: "/bin/sh".into(),
        args: vec!["-c".into(), cmd.into()],
        ..Default::default()
    }
}

#[derive(Debug, Default)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// When each stdout chunk arrived.
    at: Vec<Instant>,
    exit_code: Option<i32>,
    signal: Option<u32>,
}

/// Step `sb` until command `pid` ends (or `limit` passes).
fn drive(sb: &mut LiveSandbox, pid: u32, limit: Duration) -> Seen {
    let end = Instant::now() + limit;
    let mut seen = Seen::default();
    while seen.exit_code.is_none() && Instant::now() < end {
        let step = sb.step(Duration::from_millis(20));
        for (p, ev) in sb.take_events() {
            if p != pid {
                continue;
            }
            match ev {
                CommandEvent::Stdout(d) => {
                    seen.stdout.extend(d);
                    seen.at.push(Instant::now());
                }
                CommandEvent::Stderr(d) => seen.stderr.extend(d),
                CommandEvent::Pty(d) => {
                    seen.stdout.extend(d);
                    seen.at.push(Instant::now());
                }
                CommandEvent::End {
                    exit_code, signal, ..
                } => {
                    seen.exit_code = Some(exit_code);
                    seen.signal = signal;
                }
            }
        }
        if !step.busy && seen.exit_code.is_none() {
            let wait = step
                .wake
                .map(|w| w.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(5))
                .min(Duration::from_millis(50));
            std::thread::sleep(wait);
        }
    }
    seen
}

#[test]
fn a_command_runs_with_its_output_and_exit_code() {
    let mut sb = live();
    let pid = sb
        .start(sh("echo hello; echo oops >&2; pwd; exit 3"))
        .unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(s.exit_code, Some(3), "{s:?}");
    assert_eq!(String::from_utf8_lossy(&s.stdout), "hello\n/home/user\n");
    assert_eq!(String::from_utf8_lossy(&s.stderr), "oops\n");
    // Ended commands are gone; the sandbox lives on.
    assert!(sb.commands().is_empty());
    assert!(sb.is_alive());
}

#[test]
fn output_streams_as_it_is_written() {
    let mut sb = live();
    let pid = sb
        .start(CommandSpec {
            cmd: "python3".into(),
            args: vec![
                "-c".into(),
                "import time\nfor i in range(4):\n print(i, flush=True)\n time.sleep(0.25)".into(),
            ],
            ..Default::default()
        })
        .unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(s.exit_code, Some(0), "{s:?}");
    assert_eq!(String::from_utf8_lossy(&s.stdout), "0\n1\n2\n3\n");
    assert_eq!(s.at.len(), 4, "each line on its own: {s:?}");
    for w in s.at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(150),
            "lines {gap:?} apart: not streamed"
        );
    }
}

#[test]
fn stdin_env_and_cwd() {
    let mut sb = live();
    let pid = sb
        .start(CommandSpec {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "echo \"$GREETING $(pwd)\"; cat".into()],
            env: vec![("GREETING".into(), "hi".into())],
            cwd: Some("/tmp".into()),
            stdin: true,
            ..Default::default()
        })
        .unwrap();
    sb.send_stdin(pid, b"from stdin\n").unwrap();
    sb.close_stdin(pid).unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(s.exit_code, Some(0), "{s:?}");
    assert_eq!(String::from_utf8_lossy(&s.stdout), "hi /tmp\nfrom stdin\n");
}

#[test]
fn a_signal_ends_a_command() {
    let mut sb = live();
    let pid = sb.start(sh("exec sleep 30")).unwrap();
    sb.step(Duration::from_millis(50));
    assert_eq!(sb.commands().len(), 1);
    sb.signal(pid, 9).unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(10));
    assert_eq!((s.exit_code, s.signal), (Some(137), Some(9)), "{s:?}");
    assert!(matches!(sb.signal(pid, 9), Err(LiveError::NoCommand(_))));
}

#[test]
fn a_signal_reaches_a_command_busy_in_ring_3() {
    // No syscall in its loop: the signal is delivered between time slices
    // (the code interpreter interrupts cells this way).
    let mut sb = live();
    let pid = sb
        .start(CommandSpec {
            cmd: "/usr/bin/python3".into(),
            args: vec![
                "-c".into(),
                "import signal, os\nsignal.signal(signal.SIGINT, lambda *a: os._exit(5))\nprint('ready', flush=True)\nwhile True: pass".into(),
            ],
            ..Default::default()
        })
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while !out.ends_with(b"ready\n") && Instant::now() < end {
        sb.step(Duration::from_millis(20));
        for (_, ev) in sb.take_events() {
            if let CommandEvent::Stdout(d) = ev {
                out.extend(d);
            }
        }
    }
    assert_eq!(out, b"ready\n");
    sb.signal(pid, 2).unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(10));
    assert_eq!(s.exit_code, Some(5), "{s:?}");
}

#[test]
fn bad_commands_get_clear_errors() {
    let mut sb = live();
    match sb.start(CommandSpec {
        cmd: "no-such-program".into(),
        ..Default::default()
    }) {
        Err(LiveError::Command(m)) => assert!(m.contains("not found"), "{m}"),
        other => panic!("{other:?}"),
    }
    match sb.start(CommandSpec {
        cwd: Some("/nonexistent".into()),
        ..sh("true")
    }) {
        Err(LiveError::Command(m)) => assert!(m.contains("/nonexistent"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The shell's own answer for a missing command.
    let pid = sb.start(sh("no-such-program")).unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(10));
    assert_eq!(s.exit_code, Some(127), "{s:?}");
    assert!(sb.send_stdin(999_999, b"x").is_err());
}

#[test]
fn a_command_started_just_before_a_fork_runs_in_the_copy() {
    let mut src = live();
    let r = src
        .run("x = 6 * 7", Duration::from_secs(20), 1 << 20)
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    // A first fork makes the source's layer; the start below then
    // changes its memory (the new process's stack and page tables) with
    // no run in between, and the next fork must carry that change.
    let first = src.fork(1).unwrap().pop().unwrap().unwrap();
    drop(first);
    let pid = src.start(sh("echo started at $((6 * 7))")).unwrap();
    let mut copy = src.fork(1).unwrap().pop().unwrap().unwrap();
    let s = drive(&mut copy, pid, Duration::from_secs(20));
    assert_eq!(s.exit_code, Some(0), "{s:?}");
    assert_eq!(String::from_utf8_lossy(&s.stdout), "started at 42\n");
    // The source runs it too, alone.
    let s = drive(&mut src, pid, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&s.stdout), "started at 42\n");
}

#[test]
fn commands_and_code_share_the_sandbox() {
    let mut sb = live();
    let r = sb
        .run(
            "open('/tmp/from_code', 'w').write('written by code')",
            Duration::from_secs(20),
            1 << 20,
        )
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let pid = sb
        .start(sh(
            "cat /tmp/from_code; echo -n by a command > /tmp/from_cmd",
        ))
        .unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&s.stdout), "written by code");
    // A command that keeps running does not hold up code runs.
    let bg = sb.start(sh("while true; do sleep 0.05; done")).unwrap();
    let t = Instant::now();
    let r = sb
        .run(
            "print(open('/tmp/from_cmd').read())",
            Duration::from_secs(20),
            1 << 20,
        )
        .unwrap();
    assert_eq!(r.stdout, "by a command\n", "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(sb.commands().len(), 1);
    sb.signal(bg, 15).unwrap();
    let s = drive(&mut sb, bg, Duration::from_secs(10));
    assert_eq!(s.signal, Some(15), "{s:?}");
}

#[test]
fn a_flood_of_output_arrives_whole() {
    let mut sb = live();
    let pid = sb.start(sh("yes | head -c 10000000")).unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(60));
    assert_eq!(s.exit_code, Some(0), "{:?}", s.exit_code);
    assert_eq!(s.stdout.len(), 10_000_000);
    assert!(s.stdout.chunks(2).all(|c| c[0] == b'y'));
}

#[test]
fn an_interactive_shell_on_a_terminal() {
    let mut sb = live();
    let pid = sb
        .start(CommandSpec {
            cmd: "/bin/bash".into(),
            args: vec!["-i".into(), "-l".into()],
            env: vec![("TERM".into(), "xterm".into()), ("PS1".into(), "$ ".into())],
            pty: Some((24, 80)),
            ..Default::default()
        })
        .unwrap();
    // The terminal answers what bash asks of it; arithmetic comes back.
    sb.send_stdin(pid, b"echo $((6*7)); tty; stty size\r")
        .unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !String::from_utf8_lossy(&out).contains("24 80") {
        sb.step(Duration::from_millis(20));
        for (p, ev) in sb.take_events() {
            if let (true, CommandEvent::Pty(d)) = (p == pid, ev) {
                out.extend(d);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.contains("\r\n42\r\n"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("24 80"), "{text:?}");
    sb.resize_pty(pid, 40, 100).unwrap();
    sb.send_stdin(pid, b"stty size; exit 5\r").unwrap();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(s.exit_code, Some(5), "{s:?}");
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("40 100"),
        "{s:?}"
    );
    assert!(sb.close_stdin(pid).is_err());
}

#[test]
fn a_blocked_select_sees_what_arrives_later() {
    // select's sets are its question until it returns: a select that
    // blocked once must still be watching them when data comes.
    let mut sb = live();
    let pid = sb
        .start(CommandSpec {
            cmd: "python3".into(),
            args: vec![
                "-c".into(),
                "import os, select, threading\nr, w = os.pipe()\nthreading.Timer(0.2, lambda: os.write(w, b'x')).start()\nprint(select.select([r], [], [], 10)[0] == [r])".into(),
            ],
            ..Default::default()
        })
        .unwrap();
    let t = Instant::now();
    let s = drive(&mut sb, pid, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&s.stdout), "True\n", "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
