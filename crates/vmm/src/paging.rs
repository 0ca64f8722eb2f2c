//! x86-64 4-level page tables, written and walked by the VMM in guest memory.
//!
//! The VMM is the guest's kernel, so it owns the page tables. What it may
//! *change* in them is limited by KVM's shadow MMU (see DESIGN.md §1): a
//! not-present -> present change written from the host takes effect, but a
//! change to a present entry the guest has used does not. Leaf entries are
//! therefore created with the Accessed bit clear: KVM sets it (in guest
//! memory) the first time it shadows the entry and never prefetches an
//! entry whose Accessed bit is clear, so an entry with A == 0 is known not
//! to be shadowed and can be rewritten from the host. Entries with A == 1
//! must be rewritten by ring-0 code (the PTE writer), which KVM traps.

use crate::layout::PAGE_SIZE;
use crate::memory::{GuestMemory, MemoryError};

/// Page-table entry bits.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const HUGE: u64 = 1 << 7;
    pub const GLOBAL: u64 = 1 << 8;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Physical-address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Flags of a non-leaf entry for the user half: permissions are decided
    /// by the leaves. Accessed is set up front so KVM never has to write it.
    pub const TABLE: u64 = PRESENT | WRITABLE | USER | ACCESSED;
}

/// Source of zeroed frames for new page tables.
pub trait FrameAllocator {
    /// A zeroed guest-physical frame, or `None` when memory is exhausted.
    fn alloc_table_frame(&mut self, mem: &GuestMemory) -> Option<u64>;
}

/// Errors of page-table operations.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    #[error("no memory left for page tables")]
    OutOfMemory,
    #[error("address {0:#x} is not canonical user space")]
    BadAddress(u64),
    #[error("page tables point outside guest memory")]
    Memory(#[from] MemoryError),
}

/// Index of `va` in the table at `level` (4 = PML4 ... 1 = PT).
#[inline]
pub fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 0x1ff
}

/// The page tables rooted at one PML4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTables {
    root: u64,
}

/// Where a leaf entry lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// Guest-physical address of the entry.
    pub entry_gpa: u64,
    /// Its value.
    pub value: u64,
}

impl PageTables {
    pub fn new(root: u64) -> Self {
        PageTables { root }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// The guest-physical address of the page table (level 1) covering `va`,
    /// if the upper levels exist.
    pub fn table_for(&self, mem: &GuestMemory, va: u64) -> Result<Option<u64>, PagingError> {
        let mut table = self.root;
        for level in (2..=4).rev() {
            let e = mem.read_u64(table + index(va, level) * 8)?;
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                return Ok(None);
            }
            table = e & pte::ADDR_MASK;
        }
        Ok(Some(table))
    }

    /// The page table covering `va`, creating missing upper levels.
    pub fn table_for_or_create(
        &self,
        mem: &GuestMemory,
        alloc: &mut dyn FrameAllocator,
        va: u64,
    ) -> Result<u64, PagingError> {
        let mut table = self.root;
        for level in (2..=4).rev() {
            let slot = table + index(va, level) * 8;
            let e = mem.read_u64(slot)?;
            table = if e & pte::PRESENT != 0 {
                if e & pte::HUGE != 0 {
                    return Err(PagingError::BadAddress(va));
                }
                e & pte::ADDR_MASK
            } else {
                let frame = alloc
                    .alloc_table_frame(mem)
                    .ok_or(PagingError::OutOfMemory)?;
                // not present -> present: safe to write from the host.
                mem.write_u64(slot, frame | pte::TABLE)?;
                frame
            };
        }
        Ok(table)
    }

    /// The leaf entry for `va`, if its page table exists (the entry itself
    /// may be not-present).
    pub fn leaf(&self, mem: &GuestMemory, va: u64) -> Result<Option<Leaf>, PagingError> {
        Ok(match self.table_for(mem, va)? {
            Some(t) => {
                let entry_gpa = t + index(va, 1) * 8;
                Some(Leaf {
                    entry_gpa,
                    value: mem.read_u64(entry_gpa)?,
                })
            }
            None => None,
        })
    }

