//! Shared mappings of overlay (tmpfs) files: while a MAP_SHARED mapping of
//! a file exists, its pages live in guest frames (a shared memory object
//! of the frame allocator, `Inode::shm`), and read/write/truncate of the
//! file go through those frames, so a write() is seen through every
//! mapping and a store through a mapping by the next read(), in every
//! process (Linux's page cache). When the last mapping goes, the pages
//! are written back into the file's bytes and the frames freed
//! (`collect`). The inode's byte vector keeps the file's size throughout.

use zeroboot_abi::Errno;
use zeroboot_vmm::layout::PAGE_SIZE;
use zeroboot_vmm::GuestMemory;

use crate::kernel::Kernel;

/// The shared object of tmpfs file `ino`, made (and filled from the
/// file's bytes) on its first shared mapping.
pub fn file_object(k: &mut Kernel, mem: &GuestMemory, ino: u64) -> Result<u64, Errno> {
    let inode = k.vfs.tmp.inode(ino).ok_or(Errno::EBADF)?;
    if let Some(id) = inode.shm.filter(|id| k.mm.frames.shm().get(*id).is_some()) {
        return Ok(id);
    }
    let data = inode.data.clone();
    let frames = &mut k.mm.frames;
    let id = frames.shm_create(Some(ino));
    // Pages of zeros stay without a frame (a missing page reads as zero):
    // a large ftruncate'd file costs nothing until it is written.
    for (i, chunk) in data.chunks(PAGE_SIZE as usize).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let Some(f) = frames.shm_page(mem, id, i as u64) else {
            frames.shm_free(id);
            return Err(Errno::ENOMEM);
        };
        mem.write(f, chunk).map_err(|_| Errno::EFAULT)?;
    }
    if let Some(n) = k.vfs.tmp.inode_mut(ino) {
        n.shm = Some(id);
    }
    Ok(id)
}

/// Whether the tmpfs file `ino` is mapped shared somewhere (its bytes then
/// live in the object's frames: `read` and `written`).
pub fn mapped(k: &Kernel, ino: u64) -> bool {
    object_of(k, ino).is_some()
}

/// The object holding file `ino`'s pages, if it is shared-mapped.
fn object_of(k: &Kernel, ino: u64) -> Option<u64> {
    k.vfs
        .tmp
        .inode(ino)?
        .shm
        .filter(|id| k.mm.frames.shm().get(*id).is_some())
}

/// read(2) of a tmpfs file: `None` when it is not shared-mapped (its
/// bytes are the inode's).
pub fn read(k: &Kernel, mem: &GuestMemory, ino: u64, at: u64, count: usize) -> Option<Vec<u8>> {
    let id = object_of(k, ino)?;
    let obj = k.mm.frames.shm().get(id)?;
    let data = &k.vfs.tmp.inode(ino)?.data;
    let size = data.len() as u64;
    let end = at.saturating_add(count as u64).min(size);
    let mut out = vec![0u8; end.saturating_sub(at) as usize];
    let mut pos = at;
    while pos < end {
        let page = pos / PAGE_SIZE;
        let in_page = pos % PAGE_SIZE;
        let n = (PAGE_SIZE - in_page).min(end - pos);
        let dst = &mut out[(pos - at) as usize..(pos - at + n) as usize];
        match obj.frame(page) {
            Some(f) => {
                if mem.read(f + in_page, dst).is_err() {
                    dst.fill(0);
                }
            }
            // No frame: the page is zero (the file's bytes agree).
            None => dst.copy_from_slice(&data[pos as usize..(pos + n) as usize]),
        }
        pos += n;
    }
    Some(out)
}

/// After write(2) put `data` at `at` in the file's bytes: the same bytes
/// into its pages when it is shared-mapped (ENOSPC when a page cannot be
/// had within the memory limit).
pub fn written(
    k: &mut Kernel,
    mem: &GuestMemory,
    ino: u64,
    at: u64,
    data: &[u8],
) -> Result<(), Errno> {
    let Some(id) = object_of(k, ino) else {
        return Ok(());
    };
    let end = at + data.len() as u64;
    let mut pos = at;
    while pos < end {
        let page = pos / PAGE_SIZE;
        let in_page = pos % PAGE_SIZE;
        let n = (PAGE_SIZE - in_page).min(end - pos);
        let f = k.mm.frames.shm_page(mem, id, page).ok_or(Errno::ENOSPC)?;
        let src = &data[(pos - at) as usize..(pos - at + n) as usize];
        mem.write(f + in_page, src).map_err(|_| Errno::EFAULT)?;
        pos += n;
    }
    Ok(())
}

/// The file was truncated to `len`: what lies past it reads back as
/// zero if it grows again.
pub fn truncated(k: &mut Kernel, mem: &GuestMemory, ino: u64, len: u64) {
    if let Some(id) = object_of(k, ino) {
        k.mm.frames.shm_zero_from(mem, id, len);
    }
}

/// Write the pages of shared-mapped file `ino` back into its bytes (what
/// msync asks; also before the bytes are used as a whole elsewhere).
pub fn sync(k: &mut Kernel, mem: &GuestMemory, ino: u64) {
    let Some(id) = object_of(k, ino) else {
        return;
    };
    let Some(obj) = k.mm.frames.shm().get(id) else {
        return;
    };
    let pages: Vec<(u64, u64)> = obj.pages().collect();
    let Some(inode) = k.vfs.tmp.inode_mut(ino) else {
        return;
    };
    let data = std::sync::Arc::make_mut(&mut inode.data);
    let size = data.len() as u64;
    for (page, f) in pages {
        let s = page * PAGE_SIZE;
        if s >= size {
            break;
        }
        let e = (s + PAGE_SIZE).min(size);
        let _ = mem.read(f, &mut data[s as usize..e as usize]);
    }
}

/// Write back and free the objects of files no process maps any more.
pub fn collect(k: &mut Kernel, mem: &GuestMemory) {
    for id in k.mm.frames.shm_take_orphans() {
        let file = k.mm.frames.shm().get(id).and_then(|o| o.file);
        if let Some(ino) = file {
            sync(k, mem, ino);
            if let Some(n) = k.vfs.tmp.inode_mut(ino) {
                if n.shm == Some(id) {
                    n.shm = None;
                }
            }
        }
        k.mm.frames.shm_free(id);
    }
}
