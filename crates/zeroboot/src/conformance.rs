//! `zeroboot conformance`: a platform's own tests run per file natively and
//! inside a sandbox, side by side, with the sandbox's unimplemented
//! syscalls; writes a report (docs/conformance.md).
//!
//! Each file is one child process on each side (natively the host's
//! program; inside, `zeroboot run --image ...` of this same binary), with a
//! wall-clock limit, so a hang or a crash costs one file, not the run.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::conformance_report::{self as report, FileResult, Report, SideResult, State};

#[derive(Subcommand)]
pub enum Suite {
    /// CPython's regression suite (Debian's libpython3.11-testsuite), one
    /// `python3 -m test NAME` per test file.
    Python(ConfArgs),
    /// The Node programs in conformance/node (fs, child_process,
    /// worker_threads, net, http, zlib, crypto), one `node FILE` each.
    Node(ConfArgs),
}

#[derive(Args, Clone)]
pub struct ConfArgs {
    /// Test files to run (for python: test_os, test_asyncio, ...; for node:
    /// program names without .js). Default: all of them.
    pub files: Vec<String>,
    /// Only the files whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub filter: Vec<String>,
    /// Wall-clock limit per file and side, in seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Files run at once (each side of a file runs one after the other).
    /// Default: half the host's cores, at least 1.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The report to write (Markdown). Default: docs/conformance.md for
    /// python, docs/conformance-node.md for node.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where each run's output is kept (NAME.native.log, NAME.sandbox.log,
    /// NAME.sandbox.json). Default: target/conformance/SUITE.
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// The sandbox's memory limit in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u64,
}

/// One suite: how to list its files and run one on each side.
pub(crate) trait SuiteSpec: Sync {
    fn name(&self) -> &'static str;
    /// The image recipe the sandbox side runs in.
    fn recipe(&self) -> Result<zeroboot_image::Recipe>;
    /// Every file of the suite, in order.
    fn list(&self) -> Result<Vec<String>>;
    /// The native command for `file`.
    fn native(&self, file: &str) -> Command;
    /// `zeroboot run` arguments (after the options) for `file`:
    /// extra `--copy` options, then `--`, then the program and arguments.
    fn sandbox_args(&self, file: &str) -> Vec<String>;
    /// The state a finished run's output and exit code mean.
    fn classify(&self, file: &str, log: &str, exit: Option<i32>) -> (State, String);
    /// The exact commands, for the report's header.
    fn describe(&self) -> String;
}

pub fn run(which: Suite) -> Result<i32> {
    match which {
        Suite::Python(a) => run_suite(&PythonSuite, a),
        Suite::Node(a) => run_suite(&NodeSuite::new()?, a),
    }
}

fn run_suite(spec: &dyn SuiteSpec, a: ConfArgs) -> Result<i32> {
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    if a.memory == 0 || a.memory > 8192 {
        bail!("--memory must be between 1 and 8192 MiB");
    }
    let all = spec.list()?;
    let files = select(&all, &a.files, &a.filter)?;
    if files.is_empty() {
        bail!("no test files match (the suite has {})", all.len());
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/{}", default_out(spec.name()))));
    let logs = a
        .logs
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/conformance/{}", spec.name())));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Build the image once here, not in N parallel children.
    let recipe = spec.recipe()?;
    crate::image::ensure_image(&recipe, &crate::cache_dir())?;
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| (n.get() / 2).max(1))
            .unwrap_or(1)
    });
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let command_line = std::iter::once("zeroboot".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let state = Arc::new(Mutex::new(Report::new(
        spec.name(),
        command_line,
        spec.describe(),
        files.clone(),
        a.timeout,
        jobs,
    )));
    // The key files first, so that a run stopped early has them.
    let mut order = files;
    order.sort_by_key(|f| !report::KEY_FILES.contains(&f.as_str()));
    order.reverse();
    let queue = Arc::new(Mutex::new(order));
    let timeout = Duration::from_secs_f64(a.timeout);
    let started = Instant::now();
    let total = state.lock().unwrap_or_else(|e| e.into_inner()).files.len();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let queue = queue.clone();
            let state = state.clone();
            let (logs, out, a) = (&logs, &out, &a);
            s.spawn(move || loop {
                let Some(file) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    break;
                };
                let r = run_file(spec, &file, timeout, a.memory, logs);
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "[{}/{} {:>5.0}s] {:40} native {:8} inside {}",
                    st.results.len() + 1,
                    total,
                    started.elapsed().as_secs_f64(),
                    file,
                    r.native.state.word(),
                    r.sandbox.state.word()
                );
                st.results.insert(file, r);
                st.elapsed = started.elapsed();
                // Rewritten after every file: an interrupted run leaves a
                // report that says how far it got.
                if let Err(e) = report::write(&st, out, a.json.as_deref()) {
                    eprintln!("zeroboot: {e:#}");
                }
            });
        }
    });
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    report::write(&st, &out, a.json.as_deref())?;
    let summary = st.summary();
    println!("{}", summary.text());
    println!("report: {}", out.display());
    Ok(0)
}

