//! The host's file API on a sandbox's VFS: what envd's filesystem service
//! and `/files` do inside an E2B sandbox, done by the VMM directly on the
//! sandbox's file system (DESIGN.md §6) without running anything in the
//! guest.
//!
//! Paths are resolved exactly as the guest's system calls resolve them
//! (`Vfs::resolve`): `..` stops at the sandbox's root and symlinks are
//! followed inside it, so no path names anything outside the sandbox.
//! Relative paths are relative to [`HOME`], E2B's default user's home.
//! Writes go to the overlay and are charged to its disk limit (ENOSPC ->
//! [`HostFsError::NoSpace`]); every change reaches the VFS's watchers.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::{join, parent, synthetic, Entry, FsEventKind, Lookup, Node, ProcView, Synth, Vfs};

/// E2B's default user's home: relative paths start here, and every live
/// sandbox has it.
pub const HOME: &str = "/home/user";
/// Most entries one listing returns (a deep listing of / is large).
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Why a host file operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostFsError {
    #[error("path '{0}' does not exist")]
    NotFound(String),
    #[error("path '{0}' is a directory")]
    IsADirectory(String),
    #[error("path '{0}' is not a directory")]
    NotADirectory(String),
    #[error("path '{0}' already exists")]
    AlreadyExists(String),
    #[error("not enough disk space available")]
    NoSpace,
    #[error("invalid path '{0}': {1}")]
    Invalid(String, &'static str),
    #[error("path '{0}' cannot be changed: {1}")]
    Denied(String, &'static str),
    #[error("path '{0}': {1:?}")]
    Other(String, Errno),
}

impl HostFsError {
    fn from_errno(path: &str, e: Errno) -> HostFsError {
        let p = path.to_string();
        match e {
            Errno::ENOENT => HostFsError::NotFound(p),
            Errno::EISDIR => HostFsError::IsADirectory(p),
            Errno::ENOTDIR => HostFsError::NotADirectory(p),
            Errno::EEXIST => HostFsError::AlreadyExists(p),
            Errno::ENOSPC => HostFsError::NoSpace,
            Errno::ENAMETOOLONG => HostFsError::Invalid(p, "name too long"),
            Errno::ELOOP => HostFsError::Invalid(p, "too many levels of symbolic links"),
            Errno::EACCES | Errno::EPERM => HostFsError::Denied(p, "permission denied"),
            Errno::EXDEV | Errno::EBUSY => {
                HostFsError::Denied(p, "not a writable part of the sandbox's file system")
            }
            e => HostFsError::Other(p, e),
        }
    }
}

/// What a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    File,
    Dir,
    Symlink,
    /// Devices, /proc files.
    Other,
}

/// What `stat` says of a name, in the host API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    /// Canonical path inside the sandbox.
    pub path: String,
    pub kind: HostKind,
    pub size: u64,
    /// st_mode (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, nanoseconds) since the epoch.
    pub mtime: (i64, i64),
    pub symlink_target: Option<String>,
}

/// /proc as seen by the host API: pid 1's, with no descriptors.
struct HostView;
impl ProcView for HostView {
    fn pid(&self) -> u32 {
        1
    }
    fn exe(&self) -> String {
        String::new()
    }
    fn cwd(&self) -> String {
        HOME.into()
    }
    fn fd_path(&self, _: i32) -> Option<String> {
        None
    }
    fn fds(&self) -> Vec<i32> {
        Vec::new()
    }
}

fn check(path: &str) -> Result<(), HostFsError> {
    if path.contains('\0') {
        return Err(HostFsError::Invalid(
            path.replace('\0', "\\0"),
            "NUL in path",
        ));
    }
    if path.len() > super::PATH_MAX {
        return Err(HostFsError::Invalid(
            format!("{}...", path.chars().take(64).collect::<String>()),
            "path too long",
        ));
    }
    Ok(())
}

/// The path as given, or the home directory for an empty one.
fn or_home(path: &str) -> &str {
    if path.is_empty() {
        HOME
    } else {
        path
    }
}

fn now() -> (i64, i64) {
    crate::syscalls::now()
}

