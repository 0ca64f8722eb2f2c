//! Real image builds from the host's apt (needs apt, dpkg and the network,
//! or the packages in the cache).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use zeroboot_image::{ensure, find, list, resolve_in_root, NoProgress, Progress, Recipe};

fn have_apt() -> bool {
    let ok = std::process::Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: no apt-get on this host");
    }
    ok
}

/// Prints stages on stderr (visible with `--nocapture`).
struct Log(Instant);

impl Progress for Log {
    fn stage(&self, name: &str) {
        eprintln!("[{:6.2}s] {name}", self.0.elapsed().as_secs_f64());
    }
}

#[test]
fn busybox_image_builds_once_even_in_parallel() {
    if !have_apt() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let recipe = Recipe::named("tiny", &["busybox-static".to_string()], &[]).unwrap();
    assert_eq!(find(&recipe, cache.path()), None);

    // Two builders at once: one builds, the other waits and finds it done.
    let roots: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| ensure(&recipe, cache.path(), &Log(Instant::now()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let root = roots[0].as_ref().unwrap().clone();
    assert_eq!(roots[1].as_ref().unwrap(), &root);
    assert!(root.ends_with(format!("images/{}/rootfs", recipe.dir_name())));
    assert_eq!(find(&recipe, cache.path()), Some(root.clone()));
    let dir = root.parent().unwrap();
    assert!(dir.join("complete").is_file());
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    assert!(manifest.contains("deb busybox-static "), "{manifest}");
    // No temporary directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Merged /usr.
    for d in ["bin", "sbin", "lib", "lib64"] {
        assert_eq!(
            std::fs::read_link(root.join(d)).unwrap(),
            Path::new("usr").join(d),
            "{d}"
        );
    }
    let busybox = resolve_in_root(&root, Path::new("/bin/busybox")).unwrap();
    assert_eq!(busybox, root.join("usr/bin/busybox"));
    assert!(std::fs::metadata(&busybox).unwrap().len() > 100_000);

    // The Debian skeleton.
    let tmp = std::fs::metadata(root.join("tmp")).unwrap();
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert!(root.join("root").is_dir() && root.join("home").is_dir());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("root:x:0:0:") && passwd.contains("nobody:x:65534:"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "zeroboot\n"
    );
    for f in [
        "etc/group",
        "etc/hosts",
        "etc/nsswitch.conf",
        "etc/ld.so.conf",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }

    // A second ensure() is a no-op.
    let t = Instant::now();
    assert_eq!(ensure(&recipe, cache.path(), &NoProgress).unwrap(), root);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );

    let images = list(cache.path()).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "tiny");
    assert_eq!(images[0].rootfs, root);
    assert!(images[0].size > 100_000);

    // The .deb stays cached for other images.
    let debs: Vec<_> = std::fs::read_dir(cache.path().join("debs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .collect();
    assert_eq!(debs.len(), 1);
}

#[test]
fn unknown_packages_are_reported_by_name() {
    if !have_apt() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let recipe = Recipe::named(
        "bad",
        &[
            "busybox-static".to_string(),
            "no-such-package-zb".to_string(),
        ],
        &[],
    )
    .unwrap();
    let err = ensure(&recipe, cache.path(), &NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`no-such-package-zb`"), "{msg}");
    assert!(!msg.contains("busybox"), "{msg}");
    assert_eq!(find(&recipe, cache.path()), None);
}

fn check_python_image(root: &Path) {
    for p in [
        "/usr/bin/python3.11",
        "/usr/bin/python3",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/python3/dist-packages/numpy/__init__.py",
        "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
        "/usr/lib/python3/dist-packages/numpy/__pycache__/__init__.cpython-311.pyc",
        // The BLAS/LAPACK alternatives numpy links against.
        "/usr/lib/x86_64-linux-gnu/libblas.so.3",
        "/usr/lib/x86_64-linux-gnu/liblapack.so.3",
        "/etc/ld.so.cache",
    ] {
        let host = resolve_in_root(root, Path::new(p))
            .unwrap_or_else(|e| panic!("{p} missing from {}: {e}", root.display()));
        assert!(host.is_file(), "{p}");
        // Resolution stays inside the image.
        assert!(host.starts_with(root), "{p} -> {}", host.display());
    }
}

/// The builtin python image in the default cache (`~/.cache/zeroboot`),
/// where the rest of zeroboot finds it: `cargo test -p zeroboot-image
/// --test build -- --ignored --nocapture python_image`.
#[test]
#[ignore = "builds the python image in the default cache (~100 MB, a minute)"]
fn python_image_in_default_cache() {
    if !have_apt() {
        return;
    }
    let cache = zeroboot_image::default_cache_dir();
    let recipe = Recipe::builtin("python").unwrap();
    let t = Instant::now();
    let root = ensure(&recipe, &cache, &Log(Instant::now())).unwrap();
    eprintln!(
        "ensure: {:.2}s -> {}",
        t.elapsed().as_secs_f64(),
        root.display()
    );
    check_python_image(&root);
    let t = Instant::now();
    assert_eq!(ensure(&recipe, &cache, &NoProgress).unwrap(), root);
    eprintln!("second ensure: {:?}", t.elapsed());
}

/// A python image with a pip wheel, in a temporary cache.
#[test]
#[ignore = "downloads ~30 MB of packages and wheels"]
fn python_image_with_pip() {
    if !have_apt() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let recipe = Recipe::named("python", &[], &["requests".to_string()]).unwrap();
    let root = ensure(&recipe, cache.path(), &Log(Instant::now())).unwrap();
    check_python_image(&root);
    let site = root.join("usr/lib/python3/dist-packages");
    assert!(site.join("requests/__init__.py").is_file());
    assert!(site
        .join("requests/__pycache__/__init__.cpython-311.pyc")
        .is_file());
    // Debian's numpy is untouched.
    assert!(site.join("numpy-1.24.2.egg-info").exists() || site.join("numpy").is_dir());
}
