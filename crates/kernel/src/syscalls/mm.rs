//! Memory system calls: brk, mmap and friends.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::{PAGE_SIZE, USER_END};
use zeroboot_vmm::paging::pte;

use super::{Args, Ctx, SysResult};
use crate::fd::FileKind;
use crate::mm::{page_up, Backing};

pub fn brk(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx.k.mm.set_brk(ctx.mem, a.ptr(0)))
}

pub fn mmap(ctx: &mut Ctx, a: Args) -> SysResult {
    let (addr, len, prot, flags, fd, off) =
        (a.u64(0), a.u64(1), a.u64(2), a.u64(3), a.fd(4), a.u64(5));
    if len == 0 || off % PAGE_SIZE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let len = page_up(len)
        .filter(|&l| l <= USER_END)
        .ok_or(Errno::ENOMEM)?;
    let kind = flags & MAP_TYPE;
    if !matches!(kind, MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE) {
        return Err(Errno::EINVAL.into());
    }
    if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    let shared = kind != MAP_PRIVATE;
    let (backing, name): (Backing, Arc<str>) = if flags & MAP_ANONYMOUS != 0 {
        if shared {
            let id = ctx.k.mm.frames.shm_create(None);
            (
                Backing::Shared { id, offset: 0 },
                Arc::from("/dev/zero (deleted)"),
            )
        } else {
            (Backing::Anon, Arc::from(""))
        }
    } else {
        let f = ctx.k.fds.get(fd)?;
        if !f.readable() {
            return Err(Errno::EACCES.into());
        }
        if shared && prot & PROT_WRITE != 0 && !f.writable() {
            return Err(Errno::EACCES.into());
        }
        let path: Arc<str> = Arc::from(f.path.as_str());
        match f.kind.clone() {
            // An overlay file: its pages become a shared object.
            FileKind::Tmp(ino) if shared => {
                let id = crate::shm::file_object(ctx.k, ctx.mem, ino)?;
                (Backing::Shared { id, offset: off }, path)
            }
            kind => {
                let (backing, name) = kind.with_ops(|o| o.mmap(ctx, off))?;
                let backing = match backing {
                    // MAP_SHARED of /dev/zero: shared anonymous memory.
                    Backing::Anon if shared => Backing::Shared {
                        id: ctx.k.mm.frames.shm_create(None),
                        offset: 0,
                    },
                    // The image never changes: a copy is as good as shared
                    // for reading (writing was refused above).
                    Backing::File { .. } if shared && prot & PROT_WRITE != 0 => {
                        tracing::debug!(path = %path, "shared writable file mapping refused");
                        return Err(Errno::ENODEV.into());
                    }
                    b => b,
                };
                (backing, name.unwrap_or(path))
            }
        }
    };
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if addr % PAGE_SIZE != 0 || addr < crate::mm::MMAP_MIN.min(PAGE_SIZE) {
            return Err(Errno::EINVAL.into());
        }
        if addr.checked_add(len).is_none_or(|e| e > USER_END) {
            return Err(Errno::ENOMEM.into());
        }
        if flags & MAP_FIXED == 0 && ctx.k.mm.vmas.any_in(addr, addr + len) {
            return Err(Errno::EEXIST.into());
        }
        addr
    } else {
        ctx.k.mm.find_free(addr, len)?
    };
    let grows_down = flags & MAP_GROWSDOWN != 0;
    let id = backing.shared_id();
    let r = ctx
        .k
        .mm
        .map(ctx.mem, start, len, prot, backing, name, grows_down);
    if let (Err(_), Some(id)) = (&r, id) {
        // An object made for this call and never mapped.
        ctx.k.mm.frames.shm_release_unused(id);
    }
    r?;
    Ok(start)
}

pub fn munmap(ctx: &mut Ctx, a: Args) -> SysResult {
    if !a.u64(0).is_multiple_of(PAGE_SIZE) || a.u64(1) == 0 {
        return Err(Errno::EINVAL.into());
    }
    ctx.k.mm.unmap(ctx.mem, a.ptr(0), a.u64(1))?;
    Ok(0)
}

pub fn mprotect(ctx: &mut Ctx, a: Args) -> SysResult {
    if !a.u64(0).is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL.into());
    }
    if a.u64(2) & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
        return Err(Errno::EINVAL.into());
    }
    if a.u64(1) == 0 {
        return Ok(0);
    }
    ctx.k
        .mm
        .protect(ctx.mem, a.ptr(0), a.u64(1), a.u64(2) & 7)?;
    Ok(0)
}

pub fn mremap(ctx: &mut Ctx, a: Args) -> SysResult {
    Ok(ctx
        .k
        .mm
        .remap(ctx.mem, a.ptr(0), a.u64(1), a.u64(2), a.u64(3), a.u64(4))?)
}

