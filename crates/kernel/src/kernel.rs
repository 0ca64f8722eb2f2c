//! The VMM-side state of one sandbox: everything a Linux kernel would keep
//! for the process, cloned wholesale when a template is forked.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use zeroboot_abi::Errno;

use crate::fd::{FdTable, FileKind};
use crate::mm::AddressSpace;
use crate::syscalls::SyscallStats;
use crate::task::{Process, Thread, Wait};

use crate::vfs::{ProcView, Vfs};

/// Where a standard output stream goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Straight to the VMM process's own stdout (1) or stderr (2).
    Host(i32),
    /// Into a capped buffer.
    Capture(Capture),
}

/// A capped capture buffer.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub data: Vec<u8>,
    pub cap: usize,
    /// Bytes dropped beyond the cap.
    pub dropped: u64,
    /// Also shown each kept chunk as it is written (streaming).
    pub tee: Option<Tee>,
}

/// A callback that sees what a capture keeps, as the guest writes it.
#[derive(Clone)]
pub struct Tee(pub Arc<TeeFn>);

/// What a [`Tee`] calls.
pub type TeeFn = dyn Fn(&[u8]) + Send + Sync;

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tee")
    }
}

impl Default for Sink {
    fn default() -> Sink {
        Sink::capture(0)
    }
}

impl Sink {
    pub fn capture(cap: usize) -> Sink {
        Sink::Capture(Capture {
            data: Vec::new(),
            cap,
            dropped: 0,
            tee: None,
        })
    }

    /// A capture that also hands each kept chunk to `tee`.
    pub fn capture_tee(cap: usize, tee: Tee) -> Sink {
        Sink::Capture(Capture {
            data: Vec::new(),
            cap,
            dropped: 0,
            tee: Some(tee),
        })
    }

    /// Write everything (the program never sees a short write).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        match self {
            Sink::Host(fd) => {
                let r = if *fd == 2 {
                    std::io::stderr().write_all(buf)
                } else {
                    let mut o = std::io::stdout();
                    o.write_all(buf).and_then(|_| o.flush())
                };
                r.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        Errno::EPIPE
                    } else {
                        Errno::EIO
                    }
                })?;
            }
            Sink::Capture(c) => {
                let room = c.cap.saturating_sub(c.data.len());
                let n = room.min(buf.len());
                c.data.extend_from_slice(&buf[..n]);
                c.dropped += (buf.len() - n) as u64;
                if let Some(t) = c.tee.as_ref().filter(|_| n > 0) {
                    (t.0)(&buf[..n]);
                }
            }
        }
        Ok(buf.len())
    }

    /// Take the captured bytes (empty for host sinks).
    pub fn take(&mut self) -> (Vec<u8>, u64) {
        match self {
            Sink::Host(_) => (Vec::new(), 0),
            Sink::Capture(c) => (std::mem::take(&mut c.data), std::mem::take(&mut c.dropped)),
        }
    }
}

/// Where stdin comes from.
#[derive(Debug, Clone, Default)]
pub enum Source {
    /// Nothing: reads return end of file.
    #[default]
    Empty,
    /// The VMM process's stdin (the `run` command).
    Host,
    /// Fixed bytes.
    Data(Arc<Vec<u8>>, usize),
}

/// A pipe's buffer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pipe {
    pub buf: VecDeque<u8>,
    pub capacity: usize,
    /// The host holds this pipe's read end (a spawned process's stdout or
    /// stderr): writers never see EPIPE while it does.
    #[serde(default)]
    pub host_reader: bool,
    /// The host holds its write end (a spawned process's stdin): readers
    /// block rather than see end of file while it does.
    #[serde(default)]
    pub host_writer: bool,
    /// Writes, and reads of a full pipe, so far: what edge-triggered epoll
    /// watches (a write is news to the read end, room to the write end).
    #[serde(default)]
    pub writes: u64,
    #[serde(default)]
    pub reads: u64,
}

impl Pipe {
    /// Append `data` (the caller checked the room).
    pub fn put(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.buf.extend(data);
            self.writes += 1;
        }
    }

    /// Take the first `n` bytes (at most what the pipe holds).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buf.len());
        // Linux wakes writers only when a read frees a full pipe.
        if n > 0 && self.buf.len() >= self.capacity {
            self.reads += 1;
        }
        self.buf.drain(..n).collect()
    }
}

