//! CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so times from the XDP
//! program's counters and from the daemon compare directly.

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One reading of the clocks a protocol core works with: monotonic time as an `Instant` (for
/// timers and delays) and in nanoseconds (compared with the kernel's timestamps), and the wall
/// clock (for what outlives the process: journal records, events). The core never reads a clock
/// itself: its driver reads one `Now` per input, and tests make their own.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: std::time::Instant,
    pub monotonic_ns: u64,
    pub unix_ms: u64,
}

impl Now {
    pub fn read() -> Self {
        Self {
            at: std::time::Instant::now(),
            monotonic_ns: monotonic_ns(),
            unix_ms: unix_ms(),
        }
    }

    /// The same clocks `by` later.
    pub fn after(self, by: std::time::Duration) -> Self {
        Self {
            at: self.at + by,
            monotonic_ns: self.monotonic_ns + by.as_nanos() as u64,
            unix_ms: self.unix_ms + by.as_millis() as u64,
        }
    }

    /// How long ago `earlier` was (zero for an instant in the future).
    pub fn since(&self, earlier: std::time::Instant) -> std::time::Duration {
        self.at.saturating_duration_since(earlier)
    }
}
