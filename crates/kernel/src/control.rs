//! The control channel: a descriptor the runtime's agent reads requests
//! from and writes replies to. A read on an empty channel cannot complete,
//! so the process *parks* there: the VMM stops, and that stopped VM is what
//! a template is. Filling the inbox and resuming completes the read.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use zeroboot_abi::Errno;

use crate::fd::FileKind;
use crate::kernel::Block;
use crate::syscalls::{Ctx, SysError};

/// Bytes waiting in each direction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Channel {
    pub inbox: VecDeque<u8>,
    pub outbox: Vec<u8>,
    /// Most bytes the agent may write before the host collects them.
    pub outbox_cap: usize,
}

pub fn read(ctx: &mut Ctx, count: usize) -> Result<Vec<u8>, SysError> {
    let ch = &mut ctx.k.control;
    if ch.inbox.is_empty() {
        return Err(SysError::Block(Block::Park));
    }
    let n = count.min(ch.inbox.len());
    Ok(ch.inbox.drain(..n).collect())
}

pub fn write(ctx: &mut Ctx, data: &[u8]) -> Result<usize, Errno> {
    let ch = &mut ctx.k.control;
    if ch.outbox.len() + data.len() > ch.outbox_cap {
        return Err(Errno::ENOSPC);
    }
    ch.outbox.extend_from_slice(data);
    Ok(data.len())
}

pub fn readiness(ctx: &Ctx) -> i16 {
    let mut r = 0x4; // POLLOUT
    if !ctx.k.control.inbox.is_empty() {
        r |= 0x1;
    }
    r
}

/// Whether `fd` is the control channel.
pub fn is_control(ctx: &Ctx, fd: i32) -> bool {
    matches!(ctx.k.fds.get(fd).map(|f| &f.kind), Ok(FileKind::Control))
}
