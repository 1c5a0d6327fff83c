//! Requests: absorb retransmissions, answer what is ours to answer, then route and forward
//! (RFC 3261 16.3-16.6) with Record-Route, our Via and the media anchored.
use std::{net::SocketAddr, sync::atomic::Ordering};

use sbc_common::branch;
use tracing::{debug, info};

use super::{
    Core, Output, Timer,
    answered::Answer,
    build,
    call_end::CallEnd,
    calls::Call,
    hiding,
    names::CallKey,
    names::{ClientKey, ServerKey},
    transactions::{Candidate, ClientTx, LINGER, Peer, Purpose, Reach, ServerTx, T1, Transport},
};
use crate::{
    proxy::dns::try_order,
    proxy::stats::Origin,
    side::Side,
    sip::{
        Message, Method, address, check,
        edit::Editor,
        syntax::{from_piece, param, split_top_level},
        uri::{self, Host},
    },
};

/// Max-Forwards of requests that arrive without one (RFC 3261 16.6 step 3).
const DEFAULT_MAX_FORWARDS: u8 = 70;

/// Where a request goes next and on which side it leaves.
struct NextHop {
    target: SocketAddr,
    side: Side,
    /// Where to fall back on: backends, for new calls from the public side; the trunk's
    /// other targets, for new requests to it.
    candidates: Vec<Candidate>,
    /// A new Request-URI (an in-dialog request sent to us instead of along its route set).
    request_uri: Option<String>,
    /// Routes to put in (the route set towards the other party of such a request).
    routes: Vec<String>,
    reach: Reach,
}

