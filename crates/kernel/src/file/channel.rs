//! Byte streams whose other end is outside the file system: the slave of a
//! pseudo-terminal (`crate::tty`), the agent's control channel
//! (`crate::control`) and sockets (`crate::net`, `syscalls::net`). Their
//! objects and protocols live in those modules; this is their file side.

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::OpenFile;
use crate::syscalls::{Args, Ctx, SysError, SysResult};
use crate::vfs::{Device, Node, Synth};

/// The slave side of pseudo-terminal `id` (`Kernel::ptys`).
pub(crate) struct PtyFile(pub u64);

/// The master side of pseudo-terminal `id`, held by a guest process.
pub(crate) struct PtyMasterFile(pub u64);

/// The agent's control channel (templates and forks).
pub(crate) struct ControlFile;

/// Socket `id` of `Kernel::sockets`.
pub(crate) struct SocketFile(pub u64);

impl FileOps for PtyFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        crate::tty::slave_read(ctx, self.0, count, io.nonblock)
    }

    fn write(&self, ctx: &mut Ctx, io: Io, data: &[u8]) -> Result<usize, SysError> {
        crate::tty::slave_write(ctx, self.0, data, io.nonblock)
    }

    fn stat(&self, ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        // The same as stat("/dev/pts/N"): ttyname compares the two.
        Ok(ctx
            .k
            .vfs
            .stat(&Node::Synth(Synth::Device(Device::Pts(self.0)))))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        crate::tty::readiness(ctx, self.0)
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k.ptys.get(&self.0).map_or(0, |p| p.changes)
    }

    fn ioctl(&self, ctx: &mut Ctx, a: Args) -> Option<SysResult> {
        crate::tty::ioctl(ctx, self.0, a)
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        format!("/dev/pts/{}", self.0 + 1)
    }

    /// A master's reader learns that the slaves are gone (EIO).
    fn released(&self, ctx: &mut Ctx) {
        ctx.k.gc_pipes();
    }
}

impl FileOps for PtyMasterFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        crate::tty::master_read(ctx, self.0, count, io.nonblock)
    }

    fn write(&self, ctx: &mut Ctx, _io: Io, data: &[u8]) -> Result<usize, SysError> {
        crate::tty::master_write(ctx, self.0, data)
    }

    fn stat(&self, ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(ctx.k.vfs.stat(&Node::Synth(Synth::Device(Device::Ptmx))))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        crate::tty::master_readiness(ctx, self.0)
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k.ptys.get(&self.0).map_or(0, |p| p.changes)
    }

    fn ioctl(&self, ctx: &mut Ctx, a: Args) -> Option<SysResult> {
        crate::tty::master_ioctl(ctx, self.0, a)
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        "/dev/ptmx".to_string()
    }

    /// Its last descriptor here closed: the slave hangs up if no other
    /// process holds the master (`Kernel::gc_ptys`).
    fn released(&self, ctx: &mut Ctx) {
        ctx.k.gc_pipes();
    }
}

impl FileOps for ControlFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, _io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        crate::control::read(ctx, count)
    }

    fn write(&self, ctx: &mut Ctx, _io: Io, data: &[u8]) -> Result<usize, SysError> {
        Ok(crate::control::write(ctx, data)?)
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        Ok(super::anon_stat(S_IFSOCK | 0o600, 0x8, 1))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        crate::control::readiness(ctx)
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        "anon_inode:[zeroboot-control]".to_string()
    }
}

impl FileOps for SocketFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        crate::syscalls::net::read(ctx, self.0, count, io.nonblock)
    }

    fn write(&self, ctx: &mut Ctx, io: Io, data: &[u8]) -> Result<usize, SysError> {
        crate::syscalls::net::write(ctx, self.0, data, io.nonblock)
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        // sockfs, as Linux shows it.
        Ok(super::anon_stat(S_IFSOCK | 0o777, 0x8, self.0))
    }

    fn readiness(&self, ctx: &mut Ctx, _depth: u32) -> i16 {
        ctx.k.sockets.readiness(self.0)
    }

    fn activity(&self, ctx: &Ctx) -> u64 {
        ctx.k.sockets.activity(self.0)
    }

    fn unread(&self, ctx: &Ctx, _offset: u64) -> u64 {
        ctx.k.sockets.get(self.0).map(|s| s.unread()).unwrap_or(0) as u64
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        format!("socket:[{}]", self.0)
    }

    fn released(&self, ctx: &mut Ctx) {
        ctx.k.gc_pipes();
    }
}
