//! Processes and threads. A sandbox runs a tree of processes; all their
//! threads are multiplexed on the VM's one vCPU by the VMM (see `sched`): a
//! thread that is not running keeps its registers and FPU state here.

use serde::{Deserialize, Serialize};
use std::time::Instant;

use kvm_bindings::kvm_regs;
use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{KernelSigaction, Rlimit, StackT};
use zerocopy::FromZeros;

/// Signal handler value meaning "default action".
pub const SIG_DFL: u64 = 0;
/// Signal handler value meaning "ignore".
pub const SIG_IGN: u64 = 1;

/// Whether `sig`'s default action is to ignore it: SIGCHLD, SIGCONT,
/// SIGURG, SIGWINCH, and the stop signals (stopping would freeze the
/// sandbox with nothing to continue it: ignored, as for an orphaned
/// process group).
pub fn default_ignored(sig: u32) -> bool {
    use zeroboot_abi::signal::*;
    matches!(sig, SIGCHLD | SIGCONT | SIGSTOP | 20 | 21 | 22 | 23 | 28)
}

/// Process-wide state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub cwd: String,
    pub umask: u32,
    /// Path of the running executable.
    pub exe: String,
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    /// Dispositions of signals 1..=64 (index = signal - 1).
    #[serde(with = "crate::persist::pod_vec")]
    pub sigactions: Vec<KernelSigaction>,
    /// Process-directed signals not yet acted on (bit = signal - 1).
    pub pending: u64,
    /// Their siginfo (`crate::siginfo`).
    #[serde(default)]
    pub queued: Vec<crate::siginfo::Queued>,
    #[serde(with = "crate::persist::pod_vec")]
    pub rlimits: Vec<Rlimit>,
    pub pgid: u32,
    /// A vfork child: the parent (pid, tid) it borrowed the address space
    /// from, released at execve or exit.
    pub vfork_parent: Option<(u32, u32)>,
    /// A vfork parent: suspended until this child execs or exits.
    pub vfork_child: Option<u32>,
    /// The process has exited with this wait status and is about to
    /// become a zombie (it is switched out next).
    pub dead: Option<i32>,
    /// Session id (setsid).
    #[serde(default)]
    pub sid: u32,
    /// The nice value (setpriority), -20..=19. It is kept and reported;
    /// the sandbox's one vCPU does not weigh its processes by it.
    #[serde(default)]
    pub nice: i32,
    /// The scheduling policy (SCHED_OTHER, SCHED_BATCH or SCHED_IDLE),
    /// kept and reported like `nice`.
    #[serde(default)]
    pub sched_policy: u32,
    /// It has called execve since it was created (setpgid: EACCES).
    #[serde(default)]
    pub execed: bool,
    /// Interval and POSIX timers.
    #[serde(default)]
    pub timers: crate::timers::Timers,
    /// User and group ids (root in state saved before they were kept).
    #[serde(default)]
    pub cred: crate::cred::Cred,
}

impl Process {
    pub fn new(pid: u32) -> Process {
        let mut rlimits = vec![
            Rlimit {
                rlim_cur: RLIM_INFINITY,
                rlim_max: RLIM_INFINITY,
            };
            RLIMIT_NLIMITS as usize
        ];
        rlimits[RLIMIT_STACK as usize].rlim_cur = crate::mm::STACK_LIMIT;
        rlimits[RLIMIT_NOFILE as usize] = Rlimit {
            rlim_cur: 1024,
            rlim_max: 4096,
        };
        rlimits[RLIMIT_CORE as usize].rlim_cur = 0;
        Process {
            pid,
            ppid: pid.saturating_sub(1).max(1),
            cwd: "/".into(),
            umask: 0o022,
            exe: String::new(),
            argv: Vec::new(),
            envp: Vec::new(),
            sigactions: vec![KernelSigaction::new_zeroed(); 64],
            pending: 0,
            queued: Vec::new(),
            rlimits,
            pgid: pid,
            vfork_parent: None,
            vfork_child: None,
            dead: None,
            sid: pid,
            nice: 0,
            sched_policy: 0,
            execed: false,
            timers: Default::default(),
            cred: Default::default(),
        }
    }

    /// Whether `sig` is discarded when delivered: ignored, or left at a
    /// default action that ignores it.
    pub fn ignores_signal(&self, sig: u32) -> bool {
        match self.sigactions.get(sig as usize - 1).map(|a| a.handler) {
            Some(SIG_IGN) => true,
            Some(SIG_DFL) => default_ignored(sig),
            _ => false,
        }
    }

    /// Whether `sig` (1-based) is ignored.
    pub fn ignores(&self, sig: u32) -> bool {
        self.sigactions
            .get(sig as usize - 1)
            .is_some_and(|a| a.handler == SIG_IGN)
    }
}

