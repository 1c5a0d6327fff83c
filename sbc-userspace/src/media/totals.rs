//! Media counters since the daemon started, over every session ever held: what `/metrics`
//! exports as monotonic counters, although sessions (and their per-flow counters) come and go.
//!
//! Each session's counters are taken into the running totals by difference with what was
//! already taken: at every scrape for live sessions, and once more when a session ends. A
//! scrape reads a session only while holding the accumulator and only while the session is
//! still live, so an ending session is never counted twice or missed, and the totals never
//! go down.
use std::{collections::HashMap, sync::Mutex};

use super::{SessionInfo, plane::MediaPlane, session::StreamCounters};

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
    fn take(&mut self, id: u32, now: MediaTotals) {
        let before = self.taken.insert(id, now).unwrap_or_default();
        self.totals.add_growth(&now, &before);
    }
}

impl MediaPlane {
    /// The totals over every session since the daemon started, live ones included.
    pub fn media_totals(&self) -> MediaTotals {
        let ids: Vec<u32> = self.lock().sessions.keys().copied().collect();
        for id in ids {
            // The accumulator first, then the session: `end` removes a session before it
            // settles its account, so a session found here is settled after this read.
            let mut accumulator = self.lock_totals();
            if let Some(info) = self.get(id) {
                accumulator.take(id, StreamCounters::session_total(&info));
            }
        }
        self.lock_totals().totals
    }

    /// Takes an ended session's final counters into the totals.
    pub(super) fn settle_totals(&self, info: &SessionInfo) {
        let mut accumulator = self.lock_totals();
        accumulator.take(info.id, StreamCounters::session_total(info));
        accumulator.taken.remove(&info.id);
    }

    fn lock_totals(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) type SharedAccumulator = Mutex<Accumulator>;
