//! Commands in a live sandbox (envd's process service, served by the
//! kernel: DESIGN.md §6). A command is a process the kernel starts itself
//! (`Sandbox::spawn`), with stdin, stdout and stderr on pipes whose far
//! ends are here. The owner of the sandbox (the server's actor) runs the
//! sandbox in slices while commands live (`LiveSandbox::step`) and takes
//! what they wrote as events (`LiveSandbox::take_events`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use zeroboot_kernel::spawn::{SpawnSpec, Spawned, SpawnedIo};
use zeroboot_kernel::{Outcome, Sandbox};

use crate::live::{LiveError, LiveSandbox};

/// What to start (E2B's ProcessConfig).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CommandSpec {
    /// The program (a path, or a name looked up in PATH).
    pub cmd: String,
    /// Its arguments (argv[1..]).
    pub args: Vec<String>,
    /// Environment variables on top of the sandbox's.
    pub env: Vec<(String, String)>,
    /// Working directory; None: the user's home.
    pub cwd: Option<String>,
    /// Whether the client may write its stdin (else /dev/null).
    pub stdin: bool,
    /// A name the client finds it by.
    pub tag: Option<String>,
    /// Run it on a pseudo-terminal of (rows, columns) instead of pipes.
    pub pty: Option<(u16, u16)>,
    /// The account it runs as (a name in the sandbox's /etc/passwd):
    /// its ids, with HOME, USER, LOGNAME and the default cwd its home.
    /// None: root, with E2B's user's home as HOME and cwd (the one-shot
    /// and MCP paths).
    #[serde(default)]
    pub user: Option<String>,
}

/// What happened to a command, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// What a command on a pty printed (its terminal's output).
    Pty(Vec<u8>),
    /// It ended: wait status, exit code (128 + signal for a signal, as a
    /// shell reports it) and the signal if one killed it.
    End {
        status: i32,
        exit_code: i32,
        signal: Option<u32>,
        /// Why it ended other than by itself (its sandbox ended).
        error: Option<String>,
    },
}

/// A running command, as `list` shows it.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub pid: u32,
    pub spec: CommandSpec,
}

/// The host side of one command (kept in a checkpoint: its pipes are ids
/// in the kernel's state, which the checkpoint holds too).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Command {
    spec: CommandSpec,
    pipes: Spawned,
    /// Input not yet taken by the pipe.
    stdin: VecDeque<u8>,
    /// Close stdin once `stdin` has drained.
    close_stdin: bool,
    stdin_closed: bool,
    /// Stop taking its output for now (its reader is behind): the pipe
    /// fills and the writer blocks, as with a slow reader on Linux.
    pub(crate) held: bool,
}

/// Host-side cap on queued stdin per command.
pub const MAX_STDIN_QUEUE: usize = 16 << 20;

/// Most bytes taken from one pipe per pump (a flood cannot starve others).
const PUMP_CHUNK: usize = 64 << 10;

/// Move what command `pid` wrote to `events`: one chunk per stream, or
/// everything when `all`.
fn take_output(
    k: &mut zeroboot_kernel::Kernel,
    pid: u32,
    io: SpawnedIo,
    events: &mut Vec<(u32, CommandEvent)>,
    all: bool,
) {
    loop {
        let mut got = false;
        match io {
            SpawnedIo::Pipes { stdout, stderr, .. } => {
                for (id, out) in [(stdout, true), (stderr, false)] {
                    let data = k.host_read(id, PUMP_CHUNK);
                    if !data.is_empty() {
                        got = true;
                        events.push((
                            pid,
                            if out {
                                CommandEvent::Stdout(data)
                            } else {
                                CommandEvent::Stderr(data)
                            },
                        ));
                    }
                }
            }
            SpawnedIo::Pty(id) => {
                let data = k.pty_output(id, PUMP_CHUNK);
                if !data.is_empty() {
                    got = true;
                    events.push((pid, CommandEvent::Pty(data)));
                }
            }
        }
        if !all || !got {
            return;
        }
    }
}

/// How often a live sandbox's host sockets are polled while a thread may
/// wait on one.
const HOST_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// What a `step` left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Something can run right away: step again soon.
    pub busy: bool,
    /// Otherwise, when a waiting thread's timeout falls due.
    pub wake: Option<Instant>,
}

/// The user whose home commands start in, as E2B's sandboxes have.
pub const HOME: &str = "/home/user";

