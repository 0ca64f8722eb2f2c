//! apt's side: which packages an image needs (from `apt-cache depends`) and
//! fetching their `.deb` files (with `apt-get download`) into a shared cache.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cmd::{self, WHY_APT};
use crate::error::IoContext;
use crate::{ImageError, Progress};

/// Where apt keeps its package lists.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// Options for apt-cache and apt-get download: resolve as on a system with
/// nothing installed, so that the host's installed packages (say, a
/// `nodejs` from a third-party repository that is no longer configured)
/// neither choose versions nor hide dependencies.
const AS_IF_NOTHING_INSTALLED: [&str; 2] = ["-o", "Dir::State::status=/dev/null"];

/// One alternative of a dependency: a package name, and the packages apt
/// reports as providing it (for a virtual name, the only way to satisfy it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alt {
    pub name: String,
    pub providers: Vec<String>,
}

/// The output of `apt-cache depends --recurse`, as a graph.
#[derive(Debug, Default)]
pub(crate) struct DependsGraph {
    /// Every real package printed, with its `Depends`/`PreDepends` groups;
    /// a group is satisfied by any one of its alternatives.
    pub real: HashMap<String, Vec<Vec<Alt>>>,
    /// Names printed as `<name>`: virtual, or without an installable version.
    pub virtual_names: HashSet<String>,
}

/// Drops an `:any` / `:amd64` qualifier and the `<...>` of virtual names.
fn clean(name: &str) -> (String, bool) {
    let name = name.trim();
    let (name, is_virtual) = match name.strip_prefix('<').and_then(|n| n.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (name, false),
    };
    let base = name.split_once(':').map_or(name, |(b, _)| b);
    (base.to_string(), is_virtual)
}

/// Parses `apt-cache depends` output. Its format:
///
/// ```text
/// python3-numpy                    <- a package (column 0)
///   Depends: python3               <- a dependency
///   Depends: <python3.11:any>      <- on a virtual name; its providers follow
///     python3.11
///  |Depends: libblas3              <- `|`: or the next line
///   Depends: <libblas.so.3>
///     libatlas3-base
///     libblas3
/// <python3:any>                    <- a virtual name (column 0)
/// ```
pub(crate) fn parse_depends(text: &str) -> DependsGraph {
    let mut g = DependsGraph::default();
    let mut current: Option<String> = None;
    // The group being read: its kind and alternatives so far.
    let mut group: Vec<Alt> = Vec::new();
    let mut group_kind = String::new();
    let finish_group =
        |g: &mut DependsGraph, current: &Option<String>, kind: &str, group: &mut Vec<Alt>| {
            if group.is_empty() {
                return;
            }
            let alts = std::mem::take(group);
            if let (Some(pkg), "Depends" | "PreDepends") = (current, kind) {
                g.real.entry(pkg.clone()).or_default().push(alts);
            }
        };
    let mut continues = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(provider) = line.strip_prefix("    ") {
            if let Some(last) = group.last_mut() {
                let (p, _) = clean(provider);
                if !last.providers.contains(&p) {
                    last.providers.push(p);
                }
            }
            continue;
        }
        let dep = line
            .strip_prefix("  ")
            .map(|d| (d, false))
            .or_else(|| line.strip_prefix(" |").map(|d| (d, true)));
        if let Some((dep, or_next)) = dep {
            let Some((kind, target)) = dep.split_once(':') else {
                continue;
            };
            if !continues {
                finish_group(&mut g, &current, &group_kind, &mut group);
            }
            group_kind = kind.trim().to_string();
            let (name, _) = clean(target);
            group.push(Alt {
                name,
                providers: Vec::new(),
            });
            continues = or_next;
            continue;
        }
        // A package (or virtual name) header at column 0.
        finish_group(&mut g, &current, &group_kind, &mut group);
        continues = false;
        let (name, is_virtual) = clean(line);
        if is_virtual {
            g.virtual_names.insert(name);
            current = None;
        } else {
            g.real.entry(name.clone()).or_default();
            current = Some(name);
        }
    }
    finish_group(&mut g, &current, &group_kind, &mut group);
    g
}

