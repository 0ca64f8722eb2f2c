//! The sandbox's memory manager: VMAs, the page tables derived from them,
//! the frame allocator, and the rules for changing live page-table entries.
//!
//! Population is eager for small mappings (so ring 3 rarely faults) and on
//! fault, in chunks, for large ones. Changing or removing a present entry
//! that the guest has used (Accessed bit set) is also queued for the ring-0
//! PTE writer, which the sandbox runs before ring 3 resumes (DESIGN.md §1);
//! where many entries of one table change at once, one misaligned write
//! into the table drops all of KVM's shadow of it instead.

use serde::{Deserialize, Serialize};
mod frames;
mod shared;
mod uaccess;
pub mod vma;

use std::collections::BTreeSet;
use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::{
    physmap, PAGE_SIZE, PHYSMAP_BASE, PHYSMAP_PML4_INDEX, PML4_GPA, USER_END,
};
use zeroboot_vmm::paging::Leaf;
use zeroboot_vmm::paging::{index, pte};
use zeroboot_vmm::{GuestMemory, PageTables, PagingError};

pub use frames::Frames;
pub use shared::{SharedObject, SharedObjects};
pub use vma::{Backing, FileContents, Vma, Vmas};

/// Lowest address a mapping may get (as vm.mmap_min_addr).
pub const MMAP_MIN: u64 = 0x10000;
/// Top of the main stack (Linux without ASLR).
pub const STACK_TOP: u64 = USER_END;
/// Most the main stack may grow (RLIMIT_STACK).
pub const STACK_LIMIT: u64 = 8 << 20;
/// Top of the region mmap places mappings in (below the stack's gap).
pub const MMAP_TOP: u64 = 0x7fff_f7ff_f000;
/// Where a PIE executable is loaded (ELF_ET_DYN_BASE without ASLR).
pub const PIE_BASE: u64 = 0x5555_5555_4000;
/// Memory beyond a sandbox's limit its page tables may take.
pub const TABLE_ROOM: u64 = 16 << 20;

/// Anonymous mappings up to this size are populated when mapped.
const EAGER_ANON: u64 = 32 << 20;
/// File mappings up to this size are copied in when mapped.
const EAGER_FILE: u64 = 256 << 10;
/// Pages populated around a fault in an anonymous mapping (aligned chunk).
const FAULT_AROUND_ANON: u64 = 2 << 20;
/// Bytes populated around a fault in a file mapping.
const FAULT_AROUND_FILE: u64 = 64 << 10;
/// Bytes populated around a fault in an executable file mapping (program
/// text): a fault costs ~90 us here (exit, copy, resume) against ~1 us per
/// page copied, and a program touches most of its text's 64 KiB chunks
/// (`bash -c` touched 28 of ~36 in bash's and libc's), so text comes in
/// larger chunks.
const FAULT_AROUND_EXEC: u64 = 512 << 10;
/// Where the ring-0 writer writes into a dead page table to make KVM drop
/// its shadows: misaligned, across entries 0 and 1 (see `user_tables`).
const TABLE_ZAP_OFFSET: u64 = 1;
/// Used entries of one table changed at once from which the table's whole
/// shadow may be dropped with one ring-0 write (`table_zap_pays`) instead
/// of one write per entry.
const TABLE_ZAP_MIN_USED: usize = 8;
/// MADV_DONTNEED zeroes in place up to this many pages, and unmaps beyond.
const DONTNEED_ZERO_PAGES: u64 = 64;

pub fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

pub fn page_up(a: u64) -> Option<u64> {
    a.checked_add(PAGE_SIZE - 1).map(page_down)
}

/// Whether KVM may hold a translation of a leaf entry: present and used
/// (KVM sets Accessed when it shadows an entry).
fn shadowed(entry: u64) -> bool {
    entry & pte::PRESENT != 0 && entry & pte::ACCESSED != 0
}

/// Of a page-table page's entries, those KVM may have shadowed.
pub(crate) fn shadowed_entries(table: &[u8]) -> usize {
    table
        .chunks_exact(8)
        .filter(|e| shadowed(u64::from_le_bytes((*e).try_into().unwrap_or([0; 8]))))
        .count()
}

/// Whether dropping all of a table's shadow at once (one ring-0 write,
/// `table_zap`) costs less than a ring-0 write for each of `used` changed
/// entries, given the `still_used` entries it keeps. A write per entry is a
/// trapped write and an invlpg (~6.5 us here, measured on a 10 MiB munmap);
/// the zap is one such write, plus a first touch (~3 us) of each entry
/// still in use when it is next used.
pub(crate) fn table_zap_pays(used: usize, still_used: usize) -> bool {
    used >= TABLE_ZAP_MIN_USED && 2 * used > 2 + still_used
}

