//! Admission at the proxy: scanners are blocked unanswered, out-of-dialog requests over their
//! limits get 503 with Retry-After, and requests of established calls pass untouched.
use std::{sync::atomic::Ordering, time::Duration};

use sbc_common::guard::{BLOCK_ABUSE, BLOCK_SCANNER};
use serde_json::json;
use tracing::{debug, warn};

use super::{Proxy, transactions::Peer};
use crate::{
    admission::{Refusal, guard::block_reason_name},
    clock::monotonic_ns,
    sip::{Message, check},
};

impl Proxy {
    /// Whether a request may be handled; if not, it has been answered (or, for a scanner,
    /// deliberately not) and counted.
    pub(super) fn admit(
        &mut self,
        key: &str,
        peer: Peer,
        message: &Message,
        request: &check::Request,
        of_known_call: bool,
        to_tag: &str,
    ) -> bool {
        let source = peer.address.ip();
        if let Some(user_agent) = message.value("User-Agent")
            && self.admission.is_scanner(source, user_agent)
        {
            self.admission_counters
                .scanners
                .fetch_add(1, Ordering::Relaxed);
            let block = self.admission.scanner_block();
            self.block_source(source, block, BLOCK_SCANNER, user_agent);
            return false;
        }
        if of_known_call {
            return true;
        }
        let now = monotonic_ns();
        let verdict = if request.method == "INVITE" && self.drain.is_draining() {
            self.admission_counters
                .draining
                .fetch_add(1, Ordering::Relaxed);
            Err(Refusal {
                reason: "the SBC is draining",
                block: None,
            })
        } else if request.method == "INVITE" {
            let delay = self.event_delay;
            let calls = self.calls.len();
            self.admission
                .new_invite(source, calls, delay, &self.admission_counters, now)
        } else {
            self.admission
                .other_request(source, &self.admission_counters, now)
        };
        let Err(refusal) = verdict else {
            return true;
        };
        debug!(%source, method = %request.method, "refused: {}", refusal.reason);
        let answer = super::answered::Answer {
            reason: format!("Service Unavailable ({})", refusal.reason),
            ..self.own_answer(503, to_tag)
        };
        self.refuse(key, peer, message, answer);
        if let Some(block) = refusal.block {
            self.block_source(source, block, BLOCK_ABUSE, refusal.reason);
        }
        false
    }

    pub(super) fn block_source(
        &self,
        source: std::net::IpAddr,
        block: Duration,
        reason: u32,
        why: &str,
    ) {
        if let Err(e) = self.guard.block(source, Some(block), reason) {
            warn!(%source, "cannot block source: {e:#}");
            return;
        }
        warn!(%source, secs = block.as_secs(), reason = block_reason_name(reason), "source blocked: {why}");
        self.events.emit(
            "source_blocked",
            json!({
                "address": source,
                "reason": block_reason_name(reason),
                "secs": block.as_secs(),
                "detail": why,
            }),
        );
    }
}
