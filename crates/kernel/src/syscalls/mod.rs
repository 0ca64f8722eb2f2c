//! The Linux system call table, as data (gVisor's model): one entry per
//! number with its name, handler, support level and a note. Handlers are
//! grouped one file per family. A number without a handler returns ENOSYS
//! and is counted and logged by name.

pub mod events;
pub(crate) mod fs;
mod mm;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod signal;
mod time;
mod timers;

pub(crate) use time::kernel_clock_ns;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use zeroboot_abi::{sysno, Errno};
use zeroboot_vmm::GuestMemory;

use crate::kernel::{Block, Kernel};

/// What a handler gets: the kernel state and the guest's memory.
pub struct Ctx<'a> {
    pub k: &'a mut Kernel,
    pub mem: &'a GuestMemory,
    /// The calling thread's registers at the syscall.
    pub regs: &'a kvm_bindings::kvm_regs,
}

/// A syscall's six raw arguments, read through typed accessors (gVisor's
/// `SyscallArguments`). Every value is guest-controlled: a pointer is only
/// an address to hand to the checked `mm` accessors, a length is clamped
/// or checked before it sizes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args(pub [u64; 6]);

impl Args {
    /// The registers of a syscall, in the x86-64 calling order.
    pub fn from_regs(r: &kvm_bindings::kvm_regs) -> Args {
        Args([r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9])
    }

    /// Argument `i` as the raw 64-bit register.
    pub fn u64(&self, i: usize) -> u64 {
        self.0[i]
    }

    /// Argument `i` as a signed 64-bit value (offsets, `loff_t`).
    pub fn i64(&self, i: usize) -> i64 {
        self.0[i] as i64
    }

    /// Argument `i` as a C `int` (Linux reads the low 32 bits).
    pub fn int(&self, i: usize) -> i32 {
        self.0[i] as i32
    }

    /// Argument `i` as a C `unsigned int` (modes, flags, ids).
    pub fn uint(&self, i: usize) -> u32 {
        self.0[i] as u32
    }

    /// Argument `i` as a descriptor number.
    pub fn fd(&self, i: usize) -> i32 {
        self.0[i] as i32
    }

    /// Argument `i` as a `size_t`.
    pub fn usize(&self, i: usize) -> usize {
        self.0[i] as usize
    }

    /// Argument `i` as a guest virtual address (untrusted: only the
    /// checked accessors of `mm` dereference it).
    pub fn ptr(&self, i: usize) -> u64 {
        self.0[i]
    }
}

/// Why a syscall did not return a value: an error for the guest, or a
/// control transfer only the run loop can make (gVisor's
/// `SyscallControl`).
#[derive(Debug, Clone, PartialEq)]
pub enum SysError {
    /// Fail with this errno.
    Errno(Errno),
    /// The call cannot finish yet: the thread blocks (or the process
    /// parks) and the call runs again when it is woken.
    Block(Block),
    /// rt_sigreturn: restore the context saved in the signal frame.
    Sigreturn,
    /// execve/execveat: replace the process's program, which resets the
    /// vCPU, so the run loop loads it.
    Exec(ExecArgs),
}

impl From<Errno> for SysError {
    fn from(e: Errno) -> SysError {
        SysError::Errno(e)
    }
}

/// What execve/execveat asked for, undecoded (guest pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecArgs {
    pub dirfd: i32,
    pub path: u64,
    pub argv: u64,
    pub envp: u64,
    pub flags: u64,
}

/// A handler's result: the value for RAX, or why there is none.
pub type SysResult = Result<u64, SysError>;

type Handler = fn(&mut Ctx, Args) -> SysResult;

/// How completely a syscall is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Full,
    Partial,
    /// Returns a fixed error by design (e.g. no network).
    Denied,
    Unimplemented,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Full => "full",
            Support::Partial => "partial",
            Support::Denied => "denied",
            Support::Unimplemented => "unimplemented",
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Entry {
    pub nr: u64,
    pub name: &'static str,
    pub handler: Option<Handler>,
    pub support: Support,
    pub note: &'static str,
}

