//! Rate caps on a sandbox's egress: bytes per second each way through its
//! host sockets, and UDP datagrams per second out (docs/network.md).
//!
//! Token buckets, one per direction and one for datagrams, per sandbox.
//! A stream past its cap is slowed, never failed: a send or receive takes
//! what the bucket holds, else the calling thread waits (as on a full
//! socket buffer) until the bucket has refilled; the scheduler wakes it
//! then (`Caps::wake`). A datagram past its cap is dropped, as Linux
//! drops one on a full buffer (a non-blocking sender gets EAGAIN).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The operator's caps (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Bytes per second, each direction.
    pub bandwidth: u64,
    /// UDP datagrams per second out.
    pub udp: u64,
}

/// Default bandwidth cap: 100 MiB/s each way per sandbox (~840 Mbit/s).
pub const DEFAULT_BANDWIDTH: u64 = 100 << 20;
/// Default UDP cap: datagrams per second per sandbox.
pub const DEFAULT_UDP_RATE: u64 = 2000;

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            bandwidth: DEFAULT_BANDWIDTH,
            udp: DEFAULT_UDP_RATE,
        }
    }
}

/// A bucket holds at most this long of its rate (a burst), and at least
/// `MIN_BURST_BYTES` / `MIN_BURST_DATAGRAMS`.
const BURST: Duration = Duration::from_millis(100);
const MIN_BURST_BYTES: f64 = 64.0 * 1024.0;
const MIN_BURST_DATAGRAMS: f64 = 16.0;
/// A throttled stream waits for this much room (or what it asked for, if
/// less) rather than being woken for every few bytes.
const MIN_CHUNK: f64 = 16.0 * 1024.0;

/// A token bucket. `tokens` may go below zero: a datagram or a receive
/// larger than what was left is paid for afterwards (the debt delays the
/// next one).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64, min_burst: f64, now: Instant) -> Bucket {
        let rate = rate as f64;
        let burst = (rate * BURST.as_secs_f64()).max(min_burst);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Tokens at `now` (without refilling the stored count).
    pub fn level(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * self.rate).min(self.burst)
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.level(now);
        self.at = now.max(self.at);
    }

    fn take(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }

    /// When the bucket holds `need` tokens (at most its burst).
    fn ready_at(&self, need: f64, now: Instant) -> Instant {
        let missing = need.min(self.burst) - self.level(now);
        if missing <= 0.0 {
            return now;
        }
        // At least 1 ms: a wake-up is not worth less.
        now + Duration::from_secs_f64(missing / self.rate).max(Duration::from_millis(1))
    }
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// What a cap said about a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead with at most this many bytes.
    Go(usize),
    /// Wait: the bucket refills at that time.
    Wait(Instant),
}

/// One sandbox's buckets (made at first use from the operator's rates).
#[derive(Debug, Clone, Default)]
pub struct Caps {
    out: Option<Bucket>,
    inn: Option<Bucket>,
    udp: Option<Bucket>,
    /// The earliest time a thread throttled by a cap may go on: the
    /// scheduler wakes the waiting threads then. Behind a lock: a
    /// readiness check (poll, epoll), which only reads, sets it too.
    wake: Wake,
}

/// A time settable through a shared reference (the kernel state is
/// shared between threads, so not a Cell; never contended).
#[derive(Debug, Default)]
struct Wake(Mutex<Option<Instant>>);

impl Wake {
    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, t: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clone for Wake {
    fn clone(&self) -> Wake {
        Wake(Mutex::new(self.get()))
    }
}

impl Caps {
    fn bucket(&mut self, dir: Dir, rates: Rates, now: Instant) -> Option<&mut Bucket> {
        if rates.bandwidth == 0 {
            return None;
        }
        let b = match dir {
            Dir::In => &mut self.inn,
            Dir::Out => &mut self.out,
        };
        Some(b.get_or_insert_with(|| Bucket::new(rates.bandwidth, MIN_BURST_BYTES, now)))
    }

    fn wake_at(&self, t: Instant) {
        self.wake.set(Some(self.wake.get().map_or(t, |w| w.min(t))));
    }

    /// When a thread slowed by a cap may go on (None: none waits).
    pub fn wake(&self) -> Option<Instant> {
        self.wake.get()
    }

    /// How much of a stream transfer of `want` bytes may go now.
    pub fn stream(&mut self, dir: Dir, want: usize, rates: Rates, now: Instant) -> Verdict {
        let Some(b) = self.bucket(dir, rates, now) else {
            return Verdict::Go(want);
        };
        let need = (want as f64).min(MIN_CHUNK);
        let level = b.level(now);
        if level >= need.min(b.burst) {
            return Verdict::Go((level as usize).clamp(1, want.max(1)));
        }
        let t = b.ready_at(need, now);
        self.wake_at(t);
        Verdict::Wait(t)
    }

    /// Whether a datagram may be received now (its size is paid after).
    pub fn datagram_in(&mut self, rates: Rates, now: Instant) -> Verdict {
        let Some(b) = self.bucket(Dir::In, rates, now) else {
            return Verdict::Go(usize::MAX);
        };
        if b.level(now) > 0.0 {
            return Verdict::Go(usize::MAX);
        }
        let t = b.ready_at(1.0, now);
        self.wake_at(t);
        Verdict::Wait(t)
    }