/// The ring-0 write that makes KVM drop every shadow of `table` (see
/// `AddressSpace::user_tables`); its value is filled in when it is made
/// (`take_pending`, or by the caller: the bytes it lands on, as they are).
pub(crate) fn table_zap(table: u64) -> PteWrite {
    (physmap(table) + TABLE_ZAP_OFFSET, 0, 0)
}

/// Result of a page fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The page is now mapped; resume.
    Resolved,
    /// No mapping allows the access: SIGSEGV (with the reason).
    Segv(&'static str),
    /// Memory limit reached while populating: the program is killed.
    OutOfMemory,
}

/// A page-table write that must go through the ring-0 PTE writer:
/// (entry address in the physmap, value, user address to invlpg).
pub type PteWrite = (u64, u64, u64);

/// A sandbox's address space.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressSpace {
    #[serde(with = "crate::persist::page_tables")]
    pub pt: PageTables,
    pub frames: Frames,
    pub vmas: Vmas,
    pub brk_start: u64,
    pub brk: u64,
    /// Bytes of private writable memory the program may commit.
    limit: u64,
    /// Writes for the PTE writer, flushed before ring 3 runs again.
    pending: Vec<PteWrite>,
    /// Where the vDSO's clock data page is mapped (0: none).
    #[serde(default)]
    pub vvar: u64,
    /// Times a mapping was refused for the memory limit.
    #[serde(default)]
    pub refused: u64,
    /// The shared objects this layout's VMAs map (each counted once in
    /// the object's mappers).
    #[serde(default)]
    shared: BTreeSet<u64>,
}

fn paging_err(e: PagingError) -> Errno {
    match e {
        PagingError::OutOfMemory => Errno::ENOMEM,
        _ => Errno::EFAULT,
    }
}

impl AddressSpace {
    /// An empty address space whose page tables are rooted at `root`.
    pub fn new(root: u64, frames: Frames, limit: u64) -> AddressSpace {
        AddressSpace {
            pt: PageTables::new(root),
            frames,
            vmas: Vmas::default(),
            brk_start: 0,
            brk: 0,
            limit,
            pending: Vec::new(),
            vvar: 0,
            refused: 0,
            shared: BTreeSet::new(),
        }
    }

    /// Whether committing `total` bytes would pass the memory limit
    /// (counted: executions report it).
    fn over_limit(&mut self, total: u64) -> bool {
        let over = total > self.limit;
        if over {
            self.refused += 1;
            tracing::debug!(
                total,
                limit = self.limit,
                "mapping refused for the memory limit"
            );
        }
        over
    }

    /// Exchange everything but the frame allocator with `other`: how a
    /// process's layout moves on and off the vCPU while the one frame
    /// allocator of the sandbox stays with the running process.
    pub fn swap_layout(&mut self, other: &mut AddressSpace) {
        std::mem::swap(self, other);
        std::mem::swap(&mut self.frames, &mut other.frames);
    }

    /// An empty layout for a new process: a fresh root table sharing the
    /// kernel half (the physmap) with every other.
    pub fn fresh_layout(&mut self, mem: &GuestMemory) -> Result<AddressSpace, Errno> {
        let root = self.frames.alloc(mem).ok_or(Errno::ENOMEM)?;
        self.frames.note_table();
        let slot = PHYSMAP_PML4_INDEX * 8;
        let e = mem.read_u64(PML4_GPA + slot).map_err(|_| Errno::EFAULT)?;
        mem.write_u64(root + slot, e).map_err(|_| Errno::EFAULT)?;
        Ok(AddressSpace::new(root, Frames::placeholder(), self.limit))
    }

    /// Free every frame of this layout (the process is gone, or its exec
    /// failed). User frames are free at once. Page-table frames of a
    /// layout that `ran` may be shadowed by KVM, which does not see host
    /// writes: they are retired until the ring-0 writer made KVM drop
    /// every shadow of them (`user_tables`), so that no stale shadow
    /// resurfaces when the frame comes back as data or as another table.
    /// Without that, every process that ever lived kept its tables, and a
    /// sandbox spawning processes in a loop ran out of memory.
    pub fn release(&mut self, mem: &GuestMemory, ran: bool) {
        let (tables, zaps) = self.user_tables(mem);
        self.release_user_frames(mem);
        if ran {
            self.frames.retire_tables(tables, zaps);
        } else {
            for f in tables {
                self.frames.free(f);
            }
        }
    }

