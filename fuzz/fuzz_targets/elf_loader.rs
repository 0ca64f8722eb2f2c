//! The ELF loader (crates/kernel/src/loader.rs) on arbitrary bytes: the
//! input is a file of the sandbox's writable layer, at /prog and at /i (a
//! short PT_INTERP or `#!` target), loaded as `execve` would load it
//! (`interpret_script`, then `load`) into a fresh address space. Any
//! outcome but a panic is fine; a program that loads must have its stack
//! in user space.
//!
//! The kernel state comes from one real sandbox made at start-up (needs
//! /dev/kvm); each input gets a clone of it and new guest memory.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use zeroboot_kernel::loader::{self, CpuInfo};
use zeroboot_kernel::vfs::{Entry, Image};
use zeroboot_kernel::{Kernel, Limits, Sandbox, SandboxConfig};
use zeroboot_vmm::layout::USER_END;
use zeroboot_vmm::{boot, GuestMemory};

struct World {
    kernel: Kernel,
    mem_size: u64,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let image = Arc::new(Image::empty().expect("an empty image"));
        let mut cfg = SandboxConfig::new(image);
        cfg.limits = Limits {
            memory: 64 << 20,
            ..Limits::default()
        };
        let sb = Sandbox::new(cfg).expect("a sandbox (is /dev/kvm usable?)");
        World {
            kernel: sb.k.clone(),
            mem_size: sb.mem.size(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut k = w.kernel.clone();
    let mem = GuestMemory::new(w.mem_size).expect("guest memory");
    boot::write_boot_structures(&mem).expect("boot structures");
    for path in ["/prog", "/i"] {
        let Ok(ino) = k.vfs_mut().tmp.new_file(0o755, data.to_vec(), (0, 0)) else {
            return;
        };
        if k.vfs_mut().tmp.set(path.into(), Entry::File(ino)).is_err() {
            return;
        }
    }
    let argv = vec![b"/prog".to_vec(), b"arg".to_vec()];
    let envp = vec![b"PATH=/".to_vec()];
    let Ok((path, argv)) = loader::interpret_script(&k, "/prog", argv) else {
        return;
    };
    let cpu = CpuInfo { hwcap: 0x178b_fbff };
    if let Ok(entry) = loader::load(&mut k, &mem, &path, &argv, &envp, cpu, [7; 16]) {
        assert!(
            entry.rsp < USER_END && entry.rsp > USER_END - (1 << 30),
            "stack pointer {:#x}",
            entry.rsp
        );
    }
});
