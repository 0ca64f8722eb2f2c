//! Shared memory objects: the pages behind MAP_SHARED mappings, kept by
//! the sandbox's one frame allocator so that every process mapping an
//! object sees the same guest frames (Linux's shmem inode / page cache).
//!
//! An object is an id with a table page index -> guest frame, filled on
//! demand, and a count of the address spaces mapping it (each layout keeps
//! the set of ids its VMAs name, `AddressSpace::shared`). An anonymous
//! object's frames are freed when the last mapper goes; a tmpfs file's
//! object is then handed to the kernel (`take_orphans`), which writes its
//! pages back into the file before freeing them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use zeroboot_vmm::layout::PAGE_SIZE;
use zeroboot_vmm::GuestMemory;

use super::Frames;

/// One shared object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedObject {
    /// Page index -> guest frame. A missing page reads as zero.
    pages: BTreeMap<u64, u64>,
    /// Address spaces with a mapping of it.
    mappers: u64,
    /// The tmpfs inode whose data it holds while mapped.
    pub file: Option<u64>,
}

/// Every shared object of the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedObjects {
    objects: BTreeMap<u64, SharedObject>,
    next_id: u64,
    /// File objects no address space maps any more.
    orphans: Vec<u64>,
}

impl SharedObjects {
    pub fn get(&self, id: u64) -> Option<&SharedObject> {
        self.objects.get(&id)
    }

    /// Objects alive (for tests and stats).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn has_orphans(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// A file object no one maps: queued for the kernel.
    fn mappers_gone(&mut self, id: u64) {
        if self.objects.get(&id).is_some_and(|o| o.file.is_some()) {
            self.orphans.push(id);
        }
    }
}

impl SharedObject {
    /// The frame of page `index`, if it has one.
    pub fn frame(&self, index: u64) -> Option<u64> {
        self.pages.get(&index).copied()
    }

    /// Pages with a frame, as (index, frame).
    pub fn pages(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pages.iter().map(|(i, f)| (*i, *f))
    }
}

impl Frames {
    /// A new, empty shared object (no mapper yet: the first map adds it).
    pub fn shm_create(&mut self, file: Option<u64>) -> u64 {
        let t = &mut self.shm;
        t.next_id += 1;
        let id = t.next_id;
        t.objects.insert(
            id,
            SharedObject {
                file,
                ..Default::default()
            },
        );
        id
    }

    pub fn shm(&self) -> &SharedObjects {
        &self.shm
    }

    /// The frame of page `index` of object `id`, allocating a zeroed one
    /// on first use; `None` at the memory limit (or for an unknown id).
    pub fn shm_page(&mut self, mem: &GuestMemory, id: u64, index: u64) -> Option<u64> {
        let existing = self.shm.objects.get(&id)?.pages.get(&index).copied();
        if let Some(f) = existing {
            return Some(f);
        }
        let f = self.alloc(mem)?;
        match self.shm.objects.get_mut(&id) {
            Some(o) => {
                o.pages.insert(index, f);
                Some(f)
            }
            None => {
                self.free(f);
                None
            }
        }
    }

    /// One more address space maps `id`.
    pub fn shm_map(&mut self, id: u64) {
        if let Some(o) = self.shm.objects.get_mut(&id) {
            o.mappers += 1;
        }
    }

    /// An address space no longer maps `id`: the last one frees an
    /// anonymous object's frames, and hands a file's to the kernel.
    pub fn shm_unmap(&mut self, id: u64) {
        let Some(o) = self.shm.objects.get_mut(&id) else {
            return;
        };
        o.mappers = o.mappers.saturating_sub(1);
        if o.mappers > 0 {
            return;
        }
        if o.file.is_some() {
            self.shm.mappers_gone(id);
        } else {
            self.shm_free(id);
        }
    }

    /// Object `id` was made for a mapping that failed: drop it if nothing
    /// maps it (a file's goes back through the kernel).
    pub fn shm_release_unused(&mut self, id: u64) {
        let unused = self.shm.objects.get(&id).is_some_and(|o| o.mappers == 0);
        if unused {
            self.shm_map(id);
            self.shm_unmap(id);
        }
    }

    /// Forget object `id` and free its frames.
    pub fn shm_free(&mut self, id: u64) {
        if let Some(o) = self.shm.objects.remove(&id) {
            for f in o.pages.into_values() {
                self.free(f);
            }
        }
    }

    /// File objects that lost their last mapper (still holding frames).
    pub fn shm_take_orphans(&mut self) -> Vec<u64> {
        let ids = std::mem::take(&mut self.shm.orphans);
        // A file mapped again meanwhile is not an orphan.
        ids.into_iter()
            .filter(|id| self.shm.objects.get(id).is_some_and(|o| o.mappers == 0))
            .collect()
    }

    /// Zero the bytes of object `id` from `from` to the end of its pages
    /// (a file shrank: the tail reads back as zero if it grows again).
    pub fn shm_zero_from(&mut self, mem: &GuestMemory, id: u64, from: u64) {
        let Some(o) = self.shm.objects.get(&id) else {
            return;
        };
        let first = from / PAGE_SIZE;
        for (&i, &f) in o.pages.range(first..) {
            let skip = if i == first { from % PAGE_SIZE } else { 0 };
            let _ = mem.zero(f + skip, (PAGE_SIZE - skip) as usize);
        }
    }
}
