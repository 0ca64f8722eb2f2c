//! Loading an ELF program into a fresh address space: the executable's
//! PT_LOAD segments, its interpreter (ld.so) when it has one, and the
//! initial stack with argv, envp and the auxiliary vector.

use std::sync::Arc;

use goblin::elf::header::{EM_X86_64, ET_DYN, ET_EXEC};
use goblin::elf::program_header::{ProgramHeader, PF_R, PF_W, PF_X, PT_INTERP, PT_LOAD, PT_PHDR};
use goblin::elf::Header;
use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::PAGE_SIZE;
use zeroboot_vmm::GuestMemory;

use crate::kernel::Kernel;
use crate::mm::{page_down, page_up, Backing, FileContents, PIE_BASE, STACK_TOP};
use crate::vfs::{Node, TmpContents};

/// Errors of loading a program.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: no such file in the sandbox's image")]
    NotFound(String),
    #[error("{0}: {1}")]
    Path(String, Errno),
    #[error("{0}: not an executable regular file")]
    NotExecutable(String),
    #[error("{0}: not a valid ELF file: {1}")]
    BadElf(String, String),
    #[error("{0}: unsupported ELF: {1}")]
    Unsupported(String, String),
    #[error("{0}: out of memory while loading (errno {1})")]
    Memory(String, Errno),
}

/// Where execution starts.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub rip: u64,
    pub rsp: u64,
}

/// Facts about the CPU the auxiliary vector reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuInfo {
    /// CPUID.1:EDX, as AT_HWCAP.
    pub hwcap: u64,
}

/// Size of the initially populated main stack.
const STACK_INITIAL: u64 = 132 << 10;
/// Most argument and environment bytes accepted (as ARG_MAX).
const ARG_MAX: usize = 2 << 20;

struct Elf {
    path: String,
    header: Header,
    phdrs: Vec<ProgramHeader>,
    contents: Arc<dyn FileContents>,
}

fn read_elf(k: &Kernel, path: &str) -> Result<Elf, LoadError> {
    let pv = k.proc_view();
    let l = k
        .vfs
        .resolve(&k.proc.cwd.clone(), path, true, &pv)
        .map_err(|e| match e {
            Errno::ENOENT => LoadError::NotFound(path.to_string()),
            e => LoadError::Path(path.to_string(), e),
        })?;
    let st = k.vfs.stat(&l.node);
    if st.st_mode & S_IFMT != S_IFREG
        || k.proc
            .cred
            .may(st.st_mode, st.st_uid, st.st_gid, crate::cred::Want::EXEC)
            .is_err()
    {
        return Err(LoadError::NotExecutable(path.to_string()));
    }
    let contents: Arc<dyn FileContents> = match &l.node {
        Node::Image(_) => k
            .vfs
            .image
            .open(&l.path)
            .map_err(|e| LoadError::Path(path.to_string(), Errno::from(e)))?,
        Node::TmpFile(ino) => Arc::new(TmpContents(
            k.vfs
                .tmp
                .inode(*ino)
                .map(|i| i.data.clone())
                .unwrap_or_default(),
        )),
        _ => return Err(LoadError::NotExecutable(path.to_string())),
    };
    let bad = |m: &str| LoadError::BadElf(path.to_string(), m.to_string());
    let mut hbuf = [0u8; 64];
    if contents.size() < 64 {
        return Err(bad("file too short"));
    }
    contents
        .read_at(0, &mut hbuf)
        .map_err(|e| bad(&e.to_string()))?;
    if &hbuf[..4] != b"\x7fELF" {
        return Err(bad("no ELF magic"));
    }
    let header = goblin::elf::Elf::parse_header(&hbuf).map_err(|e| bad(&e.to_string()))?;
    let uns = |m: &str| LoadError::Unsupported(path.to_string(), m.to_string());
    if header.e_ident[4] != 2 || header.e_ident[5] != 1 {
        return Err(uns("not a 64-bit little-endian ELF"));
    }
    if header.e_machine != EM_X86_64 {
        return Err(uns("not an x86-64 program"));
    }
    if header.e_type != ET_EXEC && header.e_type != ET_DYN {
        return Err(uns(
            "neither an executable nor a position-independent executable",
        ));
    }
    if header.e_phentsize as usize != 56 || header.e_phnum == 0 || header.e_phnum > 128 {
        return Err(bad("bad program header table"));
    }
    let ph_len = header.e_phnum as usize * 56;
    let ph_end = header
        .e_phoff
        .checked_add(ph_len as u64)
        .ok_or_else(|| bad("bad program header table"))?;
    if ph_end > contents.size() {
        return Err(bad("program headers past the end of the file"));
    }
    let mut pbuf = vec![0u8; ph_len];
    contents
        .read_at(header.e_phoff, &mut pbuf)
        .map_err(|e| bad(&e.to_string()))?;
    let ctx = goblin::container::Ctx::new(
        goblin::container::Container::Big,
        goblin::container::Endian::Little,
    );
    let phdrs = ProgramHeader::parse(&pbuf, 0, header.e_phnum as usize, ctx)
        .map_err(|e| bad(&e.to_string()))?;
    Ok(Elf {
        path: l.path,
        header,
        phdrs,
        contents,
    })
}

