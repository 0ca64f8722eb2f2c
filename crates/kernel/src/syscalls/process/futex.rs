//! futex: wait and wake on a word of guest memory.

use std::time::{Duration, Instant};

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use crate::sched;
use crate::syscalls::{Args, Ctx, SysResult};
use crate::task::Wait;

pub fn futex(ctx: &mut Ctx, a: Args) -> SysResult {
    let (uaddr, op, val, timeout, uaddr2, val3) =
        (a.u64(0), a.u64(1), a.uint(2), a.u64(3), a.u64(4), a.uint(5));
    if uaddr % 4 != 0 {
        return Err(Errno::EINVAL.into());
    }
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let key = |ctx: &mut Ctx, addr: u64| futex_key(ctx, addr, op);
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT_BITSET {
                val3
            } else {
                u32::MAX
            };
            if bitset == 0 {
                return Err(Errno::EINVAL.into());
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let ns = crate::syscalls::time::read_ts(ctx, timeout)?;
                let rel = if cmd == FUTEX_WAIT_BITSET {
                    // Absolute on the chosen clock.
                    let clock = if op & FUTEX_CLOCK_REALTIME != 0 {
                        CLOCK_REALTIME
                    } else {
                        CLOCK_MONOTONIC
                    };
                    ns.saturating_sub(crate::syscalls::time::clock_ns(ctx, clock)?)
                } else {
                    ns
                };
                Some(ctx.k.syscall_deadline(Duration::from_nanos(rel)))
            };
            let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
            if cur != val {
                return Err(Errno::EAGAIN.into());
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Err(Errno::ETIMEDOUT.into());
            }
            let (addr, shared) = key(ctx, uaddr)?.wait_fields();
            Err(ctx.k.wait(Wait::Futex {
                addr,
                shared,
                bitset,
                deadline,
            }))
        }
        FUTEX_WAKE => {
            let k1 = key(ctx, uaddr)?;
            Ok(sched::futex_wake(ctx.k, k1, val, u32::MAX) as u64)
        }
        FUTEX_WAKE_BITSET => {
            if val3 == 0 {
                return Err(Errno::EINVAL.into());
            }
            let k1 = key(ctx, uaddr)?;
            Ok(sched::futex_wake(ctx.k, k1, val, val3) as u64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if cmd == FUTEX_CMP_REQUEUE {
                let cur: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr)?;
                if cur != val3 {
                    return Err(Errno::EAGAIN.into());
                }
            }
            // The fourth argument is the requeue count here.
            let n2 = timeout as u32;
            let (k1, k2) = (key(ctx, uaddr)?, key(ctx, uaddr2)?);
            Ok(sched::futex_requeue(ctx.k, k1, val, k2, n2) as u64)
        }
        FUTEX_WAKE_OP => {
            let encoded = val3;
            let old: u32 = ctx.k.mm.read_obj(ctx.mem, uaddr2)?;
            let shift = encoded & (8 << 28) != 0;
            let oparg = ((encoded << 8) as i32 >> 20) as u32;
            let oparg = if shift {
                1u32.wrapping_shl(oparg & 31)
            } else {
                oparg
            };
            let new = match (encoded >> 28) & 7 {
                0 => oparg,
                1 => old.wrapping_add(oparg),
                2 => old | oparg,
                3 => old & !oparg,
                4 => old ^ oparg,
                _ => return Err(Errno::ENOSYS.into()),
            };
            ctx.k.mm.write_obj(ctx.mem, uaddr2, &new)?;
            let cmparg = ((encoded << 20) as i32 >> 20) as i64;
            let o = old as i32 as i64;
            let hit = match (encoded >> 24) & 15 {
                0 => o == cmparg,
                1 => o != cmparg,
                2 => o < cmparg,
                3 => o <= cmparg,
                4 => o > cmparg,
                5 => o >= cmparg,
                _ => return Err(Errno::ENOSYS.into()),
            };
            let (k1, k2) = (key(ctx, uaddr)?, key(ctx, uaddr2)?);
            let mut woken = sched::futex_wake(ctx.k, k1, val, u32::MAX);
            if hit {
                woken += sched::futex_wake(ctx.k, k2, timeout as u32, u32::MAX);
            }
            Ok(woken as u64)
        }
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// The key of the futex at `uaddr`: a non-private futex in shared memory
/// is keyed by its guest-physical address, so that a waiter in one
/// process is woken from another; any other by its address here.
fn futex_key(ctx: &mut Ctx, uaddr: u64, op: u64) -> Result<sched::FutexKey, Errno> {
    if op & FUTEX_PRIVATE_FLAG == 0 {
        if let Some(gpa) = ctx.k.mm.shared_gpa(ctx.mem, uaddr)? {
            return Ok(sched::FutexKey::Shared(gpa));
        }
    }
    Ok(sched::FutexKey::Private(uaddr))
}
