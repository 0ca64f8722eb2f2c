//! A live sandbox: a fork of a template that is kept between calls. Its
//! VM, memory, writable layer and processes stay; each `run` hands the
//! parked agent one more request and runs until it parks again, so what
//! one run defines the next one sees (the agent keeps one `__main__` for
//! requests marked `persist`).
//!
//! A live sandbox is plain data while it waits: no thread, no CPU. Whoever
//! owns it (the server's actor for that sandbox) may call `run` from any
//! thread of the process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zeroboot_kernel::{Exit, ForkOptions, Frozen, Outcome, Sandbox, Sink, Source};

use crate::commands::{Command, CommandEvent};
use crate::exec::{collect, frame, reply_exit_code, seed, take_frames};
use crate::template::{Language, Template};
use crate::{ExecResult, ExecStats};

/// How a live sandbox is made.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Memory limit (bytes); None: the template's.
    pub memory: Option<u64>,
    /// Bytes the writable file system may hold; None: the template's.
    pub disk: Option<u64>,
    /// Most open descriptors per process; None: the template's.
    pub fds: Option<u64>,
    /// Environment variables added before the first run.
    pub env: Vec<(String, String)>,
    /// The egress policy it runs under (None: no network).
    pub network: Option<std::sync::Arc<crate::NetSetup>>,
}

/// Why a live sandbox could not be made or used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LiveError {
    #[error("cannot fork the template: {0}")]
    Fork(String),
    /// The sandbox ended earlier (its code exited or timed out, or it was
    /// killed); the reason says which.
    #[error("the sandbox has ended: {0}")]
    Dead(String),
    /// A command could not be started or used (the message says why).
    #[error("{0}")]
    Command(String),
    /// The account a command was to run as does not exist.
    #[error("{0}")]
    User(String),
    /// No running command has this pid.
    #[error("process {0} not found")]
    NoCommand(u32),
    /// A code run is already in progress in this sandbox.
    #[error("the sandbox is already running code")]
    Busy,
    /// A checkpoint could not be written or loaded (the message says why).
    #[error("{0}")]
    Checkpoint(String),
    /// The sandbox was paused while this run was in progress: the run goes
    /// on, unheard, once the sandbox is resumed.
    #[error(
        "the sandbox was paused while the code ran; the run goes on, unheard, when it is resumed"
    )]
    Paused,
}

pub struct LiveSandbox {
    pub(crate) sb: Option<Sandbox>,
    language: Language,
    /// Why it ended, once it has.
    ended: Option<String>,
    /// Sent with the first request.
    env: Vec<(String, String)>,
    /// Its next request carries a seed for the agent's PRNGs (Python's
    /// `random`, numpy's, Node's `Math.random`): a new fork of a template
    /// or of a live sandbox, or a sandbox from a snapshot, holds its
    /// source's PRNG state, which the first request replaces. Later
    /// requests carry none, so the state goes on from cell to cell as in
    /// a notebook (`np.random.seed(0)` in one, the draw in the next).
    reseed: bool,
    runs: u64,
    /// Which template it was forked from (its snapshot's address).
    origin: usize,
    /// The environment variables it was created with (commands get them).
    env_vars: Vec<(String, String)>,
    /// Commands started in it, by pid (see `commands.rs`).
    pub(crate) commands: BTreeMap<u32, Command>,
    pub(crate) events: Vec<(u32, CommandEvent)>,
    /// The code run in progress, and the last one's result.
    pub(crate) code_run: Option<CodeRun>,
    pub(crate) run_result: Option<Result<ExecResult, LiveError>>,
    /// Event frames the agent wrote during a request not yet taken
    /// (`take_run_output`), and its reply once seen.
    frames: Vec<serde_json::Value>,
    reply: Option<serde_json::Value>,
}

/// A live sandbox frozen for writing to disk (`LiveSandbox::freeze_for_disk`).
pub struct Checkpoint {
    frozen: Frozen,
    extra: Vec<u8>,
    /// Its template's identity.
    template: u64,
}

impl Checkpoint {
    /// Write it into directory `dir` (whole or not at all); returns the
    /// bytes of memory written.
    pub fn save(&self, dir: &std::path::Path) -> Result<u64, LiveError> {
        self.frozen
            .save(dir, self.template, &self.extra)
            .map_err(|e| LiveError::Checkpoint(e.to_string()))
    }
}

