//! Queued signal information: what a pending signal carries to its
//! handler (SA_SIGINFO) or to sigwaitinfo. A standard signal (1-31) is
//! pending once, with the first sender's siginfo (later sends coalesce); a
//! real-time signal (SIGRTMIN-SIGRTMAX, 32-64) is queued once per send, in
//! order, each with its own siginfo, up to RLIMIT_SIGPENDING.
//!
//! The queues sit next to the pending bits (`Process::pending`,
//! `Thread::pending`); a pending bit without a queued siginfo (a signal
//! the kernel raised itself) is taken with a synthesized one.

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

/// The first real-time signal (the kernel's SIGRTMIN; glibc keeps two).
pub const SIGRTMIN: u32 = 32;
/// sizeof(siginfo_t).
pub const SIZE: usize = 128;
/// si_code values (asm-generic/siginfo.h).
pub const SI_USER: i32 = 0;
pub const SI_QUEUE: i32 = -1;
pub const SI_TKILL: i32 = -6;
/// Queued real-time signals per process, as Linux's RLIMIT_SIGPENDING
/// default for a small machine bounds them.
pub const MAX_QUEUED: usize = 4096;

/// One queued signal and its `siginfo_t`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub sig: u32,
    pub info: Vec<u8>,
}

/// A `siginfo_t` for a signal sent by a process: si_signo, si_code, and
/// the sender's pid and uid.
pub fn from_sender(sig: u32, code: i32, pid: u32, uid: u32) -> Vec<u8> {
    let mut b = vec![0u8; SIZE];
    b[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
    b[8..12].copy_from_slice(&code.to_le_bytes());
    b[16..20].copy_from_slice(&pid.to_le_bytes());
    b[20..24].copy_from_slice(&uid.to_le_bytes());
    b
}

/// si_code of a raw `siginfo_t`.
pub fn code(info: &[u8]) -> i32 {
    info.get(8..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_le_bytes)
}

/// Record `info` for `sig` about to be raised at a target whose pending
/// bits are `pending` and queue is `queue`. A standard signal already
/// pending keeps its first siginfo; a real-time one past the limit is
/// EAGAIN (`limited`: a sigqueue; other senders still raise the signal,
/// without its information).
pub fn enqueue(
    pending: u64,
    queue: &mut Vec<Queued>,
    sig: u32,
    info: Vec<u8>,
    limited: bool,
) -> Result<(), Errno> {
    if sig < SIGRTMIN {
        if pending & (1u64 << (sig - 1)) != 0 {
            return Ok(());
        }
        // A stale entry (the bit was cleared without taking it) goes.
        queue.retain(|q| q.sig != sig);
    } else if queue.len() >= MAX_QUEUED {
        return if limited { Err(Errno::EAGAIN) } else { Ok(()) };
    }
    queue.push(Queued { sig, info });
    Ok(())
}

/// Take the first queued siginfo of `sig` and clear its pending bit
/// unless more instances are queued. None: the signal was raised without
/// one.
pub fn dequeue(pending: &mut u64, queue: &mut Vec<Queued>, sig: u32) -> Option<Vec<u8>> {
    let at = queue.iter().position(|q| q.sig == sig);
    let info = at.map(|i| queue.remove(i).info);
    if !queue.iter().any(|q| q.sig == sig) {
        *pending &= !(1u64 << (sig - 1));
    }
    info
}

/// A `siginfo_t` as the 128 bytes it is (a shorter record is padded).
pub fn to_array(info: &[u8]) -> [u8; SIZE] {
    let mut a = [0u8; SIZE];
    let n = info.len().min(SIZE);
    a[..n].copy_from_slice(&info[..n]);
    a
}

/// Take pending signal `sig` of the current thread (its own first, then
/// its process's) with its siginfo; one raised without is reported as
/// sent by the process itself (SI_TKILL).
pub(crate) fn take(k: &mut crate::kernel::Kernel, sig: u32) -> [u8; SIZE] {
    let bit = 1u64 << (sig - 1);
    let (pid, uid) = (k.proc.pid, k.proc.cred.uid);
    let t = k.thread_mut();
    let info = if t.pending & bit != 0 {
        dequeue(&mut t.pending, &mut t.queued, sig)
    } else {
        dequeue(&mut k.proc.pending, &mut k.proc.queued, sig)
    };
    to_array(&info.unwrap_or_else(|| from_sender(sig, SI_TKILL, pid, uid)))
}

/// Forget every queued instance of the signals in `mask` (discarded or
/// cleared).
pub fn discard(queue: &mut Vec<Queued>, mask: u64) {
    queue.retain(|q| mask & (1u64 << (q.sig - 1)) == 0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn standard_signals_coalesce_real_time_ones_queue() {
        let mut pending = 0u64;
        let mut q = Vec::new();
        enqueue(pending, &mut q, 10, from_sender(10, SI_USER, 5, 0), true).unwrap();
        pending |= 1 << 9;
        enqueue(pending, &mut q, 10, from_sender(10, SI_USER, 6, 0), true).unwrap();
        assert_eq!(q.len(), 1);
        for pid in [7, 8] {
            enqueue(pending, &mut q, 40, from_sender(40, SI_QUEUE, pid, 0), true).unwrap();
            pending |= 1 << 39;
        }
        let first = dequeue(&mut pending, &mut q, 40).unwrap();
        assert_eq!(first[16], 7);
        assert_ne!(pending & (1 << 39), 0);
        assert_eq!(dequeue(&mut pending, &mut q, 40).unwrap()[16], 8);
        assert_eq!(pending & (1 << 39), 0);
        assert_eq!(dequeue(&mut pending, &mut q, 10).unwrap()[16], 5);
        assert_eq!(pending, 0);
        assert_eq!(dequeue(&mut pending, &mut q, 12), None);
    }

    #[test]
    fn real_time_queue_is_bounded() {
        let mut q = Vec::new();
        for _ in 0..MAX_QUEUED {
            enqueue(0, &mut q, 33, vec![0; SIZE], true).unwrap();
        }
        assert_eq!(
            enqueue(0, &mut q, 33, vec![0; SIZE], true),
            Err(Errno::EAGAIN)
        );
        assert_eq!(enqueue(0, &mut q, 33, vec![0; SIZE], false), Ok(()));
        assert_eq!(q.len(), MAX_QUEUED);
    }
}
