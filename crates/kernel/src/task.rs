//! Per-process state that is not memory or files: identity, signal
//! dispositions, limits, and the TLS and thread-library registrations.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::{KernelSigaction, Rlimit, StackT};
use zerocopy::FromZeros;

/// Signal handler value meaning "default action".
pub const SIG_DFL: u64 = 0;
/// Signal handler value meaning "ignore".
pub const SIG_IGN: u64 = 1;

#[derive(Debug, Clone)]
pub struct Task {
    pub pid: u32,
    pub ppid: u32,
    pub cwd: String,
    pub umask: u32,
    /// Path of the running executable.
    pub exe: String,
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    /// Dispositions of signals 1..=64 (index = signal - 1).
    pub sigactions: Vec<KernelSigaction>,
    pub sigmask: u64,
    /// Signals raised and not yet acted on (bit = signal - 1).
    pub pending: u64,
    pub altstack: StackT,
    pub rlimits: Vec<Rlimit>,
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    pub rseq: Option<(u64, u32)>,
    pub fs_base: u64,
    pub gs_base: u64,
    /// Process name (prctl PR_SET_NAME).
    pub comm: String,
}

impl Task {
    pub fn new(pid: u32) -> Task {
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
        Task {
            pid,
            ppid: pid.saturating_sub(1).max(1),
            cwd: "/".into(),
            umask: 0o022,
            exe: String::new(),
            argv: Vec::new(),
            envp: Vec::new(),
            sigactions: vec![KernelSigaction::new_zeroed(); 64],
            sigmask: 0,
            pending: 0,
            altstack: StackT {
                ss_sp: 0,
                ss_flags: 2, // SS_DISABLE
                pad: 0,
                ss_size: 0,
            },
            rlimits,
            clear_child_tid: 0,
            robust_list: (0, 0),
            rseq: None,
            fs_base: 0,
            gs_base: 0,
            comm: String::new(),
        }
    }

    /// Whether `sig` (1-based) is ignored.
    pub fn ignores(&self, sig: u32) -> bool {
        self.sigactions
            .get(sig as usize - 1)
            .is_some_and(|a| a.handler == SIG_IGN)
    }
}