/// Limits of one sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    /// Guest memory a program may use (bytes).
    pub memory: u64,
    /// Bytes the overlay may hold.
    pub disk: u64,
    /// Most open descriptors.
    pub fds: u64,
}

/// Which limits an execution ran into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitHits {
    /// An allocation was refused for the memory limit (ENOMEM, or the
    /// program was killed).
    pub memory: bool,
    /// A write was refused for the disk limit (ENOSPC).
    pub disk: bool,
    /// A descriptor was refused for the fd limit (EMFILE).
    pub fds: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 512 << 20,
            disk: 256 << 20,
            fds: 1024,
        }
    }
}

/// Why a syscall cannot finish yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Reading the empty control channel: the process parks.
    Park,
    /// Waiting for another thread or for time.
    Wait(Wait),
}

/// Why the process stopped for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// exit_group(code).
    Code(i32),
    /// Killed by a signal, with a one-line reason.
    Signal(u32, String),
}

impl Exit {
    /// Exit status as a shell reports it.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Code(c) => *c & 0xff,
            Exit::Signal(s, _) => zeroboot_abi::signal::exit_status(*s),
        }
    }
}

/// A process that is not on the vCPU. Its address-space layout is here;
/// the frame allocator never leaves `Kernel::mm` (see `swap_layout`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSlot {
    pub proc: Process,
    pub mm: AddressSpace,
    pub fds: FdTable,
    pub threads: BTreeMap<u32, Thread>,
}

/// An exited process its parent has not reaped yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Zombie {
    pub ppid: u32,
    pub pgid: u32,
    /// wait(2) status.
    pub status: i32,
}

/// The sandbox's kernel state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kernel {
    pub(crate) mm: AddressSpace,
    pub(crate) fds: FdTable,
    pub(crate) vfs: Vfs,
    pub(crate) proc: Process,
    /// Threads by tid; `current` is the one on the vCPU.
    pub(crate) threads: BTreeMap<u32, Thread>,
    pub(crate) current: u32,
    /// Counter for `Thread::blocked_seq`.
    pub(crate) wait_seq: u64,
    /// Threads created by the last syscall, whose FPU state the sandbox
    /// copies from their creator.
    pub(crate) new_threads: Vec<u32>,
    /// sched_yield asked to let another thread run.
    pub(crate) yield_now: bool,
    pub(crate) pipes: BTreeMap<u64, Pipe>,
    /// epoll instances, eventfds and timerfds.
    #[serde(default)]
    pub(crate) events: crate::syscalls::events::Objects,
    /// FIFOs, file locks and inotify instances.
    #[serde(default)]
    pub(crate) fs: crate::file::FsObjects,
    /// AF_UNIX and loopback sockets.
    #[serde(default)]
    pub(crate) sockets: crate::net::Sockets,
    pub(crate) next_pipe: u64,
    /// Pseudo-terminals (their masters are the host's).
    #[serde(default)]
    pub(crate) ptys: BTreeMap<u64, crate::tty::Pty>,
    #[serde(default)]
    pub(crate) next_pty: u64,
    #[serde(skip)]
    pub(crate) stdout: Sink,
    #[serde(skip)]
    pub(crate) stderr: Sink,
    #[serde(skip)]
    pub(crate) stdin: Source,
    /// The other processes, by pid.
    pub(crate) others: BTreeMap<u32, ProcessSlot>,
    pub(crate) zombies: BTreeMap<u32, Zombie>,
    /// Next pid or tid to hand out.
    pub(crate) next_id: u32,
    /// The first process: when it exits, the sandbox is done.
    pub(crate) init_pid: u32,
    #[serde(skip)]
    pub(crate) stats: SyscallStats,
    pub(crate) limits: Limits,
    pub(crate) exit: Option<Exit>,
    /// Host thread CPU time when this sandbox started running (ns).
    pub(crate) cpu_base_ns: u64,
    /// CPU time accumulated before (by the template), ns.
    pub(crate) cpu_carried_ns: u64,
    /// Start, on the guest's CLOCK_MONOTONIC (ns), for uptime.
    pub(crate) start_mono_ns: u64,
    /// The clocks the vDSO and the VMM serve.
    #[serde(default)]
    pub(crate) clock: crate::vdso::Clock,
    /// Hostname (uname nodename).
    pub(crate) hostname: String,
    /// When the current run must stop (sleeps end early at it).
    #[serde(skip)]
    pub(crate) deadline: Option<std::time::Instant>,
    /// The agent's control channel.
    pub(crate) control: crate::control::Channel,
}

