//! The adversarial suite: code that tries to get out of its sandbox, see
//! another one, or use more than its share, driven through the real
//! `zeroboot` binary. Each test asserts a contained, clear result and,
//! where it matters, that the next sandbox is unaffected.
//! `docs/security.md` maps each attack class to the test that covers it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// `zeroboot exec` (the Python template) with `args`.
fn exec(args: &[&str]) -> Output {
    let mut a = vec!["exec"];
    a.extend_from_slice(args);
    run(&a)
}

fn py(code: &str) -> Output {
    exec(&["--timeout", "20", code])
}

fn js(code: &str) -> Output {
    exec(&["--template", "node", "--timeout", "20", code])
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A value unique to this test run (pid, time, a counter).
fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{:x}{t:x}{n}", std::process::id())
}

/// Nothing went wrong inside zeroboot itself: no VMM error (exit 125), no
/// "internal error" kill, no panic.
fn assert_contained(o: &Output, what: &str) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(125), "{what}: zeroboot failed: {err}");
    assert!(o.status.code().is_some(), "{what}: zeroboot died: {o:?}");
    for bad in ["internal error", "panicked", "sandbox failed", "KVM_"] {
        assert!(!err.contains(bad), "{what}: {bad}: {err}");
    }
}

/// The next sandbox works normally and sees nothing of the previous one.
fn assert_next_sandbox_is_fine() {
    let o = py("import os; print(sorted(os.listdir('/tmp')), 6 * 7)");
    assert_eq!(stdout(&o), "[] 42\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

fn assert_took_less(t: Instant, limit: Duration, what: &str) {
    let took = t.elapsed();
    assert!(took < limit, "{what} took {took:?} (limit {limit:?})");
}

/// The last `n` bytes of `s` (for messages).
fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A file in the host's /tmp with unique name and content, removed on drop.
struct HostMarker {
    name: String,
    secret: String,
}

impl HostMarker {
    fn new() -> HostMarker {
        let m = HostMarker {
            name: unique("zeroboot-host-marker-"),
            secret: unique("HOSTSECRET"),
        };
        std::fs::write(m.path(), &m.secret).unwrap();
        m
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/tmp").join(&self.name)
    }
}

impl Drop for HostMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

fn python_image() -> std::path::PathBuf {
    let o = run(&["image", "path", "python"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::path::PathBuf::from(stdout(&o).trim())
}

// ---------------------------------------------------------------------
// 1. Host files

#[test]
fn host_files_are_unreachable_by_any_path_trick() {
    // A marker on the host, where an escape from the image would find it:
    // the host's /tmp, and the image's own directory (the rootfs's parent).
    let marker = HostMarker::new();
    let (name, secret) = (&marker.name, &marker.secret);
    let rootfs = python_image();
    let image_hash = std::fs::read_to_string(rootfs.parent().unwrap().join("complete")).unwrap();
    let image_hash = image_hash.trim();
    assert!(image_hash.len() >= 32, "{image_hash}");

    let code = format!(
        r#"
import os
name = {name}
paths = ["/tmp/" + name, "/../../../../../../tmp/" + name, "../../../../../../tmp/" + name,
         "/proc/1/root/tmp/" + name, "/proc/self/root/../../tmp/" + name,
         "/proc/self/cwd/../../../tmp/" + name, "/dev/../../../tmp/" + name,
         "/../complete", "/../manifest.txt", "/../../../complete",
         "/etc/shadow", "/proc/1/environ", "/proc/1/cmdline", "/proc/1/root/etc/shadow"]
os.symlink("/", "/tmp/l")
os.symlink("../../..", "/tmp/u")
os.symlink("/proc/self/root/..", "/tmp/p")
os.symlink("/tmp/" + name, "/tmp/direct")
paths += ["/tmp/l/tmp/" + name, "/tmp/u/tmp/" + name, "/tmp/p/tmp/" + name, "/tmp/direct",
          "/tmp/l/../complete", "/tmp/u/../complete", "/tmp/p/complete", "/tmp/l/etc/shadow"]
os.chdir("/tmp")
paths += ["../../../../tmp/" + name, "../../../complete", "l/../../complete"]
for p in paths:
    try:
        with open(p, "rb") as f:
            print("READ", p, f.read()[:200])
    except OSError as e:
        print("ERR", p, e.errno)
try:
    os.link("/../complete", "/tmp/hard")
    print("LINK", open("/tmp/hard").read())
except OSError as e:
    print("ERR link", e.errno)
walk = [os.path.join(d, f) for d, _, fs in os.walk("/") for f in fs if f in (name, "complete", "manifest.txt")]
print("WALK", walk)
print("ROOT", sorted(os.listdir("/tmp/l/..")) == sorted(os.listdir("/")))
print("MOUNTS", open("/proc/self/mounts").read().replace("\n", "|"))
print("MAPS", open("/proc/self/maps").read().replace("\n", "|"))
print("PASSWD", open("../../../etc/passwd").read().replace("\n", "|"))
"#,
        name = quoted(name)
    );
    let o = py(&code);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(
        !out.contains(secret.as_str()),
        "the host marker leaked:\n{out}"
    );
    assert!(
        !out.contains(image_hash),
        "the image's directory leaked:\n{out}"
    );
    // Every marker, image-directory and host-only path is missing.
    let reads: Vec<&str> = out.lines().filter(|l| l.starts_with("READ")).collect();
    assert!(reads.is_empty(), "readable: {reads:#?}");
    assert!(out.contains("ERR link 2"), "{out}");
    assert!(out.contains("WALK []"), "{out}");
    assert!(out.contains("ROOT True"), "{out}");
    // /proc shows guest paths only.
    for l in out
        .lines()
        .filter(|l| l.starts_with("MOUNTS") || l.starts_with("MAPS"))
    {
        assert!(
            !l.contains(".cache") && !l.contains("zeroboot") && !l.contains("/root/"),
            "host path in {l}"
        );
    }
    // ../ from the cwd reaches the image's /etc/passwd, not the host's.
    let image_passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    let passwd = out
        .lines()
        .find_map(|l| l.strip_prefix("PASSWD "))
        .unwrap()
        .replace('|', "\n");
    assert_eq!(passwd, image_passwd);
}

#[test]
fn node_cannot_read_host_files_either() {
    let marker = HostMarker::new();
    let code = format!(
        r#"const fs = require("fs");
const name = {name};
fs.symlinkSync("/", "/tmp/l");
for (const p of ["/tmp/" + name, "/../../tmp/" + name, "/tmp/l/../tmp/" + name, "/proc/1/root/tmp/" + name, "/etc/shadow"]) {{
  try {{ console.log("READ", p, fs.readFileSync(p, "utf8")); }} catch (e) {{ console.log("ERR", p, e.code); }}
}}"#,
        name = quoted(&marker.name)
    );
    let o = js(&code);
    let out = stdout(&o);
    assert!(
        !out.contains(&marker.secret),
        "the host marker leaked:\n{out}"
    );
    assert_eq!(out.matches("ERR").count(), 5, "{out}\n{}", stderr(&o));
    assert!(out.lines().all(|l| l.ends_with("ENOENT")), "{out}");
}

#[test]
fn writes_to_the_image_stay_in_the_sandbox() {
    let rootfs = python_image();
    let before = std::fs::read(rootfs.join("etc/passwd")).unwrap();
    let python_size = std::fs::metadata(rootfs.join("usr/bin/python3.11"))
        .unwrap()
        .len();
    let code = r#"
import os, shutil
open("/etc/passwd", "w").write("owned\n")
open("/usr/bin/python3.11", "wb").close()
os.chmod("/etc", 0o777)
shutil.rmtree("/usr/lib/python3/dist-packages/numpy")
os.unlink("/bin/sh") if os.path.lexists("/bin/sh") else None
print(open("/etc/passwd").read().strip(), os.path.getsize("/usr/bin/python3.11"))
"#;
    let o = py(code);
    assert_eq!(stdout(&o), "owned 0\n", "stderr: {}", stderr(&o));
    // The host's image is untouched, and so is the next sandbox's view.
    assert_eq!(std::fs::read(rootfs.join("etc/passwd")).unwrap(), before);
    assert_eq!(
        std::fs::metadata(rootfs.join("usr/bin/python3.11"))
            .unwrap()
            .len(),
        python_size
    );
    assert!(rootfs.join("usr/lib/python3/dist-packages/numpy").is_dir());
    let o = py(r#"
import subprocess, numpy
print(open("/etc/passwd").read() != "owned\n", numpy.arange(3).sum())
print(subprocess.run(["/bin/sh", "-c", "python3 -c 'print(7)'"], capture_output=True, text=True).stdout.strip())
"#);
    assert_eq!(stdout(&o), "True 3\n7\n", "stderr: {}", stderr(&o));
}

// ---------------------------------------------------------------------
// 2. Other sandboxes

#[test]
fn the_next_fork_sees_no_files_globals_or_environment() {
    let secret = unique("S3CRET");
    let w = py(&format!(
        "import os, builtins; s = {s}; open('/tmp/secret', 'w').write(s); builtins.LEAK = s; os.environ['LEAK'] = s; print('written')",
        s = quoted(&secret)
    ));
    assert_eq!(stdout(&w), "written\n", "{}", stderr(&w));
    let r = py("import os, builtins; print(os.listdir('/tmp'), getattr(builtins, 'LEAK', None), os.environ.get('LEAK'))");
    assert_eq!(stdout(&r), "[] None None\n", "{}", stderr(&r));
}

/// The Python that scans the process's readable memory for a needle made
/// at run time from `hex` (so the code's own text never matches).
fn memory_scan(hex: &str) -> String {
    format!(
        r#"
import ctypes
needle = bytes.fromhex("{hex}")[::-1] * 4
def scan():
    hits = 0
    for line in open("/proc/self/maps").read().splitlines():
        f = line.split()
        if "r" not in f[1] or line.endswith(("[vvar]", "[vsyscall]")):
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        if hi - lo <= 1 << 30:
            hits += ctypes.string_at(lo, hi - lo).count(needle)
    return hits
"#
    )
}

#[test]
fn a_reused_fork_keeps_nothing_of_the_previous_request() {
    // One worker: the server resets the same fork and reuses it, so this
    // is the path where leftovers would show.
    let s = Server::start(None, &["--workers", "1"]);
    let hex = format!(
        "{:016x}",
        (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let attack = format!(
        r#"{scan}
import builtins, os, json, mmap, sys
keep = bytearray(needle * 100000)
m = mmap.mmap(-1, 64 << 20)
m.write(needle * ((64 << 20) // len(needle)))
del m
open("/tmp/secret", "wb").write(needle)
os.environ["LEAK"] = needle.hex()
builtins.LEAK = keep
# Poison the agent for whoever comes next.
json.loads = lambda *a, **k: {{"code": "print('POISONED')", "seed": 0}}
# Rewrite libc's code (the ABI allows rwx): getloadavg becomes ud2.
libc = ctypes.CDLL(None)
addr = ctypes.cast(libc.getloadavg, ctypes.c_void_p).value
page = addr & ~4095
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(page, 8192, 7) == 0
ctypes.memmove(addr, b"\x0f\x0b", 2)
sys.stdout.write("planted %d\n" % scan())
builtins.print = lambda *a, **k: None
"#,
        scan = memory_scan(&hex)
    );
    let (st, _, b) = s.post(
        "/v1/exec",
        None,
        &format!(r#"{{"code": {}}}"#, quoted(&attack)),
    );
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    let planted: u64 = v["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .strip_prefix("planted ")
        .unwrap_or_else(|| panic!("{b}"))
        .parse()
        .unwrap();
    // The scan finds what was planted (the check below can see a leak).
    assert!(planted >= 100_000, "{b}");
    let check = format!(
        r#"{scan}
import builtins, os, mmap
m = mmap.mmap(-1, 64 << 20)
print(scan(), os.listdir("/tmp"), os.environ.get("LEAK"), hasattr(builtins, "LEAK"), m.find(needle), os.getloadavg() is not None)
"#,
        scan = memory_scan(&hex)
    );
    for _ in 0..2 {
        let (st, _, b) = s.post(
            "/v1/exec",
            None,
            &format!(r#"{{"code": {}}}"#, quoted(&check)),
        );
        assert_eq!(st, 200, "{b}");
        let v = json(&b);
        let out = v["stdout"].as_str().unwrap();
        let fields: Vec<&str> = out.split_whitespace().collect();
        // The needle itself (and the scan's copy of it) may be seen: a
        // handful, not 100000.
        let hits: u64 = fields
            .first()
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("{b}"));
        assert!(hits < 10, "the previous request's memory is visible: {b}");
        assert_eq!(&fields[1..], ["[]", "None", "False", "-1", "True"], "{b}");
        assert_eq!(v["exit_code"], 0, "{b}");
    }
}

#[test]
fn concurrent_sandboxes_cannot_see_each_other() {
    let s = Server::start(None, &["--workers", "2"]);
    let secret = unique("CONCURRENT");
    let writer = format!(
        "import time, builtins; s = {s}; open('/tmp/shared', 'w').write(s); builtins.SHARED = s; time.sleep(1.5); print('wrote')",
        s = quoted(&secret)
    );
    let reader = r#"
import os, time, builtins
seen = set()
t = time.time()
while time.time() - t < 1.5:
    seen.update(os.listdir("/tmp"))
    seen.update(p for p in os.listdir("/proc") if p.isdigit())
    if hasattr(builtins, "SHARED"): seen.add("global")
    time.sleep(0.01)
print(sorted(seen), os.getpid())
"#;
    let body = format!(
        r#"{{"executions": [{{"code": {}}}, {{"code": {}}}]}}"#,
        quoted(&writer),
        quoted(reader)
    );
    let t = Instant::now();
    let (st, _, b) = s.post("/v1/exec/batch", None, &body);
    assert_eq!(st, 200, "{b}");
    // They ran side by side (not one after the other).
    assert_took_less(t, Duration::from_millis(2900), "two 1.5 s snippets");
    let r = &json(&b)["results"];
    assert_eq!(r[0]["stdout"], "wrote\n", "{b}");
    let out = r[1]["stdout"].as_str().unwrap();
    assert!(
        !out.contains(&secret) && !out.contains("shared") && !out.contains("global"),
        "{b}"
    );
    // /proc lists only the reader's own pid.
    let pid = out.split_whitespace().last().unwrap();
    assert_eq!(out.trim(), format!("['{pid}'] {pid}"), "{b}");
}

// ---------------------------------------------------------------------
// 3. Network

#[test]
fn sockets_stay_in_the_sandbox_and_nothing_reaches_a_host_listener() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let code = format!(
        r#"
import socket, errno
for fam, typ in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),
                 (socket.AF_INET6, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_STREAM),
                 (socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW)]:
    try:
        socket.socket(fam, typ)
        print("OPENED")
    except OSError as e:
        print(errno.errorcode[e.errno])
for f in [lambda: socket.socketpair(), lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
          lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))]:
    try:
        f()
        print("CONNECTED")
    except OSError as e:
        print(errno.errorcode[e.errno])
import urllib.request
try:
    urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=1)
except Exception as e:
    print(type(e).__name__)
"#
    );
    let o = py(&code);
    // AF_UNIX and loopback sockets are the sandbox kernel's own: the
    // host's 127.0.0.1 is not the sandbox's, so nobody listens there (the
    // datagram is lost); packet and netlink sockets do not exist.
    assert_eq!(
        stdout(&o),
        "OPENED\n".repeat(4)
            + "EAFNOSUPPORT\nEAFNOSUPPORT\nCONNECTED\nECONNREFUSED\nCONNECTED\nURLError\n",
        "stderr: {}",
        stderr(&o)
    );
    let o = js(&format!(
        r#"const net = require("net");
const s = net.connect({port}, "127.0.0.1");
s.on("error", e => console.log(e.code));
s.on("connect", () => console.log("CONNECTED"));"#
    ));
    assert_eq!(stdout(&o), "ECONNREFUSED\n", "stderr: {}", stderr(&o));
    // The listener saw nothing.
    std::thread::sleep(Duration::from_millis(100));
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener got {other:?}"),
    }
}

// ---------------------------------------------------------------------
// 4. Processes

#[test]
fn a_python_fork_bomb_is_capped_and_ends() {
    let t = Instant::now();
    let o = exec(&["--timeout", "3", "import os\nwhile True: os.fork()"]);
    assert_took_less(t, Duration::from_secs(6), "the fork bomb");
    assert_contained(&o, "fork bomb");
    // Either a process hit the process cap (EAGAIN) or the sandbox's
    // memory cap (ENOMEM: fork copies the address space) and its error
    // ended the execution, or the timeout did.
    match o.status.code() {
        Some(1) => assert!(
            stderr(&o).contains("Resource temporarily unavailable")
                || stderr(&o).contains("Cannot allocate memory"),
            "{}",
            stderr(&o)
        ),
        Some(124) => {}
        c => panic!("exit {c:?}: {}", stderr(&o)),
    }
    // Spawning children until refused: a clean EAGAIN.
    let o = py(r#"
import subprocess
ps = []
try:
    while True:
        ps.append(subprocess.Popen(["sleep", "100"]))
except OSError as e:
    print(len(ps) < 100, e.errno)
"#);
    assert_eq!(stdout(&o), "True 11\n", "stderr: {}", stderr(&o));
    let o = py(r#"
import threading, time
ts = []
try:
    while True:
        t = threading.Thread(target=time.sleep, args=(100,), daemon=True)
        t.start()
        ts.append(t)
except RuntimeError as e:
    print(len(ts) <= 256, e)
"#);
    assert_eq!(
        stdout(&o),
        "True can't start new thread\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_next_sandbox_is_fine();
}

#[test]
fn a_c_fork_bomb_gets_eagain() {
    let r = Rootfs::new(&["adv_procs"]);
    let o = run(&[
        "run",
        "--timeout",
        "10",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_procs",
        "forkbomb",
    ]);
    assert_contained(&o, "C fork bomb");
    assert!(
        stdout(&o).contains("Resource temporarily unavailable"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}

// ---------------------------------------------------------------------
// 5. Memory

#[test]
fn memory_bombs_raise_memoryerror_and_are_reported() {
    for code in [
        "x = bytearray(10**10)",
        "l = []\nwhile True: l.append(bytearray(2**20))",
        "l = []\nwhile True: l.append('x' * 1000)",
        "import numpy\nx = numpy.ones((30000, 30000))",
    ] {
        let t = Instant::now();
        let o = exec(&["--memory", "128", "--timeout", "20", code]);
        assert_took_less(t, Duration::from_secs(10), code);
        assert_eq!(o.status.code(), Some(1), "{code}: {}", stderr(&o));
        assert!(stderr(&o).contains("MemoryError"), "{code}: {}", stderr(&o));
    }
    let o = js("const a = []; while (true) a.push(Buffer.alloc(64 * 1024 * 1024, 1))");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("RangeError: Array buffer allocation failed"),
        "{}",
        stderr(&o)
    );
    // Through the API: the result says so.
    let s = Server::start(None, &["--workers", "1"]);
    let (st, _, b) = s.post("/v1/exec", None, r#"{"code": "x = bytearray(10**10)"}"#);
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["out_of_memory"], true, "{b}");
    assert_eq!(v["exit_code"], 1, "{b}");
    let (_, _, b) = s.post(
        "/v1/exec",
        None,
        r#"{"code": "x = bytearray(10**8); print(len(x))"}"#,
    );
    let v = json(&b);
    assert_eq!(
        (v["stdout"].as_str(), v["out_of_memory"].as_bool()),
        (Some("100000000\n"), Some(false)),
        "{b}"
    );
}

#[test]
fn a_c_program_past_the_memory_limit_is_refused_or_killed() {
    let r = Rootfs::new(&["adv_procs", "faults"]);
    // mmap refuses (ENOMEM) at the limit.
    let o = run(&[
        "run",
        "--memory",
        "64",
        "--rootfs",
        r.path(),
        "--",
        "/bin/faults",
        "alloc",
    ]);
    assert!(
        stdout(&o).contains("Cannot allocate memory"),
        "{}",
        stderr(&o)
    );
    // The stack cannot grow past it: killed, with the reason.
    let o = run(&[
        "run",
        "--memory",
        "64",
        "--timeout",
        "10",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_procs",
        "stack-oom",
    ]);
    assert_contained(&o, "stack past the limit");
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SIGKILL (9): out of memory (limit 64 MiB)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn forked_copies_count_against_the_memory_limit() {
    // 48 MiB touched, then forks: 2 copies fit in 100 MiB, 3 do not.
    let r = Rootfs::new(&["adv_procs"]);
    let o = run(&[
        "run",
        "--memory",
        "100",
        "--timeout",
        "10",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_procs",
        "fork-memory",
    ]);
    assert_contained(&o, "fork past the limit");
    assert_eq!(
        stdout(&o),
        "fork refused after 1: Cannot allocate memory\n",
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_memory_limit_holds_across_the_processes_of_a_fork() {
    // Six children, each touching 60 MiB, under a 128 MiB limit: at most
    // two can succeed (the others are refused or killed for memory).
    let o = exec(&[
        "--memory",
        "128",
        "--timeout",
        "20",
        r#"
import os, mmap, time
ok = 0
for i in range(6):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        try:
            m = mmap.mmap(-1, 60 << 20)
            for off in range(0, 60 << 20, 1 << 20):
                m[off:off + (1 << 20)] = b"x" * (1 << 20)
            os.write(w, b"1")
        except Exception:
            os.write(w, b"0")
        time.sleep(1000)
    os.close(w)
    ok += os.read(r, 1) == b"1"
print("children with 60 MiB:", ok, flush=True)
os._exit(0)
"#,
    ]);
    let out = stdout(&o);
    let ok: u32 = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out} {}", stderr(&o)));
    assert!(ok <= 2, "{ok} x 60 MiB under a 128 MiB limit");
}

#[test]
fn processes_that_come_and_go_give_their_memory_back() {
    // 2000 short-lived processes (half of them exec) under a 32 MiB limit:
    // each held a few page tables, which were once never freed (found by
    // the syscall fuzzer: fork failed with ENOMEM after ~1000 children).
    let r = Rootfs::new(&["adv_procs"]);
    let o = run(&[
        "run",
        "--memory",
        "32",
        "--timeout",
        "120",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_procs",
        "spawn-loop",
        "2000",
    ]);
    assert_eq!(stdout(&o), "spawned 2000\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

// ---------------------------------------------------------------------
// 6. File descriptors

#[test]
fn descriptor_exhaustion_gives_emfile() {
    let o = py(r#"
import os, resource
fds = []
try:
    while True: fds.append(os.open("/etc/passwd", os.O_RDONLY))
except OSError as e:
    print("open", len(fds) <= 1024, e.errno)
for f in fds: os.close(f)
ps = []
try:
    while True: ps.append(os.pipe())
except OSError as e:
    print("pipe", e.errno)
for a, b in ps: os.close(a); os.close(b)
try:
    os.dup2(0, 10**6)
except OSError as e:
    print("dup2", e.errno)
# Raising the limit does not buy more descriptors.
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (10**6, 10**6))
except (OSError, ValueError):
    pass
n = 0
try:
    while True: os.dup(0); n += 1
except OSError as e:
    print("dup", n <= 1024, e.errno)
"#);
    assert_eq!(
        stdout(&o),
        "open True 24\npipe 24\ndup2 9\ndup True 24\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_next_sandbox_is_fine();
}

// ---------------------------------------------------------------------
// 7. Disk

#[test]
fn filling_the_overlay_ends_in_enospc() {
    let t = Instant::now();
    let o = py(r#"
import os
n = 0
chunk = b"x" * (1 << 20)
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(chunk); f.flush(); n += 1
except OSError as e:
    print("fill", 200 <= n <= 256, e.errno)
# Sparse files: refused (zeroboot charges the size) or really sparse (as
# Linux's tmpfs): either way nothing breaks.
for size in [10**12, 2**62]:
    open("/tmp/sparse", "w").close()
    try:
        os.truncate("/tmp/sparse", size)
        with open("/tmp/sparse", "rb") as f:
            f.seek(size - 4)
            print("sparse", f.read() == bytes(4))
    except OSError as e:
        print("sparse", e.errno == 28)
os.unlink("/tmp/fill")
open("/tmp/after", "wb").write(b"y" * (1 << 20))
print("after", os.path.getsize("/tmp/after"))
"#);
    assert_took_less(t, Duration::from_secs(15), "filling the overlay");
    assert_eq!(
        stdout(&o),
        "fill True 28\nsparse True\nsparse True\nafter 1048576\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_next_sandbox_is_fine();
}

#[test]
fn many_empty_files_hit_a_limit() {
    // Empty files cost no disk bytes, but each keeps its path in the VMM's
    // memory: 15 nested 250-byte directory names make every path ~4 KiB.
    let t = Instant::now();
    let o = exec(&[
        "--timeout",
        "60",
        r#"
import os
d = "/tmp"
for i in range(15):
    d += "/" + "d" * 250
    os.mkdir(d)
n = 0
try:
    while True:
        os.close(os.open(d + "/" + "f" * 200 + str(n), os.O_CREAT | os.O_WRONLY)); n += 1
except OSError as e:
    print("refused after", n, e.errno)
"#,
    ]);
    // 100 000 paths of 4 KiB are 400 MiB of host memory: past any
    // reasonable limit on the overlay's size.
    assert!(stdout(&o).contains("refused after"), "{}", stderr(&o));
    let n: u64 = stdout(&o)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(n < 100_000, "{}", stdout(&o));
    assert!(stdout(&o).trim().ends_with(" 28"), "ENOSPC: {}", stdout(&o));
    assert_took_less(t, Duration::from_secs(60), "creating files");
}

// ---------------------------------------------------------------------
// 8. Output

#[test]
fn output_floods_are_truncated_with_a_marker() {
    let t = Instant::now();
    let o = exec(&[
        "--timeout",
        "2",
        "import sys\nwhile True:\n    print('flood' * 100)\n    sys.stderr.write('e' * 1000)",
    ]);
    assert_took_less(t, Duration::from_secs(5), "the flood");
    assert_contained(&o, "output flood");
    assert_eq!(o.status.code(), Some(124));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.len() <= (1 << 20) + 200, "{}", out.len());
    assert!(
        out.contains("[zeroboot: output truncated, "),
        "{}",
        tail(&out, 200)
    );
    assert!(
        err.contains("[zeroboot: output truncated, "),
        "stderr not capped"
    );
    // One huge write is cut at once, and the run goes on.
    let t = Instant::now();
    let o = py("import os\nos.write(1, b'x' * (128 << 20))\nprint('\\nend')");
    assert_took_less(t, Duration::from_secs(10), "one 128 MiB write");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.len() <= (1 << 20) + 200, "{}", out.len());
    assert!(
        out.ends_with("more bytes dropped]\n"),
        "{}",
        tail(&out, 100)
    );
    let o = exec(&[
        "--template",
        "node",
        "--timeout",
        "2",
        "while (true) process.stdout.write('y'.repeat(65536))",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("more bytes dropped]\n"),
        "{}",
        tail(&stdout(&o), 100)
    );
}

// ---------------------------------------------------------------------
// 9. Time

fn assert_times_out(o: &Output, t: Instant, timeout: f64, what: &str) {
    let took = t.elapsed();
    assert_contained(o, what);
    assert_eq!(o.status.code(), Some(124), "{what}: {}", stderr(o));
    assert!(stderr(o).contains("timed out"), "{what}: {}", stderr(o));
    assert!(
        took < Duration::from_secs_f64(timeout + 1.5),
        "{what} took {took:?}"
    );
}

#[test]
fn endless_loops_and_waits_end_at_the_timeout() {
    for (what, code) in [
        ("busy loop", "while True: pass"),
        (
            "loop in a signal handler",
            "import os, signal\ndef h(s, f):\n    while True: pass\nsignal.signal(signal.SIGUSR1, h)\nos.kill(os.getpid(), signal.SIGUSR1)",
        ),
        (
            "loop with signals blocked",
            "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())\nfor s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_IGN)\nwhile True: pass",
        ),
        ("sleep", "import time; time.sleep(10**6)"),
        ("read of an own pipe", "import os; r, w = os.pipe(); os.read(r, 1)"),
        ("a lock never released", "import threading; l = threading.Lock(); l.acquire(); l.acquire()"),
        ("select on nothing", "import select; select.select([], [], [], 10**6)"),
        (
            "a child that never exits",
            "import subprocess; subprocess.run(['sleep', '1000'])",
        ),
    ] {
        let t = Instant::now();
        let o = exec(&["--timeout", "1", code]);
        assert_times_out(&o, t, 1.0, what);
    }
    for (what, code) in [
        ("JS busy loop", "while (true) {}"),
        ("JS interval", "setInterval(() => {}, 10)"),
        ("JS promise loop", "for (;;) await Promise.resolve()"),
    ] {
        let t = Instant::now();
        let o = exec(&["--template", "node", "--timeout", "1", code]);
        assert_times_out(&o, t, 1.0, what);
    }
    let r = Rootfs::new(&["adv_procs"]);
    for how in ["ppoll", "pselect6", "select", "nanosleep"] {
        let t = Instant::now();
        let o = run(&[
            "run",
            "--timeout",
            "1",
            "--rootfs",
            r.path(),
            "--",
            "/bin/adv_procs",
            "huge-timeout",
            how,
        ]);
        assert_times_out(&o, t, 1.0, how);
    }
    for case in ["spin-signals-blocked", "spin-in-handler"] {
        let t = Instant::now();
        let o = run(&[
            "run",
            "--timeout",
            "1",
            "--rootfs",
            r.path(),
            "--",
            "/bin/adv_procs",
            case,
        ]);
        assert_times_out(&o, t, 1.0, case);
    }
    assert_next_sandbox_is_fine();
}

// ---------------------------------------------------------------------
// 10. Recursion

#[test]
fn unbounded_recursion_is_contained() {
    let o = py("def f(): f()\nf()");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("RecursionError"), "{}", stderr(&o));
    // With the limit lifted, C recursion overflows the 8 MiB stack: SIGSEGV.
    let t = Instant::now();
    let o = py("import sys\nsys.setrecursionlimit(10**9)\ndef f(): return next(map(lambda _: f(), [0]))\nf()");
    assert_took_less(t, Duration::from_secs(10), "C-level recursion");
    assert_contained(&o, "C-level recursion");
    assert_eq!(o.status.code(), Some(139), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("zeroboot: SIGSEGV (11): segmentation fault"),
        "{err}"
    );
    // Pure-Python frames live on the heap (3.11): memory, then the timeout.
    let t = Instant::now();
    let o = exec(&[
        "--timeout",
        "3",
        "--memory",
        "256",
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1) + 1\nf(0)",
    ]);
    assert_took_less(t, Duration::from_secs(6), "Python-level recursion");
    assert_contained(&o, "Python-level recursion");
    assert_ne!(o.status.code(), Some(0));
    let o = js("function f() { return f() + 1 } f()");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("RangeError: Maximum call stack size exceeded"),
        "{}",
        stderr(&o)
    );
    assert_next_sandbox_is_fine();
}

// ---------------------------------------------------------------------
// 11. Signals

#[test]
fn signals_raised_at_itself_end_it_cleanly() {
    for (code, status, text) in [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", 139, "zeroboot: SIGSEGV (11)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, "zeroboot: SIGKILL (9)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", 134, "zeroboot: SIGABRT (6)"),
        ("import signal; signal.raise_signal(signal.SIGTERM)", 143, "zeroboot: SIGTERM (15)"),
        ("import os; os.kill(-1, 9)", 137, "zeroboot: SIGKILL (9)"),
        ("import os; os.kill(0, 9)", 137, "zeroboot: SIGKILL (9)"),
        ("import os; os.kill(1, 9)", 1, "ProcessLookupError"),
        ("import os; os.kill(4242, 9)", 1, "ProcessLookupError"),
        ("import ctypes; ctypes.string_at(0)", 139, "address 0x0"),
        // A handler that raises again from inside itself: Python's own
        // recursion limit ends it.
        (
            "import os, signal\ndef h(s, f): os.kill(os.getpid(), s)\nsignal.signal(signal.SIGUSR1, h)\nos.kill(os.getpid(), signal.SIGUSR1)",
            1,
            "RecursionError",
        ),
    ] {
        let o = exec(&["--timeout", "5", code]);
        assert_contained(&o, code);
        assert_eq!(o.status.code(), Some(status), "{code}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{code}: {}", stderr(&o));
        if text.starts_with("zeroboot:") {
            let lines = stderr(&o).lines().filter(|l| l.starts_with("zeroboot: SIG")).count();
            assert_eq!(lines, 1, "{}", stderr(&o));
        }
    }
    // A SIGSEGV handler that returns: the fault repeats (on Linux for ever,
    // until the timeout); zeroboot ends it after a few repeats.
    let t = Instant::now();
    let o = exec(&[
        "--timeout",
        "5",
        "import ctypes, signal\nsignal.signal(signal.SIGSEGV, lambda *a: None)\nctypes.string_at(0)",
    ]);
    assert_took_less(t, Duration::from_secs(7), "a returning SIGSEGV handler");
    assert_contained(&o, "a returning SIGSEGV handler");
    assert_eq!(o.status.code(), Some(139), "{}", stderr(&o));
    assert!(stderr(&o).contains("repeats"), "{}", stderr(&o));
    // SIGSTOP has no one to continue it: zeroboot ignores it (no job control).
    let o = exec(&[
        "--timeout",
        "5",
        "import os, signal; os.kill(os.getpid(), signal.SIGSTOP); print('after stop')",
    ]);
    assert_eq!(stdout(&o), "after stop\n", "{}", stderr(&o));
    assert_next_sandbox_is_fine();
}

// ---------------------------------------------------------------------
// 12 and 13. Page tables, privileged state, non-executable memory

/// Probe lines whose errno differs from Linux's (still an errno: the call
/// is refused). Listed so that a change is noticed.
const KNOWN_ERRNO_DIFFERENCES: &[&str] = &[
    // Linux: ENOMEM (no mapping there); zeroboot: EINVAL.
    "mprotect the physmap rwx",
    "mprotect USER_END",
    "mprotect non-canonical",
    "mprotect wrapping",
];

#[test]
fn memory_syscalls_cannot_reach_the_page_tables_or_the_kernel_half() {
    let r = Rootfs::new(&["adv_mm"]);
    let native = std::process::Command::new(guest_program("adv_mm"))
        .arg("probe")
        .output()
        .unwrap();
    assert_eq!(native.status.code(), Some(0), "the probe fails natively");
    let o = run(&[
        "run",
        "--timeout",
        "20",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_mm",
        "probe",
    ]);
    assert_contained(&o, "adv_mm probe");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (ours, linux) = (stdout(&o), stdout(&native));
    assert_eq!(ours.lines().count(), linux.lines().count(), "{ours}");
    for (a, b) in ours.lines().zip(linux.lines()) {
        let name = b.split(": ").next().unwrap();
        if KNOWN_ERRNO_DIFFERENCES.contains(&name) {
            let result = a.rsplit(": ").next().unwrap();
            assert!(result.starts_with('E'), "{a} (Linux: {b})");
        } else {
            assert_eq!(a, b, "zeroboot and Linux differ");
        }
    }
    // The must-haves, whatever Linux did.
    for line in [
        "call into a read-write mapping: SEGV",
        "call into the stack: SEGV",
        "call after exec was taken away: SEGV",
        "write to read-only data: SEGV",
        "write to [vvar]: SEGV",
        "read the physmap: SEGV",
        "write from the physmap: EFAULT",
        "read into read-only data: EFAULT",
        "IOPL after a forged sigreturn: IOPL 0",
    ] {
        assert!(ours.lines().any(|l| l == line), "missing {line:?}:\n{ours}");
    }
}

#[test]
fn destructive_memory_tricks_end_in_a_clean_signal() {
    let r = Rootfs::new(&["adv_mm"]);
    let prog = guest_program("adv_mm");
    // (case, the status zeroboot gives, whether Linux gives the same here)
    for (case, status, like_linux) in [
        ("exec-stack", 139, true),
        ("exec-rw", 139, true),
        ("exec-after-noexec", 139, true),
        ("write-rodata", 139, true),
        ("write-code", 139, true),
        ("write-vvar", 139, true),
        ("munmap-all", 139, true),
        ("fixed-over-stack", 139, true),
        ("sigreturn-noncanonical-rip", 139, true),
        ("sigreturn-noncanonical-rsp", 135, true),
        ("sigreturn-kernel-fpstate", 139, true),
        ("sigreturn-no-frame", 139, true),
        ("syscall-at-the-top", 139, true),
        ("privileged", 139, true),
        ("cli", 139, true),
        ("hlt", 139, true),
        // Linux 6.x may seal the vDSO (mseal), so MAP_FIXED or munmap over it
        // fails there; zeroboot allows both, as older kernels did, and
        // the next clock call faults.
        ("fixed-over-vdso", 139, false),
        ("unmap-vdso", 139, false),
        ("jump-to-syscall-entry-noncanonical", 139, false),
    ] {
        let o = run(&[
            "run",
            "--timeout",
            "5",
            "--rootfs",
            r.path(),
            "--",
            "/bin/adv_mm",
            case,
        ]);
        assert_contained(&o, case);
        assert_eq!(
            o.status.code(),
            Some(status),
            "{case}: {} {}",
            stdout(&o),
            stderr(&o)
        );
        let err = stderr(&o);
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("zeroboot: SIG"))
                .count(),
            1,
            "{case}: {err}"
        );
        if like_linux {
            let native = std::process::Command::new(&prog)
                .arg(case)
                .output()
                .unwrap();
            use std::os::unix::process::ExitStatusExt;
            let native_status = native
                .status
                .code()
                .or(native.status.signal().map(|s| 128 + s));
            assert_eq!(native_status, Some(status), "{case}: Linux differs");
        }
    }
    // Non-executable memory says why.
    let o = run(&[
        "run",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_mm",
        "exec-stack",
    ]);
    assert!(
        stderr(&o).contains("access not permitted by the mapping's protection"),
        "{}",
        stderr(&o)
    );
    // `int $14` from ring 3: #GP on bare metal (SIGSEGV, as Linux); PVM
    // hosts report #UD (SIGILL). Either way one clean signal.
    let o = run(&[
        "run",
        "--timeout",
        "5",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_mm",
        "int14",
    ]);
    assert_contained(&o, "int14");
    assert!(
        matches!(o.status.code(), Some(132) | Some(139)),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stderr(&o)
            .lines()
            .filter(|l| l.starts_with("zeroboot: SIG"))
            .count(),
        1,
        "{}",
        stderr(&o)
    );
    // Returning to the kernel half through a forged signal frame faults
    // in ring 3 before the return, as on Linux (a SIGSEGV), even at
    // zeroboot's syscall entry.
    let o = run(&[
        "run",
        "--timeout",
        "5",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_mm",
        "sigreturn-kernel-rip",
    ]);
    assert_contained(&o, "sigreturn-kernel-rip");
    assert_eq!(o.status.code(), Some(139), "{}", stderr(&o));
    assert_next_sandbox_is_fine();
}

#[test]
fn a_jump_to_the_syscall_entry_gets_no_io_privilege() {
    // R11 carries the RFLAGS a syscall returns with; ring 3 must never come
    // back with IOPL 3 (it could then talk to the VMM's I/O ports).
    let r = Rootfs::new(&["adv_mm"]);
    let o = run(&[
        "run",
        "--timeout",
        "5",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_mm",
        "jump-to-syscall-entry",
    ]);
    assert_contained(&o, "jump to the syscall entry");
    match o.status.code() {
        Some(0) => assert!(stdout(&o).contains("with IOPL 0"), "{}", stdout(&o)),
        Some(139) => {}
        c => panic!("exit {c:?}: {} {}", stdout(&o), stderr(&o)),
    }
}

#[test]
fn clear_child_tid_cannot_write_kernel_or_read_only_memory() {
    let r = Rootfs::new(&["adv_procs"]);
    let native = std::process::Command::new(guest_program("adv_procs"))
        .arg("ctid")
        .output()
        .unwrap();
    assert_eq!(stdout(&native), "rodata intact, clock ok, memory ok\n");
    let o = run(&[
        "run",
        "--timeout",
        "10",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_procs",
        "ctid",
    ]);
    assert_contained(&o, "clear_child_tid");
    assert_eq!(stdout(&o), stdout(&native), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn every_syscall_with_hostile_arguments_is_survived() {
    let r = Rootfs::new(&["adv_fuzz"]);
    let t = Instant::now();
    let o = run(&[
        "run",
        "--timeout",
        "30",
        "--rootfs",
        r.path(),
        "--",
        "/bin/adv_fuzz",
    ]);
    assert_took_less(t, Duration::from_secs(30), "the syscall sweep");
    assert_contained(&o, "syscall sweep");
    assert!(
        stdout(&o).ends_with("calls, survived\n"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains("not ENOSYS"), "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn unknown_syscall_numbers_do_not_flood_the_host_log() {
    let o = py(
        "import ctypes\nlibc = ctypes.CDLL(None)\nfor nr in range(1000, 21000): libc.syscall(nr)",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = stderr(&o).lines().count();
    assert!(lines < 100, "{lines} log lines for one execution");
}

// ---------------------------------------------------------------------
// 14. CPU

/// utime + stime of a process, in seconds (USER_HZ is 100 on x86-64).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((u + s) / 100.0)
}

#[test]
fn a_sandbox_uses_at_most_one_cpu() {
    // Threads and processes inside one sandbox share its one vCPU.
    exec(&["pass"]); // the template exists
    let mut child = zeroboot()
        .args([
            "exec",
            "--timeout",
            "3",
            r#"
import os, threading
def spin():
    while True: pass
for _ in range(4): threading.Thread(target=spin, daemon=True).start()
for _ in range(4):
    if os.fork() == 0: spin()
spin()
"#,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let mut last = (Duration::ZERO, 0.0);
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Some(c) = cpu_seconds(pid) {
            last = (start.elapsed(), c);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(124), "{err}");
    let (wall, cpu) = last;
    assert!(wall > Duration::from_secs(2), "sampled for {wall:?}");
    // One vCPU plus the VMM's own bits: not the nine spinning threads'
    // worth, nor all of the host's cores.
    assert!(
        cpu < wall.as_secs_f64() * 1.25 + 0.3,
        "{cpu:.2} s of CPU in {wall:?}"
    );
}

fn post_exec(addr: &str, body: &str) -> (u16, String, Duration) {
    let t = Instant::now();
    let (st, _, b) = http(
        addr,
        "POST",
        "/v1/exec",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    (st, b, t.elapsed())
}

#[test]
fn spinning_requests_do_not_starve_the_others() {
    // Two workers, each busy with a 2 s spin; the pool runs every
    // execution to completion (or its timeout) in FIFO order, so a normal
    // request waits at most one timeout per worker-full of requests ahead.
    let s = Server::start(None, &["--workers", "2"]);
    let spin = r#"{"code": "while True: pass", "timeout_seconds": 2}"#;
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || post_exec(&addr, spin))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The server itself answers at once while every worker spins.
    let t = Instant::now();
    assert_eq!(s.get("/v1/health").0, 200);
    assert_took_less(t, Duration::from_secs(1), "health while busy");
    let (st, b, took) = post_exec(&s.addr, r#"{"code": "print(1)"}"#);
    assert_eq!((st, json(&b)["stdout"].as_str()), (200, Some("1\n")), "{b}");
    assert!(took < Duration::from_millis(3500), "served after {took:?}");
    for h in spinners {
        let (st, b, took) = h.join().unwrap();
        assert_eq!(st, 200, "{b}");
        let v = json(&b);
        assert_eq!(v["timed_out"], true, "{b}");
        assert!(v["total_time_ms"].as_f64().unwrap() < 2600.0, "{b}");
        assert!(took < Duration::from_millis(3000), "{took:?}");
    }
    // Four spinners ahead of it on two workers: two timeslots.
    let spinners: Vec<_> = (0..4)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 30 }));
            std::thread::spawn(move || post_exec(&addr, spin))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (st, b, took) = post_exec(&s.addr, r#"{"code": "print(2)"}"#);
    assert_eq!((st, json(&b)["stdout"].as_str()), (200, Some("2\n")), "{b}");
    assert!(took < Duration::from_millis(5500), "served after {took:?}");
    for h in spinners {
        let (st, b, _) = h.join().unwrap();
        assert_eq!(
            (st, json(&b)["timed_out"].as_bool()),
            (200, Some(true)),
            "{b}"
        );
    }
}

// ---------------------------------------------------------------------
// Guest numbers that meet sizes and offsets (the sentry issue): Linux's
// errors, never a VMM panic.

#[test]
fn huge_file_sizes_and_offsets_get_linux_errors() {
    // The answers are Linux's on tmpfs (run natively as the oracle), but
    // for ftruncate: tmpfs files are sparse, the overlay's are not, so
    // 2^63-1 bytes is past the disk limit (ENOSPC), as fallocate is.
    let code = r#"
import errno, os
def err(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
fd = os.open('/tmp/x', os.O_CREAT | os.O_RDWR)
print('fallocate-huge', err(lambda: os.posix_fallocate(fd, 2**63 - 1, 2**63 - 1)))
print('fallocate-big', err(lambda: os.posix_fallocate(fd, 0, 2**62)))
print('fallocate-neg', err(lambda: os.posix_fallocate(fd, -1, 10)))
print('fallocate-ok', err(lambda: os.posix_fallocate(fd, 0, 4096)), os.fstat(fd).st_size)
ro = os.open('/tmp/x', os.O_RDONLY)
print('fallocate-ro', err(lambda: os.posix_fallocate(ro, 0, 8192)))
r, w = os.pipe()
print('fallocate-pipe', err(lambda: os.posix_fallocate(w, 0, 10)))
print('ftruncate-huge', err(lambda: os.ftruncate(fd, 2**63 - 1)))
bufs = [bytearray(8) for _ in range(4)]
print('readv', os.readv(fd, bufs))
print('preadv-neg', err(lambda: os.preadv(fd, bufs, -2)))
print('pwrite-huge', err(lambda: os.pwrite(fd, b'x', 2**63 - 1)))
print('lseek-huge', err(lambda: os.lseek(fd, 2**63 - 1, os.SEEK_SET)), err(lambda: os.lseek(fd, 1, os.SEEK_CUR)))
"#;
    let o = py(code);
    assert_contained(&o, "huge sizes");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "fallocate-huge EFBIG",
        "fallocate-big ENOSPC",
        "fallocate-neg EINVAL",
        "fallocate-ok ok 4096",
        "fallocate-ro EBADF",
        "fallocate-pipe ESPIPE",
        "ftruncate-huge ENOSPC",
        "readv 32",
        "preadv-neg EINVAL",
        "pwrite-huge EINVAL",
        "lseek-huge ok EINVAL",
    ] {
        assert!(out.lines().any(|l| l == want), "want {want:?}:\n{out}");
    }
    assert_next_sandbox_is_fine();
}

#[test]
fn readv_with_huge_iovec_lengths_is_not_a_panic() {
    // Two lengths of 2^62 each sum past what a read transfers: Linux caps
    // the transfer; a short read of what the file holds.
    let code = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(64)
fd = os.open('/etc/hostname', os.O_RDONLY)
iov = (iovec * 4)(*[iovec(ctypes.addressof(buf), 2**62) for _ in range(4)])
n = libc.readv(fd, iov, 4)
print('readv', n >= 0 or ctypes.get_errno())
n = libc.preadv(fd, iov, 4, ctypes.c_long(0))
print('preadv', n >= 0 or ctypes.get_errno())
"#;
    let o = py(code);
    assert_contained(&o, "huge iovecs");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "readv True\npreadv True\n", "{}", stderr(&o));
}