impl Vfs {
    /// Resolve a client's path (relative to [`HOME`]).
    pub fn host_resolve(&self, path: &str, follow: bool) -> Result<Lookup, HostFsError> {
        check(path)?;
        let path = or_home(path);
        self.resolve(HOME, path, follow, &HostView)
            .map_err(|e| HostFsError::from_errno(path, e))
    }

    fn entry_of(&self, l: &Lookup) -> HostEntry {
        let st = self.stat(&l.node);
        let kind = match st.st_mode & S_IFMT {
            S_IFREG => HostKind::File,
            S_IFDIR => HostKind::Dir,
            S_IFLNK => HostKind::Symlink,
            _ => HostKind::Other,
        };
        let symlink_target = if kind == HostKind::Symlink {
            self.readlink(&l.path, &l.node)
                .ok()
                .map(|t| super::name::display(&t))
        } else {
            None
        };
        let name = match l.path.rfind('/') {
            Some(i) if l.path.len() > 1 => l.path[i + 1..].to_string(),
            _ => "/".to_string(),
        };
        // Names that are not UTF-8 are shown lossily to clients.
        HostEntry {
            name: super::name::display(&name),
            path: super::name::display(&l.path),
            kind,
            size: st.st_size.max(0) as u64,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            symlink_target,
        }
    }

    /// lstat: a symlink is reported as one, with its target.
    pub fn host_stat(&self, path: &str) -> Result<HostEntry, HostFsError> {
        let l = self.host_resolve(path, false)?;
        Ok(self.entry_of(&l))
    }

    /// The entries of directory `path` down to `depth` levels (1: its
    /// children only), depth first in name order (as envd's walk);
    /// symlinks to directories are not descended.
    pub fn host_list(&self, path: &str, depth: u32) -> Result<Vec<HostEntry>, HostFsError> {
        let dir = self.host_resolve(path, true)?;
        if !dir.node.is_dir() {
            return Err(HostFsError::NotADirectory(dir.path));
        }
        let mut out = Vec::new();
        self.list_into(&dir, depth.max(1), &mut out)?;
        Ok(out)
    }

    fn list_into(
        &self,
        d: &Lookup,
        depth: u32,
        out: &mut Vec<HostEntry>,
    ) -> Result<(), HostFsError> {
        let children = self
            .list(&d.path, &d.node, &HostView)
            .map_err(|e| HostFsError::from_errno(&d.path, e))?;
        for c in children {
            let p = join(&d.path, &c.name);
            let Some(node) = self.lookup(&p, &HostView) else {
                continue;
            };
            let l = Lookup { path: p, node };
            out.push(self.entry_of(&l));
            if out.len() > MAX_LIST_ENTRIES {
                return Err(HostFsError::Invalid(
                    d.path.clone(),
                    "more entries than one listing returns (100000): list less deep",
                ));
            }
            if depth > 1 && l.node.is_dir() {
                self.list_into(&l, depth - 1, out)?;
            }
        }
        Ok(())
    }

    /// A regular file's contents (shared, not copied, for overlay files).
    pub fn host_read(&self, path: &str) -> Result<Arc<Vec<u8>>, HostFsError> {
        let l = self.host_resolve(path, true)?;
        match &l.node {
            n if n.is_dir() => Err(HostFsError::IsADirectory(l.path)),
            Node::TmpFile(ino) => self
                .tmp
                .inode(*ino)
                .map(|i| i.data.clone())
                .ok_or(HostFsError::NotFound(l.path)),
            Node::Image(m) if m.file_type() == S_IFREG => {
                let f = self
                    .image
                    .open(&l.path)
                    .map_err(|e| HostFsError::from_errno(&l.path, Errno::from(e)))?;
                let mut data = vec![0u8; f.size() as usize];
                let mut done = 0;
                while done < data.len() {
                    let n = f
                        .read_at(&mut data[done..], done as u64)
                        .map_err(|e| HostFsError::from_errno(&l.path, Errno::from(e)))?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                data.truncate(done);
                Ok(Arc::new(data))
            }
            _ => Err(HostFsError::Invalid(l.path, "not a regular file")),
        }
    }

    /// `mkdir -p`: true if the last directory was created, false if it
    /// was there already.
    pub fn host_mkdir_p(&mut self, path: &str) -> Result<bool, HostFsError> {
        check(path)?;
        let path = or_home(path);
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            join(HOME, path)
        };
        let parts: Vec<&str> = full.split('/').filter(|s| !s.is_empty()).collect();
        let mut created = false;
        for i in 0..parts.len() {
            let prefix = format!("/{}", parts[..=i].join("/"));
            created = false;
            match self.resolve("/", &prefix, true, &HostView) {
                Ok(l) if l.node.is_dir() => continue,
                Ok(l) => return Err(HostFsError::NotADirectory(l.path)),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(HostFsError::from_errno(&prefix, e)),
            }
            let (dir, name) = self
                .resolve_parent("/", &prefix, &HostView)
                .map_err(|e| HostFsError::from_errno(&prefix, e))?;
            if name == "." || name == ".." {
                continue;
            }
            if synthetic::covers(&dir.path) {
                return Err(HostFsError::Denied(prefix, "not a writable directory"));
            }
            self.mkdir(&dir, &name, 0o755)
                .map_err(|e| HostFsError::from_errno(&prefix, e))?;
            created = true;
        }
        Ok(created)
    }

