//! Creating a template: boot the language's agent in a sandbox over its
//! runtime image and freeze it once it parks on the control channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroboot_kernel::fd::{FileKind, OpenFile};
use zeroboot_kernel::vfs::Image;
use zeroboot_kernel::{Limits, Outcome, Sandbox, SandboxConfig, Sink, Snapshot};

/// The runtimes zeroboot has agents for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Node,
    /// Python with IPython, numpy, pandas and matplotlib, and an agent
    /// that runs notebook cells in contexts (E2B's `code-interpreter-v1`).
    CodeInterpreter,
}

impl Language {
    /// Parse a user-facing name.
    pub fn parse(name: &str) -> Option<Language> {
        match name {
            "python" | "python3" => Some(Language::Python),
            "node" | "javascript" | "js" | "nodejs" => Some(Language::Node),
            "code-interpreter" | "code-interpreter-v1" => Some(Language::CodeInterpreter),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::CodeInterpreter => "code-interpreter",
        }
    }

    /// The image recipe the template boots from.
    pub fn recipe(self) -> zeroboot_image::Recipe {
        // The builtin recipes always exist.
        zeroboot_image::Recipe::builtin(self.name()).unwrap_or_else(|| zeroboot_image::Recipe {
            name: self.name().into(),
            apt: Vec::new(),
            pip: Vec::new(),
        })
    }

    fn agent(self) -> (&'static str, &'static str) {
        match self {
            Language::Python => (
                "/opt/zeroboot/agent.py",
                include_str!("../../../agents/python/agent.py"),
            ),
            Language::Node => (
                "/opt/zeroboot/agent.js",
                include_str!("../../../agents/node/agent.js"),
            ),
            Language::CodeInterpreter => (
                "/opt/zeroboot/code_interpreter.py",
                include_str!("../../../agents/code_interpreter/agent.py"),
            ),
        }
    }

    /// Every file the agent needs in the image: its script, and for the
    /// code interpreter the Python agent too, whose framing, reseeding and
    /// plain runs it imports rather than copies.
    fn agent_files(self) -> Vec<(&'static str, &'static str)> {
        let mut files = vec![self.agent()];
        if self == Language::CodeInterpreter {
            files.push(Language::Python.agent());
        }
        files
    }

    fn argv(self) -> Vec<String> {
        match self {
            Language::Python | Language::CodeInterpreter => {
                vec!["/usr/bin/python3".into(), self.agent().0.into()]
            }
            Language::Node => vec!["/usr/bin/node".into(), self.agent().0.into()],
        }
    }
}