impl Core {
    pub(super) fn on_request(&mut self, peer: Peer, message: Message, request: check::Request) {
        let (side, from) = (peer.side, peer.address);
        let key = ServerKey::of(&message, &request, from);
        match request.method {
            Method::Ack => return self.on_ack(peer, &key, message, request),
            Method::Cancel => return self.on_cancel(peer, message, request),
            _ => {}
        }
        if self.absorbed(&key, peer, &message) {
            return;
        }
        let to_tag = self.tag();
        let in_dialog = request.in_dialog();
        if request.method == Method::Invite && !in_dialog {
            self.stats.calls_attempted.fetch_add(1, Ordering::Relaxed);
        }
        let known_call = self.find_call(&request);
        // A To tag alone does not make a request part of a call: only a call we hold does.
        let of_known_call = in_dialog && known_call.is_some();
        if !self.admit(&key, peer, &message, &request, of_known_call, &to_tag) {
            return;
        }
        if request.method == Method::Options && !in_dialog && self.addressed_to_us(&request) {
            return self.answer_options(peer, &message, &to_tag);
        }
        if max_forwards(&request) == 0 {
            let answer = self.own_answer(483, &to_tag);
            return self.refuse(&key, peer, &message, answer);
        }
        if !in_dialog && self.is_loop(&request) {
            let answer = self.own_answer(482, &to_tag);
            return self.refuse(&key, peer, &message, answer);
        }
        if let (true, Some(key)) = (in_dialog, &known_call) {
            self.note_cseq(key, side, request.cseq);
        }
        let hop = match self.next_hop(side, &request) {
            Ok(hop) => hop,
            Err((code, why)) => {
                info!(call_id = %request.call_id, "cannot route {}: {why}", request.method);
                let answer = self.own_answer(code, &to_tag);
                return self.refuse(&key, peer, &message, answer);
            }
        };
        let initial_invite = request.method == Method::Invite && !in_dialog;
        let call = if initial_invite {
            let key = CallKey::new(&request.call_id, request.from.tag().unwrap_or_default());
            if self.calls.contains_key(&key) {
                // A new INVITE for a call still set up (a retry after a challenge, glare):
                // the old attempt is over.
                self.end_call(&key, CallEnd::Replaced, None);
            }
            self.calls.insert(
                key.clone(),
                Call::new(&request, &message, peer, self.now.at),
            );
            self.call_started(&key);
            Some(key)
        } else {
            known_call
        };
        let template = match self.forwardable(peer, &message, &request, &hop) {
            Ok(template) => template,
            Err((code, why)) => {
                info!(call_id = %request.call_id, "refusing {}: {why}", request.method);
                let answer = self.own_answer(code, &to_tag);
                self.refuse(&key, peer, &message, answer);
                if let (true, Some(key)) = (initial_invite, &call) {
                    self.end_call(key, CallEnd::Failed, Some(code));
                }
                return;
            }
        };
        // A request whose Vias are hidden needs its transaction here to put them back.
        if in_dialog
            && request.method != Method::Invite
            && self.kernel.forwards(&request.call_id)
            && !self.hiding.hides_topology(side, hop.side)
        {
            // Its response comes back through the kernel, past any transaction here: it is
            // forwarded statelessly, as the kernel forwards it (RFC 3261 16.11).
            if let (Method::Bye, Some(call)) = (
                &request.method,
                call.and_then(|key| self.calls.get_mut(&key)),
            ) {
                call.bye_forwarded = Some(self.now.at);
            }
            let branch = self.branch_from(our_branch(&message, &request, hop.side));
            let (bytes, to) =
                self.with_our_via(&template, &branch, (hop.side, hop.target), hop.reach);
            return self.send_to(to, bytes);
        }
        if request.method == Method::Invite {
            let trying = build::response(&message, 100, "Trying", &to_tag, &[]);
            self.respond(peer, &message, 100, trying, Origin::Local);
        }
        let mut tx = ServerTx {
            upstream: peer,
            request: message,
            info: request,
            call,
            to_tag,
            last_response: None,
            final_code: None,
            client: None,
            template,
            out_side: hop.side,
            reach: hop.reach,
            balanced: !hop.candidates.is_empty(),
            candidates: hop.candidates,
            cancelled: false,
            provisional_forwarded: false,
            received: self.now.at,
        };
        if initial_invite
            && let Some(backend) = self.backends.id_of(hop.target)
            && let Some(call) = tx.call.as_ref().and_then(|key| self.calls.get_mut(key))
        {
            call.backend = Some(backend);
        }
        let target = hop.target;
        tx.candidates.retain(|&candidate| match candidate {
            Candidate::Backend(id) => self.backends[id].address != target,
            Candidate::Trunk(address) => address != target,
        });
        self.server.insert(key.clone(), tx);
        self.attempt(&key, target);
    }

    /// Sends the server transaction's request to `target` in a new client transaction.
    pub(super) fn attempt(&mut self, server_key: &ServerKey, target: SocketAddr) {
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        let (side, method) = (tx.out_side, tx.info.method.clone());
        let branch = our_branch(&tx.request, &tx.info, side);
        let branch = self.branch_from(branch);
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        let (bytes, to) = self.with_our_via(&tx.template, &branch, (side, target), tx.reach);
        let key = ClientKey::new(&branch, method.clone());
        let backend = self.backends.id_of(target);
        // RFC 3261 16.9: a transport error counts as a 503 from that hop (`SendFailed`).
        self.output(Output::Send {
            to,
            bytes: bytes.clone(),
            on_failure: Some(key.clone()),
        });
        self.client.insert(
            key.clone(),
            ClientTx {
                server: Some(server_key.clone()),
                purpose: Purpose::Forward,
                method: method.clone(),
                target,
                side,
                transport: to.transport,
                bytes,
                backend,
                provisional: false,
                final_code: None,
                interval: T1,
                sent: self.now.at,
            },
        );
        if let Some(tx) = self.server.get_mut(server_key) {
            tx.client = Some(key.clone());
        }
        if !to.transport.reliable() {
            self.schedule(Timer::Retransmit(key.clone()), T1);
        }
        let timeout = if method == Method::Invite {
            std::time::Duration::from_millis(self.config.invite_timeout_ms)
        } else {
            LINGER
        };
        // A call's INVITE in flight is recorded, so that a restart does not lose it.
        self.persist_setup(server_key);
        self.schedule(Timer::ClientTimeout(key), timeout);
    }