    /// The present leaf entry for `va`, if any.
    pub fn translate(&self, mem: &GuestMemory, va: u64) -> Option<u64> {
        match self.leaf(mem, va) {
            Ok(Some(l)) if l.value & pte::PRESENT != 0 => Some(l.value),
            _ => None,
        }
    }

    /// The page table covering `va`, or the level (2..=4) of the first
    /// absent entry on the way to it.
    fn table_or_gap(&self, mem: &GuestMemory, va: u64) -> Result<Result<u64, u32>, PagingError> {
        let mut table = self.root;
        for level in (2..=4).rev() {
            let e = mem.read_u64(table + index(va, level) * 8)?;
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                return Ok(Err(level));
            }
            table = e & pte::ADDR_MASK;
        }
        Ok(Ok(table))
    }

    /// Call `f(va, leaf)` for every existing leaf slot in `[start, end)`
    /// of the user half (present or not), skipping absent tables at their
    /// own level: a range of terabytes (a guest's `munmap(0, 1 << 46)`)
    /// costs a few reads, not a walk of every 2 MiB in it.
    pub fn for_each_leaf(
        &self,
        mem: &GuestMemory,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, Leaf) -> Result<(), PagingError>,
    ) -> Result<(), PagingError> {
        // Past the user half, `index` would wrap to the same tables again.
        let end = end.min(1 << 47);
        let mut va = start & !(PAGE_SIZE - 1);
        while va < end {
            match self.table_or_gap(mem, va)? {
                Err(level) => {
                    // Skip to the end of what the absent entry would map.
                    let span = 1u64 << (12 + 9 * (level - 1));
                    match (va | (span - 1)).checked_add(1) {
                        Some(next) => va = next,
                        None => break,
                    }
                }
                Ok(t) => {
                    let next_table = ((va | ((1 << 21) - 1)) + 1).min(end);
                    while va < next_table {
                        let entry_gpa = t + index(va, 1) * 8;
                        let value = mem.read_u64(entry_gpa)?;
                        f(va, Leaf { entry_gpa, value })?;
                        va += PAGE_SIZE;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Bump(u64);
    impl FrameAllocator for Bump {
        fn alloc_table_frame(&mut self, _mem: &GuestMemory) -> Option<u64> {
            let f = self.0;
            self.0 += PAGE_SIZE;
            Some(f)
        }
    }

    #[test]
    fn create_walk_translate() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let pt = PageTables::new(0x1000);
        let mut a = Bump(0x10000);
        let t = pt.table_for_or_create(&mem, &mut a, 0x40_0000).unwrap();
        mem.write_u64(
            t + index(0x40_1000, 1) * 8,
            0x5000 | pte::PRESENT | pte::USER,
        )
        .unwrap();
        assert_eq!(
            pt.translate(&mem, 0x40_1000).unwrap() & pte::ADDR_MASK,
            0x5000
        );
        assert!(pt.translate(&mem, 0x40_2000).is_none());
        assert!(pt.translate(&mem, 0x7f00_0000_0000).is_none());
        let mut seen = 0;
        pt.for_each_leaf(&mem, 0, 0x80_0000, |_, l| {
            if l.value & pte::PRESENT != 0 {
                seen += 1;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn walking_all_of_user_space_visits_only_existing_tables() {
        // Found by cargo fuzz: munmap(0, 100 TiB) walked every 2 MiB of
        // the range (11 s in the VMM). Absent tables are skipped at their
        // level now, up to the very end of the address space.
        let mem = GuestMemory::new(4 << 20).unwrap();
        let pt = PageTables::new(0x1000);
        let mut a = Bump(0x10000);
        pt.table_for_or_create(&mem, &mut a, 0x7f12_3440_0000)
            .unwrap();
        let mut slots = Vec::new();
        pt.for_each_leaf(&mem, 0, u64::MAX, |va, _| {
            slots.push(va);
            Ok(())
        })
        .unwrap();
        assert_eq!(slots.len(), 512);
        assert_eq!(slots[0], 0x7f12_3440_0000);
    }
}
