//! Templates and forks. A sandbox parked on its control channel is frozen
//! into a `Snapshot`: its guest memory file, the vCPU state of the thread
//! that was running, and the whole kernel state. A fork is a new VM that
//! maps the same memory copy-on-write (`MAP_PRIVATE`), restores the vCPU,
//! clones the kernel state with a fresh pid, and completes the parked read
//! with its request.

use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use zeroboot_vmm::layout::LAYOUT_VERSION;
use zeroboot_vmm::{GuestMemory, Host, VcpuState, Vm};

use crate::kernel::{Kernel, Sink, Source};
use crate::sandbox::{Sandbox, SandboxError};
use crate::sched;
use crate::syscalls::SyscallStats;
use crate::task::{ThreadState, Wait};

/// A frozen, parked sandbox.
#[derive(Clone)]
pub struct Snapshot {
    /// Its page tables, computed on the first reset.
    tables: Arc<std::sync::OnceLock<Result<crate::sandbox::reset::PageTableMap, String>>>,
    /// Its memory mapped once, read-only in use, for resets to copy from.
    view: Arc<std::sync::OnceLock<Result<GuestMemory, String>>>,
    /// The guest memory (never written again once frozen).
    pub mem: Arc<File>,
    /// Size of guest-physical memory (what a fork reserves).
    pub mem_size: u64,
    /// Bytes of `mem` in use (registered): what a fork maps from the file.
    pub mem_len: u64,
    pub vcpu: VcpuState,
    pub kernel: Kernel,
    /// The checksum of its state file once saved or loaded (0 before): a
    /// sandbox snapshot names its template by it, so it is never laid
    /// over another template's memory.
    pub identity: u64,
}

/// How one fork differs from its template.
#[derive(Debug, Clone)]
pub struct ForkOptions {
    pub stdout: Sink,
    pub stderr: Sink,
    pub stdin: Source,
    /// Memory limit (bytes), at most the template's.
    pub memory: Option<u64>,
    /// Bytes the writable file system may hold, at most the template's.
    pub disk: Option<u64>,
    /// Most open descriptors per process, at most the template's.
    pub fds: Option<u64>,
    /// The request put in the control channel before the fork runs.
    pub request: Vec<u8>,
}

/// Errors of freezing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the sandbox is not parked on its control channel (it must block reading it to become a template)")]
    NotParked,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Pids handed to forks, so that PRNGs keyed on the pid (OpenSSL) reseed.
fn next_fork_pid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1000);
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        // Leave room for the fork's own threads and children.
        if p < 4_000_000 {
            return p.max(1000);
        }
        NEXT.store(1000, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// Freeze this parked sandbox (its VM is torn down; the memory stays in
    /// its file).
    pub fn into_snapshot(mut self) -> Result<Snapshot, SnapshotError> {
        if !sched::parked(&self.k) || sched::runnable(&self.k) > 0 || self.k.exit.is_some() {
            return Err(SnapshotError::NotParked);
        }
        if self.k.mm.has_pending() {
            self.sync_memory()?;
            let writes = self.k.mm.take_pending(&self.mem);
            self.vcpu
                .run_pte_writer(&self.mem, &writes)
                .map_err(SandboxError::from)?;
        }
        let vcpu = self.vcpu.save_state().map_err(SandboxError::from)?;
        let mut kernel = self.k;
        kernel.clock.freeze();
        kernel.stats = SyscallStats::default();
        kernel.stdout = Sink::capture(0);
        kernel.stderr = Sink::capture(0);
        kernel.cpu_carried_ns +=
            crate::syscalls::thread_cpu_ns().saturating_sub(kernel.cpu_base_ns);
        Ok(Snapshot {
            tables: Default::default(),
            view: Default::default(),
            mem: self.mem.file().clone(),
            mem_size: self.mem.size(),
            mem_len: self.vm.registered().max(kernel.mm.frames.high_water()),
            vcpu,
            kernel,
            identity: 0,
        })
    }

    /// A new sandbox forked from `snap`, ready to run its request. It can
    /// later be `reset` to `snap` for another request.
    pub fn fork(snap: &Snapshot, opts: ForkOptions) -> Result<Sandbox, SandboxError> {
        let mut mem = GuestMemory::new_cow(snap.mem.clone(), snap.mem_len, snap.mem_size)?;
        mem.track_dirty();
        let (vm, mut vcpu) = Vm::with_vcpu(&mem, snap.mem_len, true)?;
        let initial_xsave = vcpu.xsave_bytes()?;
        vcpu.restore_state(&snap.vcpu)?;
        // The fork's memory is the template's: the VMM's page-table walks
        // below read the template's view, not the fork's own mapping.
        let view = snap.template_view().ok();
        let mut k = snap.fork_kernel(&mem, view, opts);
        crate::vdso::rebase_via(&mut k, &mem, view, vcpu.tsc());
        let host = Host::get()?;
        let mut sb = Sandbox::from_parts(mem, vm, vcpu, k, host.xsave_size(), initial_xsave);
        sb.resettable = true;
        Ok(sb)
    }
}

