//! Calls: the dialog each INVITE starts, its anchored media, and its events (one JSON line
//! each: started, ringing, answered, ended with reason, final code, duration and RTP packets
//! per direction).
use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{
    Core, GuardUpdate,
    backends::BackendId,
    call_end::CallEnd,
    forwarding::tag_of,
    names::CallKey,
    record::{CallRecord, Line, Party, SetupRecord},
    transactions::Peer,
};
use crate::{
    clock::Now,
    events::{self, Event, RtpPackets},
    media::{MediaError, PeerAnnouncement, SessionInfo, session::Leg},
    sdp::{self, Anchor},
    side::Side,
    sip::{Message, address, check},
};

#[derive(Debug)]
pub struct Call {
    pub call_id: String,
    pub caller: Party,
    pub callee: Party,
    /// The media session of each `m=` line (`None`: rejected stream).
    pub media: Vec<Option<u32>>,
    pub backend: Option<BackendId>,
    started: Instant,
    /// A response other than 100 came back (RFC 6076 SRD is measured up to the first one).
    responded: bool,
    ringing: Option<Instant>,
    pub answered: Option<Instant>,
    /// The caller acknowledged the answer (ACK of the 2xx): from then on a block of its
    /// address does not cut the call off. A flood's answered INVITEs are never acknowledged.
    pub caller_confirmed: bool,
    /// Recorded in the journal (its end must be too).
    pub journaled: bool,
    /// When the daemon forwarded a BYE of the call without a transaction (its answer goes
    /// through the kernel): the start of RFC 6076's session disconnect delay.
    pub bye_forwarded: Option<Instant>,
}

/// The URI of a message's first Contact.
pub(super) fn contact_uri(message: &Message) -> Option<String> {
    address::parse_list(message.value("contact")?)
        .ok()?
        .into_iter()
        .next()
        .map(|a| a.uri)
}

fn record_routes(message: &Message) -> Vec<String> {
    message
        .headers_named("record-route")
        .filter_map(|h| address::parse_list(&h.value).ok())
        .flatten()
        .map(|a| a.uri)
        .collect()
}

/// A call as the admin API shows it. The core knows its media sessions by id (`M = u32`); the
/// API shows the sessions themselves (`M = SessionInfo`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallSummary<M = u32> {
    pub call_id: String,
    pub from: String,
    pub to: String,
    /// The side the caller is on.
    pub caller_side: Side,
    pub state: CallState,
    pub backend: Option<SocketAddr>,
    pub age_ms: u64,
    /// Since the 2xx.
    pub answered_ms: Option<u64>,
    /// The media session of each `m=` line (`null`: a rejected stream).
    pub media: Vec<Option<M>>,
    /// SIP messages of the call (requests and responses, both ways) the kernel forwarded
    /// itself; `null` with the userspace dataplane.
    #[serde(default)]
    pub kernel_sip: Option<u64>,
}

impl<M> CallSummary<M> {
    /// The same call with each media session replaced by what `look_up` finds for it.
    pub fn with_media<N>(self, look_up: impl Fn(M) -> Option<N>) -> CallSummary<N> {
        CallSummary {
            call_id: self.call_id,
            from: self.from,
            to: self.to,
            caller_side: self.caller_side,
            state: self.state,
            backend: self.backend,
            age_ms: self.age_ms,
            answered_ms: self.answered_ms,
            media: self
                .media
                .into_iter()
                .map(|id| id.and_then(&look_up))
                .collect(),
            kernel_sip: self.kernel_sip,
        }
    }
}

/// How far a call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Trying,
    Ringing,
    Answered,
}

impl CallState {
    pub fn name(self) -> &'static str {
        match self {
            CallState::Trying => "trying",
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
        }
    }
}

/// CSeqs a restarted daemon adds to what its predecessor recorded: in-dialog requests since
/// the last record are not in it, and a BYE the proxy sends must go above them.
const RESTORED_CSEQ_MARGIN: u32 = 1000;

/// The `Instant` of a wall-clock time in the past.
fn instant_of_unix_ms(unix_ms: u64, now: Now) -> Instant {
    let ago = Duration::from_millis(now.unix_ms.saturating_sub(unix_ms));
    now.at.checked_sub(ago).unwrap_or(now.at)
}

fn unix_ms_of_instant(instant: Instant, now: Now) -> u64 {
    now.unix_ms
        .saturating_sub(now.since(instant).as_millis() as u64)
}

impl Call {
    /// The caller's address once it confirmed the call (see `caller_confirmed`).
    pub(super) fn confirmed_caller(&self) -> Option<std::net::IpAddr> {
        self.caller
            .source
            .filter(|_| self.caller_confirmed)
            .map(|source| source.ip())
    }

