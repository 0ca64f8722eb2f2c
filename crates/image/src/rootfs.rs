//! Turning extracted packages into a tree that looks like an installed
//! Debian system: merged `/usr`, the alternatives symlinks maintainer
//! scripts would have made, the basic `/etc` files and directories, and
//! `ld.so.cache`.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, WHY_APT};
use crate::error::IoContext;
use crate::ImageError;

/// Extracts `deb`'s files into `root` and its control files (maintainer
/// scripts) into `control`.
pub(crate) fn extract(deb: &Path, root: &Path, control: &Path) -> Result<(), ImageError> {
    cmd::output(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(root),
        WHY_APT,
    )?;
    std::fs::create_dir_all(control).ctx(|| format!("creating {}", control.display()))?;
    cmd::output(
        Command::new("dpkg-deb").arg("-e").arg(deb).arg(control),
        WHY_APT,
    )?;
    Ok(())
}

/// The top-level directories merged into `/usr` (Debian's usrmerge set).
const MERGED: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Of those, the ones a bookworm system always has as symlinks.
const ALWAYS_LINKED: &[&str] = &["bin", "sbin", "lib", "lib64"];

/// Moves whatever the packages put in `/bin`, `/sbin`, `/lib*` into `/usr`
/// and makes the top-level names relative symlinks (`bin -> usr/bin`).
/// Where both places have a file of the same name, `/usr`'s is kept.
pub(crate) fn merge_usr(root: &Path) -> Result<(), ImageError> {
    for d in MERGED {
        let top = root.join(d);
        let usr = root.join("usr").join(d);
        let meta = std::fs::symlink_metadata(&top);
        let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
        if is_dir {
            if !usr.exists() {
                std::fs::create_dir_all(&usr).ctx(|| format!("creating {}", usr.display()))?;
            }
            merge_dir(&top, &usr)?;
            std::fs::remove_dir(&top).ctx(|| format!("removing {}", top.display()))?;
        } else if meta.is_ok() {
            // Already a symlink (or something odd): leave it.
            continue;
        } else if !ALWAYS_LINKED.contains(d) {
            continue;
        }
        std::fs::create_dir_all(&usr).ctx(|| format!("creating {}", usr.display()))?;
        std::os::unix::fs::symlink(format!("usr/{d}"), &top)
            .ctx(|| format!("linking {}", top.display()))?;
    }
    Ok(())
}

fn merge_dir(src: &Path, dst: &Path) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(src).ctx(|| format!("reading {}", src.display()))?;
    for e in entries {
        let e = e.ctx(|| format!("reading {}", src.display()))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let from_meta =
            std::fs::symlink_metadata(&from).ctx(|| format!("inspecting {}", from.display()))?;
        match std::fs::symlink_metadata(&to) {
            Err(_) => {
                std::fs::rename(&from, &to).ctx(|| format!("moving {}", from.display()))?;
            }
            Ok(to_meta) if to_meta.is_dir() && from_meta.is_dir() => {
                merge_dir(&from, &to)?;
                std::fs::remove_dir(&from).ctx(|| format!("removing {}", from.display()))?;
            }
            Ok(_) => {
                tracing::debug!(
                    "merged /usr: {} exists in /usr too; keeping /usr's",
                    from.display()
                );
                if from_meta.is_dir() {
                    std::fs::remove_dir_all(&from)
                } else {
                    std::fs::remove_file(&from)
                }
                .ctx(|| format!("removing {}", from.display()))?;
            }
        }
    }
    Ok(())
}

/// One `update-alternatives --install` (or `--slave`) a maintainer script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    pub slaves: Vec<(String, String, String)>,
}