    /// The page-table frames of this layout's user half (the root
    /// included), and for each one write for the ring-0 writer that makes
    /// KVM drop its shadows, deepest level first.
    ///
    /// The write is misaligned: 8 bytes at offset 1, across the first two
    /// (user) entries of the dead table. KVM's shadow MMU takes a
    /// misaligned write into a shadowed table as a sign that it is no
    /// longer a table and drops every shadow page of that frame at once
    /// (`detect_write_misaligned`), so a table costs one write instead of
    /// one per entry that was used (a `bash -c` left ~400, 4 ms here).
    /// Each table needs its own write: a shadow page orphaned by the
    /// clearing of its parent's entry stays cached by frame and would be
    /// found again (vmm test `a_misaligned_write_drops_a_whole_table_shadow`).
    /// Without shadow paging (EPT) only the TLB holds the dead tables'
    /// translations, and the CR3 switch away from a dead process, which
    /// every process switch relies on, drops them.
    fn user_tables(&self, mem: &GuestMemory) -> (Vec<u64>, Vec<PteWrite>) {
        // (level, table)
        let mut found: Vec<(u64, u64)> = vec![(4, self.pt.root())];
        // (table, level, first user address it maps)
        let mut todo = vec![(self.pt.root(), 4u64, 0u64)];
        while let Some((table, level, base)) = todo.pop() {
            if level == 1 {
                continue;
            }
            let span = 1u64 << (12 + 9 * (level - 1));
            // The root's upper half (the physmap) is shared: user half only.
            let n = if level == 4 {
                USER_END.div_ceil(span)
            } else {
                512
            };
            for i in 0..n {
                let Ok(e) = mem.read_u64(table + i * 8) else {
                    continue;
                };
                if e & pte::PRESENT == 0 {
                    continue;
                }
                let child = e & pte::ADDR_MASK;
                // The VMM wrote these tables; a frame outside memory or a
                // huge page would be its own bug: skip it.
                if e & pte::HUGE == 0 && mem.contains(child, PAGE_SIZE) {
                    found.push((level - 1, child));
                    todo.push((child, level - 1, base + i * span));
                }
            }
        }
        found.sort_by_key(|t| t.0);
        let zaps = found.iter().map(|&(_, table)| table_zap(table)).collect();
        (found.into_iter().map(|t| t.1).collect(), zaps)
    }

    fn release_user_frames(&mut self, mem: &GuestMemory) {
        // A shared object's frames are the object's, not this layout's.
        let ranges: Vec<(u64, u64)> = self
            .vmas
            .iter()
            .filter(|v| v.backing.shared_id().is_none())
            .map(|v| (v.start, v.end))
            .collect();
        let mut frames = Vec::new();
        for (s, e) in ranges {
            let _ = self.pt.for_each_leaf(mem, s, e, |_, leaf| {
                if leaf.value & pte::ADDR_MASK != 0 {
                    frames.push(leaf.value & pte::ADDR_MASK);
                }
                Ok(())
            });
        }
        for f in frames {
            self.frames.free(f);
        }
        self.vmas = Vmas::default();
        self.pending.clear();
        self.sync_shared();
    }

    /// Bring the shared objects' mapper counts in line with this layout's
    /// VMAs after mappings of shared objects came or went.
    fn sync_shared(&mut self) {
        let now: BTreeSet<u64> = self
            .vmas
            .iter()
            .filter_map(|v| v.backing.shared_id())
            .collect();
        for &id in now.difference(&self.shared) {
            self.frames.shm_map(id);
        }
        for &id in self.shared.difference(&now) {
            self.frames.shm_unmap(id);
        }
        self.shared = now;
    }

    /// The shared object mapped at `va` and the guest-physical address of
    /// that byte (populated if need be): how futexes in shared memory are
    /// keyed. `None` for memory private to this process.
    pub fn shared_gpa(&mut self, mem: &GuestMemory, va: u64) -> Result<Option<u64>, Errno> {
        let shared = self
            .vmas
            .find(va)
            .is_some_and(|v| v.backing.shared_id().is_some());
        if !shared {
            return Ok(None);
        }
        self.user_gpa(mem, va, false).map(Some)
    }

    /// The shared objects this layout maps.
    pub fn shared_objects(&self) -> &BTreeSet<u64> {
        &self.shared
    }

    /// A copy of this layout for fork(2): the same mappings, every populated
    /// page of a private one copied into a new frame (eagerly: no
    /// copy-on-write to track), a shared one's frames mapped as they are.
    pub fn copy_layout(&mut self, mem: &GuestMemory) -> Result<AddressSpace, Errno> {
        let mut child = self.fresh_layout(mem)?;
        child.vmas = self.vmas.clone();
        child.brk_start = self.brk_start;
        child.brk = self.brk;
        child.vvar = self.vvar;
        let ranges: Vec<(u64, u64, bool)> = self
            .vmas
            .iter()
            .map(|v| (v.start, v.end, v.backing.shared_id().is_some()))
            .collect();
        let mut leaves = Vec::new();
        for (s, e, shared) in ranges {
            self.pt
                .for_each_leaf(mem, s, e, |va, leaf| {
                    if leaf.value & pte::ADDR_MASK != 0 {
                        leaves.push((va, leaf.value, shared));
                    }
                    Ok(())
                })
                .map_err(paging_err)?;
        }
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        let mut copied = Vec::new();
        for (va, value, shared) in leaves {
            let old = value & pte::ADDR_MASK;
            let frame = if shared {
                old
            } else {
                let Some(frame) = self.frames.alloc_uninit(mem) else {
                    // Undo: the child never ran.
                    for f in copied {
                        self.frames.free(f);
                    }
                    return Err(Errno::ENOMEM);
                };
                copied.push(frame);
                mem.read(old, &mut buf).map_err(|_| Errno::EFAULT)?;
                mem.write(frame, &buf).map_err(|_| Errno::EFAULT)?;
                frame
            };
            let t = child
                .pt
                .table_for_or_create(mem, &mut self.frames, va)
                .map_err(paging_err)?;
            let new = (value & !pte::ADDR_MASK & !pte::ACCESSED) | frame;
            mem.write_u64(t + index(va, 1) * 8, new)
                .map_err(|_| Errno::EFAULT)?;
        }
        // The child maps every object the parent does.
        for &id in &self.shared {
            self.frames.shm_map(id);
        }
        child.shared = self.shared.clone();
        Ok(child)
    }

