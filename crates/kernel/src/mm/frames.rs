//! Guest-physical frame allocator: a bump pointer over never-used memory
//! plus a free list, with accounting against the sandbox's memory limit.

use serde::{Deserialize, Serialize};
use zeroboot_vmm::layout::{FIRST_FREE_GPA, PAGE_SIZE};
use zeroboot_vmm::{FrameAllocator, GuestMemory};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frames {
    /// Next never-used frame (memory beyond it is still zero).
    next: u64,
    /// End of guest-physical memory.
    end: u64,
    free: Vec<u64>,
    in_use: u64,
    /// Most frames the sandbox may hold at once.
    limit: u64,
    /// Frames handed out as page tables, ever (a reset needs none new).
    #[serde(default)]
    tables: u64,
    /// Times a frame was refused for the limit.
    #[serde(default)]
    pub refused: u64,
    /// Page-table frames of a dead layout, still counted as in use, and
    /// the ring-0 writes that make KVM drop their shadows (one per table,
    /// `AddressSpace::release`), made (`take_retired`) before the frames
    /// are free again.
    #[serde(default)]
    retired: Vec<u64>,
    #[serde(default)]
    retired_clears: Vec<(u64, u64, u64)>,
    /// Shared memory objects (their frames are counted here once,
    /// however many processes map them).
    #[serde(default)]
    pub(super) shm: super::shared::SharedObjects,
}

impl Frames {
    pub fn new(first: u64, end: u64, limit_bytes: u64) -> Frames {
        Frames {
            next: first,
            end,
            free: Vec::new(),
            in_use: 0,
            limit: limit_bytes / PAGE_SIZE,
            tables: 0,
            refused: 0,
            retired: Vec::new(),
            retired_clears: Vec::new(),
            shm: Default::default(),
        }
    }

    /// An allocator with nothing in it: what a parked process's address
    /// space holds (the real one stays with the running process).
    pub fn placeholder() -> Frames {
        Frames::new(0, 0, 0)
    }

    /// A zeroed frame, or `None` when the limit or memory is exhausted.
    pub fn alloc(&mut self, mem: &GuestMemory) -> Option<u64> {
        if self.in_use >= self.limit {
            self.refused += 1;
            tracing::debug!(in_use = self.in_use, "frame refused for the memory limit");
            return None;
        }
        let frame = if let Some(f) = self.free.pop() {
            // Recycled frames hold old data.
            mem.zero_page(f).ok()?;
            f
        } else if self.next + PAGE_SIZE <= self.end {
            let f = self.next;
            self.next += PAGE_SIZE;
            f
        } else {
            return None;
        };
        self.in_use += 1;
        Some(frame)
    }

    /// A frame whose contents the caller overwrites entirely.
    pub fn alloc_uninit(&mut self, mem: &GuestMemory) -> Option<u64> {
        if self.free.is_empty() {
            return self.alloc(mem);
        }
        if self.in_use >= self.limit {
            self.refused += 1;
            tracing::debug!(in_use = self.in_use, "frame refused for the memory limit");
            return None;
        }
        self.in_use += 1;
        self.free.pop()
    }

    pub fn free(&mut self, frame: u64) {
        // Frames below FIRST_FREE_GPA are the VMM's (the boot root table,
        // the physmap, GDT, IDT, stubs, ring-0 stack) and were never handed
        // out: the first process's root is the boot root, and its exec or
        // exit releases that layout. Recycling it let the next allocation
        // zero the boot root (the physmap slot every new layout copies) and
        // hand it to the program as data.
        if frame < FIRST_FREE_GPA {
            return;
        }
        self.in_use = self.in_use.saturating_sub(1);
        self.free.push(frame);
    }

    /// Retire the page-table frames `tables` of a layout that ran: they
    /// are freed once the ring-0 writer made `clears` (address in the
    /// physmap, value, user address to invlpg), as `take_retired` hands
    /// them out.
    pub fn retire_tables(&mut self, tables: Vec<u64>, clears: Vec<(u64, u64, u64)>) {
        self.retired.extend(tables);
        self.retired_clears.extend(clears);
    }

    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// The writes that clear retired tables, and those frames: the caller
    /// runs the writes, then frees the frames.
    pub fn take_retired(&mut self) -> (Vec<(u64, u64, u64)>, Vec<u64>) {
        (
            std::mem::take(&mut self.retired_clears),
            std::mem::take(&mut self.retired),
        )
    }

    /// Frames in use (user pages and page tables).
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Lower the limit to `frames` (never raises it).
    pub fn cap(&mut self, frames: u64) {
        self.limit = self.limit.min(frames);
    }

    /// Frames still available under the limit.
    pub fn available(&self) -> u64 {
        let physical = self.free.len() as u64 + (self.end - self.next) / PAGE_SIZE;
        self.limit.saturating_sub(self.in_use).min(physical)
    }

    /// Frames handed out as page tables so far.
    pub fn tables_allocated(&self) -> u64 {
        self.tables
    }

    /// Count a frame the caller uses as a page table.
    pub fn note_table(&mut self) {
        self.tables += 1;
    }

    /// High-water mark of guest-physical memory ever handed out.
    pub fn high_water(&self) -> u64 {
        self.next
    }
}

impl FrameAllocator for Frames {
    fn alloc_table_frame(&mut self, mem: &GuestMemory) -> Option<u64> {
        let f = self.alloc(mem)?;
        self.tables += 1;
        Some(f)
    }
}
