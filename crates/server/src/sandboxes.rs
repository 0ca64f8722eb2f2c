//! Live sandboxes held by the server (DESIGN.md §5): a table id -> sandbox,
//! each sandbox an actor with a mailbox, and a bounded pool of worker
//! threads that run whichever sandbox has work.
//!
//! - A sandbox's state (its `LiveSandbox`: VM, kernel state) is owned by
//!   its slot. A worker takes it out to serve one job and puts it back, so
//!   exactly one thread at a time touches it, with no lock held while the
//!   guest runs. An idle sandbox is data in the table: no thread, no CPU.
//! - Posting a job to an idle sandbox schedules it on the run queue; a
//!   worker serves one job, then requeues the sandbox behind the others if
//!   more jobs wait (round robin between busy sandboxes).
//! - Time to live: a reaper kills running sandboxes whose end time passed;
//!   a run never goes past its sandbox's end time either.
//!
//! - Commands (processes started by the kernel, `LiveSandbox::start`) run
//!   between jobs: while a sandbox has commands, a worker gives it one
//!   guest time slice per turn (`LiveSandbox::step`) and hands their output
//!   to the streams subscribed to them, so a file read or a stdin write is
//!   served between two slices of a running command. A sandbox whose
//!   commands all wait for a timeout sleeps on the timer list; one whose
//!   commands wait for input or a slow reader waits for a job.
//!
//! A code run (`Job::Run`) goes on in the same turns, so files, stdin and
//! kill are served while code runs too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::envd::interpreter::Contexts;
use crate::store::{SavedMeta, Store};
use std::path::Path;
use zeroboot_engine::{
    Checkpoint, CommandEvent, ExecResult, Language, LiveError, LiveOptions, LiveSandbox, Loaded,
    RunOutput, Template,
};

/// A guest time slice given to a sandbox's commands per worker turn.
const COMMAND_SLICE: Duration = Duration::from_millis(20);

/// Events a command stream may have queued before its command's output is
/// held (the pipe fills and the command blocks, as with a slow reader).
pub const STREAM_BACKLOG: usize = 256;
/// Room kept free in a stream's queue: a turn queues at most a few events.
const STREAM_SLACK: usize = 16;

/// Limits on live sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Live sandboxes on the server, all keys together.
    pub max_total: usize,
    /// Live sandboxes per API key.
    pub max_per_key: usize,
    /// Longest time to live a sandbox may be given (seconds).
    pub max_timeout: u64,
    /// Worker threads running sandboxes' jobs.
    pub workers: usize,
    /// This node's key inside its sandboxes' ids ("" for none;
    /// `fleet.rs`).
    pub node_key: String,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            max_total: 1000,
            max_per_key: 100,
            max_timeout: 24 * 3600,
            workers: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4),
            node_key: String::new(),
        }
    }
}

/// Why a sandbox ended (the `reason` of `zeroboot_sandbox_kills_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KillReason {
    /// Its time to live ran out.
    Timeout,
    /// A client killed it.
    Request,
    /// Its code hit a limit (ran past its run's time limit, out of memory).
    Limit,
    /// Its code ended the sandbox's process (`os._exit`, a fatal signal).
    Exit,
}

impl KillReason {
    pub fn name(self) -> &'static str {
        match self {
            KillReason::Timeout => "timeout",
            KillReason::Request => "request",
            KillReason::Limit => "limit",
            KillReason::Exit => "exit",
        }
    }
}

/// What a client gave at creation and can read back.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The template name the client asked for (`base` may alias `python`).
    pub template: String,
    pub language: Language,
    pub owner: Option<usize>,
    pub metadata: BTreeMap<String, String>,
    pub secure: bool,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Its egress policy (the operator's and its own rules; replaced by
    /// `PUT /sandboxes/{id}/network`).
    pub network: Arc<Mutex<Arc<zeroboot_engine::NetSetup>>>,
    /// Paused (to disk) instead of killed when its time to live ends.
    pub auto_pause: bool,
    /// Whether that pause keeps its memory (false: its files only).
    pub auto_pause_memory: bool,
}

/// Time to live and pause state.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub end_at: SystemTime,
    pub paused: bool,
    /// Paused to disk: its VM is gone; resuming loads it back.
    pub on_disk: bool,
    /// Being paused to disk: `paused` may already be set while its
    /// checkpoint is written and its VM not yet gone; a resume waits.
    pub pausing: bool,
}

type RunReply = oneshot::Sender<Result<ExecResult, LiveError>>;

/// A request's output as it runs, and its result (`Sandboxes::request`).
pub type RequestStreams = (
    mpsc::UnboundedReceiver<RunOutput>,
    oneshot::Receiver<Result<ExecResult, LiveError>>,
);

/// A job that borrows the sandbox between guest time slices (files,
/// processes): it gets the sandbox, or None when it has ended.
type WithJob = Box<dyn FnOnce(Option<&mut LiveSandbox>) + Send>;

/// What a run hands a sandbox's agent.
enum Ask {
    /// Code, run as a script in its namespace (`Sandboxes::run`).
    Code(String),
    /// An agent request of its own whose output streams as it runs
    /// (`Sandboxes::request`).
    Request {
        req: serde_json::Value,
        stream: mpsc::UnboundedSender<RunOutput>,
    },
}