pub fn madvise(ctx: &mut Ctx, a: Args) -> SysResult {
    let (start, len, advice) = (a.u64(0), a.u64(1), a.u64(2));
    if start % PAGE_SIZE != 0 {
        return Err(Errno::EINVAL.into());
    }
    if len == 0 {
        return Ok(0);
    }
    let end = page_up(len)
        .and_then(|l| start.checked_add(l))
        .ok_or(Errno::EINVAL)?;
    let known = matches!(
        advice,
        MADV_NORMAL
            | MADV_RANDOM
            | MADV_SEQUENTIAL
            | MADV_WILLNEED
            | MADV_DONTNEED
            | MADV_FREE
            | MADV_DONTFORK
            | MADV_DOFORK
            | MADV_MERGEABLE
            | MADV_UNMERGEABLE
            | MADV_HUGEPAGE
            | MADV_NOHUGEPAGE
            | MADV_DONTDUMP
            | MADV_DODUMP
            | MADV_WIPEONFORK
            | MADV_KEEPONFORK
            | MADV_COLD
            | MADV_PAGEOUT
    );
    if !known {
        return Err(Errno::EINVAL.into());
    }
    // Linux answers ENOMEM when part of the range is unmapped.
    let mut cursor = start;
    for v in ctx.k.mm.vmas.overlapping(start, end) {
        if v.start > cursor {
            return Err(Errno::ENOMEM.into());
        }
        cursor = v.end;
    }
    if cursor < end {
        return Err(Errno::ENOMEM.into());
    }
    if advice == MADV_DONTNEED {
        ctx.k.mm.dontneed(ctx.mem, start, end - start)?;
    }
    // MADV_FREE lets the kernel drop the pages "at some point"; keeping them
    // is a valid choice. The rest are hints.
    Ok(0)
}

pub fn msync(ctx: &mut Ctx, a: Args) -> SysResult {
    if !a.u64(0).is_multiple_of(PAGE_SIZE) || a.u64(2) & !7 != 0 {
        return Err(Errno::EINVAL.into());
    }
    let end = a.u64(0).saturating_add(a.u64(1));
    if a.u64(1) > 0 && !ctx.k.mm.vmas.any_in(a.u64(0), end) {
        return Err(Errno::ENOMEM.into());
    }
    // Reads already see the mapping's pages; writing them back into the
    // file's bytes makes them whole for the host's file API too.
    let ids: Vec<u64> = ctx
        .k
        .mm
        .vmas
        .overlapping(a.u64(0), end)
        .iter()
        .filter_map(|v| v.backing.shared_id())
        .collect();
    for id in ids {
        if let Some(ino) = ctx.k.mm.frames.shm().get(id).and_then(|o| o.file) {
            crate::shm::sync(ctx.k, ctx.mem, ino);
        }
    }
    Ok(0)
}

pub fn mincore(ctx: &mut Ctx, a: Args) -> SysResult {
    let (start, len, vec) = (a.u64(0), a.u64(1), a.u64(2));
    if start % PAGE_SIZE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let pages = page_up(len).ok_or(Errno::ENOMEM)? / PAGE_SIZE;
    if pages > (1 << 20) {
        return Err(Errno::ENOMEM.into());
    }
    let mut out = vec![0u8; pages as usize];
    for (i, b) in out.iter_mut().enumerate() {
        let va = start + i as u64 * PAGE_SIZE;
        if ctx.k.mm.vmas.find(va).is_none() {
            return Err(Errno::ENOMEM.into());
        }
        if ctx
            .k
            .mm
            .pt
            .translate(ctx.mem, va)
            .is_some_and(|e| e & pte::PRESENT != 0)
        {
            *b = 1;
        }
    }
    ctx.k.mm.write(ctx.mem, vec, &out)?;
    Ok(0)
}

pub fn mlock(_ctx: &mut Ctx, _a: Args) -> SysResult {
    // Guest memory is never swapped out: every page is already locked.
    Ok(0)
}

// NUMA memory policies, answered as a Linux on a machine with one node
// (node 0) answers them: every policy naming only node 0 is valid and
// places memory exactly where the default would.
const MPOL_DEFAULT: u64 = 0;
const MPOL_PREFERRED: u64 = 1;
const MPOL_BIND: u64 = 2;
const MPOL_INTERLEAVE: u64 = 3;
const MPOL_LOCAL: u64 = 4;
const MPOL_PREFERRED_MANY: u64 = 5;
const MPOL_MODE_FLAGS: u64 = (1 << 15) | (1 << 14) | (1 << 13);
const MPOL_F_NODE: u64 = 1;
const MPOL_F_ADDR: u64 = 2;
const MPOL_F_MEMS_ALLOWED: u64 = 4;
/// Most node-mask bits read (Linux's MAX_NUMNODES on Debian's kernel).
const MAX_NUMNODES: u64 = 1024;

