//! zeroboot's KVM layer: VMs and vCPUs, guest memory, page tables, and the
//! ring-0 skeleton whose every trampoline exits to the VMM.
//!
//! This crate holds the `unsafe` code that talks to KVM and raw memory;
//! everything above it (the sandbox's kernel) is safe Rust.

pub mod boot;
pub mod credentials;
pub mod kick;
pub mod layout;
pub mod memory;
pub mod paging;
pub mod pool;
pub mod pressure;
pub mod priority;
pub mod probe;
pub mod reaper;
pub mod seccomp;
pub mod tsc;
pub mod vcpu;
pub mod vm;

pub use kick::{ExitFlag, Kicker};
pub use memory::{GuestMemory, Layer, MemoryError, Reserved};
pub use paging::{FrameAllocator, PageTables, PagingError};
pub use pool::VmPool;
pub use tsc::TscInfo;
pub use vcpu::{ExceptionFrame, Exit, Vcpu, VcpuError, VcpuState};
pub use vm::{Blank, Host, Shape, Vm, VmError};
