//! Regular files: a file of the read-only image, a file of the writable
//! overlay (tmpfs), and a generated /proc file whose contents were fixed at
//! open.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;
use zeroboot_vmm::layout::PAGE_SIZE;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::mm::Backing;
use crate::syscalls::{now, Ctx, SysError};
use crate::vfs::{self, HostFile, Node, ProcFile, Synth, TmpContents};

/// A regular file of the image (read-only).
pub(crate) struct ImageFile<'a>(pub &'a Arc<HostFile>);

/// A regular file of the overlay, by inode.
pub(crate) struct TmpFile(pub u64);

/// A generated /proc file.
pub(crate) struct GeneratedFile<'a>(pub &'a Arc<[u8]>);

/// The bytes of `data` from `off`, at most `count`.
fn slice_at(data: &[u8], off: u64, count: usize) -> Vec<u8> {
    let len = data.len() as u64;
    let s = off.min(len) as usize;
    let e = off.saturating_add(count as u64).min(len) as usize;
    data[s..e].to_vec()
}

impl FileOps for ImageFile<'_> {
    fn has_offset(&self) -> bool {
        true
    }

    fn seek_size(&self, _ctx: &Ctx) -> Result<u64, Errno> {
        Ok(self.0.size())
    }

    fn read(&self, _ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        let off = io.at();
        let n = (self.0.size().saturating_sub(off) as usize).min(count);
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let r = self
                .0
                .read_at(&mut buf[done..], off + done as u64)
                .map_err(Errno::from)?;
            if r == 0 {
                break;
            }
            done += r;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn pollable(&self) -> bool {
        false
    }

    fn unread(&self, _ctx: &Ctx, offset: u64) -> u64 {
        self.0.size().saturating_sub(offset)
    }

    fn mmap(&self, _ctx: &Ctx, offset: u64) -> Result<(Backing, Option<Arc<str>>), Errno> {
        let data = self.0.clone();
        Ok((Backing::File { data, offset }, None))
    }
}

/// Of `len` bytes of guest memory at `va`, how many `copy` (called with
/// a page's address and its range of the `len` bytes, in order) moves
/// before the first page it cannot: where a transfer stops short, as
/// Linux copies up to the first unmapped page.
fn page_prefix(
    va: u64,
    len: usize,
    mut copy: impl FnMut(u64, std::ops::Range<usize>) -> bool,
) -> usize {
    let mut done = 0;
    while done < len {
        let cur = va + done as u64;
        let n = ((PAGE_SIZE - cur % PAGE_SIZE) as usize).min(len - done);
        if !copy(cur, done..done + n) {
            break;
        }
        done += n;
    }
    done
}

/// Bytes a write from guest memory into an overlay file copies at a time.
const WRITE_STAGE: usize = 64 << 10;

impl TmpFile {
    fn size(&self, ctx: &Ctx) -> Option<u64> {
        ctx.k.vfs.tmp.inode(self.0).map(|i| i.data.len() as u64)
    }

    /// Where a write of `len` bytes starts (the position, the offset, or
    /// the end for O_APPEND), checked against the largest offset and
    /// RLIMIT_FSIZE.
    fn write_start(&self, ctx: &Ctx, io: Io, len: usize) -> Result<u64, SysError> {
        let size = self.size(ctx).ok_or(Errno::EBADF)?;
        let at = match io.pos {
            Some(p) => p,
            None if io.append => size,
            None => io.offset,
        };
        super::verify_area(at, len)?;
        let fsize = ctx.k.proc.rlimits[RLIMIT_FSIZE as usize].rlim_cur;
        if at.saturating_add(len as u64) > fsize {
            return Err(Errno::EFBIG.into());
        }
        Ok(at)
    }

    /// Put `data` into the file at `at` (and into its shared mappings).
    fn store(&self, ctx: &mut Ctx, at: u64, data: &[u8]) -> Result<usize, SysError> {
        let n = ctx.k.vfs.tmp.write(self.0, at, data, now())?;
        crate::shm::written(ctx.k, ctx.mem, self.0, at, &data[..n])?;
        Ok(n)
    }

    /// After `n` bytes were written at `at`: the offset, and watchers
    /// (as Linux, only of a write that wrote something).
    fn wrote(&self, ctx: &mut Ctx, io: Io, at: u64, n: usize) -> Result<(), SysError> {
        if io.pos.is_none() {
            ctx.k.fds.get_mut(io.fd)?.offset = at + n as u64;
        }
        if n > 0 && ctx.k.vfs.watched() {
            let path = ctx.k.fds.get(io.fd)?.path.clone();
            ctx.k.vfs.notify(&path, vfs::FsEventKind::Write);
        }
        Ok(())
    }
}

impl FileOps for TmpFile {
    fn has_offset(&self) -> bool {
        true
    }

    fn seek_size(&self, ctx: &Ctx) -> Result<u64, Errno> {
        Ok(self.size(ctx).unwrap_or(0))
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        if let Some(bytes) = crate::shm::read(ctx.k, ctx.mem, self.0, io.at(), count) {
            return Ok(bytes);
        }
        let node = ctx.k.vfs.tmp.inode(self.0).ok_or(Errno::EBADF)?;
        Ok(slice_at(&node.data, io.at(), count))
    }

