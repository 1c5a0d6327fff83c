//! Draining for scale-in: new calls are refused (503 with Retry-After, and OPTIONS answered the
//! same way so balancers take this edge out), established calls go on until they end or the
//! deadline passes, then the daemon exits on its own. This is the drain's state, which the
//! proxy reads; the daemon watches the calls end (`daemon::drained`).
use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tracing::info;

pub struct Drain {
    /// When the drain began; set once.
    started: OnceLock<Instant>,
    deadline: Duration,
    begun: Notify,
}

impl Drain {
    pub fn new(deadline: Duration) -> Self {
        Self {
            started: OnceLock::new(),
            deadline,
            begun: Notify::new(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.started.get().is_some()
    }

    /// Starts draining (a second call changes nothing); `why` is logged.
    pub fn begin(&self, why: &str) {
        if self.started.set(Instant::now()).is_ok() {
            info!(
                deadline_secs = self.deadline.as_secs(),
                "{why}: draining (new calls refused with 503, established calls continue)"
            );
            self.begun.notify_one();
        }
    }

    /// How long until established calls are ended, while draining.
    pub fn remaining(&self) -> Option<Duration> {
        self.started
            .get()
            .map(|t| self.deadline.saturating_sub(t.elapsed()))
    }

    pub fn status(&self) -> DrainStatus {
        DrainStatus {
            draining: self.is_draining(),
            deadline_secs: self.deadline.as_secs(),
            remaining_secs: self.remaining().map(|r| r.as_secs()),
        }
    }

    /// Resolves once a drain has begun.
    pub async fn begun(&self) {
        while !self.is_draining() {
            self.begun.notified().await;
        }
    }
}

/// A drain as `GET /v1/status` and `POST /v1/drain` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DrainStatus {
    pub draining: bool,
    pub deadline_secs: u64,
    /// Until the deadline, once draining.
    pub remaining_secs: Option<u64>,
}