/// A guest node mask of `maxnode` bits (Linux reads `maxnode - 1`).
fn read_nodemask(ctx: &mut Ctx, addr: u64, maxnode: u64) -> Result<u64, Errno> {
    let bits = maxnode.saturating_sub(1);
    if addr == 0 || bits == 0 {
        return Ok(0);
    }
    if bits > MAX_NUMNODES.max(PAGE_SIZE * 8) {
        return Err(Errno::EINVAL);
    }
    let words = bits.div_ceil(64) as usize;
    let raw = ctx.k.mm.read_vec(ctx.mem, addr, words * 8)?;
    let mut mask = 0u64;
    for (i, w) in raw.chunks_exact(8).enumerate() {
        let mut v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        let first = i as u64 * 64;
        if first + 64 > bits {
            v &= (1u64 << (bits - first)) - 1;
        }
        if i == 0 {
            mask = v;
        } else if v != 0 {
            return Err(Errno::EINVAL);
        }
    }
    // Only node 0 exists.
    if mask & !1 != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(mask)
}

/// Check a policy as Linux's mpol_new does; the mode with its flags.
fn check_policy(mode: u64, mask: u64) -> Result<u64, Errno> {
    let flags = mode & MPOL_MODE_FLAGS;
    let base = mode & !MPOL_MODE_FLAGS;
    match base {
        MPOL_DEFAULT | MPOL_LOCAL if mask != 0 => Err(Errno::EINVAL),
        MPOL_DEFAULT | MPOL_LOCAL | MPOL_PREFERRED => Ok(base | flags),
        MPOL_BIND | MPOL_INTERLEAVE | MPOL_PREFERRED_MANY if mask == 0 => Err(Errno::EINVAL),
        MPOL_BIND | MPOL_INTERLEAVE | MPOL_PREFERRED_MANY => Ok(base | flags),
        _ => Err(Errno::EINVAL),
    }
}

pub fn set_mempolicy(ctx: &mut Ctx, a: Args) -> SysResult {
    let mask = read_nodemask(ctx, a.ptr(1), a.u64(2))?;
    let mode = check_policy(a.u64(0), mask)?;
    ctx.k.thread_mut().mempolicy = if mode == MPOL_DEFAULT {
        None
    } else {
        Some((mode, mask))
    };
    Ok(0)
}

pub fn mbind(ctx: &mut Ctx, a: Args) -> SysResult {
    const MPOL_MF_VALID: u64 = 1 | 2 | 4 | 8;
    let (start, len, mode, flags) = (a.u64(0), a.u64(1), a.u64(2), a.u64(5));
    if !start.is_multiple_of(PAGE_SIZE) || flags & !MPOL_MF_VALID != 0 {
        return Err(Errno::EINVAL.into());
    }
    let mask = read_nodemask(ctx, a.ptr(3), a.u64(4))?;
    check_policy(mode, mask)?;
    let end = page_up(len)
        .and_then(|l| start.checked_add(l))
        .ok_or(Errno::EINVAL)?;
    // Every page of the range must be mapped (a hole is EFAULT).
    let mut at = start;
    while at < end {
        let v = ctx.k.mm.vmas.find(at).ok_or(Errno::EFAULT)?;
        at = v.end;
    }
    Ok(0)
}

pub fn get_mempolicy(ctx: &mut Ctx, a: Args) -> SysResult {
    let (mode_out, mask_out, maxnode, addr, flags) =
        (a.ptr(0), a.ptr(1), a.u64(2), a.u64(3), a.u64(4));
    if flags & !(MPOL_F_NODE | MPOL_F_ADDR | MPOL_F_MEMS_ALLOWED) != 0 {
        return Err(Errno::EINVAL.into());
    }
    if mask_out != 0 && maxnode < 1 {
        return Err(Errno::EINVAL.into());
    }
    let thread = ctx.k.thread().mempolicy;
    let (mode, mask) = if flags & MPOL_F_MEMS_ALLOWED != 0 {
        if flags & (MPOL_F_NODE | MPOL_F_ADDR) != 0 {
            return Err(Errno::EINVAL.into());
        }
        (0, 1)
    } else if flags & MPOL_F_ADDR != 0 {
        if ctx.k.mm.vmas.find(addr).is_none() {
            return Err(Errno::EFAULT.into());
        }
        // mbind's policies are not recorded: a range reports the default,
        // and every page is on node 0.
        (0, 0)
    } else if addr != 0 {
        return Err(Errno::EINVAL.into());
    } else if flags & MPOL_F_NODE != 0 {
        // The node interleaving would use next: only with MPOL_INTERLEAVE.
        match thread {
            Some((m, _)) if m & !MPOL_MODE_FLAGS == MPOL_INTERLEAVE => (0, 0),
            _ => return Err(Errno::EINVAL.into()),
        }
    } else {
        thread.unwrap_or((MPOL_DEFAULT, 0))
    };
    if mode_out != 0 {
        ctx.k.mm.write_obj(ctx.mem, mode_out, &(mode as i32))?;
    }
    if mask_out != 0 {
        let words = maxnode.div_ceil(64).min(MAX_NUMNODES / 64) as usize;
        let mut buf = vec![0u8; words * 8];
        buf[..8].copy_from_slice(&mask.to_le_bytes());
        ctx.k.mm.write(ctx.mem, mask_out, &buf)?;
    }
    Ok(0)
}
