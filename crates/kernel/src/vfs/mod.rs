//! The sandbox's filesystem: the read-only image, the writable overlay over
//! it, and the synthetic /dev, /proc and /sys. Paths are resolved here, one
//! component at a time, symlinks included, so `..`, absolute and relative
//! symlinks and /proc links all stay inside the sandbox's root.

use serde::{Deserialize, Serialize};
pub mod host;
pub mod image;
pub mod name;
pub mod synthetic;
pub mod tmpfs;
pub mod watch;

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;
use zerocopy::FromZeros;

use crate::cred::{Cred, Want};

pub use image::{HostFile, Image, ImageMeta};
pub use synthetic::{Device, ProcFile, ProcView, Synth, SynthDir};
pub use tmpfs::{Entry, TmpContents, Tmpfs};
pub use watch::{FsEvent, FsEventKind, WatchSink, Watches};

/// Most symlinks followed in one resolution (as Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;
/// Longest path accepted.
pub const PATH_MAX: usize = 4096;

/// st_dev of the root filesystem (image and overlay together).
const DEV_ROOT: u64 = 0x803;
const DEV_PROC: u64 = 0x16;
const DEV_DEV: u64 = 0x5;
/// Inode number of /dev/shm until the sandbox changes it.
const SHM_DIR_INO: u64 = 0x5_0000_0001;

/// What a path names.
#[derive(Debug, Clone)]
pub enum Node {
    Image(ImageMeta),
    TmpFile(u64),
    TmpDir { mode: u32, ino: u64 },
    TmpSymlink { target: String, ino: u64 },
    Synth(Synth),
}

impl Node {
    pub fn is_dir(&self) -> bool {
        match self {
            Node::Image(m) => m.file_type() == S_IFDIR,
            Node::TmpDir { .. } => true,
            Node::Synth(Synth::Dir(_)) => true,
            _ => false,
        }
    }

    pub fn is_symlink(&self) -> bool {
        match self {
            Node::Image(m) => m.file_type() == S_IFLNK,
            Node::TmpSymlink { .. } => true,
            Node::Synth(Synth::Symlink(_)) => true,
            _ => false,
        }
    }
}

/// A resolved path: its canonical form and what it names.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub path: String,
    pub node: Node,
}

/// One directory entry for getdents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub d_type: u8,
}

fn d_type(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFDIR => DT_DIR,
        S_IFREG => DT_REG,
        S_IFLNK => DT_LNK,
        S_IFCHR => DT_CHR,
        S_IFBLK => DT_BLK,
        S_IFIFO => DT_FIFO,
        S_IFSOCK => DT_SOCK,
        _ => DT_UNKNOWN,
    }
}

/// Join a canonical directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a canonical path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vfs {
    #[serde(skip, default = "crate::persist::current_image")]
    pub image: Arc<Image>,
    pub tmp: Tmpfs,
    /// Who is told of changes (envd's watchers; not kept in snapshots).
    #[serde(skip)]
    pub watches: Watches,
    /// Whose permissions the operation under way is checked with, and who
    /// owns what it creates: the calling process's credentials during a
    /// system call (see `syscalls::dispatch`), root otherwise, or the user
    /// a host file operation runs as (`with_actor`).
    #[serde(skip)]
    pub actor: Cred,
}

impl Vfs {
    pub fn new(image: Arc<Image>, disk_limit: u64) -> Vfs {
        Vfs {
            image,
            tmp: Tmpfs::new(disk_limit),
            watches: Watches::default(),
            actor: Cred::default(),
        }
    }

    /// Run `f` with `cred` as the actor (a host file operation done as a
    /// sandbox user), then back to root.
    pub fn with_actor<T>(&mut self, cred: &Cred, f: impl FnOnce(&mut Vfs) -> T) -> T {
        self.actor = cred.clone();
        let r = f(self);
        self.actor = Cred::default();
        r
    }

    /// The inode number that owns a node's metadata (none for /proc,
    /// /dev and /sys, which are root's).
    fn ino_of(node: &Node) -> Option<u64> {
        match node {
            Node::Image(m) => Some(m.ino),
            Node::TmpFile(ino) | Node::TmpDir { ino, .. } | Node::TmpSymlink { ino, .. } => {
                Some(*ino)
            }
            Node::Synth(_) => None,
        }
    }

