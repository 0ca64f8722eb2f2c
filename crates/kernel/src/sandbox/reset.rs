//! Resetting a used fork back to its template, so that the next execution
//! reuses the VM and its warm shadow MMU instead of a fresh fork (tinyKVM's
//! approach, DESIGN.md §4). A reset is a security boundary: everything the
//! last execution changed goes back, or the VM is not reused.
//!
//! - Memory: every page the guest wrote (KVM's dirty log) or the VMM wrote
//!   (GuestMemory's own record) gets the template's bytes again (zero
//!   beyond the template's end).
//! - Page tables: in a page-table page of the template, an entry whose
//!   frame or permissions changed while KVM may have shadowed it is also
//!   rewritten by the ring-0 PTE writer, so KVM drops that shadow (host
//!   writes are invisible to it). Where only the Accessed bit changed, the
//!   restored entry keeps A = 1 (the entry may be shadowed, see paging.rs).
//!   Where so many entries of one table changed that it costs less, one
//!   misaligned write into the table drops its whole shadow instead
//!   (`mm::table_zap_pays`).
//! - A page-table frame the execution allocated (a new table, linked from
//!   a template table) gets that misaligned write too, deepest level
//!   first, so KVM keeps no shadow of it: after the reset the frame is
//!   free again and may come back as data or as another table (a 10 MiB
//!   buffer's five tables were ~5000 writes, one per entry). An execution
//!   whose new tables cannot all be found that way (a child process's
//!   root, say) is not reset.
//! - vCPU registers, FPU state, FS/GS, CR3 and any queued event, and the
//!   whole kernel state, come from the template.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;

use zeroboot_vmm::layout::{physmap, PAGE_SIZE, PHYSMAP_PML4_INDEX};
use zeroboot_vmm::paging::pte;

use super::{Sandbox, SandboxError};
use crate::mm;
use crate::snapshot::{ForkOptions, Snapshot};

/// Pages restored at every reset (see `reset`) beyond which they are
/// write-protected again instead. Restoring a page costs 1-2 µs, off the
/// request's path (`Template::tidy`); a write fault on a protected page
/// costs ~4.6 µs here, on the path of the next request. A code-interpreter
/// cell writes ~1200 pages (IPython's objects): at 1024 they were re-armed
/// after every sandbox and the first cell of the next one took ~7 ms
/// instead of ~1.5. Only a run that wrote more than 16 MiB is re-armed.
const REPROTECT_PAGES: usize = 4096;

/// What one reset cost, part by part (nanoseconds; see `Sandbox::restore`
/// and `Sandbox::begin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetCost {
    /// Pages given the template's bytes again.
    pub pages: usize,
    /// Of those, the data pages that differed from the template (the rest
    /// were written by an earlier execution only, see `restore`).
    pub pages_changed: usize,
    /// Page-table entries rewritten by the ring-0 writer (shadow MMU).
    pub pte_writes: usize,
    /// Page-table frames the execution had allocated, cleared.
    pub new_tables: usize,
    /// Fetching KVM's dirty log and the VMM's own record of writes.
    pub dirty_log_ns: u64,
    /// Finding the new page tables and copying the dirty pages back.
    pub copy_ns: u64,
    /// The ring-0 PTE writer (KVM drops its shadows) and what it dirtied.
    pub shadow_mmu_ns: u64,
    /// vCPU registers, FPU/XSAVE state and queued events.
    pub vcpu_ns: u64,
    /// The template's kernel state cloned for the request (`begin`).
    pub kernel_ns: u64,
}

impl ResetCost {
    /// The whole reset.
    pub fn total_ns(&self) -> u64 {
        self.dirty_log_ns + self.copy_ns + self.shadow_mmu_ns + self.vcpu_ns + self.kernel_ns
    }
}

/// Where each page-table page of a template sits: frame -> (level, first
/// virtual address it maps).
pub type PageTableMap = BTreeMap<u64, (u8, u64)>;

