//! Who a process acts as: its user and group ids (real, effective, saved,
//! file system) and supplementary groups, Linux's rules for changing them,
//! and the one discretionary access check (owner/group/other bits, root's
//! bypass) every file operation asks.
//!
//! Capabilities follow the ids as they do on Linux without securebits: a
//! process whose effective uid is 0 holds them all, one whose fsuid is 0
//! bypasses file permission bits. Set-user-id and set-group-id bits of
//! executables are not honoured (every mount of a sandbox is as `nosuid`):
//! a process changes ids only by asking, through the setuid family.

use serde::{Deserialize, Serialize};
use zeroboot_abi::Errno;

/// The most supplementary groups a process has (Linux's NGROUPS_MAX).
pub const NGROUPS_MAX: usize = 65536;

/// E2B's unprivileged user: the account every template has.
pub const USER_UID: u32 = 1000;
pub const USER_GID: u32 = 1000;

/// A process's credentials (`struct cred`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cred {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
}

impl Default for Cred {
    fn default() -> Cred {
        Cred::of(0, 0, Vec::new())
    }
}

/// What an access asks for (the `MAY_*` bits: r=4, w=2, x=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want(pub u32);

impl Want {
    pub const READ: Want = Want(4);
    pub const WRITE: Want = Want(2);
    pub const EXEC: Want = Want(1);
    /// Creating or removing a name in a directory: write and search.
    pub const DIR_CHANGE: Want = Want(3);
}

/// -1 as an id argument: "leave this one as it is".
fn keep(id: u32) -> bool {
    id == u32::MAX
}

impl Cred {
    /// A process running as `uid`/`gid` with these supplementary groups
    /// (what a login gives it).
    pub fn of(uid: u32, gid: u32, groups: Vec<u32>) -> Cred {
        Cred {
            uid,
            euid: uid,
            suid: uid,
            fsuid: uid,
            gid,
            egid: gid,
            sgid: gid,
            fsgid: gid,
            groups,
        }
    }

    /// CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_FOWNER...: held with euid 0.
    pub fn privileged(&self) -> bool {
        self.euid == 0
    }

    /// CAP_DAC_OVERRIDE as file accesses see it: follows the fsuid.
    pub fn fs_privileged(&self) -> bool {
        self.fsuid == 0
    }

