//! The image's Python: its version, pip wheels, and precompiled bytecode.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::IoContext;
use crate::rootfs::resolve_in_root;
use crate::ImageError;

const WHY_PIP: &str = "--pip packages are installed with the host's pip \
                       (`apt-get install python3-pip`, or `python3 -m ensurepip`)";

/// The image's `python3` version as (major, minor), from
/// `usr/bin/python3 -> python3.X`.
pub(crate) fn image_version(root: &Path) -> Option<(u32, u32)> {
    let bin = root.join("usr/bin");
    if let Ok(target) = std::fs::read_link(bin.join("python3")) {
        if let Some(v) = target
            .file_name()
            .and_then(|n| parse_version(&n.to_string_lossy()))
        {
            return Some(v);
        }
    }
    // No symlink: the newest python3.X binary.
    std::fs::read_dir(&bin)
        .ok()?
        .flatten()
        .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
        .max()
}

fn parse_version(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("python")?;
    let (major, minor) = rest.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A Python interpreter to run on the host: a program and leading arguments.
#[derive(Debug, Clone)]
pub(crate) struct Interpreter {
    program: PathBuf,
    prefix_args: Vec<String>,
    description: String,
}

impl Interpreter {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix_args);
        c
    }

    fn host(name: &str) -> Interpreter {
        Interpreter {
            program: PathBuf::from(name),
            prefix_args: Vec::new(),
            description: format!("host {name}"),
        }
    }

    /// (major, minor) if it runs.
    fn version(&self) -> Option<(u32, u32)> {
        let mut c = self.command();
        c.args([
            "-I",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ]);
        let out = cmd::output(&mut c, "").ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (a, b) = text.trim().split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }

    fn has_pip(&self) -> bool {
        let mut c = self.command();
        c.args(["-I", "-m", "pip", "--version"]);
        cmd::output(&mut c, "").is_ok()
    }
}

/// The image's own interpreter run on the host through the image's dynamic
/// loader (the image's packages come from the host's distribution, so they
/// run here).
fn image_interpreter(root: &Path, (major, minor): (u32, u32)) -> Option<Interpreter> {
    let ld = resolve_in_root(root, Path::new("/lib64/ld-linux-x86-64.so.2")).ok()?;
    let python = root.join(format!("usr/bin/python{major}.{minor}"));
    if !python.is_file() {
        return None;
    }
    let multiarch = ld.parent()?.to_path_buf();
    let lib_path = format!("{}:{}", multiarch.display(), root.join("usr/lib").display());
    Some(Interpreter {
        program: ld,
        prefix_args: vec![
            "--library-path".into(),
            lib_path,
            "--argv0".into(),
            python.display().to_string(),
            python.display().to_string(),
        ],
        description: format!("the image's python{major}.{minor}"),
    })
}

/// Host interpreters of the image's version: `python3.X`, then `python3`,
/// then the image's own.
fn matching_interpreters(root: &Path, version: (u32, u32)) -> Vec<Interpreter> {
    let (major, minor) = version;
    let mut v: Vec<Interpreter> = [format!("python{major}.{minor}"), format!("python{major}")]
        .iter()
        .filter(|n| cmd::on_path(n))
        .map(|n| Interpreter::host(n))
        .filter(|i| i.version() == Some(version))
        .collect();
    if let Some(i) = image_interpreter(root, version) {
        if i.version() == Some(version) {
            v.push(i);
        }
    }
    v
}

/// Regex-escapes a path for compileall's `-x`.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Precompiles the standard library and dist-packages into `__pycache__`
/// with an interpreter of the image's version, recording the image paths
/// (`/usr/lib/...`) in the code objects. Timestamp-checked pycs: valid as
/// long as the sources keep their mtime and size, which nothing changes
/// after this. Skips (with a warning) when no matching interpreter exists.
pub(crate) fn compile(root: &Path, version: (u32, u32)) -> Result<(), ImageError> {
    let (major, minor) = version;
    let dirs: Vec<PathBuf> = [
        format!("usr/lib/python{major}.{minor}"),
        format!("usr/lib/python{major}/dist-packages"),
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|d| d.is_dir())
    .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let Some(python) = matching_interpreters(root, version).into_iter().next() else {
        tracing::warn!(
            "no python{major}.{minor} on the host to precompile the image's bytecode; \
             the sandbox will compile modules at import time"
        );
        return Ok(());
    };
    let root_str = root.display().to_string();
    let mut c = python.command();
    c.args(["-I", "-m", "compileall", "-q", "-j0"])
        .args(["--invalidation-mode", "timestamp"])
        .args(["-s", &root_str, "-p", "/"])
        // Third-party test suites are rarely imported: leave them out.
        // (CPython's own `test` package, from libpython3.X-testsuite, is
        // compiled.)
        .arg("-x")
        .arg(format!(
            "^{}/usr/lib/python{major}/dist-packages/.*/tests?/",
            regex_escape(&root_str)
        ))
        .args(&dirs);
    let out = cmd::output_any(&mut c, "")?;
    if !out.status.success() {
        // Some files may not compile (e.g. test data in old syntax); the
        // rest are written.
        tracing::warn!(
            "compileall with {} reported errors ({}): {}",
            python.description,
            out.status,
            cmd::tail(&String::from_utf8_lossy(&out.stdout), 5)
        );
    }
    tracing::debug!("compiled bytecode with {}", python.description);
    Ok(())
}

