//! open, openat and creat (with `/proc/<pid>/fd/N` reopening), and the
//! other calls that make a new open file description: pipe, pipe2,
//! memfd_create.

use std::sync::Arc;

use zeroboot_abi::flags::*;
use zeroboot_abi::Errno;

use super::fcntl::close_fd;
use super::namei::{read_path, resolve_at, resolve_parent_at};
use crate::cred::Want;
use crate::fd::{FileKind, OpenFile};
use crate::kernel::Pipe;
use crate::proc;
use crate::syscalls::{now, Args, Ctx, SysResult};
use crate::vfs::{self, Lookup, Node, Synth};

/// Default pipe capacity (as Linux).
pub const PIPE_CAPACITY: usize = 64 << 10;

/// Resolve for open(2): follows symlinks, and a /proc/<pid>/fd/N link
/// reopens what that descriptor refers to (as Linux's magic links do).
enum OpenTarget {
    Node(Lookup),
    Reopen(OpenFile),
}

fn resolve_for_open(ctx: &Ctx, dirfd: i32, path: &str, follow: bool) -> Result<OpenTarget, Errno> {
    let mut l = resolve_at(ctx, dirfd, path, false)?;
    for _ in 0..40 {
        if !l.node.is_symlink() || !follow {
            return Ok(OpenTarget::Node(l));
        }
        let pid = ctx.k.proc.pid.to_string();
        let parts: Vec<&str> = l.path.split('/').filter(|s| !s.is_empty()).collect();
        if let ["proc", p, "fd", n] = parts.as_slice() {
            if *p == pid {
                let fd: i32 = n.parse().map_err(|_| Errno::ENOENT)?;
                let f = ctx.k.fds.get(fd)?;
                let mut nf = f.clone();
                nf.offset = 0;
                nf.dir_entries = None;
                // Reopening makes a new description.
                nf.ofd = crate::fd::description_id();
                return Ok(OpenTarget::Reopen(nf));
            }
        }
        let target = ctx.k.vfs.readlink(&l.path, &l.node)?;
        let base = vfs::parent(&l.path).to_string();
        let pv = ctx.k.proc_view();
        l = ctx.k.vfs.resolve(&base, &target, false, &pv)?;
    }
    Err(Errno::ELOOP)
}

fn do_open(ctx: &mut Ctx, dirfd: i32, path: &str, flags: u64, mode: u32) -> SysResult {
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let acc = flags & O_ACCMODE;
    if acc == 3 {
        return Err(Errno::EINVAL.into());
    }
    let writing = acc != O_RDONLY || flags & O_TRUNC != 0;
    let cloexec = flags & O_CLOEXEC != 0;
    let keep = flags
        & (O_ACCMODE
            | O_APPEND
            | O_NONBLOCK
            | O_DSYNC
            | O_DIRECT
            | O_LARGEFILE
            | O_NOATIME
            | O_PATH
            | O_DIRECTORY);
    let follow = flags & O_NOFOLLOW == 0;
    let target = match resolve_for_open(ctx, dirfd, path, follow) {
        Ok(t) => {
            if flags & O_CREAT != 0 && flags & O_EXCL != 0 {
                return Err(Errno::EEXIST.into());
            }
            t
        }
        Err(Errno::ENOENT) if flags & O_CREAT != 0 => {
            let (parent, name) = resolve_parent_at(ctx, dirfd, path)?;
            if name == "." || name == ".." || path.ends_with('/') {
                return Err(Errno::EISDIR.into());
            }
            let mode = mode & !ctx.k.proc.umask;
            let (cpath, ino) = ctx.k.vfs.create_file(&parent, &name, mode, now())?;
            let f = OpenFile::new(FileKind::Tmp(ino), cpath, keep);
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        Err(e) => return Err(e.into()),
    };
    let l = match target {
        OpenTarget::Reopen(mut f) => {
            f.flags = keep;
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        OpenTarget::Node(l) => l,
    };
    if l.node.is_symlink() {
        if flags & O_PATH != 0 {
            let f = OpenFile::new(FileKind::Path, l.path, keep);
            return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
        }
        return Err(Errno::ELOOP.into());
    }
    if flags & O_DIRECTORY != 0 && !l.node.is_dir() {
        return Err(Errno::ENOTDIR.into());
    }
    if flags & O_PATH != 0 {
        let f = OpenFile::new(FileKind::Path, l.path, keep);
        return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
    }
    ctx.k.vfs.permit(&l.node, open_want(acc, flags))?;
    if l.node.is_dir() {
        if writing || flags & O_CREAT != 0 {
            return Err(Errno::EISDIR.into());
        }
        let f = OpenFile::new(FileKind::Dir, l.path, keep);
        return Ok(ctx.k.fds.open(f, cloexec, 0)? as u64);
    }
    let kind = match &l.node {
        Node::Synth(Synth::Device(crate::vfs::Device::Pts(id))) => {
            crate::tty::open_slave(ctx.k, *id)?;
            FileKind::Pty(*id)
        }
        Node::Synth(Synth::Device(crate::vfs::Device::Tty)) => {
            // The caller's controlling terminal; a process without one
            // gets ENXIO, as on Linux (the console is not a terminal).
            let sid = ctx.k.proc.sid;
            match ctx
                .k
                .ptys
                .iter()
                .find(|(_, p)| p.session == sid && !p.hung_up)
            {
                Some((&id, _)) => FileKind::Pty(id),
                None => return Err(Errno::ENXIO.into()),
            }
        }
        Node::Synth(Synth::Device(crate::vfs::Device::Ptmx)) => {
            let id = crate::tty::open_master(ctx.k);
            let f = OpenFile::new(FileKind::PtyMaster(id), "/dev/ptmx", keep);
            return match ctx.k.fds.open(f, cloexec, 0) {
                Ok(fd) => Ok(fd as u64),
                Err(e) => {
                    ctx.k.pty_hangup(id);
                    Err(e.into())
                }
            };
        }
        Node::Synth(Synth::Device(d)) => FileKind::Device(*d),
        Node::Synth(Synth::File(pf)) => {
            if writing {
                return Err(Errno::EACCES.into());
            }
            FileKind::Generated(Arc::from(proc::generate(ctx, pf)))
        }
        Node::TmpFile(ino) if ctx.k.vfs.is_fifo(&l.node) => {
            return crate::file::fifo::open(ctx, *ino, l.path, keep, cloexec);
        }
        Node::TmpFile(ino) if ctx.k.vfs.is_socket(&l.node) => {
            // A socket node cannot be opened (Linux: ENXIO).
            let _ = ino;
            return Err(Errno::ENXIO.into());
        }
        Node::TmpFile(ino) => {
            if flags & O_TRUNC != 0 && acc != O_RDONLY {
                ctx.k.vfs.tmp.truncate(*ino, 0, now())?;
            }
            FileKind::Tmp(*ino)
        }
        Node::Image(m) if m.file_type() == S_IFREG => {
            if writing {
                if flags & O_TRUNC != 0 && acc != O_RDONLY {
                    // No need to copy what is about to be truncated.
                    let ino = ctx.k.vfs.tmp.new_file(m.mode & 0o7777, Vec::new(), now())?;
                    ctx.k.vfs.tmp.set(l.path.clone(), vfs::Entry::File(ino))?;
                    let owner = ctx.k.vfs.tmp.owner(m.ino);
                    ctx.k.vfs.tmp.set_owner(ino, owner);
                    FileKind::Tmp(ino)
                } else {
                    FileKind::Tmp(ctx.k.vfs.writable_file(&l.path, &l.node, now())?)
                }
            } else {
                FileKind::Image(ctx.k.vfs.image.open(&l.path).map_err(Errno::from)?)
            }
        }
        _ => return Err(Errno::EACCES.into()),
    };
    let f = OpenFile::new(kind, l.path, keep);
    Ok(ctx.k.fds.open(f, cloexec, 0)? as u64)
}

pub fn open(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    do_open(ctx, AT_FDCWD, &p, a.u64(1), a.uint(2))
}

pub fn openat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(1))?;
    do_open(ctx, a.fd(0), &p, a.u64(2), a.uint(3))
}