fn read_template_page(
    snap: &Snapshot,
    gpa: u64,
    buf: &mut [u8; PAGE_SIZE as usize],
) -> std::io::Result<()> {
    if gpa + PAGE_SIZE <= snap.mem_len {
        snap.mem.read_exact_at(buf, gpa)
    } else {
        buf.fill(0);
        Ok(())
    }
}

/// Walk the template's page tables (every process's root, not the shared
/// physmap) from its memory file.
pub fn page_table_map(snap: &Snapshot) -> std::io::Result<PageTableMap> {
    let mut roots = vec![snap.kernel.mm.pt.root()];
    roots.extend(
        snap.kernel
            .others
            .values()
            .map(|s| s.mm.pt.root())
            .filter(|&r| r != 0),
    );
    let mut map = PageTableMap::new();
    let mut todo: Vec<(u64, u8, u64)> = roots.into_iter().map(|r| (r, 4u8, 0u64)).collect();
    let mut buf = [0u8; PAGE_SIZE as usize];
    while let Some((frame, level, base)) = todo.pop() {
        if map.insert(frame, (level, base)).is_some() || level == 1 {
            continue;
        }
        read_template_page(snap, frame, &mut buf)?;
        for i in 0..512u64 {
            if level == 4 && i == PHYSMAP_PML4_INDEX {
                continue;
            }
            let o = (i * 8) as usize;
            let e = u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]));
            if e & pte::PRESENT != 0 && e & pte::HUGE == 0 {
                let span = 1u64 << (12 + 9 * (level as u64 - 1));
                todo.push((e & pte::ADDR_MASK, level - 1, base + i * span));
            }
        }
    }
    Ok(map)
}

impl Sandbox {
    /// Bring this sandbox back to `snap` for a new request. `Ok(false)`: it
    /// cannot be reset; discard it.
    pub fn reset(&mut self, snap: &Snapshot, opts: ForkOptions) -> Result<bool, SandboxError> {
        if !self.restored && !self.restore(snap)? {
            return Ok(false);
        }
        Ok(self.begin(snap, opts))
    }

    /// Start a request on a fork that has never run (a spare made ahead of
    /// time, see the engine's pool): its kernel state is cloned again with
    /// `opts`. `Ok(false)` (nothing done) when the guest has written any
    /// page since the fork, or the fork is not resettable: discard it.
    pub fn begin_unrun(
        &mut self,
        snap: &Snapshot,
        opts: ForkOptions,
    ) -> Result<bool, SandboxError> {
        if self.restored {
            return Ok(self.begin(snap, opts));
        }
        if !self.resettable
            || !self.ever_written.is_empty()
            || !self.vm.take_dirty_log()?.is_empty()
        {
            return Ok(false);
        }
        // Only the VMM wrote (the clock page, tids): its record stays, for
        // the next restore.
        self.restored = true;
        Ok(self.begin(snap, opts))
    }

    /// Whether `restore` ran and no request has begun since.
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// Start a request on a restored sandbox: the template's kernel state,
    /// with `opts`. The cheap part of a reset; `false` (nothing done) when
    /// the sandbox was not restored.
    pub fn begin(&mut self, snap: &Snapshot, opts: ForkOptions) -> bool {
        if !std::mem::take(&mut self.restored) {
            return false;
        }
        let t0 = std::time::Instant::now();
        self.k = snap.fork_kernel(&self.mem, None, opts);
        crate::vdso::rebase(&mut self.k, &self.mem, self.vcpu.tsc());
        self.last_fault = Default::default();
        self.last_reset.kernel_ns = t0.elapsed().as_nanos() as u64;
        true
    }