/// Normalized distribution name (PEP 503).
fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The distributions Debian packages put in `dist-packages`: normalized
/// name -> version, from their `*.egg-info` / `*.dist-info` entries.
pub(crate) fn provided_distributions(site: &Path) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let Ok(rd) = std::fs::read_dir(site) else {
        return m;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix(".egg-info")
            .or_else(|| name.strip_suffix(".dist-info"))
        else {
            continue;
        };
        let mut parts = stem.split('-');
        if let (Some(n), Some(v)) = (parts.next(), parts.next()) {
            m.insert(normalize(n), v.to_string());
        }
    }
    m
}

/// A version pip will accept in a constraint (a plain PEP 440 subset).
fn simple_version(v: &str) -> bool {
    v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || matches!(c, '.' | '+' | '!'))
}

/// glibc's (major, minor) from the image's libc6 package version.
pub(crate) fn glibc_version(libc6_version: &str) -> Option<(u32, u32)> {
    let v = libc6_version
        .split_once(':')
        .map_or(libc6_version, |(_, v)| v);
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// pip's `--platform` tags for x86-64 Linux with this glibc.
pub(crate) fn platform_tags(glibc: (u32, u32)) -> Vec<String> {
    let mut v: Vec<String> = (17..=glibc.1.max(17))
        .rev()
        .map(|m| format!("manylinux_{}_{m}_x86_64", glibc.0))
        .collect();
    v.extend(
        [
            "manylinux2014_x86_64",
            "manylinux2010_x86_64",
            "manylinux1_x86_64",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

/// Installs `specs` (binary wheels and their dependencies) with the host's
/// pip into the image's `usr/lib/python3/dist-packages`. Distributions that
/// Debian packages already provide are pinned to Debian's version and not
/// installed again; a wheel's scripts go to `usr/local/bin`.
pub(crate) fn pip_install(
    root: &Path,
    staging: &Path,
    version: (u32, u32),
    glibc: (u32, u32),
    specs: &[String],
) -> Result<Vec<String>, ImageError> {
    let (major, minor) = version;
    let site = root.join(format!("usr/lib/python{major}/dist-packages"));
    std::fs::create_dir_all(&site).ctx(|| format!("creating {}", site.display()))?;
    let mut candidates = matching_interpreters(root, version);
    candidates.retain(|i| i.program.is_relative());
    for n in ["python3", "python"] {
        if cmd::on_path(n) {
            candidates.push(Interpreter::host(n));
        }
    }
    let python = candidates
        .into_iter()
        .find(Interpreter::has_pip)
        .ok_or_else(|| ImageError::ToolMissing {
            tool: "pip".into(),
            why: WHY_PIP,
        })?;

    let provided = provided_distributions(&site);
    let mut pins: Vec<String> = provided
        .iter()
        .filter(|(_, v)| simple_version(v))
        .map(|(n, v)| format!("{n}=={v}"))
        .collect();
    pins.sort();
    std::fs::create_dir_all(staging).ctx(|| format!("creating {}", staging.display()))?;
    let constraints = staging.join("debian-provided.txt");
    std::fs::write(&constraints, pins.join("\n") + "\n")
        .ctx(|| format!("writing {}", constraints.display()))?;
    let target = staging.join("target");

    let mut c = python.command();
    c.args(["-I", "-m", "pip", "install"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--no-warn-script-location",
            "--progress-bar",
            "off",
            "--no-compile",
            "--only-binary=:all:",
            "--implementation",
            "cp",
        ])
        .arg("--python-version")
        .arg(format!("{major}.{minor}"))
        .arg("--abi")
        .arg(format!("cp{major}{minor}"));
    for p in platform_tags(glibc) {
        c.arg("--platform").arg(p);
    }
    c.arg("--target")
        .arg(&target)
        .arg("--constraint")
        .arg(&constraints)
        .arg("--")
        .args(specs);
    c.env("PIP_ROOT_USER_ACTION", "ignore");
    match cmd::output(&mut c, WHY_PIP) {
        Ok(_) => {}
        Err(ImageError::Command { stderr, .. }) => {
            return Err(ImageError::Pip {
                specs: specs.join(" "),
                pins: if pins.is_empty() {
                    "none".into()
                } else {
                    pins.join(", ")
                },
                stderr,
            })
        }
        Err(e) => return Err(e),
    }

    // What the staged Debian-provided distributions own (from their RECORD),
    // to leave Debian's copies alone.
    let mut skip: HashSet<String> = HashSet::new();
    let mut skip_scripts: HashSet<String> = HashSet::new();
    let entries: Vec<String> = std::fs::read_dir(&target)
        .ctx(|| format!("reading {}", target.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for e in &entries {
        let Some(stem) = e.strip_suffix(".dist-info") else {
            continue;
        };
        let dist = normalize(stem.split('-').next().unwrap_or_default());
        if !provided.contains_key(&dist) {
            continue;
        }
        skip.insert(e.clone());
        let record = std::fs::read_to_string(target.join(e).join("RECORD")).unwrap_or_default();
        for line in record.lines() {
            let path = line.split(',').next().unwrap_or_default();
            if path.starts_with("../") {
                // A script (`../../bin/f2py`): Debian's package has its own.
                if let Some((_, script)) = path.rsplit_once("/bin/") {
                    skip_scripts.insert(script.to_string());
                }
            } else if let Some(top) = path.split('/').next() {
                skip.insert(top.to_string());
            }
        }
    }
    let mut installed = Vec::new();
    for e in entries {
        let from = target.join(&e);
        if e == "bin" {
            install_scripts(&from, &root.join("usr/local/bin"), &skip_scripts)?;
            continue;
        }
        let to = site.join(&e);
        if skip.contains(&e) || std::fs::symlink_metadata(&to).is_ok() {
            tracing::debug!("pip: keeping Debian's {e}");
            continue;
        }
        std::fs::rename(&from, &to).ctx(|| format!("moving {} into the image", from.display()))?;
        if let Some(stem) = e.strip_suffix(".dist-info") {
            installed.push(stem.to_string());
        }
    }
    installed.sort();
    Ok(installed)
}

/// Moves pip's scripts (but those in `skip`) into `dest`, pointing their `#!` at the image's python.
fn install_scripts(bin: &Path, dest: &Path, skip: &HashSet<String>) -> Result<(), ImageError> {
    std::fs::create_dir_all(dest).ctx(|| format!("creating {}", dest.display()))?;
    for e in std::fs::read_dir(bin)
        .ctx(|| format!("reading {}", bin.display()))?
        .flatten()
    {
        if skip.contains(&*e.file_name().to_string_lossy()) {
            continue;
        }
        let from = e.path();
        let to = dest.join(e.file_name());
        let text = std::fs::read(&from).ctx(|| format!("reading {}", from.display()))?;
        if text.starts_with(b"#!") {
            let end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
            if String::from_utf8_lossy(&text[..end]).contains("python") {
                let mut fixed = b"#!/usr/bin/python3".to_vec();
                fixed.extend_from_slice(&text[end..]);
                std::fs::write(&from, fixed).ctx(|| format!("writing {}", from.display()))?;
            }
        }
        std::fs::rename(&from, &to).ctx(|| format!("moving {}", from.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("python3.11"), Some((3, 11)));
        assert_eq!(parse_version("python3"), None);
        assert_eq!(parse_version("python3.11-config"), None);
        assert_eq!(glibc_version("2.36-9+deb12u14"), Some((2, 36)));
        assert_eq!(glibc_version("1:2.39-0ubuntu8"), Some((2, 39)));
        let tags = platform_tags((2, 36));
        assert_eq!(tags[0], "manylinux_2_36_x86_64");
        assert!(tags.contains(&"manylinux_2_17_x86_64".to_string()));
        assert!(tags.contains(&"manylinux2014_x86_64".to_string()));
        assert_eq!(normalize("Foo_Bar.baz"), "foo-bar-baz");
        assert!(simple_version("1.24.2"));
        assert!(!simple_version("1.24.2-1"));
        assert_eq!(regex_escape("/a.b/c d"), "\\/a\\.b\\/c\\ d");
    }

    #[test]
    fn finds_debian_provided_distributions() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("numpy-1.24.2.egg-info")).unwrap();
        std::fs::create_dir(t.path().join("numpy")).unwrap();
        std::fs::write(t.path().join("six-1.16.0.egg-info"), "").unwrap();
        std::fs::create_dir(t.path().join("Charset_Normalizer-3.0.1.dist-info")).unwrap();
        let m = provided_distributions(t.path());
        assert_eq!(m.len(), 3);
        assert_eq!(m["numpy"], "1.24.2");
        assert_eq!(m["six"], "1.16.0");
        assert_eq!(m["charset-normalizer"], "3.0.1");
    }
}
