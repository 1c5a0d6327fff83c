//! Media counters since the daemon started, over every session ever held: what `/metrics`
//! exports as monotonic counters, although sessions (and their per-flow counters) come and go.
//!
//! Each session's counters are taken into the running totals by difference with what was
//! already taken: at every scrape for live sessions, and once more when a session ends. A
//! scrape reads a session only while holding the accumulator and only while the session is
//! still live, so an ending session is never counted twice or missed, and the totals never
//! go down.
use std::{collections::HashMap, sync::Mutex};

use super::{SessionInfo, session::StreamCounters};

/// The totals have the fields of one stream's counters, summed over every stream.
pub type MediaTotals = StreamCounters;

impl StreamCounters {
    /// The sum over a session's streams (RTP and RTCP of both legs).
    fn session_total(info: &SessionInfo) -> Self {
        let mut totals = Self::default();
        let streams = info
            .legs
            .iter()
            .flat_map(|leg| std::iter::once(&leg.rtp).chain(leg.rtcp.as_ref()));
        for stream in streams {
            totals.add_growth(stream, &Self::default());
        }
        totals
    }

    /// Adds what `now` has beyond `before` (each field on its own: counters only grow).
    fn add_growth(&mut self, now: &Self, before: &Self) {
        self.kernel_packets += now.kernel_packets.saturating_sub(before.kernel_packets);
        self.kernel_bytes += now.kernel_bytes.saturating_sub(before.kernel_bytes);
        self.userspace_packets += now
            .userspace_packets
            .saturating_sub(before.userspace_packets);
        self.userspace_bytes += now.userspace_bytes.saturating_sub(before.userspace_bytes);
        self.foreign_dropped += now.foreign_dropped.saturating_sub(before.foreign_dropped);
        self.unsignalled_dropped += now
            .unsignalled_dropped
            .saturating_sub(before.unsignalled_dropped);
        self.undeliverable += now.undeliverable.saturating_sub(before.undeliverable);
    }
}

#[derive(Default)]
pub(super) struct Accumulator {
    totals: MediaTotals,
    /// What has been taken into `totals` of each live session.
    taken: HashMap<u32, MediaTotals>,
}

impl Accumulator {
    /// Takes what a live session's counters grew by since last taken.
    pub(super) fn take(&mut self, info: &SessionInfo) {
        let now = StreamCounters::session_total(info);
        let before = self.taken.insert(info.id, now).unwrap_or_default();
        self.totals.add_growth(&now, &before);
    }

    /// Takes an ended session's final counters, and forgets it.
    pub(super) fn settle(&mut self, info: &SessionInfo) {
        self.take(info);
        self.taken.remove(&info.id);
    }

    pub(super) fn totals(&self) -> MediaTotals {
        self.totals
    }
}

pub(super) type SharedAccumulator = Mutex<Accumulator>;
