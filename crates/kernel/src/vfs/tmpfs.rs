//! The per-sandbox writable layer over the image: an in-memory filesystem
//! keyed by canonical path, with whiteouts for image entries the sandbox
//! removed. File contents are `Arc`ed and copied on write, so cloning the
//! whole layer for a fork is cheap and forks never see each other's writes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use zeroboot_abi::Errno;

use crate::mm::FileContents;

/// (atime, mtime), each (seconds, nanoseconds).
pub type NodeTimes = ((i64, i64), (i64, i64));

/// What the overlay holds at a path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Entry {
    File(u64),
    Dir {
        mode: u32,
        ino: u64,
    },
    Symlink {
        target: String,
        ino: u64,
    },
    /// The image entry at this path was removed.
    Whiteout,
}

/// A regular file's inode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inode {
    pub data: Arc<Vec<u8>>,
    pub mode: u32,
    pub nlink: u64,
    pub mtime: (i64, i64),
    /// The access time utimensat set; None: the same as `mtime` (reads do
    /// not update it here).
    #[serde(default)]
    pub atime: Option<(i64, i64)>,
    /// The shared memory object holding the file's pages while a
    /// MAP_SHARED mapping of it exists (`crate::shm`): those pages, not
    /// `data`, have the current bytes; `data` keeps the size.
    #[serde(default)]
    pub shm: Option<u64>,
}