    /// A request made from `template` with our Via, and where it goes (`to`: a side and an
    /// address) and how: over the transport `request_transport` picks for its size, which our
    /// Via names (`UDP`, `TCP` and `TLS` are as long: the size is known before it is made).
    fn with_our_via(
        &self,
        template: &[u8],
        branch: &str,
        (side, target): (Side, SocketAddr),
        reach: Reach,
    ) -> (Vec<u8>, Peer) {
        let len = with_via_len(template, &self.via_line(side, branch, Transport::Udp));
        let transport = reach
            .connection
            .unwrap_or_else(|| self.request_transport(target, reach.tcp_asked, len));
        let bytes = with_via(template, &self.via_line(side, branch, transport));
        let to = Peer {
            side,
            address: target,
            transport,
        };
        (bytes, to)
    }

    /// OPTIONS to us: 200 while taking calls; 503 with Retry-After while draining, which
    /// balancers and dispatchers probing with OPTIONS read as "send no new calls here".
    fn answer_options(&mut self, peer: Peer, message: &Message, to_tag: &str) {
        let allow = (
            "Allow",
            "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO".to_owned(),
        );
        let (code, reason, mut extra) = if self.drain.is_draining() {
            (503, "Service Unavailable (draining)", self.retry_after(503))
        } else {
            (200, "OK", Vec::new())
        };
        extra.push(allow);
        let response = build::response(message, code, reason, to_tag, &extra);
        self.respond(peer, message, code, response, Origin::Local);
    }

    /// A retransmission of a request in a server transaction, or of one we refused, gets what
    /// we last said (if anything) and nothing else happens; true if `key` was one.
    pub(super) fn absorbed(&mut self, key: &ServerKey, peer: Peer, message: &Message) -> bool {
        if let Some(tx) = self.server.get(key) {
            if let Some(last) = tx.last_response.clone() {
                self.send_to(tx.upstream, last);
            }
            return true;
        }
        let Some(answer) = self.answered.get(key) else {
            return false;
        };
        let again = answer.to(message);
        self.send_to(peer, again);
        true
    }

    /// A new request that waited past `admission.shed_delay_ms`: refused at once, 503 with
    /// Retry-After, before any other work. Dropped silently it would come back as up to six
    /// retransmissions, which an overloaded edge can afford least of all; refused, its caller
    /// knows now and may go elsewhere.
    pub(super) fn refuse_stale(&mut self, peer: Peer, message: &Message, request: &check::Request) {
        let key = ServerKey::of(message, request, peer.address);
        if request.method == Method::Ack || self.absorbed(&key, peer, message) {
            return;
        }
        if request.method == Method::Invite {
            self.stats.calls_attempted.fetch_add(1, Ordering::Relaxed);
        }
        let to_tag = self.tag();
        let answer = Answer {
            reason: "Service Unavailable (the SBC is overloaded)".to_owned(),
            ..self.own_answer(503, &to_tag)
        };
        self.refuse(&key, peer, message, answer);
    }

    /// Answers a request with our own final response, and remembers it for the request's
    /// retransmissions (`answered`).
    pub(super) fn refuse(
        &mut self,
        key: &ServerKey,
        peer: Peer,
        request: &Message,
        answer: Answer,
    ) {
        let response = answer.to(request);
        self.respond(peer, request, answer.code, response, Origin::Local);
        self.answered.remember(key, answer, self.now.at);
    }

    /// Our own answer `code` (with its usual reason phrase, and Retry-After on a 503).
    pub(super) fn own_answer(&self, code: u16, to_tag: &str) -> Answer {
        Answer {
            code,
            reason: build::reason_phrase(code).to_owned(),
            to_tag: to_tag.to_owned(),
            extra: self.retry_after(code),
        }
    }

