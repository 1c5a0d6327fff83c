//! Target refresh (RFC 3261 12.2.1.2 and 12.2.2, RFC 3311 for UPDATE): a re-INVITE or an
//! UPDATE carries its sender's Contact and its 2xx the answerer's; from then on each party's
//! in-dialog requests go to the other's new Contact, through the daemon and through the kernel
//! alike (its dialog entry is rewritten; the kernel passes up a re-INVITE or UPDATE naming a
//! new Contact, so that the daemon sees every refresh).
use tracing::debug;

use super::{Core, GuardUpdate, calls::contact_uri, forwarding::tag_of, names::CallKey};
use crate::sip::Message;

impl Core {
    /// The Contacts of a 2xx (`answer`) to a re-INVITE or UPDATE of the answered call `key`,
    /// and of the request itself when it went through the daemon (`request`; the kernel
    /// forwards one only when it names its sender's known Contact), become the parties'
    /// targets; whether one changed. The initial INVITE's answer is not one:
    /// `invite_progress` reads it.
    pub(super) fn refresh_targets(
        &mut self,
        key: &CallKey,
        request: Option<&Message>,
        answer: &Message,
    ) -> bool {
        if !self.is_answered(key) {
            return false;
        }
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        // The request's sender is the party whose tag its From carries.
        let sender_tag = answer.value("from").and_then(tag_of);
        let caller_sent = sender_tag.is_some() && sender_tag == tag_of(&call.caller.address);
        let (sender, answerer) = if caller_sent {
            (&mut call.caller, &mut call.callee)
        } else {
            (&mut call.callee, &mut call.caller)
        };
        let mut changed = false;
        for (party, message) in [(sender, request), (answerer, Some(answer))] {
            let Some(contact) = message.and_then(contact_uri) else {
                continue;
            };
            if party.contact.as_deref() != Some(contact.as_str()) {
                debug!(call_id = %call.call_id, %contact, "target refreshed");
                party.contact = Some(contact);
                changed = true;
            }
        }
        if changed && call.caller_confirmed {
            // The kernel forwards the call's SIP: it learns the new targets (or stops
            // forwarding a direction whose target it cannot reach).
            if let Some(forwarding) = self.forwarding(key) {
                self.guard(GuardUpdate::DialogForwarding(Box::new(forwarding)));
            }
        }
        changed
    }

    /// Whether the call `key` is held and answered.
    pub(super) fn is_answered(&self, key: &CallKey) -> bool {
        self.calls
            .get(key)
            .is_some_and(|call| call.answered.is_some())
    }
}