fn default_out(suite: &str) -> String {
    if suite == "python" {
        "conformance.md".into()
    } else {
        format!("conformance-{suite}.md")
    }
}

/// The files to run: the named ones (each must exist) or all, then the
/// filter.
fn select(all: &[String], named: &[String], filter: &[String]) -> Result<Vec<String>> {
    let mut files: Vec<String> = if named.is_empty() {
        all.to_vec()
    } else {
        for n in named {
            if !all.contains(n) {
                bail!("{n:?} is not a file of this suite (`--filter {n}` matches by substring)");
            }
        }
        named.to_vec()
    };
    if !filter.is_empty() {
        files.retain(|f| filter.iter().any(|p| f.contains(p.as_str())));
    }
    Ok(files)
}

/// Both sides of one file.
fn run_file(
    spec: &dyn SuiteSpec,
    file: &str,
    timeout: Duration,
    memory: u64,
    logs: &Path,
) -> FileResult {
    let native_log = logs.join(format!("{file}.native.log"));
    let native = run_side(spec, file, spec.native(file), timeout, &native_log, None);
    let stats = logs.join(format!("{file}.sandbox.json"));
    let _ = std::fs::remove_file(&stats);
    let mut cmd = Command::new(self_exe());
    cmd.args([
        "run".to_string(),
        "--image".into(),
        spec.name().into(),
        "--memory".into(),
        memory.to_string(),
        "--timeout".into(),
        format!("{}", timeout.as_secs_f64()),
        "--stats-json".into(),
    ]);
    cmd.arg(&stats);
    let recipe = spec.recipe().ok();
    for p in recipe.iter().flat_map(extra_apt) {
        cmd.args(["--apt", &p]);
    }
    cmd.args(spec.sandbox_args(file));
    // zeroboot run enforces the limit itself; this guard only catches a
    // runner that does not end (a hang of the sandbox's VMM).
    let sandbox_log = logs.join(format!("{file}.sandbox.log"));
    let mut sandbox = run_side(
        spec,
        file,
        cmd,
        timeout + Duration::from_secs(60),
        &sandbox_log,
        Some(&stats),
    );
    if sandbox.state != State::Timeout
        && std::fs::read_to_string(&sandbox_log)
            .map(|l| l.contains("zeroboot: timed out after"))
            .unwrap_or(false)
    {
        sandbox.state = State::Timeout;
        sandbox.detail = format!("over {} s", timeout.as_secs_f64());
    }
    FileResult { native, sandbox }
}

/// The apt packages `recipe` adds to its builtin one.
fn extra_apt(recipe: &zeroboot_image::Recipe) -> Vec<String> {
    let base = zeroboot_image::Recipe::builtin(&recipe.name)
        .map(|r| r.apt)
        .unwrap_or_default();
    recipe
        .apt
        .iter()
        .filter(|p| !base.contains(p))
        .cloned()
        .collect()
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("zeroboot"))
}

/// Runs `cmd` with its output in `log`, killed (its whole process group)
/// after `limit`.
fn run_side(
    spec: &dyn SuiteSpec,
    file: &str,
    mut cmd: Command,
    limit: Duration,
    log: &Path,
    stats: Option<&Path>,
) -> SideResult {
    let started = Instant::now();
    let spawned = File::create(log).and_then(|f| {
        let f2 = f.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return SideResult {
                state: State::Error,
                detail: format!("cannot start: {e}"),
                seconds: 0.0,
                unimplemented: BTreeMap::new(),
                refused: BTreeMap::new(),
            }
        }
    };
    let exit = wait_or_kill(&mut child, limit);
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let (state, detail) = match exit {
        None => (State::Timeout, format!("over {:.0} s", limit.as_secs_f64())),
        Some(code) => spec.classify(file, &text, code),
    };
    let (unimplemented, refused) = stats.map(read_stats).unwrap_or_default();
    SideResult {
        state,
        detail,
        seconds,
        unimplemented,
        refused,
    }
}

/// Some(exit code, None for a signal) when the child ended in time; None
/// when it was killed at the limit.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st.code()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                // The child leads its own process group: end every process
                // it started, natively the test's children too.
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

type Counts = BTreeMap<String, u64>;

