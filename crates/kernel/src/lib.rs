//! zeroboot's sandbox kernel: the Linux system calls, memory management,
//! files and signals of a program running in ring 3 of its own VM, served
//! by safe Rust in the VMM (DESIGN.md §2: the kernel lives in the VMM).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod checkpoint;
pub mod control;
pub mod cred;
pub mod fd;
pub(crate) mod file;
pub mod fork;
pub mod hardening;
pub mod kernel;
pub mod loader;
pub mod mm;
pub mod net;
pub mod persist;
pub mod proc;
pub mod procs;
pub mod sandbox;
pub mod sched;
pub mod shm;
pub mod siginfo;
pub mod snapshot;
pub mod spawn;
pub mod statefile;
pub mod syscalls;
pub mod task;
pub mod timers;
pub mod tty;
pub mod vdso;
pub mod vfs;
pub mod watchdog;

pub use fork::Frozen;
pub use kernel::{Exit, Kernel, LimitHits, Limits, Sink, Source, Tee};
pub use sandbox::{Outcome, Sandbox, SandboxConfig, SandboxError};
pub use snapshot::{ForkOptions, Snapshot, SnapshotError};
