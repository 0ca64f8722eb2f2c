//! Process and thread calls, one file per family:
//!
//! | file | calls |
//! |---|---|
//! | `fork.rs` | clone, clone3, fork, vfork, execve, execveat, exit, exit_group |
//! | `wait.rs` | wait4, waitid |
//! | `pidfd.rs` | pidfd_open, pidfd_send_signal |
//! | `futex.rs` | futex |
//! | `identity.rs` | getpid, gettid, getppid, the uid/gid calls, process groups and sessions, uname, sethostname, capget, personality |
//! | `thread.rs` | set_tid_address, set/get_robust_list, rseq, arch_prctl, prctl |
//! | `resources.rs` | rlimits (prlimit64, getrlimit, setrlimit), sysinfo, sched_*, priorities, getrusage, times, getcpu |

pub(crate) mod fork;
pub(crate) mod futex;
pub(crate) mod identity;
pub(crate) mod pidfd;
pub(crate) mod resources;
pub(crate) mod thread;
pub(crate) mod wait;

pub use fork::MAX_PROCESSES;
