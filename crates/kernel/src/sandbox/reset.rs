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
//! - An execution that allocated a page-table frame is not reset: KVM may
//!   keep a shadow of that frame as a table, stale once it is reused.
//! - vCPU registers, FPU state, FS/GS, CR3 and any queued event, and the
//!   whole kernel state, come from the template.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;

use zeroboot_vmm::layout::{physmap, PAGE_SIZE, PHYSMAP_PML4_INDEX};
use zeroboot_vmm::paging::pte;

use super::{Sandbox, SandboxError};
use crate::snapshot::{ForkOptions, Snapshot};

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
        if !self.resettable
            || self.k.mm.frames.tables_allocated() != snap.kernel.mm.frames.tables_allocated()
        {
            return Ok(false);
        }
        let tables = match snap.page_tables() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the template's page tables: not resetting");
                return Ok(false);
            }
        };
        let logged = self.vm.take_dirty_log()?;
        let mut dirty: BTreeSet<u64> = if self.vm.sticky_dirty() {
            // Pages once logged stay writable, unwatched: restore them all,
            // every time.
            self.ever_written.extend(logged);
            self.ever_written.clone()
        } else {
            logged.into_iter().collect()
        };
        dirty.extend(self.mem.take_dirty());
        let mut writes = Vec::new();
        let mut tmpl = [0u8; PAGE_SIZE as usize];
        let mut cur = [0u8; PAGE_SIZE as usize];
        for page in dirty {
            let gpa = page * PAGE_SIZE;
            if !self.mem.contains(gpa, PAGE_SIZE) {
                continue;
            }
            if read_template_page(snap, gpa, &mut tmpl).is_err() {
                return Ok(false);
            }
            if let Some(&(level, base)) = tables.get(&gpa) {
                self.mem.read(gpa, &mut cur)?;
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
                        writes.push((physmap(gpa + o as u64), t, base + i as u64 * span));
                    }
                }
            }
            self.mem.write(gpa, &tmpl)?;
        }
        // What was just written is the template's content.
        self.mem.take_dirty();
        if !writes.is_empty() {
            self.vcpu.run_pte_writer(&self.mem, &writes)?;
            // The writer's list (ring-0 scratch) goes back as well.
            for page in self.mem.take_dirty() {
                let gpa = page * PAGE_SIZE;
                if read_template_page(snap, gpa, &mut tmpl).is_err() {
                    return Ok(false);
                }
                self.mem.write(gpa, &tmpl)?;
            }
            self.mem.take_dirty();
        }
        self.vcpu.restore_state(&snap.vcpu)?;
        self.vcpu.clear_events()?;
        self.k = snap.fork_kernel(&self.mem, opts);
        self.last_fault = (0, 0, 0);
        Ok(true)
    }
}

impl Sandbox {
    /// Pages of registered guest memory that differ from `snap` (ignoring
    /// the Accessed bit in its page tables, and expecting each thread's new
    /// tid where glibc keeps it): empty right after a correct reset. Reads
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
