//! Calls across daemon restarts: every answered call is recorded in the journal, and a new
//! daemon takes the recorded calls over at start, so their re-INVITEs and BYEs are routed and
//! their ends reported as if nothing had happened. Their media never stopped: the kernel kept
//! relaying it, and the media plane has adopted its sessions by then.
use std::sync::atomic::Ordering;

use serde_json::json;
use tracing::{info, warn};

use super::{Proxy, calls::Call, journal::CallRecord};

impl Proxy {
    /// Records (again) an answered call's dialog.
    pub(super) fn persist(&mut self, key: &str) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let backend = call.backend.map(|i| self.backends.list[i].address);
        if let Some(record) = call.record(key, backend) {
            self.journal.put(record);
        }
    }

    /// Takes over the calls a previous daemon recorded. A call none of whose media sessions
    /// survived (the userspace dataplane loses them with the process) cannot go on: it is
    /// reported ended.
    pub(super) fn restore_calls(&mut self, records: Vec<CallRecord>) {
        let mut restored = 0;
        for record in records {
            let key = record.key.clone();
            let sessions: Vec<u32> = record.media.iter().flatten().copied().collect();
            if !sessions.is_empty() && sessions.iter().all(|id| self.plane.get(*id).is_none()) {
                warn!(call_id = %record.call_id, "a recorded call lost its media in the restart; ending it");
                self.journal.end(&key);
                self.events.emit(
                    "call_ended",
                    json!({ "call_id": record.call_id, "reason": "media_lost_in_restart",
                            "final_code": null, "duration_ms": null }),
                );
                continue;
            }
            for id in &sessions {
                self.plane.watch_audio(*id);
            }
            let backend = record.backend.and_then(|a| self.backends.index_of(a));
            let call = Call::restore(record, backend);
            if let Some(index) = backend {
                self.backends.list[index].active_calls += 1;
            }
            if let Err(e) = self.guard.dialog_started(&call.call_id) {
                warn!(call_id = %call.call_id, "the kernel will limit this call's signalling: {e:#}");
            }
            self.calls.insert(key, call);
            restored += 1;
        }
        self.stats
            .calls_established
            .fetch_add(restored, Ordering::Relaxed);
        if restored > 0 {
            info!(
                calls = restored,
                "took over the established calls of the previous daemon"
            );
        }
    }
}
