//! Templates, forks and executions. A template is a runtime (the Python
//! agent in Debian's python3) started once and parked on its control
//! channel; an execution forks it, hands the fork the code, and collects
//! what it printed and how it ended.
#![forbid(unsafe_code)]

mod commands;
mod exec;
mod live;
mod template;

pub use commands::{CommandEvent, CommandInfo, CommandSpec, Step, HOME};
pub use exec::{
    cell_request_frame, request_frame, ExecRequest, ExecResult, ExecStats, OutputStream, OutputTee,
};
pub use live::{
    Checkpoint, LiveError, LiveOptions, LiveSandbox, Loaded, RunOutput, INTERRUPT_GRACE,
};
pub use template::{Language, Template, TemplateError, TemplateOptions, DEFAULT_MAX_IDLE};
/// Host calls the vCPU threads' seccomp filter refused (see docs/security.md).
pub use zeroboot_kernel::hardening::denied_total as seccomp_denied_total;
pub use zeroboot_kernel::net::limit::{parse_rate as parse_net_rate, Rates as NetRates};
/// The egress policy's types (docs/network.md).
pub use zeroboot_kernel::net::policy::{
    Counters as NetCounters, NetStats, Operator as NetOperator, PolicyError, Rule as NetRule,
    SandboxRules, Setup as NetSetup,
};
/// The process's pool of VMs made ahead of need, once installed
/// (`zeroboot_vmm::pool`), and its counters.
pub use zeroboot_vmm::pool::{global as vm_pool, PoolStats as VmPoolStats};
pub use zeroboot_vmm::reaper::{global as vm_reaper, ReaperStats as VmReaperStats};
