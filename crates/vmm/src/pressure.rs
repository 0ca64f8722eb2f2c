//! Host memory pressure: whether memory made ahead of need (spare forks,
//! pooled VMs) should be given back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The host has less than a tenth of its memory available (MemAvailable):
/// nothing is made ahead of need, and what was is dropped. Read at most
/// once a second (callers ask after every execution).
pub fn memory_tight() -> bool {
    static CHECKED: AtomicU64 = AtomicU64::new(0);
    static TIGHT: AtomicBool = AtomicBool::new(false);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if CHECKED.swap(now, Ordering::Relaxed) != now {
        TIGHT.store(read_memory_tight(), Ordering::Relaxed);
    }
    TIGHT.load(Ordering::Relaxed)
}

fn read_memory_tight() -> bool {
    match std::fs::read_to_string("/proc/meminfo") {
        Ok(info) => tight(&info),
        Err(_) => false,
    }
}

/// Whether a /proc/meminfo text says memory is short.
fn tight(meminfo: &str) -> bool {
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    match (field("MemAvailable:"), field("MemTotal:")) {
        (Some(avail), Some(total)) => avail.saturating_mul(10) < total,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::tight;

    #[test]
    fn short_below_a_tenth_available() {
        assert!(tight(
            "MemTotal: 1000 kB\nMemFree: 5 kB\nMemAvailable: 99 kB\n"
        ));
        assert!(!tight("MemTotal: 1000 kB\nMemAvailable: 100 kB\n"));
        // Unknown: not short.
        assert!(!tight("MemTotal: 1000 kB\n"));
    }
}
