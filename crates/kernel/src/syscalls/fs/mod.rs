//! File system calls, one file per family:
//!
//! | file | calls |
//! |---|---|
//! | `rw.rs` | read, write, pread64, pwrite64, readv, writev, preadv, pwritev, sendfile, copy_file_range, lseek |
//! | `open.rs` | open, openat, creat, pipe, pipe2, memfd_create |
//! | `fcntl.rs` | close, close_range, dup, dup2, dup3, fcntl, ioctl |
//! | `lock.rs` | flock, fcntl's record locks (F_GETLK, F_SETLK(W), F_OFD_*) |
//! | `splice.rs` | splice, tee, vmsplice |
//! | `notify.rs` | inotify_init, inotify_init1, inotify_add_watch, inotify_rm_watch |
//! | `stat.rs` | stat, fstat, lstat, newfstatat, statx, statfs, fstatfs, access, faccessat, faccessat2 |
//! | `dir.rs` | getdents, getdents64, getcwd, chdir, fchdir, mkdir, mkdirat, chroot |
//! | `namei.rs` | path resolution (`resolve_at`); unlink, rmdir, rename, symlink, link, readlink, mknod and their `*at` forms |
//! | `attr.rs` | truncate, ftruncate, fallocate, fsync, fadvise64, chmod, chown, utimensat, umask, the xattr family |
//!
//! poll and select are in `syscalls::events`, next to epoll. What a read,
//! write, stat or poll does for each kind of file is that kind's
//! `FileOps` (`crate::file`).

pub(crate) mod attr;
pub(crate) mod dir;
pub(crate) mod fcntl;
pub(crate) mod lock;
pub(crate) mod namei;
pub(crate) mod notify;
pub(crate) mod open;
pub(crate) mod rw;
pub(crate) mod splice;
pub(crate) mod stat;

pub(crate) use fcntl::close_fd;
pub(crate) use namei::{resolve_at, resolve_parent_at};
pub use open::PIPE_CAPACITY;