/// Finds the `update-alternatives --install LINK NAME PATH PRIORITY
/// [--slave LINK NAME PATH]...` commands of a maintainer script. Lines
/// whose paths use shell variables are skipped.
pub(crate) fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut v = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        if line.starts_with('#') || !line.contains("update-alternatives") {
            continue;
        }
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect();
        let Some(i) = words.iter().position(|w| w == "--install") else {
            continue;
        };
        let [link, name, path, prio] = match words.get(i + 1..i + 5) {
            Some([a, b, c, d]) => [a, b, c, d],
            _ => continue,
        };
        let Ok(priority) = prio.parse::<i64>() else {
            continue;
        };
        let literal = |s: &str| s.starts_with('/') && !s.contains(['$', '`']);
        if !literal(link) || !literal(path) || name.contains(['$', '`', '/']) {
            tracing::debug!("skipping alternative with shell words: {line}");
            continue;
        }
        let mut slaves = Vec::new();
        let mut j = i + 5;
        while let (Some("--slave"), Some([l, n, p])) =
            (words.get(j).map(String::as_str), words.get(j + 1..j + 4))
        {
            if literal(l) && literal(p) && !n.contains(['$', '`', '/']) {
                slaves.push((l.clone(), n.clone(), p.clone()));
            }
            j += 4;
        }
        v.push(Alternative {
            link: link.clone(),
            name: name.clone(),
            path: path.clone(),
            priority,
            slaves,
        });
    }
    v
}

/// Makes the symlinks `update-alternatives` would: for each alternative
/// name, the highest-priority candidate whose file exists wins:
/// `LINK -> /etc/alternatives/NAME -> PATH`, as on a Debian system.
pub(crate) fn apply_alternatives(root: &Path, alts: &[Alternative]) -> Result<(), ImageError> {
    let mut best: HashMap<&str, &Alternative> = HashMap::new();
    for a in alts {
        if resolve_in_root(root, Path::new(&a.path)).is_err() {
            continue;
        }
        match best.get(a.name.as_str()) {
            Some(b) if b.priority >= a.priority => {}
            _ => {
                best.insert(&a.name, a);
            }
        }
    }
    let mut names: Vec<&&str> = best.keys().collect();
    names.sort();
    for name in names {
        let a = best[*name];
        make_alternative(root, &a.link, &a.name, &a.path)?;
        for (l, n, p) in &a.slaves {
            if resolve_in_root(root, Path::new(p)).is_ok() {
                make_alternative(root, l, n, p)?;
            }
        }
    }
    Ok(())
}

fn make_alternative(root: &Path, link: &str, name: &str, path: &str) -> Result<(), ImageError> {
    let etc_alt = root.join("etc/alternatives");
    std::fs::create_dir_all(&etc_alt).ctx(|| format!("creating {}", etc_alt.display()))?;
    let alt_link = etc_alt.join(name);
    replace_symlink(path, &alt_link)?;
    let link_in_root = in_root(root, Path::new(link));
    if let Some(parent) = link_in_root.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    replace_symlink(&format!("/etc/alternatives/{name}"), &link_in_root)?;
    tracing::debug!("alternative {link} -> {path}");
    Ok(())
}

fn replace_symlink(target: &str, link: &Path) -> Result<(), ImageError> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).ctx(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link).ctx(|| format!("linking {}", link.display()))
}

/// `path` (absolute inside the image) as a host path under `root`, without
/// following any symlink and with `..` kept inside.
fn in_root(root: &Path, path: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                p.push(n);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                p.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    p
}

/// Resolves `path` as the sandbox would: inside `root`, following every
/// symlink (absolute ones relative to `root`, `..` never above it). Returns
/// the host path of what it names, which exists.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front_components(&mut pending, path);
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&cur);
        host.push(&c);
        let meta = std::fs::symlink_metadata(&host)?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(std::io::Error::other(format!(
                    "too many symlinks resolving {}",
                    path.display()
                )));
            }
            let target = std::fs::read_link(&host)?;
            if target.is_absolute() {
                cur.clear();
            }
            push_front_components(&mut pending, &target);
        } else {
            cur.push(c);
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&cur);
    Ok(host)
}

fn push_front_components(pending: &mut VecDeque<OsString>, path: &Path) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    for c in comps.into_iter().rev() {
        pending.push_front(c);
    }
}