/// The set of packages to install for `roots`: for each dependency group
/// that nothing chosen so far satisfies, the first alternative apt can
/// install (a real package itself; for a virtual name the first package apt
/// lists as providing it). Sorted by name.
pub(crate) fn resolve(g: &DependsGraph, roots: &[String]) -> Result<Vec<String>, ImageError> {
    let mut unknown = Vec::new();
    for r in roots {
        let (name, _) = clean(r);
        if !g.real.contains_key(&name) {
            if g.virtual_names.contains(&name) {
                return Err(ImageError::VirtualPackage(name));
            }
            unknown.push(format!("`{name}`"));
        }
    }
    if !unknown.is_empty() {
        return Err(ImageError::UnknownPackages(unknown.join(", ")));
    }
    let mut chosen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for r in roots {
        let (name, _) = clean(r);
        if chosen.insert(name.clone()) {
            queue.push_back(name);
        }
    }
    while let Some(pkg) = queue.pop_front() {
        let Some(groups) = g.real.get(&pkg) else {
            continue;
        };
        for group in groups {
            let satisfied = group.iter().any(|a| {
                chosen.contains(&a.name) || a.providers.iter().any(|p| chosen.contains(p))
            });
            if satisfied {
                continue;
            }
            let pick = group.iter().find_map(|a| {
                if g.real.contains_key(&a.name) {
                    Some(a.name.clone())
                } else {
                    a.providers
                        .iter()
                        .find(|p| g.real.contains_key(*p))
                        .cloned()
                }
            });
            match pick {
                Some(p) => {
                    chosen.insert(p.clone());
                    queue.push_back(p);
                }
                None => {
                    let names: Vec<&str> = group.iter().map(|a| a.name.as_str()).collect();
                    tracing::warn!(
                        "{pkg}: dependency {} cannot be satisfied; continuing without it",
                        names.join(" | ")
                    );
                }
            }
        }
    }
    let mut v: Vec<String> = chosen.into_iter().collect();
    v.sort();
    Ok(v)
}

/// Whether apt has package lists to resolve from.
pub(crate) fn lists_present() -> bool {
    std::fs::read_dir(APT_LISTS)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false)
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `apt-get update`, which needs root.
pub(crate) fn update(progress: &dyn Progress) -> Result<(), ImageError> {
    if !is_root() {
        return Err(ImageError::NoPackageLists);
    }
    progress.stage("updating apt's package lists");
    let mut c = Command::new("apt-get");
    c.args(["update", "-q"]);
    cmd::stream_lines(&mut c, WHY_APT, |line| progress.message(line))
}

/// The dependency closure of `roots` according to apt.
pub(crate) fn closure(roots: &[String]) -> Result<Vec<String>, ImageError> {
    let mut c = Command::new("apt-cache");
    c.args(AS_IF_NOTHING_INSTALLED).args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
    ]);
    c.args(roots);
    let out = cmd::output_any(&mut c, WHY_APT)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let g = parse_depends(&text);
    if !out.status.success() && g.real.is_empty() {
        // apt-cache fails ("E: No packages found") when none is known.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No packages found") {
            let names: Vec<String> = roots.iter().map(|r| format!("`{r}`")).collect();
            return Err(ImageError::UnknownPackages(names.join(", ")));
        }
        return Err(ImageError::Command {
            command: cmd::cmdline(&c),
            status: out.status.to_string(),
            stderr: cmd::tail(&stderr, 20),
        });
    }
    resolve(&g, roots)
}

/// A package file as apt would download it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DebFile {
    pub package: String,
    pub version: String,
    pub file_name: String,
    pub size: u64,
    pub sha256: Option<String>,
}

/// Parses `apt-get download --print-uris` lines:
/// `'URL' python3_3.11.2-1+b1_amd64.deb 26300 SHA256:33f6...`.
pub(crate) fn parse_print_uris(text: &str) -> Result<Vec<DebFile>, ImageError> {
    let bad = |line: &str| ImageError::Parse {
        tool: "apt-get download --print-uris",
        detail: format!("cannot read line `{line}`"),
    };
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('\'') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (_url, file_name, size) = (f.next(), f.next(), f.next());
        let (Some(file_name), Some(size)) = (file_name, size) else {
            return Err(bad(line));
        };
        if file_name.contains('/') || !file_name.ends_with(".deb") {
            return Err(bad(line));
        }
        let size: u64 = size.parse().map_err(|_| bad(line))?;
        let sha256 = f
            .find_map(|h| h.strip_prefix("SHA256:"))
            .map(|h| h.to_ascii_lowercase());
        let mut parts = file_name.trim_end_matches(".deb").split('_');
        let package = parts.next().unwrap_or_default().to_string();
        let version = parts.next().unwrap_or_default().replace("%3a", ":");
        v.push(DebFile {
            package,
            version,
            file_name: file_name.to_string(),
            size,
            sha256,
        });
    }
    Ok(v)
}

