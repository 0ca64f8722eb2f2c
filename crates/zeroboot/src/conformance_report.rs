//! The conformance report: per-file states on both sides, the pass rate
//! inside of what passes natively, hangs, and the unimplemented syscalls
//! met, as Markdown (and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// What happened to one file on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Pass,
    Fail,
    Skip,
    /// Killed at its time limit.
    Timeout,
    /// Could not be started.
    Error,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Pass => "pass",
            State::Fail => "FAIL",
            State::Skip => "skip",
            State::Timeout => "TIMEOUT",
            State::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SideResult {
    pub state: State,
    /// Why it failed or skipped (regrtest's line), empty for a pass.
    pub detail: String,
    pub seconds: f64,
    /// Unimplemented syscalls (ENOSYS) by name (inside only).
    pub unimplemented: BTreeMap<String, u64>,
    /// Socket options or kinds refused as unimplemented (inside only).
    pub refused: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub struct FileResult {
    pub native: SideResult,
    pub sandbox: SideResult,
}

/// A run in progress or done.
pub struct Report {
    pub suite: &'static str,
    pub command_line: String,
    pub method: String,
    /// Every file selected, in order.
    pub files: Vec<String>,
    pub results: BTreeMap<String, FileResult>,
    pub timeout: f64,
    pub jobs: usize,
    pub elapsed: Duration,
}

/// The files the issue names as the ones agent code leans on most.
pub const KEY_FILES: &[&str] = &[
    "test_subprocess",
    "test_os",
    "test_pathlib",
    "test_asyncio",
    "test_multiprocessing_fork",
    "test_socket",
    "test_signal",
    "test_threading",
    "test_select",
    "test_shutil",
    "test_tempfile",
];

#[derive(Debug, Default)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub timeout: usize,
    pub error: usize,
}

impl Counts {
    fn add(&mut self, s: State) {
        match s {
            State::Pass => self.pass += 1,
            State::Fail => self.fail += 1,
            State::Skip => self.skip += 1,
            State::Timeout => self.timeout += 1,
            State::Error => self.error += 1,
        }
    }
}

pub struct Summary {
    pub done: usize,
    pub total: usize,
    pub native: Counts,
    pub sandbox: Counts,
    /// Files that pass natively, and of those the ones that pass inside.
    pub native_pass: usize,
    pub both_pass: usize,
    /// Syscall name -> (calls, files).
    pub enosys: BTreeMap<String, (u64, usize)>,
    pub refused: BTreeMap<String, (u64, usize)>,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        if self.native_pass == 0 {
            0.0
        } else {
            100.0 * self.both_pass as f64 / self.native_pass as f64
        }
    }

    pub fn text(&self) -> String {
        format!(
            "{}/{} files: natively {} pass, {} fail, {} skip, {} timeout; inside {} pass, {} fail, {} skip, {} timeout; \
             of the {} passing natively {} pass inside ({:.1}%)",
            self.done,
            self.total,
            self.native.pass,
            self.native.fail,
            self.native.skip,
            self.native.timeout,
            self.sandbox.pass,
            self.sandbox.fail,
            self.sandbox.skip,
            self.sandbox.timeout,
            self.native_pass,
            self.both_pass,
            self.rate()
        )
    }
}

impl Report {
    pub fn new(
        suite: &'static str,
        command_line: String,
        method: String,
        files: Vec<String>,
        timeout: f64,
        jobs: usize,
    ) -> Report {
        Report {
            suite,
            command_line,
            method,
            files,
            results: BTreeMap::new(),
            timeout,
            jobs,
            elapsed: Duration::ZERO,
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            done: self.results.len(),
            total: self.files.len(),
            native: Counts::default(),
            sandbox: Counts::default(),
            native_pass: 0,
            both_pass: 0,
            enosys: BTreeMap::new(),
            refused: BTreeMap::new(),
        };
        for r in self.results.values() {
            s.native.add(r.native.state);
            s.sandbox.add(r.sandbox.state);
            if r.native.state == State::Pass {
                s.native_pass += 1;
                if r.sandbox.state == State::Pass {
                    s.both_pass += 1;
                }
            }
            for (name, n) in &r.sandbox.unimplemented {
                let e = s.enosys.entry(name.clone()).or_default();
                e.0 += n;
                e.1 += 1;
            }
            for (name, n) in &r.sandbox.refused {
                let e = s.refused.entry(name.clone()).or_default();
                e.0 += n;
                e.1 += 1;
            }
        }
        s
    }