/// Files a Debian system has that no package in a minimal set ships.
const ETC_FILES: &[(&str, &str)] = &[
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         user:x:1000:1000::/home/user:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    // `user` is E2B's unprivileged account (its envd's default user): the
    // sandbox's kernel gives it /home/user when a sandbox starts.
    ("etc/group", "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"),
    ("etc/hostname", "zeroboot\n"),
    (
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tzeroboot\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    (
        "etc/nsswitch.conf",
        "passwd:         files\ngroup:          files\nshadow:         files\n\
         hosts:          files dns\nnetworks:       files\nprotocols:      files\n\
         services:       files\nethers:         files\nrpc:            files\n",
    ),
    // As libc-bin ships it: ldconfig then also reads the multiarch
    // directories libc6 lists in /etc/ld.so.conf.d/.
    ("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
];

/// Directories of a Debian root, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("tmp", 0o1777),
    ("var/tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("home/user", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
    ("media", 0o755),
    ("etc", 0o755),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/log", 0o755),
    ("usr/local/bin", 0o755),
    ("usr/local/lib", 0o755),
    ("usr/local/share", 0o755),
];

/// Creates the directories and `/etc` files (where no package did).
pub(crate) fn skeleton(root: &Path) -> Result<(), ImageError> {
    for (d, mode) in DIRS {
        let p = root.join(d);
        std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", root.display()))?;
    for (f, text) in ETC_FILES {
        let p = root.join(f);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        }
    }
    // The host's os-release describes the image too: its packages come from
    // the host's apt sources.
    let os_release = root.join("usr/lib/os-release");
    if std::fs::symlink_metadata(&os_release).is_err()
        && std::fs::symlink_metadata(root.join("etc/os-release")).is_err()
    {
        for host in ["/usr/lib/os-release", "/etc/os-release"] {
            if let Ok(text) = std::fs::read(host) {
                std::fs::write(&os_release, text)
                    .ctx(|| format!("writing {}", os_release.display()))?;
                std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release"))
                    .ctx(|| "linking etc/os-release".to_string())?;
                break;
            }
        }
    }
    if std::fs::symlink_metadata(root.join("etc/debian_version")).is_err() {
        if let Ok(text) = std::fs::read("/etc/debian_version") {
            let p = root.join("etc/debian_version");
            std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        }
    }
    Ok(())
}

/// What `update-ca-certificates` (ca-certificates' postinst) makes: the
/// bundle `/etc/ssl/certs/ca-certificates.crt` of every certificate under
/// `/usr/share/ca-certificates`, which OpenSSL, Python's `ssl` and Debian's
/// node read. Only when the package is installed and no bundle exists.
pub(crate) fn ca_bundle(root: &Path) -> Result<(), ImageError> {
    let src = root.join("usr/share/ca-certificates");
    let bundle = root.join("etc/ssl/certs/ca-certificates.crt");
    if !src.is_dir() || std::fs::symlink_metadata(&bundle).is_ok() {
        return Ok(());
    }
    let mut certs = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .ctx(|| format!("reading {}", d.display()))?
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                certs.push(p);
            }
        }
    }
    certs.sort();
    let mut text = Vec::new();
    for c in &certs {
        let mut pem = std::fs::read(c).ctx(|| format!("reading {}", c.display()))?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        text.extend_from_slice(&pem);
    }
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&bundle, text).ctx(|| format!("writing {}", bundle.display()))?;
    tracing::debug!("{} certificates in {}", certs.len(), bundle.display());
    Ok(())
}