/// What the engine and the server may see and change of a sandbox's
/// kernel: the fields themselves are the kernel's own.
impl Kernel {
    /// The file system (image and writable layer): the envd file services
    /// act on it directly.
    pub fn vfs(&self) -> &Vfs {
        &self.vfs
    }

    pub fn vfs_mut(&mut self) -> &mut Vfs {
        &mut self.vfs
    }

    /// Sockets, and the egress policy and accounting they run under.
    pub fn sockets(&self) -> &crate::net::Sockets {
        &self.sockets
    }

    pub fn sockets_mut(&mut self) -> &mut crate::net::Sockets {
        &mut self.sockets
    }

    /// The agent's control channel.
    pub fn control(&self) -> &crate::control::Channel {
        &self.control
    }

    pub fn control_mut(&mut self) -> &mut crate::control::Channel {
        &mut self.control
    }

    /// System calls and faults counted since `reset_stats`.
    pub fn stats(&self) -> &SyscallStats {
        &self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = SyscallStats::default();
    }

    /// Where the first process's fd 1 and fd 2 writes go.
    pub fn set_output(&mut self, stdout: Sink, stderr: Sink) {
        self.stdout = stdout;
        self.stderr = stderr;
    }

    pub fn stdout_mut(&mut self) -> &mut Sink {
        &mut self.stdout
    }

    pub fn stderr_mut(&mut self) -> &mut Sink {
        &mut self.stderr
    }

    /// The first process (the agent): when it exits, the sandbox is done.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// What the run loop does between two system calls, for a driver
    /// without a vCPU (the syscall fuzzer): the queued page-table writes
    /// and new threads' FPU set-up are dropped. False when the current
    /// thread can make no further call (it exited, or the process did).
    #[doc(hidden)]
    pub fn settle_without_vcpu(&mut self) -> bool {
        self.mm.drop_pending();
        self.new_threads.clear();
        self.exit.is_none() && self.proc.dead.is_none() && self.threads.contains_key(&self.current)
    }

    /// The sandbox's limits (memory, disk, descriptors...).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The environment the sandbox's first process started with.
    pub fn init_env(&self) -> Vec<Vec<u8>> {
        if self.proc.pid == self.init_pid {
            self.proc.envp.clone()
        } else {
            self.others
                .get(&self.init_pid)
                .map(|s| s.proc.envp.clone())
                .unwrap_or_default()
        }
    }

    /// The current process's descriptors (the template's agent gets its
    /// control channel through them).
    pub fn fds_mut(&mut self) -> &mut FdTable {
        &mut self.fds
    }

    /// The current process's address space.
    pub fn mm(&self) -> &AddressSpace {
        &self.mm
    }

    pub fn mm_mut(&mut self) -> &mut AddressSpace {
        &mut self.mm
    }

    /// A guest time slice begins on this thread: its CPU time counts
    /// from here (a live sandbox runs on whichever worker thread has it).
    pub fn cpu_slice_begins(&mut self) {
        self.cpu_base_ns = crate::syscalls::thread_cpu_ns();
    }

    /// The slice `cpu_slice_begins` began has ended: its CPU time is
    /// carried into the sandbox's.
    pub fn cpu_slice_ends(&mut self) {
        let now = crate::syscalls::thread_cpu_ns();
        self.cpu_carried_ns += now.saturating_sub(self.cpu_base_ns);
        self.cpu_base_ns = now;
    }
}

impl Kernel {
    /// CPU time of the sandbox (all its processes): the vCPU thread's
    /// time since it started, plus what its template had used (ns).
    pub fn cpu_ns(&self) -> u64 {
        crate::syscalls::thread_cpu_ns().saturating_sub(self.cpu_base_ns) + self.cpu_carried_ns
    }

    /// The limits this sandbox ran into (those of its processes still
    /// alive, for descriptors).
    pub fn limit_hits(&self) -> LimitHits {
        LimitHits {
            memory: self.mm.refused > 0
                || self.mm.frames.refused > 0
                || self.others.values().any(|s| s.mm.refused > 0),
            disk: self.vfs.tmp.full > 0,
            fds: self.fds.exhausted > 0 || self.others.values().any(|s| s.fds.exhausted > 0),
        }
    }

    /// Forget the limits hit so far (they are reported per execution).
    pub fn clear_limit_hits(&mut self) {
        self.vfs.tmp.full = 0;
        self.fds.exhausted = 0;
        self.mm.refused = 0;
        self.mm.frames.refused = 0;
        for s in self.others.values_mut() {
            s.fds.exhausted = 0;
            s.mm.refused = 0;
        }
    }