    pub(super) fn reply(
        &mut self,
        peer: Peer,
        request: &Message,
        code: u16,
        to_tag: &str,
        extra: &[(&str, String)],
    ) {
        let response = build::response(request, code, build::reason_phrase(code), to_tag, extra);
        self.respond(peer, request, code, response, Origin::Local);
    }

    pub(super) fn retry_after(&self, code: u16) -> Vec<(&'static str, String)> {
        if code == 503 {
            vec![("Retry-After", self.config.retry_after_secs.to_string())]
        } else {
            Vec::new()
        }
    }

    /// OPTIONS to one of our addresses, with no Route elsewhere: answered by the proxy (so
    /// load balancers and the tests can see it is alive).
    fn addressed_to_us(&self, request: &check::Request) -> bool {
        let Some(sip) = request.uri.as_sip() else {
            return false;
        };
        self.is_us(&sip.host, sip.port)
            && sip.userinfo.is_none()
            && request.routes.iter().all(|r| self.route_is_us(&r.uri))
    }

    fn route_is_us(&self, uri: &str) -> bool {
        match uri::parse(uri) {
            Ok(uri::Uri::Sip(sip)) => self.is_us(&sip.host, sip.port),
            _ => false,
        }
    }

    /// The branch `our_branch` chose: a transaction branch takes our next sequence number.
    fn branch_from(&mut self, branch: OurBranch) -> String {
        match branch {
            OurBranch::Stateless(branch) => branch,
            OurBranch::Transaction { loop_hash } => self.branch_with(&loop_hash),
        }
    }

    /// A new request that already went through us unchanged: one of the Vias is ours with
    /// the same loop hash (RFC 3261 16.3 step 4). Spirals (a new Request-URI) are fine.
    /// In-dialog requests follow a route set, which has no loop, and carry stateless branches
    /// without the hash; Max-Forwards ends a loop of those.
    fn is_loop(&self, request: &check::Request) -> bool {
        let hash = loop_hash(request);
        request.vias.iter().any(|via| {
            self.is_us(&via.host, via.port)
                && via
                    .branch()
                    .is_some_and(|b| b.ends_with(&format!("-{hash}")))
        })
    }

    fn next_hop(&mut self, side: Side, request: &check::Request) -> Result<NextHop, (u16, String)> {
        let in_dialog = request.in_dialog();
        let out = side.other();
        // The edge is no open relay: in-dialog requests only for dialogs it set up, and no
        // preloaded Route elsewhere on new requests from the Internet.
        if in_dialog && self.find_call(request).is_none() {
            return Err((481, "no such dialog here".into()));
        }
        let foreign_route = request.routes.iter().find(|r| !self.route_is_us(&r.uri));
        if foreign_route.is_some() && !in_dialog && side == Side::Public {
            return Err((403, "a preloaded Route elsewhere is not relayed".into()));
        }
        // Loose routing: our own Route entries are popped; the next one says where to go.
        if let Some(route) = foreign_route {
            return Ok(NextHop {
                target: uri_target(&route.uri)?,
                side: out,
                candidates: Vec::new(),
                request_uri: None,
                routes: Vec::new(),
                reach: Reach {
                    tcp_asked: uri_asks_tcp(&route.uri),
                    connection: None,
                },
            });
        }
        let uri = request.uri.as_sip().expect("checked: SIP Request-URI");
        if in_dialog && self.is_us(&uri.host, uri.port) {
            return self.dialog_peer(side, request);
        }
        if in_dialog || side == Side::Private {
            let uri = request.uri.as_sip().expect("checked: SIP Request-URI");
            let mut candidates = Vec::new();
            let target = match (uri.host.ip(), self.config.trunk) {
                (Some(ip), _) => SocketAddr::new(ip, uri.port.unwrap_or(5060)),
                (None, Some(trunk)) if !in_dialog => trunk,
                (None, None) if !in_dialog && !self.trunk_targets.is_empty() => {
                    let seed = super::backends::fnv1a(request.call_id.as_bytes());
                    let mut order = try_order(&self.trunk_targets, seed).into_iter();
                    let first = order.next().expect("not empty");
                    candidates.extend(order.map(Candidate::Trunk));
                    first
                }
                (None, _) => return Err((404, format!("cannot resolve {}", uri.host))),
            };
            return Ok(NextHop {
                target,
                side: out,
                candidates,
                request_uri: None,
                routes: Vec::new(),
                reach: Reach {
                    tcp_asked: asks_transport(uri, "tcp"),
                    connection: self.connection_to(out, request),
                },
            });
        }
        let candidates = self.backends.candidates(&request.call_id);
        let Some(&first) = candidates.first() else {
            let why = if self.backends.all_full() && !self.backends.is_empty() {
                "every backend is at its call limit"
            } else {
                "no backend is available"
            };
            return Err((503, why.into()));
        };
        Ok(NextHop {
            target: self.backends[first].address,
            side: Side::Private,
            candidates: candidates.into_iter().map(Candidate::Backend).collect(),
            request_uri: None,
            routes: Vec::new(),
            // The backends' own transport applies (`request_transport`).
            reach: Reach::default(),
        })
    }

