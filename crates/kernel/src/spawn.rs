//! Processes the host starts inside a sandbox: envd's "start a command"
//! served by the kernel (DESIGN.md §6). The kernel creates the process
//! itself, as a kernel starts init: a fresh address space with the program
//! loaded, and descriptors 0, 1 and 2 on pipes whose far ends the host
//! holds. No guest agent takes part; the guest sees an ordinary process
//! whose parent is outside the sandbox (ppid 0), as envd's children have
//! envd for a parent.
//!
//! The host side (this module's `impl Kernel`) reads and writes those
//! pipes, reaps the process and signals it. The loading needs the vCPU's
//! initial FPU state, so `Sandbox::spawn` (in `sandbox/spawn.rs`) drives it.

use zeroboot_abi::flags::{O_RDONLY, O_WRONLY};
use zeroboot_abi::Errno;

use crate::fd::{FdTable, FileKind, OpenFile};
use crate::kernel::{Kernel, Pipe};
use crate::loader::LoadError;
use crate::syscalls::fs::PIPE_CAPACITY;
use crate::task::{Resume, ThreadState};
use crate::vfs::Device;

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The program: an absolute path, or a name looked up in `PATH` of
    /// `envp` (as execvp does).
    pub program: String,
    /// Its argv, argv[0] included.
    pub argv: Vec<Vec<u8>>,
    /// Its environment, `NAME=value` entries.
    pub envp: Vec<Vec<u8>>,
    /// Working directory (absolute, in the sandbox).
    pub cwd: String,
    /// Give it a stdin pipe the host writes (else /dev/null).
    pub stdin: bool,
    /// Run it on a new pseudo-terminal of this size (rows, columns)
    /// instead of pipes: descriptors 0, 1, 2 are its slave, and it leads
    /// the terminal's session and foreground group.
    pub pty: Option<(u16, u16)>,
    /// Who it runs as (root unless the host says otherwise).
    pub cred: crate::cred::Cred,
}

/// A started process and the host's ends of its standard descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spawned {
    pub pid: u32,
    pub io: SpawnedIo,
}

/// The host's ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SpawnedIo {
    /// Pipe ids (see `Kernel::host_read` and `Kernel::host_write`).
    Pipes {
        stdin: Option<u64>,
        stdout: u64,
        stderr: u64,
    },
    /// A pty id (see `Kernel::pty_input` and `Kernel::pty_output`).
    Pty(u64),
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("working directory {0}: {1}")]
    Cwd(String, Errno),
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("the sandbox has its maximum of {0} processes")]
    TooMany(usize),
    #[error("the sandbox has ended")]
    Ended,
    #[error("cannot start the process: {0}")]
    Errno(Errno),
    #[error(transparent)]
    Sandbox(#[from] Box<crate::sandbox::SandboxError>),
}

impl From<Errno> for SpawnError {
    fn from(e: Errno) -> SpawnError {
        SpawnError::Errno(e)
    }
}

impl Kernel {
    /// A pipe one end of which the host holds: the read end when
    /// `host_reads`, else the write end.
    fn host_pipe(&mut self, host_reads: bool) -> u64 {
        let id = self.next_pipe;
        self.next_pipe += 1;
        self.pipes.insert(
            id,
            Pipe {
                capacity: PIPE_CAPACITY,
                host_reader: host_reads,
                host_writer: !host_reads,
                ..Default::default()
            },
        );
        id
    }

    /// Descriptors 0, 1, 2 of spawned process `pid`, and the host's ends.
    pub(crate) fn spawn_fds(
        &mut self,
        pid: u32,
        stdin: bool,
        pty: Option<(u16, u16)>,
    ) -> Result<(FdTable, Spawned), Errno> {
        let mut fds = FdTable::new(self.fds.max_fds);
        if let Some((rows, cols)) = pty {
            let id = self.new_pty(rows, cols, pid);
            for fd in 0..3 {
                let f = OpenFile::new(
                    FileKind::Pty(id),
                    format!("/dev/pts/{}", id + 1),
                    zeroboot_abi::flags::O_RDWR,
                );
                fds.open_at(fd, f, false)?;
            }
            return Ok((
                fds,
                Spawned {
                    pid,
                    io: SpawnedIo::Pty(id),
                },
            ));
        }
        let stdin = if stdin {
            let id = self.host_pipe(false);
            let f = OpenFile::new(
                FileKind::Pipe { id, write: false },
                format!("pipe:[{id}]"),
                O_RDONLY,
            );
            fds.open_at(0, f, false)?;
            Some(id)
        } else {
            let f = OpenFile::new(FileKind::Device(Device::Null), "/dev/null", O_RDONLY);
            fds.open_at(0, f, false)?;
            None
        };
        let mut out = [0u64; 2];
        for (fd, id) in [1, 2].into_iter().zip(out.iter_mut()) {
            *id = self.host_pipe(true);
            let f = OpenFile::new(
                FileKind::Pipe {
                    id: *id,
                    write: true,
                },
                format!("pipe:[{id}]"),
                O_WRONLY,
            );
            fds.open_at(fd, f, false)?;
        }
        Ok((
            fds,
            Spawned {
                pid,
                io: SpawnedIo::Pipes {
                    stdin,
                    stdout: out[0],
                    stderr: out[1],
                },
            },
        ))
    }

