//! The vCPU threads' seccomp filter refuses what a VMM bug could be made
//! to do (sockets, processes, other ioctls) with EPERM, counted, and lets
//! the KVM work through.
#![allow(clippy::unwrap_used)]

use zeroboot_vmm::probe::RawGuest;
use zeroboot_vmm::seccomp;

#[test]
fn a_filtered_thread_runs_guests_but_cannot_reach_out() {
    let r = std::thread::spawn(|| {
        seccomp::install_vcpu_filter().unwrap();
        seccomp::take_denied();
        let errno = || std::io::Error::last_os_error().raw_os_error();
        // SAFETY: plain system calls with valid (or no) pointers.
        let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let socket_err = errno();
        // SAFETY: as above.
        let fork = unsafe { libc::syscall(libc::SYS_fork) };
        let fork_err = errno();
        let mut ws = [0u16; 4];
        // SAFETY: TIOCGWINSZ writes a winsize (8 bytes) into `ws`.
        let ioctl = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
        let ioctl_err = errno();
        let denied = seccomp::take_denied();
        // A guest still runs: mov eax, 39; syscall (an exit to the VMM).
        let mut g = RawGuest::new(&[0xb8, 39, 0, 0, 0, 0x0f, 0x05]).unwrap();
        let exit = g.vcpu.run(&g.mem).unwrap();
        (
            (socket, socket_err),
            (fork, fork_err),
            (ioctl, ioctl_err),
            denied,
            format!("{exit:?}"),
        )
    })
    .join()
    .unwrap();
    let eperm = Some(libc::EPERM);
    assert_eq!(r.0, (-1, eperm), "socket");
    assert_eq!(r.1, (-1, eperm), "fork");
    assert_eq!(r.2, (-1, eperm), "a tty ioctl");
    let nrs: Vec<i64> = r.3.iter().map(|d| d.0).collect();
    for nr in [libc::SYS_socket, libc::SYS_fork, libc::SYS_ioctl] {
        assert!(nrs.contains(&nr), "{nr} not counted: {:?}", r.3);
    }
    assert_eq!(r.4, "Syscall");
    // This thread was never filtered.
    // SAFETY: as above.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: closing the socket just made.
    unsafe { libc::close(fd) };
}