    /// What the guard learns when the call ends.
    pub(super) fn dialog_ended(&self) -> GuardUpdate {
        GuardUpdate::DialogEnded {
            call_id: self.call_id.clone(),
            confirmed_caller: self.confirmed_caller(),
        }
    }

    /// What the journal keeps of a call (with its INVITE transactions while it is set up).
    pub fn record(
        &self,
        key: &CallKey,
        backend: Option<SocketAddr>,
        setup: Option<SetupRecord>,
        now: Now,
    ) -> CallRecord {
        CallRecord {
            key: key.clone(),
            call_id: self.call_id.clone(),
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            media: self.media.clone(),
            backend,
            started_unix_ms: unix_ms_of_instant(self.started, now),
            answered_unix_ms: self.answered.map(|t| unix_ms_of_instant(t, now)),
            setup,
        }
    }

    /// A call as a previous daemon recorded it.
    pub fn restore(record: CallRecord, backend: Option<BackendId>, now: Now) -> Self {
        let started = instant_of_unix_ms(record.started_unix_ms, now);
        let provisional = record.setup.as_ref().is_some_and(|s| s.provisional);
        let mut call = Self {
            call_id: record.call_id,
            caller: record.caller,
            callee: record.callee,
            media: record.media,
            backend,
            started,
            responded: record.answered_unix_ms.is_some() || provisional,
            // When it started ringing is not recorded; that it did is.
            ringing: provisional.then_some(started),
            answered: record
                .answered_unix_ms
                .map(|ms| instant_of_unix_ms(ms, now)),
            // Whether its ACK came is not recorded; an answered call that lasted is taken as
            // acknowledged.
            caller_confirmed: record.answered_unix_ms.is_some(),
            journaled: true,
            bye_forwarded: None,
        };
        for party in [&mut call.caller, &mut call.callee] {
            party.cseq = party.cseq.saturating_add(RESTORED_CSEQ_MARGIN);
        }
        call
    }

    /// When its INVITE arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn summary(&self, backend: Option<SocketAddr>, now: Now) -> CallSummary {
        let state = match (self.answered, self.ringing) {
            (Some(_), _) => CallState::Answered,
            (None, Some(_)) => CallState::Ringing,
            (None, None) => CallState::Trying,
        };
        CallSummary {
            call_id: self.call_id.clone(),
            from: self.caller.address.clone(),
            to: self.callee.address.clone(),
            caller_side: self.caller.side,
            state,
            backend,
            age_ms: now.since(self.started).as_millis() as u64,
            answered_ms: self.answered.map(|t| now.since(t).as_millis() as u64),
            media: self.media.clone(),
            // The kernel's count is the dataplane's to tell (`SipGuard::forwarded_in_kernel`).
            kernel_sip: None,
        }
    }

    pub fn new(request: &check::Request, message: &Message, caller: Peer, now: Instant) -> Self {
        let side = caller.side;
        Self {
            call_id: request.call_id.clone(),
            caller: Party {
                side,
                address: message.value("from").unwrap_or_default().to_owned(),
                contact: contact_uri(message),
                // Record-Routes above ours were added by proxies between the caller and us.
                route_set: record_routes(message),
                source: Some(caller.address),
                cseq: request.cseq,
                connection: caller.transport.connection(),
            },
            callee: Party {
                side: side.other(),
                address: message.value("to").unwrap_or_default().to_owned(),
                contact: None,
                route_set: Vec::new(),
                source: None,
                cseq: 0,
                connection: None,
            },
            media: Vec::new(),
            backend: None,
            started: now,
            responded: false,
            ringing: None,
            answered: None,
            caller_confirmed: false,
            journaled: false,
            bye_forwarded: None,
        }
    }

    fn party_mut(&mut self, side: Side) -> &mut Party {
        if self.caller.side == side {
            &mut self.caller
        } else {
            &mut self.callee
        }
    }
}

/// How a call is refused when its media cannot be anchored: 503 (with Retry-After) when the
/// relay is out of ports or sessions, 488 when the media itself cannot be relayed (IPv6 for
/// now), 500 otherwise.
fn media_refusal(error: MediaError) -> (u16, String) {
    let status = match &error {
        MediaError::Exhausted(_) => 503,
        MediaError::Invalid(_) => 488,
        MediaError::NotFound(_) | MediaError::Internal(_) => 500,
    };
    (status, error.to_string())
}

impl Core {
    /// The call a request belongs to: named by its From tag (the caller's requests) or its To
    /// tag (the callee's).
    pub(super) fn find_call(&self, request: &check::Request) -> Option<CallKey> {
        self.find_call_by(&request.call_id, [request.from.tag(), request.to.tag()])
    }

    /// The call a response belongs to, by the tags of its From and To.
    pub(super) fn find_call_of_response(
        &self,
        message: &Message,
        response: &check::Response,
    ) -> Option<CallKey> {
        let tag = |name| message.value(name).and_then(tag_of);
        let (from, to) = (tag("from"), tag("to"));
        self.find_call_by(&response.call_id, [from.as_deref(), to.as_deref()])
    }