    /// Whether the fs identity is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.fsgid == gid || self.groups.contains(&gid)
    }

    /// The credentials access(2) checks with: the real ids in place of
    /// the file system ones (AT_EACCESS: the effective ones).
    pub fn for_access(&self, effective: bool) -> Cred {
        let mut c = self.clone();
        if effective {
            (c.fsuid, c.fsgid) = (self.euid, self.egid);
        } else {
            (c.fsuid, c.fsgid) = (self.uid, self.gid);
        }
        c
    }

    /// The discretionary access check (Linux's `generic_permission` with
    /// CAP_DAC_OVERRIDE): may this process do `want` to a file of this
    /// mode and owner? Root may read and write anything, and execute
    /// what has any execute bit (or search any directory).
    pub fn may(&self, mode: u32, uid: u32, gid: u32, want: Want) -> Result<(), Errno> {
        let want = want.0 & 7;
        if self.fs_privileged() {
            let is_dir = mode & 0o170000 == 0o040000;
            if want & 1 == 0 || is_dir || mode & 0o111 != 0 {
                return Ok(());
            }
            return Err(Errno::EACCES);
        }
        let bits = if self.fsuid == uid {
            (mode >> 6) & 7
        } else if self.in_group(gid) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if bits & want == want {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// Whether this process may change a file owned by `uid` the way only
    /// its owner may (chmod, utimes to a given time): CAP_FOWNER or owner.
    pub fn owns(&self, uid: u32) -> bool {
        self.fs_privileged() || self.fsuid == uid
    }

    /// After execve: the saved ids take the effective ones (no set-id
    /// bits are honoured, so the effective ones stay).
    pub fn on_exec(&mut self) {
        self.suid = self.euid;
        self.sgid = self.egid;
    }

    /// setuid(2).
    pub fn setuid(&mut self, u: u32) -> Result<(), Errno> {
        if keep(u) {
            return Err(Errno::EINVAL);
        }
        if self.privileged() {
            (self.uid, self.euid, self.suid, self.fsuid) = (u, u, u, u);
        } else if u == self.uid || u == self.suid {
            (self.euid, self.fsuid) = (u, u);
        } else {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// setgid(2).
    pub fn setgid(&mut self, g: u32) -> Result<(), Errno> {
        if keep(g) {
            return Err(Errno::EINVAL);
        }
        if self.privileged() {
            (self.gid, self.egid, self.sgid, self.fsgid) = (g, g, g, g);
        } else if g == self.gid || g == self.sgid {
            (self.egid, self.fsgid) = (g, g);
        } else {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// setreuid(2): an unprivileged process may set the real id to the
    /// real or effective one, the effective id to any of the three; the
    /// saved id follows the new effective one when the real id is set or
    /// the effective one becomes other than the old real one.
    pub fn setreuid(&mut self, r: u32, e: u32) -> Result<(), Errno> {
        let p = self.privileged();
        if !keep(r) && !p && r != self.uid && r != self.euid {
            return Err(Errno::EPERM);
        }
        if !keep(e) && !p && e != self.uid && e != self.euid && e != self.suid {
            return Err(Errno::EPERM);
        }
        let old_r = self.uid;
        if !keep(r) {
            self.uid = r;
        }
        if !keep(e) {
            self.euid = e;
        }
        if !keep(r) || (!keep(e) && e != old_r) {
            self.suid = self.euid;
        }
        self.fsuid = self.euid;
        Ok(())
    }

    /// setregid(2), as setreuid.
    pub fn setregid(&mut self, r: u32, e: u32) -> Result<(), Errno> {
        let p = self.privileged();
        if !keep(r) && !p && r != self.gid && r != self.egid {
            return Err(Errno::EPERM);
        }
        if !keep(e) && !p && e != self.gid && e != self.egid && e != self.sgid {
            return Err(Errno::EPERM);
        }
        let old_r = self.gid;
        if !keep(r) {
            self.gid = r;
        }
        if !keep(e) {
            self.egid = e;
        }
        if !keep(r) || (!keep(e) && e != old_r) {
            self.sgid = self.egid;
        }
        self.fsgid = self.egid;
        Ok(())
    }

    /// setresuid(2): unprivileged, each new id must be one of the current
    /// three.
    pub fn setresuid(&mut self, r: u32, e: u32, s: u32) -> Result<(), Errno> {
        let cur = [self.uid, self.euid, self.suid];
        if !self.privileged() && [r, e, s].iter().any(|&x| !keep(x) && !cur.contains(&x)) {
            return Err(Errno::EPERM);
        }
        if !keep(r) {
            self.uid = r;
        }
        if !keep(e) {
            self.euid = e;
        }
        if !keep(s) {
            self.suid = s;
        }
        self.fsuid = self.euid;
        Ok(())
    }

    /// setresgid(2), as setresuid.
    pub fn setresgid(&mut self, r: u32, e: u32, s: u32) -> Result<(), Errno> {
        let cur = [self.gid, self.egid, self.sgid];
        if !self.privileged() && [r, e, s].iter().any(|&x| !keep(x) && !cur.contains(&x)) {
            return Err(Errno::EPERM);
        }
        if !keep(r) {
            self.gid = r;
        }
        if !keep(e) {
            self.egid = e;
        }
        if !keep(s) {
            self.sgid = s;
        }
        self.fsgid = self.egid;
        Ok(())
    }

    /// setfsuid(2): always returns the old fsuid; changes it when
    /// privileged or to one of the real, effective, saved or fs ids.
    pub fn setfsuid(&mut self, f: u32) -> u32 {
        let old = self.fsuid;
        if !keep(f)
            && (self.privileged() || [self.uid, self.euid, self.suid, self.fsuid].contains(&f))
        {
            self.fsuid = f;
        }
        old
    }

    /// setfsgid(2), as setfsuid (the privilege is still the euid's).
    pub fn setfsgid(&mut self, f: u32) -> u32 {
        let old = self.fsgid;
        if !keep(f)
            && (self.privileged() || [self.gid, self.egid, self.sgid, self.fsgid].contains(&f))
        {
            self.fsgid = f;
        }
        old
    }

    /// setgroups(2): CAP_SETGID only.
    pub fn setgroups(&mut self, groups: Vec<u32>) -> Result<(), Errno> {
        if groups.len() > NGROUPS_MAX {
            return Err(Errno::EINVAL);
        }
        if !self.privileged() {
            return Err(Errno::EPERM);
        }
        self.groups = groups;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NONE: u32 = u32::MAX;

    #[test]
    fn root_sets_anything_and_a_user_only_its_own_ids() {
        let mut c = Cred::default();
        c.setresgid(1000, 1000, 1000).unwrap();
        c.setresuid(1000, 1000, 0).unwrap();
        assert!(!c.privileged());
        // The saved root id lets it back.
        c.setuid(0).unwrap();
        assert_eq!((c.uid, c.euid, c.suid), (1000, 0, 0));
        c.setuid(1000).unwrap();
        assert_eq!((c.uid, c.euid, c.suid, c.fsuid), (1000, 1000, 1000, 1000));
        assert_eq!(c.setuid(0), Err(Errno::EPERM));
        assert_eq!(c.setuid(1001), Err(Errno::EPERM));
        assert_eq!(c.setreuid(0, NONE), Err(Errno::EPERM));
        assert_eq!(c.setresuid(NONE, 0, NONE), Err(Errno::EPERM));
        assert_eq!(c.setgroups(vec![]), Err(Errno::EPERM));
        assert_eq!(c.setgid(0), Err(Errno::EPERM));
        c.setresuid(NONE, NONE, NONE).unwrap();
        assert_eq!(c.setfsuid(0), 1000);
        assert_eq!(c.fsuid, 1000);
    }

    #[test]
    fn setreuid_moves_the_saved_id_as_linux_does() {
        let mut c = Cred::default();
        c.setreuid(NONE, 1000).unwrap();
        // The effective id differs from the real one (0): saved follows.
        assert_eq!((c.uid, c.euid, c.suid), (0, 1000, 1000));
        // Real id 0 is still ours to take back; the saved id stays, as
        // the new effective id is the real one.
        c.setreuid(NONE, 0).unwrap();
        assert_eq!((c.uid, c.euid, c.suid), (0, 0, 1000));
        let mut c = Cred::default();
        c.setresuid(0, 1000, 0).unwrap();
        // Swapping real and effective: allowed without privilege.
        c.setreuid(1000, 0).unwrap();
        assert_eq!((c.uid, c.euid, c.suid), (1000, 0, 0));
    }

    #[test]
    fn the_access_check_is_owner_group_other_with_roots_bypass() {
        let user = Cred::of(1000, 1000, vec![27]);
        let root = Cred::default();
        assert_eq!(user.may(0o100644, 0, 0, Want::WRITE), Err(Errno::EACCES));
        assert!(user.may(0o100644, 0, 0, Want::READ).is_ok());
        assert!(user.may(0o100600, 1000, 1000, Want::WRITE).is_ok());
        assert!(user.may(0o100060, 0, 27, Want::WRITE).is_ok());
        // Owner bits decide for the owner, even when others may more.
        assert_eq!(user.may(0o100077, 1000, 0, Want::READ), Err(Errno::EACCES));
        assert!(root.may(0o100000, 1000, 1000, Want::WRITE).is_ok());
        assert_eq!(root.may(0o100644, 0, 0, Want::EXEC), Err(Errno::EACCES));
        assert!(root.may(0o040700, 1000, 1000, Want::DIR_CHANGE).is_ok());
        assert_eq!(
            user.may(0o040755, 0, 0, Want::DIR_CHANGE),
            Err(Errno::EACCES)
        );
    }
}