    /// The connection that the party of `request`'s call on `side` reached us over, if it
    /// did over one: an in-dialog request to it goes back on it.
    fn connection_to(&self, side: Side, request: &check::Request) -> Option<Transport> {
        let call = self.calls.get(&self.find_call(request)?)?;
        [&call.caller, &call.callee]
            .into_iter()
            .find(|party| party.side == side)
            .and_then(|party| party.connection)
    }

    /// An in-dialog request addressed to us rather than routed through us (sent to the
    /// Contact we gave for a hidden party, or by user agents that ignore the route set): it
    /// goes to the other party of the call, at its Contact, along its route set beyond us.
    fn dialog_peer(&self, side: Side, request: &check::Request) -> Result<NextHop, (u16, String)> {
        let call = self
            .find_call(request)
            .and_then(|key| self.calls.get(&key))
            .ok_or((481, format!("no call {}", request.call_id)))?;
        let peer = if call.caller.side == side {
            &call.callee
        } else {
            &call.caller
        };
        let contact = peer
            .contact
            .clone()
            .ok_or((481, "the other party has no Contact yet".to_owned()))?;
        let (target, tcp_asked) = match peer.route_set.first() {
            Some(route) => (uri_target(route)?, uri_asks_tcp(route)),
            None => (
                uri_target(&contact).or_else(|e| peer.source.ok_or(e))?,
                uri_asks_tcp(&contact),
            ),
        };
        Ok(NextHop {
            target,
            side: peer.side,
            candidates: Vec::new(),
            request_uri: Some(contact),
            routes: peer.route_set.iter().map(|r| format!("<{r}>")).collect(),
            reach: Reach {
                tcp_asked,
                connection: peer.connection,
            },
        })
    }

