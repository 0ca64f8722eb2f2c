//! `zeroboot conformance`, on a short sample: a few fast CPython test files
//! and every Node program of conformance/node, natively and inside. A file
//! that passes natively must pass inside, unless it is listed below as a
//! known failure with its reason. The full suite is the opt-in
//! `zeroboot conformance python` (docs/conformance.md).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

/// Fast CPython test files (a few seconds each) over the areas the
/// sandbox's kernel serves: files, processes, select, signals, sockets.
const PYTHON_SAMPLE: &[&str] = &[
    "test_bool",
    "test_tempfile",
    "test_select",
    "test_popen",
    "test_pipes",
    "test_wait4",
    "test_file",
    "test_epoll",
    "test_fcntl",
    "test_fileio",
];

/// Sample files known to fail inside, with the missing Linux behaviour
/// (seen with `python3 -m test -v NAME` inside). None at present:
/// test_epoll (EPOLLET) and test_fcntl (dnotify) pass since those were
/// built.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Runs the command; returns its JSON results and the Markdown report.
fn conformance(suite: &str, files: &[&str], extra: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let (md, json) = (dir.path().join("c.md"), dir.path().join("c.json"));
    let mut args = vec![
        "conformance".to_string(),
        suite.into(),
        "--jobs".into(),
        "2".into(),
        "--out".into(),
        md.to_str().unwrap().into(),
        "--json".into(),
        json.to_str().unwrap().into(),
        "--logs".into(),
        dir.path().join("logs").to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().map(|s| s.to_string()));
    let o = zeroboot().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (v, std::fs::read_to_string(&md).unwrap())
}

/// Every file passing natively passes inside, known failures excepted.
fn assert_conforms(v: &Value, known: &[(&str, &str)]) {
    let results = v["results"].as_object().unwrap();
    let mut bad = Vec::new();
    for (file, r) in results {
        let (native, inside) = (&r["native"]["state"], &r["sandbox"]["state"]);
        if native == "pass" && inside != "pass" && !known.iter().any(|(k, _)| k == file) {
            bad.push(format!(
                "{file}: inside {inside} ({}), ENOSYS {}",
                r["sandbox"]["detail"], r["sandbox"]["unimplemented"]
            ));
        }
        if let Some((_, why)) = known.iter().find(|(k, _)| k == file) {
            if inside == "pass" {
                eprintln!("{file} passes inside now (was known to fail: {why}); drop it from KNOWN_FAILURES");
            }
        }
    }
    assert!(
        bad.is_empty(),
        "pass natively, not inside:\n{}",
        bad.join("\n")
    );
}

#[test]
fn python_sample_passes_inside_where_it_passes_natively() {
    let (v, md) = conformance("python", PYTHON_SAMPLE, &["--timeout", "120"]);
    assert_eq!(v["files_done"], PYTHON_SAMPLE.len());
    // The sample means something only when most of it runs natively.
    assert!(
        v["native_pass"].as_u64().unwrap() >= 8,
        "too few sample files pass natively: {v:#}"
    );
    assert_conforms(&v, KNOWN_FAILURES);
    assert!(
        md.contains("Pass rate inside of the files that pass natively"),
        "{md}"
    );
    assert!(md.contains("| test_tempfile |"), "{md}");
}

#[test]
fn node_programs_pass_inside() {
    let (v, md) = conformance("node", &[], &["--timeout", "120"]);
    let results = v["results"].as_object().unwrap();
    for p in [
        "fs",
        "child_process_exec",
        "child_process_spawn",
        "child_process_fork",
        "worker_threads",
        "net_unix",
        "net_tcp",
        "http",
        "zlib",
        "crypto",
    ] {
        let r = &results[p];
        assert_eq!(r["native"]["state"], "pass", "{p} natively: {r:#}");
    }
    assert_conforms(&v, &[]);
    assert!(md.contains("**No hang:**"), "{md}");
}

#[test]
fn a_file_over_its_limit_is_killed_and_reported_as_a_hang() {
    // The http program takes over a second on either side.
    let (v, md) = conformance("node", &["http"], &["--timeout", "0.05"]);
    let r = &v["results"]["http"];
    assert_eq!(r["native"]["state"], "timeout", "{r:#}");
    assert_eq!(r["sandbox"]["state"], "timeout", "{r:#}");
    assert!(md.contains("**Hangs: 1 file(s)"), "{md}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let o = run(&["conformance", "python", "test_no_such_file"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("\"test_no_such_file\" is not a file of this suite"),
        "{}",
        stderr(&o)
    );
    let o = run(&["conformance", "node", "--timeout", "0"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("--timeout must be a positive"),
        "{}",
        stderr(&o)
    );
    let o = run(&["conformance", "node", "--filter", "nothing-matches"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no test files match"), "{}", stderr(&o));
}
