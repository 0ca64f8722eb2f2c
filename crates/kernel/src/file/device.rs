//! Character devices: /dev/null, zero, full, random, tty, and the console
//! streams a sandbox starts with (stdin, stdout, stderr).

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::structs::Stat;
use zeroboot_abi::Errno;

use super::{FileOps, Io};
use crate::fd::{OpenFile, Stream};
use crate::kernel::Source;
use crate::mm::Backing;
use crate::syscalls::events::{POLLIN, POLLOUT};
use crate::syscalls::{Ctx, SysError};
use crate::vfs::Device;

/// A device node opened from /dev.
pub(crate) struct DeviceFile(pub Device);

/// One of the standard streams of the sandbox's first process.
pub(crate) struct ConsoleFile(pub Stream);

fn random_bytes(buf: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        let n = rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Errno(e.raw_os_error() as u16))?;
        done += n;
    }
    Ok(())
}

impl FileOps for DeviceFile {
    fn seek_size(&self, _ctx: &Ctx) -> Result<u64, Errno> {
        match self.0 {
            // Terminals are streams (Linux's no_llseek).
            Device::Tty | Device::Pts(_) | Device::Ptmx => Err(Errno::ESPIPE),
            _ => Ok(0),
        }
    }

    fn read(&self, ctx: &mut Ctx, io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        Ok(match self.0 {
            Device::Null => Vec::new(),
            Device::Zero | Device::Full => vec![0u8; count],
            Device::Random => {
                let mut b = vec![0u8; count.min(1 << 20)];
                random_bytes(&mut b)?;
                b
            }
            Device::Tty => return Err(Errno::EIO.into()),
            // Opened as FileKind::Pty; a Device never holds it.
            Device::Pts(id) => return crate::tty::slave_read(ctx, id, count, io.nonblock),
            // Opened as FileKind::PtyMaster.
            Device::Ptmx => return Err(Errno::EIO.into()),
        })
    }

    fn write(&self, _ctx: &mut Ctx, _io: Io, data: &[u8]) -> Result<usize, SysError> {
        match self.0 {
            Device::Full => Err(Errno::ENOSPC.into()),
            Device::Tty => Err(Errno::EIO.into()),
            _ => Ok(data.len()),
        }
    }

    fn mmap(&self, _ctx: &Ctx, _offset: u64) -> Result<(Backing, Option<Arc<str>>), Errno> {
        match self.0 {
            Device::Zero => Ok((Backing::Anon, Some(Arc::from("/dev/zero (deleted)")))),
            _ => Err(Errno::ENODEV),
        }
    }
}

impl FileOps for ConsoleFile {
    fn positional(&self) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn read(&self, ctx: &mut Ctx, _io: Io, count: usize) -> Result<Vec<u8>, SysError> {
        if self.0 != Stream::Stdin {
            return Err(Errno::EBADF.into());
        }
        Ok(match &mut ctx.k.stdin {
            Source::Empty => Vec::new(),
            Source::Data(d, at) => {
                let s = (*at).min(d.len());
                let e = s.saturating_add(count).min(d.len());
                *at = e;
                d[s..e].to_vec()
            }
            Source::Host => {
                use std::io::Read;
                let mut b = vec![0u8; count.min(64 << 10)];
                let n = std::io::stdin().read(&mut b).map_err(Errno::from)?;
                b.truncate(n);
                b
            }
        })
    }

    fn write(&self, ctx: &mut Ctx, _io: Io, data: &[u8]) -> Result<usize, SysError> {
        match self.0 {
            Stream::Stdout => Ok(ctx.k.stdout.write(data)?),
            Stream::Stderr => Ok(ctx.k.stderr.write(data)?),
            Stream::Stdin => Err(Errno::EBADF.into()),
        }
    }

    fn stat(&self, _ctx: &Ctx, _f: &OpenFile) -> Result<Stat, Errno> {
        // /dev/pts/0, as the console looks on Linux.
        let mut st = super::anon_stat(S_IFCHR | 0o620, 0x18, 3);
        st.st_rdev = 136 << 8;
        Ok(st)
    }

    fn readiness(&self, _ctx: &mut Ctx, _depth: u32) -> i16 {
        match self.0 {
            Stream::Stdin => POLLIN,
            _ => POLLOUT,
        }
    }

    fn proc_link(&self, _f: &OpenFile) -> String {
        "/dev/pts/0".to_string()
    }
}
