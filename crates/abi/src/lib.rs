//! The Linux x86-64 user ABI as plain data: syscall numbers and names,
//! errno values, the structures syscalls exchange with user memory, and the
//! flag constants. No behaviour and no `unsafe` lives here.
#![forbid(unsafe_code)]

pub mod errno;
pub mod flags;
pub mod signal;
pub mod structs;
pub mod sysno;

pub use errno::Errno;
