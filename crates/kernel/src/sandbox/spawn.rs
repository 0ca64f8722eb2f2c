//! Starting a process from the host (see `crate::spawn`), and running the
//! sandbox in time slices while such processes live.

use std::time::Instant;

use zeroboot_abi::flags::S_IFDIR;
use zeroboot_vmm::Host;

use super::{Outcome, Sandbox, SandboxError};
use crate::kernel::ProcessSlot;
use crate::loader::{self, CpuInfo};
use crate::spawn::{SpawnError, SpawnSpec, Spawned};
use crate::syscalls::process::MAX_PROCESSES;
use crate::task::{CpuContext, Process, Thread};

impl Sandbox {
    /// Start `spec` as a new process of this sandbox. It runs when the
    /// sandbox next runs (`run` or `run_slice`).
    pub fn spawn(&mut self, spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
        if self.k.exit.is_some() {
            return Err(SpawnError::Ended);
        }
        if self.k.others.len() + self.k.zombies.len() + 1 >= MAX_PROCESSES {
            return Err(SpawnError::TooMany(MAX_PROCESSES));
        }
        let pv = self.k.proc_view();
        let cwd = self
            .k
            .vfs
            .resolve("/", &spec.cwd, true, &pv)
            .map_err(|e| SpawnError::Cwd(spec.cwd.clone(), e))?;
        if self.k.vfs.stat(&cwd.node).st_mode & zeroboot_abi::flags::S_IFMT != S_IFDIR {
            return Err(SpawnError::Cwd(
                spec.cwd.clone(),
                zeroboot_abi::Errno::ENOTDIR,
            ));
        }
        let program = if spec.program.contains('/') {
            spec.program.clone()
        } else {
            let path = spec
                .envp
                .iter()
                .find_map(|e| e.strip_prefix(b"PATH="))
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            self.find_program(&spec.program, &path)
                .ok_or_else(|| SpawnError::NotFound(spec.program.clone()))?
        };
        let pid = self.k.alloc_id();
        let mut proc = Process::new(pid);
        proc.ppid = 0;
        proc.cwd = cwd.path.clone();
        proc.rlimits = self.k.proc.rlimits.clone();
        proc.cred = spec.cred.clone();
        let mut layout = self.k.mm.fresh_layout(&self.mem)?;
        // Load into the new layout, as the new process: the loader works on
        // the kernel's current process; the one on the vCPU waits aside.
        self.k.mm.swap_layout(&mut layout);
        std::mem::swap(&mut self.k.proc, &mut proc);
        let mut random = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
        let loaded = Host::get()
            .map_err(|e| SpawnError::Sandbox(Box::new(e.into())))
            .and_then(|h| {
                let cpu = CpuInfo { hwcap: h.hwcap() };
                let (path, argv) = loader::interpret_script(&self.k, &program, spec.argv.clone())?;
                Ok(loader::load(
                    &mut self.k,
                    &self.mem,
                    &path,
                    &argv,
                    &spec.envp,
                    cpu,
                    random,
                )?)
            });
        if loaded.is_err() {
            // The new layout never ran: nothing of it is shadowed.
            self.k.mm.release(&self.mem, false);
        }
        self.k.mm.swap_layout(&mut layout);
        std::mem::swap(&mut self.k.proc, &mut proc);
        let entry = loaded?;
        let (fds, spawned) = self.k.spawn_fds(pid, spec.stdin, spec.pty)?;
        let mut t = Thread::new(pid);
        t.comm = proc
            .exe
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(15)
            .collect();
        let regs = kvm_bindings::kvm_regs {
            rip: entry.rip,
            rsp: entry.rsp,
            rflags: 0x202,
            ..Default::default()
        };
        t.ctx = Some(CpuContext {
            regs,
            xsave: self.initial_xsave.clone(),
        });
        self.k.others.insert(
            pid,
            ProcessSlot {
                proc,
                mm: layout,
                fds,
                threads: [(pid, t)].into_iter().collect(),
            },
        );
        tracing::debug!(pid, program = %program, "process spawned by the host");
        Ok(spawned)
    }

    /// Run what is runnable for at most until `until`, without handing the
    /// agent a request: spawned processes make progress while the agent
    /// stays parked. Returns `Parked` when nothing is runnable (see
    /// `next_wake`), `TimedOut` when the slice ended first, or `Exited`
    /// when the sandbox's first process has ended.
    /// Unlike `run`, it never waits on the host for a sleeping thread:
    /// with nothing runnable it returns `TimedOut` at once (see
    /// `next_wake`), so its caller can serve others meanwhile.
    pub fn run_slice(&mut self, until: Instant) -> Result<Outcome, SandboxError> {
        self.yield_when_idle = true;
        let r = self.run(Some(until));
        self.yield_when_idle = false;
        r
    }

    /// Whether some thread could run now.
    pub fn has_runnable(&self) -> bool {
        crate::sched::runnable(&self.k) > 0
    }

    /// Wake the threads waiting to retry if one of the sandbox's host
    /// sockets is ready (without waiting); returns whether one was.
    pub fn poll_host_sockets(&mut self) -> bool {
        let ready = self.k.sockets.wait_host(std::time::Duration::ZERO);
        if ready {
            crate::sched::wake_retriers(&mut self.k);
        }
        ready
    }

    /// When the earliest waiting thread's timeout falls due.
    pub fn next_wake(&self) -> Option<Instant> {
        crate::sched::earliest_deadline(&self.k)
    }
}
