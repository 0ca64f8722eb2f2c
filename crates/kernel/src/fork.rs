//! Fork of a live sandbox (DESIGN.md §7). The source is frozen for as long
//! as it takes to copy the pages it made its own (those that differ from
//! its template) into a layer and to clone its kernel state; then it goes
//! on running, and every copy is a new VM that maps the template's memory
//! with the layer over it, both copy-on-write, and the cloned state. All
//! of the source's processes, threads, descriptors, pipes with what they
//! hold, and its writable files come along; each copy then diverges alone.
//!
//! A freeze after the source changed copies only what changed into a new
//! layer over the last one (`Layer`); a fork of a copy does the same over
//! the layers the copy came with. The chain stays at most `MAX_LAYERS`
//! deep, with the larger layers at its bottom (see `Sandbox::freeze`).

use std::fs::File;
use std::sync::Arc;

use zeroboot_vmm::layout::USER_END;
use zeroboot_vmm::{GuestMemory, Host, Layer, Shape, VcpuState, Vm};

use crate::kernel::{Kernel, Sink};
use crate::sandbox::{Sandbox, SandboxError};
use crate::task::{Resume, ThreadState};

/// Most layers over a template (see `Sandbox::freeze`): each is a few
/// more host mappings in every fork.
const MAX_LAYERS: usize = 4;

/// Forks of one freeze from which it folds the layers over the bottom one
/// into one mapped in few runs (`Sandbox::freeze_for`).
const MANY_COPIES: usize = 8;

/// A live sandbox frozen for forking: what every copy starts from.
pub struct Frozen {
    /// The template's memory, and how much of it the source mapped.
    pub(crate) base: Arc<File>,
    pub(crate) base_len: u64,
    pub(crate) mem_size: u64,
    /// Guest memory the source had registered with KVM.
    pub(crate) registered: u64,
    pub(crate) layer: Arc<Layer>,
    pub(crate) vcpu: VcpuState,
    pub(crate) kernel: Kernel,
}

impl Frozen {
    /// Pages of the layer (what the source had made its own).
    pub fn layer_pages(&self) -> u64 {
        self.layer.len()
    }
}

impl Sandbox {
    /// Freeze a copy of this sandbox's current state; this sandbox is left
    /// as it was and may run on. Call it between runs (never inside one).
    pub fn freeze(&mut self) -> Result<Frozen, SandboxError> {
        self.freeze_for(1)
    }