    /// Write a whole file, creating it and its parent directories as
    /// needed, replacing what was there.
    pub fn host_write(&mut self, path: &str, data: Vec<u8>) -> Result<HostEntry, HostFsError> {
        check(path)?;
        if path.is_empty() || path.ends_with('/') {
            return Err(HostFsError::Invalid(path.into(), "not a file name"));
        }
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            join(HOME, path)
        };
        self.host_mkdir_p(parent(&full))?;
        let t = now();
        let target = match self.resolve("/", &full, true, &HostView) {
            Ok(l) => l,
            Err(Errno::ENOENT) => {
                let (dir, name) = self
                    .resolve_parent("/", &full, &HostView)
                    .map_err(|e| HostFsError::from_errno(&full, e))?;
                if name == "." || name == ".." {
                    return Err(HostFsError::IsADirectory(full));
                }
                if synthetic::covers(&dir.path) {
                    return Err(HostFsError::Denied(full, "not a writable directory"));
                }
                self.permit(&dir.node, crate::cred::Want::DIR_CHANGE)
                    .map_err(|e| HostFsError::from_errno(&full, e))?;
                let p = join(&dir.path, &name);
                // Charged before anything is created: a refused upload
                // leaves nothing behind.
                let ino = self
                    .tmp
                    .new_file(0o644, data, t)
                    .map_err(|e| HostFsError::from_errno(&p, e))?;
                if let Err(e) = self.tmp.set(p.clone(), Entry::File(ino)) {
                    self.tmp.unlink_inode(ino);
                    return Err(HostFsError::from_errno(&p, e));
                }
                self.own_new(ino);
                self.notify(&p, FsEventKind::Create);
                self.notify(&p, FsEventKind::Write);
                return self.host_stat(&p);
            }
            Err(e) => return Err(HostFsError::from_errno(&full, e)),
        };
        if !target.node.is_dir() {
            self.permit(&target.node, crate::cred::Want::WRITE)
                .map_err(|e| HostFsError::from_errno(&target.path, e))?;
        }
        match &target.node {
            n if n.is_dir() => return Err(HostFsError::IsADirectory(target.path)),
            Node::TmpFile(ino) => self
                .tmp
                .replace(*ino, data, t)
                .map_err(|e| HostFsError::from_errno(&target.path, e))?,
            Node::Image(m) if m.file_type() == S_IFREG => {
                // Replaces the image file: its old bytes need no copy-up.
                let ino = self
                    .tmp
                    .new_file(m.mode & 0o7777, data, t)
                    .map_err(|e| HostFsError::from_errno(&target.path, e))?;
                if let Err(e) = self.tmp.set(target.path.clone(), Entry::File(ino)) {
                    self.tmp.unlink_inode(ino);
                    return Err(HostFsError::from_errno(&target.path, e));
                }
                self.tmp.set_owner(ino, self.tmp.owner(m.ino));
            }
            Node::Synth(Synth::Device(_)) | Node::Synth(_) | Node::Image(_) => {
                return Err(HostFsError::Denied(target.path, "not a regular file"))
            }
            Node::TmpDir { .. } | Node::TmpSymlink { .. } => {
                return Err(HostFsError::Denied(target.path, "not a regular file"))
            }
        }
        self.notify(&target.path, FsEventKind::Write);
        self.host_stat(&target.path)
    }

    /// Rename `from` to `to` (creating `to`'s parent directories);
    /// returns what `to` now names.
    pub fn host_rename(&mut self, from: &str, to: &str) -> Result<HostEntry, HostFsError> {
        let old = self.host_resolve(from, false)?;
        check(to)?;
        if to.is_empty() {
            return Err(HostFsError::Invalid(to.into(), "empty destination"));
        }
        let full = if to.starts_with('/') {
            to.to_string()
        } else {
            join(HOME, to)
        };
        self.host_mkdir_p(parent(full.trim_end_matches('/')))?;
        let (dir, name) = self
            .resolve_parent("/", &full, &HostView)
            .map_err(|e| HostFsError::from_errno(&full, e))?;
        if name == "." || name == ".." {
            return Err(HostFsError::Invalid(full, "not a name"));
        }
        let new_path = join(&dir.path, &name);
        let replaced = self.lookup(&new_path, &HostView);
        self.rename(&old, &new_path, replaced.as_ref(), now())
            .map_err(|e| HostFsError::from_errno(&new_path, e))?;
        self.host_stat(&new_path)
    }

    /// Remove a file, a symlink or a directory with everything in it.
    pub fn host_remove(&mut self, path: &str) -> Result<(), HostFsError> {
        let l = self.host_resolve(path, false)?;
        if l.path == "/" || synthetic::covers(&l.path) {
            return Err(HostFsError::Denied(l.path, "not removable"));
        }
        self.remove_tree(&l)
    }

    fn remove_tree(&mut self, l: &Lookup) -> Result<(), HostFsError> {
        if let Some(dir) = self.lookup(parent(&l.path), &HostView) {
            self.may_remove(&dir, &l.node)
                .map_err(|e| HostFsError::from_errno(&l.path, e))?;
        }
        if l.node.is_dir() {
            let children = self
                .list(&l.path, &l.node, &HostView)
                .map_err(|e| HostFsError::from_errno(&l.path, e))?;
            for c in children {
                let p = join(&l.path, &c.name);
                if let Some(node) = self.lookup(&p, &HostView) {
                    self.remove_tree(&Lookup { path: p, node })?;
                }
            }
        }
        self.remove(&l.path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::vfs::{FsEvent, Image, WatchSink};
    use std::sync::Mutex;

    fn vfs(limit: u64) -> (tempfile::TempDir, Vfs) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("home")).unwrap();
        std::fs::write(r.join("etc/passwd"), "sandbox\n").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("home/link")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", r.join("home/rel")).unwrap();
        let img = Arc::new(Image::new(r).unwrap());
        let mut v = Vfs::new(img, limit);
        v.host_mkdir_p(HOME).unwrap();
        (d, v)
    }

    #[test]
    fn write_read_stat_list_rename_remove() {
        let (_d, mut v) = vfs(1 << 20);
        let e = v.host_write("a/b.txt", b"hello".to_vec()).unwrap();
        assert_eq!(e.path, "/home/user/a/b.txt");
        assert_eq!(
            (e.kind, e.size, e.name.as_str()),
            (HostKind::File, 5, "b.txt")
        );
        assert_eq!(&v.host_read("/home/user/a/b.txt").unwrap()[..], b"hello");
        v.host_write("a/b.txt", b"bye".to_vec()).unwrap();
        assert_eq!(&v.host_read("a/b.txt").unwrap()[..], b"bye");
        let names: Vec<String> = v
            .host_list("", 2)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, ["/home/user/a", "/home/user/a/b.txt"]);
        assert_eq!(v.host_list("", 1).unwrap().len(), 1);
        let r = v.host_rename("a/b.txt", "/tmp/x/c.txt").unwrap();
        assert_eq!(r.path, "/tmp/x/c.txt");
        assert_eq!(
            v.host_read("a/b.txt").unwrap_err(),
            HostFsError::NotFound("a/b.txt".into())
        );
        v.host_remove("/tmp/x").unwrap();
        assert!(matches!(
            v.host_stat("/tmp/x/c.txt"),
            Err(HostFsError::NotFound(_))
        ));
        assert!(!v.host_mkdir_p("/home/user").unwrap());
        assert!(v.host_mkdir_p("/home/user/new/deep").unwrap());
    }

    #[test]
    fn errors_are_the_clients() {
        let (_d, mut v) = vfs(1 << 20);
        assert_eq!(
            v.host_read("/home").unwrap_err(),
            HostFsError::IsADirectory("/home".into())
        );
        assert!(matches!(
            v.host_read("/nope"),
            Err(HostFsError::NotFound(_))
        ));
        v.host_write("f", b"x".to_vec()).unwrap();
        assert!(matches!(
            v.host_write("f/g", b"x".to_vec()),
            Err(HostFsError::NotADirectory(_))
        ));
        assert!(matches!(
            v.host_write("/proc/x", b"x".to_vec()),
            Err(HostFsError::Denied(..))
        ));
        assert!(matches!(v.host_remove("/"), Err(HostFsError::Denied(..))));
        assert!(matches!(v.host_read("a\0b"), Err(HostFsError::Invalid(..))));
    }

    #[test]
    fn dotdot_and_symlinks_stay_inside() {
        let (_d, mut v) = vfs(1 << 20);
        for p in [
            "../../../../etc/passwd",
            "/../../etc/passwd",
            "/home/link/passwd",
            "/home/rel/passwd",
        ] {
            assert_eq!(&v.host_read(p).unwrap()[..], b"sandbox\n", "{p}");
        }
        let e = v.host_write("../../../../../x", b"in".to_vec()).unwrap();
        assert_eq!(e.path, "/x");
        let e = v.host_write("/home/rel/new", b"in".to_vec()).unwrap();
        assert_eq!(e.path, "/etc/new");
        let s = v.host_stat("/home/link").unwrap();
        assert_eq!(s.kind, HostKind::Symlink);
        assert_eq!(s.symlink_target.as_deref(), Some("/etc"));
    }

    #[test]
    fn uploads_are_charged_to_the_disk_limit() {
        let (_d, mut v) = vfs(64 << 10);
        assert_eq!(
            v.host_write("big", vec![0u8; 65 << 10]).unwrap_err(),
            HostFsError::NoSpace
        );
        assert!(matches!(v.host_stat("big"), Err(HostFsError::NotFound(_))));
        v.host_write("small", vec![1u8; 32 << 10]).unwrap();
        assert_eq!(
            v.host_write("small", vec![0u8; 65 << 10]).unwrap_err(),
            HostFsError::NoSpace
        );
        assert_eq!(v.host_read("small").unwrap().len(), 32 << 10);
        v.host_remove("small").unwrap();
        v.host_write("again", vec![1u8; 60 << 10]).unwrap();
    }

    #[test]
    fn changes_reach_watchers() {
        #[derive(Default)]
        struct Log(Mutex<Vec<(FsEventKind, String)>>);
        impl WatchSink for Log {
            fn deliver(&self, e: &FsEvent, name: &str) -> bool {
                self.0.lock().unwrap().push((e.kind, name.to_string()));
                true
            }
        }
        let (_d, mut v) = vfs(1 << 20);
        let log = Arc::new(Log::default());
        v.watches.add(HOME.into(), false, log.clone());
        v.host_write("a.txt", b"1".to_vec()).unwrap();
        v.host_write("a.txt", b"2".to_vec()).unwrap();
        v.host_rename("a.txt", "b.txt").unwrap();
        v.host_mkdir_p("d/e").unwrap();
        v.host_remove("b.txt").unwrap();
        use FsEventKind::*;
        let got = log.0.lock().unwrap().clone();
        let want: Vec<(FsEventKind, String)> = [
            (Create, "a.txt"),
            (Write, "a.txt"),
            (Write, "a.txt"),
            (Rename, "a.txt"),
            // envd reports the new name as a Create.
            (MovedTo, "b.txt"),
            (Create, "d"),
            (Remove, "b.txt"),
        ]
        .into_iter()
        .map(|(k, n)| (k, n.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
