//! What the admin API asks the proxy task about: its calls and its backends. Asked through
//! the task's queue (the proxy owns this state alone) and answered in one go.
use serde::Serialize;
use tokio::sync::oneshot;

use super::{
    Core,
    backends::{Health, Source},
    calls::CallSummary,
};
use crate::clock::Now;

/// A backend as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct BackendSummary {
    pub address: std::net::SocketAddr,
    pub weight: u32,
    pub healthy: bool,
    /// Seconds in its current health state.
    pub since_secs: u64,
    pub active_calls: usize,
    /// Its `max_calls` (0: no limit).
    pub max_calls: usize,
    /// Share of its last 128 final answers that were 5xx, 408 or none.
    pub failure_ratio: f64,
    /// The `[[sip.backend_hosts]]` host DNS found it for; none for a backend given by address.
    #[serde(default)]
    pub host: Option<String>,
    /// Its SRV priority (0 for a backend given by address).
    #[serde(default)]
    pub priority: u16,
    /// DNS no longer names it: it finishes its calls and takes no new ones.
    #[serde(default)]
    pub retired: bool,
}

/// A question for the proxy task, with where to send the answer.
pub enum Query {
    Calls(oneshot::Sender<Vec<CallSummary>>),
    Backends(oneshot::Sender<Vec<BackendSummary>>),
}

impl Query {
    /// Answers the question from the core's state. A requester that gave up has dropped its
    /// receiver: nothing to do.
    pub fn answer(self, core: &Core, now: Now) {
        match self {
            Query::Calls(reply) => {
                let _ = reply.send(core.call_summaries(now));
            }
            Query::Backends(reply) => {
                let _ = reply.send(core.backend_summaries(now));
            }
        }
    }
}

impl Core {
    pub fn call_summaries(&self, now: Now) -> Vec<CallSummary> {
        self.calls
            .values()
            .map(|call| {
                let backend = call.backend.map(|id| self.backends[id].address);
                call.summary(backend, now)
            })
            .collect()
    }

    pub fn backend_summaries(&self, now: Now) -> Vec<BackendSummary> {
        self.backends
            .iter()
            .zip(self.stats.backends.snapshot())
            .map(|((_, backend), stats)| BackendSummary {
                address: backend.address,
                weight: backend.weight,
                healthy: backend.health == Health::Up,
                since_secs: now.since(backend.changed_at).as_secs(),
                active_calls: backend.active_calls,
                max_calls: backend.max_calls,
                failure_ratio: stats.failure_ratio(),
                host: match backend.source {
                    Source::Address => None,
                    Source::Host(n) => self.config.backend_hosts.get(n).map(|h| h.host.clone()),
                },
                priority: backend.priority,
                retired: backend.retired,
            })
            .collect()
    }
}