/// A checkpoint read from disk (`LiveSandbox::load`), ready to become a
/// sandbox (`LiveSandbox::from_loaded`).
pub struct Loaded {
    frozen: Frozen,
    state: LiveState,
}

impl Loaded {
    /// The caller's state it was written with.
    pub fn meta(&self) -> &[u8] {
        &self.state.meta
    }
}

/// The engine's part of a checkpoint (in the kernel's state file).
#[derive(serde::Serialize, serde::Deserialize)]
struct LiveState {
    language: String,
    env: Vec<(String, String)>,
    env_vars: Vec<(String, String)>,
    runs: u64,
    commands: BTreeMap<u32, Command>,
    /// The caller's (the server's) state.
    meta: Vec<u8>,
    /// The code run in progress when it was frozen: it goes on, unheard,
    /// in what is made from the checkpoint.
    run: Option<SavedRun>,
}

/// A code run in a checkpoint: times as what was left of them.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRun {
    left_ns: u64,
    timeout_ns: u64,
    interruptible: bool,
    interrupted: bool,
    /// The agent's reply, when it was seen before the freeze (JSON text:
    /// bincode cannot hold a `serde_json::Value`).
    reply: Option<String>,
}

/// Start `sb`'s egress accounting under `network`.
fn set_network(sb: &mut Sandbox, network: Option<std::sync::Arc<crate::NetSetup>>) {
    sb.k.sockets_mut().egress = zeroboot_kernel::net::policy::Egress {
        setup: network,
        ..Default::default()
    };
}

/// What a request in progress produced since the last look: the agent's
/// fd 1 and fd 2 output and the event frames it wrote on its control
/// channel (see `begin_request`).
#[derive(Debug, Default)]
pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes of fd 1 / fd 2 output dropped for the cap since the last look.
    pub dropped: u64,
    pub frames: Vec<serde_json::Value>,
}

impl RunOutput {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty() && self.frames.is_empty()
    }
}

/// Time an interrupted request has to end before its sandbox is ended.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

fn origin_of(t: &Template) -> usize {
    &t.snapshot as *const _ as usize
}

impl LiveSandbox {
    /// Fork `template`: take an idle fork reset to it (restored now if
    /// `tidy` has not yet: a millisecond or two, against the first touch of
    /// every page a request uses in a VM that never ran: ~100 ms for a
    /// code-interpreter cell), else a spare fork made ahead by
    /// `Template::refill_spares` when `opts` sets no limit of its own, else
    /// a new fork. Nothing runs yet: the agent stays parked until the first
    /// `run`.
    pub fn create(template: &Template, opts: LiveOptions) -> Result<LiveSandbox, LiveError> {
        let own_limits = opts.memory.is_some() || opts.disk.is_some() || opts.fds.is_some();
        let any_idle = !template
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if !own_limits && !any_idle {
            let spare = template
                .spare
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            if let Some(mut sb) = spare {
                set_network(&mut sb, opts.network);
                return Ok(LiveSandbox::new(sb, template, opts.env));
            }
        }
        let fork = ForkOptions {
            memory: opts.memory,
            disk: opts.disk,
            fds: opts.fds,
            ..unheard(Vec::new())
        };
        let (mut sb, _) = template
            .acquire(fork)
            .map_err(|e| LiveError::Fork(e.to_string()))?;
        set_network(&mut sb, opts.network);
        Ok(LiveSandbox::new(sb, template, opts.env))
    }

    /// A new sandbox of `template` (made as `create` makes one, with
    /// `opts`) holding a copy of this one's files and nothing else of it:
    /// what E2B's file-system-only pause and snapshot keep ("memory":
    /// false), whose resume is a cold boot. This one is unchanged.
    pub fn rebooted(
        &self,
        template: &Template,
        opts: LiveOptions,
    ) -> Result<LiveSandbox, LiveError> {
        let Some(sb) = self.sb.as_ref() else {
            return Err(LiveError::Dead(
                self.ended.clone().unwrap_or_else(|| "killed".into()),
            ));
        };
        let mut fresh = LiveSandbox::create(template, opts)?;
        if let Some(f) = fresh.sb.as_mut() {
            f.k.vfs_mut().tmp = sb.k.vfs().tmp.clone();
        }
        Ok(fresh)
    }

