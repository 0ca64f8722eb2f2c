//! Virtual memory areas: what the program mapped, with which protection
//! and backing. Page-table entries are derived from these.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroboot_abi::flags::{PROT_EXEC, PROT_READ, PROT_WRITE};

/// What backs a mapping.
#[derive(Debug, Clone)]
pub enum Backing {
    /// Zero-filled anonymous memory.
    Anon,
    /// A private copy of a file's bytes starting at `offset`.
    File {
        data: Arc<dyn FileContents>,
        offset: u64,
    },
}

/// Read access to a mapped file's bytes (an image file or a tmpfs file).
pub trait FileContents: std::fmt::Debug + Send + Sync {
    /// Fill `buf` from `offset`; bytes past the end of the file are zero.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// File size.
    fn size(&self) -> u64;
}

/// One mapping.
#[derive(Debug, Clone)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u64,
    pub backing: Backing,
    /// Private writable memory counted against the memory limit.
    pub committed: bool,
    /// Name shown in /proc/self/maps ("[heap]", "[stack]", a path).
    pub name: Arc<str>,
    /// Grows down on faults below it (the main stack).
    pub grows_down: bool,
    /// Populate on fault rather than eagerly.
    pub lazy: bool,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The part of this VMA inside [start, end), with its backing offset
    /// adjusted.
    pub fn slice(&self, start: u64, end: u64) -> Vma {
        let mut v = self.clone();
        let s = start.max(self.start);
        let e = end.min(self.end);
        if let Backing::File { offset, .. } = &mut v.backing {
            *offset += s - self.start;
        }
        v.start = s;
        v.end = e;
        v
    }

    /// Protection string for /proc/self/maps.
    pub fn perms(&self) -> String {
        format!(
            "{}{}{}p",
            if self.prot & PROT_READ != 0 { 'r' } else { '-' },
            if self.prot & PROT_WRITE != 0 {
                'w'
            } else {
                '-'
            },
            if self.prot & PROT_EXEC != 0 { 'x' } else { '-' },
        )
    }
}

/// The set of mappings, non-overlapping, keyed by start address.
#[derive(Debug, Clone, Default)]
pub struct Vmas {
    map: BTreeMap<u64, Vma>,
}

impl Vmas {
    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.map
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| addr < v.end)
    }

    /// The first mapping that starts at or above `addr`.
    pub fn next_above(&self, addr: u64) -> Option<&Vma> {
        self.map.range(addr..).next().map(|(_, v)| v)
    }

    /// Mappings overlapping [start, end), in order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        let first = self
            .map
            .range(..start)
            .next_back()
            .filter(|(_, v)| v.end > start)
            .map(|(_, v)| v.clone());
        first
            .into_iter()
            .chain(self.map.range(start..end).map(|(_, v)| v.clone()))
            .collect()
    }

    /// Whether any mapping overlaps [start, end).
    pub fn any_in(&self, start: u64, end: u64) -> bool {
        !self.overlapping(start, end).is_empty()
    }

    /// Remove [start, end) from the set, splitting mappings at the edges.
    /// Returns the removed pieces.
    pub fn remove_range(&mut self, start: u64, end: u64) -> Vec<Vma> {
        let hit = self.overlapping(start, end);
        let mut removed = Vec::new();
        for v in hit {
            self.map.remove(&v.start);
            if v.start < start {
                let left = v.slice(v.start, start);
                self.map.insert(left.start, left);
            }
            if v.end > end {
                let right = v.slice(end, v.end);
                self.map.insert(right.start, right);
            }
            removed.push(v.slice(start, end));
        }
        removed
    }

    /// Insert a mapping; the range must be free.
    pub fn insert(&mut self, v: Vma) {
        debug_assert!(!self.any_in(v.start, v.end));
        self.map.insert(v.start, v);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    /// Sum of committed (private writable) bytes.
    pub fn committed(&self) -> u64 {
        self.map
            .values()
            .filter(|v| v.committed)
            .map(|v| v.len())
            .sum()
    }

    /// Highest free range of `len` bytes ending at or below `top` and
    /// starting at or above `bottom`.
    pub fn find_free_top_down(&self, len: u64, bottom: u64, top: u64) -> Option<u64> {
        let mut hi = top;
        // Walk mappings from the top down.
        for v in self.map.range(..top).rev().map(|(_, v)| v) {
            if v.end <= hi && hi - v.end >= len {
                let start = hi - len;
                if start >= bottom {
                    return Some(start);
                }
                return None;
            }
            hi = hi.min(v.start);
            if hi < bottom + len {
                return None;
            }
        }
        if hi >= bottom + len {
            Some(hi - len)
        } else {
            None
        }
    }
}