    /// The request as it leaves, minus our Via: Max-Forwards, our Routes popped,
    /// Record-Route added, the previous hop's Via marked (received/rport), media anchored.
    fn forwardable(
        &mut self,
        peer: Peer,
        message: &Message,
        request: &check::Request,
        hop: &NextHop,
    ) -> Result<Vec<u8>, (u16, String)> {
        let (side, from) = (peer.side, peer.address);
        let in_dialog = request.in_dialog();
        // Callers answered 483 already when Max-Forwards was 0.
        let max_forwards = max_forwards(request).saturating_sub(1);
        let mut editor = Editor::new(message);
        if let Some(uri) = &hop.request_uri {
            editor.start_line(format!("{} {uri} SIP/2.0", request.method));
        }
        // The previous hop's Via: where responses really go (RFC 3581, RFC 3261 18.2.1).
        if let Some(index) = editor.first("via")
            && let Some(value) = marked_via(&message.headers[index].value, &request.vias[0], from)
        {
            editor.replace(index, &value);
        }
        match editor.first("max-forwards") {
            Some(index) => {
                editor.replace(index, &max_forwards.to_string());
            }
            None => {
                editor.insert(
                    message.headers.len(),
                    "Max-Forwards",
                    &max_forwards.to_string(),
                );
            }
        }
        self.pop_our_routes(message, &mut editor);
        let after_via = editor.first("via").map_or(0, |via| via + 1);
        for route in &hop.routes {
            editor.insert(after_via, "Route", route);
        }
        if side == Side::Private && hop.side == Side::Public {
            self.hiding.strip(message, &mut editor);
        }
        let hides = self.hiding.hides_topology(side, hop.side);
        if hides {
            hiding::hide_vias(message, &mut editor);
            self.hide_contacts(message, &mut editor);
        }
        if request.method.creates_dialog() && !in_dialog {
            if hides {
                // The Record-Routes of the private side's proxies stay on their side; the
                // public party's requests come to us, and go on along them (`dialog_peer`).
                hiding::remove_all(message, &mut editor, "record-route");
            }
            let index = editor
                .first("record-route")
                .or_else(|| editor.first("via").map(|v| v + 1))
                .unwrap_or(0);
            editor.insert(index, "Record-Route", &self.uri(hop.side));
            if hop.side != side
                && !hides
                && self.addresses.advertised(Side::Public)
                    != self.addresses.advertised(Side::Private)
            {
                // A party that came over TLS keeps to it (`;transport=tls`, our TLS port).
                let tls = matches!(peer.transport, Transport::Tls(_));
                editor.insert(index, "Record-Route", &self.record_route(side, tls));
            }
        }
        if let (true, Some(call)) = (message.has_sdp(), self.find_call(request)) {
            let body = self.anchor(&call, side, from.ip(), message.body())?;
            editor.body(body);
        }
        Ok(editor.finish())
    }

    /// Removes the Route values that name us (one or two: the double Record-Route).
    fn pop_our_routes(&self, message: &Message, editor: &mut Editor<'_>) {
        for (index, header) in message.headers.iter().enumerate() {
            if header.name != "route" {
                continue;
            }
            let values = split_top_level(&header.value, b',');
            let first_kept = values
                .iter()
                .position(|v| !address::parse(v).is_ok_and(|a| self.route_is_us(&a.uri)));
            match first_kept {
                Some(0) => return,
                Some(kept) => {
                    // The values that stay are copied as they were written.
                    editor.replace(index, from_piece(&header.value, values[kept]));
                    return;
                }
                None => {
                    editor.remove(index);
                }
            }
        }
    }

    fn on_ack(&mut self, peer: Peer, key: &ServerKey, message: Message, request: check::Request) {
        let side = peer.side;
        // The ACK of a non-2xx final response ends its INVITE transaction here (hop by hop).
        if self
            .server
            .get(key)
            .is_some_and(|tx| tx.final_code.is_some_and(|code| code >= 300))
        {
            return;
        }
        // The ACK of a 2xx is a request of its own, forwarded along the dialog.
        if max_forwards(&request) == 0 || !request.in_dialog() {
            return;
        }
        let Ok(hop) = self.next_hop(side, &request) else {
            debug!(call_id = %request.call_id, "ACK without a route dropped");
            return;
        };
        let Ok(template) = self.forwardable(peer, &message, &request, &hop) else {
            return;
        };
        let branch = self.branch_from(our_branch(&message, &request, hop.side));
        let (bytes, to) = self.with_our_via(&template, &branch, (hop.side, hop.target), hop.reach);
        self.send_to(to, bytes);
        if let Some(key) = self.find_call(&request)
            && self
                .calls
                .get(&key)
                .is_some_and(|call| call.caller.side == side)
        {
            self.caller_confirmed(&key);
        }
    }

