//! Sandboxes kept on disk (DESIGN.md §7): snapshots (`POST
//! /sandboxes/{id}/snapshots`, templates for new sandboxes) and sandboxes
//! paused to disk, which come back, with their ids, after a restart. Each
//! is a checkpoint directory (`zeroboot_kernel::checkpoint`) plus
//! `meta.json`, the server's description of it, written last: a directory
//! without one is an unfinished write and is removed at start.
//!
//! Layout under the state directory: `snapshots/<snapshotID>/` and
//! `paused/<sandboxID>/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const META: &str = "meta.json";

/// What the server keeps about a sandbox on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedMeta {
    /// The snapshot's id, or the paused sandbox's.
    pub id: String,
    /// The sandbox it was taken of.
    pub source: String,
    /// A snapshot's name (E2B's `names`), if it was given one.
    pub name: Option<String>,
    /// The template name its sandbox was created with, and its language.
    pub template: String,
    pub language: String,
    /// The API key (its index in the keys file) that owns it.
    pub owner: Option<usize>,
    pub metadata: BTreeMap<String, String>,
    pub secure: bool,
    /// A paused sandbox's envd access token (the same after resume).
    pub access_token: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// When its sandbox started (a paused one keeps it), Unix seconds.
    pub started_at: u64,
    pub auto_pause: bool,
    /// Whether that pause keeps the memory (false: files only, E2B's
    /// `autoPauseMemory`).
    #[serde(default = "yes")]
    pub auto_pause_memory: bool,
    /// Whether the checkpoint holds the memory and processes (false: the
    /// files only; it is made from a cold copy: `LiveSandbox::rebooted`).
    #[serde(default = "yes")]
    pub memory: bool,
    /// Bytes of memory the checkpoint holds (its pages that differ from
    /// the template).
    pub bytes: u64,
}

fn yes() -> bool {
    true
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O on {0}: {1}")]
    Io(String, std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.display().to_string(), e)
}

/// The state directory, and the snapshots in it.
pub struct Store {
    root: PathBuf,
    snapshots: Mutex<HashMap<String, SavedMeta>>,
}