    pub fn thread(&self) -> &Thread {
        self.threads
            .get(&self.current)
            .expect("the current thread exists")
    }

    pub fn thread_mut(&mut self) -> &mut Thread {
        self.threads
            .get_mut(&self.current)
            .expect("the current thread exists")
    }

    /// Process `pid` of the sandbox: the current one or another (exited
    /// but not reaped included).
    pub(crate) fn process(&self, pid: u32) -> Option<&Process> {
        if pid == self.proc.pid {
            Some(&self.proc)
        } else {
            self.others.get(&pid).map(|s| &s.proc)
        }
    }

    pub(crate) fn process_mut(&mut self, pid: u32) -> Option<&mut Process> {
        if pid == self.proc.pid {
            Some(&mut self.proc)
        } else {
            self.others.get_mut(&pid).map(|s| &mut s.proc)
        }
    }

    /// The deadline of the current syscall: the one set when it first
    /// blocked, or now + `timeout`. A guest's timeout can be centuries
    /// (tv_sec up to i64::MAX), past what an Instant holds: it is capped
    /// at ~136 years, which no sandbox outlives.
    pub fn syscall_deadline(&mut self, timeout: std::time::Duration) -> std::time::Instant {
        let t = self.thread_mut();
        *t.syscall_deadline.get_or_insert_with(|| {
            let now = std::time::Instant::now();
            now.checked_add(timeout)
                .unwrap_or(now + std::time::Duration::from_secs(u32::MAX as u64))
        })
    }

    /// Whether a retried syscall's deadline passed (consumes the flag).
    pub fn take_timed_out(&mut self) -> bool {
        std::mem::take(&mut self.thread_mut().timed_out)
    }

    /// Block the current syscall on `w`.
    pub fn wait(&mut self, w: Wait) -> crate::syscalls::SysError {
        crate::syscalls::SysError::Block(Block::Wait(w))
    }

    /// Every descriptor table of every live process.
    fn all_fds(&self) -> impl Iterator<Item = &FdTable> {
        std::iter::once(&self.fds).chain(self.others.values().map(|p| &p.fds))
    }

    /// Every open description: in descriptor tables, and in flight in a
    /// socket's queue (SCM_RIGHTS).
    pub(crate) fn live_descriptions(&self) -> impl Iterator<Item = &crate::fd::OpenFile> {
        self.all_fds()
            .flat_map(|t| t.descriptions())
            .chain(self.sockets.in_flight())
    }

    /// Number of descriptions (in any process) of pipe `id`'s `write` end.
    pub fn pipe_ends(&self, id: u64, write: bool) -> usize {
        let host =
            self.pipes
                .get(&id)
                .is_some_and(|p| if write { p.host_writer } else { p.host_reader });
        usize::from(host)
            + crate::file::fifo::waiting_ends(self, id, write)
            + self
                .live_descriptions()
                // By access mode: a FIFO opened O_RDWR is both ends.
                .filter(|f| {
                    matches!(f.kind, FileKind::Pipe { id: i, .. } if i == id)
                        && if write { f.writable() } else { f.readable() }
                })
                .count()
    }