    /// Change its egress policy (the addresses its resolver granted stay,
    /// and are checked against the new rules).
    pub fn set_network(&mut self, network: Option<std::sync::Arc<crate::NetSetup>>) {
        if let Some(sb) = self.sb.as_mut() {
            sb.k.sockets_mut().egress.setup = network;
        }
    }

    /// Its network use so far.
    pub fn network_stats(&self) -> crate::NetStats {
        self.sb
            .as_ref()
            .map(|sb| sb.k.sockets().egress.stats.clone())
            .unwrap_or_default()
    }

    fn new(sb: Sandbox, template: &Template, env: Vec<(String, String)>) -> LiveSandbox {
        LiveSandbox {
            sb: Some(sb),
            language: template.language,
            ended: None,
            env_vars: env.clone(),
            env,
            reseed: true,
            runs: 0,
            origin: origin_of(template),
            commands: BTreeMap::new(),
            events: Vec::new(),
            code_run: None,
            run_result: None,
            frames: Vec::new(),
            reply: None,
        }
    }

    /// The environment variables it was created with.
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env_vars
    }

    /// Its sandbox, or why it has none.
    pub(crate) fn sandbox_or_dead(&mut self) -> Result<&mut Sandbox, LiveError> {
        match self.sb.as_mut() {
            Some(sb) => Ok(sb),
            None => Err(LiveError::Dead(
                self.ended.clone().unwrap_or_else(|| "killed".into()),
            )),
        }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// Whether it can still run code.
    pub fn is_alive(&self) -> bool {
        self.sb.is_some()
    }

    /// Its VM and kernel state, while alive: for services the kernel
    /// serves without entering the guest (files, processes).
    pub fn sandbox_mut(&mut self) -> Option<&mut Sandbox> {
        self.sb.as_mut()
    }

    /// Why it ended (None while alive).
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// Runs so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Guest memory it holds (bytes), template pages included.
    pub fn memory_bytes(&self) -> u64 {
        self.sb.as_ref().map_or(0, |sb| sb.k.mm().resident())
    }

    /// End it now: the VM and everything in it are freed.
    pub fn kill(&mut self, reason: &str) {
        self.end_commands(reason);
        if self.sb.take().is_some() {
            self.ended = Some(reason.to_string());
        }
        if self.code_run.take().is_some() {
            self.run_result = Some(Err(LiveError::Dead(reason.to_string())));
        }
    }

    /// End it and hand its VM to `template`'s idle forks (the template it
    /// was forked from; otherwise it is dropped), where it is restored to
    /// the template (`Template::tidy`, a reset: a security boundary) and
    /// reused with a warm shadow MMU. Returns whether it was handed over.
    pub fn recycle(mut self, template: &Template, reason: &str) -> bool {
        self.end_commands(reason);
        let mut sb = self.sb.take();
        self.ended = Some(reason.to_string());
        if let Some(sb) = sb.as_mut() {
            // Its connections end with it, not when the fork is reused.
            sb.k.sockets_mut().close_host();
            sb.k.sockets_mut().egress = Default::default();
        }
        match sb {
            // One that was forked shares its pages with its copies (a
            // layer mapped over its memory): dropped, never reused.
            Some(sb) if self.origin == origin_of(template) && sb.mem.layer().is_none() => {
                template.release(sb);
                true
            }
            _ => false,
        }
    }

    /// `count` copies of this sandbox as it is now (DESIGN.md §7): its
    /// memory, processes (commands included, still running), descriptors,
    /// pipes with what they hold, and files. It is frozen once, for the
    /// time it takes to copy the pages it made its own, then goes on; each
    /// copy is made from that one freeze, or fails alone. Code running in
    /// it goes on in each copy too, under the same deadline, but only the
    /// source's caller gets a result: a copy's run ends unheard, and the
    /// copy takes new runs once it has (`Busy` until then).
    pub fn fork(&mut self, count: usize) -> Result<Vec<Result<LiveSandbox, LiveError>>, LiveError> {
        let frozen = self
            .sandbox_or_dead()?
            .freeze_for(count)
            .map_err(|e| LiveError::Fork(e.to_string()))?;
        Ok((0..count).map(|_| self.copy_of(&frozen)).collect())
    }

    fn copy_of(&self, frozen: &Frozen) -> Result<LiveSandbox, LiveError> {
        let sb = Sandbox::fork_frozen(frozen).map_err(|e| LiveError::Fork(e.to_string()))?;
        let mut commands = self.commands.clone();
        for c in commands.values_mut() {
            // Nobody reads a copy's commands yet.
            c.held = false;
        }
        Ok(LiveSandbox {
            sb: Some(sb),
            language: self.language,
            ended: None,
            env: self.env.clone(),
            env_vars: self.env_vars.clone(),
            // Each copy draws its own numbers from its first request on.
            reseed: true,
            runs: self.runs,
            // Not the template's fork any more: never recycled into it.
            origin: 0,
            commands,
            events: Vec::new(),
            // A run in progress goes on in the copy, unheard.
            code_run: self.code_run,
            run_result: None,
            frames: self.frames.clone(),
            reply: self.reply.clone(),
        })
    }

    /// Freeze this sandbox as it is now for a checkpoint (a snapshot, or
    /// a pause to disk: DESIGN.md §7): the pages it made its own and all
    /// its state, with the caller's `meta`. It goes on running. A code run
    /// in progress is frozen too, with the time it has left, and goes on
    /// unheard in what is made from the checkpoint (as in a fork's copies).
    /// Writing it (`Checkpoint::save`) is for another thread: the vCPU
    /// threads may not touch files.
    pub fn freeze_for_disk(
        &mut self,
        template: &Template,
        meta: &[u8],
    ) -> Result<Checkpoint, LiveError> {
        let now = Instant::now();
        let run = self.code_run.map(|r| SavedRun {
            left_ns: duration_ns(
                r.deadline
                    .saturating_duration_since(r.held_at.unwrap_or(now)),
            ),
            timeout_ns: duration_ns(r.timeout),
            interruptible: r.interruptible,
            interrupted: r.interrupted,
            reply: self.reply.as_ref().map(|v| v.to_string()),
        });
        let frozen = self
            .sandbox_or_dead()?
            .freeze()
            .map_err(|e| LiveError::Checkpoint(e.to_string()))?;
        let mut commands = self.commands.clone();
        for c in commands.values_mut() {
            c.held = false;
        }
        let state = LiveState {
            language: self.language.name().to_string(),
            env: self.env.clone(),
            env_vars: self.env_vars.clone(),
            runs: self.runs,
            commands,
            meta: meta.to_vec(),
            run,
        };
        let extra = bincode::serialize(&state).map_err(|e| LiveError::Checkpoint(e.to_string()))?;
        Ok(Checkpoint {
            frozen,
            extra,
            template: template.snapshot.identity,
        })
    }

    /// Read the checkpoint in `dir`, taken of a sandbox of `template`
    /// (files only: any thread). The checkpoint stays (a snapshot makes
    /// any number of sandboxes).
    pub fn load(template: &Template, dir: &std::path::Path) -> Result<Loaded, LiveError> {
        let snap = &template.snapshot;
        let (frozen, extra) = Frozen::load(
            dir,
            snap.mem.clone(),
            snap.mem_len,
            template.image.clone(),
            snap.identity,
        )
        .map_err(|e| LiveError::Checkpoint(e.to_string()))?;
        let state: LiveState = bincode::deserialize(&extra)
            .map_err(|e| LiveError::Checkpoint(format!("{}: {e}", dir.display())))?;
        if state.language != template.language.name() {
            return Err(LiveError::Checkpoint(format!(
                "{} is a {} sandbox, not {}",
                dir.display(),
                state.language,
                template.language.name()
            )));
        }
        Ok(Loaded { frozen, state })
    }

    /// A sandbox that continues from a loaded checkpoint (a new VM: on a
    /// vCPU thread). `resumed`: it is the checkpoint's own sandbox going on
    /// (a resume), whose PRNGs go on too; else a new sandbox made from a
    /// snapshot, whose first request reseeds them.
    pub fn from_loaded(
        template: &Template,
        loaded: &Loaded,
        network: Option<std::sync::Arc<crate::NetSetup>>,
        resumed: bool,
    ) -> Result<LiveSandbox, LiveError> {
        let mut sb =
            Sandbox::fork_frozen(&loaded.frozen).map_err(|e| LiveError::Fork(e.to_string()))?;
        set_network(&mut sb, network);
        let st = &loaded.state;
        let now = Instant::now();
        let code_run = st.run.as_ref().map(|r| CodeRun {
            start: now,
            began: now,
            deadline: now + Duration::from_nanos(r.left_ns),
            timeout: Duration::from_nanos(r.timeout_ns),
            interruptible: r.interruptible,
            interrupted: r.interrupted,
            held_at: None,
        });
        Ok(LiveSandbox {
            sb: Some(sb),
            language: template.language,
            ended: None,
            env: st.env.clone(),
            env_vars: st.env_vars.clone(),
            // A sandbox paused before its first request still holds the
            // template's PRNG state.
            reseed: !resumed || st.runs == 0,
            runs: st.runs,
            origin: 0,
            commands: st.commands.clone(),
            events: Vec::new(),
            // A run frozen in progress goes on, unheard.
            code_run,
            run_result: None,
            frames: Vec::new(),
            reply: st
                .run
                .as_ref()
                .and_then(|r| serde_json::from_str(r.reply.as_deref()?).ok()),
        })
    }

    /// Run `code` in the sandbox, with what earlier runs left. Code that
    /// times out or ends the agent (`os._exit`, a fatal signal) ends the
    /// sandbox: its result says so, and later runs get `LiveError::Dead`.
    /// Commands started earlier run alongside it.
    pub fn run(
        &mut self,
        code: &str,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<ExecResult, LiveError> {
        self.begin_run(code, timeout, output_cap)?;
        loop {
            let st = self.step(RUN_SLICE);
            if let Some(r) = self.run_result.take() {
                return r;
            }
            if !st.busy {
                let nap = st
                    .wake
                    .map_or(Duration::from_millis(1), |w| {
                        w.saturating_duration_since(Instant::now())
                    })
                    .min(Duration::from_millis(10));
                std::thread::sleep(nap);
            }
        }
    }

    /// Hand the agent `code` and return: the run goes on as the sandbox is
    /// stepped (`step`), and its result is taken with `take_run_result`.
    /// One run at a time (`LiveError::Busy`).
    pub fn begin_run(
        &mut self,
        code: &str,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<(), LiveError> {
        if self.code_run.is_some() {
            return Err(LiveError::Busy);
        }
        let env = std::mem::take(&mut self.env);
        let seed = std::mem::take(&mut self.reseed).then(seed);
        self.begin(live_request(code, &env, seed), timeout, output_cap, false)
    }

    /// Hand the agent a request of its own (`req`, a JSON object; a seed
    /// is added) and return; the run goes on as `begin_run`'s does. While
    /// it runs, what the agent prints and the event frames it writes
    /// before its reply are taken with `take_run_output`; its reply is the
    /// result's `reply`. When `timeout` passes (or `interrupt_run` is
    /// called) the agent gets SIGINT and `INTERRUPT_GRACE` to reply, as a
    /// notebook kernel is interrupted; only then is the sandbox ended.
    pub fn begin_request(
        &mut self,
        mut req: serde_json::Value,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<(), LiveError> {
        if self.code_run.is_some() {
            return Err(LiveError::Busy);
        }
        let env = std::mem::take(&mut self.env);
        let reseed = std::mem::take(&mut self.reseed);
        if let Some(obj) = req.as_object_mut() {
            if reseed {
                obj.insert("seed".into(), seed().into());
            }
            if !env.is_empty() {
                // The sandbox's environment, with its first request.
                let map: serde_json::Map<String, serde_json::Value> = env
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                obj.insert("env".into(), map.into());
            }
        }
        self.begin(req, timeout, output_cap, true)
    }

    fn begin(
        &mut self,
        req: serde_json::Value,
        timeout: Duration,
        output_cap: usize,
        interruptible: bool,
    ) -> Result<(), LiveError> {
        let start = Instant::now();
        let sb = self.sandbox_or_dead()?;
        let k = &mut sb.k;
        k.set_output(Sink::capture(output_cap), Sink::capture(output_cap));
        k.reset_stats();
        // Limit hits are reported per run, as for one-shot executions.
        k.clear_limit_hits();
        k.control_mut().outbox.clear();
        k.control_mut().inbox.clear();
        k.control_mut().inbox.extend(frame(&req));
        self.runs += 1;
        self.run_result = None;
        self.frames.clear();
        self.reply = None;
        self.code_run = Some(CodeRun {
            start,
            began: Instant::now(),
            deadline: Instant::now() + timeout,
            timeout,
            interruptible,
            interrupted: false,
            held_at: None,
        });
        Ok(())
    }

    /// The sandbox is paused (in memory): the code run in progress, if
    /// any, stops counting its time until `resume_run`.
    pub fn hold_run(&mut self) {
        if let Some(r) = self.code_run.as_mut() {
            r.held_at.get_or_insert_with(Instant::now);
        }
    }

    /// The sandbox is resumed: its code run's deadline moves on by the
    /// time it was held.
    pub fn resume_run(&mut self) {
        if let Some(r) = self.code_run.as_mut() {
            if let Some(at) = r.held_at.take() {
                r.deadline += at.elapsed();
            }
        }
    }

    /// Interrupt the request in progress (SIGINT to the agent), if it is
    /// an interruptible one not interrupted yet: its client went away or
    /// its time is up. It then has `INTERRUPT_GRACE` to reply.
    pub fn interrupt_run(&mut self) {
        let Some(run) = self.code_run.as_mut() else {
            return;
        };
        if !run.interruptible || run.interrupted {
            return;
        }
        run.interrupted = true;
        run.deadline = Instant::now() + INTERRUPT_GRACE;
        if let Some(sb) = self.sb.as_mut() {
            let init = sb.k.init_pid();
            if let Err(e) = sb.k.signal_process(init, zeroboot_abi::signal::SIGINT) {
                tracing::debug!(error = ?e, "cannot interrupt the agent");
            }
        }
    }

    /// What the request in progress printed and the event frames it wrote
    /// since the last call (frames are taken whole; a partial one waits).
    pub fn take_run_output(&mut self) -> RunOutput {
        let mut out = RunOutput {
            frames: std::mem::take(&mut self.frames),
            ..Default::default()
        };
        if self.code_run.is_none() {
            return out;
        }
        let Some(sb) = self.sb.as_mut() else {
            return out;
        };
        let k = &mut sb.k;
        let (o, d1) = k.stdout_mut().take();
        let (e, d2) = k.stderr_mut().take();
        out.stdout = o;
        out.stderr = e;
        out.dropped = d1 + d2;
        for v in take_frames(&mut k.control_mut().outbox) {
            if v.get("exit_code").is_some() {
                self.reply = Some(v);
            } else {
                out.frames.push(v);
            }
        }
        out
    }

    /// Whether a code run is in progress.
    pub fn is_running_code(&self) -> bool {
        self.code_run.is_some()
    }

    /// The result of the last code run, once it has finished.
    pub fn take_run_result(&mut self) -> Option<Result<ExecResult, LiveError>> {
        self.run_result.take()
    }

    /// After a guest slice during a code run: finish it if the agent has
    /// replied, the sandbox ended, or the run's time is up.
    pub(crate) fn advance_run(&mut self, outcome: Result<Outcome, zeroboot_kernel::SandboxError>) {
        let Some(run) = self.code_run.as_ref() else {
            return;
        };
        let deadline = run.deadline;
        let interrupt = run.interruptible && !run.interrupted;
        let Some(sb) = self.sb.as_mut() else {
            return;
        };
        let replied = sb.k.control_mut().inbox.is_empty() && zeroboot_kernel::sched::parked(&sb.k);
        let outcome = match outcome {
            Ok(Outcome::Parked | Outcome::TimedOut) if replied => Ok(Outcome::Parked),
            Ok(Outcome::Parked | Outcome::TimedOut) if Instant::now() >= deadline && interrupt => {
                self.interrupt_run();
                return;
            }
            Ok(Outcome::Parked | Outcome::TimedOut) if Instant::now() >= deadline => {
                Ok(Outcome::TimedOut)
            }
            Ok(Outcome::Parked | Outcome::TimedOut) => return,
            other => other,
        };
        self.finish_run(outcome);
    }

    fn finish_run(&mut self, outcome: Result<Outcome, zeroboot_kernel::SandboxError>) {
        let Some(run) = self.code_run.take() else {
            return;
        };
        let Some(sb) = self.sb.as_mut() else {
            self.run_result = Some(Err(LiveError::Dead(
                self.ended.clone().unwrap_or_else(|| "killed".into()),
            )));
            return;
        };
        let ran = Instant::now();
        let k = &mut sb.k;
        let timeout = run.timeout;
        let mut r = ExecResult {
            reused: self.runs > 1,
            exec_time: ran - run.began,
            ..Default::default()
        };
        let hits = k.limit_hits();
        r.out_of_memory = hits.memory;
        r.disk_full = hits.disk;
        r.fds_exhausted = hits.fds;
        r.network = k.sockets_mut().egress.stats.clone();
        r.stats = ExecStats {
            syscalls: k.stats().by_name(),
            exceptions: k.stats().exceptions,
            kicks: k.stats().kicks,
        };
        (r.stdout, r.stdout_truncated) = collect(k.stdout_mut());
        (r.stderr, r.stderr_truncated) = collect(k.stderr_mut());
        let mut ended = None;
        if run.interruptible {
            // Frames left in the channel: events first, the reply last.
            for v in take_frames(&mut k.control_mut().outbox) {
                if v.get("exit_code").is_some() {
                    self.reply = Some(v);
                } else {
                    self.frames.push(v);
                }
            }
            if let Some(reply) = self.reply.take() {
                k.control_mut().outbox = frame(&reply);
                r.reply = Some(reply);
            }
        }
        match outcome {
            Ok(Outcome::Parked) => match reply_exit_code(&k.control_mut().outbox) {
                Some(c) => r.exit_code = c,
                None => {
                    r.exit_code = -1;
                    r.error = Some("the agent's reply was malformed".into());
                    ended = Some("the agent's reply was malformed".to_string());
                }
            },
            Ok(Outcome::Exited(e)) => {
                r.exit_code = e.status();
                if let Exit::Signal(sig, why) = &e {
                    r.out_of_memory |= *sig == 9 && why.contains("out of memory");
                }
                ended = Some(match e {
                    Exit::Code(c) => format!("its process exited with status {c}"),
                    Exit::Signal(sig, why) => {
                        format!("its process was killed by signal {sig} ({why})")
                    }
                });
            }
            Ok(Outcome::TimedOut) => {
                r.timed_out = true;
                r.exit_code = 124;
                r.stderr.push_str(&format!(
                    "\n[zeroboot: timed out after {:.3} s]\n",
                    timeout.as_secs_f64()
                ));
                ended = Some(format!(
                    "its code timed out after {:.3} s",
                    timeout.as_secs_f64()
                ));
            }
            Err(e) => {
                r.exit_code = -1;
                r.error = Some(format!("sandbox failed: {e}"));
                ended = Some(format!("it failed: {e}"));
            }
        }
        k.control_mut().outbox.clear();
        if let Some(why) = ended {
            self.kill(&why);
        } else {
            // Commands ran alongside the code.
            self.pump();
        }
        zeroboot_kernel::hardening::report_denials();
        r.total_time = run.start.elapsed();
        self.run_result = Some(Ok(r));
    }
}

/// A code run in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeRun {
    /// When it was asked for.
    start: Instant,
    /// When the guest got it.
    began: Instant,
    pub(crate) deadline: Instant,
    timeout: Duration,
    /// Interrupted (SIGINT) rather than ended at its deadline.
    interruptible: bool,
    interrupted: bool,
    /// Since when its sandbox is paused (its time does not run meanwhile).
    held_at: Option<Instant>,
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Guest time a synchronous `run` gives per step.
const RUN_SLICE: Duration = Duration::from_millis(50);

/// A fork whose output nobody keeps (a live sandbox's runs collect their
/// own), under the template's limits, handed `request`.
fn unheard(request: Vec<u8>) -> ForkOptions {
    ForkOptions {
        stdout: Sink::capture(0),
        stderr: Sink::capture(0),
        stdin: Source::Empty,
        memory: None,
        disk: None,
        fds: None,
        request,
    }
}

/// The longest a spare fork's warming run may take (`warm_spare`).
const WARM_RUN_LIMIT: Duration = Duration::from_secs(10);

impl Template {
    /// Fork until `n` spare forks wait for live sandboxes (callers run it
    /// when they have nothing else to do). Returns how many it made.
    /// Under memory pressure (see `zeroboot_vmm::pressure`) it makes none and drops
    /// those it holds.
    pub fn refill_spares(&self, n: usize) -> usize {
        let mut made = 0;
        if zeroboot_vmm::pressure::memory_tight() {
            let dropped =
                std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
            if !dropped.is_empty() {
                tracing::info!(
                    spares = dropped.len(),
                    "host memory is short: spare forks dropped"
                );
            }
            return 0;
        }
        while self.spare.lock().unwrap_or_else(|e| e.into_inner()).len() < n {
            match Sandbox::fork(&self.snapshot, unheard(Vec::new())) {
                Ok(sb) => {
                    self.spare
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(sb);
                    made += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fork a spare sandbox");
                    break;
                }
            }
        }
        made
    }

    /// Run one spare fork once, on a request like a user's first, and keep
    /// it with the idle forks, where the next `tidy` restores it to the
    /// template (the reset, a security boundary, as for any reused fork).
    /// A VM that has run has its shadow MMU and its host mappings built for
    /// what it touched and keeps them across the reset: a new sandbox made
    /// from it does not pay ~4 µs for the first touch of each page. A
    /// code-interpreter cell touches enough that its first `run_code` took
    /// 100-200 ms in a never-run fork and ~10 ms in a used one. Callers run
    /// it on CPU time nothing else wants (the server's SCHED_IDLE warmer
    /// thread). Returns whether a fork was warmed.
    pub fn warm_spare(&self) -> bool {
        if zeroboot_vmm::pressure::memory_tight() {
            return false;
        }
        let max = self.max_idle.load(std::sync::atomic::Ordering::Relaxed);
        if self.idle.lock().unwrap_or_else(|e| e.into_inner()).len() >= max {
            return false;
        }
        let Some(mut sb) = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            return false;
        };
        let request = match self.language {
            Language::CodeInterpreter => crate::exec::cell_request_frame("1+1", "python"),
            Language::Python => frame(&live_request("print(1+1)", &[], Some(seed()))),
            Language::Node => frame(&live_request("console.log(1+1)", &[], Some(seed()))),
        };
        if !matches!(sb.begin_unrun(&self.snapshot, unheard(request)), Ok(true)) {
            return false;
        }
        match sb.run(Some(Instant::now() + WARM_RUN_LIMIT)) {
            Ok(Outcome::Parked) => {
                self.release(sb);
                true
            }
            other => {
                tracing::warn!(outcome = ?other, "warming a spare fork failed; dropped");
                false
            }
        }
    }

    /// Forks kept for reuse (used, restored, or warmed).
    pub fn idle_forks(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Spare forks waiting for live sandboxes.
    pub fn spares(&self) -> usize {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One live request (a seed for the agent's PRNGs with the first, see
/// `LiveSandbox::reseed`).
fn live_request(code: &str, env: &[(String, String)], seed: Option<u64>) -> serde_json::Value {
    let mut req = serde_json::json!({ "code": code, "persist": true });
    if let Some(seed) = seed {
        req["seed"] = seed.into();
    }
    if !env.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        req["env"] = serde_json::Value::Object(map);
    }
    req
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_a_partial_one_waits() {
        let a = frame(&serde_json::json!({"type": "stdout", "text": "a"}));
        let b = frame(&serde_json::json!({"exit_code": 0}));
        let mut outbox = [a.clone(), b.clone()].concat();
        // Half of a third frame.
        let c = frame(&serde_json::json!({"type": "stderr", "text": "c"}));
        outbox.extend_from_slice(&c[..c.len() / 2]);
        let got = take_frames(&mut outbox);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["text"], "a");
        assert_eq!(got[1]["exit_code"], 0);
        assert_eq!(outbox, c[..c.len() / 2]);
        outbox.extend_from_slice(&c[c.len() / 2..]);
        assert_eq!(take_frames(&mut outbox)[0]["text"], "c");
        assert!(outbox.is_empty());
    }

    #[test]
    fn malformed_frames_are_dropped() {
        let mut outbox = 3u32.to_le_bytes().to_vec();
        outbox.extend_from_slice(b"[1]");
        outbox.extend(5u32.to_le_bytes());
        outbox.extend_from_slice(b"{bad}");
        outbox.extend(frame(&serde_json::json!({"ok": true})));
        let got = take_frames(&mut outbox);
        assert_eq!(got, vec![serde_json::json!({"ok": true})]);
        assert!(outbox.is_empty());
    }
}
