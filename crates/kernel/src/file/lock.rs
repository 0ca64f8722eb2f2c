//! Advisory file locks between the sandbox's processes: flock(2) locks,
//! owned by an open file description, and fcntl(2) record locks, owned by
//! a process (F_SETLK...) or by an open file description (F_OFD_SETLK...).
//! As in Linux, the two families do not see each other, and process-owned
//! and description-owned record locks conflict with each other.
//!
//! A file is named by (st_dev, st_ino). A lock lives while its owner does:
//! a description-owned lock until the last descriptor of the description,
//! in any process, is closed; a process-owned lock until the process
//! closes any descriptor of the file (close, dup2/dup3 over it: the
//! `closing` hook of `syscalls::fs::lock`) or exits. The table is checked
//! against the live descriptions and processes before each use, so exit
//! and every way a description goes away release without a hook each
//! (execve's close-on-exec releases description locks that way, but not
//! the process's record locks on the files it closed: left out). Blocked
//! lockers are retried after every call that completes
//! (`sched::wake_retriers`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

use crate::kernel::Kernel;

/// A file: (st_dev, st_ino).
pub type Key = (u64, u64);

/// Why a locker waits (also how a stale waiter is told apart).
pub(crate) const WAIT: &str = "file lock";

/// Who owns a record lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    /// A process (F_SETLK): its pid.
    Process(u32),
    /// An open file description (F_OFD_SETLK): its id.
    Description(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flock {
    key: Key,
    ofd: u64,
    exclusive: bool,
}

/// A record lock over bytes `start..end` (`end` u64::MAX: to infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: Key,
    pub owner: Owner,
    pub write: bool,
    pub start: u64,
    pub end: u64,
}

impl Record {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// The sandbox's locks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Locks {
    flocks: Vec<Flock>,
    records: Vec<Record>,
    /// Threads waiting in F_SETLKW: tid -> (their process, the owner of
    /// the lock in the way), for deadlock detection.
    waits: BTreeMap<u32, (u32, Owner)>,
}

/// The live description ids and processes (what a lock's owner must be
/// among).
fn live(k: &Kernel) -> (BTreeSet<u64>, BTreeSet<u32>) {
    let ofds = k.live_descriptions().map(|f| f.ofd).collect();
    let mut pids: BTreeSet<u32> = k
        .others
        .values()
        .filter(|s| s.proc.dead.is_none())
        .map(|s| s.proc.pid)
        .collect();
    if k.proc.dead.is_none() {
        pids.insert(k.proc.pid);
    }
    (ofds, pids)
}

impl Locks {
    /// Drop the locks whose owner is gone, and waits no thread is in.
    pub(crate) fn prune(k: &mut Kernel) {
        let (ofds, pids) = live(k);
        let me = k.current;
        let stale: Vec<u32> =
            k.fs.locks
                .waits
                .keys()
                .copied()
                .filter(|&t| t != me && !super::fifo::blocked_for(k, t, WAIT))
                .collect();
        let l = &mut k.fs.locks;
        l.flocks.retain(|f| ofds.contains(&f.ofd));
        l.records.retain(|r| match r.owner {
            Owner::Process(p) => pids.contains(&p),
            Owner::Description(d) => ofds.contains(&d),
        });
        for t in stale {
            l.waits.remove(&t);
        }
    }

    /// flock(2): take (or convert to) a shared or exclusive lock for
    /// description `ofd`; EWOULDBLOCK when another description holds a
    /// conflicting one (the caller blocks unless LOCK_NB).
    pub fn flock(&mut self, key: Key, ofd: u64, exclusive: bool) -> Result<(), Errno> {
        let conflict = self
            .flocks
            .iter()
            .any(|f| f.key == key && f.ofd != ofd && (exclusive || f.exclusive));
        if conflict {
            return Err(Errno::EAGAIN);
        }
        self.flock_unlock(key, ofd);
        self.flocks.push(Flock {
            key,
            ofd,
            exclusive,
        });
        Ok(())
    }

    pub fn flock_unlock(&mut self, key: Key, ofd: u64) {
        self.flocks.retain(|f| !(f.key == key && f.ofd == ofd));
    }

    /// The first record lock of another owner that conflicts with a lock
    /// of `owner` (`write`: exclusive) over `start..end`.
    pub fn conflict(
        &self,
        key: Key,
        owner: Owner,
        write: bool,
        start: u64,
        end: u64,
    ) -> Option<Record> {
        self.records
            .iter()
            .find(|r| {
                r.key == key && r.owner != owner && (write || r.write) && r.overlaps(start, end)
            })
            .copied()
    }