impl Store {
    /// Open (and create) the state directory; finds the snapshots in it
    /// and removes unfinished writes.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let s = Store {
            root: root.to_path_buf(),
            snapshots: Mutex::new(HashMap::new()),
        };
        for kind in ["snapshots", "paused"] {
            let d = root.join(kind);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let found = s.scan("snapshots");
        *lock(&s.snapshots) = found.into_iter().map(|m| (m.id.clone(), m)).collect();
        Ok(s)
    }

    /// The descriptions in `root/kind`, dropping directories without one.
    fn scan(&self, kind: &str) -> Vec<SavedMeta> {
        let d = self.root.join(kind);
        let Ok(rd) = std::fs::read_dir(&d) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let path = ent.path();
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !path.is_dir() {
                // A temporary directory of a write that did not finish.
                if name.starts_with('.') {
                    let _ = std::fs::remove_dir_all(&path);
                }
                continue;
            }
            match Self::read_meta(&path) {
                Some(m) if m.id == name => out.push(m),
                _ => {
                    tracing::warn!(dir = %path.display(), "removing an unfinished or unreadable saved sandbox");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        out
    }

    /// The description of the checkpoint in `dir`, if it has a readable one.
    pub fn read_meta(dir: &Path) -> Option<SavedMeta> {
        let b = std::fs::read(dir.join(META)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    pub fn paused_dir(&self, id: &str) -> PathBuf {
        self.root.join("paused").join(id)
    }

    /// Write `meta` into `dir` (a finished checkpoint), atomically.
    pub fn write_meta(dir: &Path, meta: &SavedMeta) -> Result<(), StoreError> {
        let tmp = dir.join(".meta.json.tmp");
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| StoreError::Io(tmp.display().to_string(), e.into()))?;
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        let f = std::fs::File::open(&tmp).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        let p = dir.join(META);
        std::fs::rename(&tmp, &p).map_err(io(&p))
    }

    /// Make `to` a checkpoint with the files of the one in `from` and
    /// `meta` (a snapshot of a sandbox paused to disk), replacing what `to`
    /// held. The files are hard-linked where the file system allows (a
    /// checkpoint's files are never written again once made), else
    /// copied; nothing is left on failure.
    pub fn copy_checkpoint(from: &Path, to: &Path, meta: &SavedMeta) -> Result<(), StoreError> {
        let tmp = zeroboot_kernel::statefile::temp_dir_beside(to).map_err(io(to))?;
        let r = (|| {
            for ent in std::fs::read_dir(from).map_err(io(from))? {
                let ent = ent.map_err(io(from))?;
                let name = ent.file_name();
                if name == META || name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let (src, dst) = (ent.path(), tmp.join(&name));
                if std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst).map_err(io(&dst))?;
                }
            }
            Self::write_meta(&tmp, meta)?;
            let _ = std::fs::remove_dir_all(to);
            std::fs::rename(&tmp, to).map_err(io(to))
        })();
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }

    /// The sandboxes paused to disk (at start).
    pub fn paused(&self) -> Vec<SavedMeta> {
        self.scan("paused")
    }

    /// Record a snapshot whose directory is complete.
    pub fn add_snapshot(&self, meta: SavedMeta) {
        lock(&self.snapshots).insert(meta.id.clone(), meta);
    }

    /// `owner`'s snapshots, oldest first.
    pub fn snapshots(&self, owner: Option<usize>) -> Vec<SavedMeta> {
        let mut v: Vec<SavedMeta> = lock(&self.snapshots)
            .values()
            .filter(|m| m.owner == owner)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        v
    }

    /// `owner`'s snapshot with id or name `key`.
    pub fn find_snapshot(&self, key: &str, owner: Option<usize>) -> Option<SavedMeta> {
        let key = key.strip_suffix(":default").unwrap_or(key);
        let s = lock(&self.snapshots);
        s.get(key)
            .filter(|m| m.owner == owner)
            .or_else(|| {
                s.values()
                    .find(|m| m.owner == owner && m.name.as_deref() == Some(key))
            })
            .cloned()
    }

    /// Delete `owner`'s snapshot `key` (id or name); false if none.
    pub fn delete_snapshot(&self, key: &str, owner: Option<usize>) -> bool {
        let Some(m) = self.find_snapshot(key, owner) else {
            return false;
        };
        lock(&self.snapshots).remove(&m.id);
        let _ = std::fs::remove_dir_all(self.snapshot_dir(&m.id));
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(id: &str, owner: Option<usize>, name: Option<&str>) -> SavedMeta {
        SavedMeta {
            id: id.into(),
            source: "src".into(),
            name: name.map(Into::into),
            template: "python".into(),
            language: "python".into(),
            owner,
            metadata: BTreeMap::new(),
            secure: false,
            access_token: String::new(),
            memory_mb: 1,
            disk_mb: 1,
            started_at: 0,
            auto_pause: false,
            auto_pause_memory: true,
            memory: true,
            bytes: 0,
        }
    }

    #[test]
    fn snapshots_are_found_by_id_or_name_for_their_owner_only_and_survive_reopening() {
        let root = std::env::temp_dir().join(format!("zb-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let s = Store::open(&root).unwrap();
        for (id, owner, name) in [("a1", Some(0), Some("mine")), ("b2", Some(1), None)] {
            let d = s.snapshot_dir(id);
            std::fs::create_dir_all(&d).unwrap();
            let m = meta(id, owner, name);
            Store::write_meta(&d, &m).unwrap();
            s.add_snapshot(m);
        }
        // Unfinished writes: a temporary directory, one without meta.json.
        std::fs::create_dir_all(root.join("snapshots/.c3.tmp1")).unwrap();
        std::fs::create_dir_all(root.join("snapshots/d4")).unwrap();
        assert_eq!(s.find_snapshot("mine", Some(0)).unwrap().id, "a1");
        assert_eq!(s.find_snapshot("a1:default", Some(0)).unwrap().id, "a1");
        assert!(s.find_snapshot("a1", Some(1)).is_none());
        let s = Store::open(&root).unwrap();
        assert_eq!(s.snapshots(Some(0)).len(), 1);
        assert_eq!(s.snapshots(Some(1)).len(), 1);
        assert!(!root.join("snapshots/d4").exists());
        assert!(!root.join("snapshots/.c3.tmp1").exists());
        assert!(!s.delete_snapshot("a1", Some(1)));
        assert!(s.delete_snapshot("mine", Some(0)));
        assert!(!root.join("snapshots/a1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
