//! Responses and client-transaction timers: match responses to what we sent (RFC 3261 17.1.3),
//! fail over to the next backend on timeout, 408 or 5xx before the caller hears anything, and
//! relay the rest upstream with our Via removed and media anchored.
use std::{net::SocketAddr, sync::atomic::Ordering};

use sbc_common::branch::STATELESS_BRANCH_PREFIX;
use tracing::{debug, info, warn};

use super::{
    Core, Timer,
    backends::{Health, Observation},
    build,
    call_end::CallEnd,
    hiding::HiddenContacts,
    names::{ClientKey, ServerKey},
    transactions::{Candidate, LINGER, Peer, Purpose, T2, TIMER_C},
};
use crate::{
    proxy::{stats::Origin, via_destination},
    side::Side,
    sip::{
        Message, Method, check,
        edit::Editor,
        syntax::{from_piece, split_top_level},
    },
};

impl Core {
    pub(super) fn on_response(
        &mut self,
        side: Side,
        from: SocketAddr,
        message: Message,
        response: check::Response,
    ) {
        let top = &response.vias[0];
        let (Some(branch), true) = (top.branch(), self.is_us(&top.host, top.port)) else {
            debug!("response not for us dropped");
            return;
        };
        let key = ClientKey::new(branch, response.cseq_method.clone());
        let code = response.code;
        if let Some(backend_id) = self.backends.id_of(from) {
            self.backends.heard_from(backend_id, self.now.at);
        }
        let Some(client) = self.client.get_mut(&key) else {
            // A 2xx to an INVITE outlives its transaction: its retransmissions go up as they
            // come. So do the responses to in-dialog requests the XDP program forwarded (they
            // never had a transaction here) or whose transaction ended.
            let stateless = branch.as_bytes().starts_with(STATELESS_BRANCH_PREFIX);
            if stateless || (response.cseq_method == Method::Invite && (200..300).contains(&code)) {
                self.forward_stateless(side, from, &message, &response, None);
            }
            return;
        };
        let first_response = !client.provisional && client.final_code.is_none();
        if let (true, Some(backend_id)) = (first_response, client.backend) {
            let method = client.method.label();
            self.stats
                .backends
                .get(backend_id.index())
                .latency
                .observe(method, self.now.since(client.sent));
        }
        let first_provisional = code < 200 && !client.provisional && client.is_invite();
        if code < 200 {
            client.provisional = true;
        } else if client.final_code.is_some() {
            // A retransmitted final response.
            let (invite, purpose) = (client.is_invite(), client.purpose);
            if purpose == Purpose::Forward && invite && code >= 300 {
                self.ack_failure(&key, &message);
            } else if purpose == Purpose::Forward && invite {
                let server = client.server.clone();
                self.forward_stateless(side, from, &message, &response, server.as_ref());
            }
            return;
        } else {
            client.final_code = Some(code);
            if let Some(backend_id) = client.backend {
                self.stats
                    .backends
                    .get(backend_id.index())
                    .answered(&client.method, Some(code));
            }
        }
        let (purpose, backend, invite, server) = (
            client.purpose,
            client.backend,
            client.is_invite(),
            client.server.clone(),
        );
        if first_provisional {
            self.schedule(Timer::Proceeding(key.clone()), TIMER_C);
            // Ringing: after a restart it is CANCEL, not a retransmission, that may follow.
            if let Some(server) = &server {
                self.persist_setup(server);
            }
        }
        match purpose {
            Purpose::Probe(backend_id) => {
                if code >= 200 {
                    self.client.remove(&key);
                    self.probe_answered(backend_id, code);
                }
                return;
            }
            Purpose::Cancel | Purpose::Bye => return,
            Purpose::Forward => {}
        }
        if code >= 200 {
            self.schedule(Timer::ClientDone(key.clone()), LINGER);
        }
        if invite && code >= 300 {
            self.ack_failure(&key, &message);
        }
        // How a backend answers a call is its health; how it answers an outsider's MESSAGE
        // or REGISTER is not.
        if let (Some(backend_id), true) = (backend, invite) {
            let observation = if code == 408 || code >= 500 {
                Observation::CallFailed
            } else {
                Observation::Alive
            };
            self.observe_backend(backend_id, observation, "call answered with a failure");
        }
        let Some(server) = server else { return };
        if code == 100 {
            return;
        }
        let answered_upstream = self
            .server
            .get(&server)
            .is_some_and(|tx| tx.cancelled && tx.final_code.is_some());
        if invite && answered_upstream {
            // We already told the caller 487: a backend that wakes up now is cancelled too.
            if code < 200 {
                self.send_cancel(&key);
            } else if code < 300 {
                warn!("a backend answered a call its caller had cancelled");
            }
            return;
        }
        if invite && (code == 408 || code >= 500) && self.fail_over(&server) {
            return;
        }
        self.relay(&server, from, &message, code);
    }

