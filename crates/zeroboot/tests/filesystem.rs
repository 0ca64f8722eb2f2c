//! The file system's Linux behaviour: names as bytes, FIFOs and mknod,
//! splice/tee/vmsplice, flock and fcntl record locks between processes,
//! inotify, chroot, short reads and writes. Each guest program in
//! tests/filesystem_py/ prints what Linux prints for it: the expected
//! lines are a native run's (python3 3.11 as root on Linux 6.x), with the
//! differences noted where they are.
//! docs/filesystem.md says what is built and what is left out.
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::run_python as py;

#[test]
fn file_names_are_bytes_end_to_end() {
    let o = py(include_str!("filesystem_py/names.py"));
    check(
        &o,
        &[
            "listdir bytes True",
            "listdir str True",
            "scandir True",
            "stat size 1",
            "distinct True",
            "renamed True False",
            "readlink True",
            "getcwd True",
            "256 bytes ENAMETOOLONG",
            "removed True",
        ],
    );
}

#[test]
fn fifos_open_as_pipes_between_processes_and_mknod() {
    let o = py(include_str!("filesystem_py/fifo.py"));
    check(
        &o,
        &[
            "is fifo True 0o600",
            "listed [('f', False)]",
            "writer without reader ENXIO",
            "nonblocking reader opens",
            "read b'hello'",
            "eof b''",
            "blocking reader b'from the child' True",
            "big write 100000",
            "writer status 0",
            "rdwr b'self'",
            "mknod regular True",
            "mknod fifo True",
            "exists EEXIST",
            "missing dir ENOENT",
        ],
    );
}

#[test]
fn splice_tee_vmsplice_and_their_errors() {
    let o = py(include_str!("filesystem_py/splice.py"));
    check(
        &o,
        &[
            "file to pipe 1000",
            "offset kept 1000",
            "at offset 24 1000",
            "pipe to file 1024",
            "bytes right True",
            "no pipe EINVAL",
            "offset on a pipe ESPIPE",
            "read-only output EBADF",
            "same pipe EINVAL",
            "empty nonblocking EAGAIN",
            "bad fd EBADF",
            "tee 6",
            "tee left b'tee me' b'tee me'",
            "tee not pipes EINVAL",
            "vmsplice in 9",
            "vmsplice out 9 b'vmspliced'",
            "vmsplice not a pipe EBADF",
            "eof 0",
        ],
    );
}

#[test]
fn flock_and_record_locks_conflict_block_and_release() {
    let o = py(include_str!("filesystem_py/locks.py"));
    check(
        &o,
        &[
            "flock other EAGAIN",
            "flock shared description ok",
            "flock same process EAGAIN",
            "flock waits for close True",
            "shared with shared ok",
            "bad op EINVAL",
            "other range ok",
            "overlap EAGAIN",
            "F_GETLK (True, 0, 10, True)",
            "own locks do not conflict True",
            "write lock on read-only EBADF",
            "lockf waits for close True",
            "child locked",
            "after exit ok",
            "deadlock EDEADLOCK",
            "child got it 0",
            "OFD conflict EAGAIN",
            "OFD pid must be 0 EINVAL",
            "OFD vs process lock EAGAIN",
            "OFD released on close ok",
            "bad whence EINVAL",
        ],
    );
}

#[test]
fn inotify_events_readiness_and_errors() {
    let o = py(include_str!("filesystem_py/inotify.py"));
    check(
        &o,
        &[
            "cloexec True",
            "wd 1",
            "same path same wd True",
            "empty [] EAGAIN",
            "not ready []",
            "ready True",
            "poll True",
            "FIONREAD > 0 True",
            "[('CREATE', 0, b'a'), ('MODIFY', 0, b'a'), ('CLOSE_WRITE', 0, b'a')]",
            "[('MOVED_FROM', b'a'), ('MOVED_TO', b'b')] True",
            "[('ATTRIB', 0, b'b'), ('DELETE', 0, b'b'), ('CREATE', 0, b'sub')]",
            "[b'\\xff']",
            "[(True, 'MODIFY'), (True, 'CLOSE_WRITE'), (True, 'DELETE_SELF'), (True, 'IGNORED')]",
            "rm_watch after IGNORED EINVAL",
            "rm_watch 0 ['IGNORED']",
            "rm_watch twice EINVAL",
            "missing path ENOENT",
            "ONLYDIR on a file ENOTDIR",
            "no events in mask EINVAL",
            "not inotify EINVAL",
            "bad flags EINVAL",
            "small buffer EINVAL",
            "then [('DELETE', 0, b'file')]",
            "blocking read [('CREATE', 0, b'late')]",
        ],
    );
}

#[test]
fn chroot_answers_for_one_root() {
    let o = py(include_str!("filesystem_py/misc.py"));
    // As root natively chroot("/tmp") succeeds; the sandbox has one root and
    // answers EPERM, as Linux does without CAP_SYS_CHROOT.
    check(
        &o,
        &[
            "chroot / ok",
            "chroot missing ENOENT",
            "chroot a file ENOTDIR",
            "chroot /tmp EPERM",
        ],
    );
}

/// A directory's modification time moves when a name in it comes or goes
/// (Maildir, make and rsync rely on it; test_mailbox's reread did), in a
/// new directory and in one of the image; utime of an image directory
/// sticks.
#[test]
fn directory_times_follow_their_entries() {
    let o = py(include_str!("filesystem_py/dir_times.py"));
    let mut want = Vec::new();
    for w in ["new dir", "/tmp"] {
        for (what, m) in [
            ("create", "moved"),
            ("chmod of a file", "kept"),
            ("write to a file", "kept"),
            ("rename out", "moved"),
            ("rename in", "moved"),
            ("unlink", "moved"),
            ("mkdir", "moved"),
            ("rmdir", "moved"),
            ("symlink", "moved"),
            ("unlink of a symlink", "moved"),
        ] {
            want.push(format!("{w} {what} {m}"));
        }
        want.push(format!("{w} ctime follows True"));
    }
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    check(&o, &want);
}

#[test]
fn statfs_counts_the_image_and_the_overlay() {
    let o = py(include_str!("filesystem_py/statfs.py"));
    check(
        &o,
        &[
            "root True",
            "image dir True",
            "image file True",
            "one fs True True",
            "fstatvfs True",
            "namemax 255",
            "missing ENOENT",
            "write uses space True True",
        ],
    );
}

#[test]
fn reads_and_writes_stop_at_an_unmapped_page_and_large_ones_go_in_one_call() {
    let o = py(include_str!("filesystem_py/partial_io.py"));
    check(
        &o,
        &[
            "short write 8092",
            "write from unmapped -1 EFAULT",
            "empty write 0",
            "size 8092",
            "short read 4096",
            "offset 4096",
            "read into unmapped -1 EFAULT",
            "big write 31457280",
            "big pread True",
            "appended 31457284 b'tail' True",
        ],
    );
}