/// Names the image a template runs on: its directory (which carries the
/// recipe's hash).
fn image_id(root: &Path) -> String {
    let dir = if root.file_name().is_some_and(|n| n == "rootfs") {
        root.parent().unwrap_or(root)
    } else {
        root
    };
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// FNV-1a, 64 bits: a stable hash for cache names.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Used forks kept for reuse per template, by default.
pub const DEFAULT_MAX_IDLE: usize = 16;

/// The sandbox's /etc/resolv.conf: the resolver the VMM serves on the
/// sandbox's loopback.
pub const RESOLV_CONF: &str = "# zeroboot: names are resolved by the VMM under the sandbox's network policy\nnameserver 127.0.0.53\noptions timeout:2 attempts:1\n";

/// The descriptor the agent's control channel has.
pub const CONTROL_FD: i32 = 3;

/// Errors of creating or loading a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read the runtime image at {0}: {1}")]
    Image(PathBuf, std::io::Error),
    #[error("cannot set up the template's sandbox: {0}")]
    Sandbox(#[from] zeroboot_kernel::SandboxError),
    #[error("the {0} agent did not start: {1}")]
    AgentFailed(&'static str, String),
    #[error(transparent)]
    Snapshot(#[from] zeroboot_kernel::SnapshotError),
    #[error(transparent)]
    File(#[from] zeroboot_kernel::snapshot::TemplateFileError),
}

/// Limits a template is created with (forks can only lower them).
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// Memory limit of every fork (bytes).
    pub memory: u64,
    /// Bytes the writable layer of a fork may hold.
    pub disk: u64,
    /// How long the agent may take to start.
    pub boot_timeout: Duration,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            memory: 2 << 30,
            disk: 256 << 20,
            boot_timeout: Duration::from_secs(120),
        }
    }
}

/// A parked runtime, ready to fork.
pub struct Template {
    pub language: Language,
    pub snapshot: Snapshot,
    pub image: Arc<Image>,
    /// How long creating it took.
    pub created_in: Duration,
    /// Used forks waiting to be reset for the next execution.
    pub(crate) idle: std::sync::Mutex<Vec<Sandbox>>,
    /// Fresh forks made ahead of time for live sandboxes (`refill_spares`),
    /// so that creating one does not wait for a new VM.
    pub(crate) spare: std::sync::Mutex<Vec<Sandbox>>,
    /// Most idle forks kept (0: every execution forks a fresh VM).
    pub max_idle: std::sync::atomic::AtomicUsize,
}

impl Template {
    /// Boot `language`'s agent over the image at `root` until it parks.
    pub fn create(
        language: Language,
        root: &Path,
        opts: &TemplateOptions,
    ) -> Result<Template, TemplateError> {
        let started = Instant::now();
        let image = Arc::new(Image::new(root).map_err(|e| TemplateError::Image(root.into(), e))?);
        let mut cfg = SandboxConfig::new(image.clone());
        cfg.limits = Limits {
            memory: opts.memory,
            disk: opts.disk,
            ..Limits::default()
        };
        // The agent's own output while booting is kept for the error message.
        cfg.stdout = Sink::capture(64 << 10);
        cfg.stderr = Sink::capture(64 << 10);
        let mut sb = Sandbox::new(cfg)?;
        for (path, source) in language.agent_files() {
            sb.add_file(path, source.as_bytes().to_vec(), 0o644)
                .map_err(|e| {
                    TemplateError::AgentFailed(
                        language.name(),
                        format!("cannot install the agent ({path}): {e}"),
                    )
                })?;
        }
        // Names resolve through the VMM's resolver (docs/network.md).
        sb.add_file("/etc/resolv.conf", RESOLV_CONF.as_bytes().to_vec(), 0o644)
            .map_err(|e| {
                TemplateError::AgentFailed(language.name(), format!("resolv.conf: {e}"))
            })?;
        sb.k.fds_mut()
            .open_at(
                CONTROL_FD,
                OpenFile::new(
                    FileKind::Control,
                    "anon_inode:[zeroboot-control]",
                    zeroboot_abi::flags::O_RDWR,
                ),
                false,
            )
            .map_err(|e| TemplateError::AgentFailed(language.name(), format!("control fd: {e}")))?;
        let mut env: Vec<Vec<u8>> = language
            .recipe()
            .default_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect();
        env.push(format!("ZEROBOOT_CONTROL_FD={CONTROL_FD}").into_bytes());
        let argv: Vec<Vec<u8>> = language
            .argv()
            .into_iter()
            .map(String::into_bytes)
            .collect();
        sb.exec(&language.argv()[0], &argv, &env)?;
        let outcome = sb.run(Some(Instant::now() + opts.boot_timeout))?;
        if outcome != Outcome::Parked {
            let (out, _) = sb.k.stdout_mut().take();
            let (err, _) = sb.k.stderr_mut().take();
            return Err(TemplateError::AgentFailed(
                language.name(),
                format!(
                    "{outcome:?}; stdout: {}; stderr: {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                ),
            ));
        }
        let snapshot = sb.into_snapshot()?;
        Ok(Template {
            language,
            snapshot,
            image,
            created_in: started.elapsed(),
            idle: Default::default(),
            spare: Default::default(),
            max_idle: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_IDLE),
        })
    }

    /// Where the template for `language` on the image at `root` is kept.
    /// The name carries a hash of the agent's source: a template parked in
    /// another version of the agent is another template.
    pub fn dir(cache: &Path, language: Language, root: &Path) -> PathBuf {
        cache.join("templates").join(format!(
            "{}-{}-{:016x}",
            language.name(),
            image_id(root),
            fnv1a(
                language
                    .agent_files()
                    .iter()
                    .flat_map(|(_, source)| source.bytes())
                    .collect::<Vec<u8>>()
                    .as_slice()
            )
        ))
    }

    /// The saved template if it is there and valid; otherwise create it
    /// and save it. Returns whether it was created.
    pub fn open(
        language: Language,
        root: &Path,
        cache: &Path,
        opts: &TemplateOptions,
    ) -> Result<(Template, bool), TemplateError> {
        let dir = Template::dir(cache, language, root);
        // Tried again under the lock; only that second failure is worth a warning.
        let try_load = |last: bool| -> Option<Template> {
            if !dir.join(zeroboot_kernel::snapshot::STATE_FILE).exists() {
                return None;
            }
            match Template::load(language, root, &dir) {
                Ok(t) => Some(t),
                Err(e) if !last => {
                    tracing::debug!(error = %e, "saved template unusable");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saved template unusable, creating it again");
                    None
                }
            }
        };
        if let Some(t) = try_load(false) {
            return Ok((t, false));
        }
        // One creator at a time; the others load what it saved.
        let lock_path = dir.with_extension("lock");
        if let Some(p) = lock_path.parent() {
            std::fs::create_dir_all(p).map_err(|e| TemplateError::Image(p.into(), e))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| TemplateError::Image(lock_path.clone(), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| TemplateError::Image(lock_path.clone(), e.into()))?;
        if let Some(t) = try_load(true) {
            return Ok((t, false));
        }
        let mut t = Template::create(language, root, opts)?;
        t.save(cache, root)?;
        drop(lock);
        Ok((t, true))
    }

    /// Save into the cache (see `dir`); returns the directory.
    pub fn save(&mut self, cache: &Path, root: &Path) -> Result<PathBuf, TemplateError> {
        let dir = Template::dir(cache, self.language, root);
        self.snapshot.save(&dir, &image_id(root))?;
        Ok(dir)
    }

    /// Load the template saved in `dir`.
    pub fn load(language: Language, root: &Path, dir: &Path) -> Result<Template, TemplateError> {
        let started = Instant::now();
        let image = Arc::new(Image::new(root).map_err(|e| TemplateError::Image(root.into(), e))?);
        let snapshot = Snapshot::load(dir, image.clone(), &image_id(root))?;
        Ok(Template {
            language,
            snapshot,
            image,
            created_in: started.elapsed(),
            idle: Default::default(),
            spare: Default::default(),
            max_idle: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_IDLE),
        })
    }

    /// Guest memory the template holds (bytes), as reported by health.
    pub fn memory_bytes(&self) -> u64 {
        self.snapshot.kernel.mm().resident()
    }
}