    /// Sends a response (from `from`) up through its server transaction: our Via removed, SDP
    /// anchored, a backend's 503 never passed on as it is (RFC 3261 16.7 step 6).
    fn relay(&mut self, server_key: &ServerKey, from: SocketAddr, message: &Message, code: u16) {
        if code >= 300
            && let Some((uniform, bytes)) = self.hide_failure(server_key, message, code)
        {
            let Some(tx) = self.server.get(server_key) else {
                return;
            };
            let (upstream, call, cancelled) = (tx.upstream, tx.call.clone(), tx.cancelled);
            let invite = tx.info.method == Method::Invite;
            self.finish_with(server_key, bytes, uniform, upstream, Origin::Relayed);
            if let (true, Some(call)) = (invite, call) {
                // The call's end says what really happened.
                self.invite_progress(&call, (message, from), code, cancelled);
            }
            return;
        }
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        if code == 503 {
            let (upstream, call, cancelled) = (tx.upstream, tx.call.clone(), tx.cancelled);
            let invite = tx.info.method == Method::Invite;
            let response =
                build::response(&tx.request, 500, "Server Internal Error", &tx.to_tag, &[]);
            self.finish_with(server_key, response, 500, upstream, Origin::Relayed);
            if let (true, Some(call)) = (invite, call) {
                self.invite_progress(&call, (message, from), 500, cancelled);
            }
            return;
        }
        let (upstream, out_side, call, method, cancelled) = (
            tx.upstream,
            tx.out_side,
            tx.call.clone(),
            tx.info.method.clone(),
            tx.cancelled,
        );
        let mut editor = Editor::new(message);
        let via_at = pop_top_via(message, &mut editor);
        if upstream.side == Side::Public && out_side == Side::Private {
            self.hiding.strip(message, &mut editor);
        }
        if let Some(tx) = self.server.get(server_key) {
            let sides = (out_side, upstream.side);
            let contacts = HiddenContacts::of(code, &method, tx.info.in_dialog());
            self.hide_in_response(sides, message, (Some(tx), via_at), contacts, &mut editor);
        }
        if let (true, Some(call)) = (message.has_sdp(), &call) {
            match self.anchor(call, out_side, from.ip(), message.body()) {
                Ok(body) => {
                    editor.body(body);
                }
                Err((_, e)) => warn!(%call, "cannot anchor the answer's media: {e}"),
            }
        }
        let bytes = editor.finish();
        // Only an answered call's targets are refreshed: the request is not copied for the
        // answer that sets a call up (`invite_progress` reads that one).
        let refresh = matches!(method, Method::Invite | Method::Update)
            && (200..300).contains(&code)
            && call.as_ref().is_some_and(|key| self.is_answered(key));
        if let (true, Some(call)) = (refresh, &call) {
            let request = self.server.get(server_key).map(|tx| tx.request.clone());
            // A re-INVITE's answer is persisted below with the rest of it.
            if self.refresh_targets(call, request.as_ref(), message) && method == Method::Update {
                self.persist(call);
            }
        }
        if let (true, Some(call)) = (method == Method::Invite, &call) {
            self.invite_progress(call, (message, from), code, cancelled);
            if (200..300).contains(&code) {
                // Answered, or re-INVITEd (a new target or media): what a restart needs.
                self.persist(call);
            }
        }
        if code < 200 {
            let Some(tx) = self.server.get(server_key) else {
                return;
            };
            self.count_response(upstream.side, &tx.request, code, Origin::Relayed);
            self.send_to(upstream, bytes.clone());
            if let Some(tx) = self.server.get_mut(server_key) {
                tx.provisional_forwarded = true;
                tx.last_response = Some(bytes);
            }
            return;
        }
        if method == Method::Bye
            && let Some(tx) = self.server.get(server_key)
        {
            self.stats
                .session_disconnect_delay
                .observe(self.now.since(tx.received));
        }
        self.finish_with(server_key, bytes, code, upstream, Origin::Relayed);
        if let (true, Some(call)) = (method == Method::Bye, &call) {
            self.end_call(call, CallEnd::Bye, Some(code));
        }
    }

