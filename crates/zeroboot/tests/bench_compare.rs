//! `zeroboot bench compare` on a tiny run count: it runs, checks every
//! peer's output, and writes the report (Markdown and JSON).
#![allow(clippy::unwrap_used)]

use std::process::Command;

const REQUIRED: &[&str] = &[
    "zeroboot (reset fork)",
    "zeroboot (new VM)",
    "python3 -c (host)",
    "forkserver (host)",
    "bubblewrap",
];

const SNIPPETS: &[&str] = &[
    "print(1+1)",
    "numpy dot",
    "CPU loop (N=",
    "10 MiB /tmp write+read",
];

#[test]
fn bench_compare_runs_and_writes_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    let o = Command::new(env!("CARGO_BIN_EXE_zeroboot"))
        .args(["bench", "compare", "--runs", "2", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench compare failed:\n{stderr}");
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(
        md.contains("<!-- zeroboot bench compare: begin -->"),
        "{md}"
    );
    assert!(
        md.contains("| peer | snippet | runs | p50 ms | p99 ms |"),
        "{md}"
    );
    assert!(md.contains("zeroboot bench compare --runs 2"), "{md}");

    // The further peers: each either ran (and has rows) or is reported as
    // not installed / failed by the command itself.
    let mut peers: Vec<String> = REQUIRED.iter().map(|s| s.to_string()).collect();
    let tried = md
        .split("**Further peers tried**")
        .nth(1)
        .expect("the peers-tried table");
    for line in tried.lines().filter(|l| l.starts_with("| ")).skip(1) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (name, status) = (cells[0].trim_start_matches("| "), cells[2]);
        if status == "ran" {
            peers.push(name.to_string());
        } else {
            assert!(
                status.starts_with("not installed")
                    || status.starts_with("failed here")
                    || status == "not run",
                "{line}"
            );
        }
    }
    for p in &peers {
        for s in SNIPPETS {
            let row = md
                .lines()
                .find(|l| l.starts_with(&format!("| {p} | {s}")))
                .unwrap_or_else(|| panic!("no row for {p} / {s} in\n{md}"));
            let cells: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cells[2], "2", "{row}");
            let p50: f64 = cells[3].parse().unwrap();
            assert!(p50 > 0.0, "{row}");
        }
    }
    assert!(md.contains("**Host memory per live instance**"), "{md}");

    // --json: the same results on stdout.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), peers.len() * SNIPPETS.len(), "{v}");
    for r in results {
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio_to_zeroboot"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(v["cpu_loop_overhead"]["vs_host_python"].is_number(), "{v}");
    assert!(v["machine"]["cores"].as_u64().unwrap() > 0, "{v}");
}