fn env_entries(base: &[Vec<u8>], layers: &[&[(String, String)]]) -> Vec<Vec<u8>> {
    let mut env: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for e in base {
        let (k, v) = match e.iter().position(|&c| c == b'=') {
            Some(i) => (e[..i].to_vec(), e[i + 1..].to_vec()),
            None => (e.clone(), Vec::new()),
        };
        env.insert(k, v);
    }
    for layer in layers {
        for (k, v) in layer.iter() {
            env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
    }
    env.into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend(v);
            k
        })
        .collect()
}

/// Make the user's home (and its parents) if the image lacks it: E2B's
/// clients expect it, as their default working directory.
fn ensure_home(sb: &mut Sandbox) -> bool {
    let mut at = String::new();
    for part in HOME.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        let k = &mut sb.k;
        let pv = k.proc_view();
        if k.vfs().resolve("/", &at, true, &pv).is_ok() {
            continue;
        }
        let Ok((parent, name)) = k.vfs().resolve_parent("/", &at, &pv) else {
            return false;
        };
        if k.vfs_mut().mkdir(&parent, &name, 0o755).is_err() {
            return false;
        }
    }
    true
}

impl LiveSandbox {
    /// Start a command; it runs as the sandbox is stepped. Returns its pid.
    pub fn start(&mut self, spec: CommandSpec) -> Result<u32, LiveError> {
        let extra = self.env_vars().to_vec();
        let sb = self.sandbox_or_dead()?;
        let home_exists = ensure_home(sb);
        let account = match &spec.user {
            Some(u) => Some(
                zeroboot_kernel::accounts::lookup(sb.k.vfs(), u)
                    .map_err(|e| LiveError::User(e.to_string()))?,
            ),
            None => None,
        };
        let (home, cwd, login) = match &account {
            Some(a) => {
                let pv = sb.k.proc_view();
                let has_home = sb.k.vfs().resolve("/", &a.home, true, &pv).is_ok();
                let cwd = spec.cwd.clone().unwrap_or_else(|| {
                    if has_home {
                        a.home.clone()
                    } else {
                        "/".to_string()
                    }
                });
                let login = vec![
                    ("HOME".to_string(), a.home.clone()),
                    ("USER".to_string(), a.name.clone()),
                    ("LOGNAME".to_string(), a.name.clone()),
                ];
                (Vec::new(), cwd, login)
            }
            None => {
                let cwd = spec.cwd.clone().unwrap_or_else(|| {
                    if home_exists {
                        HOME.to_string()
                    } else {
                        "/".to_string()
                    }
                });
                let home = if home_exists {
                    vec![("HOME".to_string(), HOME.to_string())]
                } else {
                    Vec::new()
                };
                (home, cwd, Vec::new())
            }
        };
        let envp = env_entries(&sb.k.init_env(), &[&home, &login, &extra, &spec.env]);
        let mut argv = vec![spec.cmd.clone().into_bytes()];
        argv.extend(spec.args.iter().map(|a| a.clone().into_bytes()));
        let pipes = sb
            .spawn(&SpawnSpec {
                program: spec.cmd.clone(),
                argv,
                envp,
                cwd,
                stdin: spec.stdin,
                pty: spec.pty,
                cred: account.map(|a| a.cred()).unwrap_or_default(),
            })
            .map_err(|e| LiveError::Command(e.to_string()))?;
        let pid = pipes.pid;
        self.commands.insert(
            pid,
            Command {
                spec,
                pipes,
                stdin: VecDeque::new(),
                close_stdin: false,
                stdin_closed: !matches!(pipes.io, SpawnedIo::Pipes { stdin: Some(_), .. }),
                held: false,
            },
        );
        Ok(pid)
    }

    /// Commands still running.
    pub fn commands(&self) -> Vec<CommandInfo> {
        self.commands
            .iter()
            .map(|(&pid, c)| CommandInfo {
                pid,
                spec: c.spec.clone(),
            })
            .collect()
    }

    /// The pid of the running command tagged `tag`.
    pub fn command_by_tag(&self, tag: &str) -> Option<u32> {
        self.commands
            .iter()
            .find(|(_, c)| c.spec.tag.as_deref() == Some(tag))
            .map(|(&pid, _)| pid)
    }

