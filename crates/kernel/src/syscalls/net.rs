//! Networking: a sandbox has none. socket() is refused, and every socket
//! call on a descriptor answers as for a descriptor that is not a socket.

use zeroboot_abi::Errno;

use super::{Args, Ctx, SysResult};

pub fn socket(_ctx: &mut Ctx, _a: Args) -> SysResult {
    Err(Errno::EACCES.into())
}

pub fn notsock(ctx: &mut Ctx, a: Args) -> SysResult {
    ctx.k.fds.get(a.fd(0))?;
    Err(Errno::ENOTSOCK.into())
}
