//! Networking: a sandbox has none. socket() is refused, and every socket
//! call on a descriptor answers as for a descriptor that is not a socket.

use zeroboot_abi::Errno;

use super::{fd_arg, Ctx, SysResult};

pub fn socket(_ctx: &mut Ctx, _a: [u64; 6]) -> SysResult {
    Err(Errno::EACCES)
}

pub fn notsock(ctx: &mut Ctx, a: [u64; 6]) -> SysResult {
    ctx.k.fds.get(fd_arg(a[0]))?;
    Err(Errno::ENOTSOCK)
}
