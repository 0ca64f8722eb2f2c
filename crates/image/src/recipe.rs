//! What an image contains, and the hash that names it.

use sha2::{Digest, Sha256};

use crate::ImageError;

/// Bump when the build procedure changes in a way that changes images:
/// every recipe then hashes differently and is built afresh.
pub const BUILDER_VERSION: u32 = 2;

/// The names [`Recipe::builtin`] knows.
pub const BUILTINS: &[&str] = &["python", "node", "code-interpreter"];

/// What goes into an image: Debian packages (with their dependencies) and
/// pip packages (binary wheels, with their dependencies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The image's name: `python`, `node`, or a user's.
    pub name: String,
    /// Debian packages, installed with their `Depends`/`Pre-Depends`.
    pub apt: Vec<String>,
    /// pip requirement specifiers (`requests`, `pandas==2.1.4`), in order.
    pub pip: Vec<String>,
}

impl Recipe {
    /// The builtin recipe called `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Recipe> {
        let apt: &[&str] = match name {
            // dash and coreutils: /bin/sh and the basic commands that
            // os.system and subprocess users expect. bash and the rest:
            // what E2B's `base` template (served by this one) has, since
            // its clients run every command as `/bin/bash -l -c CMD`, and
            // git, pip, venv, node and npm, which agents' commands use.
            "python" => &[
                "python3",
                "python3-numpy",
                "dash",
                "coreutils",
                "bash",
                "findutils",
                "grep",
                "sed",
                "gawk",
                "tar",
                "gzip",
                "debianutils",
                "git",
                "python3-pip",
                "python3-venv",
                "nodejs",
                "npm",
                // /etc/services and /etc/protocols: getaddrinfo and
                // getservbyname of a service name ("http").
                "netbase",
            ],
            // ca-certificates: Debian's node reads the system's CA bundle
            // at every start and warns on stderr when it is missing. dash
            // and coreutils: /bin/sh and the commands child_process.exec
            // and execSync run.
            "node" => &["nodejs", "ca-certificates", "dash", "coreutils"],
            // E2B's code-interpreter-v1: the python image's commands, and
            // the data stack its users import (all Debian packages), with
            // IPython for notebook semantics and matplotlib's inline
            // backend for charts.
            "code-interpreter" => &[
                "python3",
                "python3-numpy",
                "python3-pandas",
                "python3-matplotlib",
                "python3-matplotlib-inline",
                "python3-ipython",
                "python3-scipy",
                "python3-sklearn",
                "python3-seaborn",
                "python3-sympy",
                "python3-pil",
                "python3-requests",
                "python3-bs4",
                "python3-openpyxl",
                "dash",
                "coreutils",
                "bash",
                "findutils",
                "grep",
                "sed",
                "gawk",
                "tar",
                "gzip",
                "debianutils",
                "git",
                "python3-pip",
                "python3-venv",
                // JavaScript contexts (node's REPL machinery); the CA
                // bundle node reads at every start.
                "nodejs",
                "ca-certificates",
                "netbase",
            ],
            _ => return None,
        };
        Some(Recipe {
            name: name.to_string(),
            apt: apt.iter().map(|s| s.to_string()).collect(),
            pip: Vec::new(),
        })
    }

    /// Environment a runtime of this image starts with.
    pub fn default_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        if self.apt.iter().any(|p| p.starts_with("python3")) {
            // No .pyc writes into the read-only image; one BLAS thread.
            env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
            env.push(("OPENBLAS_NUM_THREADS".into(), "1".into()));
        }
        env
    }

    /// The recipe a user means by `name` plus extra packages: the builtin
    /// one extended by `apt` and `pip`, or, for other names, exactly `apt`
    /// and `pip` (at least one apt package is then required). Names and
    /// packages are validated.
    pub fn named(name: &str, apt: &[String], pip: &[String]) -> Result<Recipe, ImageError> {
        validate_name(name)?;
        let mut r = match Recipe::builtin(name) {
            Some(r) => r,
            None if apt.is_empty() => return Err(ImageError::UnknownRecipe(name.to_string())),
            None => Recipe {
                name: name.to_string(),
                apt: Vec::new(),
                pip: Vec::new(),
            },
        };
        r.apt.extend(apt.iter().cloned());
        r.pip.extend(pip.iter().cloned());
        r.validate()?;
        Ok(r)
    }

    /// Checks the name and every package name.
    pub fn validate(&self) -> Result<(), ImageError> {
        validate_name(&self.name)?;
        if self.apt.is_empty() {
            return Err(ImageError::UnknownRecipe(self.name.clone()));
        }
        for p in &self.apt {
            if !is_debian_package_name(p) {
                return Err(ImageError::InvalidPackage {
                    kind: "apt",
                    name: p.clone(),
                });
            }
        }
        for p in &self.pip {
            if p.trim().is_empty() || p.starts_with('-') || p.contains(['\n', '\0']) {
                return Err(ImageError::InvalidPackage {
                    kind: "pip",
                    name: p.clone(),
                });
            }
        }
        Ok(())
    }

    /// The apt packages, sorted and without duplicates.
    pub fn apt_sorted(&self) -> Vec<String> {
        let mut v = self.apt.clone();
        v.sort();
        v.dedup();
        v
    }

    /// The recipe's identity: sha256 over the builder version, the name, the
    /// sorted apt packages and the pip packages in order, as 64 hex digits.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("zeroboot-image builder {BUILDER_VERSION}\n"));
        h.update(format!("name {}\n", self.name));
        for p in self.apt_sorted() {
            h.update(format!("apt {p}\n"));
        }
        for p in &self.pip {
            h.update(format!("pip {p}\n"));
        }
        hex(&h.finalize())
    }

    /// The image's directory name: `<name>-<first 16 hex digits of the hash>`.
    pub fn dir_name(&self) -> String {
        let h = self.hash();
        format!("{}-{}", self.name, &h[..16])
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn validate_name(name: &str) -> Result<(), ImageError> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName(name.to_string()))
    }
}

