//! Guest-physical memory: one region over a memfd (or a snapshot file).
//!
//! A template's memory is a `MAP_SHARED` memfd; a fork maps the same file
//! `MAP_PRIVATE`, so the host's page cache gives it copy-on-write for free.
//! Every access is bounds-checked (vm-memory does the checking): guest
//! physical addresses come from page tables the guest could not write, but a
//! bug must still end in an error, never a stray host access.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    ByteValued, Bytes, FileOffset, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
    VolatileSlice,
};

use crate::layout::{MAX_GUEST_MEMORY, PAGE_SIZE};
use crate::reaper::Deferred;

/// Errors of guest memory set-up and access.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} bytes is not a multiple of 2 MiB or exceeds the physmap")]
    BadSize(u64),
    #[error("creating the guest memory file")]
    Memfd(#[source] io::Error),
    #[error("mapping guest memory")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    #[error("reading the host's page map (/proc/self/pagemap)")]
    PageMap(#[source] io::Error),
    #[error("guest-physical range {gpa:#x}+{len:#x} is outside guest memory")]
    OutOfRange { gpa: u64, len: usize },
    #[error("another mapping took the host address range held for guest memory")]
    Taken,
}

/// An anonymous host mapping this crate made and unmaps on drop.
struct Reservation {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; who may touch it is governed by the
// `GuestMemory` that owns it.
unsafe impl Send for Reservation {}
// SAFETY: as above.
unsafe impl Sync for Reservation {}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` is a mapping made in `new_private` and not
        // referenced once the owning GuestMemory (and its region) is gone.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len);
        }
    }
}

/// Host address space held for guest memory that is not made yet: a VM
/// made ahead of need registers its memory slots over it (`vm::Blank`),
/// and the memory is mapped in its place later (`new_cow_in`), so
/// that registering the slots (which waits for KVM's SRCU grace period,
/// 0.1-0.6 ms here) is off the fork's path. Unmapped on drop.
pub struct Reserved(Reservation);

impl Reserved {
    /// `len` bytes of inaccessible address space.
    pub fn new(len: u64) -> io::Result<Reserved> {
        let addr = anonymous(len, libc::PROT_NONE)?;
        Ok(Reserved(Reservation {
            addr: addr as *mut u8,
            len: len as usize,
        }))
    }

    /// Its host address.
    pub fn addr(&self) -> u64 {
        self.0.addr as u64
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.0.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
}

/// One bit per page, and above it one bit per word of those bits that
/// may be non-zero: a reset takes the record several times, and scanning
/// the whole page map (8192 words for 2 GiB) each time cost more than the
/// few pages the VMM writes.
struct DirtyMap {
    pages: Vec<AtomicU64>,
    words: Vec<AtomicU64>,
}

impl DirtyMap {
    fn new(pages: u64) -> DirtyMap {
        let n = pages.div_ceil(64) as usize;
        DirtyMap {
            pages: (0..n).map(|_| AtomicU64::new(0)).collect(),
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn mark(&self, page: u64) {
        let w = (page / 64) as usize;
        let Some(word) = self.pages.get(w) else {
            return;
        };
        // The page's bit first, then its word's: `take` clears a word's
        // summary bit before the word, so a bit set meanwhile is either
        // taken now or found through its summary bit next time.
        word.fetch_or(1 << (page % 64), Ordering::SeqCst);
        if let Some(s) = self.words.get(w / 64) {
            let bit = 1 << (w % 64);
            if s.load(Ordering::SeqCst) & bit == 0 {
                s.fetch_or(bit, Ordering::SeqCst);
            }
        }
    }

    fn take(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (si, s) in self.words.iter().enumerate() {
            if s.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let mut words = s.swap(0, Ordering::SeqCst);
            while words != 0 {
                let w = si * 64 + words.trailing_zeros() as usize;
                words &= words - 1;
                let Some(word) = self.pages.get(w) else {
                    continue;
                };
                let mut bits = word.swap(0, Ordering::SeqCst);
                while bits != 0 {
                    out.push(w as u64 * 64 + bits.trailing_zeros() as u64);
                    bits &= bits - 1;
                }
            }
        }
        out
    }
}

/// The host side of guest memory: freeing it (unmapping a fork's private
/// pages, the last reference to a layer's file) is left to the reaper
/// (`crate::reaper`) once the memory is dropped; nothing reaches it then.
struct Mapping {
    region: GuestRegionMmap<()>,
    /// The pages of a live sandbox this memory was forked from, mapped
    /// over `file` (see [`Layer`]).
    layer: Option<Arc<Layer>>,
    // Declared last: unmapped after `region` is dropped.
    _reservation: Option<Reservation>,
}

/// The memory of one VM.
pub struct GuestMemory {
    map: Deferred<Mapping>,
    /// The file behind the memory, kept so that forks can map it privately.
    file: Arc<File>,
    size: u64,
    /// Bytes at the start that come from `file` (the rest is fresh memory).
    file_len: u64,
    private: bool,
    /// Pages the VMM wrote, when tracking is on: KVM's dirty log sees only
    /// the guest's own writes.
    dirty: Option<DirtyMap>,
    /// Something may have written this memory since `clear_written`: the
    /// VMM (every write helper sets it) or a vCPU (`note_run`). A freeze
    /// that finds it clear knows the page map has not changed (the host's
    /// page map costs ~0.2 ms to read for 128 MiB).
    written: AtomicBool,
}

/// The pages a live sandbox had made its own when it was forked, copied
/// into a sparse memfd at their own offsets: its forks map the template's
/// memory and this over it, both copy-on-write. A layer may lie over
/// another (`below`): a source frozen again after it changed copies only
/// what changed since into a new layer over the last one, and its forks
/// map the template, then each layer's runs over it, the upper winning.
/// The caller bounds the chain (`kernel::fork`): a layer no larger than
/// what lies over it is folded into it, and so is any below a depth.
pub struct Layer {
    file: Arc<File>,
    /// (first page, pages), ascending: one host mapping each in a fork.
    runs: Vec<(u64, u64)>,
    /// The runs of what the layer must carry: its source's own pages (runs
    /// a few pages apart joined). What a checkpoint writes and records,
    /// and what the next freeze copies again. `runs` joins these further,
    /// over pages that read as the template's (copied into the file too),
    /// so that a fork maps fewer pieces.
    saved: Vec<(u64, u64)>,
    /// The layer this one lies over (none: the template).
    below: Option<Arc<Layer>>,
}

impl Layer {
    /// The pages it carries itself (see `saved`; not those below it),
    /// ascending.
    pub fn own_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.saved.iter().flat_map(|&(p, n)| p..p + n)
    }

    /// How many pages it carries itself.
    pub fn own_len(&self) -> u64 {
        self.saved.iter().map(|r| r.1).sum()
    }

    /// How many pages it and the layers below carry (each page once).
    pub fn len(&self) -> u64 {
        self.saved_runs().iter().map(|r| r.1).sum()
    }

    /// The layer it lies over.
    pub fn below(&self) -> Option<&Arc<Layer>> {
        self.below.as_ref()
    }

    /// Layers in its chain, itself included.
    pub fn depth(&self) -> usize {
        1 + self.below.as_ref().map_or(0, |b| b.depth())
    }

    /// It and the layers below, the top first.
    fn chain(&self) -> Vec<&Layer> {
        let mut out = vec![self];
        while let Some(b) = out.last().and_then(|l| l.below.as_deref()) {
            out.push(b);
        }
        out
    }

    /// `runs_of` of each layer of the chain flattened: ascending pieces
    /// (first page, pages, the layer whose file holds them), a page taken
    /// from the topmost layer that has it.
    fn flatten<'a>(
        &'a self,
        runs_of: impl Fn(&'a Layer) -> &'a [(u64, u64)],
    ) -> Vec<(u64, u64, &'a Layer)> {
        // Painted from the top down: a lower layer fills only the gaps.
        let mut painted: std::collections::BTreeMap<u64, (u64, &Layer)> = Default::default();
        for l in self.chain() {
            for &(p, n) in runs_of(l) {
                let (mut at, end) = (p, p + n);
                // A piece already painted that starts before `at` and
                // reaches into the run.
                if let Some((&s, &(m, _))) = painted.range(..at).next_back() {
                    at = at.max(s + m);
                }
                if at >= end {
                    continue;
                }
                let inside: Vec<(u64, u64)> =
                    painted.range(at..end).map(|(&s, &(m, _))| (s, m)).collect();
                for (s, m) in inside {
                    if s > at {
                        painted.insert(at, (s - at, l));
                    }
                    at = at.max(s + m);
                }
                if end > at {
                    painted.insert(at, (end - at, l));
                }
            }
        }
        painted.into_iter().map(|(p, (n, l))| (p, n, l)).collect()
    }

    /// How many pages its own file holds for forks to map (`own_len`
    /// and the pages between its runs).
    pub fn mapped_len(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }

    /// Host mappings a fork makes for the chain's runs.
    pub fn runs(&self) -> usize {
        self.flatten(|l| &l.runs).len()
    }

    /// Whether forks map more of its file than it carries (its runs joined
    /// over pages between, `capture_layer`'s `wide`).
    pub fn maps_more(&self) -> bool {
        self.runs != self.saved
    }

    /// Its own runs as forks map them: (first page, pages), ascending.
    pub fn run_list(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The runs of the pages it and the layers below carry (what
    /// `write_to` writes and a checkpoint records for `open`), ascending.
    pub fn saved_runs(&self) -> Vec<(u64, u64)> {
        merge_runs(
            self.flatten(|l| &l.saved)
                .into_iter()
                .map(|(p, n, _)| (p, n)),
            0,
        )
    }

    /// Write the pages it and the layers below carry (`saved_runs`), each
    /// from the topmost layer that has it, into `out` at their own
    /// offsets, leaving holes for zero pages, and size `out` to `size`
    /// (the guest memory size): the file `open` maps again with those runs
    /// (a snapshot's memory). Time and disk go with the layers' pages, not
    /// with the guest's memory.
    pub fn write_to(&self, out: &File, size: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 1 << 20];
        for (p, n, l) in self.flatten(|l| &l.saved) {
            let (mut at, end) = (p * PAGE_SIZE, (p + n) * PAGE_SIZE);
            while at < end {
                let len = ((end - at) as usize).min(buf.len());
                l.file.read_exact_at(&mut buf[..len], at)?;
                for (i, page) in buf[..len].chunks(PAGE_SIZE as usize).enumerate() {
                    if page.iter().any(|&b| b != 0) {
                        out.write_all_at(page, at + i as u64 * PAGE_SIZE)?;
                    }
                }
                at += len as u64;
            }
        }
        out.set_len(size)?;
        out.sync_all()
    }

    /// A layer over `file` (written by `write_to`) with `runs`, checked:
    /// ascending, apart, and inside the file.
    pub fn open(file: File, runs: Vec<(u64, u64)>) -> Result<Layer, MemoryError> {
        let len = file.metadata().map_err(MemoryError::Memfd)?.len();
        let mut next = 0u64;
        for &(p, n) in &runs {
            let end = p.checked_add(n).and_then(|e| e.checked_mul(PAGE_SIZE));
            match end {
                Some(end) if n > 0 && p >= next && end <= len => next = p + n,
                _ => {
                    return Err(MemoryError::OutOfRange {
                        gpa: p.saturating_mul(PAGE_SIZE),
                        len: n.saturating_mul(PAGE_SIZE) as usize,
                    })
                }
            }
        }
        Ok(Layer {
            file: Arc::new(file),
            saved: runs.clone(),
            runs,
            below: None,
        })
    }
}

/// Ascending `pages` as runs, a run taking in the next page when it is at
/// most `gap` pages past its end.
fn join_runs(pages: impl IntoIterator<Item = u64>, gap: u64) -> Vec<(u64, u64)> {
    merge_runs(pages.into_iter().map(|p| (p, 1)), gap)
}

/// Ascending runs (first page, pages) joined where one starts at most
/// `gap` pages past the end of the one before (overlaps joined too).
fn merge_runs(runs: impl IntoIterator<Item = (u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (p, n) in runs {
        match out.last_mut() {
            Some((s, m)) if p <= *s + *m + gap => *m = (*m).max(p + n - *s),
            _ => out.push((p, n)),
        }
    }
    out
}

fn check_size(size: u64) -> Result<(), MemoryError> {
    if size == 0 || !size.is_multiple_of(2 << 20) || size > MAX_GUEST_MEMORY {
        return Err(MemoryError::BadSize(size));
    }
    Ok(())
}

impl GuestMemory {
    /// New zeroed memory of `size` bytes backed by a fresh memfd, shared so
    /// that it can later be forked or saved. Untouched pages cost nothing.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        check_size(size)?;
        let file = memfd("zeroboot-guest")?;
        file.set_len(size).map_err(MemoryError::Memfd)?;
        Self::map(Arc::new(file), size, libc::MAP_SHARED)
    }

    /// A copy-on-write view of `file`: writes stay private to this mapping.
    /// Used for forks (of a template's memfd or of a template file on disk).
    pub fn new_private(file: Arc<File>, size: u64) -> Result<Self, MemoryError> {
        check_size(size)?;
        Self::map(file, size, libc::MAP_PRIVATE)
    }

    fn map(file: Arc<File>, size: u64, flags: i32) -> Result<Self, MemoryError> {
        let fo = FileOffset::from_arc(file.clone(), 0);
        let region = MmapRegionBuilder::new(size as usize)
            .with_file_offset(fo)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags | libc::MAP_NORESERVE)
            .build()
            .map_err(MemoryError::Mmap)?;
        let region = GuestRegionMmap::new(region, vm_memory::GuestAddress(0)).ok_or(
            MemoryError::OutOfRange {
                gpa: 0,
                len: size as usize,
            },
        )?;
        Ok(GuestMemory {
            map: Deferred::new(Mapping {
                region,
                layer: None,
                _reservation: None,
            }),
            file,
            size,
            file_len: size,
            private: flags & libc::MAP_PRIVATE != 0,
            dirty: None,
            written: AtomicBool::new(true),
        })
    }

    /// Copy-on-write memory of `size` bytes whose first `file_len` bytes
    /// are `file`'s (a template) and the rest fresh zeroed memory: one
    /// contiguous host range, so the guest-physical layout is unchanged
    /// while only what is used costs anything.
    pub fn new_cow(file: Arc<File>, file_len: u64, size: u64) -> Result<Self, MemoryError> {
        Self::cow_over(file, file_len, size, None, None)
    }

    /// As `new_cow`, with `layer`'s runs mapped over it (`new_layered`);
    /// in place of `at` if given (`new_cow_in`).
    fn cow_over(
        file: Arc<File>,
        file_len: u64,
        size: u64,
        layer: Option<Arc<Layer>>,
        at: Option<Reserved>,
    ) -> Result<Self, MemoryError> {
        check_size(size)?;
        if file_len > size || !file_len.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::BadSize(file_len));
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let pieces = pieces(&file, file_len, size, layer.as_deref())?;
        let addr = match at {
            Some(held) => map_pieces_in(held, size, &pieces)?,
            None => map_pieces(size, &pieces).map_err(MemoryError::Memfd)?,
        };
        let reservation = Reservation {
            addr: addr as *mut u8,
            len: size as usize,
        };
        // SAFETY: `addr` is a live mapping of `size` bytes owned by
        // `reservation`, which outlives the region (field order in
        // GuestMemory).
        let region = unsafe {
            MmapRegionBuilder::new(size as usize)
                .with_raw_mmap_pointer(addr as *mut u8)
                .with_mmap_prot(prot)
                .with_mmap_flags(libc::MAP_PRIVATE)
                .build()
        }
        .map_err(MemoryError::Mmap)?;
        let region = GuestRegionMmap::new(region, vm_memory::GuestAddress(0)).ok_or(
            MemoryError::OutOfRange {
                gpa: 0,
                len: size as usize,
            },
        )?;
        Ok(GuestMemory {
            map: Deferred::new(Mapping {
                region,
                layer,
                _reservation: Some(reservation),
            }),
            file,
            size,
            file_len,
            private: true,
            dirty: None,
            written: AtomicBool::new(true),
        })
    }

    /// Copy-on-write memory of a fork of a live sandbox: `file` (its
    /// template's memory) for the first `file_len` bytes, with `layer` (the
    /// pages the live sandbox had made its own) mapped over it, privately
    /// too. One contiguous host range, as `new_cow`.
    pub fn new_layered(
        file: Arc<File>,
        file_len: u64,
        size: u64,
        layer: Arc<Layer>,
    ) -> Result<Self, MemoryError> {
        Self::cow_over(file, file_len, size, Some(layer), None)
    }

    /// As `new_cow` (with `layer`: `new_layered`), mapped in place of
    /// `held`, which must be `size` bytes long: the memory's host address
    /// is `held.addr()`. `Taken` when another mapping got into the range
    /// while it was being replaced (nothing of this memory is left mapped
    /// then).
    pub fn new_cow_in(
        held: Reserved,
        file: Arc<File>,
        file_len: u64,
        size: u64,
        layer: Option<Arc<Layer>>,
    ) -> Result<Self, MemoryError> {
        Self::cow_over(file, file_len, size, layer, Some(held))
    }

    /// Map `layer`'s runs over this memory, privately (copy-on-write).
    fn map_layer(&self, layer: &Layer) -> Result<(), MemoryError> {
        if !self.private {
            // A template's shared memory is never replaced.
            return Err(MemoryError::Memfd(io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let base = self.host_address();
        for &(page, n) in &layer.runs {
            if (page + n) * PAGE_SIZE > self.size {
                return Err(MemoryError::OutOfRange {
                    gpa: page * PAGE_SIZE,
                    len: (n * PAGE_SIZE) as usize,
                });
            }
            // SAFETY: MAP_FIXED over pages of our own private mapping
            // (checked to lie inside it just above), with a private view
            // of the layer file, which is this memory's size long.
            let r = unsafe {
                libc::mmap(
                    (base + page * PAGE_SIZE) as *mut libc::c_void,
                    (n * PAGE_SIZE) as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    std::os::fd::AsRawFd::as_raw_fd(&*layer.file),
                    (page * PAGE_SIZE) as libc::off_t,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(MemoryError::Memfd(io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// Share `layer`, which `capture_layer` just copied from this memory,
    /// with the forks made from it: its pages are mapped over this memory
    /// as over theirs, so this memory's private copies of them are freed,
    /// and `private_pages` then tells only what was written since (a
    /// freeze with nothing new reuses the layer instead of copying it
    /// again). The contents do not change; KVM drops its translations of
    /// the range (MMU notifier) and faults the pages in again. Only while
    /// nothing writes this memory between the capture and this call, and
    /// no vCPU runs on it.
    pub fn adopt_layer(&mut self, layer: Arc<Layer>) -> Result<(), MemoryError> {
        self.map_layer(&layer)?;
        self.map.layer = Some(layer);
        Ok(())
    }

    /// The live sandbox's pages this memory was forked with, if any.
    pub fn layer(&self) -> Option<&Arc<Layer>> {
        self.map.layer.as_ref()
    }

    /// Pages whose contents are this memory's own, not its file's: written
    /// since it was mapped (a private copy), or fresh memory past the file
    /// that was touched. Read from the host's page map, which sees every
    /// write, the guest's and the VMM's alike.
    pub fn private_pages(&self) -> Result<Vec<u64>, MemoryError> {
        self.private_pages_below(self.size)
    }

    /// `private_pages` among the pages below guest-physical `end`: where
    /// the caller knows nothing beyond was ever touched (memory no KVM
    /// slot covers and no frame allocator handed out), the page map is
    /// read for that much only: a few ms less per freeze of a sandbox
    /// using 120 MiB of its 2.3 GiB.
    pub fn private_pages_below(&self, end: u64) -> Result<Vec<u64>, MemoryError> {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        const FILE_OR_SHARED: u64 = 1 << 61;
        use std::os::unix::fs::FileExt;
        let map = pagemap()?;
        let pages = end.min(self.size).div_ceil(PAGE_SIZE);
        let first = self.host_address() / PAGE_SIZE;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8 * 4096];
        let mut p = 0;
        while p < pages {
            let n = (pages - p).min(4096);
            let bytes = &mut buf[..(n * 8) as usize];
            map.read_exact_at(bytes, (first + p) * 8)
                .map_err(MemoryError::PageMap)?;
            for (i, e) in bytes.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(e);
                let e = u64::from_le_bytes(w);
                if e & SWAPPED != 0 || (e & PRESENT != 0 && e & FILE_OR_SHARED == 0) {
                    out.push(p + i as u64);
                }
            }
            p += n;
        }
        Ok(out)
    }

    /// Copy the current contents of `pages` (ascending page numbers) into
    /// a new layer over `below` (none: over this memory's file) that forks
    /// can map; the pages not in it must read the same here as in `below`.
    /// With `wide`, forks map its runs joined up to 2 MiB apart (fewer
    /// mappings per fork, more pages copied; see below).
    pub fn capture_layer(
        &self,
        pages: &[u64],
        below: Option<Arc<Layer>>,
        wide: bool,
    ) -> Result<Layer, MemoryError> {
        let file = memfd("zeroboot-layer")?;
        file.set_len(self.size).map_err(MemoryError::Memfd)?;
        // What the layer must carry: runs a few pages apart become one
        // (the pages between cost only their copy, and read as the
        // template's, as before).
        let saved = join_runs(pages.iter().copied(), 64);
        // What forks map: runs up to 2 MiB apart become one. Each run is
        // two host mappings in every fork (the run, and the template up
        // to the next): system calls, and VMAs, which every later
        // `KVM_CREATE_VM` locks one by one and every MMU-notifier round
        // walks; the template's pages between cost a copy, once per
        // freeze, in memory only (a checkpoint writes `saved`). A python
        // source holding 80 MiB of numpy data: 31 runs joined 64 pages
        // apart, 4 at 512, for 17 MiB more in the layer (shared by the
        // source and its copies); `bench fork-live`, alternated: 100
        // copies in one call 116-129 ms with 31 runs, 74-100 ms with 4;
        // a snapshot ~10 % slower (the freeze's copy), the rest the same.
        // A layer over another mostly holds what changed since it, a few
        // hundred pages after a run of code: joined 512 pages apart, it
        // copied ~4500 pages for 180 (`bench fork-live`, a fork after a run
        // in the source: 14 ms, 4.9 ms with its saved runs as they are).
        let runs = if wide {
            merge_runs(saved.iter().copied(), 512)
        } else {
            saved.clone()
        };
        for &(p, n) in &runs {
            let (off, len) = (p * PAGE_SIZE, (n * PAGE_SIZE) as usize);
            self.check(off, len)?;
            let mut done = 0;
            while done < len {
                // SAFETY: the source range lies inside our mapping (checked
                // just above); the kernel only reads it, straight into the
                // file, with no bounce buffer (a layer can be ~100 MiB).
                let r = unsafe {
                    libc::pwrite(
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        (self.host_address() + off + done as u64) as *const libc::c_void,
                        len - done,
                        (off + done as u64) as libc::off_t,
                    )
                };
                if r <= 0 {
                    let e = io::Error::last_os_error();
                    if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(MemoryError::Memfd(e));
                }
                done += r as usize;
            }
        }
        Ok(Layer {
            file: Arc::new(file),
            runs,
            saved,
            below,
        })
    }

    /// Start recording which pages the VMM writes.
    pub fn track_dirty(&mut self) {
        self.dirty = Some(DirtyMap::new(self.size / PAGE_SIZE));
    }

    fn mark(&self, gpa: u64, len: usize) {
        self.written.store(true, Ordering::Relaxed);
        if let Some(d) = &self.dirty {
            if len == 0 {
                return;
            }
            let first = gpa / PAGE_SIZE;
            let last = (gpa + len as u64 - 1) / PAGE_SIZE;
            for p in first..=last {
                d.mark(p);
            }
        }
    }

    /// A vCPU is about to run on this memory: it may write any page.
    pub fn note_run(&self) {
        self.written.store(true, Ordering::Relaxed);
    }

    /// Whether the VMM or a vCPU may have written this memory since the
    /// last `clear_written` (true for new memory).
    pub fn written(&self) -> bool {
        self.written.load(Ordering::Relaxed)
    }

    /// Start watching for writes afresh (see `written`).
    pub fn clear_written(&self) {
        self.written.store(false, Ordering::Relaxed);
    }

    /// Page numbers the VMM wrote since the last call (clears the record).
    pub fn take_dirty(&self) -> Vec<u64> {
        self.dirty.as_ref().map(DirtyMap::take).unwrap_or_default()
    }

    /// Bytes at the start that come from the backing file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file behind this memory (for forks and snapshots).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Whether this is a private (copy-on-write) mapping.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// Host address of guest-physical 0, for the KVM memory slot.
    pub fn host_address(&self) -> u64 {
        self.map.region.as_ptr() as u64
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        match gpa.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemoryError::OutOfRange { gpa, len }),
        }
    }

    /// Copy guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        self.map
            .region
            .read_slice(buf, MemoryRegionAddress(gpa))
            .map_err(|_| MemoryError::OutOfRange {
                gpa,
                len: buf.len(),
            })
    }

    /// Copy `buf` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        self.mark(gpa, buf.len());
        self.map
            .region
            .write_slice(buf, MemoryRegionAddress(gpa))
            .map_err(|_| MemoryError::OutOfRange {
                gpa,
                len: buf.len(),
            })
    }

    /// Read a plain value.
    pub fn read_obj<T: ByteValued>(&self, gpa: u64) -> Result<T, MemoryError> {
        self.check(gpa, std::mem::size_of::<T>())?;
        self.map
            .region
            .read_obj(MemoryRegionAddress(gpa))
            .map_err(|_| MemoryError::OutOfRange {
                gpa,
                len: std::mem::size_of::<T>(),
            })
    }

    /// Write a plain value.
    pub fn write_obj<T: ByteValued>(&self, gpa: u64, val: T) -> Result<(), MemoryError> {
        self.check(gpa, std::mem::size_of::<T>())?;
        self.mark(gpa, std::mem::size_of::<T>());
        self.map
            .region
            .write_obj(val, MemoryRegionAddress(gpa))
            .map_err(|_| MemoryError::OutOfRange {
                gpa,
                len: std::mem::size_of::<T>(),
            })
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemoryError> {
        self.read_obj::<u64>(gpa)
    }

    pub fn write_u64(&self, gpa: u64, val: u64) -> Result<(), MemoryError> {
        self.write_obj::<u64>(gpa, val)
    }

    /// Zero `len` bytes at `gpa`.
    pub fn zero(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            self.write(gpa + done as u64, &ZEROS[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Zero a whole page. A page that is already zero is left untouched, so
    /// that a fork does not copy a template page only to clear it again.
    pub fn zero_page(&self, gpa: u64) -> Result<(), MemoryError> {
        let s = self.slice(gpa, PAGE_SIZE as usize)?;
        let mut buf = [0u64; (PAGE_SIZE / 8) as usize];
        s.copy_to(buf.as_mut_slice());
        if buf.iter().any(|&w| w != 0) {
            self.zero(gpa, PAGE_SIZE as usize)?;
        }
        Ok(())
    }

    /// Copy the page at `gpa` of `src` (a template's view) to the same
    /// place here, as a VMM write: a reset's restore of one page, a memcpy
    /// instead of a read and a write through buffers.
    pub fn copy_page_from(&self, src: &GuestMemory, gpa: u64) -> Result<(), MemoryError> {
        let len = PAGE_SIZE as usize;
        let from = src.slice(gpa, len)?;
        self.check(gpa, len)?;
        self.mark(gpa, len);
        let to = self
            .map
            .region
            .get_slice(MemoryRegionAddress(gpa), len)
            .map_err(|_| MemoryError::OutOfRange { gpa, len })?;
        from.copy_to_volatile_slice(to);
        Ok(())
    }

    /// Make the page at `gpa` equal to `src`'s (a reset's restore): a page
    /// that already is (a reset restores every page the guest ever wrote,
    /// about a third of them unchanged by the last execution) is only read,
    /// so it is not written back to memory; one that differs is copied
    /// whole from its first differing 64-byte line on. Returns whether it
    /// differed. Only while no vCPU runs on this memory (the reset's caller
    /// owns it).
    pub fn restore_page_from(&self, src: &GuestMemory, gpa: u64) -> Result<bool, MemoryError> {
        const WORDS: usize = PAGE_SIZE as usize / 8;
        const LINE: usize = 8;
        if !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::OutOfRange {
                gpa,
                len: PAGE_SIZE as usize,
            });
        }
        src.check(gpa, PAGE_SIZE as usize)?;
        self.check(gpa, PAGE_SIZE as usize)?;
        // SAFETY: both pages lie inside their live mappings (checked just
        // above; the page offset keeps them 8-byte aligned); `src` is
        // another mapping that nothing writes (the template's view), and
        // no vCPU runs on `self` while a reset restores it, so the plain
        // loads and stores below race with nothing.
        let (from, to) = unsafe {
            (
                std::slice::from_raw_parts(
                    (src.map.region.as_ptr() as usize + gpa as usize) as *const u64,
                    WORDS,
                ),
                (self.map.region.as_ptr() as usize + gpa as usize) as *mut u64,
            )
        };
        let first = (0..WORDS).step_by(LINE).find(|&at| {
            (0..LINE).fold(0, |acc, i| {
                // SAFETY: as above; `at + i` < WORDS.
                acc | (unsafe { *to.add(at + i) } ^ from[at + i])
            }) != 0
        });
        let Some(at) = first else {
            return Ok(false);
        };
        // SAFETY: as above; `at` < WORDS.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr().add(at), to.add(at), WORDS - at) };
        self.mark(gpa, PAGE_SIZE as usize);
        Ok(true)
    }

    /// A bounds-checked volatile view of guest memory, for reading (writes
    /// through it would escape dirty tracking).
    fn slice(
        &self,
        gpa: u64,
        len: usize,
    ) -> Result<VolatileSlice<'_, impl BitmapSlice>, MemoryError> {
        self.check(gpa, len)?;
        self.map
            .region
            .get_slice(MemoryRegionAddress(gpa), len)
            .map_err(|_| MemoryError::OutOfRange { gpa, len })
    }

    /// Whether the range is inside guest memory.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|e| e <= self.size)
    }

    /// Length of the region (for `GuestMemoryRegion` users).
    pub fn len(&self) -> u64 {
        self.map.region.len()
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
}

/// Where a piece of a fork's memory comes from: fresh zeroed memory, or
/// a file at the piece's own guest-physical offset (the template's
/// memory, a layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    Fresh,
    File(std::os::fd::RawFd),
}

/// The pieces (start, length, backing) of a fork's memory of `size`
/// bytes: `file` up to `file_len`, fresh memory after, `layer`'s runs
/// over both. Ascending and contiguous from 0 to `size`.
fn pieces(
    file: &File,
    file_len: u64,
    size: u64,
    layer: Option<&Layer>,
) -> Result<Vec<(u64, u64, Backing)>, MemoryError> {
    use std::os::fd::AsRawFd;
    let mut out: Vec<(u64, u64, Backing)> = Vec::new();
    // The template and fresh memory from `from` to `to`.
    let base = |out: &mut Vec<(u64, u64, Backing)>, from: u64, to: u64| {
        let split = file_len.clamp(from, to);
        if split > from {
            out.push((from, split - from, Backing::File(file.as_raw_fd())));
        }
        if to > split {
            out.push((split, to - split, Backing::Fresh));
        }
    };
    let mut at = 0;
    let runs = layer.map_or_else(Vec::new, |l| l.flatten(|l| &l.runs));
    for (page, n, l) in runs {
        let (start, len) = (page * PAGE_SIZE, n * PAGE_SIZE);
        if start < at || start + len > size {
            return Err(MemoryError::OutOfRange {
                gpa: start,
                len: len as usize,
            });
        }
        base(&mut out, at, start);
        // Pieces of one file that meet are one mapping.
        match out.last_mut() {
            Some((s, m, Backing::File(fd))) if *fd == l.file.as_raw_fd() && *s + *m == start => {
                *m += len
            }
            _ => out.push((start, len, Backing::File(l.file.as_raw_fd()))),
        }
        at = start + len;
    }
    base(&mut out, at, size);
    Ok(out)
}

/// A new anonymous private mapping of `len` bytes with `prot`, where the
/// kernel chooses.
fn anonymous(len: u64, prot: i32) -> io::Result<*mut libc::c_void> {
    // SAFETY: a new mapping at an address the kernel chooses; nothing
    // else refers to it.
    let r = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Map one piece (see `pieces`) at `base + off`, where `fixed` allows:
/// into a hole (MAP_FIXED_NOREPLACE fails rather than replace anything),
/// or over a range of our own reservation (MAP_FIXED).
fn map_piece(base: u64, off: u64, len: u64, b: Backing, fixed: i32) -> io::Result<()> {
    let (fd, flags, foff) = match b {
        Backing::Fresh => (-1, libc::MAP_ANONYMOUS, 0),
        Backing::File(fd) => (fd, 0, off as libc::off_t),
    };
    let at = (base + off) as *mut libc::c_void;
    // SAFETY: maps `len` bytes at `at` only where `fixed` allows (see
    // above); the file offset is the piece's guest offset, inside the
    // file (the template is at least `file_len` long, a layer the
    // memory's size).
    let r = unsafe {
        libc::mmap(
            at,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE | flags | fixed,
            fd,
            foff,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if r != at {
        // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
        // SAFETY: `r` is the mapping just made, of `len` bytes.
        unsafe { libc::munmap(r, len as usize) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(())
}

/// Map `pieces` into the hole at `base`, each with MAP_FIXED_NOREPLACE;
/// on failure (EEXIST: another thread mapped into the hole meanwhile)
/// what was mapped is unmapped again.
fn place_pieces(base: u64, pieces: &[(u64, u64, Backing)]) -> io::Result<()> {
    let mut done = 0;
    for &(off, len, b) in pieces {
        if let Err(e) = map_piece(base, off, len, b, libc::MAP_FIXED_NOREPLACE) {
            if done > 0 {
                // SAFETY: the pieces mapped just before, ours.
                unsafe { libc::munmap(base as *mut libc::c_void, done as usize) };
            }
            return Err(e);
        }
        done = off + len;
    }
    Ok(())
}

/// Map `pieces` (see `pieces`) as one private, contiguous host range of
/// `size` bytes; returns its address. Each piece is mapped into a hole
/// with MAP_FIXED_NOREPLACE: mapping over a range already mapped would
/// unmap it first, and every unmap in this process calls the MMU
/// notifier of every VM it holds (KVM's), so a fork of a layered sandbox
/// would cost a round over all live VMs per piece. The hole is found by
/// mapping and unmapping a reservation (one round); another thread may
/// map into it meanwhile, then it is tried again, and at last the range
/// is built over a reservation as before.
fn map_pieces(size: u64, pieces: &[(u64, u64, Backing)]) -> io::Result<*mut libc::c_void> {
    if let [(0, _, Backing::Fresh)] = pieces {
        return anonymous(size, libc::PROT_READ | libc::PROT_WRITE);
    }
    for _ in 0..3 {
        let held = Reserved::new(size)?;
        let hole = held.addr();
        drop(held);
        match place_pieces(hole, pieces) {
            Ok(()) => return Ok(hole as *mut libc::c_void),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    // Over a reservation of our own, replacing it piece by piece.
    let held = Reserved::new(size)?;
    let base = held.addr();
    for &(off, len, b) in pieces {
        // On failure `held` unmaps the reservation with what was mapped
        // over it.
        map_piece(base, off, len, b, libc::MAP_FIXED)?;
    }
    std::mem::forget(held);
    Ok(base as *mut libc::c_void)
}

/// `map_pieces` in place of `held` (`size` bytes): the reservation is
/// unmapped (one MMU-notifier round, as `map_pieces` pays to find a
/// hole) and the pieces are mapped into the hole it leaves; `Taken` if
/// another thread mapped into it meanwhile.
fn map_pieces_in(
    held: Reserved,
    size: u64,
    pieces: &[(u64, u64, Backing)],
) -> Result<*mut libc::c_void, MemoryError> {
    if held.len() != size {
        return Err(MemoryError::BadSize(held.len()));
    }
    let base = held.addr();
    drop(held);
    match place_pieces(base, pieces) {
        Ok(()) => Ok(base as *mut libc::c_void),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(MemoryError::Taken),
        Err(e) => Err(MemoryError::Memfd(e)),
    }
}

/// An anonymous memory file (unsealed: a sandbox's memory grows in slot
/// steps with ftruncate).
/// This process's page map, opened once: a process that gave up root
/// (`credentials::drop_to`) is no longer dumpable, and then may not open
/// its own /proc files any more, so the server opens it before that.
pub fn pagemap() -> Result<&'static File, MemoryError> {
    static MAP: std::sync::OnceLock<Result<File, String>> = std::sync::OnceLock::new();
    match MAP.get_or_init(|| File::open("/proc/self/pagemap").map_err(|e| e.to_string())) {
        Ok(f) => Ok(f),
        Err(e) => Err(MemoryError::PageMap(io::Error::other(e.clone()))),
    }
}

fn memfd(name: &str) -> Result<File, MemoryError> {
    let cname =
        std::ffi::CString::new(name).map_err(|e| MemoryError::Memfd(io::Error::other(e)))?;
    // SAFETY: memfd_create takes a valid NUL-terminated name and flags; it
    // returns a new fd we take ownership of, or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: fd is a freshly created, owned, valid file descriptor.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dirty_map_returns_each_written_page_once() {
        // 64 MiB: 16384 pages, 256 words, 4 summary words.
        let mut m = GuestMemory::new(64 << 20).unwrap();
        m.track_dirty();
        assert!(m.take_dirty().is_empty());
        let last = (64 << 20) - PAGE_SIZE;
        for gpa in [
            0,
            0x1000,
            0x1008,
            63 * PAGE_SIZE,
            64 * PAGE_SIZE,
            4096 * PAGE_SIZE,
            last,
        ] {
            m.write_u64(gpa, 1).unwrap();
        }
        // A write across a page boundary marks both pages.
        m.write(0x5ffc, &[1; 8]).unwrap();
        assert_eq!(
            m.take_dirty(),
            vec![0, 1, 5, 6, 63, 64, 4096, last / PAGE_SIZE]
        );
        assert!(m.take_dirty().is_empty());
        m.write_u64(0x1000, 2).unwrap();
        assert_eq!(m.take_dirty(), vec![1]);
    }

    #[test]
    fn restore_page_writes_back_what_differs() {
        let src = GuestMemory::new(2 << 20).unwrap();
        let mut m = GuestMemory::new(2 << 20).unwrap();
        m.track_dirty();
        src.write(0x3000, &[7; 4096]).unwrap();
        m.write(0x3000, &[7; 4096]).unwrap();
        m.write_u64(0x3ff8, 1).unwrap();
        m.write_u64(0x3040, 2).unwrap();
        m.take_dirty();
        assert!(m.restore_page_from(&src, 0x3000).unwrap());
        let mut page = [0u8; 4096];
        m.read(0x3000, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 7));
        assert_eq!(m.take_dirty(), vec![3]);
        // Equal pages are left alone.
        assert!(!m.restore_page_from(&src, 0x3000).unwrap());
        assert!(!m.restore_page_from(&src, 0x4000).unwrap());
        assert!(m.take_dirty().is_empty());
        assert!(m.restore_page_from(&src, 2 << 20).is_err());
    }

    #[test]
    fn bounds_are_checked() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write_u64(0x1000, 42).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 42);
        assert!(m.read_u64((2 << 20) - 4).is_err());
        assert!(m.write(u64::MAX - 2, &[1, 2, 3, 4]).is_err());
        assert!(GuestMemory::new(12345).is_err());
    }

    #[test]
    fn every_write_and_every_run_is_noted_until_cleared() {
        let m = GuestMemory::new(2 << 20).unwrap();
        let src = GuestMemory::new(2 << 20).unwrap();
        src.write_u64(0x1000, 5).unwrap();
        // New memory counts as written.
        assert!(m.written());
        let writes: [&dyn Fn(&GuestMemory); 7] = [
            &|m| m.write(0x10, &[1]).unwrap(),
            &|m| m.write_u64(0x20, 2).unwrap(),
            &|m| m.zero(0x30, 8).unwrap(),
            &|m| m.zero_page(0x1000).unwrap(),
            &|m| m.copy_page_from(&src, 0x2000).unwrap(),
            &|m| assert!(m.restore_page_from(&src, 0x1000).unwrap()),
            &|m| m.note_run(),
        ];
        for (i, w) in writes.iter().enumerate() {
            // Not zero, and not `src`'s: each write above changes it.
            m.write_u64(0x1000, 9).unwrap();
            m.clear_written();
            let _ = m.read_u64(0x10).unwrap();
            assert!(!m.written(), "a read is no write ({i})");
            w(&m);
            assert!(m.written(), "write {i} was not noted");
        }
        // A restore of a page that is already equal writes nothing.
        m.copy_page_from(&src, 0x1000).unwrap();
        m.clear_written();
        assert!(!m.restore_page_from(&src, 0x1000).unwrap());
        assert!(!m.written());
    }

    #[test]
    fn memory_made_in_a_held_place_is_there_and_copy_on_write() {
        let t = GuestMemory::new(4 << 20).unwrap();
        t.write_u64(0x1000, 11).unwrap();
        let held = Reserved::new(4 << 20).unwrap();
        let addr = held.addr();
        let m = GuestMemory::new_cow_in(held, t.file().clone(), 2 << 20, 4 << 20, None).unwrap();
        assert_eq!(m.host_address(), addr);
        assert_eq!(m.read_u64(0x1000).unwrap(), 11);
        m.write_u64(0x1000, 12).unwrap();
        m.write_u64(0x30_0000, 13).unwrap();
        assert_eq!(t.read_u64(0x1000).unwrap(), 11);
        assert_eq!(m.private_pages().unwrap(), vec![1, 0x300]);
        // A place of another size is refused, and released.
        let held = Reserved::new(2 << 20).unwrap();
        assert!(matches!(
            GuestMemory::new_cow_in(held, t.file().clone(), 2 << 20, 4 << 20, None),
            Err(MemoryError::BadSize(_))
        ));
    }

    #[test]
    fn private_mapping_is_copy_on_write() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write_u64(0x2000, 7).unwrap();
        let f = GuestMemory::new_private(m.file().clone(), m.size()).unwrap();
        assert_eq!(f.read_u64(0x2000).unwrap(), 7);
        f.write_u64(0x2000, 9).unwrap();
        assert_eq!(f.read_u64(0x2000).unwrap(), 9);
        assert_eq!(m.read_u64(0x2000).unwrap(), 7);
    }

    #[test]
    fn a_layer_carries_a_forks_own_pages_to_its_forks() {
        let size = 4 << 20;
        let t = GuestMemory::new(size).unwrap();
        t.write_u64(0x1000, 1).unwrap();
        t.write_u64(0x3000, 3).unwrap();
        // A fork of the template's first 2 MiB; it writes one template
        // page, and one of the fresh memory past the file.
        let live = GuestMemory::new_cow(t.file().clone(), 2 << 20, size).unwrap();
        assert_eq!(live.read_u64(0x3000).unwrap(), 3);
        live.write_u64(0x1000, 10).unwrap();
        live.write_u64(0x30_0000, 30).unwrap();
        assert_eq!(live.private_pages().unwrap(), vec![1, 0x300]);
        // Read up to a bound (a page or a byte past it counts whole).
        assert_eq!(live.private_pages_below(0x30_0000).unwrap(), vec![1]);
        assert_eq!(live.private_pages_below(0x30_0001).unwrap(), vec![1, 0x300]);
        assert_eq!(live.private_pages_below(u64::MAX).unwrap(), vec![1, 0x300]);
        assert!(live.private_pages_below(0).unwrap().is_empty());
        let layer = Arc::new(live.capture_layer(&[1, 0x300], None, true).unwrap());
        assert_eq!(layer.own_pages().collect::<Vec<_>>(), vec![1, 0x300]);

        let a = GuestMemory::new_layered(t.file().clone(), 2 << 20, size, layer.clone()).unwrap();
        let b = GuestMemory::new_layered(t.file().clone(), 2 << 20, size, layer).unwrap();
        for m in [&a, &b] {
            assert_eq!(m.read_u64(0x1000).unwrap(), 10);
            assert_eq!(m.read_u64(0x3000).unwrap(), 3);
            assert_eq!(m.read_u64(0x30_0000).unwrap(), 30);
            assert!(m.private_pages().unwrap().is_empty());
        }
        // Each copy diverges alone; the source too.
        a.write_u64(0x1000, 11).unwrap();
        live.write_u64(0x1000, 12).unwrap();
        assert_eq!(b.read_u64(0x1000).unwrap(), 10);
        assert_eq!(a.private_pages().unwrap(), vec![1]);
        // A layer beyond the memory is refused.
        let big = Arc::new(live.capture_layer(&[0x3ff], None, true).unwrap());
        assert!(GuestMemory::new_layered(t.file().clone(), 2 << 20, 2 << 20, big).is_err());
    }

    #[test]
    fn a_source_that_adopts_its_layer_keeps_its_contents_and_diverges_alone() {
        let size = 4 << 20;
        let t = GuestMemory::new(size).unwrap();
        t.write_u64(0x1000, 1).unwrap();
        let mut live = GuestMemory::new_cow(t.file().clone(), 2 << 20, size).unwrap();
        live.write_u64(0x1000, 10).unwrap();
        live.write_u64(0x30_0000, 30).unwrap();
        let layer = Arc::new(
            live.capture_layer(&live.private_pages().unwrap(), None, true)
                .unwrap(),
        );
        live.adopt_layer(layer.clone()).unwrap();
        // Same contents, nothing private any more: the layer holds them.
        assert_eq!(live.read_u64(0x1000).unwrap(), 10);
        assert_eq!(live.read_u64(0x30_0000).unwrap(), 30);
        assert!(live.private_pages().unwrap().is_empty());
        let copy = GuestMemory::new_layered(t.file().clone(), 2 << 20, size, layer).unwrap();
        // The source writes on: the copy and the layer do not see it.
        live.write_u64(0x1000, 11).unwrap();
        assert_eq!(live.private_pages().unwrap(), vec![1]);
        assert_eq!(copy.read_u64(0x1000).unwrap(), 10);
        copy.write_u64(0x30_0000, 31).unwrap();
        assert_eq!(live.read_u64(0x30_0000).unwrap(), 30);
        // A template's shared memory never takes a layer.
        let mut shared = GuestMemory::new(size).unwrap();
        let l = Arc::new(live.capture_layer(&[1], None, true).unwrap());
        assert!(shared.adopt_layer(l).is_err());
    }

    #[test]
    fn a_forks_pieces_cover_its_memory_in_order() {
        use std::os::fd::AsRawFd;
        let t = memfd("test-template").unwrap();
        let l = memfd("test-layer").unwrap();
        let (tf, lf) = (Backing::File(t.as_raw_fd()), Backing::File(l.as_raw_fd()));
        let p = PAGE_SIZE;
        assert_eq!(
            pieces(&t, 8 * p, 16 * p, None).unwrap(),
            vec![(0, 8 * p, tf), (8 * p, 8 * p, Backing::Fresh)]
        );
        // Runs at the start, across the template's end, and at the end.
        let layer = Layer {
            file: Arc::new(l),
            runs: vec![(0, 2), (7, 2), (15, 1)],
            saved: vec![(0, 2), (7, 2), (15, 1)],
            below: None,
        };
        assert_eq!(
            pieces(&t, 8 * p, 16 * p, Some(&layer)).unwrap(),
            vec![
                (0, 2 * p, lf),
                (2 * p, 5 * p, tf),
                (7 * p, 2 * p, lf),
                (9 * p, 6 * p, Backing::Fresh),
                (15 * p, p, lf),
            ]
        );
        assert!(pieces(&t, 8 * p, 15 * p, Some(&layer)).is_err());
        assert_eq!(
            pieces(&t, 0, 4 * p, None).unwrap(),
            vec![(0, 4 * p, Backing::Fresh)]
        );
    }

    #[test]
    fn a_layer_over_a_layer_carries_only_what_changed_and_forks_see_the_top() {
        let size = 8 << 20;
        let t = GuestMemory::new(size).unwrap();
        for p in 0..0x400u64 {
            t.write_u64(p * PAGE_SIZE, p).unwrap();
        }
        let mut live = GuestMemory::new_cow(t.file().clone(), 4 << 20, size).unwrap();
        for p in [0x10u64, 0x20, 0x500] {
            live.write_u64(p * PAGE_SIZE, 1000 + p).unwrap();
        }
        let low = Arc::new(
            live.capture_layer(&live.private_pages().unwrap(), None, true)
                .unwrap(),
        );
        live.adopt_layer(low.clone()).unwrap();
        // It changes one of its pages and a new one; the next layer holds
        // those two only, over the first.
        live.write_u64(0x20 * PAGE_SIZE, 2000).unwrap();
        live.write_u64(0x30 * PAGE_SIZE, 3000).unwrap();
        assert_eq!(live.private_pages().unwrap(), vec![0x20, 0x30]);
        let top = live
            .capture_layer(&[0x20, 0x30], Some(low.clone()), false)
            .unwrap();
        // Pages up to 64 apart are carried as one run (those between read
        // as below).
        assert_eq!(low.saved_runs(), vec![(0x10, 0x11), (0x500, 1)]);
        assert_eq!(top.own_len(), 0x11);
        assert_eq!((top.depth(), low.depth()), (2, 1));
        assert_eq!(top.saved_runs(), vec![(0x10, 0x21), (0x500, 1)]);
        assert_eq!(top.len(), 0x22);
        let top = Arc::new(top);
        live.adopt_layer(top.clone()).unwrap();
        assert!(live.private_pages().unwrap().is_empty());
        let old = GuestMemory::new_layered(t.file().clone(), 4 << 20, size, low.clone()).unwrap();
        let new = GuestMemory::new_layered(t.file().clone(), 4 << 20, size, top.clone()).unwrap();
        for (p, was, now) in [
            (0x10u64, 1000 + 0x10, 1000 + 0x10),
            (0x20, 1000 + 0x20, 2000),
            (0x30, 0x30, 3000),
            (0x500, 1000 + 0x500, 1000 + 0x500),
            (0x11, 0x11, 0x11),
            (0x3ff, 0x3ff, 0x3ff),
            (0x400, 0, 0),
        ] {
            assert_eq!(old.read_u64(p * PAGE_SIZE).unwrap(), was, "page {p:#x}");
            assert_eq!(new.read_u64(p * PAGE_SIZE).unwrap(), now, "page {p:#x}");
            assert_eq!(live.read_u64(p * PAGE_SIZE).unwrap(), now, "page {p:#x}");
        }
        // A checkpoint of the top has every page of the chain, each from
        // the topmost layer that has it; a zero page over a non-zero one
        // stays zero.
        live.write_u64(0x10 * PAGE_SIZE, 0).unwrap();
        let zero = Arc::new(
            live.capture_layer(&[0x10], Some(top.clone()), false)
                .unwrap(),
        );
        let out = memfd("test-checkpoint").unwrap();
        zero.write_to(&out, size).unwrap();
        let runs = zero.saved_runs();
        assert_eq!(runs, vec![(0x10, 0x21), (0x500, 1)]);
        let back = Arc::new(Layer::open(out, runs).unwrap());
        let m = GuestMemory::new_layered(t.file().clone(), 4 << 20, size, back).unwrap();
        for (p, want) in [
            (0x10u64, 0),
            (0x20, 2000),
            (0x30, 3000),
            (0x500, 1000 + 0x500),
            (0x11, 0x11),
        ] {
            assert_eq!(m.read_u64(p * PAGE_SIZE).unwrap(), want, "page {p:#x}");
        }
    }

    #[test]
    fn a_chains_runs_flatten_with_the_upper_layer_winning() {
        let file = || Arc::new(memfd("test-layer").unwrap());
        let layer = |runs: Vec<(u64, u64)>, below| Layer {
            file: file(),
            saved: runs.clone(),
            runs,
            below,
        };
        let low = Arc::new(layer(vec![(0, 10), (20, 5), (40, 10)], None));
        let mid = Arc::new(layer(vec![(5, 10), (45, 2)], Some(low.clone())));
        let top = layer(vec![(8, 1), (22, 30)], Some(mid.clone()));
        let who = |l: &Layer| {
            if std::ptr::eq(l, &top) {
                "top"
            } else if std::ptr::eq(l, &*mid) {
                "mid"
            } else {
                "low"
            }
        };
        let flat: Vec<_> = top
            .flatten(|l| &l.runs)
            .into_iter()
            .map(|(p, n, l)| (p, n, who(l)))
            .collect();
        assert_eq!(
            flat,
            vec![
                (0, 5, "low"),
                (5, 3, "mid"),
                (8, 1, "top"),
                (9, 6, "mid"),
                (20, 2, "low"),
                (22, 30, "top"),
            ]
        );
        assert_eq!(top.depth(), 3);
        assert_eq!(top.saved_runs(), vec![(0, 15), (20, 32)]);
        assert_eq!(top.len(), 47);
        assert_eq!(top.runs(), 6);
    }

    #[test]
    fn runs_join_across_small_gaps_whatever_their_length() {
        assert_eq!(join_runs([1, 2, 3, 10, 100], 8), vec![(1, 10), (100, 1)]);
        assert_eq!(join_runs([5, 5, 6], 0), vec![(5, 2)]);
        assert_eq!(
            merge_runs([(0, 1000), (1010, 5), (2000, 600), (2700, 1)], 100),
            vec![(0, 1015), (2000, 701)]
        );
        assert_eq!(merge_runs([(0, 10), (3, 2)], 0), vec![(0, 10)]);
        assert!(merge_runs([], 4).is_empty());
    }

    #[test]
    fn forks_map_a_layer_in_few_runs_and_a_checkpoint_keeps_only_its_own_pages() {
        let size = 8 << 20;
        let t = GuestMemory::new(size).unwrap();
        for p in 0..0x400u64 {
            t.write_u64(p * PAGE_SIZE, p).unwrap();
        }
        let live = GuestMemory::new_cow(t.file().clone(), 4 << 20, size).unwrap();
        // Own pages 200 and 700 pages apart (and one past the file).
        for p in [0x10u64, 0xd8, 0x3a0, 0x500] {
            live.write_u64(p * PAGE_SIZE, 1000 + p).unwrap();
        }
        let layer = live
            .capture_layer(&live.private_pages().unwrap(), None, true)
            .unwrap();
        assert_eq!(
            layer.own_pages().collect::<Vec<_>>(),
            vec![0x10, 0xd8, 0x3a0, 0x500]
        );
        assert_eq!(
            layer.saved_runs(),
            vec![(0x10, 1), (0xd8, 1), (0x3a0, 1), (0x500, 1)]
        );
        // Forks map 0x10..=0xd8 as one run, the template's pages between
        // copied into the layer; 0x3a0 is over 512 pages past it.
        assert_eq!(layer.run_list(), &[(0x10, 0xc9), (0x3a0, 0x161)]);
        assert_eq!(layer.mapped_len(), 0xc9 + 0x161);
        let layer = Arc::new(layer);
        let m = GuestMemory::new_layered(t.file().clone(), 4 << 20, size, layer.clone()).unwrap();
        for p in [0x10u64, 0xd8, 0x3a0, 0x500] {
            assert_eq!(m.read_u64(p * PAGE_SIZE).unwrap(), 1000 + p);
        }
        // Between own pages: the template's bytes, or zero past its file.
        for p in [0x11u64, 0x80, 0xd7, 0x3a1, 0x3ff] {
            assert_eq!(m.read_u64(p * PAGE_SIZE).unwrap(), p);
        }
        assert_eq!(m.read_u64(0x400 * PAGE_SIZE).unwrap(), 0);
        // Written out, only the own pages go; mapped back, the same view.
        let f = memfd("test-layer").unwrap();
        layer.write_to(&f, size).unwrap();
        let back = Layer::open(f.try_clone().unwrap(), layer.saved_runs().to_vec()).unwrap();
        assert_eq!(back.run_list(), layer.saved_runs());
        let m = GuestMemory::new_layered(t.file().clone(), 4 << 20, size, Arc::new(back)).unwrap();
        for p in [0x10u64, 0xd8, 0x3a0, 0x500] {
            assert_eq!(m.read_u64(p * PAGE_SIZE).unwrap(), 1000 + p);
        }
        for p in [0x11u64, 0x80, 0x3ff] {
            assert_eq!(m.read_u64(p * PAGE_SIZE).unwrap(), p);
        }
    }

    #[test]
    fn a_layer_written_to_a_file_maps_the_same_pages() {
        let size = 4 << 20;
        let t = GuestMemory::new(size).unwrap();
        t.write_u64(0x1000, 1).unwrap();
        t.write_u64(0x2000, 2).unwrap();
        let live = GuestMemory::new_cow(t.file().clone(), 2 << 20, size).unwrap();
        live.write_u64(0x1000, 10).unwrap();
        // A page zeroed in the fork stays zero over the template's.
        live.write_u64(0x2000, 0).unwrap();
        live.write_u64(0x30_0000, 30).unwrap();
        let layer = live
            .capture_layer(&live.private_pages().unwrap(), None, true)
            .unwrap();
        let f = memfd("test-layer").unwrap();
        layer.write_to(&f, size).unwrap();
        let back = Layer::open(f.try_clone().unwrap(), layer.saved_runs().to_vec()).unwrap();
        let m = GuestMemory::new_layered(t.file().clone(), 2 << 20, size, Arc::new(back)).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 10);
        assert_eq!(m.read_u64(0x2000).unwrap(), 0);
        assert_eq!(m.read_u64(0x30_0000).unwrap(), 30);
        // A full disk is an error, not a short file.
        let full = File::options().write(true).open("/dev/full").unwrap();
        assert!(layer.write_to(&full, size).is_err());
        // Runs outside the file, overlapping or empty are refused.
        for runs in [
            vec![(1023, 2)],
            vec![(1, 3), (2, 1)],
            vec![(5, 0)],
            vec![(u64::MAX, 2)],
        ] {
            assert!(Layer::open(f.try_clone().unwrap(), runs).is_err());
        }
    }
}
