//! Helpers shared by the CLI tests: the binary, a busybox root directory,
//! and static guest programs built from tests/guest/*.c.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn zeroboot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zeroboot"))
}

/// `python3 -c code` in a sandbox of the `python` image (`zeroboot run`,
/// 60 s timeout).
pub fn run_python(code: &str) -> Output {
    run(&[
        "run",
        "--timeout",
        "60",
        "--image",
        "python",
        "--",
        "python3",
        "-c",
        code,
    ])
}

/// Run `zeroboot` with `args`.
pub fn run(args: &[&str]) -> Output {
    zeroboot().args(args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run printed exactly `want`, line by line, and exited 0.
pub fn check_lines(o: &Output, want: &[&str]) {
    let got = stdout(o);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, want, "stderr: {}", stderr(o));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Build tests/guest/NAME.c statically (once per test binary run).
pub fn guest_program(name: &str) -> PathBuf {
    // Tests run on threads of one process: build one program at a time.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guest")
        .join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let fresh = match (std::fs::metadata(&out), std::fs::metadata(&src)) {
        (Ok(o), Ok(s)) => {
            use std::os::unix::fs::PermissionsExt;
            o.modified().unwrap() >= s.modified().unwrap() && o.permissions().mode() & 0o111 != 0
        }
        _ => false,
    };
    if !fresh {
        // Build to a private name and rename, so parallel tests never see
        // a half-written file.
        let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
        let st = Command::new("gcc")
            .args(["-static", "-O2", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect(
                "gcc is needed to build the guest test programs (apt-get install gcc libc6-dev)",
            );
        assert!(st.success(), "building {name}.c failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// A root directory with Debian's busybox-static at /bin/busybox, a few
/// files, and the named guest programs in /bin.
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn new(programs: &[&str]) -> Rootfs {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["bin", "etc", "tmp", "data"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "Debian's busybox-static is needed (apt-get install busybox-static)"
        );
        std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
        std::fs::write(r.join("etc/hello.txt"), "hello file\n").unwrap();
        for p in programs {
            std::fs::copy(guest_program(p), r.join("bin").join(p)).unwrap();
        }
        Rootfs { dir }
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// A `zeroboot serve` child on a free port, stopped (SIGTERM) on drop.
pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Start with `keys` (None: auth off) and extra arguments.
    pub fn start(keys: Option<&[&str]>, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = zeroboot();
        cmd.args(["serve", "--port", &port.to_string()]).args(extra);
        if !extra.contains(&"--state-dir") {
            // Its own (a server serving as nobody must reach it).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        cmd.current_dir(dir.path());
        cmd.env_remove("ZEROBOOT_API_KEYS_FILE");
        if let Some(keys) = keys {
            let p = dir.path().join("keys.json");
            std::fs::write(&p, serde_json_list(keys)).unwrap();
            cmd.env("ZEROBOOT_API_KEYS_FILE", &p);
        }
        cmd.stdout(std::process::Stdio::null());
        cmd.stderr(std::process::Stdio::null());
        let child = cmd.spawn().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let s = Server {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok((200, _, _)) = http(&s.addr, "GET", "/v1/health", &[], b"") {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the server did not come up");
    }

    pub fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        http(&self.addr, "POST", path, &h, body.as_bytes()).unwrap()
    }

    pub fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"").unwrap()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serde_json_list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Status, headers (lower-case names) and body of an HTTP reply.
pub type Reply = (u16, Vec<(String, String)>, String);

/// A minimal HTTP/1.1 request (Connection: close).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The caller's Host if it gives one (a `<port>-<id>.<domain>` call).
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Bodies are either Content-Length or chunked.
    let body = if hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n.min(tail.len())]);
            r = tail.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        rest.to_string()
    };
    Ok((status, hdrs, body))
}
