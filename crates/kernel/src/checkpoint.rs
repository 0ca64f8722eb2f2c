//! A frozen live sandbox on disk (a snapshot, or a sandbox paused to
//! disk; DESIGN.md §7): a directory with the layer's pages as a sparse
//! file (only the pages that differ from its template) and the state file
//! (vCPU, the whole kernel state, and the caller's own state, opaque
//! here), framed as a template's is (`statefile`). The template is named
//! by its identity, so a checkpoint is only ever laid over the memory it
//! was taken over. Format: `docs/snapshot-format.md`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroboot_vmm::layout::PAGE_SIZE;
use zeroboot_vmm::Layer;

use crate::fork::Frozen;
use crate::kernel::Kernel;
use crate::snapshot::{PersistedVcpu, KERNEL_FINGERPRINT};
use crate::statefile::{self, FrameError};
use crate::vfs::Image;

const MAGIC: &[u8; 8] = b"ZBSNAP\0\0";
/// Layout of a checkpoint's state file; bump on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// The state file of a checkpoint directory.
pub const STATE_FILE: &str = "state.bin";
/// The layer's pages, at their guest-physical offsets (sparse).
pub const MEMORY_FILE: &str = "layer.bin";

#[derive(Deserialize)]
struct Head {
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    fingerprint: String,
    /// The identity of the template whose memory the layer goes over.
    template: u64,
    base_len: u64,
    mem_size: u64,
    registered: u64,
    runs: Vec<(u64, u64)>,
    vcpu: PersistedVcpu,
    kernel: Kernel,
    /// The engine's and the server's state of the sandbox.
    extra: Vec<u8>,
}

/// Errors of writing and reading checkpoints; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a zeroboot snapshot")]
    NotASnapshot(String),
    #[error("{0} was written by another version of zeroboot ({1}); it cannot be loaded")]
    Incompatible(String, String),
    #[error("{0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error(
        "{0} was taken over another template than the one loaded now (it was created again since)"
    )]
    OtherTemplate(String),
    #[error("its template was never saved to disk, so a snapshot of it could not be loaded again")]
    TemplateNotSaved,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Frozen {
    /// Write this frozen sandbox into directory `dir` (made under a
    /// temporary name and renamed: a reader sees all of it or nothing; on
    /// an error nothing is left). `template` is its template's identity
    /// (`Snapshot::identity`). Returns the bytes of memory written.
    pub fn save(&self, dir: &Path, template: u64, extra: &[u8]) -> Result<u64, CheckpointError> {
        if template == 0 {
            return Err(CheckpointError::TemplateNotSaved);
        }
        let tmp = statefile::temp_dir_beside(dir).map_err(io_err(dir))?;
        let r = self.write_into(&tmp, template, extra).and_then(|bytes| {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
            Ok(bytes)
        });
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }

    fn write_into(&self, tmp: &Path, template: u64, extra: &[u8]) -> Result<u64, CheckpointError> {
        let mp = tmp.join(MEMORY_FILE);
        let mem = File::create(&mp).map_err(io_err(&mp))?;
        self.layer
            .write_to(&mem, self.mem_size)
            .map_err(io_err(&mp))?;
        let state = CheckpointFile {
            fingerprint: KERNEL_FINGERPRINT.to_string(),
            template,
            base_len: self.base_len,
            mem_size: self.mem_size,
            registered: self.registered,
            runs: self.layer.saved_runs().to_vec(),
            vcpu: (&self.vcpu).into(),
            kernel: self.kernel.clone(),
            extra: extra.to_vec(),
        };
        let payload = bincode::serialize(&state)
            .map_err(|e| CheckpointError::Corrupt(tmp.display().to_string(), e.to_string()))?;
        let sp = tmp.join(STATE_FILE);
        statefile::write(&sp, MAGIC, FORMAT_VERSION, &payload).map_err(io_err(&sp))?;
        Ok(self.layer.len() * PAGE_SIZE)
    }

    /// Load the checkpoint in `dir` over its template: `base` (the
    /// template's memory, `base_len` bytes of it mapped) with identity
    /// `template`, whose files come from `image`. Any mismatch or damage
    /// is an error, and nothing is loaded. Returns the caller's state too.
    pub fn load(
        dir: &Path,
        base: Arc<File>,
        base_len: u64,
        image: Arc<Image>,
        template: u64,
    ) -> Result<(Frozen, Vec<u8>), CheckpointError> {
        let sp = dir.join(STATE_FILE);
        let name = sp.display().to_string();
        let (payload, _) = statefile::read(&sp, MAGIC, FORMAT_VERSION).map_err(|e| match e {
            FrameError::Io(source) => CheckpointError::Io {
                path: name.clone(),
                source,
            },
            FrameError::NotOurs => CheckpointError::NotASnapshot(name.clone()),
            e @ (FrameError::Version(_) | FrameError::Layout(_)) => {
                CheckpointError::Incompatible(name.clone(), e.to_string())
            }
            FrameError::Corrupt(why) => CheckpointError::Corrupt(name.clone(), why.into()),
        })?;
        let head: Head = bincode::deserialize(&payload)
            .map_err(|e| CheckpointError::Corrupt(name.clone(), e.to_string()))?;
        if head.fingerprint != KERNEL_FINGERPRINT {
            return Err(CheckpointError::Incompatible(
                name,
                format!("kernel {}, this is {KERNEL_FINGERPRINT}", head.fingerprint),
            ));
        }
        let state: CheckpointFile =
            crate::persist::with_image(image, || bincode::deserialize(&payload))
                .map_err(|e| CheckpointError::Corrupt(name.clone(), e.to_string()))?;
        if state.template != template || state.base_len != base_len {
            return Err(CheckpointError::OtherTemplate(name));
        }
        if state.registered > state.mem_size || state.base_len > state.mem_size {
            return Err(CheckpointError::Corrupt(name, "sizes do not fit".into()));
        }
        let mp = dir.join(MEMORY_FILE);
        let mem = File::open(&mp).map_err(io_err(&mp))?;
        let len = mem.metadata().map_err(io_err(&mp))?.len();
        if len != state.mem_size {
            return Err(CheckpointError::Corrupt(
                mp.display().to_string(),
                "memory file has the wrong size".into(),
            ));
        }
        let layer = Layer::open(mem, state.runs)
            .map_err(|e| CheckpointError::Corrupt(mp.display().to_string(), e.to_string()))?;
        Ok((
            Frozen {
                base,
                base_len,
                mem_size: state.mem_size,
                registered: state.registered,
                layer: Arc::new(layer),
                vcpu: state.vcpu.into(),
                kernel: state.kernel,
            },
            state.extra,
        ))
    }
}
