//! The Node.js template, tried as a user would: `zeroboot exec --template
//! node` and `"language": "node"` through the API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn node(code: &str) -> std::process::Output {
    run(&["exec", "--template", "node", code])
}

#[test]
fn console_log_arithmetic_and_arrays() {
    let o = node("console.log(1+1)");
    assert_eq!(stdout(&o), "2\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    let o = node("const data=[1,2,3,4,5]; console.log(data.reduce((a,b)=>a+b,0)/data.length)");
    assert_eq!(stdout(&o), "3\n", "stderr: {}", stderr(&o));
}

#[test]
fn top_level_await_and_timers_run_until_the_loop_drains() {
    let o = node("await new Promise(r => setTimeout(r, 20)); console.log(\"done\")");
    assert_eq!(stdout(&o), "done\n", "stderr: {}", stderr(&o));
    // Without await: the timer still fires before the reply.
    let o = node("setTimeout(() => console.log('later'), 30); console.log('now')");
    assert_eq!(stdout(&o), "now\nlater\n", "stderr: {}", stderr(&o));
    // The JavaScript alias, and a clock that moves.
    let o = run(&[
        "exec",
        "--template",
        "javascript",
        "const t = performance.now(); await new Promise(r => setTimeout(r, 50)); console.log(performance.now() - t >= 45, Date.now() > 1.7e12)",
    ]);
    assert_eq!(stdout(&o), "true true\n", "stderr: {}", stderr(&o));
}

#[test]
fn randomness_differs_between_forks() {
    let code = "console.log(crypto.randomUUID(), Math.random(), require('crypto').randomBytes(8).toString('hex'), process.pid)";
    let a = stdout(&node(code));
    let b = stdout(&node(code));
    let (a, b): (Vec<&str>, Vec<&str>) = (
        a.split_whitespace().collect(),
        b.split_whitespace().collect(),
    );
    assert_eq!(a.len(), 4, "{a:?}");
    for i in 0..3 {
        assert_ne!(a[i], b[i], "field {i} repeated: {a:?} {b:?}");
    }
}

#[test]
fn errors_exit_codes_and_the_stack() {
    let o = node("throw new Error(\"x\")");
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("Error: x") && err.contains("[eval]:1"),
        "{err}"
    );
    assert!(!err.contains("agent.js"), "the agent's frames leak: {err}");
    let o = node("Promise.reject(new TypeError('nope'))");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("TypeError: nope"), "{}", stderr(&o));
    assert_eq!(node("process.exit(7)").status.code(), Some(7));
    assert_eq!(node("process.exitCode = 3").status.code(), Some(3));
    let o = node("syntax error here");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SyntaxError"), "{}", stderr(&o));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_timeout() {
    let t = Instant::now();
    let o = run(&[
        "exec",
        "--template",
        "node",
        "--timeout",
        "1",
        "while(true){}",
    ]);
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn files_and_globals_do_not_leak_between_forks() {
    let w = node(
        "require('fs').writeFileSync('/tmp/leak', 'x'); globalThis.LEAK = 1; console.log('w')",
    );
    assert_eq!(stdout(&w), "w\n", "{}", stderr(&w));
    let r = node("console.log(require('fs').existsSync('/tmp/leak'), typeof LEAK)");
    assert_eq!(stdout(&r), "false undefined\n", "{}", stderr(&r));
}

#[test]
fn the_api_serves_node_and_javascript() {
    let s = Server::start(None, &[]);
    for lang in ["node", "javascript"] {
        let (st, _, b) = s.post(
            "/v1/exec",
            None,
            &format!(r#"{{"code": "console.log([1,2,3].map(x => x * 2).join(','))", "language": "{lang}"}}"#),
        );
        assert_eq!(st, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["stdout"], "2,4,6\n", "{b}");
        assert_eq!(v["exit_code"], 0, "{b}");
    }
    let (st, _, b) = s.post("/v1/exec", None, r#"{"code": "x", "language": "ruby"}"#);
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("unknown language"), "{b}");
    // A server started for Python only says so.
    drop(s);
    let s = Server::start(None, &["--languages", "python"]);
    let (st, _, b) = s.post("/v1/exec", None, r#"{"code": "1", "language": "node"}"#);
    assert_eq!(st, 400, "{b}");
    assert!(
        b.contains("not available on this server (templates: python)"),
        "{b}"
    );
}