    /// `freeze`, for `copies` forks: with many, what changed since the
    /// bottom layer goes into one new layer mapped in few runs (each run
    /// of each layer is two host mappings in every fork: `bench fork-live`,
    /// 100 copies after runs in the source, 89-93 ms through ~50 runs).
    pub fn freeze_for(&mut self, copies: usize) -> Result<Frozen, SandboxError> {
        if self.k.exit.is_some() {
            return Err(SandboxError::Finished);
        }
        // Pending page-table writes go to memory first, so the layer has
        // the tables the copies' vCPUs will walk.
        self.sync_memory()?;
        if self.k.mm.has_pending() {
            let writes = self.k.mm.take_pending(&self.mem);
            self.vcpu.run_pte_writer(&self.mem, &writes)?;
        }
        let vcpu = self.vcpu.save_state()?;
        // Nothing past the KVM slots (registered as frames are handed out,
        // `sync_memory` above) can have been written, by the guest or by
        // the VMM, which writes only frames its allocator handed out and
        // the fixed structures below them.
        let used = self.vm.registered().max(self.k.mm.frames.high_water());
        // Neither the vCPU nor the VMM wrote this memory since the last
        // freeze made its layer (a source forked again without running in
        // between): the layer is still all it has of its own, and the
        // page map need not be read.
        let unchanged = !self.mem.written() && self.mem.layer().is_some();
        let mut pages = if unchanged {
            Vec::new()
        } else {
            self.mem.private_pages_below(used)?
        };
        let layer = match self.mem.layer() {
            // Nothing written since the last freeze: its layer is this
            // memory as it is (the source maps it too, `adopt_layer`).
            // For many forks, not while layers lie over the bottom one.
            Some(l) if pages.is_empty() && (copies < MANY_COPIES || l.depth() == 1) => l.clone(),
            _ => {
                // What changed goes into a new layer over the last one, so
                // a freeze after a small change copies little. The chain
                // is bounded as it grows: a layer no larger than what goes
                // over it is folded into the new one (its pages copied
                // again, read from this memory), and so is every layer
                // that would leave the new one more than `MAX_LAYERS`
                // deep. Layers then grow downwards, and a page is copied
                // again a few times at most before it rests in a large
                // low layer.
                let private = pages.len();
                let many = copies >= MANY_COPIES;
                let mut folded_wide = false;
                let mut below = self.mem.layer().cloned();
                while let Some(l) = below.take() {
                    let bottom = l.below().is_none();
                    let keep = if many {
                        bottom
                    } else {
                        l.own_len() > pages.len() as u64 && l.depth() < MAX_LAYERS
                    };
                    if keep {
                        below = Some(l);
                        break;
                    }
                    pages.extend(l.own_pages());
                    folded_wide |= l.maps_more();
                    below = l.below().cloned();
                }
                pages.sort_unstable();
                pages.dedup();
                // A bottom layer, or one for many forks, is mapped in few
                // runs; one over others holds little and is mapped as is.
                // One that folds a layer mapped in few runs is too, so that
                // its runs cover those (the source then maps nothing of the
                // folded layer's file any more, and the host frees it).
                let wide = below.is_none() || many || folded_wide;
                let layer = Arc::new(self.mem.capture_layer(&pages, below, wide)?);
                tracing::debug!(
                    private,
                    copied = pages.len(),
                    pages = layer.len(),
                    mapped = layer.mapped_len(),
                    depth = layer.depth(),
                    runs = layer.runs(),
                    "layer captured"
                );
                // The source shares the pages it just copied with its
                // copies from now on (the host holds them once), and its
                // next freeze copies nothing if it wrote nothing.
                self.mem.adopt_layer(layer.clone())?;
                layer
            }
        };
        // The layer holds what this memory has of its own as of now.
        self.mem.clear_written();
        let mut kernel = self.k.clone();
        kernel.clock.freeze();
        kernel.stdout = Sink::capture(0);
        kernel.stderr = Sink::capture(0);
        kernel.stats = Default::default();
        Ok(Frozen {
            base: self.mem.file().clone(),
            base_len: self.mem.file_len(),
            mem_size: self.mem.size(),
            registered: self.vm.registered().max(self.k.mm.frames.high_water()),
            layer,
            vcpu,
            kernel,
        })
    }

    /// A new sandbox that continues from `frozen`: same pids, memory,
    /// files and descriptors as the source had when it was frozen.
    pub fn fork_frozen(frozen: &Frozen) -> Result<Sandbox, SandboxError> {
        // In the place of a VM made ahead for this shape when the pool
        // has one: no memory-slot change on the fork's path.
        let shape = Shape::new(frozen.mem_size, frozen.registered, false);
        let (mem, vm, mut vcpu) = Vm::with_memory(shape, |place| {
            let (base, layer) = (frozen.base.clone(), frozen.layer.clone());
            match place {
                Some(held) => GuestMemory::new_cow_in(
                    held,
                    base,
                    frozen.base_len,
                    frozen.mem_size,
                    Some(layer),
                ),
                None => GuestMemory::new_layered(base, frozen.base_len, frozen.mem_size, layer),
            }
        })?;
        let initial_xsave = vcpu.xsave_bytes()?;
        vcpu.restore_state(&frozen.vcpu)?;
        let mut k = frozen.kernel.clone();
        k.cpu_base_ns = crate::syscalls::thread_cpu_ns();
        crate::vdso::rebase(&mut k, &mem, vcpu.tsc());
        // A thread stopped in ring 3 (by a kick, or about to return there)
        // goes back to ring 3; one stopped in a ring-0 trampoline finishes
        // it in ring 0, where a new vCPU starts; the other states are
        // finished by the run loop (a syscall's completion returns to
        // ring 3 itself).
        let in_user = matches!(
            k.threads.get(&k.current).map(|t| &t.state),
            Some(ThreadState::Runnable(Resume::Continue))
        ) && frozen.vcpu.regs.rip < USER_END;
        if in_user {
            vcpu.resume_user();
        }
        let host = Host::get()?;
        Ok(Sandbox::from_parts(
            mem,
            vm,
            vcpu,
            k,
            host.xsave_size(),
            initial_xsave,
        ))
    }
}