    /// Drop sockets, pipes and event objects no descriptor refers to
    /// (sockets first: a dropped socket drops what was in flight in it).
    pub fn gc_pipes(&mut self) {
        let sockets: std::collections::BTreeSet<u64> = self
            .all_fds()
            .flat_map(|t| t.descriptions())
            .filter_map(|f| match f.kind {
                FileKind::Socket(id) => Some(id),
                _ => None,
            })
            .collect();
        self.sockets.gc(&sockets);
        let live: std::collections::BTreeSet<u64> = self
            .live_descriptions()
            .filter_map(|f| match f.kind {
                FileKind::Pipe { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        let awaited = crate::file::fifo::awaited_pipes(self);
        self.pipes.retain(|id, p| {
            live.contains(id) || p.host_reader || p.host_writer || awaited.contains(id)
        });
        let objects: std::collections::BTreeSet<u64> = self
            .live_descriptions()
            .filter_map(|f| match f.kind {
                FileKind::EventFd(id) | FileKind::TimerFd(id) | FileKind::Epoll(id) => Some(id),
                _ => None,
            })
            .collect();
        self.events.retain(&objects);
        let inotify: std::collections::BTreeSet<u64> = self
            .live_descriptions()
            .filter_map(|f| match f.kind {
                FileKind::Inotify(id) => Some(id),
                _ => None,
            })
            .collect();
        self.fs.inotify.retain(&inotify);
        self.gc_ptys();
    }

    /// Give this process tree new ids: pid `new_pid` for the first process
    /// and every other pid and tid shifted alike. glibc keeps each thread's
    /// tid in its thread descriptor, at the address the thread registered
    /// with set_tid_address (clear_child_tid): those are rewritten too.
    pub fn renumber(
        &mut self,
        mem: &zeroboot_vmm::GuestMemory,
        tables: Option<&zeroboot_vmm::GuestMemory>,
        new_pid: u32,
    ) {
        let base = self.init_pid;
        let f = |id: u32| if id >= base { id - base + new_pid } else { id };
        let fix_proc = |p: &mut Process| {
            p.pid = f(p.pid);
            p.pgid = f(p.pgid);
            p.sid = f(p.sid);
            if p.ppid >= base {
                p.ppid = f(p.ppid);
            }
            p.vfork_parent = p.vfork_parent.map(|(a, b)| (f(a), f(b)));
            p.vfork_child = p.vfork_child.map(f);
        };
        let fix_threads = |ts: &mut BTreeMap<u32, Thread>| {
            let old = std::mem::take(ts);
            for (_, mut t) in old {
                t.tid = f(t.tid);
                ts.insert(t.tid, t);
            }
        };
        fix_proc(&mut self.proc);
        fix_threads(&mut self.threads);
        // The running process's threads: their memory is reachable now.
        let tids: Vec<(u64, u32)> = self
            .threads
            .values()
            .map(|t| (t.clear_child_tid, t.tid))
            .collect();
        for (addr, tid) in tids {
            if addr == 0 {
                continue;
            }
            let via =
                tables.and_then(|t| self.mm.write_via(t, mem, addr, &tid.to_le_bytes(), false));
            if via.is_none() {
                let _ = self.mm.write_obj(mem, addr, &tid);
            }
        }
        let others = std::mem::take(&mut self.others);
        for (_, mut slot) in others {
            fix_proc(&mut slot.proc);
            fix_threads(&mut slot.threads);
            self.others.insert(slot.proc.pid, slot);
        }
        let zombies = std::mem::take(&mut self.zombies);
        for (pid, mut z) in zombies {
            z.ppid = f(z.ppid);
            z.pgid = f(z.pgid);
            self.zombies.insert(f(pid), z);
        }
        self.current = f(self.current);
        self.next_id = f(self.next_id);
        self.init_pid = new_pid;
    }

    /// A fresh pid/tid.
    pub fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Make process `pid` (parked) the current one, parking the current
    /// one, or dropping it if it is dead. Frames stay in `self.mm`. The
    /// caller switches CR3 and picks the thread.
    pub fn switch_process(&mut self, pid: u32) -> bool {
        let Some(mut slot) = self.others.remove(&pid) else {
            return false;
        };
        std::mem::swap(&mut self.proc, &mut slot.proc);
        self.mm.swap_layout(&mut slot.mm);
        std::mem::swap(&mut self.fds, &mut slot.fds);
        std::mem::swap(&mut self.threads, &mut slot.threads);
        if slot.proc.dead.is_none() {
            self.others.insert(slot.proc.pid, slot);
        }
        self.current = self.threads.keys().next().copied().unwrap_or(pid);
        true
    }

    /// The /proc view of this process.
    pub fn proc_view(&self) -> KernelProcView<'_> {
        KernelProcView(self)
    }
}

/// `ProcView` over the kernel state.
pub struct KernelProcView<'a>(&'a Kernel);

impl ProcView for KernelProcView<'_> {
    fn pid(&self) -> u32 {
        self.0.proc.pid
    }
    fn exe(&self) -> String {
        self.0.proc.exe.clone()
    }
    fn cwd(&self) -> String {
        self.0.proc.cwd.clone()
    }
    fn fd_path(&self, fd: i32) -> Option<String> {
        let f = self.0.fds.get(fd).ok()?;
        Some(f.kind.with_ops(|o| o.proc_link(f)))
    }
    fn fds(&self) -> Vec<i32> {
        self.0.fds.fds()
    }
    fn ptys(&self) -> Vec<u64> {
        self.0.ptys.keys().copied().collect()
    }
}