    fn find_call_by(&self, call_id: &str, tags: [Option<&str>; 2]) -> Option<CallKey> {
        tags.into_iter()
            .flatten()
            .map(|tag| CallKey::new(call_id, tag))
            .find(|key| self.calls.contains_key(key))
    }

    /// The ACK of a call's answer came from its caller: the guard learns the caller.
    pub(super) fn caller_confirmed(&mut self, key: &CallKey) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.caller_confirmed || call.answered.is_none() {
            return;
        }
        call.caller_confirmed = true;
        if let Some(caller) = call.confirmed_caller() {
            self.guard(GuardUpdate::CallerConfirmed(caller));
        }
        // Confirmed both ways: from now on its in-dialog SIP may go through the kernel.
        if let Some(forwarding) = self.forwarding(key) {
            self.guard(GuardUpdate::DialogForwarding(Box::new(forwarding)));
        }
    }

    pub(super) fn call_started(&mut self, key: &CallKey) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let started = Event::CallStarted(events::CallStarted {
            call_id: call.call_id.clone(),
            from: call.caller.address.clone(),
            to: call.callee.address.clone(),
        });
        // From now on the guard lets its in-dialog traffic through unlimited.
        self.guard(GuardUpdate::DialogStarted(call.call_id.clone()));
        self.emit(started);
    }

    /// Notes what an INVITE response means for its call (only the initial INVITE: a call that
    /// is answered already is being re-INVITEd).
    pub(super) fn invite_progress(
        &mut self,
        key: &CallKey,
        (response, source): (&Message, SocketAddr),
        code: u16,
        cancelled: bool,
    ) {
        let routes = record_routes(response);
        let ours = routes
            .iter()
            .position(|r| self.route_is_us_uri(r))
            .unwrap_or(routes.len());
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let call_id = call.call_id.clone();
        if call.answered.is_some() {
            return;
        }
        let setup = self.now.since(call.started);
        let setup_ms = setup.as_millis() as u64;
        if !call.responded {
            call.responded = true;
            self.stats.session_request_delay.observe(setup);
        }
        match code {
            180..=189 if call.ringing.is_none() => {
                call.ringing = Some(self.now.at);
                self.stats.setup_ringing.observe(setup);
                self.emit(Event::CallRinging(events::CallRinging {
                    call_id,
                    code,
                    setup_ms,
                }));
            }
            200..=299 => {
                call.answered = Some(self.now.at);
                self.stats.setup_answered.observe(setup);
                self.stats.calls_established.fetch_add(1, Ordering::Relaxed);
                for id in call.media.iter().flatten() {
                    self.media.answered(*id);
                }
                call.callee.address = response.value("to").unwrap_or_default().to_owned();
                call.callee.contact = contact_uri(response);
                // Where the callee answered from: the responses to its requests go there.
                call.callee.source = Some(source);
                // In the 2xx, Record-Routes above ours were added beyond us, towards the callee.
                call.callee.route_set = routes[..ours].iter().rev().cloned().collect();
                let backend = call.backend;
                if let Some(id) = backend {
                    self.backends[id].active_calls += 1;
                }
                let backend = backend.map(|id| self.backends[id].address);
                self.emit(Event::CallAnswered(events::CallAnswered {
                    call_id,
                    code,
                    setup_ms,
                    backend,
                }));
            }
            300..=699 => {
                let reason = if cancelled {
                    CallEnd::Cancelled
                } else {
                    CallEnd::Failed
                };
                self.end_call(key, reason, Some(code));
            }
            _ => {}
        }
    }

    fn route_is_us_uri(&self, uri: &str) -> bool {
        match crate::sip::uri::parse(uri) {
            Ok(crate::sip::uri::Uri::Sip(sip)) => self.is_us(&sip.host, sip.port),
            _ => false,
        }
    }

    /// Records the CSeq of an in-dialog request, so requests we originate go above it.
    pub(super) fn note_cseq(&mut self, key: &CallKey, side: Side, cseq: u32) {
        if let Some(call) = self.calls.get_mut(key) {
            let party = call.party_mut(side);
            party.cseq = party.cseq.max(cseq);
        }
    }

    /// Anchors the media of an SDP body that arrived from `from_side`, in SIP sent from
    /// `sip_source`: one media session per active stream, what signalling says about the peer
    /// noted on its leg (who may latch it), and the SDP rewritten to the relay's address and
    /// ports on the other side. Bodies of unknown calls pass unchanged.
    pub(super) fn anchor(
        &mut self,
        key: &CallKey,
        from_side: Side,
        sip_source: IpAddr,
        body: &[u8],
    ) -> Result<Vec<u8>, (u16, String)> {
        let Some(call) = self.calls.get_mut(key) else {
            return Ok(body.to_vec());
        };
        let streams = sdp::streams(body).map_err(|e| (400, e.to_string()))?;
        let leg = Leg::facing(from_side);
        let mut anchors = Vec::with_capacity(streams.len());
        for (index, stream) in streams.iter().enumerate() {
            if call.media.len() <= index {
                call.media.push(None);
            }
            if stream.port == 0 {
                anchors.push(None);
                continue;
            }
            let id = match call.media[index] {
                Some(id) => id,
                None => {
                    let info = self.media.open(stream.rtcp_mux).map_err(media_refusal)?;
                    call.media[index] = Some(info.id);
                    info.id
                }
            };
            if let Some(rtp) = stream.rtp_peer() {
                let announced = PeerAnnouncement {
                    rtp,
                    rtcp_port: stream.rtcp_port,
                    sip_source: Some(sip_source),
                };
                self.media
                    .announce_peer(id, leg, announced)
                    .map_err(media_refusal)?;
            }
            self.media
                .note_direction(id, leg, stream.sends(), stream.receives());
            let info = self
                .media
                .session(id)
                .ok_or((500, "media session vanished".to_owned()))?;
            anchors.push(Some(Anchor {
                rtp_port: info.legs[leg.other()].local_rtp.port(),
                rtcp_port: info.legs[leg.other()].local_rtcp.map(|a| a.port()),
            }));
        }
        let address = self.media.advertised(from_side.other());
        sdp::rewrite(body, address, &anchors).map_err(|e| (400, e.to_string()))
    }

    /// Ends a call: its media sessions end, its backend has one call less, its end is reported.
    pub(super) fn end_call(&mut self, key: &CallKey, reason: CallEnd, code: Option<u16>) {
        self.end_call_with(key, reason, code, &[]);
    }

    /// The kernel forwarded a BYE of the answered call `call_id` and its final response
    /// (`code`) at `at`, perhaps while no daemon ran: the call ended then.
    pub(super) fn ended_in_kernel(
        &mut self,
        call_id: &str,
        code: u16,
        at: Instant,
        disconnect_delay: Option<Duration>,
    ) {
        let answered: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, call)| call.call_id == call_id && call.answered.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        for key in answered {
            // RFC 6076 SDD, as the kernel timed it, or from the BYE the daemon forwarded.
            let forwarded = self.calls.get(&key).and_then(|call| call.bye_forwarded);
            let delay = disconnect_delay.or_else(|| Some(at.saturating_duration_since(forwarded?)));
            if let Some(delay) = delay {
                self.stats.session_disconnect_delay.observe(delay);
            }
            self.end_call_at(&key, CallEnd::Bye, Some(code), &[], at);
        }
    }

    /// `end_call` for a call some of whose media sessions already ended (`ended`).
    pub(super) fn end_call_with(
        &mut self,
        key: &CallKey,
        reason: CallEnd,
        code: Option<u16>,
        ended: &[SessionInfo],
    ) {
        let now = self.now.at;
        self.end_call_at(key, reason, code, ended, now);
    }

    /// `end_call_with` for a call that ended at `at` (its duration runs to then).
    fn end_call_at(
        &mut self,
        key: &CallKey,
        reason: CallEnd,
        code: Option<u16>,
        ended: &[SessionInfo],
        at: Instant,
    ) {
        let Some(call) = self.calls.remove(key) else {
            return;
        };
        self.guard(call.dialog_ended());
        let (mut forward, mut backward) = (0u64, 0u64);
        let caller_leg = Leg::facing(call.caller.side);
        for id in call.media.iter().flatten() {
            let info = match ended.iter().find(|info| info.id == *id) {
                Some(info) => Some(info.clone()),
                None => self.media.end(*id),
            };
            if let Some(info) = info {
                forward += info.legs[caller_leg].rtp.packets();
                backward += info.legs[caller_leg.other()].rtp.packets();
            }
        }
        if let (Some(id), Some(_)) = (call.backend, call.answered) {
            let backend = &mut self.backends[id];
            backend.active_calls = backend.active_calls.saturating_sub(1);
        }
        if call.journaled {
            self.journal(Line::End(key.to_owned()));
        }
        if call.answered.is_some() {
            self.stats.calls_ended.increment(reason.name());
            self.stats.calls_established.fetch_sub(1, Ordering::Relaxed);
        }
        self.emit(Event::CallEnded(events::CallEnded {
            call_id: call.call_id,
            reason,
            final_code: code,
            duration_ms: call
                .answered
                .map(|t| at.saturating_duration_since(t).as_millis() as u64),
            rtp_packets: Some(RtpPackets {
                caller_to_callee: forward,
                callee_to_caller: backward,
            }),
        }));
    }
}