    /// The expensive part of a reset: memory, page tables and vCPU back
    /// to `snap`, so that it can run between requests, off their path
    /// (`begin` then starts the next one). `Ok(false)`: it cannot be
    /// reset; discard it.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<bool, SandboxError> {
        self.restored = false;
        let new_table_count = self
            .k
            .mm
            .frames
            .tables_allocated()
            .checked_sub(snap.kernel.mm.frames.tables_allocated());
        let Some(new_table_count) = new_table_count.filter(|_| self.resettable) else {
            return Ok(false);
        };
        let t0 = std::time::Instant::now();
        let (tables, view) = match (snap.page_tables(), snap.template_view()) {
            (Ok(t), Ok(v)) => (t, v),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the template's page tables or memory: not resetting");
                return Ok(false);
            }
        };
        let logged = self.vm.take_dirty_log()?;
        let mut dirty: BTreeSet<u64> = if self.vm.sticky_dirty() {
            // Pages once logged stay writable, unwatched: restore them all,
            // every time, until there are so many that protecting them
            // again (a write fault each when next written) costs less.
            self.ever_written.extend(logged);
            let all = self.ever_written.clone();
            if all.len() > REPROTECT_PAGES {
                self.vm.reprotect(&all)?;
                self.ever_written.clear();
            }
            all
        } else {
            logged.into_iter().collect()
        };
        dirty.extend(self.mem.take_dirty());
        let t1 = t0.elapsed();
        let pages = dirty.len();
        let new_tables = self.new_tables(snap, tables, &dirty)?;
        if new_tables.len() as u64 != new_table_count {
            tracing::debug!(
                found = new_tables.len(),
                allocated = new_table_count,
                "new page tables not all reachable: not resetting"
            );
            return Ok(false);
        }
        // (level, entry in the physmap, value, user address)
        let mut writes: Vec<(u8, u64, u64, u64)> = Vec::new();
        let mut tmpl = [0u8; PAGE_SIZE as usize];
        let mut cur = [0u8; PAGE_SIZE as usize];
        let mut pages_changed = 0;
        for (&gpa, &(level, _)) in &new_tables {
            self.mem.read(gpa, &mut cur)?;
            let used = cur.chunks_exact(8).any(|e| {
                let f = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
                f & pte::PRESENT != 0 && (level > 1 || f & pte::ACCESSED != 0)
            });
            if used {
                // Its content comes back from the template below; one
                // write drops all of its shadow.
                let (entry, value, va) = mm::table_zap(gpa);
                writes.push((level, entry, value, va));
            }
        }
        for page in dirty {
            let gpa = page * PAGE_SIZE;
            // New tables get their content back after the writer.
            if !self.mem.contains(gpa, PAGE_SIZE) || new_tables.contains_key(&gpa) {
                continue;
            }
            let Some(&(level, base)) = tables.get(&gpa) else {
                // A data page: what differs from the template's mapping.
                pages_changed += usize::from(self.mem.restore_page_from(view, gpa)?);
                continue;
            };
            view.read(gpa, &mut tmpl)?;
            self.mem.read(gpa, &mut cur)?;
            let before = writes.len();
            for i in 0..512usize {
                let o = i * 8;
                let t = u64::from_le_bytes(tmpl[o..o + 8].try_into().unwrap_or([0; 8]));
                let f = u64::from_le_bytes(cur[o..o + 8].try_into().unwrap_or([0; 8]));
                if t == f {
                    continue;
                }
                let present = |e: u64| e & pte::PRESENT != 0;
                if present(t) && present(f) && (t ^ f) & !pte::ACCESSED == 0 {
                    // Only A differs: keep it set, the entry may be shadowed.
                    tmpl[o..o + 8].copy_from_slice(&(t | pte::ACCESSED).to_le_bytes());
                    continue;
                }
                if present(f) && (level > 1 || f & pte::ACCESSED != 0) {
                    let span = 1u64 << (12 + 9 * (level as u64 - 1));
                    writes.push((level, physmap(gpa + o as u64), t, base + i as u64 * span));
                }
            }
            let changed = writes.len() - before;
            if changed > 1 && mm::table_zap_pays(changed, mm::shadowed_entries(&tmpl)) {
                // One write drops the table's whole shadow: it rewrites
                // the template's bytes it lands on.
                writes.truncate(before);
                let (entry, _, va) = mm::table_zap(gpa);
                let at = (entry - physmap(gpa)) as usize;
                let value = u64::from_le_bytes(tmpl[at..at + 8].try_into().unwrap_or([0; 8]));
                writes.push((level, entry, value, va));
            }
            self.mem.write(gpa, &tmpl)?;
        }
        // What was just written is the template's content.
        self.mem.take_dirty();
        let t_restored = t0.elapsed();
        let n_writes = writes.len();
        if !writes.is_empty() {
            // Leaves first: KVM finds an entry to drop (invlpg) through the
            // shadow of the tables above it, so those are unlinked last.
            writes.sort_by_key(|w| w.0);
            let list: Vec<(u64, u64, u64)> = writes.iter().map(|w| (w.1, w.2, w.3)).collect();
            self.vcpu.run_pte_writer(&self.mem, &list)?;
        }
        // The writer's list (ring-0 scratch) and the new tables go back.
        let mut after: BTreeSet<u64> = self.mem.take_dirty().into_iter().collect();
        after.extend(new_tables.keys().map(|gpa| gpa / PAGE_SIZE));
        for page in after {
            self.mem.copy_page_from(view, page * PAGE_SIZE)?;
        }
        self.mem.take_dirty();
        let t2 = t0.elapsed();
        self.vcpu.restore_state(&snap.vcpu)?;
        self.vcpu.clear_events()?;
        let t3 = t0.elapsed();
        self.restored = true;
        self.last_reset = ResetCost {
            pages,
            pages_changed,
            pte_writes: n_writes,
            new_tables: new_tables.len(),
            dirty_log_ns: t1.as_nanos() as u64,
            copy_ns: (t_restored - t1).as_nanos() as u64,
            shadow_mmu_ns: (t2 - t_restored).as_nanos() as u64,
            vcpu_ns: (t3 - t2).as_nanos() as u64,
            kernel_ns: 0,
        };
        tracing::debug!(
            pages,
            writes = n_writes,
            new_tables = new_tables.len(),
            copy_us = (t_restored - t1).as_micros() as u64,
            log_us = t1.as_micros() as u64,
            restore_us = (t2 - t1).as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "restored"
        );
        Ok(true)
    }
}