    /// Whether it has running commands.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Whether it needs guest time (a code run or commands in progress).
    pub fn needs_time(&self) -> bool {
        !self.commands.is_empty() || self.code_run.is_some()
    }

    /// Whether `pid` is a running command.
    pub fn has_command(&self, pid: u32) -> bool {
        self.commands.contains_key(&pid)
    }

    /// Queue `data` for command `pid`'s stdin (typed at its terminal, for
    /// a command on a pty).
    pub fn send_stdin(&mut self, pid: u32, data: &[u8]) -> Result<(), LiveError> {
        let c = self
            .commands
            .get_mut(&pid)
            .ok_or(LiveError::NoCommand(pid))?;
        if let SpawnedIo::Pty(id) = c.pipes.io {
            let sb = self.sandbox_or_dead()?;
            sb.k.pty_input(id, data)
                .map_err(|e| LiveError::Command(format!("process {pid}'s terminal: {e}")))?;
            return Ok(());
        }
        if c.stdin_closed || c.close_stdin {
            return Err(LiveError::Command(format!(
                "the stdin of process {pid} is closed"
            )));
        }
        if c.stdin.len() + data.len() > MAX_STDIN_QUEUE {
            return Err(LiveError::Command(format!(
                "process {pid} is not reading its stdin ({MAX_STDIN_QUEUE} bytes wait)"
            )));
        }
        c.stdin.extend(data);
        self.pump();
        Ok(())
    }

    /// Close command `pid`'s stdin once what was sent has been read.
    pub fn close_stdin(&mut self, pid: u32) -> Result<(), LiveError> {
        let c = self
            .commands
            .get_mut(&pid)
            .ok_or(LiveError::NoCommand(pid))?;
        if matches!(c.pipes.io, SpawnedIo::Pty(_)) {
            return Err(LiveError::Command(format!(
                "process {pid} runs on a terminal: send Ctrl-D (0x04) to end its input"
            )));
        }
        c.close_stdin = true;
        self.pump();
        Ok(())
    }

    /// Send `sig` to command `pid`.
    pub fn signal(&mut self, pid: u32, sig: u32) -> Result<(), LiveError> {
        if !self.commands.contains_key(&pid) {
            return Err(LiveError::NoCommand(pid));
        }
        let sb = self.sandbox_or_dead()?;
        sb.k.signal_process(pid, sig)
            .map_err(|e| LiveError::Command(format!("cannot signal process {pid}: {e}")))
    }

    /// Resize command `pid`'s terminal (it gets SIGWINCH).
    pub fn resize_pty(&mut self, pid: u32, rows: u16, cols: u16) -> Result<(), LiveError> {
        let c = self.commands.get(&pid).ok_or(LiveError::NoCommand(pid))?;
        let SpawnedIo::Pty(id) = c.pipes.io else {
            return Err(LiveError::Command(format!(
                "process {pid} does not run on a terminal"
            )));
        };
        let sb = self.sandbox_or_dead()?;
        sb.k.pty_resize(id, rows, cols)
            .map_err(|e| LiveError::Command(format!("process {pid}'s terminal: {e}")))
    }

    /// Hold the output of the commands in `pids` (their readers fell
    /// behind) and release every other's.
    pub fn hold_only(&mut self, pids: &std::collections::BTreeSet<u32>) {
        for (pid, c) in self.commands.iter_mut() {
            c.held = pids.contains(pid);
        }
    }

