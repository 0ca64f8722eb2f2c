//! `zeroboot exec`: forks of the Python template, tried as a user would.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn exec(args: &[&str]) -> std::process::Output {
    let mut a = vec!["exec"];
    a.extend_from_slice(args);
    run(&a)
}

#[test]
fn numpy_mean_prints_4_5() {
    let o = exec(&["import numpy as np; print(np.arange(10).mean())"]);
    assert_eq!(stdout(&o), "4.5\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn every_fork_gets_fresh_entropy_and_its_own_pid() {
    let code = "import random, numpy, os; print(random.random(), numpy.random.rand(), os.urandom(8).hex(), os.getpid())";
    let a = stdout(&exec(&[code]));
    let b = stdout(&exec(&[code]));
    let (a, b): (Vec<&str>, Vec<&str>) = (
        a.split_whitespace().collect(),
        b.split_whitespace().collect(),
    );
    assert_eq!(a.len(), 4, "{a:?}");
    for i in 0..3 {
        assert_ne!(a[i], b[i], "field {i} repeated: {a:?} {b:?}");
    }
    // Not the template's pid (1): PRNGs keyed on the pid reseed.
    assert_ne!(a[3], "1");
}

#[test]
fn exit_codes_and_tracebacks() {
    let o = exec(&["import sys; sys.exit(3)"]);
    assert_eq!(o.status.code(), Some(3));
    let o = exec(&["import os; os._exit(5)"]);
    assert_eq!(o.status.code(), Some(5));
    let o = exec(&["def f(): 1/0\nf()"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ZeroDivisionError") && err.contains("line 1, in f"),
        "{err}"
    );
    assert!(
        !err.contains("agent.py"),
        "the agent's own frames leak: {err}"
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_timeout() {
    exec(&["pass"]); // the template is ready
    let t = Instant::now();
    let o = exec(&["--timeout", "1", "while True: pass"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[test]
fn a_memory_bomb_raises_memoryerror_inside() {
    let o = exec(&["x = bytearray(10**10)"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("MemoryError"), "{}", stderr(&o));
    let o = exec(&["--memory", "128", "x = bytearray(300 * 2**20)"]);
    assert!(stderr(&o).contains("MemoryError"), "{}", stderr(&o));
    let o = exec(&["print('still serving')"]);
    assert_eq!(stdout(&o), "still serving\n");
}

#[test]
fn an_output_flood_is_truncated_with_a_marker() {
    let o = exec(&[
        "--output-cap",
        "1000",
        "print('x' * 10**7); import sys; print('e' * 5000, file=sys.stderr)",
    ]);
    let out = stdout(&o);
    assert!(
        out.starts_with(&"x".repeat(1000)),
        "{}",
        &out[..50.min(out.len())]
    );
    assert!(
        out.contains("[zeroboot: output truncated, 9999001 more bytes dropped]"),
        "{}",
        &out[out.len().saturating_sub(120)..]
    );
    assert!(stderr(&o).contains("output truncated"), "stderr not capped");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn forks_do_not_see_each_others_files_or_memory() {
    let w = exec(&["open('/tmp/secret','w').write('s3cret'); import builtins; builtins.LEAK = 's3cret'; print('ok')"]);
    assert_eq!(stdout(&w), "ok\n", "{}", stderr(&w));
    let r = exec(&["import os, builtins; print(os.path.exists('/tmp/secret'), getattr(builtins, 'LEAK', None))"]);
    assert_eq!(stdout(&r), "False None\n", "{}", stderr(&r));
}

#[test]
fn a_damaged_template_is_refused_with_a_clear_error() {
    exec(&["pass"]);
    let cache =
        std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/zeroboot/templates");
    // A template dir is `<language>-<image dir>-<build>`: take a python
    // one whose image is in the cache.
    let images = cache.parent().unwrap().join("images");
    let (dir, root) = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("python-")
        })
        .find_map(|t| {
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::read_dir(&images)
                .unwrap()
                .flatten()
                .find(|i| {
                    let image = i.file_name().to_string_lossy().into_owned();
                    i.path().is_dir() && name.contains(&format!("-{image}-"))
                })
                .map(|i| (t.clone(), i.path().join("rootfs")))
        })
        .expect("a python template dir and its image");
    // Damage a copy and load it through the library.
    let copy = tempfile::tempdir().unwrap();
    for f in ["state.bin", "memory.bin"] {
        std::fs::copy(dir.join(f), copy.path().join(f)).unwrap();
    }
    let mut state = std::fs::read(copy.path().join("state.bin")).unwrap();
    let n = state.len();
    state[n - 100] ^= 0xff;
    std::fs::write(copy.path().join("state.bin"), &state).unwrap();
    let err =
        zeroboot_engine::Template::load(zeroboot_engine::Language::Python, &root, copy.path())
            .err()
            .expect("a damaged template must be refused")
            .to_string();
    assert!(err.contains("corrupt") && err.contains("checksum"), "{err}");
    state[..8].copy_from_slice(b"NOTATMPL");
    std::fs::write(copy.path().join("state.bin"), &state).unwrap();
    let err =
        zeroboot_engine::Template::load(zeroboot_engine::Language::Python, &root, copy.path())
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("not a zeroboot template"), "{err}");
}

#[test]
fn children_can_be_signalled_killed_and_timed_out() {
    let o = exec(&[r#"
import os, signal, subprocess, time
print(os.getppid())
p = subprocess.Popen(["sleep", "100"])
p.kill()
print(p.wait())
q = subprocess.Popen(["sleep", "100"])
q.terminate()
print(q.wait())
try:
    subprocess.run(["sleep", "100"], timeout=0.3)
except subprocess.TimeoutExpired:
    print("timed out")
r = subprocess.Popen(["sleep", "100"])
os.kill(r.pid, 0)
os.kill(-os.getpgrp(), 0)
os.kill(r.pid, signal.SIGKILL)
r.wait()
try:
    os.kill(r.pid, 0)
except ProcessLookupError:
    print("reaped")
"#]);
    assert_eq!(
        stdout(&o),
        "0\n-9\n-15\ntimed out\nreaped\n",
        "stderr: {}",
        stderr(&o)
    );
}
