//! Admission at the proxy: scanners are blocked unanswered, out-of-dialog requests over their
//! limits get 503 with Retry-After, and requests of established calls pass untouched.
use std::{sync::atomic::Ordering, time::Duration};

use sbc_common::guard::{BLOCK_ABUSE, BLOCK_SCANNER};
use tracing::debug;

use super::{Core, GuardUpdate, names::ServerKey, transactions::Peer};
use crate::{
    admission::Refusal,
    sip::{Message, Method, check},
};

impl Core {
    /// Whether a request may be handled; if not, it has been answered (or, for a scanner,
    /// deliberately not) and counted.
    pub(super) fn admit(
        &mut self,
        key: &ServerKey,
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
        let now = self.now.monotonic_ns;
        let verdict = if request.method == Method::Invite && self.drain.is_draining() {
            self.admission_counters
                .draining
                .fetch_add(1, Ordering::Relaxed);
            Err(Refusal {
                reason: "the SBC is draining",
                block: None,
            })
        } else if request.method == Method::Invite {
            self.admission_counters
                .invites_offered
                .fetch_add(1, Ordering::Relaxed);
            let delay = self.waited;
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

    /// Blocks a source in the guard; the driver reports it (`source_blocked`) once in place.
    pub(super) fn block_source(
        &mut self,
        source: std::net::IpAddr,
        duration: Duration,
        reason: u32,
        why: &str,
    ) {
        self.guard(GuardUpdate::Block {
            source,
            duration,
            reason,
            why: why.to_owned(),
        });
    }
}
