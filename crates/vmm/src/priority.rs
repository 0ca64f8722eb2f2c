//! Scheduling priority of the VMM's background threads.

/// Put the calling thread in SCHED_IDLE: it runs only on CPU time that no
/// other thread of the host wants. For work done ahead of need (warming
/// spare forks), which must never slow a request down. An unprivileged
/// thread may always lower its own priority; it cannot raise it again.
pub fn idle_only() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param
    // that lives across the call, and the kernel only reads it.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