fn print_uris(packages: &[String]) -> Result<Vec<DebFile>, ImageError> {
    let mut c = Command::new("apt-get");
    c.args(AS_IF_NOTHING_INSTALLED)
        .args(["download", "--print-uris", "-q"])
        .args(packages);
    let out = cmd::output(&mut c, WHY_APT)?;
    let debs = parse_print_uris(&String::from_utf8_lossy(&out.stdout))?;
    let have: HashSet<&str> = debs.iter().map(|d| d.package.as_str()).collect();
    let missing: Vec<&str> = packages
        .iter()
        .map(String::as_str)
        .filter(|p| !have.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(ImageError::Parse {
            tool: "apt-get download --print-uris",
            detail: format!("no download for {}", missing.join(", ")),
        });
    }
    Ok(debs)
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::recipe::hex(&h.finalize()))
}

/// Whether `path` is the complete, intact file `deb`.
fn is_intact(path: &Path, deb: &DebFile) -> Result<bool, ImageError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == deb.size => {}
        _ => return Ok(false),
    }
    match &deb.sha256 {
        Some(want) => Ok(&sha256_file(path)? == want),
        None => Ok(true),
    }
}

/// The uid of apt's download sandbox user `_apt`, if the system has one.
fn apt_sandbox_uid() -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != "_apt" {
            return None;
        }
        f.nth(1)?.parse().ok()
    })
}

/// Makes sure every package of `debs` is in `dir`, downloading those that
/// are not (all in one `apt-get download`), and returns their paths in order.
fn download(
    debs: &[DebFile],
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, ImageError> {
    let mut missing = Vec::new();
    for d in debs {
        let path = dir.join(&d.file_name);
        if !is_intact(&path, d)? {
            missing.push(d);
        }
    }
    progress.stage(&format!(
        "downloading {} ({} cached)",
        crate::packages(missing.len()),
        debs.len() - missing.len()
    ));
    progress.set_total(missing.len() as u64);
    if !missing.is_empty() {
        // apt-get writes into the current directory. Download into a
        // private folder and move only complete, verified files into the
        // cache. Root's apt drops privileges to `_apt` for downloads, which
        // must be able to write there.
        let incoming = dir.join(".incoming");
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)
                .ctx(|| format!("removing {}", incoming.display()))?;
        }
        std::fs::create_dir_all(&incoming).ctx(|| format!("creating {}", incoming.display()))?;
        if is_root() {
            if let Some(uid) = apt_sandbox_uid() {
                if let Err(e) = std::os::unix::fs::chown(&incoming, Some(uid), None) {
                    tracing::debug!("chown {} to _apt: {e}", incoming.display());
                }
            }
        }
        let mut c = Command::new("apt-get");
        c.current_dir(&incoming)
            .args(AS_IF_NOTHING_INSTALLED)
            .args(["download", "-q"]);
        c.args(missing.iter().map(|d| &d.package));
        cmd::stream_lines(&mut c, WHY_APT, |line| {
            // "Get:3 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9 [2759 kB]"
            if line.starts_with("Get:") {
                progress.inc(1);
                if let Some(pkg) = line.split_whitespace().nth(4) {
                    progress.message(pkg);
                }
            }
        })?;
        for d in &missing {
            let from = incoming.join(&d.file_name);
            let to = dir.join(&d.file_name);
            if let Some(want) = &d.sha256 {
                let got = sha256_file(&from)?;
                if &got != want {
                    return Err(ImageError::Checksum {
                        path: from,
                        expected: want.clone(),
                        actual: got,
                    });
                }
            }
            std::fs::rename(&from, &to)
                .ctx(|| format!("moving {} into the cache", from.display()))?;
        }
        let _ = std::fs::remove_dir_all(&incoming);
    }
    progress.finish();
    Ok(debs.iter().map(|d| dir.join(&d.file_name)).collect())
}

