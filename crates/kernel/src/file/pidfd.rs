//! The file side of a process file descriptor (`syscalls::process::pidfd`).

use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::events::{POLLHUP, POLLIN};
use crate::syscalls::{Ctx, SysError};

/// A pidfd of process `0`.
pub(crate) struct PidFdFile(pub u32);

impl FileOps for PidFdFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn write(&self, _ctx: &mut Ctx, _io: Io, _data: &[u8]) -> Result<usize, SysError> {
        Err(Errno::EINVAL.into())
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        // An anonymous inode, as Linux 6.1 shows a pidfd.
        Ok(super::anon_stat(0o600, 0xe, 1))
    }

    /// Readable once the process has exited; hung up once it is reaped
    /// too (Linux's `pidfd_poll`).
    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        let k = &*ctx.k;
        if crate::syscalls::process::pidfd::running(k, self.0) {
            0
        } else if k.zombies.contains_key(&self.0) {
            POLLIN
        } else {
            POLLIN | POLLHUP
        }
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        "anon_inode:[pidfd]".to_string()
    }
}