    /// Sends a final response and keeps it for retransmissions.
    fn finish_with(
        &mut self,
        server_key: &ServerKey,
        bytes: Vec<u8>,
        code: u16,
        upstream: Peer,
        origin: Origin,
    ) {
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        self.count_response(upstream.side, &tx.request, code, origin);
        self.send_to(upstream, bytes.clone());
        if let Some(tx) = self.server.get_mut(server_key) {
            tx.last_response = Some(bytes);
            tx.final_code = Some(code);
        }
        self.schedule(Timer::ServerDone(server_key.clone()), LINGER);
    }

    /// Our own final response to an INVITE (487 after CANCEL, 503 with no backend, 408).
    pub(super) fn finish_invite(
        &mut self,
        server_key: &ServerKey,
        code: u16,
        _reason: Option<&str>,
    ) {
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        if tx.final_code.is_some() {
            return;
        }
        let (upstream, call) = (tx.upstream, tx.call.clone());
        let extra = self.retry_after(code);
        let response = build::response(
            &tx.request,
            code,
            build::reason_phrase(code),
            &tx.to_tag,
            &extra,
        );
        self.finish_with(server_key, response, code, upstream, Origin::Local);
        if let Some(call) = call {
            self.end_call(&call, CallEnd::of_final(code), Some(code));
        }
    }

    /// After a backend failed an INVITE: the next healthy candidate, or our own 503 when none
    /// is left. False when failover does not apply (the caller already heard something, or
    /// the request was not sent to a backend).
    fn fail_over(&mut self, server_key: &ServerKey) -> bool {
        let Some(tx) = self.server.get_mut(server_key) else {
            return false;
        };
        if tx.cancelled || tx.provisional_forwarded || tx.final_code.is_some() {
            return false;
        }
        if !tx.balanced {
            return false;
        }
        while let Some(next) = tx.candidates.first().copied() {
            tx.candidates.remove(0);
            let (target, backend) = match next {
                Candidate::Backend(id) if self.backends[id].health == Health::Up => {
                    (self.backends[id].address, Some(id))
                }
                Candidate::Backend(_) => continue,
                Candidate::Trunk(address) => (address, None),
            };
            info!(call_id = %tx.info.call_id, %target, "failing over to the next target");
            if let Some(id) = backend
                && let Some(call) = tx.call.clone().and_then(|key| self.calls.get_mut(&key))
            {
                call.backend = Some(id);
            }
            self.attempt(server_key, target);
            return true;
        }
        let why = match tx.out_side {
            Side::Private => "no backend answered",
            Side::Public => "no trunk target answered",
        };
        self.finish_invite(server_key, 503, Some(why));
        true
    }

    /// The hop-by-hop ACK for a non-2xx final response to an INVITE we sent (RFC 3261 17.1.1.3).
    fn ack_failure(&mut self, client_key: &ClientKey, response: &Message) {
        let Some(client) = self.client.get(client_key) else {
            return;
        };
        if let Some(ack) =
            build::for_forwarded_invite(Method::Ack, &client.bytes, response.value("to"))
        {
            let to = client.peer();
            self.send_to(to, ack);
        }
    }