/// Resolves `roots` and makes sure all their `.deb` files are in
/// `debs_dir`. Runs `apt-get update` first when apt has no lists, and once
/// more (as root) when a download fails, as stale lists name files the
/// mirror no longer has.
pub(crate) fn fetch(
    roots: &[String],
    debs_dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<(DebFile, PathBuf)>, ImageError> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb"] {
        if !cmd::on_path(tool) {
            return Err(ImageError::ToolMissing {
                tool: tool.to_string(),
                why: WHY_APT,
            });
        }
    }
    let mut updated = false;
    if !lists_present() {
        update(progress)?;
        updated = true;
    }
    loop {
        progress.stage("resolving packages");
        let packages = closure(roots)?;
        let debs = print_uris(&packages)?;
        match download(&debs, debs_dir, progress) {
            Ok(paths) => return Ok(debs.into_iter().zip(paths).collect()),
            Err(e @ ImageError::Command { .. }) if !updated && is_root() => {
                tracing::warn!("{e}; updating apt's package lists and trying again");
                update(progress)?;
                updated = true;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SAMPLE: &str = include_str!("../testdata/apt-cache-depends-python3-numpy.txt");

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_groups_alternatives_and_providers() {
        let g = parse_depends(SAMPLE);
        let numpy = &g.real["python3-numpy"];
        // `|Depends: libblas3` + `Depends: <libblas.so.3>` is one group.
        let blas = numpy
            .iter()
            .find(|grp| grp[0].name == "libblas3")
            .expect("blas group");
        assert_eq!(blas.len(), 2);
        assert_eq!(blas[1].name, "libblas.so.3");
        assert!(blas[1]
            .providers
            .contains(&"libopenblas0-pthread".to_string()));
        assert_eq!(blas[1].providers[0], "libatlas3-base");
        // `<python3.11:any>` is the virtual name python3.11 with its provider.
        let any = numpy
            .iter()
            .find(|grp| grp[0].name == "python3.11")
            .expect("python3.11:any group");
        assert_eq!(any[0].providers, ["python3.11"]);
        assert!(g.virtual_names.contains("libblas.so.3"));
        assert!(g.virtual_names.contains("python3"));
        // PreDepends count, and packages without dependencies are present.
        assert_eq!(g.real["python3"][0][0].name, "python3-minimal");
        assert!(g.real["gcc-12-base"].is_empty());
        assert_eq!(g.real.len(), 64);
    }

    #[test]
    fn resolves_first_alternatives_only() {
        let g = parse_depends(SAMPLE);
        let v = resolve(&g, &s(&["python3", "python3-numpy"])).unwrap();
        for must in [
            "python3",
            "python3-numpy",
            "python3.11",
            "python3.11-minimal",
            "libpython3.11-stdlib",
            "libc6",
            "libblas3",
            "liblapack3",
            "libgfortran5",
            "media-types",
            "zlib1g",
        ] {
            assert!(v.contains(&must.to_string()), "{must} missing from {v:?}");
        }
        // Other BLAS providers and `mime-support` (second alternative to
        // media-types, which pulls in perl) are not installed.
        for not in [
            "libatlas3-base",
            "libopenblas0-pthread",
            "libblis4-openmp",
            "mime-support",
            "mailcap",
            "perl",
        ] {
            assert!(
                !v.contains(&not.to_string()),
                "{not} should not be in {v:?}"
            );
        }
        assert_eq!(v.len(), 47, "{v:?}");
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, v);
    }

    #[test]
    fn virtual_only_dependency_takes_first_provider() {
        let text = "a\n  Depends: <virt>\n    b\n    c\nb\nc\n<virt>\n";
        let g = parse_depends(text);
        assert_eq!(resolve(&g, &s(&["a"])).unwrap(), ["a", "b"]);
        // ... unless another provider is already chosen.
        assert_eq!(resolve(&g, &s(&["a", "c"])).unwrap(), ["a", "c"]);
    }

    #[test]
    fn ignores_non_dependency_kinds() {
        let text = "a\n  Depends: b\n |Suggests: x\n  Suggests: y\n  Conflicts: z\nb\nx\ny\nz\n";
        let g = parse_depends(text);
        assert_eq!(g.real["a"].len(), 1);
        assert_eq!(resolve(&g, &s(&["a"])).unwrap(), ["a", "b"]);
    }

    #[test]
    fn unknown_and_virtual_roots_are_errors() {
        let g = parse_depends(SAMPLE);
        match resolve(&g, &s(&["python3", "nosuchpkg"])) {
            Err(ImageError::UnknownPackages(m)) => assert!(m.contains("nosuchpkg")),
            other => panic!("{other:?}"),
        }
        let g = parse_depends("<awk>\n");
        assert!(matches!(
            resolve(&g, &s(&["awk"])),
            Err(ImageError::VirtualPackage(n)) if n == "awk"
        ));
    }

    #[test]
    fn parses_print_uris() {
        let text = "'http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9%2bdeb12u14_amd64.deb' libc6_2.36-9+deb12u14_amd64.deb 2759320 SHA256:BA4F88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf\n\
'http://x/pool/main/p/perl/perl-base_1%3a5.36_amd64.deb' perl-base_1%3a5.36_amd64.deb 10 MD5Sum:00\n";
        let v = parse_print_uris(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].package, "libc6");
        assert_eq!(v[0].version, "2.36-9+deb12u14");
        assert_eq!(v[0].size, 2759320);
        assert_eq!(
            v[0].sha256.as_deref(),
            Some("ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf")
        );
        assert_eq!(v[1].version, "1:5.36");
        assert_eq!(v[1].sha256, None);
        assert!(parse_print_uris("'u' ../evil.deb 1 SHA256:00\n").is_err());
    }
}
