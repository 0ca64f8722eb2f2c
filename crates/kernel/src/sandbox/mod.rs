//! A sandbox: one KVM VM running one Linux program in ring 3, and the run
//! loop that turns its exits into system calls, page faults and signals.

mod exec;
pub mod reset;
mod signals;
mod spawn;

use std::sync::Arc;
use std::time::Instant;

use zeroboot_abi::signal::*;
use zeroboot_vmm::layout::{FIRST_FREE_GPA, PML4_GPA};
use zeroboot_vmm::{boot, ExceptionFrame, Exit as VmExit, GuestMemory, Host, Vcpu, Vm};

use crate::fd::{FdTable, FileKind, OpenFile, Stream};
use crate::kernel::Block;
use crate::kernel::{Exit, Kernel, Limits, Sink, Source};
use crate::loader::{self, CpuInfo, LoadError};
use crate::mm::{AddressSpace, Fault, Frames};
use crate::sched;
use crate::syscalls::{self, Args, Ctx, SysError, SyscallStats};
use crate::task::{CpuContext, Process, Resume, Thread, ThreadState, Wait};
use crate::vfs::{Image, Vfs};
use crate::watchdog;
use zeroboot_vmm::layout::USER_END;

/// Errors of creating or running a sandbox (the program's own failures are
/// outcomes, not errors).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Vm(#[from] zeroboot_vmm::VmError),
    #[error(transparent)]
    Vcpu(#[from] zeroboot_vmm::VcpuError),
    #[error(transparent)]
    Memory(#[from] zeroboot_vmm::MemoryError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the sandbox has already finished")]
    Finished,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The program exited or was killed.
    Exited(Exit),
    /// The deadline passed.
    TimedOut,
    /// The program is blocked reading its control channel: a snapshot
    /// point. Fill the inbox and run again to continue.
    Parked,
}

/// What a sandbox is made of.
#[derive(Clone)]
pub struct SandboxConfig {
    pub image: Arc<Image>,
    pub limits: Limits,
    pub stdout: Sink,
    pub stderr: Sink,
    pub stdin: Source,
    pub pid: u32,
    pub hostname: String,
}

impl SandboxConfig {
    pub fn new(image: Arc<Image>) -> SandboxConfig {
        SandboxConfig {
            image,
            limits: Limits::default(),
            stdout: Sink::Host(1),
            stderr: Sink::Host(2),
            stdin: Source::Empty,
            pid: 1,
            hostname: "zeroboot".into(),
        }
    }
}

/// Guest-physical memory for a memory limit: the limit, plus room for page
/// tables and private copies of mapped files.
pub fn guest_memory_size(limit: u64) -> u64 {
    let raw = limit + limit / 8 + (16 << 20);
    raw.div_ceil(2 << 20) * (2 << 20)
}

/// How long a thread runs before another runnable one gets the vCPU.
pub(crate) const TIMESLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// How often one thread's fault may repeat at the same place in a row,
/// with no system call between but rt_sigreturn, before the program is
/// considered stuck (a VMM bug, or a SIGSEGV handler that returns).
const MAX_REPEATED_FAULTS: u32 = 16;

pub struct Sandbox {
    pub mem: GuestMemory,
    pub vm: Vm,
    pub vcpu: Vcpu,
    pub k: Kernel,
    /// The last fault (pid, tid, rip, address) and how often it came in
    /// a row. Keyed by thread: forked children run the same code at the
    /// same addresses, and each may fault there once legitimately (a lazy
    /// page of the layout they inherited), which must not add up.
    last_fault: ((u32, u32, u64, u64), u32),
    xsave_size: u64,
    /// The FPU state of a fresh process (for execve).
    initial_xsave: Vec<u8>,
    /// A fork with dirty tracking on: it can be reset to its template.
    pub(crate) resettable: bool,
    /// Every page the guest ever wrote (when KVM leaves written pages
    /// writable: each reset restores them all).
    pub(crate) ever_written: std::collections::BTreeSet<u64>,
    /// `restore` brought memory and vCPU back to the template and no
    /// request has begun since (`begin`).
    pub(crate) restored: bool,
    /// What the last reset cost, part by part (for `bench fork`).
    pub last_reset: reset::ResetCost,
    /// In a `run_slice`: return instead of waiting for a timeout.
    pub(crate) yield_when_idle: bool,
}

fn now_ns(id: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(id);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Sandbox {
    /// A VM with an empty address space and the standard descriptors.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let size = guest_memory_size(cfg.limits.memory);
        let mem = GuestMemory::new(size)?;
        boot::write_boot_structures(&mem)?;
        let vm = Vm::new(&mem, FIRST_FREE_GPA)?;
        let vcpu = vm.create_vcpu()?;
        let initial_xsave = vcpu.xsave_bytes()?;
        // All processes together: the limit, and room for page tables.
        let frames = Frames::new(
            FIRST_FREE_GPA,
            size,
            (size - FIRST_FREE_GPA).min(cfg.limits.memory + crate::mm::TABLE_ROOM),
        );
        let mut fds = FdTable::new(cfg.limits.fds);
        for (fd, s, flags) in [
            (0, Stream::Stdin, zeroboot_abi::flags::O_RDONLY),
            (1, Stream::Stdout, zeroboot_abi::flags::O_WRONLY),
            (2, Stream::Stderr, zeroboot_abi::flags::O_WRONLY),
        ] {
            fds.open_at(
                fd,
                OpenFile::new(FileKind::Console(s), "/dev/pts/0", flags),
                false,
            )
            .map_err(|_| SandboxError::Finished)?;
        }
        let k = Kernel {
            mm: AddressSpace::new(PML4_GPA, frames, cfg.limits.memory),
            fds,
            vfs: Vfs::new(cfg.image, cfg.limits.disk),
            proc: Process::new(cfg.pid),
            threads: [(cfg.pid, Thread::new(cfg.pid))].into_iter().collect(),
            current: cfg.pid,
            others: Default::default(),
            zombies: Default::default(),
            next_id: cfg.pid + 1,
            init_pid: cfg.pid,
            wait_seq: 0,
            new_threads: Vec::new(),
            yield_now: false,
            pipes: Default::default(),
            events: Default::default(),
            sockets: Default::default(),
            next_pipe: 1,
            ptys: Default::default(),
            next_pty: 0,
            fs: Default::default(),
            stdout: cfg.stdout,
            stderr: cfg.stderr,
            stdin: cfg.stdin,
            stats: SyscallStats::default(),
            limits: cfg.limits,
            exit: None,
            cpu_base_ns: now_ns(rustix::time::ClockId::ThreadCPUTime),
            cpu_carried_ns: 0,
            start_mono_ns: now_ns(rustix::time::ClockId::Monotonic),
            clock: crate::vdso::Clock::sample(vcpu.tsc()),
            hostname: cfg.hostname,
            deadline: None,
            control: crate::control::Channel {
                outbox_cap: 64 << 20,
                ..Default::default()
            },
        };
        Ok(Sandbox {
            mem,
            vm,
            vcpu,
            k,
            last_fault: Default::default(),
            xsave_size: Host::get()?.xsave_size(),
            initial_xsave,
            resettable: false,
            ever_written: Default::default(),
            restored: false,
            last_reset: Default::default(),
            yield_when_idle: false,
        })
    }

    /// Assemble a sandbox from its parts (a fork).
    pub(crate) fn from_parts(
        mem: GuestMemory,
        vm: Vm,
        vcpu: Vcpu,
        k: Kernel,
        xsave_size: u64,
        initial_xsave: Vec<u8>,
    ) -> Sandbox {
        Sandbox {
            mem,
            vm,
            vcpu,
            k,
            last_fault: Default::default(),
            xsave_size,
            initial_xsave,
            resettable: false,
            ever_written: Default::default(),
            restored: false,
            last_reset: Default::default(),
            yield_when_idle: false,
        }
    }

    /// Load `path` (resolved in the sandbox) as the program to run.
    pub fn exec(
        &mut self,
        path: &str,
        argv: &[Vec<u8>],
        envp: &[Vec<u8>],
    ) -> Result<(), SandboxError> {
        let mut random = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
        let cpu = CpuInfo {
            hwcap: Host::get()?.hwcap(),
        };
        let (path, argv) = loader::interpret_script(&self.k, path, argv.to_vec())?;
        let entry = loader::load(&mut self.k, &self.mem, &path, &argv, envp, cpu, random)?;
        let r = self.vcpu.regs_mut();
        *r = Default::default();
        r.rip = entry.rip;
        r.rsp = entry.rsp;
        r.rflags = 0x202;
        self.vcpu.resume_user();
        Ok(())
    }

    /// The first executable `name` in the `:`-separated `path_env`, as
    /// execvp searches.
    pub fn find_program(&self, name: &str, path_env: &str) -> Option<String> {
        let pv = self.k.proc_view();
        path_env
            .split(':')
            .filter(|d| !d.is_empty())
            .find_map(|dir| {
                let cand = format!("{}/{}", dir.trim_end_matches('/'), name);
                let l = self.k.vfs.resolve("/", &cand, true, &pv).ok()?;
                let st = self.k.vfs.stat(&l.node);
                let exe = st.st_mode & zeroboot_abi::flags::S_IFMT == zeroboot_abi::flags::S_IFREG
                    && st.st_mode & 0o111 != 0;
                exe.then_some(cand)
            })
    }

    /// Put a file into the sandbox's writable layer (parents are created).
    pub fn add_file(
        &mut self,
        path: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> Result<(), zeroboot_abi::Errno> {
        let mut dir = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some((name, parents)) = parts.split_last() else {
            return Err(zeroboot_abi::Errno::EINVAL);
        };
        for p in parents {
            dir = format!("{dir}/{p}");
            let pv = self.k.proc_view();
            if self.k.vfs.lookup(&dir, &pv).is_none() {
                let ino = self.k.vfs.tmp.alloc_ino();
                self.k
                    .vfs
                    .tmp
                    .set(dir.clone(), crate::vfs::Entry::Dir { mode: 0o755, ino })?;
            }
        }
        let ino = self.k.vfs.tmp.new_file(mode, data, syscalls::now())?;
        let full = format!("{dir}/{name}");
        self.k.vfs.tmp.set(full, crate::vfs::Entry::File(ino))
    }

    /// Run until the program exits, parks, or `deadline` passes.
    pub fn run(&mut self, deadline: Option<Instant>) -> Result<Outcome, SandboxError> {
        if let Some(e) = &self.k.exit {
            return Ok(Outcome::Exited(e.clone()));
        }
        self.k.deadline = deadline;
        let guard = watchdog::arm(deadline, self.vcpu.exit_flag());
        // A run that hands the agent a request (or a slice of one whose
        // agent is still busy with it) ends when the agent parks again with
        // its reply, even while other processes could run (spawned
        // commands go on in later runs).
        let request =
            !self.k.control.inbox.is_empty() || (self.yield_when_idle && !sched::parked(&self.k));
        if !self.k.control.inbox.is_empty() {
            sched::unpark(&mut self.k);
        }
        let mut slice_end: Option<Instant> = None;
        loop {
            if let Some(e) = &self.k.exit {
                return Ok(Outcome::Exited(e.clone()));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Outcome::TimedOut);
            }
            let state = self.k.threads.get(&self.k.current).map(|t| t.state.clone());
            match state {
                Some(ThreadState::Runnable(Resume::Continue)) => {}
                Some(ThreadState::Runnable(Resume::Retry)) => {
                    self.k.thread_mut().state = ThreadState::Runnable(Resume::Continue);
                    self.syscall()?;
                    continue;
                }
                Some(ThreadState::Runnable(Resume::Complete(v))) => {
                    self.k.thread_mut().state = ThreadState::Runnable(Resume::Continue);
                    self.finish_syscall(v)?;
                    continue;
                }
                Some(ThreadState::Runnable(Resume::Interrupted)) => {
                    self.k.thread_mut().state = ThreadState::Runnable(Resume::Continue);
                    self.interrupted()?;
                    continue;
                }
                Some(ThreadState::Blocked(Wait::Park))
                    if request && self.k.control.inbox.is_empty() =>
                {
                    return Ok(Outcome::Parked);
                }
                Some(ThreadState::Blocked(_)) | None => {
                    if let Some(o) = self.schedule()? {
                        return Ok(o);
                    }
                    slice_end = None;
                    continue;
                }
            }
            // A turn that ended while this thread was in the VMM (serving
            // its syscalls) lost its kick, which only interrupts KVM_RUN: a
            // thread looping on calls that never block (Pool's handler
            // polling a ready pipe) would keep the vCPU from its siblings.
            if slice_end.is_some_and(|e| now >= e) && self.vcpu.regs().rip < USER_END {
                slice_end = None;
                guard.set_slice(None);
                // The slice may have been a sleeper's deadline.
                sched::expire(&mut self.k, now);
                if self.next_turn()? {
                    continue;
                }
            }
            // Several threads share the vCPU: bound this one's turn, and
            // come back when a waiting thread's timeout is due.
            let want = if sched::runnable(&self.k) > 1 {
                Some(slice_end.unwrap_or(now + TIMESLICE))
            } else {
                sched::earliest_deadline(&self.k)
            };
            if want != slice_end {
                guard.set_slice(want);
                slice_end = want;
            }
            self.sync_memory()?;
            // A signal sent from outside (`signal_process`: a client's
            // interrupt) to a thread busy in ring 3 is acted on before it
            // runs on, not at its next syscall, which may never come.
            if self.vcpu.regs().rip < USER_END && self.signal_ready() {
                self.deliver_pending()?;
                // Its handler's frame is set up, or it is gone: look again.
                continue;
            }
            match self.vcpu.run(&self.mem)? {
                VmExit::Syscall => self.syscall()?,
                VmExit::Exception(f) => {
                    self.k.stats.exceptions += 1;
                    self.exception(f)?
                }
                VmExit::Kicked => {
                    self.k.stats.kicks += 1;
                    let now = Instant::now();
                    sched::expire(&mut self.k, now);
                    let expired = slice_end.is_some_and(|e| now >= e);
                    // Only a thread stopped in ring 3 can be switched out.
                    if expired && self.vcpu.regs().rip < USER_END {
                        slice_end = None;
                        guard.set_slice(None);
                        self.next_turn()?;
                    }
                }
                VmExit::KernelException(f) => {
                    self.kill(
                        SIGKILL,
                        format!(
                            "internal error: ring-0 exception {} at {:#x}",
                            f.vector, f.rip
                        ),
                    );
                }
                VmExit::PteWriterDone => {
                    self.kill(SIGKILL, "internal error: stray PTE-writer exit".into());
                }
                VmExit::Unexpected(what) => {
                    self.kill(
                        SIGKILL,
                        format!("internal error: unexpected VM exit: {what}"),
                    );
                }
            }
        }
    }

    /// End the current process with `sig`'s default action and a one-line
    /// reason on stderr. The first process ending ends the sandbox.
    fn kill(&mut self, sig: u32, reason: String) {
        // A child's death is its parent's to report (through wait).
        if self.k.proc.pid == self.k.init_pid {
            let line = format!("zeroboot: {} ({}): {}\n", name(sig), sig, reason);
            let _ = self.k.stderr.write(line.as_bytes());
        }
        tracing::debug!(signal = name(sig), %reason, pid = self.k.proc.pid, "process killed");
        crate::procs::exit_current(
            &mut self.k,
            &self.mem,
            crate::procs::killed(sig),
            Some(reason),
        );
    }

    /// Serve the syscall the current thread is stopped at.
    fn syscall(&mut self) -> Result<(), SandboxError> {
        let regs = *self.vcpu.regs();
        let nr = regs.rax;
        // A system call is progress: the same fault may come again after
        // it (glibc mapping and freeing a large block at one address in a
        // loop, first touched by one memset: test_lzma's 17th round was
        // killed as stuck). Not the return from a handler, which is how a
        // SIGSEGV handler that returns repeats its fault.
        if nr != zeroboot_abi::sysno::RT_SIGRETURN {
            self.last_fault.1 = 0;
        }
        let res = {
            let mut ctx = Ctx {
                k: &mut self.k,
                mem: &self.mem,
                regs: &regs,
            };
            syscalls::dispatch(&mut ctx, nr, Args::from_regs(&regs))
        };
        // A value for RAX, or a block; control transfers are made here.
        let res: Result<u64, Block> = match res {
            Ok(v) => Ok(v),
            Err(SysError::Errno(e)) => Ok(e.as_return()),
            Err(SysError::Block(b)) => Err(b),
            Err(SysError::Sigreturn) => return self.sigreturn(),
            Err(SysError::Exec(a)) => return self.execve(a),
        };
        if !self.k.new_threads.is_empty() {
            // New threads start with their creator's FPU state.
            let xsave = self.vcpu.xsave_bytes()?;
            for tid in std::mem::take(&mut self.k.new_threads) {
                let t = match self.k.threads.get_mut(&tid) {
                    Some(t) => Some(t),
                    // A new process: its one thread has the pid as tid.
                    None => self
                        .k
                        .others
                        .get_mut(&tid)
                        .and_then(|s| s.threads.get_mut(&tid)),
                };
                if let Some(CpuContext { xsave: x, .. }) = t.and_then(|t| t.ctx.as_mut()) {
                    x.clone_from(&xsave);
                }
            }
        }
        if self.k.exit.is_some() {
            return Ok(());
        }
        if self.k.proc.dead.is_some() || !self.k.threads.contains_key(&self.k.current) {
            // The thread or its process exited; the loop schedules another.
            sched::wake_retriers(&mut self.k);
            return Ok(());
        }
        let ret = match res {
            Ok(v) => v,
            Err(b) => {
                let w = match b {
                    Block::Park => Wait::Park,
                    Block::Wait(w) => w,
                };
                sched::block_current(&mut self.k, w);
                return Ok(());
            }
        };
        sched::wake_retriers(&mut self.k);
        self.finish_syscall(ret)?;
        if std::mem::take(&mut self.k.yield_now) {
            if let Some(next) = sched::pick_next(&self.k)
                .filter(|&(p, t)| (p, t) != (self.k.proc.pid, self.k.current))
            {
                self.switch_to(next)?;
            }
        }
        Ok(())
    }

    /// Complete the current thread's syscall with `ret` and return to ring 3
    /// (delivering any signal that became pending).
    fn finish_syscall(&mut self, ret: u64) -> Result<(), SandboxError> {
        self.finish_syscall_then(ret, false)
    }

    /// Complete the current thread's syscall with `ret`, or (`restart`,
    /// `ret` being its number) make it run again once ring 3 resumes,
    /// after any signal handler: `rip` back on the 2-byte `syscall`.
    fn finish_syscall_then(&mut self, ret: u64, restart: bool) -> Result<(), SandboxError> {
        {
            // The call is over: its deadline must not leak into the next.
            let t = self.k.thread_mut();
            t.syscall_deadline = None;
            t.timed_out = false;
        }
        self.sync_task_state()?;
        self.vcpu.resume_from_syscall(ret);
        if restart {
            let r = self.vcpu.regs_mut();
            r.rip = r.rip.wrapping_sub(2);
        }
        self.deliver_pending()?;
        // rt_sigsuspend's mask ends with it when no handler took it over.
        if let Some(t) = self.k.threads.get_mut(&self.k.current) {
            if let Some(m) = t.saved_sigmask.take() {
                t.sigmask = m;
            }
        }
        Ok(())
    }

    /// Apply kernel-side changes that live in the vCPU (TLS base) and flush
    /// page-table changes before ring 3 runs again.
    /// Register with KVM the guest memory the frame allocator has reached.
    pub(crate) fn sync_memory(&mut self) -> Result<(), SandboxError> {
        let end = self.k.mm.frames.high_water();
        if end > self.vm.registered() {
            self.vm.grow(&self.mem, end)?;
        }
        Ok(())
    }

    fn sync_task_state(&mut self) -> Result<(), SandboxError> {
        self.sync_memory()?;
        let (fs, gs) = {
            let t = self.k.thread();
            (t.fs_base, t.gs_base)
        };
        if fs != self.vcpu.fs_base() {
            self.vcpu.set_fs_base(fs);
        }
        if gs != self.vcpu.gs_base() {
            self.vcpu.set_gs_base(gs);
        }
        self.flush_page_tables()
    }

    /// Make the page-table writes that need the ring-0 writer: the
    /// pending ones, then the clearing of retired tables, whose frames
    /// are free after it.
    fn flush_page_tables(&mut self) -> Result<(), SandboxError> {
        if self.k.mm.has_pending() {
            let writes = self.k.mm.take_pending(&self.mem);
            self.vcpu.run_pte_writer(&self.mem, &writes)?;
        }
        if self.k.mm.frames.has_retired() {
            let (clears, frames) = self.k.mm.frames.take_retired();
            self.vcpu.run_pte_writer(&self.mem, &clears)?;
            for f in frames {
                self.k.mm.frames.free(f);
            }
        }
        Ok(())
    }

    /// The current thread's turn is over: give the vCPU to the next
    /// runnable thread, if another; whether it switched.
    fn next_turn(&mut self) -> Result<bool, SandboxError> {
        let next =
            sched::pick_next(&self.k).filter(|&(p, t)| (p, t) != (self.k.proc.pid, self.k.current));
        match next {
            Some(n) => {
                self.switch_to(n)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Put thread `tid` of process `pid` on the vCPU, saving the current
    /// thread if it still exists.
    fn switch_to(&mut self, (pid, tid): (u32, u32)) -> Result<(), SandboxError> {
        if (pid, tid) == (self.k.proc.pid, self.k.current) && self.k.proc.dead.is_none() {
            return Ok(());
        }
        if self.k.proc.dead.is_none() && self.k.threads.contains_key(&self.k.current) {
            let ctx = CpuContext {
                regs: *self.vcpu.regs(),
                xsave: self.vcpu.xsave_bytes()?,
            };
            self.k.thread_mut().ctx = Some(ctx);
        }
        if pid != self.k.proc.pid || self.k.proc.dead.is_some() {
            if self.k.mm.has_pending() || self.k.mm.frames.has_retired() {
                self.sync_memory()?;
                self.flush_page_tables()?;
            }
            if !self.k.switch_process(pid) {
                return Ok(());
            }
            self.vcpu.set_cr3(self.k.mm.pt.root());
        }
        self.k.current = tid;
        let (ctx, fs, gs) = {
            let t = self.k.thread_mut();
            (t.ctx.take(), t.fs_base, t.gs_base)
        };
        if let Some(c) = ctx {
            *self.vcpu.regs_mut() = c.regs;
            if !c.xsave.is_empty() {
                self.vcpu.set_xsave_bytes(&c.xsave)?;
            }
        }
        self.vcpu.set_fs_base(fs);
        self.vcpu.set_gs_base(gs);
        // Runnable(Continue) threads go straight back to ring 3; the others
        // finish their syscall first, which also returns to ring 3.
        self.vcpu.resume_user();
        if matches!(
            self.k.thread().state,
            ThreadState::Runnable(Resume::Continue)
        ) {
            self.deliver_pending()?;
        }
        Ok(())
    }

    /// Nothing can run on the vCPU right now: pick another thread, wait
    /// for a timeout, park, or wait out the deadline.
    fn schedule(&mut self) -> Result<Option<Outcome>, SandboxError> {
        loop {
            let now = Instant::now();
            sched::expire(&mut self.k, now);
            if let Some(next) = sched::pick_next(&self.k) {
                self.switch_to(next)?;
                return Ok(None);
            }
            if sched::parked(&self.k) {
                if !self.k.control.inbox.is_empty() {
                    sched::unpark(&mut self.k);
                    continue;
                }
                return Ok(Some(Outcome::Parked));
            }
            if self.yield_when_idle {
                if self.poll_host_sockets() {
                    continue;
                }
                return Ok(Some(Outcome::TimedOut));
            }
            let wake = sched::earliest_deadline(&self.k);
            let until = match (wake, self.k.deadline) {
                (Some(w), Some(d)) => Some(w.min(d)),
                (w, d) => w.or(d),
            };
            match until {
                Some(t) => {
                    if self.k.deadline.is_some_and(|d| now >= d) {
                        return Ok(Some(Outcome::TimedOut));
                    }
                    let d = t
                        .saturating_duration_since(now)
                        .min(std::time::Duration::from_millis(50));
                    // Sleeps, or wakes early when a host socket is ready.
                    if self.k.sockets.wait_host(d) {
                        sched::wake_retriers(&mut self.k);
                    }
                }
                None => {
                    // Every thread waits for something only another thread
                    // (or a host socket) could do; else a deadlock, which
                    // Linux would sit in too.
                    tracing::debug!("all threads blocked with no timeout");
                    if self
                        .k
                        .sockets
                        .wait_host(std::time::Duration::from_millis(100))
                    {
                        sched::wake_retriers(&mut self.k);
                    }
                }
            }
        }
    }

    fn exception(&mut self, f: ExceptionFrame) -> Result<(), SandboxError> {
        tracing::trace!(
            pid = self.k.proc.pid,
            vector = f.vector,
            error = f.error_code,
            cr2 = format_args!("{:#x}", f.cr2),
            rip = format_args!("{:#x}", f.rip),
            "exception"
        );
        let key = (self.k.proc.pid, self.k.current, f.rip, f.cr2);
        if self.last_fault.0 == key {
            self.last_fault.1 += 1;
        } else {
            self.last_fault = (key, 1);
        }
        if self.last_fault.1 > MAX_REPEATED_FAULTS {
            self.kill(
                SIGSEGV,
                format!("fault at {:#x} repeats (rip {:#x})", f.cr2, f.rip),
            );
            return Ok(());
        }
        let (sig, code, reason): (u32, i32, String) = match f.vector {
            14 => match self.k.mm.fault(&self.mem, f.cr2, f.error_code) {
                Fault::Resolved => {
                    self.sync_task_state()?;
                    self.vcpu.resume_from_exception(&f);
                    return Ok(());
                }
                Fault::OutOfMemory => {
                    self.kill(
                        SIGKILL,
                        format!("out of memory (limit {} MiB)", self.k.limits.memory >> 20),
                    );
                    return Ok(());
                }
                Fault::Segv(why) => (
                    SIGSEGV,
                    if f.error_code & 1 == 0 { 1 } else { 2 },
                    format!(
                        "segmentation fault at address {:#x} (rip {:#x}): {why}",
                        f.cr2, f.rip
                    ),
                ),
            },
            0 => (
                SIGFPE,
                1,
                format!("integer divide error (rip {:#x})", f.rip),
            ),
            16 | 19 => (
                SIGFPE,
                0,
                format!("floating-point exception (rip {:#x})", f.rip),
            ),
            6 => (SIGILL, 2, format!("invalid opcode (rip {:#x})", f.rip)),
            1 | 3 => (SIGTRAP, 1, format!("breakpoint (rip {:#x})", f.rip)),
            17 => (SIGBUS, 1, format!("alignment check (rip {:#x})", f.rip)),
            12 => (SIGBUS, 0, format!("stack segment fault (rip {:#x})", f.rip)),
            13 => (
                SIGSEGV,
                0x80,
                format!("general protection fault (rip {:#x})", f.rip),
            ),
            v => (
                SIGSEGV,
                0x80,
                format!("CPU exception {v} (rip {:#x})", f.rip),
            ),
        };
        self.vcpu.resume_from_exception(&f);
        let addr = if sig == SIGSEGV && f.vector == 14 {
            f.cr2
        } else {
            f.rip
        };
        tracing::debug!(
            signal = sig,
            pid = self.k.proc.pid,
            tid = self.k.current,
            %reason,
            "fault delivered as a signal"
        );
        self.force_signal(sig, code, addr, reason)
    }
}