impl Snapshot {
    /// The kernel state of a new fork (or reset) with `opts`; `tables`: a
    /// memory with the same page tables as `mem` to walk them in
    /// (`AddressSpace::write_via`).
    pub(crate) fn fork_kernel(
        &self,
        mem: &GuestMemory,
        tables: Option<&GuestMemory>,
        opts: ForkOptions,
    ) -> Kernel {
        let mut k = self.kernel.clone();
        k.stdout = opts.stdout;
        k.stderr = opts.stderr;
        k.stdin = opts.stdin;
        k.cpu_base_ns = crate::syscalls::thread_cpu_ns();
        if let Some(m) = opts.memory {
            let m = m.min(k.limits.memory);
            k.limits.memory = m;
            k.mm.set_limit(m);
        }
        // The limit holds for the sandbox, not only per process: all its
        // processes together may hold the template's frames plus the limit
        // (and room for page tables).
        let cap = k.mm.frames.in_use()
            + (k.limits.memory + crate::mm::TABLE_ROOM) / zeroboot_vmm::layout::PAGE_SIZE;
        k.mm.frames.cap(cap);
        if let Some(d) = opts.disk {
            k.limits.disk = d.min(k.limits.disk);
            k.vfs.tmp.limit = k.vfs.tmp.limit.min(k.limits.disk);
        }
        if let Some(n) = opts.fds {
            k.limits.fds = n.min(k.limits.fds);
            k.fds.max_fds = k.fds.max_fds.min(k.limits.fds);
            for s in k.others.values_mut() {
                s.fds.max_fds = s.fds.max_fds.min(k.limits.fds);
            }
        }
        // Limit hits are counted per execution.
        k.clear_limit_hits();
        k.renumber(mem, tables, next_fork_pid());
        k.control.outbox.clear();
        k.control.inbox.clear();
        k.control.inbox.extend(opts.request);
        k
    }

