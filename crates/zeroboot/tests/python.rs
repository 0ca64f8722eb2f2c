//! Debian's python3 and numpy, unmodified, in the sandbox (the `python`
//! image is built on first use and cached).
#![allow(clippy::unwrap_used)]

mod common;

use common::run_python as py;
use common::*;

#[test]
fn numpy_dot_prints_32() {
    let o = py("import numpy; print(numpy.dot([1,2,3],[4,5,6]))");
    assert_eq!(stdout(&o), "32\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

const STDLIB: &str = r#"
import json, re, math, random, datetime, collections, itertools, hashlib, sqlite3
import decimal, fractions, statistics, csv, io, tempfile, pathlib
assert json.loads(json.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
assert re.sub(r"(\d+)", r"<\1>", "a1b22") == "a<1>b<22>"
assert math.isclose(math.sqrt(2) ** 2, 2)
random.seed(7); assert 0 <= random.random() < 1
assert datetime.date(2024, 2, 28) + datetime.timedelta(days=2) == datetime.date(2024, 3, 1)
assert collections.Counter("abracadabra").most_common(1) == [("a", 5)]
assert list(itertools.islice(itertools.count(3), 3)) == [3, 4, 5]
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.executemany("insert into t values (?)", [(i,) for i in range(10)])
assert db.execute("select sum(x) from t").fetchone()[0] == 45
decimal.getcontext().prec = 30; assert str(decimal.Decimal(1) / decimal.Decimal(7)).startswith("0.142857142857")
assert fractions.Fraction(1, 3) + fractions.Fraction(1, 6) == fractions.Fraction(1, 2)
assert statistics.median([5, 1, 3]) == 3
buf = io.StringIO(); csv.writer(buf).writerow(["a", 1]); assert buf.getvalue() == "a,1\r\n"
with tempfile.NamedTemporaryFile("w", dir="/tmp", delete=False) as f: f.write("x" * 1000)
assert pathlib.Path(f.name).read_text() == "x" * 1000
pathlib.Path("/tmp/persist.txt").write_text("secret")
assert open("/tmp/persist.txt").read() == "secret"
print("stdlib ok")
"#;

#[test]
fn the_standard_library_works_and_tmp_files_do_not_outlive_the_sandbox() {
    let o = py(STDLIB);
    assert_eq!(stdout(&o), "stdlib ok\n", "stderr: {}", stderr(&o));
    let o = py("import os; print(os.path.exists('/tmp/persist.txt'))");
    assert_eq!(stdout(&o), "False\n", "stderr: {}", stderr(&o));
}

#[test]
fn threads_subprocesses_and_the_shell() {
    let code = r#"
import threading, subprocess, os
out = []
ts = [threading.Thread(target=lambda i=i: out.append(i * i)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(out))
print(subprocess.run(["echo", "from a child"], capture_output=True, text=True).stdout.strip())
print(subprocess.run("echo $((6*7))", shell=True, capture_output=True, text=True).stdout.strip())
print(os.system("exit 3") >> 8)
"#;
    let o = py(code);
    assert_eq!(
        stdout(&o),
        "[0, 1, 4, 9]\nfrom a child\n42\n3\n",
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn exceptions_exit_codes_and_no_network() {
    let o = py("import sys; sys.exit(4)");
    assert_eq!(o.status.code(), Some(4));
    let o = py("raise ValueError('boom')");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ValueError: boom"), "{}", stderr(&o));
    // Sockets are the sandbox's own; anything beyond its loopback is
    // unreachable.
    let o = py("import socket\ntry:\n socket.socket().connect(('1.1.1.1', 80))\nexcept OSError as e: print('unreachable', e.errno)");
    assert_eq!(stdout(&o), "unreachable 101\n", "stderr: {}", stderr(&o));
}

#[test]
fn bad_programs_get_clear_errors() {
    let o = run(&["run", "--image", "python", "--", "no-such-program"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    // A host path that the image does not have.
    let host = env!("CARGO_BIN_EXE_zeroboot");
    let o = run(&["run", "--image", "python", "--", host]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
    // A corrupt ELF and a missing file, executed from inside.
    let code = r#"
import os, subprocess
open("/tmp/bad", "wb").write(b"\x7fELF\x02\x01\x01" + b"\0" * 100); os.chmod("/tmp/bad", 0o755)
for p in ["/tmp/bad", "/nope"]:
    try: subprocess.run([p])
    except OSError as e: print(type(e).__name__, e.errno)
"#;
    let o = py(code);
    assert_eq!(
        stdout(&o),
        "OSError 8\nFileNotFoundError 2\n",
        "stderr: {}",
        stderr(&o)
    );
}

/// The sandbox's first process runs on the VMM's boot page-table root.
/// When it execs (`env python3`, `bash -c 'one command'`), that layout is
/// released; the boot root must stay the VMM's. It used to go back to the
/// frame allocator, was zeroed as the program's next page, and the next
/// process made (here the subprocess) had no kernel half: the VM
/// triple-faulted ("the PTE writer did not finish: Shutdown").
#[test]
fn the_first_process_execs_and_then_spawns() {
    let code = "import subprocess, numpy; \
                print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip(), \
                int(numpy.ones(1 << 20).sum()))";
    for argv in [
        &["env", "python3", "-c", code][..],
        &["bash", "-c", &format!("python3 -c \"{code}\"")][..],
    ] {
        let mut args = vec!["run", "--image", "python", "--"];
        args.extend_from_slice(argv);
        let o = run(&args);
        assert_eq!(
            stdout(&o),
            "child 1048576\n",
            "{argv:?}: stderr: {}",
            stderr(&o)
        );
        assert_eq!(o.status.code(), Some(0), "{argv:?}: stderr: {}", stderr(&o));
    }
}

/// Many short-lived children of one process, one after another: each
/// dead child's page tables and frames are recycled for the next. Each
/// child also touches a page its parent never did (a private and a shared
/// lazy mapping), so every child faults once at the same instruction and
/// address: the guard against a fault that repeats for ever counts per
/// thread, and used to kill every child after the 16th.
#[test]
fn process_loops_all_exit_zero() {
    let code = r#"
import os, subprocess, mmap
private = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE)
shared = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_SHARED)
bad = []
def children(n, what, child):
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            child()
            os._exit(0)
        _, st = os.waitpid(pid, 0)
        if st:
            bad.append((what, i, st))
def touch_private():
    private[12345] = 1
def touch_shared():
    shared[4096] += 1
children(200, "fork", lambda: None)
children(40, "private", touch_private)
children(40, "shared", touch_shared)
if shared[4096] != 40 or private[12345] != 0:
    bad.append(("memory", shared[4096], private[12345]))
for i in range(50):
    r = subprocess.run(["/bin/true"])
    if r.returncode:
        bad.append(("subprocess", i, r.returncode))
r = subprocess.run(["bash", "-c", 'n=0; for i in $(seq 100); do /bin/true && n=$((n+1)); done; echo $n'],
                   capture_output=True, text=True)
print(r.returncode, r.stdout.strip(), r.stderr.strip())
print("bad", bad[:5], len(bad))
"#;
    // A fork of the template (where the parent faults nowhere between
    // its children) and a boot of the image.
    for o in [run(&["exec", "--timeout", "60", code]), py(code)] {
        assert_eq!(stdout(&o), "0 100 \nbad [] 0\n", "stderr: {}", stderr(&o));
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    }
}

/// CPython's own regression tests for the core modules, run inside the
/// sandbox by `python3 -m test` from Debian's libpython3.11-testsuite.
#[test]
fn cpython_regression_tests_pass() {
    let tests = [
        "test_math",
        "test_json",
        "test_re",
        "test_string",
        "test_list",
        "test_dict",
        "test_set",
        "test_unicode",
        "test_datetime",
        "test_decimal",
        "test_statistics",
        "test_itertools",
        "test_functools",
        "test_collections",
    ];
    let mut args = vec![
        "run",
        "--timeout",
        "600",
        "--image",
        "python",
        "--apt",
        "libpython3.11-testsuite",
        "--",
        "python3",
        "-m",
        "test",
    ];
    args.extend(tests);
    let o = run(&args);
    let out = stdout(&o);
    assert!(out.contains("All 14 tests OK."), "{out}\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn no_xattrs_as_linux_answers_for_a_file_system_without_them() {
    // shutil.copytree copies extended attributes when it can: EOPNOTSUPP
    // means "none here", where ENOSYS made it fail.
    let o = py(r#"import errno, os, shutil
os.makedirs('/tmp/src/sub'); open('/tmp/src/sub/f', 'w').write('x')
shutil.copytree('/tmp/src', '/tmp/dst')
print(open('/tmp/dst/sub/f').read())
for call in (lambda: os.listxattr('/tmp/src'), lambda: os.getxattr('/tmp/src', 'user.a'),
             lambda: os.setxattr('/tmp/src', 'user.a', b'1')):
    try:
        call()
        print('no error')
    except OSError as e:
        print(errno.errorcode[e.errno])
try:
    os.listxattr('/tmp/missing')
except OSError as e:
    print(errno.errorcode[e.errno])
"#);
    assert_eq!(
        stdout(&o),
        // errno 95: Python names it ENOTSUP (EOPNOTSUPP on x86-64 Linux).
        "x\nENOTSUP\nENOTSUP\nENOTSUP\nENOENT\n",
        "{}",
        stderr(&o)
    );
}