    fn on_cancel(&mut self, peer: Peer, message: Message, request: check::Request) {
        let from = peer.address;
        let invite_key = ServerKey::of(
            &message,
            &check::Request {
                method: Method::Invite,
                ..request.clone()
            },
            from,
        );
        let to_tag = self.tag();
        if !self.server.contains_key(&invite_key) {
            return self.reply(peer, &message, 481, &to_tag, &[]);
        }
        let response = build::response(&message, 200, "OK", &to_tag, &[]);
        self.respond(peer, &message, 200, response, Origin::Local);
        let tx = self.server.get_mut(&invite_key).expect("checked above");
        if tx.final_code.is_some() || tx.cancelled {
            return;
        }
        tx.cancelled = true;
        tx.candidates.clear();
        let client = tx.client.clone();
        let provisional = client
            .as_ref()
            .and_then(|k| self.client.get(k))
            .is_some_and(|c| c.provisional);
        if provisional {
            if let Some(client) = client {
                self.send_cancel(&client);
            }
        } else {
            // Nothing reached the backend's user yet: end it here; a late answer is cancelled
            // when its provisional response arrives.
            self.finish_invite(&invite_key, 487, None);
        }
    }

    /// Sends CANCEL for a forwarded INVITE: same Request-URI, Call-ID, From, To, CSeq number,
    /// Route and our Via with the INVITE's branch (RFC 3261 9.1).
    pub(super) fn send_cancel(&mut self, invite_client: &ClientKey) {
        let Some(client) = self.client.get(invite_client) else {
            return;
        };
        let Some(bytes) = build::for_forwarded_invite(Method::Cancel, &client.bytes, None) else {
            return;
        };
        // The same way as the INVITE (RFC 3261 9.1).
        let to = client.peer();
        let key = ClientKey::new(&invite_client.branch, Method::Cancel);
        let cancel = ClientTx::own(Purpose::Cancel, Method::Cancel, to, bytes, self.now.at);
        self.originate(key.clone(), cancel, Timer::ClientDone(key), LINGER);
    }
}

/// The branch of our Via on a request.
enum OurBranch {
    /// In-dialog requests: the stateless branch (`sbc_common::branch`). The XDP program
    /// forwards those too and must give a request the branch the daemon would.
    Stateless(String),
    /// New requests: a transaction branch that ends with their loop hash.
    Transaction { loop_hash: String },
}

/// The branch a request leaving on `side` gets.
fn our_branch(message: &Message, request: &check::Request, side: Side) -> OurBranch {
    if !request.in_dialog() {
        return OurBranch::Transaction {
            loop_hash: loop_hash(request),
        };
    }
    let top_via = message
        .value("via")
        .map(|value| split_top_level(value, b',')[0])
        .unwrap_or_default();
    let hash = branch::branch_hash(top_via.as_bytes(), side.index());
    OurBranch::Stateless(String::from_utf8_lossy(&branch::stateless_branch(hash)).into_owned())
}

/// Where a Route URI points (IP addresses only: the proxy does not resolve names).
fn uri_target(route: &str) -> Result<SocketAddr, (u16, String)> {
    match uri::parse(route) {
        Ok(uri::Uri::Sip(sip)) => match &sip.host {
            Host::Ipv4(_) | Host::Ipv6(_) => Ok(SocketAddr::new(
                sip.host.ip().expect("an IP host"),
                sip.port.unwrap_or(5060),
            )),
            other => Err((404, format!("cannot resolve {other}"))),
        },
        _ => Err((400, format!("bad Route {route}"))),
    }
}