fn prot_of(flags: u32) -> u64 {
    let mut p = 0;
    if flags & PF_R != 0 {
        p |= PROT_READ;
    }
    if flags & PF_W != 0 {
        p |= PROT_WRITE;
    }
    if flags & PF_X != 0 {
        p |= PROT_EXEC;
    }
    p
}

/// Map the PT_LOAD segments at `bias` (or a free place for ET_DYN when
/// `bias` is None). Returns (bias, end of the highest segment).
fn map_segments(
    k: &mut Kernel,
    mem: &GuestMemory,
    elf: &Elf,
    bias: Option<u64>,
) -> Result<(u64, u64), LoadError> {
    let path = elf.path.clone();
    let bad = |m: &str| LoadError::BadElf(path.clone(), m.to_string());
    let loads: Vec<&ProgramHeader> = elf.phdrs.iter().filter(|p| p.p_type == PT_LOAD).collect();
    if loads.is_empty() {
        return Err(bad("no loadable segments"));
    }
    let lo = loads
        .iter()
        .map(|p| page_down(p.p_vaddr))
        .min()
        .unwrap_or(0);
    let hi = loads
        .iter()
        .map(|p| p.p_vaddr.checked_add(p.p_memsz))
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max())
        .and_then(page_up)
        .ok_or_else(|| bad("segment addresses overflow"))?;
    if hi - lo > 1 << 36 {
        return Err(bad("segments span more than 64 GiB"));
    }
    // The bias is an offset modulo 2^64 (segments above where they are
    // placed give a "negative" one), as in Linux: wrapping arithmetic.
    let bias = match (elf.header.e_type, bias) {
        (ET_EXEC, _) => 0,
        (_, Some(b)) => b.wrapping_sub(lo),
        (_, None) => {
            let at =
                k.mm.find_free(0, hi - lo)
                    .map_err(|e| LoadError::Memory(path.clone(), e))?;
            at.wrapping_sub(lo)
        }
    };
    let mem_err = |e: Errno| LoadError::Memory(path.clone(), e);
    for p in loads {
        if p.p_filesz > p.p_memsz {
            return Err(bad("segment file size exceeds its memory size"));
        }
        if p.p_vaddr % PAGE_SIZE != p.p_offset % PAGE_SIZE {
            return Err(bad(
                "segment offset and address disagree modulo the page size",
            ));
        }
        if p.p_offset
            .checked_add(p.p_filesz)
            .is_none_or(|e| e > elf.contents.size())
        {
            return Err(bad("segment extends past the end of the file"));
        }
        let prot = prot_of(p.p_flags);
        let start = bias.wrapping_add(p.p_vaddr);
        let map_start = page_down(start);
        let file_end = start + p.p_filesz;
        let mem_end = start + p.p_memsz;
        let name: Arc<str> = Arc::from(elf.path.as_str());
        if p.p_filesz > 0 {
            let len = page_up(file_end).ok_or_else(|| bad("overflow"))? - map_start;
            k.mm.map(
                mem,
                map_start,
                len,
                prot,
                Backing::File {
                    data: elf.contents.clone(),
                    offset: page_down(p.p_offset),
                },
                name.clone(),
                false,
            )
            .map_err(mem_err)?;
            // With a .bss, the rest of the last file page is zeroed to the
            // page end, as Linux's padzero does (ld.so's early allocator
            // relies on it).
            let tail = page_up(file_end).ok_or_else(|| bad("overflow"))? - file_end;
            if tail > 0 && p.p_memsz > p.p_filesz {
                k.mm.zero_user(mem, file_end, tail).map_err(mem_err)?;
            }
        }
        let anon_start = page_up(file_end).ok_or_else(|| bad("overflow"))?;
        let anon_end = page_up(mem_end).ok_or_else(|| bad("overflow"))?;
        if anon_end > anon_start && p.p_memsz > 0 {
            let start = if p.p_filesz == 0 {
                map_start
            } else {
                anon_start
            };
            k.mm.map(
                mem,
                start,
                anon_end - start,
                prot,
                Backing::Anon,
                name,
                false,
            )
            .map_err(mem_err)?;
        }
    }
    Ok((bias, bias.wrapping_add(hi)))
}