    /// Take up to `max` bytes the guest wrote into host-read pipe `id`.
    pub fn host_read(&mut self, id: u64, max: usize) -> Vec<u8> {
        let Some(p) = self.pipes.get_mut(&id).filter(|p| p.host_reader) else {
            return Vec::new();
        };
        let n = max.min(p.buf.len());
        let data: Vec<u8> = p.take(n);
        if !data.is_empty() {
            // Writers blocked on a full pipe may go on.
            crate::sched::wake_retriers(self);
        }
        data
    }

    /// Whether host-read pipe `id` is drained and no guest descriptor can
    /// write to it any more (its stream has ended).
    pub fn host_read_done(&self, id: u64) -> bool {
        self.pipes.get(&id).is_none_or(|p| p.buf.is_empty()) && self.pipe_ends(id, true) == 0
    }

    /// Put bytes into host-written pipe `id`; returns how many fitted
    /// (the rest waits for the reader). EPIPE when no guest descriptor
    /// reads it any more.
    pub fn host_write(&mut self, id: u64, data: &[u8]) -> Result<usize, Errno> {
        if self.pipe_ends(id, false) == 0 {
            return Err(Errno::EPIPE);
        }
        let p = self
            .pipes
            .get_mut(&id)
            .filter(|p| p.host_writer)
            .ok_or(Errno::EBADF)?;
        let n = p.capacity.saturating_sub(p.buf.len()).min(data.len());
        p.put(&data[..n]);
        if n > 0 {
            crate::sched::wake_retriers(self);
        }
        Ok(n)
    }

    /// The host lets go of its end of pipe `id`: readers see end of file,
    /// writers EPIPE.
    pub fn host_close(&mut self, id: u64) {
        if let Some(p) = self.pipes.get_mut(&id) {
            p.host_reader = false;
            p.host_writer = false;
        }
        self.gc_pipes();
        crate::sched::wake_retriers(self);
    }

    /// The wait status of spawned process `pid` once it has exited (it is
    /// reaped: the host was its parent).
    pub fn reap_spawned(&mut self, pid: u32) -> Option<i32> {
        match self.zombies.get(&pid) {
            Some(z) if z.ppid == 0 => self.zombies.remove(&pid).map(|z| z.status),
            _ => None,
        }
    }

    /// Whether process `pid` is alive (not yet exited).
    pub fn process_alive(&self, pid: u32) -> bool {
        (self.proc.pid == pid && self.proc.dead.is_none()) || self.others.contains_key(&pid)
    }

    /// Send `sig` to process `pid` from outside the sandbox (as the
    /// parent's kill(2) would). ESRCH when it is not alive.
    pub fn signal_process(&mut self, pid: u32, sig: u32) -> Result<(), Errno> {
        if !(1..=64).contains(&sig) {
            return Err(Errno::EINVAL);
        }
        if !self.process_alive(pid) {
            return Err(Errno::ESRCH);
        }
        crate::procs::post_signal_process(self, pid, sig);
        if pid == self.proc.pid {
            // Raised from outside: a thread blocked in a syscall must wake
            // to act on it (a process's own kill finds its caller awake).
            let bit = 1u64 << (sig - 1);
            if let Some(t) = self.threads.values_mut().find(|t| {
                t.sigmask & bit == 0
                    && matches!(t.state, ThreadState::Blocked(ref w) if w.interruptible())
            }) {
                t.state = ThreadState::Runnable(Resume::Interrupted);
            }
        }
        Ok(())
    }
}
