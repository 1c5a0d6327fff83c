//! Counters keyed by a label set that is only known at run time (a SIP method and code, a
//! reason), for writers that are not hot enough to need one atomic per combination.
use std::{collections::BTreeMap, sync::Mutex};

pub struct CounterMap<K> {
    counts: Mutex<BTreeMap<K, u64>>,
}

impl<K> Default for CounterMap<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord + Clone> CounterMap<K> {
    pub fn add(&self, key: K, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_default() += n;
    }

    pub fn increment(&self, key: K) {
        self.add(key, 1);
    }

    /// Every label set seen so far, in order.
    pub fn snapshot(&self) -> Vec<(K, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn get(&self, key: &K) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}
