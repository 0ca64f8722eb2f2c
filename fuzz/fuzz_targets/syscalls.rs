//! The syscall layer driven directly (no VM): each input is a sequence of
//! system calls (number and six arguments, each argument shaped by a
//! selector: raw, a pointer into a scratch mapping, a path, an fd, a
//! boundary value...) served by `syscalls::dispatch` on a clone of a
//! sandbox's kernel state with a copy-on-write view of its memory, as the
//! run loop serves them. Far faster than the VM path
//! (crates/zeroboot/tests/guest/fuzz_syscalls.c), and coverage-guided.
//!
//! A sequence stops where the run loop would switch away from the thread:
//! the call blocks, or the thread or process is gone. `execve` and
//! `rt_sigreturn` need the vCPU and are served by the run loop, so here
//! they only answer ENOSYS. Any outcome but a panic is fine.
//!
//! Start-up makes one real sandbox (needs /dev/kvm) running a tiny static
//! program, with a 64 KiB read-write scratch mapping holding a few paths.
#![no_main]

use std::fs::File;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use zeroboot_kernel::syscalls::{dispatch, Args, Ctx, SysError};
use zeroboot_kernel::vfs::Image;
use zeroboot_kernel::{Kernel, Limits, Sandbox, SandboxConfig, Sink};
use zeroboot_vmm::GuestMemory;

/// `mov eax, 60; xor edi, edi; syscall` at 0x400078, one PT_LOAD.
const PROGRAM: &[u8] = include_bytes!("../seeds/elf_loader/static_exec");
const SCRATCH: u64 = 0x1000_0000;
const SCRATCH_LEN: u64 = 64 << 10;
const PATHS: &[&str] = &[
    "/tmp/a",
    "/etc/hello.txt",
    "/dev/null",
    "/proc/self/maps",
    "/proc/self/fd",
    "/",
    ".",
    "/tmp",
    "/prog",
    "/tmp/a/../b",
];
const BOUNDARIES: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    16,
    64,
    255,
    4095,
    4096,
    4097,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 4095,
    i64::MAX as u64,
    1 << 63,
    0x0000_7fff_ffff_f000,
    0x0000_8000_0000_0000,
    0xffff_8000_0000_0000,
    -100i64 as u64, // AT_FDCWD
];

struct World {
    kernel: Kernel,
    mem: Arc<File>,
    size: u64,
    /// Where each of PATHS is in the scratch mapping.
    path_at: Vec<u64>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let image = Arc::new(Image::empty().expect("an empty image"));
        let mut cfg = SandboxConfig::new(image);
        cfg.limits = Limits {
            memory: 64 << 20,
            disk: 1 << 20,
            fds: 64,
        };
        cfg.stdout = Sink::capture(4096);
        cfg.stderr = Sink::capture(4096);
        let mut sb = Sandbox::new(cfg).expect("a sandbox (is /dev/kvm usable?)");
        sb.add_file("/prog", PROGRAM.to_vec(), 0o755)
            .expect("/prog");
        sb.add_file("/etc/hello.txt", b"hello file\n".to_vec(), 0o644)
            .expect("/etc/hello.txt");
        sb.add_file("/tmp/.keep", Vec::new(), 0o644).expect("/tmp");
        sb.exec("/prog", &[b"/prog".to_vec()], &[])
            .expect("exec /prog");
        let regs = *sb.vcpu.regs();
        let mut ctx = Ctx {
            k: &mut sb.k,
            mem: &sb.mem,
            regs: &regs,
        };
        // mmap(SCRATCH, 64 KiB, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        let at = dispatch(
            &mut ctx,
            9,
            Args([SCRATCH, SCRATCH_LEN, 3, 0x32, u64::MAX, 0]),
        )
            .expect("the scratch mapping");
        assert_eq!(at, SCRATCH);
        let mut path_at = Vec::new();
        let mut off = SCRATCH + SCRATCH_LEN - 4096;
        for p in PATHS {
            let mut b = p.as_bytes().to_vec();
            b.push(0);
            sb.k.mm_mut().write(&sb.mem, off, &b).expect("a path");
            path_at.push(off);
            off += b.len() as u64;
        }
        let _ = sb.k.mm_mut().take_pending();
        World {
            kernel: sb.k.clone(),
            mem: sb.mem.file().clone(),
            size: sb.mem.size(),
            path_at,
        }
    })
}

/// An argument from a selector (low 3 bits) and 8 bytes.
fn arg(w: &World, sel: u8, v: u64) -> u64 {
    match sel & 7 {
        0 | 7 => v,
        1 => SCRATCH + v % SCRATCH_LEN,
        2 => v % 256,
        3 => w.path_at[(v % w.path_at.len() as u64) as usize],
        4 => v % 16,
        5 => BOUNDARIES[(v % BOUNDARIES.len() as u64) as usize],
        _ => (v % 256).wrapping_neg(),
    }
}

/// Bytes per call: 2 (number), 3 (selectors), 6 * 8 (arguments).
const CALL: usize = 2 + 3 + 48;

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut k = w.kernel.clone();
    let mem = GuestMemory::new_private(w.mem.clone(), w.size).expect("guest memory");
    let regs = kvm_bindings::kvm_regs {
        rip: 0x40_0078,
        rcx: 0x40_0078,
        rsp: 0x7fff_ffff_e000,
        r11: 0x202,
        rflags: 0x202,
        ..Default::default()
    };
    for c in data.chunks_exact(CALL).take(64) {
        let nr = u16::from_le_bytes([c[0], c[1]]) as u64 % 512;
        let sels = u32::from_le_bytes([c[2], c[3], c[4], 0]);
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[5 + 8 * i..13 + 8 * i]);
            *a = arg(w, (sels >> (3 * i)) as u8, u64::from_le_bytes(b));
        }
        let r = {
            let mut ctx = Ctx {
                k: &mut k,
                mem: &mem,
                regs: &regs,
            };
            dispatch(&mut ctx, nr, Args(args))
        };
        // What the run loop does between calls (without a vCPU).
        if !k.settle_without_vcpu() || matches!(r, Err(SysError::Block(_))) {
            break;
        }
    }
});