    /// Change the memory limit (a fork may get less than its template).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The memory limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Take the page-table writes that need the ring-0 writer, each with
    /// the bytes its entry holds now: a later host write in the same
    /// system call (an entry cleared, then mapped again by a MAP_FIXED
    /// mmap) must not be undone by replaying the earlier value, and a
    /// table zap must rewrite the bytes it lands on as they are.
    pub fn take_pending(&mut self, mem: &GuestMemory) -> Vec<PteWrite> {
        let mut writes = std::mem::take(&mut self.pending);
        for w in &mut writes {
            let mut now = [0u8; 8];
            let Some(gpa) = w.0.checked_sub(PHYSMAP_BASE) else {
                continue;
            };
            if mem.read(gpa, &mut now).is_ok() {
                w.1 = u64::from_le_bytes(now);
            }
        }
        writes
    }

    /// Forget the queued writes (a driver without a vCPU: the fuzzer).
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes of memory in use (frames, including page tables).
    pub fn resident(&self) -> u64 {
        self.frames.in_use() * PAGE_SIZE
    }

    fn pte_flags(prot: u64) -> u64 {
        if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
            return 0;
        }
        let mut f = pte::PRESENT | pte::USER;
        if prot & PROT_WRITE != 0 {
            f |= pte::WRITABLE | pte::DIRTY;
        }
        if prot & PROT_EXEC == 0 {
            f |= pte::NO_EXECUTE;
        }
        f
    }

    /// Set a leaf entry, queueing it for the PTE writer when the guest may
    /// hold a translation of the old one that the new one does not allow.
    fn set_entry(
        &mut self,
        mem: &GuestMemory,
        entry_gpa: u64,
        va: u64,
        old: u64,
        mut new: u64,
    ) -> Result<(), Errno> {
        if old == new {
            return Ok(());
        }
        let used = old & pte::PRESENT != 0 && old & pte::ACCESSED != 0;
        if used && new & pte::PRESENT != 0 {
            // Keep A: the entry may still be shadowed.
            new |= pte::ACCESSED;
        }
        mem.write_u64(entry_gpa, new).map_err(|_| Errno::EFAULT)?;
        if used {
            let narrowing = new & pte::PRESENT == 0
                || (new ^ old) & pte::ADDR_MASK != 0
                || (old & pte::WRITABLE != 0 && new & pte::WRITABLE == 0)
                || (old & pte::NO_EXECUTE == 0 && new & pte::NO_EXECUTE != 0);
            if narrowing {
                self.pending.push((physmap(entry_gpa), new, va));
            }
        }
        Ok(())
    }

    /// Whether [start, start+len) is a valid page-aligned user range.
    fn check_range(start: u64, len: u64) -> Result<u64, Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if end > USER_END || len == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(end)
    }

    /// Find room for `len` bytes (page-aligned) for a non-fixed mapping.
    pub fn find_free(&self, hint: u64, len: u64) -> Result<u64, Errno> {
        if hint != 0 {
            let h = page_down(hint);
            if h >= MMAP_MIN
                && h.checked_add(len).is_some_and(|e| e <= USER_END)
                && !self.vmas.any_in(h, h + len)
            {
                return Ok(h);
            }
        }
        self.vmas
            .find_free_top_down(len, MMAP_MIN, MMAP_TOP)
            .ok_or(Errno::ENOMEM)
    }

    /// Map [start, start+len) with `prot` and `backing`, replacing whatever
    /// was there (the caller checked MAP_FIXED semantics).
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        mem: &GuestMemory,
        start: u64,
        len: u64,
        prot: u64,
        backing: Backing,
        name: Arc<str>,
        grows_down: bool,
    ) -> Result<(), Errno> {
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        let end = Self::check_range(start, len)?;
        let shared = backing.shared_id().is_some();
        // A shared object's frames are counted once by the allocator, not
        // per mapping (a fork would count them twice): a shared mapping is
        // not committed, but one larger than the room left is refused.
        let committed = prot & PROT_WRITE != 0 && !shared;
        // The replaced mappings no longer count.
        let replaced: u64 = self
            .vmas
            .overlapping(start, end)
            .iter()
            .filter(|v| v.committed)
            .map(|v| v.end.min(end) - v.start.max(start))
            .sum();
        let writes = prot & PROT_WRITE != 0;
        if writes && self.over_limit(self.vmas.committed() - replaced + len) {
            return Err(Errno::ENOMEM);
        }
        // Unmap without settling the shared counts yet: a mapping that
        // replaces one of the same object must not free it in between.
        self.unmap_range(mem, start, end)?;
        let lazy = match backing {
            Backing::Anon | Backing::Shared { .. } => len > EAGER_ANON,
            Backing::File { .. } => len > EAGER_FILE,
        };
        let v = Vma {
            start,
            end,
            prot,
            backing,
            committed,
            name,
            grows_down,
            lazy,
        };
        self.vmas.insert(v.clone());
        self.sync_shared();
        if !lazy && prot != PROT_NONE {
            if let Err(e) = self.populate(mem, &v, start, end) {
                let _ = self.unmap(mem, start, len);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Fill the not-present pages of [start, end) (inside `v`).
    fn populate(&mut self, mem: &GuestMemory, v: &Vma, start: u64, end: u64) -> Result<(), Errno> {
        let mut flags = Self::pte_flags(v.prot);
        if flags != 0 && matches!(v.backing, Backing::Anon) {
            // Anonymous memory is born Accessed: on a first touch KVM's
            // shadow MMU then maps the touched entry's neighbours too (up
            // to 8, where the host has the page), which it does only for
            // entries with A set. Such an entry counts as used from the
            // start (`set_entry` queues its changes), which large unmaps
            // and mprotects pay once per table (`set_entries`). Measured
            // in a sandbox: making a 10 MiB bytes object 8.3-9.9 -> 3.6-4.2
            // ms, a crc32 over 10 MiB just read 10.1 -> 5.6-6.7 ms, `bench
            // fork` reset + exec print(1+1) p50 0.330-0.346 -> 0.291-0.302
            // ms.
            flags |= pte::ACCESSED;
        }
        let mut va = start;
        let mut file = FileWindow::default();
        while va < end {
            let table = self
                .pt
                .table_for_or_create(mem, &mut self.frames, va)
                .map_err(paging_err)?;
            let table_end = ((va | ((1 << 21) - 1)) + 1).min(end);
            while va < table_end {
                let entry = table + index(va, 1) * 8;
                let old = mem.read_u64(entry).map_err(|_| Errno::EFAULT)?;
                if old & pte::ADDR_MASK == 0 {
                    let frame = match &v.backing {
                        Backing::Anon => self.frames.alloc(mem).ok_or(Errno::ENOMEM)?,
                        Backing::Shared { id, offset } => {
                            let page = (offset + (va - v.start)) / PAGE_SIZE;
                            self.frames.shm_page(mem, *id, page).ok_or(Errno::ENOMEM)?
                        }
                        Backing::File { data, offset } => {
                            let off = offset + (va - v.start);
                            if off < data.size() {
                                let f = self.frames.alloc_uninit(mem).ok_or(Errno::ENOMEM)?;
                                let page =
                                    file.page(data.as_ref(), off, offset + (end - v.start))?;
                                mem.write(f, page).map_err(|_| Errno::EFAULT)?;
                                f
                            } else {
                                self.frames.alloc(mem).ok_or(Errno::ENOMEM)?
                            }
                        }
                    };
                    // not present -> present: a host write takes effect.
                    mem.write_u64(entry, frame | flags)
                        .map_err(|_| Errno::EFAULT)?;
                }
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Remove all mappings in [start, start+len).
    pub fn unmap(&mut self, mem: &GuestMemory, start: u64, len: u64) -> Result<(), Errno> {
        let len = page_up(len).ok_or(Errno::EINVAL)?;
        let end = Self::check_range(start, len)?;
        if self.unmap_range(mem, start, end)? {
            self.sync_shared();
        }
        Ok(())
    }

    /// Remove the mappings in [start, end) and their entries; whether one
    /// of them mapped a shared object (the caller settles the counts).
    fn unmap_range(&mut self, mem: &GuestMemory, start: u64, end: u64) -> Result<bool, Errno> {
        let removed = self.vmas.remove_range(start, end);
        let mut shared = false;
        for v in &removed {
            let own = v.backing.shared_id().is_none();
            shared |= !own;
            self.clear_ptes(mem, v.start, v.end, own)?;
        }
        Ok(shared)
    }

    /// Clear every entry in [start, end), freeing its frame when `free`
    /// (not for a shared object's frames).
    fn clear_ptes(
        &mut self,
        mem: &GuestMemory,
        start: u64,
        end: u64,
        free: bool,
    ) -> Result<(), Errno> {
        let mut cleared = Vec::new();
        self.pt
            .for_each_leaf(mem, start, end, |va, leaf| {
                if leaf.value & pte::ADDR_MASK != 0 {
                    cleared.push((va, leaf));
                }
                Ok(())
            })
            .map_err(paging_err)?;
        let changes: Vec<_> = cleared.iter().map(|&(va, leaf)| (va, leaf, 0)).collect();
        self.set_entries(mem, &changes)?;
        if free {
            for (_, leaf) in cleared {
                self.frames.free(leaf.value & pte::ADDR_MASK);
            }
        }
        Ok(())
    }

    /// `set_entry` for many entries, in address order: where many used
    /// entries of one table change at once, the table's whole shadow is
    /// dropped with one ring-0 write when that costs less
    /// (`table_zap_pays`).
    fn set_entries(
        &mut self,
        mem: &GuestMemory,
        changes: &[(u64, Leaf, u64)],
    ) -> Result<(), Errno> {
        let mut rest = changes;
        while let Some(&(_, first, _)) = rest.first() {
            let table = first.entry_gpa & !(PAGE_SIZE - 1);
            let n = rest
                .iter()
                .take_while(|(_, l, _)| l.entry_gpa & !(PAGE_SIZE - 1) == table)
                .count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let before = self.pending.len();
            for &(va, leaf, new) in group {
                self.set_entry(mem, leaf.entry_gpa, va, leaf.value, new)?;
            }
            let queued = self.pending.len() - before;
            if queued >= TABLE_ZAP_MIN_USED
                && table_zap_pays(queued, Self::shadowed_in(mem, table)?)
            {
                self.pending.truncate(before);
                self.pending.push(table_zap(table));
            }
        }
        Ok(())
    }

    /// Entries of `table` that KVM may have shadowed.
    fn shadowed_in(mem: &GuestMemory, table: u64) -> Result<usize, Errno> {
        let mut bytes = [0u8; PAGE_SIZE as usize];
        mem.read(table, &mut bytes).map_err(|_| Errno::EFAULT)?;
        Ok(shadowed_entries(&bytes))
    }

    /// mprotect.
    pub fn protect(
        &mut self,
        mem: &GuestMemory,
        start: u64,
        len: u64,
        prot: u64,
    ) -> Result<(), Errno> {
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        let end = Self::check_range(start, len).map_err(|_| Errno::EINVAL)?;
        let hit = self.vmas.overlapping(start, end);
        // Every page of the range must be mapped.
        let mut cursor = start;
        for v in &hit {
            if v.start > cursor {
                return Err(Errno::ENOMEM);
            }
            cursor = v.end;
        }
        if cursor < end {
            return Err(Errno::ENOMEM);
        }
        let newly_committed: u64 = hit
            .iter()
            .filter(|v| !v.committed && v.backing.shared_id().is_none() && prot & PROT_WRITE != 0)
            .map(|v| v.end.min(end) - v.start.max(start))
            .sum();
        if newly_committed > 0 && self.over_limit(self.vmas.committed() + newly_committed) {
            return Err(Errno::ENOMEM);
        }
        for piece in self.vmas.remove_range(start, end) {
            let mut p = piece;
            p.prot = prot;
            // Once written, a private mapping stays committed.
            p.committed =
                p.committed || (prot & PROT_WRITE != 0 && p.backing.shared_id().is_none());
            self.vmas.insert(p);
        }
        let flags = Self::pte_flags(prot);
        let mut changes = Vec::new();
        self.pt
            .for_each_leaf(mem, start, end, |va, leaf| {
                let frame = leaf.value & pte::ADDR_MASK;
                if frame != 0 {
                    // PROT_NONE keeps the frame in a not-present entry.
                    let new = if flags == 0 { frame } else { frame | flags };
                    changes.push((va, leaf, new));
                }
                Ok(())
            })
            .map_err(paging_err)?;
        self.set_entries(mem, &changes)
    }

    /// brk(2): returns the new (or unchanged) break.
    pub fn set_brk(&mut self, mem: &GuestMemory, want: u64) -> u64 {
        if want < self.brk_start {
            return self.brk;
        }
        let (Some(old_top), Some(new_top)) = (page_up(self.brk), page_up(want)) else {
            return self.brk;
        };
        if new_top > old_top {
            if self.vmas.any_in(old_top, new_top) {
                return self.brk;
            }
            let r = self.map(
                mem,
                old_top,
                new_top - old_top,
                PROT_READ | PROT_WRITE,
                Backing::Anon,
                Arc::from("[heap]"),
                false,
            );
            if r.is_err() {
                return self.brk;
            }
        } else if new_top < old_top && self.unmap(mem, new_top, old_top - new_top).is_err() {
            return self.brk;
        }
        self.brk = want;
        want
    }

    /// mremap(2).
    pub fn remap(
        &mut self,
        mem: &GuestMemory,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        if !old.is_multiple_of(PAGE_SIZE)
            || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
        {
            return Err(Errno::EINVAL);
        }
        if flags & MREMAP_DONTUNMAP != 0 {
            return Err(Errno::EINVAL);
        }
        let old_len = page_up(old_len).ok_or(Errno::EINVAL)?;
        let new_len = page_up(new_len).ok_or(Errno::EINVAL)?;
        // Linux: EINVAL for a new length past the user address space.
        if new_len == 0 || old_len == 0 || new_len > USER_END {
            return Err(Errno::EINVAL);
        }
        let v = self.vmas.find_merged(old).ok_or(Errno::EFAULT)?;
        if old.checked_add(old_len).is_none_or(|e| e > v.end) {
            return Err(Errno::EFAULT);
        }
        let fixed = flags & MREMAP_FIXED != 0;
        if !fixed && new_len <= old_len {
            if new_len < old_len {
                self.unmap(mem, old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let grow = new_len - old_len.min(new_len);
        // Grow in place when the space after is free.
        if !fixed && old + old_len == v.end {
            // A guest's new_len may wrap the address space (the fuzzer
            // found a VMM panic there): no room, as for any past USER_END.
            let end = old.saturating_add(new_len);
            if end <= USER_END && !self.vmas.any_in(v.end, end) {
                if v.committed && self.over_limit(self.vmas.committed() + grow) {
                    return Err(Errno::ENOMEM);
                }
                // One mapping, grown (not a neighbour per growth: a
                // realloc loop would leave thousands).
                let mut grown = v.clone();
                grown.end = end;
                self.vmas.remove_range(v.start, v.end);
                self.vmas.insert(grown.clone());
                if !grown.lazy && grown.prot != PROT_NONE {
                    self.populate(mem, &grown, v.end, end)?;
                }
                return Ok(old);
            }
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(Errno::ENOMEM);
        }
        let dest = if fixed {
            if !new_addr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            let dend = new_addr.checked_add(new_len).ok_or(Errno::EINVAL)?;
            if dend > USER_END || (new_addr < old + old_len && old < dend) {
                return Err(Errno::EINVAL);
            }
            self.unmap(mem, new_addr, new_len)?;
            new_addr
        } else {
            self.find_free(0, new_len)?
        };
        if v.committed && self.over_limit(self.vmas.committed() + grow) {
            return Err(Errno::ENOMEM);
        }
        // Move the frames: new entries first (not present -> present), then
        // clear the old ones.
        let keep = old_len.min(new_len);
        let mut moved = Vec::new();
        self.pt
            .for_each_leaf(mem, old, old + keep, |va, leaf| {
                if leaf.value & pte::ADDR_MASK != 0 {
                    moved.push((va, leaf));
                }
                Ok(())
            })
            .map_err(paging_err)?;
        for (va, leaf) in &moved {
            let nva = dest + (va - old);
            let t = self
                .pt
                .table_for_or_create(mem, &mut self.frames, nva)
                .map_err(paging_err)?;
            let value = leaf.value & !(pte::ACCESSED);
            mem.write_u64(t + index(nva, 1) * 8, value)
                .map_err(|_| Errno::EFAULT)?;
            self.set_entry(mem, leaf.entry_gpa, *va, leaf.value, 0)?;
        }
        let mut nv = v.slice(old, old + keep);
        self.vmas.remove_range(old, old + old_len);
        // Whatever of the old range was not moved is gone.
        if old_len > keep {
            let own = v.backing.shared_id().is_none();
            self.clear_ptes(mem, old + keep, old + old_len, own)?;
        }
        nv.start = dest;
        nv.end = dest + new_len;
        self.vmas.insert(nv.clone());
        if !nv.lazy && nv.prot != PROT_NONE && new_len > keep {
            self.populate(mem, &nv, dest + keep, dest + new_len)?;
        }
        Ok(dest)
    }

    /// madvise(MADV_DONTNEED): private pages read back as zero (or the
    /// file's bytes) afterwards; shared ones keep their data (as Linux,
    /// which maps the same page again on the next access).
    pub fn dontneed(&mut self, mem: &GuestMemory, start: u64, len: u64) -> Result<(), Errno> {
        let len = page_up(len).ok_or(Errno::EINVAL)?;
        let end = Self::check_range(start, len)?;
        let pages = len / PAGE_SIZE;
        for v in self.vmas.overlapping(start, end) {
            let (s, e) = (v.start.max(start), v.end.min(end));
            if v.backing.shared_id().is_some() {
                continue;
            }
            if pages <= DONTNEED_ZERO_PAGES && matches!(v.backing, Backing::Anon) {
                // Zero in place: no page-table change, so no flush needed.
                let mut frames = Vec::new();
                self.pt
                    .for_each_leaf(mem, s, e, |_, leaf| {
                        if leaf.value & pte::ADDR_MASK != 0 {
                            frames.push(leaf.value & pte::ADDR_MASK);
                        }
                        Ok(())
                    })
                    .map_err(paging_err)?;
                for f in frames {
                    mem.zero_page(f).map_err(|_| Errno::EFAULT)?;
                }
            } else {
                // Drop the pages; they are populated again on access.
                self.clear_ptes(mem, s, e, true)?;
            }
        }
        Ok(())
    }

    /// A ring-3 page fault at `addr` with the CPU's error code.
    pub fn fault(&mut self, mem: &GuestMemory, addr: u64, error: u64) -> Fault {
        let write = error & 2 != 0;
        let fetch = error & 16 != 0;
        let v = match self.vmas.find(addr) {
            Some(v) => v.clone(),
            None => {
                // Grow the stack down into the gap below it.
                match self.vmas.next_above(addr) {
                    Some(s) if s.grows_down && s.end - page_down(addr) <= STACK_LIMIT => {
                        let mut grown = s.clone();
                        let new_start = page_down(addr);
                        if self.vmas.any_in(new_start, s.start) {
                            return Fault::Segv("address not mapped");
                        }
                        if self.vmas.committed() + (s.start - new_start) > self.limit {
                            return Fault::OutOfMemory;
                        }
                        self.vmas.remove_range(s.start, s.end);
                        grown.start = new_start;
                        self.vmas.insert(grown.clone());
                        grown
                    }
                    _ => return Fault::Segv("address not mapped"),
                }
            }
        };
        let allowed = if fetch {
            v.prot & PROT_EXEC != 0
        } else if write {
            v.prot & PROT_WRITE != 0
        } else {
            v.prot & (PROT_READ | PROT_WRITE | PROT_EXEC) != 0
        };
        if !allowed {
            return Fault::Segv("access not permitted by the mapping's protection");
        }
        // A present entry that allows the access: a stale translation or
        // an entry widened by mprotect; the retry sees the current one.
        let present = self.pt.translate(mem, addr).is_some();
        if present {
            return Fault::Resolved;
        }
        let chunk = match v.backing {
            Backing::Anon | Backing::Shared { .. } => FAULT_AROUND_ANON,
            Backing::File { .. } if v.prot & PROT_EXEC != 0 => FAULT_AROUND_EXEC,
            Backing::File { .. } => FAULT_AROUND_FILE,
        };
        let s = (addr & !(chunk - 1)).max(v.start);
        let e = ((addr & !(chunk - 1)) + chunk).min(v.end);
        match self.populate(mem, &v, s, e) {
            Ok(()) => Fault::Resolved,
            Err(_) => {
                // Fall back to the single page before giving up.
                let p = page_down(addr);
                match self.populate(mem, &v, p, p + PAGE_SIZE) {
                    Ok(()) => Fault::Resolved,
                    Err(_) => Fault::OutOfMemory,
                }
            }
        }
    }

    /// /proc/self/maps.
    pub fn maps(&self) -> String {
        let mut s = String::new();
        for v in self.vmas.iter() {
            let off = match &v.backing {
                Backing::File { offset, .. } | Backing::Shared { offset, .. } => *offset,
                Backing::Anon => 0,
            };
            let line = format!(
                "{:08x}-{:08x} {} {:08x} 00:00 0",
                v.start,
                v.end,
                v.perms(),
                off
            );
            s.push_str(&line);
            if !v.name.is_empty() {
                s.push_str(&" ".repeat(73usize.saturating_sub(line.len()).max(1)));
                s.push_str(&v.name);
            }
            s.push('\n');
        }
        s
    }
}

/// Most file bytes `populate` reads ahead in one call.
const FILE_WINDOW: u64 = FAULT_AROUND_EXEC;

/// The bytes of a mapped file that `populate` copies in, read in windows
/// of up to `FILE_WINDOW` (one host read for a fault's whole chunk rather
/// than one per page).
#[derive(Default)]
struct FileWindow {
    /// File offset of `buf[0]`.
    at: u64,
    buf: Vec<u8>,
}

impl FileWindow {
    /// The page at file offset `off` (page-aligned relative to the
    /// mapping), reading ahead up to `until` (the range's end in the file).
    fn page(&mut self, data: &dyn FileContents, off: u64, until: u64) -> Result<&[u8], Errno> {
        let page = PAGE_SIZE as usize;
        let held = off >= self.at && off + PAGE_SIZE <= self.at + self.buf.len() as u64;
        if !held {
            let len = until.saturating_sub(off).clamp(PAGE_SIZE, FILE_WINDOW);
            self.buf
                .resize(page_up(len).unwrap_or(PAGE_SIZE) as usize, 0);
            data.read_at(off, &mut self.buf).map_err(|_| Errno::EIO)?;
            self.at = off;
        }
        let i = (off - self.at) as usize;
        Ok(&self.buf[i..i + page])
    }
}