pub fn creat(ctx: &mut Ctx, a: Args) -> SysResult {
    let p = read_path(ctx, a.ptr(0))?;
    do_open(ctx, AT_FDCWD, &p, O_CREAT | O_WRONLY | O_TRUNC, a.uint(1))
}

pub fn pipe(ctx: &mut Ctx, a: Args) -> SysResult {
    pipe2(ctx, Args([a.u64(0), 0, 0, 0, 0, 0]))
}

pub fn pipe2(ctx: &mut Ctx, a: Args) -> SysResult {
    let flags = a.u64(1);
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let id = ctx.k.next_pipe;
    ctx.k.next_pipe += 1;
    ctx.k.pipes.insert(
        id,
        Pipe {
            buf: Default::default(),
            capacity: PIPE_CAPACITY,
            ..Default::default()
        },
    );
    let nb = flags & O_NONBLOCK;
    let cloexec = flags & O_CLOEXEC != 0;
    let name = format!("pipe:[{id}]");
    let r = ctx.k.fds.open(
        OpenFile::new(
            FileKind::Pipe { id, write: false },
            name.clone(),
            O_RDONLY | nb,
        ),
        cloexec,
        0,
    )?;
    let w = match ctx.k.fds.open(
        OpenFile::new(FileKind::Pipe { id, write: true }, name, O_WRONLY | nb),
        cloexec,
        0,
    ) {
        Ok(w) => w,
        Err(e) => {
            close_fd(ctx, r)?;
            return Err(e.into());
        }
    };
    let fds = [r, w];
    ctx.k.mm.write_obj(ctx.mem, a.ptr(0), &fds)?;
    Ok(0)
}

pub fn memfd_create(ctx: &mut Ctx, a: Args) -> SysResult {
    let name = read_path(ctx, a.ptr(0))?;
    if name.len() > 249 {
        return Err(Errno::EINVAL.into());
    }
    const MFD_CLOEXEC: u64 = 1;
    const MFD_ALLOW_SEALING: u64 = 2;
    if a.u64(1) & !(MFD_CLOEXEC | MFD_ALLOW_SEALING) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let ino = ctx.k.vfs.tmp.new_file(0o777, Vec::new(), now())?;
    let f = OpenFile::new(
        FileKind::Tmp(ino),
        format!("/memfd:{name} (deleted)"),
        O_RDWR,
    );
    Ok(ctx.k.fds.open(f, a.u64(1) & MFD_CLOEXEC != 0, 0)? as u64)
}

/// What opening with these flags asks of the file's permission bits.
fn open_want(acc: u64, flags: u64) -> Want {
    let mut w = 0;
    if acc != O_WRONLY {
        w |= Want::READ.0;
    }
    if acc != O_RDONLY || flags & O_TRUNC != 0 {
        w |= Want::WRITE.0;
    }
    Want(w)
}