/// Debian policy 5.6.1: lower-case letters, digits, `+`, `-`, `.`; at least
/// two characters; starts with a letter or digit. An `:arch` suffix is allowed.
pub(crate) fn is_debian_package_name(p: &str) -> bool {
    let (name, arch) = match p.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (p, None),
    };
    let name_ok = name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    name_ok && arch_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn r(name: &str, apt: &[&str], pip: &[&str]) -> Recipe {
        Recipe {
            name: name.into(),
            apt: apt.iter().map(|s| s.to_string()).collect(),
            pip: pip.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn builtins() {
        let py = Recipe::builtin("python").unwrap();
        assert_eq!(
            &py.apt[..4],
            ["python3", "python3-numpy", "dash", "coreutils"]
        );
        assert!(py.apt.iter().any(|p| p == "bash"));
        assert!(py.pip.is_empty());
        assert_eq!(
            Recipe::builtin("node").unwrap().apt,
            ["nodejs", "ca-certificates", "dash", "coreutils"]
        );
        assert!(Recipe::builtin("ruby").is_none());
    }

    #[test]
    fn hash_ignores_apt_order_and_duplicates() {
        let a = r("python", &["python3", "python3-numpy"], &[]);
        let b = r("python", &["python3-numpy", "python3", "python3"], &[]);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 64);
        assert!(a.hash().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hash_depends_on_name_packages_and_pip_order() {
        let base = r("python", &["python3"], &["a", "b"]);
        let h = base.hash();
        assert_ne!(h, r("python2", &["python3"], &["a", "b"]).hash());
        assert_ne!(h, r("python", &["python3", "zlib1g"], &["a", "b"]).hash());
        assert_ne!(h, r("python", &["python3"], &["b", "a"]).hash());
        assert_ne!(h, r("python", &["python3"], &["a"]).hash());
        // No ambiguity between an apt and a pip package of the same name.
        assert_ne!(
            r("x", &["aa", "bb"], &[]).hash(),
            r("x", &["aa"], &["bb"]).hash()
        );
    }

    #[test]
    fn hash_is_stable() {
        // Changing this value means every cached image is rebuilt: do it
        // by bumping BUILDER_VERSION, not by accident.
        let h = Recipe::builtin("python").unwrap().hash();
        let again = Recipe::builtin("python").unwrap().hash();
        assert_eq!(h, again);
        let dir = Recipe::builtin("python").unwrap().dir_name();
        assert_eq!(dir, format!("python-{}", &h[..16]));
    }

    #[test]
    fn named_extends_builtins_and_requires_packages_otherwise() {
        let r = Recipe::named("python", &["python3-scipy".into()], &["requests".into()]).unwrap();
        let mut want = Recipe::builtin("python").unwrap().apt;
        want.push("python3-scipy".into());
        assert_eq!(r.apt, want);
        assert_eq!(r.pip, ["requests"]);
        assert!(matches!(
            Recipe::named("ruby", &[], &[]),
            Err(ImageError::UnknownRecipe(_))
        ));
        let r = Recipe::named("tiny", &["busybox-static".into()], &[]).unwrap();
        assert_eq!(r.apt, ["busybox-static"]);
        assert!(matches!(
            Recipe::named("../x", &["a1".into()], &[]),
            Err(ImageError::InvalidName(_))
        ));
        assert!(matches!(
            Recipe::named("x", &["--option".into()], &[]),
            Err(ImageError::InvalidPackage { .. })
        ));
        assert!(matches!(
            Recipe::named("python", &[], &["--index-url=x".into()]),
            Err(ImageError::InvalidPackage { .. })
        ));
    }

    #[test]
    fn debian_names() {
        for ok in ["libstdc++6", "python3.11", "g++", "libc6:amd64", "0ad"] {
            assert!(is_debian_package_name(ok), "{ok}");
        }
        for bad in ["a", "Foo", "-x", "a b", "x/y", "pkg=1.0", "x:"] {
            assert!(!is_debian_package_name(bad), "{bad}");
        }
    }
}