/// Follow `#!` lines: for a script, the program to load and its argv
/// (interpreter, optional argument, script path, the rest of argv), as
/// Linux's binfmt_script does, up to 4 levels deep.
pub fn interpret_script(
    k: &Kernel,
    path: &str,
    argv: Vec<Vec<u8>>,
) -> Result<(String, Vec<Vec<u8>>), LoadError> {
    let mut path = path.to_string();
    let mut argv = argv;
    for _ in 0..4 {
        let pv = k.proc_view();
        let l = k
            .vfs
            .resolve(&k.proc.cwd.clone(), &path, true, &pv)
            .map_err(|e| match e {
                Errno::ENOENT => LoadError::NotFound(path.clone()),
                e => LoadError::Path(path.clone(), e),
            })?;
        // A script needs the execute permission too (its interpreter is
        // checked when loaded).
        let st = k.vfs.stat(&l.node);
        if st.st_mode & S_IFMT == S_IFREG
            && k.proc
                .cred
                .may(st.st_mode, st.st_uid, st.st_gid, crate::cred::Want::EXEC)
                .is_err()
        {
            return Err(LoadError::NotExecutable(path.clone()));
        }
        let mut head = [0u8; 256];
        let n = match &l.node {
            Node::Image(m) if m.file_type() == S_IFREG => {
                let f = k
                    .vfs
                    .image
                    .open(&l.path)
                    .map_err(|e| LoadError::Path(path.clone(), Errno::from(e)))?;
                FileContents::read_at(&*f, 0, &mut head)
                    .map_err(|e| LoadError::Path(path.clone(), Errno::from(e)))?;
                (f.size() as usize).min(head.len())
            }
            Node::TmpFile(ino) => {
                let d = k
                    .vfs
                    .tmp
                    .inode(*ino)
                    .map(|i| i.data.clone())
                    .unwrap_or_default();
                let n = d.len().min(head.len());
                head[..n].copy_from_slice(&d[..n]);
                n
            }
            _ => return Ok((path, argv)),
        };
        if n < 2 || &head[..2] != b"#!" {
            return Ok((path, argv));
        }
        let line_end = head[..n].iter().position(|&c| c == b'\n').unwrap_or(n);
        let line = String::from_utf8_lossy(&head[2..line_end])
            .trim()
            .to_string();
        let mut parts = line.splitn(2, [' ', '\t']);
        let interp = parts.next().unwrap_or("").to_string();
        if interp.is_empty() {
            return Err(LoadError::BadElf(path, "empty #! line".into()));
        }
        let mut new_argv = vec![interp.as_bytes().to_vec()];
        if let Some(arg) = parts.next().map(str::trim).filter(|a| !a.is_empty()) {
            new_argv.push(arg.as_bytes().to_vec());
        }
        new_argv.push(path.as_bytes().to_vec());
        new_argv.extend(argv.into_iter().skip(1));
        argv = new_argv;
        path = interp;
    }
    Err(LoadError::Path(path, Errno::ELOOP))
}