    fn markdown(&self) -> String {
        let s = self.summary();
        let mut m = String::new();
        let title = match self.suite {
            "python" => "CPython 3.11's regression suite",
            _ => "Node programs (conformance/node)",
        };
        let _ = writeln!(m, "# Conformance: {title}, natively and in the sandbox\n");
        let _ = writeln!(m, "Made by `{}`.\n", self.command_line);
        let _ = writeln!(m, "{}\n", self.method);
        let _ = writeln!(
            m,
            "Each side of a file has a limit of {} s; {} files ran at once; the run took {:.0} min.\n",
            self.timeout,
            self.jobs,
            self.elapsed.as_secs_f64() / 60.0
        );
        if s.done < s.total {
            let _ = writeln!(
                m,
                "**PARTIAL: {} of {} files done** (the run was stopped or is still going); \
                 every number below is over the files done.\n",
                s.done, s.total
            );
        }
        let _ = writeln!(m, "## Summary\n");
        let _ = writeln!(m, "| | pass | fail | skip | timeout | error |");
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
        for (side, c) in [("natively", &s.native), ("inside", &s.sandbox)] {
            let _ = writeln!(
                m,
                "| {side} | {} | {} | {} | {} | {} |",
                c.pass, c.fail, c.skip, c.timeout, c.error
            );
        }
        let _ = writeln!(
            m,
            "\n**Pass rate inside of the files that pass natively: {} of {} = {:.1}%** (target: at least 95%).\n",
            s.both_pass,
            s.native_pass,
            s.rate()
        );
        let hung: Vec<&String> = self
            .results
            .iter()
            .filter(|(_, r)| r.sandbox.state == State::Timeout || r.native.state == State::Timeout)
            .map(|(f, _)| f)
            .collect();
        if hung.is_empty() {
            let _ = writeln!(
                m,
                "**No hang:** every file ended within its {} s limit on both sides.\n",
                self.timeout
            );
        } else {
            let _ = writeln!(
                m,
                "**Hangs: {} file(s) did not end within {} s:** {}.\n",
                hung.len(),
                self.timeout,
                hung.iter()
                    .map(|f| {
                        let r = &self.results[*f];
                        format!(
                            "{f} (natively {}, inside {})",
                            r.native.state.word(),
                            r.sandbox.state.word()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if self.suite == "python" {
            let _ = writeln!(m, "## The key files\n");
            let _ = writeln!(
                m,
                "| file | natively | inside | inside: detail | ENOSYS inside |"
            );
            let _ = writeln!(m, "|---|---|---|---|---|");
            for f in KEY_FILES {
                match self.results.get(*f) {
                    Some(r) => {
                        let _ = writeln!(
                            m,
                            "| {f} | {} | {} | {} | {} |",
                            r.native.state.word(),
                            r.sandbox.state.word(),
                            cell(&r.sandbox.detail),
                            names(&r.sandbox.unimplemented)
                        );
                    }
                    None => {
                        let _ = writeln!(m, "| {f} | not run | not run | | |");
                    }
                }
            }
            m.push('\n');
        }
        let _ = writeln!(m, "## Unimplemented syscalls met inside (ENOSYS)\n");
        if s.enosys.is_empty() {
            let _ = writeln!(m, "None.\n");
        } else {
            let mut v: Vec<_> = s.enosys.iter().collect();
            v.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(b.1 .0.cmp(&a.1 .0)));
            let _ = writeln!(m, "| syscall | calls | files | some files |");
            let _ = writeln!(m, "|---|---:|---:|---|");
            for (name, (calls, nfiles)) in v {
                let some: Vec<&str> = self
                    .results
                    .iter()
                    .filter(|(_, r)| r.sandbox.unimplemented.contains_key(name))
                    .map(|(f, _)| f.as_str())
                    .take(6)
                    .collect();
                let _ = writeln!(m, "| {name} | {calls} | {nfiles} | {} |", some.join(", "));
            }
            m.push('\n');
        }
        if !s.refused.is_empty() {
            let _ = writeln!(
                m,
                "## Socket options and kinds refused inside as unimplemented\n"
            );
            let _ = writeln!(m, "| what | times | files |");
            let _ = writeln!(m, "|---|---:|---:|");
            for (name, (n, files)) in &s.refused {
                let _ = writeln!(m, "| {} | {n} | {files} |", cell(name));
            }
            m.push('\n');
        }
        let regress: Vec<(&String, &FileResult)> = self
            .results
            .iter()
            .filter(|(_, r)| r.native.state == State::Pass && r.sandbox.state != State::Pass)
            .collect();
        let _ = writeln!(m, "## Passing natively, not inside ({})\n", regress.len());
        if regress.is_empty() {
            let _ = writeln!(m, "None.\n");
        } else {
            let _ = writeln!(m, "| file | inside | detail | ENOSYS inside |");
            let _ = writeln!(m, "|---|---|---|---|");
            for (f, r) in regress {
                let _ = writeln!(
                    m,
                    "| {f} | {} | {} | {} |",
                    r.sandbox.state.word(),
                    cell(&r.sandbox.detail),
                    names(&r.sandbox.unimplemented)
                );
            }
            m.push('\n');
        }
        let _ = writeln!(m, "## Every file\n");
        let _ = writeln!(
            m,
            "| file | natively | s | inside | s | detail (native / inside) |"
        );
        let _ = writeln!(m, "|---|---|---:|---|---:|---|");
        for f in &self.files {
            match self.results.get(f) {
                Some(r) => {
                    let detail = match (r.native.detail.is_empty(), r.sandbox.detail.is_empty()) {
                        (true, true) => String::new(),
                        _ if r.native.detail == r.sandbox.detail => cell(&r.native.detail),
                        _ => format!("{} / {}", cell(&r.native.detail), cell(&r.sandbox.detail)),
                    };
                    let _ = writeln!(
                        m,
                        "| {f} | {} | {:.1} | {} | {:.1} | {detail} |",
                        r.native.state.word(),
                        r.native.seconds,
                        r.sandbox.state.word(),
                        r.sandbox.seconds
                    );
                }
                None => {
                    let _ = writeln!(m, "| {f} | not run | | not run | | |");
                }
            }
        }
        m
    }

    fn json(&self) -> serde_json::Value {
        let side = |s: &SideResult| {
            serde_json::json!({
                "state": s.state.word().to_ascii_lowercase(),
                "detail": s.detail,
                "seconds": s.seconds,
                "unimplemented": s.unimplemented,
                "refused": s.refused,
            })
        };
        let s = self.summary();
        serde_json::json!({
            "suite": self.suite,
            "command": self.command_line,
            "files_total": s.total,
            "files_done": s.done,
            "native_pass": s.native_pass,
            "both_pass": s.both_pass,
            "results": self.results.iter().map(|(f, r)| {
                (f.clone(), serde_json::json!({"native": side(&r.native), "sandbox": side(&r.sandbox)}))
            }).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Writes the Markdown report (and the JSON, when asked), each through a
/// temporary file so a reader never sees half of one.
pub fn write(r: &Report, out: &Path, json: Option<&Path>) -> Result<()> {
    write_atomic(out, r.markdown().as_bytes())?;
    if let Some(j) = json {
        write_atomic(j, &serde_json::to_vec_pretty(&r.json())?)?;
    }
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Text for a table cell: one line, no pipes, at most 160 characters.
fn cell(s: &str) -> String {
    shorten(&s.replace('|', "/").replace('\n', " "), 160)
}

/// Unimplemented syscall names with counts: `setxattr×3, chroot×1`.
fn names(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