    /// Whether a datagram of `len` bytes may go out now; if so it is
    /// paid for. False: drop it (or EAGAIN).
    pub fn datagram_out(&mut self, len: usize, rates: Rates, now: Instant) -> bool {
        let udp_ok = rates.udp == 0
            || self
                .udp
                .get_or_insert_with(|| Bucket::new(rates.udp, MIN_BURST_DATAGRAMS, now))
                .level(now)
                >= 1.0;
        let bytes_ok = self
            .bucket(Dir::Out, rates, now)
            .is_none_or(|b| b.level(now) > 0.0);
        if !(udp_ok && bytes_ok) {
            return false;
        }
        if rates.udp != 0 {
            if let Some(b) = &mut self.udp {
                b.take(1.0, now);
            }
        }
        self.used(Dir::Out, len, rates, now);
        true
    }

    /// Pay for `n` bytes moved.
    pub fn used(&mut self, dir: Dir, n: usize, rates: Rates, now: Instant) {
        if let Some(b) = self.bucket(dir, rates, now) {
            b.take(n as f64, now);
        }
    }

    /// Whether a transfer that way may have to wait now (readiness: not
    /// ready until the bucket holds a chunk; a wake-up is set for then,
    /// so that a thread polling for it looks again).
    pub fn empty(&self, dir: Dir, now: Instant) -> bool {
        let b = match dir {
            Dir::In => &self.inn,
            Dir::Out => &self.out,
        };
        let Some(b) = b else {
            return false;
        };
        let need = MIN_CHUNK.min(b.burst);
        if b.level(now) >= need {
            return false;
        }
        self.wake_at(b.ready_at(need, now));
        true
    }

    /// Whether the wake-up time has come (it is cleared then).
    pub fn due(&mut self, now: Instant) -> bool {
        match self.wake.get() {
            Some(w) if w <= now => {
                self.wake.set(None);
                true
            }
            _ => false,
        }
    }
}

/// Parse a rate: a number with an optional K, M or G suffix (binary:
/// KiB, MiB, GiB; `KiB`/`MiB`/`GiB` and a trailing `/s` accepted), or
/// `off` (0: no cap).
pub fn parse_rate(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Some(0);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return None,
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rates = Rates {
        bandwidth: 1 << 20,
        udp: 100,
    };

    #[test]
    fn a_stream_gets_its_burst_then_waits_for_the_rate() {
        let t0 = Instant::now();
        let mut c = Caps::default();
        // 1 MiB/s: the burst is 100 ms of it, 102.4 KiB.
        let burst = (1u64 << 20) as f64 * 0.1;
        let Verdict::Go(n) = c.stream(Dir::In, 1 << 20, R, t0) else {
            panic!("the first read waits")
        };
        assert_eq!(n, burst as usize);
        c.used(Dir::In, n, R, t0);
        assert!(c.empty(Dir::In, t0) && !c.empty(Dir::Out, t0));
        let Verdict::Wait(t) = c.stream(Dir::In, 1 << 20, R, t0) else {
            panic!("an empty bucket lets a read go")
        };
        // 16 KiB at 1 MiB/s: 15.6 ms.
        let d = t - t0;
        assert!(
            d > Duration::from_millis(15) && d < Duration::from_millis(17),
            "{d:?}"
        );
        assert_eq!(c.wake(), Some(t));
        assert!(!c.due(t0) && c.due(t) && c.wake().is_none());
        assert!(matches!(c.stream(Dir::In, 1 << 20, R, t), Verdict::Go(n) if n >= 16 << 10));
        // A small write needs only its own size.
        let mut c = Caps::default();
        c.used(Dir::Out, burst as usize, R, t0);
        let Verdict::Wait(t) = c.stream(Dir::Out, 100, R, t0) else {
            panic!()
        };
        assert!(t - t0 <= Duration::from_millis(1));
    }

    #[test]
    fn datagrams_past_the_rate_are_refused_and_bytes_count_too() {
        let t0 = Instant::now();
        let mut c = Caps::default();
        let sent = (0..1000).filter(|_| c.datagram_out(10, R, t0)).count();
        // 100/s: a burst of 16 (the minimum), then one per 10 ms.
        assert_eq!(sent, 16);
        assert!(c.datagram_out(10, R, t0 + Duration::from_millis(10)));
        assert!(!c.datagram_out(10, R, t0 + Duration::from_millis(10)));
        // A big datagram may overdraw the byte bucket once; the next waits.
        let r = Rates {
            bandwidth: 1 << 20,
            udp: 0,
        };
        let mut c = Caps::default();
        assert!(c.datagram_out(200 << 10, r, t0));
        assert!(!c.datagram_out(1, r, t0));
        assert!(!c.datagram_out(1, r, t0 + Duration::from_millis(50)));
        assert!(c.datagram_out(1, r, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn no_caps_let_everything_through() {
        let t0 = Instant::now();
        let off = Rates {
            bandwidth: 0,
            udp: 0,
        };
        let mut c = Caps::default();
        assert_eq!(c.stream(Dir::Out, 1 << 30, off, t0), Verdict::Go(1 << 30));
        assert!((0..100_000).all(|_| c.datagram_out(1500, off, t0)));
        assert!(!c.empty(Dir::Out, t0) && c.wake().is_none());
    }

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_rate("100M"), Some(100 << 20));
        assert_eq!(parse_rate("100MiB/s"), Some(100 << 20));
        assert_eq!(parse_rate("4k"), Some(4096));
        assert_eq!(parse_rate("2000"), Some(2000));
        assert_eq!(parse_rate("1G"), Some(1 << 30));
        assert_eq!(parse_rate("off"), Some(0));
        for bad in ["", "fast", "10X", "-1", "1.5M"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
