//! The one error type of image building.

use std::path::PathBuf;

/// Why an image could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A program the build needs is not on `PATH`.
    #[error("{tool} not found: {why}")]
    ToolMissing {
        /// The program, e.g. `apt-get`.
        tool: String,
        /// What it is needed for.
        why: &'static str,
    },
    /// A name that is neither a builtin recipe nor given any packages.
    #[error(
        "unknown image `{0}`: the builtin images are {builtins}; for any other name list its \
         Debian packages with --apt PKG",
        builtins = crate::recipe::BUILTINS.join(", ")
    )]
    UnknownRecipe(String),
    /// An image name that cannot be a directory name.
    #[error(
        "invalid image name `{0}`: use lower-case letters, digits, `.`, `_` and `-`, \
         starting with a letter or digit"
    )]
    InvalidName(String),
    /// A package name that is not a Debian (or pip) package name.
    #[error("invalid {kind} package name `{name}`")]
    InvalidPackage {
        /// `apt` or `pip`.
        kind: &'static str,
        /// The name as given.
        name: String,
    },
    /// Packages apt does not know.
    #[error(
        "apt knows no package named {0} (check the spelling; `apt-cache search WORD` finds names)"
    )]
    UnknownPackages(String),
    /// A requested package that only exists as a name other packages provide.
    #[error("`{0}` is a virtual package: name one of the packages that provide it (`apt-cache showpkg {0}` lists them)")]
    VirtualPackage(String),
    /// apt has no package lists and we may not fetch them.
    #[error(
        "apt's package lists are missing (no /var/lib/apt/lists/*Packages*): run `apt-get update` \
         as root, then build again"
    )]
    NoPackageLists,
    /// `--pip` packages need a python in the image.
    #[error("--pip needs python3 in the image: add --apt python3")]
    PipWithoutPython,
    /// pip could not install the wheels.
    #[error(
        "pip could not install {specs} as binary wheels for the image's python (packages from \
         Debian stay at Debian's versions: {pins}):\n{stderr}"
    )]
    Pip {
        /// The requested packages.
        specs: String,
        /// The Debian-provided distributions pinned, `name==version`.
        pins: String,
        /// The end of pip's stderr.
        stderr: String,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        /// The command line, for the message.
        command: String,
        /// How it ended, e.g. `exit status: 100`.
        status: String,
        /// The end of what it wrote on stderr.
        stderr: String,
    },
    /// A downloaded package is not what apt's metadata promised.
    #[error("{path}: checksum mismatch (expected sha256 {expected}, got {actual}); build again to download it afresh")]
    Checksum {
        /// The .deb file.
        path: PathBuf,
        /// What apt's metadata says.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// Output of a tool we could not understand.
    #[error("unexpected output from {tool}: {detail}")]
    Parse {
        /// The tool.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(":\n{s}")
    }
}

/// Attaches a context string to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            context: what(),
            source,
        })
    }
}