impl Sandbox {
    /// Page-table frames linked, directly or below one another, from the
    /// template's tables that the execution changed (`dirty`), which are
    /// not tables of the template: frame -> (level, first address mapped).
    fn new_tables(
        &self,
        snap: &Snapshot,
        tables: &PageTableMap,
        dirty: &BTreeSet<u64>,
    ) -> Result<PageTableMap, SandboxError> {
        let mut found = PageTableMap::new();
        let mut todo: Vec<(u64, u8, u64, bool)> = dirty
            .iter()
            .map(|p| p * PAGE_SIZE)
            .filter_map(|gpa| {
                let &(level, base) = tables.get(&gpa)?;
                (level > 1).then_some((gpa, level, base, true))
            })
            .collect();
        let mut tmpl = [0u8; PAGE_SIZE as usize];
        let mut cur = [0u8; PAGE_SIZE as usize];
        while let Some((gpa, level, base, in_template)) = todo.pop() {
            self.mem.read(gpa, &mut cur)?;
            if in_template {
                read_template_page(snap, gpa, &mut tmpl)
                    .map_err(|e| SandboxError::Memory(zeroboot_vmm::MemoryError::Memfd(e)))?;
            }
            for i in 0..512u64 {
                if level == 4 && i == PHYSMAP_PML4_INDEX {
                    continue;
                }
                let o = (i * 8) as usize;
                let f = u64::from_le_bytes(cur[o..o + 8].try_into().unwrap_or([0; 8]));
                let t = u64::from_le_bytes(tmpl[o..o + 8].try_into().unwrap_or([0; 8]));
                if f & pte::PRESENT == 0 || f & pte::HUGE != 0 || (in_template && f == t) {
                    continue;
                }
                let child = f & pte::ADDR_MASK;
                if tables.contains_key(&child) || found.contains_key(&child) {
                    continue;
                }
                let span = 1u64 << (12 + 9 * (level as u64 - 1));
                found.insert(child, (level - 1, base + i * span));
                if level > 2 {
                    todo.push((child, level - 1, base + i * span, false));
                }
            }
        }
        Ok(found)
    }
}