/// What a blocked thread waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Wait {
    /// FUTEX_WAIT on `addr`: woken by FUTEX_WAKE with a matching bitset
    /// (the syscall returns 0) or at `deadline` (ETIMEDOUT).
    Futex {
        /// The futex word's user address, or its guest-physical address
        /// when `shared` (a futex in shared memory, waited on by the
        /// threads of any process).
        addr: u64,
        #[serde(default)]
        shared: bool,
        bitset: u32,
        #[serde(with = "crate::persist::opt_instant")]
        deadline: Option<Instant>,
    },
    /// A sleep: returns 0 at `until`.
    Sleep {
        #[serde(with = "crate::persist::instant")]
        until: Instant,
    },
    /// Anything else (pipes, poll): the syscall runs again when another
    /// thread may have changed things, or at `deadline` with `timed_out`
    /// set so that it returns what a timeout returns.
    Retry {
        #[serde(skip)]
        reason: &'static str,
        #[serde(with = "crate::persist::opt_instant")]
        deadline: Option<Instant>,
    },
    /// Reading the empty control channel: the process is parked until the
    /// host puts a request there.
    Park,
    /// The calling thread of a vfork, until the child execs or exits.
    Vfork,
}

impl Wait {
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Wait::Futex { deadline, .. } | Wait::Retry { deadline, .. } => *deadline,
            Wait::Sleep { until } => Some(*until),
            Wait::Park | Wait::Vfork => None,
        }
    }

    /// Whether a signal interrupts this wait (EINTR).
    pub fn interruptible(&self) -> bool {
        !matches!(self, Wait::Park | Wait::Vfork)
    }
}

/// How a thread continues when it is next scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Resume {
    /// Its registers are a ring-3 context (it was preempted or is new).
    Continue,
    /// It is stopped in a syscall that finishes with this return value.
    Complete(u64),
    /// It is stopped in a syscall that must run again.
    Retry,
    /// It was blocked in a syscall that a signal interrupted: the run loop
    /// returns EINTR, restarts it after the handler (SA_RESTART) or
    /// restarts it at once (the signal is ignored), as Linux decides.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThreadState {
    Runnable(Resume),
    Blocked(Wait),
}

/// Saved CPU state of a thread that is not on the vCPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuContext {
    #[serde(with = "crate::persist::regs")]
    pub regs: kvm_regs,
    /// XSAVE area; `None` for a thread that has not run yet and inherits
    /// its creator's at creation.
    pub xsave: Vec<u8>,
}

/// One thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thread {
    pub tid: u32,
    pub state: ThreadState,
    /// Saved registers while not on the vCPU.
    pub ctx: Option<CpuContext>,
    pub fs_base: u64,
    pub gs_base: u64,
    pub sigmask: u64,
    /// The mask rt_sigsuspend replaced, restored when it returns (by the
    /// handler's sigreturn, as on Linux).
    #[serde(default)]
    pub saved_sigmask: Option<u64>,
    /// Thread-directed signals not yet acted on.
    pub pending: u64,
    /// Their siginfo (`crate::siginfo`).
    #[serde(default)]
    pub queued: Vec<crate::siginfo::Queued>,
    #[serde(with = "crate::persist::pod")]
    pub altstack: StackT,
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    pub rseq: Option<(u64, u32)>,
    /// NUMA policy (mode with flags, node mask) set by set_mempolicy;
    /// `None`: MPOL_DEFAULT.
    #[serde(default)]
    pub mempolicy: Option<(u64, u64)>,
    /// Thread name (prctl PR_SET_NAME).
    pub comm: String,
    /// A retried syscall found its deadline passed: answer as a timeout.
    pub timed_out: bool,
    /// When it blocked (a sequence number: futex wakes are FIFO).
    pub blocked_seq: u64,
    /// Deadline of the syscall in progress, kept across its retries so
    /// that a retry does not restart the timeout.
    #[serde(with = "crate::persist::opt_instant")]
    pub syscall_deadline: Option<Instant>,
}

impl Thread {
    pub fn new(tid: u32) -> Thread {
        Thread {
            tid,
            state: ThreadState::Runnable(Resume::Continue),
            ctx: None,
            fs_base: 0,
            gs_base: 0,
            sigmask: 0,
            saved_sigmask: None,
            pending: 0,
            queued: Vec::new(),
            altstack: StackT {
                ss_sp: 0,
                ss_flags: 2, // SS_DISABLE
                pad: 0,
                ss_size: 0,
            },
            clear_child_tid: 0,
            robust_list: (0, 0),
            rseq: None,
            mempolicy: None,
            comm: String::new(),
            timed_out: false,
            blocked_seq: 0,
            syscall_deadline: None,
        }
    }

    pub fn is_runnable(&self) -> bool {
        matches!(self.state, ThreadState::Runnable(_))
    }
}
