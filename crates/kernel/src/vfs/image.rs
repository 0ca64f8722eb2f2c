//! The read-only runtime image: a directory on the host, indexed once.
//!
//! The index is built by walking the tree without following any symlink,
//! and every lookup, listing and readlink is answered from it, so no guest
//! path ever reaches a host path lookup. Opening a file goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the image root as
//! a second line: even a changed host tree cannot lead outside.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use zeroboot_abi::flags::*;

use crate::mm::FileContents;

/// Metadata of an image entry, as the sandbox sees it.
#[derive(Debug, Clone)]
pub struct ImageMeta {
    pub mode: u32,
    pub size: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub atime: i64,
    pub ctime: i64,
    pub blocks: u64,
}

impl ImageMeta {
    fn from(m: &Metadata) -> ImageMeta {
        ImageMeta {
            mode: m.mode(),
            size: m.size(),
            ino: m.ino(),
            nlink: m.nlink(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            atime: m.atime(),
            ctime: m.ctime(),
            blocks: m.blocks(),
        }
    }

    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
}

#[derive(Debug)]
struct IndexEntry {
    meta: ImageMeta,
    /// Symlink target.
    target: Option<String>,
    /// Directory entries: (name, mode, ino).
    children: Vec<(String, u32, u64)>,
}

/// The image directory and its index.
#[derive(Debug)]
pub struct Image {
    root: PathBuf,
    /// None only for the placeholder.
    root_fd: Option<OwnedFd>,
    index: HashMap<String, IndexEntry>,
    /// Bytes the image's files take on disk (each inode once): what
    /// statfs reports as used below the overlay's own use.
    used: u64,
}

impl Image {
    /// Index the tree at `root`. Names that are not UTF-8 are skipped.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Image> {
        let root = root.into().canonicalize()?;
        let meta = std::fs::symlink_metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "image root is not a directory",
            ));
        }
        let root_fd = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut index = HashMap::new();
        let mut todo = vec![("/".to_string(), root.clone(), meta)];
        while let Some((path, host, meta)) = todo.pop() {
            let mut children = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&host) {
                for e in rd.flatten() {
                    let Ok(name) = e.file_name().into_string() else {
                        continue;
                    };
                    // DirEntry::metadata does not follow symlinks.
                    let Ok(m) = e.metadata() else { continue };
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    children.push((name, m.mode(), m.ino()));
                    if m.is_dir() {
                        todo.push((child, e.path(), m));
                    } else {
                        let target = if m.file_type().is_symlink() {
                            std::fs::read_link(e.path())
                                .ok()
                                .and_then(|t| t.into_os_string().into_string().ok())
                        } else {
                            None
                        };
                        if m.file_type().is_symlink() && target.is_none() {
                            continue;
                        }
                        index.insert(
                            child,
                            IndexEntry {
                                meta: ImageMeta::from(&m),
                                target,
                                children: Vec::new(),
                            },
                        );
                    }
                }
            }
            children.sort();
            index.insert(
                path,
                IndexEntry {
                    meta: ImageMeta::from(&meta),
                    target: None,
                    children,
                },
            );
        }
        let mut inodes = std::collections::HashSet::new();
        let used = index
            .values()
            .filter(|e| inodes.insert(e.meta.ino))
            .map(|e| e.meta.blocks.saturating_mul(512))
            .sum();
        Ok(Image {
            root,
            root_fd: Some(root_fd),
            index,
            used,
        })
    }

    /// Bytes the image's files take on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// An image with nothing but an empty root directory.
    pub fn empty() -> io::Result<Image> {
        let root = PathBuf::from("/");
        let meta = std::fs::symlink_metadata(&root)?;
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut index = HashMap::new();
        let mut m = ImageMeta::from(&meta);
        m.nlink = 2;
        index.insert(
            "/".to_string(),
            IndexEntry {
                meta: m,
                target: None,
                children: Vec::new(),
            },
        );
        Ok(Image {
            root,
            root_fd: Some(root_fd),
            index,
            used: 0,
        })
    }

    /// An empty image with no directory behind it (stands in until a
    /// template's real image is attached).
    pub fn placeholder() -> Image {
        let mut index = HashMap::new();
        index.insert(
            "/".to_string(),
            IndexEntry {
                meta: ImageMeta {
                    mode: S_IFDIR | 0o755,
                    size: 0,
                    ino: 2,
                    nlink: 2,
                    mtime: 0,
                    mtime_nsec: 0,
                    atime: 0,
                    ctime: 0,
                    blocks: 0,
                },
                target: None,
                children: Vec::new(),
            },
        );
        Image {
            root: PathBuf::from("/"),
            root_fd: None,
            index,
            used: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of indexed entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// lstat of an in-sandbox path.
    pub fn lstat(&self, path: &str) -> Option<ImageMeta> {
        self.index.get(path).map(|e| e.meta.clone())
    }

    pub fn readlink(&self, path: &str) -> io::Result<String> {
        self.index
            .get(path)
            .and_then(|e| e.target.clone())
            .ok_or_else(|| io::Error::from_raw_os_error(22))
    }

    /// Entries of a directory: (name, mode, ino).
    pub fn list(&self, path: &str) -> io::Result<Vec<(String, u32, u64)>> {
        match self.index.get(path) {
            Some(e) if e.meta.file_type() == S_IFDIR => Ok(e.children.clone()),
            Some(_) => Err(io::Error::from_raw_os_error(20)),
            None => Err(io::Error::from_raw_os_error(2)),
        }
    }

    /// Open a regular file for reading.
    pub fn open(&self, path: &str) -> io::Result<Arc<HostFile>> {
        match self.index.get(path) {
            Some(e) if e.meta.file_type() == S_IFREG => {}
            Some(_) => return Err(io::Error::from_raw_os_error(21)),
            None => return Err(io::Error::from_raw_os_error(2)),
        }
        let rel = path.trim_start_matches('/');
        let fd = rustix::fs::openat2(
            self.root_fd
                .as_ref()
                .ok_or_else(|| io::Error::from_raw_os_error(2))?,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?;
        let file = File::from(fd);
        let size = file.metadata()?.len();
        Ok(Arc::new(HostFile {
            file,
            size,
            path: path.to_string(),
        }))
    }
}

/// An open image file, shared by every descriptor (and fork) that uses it;
/// reads are positional so sharing needs no locking.
#[derive(Debug)]
pub struct HostFile {
    file: File,
    size: u64,
    pub path: String,
}

impl HostFile {
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl FileContents for HostFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf[done..].fill(0);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn persisted(&self) -> crate::persist::PersistedFile {
        crate::persist::PersistedFile::Image(self.path.clone())
    }
}
