//! Token buckets by source, in the daemon. The arithmetic is `sbc_common::TokenBucket`'s, the
//! same the XDP program runs, so a limit means the same thing on both sides.
use std::{collections::HashMap, net::IpAddr};

use sbc_common::{PacketLimit, TokenBucket};

/// Sources tracked at most; past it, idle ones are forgotten first, then the oldest.
const MAX_SOURCES: usize = 100_000;
const NS_PER_SEC: u64 = 1_000_000_000;

/// A limit as configured: `rate` per second, `burst` at once; a rate of 0 is no limit.
pub fn limit(rate: u32, burst: u32) -> PacketLimit {
    PacketLimit { rate, burst }
}

/// One bucket per source for one limit.
#[derive(Default)]
pub struct SourceBuckets {
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl SourceBuckets {
    /// Takes a token from `source`'s bucket: true if it may go on.
    pub fn take(&mut self, source: IpAddr, limit: &PacketLimit, now_ns: u64) -> bool {
        if limit.is_unlimited() {
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.forget_idle(limit, now_ns);
        }
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::full(limit, now_ns))
            .take(limit, now_ns)
    }

    /// Forgets buckets that have refilled completely (a new one would be the same); if that
    /// frees nothing, the least recently used half.
    fn forget_idle(&mut self, limit: &PacketLimit, now_ns: u64) {
        let refill_ns = u64::from(limit.burst) * NS_PER_SEC / u64::from(limit.rate.max(1));
        self.buckets
            .retain(|_, bucket| now_ns.saturating_sub(bucket.refilled_ns) < refill_ns);
        if self.buckets.len() >= MAX_SOURCES {
            let mut ages: Vec<u64> = self.buckets.values().map(|b| b.refilled_ns).collect();
            let (_, median, _) = ages.select_nth_unstable(MAX_SOURCES / 2);
            let median = *median;
            self.buckets.retain(|_, bucket| bucket.refilled_ns > median);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_have_their_own_buckets_and_no_limit_is_no_limit() {
        let mut buckets = SourceBuckets::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let two = limit(1, 2);
        assert!(buckets.take(a, &two, 0));
        assert!(buckets.take(a, &two, 0));
        assert!(!buckets.take(a, &two, 0));
        assert!(buckets.take(b, &two, 0));
        assert!(buckets.take(a, &two, NS_PER_SEC));
        assert!((0..1000).all(|_| buckets.take(a, &limit(0, 0), 0)));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut buckets = SourceBuckets::default();
        let one = limit(1, 1);
        for i in 0..(MAX_SOURCES as u32 + 10) {
            buckets.take(IpAddr::from(i.to_be_bytes()), &one, u64::from(i));
        }
        assert!(buckets.buckets.len() <= MAX_SOURCES);
    }
}
