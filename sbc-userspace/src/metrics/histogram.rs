//! Latency histograms with fixed buckets, written from any thread without a lock.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds in seconds: call setup and SIP round trips, from a LAN hop to a slow answer.
pub const BOUNDS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            count: counts.iter().sum(),
            counts,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    counts: Vec<u64>,
    pub count: u64,
    sum_ns: u64,
}

impl HistogramSnapshot {
    /// (upper bound, observations at or below it) for every finite bound.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BOUNDS
            .iter()
            .zip(self.counts.iter().scan(0, |total, n| {
                *total += n;
                Some(*total)
            }))
            .map(|(&bound, cumulative)| (bound, cumulative))
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

/// A histogram per label value, created on first use (a backend's latency by method).
pub struct HistogramMap<K> {
    histograms: Mutex<Vec<(K, Arc<Histogram>)>>,
}

impl<K> Default for HistogramMap<K> {
    fn default() -> Self {
        Self {
            histograms: Mutex::new(Vec::new()),
        }
    }
}

impl<K: PartialEq + Clone> HistogramMap<K> {
    pub fn observe(&self, key: K, value: Duration) {
        let histogram = {
            let mut list = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
            match list.iter().find(|(k, _)| *k == key) {
                Some((_, h)) => Arc::clone(h),
                None => {
                    let h = Arc::new(Histogram::default());
                    list.push((key, Arc::clone(&h)));
                    h
                }
            }
        };
        histogram.observe(value);
    }

    pub fn snapshot(&self) -> Vec<(K, HistogramSnapshot)> {
        let list = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .map(|(k, h)| (k.clone(), h.snapshot()))
            .collect()
    }
}
