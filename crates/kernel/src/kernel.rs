//! The VMM-side state of one sandbox: everything a Linux kernel would keep
//! for the process, cloned wholesale when a template is forked.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use zeroboot_abi::Errno;

use crate::fd::{FdTable, FileKind};
use crate::mm::AddressSpace;
use crate::syscalls::SyscallStats;
use crate::task::Task;
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
}

impl Sink {
    pub fn capture(cap: usize) -> Sink {
        Sink::Capture(Capture {
            data: Vec::new(),
            cap,
            dropped: 0,
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
#[derive(Debug, Clone)]
pub enum Source {
    /// Nothing: reads return end of file.
    Empty,
    /// The VMM process's stdin (the `run` command).
    Host,
    /// Fixed bytes.
    Data(Arc<Vec<u8>>, usize),
}

/// A pipe's buffer.
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    pub buf: VecDeque<u8>,
    pub capacity: usize,
}

/// Limits of one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Guest memory a program may use (bytes).
    pub memory: u64,
    /// Bytes the overlay may hold.
    pub disk: u64,
    /// Most open descriptors.
    pub fds: u64,
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

/// Why the process stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The sandbox's kernel state.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub mm: AddressSpace,
    pub fds: FdTable,
    pub vfs: Vfs,
    pub task: Task,
    pub pipes: BTreeMap<u64, Pipe>,
    pub next_pipe: u64,
    pub stdout: Sink,
    pub stderr: Sink,
    pub stdin: Source,
    pub stats: SyscallStats,
    pub limits: Limits,
    pub exit: Option<Exit>,
    /// Set by a syscall that cannot complete yet (what it waits for).
    pub blocked: Option<&'static str>,
    /// Host thread CPU time when this sandbox started running (ns).
    pub cpu_base_ns: u64,
    /// CPU time accumulated before (by the template), ns.
    pub cpu_carried_ns: u64,
    /// Wall-clock start (CLOCK_MONOTONIC ns) for uptime.
    pub start_mono_ns: u64,
    /// Hostname (uname nodename).
    pub hostname: String,
    /// When the current run must stop (sleeps end early at it).
    pub deadline: Option<std::time::Instant>,
    /// The agent's control channel.
    pub control: crate::control::Channel,
}

impl Kernel {
    /// Number of descriptors (anywhere) referring to pipe `id`'s `write` end.
    pub fn pipe_ends(&self, id: u64, write: bool) -> usize {
        self.fds
            .descriptions()
            .filter(
                |f| matches!(f.kind, FileKind::Pipe { id: i, write: w } if i == id && w == write),
            )
            .count()
    }

    /// Drop pipes no descriptor refers to.
    pub fn gc_pipes(&mut self) {
        let live: std::collections::BTreeSet<u64> = self
            .fds
            .descriptions()
            .filter_map(|f| match f.kind {
                FileKind::Pipe { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        self.pipes.retain(|id, _| live.contains(id));
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
        self.0.task.pid
    }
    fn exe(&self) -> String {
        self.0.task.exe.clone()
    }
    fn cwd(&self) -> String {
        self.0.task.cwd.clone()
    }
    fn fd_path(&self, fd: i32) -> Option<String> {
        let f = self.0.fds.get(fd).ok()?;
        Some(match &f.kind {
            FileKind::Pipe { id, .. } => format!("pipe:[{id}]"),
            FileKind::Console(_) => "/dev/pts/0".to_string(),
            FileKind::Control => "anon_inode:[zeroboot-control]".to_string(),
            _ => f.path.clone(),
        })
    }
    fn fds(&self) -> Vec<i32> {
        self.0.fds.fds()
    }
}
