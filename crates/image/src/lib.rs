//! Runtime images: root filesystems for zeroboot sandboxes, assembled from
//! Debian packages.
//!
//! A [`Recipe`] names Debian packages (and optionally pip wheels). [`ensure`]
//! resolves their dependencies with `apt-cache depends`, downloads the
//! `.deb` files with `apt-get download` (kept in `<cache>/debs/` for every
//! image), extracts them with `dpkg-deb -x`, and turns the result into a
//! tree that looks like an installed Debian system: merged `/usr`, the
//! alternatives symlinks, basic `/etc` files, `ld.so.cache`, and
//! precompiled Python bytecode. No maintainer script runs.
//!
//! The image lives at `<cache>/images/<name>-<hash16>/rootfs`, where the
//! hash covers the recipe and [`BUILDER_VERSION`]; a build is skipped when
//! that image is complete. Builds go to a temporary directory renamed into
//! place, under an exclusive lock per image name, so parallel builders wait
//! for each other.

#![forbid(unsafe_code)]

mod apt;
mod cmd;
mod error;
mod python;
mod recipe;
mod rootfs;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use error::ImageError;
pub use recipe::{Recipe, BUILDER_VERSION, BUILTINS};
pub use rootfs::{disk_usage, resolve_in_root};

use error::IoContext;

/// The file whose presence says an image is complete; written last.
pub const COMPLETE_MARKER: &str = "complete";
/// A description of the image: recipe and the exact packages.
pub const MANIFEST: &str = "manifest.txt";

/// Reports a build's progress. Every method has a no-op default.
pub trait Progress {
    /// A new step begins (`"downloading 47 packages"`).
    fn stage(&self, _name: &str) {}
    /// The current step has this many units of work (0: unknown).
    fn set_total(&self, _total: u64) {}
    /// `n` more units of the current step are done.
    fn inc(&self, _n: u64) {}
    /// A detail of the current step (a package name, a line of output).
    fn message(&self, _msg: &str) {}
    /// The current step (or the whole build) is over.
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// The cache directory: `$ZEROBOOT_CACHE`, else `$XDG_CACHE_HOME/zeroboot`,
/// else `~/.cache/zeroboot`.
pub fn default_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("ZEROBOOT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME").filter(|d| Path::new(d).is_absolute()) {
        return PathBuf::from(d).join("zeroboot");
    }
    let home = var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("zeroboot")
}

/// The directory of `recipe`'s image (its `rootfs`, marker and manifest),
/// whether or not it is built.
pub fn image_dir(recipe: &Recipe, cache: &Path) -> PathBuf {
    cache.join("images").join(recipe.dir_name())
}

fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).is_file() && dir.join("rootfs").is_dir()
}

/// The root filesystem of `recipe`'s image if it is built and complete.
pub fn find(recipe: &Recipe, cache: &Path) -> Option<PathBuf> {
    let dir = image_dir(recipe, cache);
    is_complete(&dir).then(|| dir.join("rootfs"))
}