enum Job {
    Create {
        opts: LiveOptions,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Hand the agent `ask`; the run goes on in the worker's turns.
    Run {
        ask: Ask,
        timeout: Duration,
        output_cap: usize,
        reply: RunReply,
    },
    With(WithJob),
    /// Take a copy made by a fork of another sandbox as this one's.
    Adopt(Box<LiveSandbox>),
    /// Freeze the sandbox for a checkpoint (a snapshot; a pause to disk
    /// when `pause`: then it stops running at once). Without `memory`, the
    /// checkpoint is of a cold copy holding its files only.
    Freeze {
        pause: bool,
        memory: bool,
        reply: oneshot::Sender<Result<Checkpoint, SandboxError>>,
    },
    /// Pause it in memory (no state directory); without `memory`, it is
    /// replaced by a cold copy holding its files only.
    Hold {
        memory: bool,
        reply: oneshot::Sender<Result<(), SandboxError>>,
    },
    /// Resume it after a pause in memory (or a pause that failed).
    Release,
    /// Its checkpoint is on disk: free its VM (a pause to disk).
    Unload {
        reply: oneshot::Sender<()>,
    },
    /// Become the sandbox of a loaded checkpoint (unless it already is
    /// one: a second resume).
    Restore {
        loaded: Box<Loaded>,
        /// Take its egress rules from the checkpoint (a resume; a new
        /// sandbox from a snapshot has its request's).
        own_rules: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

#[derive(Default)]
struct Slot {
    sandbox: Option<LiveSandbox>,
    jobs: VecDeque<Job>,
    /// On the run queue or on a worker.
    scheduled: bool,
    /// Killed while a worker had it: the worker drops it.
    killed: Option<String>,
}

/// One live sandbox: its description and its mailbox.
pub struct Entry {
    pub id: String,
    pub spec: Spec,
    /// Its template (an ended sandbox's VM goes back to its idle forks).
    pub template: Arc<Template>,
    pub access_token: String,
    pub started_at: SystemTime,
    life: Mutex<Life>,
    slot: Mutex<Slot>,
    /// Streams following each command's events, by pid.
    subscribers: Mutex<HashMap<u32, Vec<mpsc::Sender<CommandEvent>>>>,
    /// Who waits for the code run in progress.
    run_reply: Mutex<Option<RunReply>>,
    /// Who follows the output of the request in progress (`request`).
    run_stream: Mutex<Option<mpsc::UnboundedSender<RunOutput>>>,
    /// The code interpreter's contexts (`envd::interpreter`).
    pub contexts: Mutex<Contexts>,
}

impl Entry {
    /// Its egress setup, labelled with its id for the logs (kept so).
    pub fn with_network_id(&self) -> Arc<zeroboot_engine::NetSetup> {
        let mut n = lock(&self.spec.network);
        if n.sandbox != self.id {
            *n = Arc::new(zeroboot_engine::NetSetup {
                operator: n.operator.clone(),
                rules: n.rules.clone(),
                sandbox: self.id.clone(),
            });
        }
        n.clone()
    }

    /// Its egress setup now.
    pub fn network(&self) -> Arc<zeroboot_engine::NetSetup> {
        lock(&self.spec.network).clone()
    }

    pub fn life(&self) -> Life {
        *lock(&self.life)
    }

    /// Hand what the request in progress printed to its follower; a
    /// follower that went away interrupts the request (as a notebook
    /// kernel is interrupted when its client leaves).
    fn stream_output(&self, sb: &mut LiveSandbox) {
        let s = lock(&self.run_stream);
        let Some(tx) = s.as_ref() else {
            return;
        };
        let out = sb.take_run_output();
        if tx.is_closed() {
            sb.interrupt_run();
        } else if !out.is_empty() || out.dropped > 0 {
            let _ = tx.send(out);
        }
    }

    /// Follow command `pid`'s events from now on: a channel that ends
    /// after its `End` event (or when the sandbox ends). Call it on the
    /// actor (in a `Sandboxes::with` job) so no event falls between.
    pub fn subscribe(&self, pid: u32) -> mpsc::Receiver<CommandEvent> {
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        lock(&self.subscribers).entry(pid).or_default().push(tx);
        rx
    }

    /// Hand `sb`'s command events to their streams; hold the output of a
    /// command one of whose streams is behind. Returns whether one is.
    fn deliver(&self, sb: &mut LiveSandbox) -> bool {
        let events = sb.take_events();
        let mut subs = lock(&self.subscribers);
        for (pid, ev) in events {
            let end = matches!(ev, CommandEvent::End { .. });
            if let Some(list) = subs.get_mut(&pid) {
                // A full queue cannot happen (output is held before it
                // fills); a closed one is a client that went away.
                list.retain(|tx| tx.try_send(ev.clone()).is_ok());
            }
            if end {
                subs.remove(&pid);
            }
        }
        subs.retain(|_, list| {
            list.retain(|tx| !tx.is_closed());
            !list.is_empty()
        });
        // Held: commands one of whose streams is behind. A command whose
        // streams all went away is released (its output is dropped).
        let behind: std::collections::BTreeSet<u32> = subs
            .iter()
            .filter(|(_, list)| list.iter().any(|tx| tx.capacity() < STREAM_SLACK))
            .map(|(&pid, _)| pid)
            .collect();
        sb.hold_only(&behind);
        !behind.is_empty()
    }
}

/// A sandbox's code-interpreter contexts.
pub(crate) fn lock_contexts(e: &Entry) -> std::sync::MutexGuard<'_, Contexts> {
    lock(&e.contexts)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a request about a sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No such sandbox (never existed, another key's, or ended: the
    /// message says which when it is known).
    #[error("{0}")]
    NotFound(String),
    /// It ended (the message says how).
    #[error("{0}")]
    Ended(String),
    /// Over a limit on live sandboxes.
    #[error("{0}")]
    TooMany(String),
    /// Paused, or already running (for resume).
    #[error("{0}")]
    Conflict(String),
    /// The server failed.
    #[error("{0}")]
    Internal(String),
    /// This node is draining: it takes no new sandboxes.
    #[error("{0}")]
    Draining(String),
}

struct RunQueue {
    q: Mutex<VecDeque<Arc<Entry>>>,
    ready: Condvar,
}

impl RunQueue {
    fn push(&self, e: Arc<Entry>) {
        lock(&self.q).push_back(e);
        self.ready.notify_one();
    }

    /// The next sandbox with work; `idle()` runs first when there is none.
    fn pop(&self, idle: impl FnOnce()) -> Arc<Entry> {
        if let Some(e) = lock(&self.q).pop_front() {
            return e;
        }
        idle();
        let mut q = lock(&self.q);
        loop {
            if let Some(e) = q.pop_front() {
                return e;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Counters for /v1/metrics.
#[derive(Default)]
pub struct SandboxCounters {
    pub created: Mutex<BTreeMap<String, u64>>,
    pub kills: Mutex<BTreeMap<&'static str, u64>>,
    pub create_latency: crate::metrics::Histogram,
    /// Time of a whole fork call (the source's freeze and every copy).
    pub fork_latency: crate::metrics::Histogram,
    pub runs: AtomicU64,
    /// Snapshots written (`POST /sandboxes/{id}/snapshots`).
    pub snapshots: AtomicU64,
}

/// Longest a resume waits for a pause to disk in progress.
const PAUSE_WAIT: Duration = Duration::from_secs(120);

/// Fresh forks per template kept ready for creates.
const SPARE_FORKS: usize = 8;

/// Ended sandboxes remembered for clearer errors (bounded).
const TOMBSTONES: usize = 10_000;

pub struct Sandboxes {
    pub limits: SandboxLimits,
    table: Mutex<HashMap<String, Arc<Entry>>>,
    ended: Mutex<(HashMap<String, String>, VecDeque<String>)>,
    runq: Arc<RunQueue>,
    /// Sandboxes whose commands sleep, by when they wake.
    timers: Arc<Timers>,
    pub counters: SandboxCounters,
    /// Templates whose idle forks the workers restore when they have
    /// nothing else to do (ended sandboxes go back there).
    templates: Vec<Arc<Template>>,
    /// Where snapshots and sandboxes paused to disk are kept (none: pause
    /// keeps sandboxes in memory, and there are no snapshots).
    pub store: Option<Arc<Store>>,
    /// Set by SIGTERM: no new sandboxes, the live ones go on.
    draining: std::sync::atomic::AtomicBool,
}

impl Sandboxes {
    /// Start the workers (each runs `setup` first: the seccomp filter).
    pub fn new(
        limits: SandboxLimits,
        setup: fn() -> Result<(), String>,
        templates: Vec<Arc<Template>>,
        store: Option<Arc<Store>>,
    ) -> std::io::Result<Arc<Sandboxes>> {
        let runq = Arc::new(RunQueue {
            q: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        let timers = Arc::new(Timers::default());
        let s = Arc::new(Sandboxes {
            limits: limits.clone(),
            table: Mutex::new(HashMap::new()),
            ended: Mutex::new((HashMap::new(), VecDeque::new())),
            runq: runq.clone(),
            timers: timers.clone(),
            counters: SandboxCounters::default(),
            templates,
            store,
            draining: Default::default(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        for i in 0..limits.workers.max(1) {
            let ready = ready_tx.clone();
            // Workers hold the table weakly: it goes when the server does.
            let weak = Arc::downgrade(&s);
            let runq = runq.clone();
            std::thread::Builder::new()
                .name(format!("zeroboot-live-{i}"))
                .spawn(move || {
                    let r = setup();
                    let ok = r.is_ok();
                    let _ = ready.send(r);
                    if ok {
                        worker(&runq, &weak);
                    }
                })?;
        }
        {
            let ready = ready_tx.clone();
            let weak = Arc::downgrade(&s);
            std::thread::Builder::new()
                .name("zeroboot-live-warm".into())
                .spawn(move || {
                    if let Err(e) = zeroboot_vmm::priority::idle_only() {
                        tracing::warn!(error = %e, "the warmer thread keeps its priority");
                    }
                    let r = setup();
                    let ok = r.is_ok();
                    let _ = ready.send(r);
                    if ok {
                        warmer(&weak);
                    }
                })?;
        }
        {
            let runq = runq.clone();
            let timers = timers.clone();
            let weak = Arc::downgrade(&s);
            std::thread::Builder::new()
                .name("zeroboot-live-timers".into())
                .spawn(move || timers.run(&runq, &weak))?;
        }
        drop(ready_tx);
        for r in ready_rx.iter().take(limits.workers.max(1) + 1) {
            r.map_err(std::io::Error::other)?;
        }
        Ok(s)
    }

    /// Create a sandbox of `template` for `spec.owner`, living `timeout`.
    pub async fn create(
        &self,
        template: Arc<Template>,
        spec: Spec,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Arc<Entry>, SandboxError> {
        let start = Instant::now();
        let entry = new_entry(&self.limits.node_key, template, spec, timeout);
        self.admit(&entry)?;
        let (reply, rx) = oneshot::channel();
        let opts = live_options(&entry, env);
        self.post(&entry, Job::Create { opts, reply });
        let r = rx
            .await
            .unwrap_or_else(|_| Err("the sandbox was killed while it was being created".into()));
        if let Err(e) = r {
            self.remove(&entry.id);
            return Err(SandboxError::Internal(e));
        }
        self.counters.create_latency.observe(start.elapsed());
        *lock(&self.counters.created)
            .entry(entry.spec.template.clone())
            .or_insert(0) += 1;
        Ok(entry)
    }

    /// Put `entry` in the table if the limits on live sandboxes allow.
    fn admit(&self, entry: &Arc<Entry>) -> Result<(), SandboxError> {
        if self.draining() {
            return Err(SandboxError::Draining(
                "this node is draining (shutting down): it takes no new sandboxes, its live ones go on; create the sandbox on another node or through the gateway".into(),
            ));
        }
        let mut t = lock(&self.table);
        if t.len() >= self.limits.max_total {
            return Err(SandboxError::TooMany(format!(
                "this server holds its maximum of {} live sandboxes; kill one first",
                self.limits.max_total
            )));
        }
        let mine = t
            .values()
            .filter(|e| e.spec.owner == entry.spec.owner)
            .count();
        if mine >= self.limits.max_per_key {
            return Err(SandboxError::TooMany(format!(
                "you have reached the maximum of {} live sandboxes for this API key; kill one first",
                self.limits.max_per_key
            )));
        }
        t.insert(entry.id.clone(), entry.clone());
        Ok(())
    }

    /// Stop taking new sandboxes (SIGTERM on a node); the live ones go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Live sandboxes (running or paused).
    pub fn live(&self) -> usize {
        lock(&self.table).len()
    }

    /// Sandboxes in memory (not paused to disk): what a draining node waits
    /// for (one paused to disk is back after a restart).
    pub fn in_memory(&self) -> usize {
        lock(&self.table)
            .values()
            .filter(|e| !e.life().on_disk)
            .count()
    }

    /// `count` copies of sandbox `id` as it is now (DESIGN.md §7), each
    /// living `timeout`: one answer per copy, a new sandbox or why that one
    /// could not be made (over a limit: the others are still made). The
    /// source is frozen once, between its guest time slices, and goes on.
    pub async fn fork(
        &self,
        id: &str,
        owner: Option<usize>,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Result<Arc<Entry>, SandboxError>>, SandboxError> {
        let start = Instant::now();
        let src = self.get(id, owner)?;
        let mut copies: Vec<Result<Arc<Entry>, SandboxError>> = (0..count)
            .map(|_| {
                let e = new_entry(
                    &self.limits.node_key,
                    src.template.clone(),
                    src.spec.clone(),
                    timeout,
                );
                self.admit(&e).map(|()| e)
            })
            .collect();
        let n = copies.iter().filter(|c| c.is_ok()).count();
        let made = if n == 0 {
            Ok(Ok(Vec::new()))
        } else {
            self.with(id, owner, move |sb| match sb {
                Some(sb) => sb.fork(n),
                None => Err(LiveError::Dead("it ended".into())),
            })
            .await
        };
        let made = match made {
            Ok(Ok(m)) => m,
            other => {
                for e in copies.iter().flatten() {
                    self.remove(&e.id);
                }
                return Err(match other {
                    Err(e) => e,
                    Ok(Err(LiveError::Dead(why))) => {
                        SandboxError::Ended(format!("sandbox \"{id}\" ended: {why}"))
                    }
                    Ok(Err(e)) => SandboxError::Internal(e.to_string()),
                    Ok(Ok(_)) => SandboxError::Internal("fork".into()),
                });
            }
        };
        let mut made = made.into_iter();
        for c in copies.iter_mut() {
            let Ok(e) = c else { continue };
            match made.next() {
                Some(Ok(live)) => {
                    *lock(&e.contexts) = lock(&src.contexts).copy();
                    self.post(e, Job::Adopt(Box::new(live)));
                    *lock(&self.counters.created)
                        .entry(e.spec.template.clone())
                        .or_insert(0) += 1;
                }
                Some(Err(err)) => {
                    self.remove(&e.id);
                    *c = Err(SandboxError::Internal(err.to_string()));
                }
                None => {
                    self.remove(&e.id);
                    *c = Err(SandboxError::Internal("the copy was not made".into()));
                }
            }
        }
        self.counters.fork_latency.observe(start.elapsed());
        Ok(copies)
    }

    /// The sandbox `id` if `owner` may see it.
    pub fn get(&self, id: &str, owner: Option<usize>) -> Result<Arc<Entry>, SandboxError> {
        let e = lock(&self.table).get(id).cloned();
        match e {
            Some(e) if e.spec.owner == owner => Ok(e),
            _ => Err(self.not_found(id)),
        }
    }

    /// The sandbox `id`, whoever owns it (in-sandbox calls carry the
    /// sandbox's access token, not an API key).
    pub fn find(&self, id: &str) -> Result<Arc<Entry>, SandboxError> {
        let e = lock(&self.table).get(id).cloned();
        e.ok_or_else(|| self.not_found(id))
    }

    fn not_found(&self, id: &str) -> SandboxError {
        match lock(&self.ended).0.get(id) {
            Some(why) => {
                SandboxError::Ended(format!("sandbox \"{id}\" not found: it ended ({why})"))
            }
            None => SandboxError::NotFound(format!("sandbox \"{id}\" not found")),
        }
    }

    /// Every sandbox `owner` may see.
    pub fn list(&self, owner: Option<usize>) -> Vec<Arc<Entry>> {
        lock(&self.table)
            .values()
            .filter(|e| e.spec.owner == owner)
            .cloned()
            .collect()
    }

    /// Live sandboxes by (template, state).
    pub fn census(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut m = BTreeMap::new();
        for e in lock(&self.table).values() {
            let state = if e.life().paused { "paused" } else { "running" };
            *m.entry((e.spec.template.clone(), state)).or_insert(0) += 1;
        }
        m
    }

    /// Kill `id` (owned by `owner`).
    pub fn kill(&self, id: &str, owner: Option<usize>) -> Result<(), SandboxError> {
        self.get(id, owner)?;
        if self.end(id, KillReason::Request, "killed on request") {
            Ok(())
        } else {
            Err(self.not_found(id))
        }
    }

    /// Set the time to live: `timeout` from now.
    pub fn set_timeout(
        &self,
        id: &str,
        owner: Option<usize>,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        let e = self.get(id, owner)?;
        lock(&e.life).end_at = SystemTime::now() + timeout;
        Ok(())
    }

    /// Connect: resume a paused sandbox (true) or extend a running one's
    /// time to live to at least `timeout` from now (false). Without
    /// `memory`, a paused sandbox resumes cold: a fresh sandbox of its
    /// template with its files (E2B's `on_resume="reboot"`). Blocking (a
    /// sandbox paused to disk is read back): not on an async thread.
    pub fn connect_blocking(
        &self,
        id: &str,
        owner: Option<usize>,
        timeout: Duration,
        memory: bool,
    ) -> Result<(Arc<Entry>, bool), SandboxError> {
        let e = self.get(id, owner)?;
        self.wait_paused(&e);
        if e.life().paused {
            self.wake_blocking(&e)?;
            if !memory {
                let (reply, rx) = oneshot::channel();
                self.post(&e, Job::Hold { memory, reply });
                rx.blocking_recv()
                    .unwrap_or_else(|_| Err(self.not_found(id)))?;
            }
            let mut l = lock(&e.life);
            let resumed = std::mem::take(&mut l.paused);
            l.end_at = SystemTime::now() + timeout;
            drop(l);
            // Its commands and its code run go on.
            self.post(&e, Job::Release);
            return Ok((e, resumed));
        }
        let mut l = lock(&e.life);
        let want = SystemTime::now() + timeout;
        if want > l.end_at {
            l.end_at = want;
        }
        drop(l);
        Ok((e, false))
    }

    /// Wait while `e` is being paused to disk (bounded): a resume in that
    /// window would find the VM about to be unloaded.
    fn wait_paused(&self, e: &Entry) {
        let until = Instant::now() + PAUSE_WAIT;
        while e.life().pausing && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Load a sandbox paused to disk back into memory (it stays paused);
    /// its checkpoint is removed once it is back.
    fn wake_blocking(&self, e: &Arc<Entry>) -> Result<(), SandboxError> {
        if !e.life().on_disk {
            return Ok(());
        }
        let store = self.store()?;
        let dir = store.paused_dir(&e.id);
        let failed = |why: String| {
            SandboxError::Internal(format!("sandbox \"{}\" could not be resumed: {why}", e.id))
        };
        let loaded = LiveSandbox::load(&e.template, &dir).map_err(|x| failed(x.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.post(
            e,
            Job::Restore {
                loaded: Box::new(loaded),
                own_rules: true,
                reply,
            },
        );
        match rx.blocking_recv() {
            Ok(Ok(())) => {
                lock(&e.life).on_disk = false;
                let _ = std::fs::remove_dir_all(&dir);
                Ok(())
            }
            Ok(Err(why)) => Err(failed(why)),
            Err(_) => Err(self.not_found(&e.id)),
        }
    }

    fn store(&self) -> Result<&Arc<Store>, SandboxError> {
        self.store.as_ref().ok_or_else(|| {
            SandboxError::Conflict(
                "this server keeps no sandboxes on disk (it has no state directory)".into(),
            )
        })
    }

    /// Freeze `e` on its actor for a checkpoint.
    fn freeze_blocking(
        &self,
        e: &Arc<Entry>,
        pause: bool,
        memory: bool,
    ) -> Result<Checkpoint, SandboxError> {
        let (reply, rx) = oneshot::channel();
        self.post(
            e,
            Job::Freeze {
                pause,
                memory,
                reply,
            },
        );
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(self.not_found(&e.id)))
    }

    /// Write `ck` into `dir` with `meta` last; nothing is left on failure.
    fn write_checkpoint(
        ck: &Checkpoint,
        dir: &Path,
        meta: &SavedMeta,
    ) -> Result<u64, SandboxError> {
        let bytes = ck
            .save(dir)
            .map_err(|e| SandboxError::Internal(format!("writing the checkpoint failed: {e}")))?;
        let meta = SavedMeta {
            bytes,
            ..meta.clone()
        };
        Store::write_meta(dir, &meta).map_err(|e| {
            let _ = std::fs::remove_dir_all(dir);
            SandboxError::Internal(format!("writing the checkpoint failed: {e}"))
        })?;
        Ok(bytes)
    }

    /// Pause: the sandbox runs nothing and does not expire until resumed.
    /// With a state directory it goes to disk (its VM is freed; it
    /// survives a restart); otherwise, or if its template was never
    /// saved, it stays in memory. Without `memory` (E2B's file-system-only
    /// pause) only its files are kept: it resumes as a fresh sandbox of
    /// its template with them (a cold boot). A code run in progress is
    /// paused with it (its caller is told; the run goes on, unheard, after
    /// the resume). If writing fails it goes on running. Blocking.
    pub fn pause_blocking(
        &self,
        id: &str,
        owner: Option<usize>,
        memory: bool,
    ) -> Result<(), SandboxError> {
        let e = self.get(id, owner)?;
        {
            let mut l = lock(&e.life);
            if l.paused || l.pausing {
                return Err(SandboxError::Conflict(format!(
                    "sandbox \"{id}\" is already paused"
                )));
            }
            l.pausing = true;
        }
        let r = self.pause_now(&e, memory);
        lock(&e.life).pausing = false;
        r
    }

    fn pause_now(&self, e: &Arc<Entry>, memory: bool) -> Result<(), SandboxError> {
        let id = e.id.as_str();
        let Some(store) = self
            .store
            .clone()
            .filter(|_| e.template.snapshot.identity != 0)
        else {
            let (reply, rx) = oneshot::channel();
            self.post(e, Job::Hold { memory, reply });
            return rx
                .blocking_recv()
                .unwrap_or_else(|_| Err(self.not_found(id)));
        };
        self.pause_to_disk(e, &store, memory)
    }

    /// Freeze `e`, write it to the store's paused directory, free its VM.
    /// If writing fails it stays as it was (running, or paused in memory).
    fn pause_to_disk(
        &self,
        e: &Arc<Entry>,
        store: &Store,
        memory: bool,
    ) -> Result<(), SandboxError> {
        let id = e.id.as_str();
        let was_paused = e.life().paused;
        let ck = self.freeze_blocking(e, true, memory)?;
        let dir = store.paused_dir(id);
        let meta = SavedMeta {
            memory,
            ..self.saved_meta(e, id.to_string(), None)
        };
        if let Err(err) = Self::write_checkpoint(&ck, &dir, &meta) {
            if !was_paused {
                lock(&e.life).paused = false;
                self.post(e, Job::Release);
            }
            tracing::warn!(sandbox = id, %err, "pause to disk failed; the sandbox stays in memory");
            return Err(err);
        }
        let (reply, rx) = oneshot::channel();
        self.post(e, Job::Unload { reply });
        let _ = rx.blocking_recv();
        tracing::info!(sandbox = id, "sandbox paused to disk");
        Ok(())
    }

    /// Resume a paused sandbox, living `timeout` from now. Blocking.
    pub fn resume_blocking(
        &self,
        id: &str,
        owner: Option<usize>,
        timeout: Duration,
        memory: bool,
    ) -> Result<Arc<Entry>, SandboxError> {
        let e = self.get(id, owner)?;
        self.wait_paused(&e);
        if !e.life().paused {
            return Err(SandboxError::Conflict(format!(
                "sandbox \"{id}\" is already running"
            )));
        }
        self.connect_blocking(id, owner, timeout, memory)
            .map(|(e, _)| e)
    }

    /// What the store keeps about `e` (a snapshot of it is `id`).
    fn saved_meta(&self, e: &Entry, id: String, name: Option<String>) -> SavedMeta {
        SavedMeta {
            id,
            source: e.id.clone(),
            name,
            template: e.spec.template.clone(),
            language: e.spec.language.name().to_string(),
            owner: e.spec.owner,
            metadata: e.spec.metadata.clone(),
            secure: e.spec.secure,
            access_token: e.access_token.clone(),
            memory_mb: e.spec.memory_mb,
            disk_mb: e.spec.disk_mb,
            started_at: e
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            auto_pause: e.spec.auto_pause,
            auto_pause_memory: e.spec.auto_pause_memory,
            memory: true,
            bytes: 0,
        }
    }

    /// Snapshot sandbox `id` as it is now (it goes on running): a template
    /// for new sandboxes that outlives it and the server. A `name` taken
    /// by another of the owner's snapshots moves to this one (that one is
    /// replaced, as E2B gives the existing template a new build). Without
    /// `memory`, of its files only: sandboxes made from it start as fresh
    /// ones of its template with those files. Blocking.
    pub fn snapshot_blocking(
        &self,
        id: &str,
        owner: Option<usize>,
        name: Option<String>,
        memory: bool,
    ) -> Result<SavedMeta, SandboxError> {
        let e = self.get(id, owner)?;
        let store = self.store()?.clone();
        if e.template.snapshot.identity == 0 {
            return Err(SandboxError::Conflict(format!(
                "the template of sandbox \"{id}\" was never saved, so a snapshot of it could not be loaded again"
            )));
        }
        let sid = name
            .as_deref()
            .and_then(|n| store.find_snapshot(n, owner))
            .map_or_else(
                || {
                    crate::fleet::sandbox_id(
                        &self.limits.node_key,
                        &random_chars(crate::fleet::RANDOM_CHARS),
                    )
                },
                |m| m.id,
            );
        let meta = SavedMeta {
            memory,
            ..self.saved_meta(&e, sid.clone(), name)
        };
        let on_disk = e.life().on_disk;
        let meta = if on_disk && memory {
            // Paused to disk: its checkpoint there is the snapshot (the
            // sandbox stays on disk; loading it would take it off).
            let bytes = Store::read_meta(&store.paused_dir(&e.id)).map_or(0, |m| m.bytes);
            let meta = SavedMeta { bytes, ..meta };
            Store::copy_checkpoint(&store.paused_dir(&e.id), &store.snapshot_dir(&sid), &meta)
                .map_err(|err| {
                    SandboxError::Internal(format!("writing the snapshot failed: {err}"))
                })?;
            meta
        } else {
            if on_disk {
                // The cold copy is made from it in memory; then it goes
                // back to disk.
                self.wake_blocking(&e)?;
            }
            let ck = self.freeze_blocking(&e, false, memory);
            let back = if on_disk {
                self.pause_to_disk(&e, &store, true)
            } else {
                Ok(())
            };
            let bytes = Self::write_checkpoint(&ck?, &store.snapshot_dir(&sid), &meta)?;
            back?;
            SavedMeta { bytes, ..meta }
        };
        store.add_snapshot(meta.clone());
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(meta)
    }

    /// A new sandbox from snapshot `snap` (a template of the same
    /// language), living `timeout`.
    pub async fn create_from_snapshot(
        &self,
        snap: &SavedMeta,
        template: Arc<Template>,
        spec: Spec,
        timeout: Duration,
    ) -> Result<Arc<Entry>, SandboxError> {
        let start = Instant::now();
        let dir = self.store()?.snapshot_dir(&snap.id);
        let failed = |why: String| {
            SandboxError::Internal(format!(
                "snapshot \"{}\" could not be loaded: {why}",
                snap.id
            ))
        };
        let t = template.clone();
        let loaded = tokio::task::spawn_blocking(move || LiveSandbox::load(&t, &dir))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        let entry = new_entry(&self.limits.node_key, template, spec, timeout);
        self.admit(&entry)?;
        let (reply, rx) = oneshot::channel();
        self.post(
            &entry,
            Job::Restore {
                loaded: Box::new(loaded),
                own_rules: false,
                reply,
            },
        );
        let r = rx
            .await
            .unwrap_or_else(|_| Err("the sandbox was killed while it was being created".into()));
        if let Err(e) = r {
            self.remove(&entry.id);
            return Err(failed(e));
        }
        self.counters.create_latency.observe(start.elapsed());
        *lock(&self.counters.created)
            .entry(entry.spec.template.clone())
            .or_insert(0) += 1;
        Ok(entry)
    }

    /// Put back the sandboxes paused to disk before a restart (their ids,
    /// owners and tokens as they were); `spec_of` makes each one's spec,
    /// None when the server no longer serves its template (it is left on
    /// disk). Returns how many came back.
    pub fn adopt_paused(
        &self,
        spec_of: impl Fn(&SavedMeta) -> Option<(Arc<Template>, Spec)>,
    ) -> usize {
        let Some(store) = self.store.as_ref() else {
            return 0;
        };
        let mut n = 0;
        for m in store.paused() {
            let Some((template, spec)) = spec_of(&m) else {
                tracing::warn!(sandbox = %m.id, template = %m.template, "a paused sandbox's template is not served; it stays on disk");
                continue;
            };
            let e = Arc::new(Entry {
                id: m.id.clone(),
                access_token: m.access_token.clone(),
                started_at: std::time::UNIX_EPOCH + Duration::from_secs(m.started_at),
                life: Mutex::new(Life {
                    end_at: SystemTime::now(),
                    paused: true,
                    on_disk: true,
                    pausing: false,
                }),
                ..entry_parts(template, spec)
            });
            let mut t = lock(&self.table);
            if t.contains_key(&e.id) {
                continue;
            }
            t.insert(e.id.clone(), e);
            n += 1;
        }
        n
    }

    /// Run `code` in sandbox `id`; the run ends at its timeout or at the
    /// sandbox's end time, whichever is first.
    pub async fn run(
        &self,
        id: &str,
        owner: Option<usize>,
        code: String,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<Result<ExecResult, LiveError>, SandboxError> {
        let e = self.get(id, owner)?;
        if e.life().paused {
            return Err(SandboxError::Conflict(format!(
                "sandbox \"{id}\" is paused; resume it (connect) first"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.post(
            &e,
            Job::Run {
                ask: Ask::Code(code),
                timeout,
                output_cap,
                reply,
            },
        );
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        Ok(rx.await.unwrap_or_else(|_| {
            let why = lock(&self.ended)
                .0
                .get(id)
                .cloned()
                .unwrap_or_else(|| "killed".into());
            Err(LiveError::Dead(why))
        }))
    }

    /// Hand sandbox `id`'s agent the request `req` (see
    /// `LiveSandbox::begin_request`): its output streams on the first
    /// channel as it runs, its result comes on the second. Dropping the
    /// stream's receiver interrupts the request.
    pub fn request(
        &self,
        e: &Arc<Entry>,
        req: serde_json::Value,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<RequestStreams, SandboxError> {
        if e.life().paused {
            return Err(SandboxError::Conflict(format!(
                "sandbox \"{}\" is paused; resume it (connect) first",
                e.id
            )));
        }
        let (reply, rx) = oneshot::channel();
        let (stream, out) = mpsc::unbounded_channel();
        self.post(
            e,
            Job::Run {
                ask: Ask::Request { req, stream },
                timeout,
                output_cap,
                reply,
            },
        );
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        Ok((out, rx))
    }

    /// Why sandbox `id` is gone, when it is.
    pub fn ended_reason(&self, id: &str) -> String {
        lock(&self.ended)
            .0
            .get(id)
            .cloned()
            .unwrap_or_else(|| "killed".into())
    }

    /// Queue `f` for sandbox `e`'s actor and return at once (no reply).
    pub fn post_with(
        &self,
        e: &Arc<Entry>,
        f: impl FnOnce(Option<&mut LiveSandbox>) + Send + 'static,
    ) {
        self.post(e, Job::With(Box::new(f)));
    }

    /// Call `f` with sandbox `id` on its actor (between its guest time
    /// slices, never while another job holds it) and return what it
    /// returns. `f` gets None when the sandbox ended before its turn.
    pub async fn with<R: Send + 'static>(
        &self,
        id: &str,
        owner: Option<usize>,
        f: impl FnOnce(Option<&mut LiveSandbox>) -> R + Send + 'static,
    ) -> Result<R, SandboxError> {
        let e = self.get(id, owner)?;
        if e.life().paused {
            return Err(SandboxError::Conflict(format!(
                "sandbox \"{id}\" is paused; resume it (connect) first"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.post(
            &e,
            Job::With(Box::new(move |sb| {
                let _ = reply.send(f(sb));
            })),
        );
        rx.await.map_err(|_| self.not_found(id))
    }

    /// Replace sandbox `id`'s egress rules (the addresses its resolver
    /// granted stay, checked against the new rules).
    pub async fn set_network(
        &self,
        id: &str,
        owner: Option<usize>,
        rules: zeroboot_engine::SandboxRules,
    ) -> Result<Arc<Entry>, SandboxError> {
        let e = self.get(id, owner)?;
        let setup = Arc::new(zeroboot_engine::NetSetup {
            operator: e.network().operator.clone(),
            rules,
            sandbox: e.id.clone(),
        });
        *lock(&e.spec.network) = setup.clone();
        // Applied between its time slices (a paused sandbox gets it too:
        // the job waits for its next turn).
        let (reply, rx) = oneshot::channel();
        self.post(
            &e,
            Job::With(Box::new(move |sb| {
                if let Some(sb) = sb {
                    sb.set_network(Some(setup));
                }
                let _ = reply.send(());
            })),
        );
        let _ = rx.await;
        Ok(e)
    }

    /// Kill every running sandbox whose time to live has passed; returns
    /// how many.
    pub fn reap(self: &Arc<Self>) -> usize {
        let now = SystemTime::now();
        let expired: Vec<Arc<Entry>> = lock(&self.table)
            .values()
            .filter(|e| {
                let l = e.life();
                !l.paused && l.end_at <= now
            })
            .cloned()
            .collect();
        let mut killed = 0;
        for e in expired {
            if e.spec.auto_pause && self.store.is_some() && e.template.snapshot.identity != 0 {
                // Paused off this thread (it writes the sandbox out); not
                // looked at again meanwhile.
                lock(&e.life).end_at = now + Duration::from_secs(3600);
                let table = self.clone();
                let id = e.id.clone();
                let spawned = std::thread::Builder::new()
                    .name("zeroboot-autopause".into())
                    .spawn(move || {
                        let memory = e.spec.auto_pause_memory;
                        if let Err(err) = table.pause_blocking(&e.id, e.spec.owner, memory) {
                            tracing::warn!(sandbox = %e.id, %err, "automatic pause failed; ending the sandbox");
                            table.end(
                                &e.id,
                                KillReason::Timeout,
                                "its time to live ran out (pausing it failed)",
                            );
                        }
                    });
                if spawned.is_ok() {
                    continue;
                }
                if self.end(&id, KillReason::Timeout, "its time to live ran out") {
                    killed += 1;
                }
                continue;
            }
            if self.end(&e.id, KillReason::Timeout, "its time to live ran out") {
                killed += 1;
            }
        }
        killed
    }

    fn post(&self, e: &Arc<Entry>, job: Job) {
        let mut s = lock(&e.slot);
        if s.killed.is_some() {
            // Dropping the job answers its caller (the sandbox is gone).
            return;
        }
        s.jobs.push_back(job);
        if !s.scheduled {
            s.scheduled = true;
            drop(s);
            self.runq.push(e.clone());
        }
    }

    /// Remove `id` from the table without counting a kill (a failed create).
    fn remove(&self, id: &str) {
        let e = lock(&self.table).remove(id);
        if let Some(e) = e {
            let mut s = lock(&e.slot);
            s.killed = Some("creation failed".into());
            s.jobs.clear();
            let sb = s.sandbox.take();
            drop(s);
            drop(sb);
        }
    }

    /// End sandbox `id`; false if it was not in the table.
    fn end(&self, id: &str, reason: KillReason, why: &str) -> bool {
        let Some(e) = lock(&self.table).remove(id) else {
            return false;
        };
        {
            let mut ended = lock(&self.ended);
            if ended.1.len() >= TOMBSTONES {
                if let Some(old) = ended.1.pop_front() {
                    ended.0.remove(&old);
                }
            }
            ended.0.insert(id.to_string(), why.to_string());
            ended.1.push_back(id.to_string());
        }
        *lock(&self.counters.kills).entry(reason.name()).or_insert(0) += 1;
        if e.life().on_disk {
            if let Some(store) = &self.store {
                let _ = std::fs::remove_dir_all(store.paused_dir(id));
            }
        }
        let (sandbox, jobs) = {
            let mut s = lock(&e.slot);
            s.killed = Some(why.to_string());
            (s.sandbox.take(), std::mem::take(&mut s.jobs))
        };
        // Pending jobs' callers learn the sandbox is gone, and command
        // streams end; the VM goes back to the template's idle forks (or
        // is freed).
        drop(jobs);
        lock(&e.subscribers).clear();
        lock(&e.run_reply).take();
        lock(&e.run_stream).take();
        if let Some(sb) = sandbox {
            sb.recycle(&e.template, why);
        }
        if reason == KillReason::Exit {
            // Not asked for: worth a line in the log.
            tracing::warn!(sandbox = id, why, "sandbox ended");
        } else {
            tracing::debug!(sandbox = id, reason = reason.name(), "sandbox ended");
        }
        true
    }
}

/// Run spare forks once, one after another, so that sandboxes are made
/// from warm VMs (`Template::warm_spare`), until the table is gone. The
/// thread is SCHED_IDLE: a warming run (100-200 ms of a code-interpreter
/// cell in a never-run VM) only takes CPU time nothing else wants.
fn warmer(table: &std::sync::Weak<Sandboxes>) {
    loop {
        let Some(t) = table.upgrade() else {
            return;
        };
        let mut warmed = false;
        for tmpl in &t.templates {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tmpl.refill_spares(SPARE_FORKS);
                let warmed = tmpl.warm_spare();
                // Restored here too, at this thread's priority.
                while tmpl.tidy() {}
                warmed
            }));
            warmed |= run.unwrap_or(false);
        }
        drop(t);
        if !warmed {
            std::thread::sleep(WARMER_POLL);
        }
    }
}

/// How often the warmer looks again when it had nothing to warm.
const WARMER_POLL: Duration = Duration::from_millis(100);

/// Serve sandboxes' jobs until the table is gone.
fn worker(runq: &RunQueue, table: &std::sync::Weak<Sandboxes>) {
    loop {
        let e = runq.pop(|| {
            // Nothing to run: restore ended sandboxes' VMs for reuse.
            // Then keep a few fresh forks ready, so creating a sandbox does
            // not wait for a new VM.
            if let Some(t) = table.upgrade() {
                for tmpl in &t.templates {
                    while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tmpl.tidy()))
                        .unwrap_or(false)
                    {}
                }
                for tmpl in &t.templates {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        tmpl.refill_spares(SPARE_FORKS)
                    }));
                }
            }
        });
        let Some(table) = table.upgrade() else {
            return;
        };
        let (job, sandbox) = {
            let mut s = lock(&e.slot);
            let job = s.jobs.pop_front();
            // A paused sandbox runs nothing (its jobs are still served).
            let busy = !e.life().paused && s.sandbox.as_ref().is_some_and(|sb| sb.needs_time());
            if job.is_none() && !busy {
                s.scheduled = false;
                continue;
            }
            (job, s.sandbox.take())
        };
        let mut next = Next::Idle;
        let back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stepping = job.is_none();
            let mut back = match job {
                Some(job) => serve(&table, &e, job, sandbox),
                None => sandbox,
            };
            if let Some(sb) = back.as_mut() {
                if stepping {
                    let st = sb.step(COMMAND_SLICE);
                    next = if st.busy {
                        Next::Busy
                    } else {
                        st.wake.map_or(Next::Idle, Next::At)
                    };
                    e.stream_output(sb);
                    if let Some(r) = sb.take_run_result() {
                        finish_run(&table, &e, sb, r);
                    }
                    if !sb.is_alive() {
                        let why = sb.ended().unwrap_or("it ended").to_string();
                        table.end(&e.id, KillReason::Exit, &why);
                    }
                } else if sb.needs_time() && !e.life().paused {
                    // Give the code run or the commands their slice next turn.
                    next = Next::Busy;
                }
                if e.deliver(sb) && next == Next::Idle {
                    // A stream is behind: look again soon.
                    next = Next::At(Instant::now() + COMMAND_SLICE);
                }
            }
            back.filter(|sb| sb.is_alive())
        }))
        .unwrap_or_else(|_| {
            tracing::error!(sandbox = %e.id, "a sandbox job panicked (a bug); ending the sandbox");
            table.end(&e.id, KillReason::Exit, "zeroboot failed inside it (a bug)");
            None
        });
        let mut s = lock(&e.slot);
        if s.killed.is_none() {
            s.sandbox = back;
        } else {
            let why = s.killed.clone().unwrap_or_default();
            drop(s);
            if let Some(sb) = back {
                sb.recycle(&e.template, &why);
            }
            s = lock(&e.slot);
            next = Next::Idle;
        }
        if !s.jobs.is_empty() || next == Next::Busy {
            drop(s);
            runq.push(e.clone());
        } else {
            s.scheduled = false;
            drop(s);
            if let Next::At(t) = next {
                table.timers.add(t, e.clone());
            }
        }
        drop(table);
    }
}

/// A code run finished: answer its caller, and end the sandbox if the run
/// ended it (a timeout, a limit, the agent's exit), saying why.
fn finish_run(
    table: &Sandboxes,
    e: &Entry,
    sb: &mut LiveSandbox,
    r: Result<ExecResult, LiveError>,
) {
    // What the request wrote last goes out before its result.
    e.stream_output(sb);
    lock(&e.run_stream).take();
    // Taken first: ending the sandbox drops a waiting caller.
    let reply = lock(&e.run_reply).take();
    if !sb.is_alive() {
        let mut why = sb.ended().unwrap_or("it ended").to_string();
        let reason = match &r {
            Ok(x) if x.timed_out && e.life().end_at <= SystemTime::now() => {
                why = "its time to live ran out while its code ran".into();
                KillReason::Timeout
            }
            Ok(x) if x.timed_out || x.out_of_memory => KillReason::Limit,
            _ => KillReason::Exit,
        };
        table.end(&e.id, reason, &why);
    }
    if let Some(reply) = reply {
        let _ = reply.send(r);
    }
}

/// The egress rules a checkpoint kept (see `Job::Freeze`); None if `v`
/// is not such a record or a rule no longer parses.
fn saved_rules(v: &serde_json::Value) -> Option<zeroboot_kernel::net::policy::SandboxRules> {
    let list =
        |name: &str| -> Option<Vec<String>> { serde_json::from_value(v.get(name)?.clone()).ok() };
    zeroboot_kernel::net::policy::SandboxRules::parse(
        v.get("allow_internet_access")?.as_bool()?,
        &list("allowOut")?,
        &list("denyOut")?,
    )
    .ok()
}

/// What a sandbox needs after a worker's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing until a job comes.
    Idle,
    /// Another turn right away (its commands can run).
    Busy,
    /// A turn at this time (a command's timeout falls due).
    At(Instant),
}

/// Sandboxes whose commands sleep, by wake time: a thread puts each on
/// the run queue when its time comes.
#[derive(Default)]
struct Timers {
    /// Sandboxes by (wake time, sequence), and the last sequence number.
    due: Mutex<(Due, u64)>,
    changed: Condvar,
}

type Due = BTreeMap<(Instant, u64), Arc<Entry>>;

impl Timers {
    fn add(&self, at: Instant, e: Arc<Entry>) {
        let mut d = lock(&self.due);
        d.1 += 1;
        let seq = d.1;
        let first = d.0.keys().next().is_none_or(|&(t, _)| at < t);
        d.0.insert((at, seq), e);
        drop(d);
        if first {
            self.changed.notify_one();
        }
    }

    /// Until the server is gone (checked at least once a second).
    fn run(&self, runq: &RunQueue, table: &std::sync::Weak<Sandboxes>) {
        let mut d = lock(&self.due);
        loop {
            if table.strong_count() == 0 {
                return;
            }
            let now = Instant::now();
            while let Some((&(t, seq), _)) = d.0.iter().next() {
                if t > now {
                    break;
                }
                if let Some(e) = d.0.remove(&(t, seq)) {
                    let mut s = lock(&e.slot);
                    if !s.scheduled && s.killed.is_none() {
                        s.scheduled = true;
                        drop(s);
                        runq.push(e);
                    }
                }
            }
            let wait =
                d.0.keys()
                    .next()
                    .map(|&(t, _)| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
            d = self
                .changed
                .wait_timeout(d, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// A new table entry (not yet in the table).
fn new_entry(node_key: &str, template: Arc<Template>, spec: Spec, timeout: Duration) -> Arc<Entry> {
    let now = SystemTime::now();
    Arc::new(Entry {
        id: crate::fleet::sandbox_id(node_key, &random_chars(crate::fleet::RANDOM_CHARS)),
        access_token: new_token(),
        started_at: now,
        life: Mutex::new(Life {
            end_at: now + timeout,
            paused: false,
            on_disk: false,
            pausing: false,
        }),
        ..entry_parts(template, spec)
    })
}

/// An entry's fields that are the same for every new one.
fn entry_parts(template: Arc<Template>, spec: Spec) -> Entry {
    Entry {
        id: String::new(),
        access_token: String::new(),
        started_at: SystemTime::now(),
        life: Mutex::new(Life {
            end_at: SystemTime::now(),
            paused: false,
            on_disk: false,
            pausing: false,
        }),
        slot: Mutex::new(Slot::default()),
        subscribers: Mutex::new(HashMap::new()),
        run_reply: Mutex::new(None),
        run_stream: Mutex::new(None),
        contexts: Mutex::new(Default::default()),
        template,
        spec,
    }
}

/// How a sandbox of `entry` is made (`Job::Create`, and the cold copy of
/// a file-system-only pause). Limits of its own only below the template's
/// (otherwise a spare fork, made with the template's, serves it).
fn live_options(entry: &Entry, env: Vec<(String, String)>) -> LiveOptions {
    let limits = entry.template.snapshot.kernel.limits();
    LiveOptions {
        memory: Some(entry.spec.memory_mb << 20).filter(|&m| m < limits.memory),
        disk: Some(entry.spec.disk_mb << 20).filter(|&d| d < limits.disk),
        fds: None,
        env,
        // The same rules, with the sandbox's id for the logs.
        network: Some(entry.with_network_id()),
    }
}

/// The sandbox is being paused: the caller of a code run in progress is
/// told so (its stream ends), and the run's time stops until the resume,
/// after which it goes on unheard.
fn detach_run(e: &Entry, sb: &mut LiveSandbox) {
    if !sb.is_running_code() {
        return;
    }
    sb.hold_run();
    e.stream_output(sb);
    lock(&e.run_stream).take();
    if let Some(reply) = lock(&e.run_reply).take() {
        let _ = reply.send(Err(LiveError::Paused));
    }
}

/// Freeze `sb` for a checkpoint; the server's own state of it goes along
/// (docs/snapshot-format.md): `contexts` and its egress rules.
fn freeze(
    e: &Entry,
    sb: &mut LiveSandbox,
    contexts: serde_json::Value,
) -> Result<Checkpoint, SandboxError> {
    let rules = e.network().rules.clone();
    let names = |v: &[zeroboot_engine::NetRule]| -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    };
    let meta = serde_json::json!({
        "contexts": contexts,
        "network": {
            "allow_internet_access": rules.allow_internet,
            "allowOut": names(&rules.allow_out),
            "denyOut": names(&rules.deny_out),
        },
    })
    .to_string();
    sb.freeze_for_disk(&e.template, meta.as_bytes())
        .map_err(|err| match err {
            LiveError::Dead(why) => {
                SandboxError::Ended(format!("sandbox \"{}\" ended: {why}", e.id))
            }
            other => SandboxError::Internal(other.to_string()),
        })
}

/// Serve one job; returns the sandbox to put back.
fn serve(
    table: &Sandboxes,
    e: &Arc<Entry>,
    job: Job,
    sandbox: Option<LiveSandbox>,
) -> Option<LiveSandbox> {
    match job {
        Job::Adopt(live) => Some(*live),
        Job::Freeze {
            pause,
            memory,
            reply,
        } => {
            let Some(mut sb) = sandbox else {
                let _ = reply.send(Err(table.not_found(&e.id)));
                return None;
            };
            if pause {
                detach_run(e, &mut sb);
            }
            let r = if memory {
                freeze(e, &mut sb, lock_contexts(e).saved())
            } else {
                // Its files in a fresh sandbox of its template: what a cold
                // boot from its disk would find.
                match sb.rebooted(&e.template, live_options(e, sb.env_vars().to_vec())) {
                    Ok(mut cold) => {
                        let r = freeze(e, &mut cold, Contexts::default().saved());
                        cold.recycle(&e.template, "a cold copy for a checkpoint");
                        r
                    }
                    Err(err) => Err(SandboxError::Internal(err.to_string())),
                }
            };
            if r.is_ok() && pause {
                // It runs nothing more: the checkpoint is what it is.
                lock(&e.life).paused = true;
            } else if pause {
                sb.resume_run();
            }
            let _ = reply.send(r);
            Some(sb)
        }
        Job::Hold { memory, reply } => {
            let Some(mut sb) = sandbox else {
                let _ = reply.send(Err(table.not_found(&e.id)));
                return None;
            };
            detach_run(e, &mut sb);
            let sb = if memory {
                sb
            } else {
                match sb.rebooted(&e.template, live_options(e, sb.env_vars().to_vec())) {
                    Ok(cold) => {
                        lock(&e.subscribers).clear();
                        *lock(&e.contexts) = Contexts::default();
                        sb.recycle(&e.template, "paused without its memory");
                        cold
                    }
                    Err(err) => {
                        sb.resume_run();
                        let _ = reply.send(Err(SandboxError::Internal(err.to_string())));
                        return Some(sb);
                    }
                }
            };
            lock(&e.life).paused = true;
            let _ = reply.send(Ok(()));
            Some(sb)
        }
        Job::Release => {
            let mut sandbox = sandbox;
            if let Some(sb) = sandbox.as_mut() {
                sb.resume_run();
            }
            sandbox
        }
        Job::Unload { reply } => {
            lock(&e.life).on_disk = true;
            // Its streams end, as a paused VM's connections do.
            lock(&e.subscribers).clear();
            if let Some(sb) = sandbox {
                sb.recycle(&e.template, "paused to disk");
            }
            let _ = reply.send(());
            None
        }
        Job::Restore {
            loaded,
            own_rules,
            reply,
        } => {
            if sandbox.is_some() {
                let _ = reply.send(Ok(()));
                return sandbox;
            }
            // The server's state of it (checkpoints older than that have
            // none): its egress rules, under today's operator policy, and
            // its code-interpreter contexts.
            let saved = serde_json::from_slice::<serde_json::Value>(loaded.meta()).ok();
            let rules = saved.as_ref().filter(|_| own_rules);
            if let Some(rules) = rules.and_then(|v| saved_rules(v.get("network")?)) {
                let mut n = lock(&e.spec.network);
                *n = Arc::new(zeroboot_engine::NetSetup {
                    operator: n.operator.clone(),
                    rules,
                    sandbox: e.id.clone(),
                });
            }
            match LiveSandbox::from_loaded(
                &e.template,
                &loaded,
                Some(e.with_network_id()),
                own_rules,
            ) {
                Ok(sb) => {
                    if let Some(c) = saved
                        .as_ref()
                        .and_then(|v| Contexts::restore(v.get("contexts")?))
                    {
                        *lock(&e.contexts) = c;
                    }
                    let _ = reply.send(Ok(()));
                    Some(sb)
                }
                Err(err) => {
                    let _ = reply.send(Err(err.to_string()));
                    None
                }
            }
        }
        Job::Create { opts, reply } => match LiveSandbox::create(&e.template, opts) {
            Ok(mut sb) => {
                // E2B's default user's home: the SDKs' relative paths and
                // default directory.
                if let Some(s) = sb.sandbox_mut() {
                    if let Err(err) = make_home(s.k.vfs_mut()) {
                        tracing::warn!(sandbox = %e.id, %err, "cannot create the home directory");
                    }
                }
                let _ = reply.send(Ok(()));
                Some(sb)
            }
            Err(err) => {
                let _ = reply.send(Err(err.to_string()));
                None
            }
        },
        Job::Run {
            ask,
            timeout,
            output_cap,
            reply,
        } => {
            let Some(mut sb) = sandbox else {
                let why = lock(&e.slot)
                    .killed
                    .clone()
                    .unwrap_or_else(|| "it is not running".into());
                let _ = reply.send(Err(LiveError::Dead(why)));
                return None;
            };
            // Never past the sandbox's end time.
            let left = e
                .life()
                .end_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let timeout = timeout.min(left.max(Duration::from_millis(1)));
            // The run goes on in the worker's turns (`step`), between which
            // other jobs (files, stdin, kill) are served.
            let (begun, stream) = match ask {
                Ask::Code(code) => (sb.begin_run(&code, timeout, output_cap), None),
                Ask::Request { req, stream } => {
                    (sb.begin_request(req, timeout, output_cap), Some(stream))
                }
            };
            match begun {
                Ok(()) => {
                    *lock(&e.run_reply) = Some(reply);
                    if stream.is_some() {
                        *lock(&e.run_stream) = stream;
                    }
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            }
            Some(sb)
        }
        Job::With(f) => {
            let mut sandbox = sandbox;
            f(sandbox.as_mut());
            sandbox
        }
    }
}

/// The envd access token of a secure sandbox.
fn new_token() -> String {
    random_chars(32)
}

pub(crate) fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    // 252 = 7 * 36: the slight bias of the rest is irrelevant for ids but
    // avoided anyway by redrawing.
    b.iter_mut()
        .map(|x| {
            let mut v = *x;
            while v >= 252 {
                let mut one = [0u8; 1];
                let _ = rustix::rand::getrandom(&mut one, rustix::rand::GetRandomFlags::empty());
                v = one[0];
            }
            ALPHABET[(v % 36) as usize] as char
        })
        .collect()
}

/// E2B's default user's home, owned by that user where the image has the
/// account (else made, root's, for the relative paths of the SDKs).
fn make_home(
    vfs: &mut zeroboot_kernel::vfs::Vfs,
) -> Result<(), zeroboot_kernel::vfs::host::HostFsError> {
    use zeroboot_kernel::accounts;
    match accounts::lookup(vfs, accounts::DEFAULT_USER) {
        Ok(a) if a.home == zeroboot_kernel::vfs::host::HOME => accounts::ensure_home(vfs, &a),
        _ => vfs
            .host_mkdir_p(zeroboot_kernel::vfs::host::HOME)
            .map(|_| ()),
    }
}
