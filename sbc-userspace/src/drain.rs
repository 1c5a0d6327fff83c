//! Draining for scale-in: new calls are refused (503 with Retry-After, and OPTIONS answered the
//! same way so balancers take this edge out), established calls go on until they end or the
//! deadline passes, then the daemon exits on its own.
use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{media::MediaPlane, proxy::ProxyHandle};

/// How often a drain looks whether the last call has ended.
const POLL: Duration = Duration::from_millis(200);
/// After the deadline's BYEs, how long their transactions get before the daemon exits.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

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

    pub fn status(&self) -> Value {
        json!({
            "draining": self.is_draining(),
            "deadline_secs": self.deadline.as_secs(),
            "remaining_secs": self.remaining().map(|r| r.as_secs()),
        })
    }

    /// Resolves once a drain has begun and the last call has ended, or its deadline has
    /// passed (the remaining calls are then hung up with BYE); pending forever otherwise.
    pub async fn finished(self: Arc<Self>, plane: Arc<MediaPlane>, proxy: Option<ProxyHandle>) {
        while !self.is_draining() {
            self.begun.notified().await;
        }
        loop {
            let calls = proxy.as_ref().map_or(0, ProxyHandle::active_calls);
            let sessions = plane.session_count();
            if calls == 0 && sessions == 0 {
                info!("drained: the last call has ended");
                return;
            }
            if self.remaining().is_some_and(|r| r.is_zero()) {
                warn!(
                    calls,
                    sessions, "drain deadline passed: hanging up the remaining calls"
                );
                if let Some(proxy) = &proxy {
                    proxy.hang_up_all();
                }
                tokio::time::sleep(HANGUP_GRACE).await;
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