/// The root filesystem of `recipe`'s image, building it first if needed.
pub fn ensure(
    recipe: &Recipe,
    cache: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, ImageError> {
    if let Some(root) = find(recipe, cache) {
        return Ok(root);
    }
    recipe.validate()?;
    let images = cache.join("images");
    std::fs::create_dir_all(&images).ctx(|| format!("creating {}", images.display()))?;
    let _lock = Lock::acquire(&images.join(format!("{}.lock", recipe.name)), || {
        progress.stage(&format!("waiting for another build of {}", recipe.name));
    })?;
    // Someone else may have built it while we waited.
    if let Some(root) = find(recipe, cache) {
        progress.finish();
        return Ok(root);
    }
    remove_stale_temporaries(&images, &recipe.name);
    let dir = image_dir(recipe, cache);
    let hash = recipe.hash();
    let tmp = images.join(format!(
        ".tmp-{}-{}-{}",
        recipe.name,
        &hash[..16],
        std::process::id()
    ));
    let started = Instant::now();
    let result = build(recipe, cache, &tmp, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::symlink_metadata(&dir).is_ok() {
        // An incomplete image (no marker): replace it.
        std::fs::remove_dir_all(&dir).ctx(|| format!("removing incomplete {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).ctx(|| format!("renaming {} into place", tmp.display()))?;
    tracing::info!(
        "built image {} in {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir.join("rootfs"))
}

/// Builds `recipe` into `tmp` (`tmp/rootfs`, manifest, marker).
fn build(
    recipe: &Recipe,
    cache: &Path,
    tmp: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let root = tmp.join("rootfs");
    let control = tmp.join("control");
    std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;

    // 1. Packages: resolve and download, under the shared .deb cache's lock.
    let debs_dir = cache.join("debs");
    std::fs::create_dir_all(&debs_dir).ctx(|| format!("creating {}", debs_dir.display()))?;
    let debs = {
        let _lock = Lock::acquire(&debs_dir.join(".lock"), || {
            progress.stage("waiting for another download");
        })?;
        apt::fetch(&apt_roots(recipe), &debs_dir, progress)?
    };

    // 2. Extract.
    progress.stage(&format!("extracting {}", packages(debs.len())));
    progress.set_total(debs.len() as u64);
    let mut alternatives = Vec::new();
    for (deb, path) in &debs {
        progress.message(&deb.package);
        let ctl = control.join(&deb.package);
        rootfs::extract(path, &root, &ctl)?;
        if let Ok(script) = std::fs::read_to_string(ctl.join("postinst")) {
            alternatives.extend(rootfs::parse_alternatives(&script));
        }
        progress.inc(1);
    }
    progress.finish();

    // 3. Make it look installed.
    progress.stage("configuring");
    rootfs::merge_usr(&root)?;
    rootfs::apply_alternatives(&root, &alternatives)?;
    rootfs::skeleton(&root)?;
    rootfs::ca_bundle(&root)?;
    let python_version = python::image_version(&root);
    if let Some((major, minor)) = python_version {
        let local = root.join(format!("usr/local/lib/python{major}.{minor}/dist-packages"));
        std::fs::create_dir_all(&local).ctx(|| format!("creating {}", local.display()))?;
    }
    rootfs::ldconfig(&root);

    // 4. pip wheels.
    let mut pip_installed = Vec::new();
    if !recipe.pip.is_empty() {
        let version = python_version.ok_or(ImageError::PipWithoutPython)?;
        progress.stage(&format!("installing pip {}", packages(recipe.pip.len())));
        let glibc = debs
            .iter()
            .find(|(d, _)| d.package == "libc6")
            .and_then(|(d, _)| python::glibc_version(&d.version))
            .unwrap_or((2, 17));
        pip_installed = python::pip_install(&root, &tmp.join("pip"), version, glibc, &recipe.pip)?;
        progress.finish();
    }

    // 5. Bytecode, after every source is in place.
    if let Some(version) = python_version {
        progress.stage("compiling python bytecode");
        python::compile(&root, version)?;
        progress.finish();
    }

    // 6. Manifest, then the marker, last.
    let mut manifest = format!(
        "name {}\nhash {}\nbuilder {}\n",
        recipe.name,
        recipe.hash(),
        BUILDER_VERSION
    );
    for p in recipe.apt_sorted() {
        manifest.push_str(&format!("apt {p}\n"));
    }
    for p in &recipe.pip {
        manifest.push_str(&format!("pip {p}\n"));
    }
    for (d, _) in &debs {
        manifest.push_str(&format!("deb {} {}\n", d.package, d.version));
    }
    for p in &pip_installed {
        manifest.push_str(&format!("wheel {p}\n"));
    }
    std::fs::write(tmp.join(MANIFEST), manifest).ctx(|| "writing the manifest".to_string())?;
    let _ = std::fs::remove_dir_all(&control);
    let _ = std::fs::remove_dir_all(tmp.join("pip"));
    std::fs::write(tmp.join(COMPLETE_MARKER), format!("{}\n", recipe.hash()))
        .ctx(|| "writing the completion marker".to_string())?;
    progress.finish();
    Ok(())
}

/// The Debian packages to install for `recipe`: its own, plus, when it has
/// pip packages, the libraries manylinux wheels may assume (PEP 599) that
/// a minimal python lacks.
fn apt_roots(recipe: &Recipe) -> Vec<String> {
    let mut v = recipe.apt_sorted();
    if !recipe.pip.is_empty() {
        v.extend(MANYLINUX_LIBS.iter().map(|s| s.to_string()));
        v.sort();
        v.dedup();
    }
    v
}

/// Debian packages of the libraries manylinux wheels link against without
/// bundling them (beyond libc6 and libgcc-s1, which python3 pulls in).
const MANYLINUX_LIBS: &[&str] = &["libstdc++6"];

/// `1 package`, `2 packages`.
pub(crate) fn packages(n: usize) -> String {
    if n == 1 {
        "1 package".to_string()
    } else {
        format!("{n} packages")
    }
}

/// Removes `.tmp-<name>-<hash>-<pid>` directories left by interrupted
/// builds of `name` (we hold `name`'s lock, so none is in use).
fn remove_stale_temporaries(images: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(images) else {
        return;
    };
    for e in rd.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(".tmp-") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (_pid, _hash, n) = (parts.next(), parts.next(), parts.next());
        if n == Some(name) {
            tracing::debug!("removing stale {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A built image found in the cache.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The recipe's name.
    pub name: String,
    /// The first 16 hex digits of the recipe hash.
    pub hash: String,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// Bytes on disk.
    pub size: u64,
}

/// The complete images in `cache`, sorted by name.
pub fn list(cache: &Path) -> Result<Vec<ImageInfo>, ImageError> {
    let images = cache.join("images");
    let rd = match std::fs::read_dir(&images) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ImageError::Io {
                context: format!("reading {}", images.display()),
                source: e,
            })
        }
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        let file_name = e.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') || !is_complete(&dir) {
            continue;
        }
        let Some((name, hash)) = file_name.rsplit_once('-') else {
            continue;
        };
        let rootfs = dir.join("rootfs");
        v.push(ImageInfo {
            name: name.to_string(),
            hash: hash.to_string(),
            size: disk_usage(&rootfs),
            rootfs,
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name).then(a.hash.cmp(&b.hash)));
    Ok(v)
}

/// An exclusive `flock` on a file, released when dropped (the file closes).
struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<Lock, ImageError> {
        use rustix::fs::{flock, FlockOperation};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx(|| format!("opening lock {}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => on_wait(),
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("locking {}", path.display()),
                    source: e.into(),
                })
            }
        }
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("locking {}", path.display()),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stale_temporaries_of_other_names_are_kept() {
        let t = tempfile::tempdir().unwrap();
        for d in [
            ".tmp-py-0123456789abcdef-1",
            ".tmp-py-foo-0123456789abcdef-2",
            ".tmp-python-0123456789abcdef-3",
        ] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        remove_stale_temporaries(t.path(), "py");
        let mut left: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".tmp-py-foo-0123456789abcdef-2",
                ".tmp-python-0123456789abcdef-3"
            ]
        );
    }

    #[test]
    fn find_and_list_need_the_marker() {
        let t = tempfile::tempdir().unwrap();
        let r = Recipe::named("my-img", &["busybox-static".into()], &[]).unwrap();
        let dir = image_dir(&r, t.path());
        std::fs::create_dir_all(dir.join("rootfs/usr")).unwrap();
        assert_eq!(find(&r, t.path()), None);
        assert!(list(t.path()).unwrap().is_empty());
        std::fs::write(dir.join(COMPLETE_MARKER), "x").unwrap();
        assert_eq!(find(&r, t.path()), Some(dir.join("rootfs")));
        let l = list(t.path()).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "my-img");
        assert_eq!(l[0].hash, &r.hash()[..16]);
    }

    #[test]
    fn plural() {
        assert_eq!(packages(1), "1 package");
        assert_eq!(packages(47), "47 packages");
    }
}
