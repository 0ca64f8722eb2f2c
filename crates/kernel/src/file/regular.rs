//! Regular files: a file of the read-only image, a file of the writable
//! overlay (tmpfs), and a generated /proc file whose contents were fixed at
//! open.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

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

impl TmpFile {
    fn size(&self, ctx: &Ctx) -> Option<u64> {
        ctx.k.vfs.tmp.inode(self.0).map(|i| i.data.len() as u64)
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
        let len = self.size(ctx).ok_or(Errno::EBADF)?;
        let at = match io.pos {
            Some(p) => p,
            None if io.append => len,
            None => io.offset,
        };
        super::verify_area(at, data.len())?;
        let fsize = ctx.k.proc.rlimits[RLIMIT_FSIZE as usize].rlim_cur;
        if at.saturating_add(data.len() as u64) > fsize {
            return Err(Errno::EFBIG.into());
        }
        let n = ctx.k.vfs.tmp.write(self.0, at, data, now())?;
        crate::shm::written(ctx.k, ctx.mem, self.0, at, &data[..n])?;
        if io.pos.is_none() {
            ctx.k.fds.get_mut(io.fd)?.offset = at + n as u64;
        }
        if ctx.k.vfs.watched() {
            let path = ctx.k.fds.get(io.fd)?.path.clone();
            ctx.k.vfs.notify(&path, vfs::FsEventKind::Write);
        }
        Ok(n)
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
