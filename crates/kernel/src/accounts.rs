//! The sandbox's user accounts, as its own /etc/passwd and /etc/group say
//! (what `getpwnam` and `initgroups` would find inside): the host starts a
//! command or does a file operation "as user X" with these ids.

use crate::cred::Cred;
use crate::vfs::Vfs;

/// E2B's default user: what its envd runs commands as when the request
/// names nobody.
pub const DEFAULT_USER: &str = "user";

/// Why a name is not an account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("unknown user '{0}': no such account in the sandbox's /etc/passwd")]
    Unknown(String),
}

/// One /etc/passwd entry with its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group), the primary one included.
    pub groups: Vec<u32>,
    pub home: String,
}

impl Account {
    /// The credentials of a process this account logged in to.
    pub fn cred(&self) -> Cred {
        Cred::of(self.uid, self.gid, self.groups.clone())
    }
}

fn read(vfs: &Vfs, path: &str) -> String {
    vfs.host_read(path)
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default()
}

/// The account named `name` (or with numeric uid `name`).
pub fn lookup(vfs: &Vfs, name: &str) -> Result<Account, AccountError> {
    let unknown = || AccountError::Unknown(name.to_string());
    if name.is_empty() {
        return Err(unknown());
    }
    let passwd = read(vfs, "/etc/passwd");
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid = f[2].parse::<u32>().ok()?;
        let gid = f[3].parse::<u32>().ok()?;
        (f[0] == name || f[2] == name).then(|| (f[0].to_string(), uid, gid, f[5].to_string()))
    });
    let (name, uid, gid, home) = entry.ok_or_else(unknown)?;
    let mut groups = vec![gid];
    for l in read(vfs, "/etc/group").lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(g) = f[2].parse::<u32>() else { continue };
        if f[3].split(',').any(|m| m == name) && !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups.sort_unstable();
    Ok(Account {
        name,
        uid,
        gid,
        groups,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Give `account` its home directory, made if missing (an image's files
/// are all root's; the home is the account's, as `useradd -m` leaves it).
pub fn ensure_home(vfs: &mut Vfs, account: &Account) -> Result<(), crate::vfs::host::HostFsError> {
    vfs.host_mkdir_p(&account.home)?;
    let l = vfs.host_resolve(&account.home, true)?;
    if l.path != "/" && vfs.owner(&l.node) == (0, 0) {
        vfs.set_owner(&l.node, (account.uid, account.gid))
            .map_err(|_| {
                crate::vfs::host::HostFsError::Denied(l.path, "its owner cannot be set")
            })?;
    }
    Ok(())
}