    /// The template's page-table pages (computed once).
    /// The template's memory as guest-physical memory of the fork's size
    /// (zero beyond `mem_len`), mapped on the first reset: restoring a page
    /// is then one memcpy from it. Never written.
    pub fn template_view(&self) -> Result<&GuestMemory, String> {
        self.view
            .get_or_init(|| {
                let page = zeroboot_vmm::layout::PAGE_SIZE;
                GuestMemory::new_cow(self.mem.clone(), self.mem_len / page * page, self.mem_size)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| e.clone())
    }

    pub fn page_tables(&self) -> Result<&crate::sandbox::reset::PageTableMap, String> {
        self.tables
            .get_or_init(|| crate::sandbox::reset::page_table_map(self).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone())
    }
}

/// Whether a kernel state is parked (for validation of loaded templates).
pub fn is_parked(k: &Kernel) -> bool {
    k.threads
        .values()
        .any(|t| matches!(t.state, ThreadState::Blocked(Wait::Park)))
}

// ---- on disk -----------------------------------------------------------

use std::path::Path;

use crate::statefile::{self, FrameError};

use serde::{Deserialize, Serialize};

/// First bytes of a template state file.
const MAGIC: &[u8; 8] = b"ZBTMPL\0\0";
/// Layout of the state file; bump on incompatible changes
/// (`docs/snapshot-format.md`). 2: the header names the VMM layout.
pub const FORMAT_VERSION: u32 = 2;
/// Fingerprint of the kernel code that wrote a template.
pub const KERNEL_FINGERPRINT: &str = env!("ZEROBOOT_KERNEL_FINGERPRINT");

/// The state file of a template directory: header, then the state.
pub const STATE_FILE: &str = "state.bin";
/// The memory file of a template directory (sparse).
pub const MEMORY_FILE: &str = "memory.bin";

/// The vCPU state as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct PersistedVcpu {
    #[serde(with = "crate::persist::regs")]
    regs: kvm_bindings::kvm_regs,
    fs_base: u64,
    gs_base: u64,
    cr3: u64,
    xsave: Vec<u8>,
}

impl From<&VcpuState> for PersistedVcpu {
    fn from(v: &VcpuState) -> Self {
        PersistedVcpu {
            regs: v.regs,
            fs_base: v.fs_base,
            gs_base: v.gs_base,
            cr3: v.cr3,
            xsave: v.xsave.clone(),
        }
    }
}

impl From<PersistedVcpu> for VcpuState {
    fn from(v: PersistedVcpu) -> Self {
        VcpuState {
            regs: v.regs,
            fs_base: v.fs_base,
            gs_base: v.gs_base,
            cr3: v.cr3,
            xsave: v.xsave,
        }
    }
}

/// The leading fields of [`StateFile`], decodable whatever follows them.
#[derive(Deserialize)]
struct StateHead {
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    fingerprint: String,
    image_id: String,
    mem_size: u64,
    mem_len: u64,
    vcpu: PersistedVcpu,
    kernel: Kernel,
}

/// Errors of saving and loading templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateFileError {
    #[error("I/O on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a zeroboot template state file")]
    NotATemplate(String),
    #[error("{path} has format version {found}; this zeroboot reads version {FORMAT_VERSION} (recreate the template)")]
    Version { path: String, found: u32 },
    #[error("{path} was parked on VMM layout {found}; this zeroboot has layout {LAYOUT_VERSION} (recreate the template)")]
    Layout { path: String, found: u32 },
    #[error("{0} is corrupt: {1} (recreate the template)")]
    Corrupt(String, String),
    #[error("{path} was made by different zeroboot code (kernel {found}, this is {KERNEL_FINGERPRINT}); recreate the template")]
    Stale { path: String, found: String },
    #[error("{path} was made from image {found}, not {expected}")]
    WrongImage {
        path: String,
        found: String,
        expected: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TemplateFileError + '_ {
    move |source| TemplateFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Copy the data parts of `src` into a new file `dst`, leaving holes where
/// `src` has holes or zero pages (a template's memory is mostly empty).
fn copy_sparse(src: &File, dst: &Path, size: u64) -> Result<(), TemplateFileError> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt;
    let out = File::create(dst).map_err(io_err(dst))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io_err(dst)(e.into())),
        };
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))
            .map_err(|e| io_err(dst)(e.into()))?
            .min(size);
        let mut at = data;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at).map_err(io_err(dst))?;
            for (i, page) in buf[..n].chunks(4096).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    out.write_all_at(page, at + (i * 4096) as u64)
                        .map_err(io_err(dst))?;
                }
            }
            at += n as u64;
        }
        off = hole;
    }
    out.set_len(size).map_err(io_err(dst))?;
    out.sync_all().map_err(io_err(dst))?;
    Ok(())
}

