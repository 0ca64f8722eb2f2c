//! Virtual memory areas: what the program mapped, with which protection
//! and backing. Page-table entries are derived from these.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use zeroboot_abi::flags::{PROT_EXEC, PROT_READ, PROT_WRITE};

/// What backs a mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Backing {
    /// Zero-filled anonymous memory.
    Anon,
    /// A private copy of a file's bytes starting at `offset`.
    File {
        #[serde(with = "crate::persist::file_contents")]
        data: Arc<dyn FileContents>,
        offset: u64,
    },
    /// Shared memory object `id` of the frame allocator, from byte
    /// `offset` (MAP_SHARED anonymous memory, a shared tmpfs file).
    Shared { id: u64, offset: u64 },
}

impl Backing {
    /// The shared object this maps, if any.
    pub fn shared_id(&self) -> Option<u64> {
        match self {
            Backing::Shared { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Read access to a mapped file's bytes (an image file or a tmpfs file).
pub trait FileContents: std::fmt::Debug + Send + Sync {
    /// Fill `buf` from `offset`; bytes past the end of the file are zero.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// File size.
    fn size(&self) -> u64;
    /// How a template stores the mapping's file.
    fn persisted(&self) -> crate::persist::PersistedFile;
}

/// One mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

    /// Whether `next` starts where this ends and is the same mapping
    /// going on: protection, flags, name and backing (a file or shared
    /// object at the following offset), as Linux would merge them.
    pub fn continues_into(&self, next: &Vma) -> bool {
        if next.start != self.end
            || next.prot != self.prot
            || next.committed != self.committed
            || next.lazy != self.lazy
            || next.grows_down != self.grows_down
            || next.name != self.name
        {
            return false;
        }
        let len = self.end - self.start;
        match (&self.backing, &next.backing) {
            (Backing::Anon, Backing::Anon) => true,
            (
                Backing::File {
                    data: a,
                    offset: oa,
                },
                Backing::File {
                    data: b,
                    offset: ob,
                },
            ) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
                    && oa.checked_add(len) == Some(*ob)
            }
            (Backing::Shared { id: a, offset: oa }, Backing::Shared { id: b, offset: ob }) => {
                a == b && oa.checked_add(len) == Some(*ob)
            }
            _ => false,
        }
    }

    /// The part of this VMA inside [start, end), with its backing offset
    /// adjusted.
    pub fn slice(&self, start: u64, end: u64) -> Vma {
        let mut v = self.clone();
        let s = start.max(self.start);
        let e = end.min(self.end);
        if let Backing::File { offset, .. } | Backing::Shared { offset, .. } = &mut v.backing {
            *offset += s - self.start;
        }
        v.start = s;
        v.end = e;
        v
    }

    /// Protection string for /proc/self/maps.
    pub fn perms(&self) -> String {
        format!(
            "{}{}{}{}",
            if self.prot & PROT_READ != 0 { 'r' } else { '-' },
            if self.prot & PROT_WRITE != 0 {
                'w'
            } else {
                '-'
            },
            if self.prot & PROT_EXEC != 0 { 'x' } else { '-' },
            if self.backing.shared_id().is_some() {
                's'
            } else {
                'p'
            },
        )
    }
}

/// The set of mappings, non-overlapping, keyed by start address. Shared
/// copy-on-write: every fork and reset clones its template's kernel state,
/// and most executions map nothing new, so the (hundreds of) mappings are
/// copied only by the first change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vmas {
    map: Arc<BTreeMap<u64, Vma>>,
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

    /// The mapping containing `addr`, extended over the mappings after it
    /// that continue it: Linux merges such neighbours into one, and
    /// mremap(2) takes a range within one (a realloc grown in place and
    /// then shrunk was EFAULT here).
    pub fn find_merged(&self, addr: u64) -> Option<Vma> {
        let mut v = self.find(addr)?.clone();
        for n in self.map.range(v.end..).map(|(_, n)| n) {
            if !v.continues_into(n) {
                break;
            }
            v.end = n.end;
        }
        Some(v)
    }

    /// The first mapping that starts at or above `addr`.
    pub fn next_above(&self, addr: u64) -> Option<&Vma> {
        self.map.range(addr..).next().map(|(_, v)| v)
    }

    /// Mappings overlapping [start, end), in order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        // An empty or inverted range overlaps nothing (and BTreeMap::range
        // panics on an inverted one).
        if start >= end {
            return Vec::new();
        }
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
        if hit.is_empty() {
            return removed;
        }
        let map = Arc::make_mut(&mut self.map);
        for v in hit {
            map.remove(&v.start);
            if v.start < start {
                let left = v.slice(v.start, start);
                map.insert(left.start, left);
            }
            if v.end > end {
                let right = v.slice(end, v.end);
                map.insert(right.start, right);
            }
            removed.push(v.slice(start, end));
        }
        removed
    }

    /// Insert a mapping; the range must be free.
    pub fn insert(&mut self, v: Vma) {
        debug_assert!(!self.any_in(v.start, v.end));
        Arc::make_mut(&mut self.map).insert(v.start, v);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            prot: PROT_READ,
            backing: Backing::Anon,
            committed: false,
            name: Arc::from(""),
            grows_down: false,
            lazy: false,
        }
    }

    #[test]
    fn remove_range_splits_at_the_edges() {
        let mut v = Vmas::default();
        v.insert(anon(0x1000, 0x9000));
        let removed = v.remove_range(0x3000, 0x5000);
        assert_eq!(removed.len(), 1);
        assert_eq!((removed[0].start, removed[0].end), (0x3000, 0x5000));
        let left: Vec<(u64, u64)> = v.iter().map(|x| (x.start, x.end)).collect();
        assert_eq!(left, vec![(0x1000, 0x3000), (0x5000, 0x9000)]);
        assert!(v.find(0x4000).is_none());
        assert_eq!(v.find(0x8fff).map(|x| x.start), Some(0x5000));
    }

    #[test]
    fn find_free_top_down_skips_used_ranges() {
        let mut v = Vmas::default();
        v.insert(anon(0x8000, 0x10000));
        assert_eq!(v.find_free_top_down(0x1000, 0x1000, 0x10000), Some(0x7000));
        assert_eq!(v.find_free_top_down(0x8000, 0x1000, 0x10000), None);
        assert_eq!(v.find_free_top_down(0x1000, 0x1000, 0x20000), Some(0x1f000));
    }
}