    fn write(&self, ctx: &mut Ctx, io: Io, data: &[u8]) -> Result<usize, SysError> {
        let at = self.write_start(ctx, io, data.len())?;
        let n = self.store(ctx, at, data)?;
        self.wrote(ctx, io, at, n)?;
        Ok(n)
    }

    fn read_user(&self, ctx: &mut Ctx, io: Io, va: u64, count: usize) -> Result<usize, SysError> {
        if crate::shm::mapped(ctx.k, self.0) {
            let data = self.read(ctx, io, count)?;
            ctx.k.mm.write(ctx.mem, va, &data)?;
            return Ok(data.len());
        }
        let k = &mut *ctx.k;
        let node = k.vfs.tmp.inode(self.0).ok_or(Errno::EBADF)?;
        let len = node.data.len() as u64;
        let s = io.at().min(len) as usize;
        let e = io.at().saturating_add(count as u64).min(len) as usize;
        let bytes = &node.data[s..e];
        if let Err(err) = k.mm.write(ctx.mem, va, bytes) {
            // A short count, or EFAULT for none.
            let done = page_prefix(va, bytes.len(), |cur, r| {
                k.mm.write(ctx.mem, cur, &bytes[r]).is_ok()
            });
            return if done > 0 { Ok(done) } else { Err(err.into()) };
        }
        Ok(e - s)
    }

    fn write_user(&self, ctx: &mut Ctx, io: Io, va: u64, len: usize) -> Result<usize, SysError> {
        let at = self.write_start(ctx, io, len)?;
        // Room for all of it at once (as far as the disk limit goes): no
        // regrowth, each a copy of what the file holds, along the way.
        ctx.k.vfs.tmp.reserve(self.0, at.saturating_add(len as u64));
        // Staged through a small buffer that stays in cache: the bytes
        // were copied twice over freshly faulted host memory before (a
        // buffer as large as the write, then the file).
        let mut chunk = vec![0u8; len.min(WRITE_STAGE)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            let from = va + done as u64;
            // Up to the first page that cannot be read, as Linux copies.
            let (got, fault) = match ctx.k.mm.read(ctx.mem, from, &mut chunk[..n]) {
                Ok(()) => (n, None),
                Err(e) => {
                    let part = &mut chunk[..n];
                    let got = page_prefix(from, n, |cur, r| {
                        ctx.k.mm.read(ctx.mem, cur, &mut part[r]).is_ok()
                    });
                    (got, Some(e))
                }
            };
            let stored = if got > 0 {
                self.store(ctx, at + done as u64, &chunk[..got])
            } else {
                Err(fault.unwrap_or(Errno::EFAULT).into())
            };
            match stored {
                Ok(m) => done += m,
                // What was written stays written: a short count.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
            if fault.is_some() {
                break;
            }
        }
        self.wrote(ctx, io, at, done)?;
        Ok(done)
    }

    fn node(&self, _ctx: &Ctx, _f: &OpenFile) -> Option<Node> {
        Some(Node::TmpFile(self.0))
    }

    fn pollable(&self) -> bool {
        false
    }

    fn unread(&self, ctx: &Ctx, offset: u64) -> u64 {
        self.size(ctx).unwrap_or(0).saturating_sub(offset)
    }

    fn truncate(&self, ctx: &mut Ctx, len: u64) -> Result<(), Errno> {
        ctx.k.vfs.tmp.truncate(self.0, len, now())?;
        crate::shm::truncated(ctx.k, ctx.mem, self.0, len);
        Ok(())
    }

    fn allocate(&self, ctx: &mut Ctx, off: i64, len: i64) -> Result<(), Errno> {
        // Past the largest file size (MAX_LFS_FILESIZE, i64::MAX): EFBIG.
        let end = off.checked_add(len).ok_or(Errno::EFBIG)? as u64;
        let fsize = ctx.k.proc.rlimits[RLIMIT_FSIZE as usize].rlim_cur;
        if end > fsize {
            return Err(Errno::EFBIG);
        }
        let size = self.size(ctx).ok_or(Errno::EBADF)?;
        if end > size {
            ctx.k.vfs.tmp.truncate(self.0, end, now())?;
        }
        Ok(())
    }

    fn mmap(&self, ctx: &Ctx, offset: u64) -> Result<(Backing, Option<Arc<str>>), Errno> {
        let data = ctx
            .k
            .vfs
            .tmp
            .inode(self.0)
            .ok_or(Errno::EBADF)?
            .data
            .clone();
        // A private copy of a shared-mapped file is of its pages.
        let data = match crate::shm::read(ctx.k, ctx.mem, self.0, 0, data.len()) {
            Some(current) => Arc::new(current),
            None => data,
        };
        let data = Arc::new(TmpContents(data));
        Ok((Backing::File { data, offset }, None))
    }
}

impl FileOps for GeneratedFile<'_> {
    fn has_offset(&self) -> bool {
        true
    }

    fn seek_size(&self, _ctx: &Ctx) -> Result<u64, Errno> {
        Ok(self.0.len() as u64)
    }

    fn read(&self, _ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        Ok(slice_at(self.0, io.at(), count))
    }

    fn stat(&self, ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        // As Linux shows a /proc file: size 0 whatever it holds.
        let mut st = ctx
            .k
            .vfs
            .stat(&Node::Synth(Synth::File(ProcFile::Text(""))));
        st.st_size = 0;
        Ok(st)
    }
}