impl Snapshot {
    /// Write the template into directory `dir` (created; replaced
    /// atomically if it exists). `image_id` names the image it runs on.
    /// Sets its `identity`.
    pub fn save(&mut self, dir: &Path, image_id: &str) -> Result<(), TemplateFileError> {
        let tmp = statefile::temp_dir_beside(dir).map_err(io_err(dir))?;
        copy_sparse(&self.mem, &tmp.join(MEMORY_FILE), self.mem_len)?;
        let state = StateFile {
            fingerprint: KERNEL_FINGERPRINT.to_string(),
            image_id: image_id.to_string(),
            mem_size: self.mem_size,
            mem_len: self.mem_len,
            vcpu: (&self.vcpu).into(),
            kernel: self.kernel.clone(),
        };
        let payload = bincode::serialize(&state)
            .map_err(|e| TemplateFileError::Corrupt(dir.display().to_string(), e.to_string()))?;
        let sp = tmp.join(STATE_FILE);
        statefile::write(&sp, MAGIC, FORMAT_VERSION, &payload).map_err(io_err(&sp))?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
        self.identity = statefile::checksum(&payload);
        Ok(())
    }

    /// Load a template written by `save`, attaching `image` (which must be
    /// the image `image_id` names). Any mismatch or damage is an error.
    pub fn load(
        dir: &Path,
        image: Arc<crate::vfs::Image>,
        image_id: &str,
    ) -> Result<Snapshot, TemplateFileError> {
        let sp = dir.join(STATE_FILE);
        let name = sp.display().to_string();
        let (payload, identity) =
            statefile::read(&sp, MAGIC, FORMAT_VERSION).map_err(|e| match e {
                FrameError::Io(source) => TemplateFileError::Io {
                    path: name.clone(),
                    source,
                },
                FrameError::NotOurs => TemplateFileError::NotATemplate(name.clone()),
                FrameError::Version(found) => TemplateFileError::Version {
                    path: name.clone(),
                    found,
                },
                FrameError::Layout(found) => TemplateFileError::Layout {
                    path: name.clone(),
                    found,
                },
                FrameError::Corrupt(why) => TemplateFileError::Corrupt(name.clone(), why.into()),
            })?;
        // The fingerprint leads the state: read it alone first, so a template
        // of other kernel code is reported stale rather than corrupt.
        let head: StateHead = bincode::deserialize(&payload)
            .map_err(|e| TemplateFileError::Corrupt(name.clone(), e.to_string()))?;
        if head.fingerprint != KERNEL_FINGERPRINT {
            return Err(TemplateFileError::Stale {
                path: name,
                found: head.fingerprint,
            });
        }
        let state: StateFile = crate::persist::with_image(image, || bincode::deserialize(&payload))
            .map_err(|e| TemplateFileError::Corrupt(name.clone(), e.to_string()))?;
        if state.image_id != image_id {
            return Err(TemplateFileError::WrongImage {
                path: name,
                found: state.image_id,
                expected: image_id.to_string(),
            });
        }
        if !is_parked(&state.kernel) {
            return Err(TemplateFileError::Corrupt(
                name,
                "no thread is parked on the control channel".into(),
            ));
        }
        let mp = dir.join(MEMORY_FILE);
        let mem = File::open(&mp).map_err(io_err(&mp))?;
        let size = mem.metadata().map_err(io_err(&mp))?.len();
        if size != state.mem_len || state.mem_len > state.mem_size {
            return Err(TemplateFileError::Corrupt(
                mp.display().to_string(),
                "memory file has the wrong size".into(),
            ));
        }
        Ok(Snapshot {
            tables: Default::default(),
            view: Default::default(),
            mem: Arc::new(mem),
            mem_size: state.mem_size,
            mem_len: state.mem_len,
            vcpu: state.vcpu.into(),
            kernel: state.kernel,
            identity,
        })
    }
}