/// A short hash of what makes a request the same request for loop detection: Request-URI,
/// Call-ID, CSeq, From tag and the originator's Via.
pub(super) fn loop_hash(request: &check::Request) -> String {
    let origin = request
        .vias
        .last()
        .map(|v| format!("{}{:?}", v.host, v.branch()))
        .unwrap_or_default();
    let text = format!(
        "{:?}|{}|{}|{}|{origin}",
        request.uri,
        request.call_id,
        request.cseq,
        request.from.tag().unwrap_or_default()
    );
    format!(
        "{:x}",
        super::backends::fnv1a(text.as_bytes()) & 0xffff_ffff
    )
}

/// The first value of the previous hop's Via header (`via` is the whole value, `top` that
/// first value parsed) marked with where the request really came from: a bare `rport` gets
/// the source port (RFC 3581), `received` the source address when the Via names another host
/// (RFC 3261 18.2.1). Everything else is kept as written; `None` when nothing changes.
pub(super) fn marked_via(
    via: &str,
    top: &crate::sip::via::Via,
    from: SocketAddr,
) -> Option<String> {
    let first = split_top_level(via, b',')[0];
    let rest = &via[first.len()..];
    let mut marked = first.to_owned();
    if top
        .param("rport")
        .is_some_and(|rport| rport.value.is_none())
        && let Some(end) = bare_param_end(first, "rport")
    {
        marked.insert_str(end, &format!("={}", from.port()));
    }
    if top.host.ip() != Some(from.ip()) {
        marked.push_str(&format!(";received={}", from.ip()));
    }
    (marked != first).then(|| marked + rest)
}

/// Where the name of the valueless parameter `name` (any case) ends in a Via value.
fn bare_param_end(value: &str, name: &str) -> Option<usize> {
    let mut at = 0;
    for piece in value.split(';') {
        let end = at + piece.len();
        if at > 0 && crate::sip::syntax::trim_ws(piece).eq_ignore_ascii_case(name) {
            return Some(at + piece.trim_end_matches([' ', '\t']).len());
        }
        at = end + 1;
    }
    None
}

/// Max-Forwards as received, or the value a proxy adds when it is missing.
fn max_forwards(request: &check::Request) -> u8 {
    request.max_forwards.unwrap_or(DEFAULT_MAX_FORWARDS)
}

/// Whether a URI asks for a stream: TCP or TLS (`;transport=tcp` or `tls`, or `sips:`).
pub(super) fn uri_asks_stream(uri: &str) -> bool {
    match uri::parse(uri) {
        Ok(uri::Uri::Sip(sip)) => {
            sip.secure || asks_transport(&sip, "tcp") || asks_transport(&sip, "tls")
        }
        _ => false,
    }
}

/// Whether a URI asks to be reached over TCP (`;transport=tcp`).
pub(super) fn uri_asks_tcp(uri: &str) -> bool {
    match uri::parse(uri) {
        Ok(uri::Uri::Sip(sip)) => asks_transport(&sip, "tcp"),
        _ => false,
    }
}

/// Whether a SIP URI's `transport` parameter is `transport` (any case).
fn asks_transport(sip: &uri::SipUri, transport: &str) -> bool {
    param(&sip.params, "transport")
        .and_then(|p| p.value.as_deref())
        .is_some_and(|value| value.eq_ignore_ascii_case(transport))
}

/// The length of `with_via(template, via_line)`.
fn with_via_len(template: &[u8], via_line: &str) -> usize {
    template.len() + "Via: \r\n".len() + via_line.len()
}

/// The request with our Via on top (the first header after the start line).
fn with_via(template: &[u8], via_line: &str) -> Vec<u8> {
    let start_end = template
        .iter()
        .position(|&b| b == b'\n')
        .map_or(template.len(), |i| i + 1);
    let mut out = Vec::with_capacity(template.len() + via_line.len() + 8);
    out.extend_from_slice(&template[..start_end]);
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(via_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&template[start_end..]);
    out
}