    /// Run the sandbox for at most `slice` if its code run or commands
    /// have work, then collect the commands' output and finish the code
    /// run if it is done (`take_run_result`).
    pub fn step(&mut self, slice: Duration) -> Step {
        let idle = Step {
            busy: false,
            wake: None,
        };
        let run_deadline = self.code_run.map(|r| r.deadline);
        if self.commands.is_empty() && run_deadline.is_none() {
            return idle;
        }
        let Some(sb) = self.sandbox_mut() else {
            return idle;
        };
        let now = Instant::now();
        // A thread waiting on a host socket that became ready runs again.
        sb.poll_host_sockets();
        let due = sb.next_wake().is_some_and(|w| w <= now)
            || run_deadline.is_some_and(|d| d <= now)
            // A run just handed over: the agent is parked until it runs.
            || !sb.k.control_mut().inbox.is_empty();
        if sb.has_runnable() || due {
            let until = run_deadline.map_or(now + slice, |d| d.min(now + slice));
            sb.k.cpu_slice_begins();
            let outcome = sb.run_slice(until);
            sb.k.cpu_slice_ends();
            if self.code_run.is_some() {
                self.advance_run(outcome);
            } else {
                match outcome {
                    Ok(Outcome::Parked) | Ok(Outcome::TimedOut) => {}
                    Ok(Outcome::Exited(e)) => {
                        self.kill(&format!(
                            "its first process ended (status {}) while commands ran",
                            e.status()
                        ));
                        return idle;
                    }
                    Err(e) => {
                        self.kill(&format!("it failed: {e}"));
                        return idle;
                    }
                }
            }
        } else if self.code_run.is_some() {
            self.advance_run(Ok(Outcome::TimedOut));
        }
        self.pump();
        let run_deadline = self.code_run.map(|r| r.deadline);
        if self.commands.is_empty() && run_deadline.is_none() {
            return idle;
        }
        match self.sb.as_ref() {
            Some(sb) => {
                let mut wake = match (sb.next_wake(), run_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if sb.k.sockets().host_watched() {
                    // A thread may wait on a host socket: look again soon
                    // (the sandbox's host sockets are polled, not
                    // registered with the caller's reactor).
                    let soon = Instant::now() + HOST_POLL;
                    wake = Some(wake.map_or(soon, |w| w.min(soon)));
                }
                Step {
                    busy: sb.has_runnable(),
                    wake,
                }
            }
            _ => idle,
        }
    }

    /// Move stdin in and output out of the commands' pipes (or
    /// terminals); report the ended ones.
    pub(crate) fn pump(&mut self) {
        let Some(sb) = self.sb.as_mut() else {
            return;
        };
        let k = &mut sb.k;
        let mut ended = Vec::new();
        for (&pid, c) in self.commands.iter_mut() {
            match c.pipes.io {
                SpawnedIo::Pipes { stdin, .. } => {
                    if let Some(id) = stdin.filter(|_| !c.stdin_closed) {
                        if !c.stdin.is_empty() {
                            let (a, _) = c.stdin.as_slices();
                            match k.host_write(id, a) {
                                Ok(n) => {
                                    c.stdin.drain(..n);
                                }
                                Err(_) => c.stdin.clear(),
                            }
                        }
                        if c.close_stdin && c.stdin.is_empty() {
                            k.host_close(id);
                            c.stdin_closed = true;
                        }
                    }
                }
                SpawnedIo::Pty(_) => {}
            }
            if !c.held {
                take_output(k, pid, c.pipes.io, &mut self.events, false);
            }
            if let Some(status) = k.reap_spawned(pid) {
                ended.push((pid, status));
            }
        }
        for (pid, status) in ended {
            let Some(c) = self.commands.remove(&pid) else {
                continue;
            };
            // What it wrote before it ended; a child it left behind that
            // keeps the pipe open is cut off here, as envd does.
            take_output(k, pid, c.pipes.io, &mut self.events, true);
            match c.pipes.io {
                SpawnedIo::Pipes {
                    stdin,
                    stdout,
                    stderr,
                } => {
                    k.host_close(stdout);
                    k.host_close(stderr);
                    if let Some(id) = stdin.filter(|_| !c.stdin_closed) {
                        k.host_close(id);
                    }
                }
                SpawnedIo::Pty(id) => k.pty_hangup(id),
            }
            let signal = (status & 0x7f != 0).then_some((status & 0x7f) as u32);
            let exit_code = match signal {
                Some(s) => 128 + s as i32,
                None => (status >> 8) & 0xff,
            };
            self.events.push((
                pid,
                CommandEvent::End {
                    status,
                    exit_code,
                    signal,
                    error: None,
                },
            ));
        }
    }

    /// Events since the last call, in order, by pid.
    pub fn take_events(&mut self) -> Vec<(u32, CommandEvent)> {
        std::mem::take(&mut self.events)
    }

    /// The sandbox is ending (`reason`): every command ends with it
    /// (SIGKILL).
    pub(crate) fn end_commands(&mut self, reason: &str) {
        let pids: Vec<u32> = self.commands.keys().copied().collect();
        for pid in pids {
            self.commands.remove(&pid);
            self.events.push((
                pid,
                CommandEvent::End {
                    status: 9,
                    exit_code: 137,
                    signal: Some(9),
                    error: Some(format!("the sandbox ended: {reason}")),
                },
            ));
        }
    }
}