/// The unimplemented syscalls and refused socket kinds of a
/// `zeroboot run --stats-json` file.
fn read_stats(path: &Path) -> (Counts, Counts) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Default::default();
    };
    let get = |key: &str| -> Counts {
        v.get(key)
            .and_then(|o| o.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    (get("unimplemented"), get("sockets_refused"))
}

/// The environment both sides run with: the image's (PATH, HOME, LANG and
/// the language's own), nothing inherited from the caller.
fn native_env(cmd: &mut Command, recipe: &zeroboot_image::Recipe) {
    cmd.env_clear();
    for (k, v) in recipe.default_env() {
        cmd.env(k, v);
    }
}

/// A fresh working directory for a native run (the sandbox's is its own).
fn native_cwd(suite: &str, file: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "zeroboot-conformance-{suite}-{}/{file}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

// ---- CPython ----

/// Debian's python3; natively the same path as inside (a python3 earlier
/// in PATH, say pyenv's, would be another interpreter).
const PYTHON: &str = "/usr/bin/python3";
/// The Debian package with CPython's test files.
const TESTSUITE_PKG: &str = "libpython3.11-testsuite";
/// A file every installed test suite has beyond what libpython3.11-stdlib
/// ships (which has test/support and libregrtest only).
const TESTSUITE_MARKER: &str = "/usr/lib/python3.11/test/test_os.py";

pub(crate) struct PythonSuite;

impl SuiteSpec for PythonSuite {
    fn name(&self) -> &'static str {
        "python"
    }

    fn recipe(&self) -> Result<zeroboot_image::Recipe> {
        Ok(zeroboot_image::Recipe::named(
            "python",
            &[TESTSUITE_PKG.to_string()],
            &[],
        )?)
    }

    fn list(&self) -> Result<Vec<String>> {
        if !Path::new(PYTHON).exists() || !Path::new(TESTSUITE_MARKER).exists() {
            bail!(
                "CPython's test suite is not installed on this host ({TESTSUITE_MARKER} is \
                 missing); install it with `sudo apt-get install {TESTSUITE_PKG}` (Debian 12's \
                 python3.11, the same version the sandbox's image has)"
            );
        }
        let o = Command::new(PYTHON)
            .args(["-m", "test", "--list-tests"])
            .env_clear()
            .env("LANG", "C.UTF-8")
            .output()
            .with_context(|| format!("cannot run {PYTHON} -m test --list-tests"))?;
        if !o.status.success() {
            bail!(
                "{PYTHON} -m test --list-tests failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("test_"))
            .map(String::from)
            .collect())
    }

    fn native(&self, file: &str) -> Command {
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-m", "test", file]);
        if let Ok(r) = self.recipe() {
            native_env(&mut cmd, &r);
        }
        cmd.current_dir(native_cwd("python", file));
        cmd
    }

    fn sandbox_args(&self, file: &str) -> Vec<String> {
        ["--", PYTHON, "-m", "test", file]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn classify(&self, file: &str, log: &str, exit: Option<i32>) -> (State, String) {
        classify_regrtest(file, log, exit)
    }

    fn describe(&self) -> String {
        format!(
            "`{PYTHON} -m test NAME` per file: natively with the image's environment \
             (PATH, HOME, LANG=C.UTF-8, PYTHONDONTWRITEBYTECODE=1, OPENBLAS_NUM_THREADS=1) \
             in a fresh directory; inside, the same command through `zeroboot run --image \
             python --apt {TESTSUITE_PKG}` (a fresh sandbox per file). Default regrtest \
             options: no `-u` resources, so tests needing network, cpu, largefile, etc. skip \
             on both sides."
        )
    }
}

/// The state regrtest's summary gives, with the reason for a failure or a
/// skip.
pub(crate) fn classify_regrtest(file: &str, log: &str, exit: Option<i32>) -> (State, String) {
    let result = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Tests result: "))
        .map(str::trim);
    let Some(result) = result else {
        let how = match exit {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        };
        let last = last_line(log);
        return (State::Fail, format!("no regrtest result ({how}): {last}"));
    };
    if result.contains("FAILURE") || result.contains("INTERRUPTED") {
        // `test_os failed (12 errors, 9 failures)`, `test_x crashed (...)`,
        // `test_x failed (uncaught exception)`.
        let detail = log
            .lines()
            .filter_map(|l| {
                let at = l.find(file)?;
                let rest = &l[at + file.len()..];
                (rest.starts_with(" failed") || rest.starts_with(" crashed"))
                    .then(|| rest.trim().to_string())
            })
            .next_back()
            .unwrap_or_else(|| result.to_string());
        return (State::Fail, detail);
    }
    if result.contains("NO TEST RUN") {
        return (State::Skip, "no test ran".into());
    }
    let skipped = log.lines().find_map(|l| {
        let at = l.find(&format!("{file} skipped"))?;
        Some(l[at + file.len()..].trim().to_string())
    });
    match skipped {
        Some(why) => {
            let why = why
                .strip_prefix("skipped -- ")
                .or_else(|| why.strip_prefix("skipped"))
                .unwrap_or(&why)
                .trim()
                .to_string();
            (State::Skip, why)
        }
        None if log.contains("altered the execution environment") => {
            (State::Pass, "env changed".into())
        }
        None => (State::Pass, String::new()),
    }
}

fn last_line(log: &str) -> String {
    let l = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    report::shorten(l.trim(), 120)
}

// ---- Node ----

/// The Node programs: conformance/node/*.js in the source tree.
pub(crate) struct NodeSuite {
    dir: PathBuf,
}

/// Where a program is placed inside the sandbox.
const NODE_GUEST_DIR: &str = "/opt/conformance/node";

impl NodeSuite {
    fn new() -> Result<NodeSuite> {
        let candidates = [
            PathBuf::from("conformance/node"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/node"),
        ];
        for d in candidates {
            if d.is_dir() {
                return Ok(NodeSuite {
                    dir: d.canonicalize().unwrap_or(d),
                });
            }
        }
        bail!("the Node programs (conformance/node/*.js) are not found: run this from the zeroboot source tree")
    }
}

impl SuiteSpec for NodeSuite {
    fn name(&self) -> &'static str {
        "node"
    }

    fn recipe(&self) -> Result<zeroboot_image::Recipe> {
        Ok(zeroboot_image::Recipe::named("node", &[], &[])?)
    }

    fn list(&self) -> Result<Vec<String>> {
        if Command::new("node").arg("--version").output().is_err() {
            bail!(
                "node is not installed on this host; install it with `sudo apt-get install nodejs`"
            );
        }
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".js"))
                    .map(String::from)
            })
            .collect();
        v.sort();
        Ok(v)
    }

    fn native(&self, file: &str) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg(self.dir.join(format!("{file}.js")));
        if let Ok(r) = self.recipe() {
            native_env(&mut cmd, &r);
        }
        cmd.current_dir(native_cwd("node", file));
        cmd
    }

    fn sandbox_args(&self, file: &str) -> Vec<String> {
        let host = self.dir.join(format!("{file}.js"));
        let guest = format!("{NODE_GUEST_DIR}/{file}.js");
        vec![
            "--copy".into(),
            format!("{}={guest}", host.display()),
            "--".into(),
            "node".into(),
            guest,
        ]
    }

    fn classify(&self, _file: &str, log: &str, exit: Option<i32>) -> (State, String) {
        match exit {
            Some(0) if log.lines().any(|l| l.trim() == "ok") => (State::Pass, String::new()),
            Some(0) => (State::Fail, "exit 0 without `ok`".into()),
            Some(c) => (State::Fail, format!("exit {c}: {}", last_line(log))),
            None => (
                State::Fail,
                format!("killed by a signal: {}", last_line(log)),
            ),
        }
    }

    fn describe(&self) -> String {
        format!(
            "`node FILE` per program of conformance/node (each prints `ok` and exits 0 when \
             every check holds): natively with the image's environment in a fresh \
             directory; inside, through `zeroboot run --image node --copy \
             FILE={NODE_GUEST_DIR}/FILE -- node {NODE_GUEST_DIR}/FILE`."
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn regrtest_summaries_map_to_states() {
        let ok = "0:00:00 [1/1] test_bool\n\n== Tests result: SUCCESS ==\n\n1 test OK.\n\nTotal duration: 1 s\nTests result: SUCCESS\n";
        assert_eq!(classify_regrtest("test_bool", ok, Some(0)).0, State::Pass);
        let skip = "0:00:00 [1/1] test_winreg\ntest_winreg skipped -- No module named 'winreg'\n\n== Tests result: SUCCESS ==\n\n1 test skipped:\n    test_winreg\nTests result: SUCCESS\n";
        assert_eq!(
            classify_regrtest("test_winreg", skip, Some(0)),
            (State::Skip, "No module named 'winreg'".into())
        );
        let fail = "0:00:03 [1/1/1] test_os failed (12 errors, 9 failures)\n== Tests result: FAILURE ==\nTests result: FAILURE\n";
        assert_eq!(
            classify_regrtest("test_os", fail, Some(2)),
            (State::Fail, "failed (12 errors, 9 failures)".into())
        );
        let crash = "Fatal Python error: Segmentation fault\n";
        let (s, d) = classify_regrtest("test_x", crash, None);
        assert_eq!(s, State::Fail);
        assert!(d.contains("killed by a signal"), "{d}");
    }

    #[test]
    fn named_files_must_exist_and_the_filter_narrows() {
        let all: Vec<String> = ["test_os", "test_posix", "test_json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(select(&all, &["test_nope".into()], &[]).is_err());
        assert_eq!(
            select(&all, &[], &["os".into(), "json".into()]).unwrap(),
            vec![
                "test_os".to_string(),
                "test_posix".into(),
                "test_json".into()
            ]
        );
        assert_eq!(
            select(&all, &["test_json".into()], &[]).unwrap(),
            vec!["test_json".to_string()]
        );
    }
}