/// Load `path` with `argv` and `envp` into the (empty) address space of
/// `k`, and build its initial stack.
pub fn load(
    k: &mut Kernel,
    mem: &GuestMemory,
    path: &str,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    cpu: CpuInfo,
    random: [u8; 16],
) -> Result<Entry, LoadError> {
    let exe = read_elf(k, path)?;
    let mem_err = |e: Errno| LoadError::Memory(path.to_string(), e);
    let interp = match exe.phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        Some(p) => {
            if p.p_filesz == 0 || p.p_filesz > 4096 {
                return Err(LoadError::BadElf(path.to_string(), "bad PT_INTERP".into()));
            }
            let mut b = vec![0u8; p.p_filesz as usize];
            exe.contents
                .read_at(p.p_offset, &mut b)
                .map_err(|e| LoadError::BadElf(path.to_string(), e.to_string()))?;
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            let ipath = String::from_utf8(b[..end].to_vec()).map_err(|_| {
                LoadError::BadElf(path.to_string(), "interpreter path is not UTF-8".into())
            })?;
            Some(read_elf(k, &ipath)?)
        }
        None => None,
    };
    let exe_bias = if exe.header.e_type == ET_DYN {
        Some(PIE_BASE)
    } else {
        None
    };
    let (bias, end) = map_segments(k, mem, &exe, exe_bias)?;
    k.mm.brk_start = end;
    k.mm.brk = end;
    let (base, entry) = match &interp {
        Some(i) => {
            let (ib, _) = map_segments(k, mem, i, None)?;
            (ib, ib.wrapping_add(i.header.e_entry))
        }
        // An entry point anywhere (even outside user space) is the
        // program's problem: it faults there, as on Linux.
        None => (0, bias.wrapping_add(exe.header.e_entry)),
    };
    let vdso = crate::vdso::map(k, mem).map_err(mem_err)?;
    let phdr = exe
        .phdrs
        .iter()
        .find(|p| p.p_type == PT_PHDR)
        .map(|p| p.p_vaddr)
        .or_else(|| {
            exe.phdrs
                .iter()
                .find(|p| {
                    p.p_type == PT_LOAD
                        && p.p_offset <= exe.header.e_phoff
                        && exe.header.e_phoff < p.p_offset + p.p_filesz
                })
                .map(|p| p.p_vaddr + (exe.header.e_phoff - p.p_offset))
        })
        .unwrap_or(0)
        .wrapping_add(bias);

    // The main stack.
    let stack_lo = STACK_TOP - STACK_INITIAL;
    k.mm.map(
        mem,
        stack_lo,
        STACK_INITIAL,
        PROT_READ | PROT_WRITE,
        Backing::Anon,
        Arc::from("[stack]"),
        true,
    )
    .map_err(mem_err)?;
    let total: usize = argv.iter().chain(envp).map(|a| a.len() + 1).sum();
    if total > ARG_MAX {
        return Err(LoadError::Memory(path.to_string(), Errno::E2BIG));
    }
    let mut sp = STACK_TOP;
    let mut push_bytes = |k: &mut Kernel, b: &[u8]| -> Result<u64, Errno> {
        sp -= b.len() as u64;
        k.mm.write(mem, sp, b)?;
        Ok(sp)
    };
    let mut execfn = path.as_bytes().to_vec();
    execfn.push(0);
    let execfn_at = push_bytes(k, &execfn).map_err(mem_err)?;
    let mut env_ptrs = Vec::new();
    for e in envp.iter().rev() {
        let mut s = e.clone();
        s.push(0);
        env_ptrs.push(push_bytes(k, &s).map_err(mem_err)?);
    }
    env_ptrs.reverse();
    let mut arg_ptrs = Vec::new();
    for a in argv.iter().rev() {
        let mut s = a.clone();
        s.push(0);
        arg_ptrs.push(push_bytes(k, &s).map_err(mem_err)?);
    }
    arg_ptrs.reverse();
    let platform_at = push_bytes(k, b"x86_64\0").map_err(mem_err)?;
    let random_at = push_bytes(k, &random).map_err(mem_err)?;
    let auxv: Vec<(u64, u64)> = vec![
        (AT_PHDR, phdr),
        (AT_PHENT, 56),
        (AT_PHNUM, exe.header.e_phnum as u64),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, base),
        (AT_FLAGS, 0),
        (AT_ENTRY, bias.wrapping_add(exe.header.e_entry)),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_SECURE, 0),
        (AT_HWCAP, cpu.hwcap),
        (AT_HWCAP2, 0),
        (AT_CLKTCK, 100),
        (AT_PLATFORM, platform_at),
        (AT_RANDOM, random_at),
        (AT_EXECFN, execfn_at),
        (AT_SYSINFO_EHDR, vdso),
        (AT_NULL, 0),
    ];
    let words = 1 + arg_ptrs.len() + 1 + env_ptrs.len() + 1 + auxv.len() * 2;
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(argv.len() as u64);
    table.extend(&arg_ptrs);
    table.push(0);
    table.extend(&env_ptrs);
    table.push(0);
    for (t, v) in auxv {
        table.push(t);
        table.push(v);
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut rsp = (sp - bytes.len() as u64) & !15;
    if rsp < stack_lo + PAGE_SIZE {
        return Err(LoadError::Memory(path.to_string(), Errno::E2BIG));
    }
    k.mm.write(mem, rsp, &bytes).map_err(mem_err)?;
    // Keep the 16-byte alignment the ABI requires at argc.
    rsp &= !15;
    k.proc.exe = exe.path.clone();
    k.proc.argv = argv.to_vec();
    k.proc.envp = envp.to_vec();
    Ok(Entry { rip: entry, rsp })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::vfs::Image;
    use crate::{Sandbox, SandboxConfig};

    /// `mov eax, 60; xor edi, edi; syscall`
    const EXIT0: &[u8] = b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05";

    /// A one-segment ELF (plus PT_INTERP `interp` when given, and a
    /// PT_PHDR at `phdr_vaddr` when given) holding EXIT0.
    fn elf(
        e_type: u16,
        entry: u64,
        vaddr: u64,
        interp: Option<&[u8]>,
        phdr: Option<u64>,
    ) -> Vec<u8> {
        let phnum = 1 + interp.is_some() as u16 + phdr.is_some() as u16;
        let hl = 64 + 56 * phnum as u64;
        let interp = interp.unwrap_or(b"");
        let total = hl + interp.len() as u64 + EXIT0.len() as u64;
        let mut b = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        b.extend_from_slice(&e_type.to_le_bytes());
        b.extend_from_slice(&EM_X86_64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&entry.to_le_bytes());
        b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for h in [64u16, 56, phnum, 64, 0, 0] {
            b.extend_from_slice(&h.to_le_bytes());
        }
        let ph = |b: &mut Vec<u8>, t: u32, flags: u32, off: u64, va: u64, len: u64| {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            for w in [off, va, va, len, len, 0x1000] {
                b.extend_from_slice(&w.to_le_bytes());
            }
        };
        if let Some(va) = phdr {
            ph(&mut b, PT_PHDR, PF_R, 64, va, 56 * phnum as u64);
        }
        if !interp.is_empty() {
            ph(&mut b, PT_INTERP, PF_R, hl, vaddr + hl, interp.len() as u64);
        }
        ph(&mut b, PT_LOAD, PF_R | PF_X, 0, vaddr, total);
        b.extend_from_slice(interp);
        b.extend_from_slice(EXIT0);
        b
    }

    /// Load `files` (path, bytes) with /prog as the program.
    fn load_files(files: &[(&str, Vec<u8>)]) -> Result<(Entry, Sandbox), LoadError> {
        let image = Arc::new(Image::empty().unwrap());
        let mut sb = Sandbox::new(SandboxConfig::new(image)).unwrap();
        for (p, data) in files {
            sb.add_file(p, data.clone(), 0o755).unwrap();
        }
        let argv = [b"/prog".to_vec()];
        let e = load(
            &mut sb.k,
            &sb.mem,
            "/prog",
            &argv,
            &[],
            CpuInfo::default(),
            [0; 16],
        )?;
        Ok((e, sb))
    }

    /// Found by `cargo fuzz run elf_loader`: a position-independent
    /// program whose segments lie above the load base made the bias
    /// negative, and its computation overflowed (a VMM panic in builds
    /// with overflow checks). It is an offset modulo 2^64, as in Linux.
    #[test]
    fn pie_segments_above_the_load_base_load_at_the_base() {
        let va = 0x7f00_0000_0000;
        let (e, sb) = load_files(&[("/prog", elf(ET_DYN, va + 0x78, va, None, None))]).unwrap();
        assert_eq!(e.rip, PIE_BASE + 0x78);
        assert!(sb.k.mm.vmas.iter().any(|v| v.start == PIE_BASE));
    }

    #[test]
    fn the_fuzzer_found_elf_is_refused_without_a_panic() {
        // fuzz/artifacts/elf_loader/crash-7eed7219…: the segment above is
        // also larger in the file than in memory.
        let mut b = elf(ET_DYN, 0x78, 0x00ff_ffff_ff00_0000, None, None);
        b[64 + 32..64 + 40].copy_from_slice(&0x91u64.to_le_bytes());
        b[64 + 40..64 + 48].copy_from_slice(&0x81u64.to_le_bytes());
        assert!(matches!(
            load_files(&[("/prog", b)]),
            Err(LoadError::BadElf(..))
        ));
    }

    #[test]
    fn entry_points_and_headers_anywhere_do_not_overflow() {
        // A program entry, an interpreter entry and a PT_PHDR address
        // that overflow when the load bias is added: the program is
        // loaded and faults where it jumps, as on Linux.
        let huge = u64::MAX - 8;
        let (e, _) = load_files(&[("/prog", elf(ET_DYN, huge, 0, None, Some(huge)))]).unwrap();
        assert_eq!(e.rip, PIE_BASE.wrapping_add(huge));
        let (e, sb) = load_files(&[
            (
                "/prog",
                elf(ET_EXEC, 0x40_0000, 0x40_0000, Some(b"/i\0"), None),
            ),
            ("/i", elf(ET_DYN, huge, 0, None, None)),
        ])
        .unwrap();
        // The interpreter's base plus its entry, modulo 2^64.
        let base = e.rip.wrapping_sub(huge);
        assert!(sb.k.mm.vmas.iter().any(|v| v.start == base), "{:#x}", e.rip);
    }
}
