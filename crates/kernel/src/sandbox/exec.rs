//! execve(2): replace the current process's program. Served by the run
//! loop (like rt_sigreturn) because it resets the vCPU state.

use zeroboot_abi::flags::{AT_EMPTY_PATH, AT_FDCWD};
use zeroboot_abi::Errno;
use zeroboot_vmm::Host;

use super::{Sandbox, SandboxError};
use crate::loader::{self, CpuInfo, LoadError};
use crate::syscalls::ExecArgs;
use crate::task::{SIG_DFL, SIG_IGN};
use crate::vfs::PATH_MAX;

/// Most argv + envp entries and bytes accepted.
const MAX_ARGS: usize = 1 << 16;
const MAX_ARG_LEN: usize = 128 << 10;

fn errno_of(e: &LoadError) -> Errno {
    match e {
        LoadError::NotFound(_) => Errno::ENOENT,
        LoadError::Path(_, e) | LoadError::Memory(_, e) => *e,
        LoadError::NotExecutable(_) => Errno::EACCES,
        LoadError::BadElf(..) | LoadError::Unsupported(..) => Errno::ENOEXEC,
    }
}

impl Sandbox {
    /// Serve execve/execveat: on success the process continues in the new
    /// program; on failure the syscall returns the error.
    pub(super) fn execve(&mut self, a: ExecArgs) -> Result<(), SandboxError> {
        let r = self.try_execve(a.dirfd, a.path, a.argv, a.envp, a.flags)?;
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.finish_syscall(e.as_return()),
        }
    }

    fn try_execve(
        &mut self,
        dirfd: i32,
        path_va: u64,
        argv_va: u64,
        envp_va: u64,
        flags: u64,
    ) -> Result<Result<(), Errno>, SandboxError> {
        if flags & AT_EMPTY_PATH != 0 {
            // Logged once per sandbox: a loop of them must not flood the
            // host's log.
            self.k.stats.fexecve += 1;
            if self.k.stats.fexecve == 1 {
                tracing::warn!("execveat with AT_EMPTY_PATH (fexecve) is unsupported: ENOSYS");
            }
            return Ok(Err(Errno::ENOSYS));
        }
        let mem = &self.mem;
        type Args = (String, Vec<Vec<u8>>, Vec<Vec<u8>>);
        let args = (|| -> Result<Args, Errno> {
            let p = self.k.mm.read_cstr(mem, path_va, PATH_MAX)?;
            let p = crate::vfs::name::from_bytes(&p);
            let argv = self
                .k
                .mm
                .read_cstr_array(mem, argv_va, MAX_ARGS, MAX_ARG_LEN)?;
            let envp = self
                .k
                .mm
                .read_cstr_array(mem, envp_va, MAX_ARGS, MAX_ARG_LEN)?;
            Ok((p, argv, envp))
        })();
        let (mut path, argv, envp) = match args {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        if path.is_empty() {
            return Ok(Err(Errno::ENOENT));
        }
        if !path.starts_with('/') && dirfd != AT_FDCWD {
            match self.k.fds.get(dirfd) {
                Ok(f) => path = format!("{}/{}", f.path.trim_end_matches('/'), path),
                Err(e) => return Ok(Err(e)),
            }
        }
        let (path, argv) = match loader::interpret_script(&self.k, &path, argv) {
            Ok(x) => x,
            Err(e) => return Ok(Err(errno_of(&e))),
        };
        let mut layout = match self.k.mm.fresh_layout(&self.mem) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        // Load into the new layout; `layout` holds the old one meanwhile.
        self.k.mm.swap_layout(&mut layout);
        let saved = (
            self.k.proc.exe.clone(),
            self.k.proc.argv.clone(),
            self.k.proc.envp.clone(),
        );
        let mut random = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
        let cpu = CpuInfo {
            hwcap: Host::get()?.hwcap(),
        };
        let entry = match loader::load(&mut self.k, &self.mem, &path, &argv, &envp, cpu, random) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "execve failed");
                // The new layout never ran: nothing of it is shadowed.
                self.k.mm.release(&self.mem, false);
                self.k.mm.swap_layout(&mut layout);
                (self.k.proc.exe, self.k.proc.argv, self.k.proc.envp) = saved;
                return Ok(Err(errno_of(&e)));
            }
        };
        // The point of no return: the old image is gone.
        if let Some((ppid, ptid)) = self.k.proc.vfork_parent.take() {
            crate::procs::release_vfork_parent(&mut self.k, ppid, ptid, Some(&mut layout));
        } else {
            self.k.mm.swap_layout(&mut layout);
            self.k.mm.release(&self.mem, true);
            self.k.mm.swap_layout(&mut layout);
        }
        for fd in self.k.fds.fds() {
            if self.k.fds.cloexec(fd).unwrap_or(false) {
                let _ = self.k.fds.close(fd);
            }
        }
        self.k.gc_pipes();
        for a in self.k.proc.sigactions.iter_mut() {
            if a.handler != SIG_IGN {
                a.handler = SIG_DFL;
                a.flags = 0;
                a.restorer = 0;
                a.mask = 0;
            }
        }
        // POSIX timers do not survive execve (interval timers do).
        self.k.proc.timers.posix.clear();
        self.k.proc.execed = true;
        // Set-id bits are not honoured (a nosuid mount): the ids stay.
        self.k.proc.cred.on_exec();
        // Only the calling thread survives, as the process's leader.
        let pid = self.k.proc.pid;
        let mut t = self
            .k
            .threads
            .remove(&self.k.current)
            .unwrap_or_else(|| crate::task::Thread::new(pid));
        self.k.threads.clear();
        t.tid = pid;
        t.fs_base = 0;
        t.gs_base = 0;
        t.clear_child_tid = 0;
        t.robust_list = (0, 0);
        t.rseq = None;
        t.altstack.ss_flags = 2;
        t.comm = path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(15)
            .collect();
        t.state = crate::task::ThreadState::Runnable(crate::task::Resume::Continue);
        t.syscall_deadline = None;
        self.k.threads.insert(pid, t);
        self.k.current = pid;
        self.vcpu.set_cr3(self.k.mm.pt.root());
        self.vcpu.set_fs_base(0);
        self.vcpu.set_gs_base(0);
        self.vcpu.set_xsave_bytes(&self.initial_xsave)?;
        let r = self.vcpu.regs_mut();
        *r = Default::default();
        r.rip = entry.rip;
        r.rsp = entry.rsp;
        r.rflags = 0x202;
        self.vcpu.resume_user();
        crate::sched::wake_retriers(&mut self.k);
        Ok(Ok(()))
    }
}
