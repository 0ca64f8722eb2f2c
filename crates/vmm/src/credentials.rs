//! Giving up root. A server started as root needs it only to open
//! `/dev/kvm` and prepare its cache; afterwards it runs as an unprivileged
//! user, keeping the KVM handle it already holds (docs/security.md).

use std::io;

/// Become `uid`/`gid` with no supplementary groups, in every thread of
/// the process (glibc's set*id calls apply to all threads), irrevocably.
pub fn drop_to(uid: u32, gid: u32) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // What a non-dumpable process can no longer open (live forks read it).
    let _ = crate::memory::pagemap();
    // SAFETY: setgroups reads no memory when the count is 0; setresgid and
    // setresuid take plain integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    // Irrevocable: root must not come back.
    // SAFETY: as above.
    let back = unsafe { libc::setuid(0) };
    // SAFETY: getuid and geteuid cannot fail.
    let (ruid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid != 0 && (back == 0 || ruid != uid || euid != uid) {
        return Err(io::Error::other("the process could take root back"));
    }
    Ok(())
}