/// `ldconfig -r ROOT`: writes the image's `/etc/ld.so.cache`. Optional:
/// the dynamic loader searches the default directories without it.
pub(crate) fn ldconfig(root: &Path) {
    let program = ["/usr/sbin/ldconfig", "/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(PathBuf::from)
        .or_else(|| cmd::on_path("ldconfig").then(|| PathBuf::from("ldconfig")));
    let Some(program) = program else {
        tracing::debug!("no ldconfig on the host; the image has no ld.so.cache");
        return;
    };
    match cmd::output(Command::new(program).arg("-r").arg(root), "") {
        Ok(_) => {}
        Err(e) => tracing::debug!("ldconfig failed, the image has no ld.so.cache: {e}"),
    }
}

/// Bytes used on disk by the tree at `path` (like `du -s`), counting each
/// inode once.
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_update_alternatives() {
        let blas = "#!/bin/sh\nset -e\n\nupdate-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 \\\n                    libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 10\n\nexit 0\n";
        let v = parse_alternatives(blas);
        assert_eq!(
            v,
            [Alternative {
                link: "/usr/lib/x86_64-linux-gnu/libblas.so.3".into(),
                name: "libblas.so.3-x86_64-linux-gnu".into(),
                path: "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3".into(),
                priority: 10,
                slaves: vec![],
            }]
        );
        let tar = "\tupdate-alternatives --install /usr/sbin/rmt rmt /usr/sbin/rmt-tar 50 \\\n\t\t--slave /usr/share/man/man8/rmt.8.gz rmt.8.gz \\\n\t\t\t/usr/share/man/man8/rmt-tar.8.gz \n";
        let v = parse_alternatives(tar);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].priority, 50);
        assert_eq!(
            v[0].slaves,
            [(
                "/usr/share/man/man8/rmt.8.gz".to_string(),
                "rmt.8.gz".to_string(),
                "/usr/share/man/man8/rmt-tar.8.gz".to_string()
            )]
        );
        let vars =
            "update-alternatives --install /usr/lib/$DEB_HOST_MULTIARCH/x x /usr/lib/$M/y 1\n";
        assert!(parse_alternatives(vars).is_empty());
        assert!(parse_alternatives("update-alternatives --remove x /y\n").is_empty());
    }

    #[test]
    fn merges_usr_and_applies_alternatives() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu/blas")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("bin/busybox"), "bb").unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/ld.so"), "ld").unwrap();
        std::fs::write(root.join("usr/lib/x86_64-linux-gnu/blas/libblas.so.3"), "b").unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/ld.so", root.join("lib64/ld.so"))
            .unwrap();
        merge_usr(root).unwrap();
        for d in ["bin", "sbin", "lib", "lib64"] {
            assert_eq!(
                std::fs::read_link(root.join(d)).unwrap(),
                Path::new("usr").join(d)
            );
        }
        assert!(std::fs::symlink_metadata(root.join("lib32")).is_err());
        assert_eq!(std::fs::read(root.join("usr/bin/busybox")).unwrap(), b"bb");
        // Absolute symlinks resolve inside the root, through `lib -> usr/lib`.
        let ld = resolve_in_root(root, Path::new("/lib64/ld.so")).unwrap();
        assert_eq!(ld, root.join("usr/lib/x86_64-linux-gnu/ld.so"));
        assert!(resolve_in_root(root, Path::new("/../../bin/busybox")).is_ok());
        assert!(resolve_in_root(root, Path::new("/nope")).is_err());

        let alts = parse_alternatives(
            "update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 b /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 10\n\
             update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 b /usr/lib/x86_64-linux-gnu/missing/libblas.so.3 90\n",
        );
        apply_alternatives(root, &alts).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("usr/lib/x86_64-linux-gnu/libblas.so.3")).unwrap(),
            Path::new("/etc/alternatives/b")
        );
        let blas = resolve_in_root(root, Path::new("/lib/x86_64-linux-gnu/libblas.so.3")).unwrap();
        assert_eq!(std::fs::read(blas).unwrap(), b"b");

        skeleton(root).unwrap();
        let tmp = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert!(std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:"));
        assert!(std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .contains("\nuser:x:1000:1000::/home/user:/bin/bash\n"));
        assert!(root.join("home/user").is_dir());
        assert!(disk_usage(root) > 0);
    }
}