impl Sandbox {
    /// Pages of registered guest memory that differ from `snap` (ignoring
    /// the Accessed bit in its page tables, and expecting each thread's new
    /// tid where glibc keeps it and the new clock sample in each [vvar]):
    /// empty right after a correct reset. Reads
    /// every page: for tests and the benchmark's check.
    pub fn differences_from(&self, snap: &Snapshot) -> Result<Vec<u64>, SandboxError> {
        let tables = snap.page_tables().map_err(|e| {
            SandboxError::Memory(zeroboot_vmm::MemoryError::Memfd(std::io::Error::other(e)))
        })?;
        // The renumbering wrote each thread's new tid at its clear_child_tid.
        let mut patches: BTreeMap<u64, Vec<(usize, u32)>> = BTreeMap::new();
        for t in self.k.threads.values() {
            if t.clear_child_tid == 0 {
                continue;
            }
            if let Some(e) = self.k.mm.pt.translate(&self.mem, t.clear_child_tid) {
                let gpa = (e & pte::ADDR_MASK) + (t.clear_child_tid & (PAGE_SIZE - 1));
                patches
                    .entry(gpa & !(PAGE_SIZE - 1))
                    .or_default()
                    .push(((gpa & (PAGE_SIZE - 1)) as usize, t.tid));
            }
        }
        // The reset wrote a new clock sample into each [vvar].
        let clock = self.k.clock.vvar_bytes();
        let mut vvars = Vec::new();
        for mm in std::iter::once(&self.k.mm).chain(self.k.others.values().map(|s| &s.mm)) {
            if let Some(e) = (mm.vvar != 0)
                .then(|| mm.pt.translate(&self.mem, mm.vvar))
                .flatten()
            {
                vvars.push(e & pte::ADDR_MASK);
            }
        }
        let mut out = Vec::new();
        let mut tmpl = [0u8; PAGE_SIZE as usize];
        let mut cur = [0u8; PAGE_SIZE as usize];
        let end = self.vm.registered().min(self.mem.size());
        let mut gpa = 0;
        while gpa < end {
            read_template_page(snap, gpa, &mut tmpl)
                .map_err(|e| SandboxError::Memory(zeroboot_vmm::MemoryError::Memfd(e)))?;
            for &(off, tid) in patches.get(&gpa).map(Vec::as_slice).unwrap_or(&[]) {
                if off + 4 <= tmpl.len() {
                    tmpl[off..off + 4].copy_from_slice(&tid.to_le_bytes());
                }
            }
            if vvars.contains(&gpa) {
                tmpl[..clock.len()].copy_from_slice(&clock);
            }
            self.mem.read(gpa, &mut cur)?;
            let same = if tables.contains_key(&gpa) {
                tmpl.chunks(8).zip(cur.chunks(8)).all(|(a, b)| {
                    let a = u64::from_le_bytes(a.try_into().unwrap_or([0; 8]));
                    let b = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                    (a ^ b) & !pte::ACCESSED == 0
                })
            } else {
                tmpl == cur
            };
            if !same {
                out.push(gpa);
            }
            gpa += PAGE_SIZE;
        }
        Ok(out)
    }
}