/// A handler with its support level and note.
type Row = (Option<Handler>, Support, &'static str);

const fn full(h: Handler) -> Row {
    (Some(h), Support::Full, "")
}

const fn partial(h: Handler, note: &'static str) -> Row {
    (Some(h), Support::Partial, note)
}

const fn denied(h: Handler, note: &'static str) -> Row {
    (Some(h), Support::Denied, note)
}

const ITIMER_NOTE: &str =
    "ITIMER_REAL exact; ITIMER_VIRTUAL and ITIMER_PROF count the sandbox's CPU time \
     (all its processes, VMM work included), checked at the scheduler's ticks";

const ONE_NODE: &str =
    "one NUMA node (0), as a one-node machine: policies naming other nodes are EINVAL";

const SPLICE_NOTE: &str =
    "Linux's rules (a pipe at one end, EINVAL otherwise); the VMM copies the bytes, no page moving";

const INOTIFY_NOTE: &str = "create, delete, modify, attrib, close_write, moves and self events; \
     no IN_ACCESS/IN_OPEN/IN_CLOSE_NOWRITE, no IN_ISDIR flag";

const NO_DEV_CHOWN: &str =
    "files and directories of the root file system; /dev, /proc and /sys stay root's (EPERM)";

const NO_XATTRS: &str = "no extended attributes: EOPNOTSUPP, as a file system without them";

/// The handlers, by number.
fn handlers() -> Vec<(u64, Row)> {
    use sysno::*;
    vec![
        // fs
        (READ, full(fs::rw::read)),
        (WRITE, full(fs::rw::write)),
        (READV, full(fs::rw::readv)),
        (WRITEV, full(fs::rw::writev)),
        (PREAD64, full(fs::rw::pread64)),
        (PWRITE64, full(fs::rw::pwrite64)),
        (PREADV, full(fs::rw::preadv)),
        (PWRITEV, full(fs::rw::pwritev)),
        (
            PREADV2,
            partial(fs::rw::preadv2, "RWF_HIPRI/DSYNC/SYNC; RWF_NOWAIT is EOPNOTSUPP"),
        ),
        (
            PWRITEV2,
            partial(fs::rw::pwritev2, "RWF_HIPRI/DSYNC/SYNC; RWF_NOWAIT and RWF_APPEND are EOPNOTSUPP"),
        ),
        (OPEN, full(fs::open::open)),
        (
            OPENAT,
            partial(fs::open::openat, "O_TMPFILE unsupported (EOPNOTSUPP)"),
        ),
        (CREAT, full(fs::open::creat)),
        (CLOSE, full(fs::fcntl::close)),
        (CLOSE_RANGE, full(fs::fcntl::close_range)),
        (FSTAT, full(fs::stat::fstat)),
        (STAT, full(fs::stat::stat)),
        (LSTAT, full(fs::stat::lstat)),
        (NEWFSTATAT, full(fs::stat::newfstatat)),
        (STATX, full(fs::stat::statx)),
        (STATFS, full(fs::stat::statfs)),
        (FSTATFS, full(fs::stat::fstatfs)),
        (LSEEK, full(fs::rw::lseek)),
        (GETDENTS64, full(fs::dir::getdents64)),
        (GETDENTS, partial(fs::dir::getdents, "legacy 32-bit dirents")),
        (READLINK, full(fs::namei::readlink)),
        (READLINKAT, full(fs::namei::readlinkat)),
        (ACCESS, full(fs::stat::access)),
        (FACCESSAT, full(fs::stat::faccessat)),
        (FACCESSAT2, full(fs::stat::faccessat2)),
        (GETCWD, full(fs::dir::getcwd)),
        (CHDIR, full(fs::dir::chdir)),
        (FCHDIR, full(fs::dir::fchdir)),
        (DUP, full(fs::fcntl::dup)),
        (DUP2, full(fs::fcntl::dup2)),
        (DUP3, full(fs::fcntl::dup3)),
        (
            FCNTL,
            partial(
                fs::fcntl::fcntl,
                "record locks (F_SETLK/F_SETLKW/F_GETLK, F_OFD_*) between the sandbox's processes; \
                 F_NOTIFY (dnotify, but DN_ACCESS is never reported) and F_SETSIG; \
                 no leases, no seals (EINVAL)",
            ),
        ),
        (
            IOCTL,
            partial(
                fs::fcntl::ioctl,
                "TCGETS/TIOCGWINSZ answer ENOTTY (no terminal); FIONREAD, FIONBIO, FIOCLEX",
            ),
        ),
        (PIPE, full(fs::open::pipe)),
        (PIPE2, full(fs::open::pipe2)),
        (MKDIR, full(fs::dir::mkdir)),
        (MKDIRAT, full(fs::dir::mkdirat)),
        (UNLINK, full(fs::namei::unlink)),
        (UNLINKAT, full(fs::namei::unlinkat)),
        (RMDIR, full(fs::namei::rmdir)),
        (
            RENAME,
            partial(
                fs::namei::rename,
                "directories of the image cannot be moved (EXDEV)",
            ),
        ),
        (
            RENAMEAT,
            partial(
                fs::namei::renameat,
                "directories of the image cannot be moved (EXDEV)",
            ),
        ),
        (RENAMEAT2, partial(fs::namei::renameat2, "RENAME_NOREPLACE only")),
        (SYMLINK, full(fs::namei::symlink)),
        (SYMLINKAT, full(fs::namei::symlinkat)),
        (LINK, partial(fs::namei::link, "regular files only")),
        (LINKAT, partial(fs::namei::linkat, "regular files only")),
        (FTRUNCATE, full(fs::attr::ftruncate)),
        (TRUNCATE, full(fs::attr::truncate)),
        (FSYNC, full(fs::attr::fsync)),
        (FDATASYNC, full(fs::attr::fsync)),
        (SYNC, full(fs::attr::sync)),
        (FLOCK, full(fs::lock::flock)),
        (
            MKNOD,
            partial(
                fs::namei::mknod,
                "regular files, FIFOs and socket nodes; device nodes EPERM (no CAP_MKNOD)",
            ),
        ),
        (
            MKNODAT,
            partial(
                fs::namei::mknodat,
                "regular files, FIFOs and socket nodes; device nodes EPERM (no CAP_MKNOD)",
            ),
        ),
        (SPLICE, partial(fs::splice::splice, SPLICE_NOTE)),
        (TEE, partial(fs::splice::tee, SPLICE_NOTE)),
        (VMSPLICE, partial(fs::splice::vmsplice, SPLICE_NOTE)),
        (INOTIFY_INIT, partial(fs::notify::inotify_init, INOTIFY_NOTE)),
        (INOTIFY_INIT1, partial(fs::notify::inotify_init1, INOTIFY_NOTE)),
        (
            INOTIFY_ADD_WATCH,
            partial(fs::notify::inotify_add_watch, INOTIFY_NOTE),
        ),
        (INOTIFY_RM_WATCH, full(fs::notify::inotify_rm_watch)),
        (
            CHROOT,
            denied(
                fs::dir::chroot,
                "one root per sandbox: chroot(\"/\") succeeds, any other EPERM (no CAP_SYS_CHROOT)",
            ),
        ),
        (
            CHMOD,
            partial(fs::attr::chmod, "overlay files; image files are copied up"),
        ),
        (FCHMOD, partial(fs::attr::fchmod, "overlay files only")),
        (SETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (LSETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (FSETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (GETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (LGETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (FGETXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (LISTXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (LLISTXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (FLISTXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (REMOVEXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (LREMOVEXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (FREMOVEXATTR, denied(fs::attr::xattr, NO_XATTRS)),
        (
            FCHMODAT,
            partial(fs::attr::fchmodat, "overlay files; image files are copied up"),
        ),
        (CHOWN, partial(fs::attr::chown, NO_DEV_CHOWN)),
        (FCHOWN, partial(fs::attr::fchown, NO_DEV_CHOWN)),
        (LCHOWN, partial(fs::attr::lchown, NO_DEV_CHOWN)),
        (FCHOWNAT, partial(fs::attr::fchownat, NO_DEV_CHOWN)),
        (
            UTIMENSAT,
            partial(fs::attr::utimensat, "sets mtime of overlay files"),
        ),
        (UMASK, full(fs::attr::umask)),
        (
            POLL,
            partial(
                events::poll,
                "files, pipes, eventfd, timerfd, epoll and the console",
            ),
        ),
        (
            PPOLL,
            partial(
                events::ppoll,
                "files, pipes, eventfd, timerfd, epoll and the console",
            ),
        ),
        (
            SELECT,
            partial(
                events::select,
                "files, pipes, eventfd, timerfd, epoll and the console",
            ),
        ),
        (
            PSELECT6,
            partial(
                events::pselect6,
                "files, pipes, eventfd, timerfd, epoll and the console",
            ),
        ),
        (SENDFILE, full(fs::rw::sendfile)),
        (COPY_FILE_RANGE, full(fs::rw::copy_file_range)),
        (FADVISE64, full(fs::attr::fadvise64)),
        (FALLOCATE, partial(fs::attr::fallocate, "mode 0 only")),
        (MEMFD_CREATE, full(fs::open::memfd_create)),
        // mm
        (BRK, full(mm::brk)),
        (
            MMAP,
            partial(
                mm::mmap,
                "MAP_SHARED of anonymous memory, /dev/zero and overlay files (/tmp, /dev/shm) is shared across processes; image files map shared as a read-only copy; other devices ENODEV; no SIGBUS past a file's end",
            ),
        ),
        (MUNMAP, full(mm::munmap)),
        (MPROTECT, full(mm::mprotect)),
        (MREMAP, partial(mm::mremap, "MREMAP_DONTUNMAP unsupported")),
        (
            MADVISE,
            partial(
                mm::madvise,
                "DONTNEED/FREE honoured (shared memory keeps its data, as Linux); other advice accepted as hints",
            ),
        ),
        (MSYNC, full(mm::msync)),
        (MINCORE, full(mm::mincore)),
        (MLOCK, full(mm::mlock)),
        (MUNLOCK, full(mm::mlock)),
        (MLOCKALL, full(mm::mlock)),
        (MUNLOCKALL, full(mm::mlock)),
        (SET_MEMPOLICY, partial(mm::set_mempolicy, ONE_NODE)),
        (
            MBIND,
            partial(
                mm::mbind,
                "one NUMA node (0): policies naming it are checked and accepted, not recorded",
            ),
        ),
        (
            GET_MEMPOLICY,
            partial(
                mm::get_mempolicy,
                "one NUMA node (0); a range reports MPOL_DEFAULT (mbind is not recorded)",
            ),
        ),
        // process
        (EXIT, full(process::fork::exit)),
        (EXIT_GROUP, full(process::fork::exit_group)),
        (GETPID, full(process::identity::getpid)),
        (GETTID, full(process::identity::gettid)),
        (GETPPID, full(process::identity::getppid)),
        (GETUID, full(process::identity::getuid)),
        (GETEUID, full(process::identity::geteuid)),
        (GETGID, full(process::identity::getgid)),
        (GETEGID, full(process::identity::getegid)),
        (GETRESUID, full(process::identity::getresuid)),
        (GETRESGID, full(process::identity::getresgid)),
        (GETGROUPS, full(process::identity::getgroups)),
        (SETGROUPS, full(process::identity::setgroups)),
        (SETUID, full(process::identity::setuid)),
        (SETGID, full(process::identity::setgid)),
        (SETREUID, full(process::identity::setreuid)),
        (SETREGID, full(process::identity::setregid)),
        (SETRESUID, full(process::identity::setresuid)),
        (SETRESGID, full(process::identity::setresgid)),
        (SETFSUID, full(process::identity::setfsuid)),
        (SETFSGID, full(process::identity::setfsgid)),
        (GETPGRP, full(process::identity::getpgrp)),
        (GETPGID, full(process::identity::getpgid)),
        (
            GETSID,
            partial(process::identity::getsid, "live processes (a zombie's: ESRCH)"),
        ),
        (SETPGID, full(process::identity::setpgid)),
        (
            SETSID,
            partial(
                process::identity::setsid,
                "no controlling terminals: the new session simply has none",
            ),
        ),
        (SET_TID_ADDRESS, full(process::thread::set_tid_address)),
        (SET_ROBUST_LIST, full(process::thread::set_robust_list)),
        (GET_ROBUST_LIST, full(process::thread::get_robust_list)),
        (
            RSEQ,
            partial(process::thread::rseq, "one CPU, no preemption: cpu_id is always 0"),
        ),
        (
            ARCH_PRCTL,
            partial(process::thread::arch_prctl, "ARCH_SET/GET_FS/GS"),
        ),
        (
            PRCTL,
            partial(
                process::thread::prctl,
                "PR_SET/GET_NAME, PR_GET/SET_DUMPABLE, PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS",
            ),
        ),
        (UNAME, full(process::identity::uname)),
        (SETHOSTNAME, full(process::identity::sethostname)),
        (PRLIMIT64, full(process::resources::prlimit64)),
        (GETRLIMIT, full(process::resources::getrlimit)),
        (SETRLIMIT, full(process::resources::setrlimit)),
        (SYSINFO, full(process::resources::sysinfo)),
        (SCHED_GETAFFINITY, full(process::resources::sched_getaffinity)),
        (SCHED_SETAFFINITY, full(process::resources::sched_setaffinity)),
        (SCHED_YIELD, full(process::resources::sched_yield)),
        (SCHED_GETSCHEDULER, full(process::resources::sched_getscheduler)),
        (SCHED_GETPARAM, full(process::resources::sched_getparam)),
        (GETPRIORITY, full(process::resources::getpriority)),
        (
            SETPRIORITY,
            partial(
                process::resources::setpriority,
                "the nice value is kept and reported, not used to weigh processes",
            ),
        ),
        (
            SCHED_SETSCHEDULER,
            partial(
                process::resources::sched_setscheduler,
                "SCHED_OTHER, SCHED_BATCH and SCHED_IDLE are kept and reported; SCHED_FIFO and SCHED_RR are EPERM",
            ),
        ),
        (SCHED_SETPARAM, full(process::resources::sched_setparam)),
        (SCHED_GET_PRIORITY_MAX, full(process::resources::sched_get_priority_max)),
        (SCHED_GET_PRIORITY_MIN, full(process::resources::sched_get_priority_min)),
        (SCHED_RR_GET_INTERVAL, full(process::resources::sched_rr_get_interval)),
        (GETRUSAGE, full(process::resources::getrusage)),
        (TIMES, full(process::resources::times)),
        (GETCPU, full(process::resources::getcpu)),
        (CAPGET, full(process::identity::capget)),
        (PERSONALITY, partial(process::identity::personality, "only PER_LINUX")),
        (
            CLONE,
            partial(
                process::fork::clone,
                "threads, fork and vfork, CLONE_PIDFD; no namespaces, no shared fd tables between processes",
            ),
        ),
        (
            CLONE3,
            denied(process::fork::clone3, "glibc falls back to clone (ENOSYS)"),
        ),
        (
            FORK,
            partial(
                process::fork::fork,
                "the child gets a copy of every populated page",
            ),
        ),
        (VFORK, full(process::fork::vfork)),
        (EXECVE, full(process::fork::execve)),
        (
            EXECVEAT,
            partial(
                process::fork::execveat,
                "paths only; AT_EMPTY_PATH (fexecve) unsupported",
            ),
        ),
        (
            WAIT4,
            partial(
                process::wait::wait4,
                "exited children only (no stop/continue reports)",
            ),
        ),
        (
            WAITID,
            partial(
                process::wait::waitid,
                "exited children only (no stop/continue reports); P_ALL, P_PID, P_PGID and P_PIDFD",
            ),
        ),
        (PIDFD_OPEN, full(process::pidfd::pidfd_open)),
        (
            PIDFD_SEND_SIGNAL,
            partial(
                process::pidfd::pidfd_send_signal,
                "processes of the sandbox; a caller-supplied siginfo is queued as rt_sigqueueinfo's",
            ),
        ),
        (
            FUTEX,
            partial(
                process::futex::futex,
                "WAIT/WAKE/REQUEUE/WAKE_OP and bitsets, across processes in shared memory; no PI futexes",
            ),
        ),
        // signals
        (RT_SIGACTION, full(signal::rt_sigaction)),
        (RT_SIGRETURN, full(signal::rt_sigreturn)),
        (RT_SIGPROCMASK, full(signal::rt_sigprocmask)),
        (RT_SIGPENDING, full(signal::rt_sigpending)),
        (SIGALTSTACK, full(signal::sigaltstack)),
        (PAUSE, full(signal::pause)),
        (RT_SIGSUSPEND, full(signal::rt_sigsuspend)),
        (
            RT_SIGTIMEDWAIT,
            partial(
                signal::rt_sigtimedwait,
                "siginfo of kill, tkill, sigqueue and pidfd_send_signal senders; signals the kernel raises itself (timers, SIGCHLD, SIGPIPE) report SI_TKILL and the process's pid",
            ),
        ),
        (
            KILL,
            partial(
                signal::kill,
                "processes and groups of the sandbox; stop signals are ignored (no job control)",
            ),
        ),
        (
            TKILL,
            partial(
                signal::tkill,
                "threads of the calling process only; stop signals are ignored",
            ),
        ),
        (
            TGKILL,
            partial(
                signal::tgkill,
                "threads of the calling process only (ESRCH otherwise); stop signals are ignored",
            ),
        ),
        (
            RT_SIGQUEUEINFO,
            partial(
                signal::rt_sigqueueinfo,
                "processes of the sandbox; real-time signals queue (at most 4096), standard ones coalesce",
            ),
        ),
        (
            RT_TGSIGQUEUEINFO,
            partial(
                signal::rt_tgsigqueueinfo,
                "threads of the sandbox's processes; queued as rt_sigqueueinfo's",
            ),
        ),
        // time
        (CLOCK_GETTIME, full(time::clock_gettime)),
        (
            CLOCK_SETTIME,
            denied(
                time::clock_settime,
                "no CAP_SYS_TIME: EPERM for CLOCK_REALTIME, EINVAL for clocks that cannot be set",
            ),
        ),
        (CLOCK_GETRES, full(time::clock_getres)),
        (GETTIMEOFDAY, full(time::gettimeofday)),
        (TIME, full(time::time)),
        (NANOSLEEP, full(time::nanosleep)),
        (CLOCK_NANOSLEEP, full(time::clock_nanosleep)),
        (GETRANDOM, full(time::getrandom)),
        // timers
        (
            SETITIMER,
            partial(timers::setitimer, ITIMER_NOTE),
        ),
        (
            GETITIMER,
            partial(timers::getitimer, ITIMER_NOTE),
        ),
        (ALARM, full(timers::alarm)),
        (
            TIMER_CREATE,
            partial(
                timers::timer_create,
                "SIGEV_SIGNAL, SIGEV_THREAD_ID, SIGEV_NONE; no SI_TIMER siginfo, so glibc's \
                 SIGEV_THREAD helper does not work; CPU clocks count the sandbox's CPU time",
            ),
        ),
        (TIMER_SETTIME, full(timers::timer_settime)),
        (TIMER_GETTIME, full(timers::timer_gettime)),
        (
            TIMER_GETOVERRUN,
            partial(
                timers::timer_getoverrun,
                "counts expiries that found the previous signal still pending",
            ),
        ),
        (TIMER_DELETE, full(timers::timer_delete)),
        // event loops
        (EPOLL_CREATE, full(events::epoll_create)),
        (EPOLL_CREATE1, full(events::epoll_create1)),
        (EPOLL_CTL, full(events::epoll_ctl)),
        (
            EPOLL_WAIT,
            partial(events::epoll_wait, "EPOLLET reported as level-triggered"),
        ),
        (
            EPOLL_PWAIT,
            partial(events::epoll_pwait, "EPOLLET reported as level-triggered"),
        ),
        (
            EPOLL_PWAIT2,
            partial(events::epoll_pwait2, "EPOLLET reported as level-triggered"),
        ),
        (EVENTFD, full(events::eventfd)),
        (EVENTFD2, full(events::eventfd2)),
        (TIMERFD_CREATE, full(events::timerfd_create)),
        (
            TIMERFD_SETTIME,
            partial(
                events::timerfd_settime,
                "TFD_TIMER_CANCEL_ON_SET never cancels",
            ),
        ),
        (TIMERFD_GETTIME, full(events::timerfd_gettime)),
        (
            PKEY_ALLOC,
            partial(
                events::pkey_alloc,
                "no protection keys: always ENOSPC, as on a CPU without PKU",
            ),
        ),
        (
            PKEY_MPROTECT,
            partial(
                events::pkey_mprotect,
                "only pkey -1: there are no protection keys",
            ),
        ),
        // sockets: AF_UNIX and the sandbox's own loopback (no host socket)
        (
            SOCKET,
            partial(
                net::socket,
                "AF_UNIX stream/dgram/seqpacket; AF_INET/AF_INET6 stream and dgram on the \
                 sandbox's loopback; other families EAFNOSUPPORT",
            ),
        ),
        (
            SOCKETPAIR,
            partial(net::socketpair, "AF_UNIX only (AF_INET: EOPNOTSUPP, as Linux)"),
        ),
        (
            CONNECT,
            partial(
                net::connect,
                "AF_UNIX paths and abstract names; 127.0.0.0/8 and ::1 only (elsewhere ENETUNREACH)",
            ),
        ),
        (
            BIND,
            partial(
                net::bind,
                "AF_UNIX paths and abstract names; loopback and wildcard addresses only",
            ),
        ),
        (LISTEN, full(net::listen)),
        (ACCEPT, full(net::accept)),
        (ACCEPT4, full(net::accept4)),
        (
            SENDTO,
            partial(
                net::sendto,
                "MSG_OOB only to a loopback TCP peer with SO_OOBINLINE; a blocking stream send may be short",
            ),
        ),
        (RECVFROM, partial(net::recvfrom, "no MSG_OOB")),
        (
            SENDMSG,
            partial(
                net::sendmsg,
                "SCM_RIGHTS and SCM_CREDENTIALS; no IP ancillary data; MSG_OOB only to a loopback TCP peer with SO_OOBINLINE",
            ),
        ),
        (
            RECVMSG,
            partial(
                net::recvmsg,
                "SCM_RIGHTS and SCM_CREDENTIALS; no MSG_OOB, empty error queue",
            ),
        ),
        (
            SENDMMSG,
            partial(net::sendmmsg, "as sendmsg, message by message"),
        ),
        (SHUTDOWN, full(net::shutdown)),
        (GETSOCKNAME, full(net::getsockname)),
        (GETPEERNAME, full(net::getpeername)),
        (
            SETSOCKOPT,
            partial(
                net::setsockopt,
                "SO_* that runtimes set, TCP_NODELAY/KEEP*, IP_TOS/TTL, IPV6_V6ONLY; others ENOPROTOOPT",
            ),
        ),
        (
            GETSOCKOPT,
            partial(
                net::getsockopt,
                "SO_TYPE/ERROR/*BUF/PEERCRED/... and the options setsockopt records",
            ),
        ),
    ]
}

static TABLE: OnceLock<Vec<Entry>> = OnceLock::new();

/// The syscall table, indexed by number.
pub fn table() -> &'static [Entry] {
    TABLE.get_or_init(|| {
        let mut t: Vec<Entry> = (0..sysno::COUNT as u64)
            .map(|nr| Entry {
                nr,
                name: sysno::NAMES[nr as usize],
                handler: None,
                support: Support::Unimplemented,
                note: "",
            })
            .collect();
        for (nr, (h, s, note)) in handlers() {
            let e = &mut t[nr as usize];
            e.handler = h;
            e.support = s;
            e.note = note;
        }
        t
    })
}

/// Per-sandbox syscall counts.
#[derive(Debug, Clone, Default)]
pub struct SyscallStats {
    /// Calls by number.
    pub counts: BTreeMap<u64, u64>,
    /// Unimplemented calls by number.
    pub unimplemented: BTreeMap<u64, u64>,
    /// CPU exceptions served (page faults, mostly).
    pub exceptions: u64,
    /// Times the vCPU was kicked out of the guest (timeslices, timers).
    pub kicks: u64,
    /// execveat(AT_EMPTY_PATH) calls refused with ENOSYS (logged once).
    pub fexecve: u64,
}

impl SyscallStats {
    /// Counts by name, most frequent first.
    pub fn by_name(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .counts
            .iter()
            .map(|(nr, c)| {
                (
                    sysno::name(*nr)
                        .map(String::from)
                        .unwrap_or_else(|| format!("#{nr}")),
                    *c,
                )
            })
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Unimplemented calls by name.
    pub fn unimplemented_by_name(&self) -> Vec<(String, u64)> {
        self.unimplemented
            .iter()
            .map(|(nr, c)| {
                (
                    sysno::name(*nr)
                        .map(String::from)
                        .unwrap_or_else(|| format!("#{nr}")),
                    *c,
                )
            })
            .collect()
    }
}

/// Distinct unimplemented syscalls a sandbox logs before it stops logging.
const LOGGED_UNIMPLEMENTED: usize = 16;

/// Serve syscall `nr` with `args`.
pub fn dispatch(ctx: &mut Ctx, nr: u64, args: Args) -> SysResult {
    *ctx.k.stats.counts.entry(nr).or_insert(0) += 1;
    let entry = table().get(nr as usize);
    match entry.and_then(|e| e.handler) {
        Some(h) => {
            // File operations check and own with the caller's ids; outside
            // a system call the actor is root again (see `Vfs::actor`).
            let as_user = ctx.k.proc.cred != ctx.k.vfs.actor;
            if as_user {
                ctx.k.vfs.actor = ctx.k.proc.cred.clone();
            }
            let r = h(ctx, args);
            if !ctx.k.fs.dnotify.list.is_empty() {
                // Directories it changed signal their dnotify owners.
                crate::file::dnotify::deliver(ctx);
            }
            if ctx.k.mm.frames.shm().has_orphans() {
                // A shared-mapped file lost its last mapping (munmap,
                // exit, exec): its pages go back into the file.
                crate::shm::collect(ctx.k, ctx.mem);
            }
            if as_user {
                ctx.k.vfs.actor = Default::default();
            }
            tracing::trace!(
                pid = ctx.k.proc.pid,
                tid = ctx.k.current,
                syscall = entry.map(|e| e.name).unwrap_or(""),
                args = format!(
                    "{:#x} {:#x} {:#x} {:#x}",
                    args.u64(0),
                    args.u64(1),
                    args.u64(2),
                    args.u64(3)
                ),
                rip = format!("{:#x}", ctx.regs.rcx),
                result = format!("{r:?}"),
            );
            r
        }
        None => {
            let distinct = ctx.k.stats.unimplemented.len();
            let n = ctx.k.stats.unimplemented.entry(nr).or_insert(0);
            *n += 1;
            // Logged once per number, for the first few numbers of a
            // sandbox: a program probing thousands must not flood the
            // host's log (all are counted).
            if *n == 1 && distinct < LOGGED_UNIMPLEMENTED {
                let name = entry
                    .map(|e| e.name)
                    .filter(|n| !n.is_empty())
                    .unwrap_or("unknown");
                tracing::warn!(
                    syscall = name,
                    nr,
                    "unimplemented syscall: returning ENOSYS"
                );
            } else if *n == 1 && distinct == LOGGED_UNIMPLEMENTED {
                tracing::warn!(
                    "more unimplemented syscalls: counted (zeroboot run --stats), not logged"
                );
            }
            Err(Errno::ENOSYS.into())
        }
    }
}

/// The compatibility document, `docs/syscalls.md` (printed by `zeroboot
/// syscalls`; a test keeps the two equal).
pub fn compatibility_table() -> String {
    let mut s = String::from(
        "# Syscall compatibility\n\n\
         Generated by `zeroboot syscalls`. Unimplemented calls return ENOSYS and are counted \
         and logged by name.\n\n\
         | nr | name | support | note |\n|---:|---|---|---|\n",
    );
    for e in table() {
        if e.name.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            e.nr,
            e.name,
            e.support.as_str(),
            e.note
        ));
    }
    s
}

/// The kernel release uname reports (glibc only checks it is new enough).
pub const KERNEL_RELEASE: &str = "6.1.0-zeroboot";

/// Nanoseconds since the sandbox started.
pub(crate) fn uptime_ns(ctx: &Ctx) -> u64 {
    time::clock_ns(ctx, zeroboot_abi::flags::CLOCK_MONOTONIC)
        .unwrap_or(0)
        .saturating_sub(ctx.k.start_mono_ns)
}

/// CPU time of the calling host thread (ns).
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU time of the process: the vCPU thread's time since the sandbox
/// started, plus what its template had used.
pub(crate) fn cpu_ns(ctx: &Ctx) -> u64 {
    ctx.k.cpu_ns()
}

pub(crate) fn now() -> (i64, i64) {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (t.tv_sec, t.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_has_one_handler_row() {
        let mut seen = std::collections::BTreeSet::new();
        for (nr, _) in handlers() {
            assert!(sysno::name(nr).is_some(), "{nr} is not a syscall");
            assert!(
                seen.insert(nr),
                "{} has two rows",
                sysno::NAMES[nr as usize]
            );
        }
    }

    #[test]
    fn levels_are_honest() {
        for e in table() {
            match e.support {
                Support::Unimplemented => assert!(e.handler.is_none(), "{}", e.name),
                Support::Partial | Support::Denied => {
                    assert!(!e.note.is_empty(), "{} says what is missing", e.name)
                }
                Support::Full => {
                    assert!(e.handler.is_some() && e.note.is_empty(), "{}", e.name)
                }
            }
        }
    }

    #[test]
    fn the_document_is_the_table() {
        let doc = include_str!("../../../../docs/syscalls.md");
        assert!(
            doc == compatibility_table(),
            "docs/syscalls.md is stale: run `zeroboot syscalls > docs/syscalls.md`"
        );
    }
}
