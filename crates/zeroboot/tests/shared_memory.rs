//! Shared memory in the sandbox's kernel: MAP_SHARED anonymous memory
//! shared (not copied) across fork, MAP_SHARED mappings of overlay files
//! coherent with read/write across processes, /dev/shm with POSIX shared
//! memory and semaphores (futexes in shared memory wake across
//! processes), so that multiprocessing and concurrent.futures work; and
//! the error paths: the memory limit, leaks over many forks, and a reset
//! leaving nothing in /dev/shm. The guest programs are in
//! tests/shared_memory_py/; each prints what Linux prints for it (compared
//! with a native run when written), except leak.py and limit.py, which
//! measure the sandbox's own memory accounting.
#![allow(clippy::unwrap_used)]

mod common;

use common::check_lines as check;
use common::run_python as py;
use common::*;

#[test]
fn shared_anonymous_memory_is_shared_across_fork() {
    let o = py(include_str!("shared_memory_py/anon_fork.py"));
    check(
        &o,
        &[
            "child saw parent True",
            "parent sees b'child' b'tail'",
            "private kept b'privy'",
            "slots [1, 2, 3, 4, 5, 6, 7, 8]",
            "child keeps after parent unmapped True",
        ],
    );
}

#[test]
fn shared_file_mappings_are_coherent_with_read_and_write() {
    let o = py(include_str!("shared_memory_py/file_mmap.py"));
    check(
        &o,
        &[
            "mapped reads file b'AAAA'",
            "write seen in map b'WRIT'",
            "map seen by pread b'MAPP'",
            "write seen in second page b'second'",
            "child store seen b'child' b'child'",
            "child write seen b'kidw'",
            "independent map True b'indp'",
            "size after ftruncate 16384",
            "grown page via read b'grow'",
            "after close 16384 b'child' b'MAPP' b'grow'",
            "rdonly shared write 13",
            "rdonly shared read b'child'",
            "image shared read True",
        ],
    );
}

#[test]
fn multiprocessing_queue_lock_value_array_and_shared_memory() {
    let o = py(include_str!("shared_memory_py/multiprocessing_shared.py"));
    check(
        &o,
        &[
            "queue [0, 1, 2, 3, 4] 0",
            "value 600 array [4.0, 5.0, 6.0]",
            "shared_memory b'child'",
            "dev shm left []",
        ],
    );
}

/// Pool's worker-handler thread polls the result pipe in a loop that never
/// blocks while the result-handler thread of the same process must get
/// the vCPU to read it: the timeslice has to end even for a thread that
/// spends its turn in syscalls.
#[test]
fn multiprocessing_pool_and_process_pool_executor() {
    let o = py(include_str!("shared_memory_py/pool.py"));
    check(&o, &["pool map 328350", "executor [1, 4, 9, 16]"]);
}

#[test]
fn many_forks_with_shared_mappings_leak_no_memory() {
    let o = py(include_str!("shared_memory_py/leak.py"));
    let out = stdout(&o);
    assert!(
        out.starts_with("all seen True\nleaked under 256 kB True "),
        "{out}\nstderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}

#[test]
fn shared_memory_counts_once_against_the_limit_and_past_it_kills() {
    let o = run(&[
        "run",
        "--timeout",
        "60",
        "--memory",
        "128",
        "--image",
        "python",
        "--",
        "python3",
        "-c",
        include_str!("shared_memory_py/limit.py"),
    ]);
    // Refused at mmap, counted once for two processes (48 MiB twice would
    // not fit with Python in 128 MiB), and killed past the limit.
    assert_eq!(
        stdout(&o),
        "too large refused 12\nchild touched it all 0 2 2\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(137), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("out of memory (limit 128 MiB)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_next_exec_finds_dev_shm_empty() {
    let exec = |code: &str| run(&["exec", "--timeout", "30", code]);
    let w = exec(
        "import mmap, os, multiprocessing as mp\n\
         fd = os.open('/dev/shm/zb_left', os.O_RDWR | os.O_CREAT, 0o600)\n\
         os.ftruncate(fd, 8192)\n\
         m = mmap.mmap(fd, 8192)\n\
         m[:4] = b'left'\n\
         l = mp.Lock()\n\
         open('/dev/shm/file', 'w').write('x')\n\
         print(sorted(os.listdir('/dev/shm')), oct(os.stat('/dev/shm').st_mode))",
    );
    assert_eq!(
        stdout(&w),
        "['file', 'zb_left'] 0o41777\n",
        "stderr: {}",
        stderr(&w)
    );
    let r = exec("import os; print(os.listdir('/dev/shm'), 'shm' in os.listdir('/dev'))");
    assert_eq!(stdout(&r), "[] True\n", "stderr: {}", stderr(&r));
}
