//! Build steps of the kernel crate:
//! - the vDSO (vdso/), a small freestanding shared object compiled with the
//!   system's C compiler (the one Rust already links with);
//! - the fingerprint of the kernel's and the VMM crate's source: templates
//!   record it, and a template made by different code is refused (its state
//!   layout, the vDSO it maps, the guest memory layout or the trampolines
//!   it was parked on may differ).

use std::path::Path;

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "c" || x == "lds")
            {
                files.push(p);
            }
        }
    }
}

fn build_vdso() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let so = out.join("vdso.so");
    let status = std::process::Command::new(&cc)
        .args([
            "-O2",
            "-fPIC",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-jump-tables",
            "-fcf-protection=none",
            "-mno-red-zone",
            "-nostdlib",
            "-shared",
            "-Wall",
            "-Werror",
            "-Wl,-T,vdso/vdso.lds",
            "-Wl,-soname=linux-vdso.so.1",
            "-Wl,--hash-style=both",
            "-Wl,--build-id=none",
            "-Wl,-z,max-page-size=4096",
            "-Wl,-Bsymbolic",
            "-Wl,--no-undefined",
            "-o",
        ])
        .arg(&so)
        .arg("vdso/vdso.c")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the vDSO with {cc} failed ({s})"),
        Err(e) => panic!("building the vDSO needs a C compiler ({cc}): {e}"),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=vdso");
    println!("cargo:rerun-if-changed=../vmm/src");
    println!("cargo:rerun-if-env-changed=CC");
    build_vdso();
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    walk(Path::new("vdso"), &mut files);
    walk(Path::new("../vmm/src"), &mut files);
    files.sort();
    // FNV-1a over paths and contents: no dependency needed for this.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in f
            .to_string_lossy()
            .bytes()
            .chain(std::fs::read(&f).unwrap_or_default())
        {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=ZEROBOOT_KERNEL_FINGERPRINT={h:016x}");
}
