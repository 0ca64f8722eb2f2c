//! Helpers shared by the CLI tests: the binary, a busybox root directory,
//! and static guest programs built from tests/guest/*.c.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn zeroboot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zeroboot"))
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