    /// Set (`lock`: Some(write)) or clear `owner`'s record lock over
    /// `start..end`, splitting what it already holds there; the caller
    /// checked conflicts.
    pub fn set_record(&mut self, key: Key, owner: Owner, lock: Option<bool>, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.records.len() + 2);
        for r in self.records.drain(..) {
            if r.key != key || r.owner != owner || !r.overlaps(start, end) {
                kept.push(r);
                continue;
            }
            if r.start < start {
                kept.push(Record { end: start, ..r });
            }
            if r.end > end {
                kept.push(Record { start: end, ..r });
            }
        }
        if let Some(write) = lock {
            kept.push(Record {
                key,
                owner,
                write,
                start,
                end,
            });
        }
        // Adjacent ranges of one owner and type merge, as Linux's do.
        kept.sort_by_key(|r| (r.key, r.start));
        let mut merged: Vec<Record> = Vec::with_capacity(kept.len());
        for r in kept {
            match merged.last_mut() {
                Some(m)
                    if m.key == r.key
                        && m.owner == r.owner
                        && m.write == r.write
                        && m.end == r.start =>
                {
                    m.end = r.end;
                }
                _ => merged.push(r),
            }
        }
        self.records = merged;
    }

    /// Whether process `pid` holds any record lock.
    pub fn holds_records(&self, pid: u32) -> bool {
        self.records.iter().any(|r| r.owner == Owner::Process(pid))
    }

    /// A process closed a descriptor of `key`: its process-owned record
    /// locks on the file go (POSIX's rule).
    pub fn closed(&mut self, key: Key, pid: u32) {
        self.records
            .retain(|r| !(r.key == key && r.owner == Owner::Process(pid)));
    }

    /// Whether process `pid` waiting for `blocker` would wait for itself:
    /// the blocker (a process) waits for a lock whose owner waits ... for
    /// `pid` (Linux follows such a chain of process-owned locks).
    pub fn would_deadlock(&self, pid: u32, blocker: Owner) -> bool {
        let mut cur = blocker;
        for _ in 0..10 {
            let Owner::Process(p) = cur else {
                return false;
            };
            if p == pid {
                return true;
            }
            match self.waits.values().find(|(w, _)| *w == p) {
                Some(&(_, next)) => cur = next,
                None => return false,
            }
        }
        false
    }

    pub fn wait(&mut self, tid: u32, pid: u32, blocker: Owner) {
        self.waits.insert(tid, (pid, blocker));
    }

    pub fn done_waiting(&mut self, tid: u32) {
        self.waits.remove(&tid);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_split_merge_and_conflict() {
        let mut l = Locks::default();
        let k = (1, 2);
        let a = Owner::Process(10);
        let b = Owner::Process(11);
        l.set_record(k, a, Some(true), 0, 100);
        l.set_record(k, a, None, 40, 60);
        assert_eq!(l.records.len(), 2);
        assert!(l.conflict(k, b, false, 40, 60).is_none());
        assert_eq!(l.conflict(k, b, false, 30, 50).map(|r| r.end), Some(40));
        l.set_record(k, a, Some(true), 40, 60);
        assert_eq!(l.records.len(), 1);
        // Shared locks of two owners coexist; a write conflicts with them.
        l.set_record(k, b, Some(false), 200, u64::MAX);
        assert!(l.conflict(k, a, false, 300, 400).is_none());
        assert!(l.conflict(k, a, true, 300, 400).is_some());
        l.closed(k, 11);
        assert!(l.conflict(k, a, true, 300, 400).is_none());
    }

    #[test]
    fn flock_conflicts_and_deadlock_chains() {
        let mut l = Locks::default();
        let k = (1, 2);
        l.flock(k, 1, false).unwrap();
        l.flock(k, 2, false).unwrap();
        assert_eq!(l.flock(k, 3, true), Err(Errno::EAGAIN));
        l.flock_unlock(k, 1);
        l.flock_unlock(k, 2);
        l.flock(k, 3, true).unwrap();
        l.wait(100, 10, Owner::Process(11));
        assert!(l.would_deadlock(11, Owner::Process(10)));
        assert!(!l.would_deadlock(12, Owner::Process(10)));
        assert!(!l.would_deadlock(11, Owner::Description(5)));
    }
}
