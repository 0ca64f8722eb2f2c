//! Directories (any layer) and O_PATH descriptors, which only name a place
//! in the tree.

use std::sync::Arc;

use zeroboot_abi::flags::DT_DIR;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::{Ctx, SysError};
use crate::vfs::DirEntry;

/// An open directory; its entries are read at the first getdents.
pub(crate) struct DirFile;

/// An O_PATH descriptor: usable only as a directory base, for fstat and
/// for readlinkat(fd, "").
pub(crate) struct PathFile;

impl FileOps for DirFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::EISDIR)
    }

    fn seek_size(&self, _ctx: &Ctx) -> Result<u64, Errno> {
        Ok(0)
    }

    fn seeked(&self, f: &mut OpenFile, new: u64) {
        // A rewind lists the directory afresh; any other offset keeps the
        // listing the offset indexes.
        if new == 0 {
            f.dir_entries = None;
        }
    }

    fn read(&self, _ctx: &mut Ctx, _io: Io, _count: usize) -> Result<Vec<u8>, SysError> {
        Err(Errno::EISDIR.into())
    }

    fn pollable(&self) -> bool {
        false
    }

    fn dir_base(&self, _ctx: &Ctx, f: &OpenFile) -> Result<String, Errno> {
        Ok(f.path.clone())
    }

    fn dir_entries(&self, ctx: &mut Ctx, fd: i32) -> Result<Arc<Vec<DirEntry>>, Errno> {
        let f = ctx.k.fds.get(fd)?;
        if let Some(e) = &f.dir_entries {
            return Ok(e.clone());
        }
        let path = f.path.clone();
        let pv = ctx.k.proc_view();
        let node = ctx.k.vfs.lookup(&path, &pv).ok_or(Errno::ENOENT)?;
        let dot = |name: &str| DirEntry {
            name: name.into(),
            ino: 1,
            d_type: DT_DIR,
        };
        let mut list = vec![dot("."), dot("..")];
        list.extend(ctx.k.vfs.list(&path, &node, &pv)?);
        let list = Arc::new(list);
        ctx.k.fds.get_mut(fd)?.dir_entries = Some(list.clone());
        Ok(list)
    }
}

impl FileOps for PathFile {
    fn read(&self, _ctx: &mut Ctx, _io: Io, _count: usize) -> Result<Vec<u8>, SysError> {
        Err(Errno::EBADF.into())
    }

    fn pollable(&self) -> bool {
        false
    }

    fn dir_base(&self, ctx: &Ctx, f: &OpenFile) -> Result<String, Errno> {
        let pv = ctx.k.proc_view();
        match ctx.k.vfs.lookup(&f.path, &pv) {
            Some(n) if n.is_dir() => Ok(f.path.clone()),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn link_itself(&self, f: &OpenFile) -> Result<String, Errno> {
        Ok(f.path.clone())
    }
}