/// What a name in the overlay costs against the disk limit: the path and
/// about what the host spends to keep it.
fn entry_cost(path: &str) -> u64 {
    128 + path.len() as u64
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tmpfs {
    entries: BTreeMap<String, Entry>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Bytes of file data held (for the disk limit).
    bytes: u64,
    pub limit: u64,
    /// Times a write was refused for the limit (ENOSPC).
    #[serde(default)]
    pub full: u64,
    /// (atime, mtime) of the overlay's directories and symlinks, by inode:
    /// their creation time, or what utimensat set (dropped with the entry).
    #[serde(default)]
    node_times: BTreeMap<u64, NodeTimes>,
    /// Owners (uid, gid) of inodes not owned by root, overlay and image
    /// inodes alike (image inodes are root's until chowned).
    #[serde(default)]
    owners: BTreeMap<u64, (u32, u32)>,
}

impl Tmpfs {
    pub fn new(limit: u64) -> Tmpfs {
        Tmpfs {
            next_ino: 1 << 40,
            limit,
            ..Default::default()
        }
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn inode(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn alloc_ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    /// Put `e` at `path`. A new name is charged to the disk limit (ENOSPC
    /// past it), so that a sandbox cannot grow the host's memory with
    /// empty files; a whiteout is always recorded (it is how a removal of
    /// an image file is kept) but charged too.
    pub fn set(&mut self, path: String, e: Entry) -> Result<(), Errno> {
        if !self.entries.contains_key(&path) {
            let cost = entry_cost(&path);
            if matches!(e, Entry::Whiteout) {
                self.bytes += cost;
            } else {
                self.charge(0, cost)?;
            }
        }
        self.entries.insert(path, e);
        Ok(())
    }

    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        let e = self.entries.remove(path);
        if e.is_some() {
            self.bytes = self.bytes.saturating_sub(entry_cost(path));
        }
        e
    }

    /// Forget the times of a directory or symlink that is gone (not on a
    /// rename, which keeps the inode).
    pub fn forget_times(&mut self, ino: u64) {
        self.node_times.remove(&ino);
    }

    /// The (atime, mtime) utimensat set on directory or symlink `ino`.
    pub fn node_times(&self, ino: u64) -> Option<NodeTimes> {
        self.node_times.get(&ino).copied()
    }

    /// Set a directory's or symlink's times; None keeps one as it is.
    pub fn set_node_times(
        &mut self,
        ino: u64,
        atime: Option<(i64, i64)>,
        mtime: Option<(i64, i64)>,
    ) {
        let (a, m) = self.node_times.get(&ino).copied().unwrap_or_default();
        self.node_times
            .insert(ino, (atime.unwrap_or(a), mtime.unwrap_or(m)));
    }

    /// Create a regular file inode.
    pub fn new_file(&mut self, mode: u32, data: Vec<u8>, now: (i64, i64)) -> Result<u64, Errno> {
        self.charge(0, data.len() as u64)?;
        let ino = self.alloc_ino();
        self.inodes.insert(
            ino,
            Inode {
                data: Arc::new(data),
                mode,
                nlink: 1,
                mtime: now,
                atime: None,
                shm: None,
            },
        );
        Ok(ino)
    }

    fn charge(&mut self, old: u64, new: u64) -> Result<(), Errno> {
        // `new` is guest-controlled (ftruncate, fallocate): the sum is
        // checked, and a sum past u64 is as full as any.
        let total = (self.bytes - old.min(self.bytes)).checked_add(new);
        match total {
            Some(t) if new <= old || t <= self.limit => {
                self.bytes = t;
                Ok(())
            }
            _ => {
                self.full += 1;
                Err(Errno::ENOSPC)
            }
        }
    }

    /// Make room for file `ino` to grow to `end` bytes, where the disk
    /// limit would let it (a write about to fill it in pieces).
    pub fn reserve(&mut self, ino: u64, end: u64) {
        let room = self.limit.saturating_sub(self.bytes);
        let Some(node) = self.inodes.get_mut(&ino) else {
            return;
        };
        let grow = end.saturating_sub(node.data.len() as u64);
        if grow > 0 && grow <= room {
            Arc::make_mut(&mut node.data).reserve(grow as usize);
        }
    }

    /// Write `buf` at `offset` (extending with zeros as needed).
    pub fn write(
        &mut self,
        ino: u64,
        offset: u64,
        buf: &[u8],
        now: (i64, i64),
    ) -> Result<usize, Errno> {
        let old_len = self.inodes.get(&ino).ok_or(Errno::EBADF)?.data.len() as u64;
        let end = offset.checked_add(buf.len() as u64).ok_or(Errno::EFBIG)?;
        let new_len = old_len.max(end);
        self.charge(old_len, new_len)?;
        let node = self.inodes.get_mut(&ino).ok_or(Errno::EBADF)?;
        let data = Arc::make_mut(&mut node.data);
        let (offset, end) = (offset as usize, end as usize);
        if data.len() < offset {
            data.resize(offset, 0);
        }
        // Overwrite what exists, append the rest: no zero-fill of the
        // appended part first (a pass over every byte a file grows by).
        let inside = data.len().min(end) - offset;
        data[offset..offset + inside].copy_from_slice(&buf[..inside]);
        data.extend_from_slice(&buf[inside..]);
        node.mtime = now;
        Ok(buf.len())
    }

    pub fn truncate(&mut self, ino: u64, len: u64, now: (i64, i64)) -> Result<(), Errno> {
        let old_len = self.inodes.get(&ino).ok_or(Errno::EBADF)?.data.len() as u64;
        self.charge(old_len, len)?;
        let node = self.inodes.get_mut(&ino).ok_or(Errno::EBADF)?;
        Arc::make_mut(&mut node.data).resize(len as usize, 0);
        node.mtime = now;
        Ok(())
    }

    /// Replace a file's whole contents (the host file API's upload: no
    /// copy of `data`), charged to the disk limit like a write.
    pub fn replace(&mut self, ino: u64, data: Vec<u8>, now: (i64, i64)) -> Result<(), Errno> {
        let old_len = self.inodes.get(&ino).ok_or(Errno::EBADF)?.data.len() as u64;
        self.charge(old_len, data.len() as u64)?;
        let node = self.inodes.get_mut(&ino).ok_or(Errno::EBADF)?;
        node.data = Arc::new(data);
        node.mtime = now;
        Ok(())
    }

    /// The owner (uid, gid) of inode `ino`.
    pub fn owner(&self, ino: u64) -> (u32, u32) {
        self.owners.get(&ino).copied().unwrap_or((0, 0))
    }

    /// Record `ino`'s owner (root's is the default, not stored).
    pub fn set_owner(&mut self, ino: u64, owner: (u32, u32)) {
        if owner == (0, 0) {
            self.owners.remove(&ino);
        } else {
            self.owners.insert(ino, owner);
        }
    }

    pub fn inode_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    /// Drop a link to a file inode; its data is released with the last one.
    pub fn unlink_inode(&mut self, ino: u64) {
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            if n.nlink == 0 {
                // Open descriptors keep a snapshot through `FileContents`
                // only for mappings; reads of an unlinked open file keep
                // working because the inode stays until the sandbox ends.
                let len = n.data.len() as u64;
                self.bytes = self.bytes.saturating_sub(len);
            }
        }
    }

    /// Entries directly under directory `dir` (canonical path).
    pub fn children(&self, dir: &str) -> Vec<(String, &Entry)> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
            .map(|(k, e)| (k[prefix.len()..].to_string(), e))
            .collect()
    }

    /// Move every entry at or below `from` to `to` (ENOSPC when the longer
    /// names would pass the disk limit).
    pub fn move_tree(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let prefix = format!("{from}/");
        let keys: Vec<String> = self
            .entries
            .range(from.to_string()..)
            .take_while(|(k, _)| k.as_str() == from || k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let n = keys.len() as u64;
        let (old, new) = (from.len() as u64 * n, to.len() as u64 * n);
        self.charge(old, new)?;
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                let nk = format!("{to}{}", &k[from.len()..]);
                self.entries.insert(nk, e);
            }
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A snapshot of a tmpfs file's bytes, for private mappings.
#[derive(Debug)]
pub struct TmpContents(pub Arc<Vec<u8>>);

impl FileContents for TmpContents {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let d = &self.0;
        let start = (offset as usize).min(d.len());
        let n = (d.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&d[start..start + n]);
        buf[n..].fill(0);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn persisted(&self) -> crate::persist::PersistedFile {
        crate::persist::PersistedFile::Bytes(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_overwrite_append_and_fill_gaps_with_zeros() {
        let mut t = Tmpfs::new(1 << 20);
        let ino = t.new_file(0o100644, b"abcdef".to_vec(), (0, 0)).unwrap();
        let data = |t: &Tmpfs| t.inodes[&ino].data.as_slice().to_vec();
        // Inside.
        assert_eq!(t.write(ino, 1, b"XY", (0, 0)).unwrap(), 2);
        assert_eq!(data(&t), b"aXYdef");
        // Across the end.
        t.write(ino, 4, b"1234", (0, 0)).unwrap();
        assert_eq!(data(&t), b"aXYd1234");
        // At the end.
        t.write(ino, 8, b"!", (0, 0)).unwrap();
        assert_eq!(data(&t), b"aXYd1234!");
        // Past the end: the gap reads as zeros.
        t.write(ino, 11, b"z", (0, 0)).unwrap();
        assert_eq!(data(&t), b"aXYd1234!\0\0z");
        assert_eq!(t.bytes(), 12);
        // Over the limit: nothing written.
        assert_eq!(t.write(ino, 1 << 20, b"q", (0, 0)), Err(Errno::ENOSPC));
        assert_eq!(data(&t).len(), 12);
    }
}