    /// Relays a response that matches no transaction (2xx retransmissions) along its Vias,
    /// or, when they were hidden, to the sender of the request of `server` (still here)
    /// with them restored.
    fn forward_stateless(
        &mut self,
        side: Side,
        from: SocketAddr,
        message: &Message,
        response: &check::Response,
        server: Option<&ServerKey>,
    ) {
        // 100 Trying is hop by hop (RFC 3261 16.7 step 5).
        if response.code == 100 {
            return;
        }
        let hidden = server
            .and_then(|key| self.server.get(key))
            .filter(|tx| self.hiding.hides_topology(tx.upstream.side, tx.out_side));
        let destination = match (response.vias.get(1), hidden) {
            (Some(next), _) => via_destination(next),
            (None, Some(tx)) => Some(tx.upstream.address),
            (None, None) => None,
        };
        let Some(destination) = destination else {
            return;
        };
        let mut editor = Editor::new(message);
        let via_at = pop_top_via(message, &mut editor);
        if side == Side::Private {
            self.hiding.strip(message, &mut editor);
        }
        let sides = (side, side.other());
        // Only an INVITE's 2xx outlives its transaction: the rest answer in-dialog requests
        // (and an INVITE's Contact is rewritten, in a dialog or not).
        let in_dialog = response.cseq_method != Method::Invite;
        let contacts = HiddenContacts::of(response.code, &response.cseq_method, in_dialog);
        self.hide_in_response(sides, message, (hidden, via_at), contacts, &mut editor);
        // Its SDP is anchored as the first answer's was. An answer for a call we do not hold
        // would route media around the relay and name the far side's addresses: dropped.
        if message.has_sdp() {
            let anchored = self
                .find_call_of_response(message, response)
                .map(|call| self.anchor(&call, side, from.ip(), message.body()));
            match anchored {
                Some(Ok(body)) => {
                    editor.body(body);
                }
                Some(Err((_, why))) => {
                    warn!(call_id = %response.call_id, "cannot anchor a retransmitted answer, dropped: {why}");
                    return;
                }
                None => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    debug!(call_id = %response.call_id, "an answer for no call we hold dropped");
                    return;
                }
            }
        }
        let method = response.cseq_method.label();
        self.stats
            .responses_sent
            .increment((side.other(), method, response.code));
        let bytes = editor.finish();
        self.send(side.other(), destination, bytes);
        // The 2xx to a re-INVITE or UPDATE the kernel forwarded: the answerer's target may
        // be new.
        if matches!(response.cseq_method, Method::Invite | Method::Update)
            && (200..300).contains(&response.code)
            && let Some(call) = self.find_call_of_response(message, response)
            && self.refresh_targets(&call, None, message)
        {
            self.persist(&call);
        }
        // A BYE's final response ends its call, whoever forwarded the BYE.
        if response.cseq_method == Method::Bye
            && response.code >= 200
            && let Some(call) = self.find_call_of_response(message, response)
        {
            self.end_call(&call, CallEnd::Bye, Some(response.code));
        }
    }

    /// A request the transport could not send, or whose connection was lost before its
    /// final response: as if its hop answered 503 (RFC 3261 16.9), which fails over, or
    /// reaches the caller as 500. A backend that lost a call this way counts it as failed.
    pub(super) fn transport_failed(&mut self, key: &ClientKey) {
        let Some(client) = self.client.get_mut(key) else {
            return;
        };
        if client.final_code.is_some() {
            return;
        }
        client.final_code = Some(503);
        let (server, invite, backend) = (client.server.clone(), client.is_invite(), client.backend);
        self.schedule(Timer::ClientDone(key.clone()), LINGER);
        if let (Some(backend), true) = (backend, invite) {
            self.observe_backend(backend, Observation::CallFailed, "its connection failed");
        }
        let Some(server) = server else { return };
        if invite && self.fail_over(&server) {
            return;
        }
        let Some(tx) = self.server.get(&server) else {
            return;
        };
        let upstream = tx.upstream;
        let response = build::response(&tx.request, 500, "Server Internal Error", &tx.to_tag, &[]);
        self.finish_with(&server, response, 500, upstream, Origin::Local);
        if let (true, Some(call)) = (
            invite,
            self.server.get(&server).and_then(|tx| tx.call.clone()),
        ) {
            self.end_call(&call, CallEnd::Failed, Some(500));
        }
    }

    /// A TCP connection we opened to `address` on `side` closed (the peer went away, or
    /// stopped answering): the requests on it still waiting for a final response failed.
    pub(super) fn connection_lost(&mut self, side: Side, address: SocketAddr) {
        let lost: Vec<ClientKey> = self
            .client
            .iter()
            .filter(|(_, c)| {
                c.side == side
                    && c.target == address
                    && c.transport.outbound()
                    && c.final_code.is_none()
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in lost {
            self.transport_failed(&key);
        }
    }

    /// Timer C (RFC 3261 16.8): an INVITE that rang for too long without an answer is
    /// cancelled towards the backend and answered 408 upstream.
    pub(super) fn proceeding_timeout(&mut self, key: &ClientKey) {
        let Some(client) = self.client.get(key) else {
            return;
        };
        if client.final_code.is_some() {
            return;
        }
        let server = client.server.clone();
        info!("INVITE unanswered after ringing for {TIMER_C:?}: cancelling it");
        self.send_cancel(key);
        // Whatever the backend says now (487, or nothing at all), this attempt is over.
        self.schedule(Timer::ClientDone(key.clone()), LINGER);
        if let Some(server) = server {
            self.finish_invite(&server, 408, None);
        }
    }

    pub(super) fn retransmit(&mut self, key: &ClientKey) {
        let Some(client) = self.client.get_mut(key) else {
            return;
        };
        if !client.awaiting() {
            return;
        }
        client.interval = if client.is_invite() {
            client.interval * 2
        } else {
            (client.interval * 2).min(T2)
        };
        let (to, interval) = (client.peer(), client.interval);
        let bytes = client.bytes.clone();
        self.send_to(to, bytes);
        // Over TCP a request is sent once (again only after a restart, on a new connection).
        if !to.transport.reliable() {
            self.schedule(Timer::Retransmit(key.clone()), interval);
        }
    }

    pub(super) fn client_timeout(&mut self, key: &ClientKey) {
        let Some(client) = self.client.get_mut(key) else {
            return;
        };
        if client.final_code.is_some() || (client.is_invite() && client.provisional) {
            return;
        }
        client.final_code = Some(408);
        if let Some(backend_id) = client.backend {
            self.stats
                .backends
                .get(backend_id.index())
                .answered(&client.method, None);
        }
        let (purpose, backend, server, invite, sent) = (
            client.purpose,
            client.backend,
            client.server.clone(),
            client.is_invite(),
            client.sent,
        );
        self.schedule(Timer::ClientDone(key.clone()), LINGER);
        if let Purpose::Probe(backend_id) = purpose {
            self.client.remove(key);
            self.backend_left_unanswered(
                backend_id,
                sent,
                Observation::ProbeFailed,
                "probe timeout",
            );
            return;
        }
        if purpose != Purpose::Forward {
            return;
        }
        // Only a call left unanswered counts against a backend, and only if it answered
        // nothing else meanwhile: unanswered out-of-dialog requests are an outsider's doing,
        // and an INVITE lost in a busy backend's queue is no sign of a dead one.
        if let (Some(backend_id), true) = (backend, invite) {
            self.backend_left_unanswered(
                backend_id,
                sent,
                Observation::CallFailed,
                "call unanswered",
            );
        }
        let Some(server) = server else { return };
        if invite && self.fail_over(&server) {
            return;
        }
        if invite {
            self.finish_invite(&server, 408, None);
        } else if let Some(tx) = self.server.get(&server) {
            let upstream = tx.upstream;
            let response = build::response(&tx.request, 408, "Request Timeout", &tx.to_tag, &[]);
            self.finish_with(&server, response, 408, upstream, Origin::Local);
        }
    }
}

/// Removes the topmost Via value (ours) from a message being relayed; returns where its
/// header was (where hidden Vias go back).
fn pop_top_via(message: &Message, editor: &mut Editor<'_>) -> usize {
    let Some(index) = editor.first("via") else {
        return 0;
    };
    let value = &message.headers[index].value;
    let values = split_top_level(value, b',');
    if values.len() > 1 {
        // The Vias below ours are copied as they were written.
        editor.replace(index, from_piece(value, values[1]));
    } else {
        editor.remove(index);
    }
    index
}
