//! Calls the proxy ends itself: media stopped (or never came), or a drain's deadline passed.
//! An answered call gets a BYE to each end with a Reason header; one still being set up is
//! cancelled towards the callee and answered 503 upstream.
use std::net::SocketAddr;

use tracing::{info, warn};

use super::{
    Core, Timer, build,
    call_end::CallEnd,
    names::CallKey,
    names::{ClientKey, ServerKey},
    record::Party,
    requests::uri_asks_tcp,
    transactions::{ClientTx, LINGER, Peer, Purpose},
};
use crate::{
    media::SessionInfo,
    sip::{Method, address},
};

/// Why the proxy hangs up: what the call-end event says and the BYE's Reason header.
#[derive(Debug, Clone, Copy)]
pub struct HangUp {
    pub end_reason: CallEnd,
    /// RFC 3326 Reason: the SIP cause and its text.
    pub cause: u16,
    pub text: &'static str,
}

pub const MEDIA_TIMEOUT: HangUp = HangUp {
    end_reason: CallEnd::MediaTimeout,
    cause: 408,
    text: "media timeout",
};

pub const NO_AUDIO_FROM_CALLER: HangUp = HangUp {
    end_reason: CallEnd::NoAudio,
    cause: 408,
    text: "no audio from the caller",
};

pub const NO_AUDIO_FROM_CALLEE: HangUp = HangUp {
    end_reason: CallEnd::NoAudio,
    cause: 408,
    text: "no audio from the callee",
};

pub const DRAIN_DEADLINE: HangUp = HangUp {
    end_reason: CallEnd::DrainDeadline,
    cause: 503,
    text: "the SBC is shutting down",
};

impl Core {
    /// Media stopped: the calls of those sessions are hung up.
    pub(super) fn on_media_timeout(&mut self, sessions: &[SessionInfo]) {
        let calls: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, call)| {
                call.media
                    .iter()
                    .flatten()
                    .any(|id| sessions.iter().any(|s| s.id == *id))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for key in calls {
            self.hang_up(&key, MEDIA_TIMEOUT, sessions);
        }
    }

    /// Every call, at a drain's deadline.
    pub(super) fn hang_up_all(&mut self) {
        let keys: Vec<CallKey> = self.calls.keys().cloned().collect();
        for key in keys {
            self.hang_up(&key, DRAIN_DEADLINE, &[]);
        }
    }

    /// Ends one call from the middle; `ended` are its media sessions that ended already.
    pub(super) fn hang_up(&mut self, key: &CallKey, why: HangUp, ended: &[SessionInfo]) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let call_id = call.call_id.clone();
        if call.answered.is_some() {
            info!(%call_id, reason = why.text, "ending the call with BYE to both sides");
            let (mut caller, mut callee) = (call.caller.clone(), call.callee.clone());
            // Requests the kernel forwarded went past the CSeqs the daemon saw: ours go above.
            if let Some([from_caller, from_callee]) = self.kernel.highest_cseqs(&call_id) {
                caller.cseq = caller.cseq.max(from_caller);
                callee.cseq = callee.cseq.max(from_callee);
            }
            self.send_bye(&call_id, &caller, &callee, why);
            self.send_bye(&call_id, &callee, &caller, why);
        } else if let Some(server_key) = self.invite_of(key) {
            info!(%call_id, reason = why.text, "cancelling the call being set up");
            if let Some(client) = self
                .server
                .get(&server_key)
                .and_then(|tx| tx.client.clone())
            {
                self.send_cancel(&client);
            }
            // Ended first, so the call-end event carries this reason rather than "failed".
            self.end_call_with(key, why.end_reason, Some(503), ended);
            self.finish_invite(&server_key, 503, Some(why.text));
            return;
        }
        self.end_call_with(key, why.end_reason, None, ended);
    }

    /// The server transaction of a call's initial INVITE, while it has no final response.
    fn invite_of(&self, call_key: &CallKey) -> Option<ServerKey> {
        self.server
            .iter()
            .find(|(_, tx)| {
                tx.call.as_ref() == Some(call_key)
                    && tx.info.method == Method::Invite
                    && tx.final_code.is_none()
            })
            .map(|(key, _)| key.clone())
    }

    /// A BYE to `to`, sent as `from` would.
    fn send_bye(&mut self, call_id: &str, to: &Party, from: &Party, why: HangUp) {
        let target_uri = to.contact.clone().unwrap_or_else(|| {
            address::parse(&to.address)
                .map(|a| a.uri)
                .unwrap_or_default()
        });
        let next = to
            .route_set
            .first()
            .cloned()
            .unwrap_or_else(|| target_uri.clone());
        let destination = match crate::sip::uri::parse(&next) {
            Ok(crate::sip::uri::Uri::Sip(sip)) => sip
                .host
                .ip()
                .map(|ip| SocketAddr::new(ip, sip.port.unwrap_or(5060))),
            _ => None,
        }
        .or(to.source);
        let Some(destination) = destination else {
            warn!(%call_id, "no address to send BYE to");
            return;
        };
        let branch = self.branch();
        let transport = self.request_transport(destination, uri_asks_tcp(&target_uri), 0);
        let mut bye = build::RequestBuilder::new(&Method::Bye, &target_uri)
            .header("Via", &self.via_line(to.side, &branch, transport))
            .header("Max-Forwards", "70");
        for route in &to.route_set {
            bye = bye.header("Route", &format!("<{route}>"));
        }
        let reason = format!("SIP;cause={};text=\"{}\"", why.cause, why.text);
        let bytes = bye
            .header("From", &from.address)
            .header("To", &to.address)
            .header("Call-ID", call_id)
            .header("CSeq", &format!("{} BYE", from.cseq + 1))
            .header("Reason", &reason)
            .finish();
        let key = ClientKey::new(&branch, Method::Bye);
        let peer = Peer {
            side: to.side,
            address: destination,
            transport,
        };
        let bye = ClientTx::own(Purpose::Bye, Method::Bye, peer, bytes, self.now.at);
        self.originate(key.clone(), bye, Timer::ClientDone(key), LINGER);
    }
}