    /// A node's owner (uid, gid).
    pub fn owner(&self, node: &Node) -> (u32, u32) {
        Self::ino_of(node).map_or((0, 0), |i| self.tmp.owner(i))
    }

    /// chown's effect: record a node's owner (EPERM for /proc and /dev).
    pub fn set_owner(&mut self, node: &Node, owner: (u32, u32)) -> Result<(), Errno> {
        let ino = Self::ino_of(node).ok_or(Errno::EPERM)?;
        self.tmp.set_owner(ino, owner);
        Ok(())
    }

    /// The one discretionary access check: may the actor do `want` to
    /// `node`? (EACCES if not.)
    pub fn permit(&self, node: &Node, want: Want) -> Result<(), Errno> {
        self.permit_as(node, &self.actor, want)
    }

    /// [`Vfs::permit`] for given credentials (access(2) checks with the
    /// real ids).
    pub fn permit_as(&self, node: &Node, cred: &Cred, want: Want) -> Result<(), Errno> {
        if cred.fs_privileged() && want.0 & 1 == 0 {
            return Ok(());
        }
        let mode = self.stat(node).st_mode;
        let (uid, gid) = self.owner(node);
        cred.may(mode, uid, gid, want)
    }

    /// May the actor remove (or rename away) `victim` from directory
    /// `dir`? Write and search on the directory, and in a sticky one
    /// (/tmp) only the file's or the directory's owner (EPERM otherwise).
    pub fn may_remove(&self, dir: &Node, victim: &Node) -> Result<(), Errno> {
        self.permit(dir, Want::DIR_CHANGE)?;
        let c = &self.actor;
        if c.fs_privileged() || self.stat(dir).st_mode & 0o1000 == 0 {
            return Ok(());
        }
        if self.owner(victim).0 == c.fsuid || self.owner(dir).0 == c.fsuid {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    /// What the actor creates is the actor's (fsuid, fsgid).
    pub(crate) fn own_new(&mut self, ino: u64) {
        let o = (self.actor.fsuid, self.actor.fsgid);
        self.tmp.set_owner(ino, o);
    }

    /// Whether anyone watches (checked before building an event).
    pub fn watched(&self) -> bool {
        !self.watches.is_empty()
    }

    /// Tell the watchers that `path` (canonical) changed.
    pub fn notify(&mut self, path: &str, kind: FsEventKind) {
        if matches!(
            kind,
            FsEventKind::Create | FsEventKind::Remove | FsEventKind::Rename | FsEventKind::MovedTo
        ) {
            self.dir_changed(path);
        }
        if self.watched() {
            self.watches.notify(&FsEvent {
                kind,
                path: path.to_string(),
            });
        }
    }

    /// A name in the directory holding `path` came or went: the
    /// directory's modification time is now, as on Linux (Maildir, make
    /// and rsync compare it).
    fn dir_changed(&mut self, path: &str) {
        let parent = match path.rfind('/') {
            Some(0) => "/",
            Some(i) => &path[..i],
            None => return,
        };
        if synthetic::covers(parent) {
            return;
        }
        let ino = match self.tmp.get(parent) {
            Some(Entry::Dir { ino, .. }) => *ino,
            Some(_) => return,
            None if parent == synthetic::SHM_DIR => SHM_DIR_INO,
            None => match self.image.lstat(parent) {
                Some(m) if m.file_type() == S_IFDIR => {
                    if self.tmp.node_times(m.ino).is_none() {
                        self.tmp.set_node_times(m.ino, Some((m.atime, 0)), None);
                    }
                    m.ino
                }
                _ => return,
            },
        };
        self.tmp
            .set_node_times(ino, None, Some(crate::syscalls::now()));
    }

    /// What a canonical path names, without following anything.
    pub fn lookup(&self, path: &str, p: &dyn ProcView) -> Option<Node> {
        if synthetic::covers(path) {
            return synthetic::lookup(path, p).map(Node::Synth);
        }
        match self.tmp.get(path) {
            None if path == synthetic::SHM_DIR => {
                // There from the start (a template's overlay need not
                // hold it), world-writable and sticky as on Linux.
                return Some(Node::TmpDir {
                    mode: 0o1777,
                    ino: SHM_DIR_INO,
                });
            }
            Some(Entry::Whiteout) => return None,
            Some(Entry::File(ino)) => return Some(Node::TmpFile(*ino)),
            Some(Entry::Dir { mode, ino }) => {
                return Some(Node::TmpDir {
                    mode: *mode,
                    ino: *ino,
                })
            }
            Some(Entry::Symlink { target, ino }) => {
                return Some(Node::TmpSymlink {
                    target: target.clone(),
                    ino: *ino,
                })
            }
            None => {}
        }
        self.image.lstat(path).map(Node::Image)
    }

    /// The target of a symlink node.
    pub fn readlink(&self, path: &str, node: &Node) -> Result<String, Errno> {
        match node {
            Node::Image(m) if m.file_type() == S_IFLNK => {
                self.image.readlink(path).map_err(Errno::from)
            }
            Node::TmpSymlink { target, .. } => Ok(target.clone()),
            Node::Synth(Synth::Symlink(t)) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Resolve `path` relative to the canonical directory `base`.
    /// `follow` says whether a symlink in the last component is followed.
    pub fn resolve(
        &self,
        base: &str,
        path: &str,
        follow: bool,
        p: &dyn ProcView,
    ) -> Result<Lookup, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if name::byte_len(path) > PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let must_be_dir = path.ends_with('/');
        let mut stack: Vec<String> = if path.starts_with('/') {
            Vec::new()
        } else {
            base.split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut links = 0;
        let mut node = self.lookup(&canon(&stack), p).ok_or(Errno::ENOENT)?;
        while let Some(c) = todo.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                stack.pop();
                node = self.lookup(&canon(&stack), p).ok_or(Errno::ENOENT)?;
                continue;
            }
            if name::byte_len(&c) > 255 {
                return Err(Errno::ENAMETOOLONG);
            }
            if !node.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            stack.push(c);
            let here = canon(&stack);
            let n = self.lookup(&here, p).ok_or(Errno::ENOENT)?;
            let last = todo.is_empty();
            if n.is_symlink() && (!last || follow || must_be_dir) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::ELOOP);
                }
                let target = self.readlink(&here, &n)?;
                stack.pop();
                if target.starts_with('/') {
                    stack.clear();
                }
                for t in target.split('/').filter(|s| !s.is_empty()).rev() {
                    todo.push(t.to_string());
                }
                node = self.lookup(&canon(&stack), p).ok_or(Errno::ENOENT)?;
                continue;
            }
            node = n;
        }
        if must_be_dir && !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(Lookup {
            path: canon(&stack),
            node,
        })
    }

    /// Resolve everything but the last component, which is returned as a
    /// name (for creating, removing and renaming).
    pub fn resolve_parent(
        &self,
        base: &str,
        path: &str,
        p: &dyn ProcView,
    ) -> Result<(Lookup, String), Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            // "/" itself
            return Err(Errno::EBUSY);
        }
        let (dir, name) = match trimmed.rfind('/') {
            Some(i) => (if i == 0 { "/" } else { &trimmed[..i] }, &trimmed[i + 1..]),
            None => (".", trimmed),
        };
        if name::byte_len(name) > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let parent = self.resolve(base, dir, true, p)?;
        if !parent.node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok((parent, name.to_string()))
    }

    /// stat of a node.
    pub fn stat(&self, node: &Node) -> Stat {
        let mut st = Stat::new_zeroed();
        st.st_blksize = 4096;
        st.st_dev = DEV_ROOT;
        match node {
            Node::Image(m) => {
                st.st_mode = m.mode;
                st.st_ino = m.ino;
                st.st_nlink = m.nlink;
                st.st_size = m.size as i64;
                st.st_blocks = m.blocks as i64;
                st.st_mtime = m.mtime;
                st.st_mtime_nsec = m.mtime_nsec;
                st.st_atime = m.atime;
                st.st_ctime = m.ctime;
                // An image directory whose entries changed in the overlay.
                if m.file_type() == S_IFDIR {
                    if let Some((a, mt)) = self.tmp.node_times(m.ino) {
                        (st.st_atime, st.st_atime_nsec) = a;
                        (st.st_mtime, st.st_mtime_nsec) = mt;
                        (st.st_ctime, st.st_ctime_nsec) = mt;
                    }
                }
            }
            Node::TmpFile(ino) => {
                if let Some(i) = self.tmp.inode(*ino) {
                    st.st_mode = tmp_file_type(i.mode) | (i.mode & 0o7777);
                    st.st_size = i.data.len() as i64;
                    st.st_blocks = (i.data.len() as i64 + 511) / 512;
                    st.st_nlink = i.nlink.max(1);
                    (st.st_mtime, st.st_mtime_nsec) = i.mtime;
                    (st.st_atime, st.st_atime_nsec) = i.atime.unwrap_or(i.mtime);
                    (st.st_ctime, st.st_ctime_nsec) = i.mtime;
                }
                st.st_ino = *ino;
            }
            Node::TmpDir { mode, ino } => {
                st.st_mode = S_IFDIR | (mode & 0o7777);
                st.st_ino = *ino;
                st.st_nlink = 2;
                st.st_size = 4096;
            }
            Node::TmpSymlink { target, ino } => {
                st.st_mode = S_IFLNK | 0o777;
                st.st_ino = *ino;
                st.st_nlink = 1;
                st.st_size = target.len() as i64;
            }
            Node::Synth(s) => {
                st.st_dev = DEV_PROC;
                st.st_nlink = 1;
                match s {
                    Synth::Dir(_) => {
                        st.st_mode = S_IFDIR | 0o555;
                        st.st_nlink = 2;
                    }
                    Synth::Symlink(t) => {
                        st.st_mode = S_IFLNK | 0o777;
                        st.st_size = t.len() as i64;
                    }
                    Synth::File(_) => st.st_mode = S_IFREG | 0o444,
                    Synth::Device(d) => {
                        st.st_dev = DEV_DEV;
                        st.st_mode = S_IFCHR | 0o666;
                        let (ma, mi) = d.rdev();
                        st.st_rdev = ((ma as u64) << 8) | mi as u64;
                    }
                }
                st.st_ino = synth_ino(s);
            }
        }
        if let Node::TmpDir { ino, .. } | Node::TmpSymlink { ino, .. } = node {
            if let Some((a, m)) = self.tmp.node_times(*ino) {
                (st.st_atime, st.st_atime_nsec) = a;
                (st.st_mtime, st.st_mtime_nsec) = m;
                (st.st_ctime, st.st_ctime_nsec) = m;
            }
        }
        (st.st_uid, st.st_gid) = self.owner(node);
        st
    }

    /// Entries of a directory (without "." and "..").
    pub fn list(&self, path: &str, node: &Node, p: &dyn ProcView) -> Result<Vec<DirEntry>, Errno> {
        let mut out: Vec<DirEntry> = Vec::new();
        if let Node::Synth(Synth::Dir(d)) = node {
            for name in synthetic::list(d, p) {
                let child = join(path, &name);
                let (ino, t) = match synthetic::lookup(&child, p) {
                    Some(s) => (synth_ino(&s), synth_dtype(&s)),
                    None => continue,
                };
                out.push(DirEntry {
                    name,
                    ino,
                    d_type: t,
                });
            }
            if path == "/dev" {
                if let Some(Node::TmpDir { ino, .. }) = self.lookup(synthetic::SHM_DIR, p) {
                    out.push(DirEntry {
                        name: "shm".into(),
                        ino,
                        d_type: DT_DIR,
                    });
                }
            }
            return Ok(out);
        }
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let mut names = std::collections::BTreeMap::new();
        if let Ok(list) = self.image.list(path) {
            for (name, mode, ino) in list {
                names.insert(name, (ino, d_type(mode)));
            }
        }
        for (name, e) in self.tmp.children(path) {
            match e {
                Entry::Whiteout => {
                    names.remove(&name);
                }
                Entry::File(ino) => {
                    let mode = self.tmp.inode(*ino).map_or(S_IFREG, |i| i.mode);
                    names.insert(name, (*ino, d_type(tmp_file_type(mode))));
                }
                Entry::Dir { ino, .. } => {
                    names.insert(name, (*ino, DT_DIR));
                }
                Entry::Symlink { ino, .. } => {
                    names.insert(name, (*ino, DT_LNK));
                }
            }
        }
        if path == "/" {
            for s in ["dev", "proc", "sys"] {
                names.insert(
                    s.to_string(),
                    (
                        synth_ino(&Synth::Dir(SynthDir::Dev)) + s.len() as u64,
                        DT_DIR,
                    ),
                );
            }
        }
        for (name, (ino, t)) in names {
            out.push(DirEntry {
                name,
                ino,
                d_type: t,
            });
        }
        Ok(out)
    }

    /// Whether a directory has no entries.
    pub fn is_empty_dir(&self, path: &str, node: &Node, p: &dyn ProcView) -> Result<bool, Errno> {
        Ok(self.list(path, node, p)?.is_empty())
    }

    /// The writable inode for a regular file, copying an image file up into
    /// the overlay first.
    pub fn writable_file(
        &mut self,
        path: &str,
        node: &Node,
        now: (i64, i64),
    ) -> Result<u64, Errno> {
        match node {
            Node::TmpFile(ino) => Ok(*ino),
            Node::Image(m) if m.file_type() == S_IFREG => {
                let f = self.image.open(path).map_err(Errno::from)?;
                let mut data = vec![0u8; f.size() as usize];
                let mut done = 0;
                while done < data.len() {
                    let n = f
                        .read_at(&mut data[done..], done as u64)
                        .map_err(Errno::from)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                data.truncate(done);
                let ino = self.tmp.new_file(m.mode & 0o7777, data, now)?;
                self.tmp.set(path.to_string(), Entry::File(ino))?;
                self.tmp.set_owner(ino, self.tmp.owner(m.ino));
                Ok(ino)
            }
            Node::Image(m) if m.file_type() == S_IFDIR => Err(Errno::EISDIR),
            Node::TmpDir { .. } | Node::Synth(Synth::Dir(_)) => Err(Errno::EISDIR),
            _ => Err(Errno::EACCES),
        }
    }

    fn check_creatable(&self, parent: &Lookup) -> Result<(), Errno> {
        if synthetic::covers(&parent.path) {
            return Err(Errno::EACCES);
        }
        if !parent.node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        self.permit(&parent.node, Want::DIR_CHANGE)
    }

    /// Whether `node` is a socket node (an AF_UNIX bind or mknod made it).
    pub fn is_socket(&self, node: &Node) -> bool {
        self.special_type(node) == Some(S_IFSOCK)
    }

    /// Whether `node` is a FIFO (mknod S_IFIFO made it).
    pub fn is_fifo(&self, node: &Node) -> bool {
        self.special_type(node) == Some(S_IFIFO)
    }

    /// The file type of an overlay file that is not regular (a socket or
    /// a FIFO node).
    fn special_type(&self, node: &Node) -> Option<u32> {
        match node {
            Node::TmpFile(ino) => self
                .tmp
                .inode(*ino)
                .map(|i| tmp_file_type(i.mode))
                .filter(|&t| t != S_IFREG),
            _ => None,
        }
    }

    /// mknod(2) of a regular file, a FIFO or a socket node `name` in
    /// `parent` (`mode` carries the type; the caller refused the others).
    pub fn mknod(
        &mut self,
        parent: &Lookup,
        name: &str,
        mode: u32,
        now: (i64, i64),
    ) -> Result<(), Errno> {
        self.check_creatable(parent)?;
        let ty = match mode & S_IFMT {
            0 => S_IFREG,
            t => t,
        };
        let keep = if ty == S_IFREG { 0 } else { ty };
        let path = join(&parent.path, name);
        let ino = self.tmp.new_file(keep | (mode & 0o7777), Vec::new(), now)?;
        if let Err(e) = self.tmp.set(path.clone(), Entry::File(ino)) {
            self.tmp.unlink_inode(ino);
            return Err(e);
        }
        self.notify(&path, FsEventKind::Create);
        Ok(())
    }

    /// Create an empty regular file `name` in `parent`.
    pub fn create_file(
        &mut self,
        parent: &Lookup,
        name: &str,
        mode: u32,
        now: (i64, i64),
    ) -> Result<(String, u64), Errno> {
        self.check_creatable(parent)?;
        let path = join(&parent.path, name);
        let ino = self.tmp.new_file(mode & 0o7777, Vec::new(), now)?;
        self.tmp.set(path.clone(), Entry::File(ino))?;
        self.own_new(ino);
        self.notify(&path, FsEventKind::Create);
        Ok((path, ino))
    }

    pub fn mkdir(&mut self, parent: &Lookup, name: &str, mode: u32) -> Result<(), Errno> {
        self.check_creatable(parent)?;
        let ino = self.tmp.alloc_ino();
        let path = join(&parent.path, name);
        self.tmp.set(
            path.clone(),
            Entry::Dir {
                mode: mode & 0o7777,
                ino,
            },
        )?;
        // A new directory shows its creation time (zip refuses 1970).
        let now = crate::syscalls::now();
        self.tmp.set_node_times(ino, Some(now), Some(now));
        self.own_new(ino);
        self.notify(&path, FsEventKind::Create);
        Ok(())
    }

    pub fn symlink(&mut self, parent: &Lookup, name: &str, target: &str) -> Result<(), Errno> {
        self.check_creatable(parent)?;
        let ino = self.tmp.alloc_ino();
        let path = join(&parent.path, name);
        self.tmp.set(
            path.clone(),
            Entry::Symlink {
                target: target.to_string(),
                ino,
            },
        )?;
        let now = crate::syscalls::now();
        self.tmp.set_node_times(ino, Some(now), Some(now));
        self.own_new(ino);
        self.notify(&path, FsEventKind::Create);
        Ok(())
    }

    /// Hard link: only overlay files can be linked.
    pub fn link(
        &mut self,
        old: &Lookup,
        parent: &Lookup,
        name: &str,
        now: (i64, i64),
    ) -> Result<(), Errno> {
        self.check_creatable(parent)?;
        let ino = self.writable_file(&old.path, &old.node, now)?;
        if let Some(i) = self.tmp.inode_mut(ino) {
            i.nlink += 1;
        }
        let path = join(&parent.path, name);
        self.tmp.set(path.clone(), Entry::File(ino))?;
        self.notify(&path, FsEventKind::Create);
        Ok(())
    }

    /// Remove the entry at `path` (already known to exist); whiteout the
    /// image's entry if there is one.
    pub fn remove(&mut self, path: &str) {
        match self.tmp.remove(path) {
            Some(Entry::File(ino)) => self.tmp.unlink_inode(ino),
            Some(Entry::Dir { ino, .. } | Entry::Symlink { ino, .. }) => self.tmp.forget_times(ino),
            _ => {}
        }
        if self.image.lstat(path).is_some() {
            // Whiteouts are always recorded.
            let _ = self.tmp.set(path.to_string(), Entry::Whiteout);
        }
        self.notify(path, FsEventKind::Remove);
    }

    /// rename(2) of a resolved `old` to `new_path` (whose parent exists).
    pub fn rename(
        &mut self,
        old: &Lookup,
        new_path: &str,
        replaced: Option<&Node>,
        now: (i64, i64),
    ) -> Result<(), Errno> {
        if synthetic::covers(&old.path) || synthetic::covers(new_path) {
            return Err(Errno::EXDEV);
        }
        if old.path == new_path {
            return Ok(());
        }
        let dir_of = |p: &str| self.lookup(parent(p), &NoProc).ok_or(Errno::ENOENT);
        self.may_remove(&dir_of(&old.path)?, &old.node)?;
        match replaced {
            Some(r) => self.may_remove(&dir_of(new_path)?, r)?,
            None => self.permit(&dir_of(new_path)?, Want::DIR_CHANGE)?,
        }
        if new_path.starts_with(&format!("{}/", old.path)) {
            return Err(Errno::EINVAL);
        }
        if let Some(r) = replaced {
            if r.is_dir() != old.node.is_dir() {
                return Err(if r.is_dir() {
                    Errno::EISDIR
                } else {
                    Errno::ENOTDIR
                });
            }
            if r.is_dir() && !self.list(new_path, r, &NoProc)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let entry = match &old.node {
            Node::TmpFile(ino) => Entry::File(*ino),
            Node::TmpSymlink { target, ino } => Entry::Symlink {
                target: target.clone(),
                ino: *ino,
            },
            Node::TmpDir { mode, ino } => {
                if self.image.lstat(&old.path).is_some() {
                    return Err(Errno::EXDEV);
                }
                if replaced.is_some() {
                    self.remove(new_path);
                }
                self.tmp.move_tree(&old.path, new_path)?;
                let _ = (mode, ino);
                self.notify(&old.path, FsEventKind::Rename);
                self.notify(new_path, FsEventKind::MovedTo);
                return Ok(());
            }
            Node::Image(m) => match m.file_type() {
                S_IFREG => Entry::File(self.writable_file(&old.path, &old.node, now)?),
                S_IFLNK => Entry::Symlink {
                    target: self.image.readlink(&old.path).map_err(Errno::from)?,
                    ino: m.ino,
                },
                // Moving an image directory would mean copying its tree.
                _ => return Err(Errno::EXDEV),
            },
            Node::Synth(_) => return Err(Errno::EXDEV),
        };
        if replaced.is_some() {
            self.remove(new_path);
        }
        self.tmp.set(new_path.to_string(), entry)?;
        // The old name goes away without releasing the inode.
        self.tmp.remove(&old.path);
        if self.image.lstat(&old.path).is_some() {
            let _ = self.tmp.set(old.path.clone(), Entry::Whiteout);
        }
        self.notify(&old.path, FsEventKind::Rename);
        self.notify(new_path, FsEventKind::MovedTo);
        Ok(())
    }
}

/// A ProcView for operations that never touch /proc.
struct NoProc;
impl ProcView for NoProc {
    fn pid(&self) -> u32 {
        0
    }
    fn exe(&self) -> String {
        String::new()
    }
    fn cwd(&self) -> String {
        "/".into()
    }
    fn fd_path(&self, _: i32) -> Option<String> {
        None
    }
    fn fds(&self) -> Vec<i32> {
        Vec::new()
    }
}

fn canon(stack: &[String]) -> String {
    if stack.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for c in stack {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

/// The type of an overlay file inode: a bound AF_UNIX socket's or a FIFO's
/// mode carries S_IFSOCK or S_IFIFO; every other one is regular.
fn tmp_file_type(mode: u32) -> u32 {
    match mode & S_IFMT {
        t @ (S_IFSOCK | S_IFIFO) => t,
        _ => S_IFREG,
    }
}

fn synth_ino(s: &Synth) -> u64 {
    // Stable small numbers; only uniqueness within /proc matters.
    let h = format!("{s:?}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    (h & 0xffff_ffff) | 1
}

fn synth_dtype(s: &Synth) -> u8 {
    match s {
        Synth::Dir(_) => DT_DIR,
        Synth::Symlink(_) => DT_LNK,
        Synth::File(_) => DT_REG,
        Synth::Device(_) => DT_CHR,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vfs_with(setup: impl FnOnce(&std::path::Path)) -> (tempfile::TempDir, Vfs) {
        let d = tempfile::tempdir().unwrap();
        setup(d.path());
        let img = Arc::new(Image::new(d.path()).unwrap());
        (d, Vfs::new(img, 1 << 20))
    }

    #[test]
    fn dotdot_and_symlinks_stay_inside_the_root() {
        let (_d, v) = vfs_with(|r| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::write(r.join("etc/passwd"), "sandbox\n").unwrap();
            std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
            std::os::unix::fs::symlink("../../../../etc", r.join("etc/rel")).unwrap();
        });
        for p in [
            "/../../etc/passwd",
            "/abs/passwd",
            "/etc/rel/passwd",
            "../../../etc/passwd",
        ] {
            let l = v.resolve("/", p, true, &NoProc).unwrap();
            assert_eq!(l.path, "/etc/passwd", "{p}");
        }
    }

    #[test]
    fn a_directory_replacing_an_image_symlink_hides_the_target() {
        let (_d, mut v) = vfs_with(|r| {
            std::os::unix::fs::symlink("/etc", r.join("escape")).unwrap();
        });
        v.remove("/escape");
        let root = v.resolve("/", "/", true, &NoProc).unwrap();
        v.mkdir(&root, "escape", 0o755).unwrap();
        assert!(v.lookup("/escape/passwd", &NoProc).is_none());
        let l = v.resolve("/", "/escape", true, &NoProc).unwrap();
        assert!(v.list("/escape", &l.node, &NoProc).unwrap().is_empty());
    }

    #[test]
    fn overlay_writes_copy_up_and_whiteouts_hide() {
        let (_d, mut v) = vfs_with(|r| {
            std::fs::write(r.join("f"), "image").unwrap();
        });
        let l = v.resolve("/", "/f", true, &NoProc).unwrap();
        let ino = v.writable_file(&l.path, &l.node, (0, 0)).unwrap();
        v.tmp.write(ino, 0, b"IM", (0, 0)).unwrap();
        assert_eq!(&v.tmp.inode(ino).unwrap().data[..], b"IMage");
        v.remove("/f");
        assert!(v.lookup("/f", &NoProc).is_none());
        let root = v.resolve("/", "/", true, &NoProc).unwrap();
        assert!(v
            .list("/", &root.node, &NoProc)
            .unwrap()
            .iter()
            .all(|e| e.name != "f"));
    }

    #[test]
    fn what_the_actor_creates_is_its_own_and_roots_files_are_checked() {
        let (_d, mut v) = vfs_with(|r| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::create_dir_all(r.join("tmp")).unwrap();
            std::fs::write(r.join("etc/passwd"), "x").unwrap();
        });
        let user = Cred::of(1000, 1000, vec![1000]);
        let tmp = v.resolve("/", "/tmp", true, &NoProc).unwrap();
        // Root makes /tmp sticky and world-writable, then a user writes.
        v.tmp
            .set(
                "/tmp".into(),
                Entry::Dir {
                    mode: 0o1777,
                    ino: 7,
                },
            )
            .unwrap();
        let tmp = Lookup {
            node: v.lookup("/tmp", &NoProc).unwrap(),
            ..tmp
        };
        let (p, ino) = v
            .with_actor(&user, |v| v.create_file(&tmp, "mine", 0o644, (0, 0)))
            .unwrap();
        let mine = v.lookup(&p, &NoProc).unwrap();
        assert_eq!(v.owner(&mine), (1000, 1000));
        assert_eq!(v.stat(&Node::TmpFile(ino)).st_uid, 1000);
        let etc = v.resolve("/", "/etc", true, &NoProc).unwrap();
        assert_eq!(
            v.with_actor(&user, |v| v.mkdir(&etc, "d", 0o755)),
            Err(Errno::EACCES)
        );
        let passwd = v.lookup("/etc/passwd", &NoProc).unwrap();
        assert_eq!(
            v.with_actor(&user, |v| v.permit(&passwd, Want::WRITE)),
            Err(Errno::EACCES)
        );
        assert!(v.permit(&passwd, Want::WRITE).is_ok());
        // Sticky: another user cannot remove it, its owner and root can.
        let other = Cred::of(1001, 1001, vec![]);
        let tmp_node = tmp.node.clone();
        assert_eq!(
            v.with_actor(&other, |v| v.may_remove(&tmp_node, &mine)),
            Err(Errno::EPERM)
        );
        assert!(v
            .with_actor(&user, |v| v.may_remove(&tmp_node, &mine))
            .is_ok());
        assert!(v.may_remove(&tmp_node, &mine).is_ok());
        // A chowned image file keeps its owner when copied up.
        v.set_owner(&passwd, (1000, 1000)).unwrap();
        let up = v.writable_file("/etc/passwd", &passwd, (0, 0)).unwrap();
        assert_eq!(v.owner(&Node::TmpFile(up)), (1000, 1000));
    }

    #[test]
    fn symlink_loops_end_with_eloop() {
        let (_d, v) = vfs_with(|r| {
            std::os::unix::fs::symlink("b", r.join("a")).unwrap();
            std::os::unix::fs::symlink("a", r.join("b")).unwrap();
        });
        assert_eq!(
            v.resolve("/", "/a", true, &NoProc).unwrap_err(),
            Errno::ELOOP
        );
    }
}
