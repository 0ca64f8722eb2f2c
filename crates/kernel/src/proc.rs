//! Contents of the generated /proc files.

use zeroboot_vmm::layout::PAGE_SIZE;

use crate::syscalls::Ctx;
use crate::vfs::ProcFile;

pub fn generate(ctx: &Ctx, f: &ProcFile) -> Vec<u8> {
    let k = &*ctx.k;
    let pid = k.proc.pid;
    let limit_kb = k.mm.limit() / 1024;
    let used_kb = k.mm.resident() / 1024;
    let vsz: u64 = k.mm.vmas.iter().map(|v| v.len()).sum();
    let name = if k.thread().comm.is_empty() {
        k.proc
            .exe
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(15)
            .collect()
    } else {
        k.thread().comm.clone()
    };
    let s = match f {
        ProcFile::Maps => k.mm.maps(),
        ProcFile::Cmdline => return nul_joined(&k.proc.argv),
        ProcFile::Environ => return nul_joined(&k.proc.envp),
        ProcFile::Status => format!(
            "Name:\t{name}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t{}\nTracerPid:\t0\nUid:\t{}\t{}\t{}\t{}\nGid:\t{}\t{}\t{}\t{}\nFDSize:\t64\nGroups:\t{}\nVmPeak:\t{} kB\nVmSize:\t{} kB\nVmRSS:\t{} kB\nThreads:\t1\nSigQ:\t0/0\nSigBlk:\t{:016x}\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n",
            k.proc.umask,
            k.proc.ppid,
            k.proc.cred.uid,
            k.proc.cred.euid,
            k.proc.cred.suid,
            k.proc.cred.fsuid,
            k.proc.cred.gid,
            k.proc.cred.egid,
            k.proc.cred.sgid,
            k.proc.cred.fsgid,
            k.proc.cred.groups.iter().map(|g| format!("{g} ")).collect::<String>(),
            vsz / 1024,
            vsz / 1024,
            used_kb,
            k.thread().sigmask
        ),
        ProcFile::SysStat => "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n".to_string(),
        ProcFile::Stat => {
            format!(
                "{pid} ({name}) R {} {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 0 {} {} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                k.proc.ppid,
                vsz,
                k.mm.resident() / PAGE_SIZE
            )
        }
        ProcFile::Statm => format!("{} {} 0 0 0 0 0\n", vsz / PAGE_SIZE, k.mm.resident() / PAGE_SIZE),
        ProcFile::Meminfo => format!(
            "MemTotal:       {limit_kb} kB\nMemFree:        {} kB\nMemAvailable:   {} kB\nBuffers:        0 kB\nCached:         0 kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\n",
            limit_kb.saturating_sub(used_kb),
            limit_kb.saturating_sub(used_kb)
        ),
        ProcFile::Cpuinfo => "processor\t: 0\nvendor_id\t: zeroboot\ncpu family\t: 6\nmodel name\t: zeroboot virtual CPU\ncpu cores\t: 1\nsiblings\t: 1\n\n".to_string(),
        ProcFile::Uptime => {
            let up = crate::syscalls::uptime_ns(ctx) as f64 / 1e9;
            format!("{up:.2} {up:.2}\n")
        }
        ProcFile::Loadavg => "0.00 0.00 0.00 1/1 1\n".to_string(),
        ProcFile::Version => format!("Linux version {} (zeroboot) #1 SMP\n", crate::syscalls::KERNEL_RELEASE),
        ProcFile::Mounts => "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n".to_string(),
        ProcFile::Text(t) => t.to_string(),
    };
    s.into_bytes()
}

fn nul_joined(v: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in v {
        out.extend_from_slice(a);
        out.push(0);
    }
    out
}
