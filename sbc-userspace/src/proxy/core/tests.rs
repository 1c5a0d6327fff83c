//! The proxy core driven with datagrams and a fake clock, no root and no sockets: a carrier on
//! the public side, two backends on the private side, and a fake media plane. Each case plays
//! one piece of RFC 3261 proxy behaviour and checks what the core asked to send, record and
//! schedule. The cases are a table (`CASES`), played by one test that names every case that
//! fails; `SBC_CORE_CASE=<name>` plays only that one.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    Core, GuardUpdate, Input, KernelDialogs, Output, Parts, Timer,
    anchoring::MediaAnchoring,
    call_end::CallEnd,
    record::{CallRecord, Line},
    transactions::{T1, TIMER_C, Transport},
};
use crate::{
    admission::{AdmissionConfig, AdmissionCounters},
    clock::Now,
    drain::Drain,
    events::Event,
    media::{
        MediaError, PeerAnnouncement, SessionInfo,
        session::{Leg, LegInfo, StreamCounters},
    },
    proxy::{
        config::{BackendTransport, SipConfig},
        stats::SipStats,
    },
    side::Side,
    sip::{Message, StartLine, syntax::split_top_level},
};
use sbc_common::branch;

const PUBLIC: &str = "192.0.2.1:5060";
const PRIVATE: &str = "10.0.0.1:5060";
const CARRIER: &str = "203.0.113.5:5060";
const BACKEND_A: &str = "10.0.0.10:5060";
const BACKEND_B: &str = "10.0.0.11:5060";
const INVITE_TIMEOUT: Duration = Duration::from_millis(2000);

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a socket address")
}

fn config(backends: &[&str]) -> SipConfig {
    let mut text = format!(
        "public_listen = \"{PUBLIC}\"\nprivate_listen = \"{PRIVATE}\"\n\
         invite_timeout_ms = {}\n[health]\nprobes = false\n",
        INVITE_TIMEOUT.as_millis()
    );
    for backend in backends {
        text.push_str(&format!("[[backends]]\naddress = \"{backend}\"\n"));
    }
    toml::from_str(&text).expect("a valid [sip] section")
}

/// A media plane that binds nothing: session `n` has RTP ports 20000 + 2n (public leg) and
/// 30000 + 2n (private leg), and remembers what it was told.
#[derive(Default)]
struct FakeMedia {
    /// What the public side is told to send media to, when not `MEDIA_PUBLIC` (a NAT).
    public_advertised: Option<IpAddr>,
    next: u32,
    sessions: BTreeMap<u32, SessionInfo>,
    announced: Vec<(u32, Leg, SocketAddr)>,
    answered: Vec<u32>,
    ended: Vec<u32>,
}

const MEDIA_PUBLIC: &str = "192.0.2.1";
const MEDIA_PRIVATE: &str = "10.0.0.1";

fn leg(name: Leg, side: Side, rtp: SocketAddr) -> LegInfo {
    LegInfo {
        name,
        side,
        local_rtp: rtp,
        local_rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
        advertised: rtp.ip(),
        peer: None,
        latched: false,
        latch: None,
        rtcp_latch: None,
        rtp: StreamCounters::default(),
        rtcp: None,
        rtp_idle_ms: None,
    }
}

/// What the kernel forwarded itself: nothing unless a case says so.
#[derive(Default)]
struct FakeKernel {
    cseqs: Mutex<Option<[u32; 2]>>,
    forwards: Mutex<bool>,
}

impl KernelDialogs for FakeKernel {
    fn highest_cseqs(&self, _call_id: &str) -> Option<[u32; 2]> {
        *self.cseqs.lock().expect("not poisoned")
    }

    fn forwards(&self, _call_id: &str) -> bool {
        *self.forwards.lock().expect("not poisoned")
    }
}

struct SharedMedia(Arc<Mutex<FakeMedia>>);

impl SharedMedia {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeMedia> {
        self.0.lock().expect("not poisoned")
    }
}

impl MediaAnchoring for SharedMedia {
    fn open(&self, rtcp_mux: bool) -> Result<SessionInfo, MediaError> {
        let mut media = self.lock();
        media.next += 1;
        let id = media.next;
        let port = |base: u16| base + 2 * id as u16;
        let public: IpAddr = MEDIA_PUBLIC.parse().expect("an address");
        let private: IpAddr = MEDIA_PRIVATE.parse().expect("an address");
        let info = SessionInfo {
            id,
            rtcp_mux,
            age_ms: 0,
            idle_ms: 0,
            legs: [
                leg(Leg::A, Side::Public, SocketAddr::new(public, port(20000))),
                leg(Leg::B, Side::Private, SocketAddr::new(private, port(30000))),
            ],
        };
        media.sessions.insert(id, info.clone());
        Ok(info)
    }

    fn announce_peer(
        &self,
        id: u32,
        leg: Leg,
        announced: PeerAnnouncement,
    ) -> Result<(), MediaError> {
        let mut media = self.lock();
        if !media.sessions.contains_key(&id) {
            return Err(MediaError::NotFound(id));
        }
        media.announced.push((id, leg, announced.rtp));
        Ok(())
    }

    fn note_direction(&self, _id: u32, _leg: Leg, _sends: bool, _receives: bool) {}

    fn session(&self, id: u32) -> Option<SessionInfo> {
        self.lock().sessions.get(&id).cloned()
    }

    fn advertised(&self, side: Side) -> IpAddr {
        match (side, self.lock().public_advertised) {
            (Side::Public, Some(advertised)) => advertised,
            (Side::Public, None) => MEDIA_PUBLIC.parse().expect("an address"),
            (Side::Private, _) => MEDIA_PRIVATE.parse().expect("an address"),
        }
    }

    fn answered(&self, id: u32) {
        self.lock().answered.push(id);
    }

    fn end(&self, id: u32) -> Option<SessionInfo> {
        let mut media = self.lock();
        media.ended.push(id);
        media.sessions.remove(&id)
    }

    fn end_orphans(&self, claimed: &std::collections::HashSet<u32>) -> Vec<SessionInfo> {
        let mut media = self.lock();
        let orphans: Vec<u32> = media
            .sessions
            .keys()
            .filter(|id| !claimed.contains(id))
            .copied()
            .collect();
        orphans
            .iter()
            .filter_map(|id| media.sessions.remove(id))
            .collect()
    }
}

/// A message the core sent, parsed.
struct Sent {
    to: SocketAddr,
    side: Side,
    transport: Transport,
    message: Message,
}

impl Sent {
    fn code(&self) -> Option<u16> {
        self.message.status()
    }

    /// The method of a request (`None` for a response).
    fn method(&self) -> Option<&str> {
        self.message
            .is_request()
            .then(|| self.message.method())
            .flatten()
    }

    fn value(&self, name: &str) -> &str {
        self.message.value(name).unwrap_or_default()
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.message
            .headers_named(name)
            .flat_map(|h| h.value.split(',').map(|v| v.trim().to_owned()))
            .collect()
    }

    fn body(&self) -> String {
        String::from_utf8_lossy(self.message.body()).into_owned()
    }

    fn request_uri(&self) -> &str {
        match &self.message.start {
            StartLine::Request { uri, .. } => uri,
            StartLine::Response { .. } => "",
        }
    }
}

/// The core with a fake clock and everything it asked for, by kind.
struct Lab {
    core: Core,
    now: Now,
    timers: Vec<(Instant, Timer)>,
    sent: Vec<Sent>,
    events: Vec<Event>,
    journal: Vec<Line>,
    guard: Vec<GuardUpdate>,
    media: Arc<Mutex<FakeMedia>>,
    drain: Arc<Drain>,
    kernel: Arc<FakeKernel>,
}

impl Lab {
    fn new() -> Self {
        Self::with(config(&[BACKEND_A, BACKEND_B]), AdmissionConfig::default())
    }

    fn with(sip: SipConfig, admission: AdmissionConfig) -> Self {
        Self::taking_over(sip, admission, Vec::new(), FakeMedia::default())
    }

    /// A core started after a previous daemon that recorded `calls`; `media` is what the
    /// media plane adopted.
    fn taking_over(
        sip: SipConfig,
        admission: AdmissionConfig,
        calls: Vec<CallRecord>,
        media: FakeMedia,
    ) -> Self {
        let media = Arc::new(Mutex::new(media));
        let drain = Arc::new(Drain::new(Duration::from_secs(30)));
        let now = Now::read();
        let kernel = Arc::new(FakeKernel::default());
        let parts = Parts {
            media: Box::new(SharedMedia(Arc::clone(&media))),
            kernel: Arc::clone(&kernel) as Arc<dyn KernelDialogs>,
            stats: Arc::new(SipStats::new(sip.backends.iter().map(|b| b.address))),
            admission_counters: Arc::new(AdmissionCounters::default()),
            drain: Arc::clone(&drain),
            token: "t".to_owned(),
        };
        let mut core = Core::new(&sip, &admission, parts, now);
        core.start(now, calls);
        let mut lab = Self {
            core,
            now,
            timers: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
            journal: Vec::new(),
            guard: Vec::new(),
            media,
            drain,
            kernel,
        };
        lab.collect();
        lab
    }

    fn input(&mut self, input: Input) {
        self.core.handle(self.now, input);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, bytes, .. } => self.sent.push(Sent {
                    to: to.address,
                    side: to.side,
                    transport: to.transport,
                    message: Message::parse(bytes).expect("the core sends parseable SIP"),
                }),
                Output::Event(event) => self.events.push(*event),
                Output::Journal(line) => self.journal.push(line),
                Output::Schedule(timer, after) => self.timers.push((self.now.at + after, timer)),
                Output::Guard(update) => self.guard.push(update),
            }
        }
    }

    fn datagram(&mut self, listener: Side, from: &str, text: &str) {
        self.input(Input::Datagram {
            listener,
            from: addr(from),
            bytes: text.as_bytes().to_vec(),
            waited: Duration::ZERO,
        });
    }

    fn carrier_sends(&mut self, text: &str) {
        self.datagram(Side::Public, CARRIER, text);
    }

    fn backend_sends(&mut self, backend: SocketAddr, text: &str) {
        self.input(Input::Datagram {
            listener: Side::Private,
            from: backend,
            bytes: text.as_bytes().to_vec(),
            waited: Duration::ZERO,
        });
    }

    /// Moves the clock on by `by`, firing every timer that falls due on the way, in order.
    fn advance(&mut self, by: Duration) {
        let end = self.now.at + by;
        while let Some(index) = (0..self.timers.len())
            .filter(|&i| self.timers[i].0 <= end)
            .min_by_key(|&i| self.timers[i].0)
        {
            let (due, timer) = self.timers.remove(index);
            self.now = self.now.after(due.saturating_duration_since(self.now.at));
            self.input(Input::Timer(timer));
        }
        self.now = self.now.after(end.saturating_duration_since(self.now.at));
    }

    /// What was sent since last asked.
    fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }

    fn event_names(&self) -> Vec<&'static str> {
        self.events.iter().map(Event::name).collect()
    }

    /// How the call ended, and its final code: from its one `call_ended`.
    fn call_end(&self) -> (CallEnd, Option<u16>) {
        let ended: Vec<_> = self
            .events
            .iter()
            .filter_map(|event| match event {
                Event::CallEnded(ended) => Some((ended.reason, ended.final_code)),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 1, "one call_ended in {:?}", self.event_names());
        ended[0]
    }
}

/// The one message sent to `to` among `sent`.
fn sent_to<'a>(sent: &'a [Sent], to: &str) -> &'a Sent {
    let to = addr(to);
    let matching: Vec<&Sent> = sent.iter().filter(|s| s.to == to).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one message to {to}, got {:?}",
        summary(sent)
    );
    matching[0]
}

fn summary(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .map(|s| {
            let what = s
                .code()
                .map_or_else(|| s.method().unwrap_or("?").to_owned(), |c| c.to_string());
            format!("{what} -> {} ({:?})", s.to, s.side)
        })
        .collect()
}

fn sdp(address: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn with_body(head: String, body: Option<&str>) -> String {
    match body {
        Some(body) => format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!("{head}Content-Length: 0\r\n\r\n"),
    }
}

/// A call as the carrier sees it.
struct Call {
    id: String,
    /// The carrier's From tag.
    tag: String,
    cseq: u32,
}

impl Call {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            tag: format!("c-{id}"),
            cseq: 1,
        }
    }

    /// The carrier's initial INVITE, with an SDP offer (RTP at port 40000).
    fn invite(&self, branch: &str) -> String {
        let head = format!(
            "INVITE sip:alice@{PUBLIC} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carrier@203.0.113.5>;tag={}\r\n\
             To: <sip:alice@{PUBLIC}>\r\n\
             Call-ID: {}\r\n\
             CSeq: {} INVITE\r\n\
             Contact: <sip:carrier@{CARRIER}>\r\n",
            self.tag, self.id, self.cseq
        );
        with_body(head, Some(&sdp("203.0.113.5", 40000)))
    }

    /// The carrier's CANCEL of the INVITE sent with `branch`.
    fn cancel(&self, branch: &str) -> String {
        with_body(
            format!(
                "CANCEL sip:alice@{PUBLIC} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:carrier@203.0.113.5>;tag={}\r\n\
                 To: <sip:alice@{PUBLIC}>\r\n\
                 Call-ID: {}\r\n\
                 CSeq: {} CANCEL\r\n",
                self.tag, self.id, self.cseq
            ),
            None,
        )
    }
}

/// A response a backend makes to a request it received: its Vias, Record-Routes, From, To
/// (with `to_tag`), Call-ID and CSeq, and a Contact at the backend.
fn response(
    request: &Sent,
    code: u16,
    to_tag: &str,
    backend: SocketAddr,
    body: Option<&str>,
) -> String {
    let mut head = format!("SIP/2.0 {code} Whatever\r\n");
    for via in request.message.headers_named("via") {
        head.push_str(&format!("Via: {}\r\n", via.value));
    }
    for route in request.message.headers_named("record-route") {
        head.push_str(&format!("Record-Route: {}\r\n", route.value));
    }
    let to = request.value("to");
    let to = if code > 100 && !to.contains("tag=") {
        format!("{to};tag={to_tag}")
    } else {
        to.to_owned()
    };
    head.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:alice@{backend}>\r\n",
        request.value("from"),
        request.value("call-id"),
        request.value("cseq"),
    ));
    with_body(head, body)
}

/// An established call: the carrier's INVITE answered 200 by a backend and ACKed.
struct Dialog {
    call: Call,
    backend: SocketAddr,
    to_tag: String,
    /// The route set the carrier uses (the 2xx's Record-Routes, reversed).
    carrier_routes: Vec<String>,
    /// The route set the backend uses (the INVITE's Record-Routes, in order).
    backend_routes: Vec<String>,
}

impl Dialog {
    /// An in-dialog request from the carrier, along its route set, to the backend's Contact.
    fn carrier_request(&mut self, method: &str, branch: &str, body: Option<&str>) -> String {
        self.call.cseq += u32::from(method != "ACK");
        let mut head = format!(
            "{method} sip:alice@{} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n",
            self.backend
        );
        for route in &self.carrier_routes {
            head.push_str(&format!("Route: {route}\r\n"));
        }
        head.push_str(&format!(
            "From: <sip:carrier@203.0.113.5>;tag={}\r\nTo: <sip:alice@{PUBLIC}>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {} {method}\r\nContact: <sip:carrier@{CARRIER}>\r\n",
            self.call.tag, self.to_tag, self.call.id, self.call.cseq
        ));
        with_body(head, body)
    }

    /// An in-dialog request from the backend, along its route set, to the carrier's Contact.
    fn backend_request(&self, method: &str, branch: &str, cseq: u32) -> String {
        let mut head = format!(
            "{method} sip:carrier@{CARRIER} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n",
            self.backend
        );
        for route in &self.backend_routes {
            head.push_str(&format!("Route: {route}\r\n"));
        }
        head.push_str(&format!(
            "From: <sip:alice@{PUBLIC}>;tag={}\r\nTo: <sip:carrier@203.0.113.5>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.to_tag, self.call.tag, self.call.id
        ));
        with_body(head, None)
    }
}

/// Sends `call`'s INVITE and returns it as forwarded to a backend.
fn forward_invite(lab: &mut Lab, call: &Call, branch: &str) -> Sent {
    lab.carrier_sends(&call.invite(branch));
    let sent = lab.take_sent();
    let trying = sent_to(&sent, CARRIER);
    assert_eq!(trying.code(), Some(100), "100 Trying first");
    sent.into_iter()
        .find(|s| s.method() == Some("INVITE"))
        .expect("the INVITE forwarded")
}

/// Sets up a call through to a 200 and the carrier's ACK.
fn establish(lab: &mut Lab, id: &str) -> Dialog {
    let call = Call::new(id);
    let invite = forward_invite(lab, &call, &format!("{id}-1"));
    let backend = invite.to;
    let to_tag = format!("b-{id}");
    let answer = sdp("10.0.0.10", 50000);
    lab.backend_sends(
        backend,
        &response(&invite, 200, &to_tag, backend, Some(&answer)),
    );
    let sent = lab.take_sent();
    let ok = sent_to(&sent, CARRIER);
    assert_eq!(ok.code(), Some(200));
    let mut dialog = Dialog {
        carrier_routes: ok.values("record-route").into_iter().rev().collect(),
        backend_routes: invite.values("record-route"),
        call,
        backend,
        to_tag,
    };
    let ack = dialog.carrier_request("ACK", &format!("{id}-ack"), None);
    lab.carrier_sends(&ack);
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, &backend.to_string()).method(), Some("ACK"));
    dialog
}

struct Case {
    name: &'static str,
    play: fn(),
}

const CASES: &[Case] = &[
    Case {
        name: "an INVITE goes through with 100 Trying, Record-Route and anchored media",
        play: invite_goes_through,
    },
    Case {
        name: "behind a 1:1 NAT the public side is told the advertised address, in SIP and SDP",
        play: behind_a_one_to_one_nat,
    },
    Case {
        name: "a backend configured for TCP gets requests on a connection of ours, once each, and answers on it",
        play: tcp_backend,
    },
    Case {
        name: "backends found by DNS take calls by SRV priority, are trusted as backends, and retire when DNS drops them",
        play: backends_found_by_dns,
    },
    Case {
        name: "a trunk named by host: a backend's call goes to its lowest SRV priority and fails over to the next target on 503",
        play: trunk_found_by_dns,
    },
    Case {
        name: "a request too large for UDP goes by TCP (RFC 3261 18.1.1)",
        play: large_request_goes_by_tcp,
    },
    Case {
        name: "a backend's call to a number goes to the trunk over TLS when the trunk is configured so",
        play: trunk_over_tls,
    },
    Case {
        name: "a lost connection fails its INVITE over to the next backend, the caller hearing nothing of it",
        play: lost_connection_fails_over,
    },
    Case {
        name: "a caller over TLS is record-routed at our TLS port, and the backend's BYE goes back on its connection",
        play: caller_over_tls,
    },
    Case {
        name: "a public address that moved is advertised to new calls; calls set up before still reach us by the old one",
        play: public_address_moved,
    },
    Case {
        name: "topology hiding: the carrier learns no private address, and in-dialog routing works both ways",
        play: topology_hidden_from_the_public_side,
    },
    Case {
        name: "INVITE retransmissions are absorbed, and answered with the last response",
        play: retransmissions_are_absorbed,
    },
    Case {
        name: "a forwarded INVITE is retransmitted until the backend answers",
        play: invite_is_retransmitted_until_answered,
    },
    Case {
        name: "CANCEL after ringing is answered 200, cancelled downstream, ends in 487",
        play: cancel_after_ringing,
    },
    Case {
        name: "CANCEL before anything came back is answered 487 at once",
        play: cancel_before_ringing,
    },
    Case {
        name: "CANCEL of no transaction gets 481",
        play: cancel_of_nothing,
    },
    Case {
        name: "an INVITE unanswered fails over to the next backend on timeout",
        play: failover_on_timeout,
    },
    Case {
        name: "408 and 5xx from a backend fail over, with an ACK to the failed one",
        play: failover_on_failure_codes,
    },
    Case {
        name: "a transport error fails over as a 503 from that hop would",
        play: failover_on_transport_error,
    },
    Case {
        name: "503 with Retry-After when no backend is left",
        play: none_left_is_503,
    },
    Case {
        name: "a busy callee's 486 is relayed and ACKed hop by hop; the caller's ACK stays",
        play: failure_is_acked_hop_by_hop,
    },
    Case {
        name: "the 2xx is relayed with anchored media, and the ACK follows the dialog",
        play: answer_and_ack,
    },
    Case {
        name: "Record-Route twice across sides: each side's route set names our address there",
        play: double_record_route,
    },
    Case {
        name: "loose routing: our Route entries are popped, in both directions",
        play: loose_routing,
    },
    Case {
        name: "in-dialog requests of unknown dialogs get 481",
        play: unknown_dialog_is_481,
    },
    Case {
        name: "Max-Forwards 0 gets 483",
        play: max_forwards_exhausted,
    },
    Case {
        name: "a request that comes back through us unchanged gets 482",
        play: loop_detected,
    },
    Case {
        name: "Timer C: an INVITE that rings too long is cancelled and answered 408",
        play: timer_c,
    },
    Case {
        name: "a re-INVITE's SDP is re-anchored on the call's media sessions",
        play: reinvite_reanchors,
    },
    Case {
        name: "BYE ends the call: media ended, dialog released, call_ended reported",
        play: bye_ends_the_call,
    },
    Case {
        name: "OPTIONS to the proxy: 200, and 503 with Retry-After while draining",
        play: options_to_us,
    },
    Case {
        name: "a new request that waited too long is refused 503 at once, a call's is not",
        play: stale_requests,
    },
    Case {
        name: "a stray response for no transaction is dropped",
        play: stray_response,
    },
    Case {
        name: "a new request from the Internet with a preloaded Route elsewhere gets 403",
        play: preloaded_route_refused,
    },
    Case {
        name: "a call from the private side goes to its Request-URI, media anchored outwards",
        play: call_from_a_backend,
    },
    Case {
        name: "an in-dialog request sent to our address goes to the other party's Contact",
        play: request_addressed_to_us,
    },
    Case {
        name: "a backend's 503 to an in-dialog request reaches the caller as 500",
        play: in_dialog_503_becomes_500,
    },
    Case {
        name: "a scanner's User-Agent gets no answer and a block",
        play: scanner_blocked,
    },
    Case {
        name: "a request over TCP is answered on its connection",
        play: tcp_answered_on_its_connection,
    },
    Case {
        name: "media timeout: BYE with a Reason to both sides, above the CSeqs the kernel forwarded",
        play: media_timeout_hangs_up,
    },
    Case {
        name: "a drain's deadline cancels a ringing call and answers 503 upstream",
        play: drain_deadline_cancels_ringing,
    },
    Case {
        name: "a call a previous daemon recorded is taken over: its BYE is routed and ends it",
        play: recorded_call_taken_over,
    },
    Case {
        name: "in-dialog requests carry the stateless branch, the same for a retransmission",
        play: in_dialog_branch_is_stateless,
    },
    Case {
        name: "the previous hop's Via is marked; every other Via and Route value kept as written",
        play: edits_keep_what_they_do_not_change,
    },
    Case {
        name: "a response to a request the kernel forwarded goes up its Vias; a BYE's ends the call",
        play: response_to_a_kernel_forwarded_bye,
    },
    Case {
        name: "with the kernel forwarding a dialog, its in-dialog requests leave no transaction",
        play: kernel_forwarded_dialog_is_stateless_here,
    },
    Case {
        name: "the kernel's forwarding plan matches the proxy on every case of the corpus",
        play: kernel_forwarding_matches_the_proxy,
    },
    Case {
        name: "a re-INVITE's answer with a new Contact refreshes the target, in the kernel too",
        play: reinvite_refreshes_the_target,
    },
    Case {
        name: "an UPDATE's answer with a new Contact refreshes the target",
        play: update_refreshes_the_target,
    },
    Case {
        name: "an UPDATE's answer passed up by the kernel that forwarded it refreshes the target",
        play: update_forwarded_by_the_kernel_refreshes_the_target,
    },
];

#[test]
fn the_proxy_core_plays_every_case() {
    let only = std::env::var("SBC_CORE_CASE").ok();
    let mut failed = Vec::new();
    let mut played = 0;
    for case in CASES {
        if only.as_deref().is_some_and(|only| only != case.name) {
            continue;
        }
        played += 1;
        if let Err(panic) = std::panic::catch_unwind(case.play) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{}: {why}", case.name));
        }
    }
    assert!(played > 0, "no case named {only:?}");
    assert!(
        failed.is_empty(),
        "{} of {played} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn invite_goes_through() {
    let mut lab = Lab::new();
    let call = Call::new("through");
    let invite = forward_invite(&mut lab, &call, "1");
    assert!([addr(BACKEND_A), addr(BACKEND_B)].contains(&invite.to));
    assert_eq!(invite.side, Side::Private);
    let vias = invite.values("via");
    assert_eq!(vias.len(), 2, "our Via on top of the carrier's: {vias:?}");
    assert!(vias[0].starts_with(&format!("SIP/2.0/UDP {PRIVATE};branch=z9hG4bK")));
    assert!(vias[1].contains("received=203.0.113.5") || vias[1].contains("rport=5060"));
    assert_eq!(invite.value("max-forwards"), "69");
    let body = invite.body();
    assert!(
        body.contains(&format!("c=IN IP4 {MEDIA_PRIVATE}")),
        "{body}"
    );
    assert!(
        body.contains("m=audio 30002 "),
        "the private leg's port: {body}"
    );
    let media = lab.media.lock().expect("not poisoned");
    assert_eq!(
        media.announced,
        vec![(1, Leg::A, addr("203.0.113.5:40000"))]
    );
    drop(media);
    assert_eq!(lab.event_names(), vec!["call_started"]);
    assert_eq!(
        lab.guard,
        vec![GuardUpdate::DialogStarted("through".to_owned())]
    );
    assert!(
        matches!(&lab.journal[..], [Line::Put(record)] if record.setup.is_some()),
        "the call being set up is journaled"
    );
}

fn retransmissions_are_absorbed() {
    let mut lab = Lab::new();
    let call = Call::new("again");
    let invite = forward_invite(&mut lab, &call, "1");
    lab.carrier_sends(&call.invite("1"));
    assert!(lab.take_sent().is_empty(), "nothing new to say or forward");
    lab.backend_sends(invite.to, &response(&invite, 180, "b", invite.to, None));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(180));
    lab.carrier_sends(&call.invite("1"));
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, CARRIER).code(),
        Some(180),
        "the last response again"
    );
    assert!(
        sent.iter().all(|s| s.method().is_none()),
        "no INVITE forwarded again"
    );
}

fn invite_is_retransmitted_until_answered() {
    let mut lab = Lab::new();
    let invite = forward_invite(&mut lab, &Call::new("resend"), "1");
    lab.advance(T1);
    let again = lab.take_sent();
    assert_eq!(
        sent_to(&again, &invite.to.to_string()).method(),
        Some("INVITE")
    );
    lab.advance(2 * T1);
    assert_eq!(lab.take_sent().len(), 1, "again after 2*T1");
    lab.backend_sends(invite.to, &response(&invite, 100, "", invite.to, None));
    lab.advance(Duration::from_millis(1900));
    assert!(
        lab.take_sent().is_empty(),
        "a provisional response stops retransmissions (and 100 goes no further)"
    );
}

fn cancel_after_ringing() {
    let mut lab = Lab::new();
    let call = Call::new("cancelled");
    let invite = forward_invite(&mut lab, &call, "1");
    lab.backend_sends(invite.to, &response(&invite, 180, "b", invite.to, None));
    lab.take_sent();
    lab.carrier_sends(&call.cancel("1"));
    let sent = lab.take_sent();
    let ok = sent_to(&sent, CARRIER);
    assert_eq!((ok.code(), ok.value("cseq")), (Some(200), "1 CANCEL"));
    let cancel = sent_to(&sent, &invite.to.to_string());
    assert_eq!(cancel.method(), Some("CANCEL"));
    assert_eq!(
        cancel.values("via")[0],
        invite.values("via")[0],
        "CANCEL carries the INVITE's branch"
    );
    lab.backend_sends(invite.to, &response(cancel, 200, "b", invite.to, None));
    lab.backend_sends(invite.to, &response(&invite, 487, "b", invite.to, None));
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(487));
    assert_eq!(
        sent_to(&sent, &invite.to.to_string()).method(),
        Some("ACK"),
        "487 ACKed to the backend"
    );
    assert_eq!(lab.call_end().0, CallEnd::Cancelled);
}

fn cancel_before_ringing() {
    let mut lab = Lab::new();
    let call = Call::new("early-cancel");
    forward_invite(&mut lab, &call, "1");
    lab.carrier_sends(&call.cancel("1"));
    let sent = lab.take_sent();
    let codes: Vec<_> = sent.iter().filter_map(Sent::code).collect();
    assert_eq!(codes, vec![200, 487], "{:?}", summary(&sent));
    assert!(
        sent.iter().all(|s| s.to == addr(CARRIER)),
        "nothing to cancel downstream yet"
    );
    assert_eq!(lab.call_end().0, CallEnd::Cancelled);
}

fn cancel_of_nothing() {
    let mut lab = Lab::new();
    lab.carrier_sends(&Call::new("nothing").cancel("1"));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(481));
}

fn failover_on_timeout() {
    let mut lab = Lab::new();
    let first = forward_invite(&mut lab, &Call::new("slow"), "1");
    lab.advance(INVITE_TIMEOUT);
    let sent = lab.take_sent();
    let next: Vec<&Sent> = sent.iter().filter(|s| s.to != first.to).collect();
    assert_eq!(next.len(), 1, "{:?}", summary(&sent));
    assert_eq!(next[0].method(), Some("INVITE"));
    assert_ne!(
        next[0].values("via")[0],
        first.values("via")[0],
        "a new branch"
    );
    assert!(
        !sent.iter().any(|s| s.to == addr(CARRIER)),
        "the caller hears nothing of it"
    );
}

fn failover_on_failure_codes() {
    for code in [408, 500, 503] {
        let mut lab = Lab::new();
        let first = forward_invite(&mut lab, &Call::new(&format!("fails-{code}")), "1");
        lab.backend_sends(first.to, &response(&first, code, "b", first.to, None));
        let sent = lab.take_sent();
        assert_eq!(
            sent_to(&sent, &first.to.to_string()).method(),
            Some("ACK"),
            "{code} ACKed"
        );
        let other = sent.iter().find(|s| s.to != first.to).expect("failed over");
        assert_eq!(other.method(), Some("INVITE"), "after {code}");
        assert!(!sent.iter().any(|s| s.to == addr(CARRIER)));
    }
}

fn failover_on_transport_error() {
    let mut lab = Lab::new();
    let first = forward_invite(&mut lab, &Call::new("unreachable"), "1");
    let key = lab
        .core
        .client
        .keys()
        .next()
        .cloned()
        .expect("the INVITE's client transaction");
    lab.input(Input::SendFailed(key));
    let sent = lab.take_sent();
    let other = sent_to(
        &sent,
        if first.to == addr(BACKEND_A) {
            BACKEND_B
        } else {
            BACKEND_A
        },
    );
    assert_eq!(other.method(), Some("INVITE"));
}

fn none_left_is_503() {
    let mut lab = Lab::with(config(&[BACKEND_A]), AdmissionConfig::default());
    let invite = forward_invite(&mut lab, &Call::new("alone"), "1");
    lab.backend_sends(invite.to, &response(&invite, 503, "b", invite.to, None));
    let sent = lab.take_sent();
    let refusal = sent_to(&sent, CARRIER);
    assert_eq!(refusal.code(), Some(503));
    assert!(!refusal.value("retry-after").is_empty(), "with Retry-After");
    assert_eq!(lab.call_end(), (CallEnd::Failed, Some(503)));
    // A new call now finds the backend still up (one failure is no verdict) and goes to it.
    let mut lab = Lab::with(config(&[]), AdmissionConfig::default());
    lab.carrier_sends(&Call::new("nowhere").invite("1"));
    let sent = lab.take_sent();
    let codes: Vec<_> = sent.iter().filter_map(Sent::code).collect();
    assert_eq!(codes, vec![503], "no backend at all: {:?}", summary(&sent));
}

fn failure_is_acked_hop_by_hop() {
    let mut lab = Lab::new();
    let call = Call::new("busy");
    let invite = forward_invite(&mut lab, &call, "1");
    lab.backend_sends(invite.to, &response(&invite, 486, "b", invite.to, None));
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(486));
    assert_eq!(sent_to(&sent, &invite.to.to_string()).method(), Some("ACK"));
    // The carrier's ACK of our 486 ends the transaction here.
    let ack = with_body(
        format!(
            "ACK sip:alice@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carrier@203.0.113.5>;tag={}\r\n\
             To: <sip:alice@{PUBLIC}>;tag=b\r\nCall-ID: busy\r\nCSeq: 1 ACK\r\n",
            call.tag
        ),
        None,
    );
    lab.carrier_sends(&ack);
    assert!(
        lab.take_sent().is_empty(),
        "the ACK of a failure is not forwarded"
    );
    assert_eq!(lab.call_end(), (CallEnd::Failed, Some(486)));
}

fn answer_and_ack() {
    let mut lab = Lab::new();
    let call = Call::new("answered");
    let invite = forward_invite(&mut lab, &call, "1");
    let answer = sdp("10.0.0.10", 50000);
    lab.backend_sends(
        invite.to,
        &response(&invite, 200, "b", invite.to, Some(&answer)),
    );
    let sent = lab.take_sent();
    let ok = sent_to(&sent, CARRIER);
    assert_eq!(ok.values("via").len(), 1, "our Via popped");
    let body = ok.body();
    assert!(body.contains(&format!("c=IN IP4 {MEDIA_PUBLIC}")), "{body}");
    assert!(
        body.contains("m=audio 20002 "),
        "the public leg's port: {body}"
    );
    assert_eq!(lab.media.lock().expect("not poisoned").answered, vec![1]);
    assert!(lab.event_names().contains(&"call_answered"));
    // The 2xx's retransmission goes up too (the transaction is over; the proxy relays it).
    lab.backend_sends(
        invite.to,
        &response(&invite, 200, "b", invite.to, Some(&answer)),
    );
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    let mut dialog = Dialog {
        carrier_routes: ok.values("record-route").into_iter().rev().collect(),
        backend_routes: invite.values("record-route"),
        call,
        backend: invite.to,
        to_tag: "b".to_owned(),
    };
    let confirmed = GuardUpdate::CallerConfirmed(addr(CARRIER).ip());
    assert!(
        !lab.guard.contains(&confirmed),
        "an answer not acknowledged confirms nothing (a flood's INVITEs never are)"
    );
    let ack = dialog.carrier_request("ACK", "ack", None);
    lab.carrier_sends(&ack);
    let sent = lab.take_sent();
    let forwarded = sent_to(&sent, &invite.to.to_string());
    assert_eq!(forwarded.request_uri(), format!("sip:alice@{}", invite.to));
    lab.carrier_sends(&ack);
    let confirmations = lab.guard.iter().filter(|u| **u == confirmed).count();
    assert_eq!(confirmations, 1, "the caller confirmed by its ACK, once");
    let forwardings = lab
        .guard
        .iter()
        .filter(|u| matches!(u, GuardUpdate::DialogForwarding(_)))
        .count();
    assert_eq!(
        forwardings, 1,
        "confirmed: its SIP may go through the kernel"
    );
}

/// The public side bound on `PUBLIC` behind a 1:1 NAT whose outside address is `NAT_OUTSIDE`.
const NAT_OUTSIDE: &str = "198.51.100.7";

/// A lab whose public side advertises `NAT_OUTSIDE`, in SIP and in SDP.
fn lab_behind_nat() -> Lab {
    let mut sip = config(&[BACKEND_A]);
    sip.public_advertise = Some(NAT_OUTSIDE.parse().expect("an address"));
    let media = FakeMedia {
        public_advertised: sip.public_advertise,
        ..FakeMedia::default()
    };
    Lab::taking_over(sip, AdmissionConfig::default(), Vec::new(), media)
}

fn behind_a_one_to_one_nat() {
    let mut lab = lab_behind_nat();
    let outside = format!("{NAT_OUTSIDE}:5060");
    let bound_ip = addr(PUBLIC).ip().to_string();
    let mut dialog = establish(&mut lab, "nat");
    // What the carrier learnt from the 200: our advertised address, never the bound one.
    assert_eq!(dialog.carrier_routes, vec![format!("<sip:{outside};lr>")]);
    // The backend is told the addresses it reaches: the private listener as bound.
    assert_eq!(
        dialog.backend_routes,
        vec![format!("<sip:{PRIVATE};lr>"), format!("<sip:{outside};lr>")]
    );
    // The carrier's in-dialog request, routed by the advertised address, is ours to forward.
    lab.carrier_sends(&dialog.carrier_request("INFO", "nat-info", None));
    let sent = lab.take_sent();
    let info = sent_to(&sent, &dialog.backend.to_string());
    assert!(
        info.values("route").is_empty(),
        "{:?}",
        info.values("route")
    );
    assert!(info.value("via").contains(PRIVATE), "{}", info.value("via"));
    // The backend's request leaves for the carrier with our Via at the advertised address,
    // its re-offer anchored there too (connection and origin).
    let backend = dialog.backend;
    let mut reinvite = dialog.backend_request("INVITE", "nat-reinvite", 2);
    reinvite = reinvite.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Contact: <sip:alice@{backend}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            len = sdp("10.0.0.10", 50002).len(),
            body = sdp("10.0.0.10", 50002)
        ),
    );
    lab.backend_sends(backend, &reinvite);
    let sent = lab.take_sent();
    let offer = sent_to(&sent, CARRIER);
    assert_eq!(offer.method(), Some("INVITE"));
    assert!(
        offer.values("via")[0].starts_with(&format!("SIP/2.0/UDP {outside};")),
        "{:?}",
        offer.values("via")
    );
    let body = offer.body();
    assert!(body.contains(&format!("c=IN IP4 {NAT_OUTSIDE}")), "{body}");
    assert!(
        body.contains(&format!("o=- 1 1 IN IP4 {NAT_OUTSIDE}")),
        "{body}"
    );
    assert!(
        !offer.value("via").contains(&bound_ip) && !body.contains(&bound_ip),
        "the bound public address leaked: {:?} {body}",
        offer.values("via")
    );
    // The kernel sends from the bound listener, and compares what the parties were told.
    let selves = lab.core.sip_selves();
    let public = &selves.sides[usize::from(Side::Public.index())];
    assert_eq!(
        public.listener,
        crate::media::session::flow_key(addr(PUBLIC))
    );
    assert_eq!(
        public.route.as_bytes(),
        format!("<sip:{outside};lr>").as_bytes()
    );
    assert_eq!(
        public.via.as_bytes(),
        format!("SIP/2.0/UDP {outside};branch=").as_bytes()
    );
}

/// A lab whose backend chosen first (`BACKEND_B`, round robin) is reached over TCP.
fn lab_with_a_tcp_backend() -> Lab {
    let mut sip = config(&[BACKEND_A, BACKEND_B]);
    sip.backends[1].transport = BackendTransport::Tcp;
    Lab::with(sip, AdmissionConfig::default())
}

/// A target DNS found, of weight 1.
fn target(address: &str, priority: u16) -> crate::proxy::dns::Target {
    crate::proxy::dns::Target {
        address: addr(address),
        priority,
        weight: 1,
    }
}

fn backends_found_by_dns() {
    let mut sip = config(&[]);
    sip.backend_hosts = vec![crate::proxy::config::BackendHostConfig {
        host: "pbx.example".to_owned(),
        port: None,
        transport: BackendTransport::Tcp,
        server_name: None,
        tls_ca: None,
        max_calls: 0,
    }];
    let mut lab = Lab::with(sip, AdmissionConfig::default());
    lab.input(Input::Resolved {
        of: crate::proxy::dns::Named::BackendHost(0),
        targets: vec![target(BACKEND_B, 20), target(BACKEND_A, 10)],
    });
    assert!(
        lab.guard
            .iter()
            .any(|u| matches!(u, GuardUpdate::TrustBackends(ips)
            if ips.contains(&addr(BACKEND_A).ip()) && ips.contains(&addr(BACKEND_B).ip()))),
        "{:?}",
        lab.guard
    );
    // The lower SRV priority takes the call, over the entry's transport.
    let invite = forward_invite(&mut lab, &Call::new("dns-1"), "dns-1");
    assert_eq!(
        (invite.to, invite.transport),
        (addr(BACKEND_A), Transport::TcpOut)
    );
    // DNS no longer names it: the next call goes to the one left.
    lab.input(Input::Resolved {
        of: crate::proxy::dns::Named::BackendHost(0),
        targets: vec![target(BACKEND_B, 20)],
    });
    let invite = forward_invite(&mut lab, &Call::new("dns-2"), "dns-2");
    assert_eq!(invite.to, addr(BACKEND_B));
}

fn tcp_backend() {
    let mut lab = lab_with_a_tcp_backend();
    let invite = forward_invite(&mut lab, &Call::new("tcp"), "tcp-1");
    assert_eq!(
        (invite.to, invite.transport),
        (addr(BACKEND_B), Transport::TcpOut)
    );
    assert!(
        invite.values("via")[0].starts_with(&format!("SIP/2.0/TCP {PRIVATE};branch=")),
        "{:?}",
        invite.values("via")
    );
    // TCP delivers it or fails: no retransmission (RFC 3261 17.1.1.2).
    lab.advance(INVITE_TIMEOUT / 2);
    assert!(lab.take_sent().is_empty());
    // Its answer comes back on our connection, and goes on to the caller.
    let ok = response(
        &invite,
        200,
        "b-tcp",
        invite.to,
        Some(&sdp("10.0.0.10", 50000)),
    );
    lab.input(Input::Stream {
        listener: Side::Private,
        from: invite.to,
        connection: Transport::Tcp(7),
        bytes: ok.into_bytes(),
        waited: Duration::ZERO,
    });
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
}

fn large_request_goes_by_tcp() {
    let mut lab = Lab::new();
    let call = Call::new("large");
    let padding = format!("X-Padding: {}\r\n", "p".repeat(1400));
    let invite = call.invite("large-1").replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{padding}"),
        1,
    );
    lab.carrier_sends(&invite);
    let sent = lab.take_sent();
    let forwarded = sent
        .iter()
        .find(|s| s.method() == Some("INVITE"))
        .expect("the INVITE forwarded");
    assert!(forwarded.message.bytes().len() > sbc_common::sip_forward::UDP_MAX_REQUEST);
    assert_eq!(forwarded.transport, Transport::TcpOut);
    assert!(forwarded.values("via")[0].starts_with("SIP/2.0/TCP "));
    // A small one still goes over UDP.
    let small = forward_invite(&mut lab, &Call::new("small"), "small-1");
    assert_eq!(small.transport, Transport::Udp);
}

fn trunk_found_by_dns() {
    let (first, second) = ("203.0.113.9:5060", "203.0.113.10:5060");
    let mut sip = config(&[BACKEND_A]);
    sip.trunk_host = Some("carrier.example".to_owned());
    let mut lab = Lab::with(sip, AdmissionConfig::default());
    lab.input(Input::Resolved {
        of: crate::proxy::dns::Named::Trunk,
        targets: vec![target(second, 20), target(first, 10)],
    });
    let invite = with_body(
        format!(
            "INVITE sip:+15551234567@carrier.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP {BACKEND_A};branch=z9hG4bKout-1;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{BACKEND_A}>;tag=out\r\nTo: <sip:+15551234567@carrier.example>\r\n\
             Call-ID: out-dns\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{BACKEND_A}>\r\n"
        ),
        Some(&sdp("10.0.0.10", 50000)),
    );
    lab.backend_sends(addr(BACKEND_A), &invite);
    let sent = lab.take_sent();
    let out = sent_to(&sent, first);
    assert_eq!(out.method(), Some("INVITE"));
    // The first target is out of service: the next one gets the INVITE, the backend hears
    // nothing of it.
    lab.datagram(
        Side::Public,
        first,
        &response(out, 503, "busy", addr(first), None),
    );
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, second).method(), Some("INVITE"));
    assert!(
        !sent
            .iter()
            .any(|s| s.to == addr(BACKEND_A) && s.code() == Some(503)),
        "the backend heard the first target's 503"
    );
}

fn trunk_over_tls() {
    let trunk = "203.0.113.9:5061";
    let mut sip = config(&[BACKEND_A]);
    sip.trunk = Some(addr(trunk));
    sip.trunk_transport = BackendTransport::Tls;
    sip.trunk_server_name = Some("trunk.example.com".to_owned());
    let mut lab = Lab::with(sip, AdmissionConfig::default());
    let invite = with_body(
        format!(
            "INVITE sip:+15551234567@trunk.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {BACKEND_A};branch=z9hG4bKout-1;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{BACKEND_A}>;tag=out\r\nTo: <sip:+15551234567@trunk.example.com>\r\n\
             Call-ID: out\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{BACKEND_A}>\r\n"
        ),
        Some(&sdp("10.0.0.10", 50000)),
    );
    lab.backend_sends(addr(BACKEND_A), &invite);
    let sent = lab.take_sent();
    let out = sent_to(&sent, trunk);
    assert_eq!(
        (out.method(), out.transport),
        (Some("INVITE"), Transport::TlsOut)
    );
    assert!(
        out.values("via")[0].starts_with("SIP/2.0/TLS "),
        "{:?}",
        out.values("via")
    );
}

fn lost_connection_fails_over() {
    let mut lab = lab_with_a_tcp_backend();
    let first = forward_invite(&mut lab, &Call::new("lost"), "lost-1");
    assert_eq!(first.to, addr(BACKEND_B));
    lab.input(Input::ConnectionLost {
        side: Side::Private,
        address: first.to,
    });
    let sent = lab.take_sent();
    let next = sent_to(&sent, BACKEND_A);
    assert_eq!(
        (next.method(), next.transport),
        (Some("INVITE"), Transport::Udp)
    );
    assert!(
        !sent.iter().any(|s| s.to == addr(CARRIER)),
        "the caller hears nothing of it: {:?}",
        summary(&sent)
    );
    // A connection lost once the call was answered takes nothing with it.
    let ok = response(next, 200, "b-lost", next.to, Some(&sdp("10.0.0.11", 50000)));
    lab.backend_sends(next.to, &ok);
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    lab.input(Input::ConnectionLost {
        side: Side::Private,
        address: next.to,
    });
    assert!(lab.take_sent().is_empty());
}

fn caller_over_tls() {
    let mut sip = config(&[BACKEND_A]);
    sip.tls = Some(crate::proxy::tls::TlsConfig {
        listen: "192.0.2.1:5061".parse().expect("an address"),
        certificate: "/etc/sbc/tls/sbc.pem".into(),
        private_key: "/etc/sbc/tls/sbc.key".into(),
    });
    let mut lab = Lab::with(sip, AdmissionConfig::default());
    let call = Call::new("tls");
    let connection = Transport::Tls(9);
    let over_tls = |lab: &mut Lab, text: &str| {
        lab.input(Input::Stream {
            listener: Side::Public,
            from: addr(CARRIER),
            connection,
            bytes: text.as_bytes().to_vec(),
            waited: Duration::ZERO,
        });
    };
    over_tls(&mut lab, &call.invite("tls-1"));
    let sent = lab.take_sent();
    let invite = sent
        .iter()
        .find(|s| s.method() == Some("INVITE"))
        .expect("the INVITE forwarded");
    // The backend and the carrier both see our TLS listener as the carrier's way back.
    assert!(
        invite
            .values("record-route")
            .contains(&"<sip:192.0.2.1:5061;transport=tls;lr>".to_owned()),
        "{:?}",
        invite.values("record-route")
    );
    let backend = invite.to;
    let ok = response(
        invite,
        200,
        "b-tls",
        backend,
        Some(&sdp("10.0.0.10", 50000)),
    );
    lab.backend_sends(backend, &ok);
    let sent = lab.take_sent();
    let answer = sent_to(&sent, CARRIER);
    assert_eq!((answer.code(), answer.transport), (Some(200), connection));
    let mut dialog = Dialog {
        carrier_routes: answer.values("record-route").into_iter().rev().collect(),
        backend_routes: invite.values("record-route"),
        call,
        backend,
        to_tag: "b-tls".to_owned(),
    };
    // The carrier's route set names our TLS listener: it is ours.
    over_tls(&mut lab, &dialog.carrier_request("ACK", "tls-ack", None));
    assert_eq!(
        sent_to(&lab.take_sent(), &backend.to_string()).method(),
        Some("ACK")
    );
    // The backend's BYE reaches the carrier on the connection it came over, named in our Via.
    lab.backend_sends(backend, &dialog.backend_request("BYE", "tls-bye", 2));
    let sent = lab.take_sent();
    let bye = sent_to(&sent, CARRIER);
    assert_eq!((bye.method(), bye.transport), (Some("BYE"), connection));
    assert!(
        bye.values("via")[0].starts_with("SIP/2.0/TLS "),
        "{:?}",
        bye.values("via")
    );
}

fn public_address_moved() {
    let mut lab = lab_behind_nat();
    let mut before = establish(&mut lab, "before");
    let moved = "203.0.113.99";
    lab.guard.clear();
    lab.input(Input::Readvertise {
        side: Side::Public,
        address: moved.parse().expect("an address"),
    });
    // The kernel compares what parties are told from now on.
    match &lab.guard[..] {
        [GuardUpdate::SipSelves(selves)] => {
            let public = &selves.sides[usize::from(Side::Public.index())];
            assert_eq!(
                public.route.as_bytes(),
                format!("<sip:{moved}:5060;lr>").as_bytes()
            );
        }
        other => panic!("our new addresses for the kernel expected: {other:?}"),
    }
    // A new call is told the new address.
    let after = establish(&mut lab, "after");
    assert_eq!(after.carrier_routes, vec![format!("<sip:{moved}:5060;lr>")]);
    // The call set up before routes by the address it was told, still ours.
    assert_eq!(
        before.carrier_routes,
        vec![format!("<sip:{NAT_OUTSIDE}:5060;lr>")]
    );
    lab.carrier_sends(&before.carrier_request("BYE", "before-bye", None));
    let sent = lab.take_sent();
    let bye = sent_to(&sent, &before.backend.to_string());
    assert_eq!(bye.method(), Some("BYE"));
    assert!(bye.values("route").is_empty(), "{:?}", bye.values("route"));
}

/// Whether a message names the backends' network anywhere (headers or body).
fn names_private_network(sent: &Sent) -> bool {
    String::from_utf8_lossy(sent.message.bytes()).contains("10.0.0.")
}

fn topology_hidden_from_the_public_side() {
    let mut lab = Lab::new();
    let call = Call::new("hidden");
    let invite = forward_invite(&mut lab, &call, "hidden-1");
    let backend = invite.to;
    let answer = sdp("10.0.0.10", 50000);
    lab.backend_sends(
        backend,
        &response(&invite, 200, "b-hidden", backend, Some(&answer)),
    );
    let sent = lab.take_sent();
    let ok = sent_to(&sent, CARRIER);
    // The backend's Contact is ours, its user kept; nothing names the private network.
    assert_eq!(ok.value("contact"), format!("<sip:alice@{PUBLIC}>"));
    assert!(!names_private_network(ok), "{:?}", ok.message);
    let mut dialog = Dialog {
        carrier_routes: ok.values("record-route").into_iter().rev().collect(),
        backend_routes: invite.values("record-route"),
        call,
        backend,
        to_tag: "b-hidden".to_owned(),
    };
    // The carrier's requests go to that Contact, and on to the backend's own.
    let to_backend_contact = format!("sip:alice@{backend}");
    let to_our_contact = format!("sip:alice@{PUBLIC}");
    let ack = dialog.carrier_request("ACK", "hidden-ack", None);
    lab.carrier_sends(&ack.replacen(&to_backend_contact, &to_our_contact, 1));
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, &backend.to_string()).request_uri(),
        to_backend_contact
    );
    let info = dialog.carrier_request("INFO", "hidden-info", None);
    lab.carrier_sends(&info.replacen(&to_backend_contact, &to_our_contact, 1));
    let sent = lab.take_sent();
    let info = sent_to(&sent, &backend.to_string());
    assert_eq!(info.request_uri(), to_backend_contact);
    lab.backend_sends(backend, &response(info, 200, "", backend, None));
    let sent = lab.take_sent();
    let info_ok = sent_to(&sent, CARRIER);
    assert_eq!(info_ok.code(), Some(200));
    assert!(!names_private_network(info_ok), "{:?}", info_ok.message);
    // A Contact that refreshes nothing is removed rather than rewritten, as the kernel does.
    assert!(info_ok.values("contact").is_empty());
    // The backend's BYE reaches the carrier with our Via alone; the carrier's answer gets the
    // backend's Via back, and ends the call.
    lab.backend_sends(backend, &dialog.backend_request("BYE", "hidden-bye", 2));
    let sent = lab.take_sent();
    let bye = sent_to(&sent, CARRIER);
    assert_eq!(bye.method(), Some("BYE"));
    assert_eq!(bye.values("via").len(), 1, "{:?}", bye.values("via"));
    assert!(!names_private_network(bye), "{:?}", bye.message);
    lab.carrier_sends(&response(bye, 200, "", addr(CARRIER), None));
    let sent = lab.take_sent();
    let bye_ok = sent_to(&sent, &backend.to_string());
    assert_eq!(bye_ok.code(), Some(200));
    assert_eq!(
        bye_ok.values("via"),
        vec![format!(
            "SIP/2.0/UDP {backend};branch=z9hG4bKhidden-bye;rport=5060"
        )]
    );
    assert_eq!(lab.call_end(), (CallEnd::Bye, Some(200)));
}

fn double_record_route() {
    let ours = |side: &str| format!("<sip:{side};lr>");
    for topology_hidden in [false, true] {
        let mut sip = config(&[BACKEND_A]);
        sip.hiding.topology = topology_hidden;
        let mut lab = Lab::with(sip, AdmissionConfig::default());
        let dialog = establish(&mut lab, "routes");
        assert_eq!(
            dialog.backend_routes,
            vec![ours(PRIVATE), ours(PUBLIC)],
            "the backend reaches us first at our private address"
        );
        // With topology hiding the carrier learns nothing of the private side, ours included.
        let carrier_routes = if topology_hidden {
            vec![ours(PUBLIC)]
        } else {
            vec![ours(PUBLIC), ours(PRIVATE)]
        };
        assert_eq!(
            dialog.carrier_routes, carrier_routes,
            "the carrier reaches us first at our public address"
        );
    }
}

fn loose_routing() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "loose");
    lab.carrier_sends(&dialog.carrier_request("INFO", "info", None));
    let sent = lab.take_sent();
    let info = sent_to(&sent, &dialog.backend.to_string());
    assert!(
        info.values("route").is_empty(),
        "our Routes popped: {:?}",
        info.values("route")
    );
    assert_eq!(info.request_uri(), format!("sip:alice@{}", dialog.backend));
    let backend = dialog.backend;
    lab.backend_sends(backend, &response(info, 200, "", backend, None));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    lab.backend_sends(backend, &dialog.backend_request("INFO", "binfo", 1));
    let sent = lab.take_sent();
    let info = sent_to(&sent, CARRIER);
    assert!(
        info.values("route").is_empty(),
        "{:?}",
        info.values("route")
    );
    assert_eq!(info.side, Side::Public);
}

fn unknown_dialog_is_481() {
    let mut lab = Lab::new();
    let mut dialog = Dialog {
        call: Call::new("ghost"),
        backend: addr(BACKEND_A),
        to_tag: "b".to_owned(),
        carrier_routes: vec![format!("<sip:{PUBLIC};lr>")],
        backend_routes: Vec::new(),
    };
    lab.carrier_sends(&dialog.carrier_request("BYE", "bye", None));
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(481));
    assert_eq!(sent.len(), 1, "nothing forwarded");
}

fn max_forwards_exhausted() {
    let mut lab = Lab::new();
    let invite = Call::new("tired")
        .invite("1")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    lab.carrier_sends(&invite);
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(483));
    assert_eq!(sent.len(), 1);
}

fn loop_detected() {
    let mut lab = Lab::new();
    let invite = forward_invite(&mut lab, &Call::new("looping"), "1");
    // What we sent comes back to the public side unchanged: a loop, not a spiral.
    lab.carrier_sends(&String::from_utf8_lossy(invite.message.bytes()));
    let sent = lab.take_sent();
    let refusal = sent.iter().find_map(Sent::code);
    assert_eq!(refusal, Some(482), "{:?}", summary(&sent));
}

fn timer_c() {
    let mut lab = Lab::new();
    let call = Call::new("ringing-forever");
    let invite = forward_invite(&mut lab, &call, "1");
    lab.backend_sends(invite.to, &response(&invite, 180, "b", invite.to, None));
    lab.take_sent();
    lab.advance(TIMER_C - Duration::from_secs(1));
    assert!(lab.take_sent().is_empty(), "still ringing");
    lab.advance(Duration::from_secs(1));
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, &invite.to.to_string()).method(),
        Some("CANCEL")
    );
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(408));
}

fn reinvite_reanchors() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "moved");
    let offer = sdp("203.0.113.9", 41000);
    lab.carrier_sends(&dialog.carrier_request("INVITE", "re", Some(&offer)));
    let sent = lab.take_sent();
    let reinvite = sent
        .iter()
        .find(|s| s.method() == Some("INVITE"))
        .expect("the re-INVITE forwarded");
    let body = reinvite.body();
    assert!(
        body.contains("m=audio 30002 "),
        "the same session's port: {body}"
    );
    let media = lab.media.lock().expect("not poisoned");
    assert_eq!(media.sessions.len(), 1, "no new session");
    assert_eq!(
        media.announced.last(),
        Some(&(1, Leg::A, addr("203.0.113.9:41000"))),
        "the carrier's new media address announced"
    );
}

fn reinvite_refreshes_the_target() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "refreshed");
    let reinvite = dialog.carrier_request("INVITE", "re", Some(&sdp("203.0.113.5", 41000)));
    lab.carrier_sends(&reinvite);
    let sent = lab.take_sent();
    let reinvite = sent
        .into_iter()
        .find(|s| s.method() == Some("INVITE"))
        .expect("the re-INVITE forwarded");
    // The backend answers from where it always did, naming another address to reach it at.
    let moved = addr("10.0.0.99:5070");
    let answer = response(&reinvite, 200, "", moved, Some(&sdp("10.0.0.10", 50000)));
    lab.guard.clear();
    lab.backend_sends(dialog.backend, &answer);
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    // The kernel's caller leg now goes to the new Contact, still to our Contact for it in
    // the caller's requests (topology hiding); the callee's is unchanged (its requests, whose
    // Vias are hidden, stay with the daemon).
    match &lab.guard[..] {
        [GuardUpdate::DialogForwarding(forwarding)] => {
            let [Some(caller), Some(callee)] = &forwarding.legs else {
                panic!("both legs known: {forwarding:?}");
            };
            assert_eq!(caller.target, moved);
            assert_eq!(caller.target_uri, format!("sip:alice@{moved}"));
            assert_eq!(caller.request_uri, format!("sip:alice@{PUBLIC}"));
            assert!(caller.forwards_requests && !callee.forwards_requests);
            assert_eq!(callee.target, addr(CARRIER));
        }
        other => panic!("one forwarding update expected: {other:?}"),
    }
    // A retransmitted answer names nothing new: no second update.
    lab.backend_sends(dialog.backend, &answer);
    lab.take_sent();
    assert_eq!(lab.guard.len(), 1);
    // The daemon's own requests go there too: its BYE at hang-up.
    lab.input(Input::HangUpAll);
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, &moved.to_string()).method(), Some("BYE"));
}

fn update_refreshes_the_target() {
    update_answer_refreshes_the_target(false);
}

/// The kernel forwards an UPDATE naming its sender's known Contact and passes its answer up:
/// the daemon holds no transaction for it, and learns the answerer's new Contact all the same.
fn update_forwarded_by_the_kernel_refreshes_the_target() {
    update_answer_refreshes_the_target(true);
}

fn update_answer_refreshes_the_target(kernel_forwards: bool) {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "updated");
    *lab.kernel.forwards.lock().expect("not poisoned") = kernel_forwards;
    lab.carrier_sends(&dialog.carrier_request("UPDATE", "up", None));
    let sent = lab.take_sent();
    let update = sent
        .into_iter()
        .find(|s| s.method() == Some("UPDATE"))
        .expect("the UPDATE forwarded");
    let update_method = crate::sip::Method::Update;
    assert_eq!(
        lab.core
            .client
            .keys()
            .any(|key| key.method == update_method),
        !kernel_forwards,
        "a transaction only where the daemon forwards the dialog"
    );
    let moved = addr("10.0.0.98:5072");
    lab.guard.clear();
    lab.backend_sends(dialog.backend, &response(&update, 200, "", moved, None));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    assert!(
        matches!(&lab.guard[..], [GuardUpdate::DialogForwarding(f)]
            if f.legs[0].as_ref().is_some_and(|caller| caller.target == moved)),
        "{:?}",
        lab.guard
    );
}

fn bye_ends_the_call() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "ending");
    lab.carrier_sends(&dialog.carrier_request("BYE", "bye", None));
    let sent = lab.take_sent();
    let bye = sent_to(&sent, &dialog.backend.to_string());
    assert_eq!(bye.method(), Some("BYE"));
    let backend = dialog.backend;
    lab.backend_sends(backend, &response(bye, 200, "", backend, None));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    assert_eq!(lab.call_end(), (CallEnd::Bye, Some(200)));
    assert_eq!(lab.media.lock().expect("not poisoned").ended, vec![1]);
    assert_eq!(
        lab.guard.last(),
        Some(&GuardUpdate::DialogEnded {
            call_id: "ending".to_owned(),
            confirmed_caller: Some(addr(CARRIER).ip()),
        })
    );
    assert!(matches!(lab.journal.last(), Some(Line::End(_))));
    assert!(lab.core.calls.is_empty());
}

fn options_to_us() {
    let mut lab = Lab::new();
    let options = |branch: &str| {
        with_body(
            format!(
                "OPTIONS sip:{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK{branch}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:lb@203.0.113.5>;tag=o\r\nTo: <sip:{PUBLIC}>\r\n\
                 Call-ID: ping-{branch}\r\nCSeq: 1 OPTIONS\r\n"
            ),
            None,
        )
    };
    lab.carrier_sends(&options("1"));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    lab.drain.begin("test");
    lab.carrier_sends(&options("2"));
    let sent = lab.take_sent();
    let draining = sent_to(&sent, CARRIER);
    assert_eq!(draining.code(), Some(503));
    assert!(!draining.value("retry-after").is_empty());
}

fn stale_requests() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "up");
    let waited = Duration::from_secs(2);
    lab.input(Input::Datagram {
        listener: Side::Public,
        from: addr(CARRIER),
        bytes: Call::new("late").invite("1").into_bytes(),
        waited,
    });
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, CARRIER).code(),
        Some(503),
        "{:?}",
        summary(&sent)
    );
    assert_eq!(sent.len(), 1, "no 100 Trying, nothing forwarded");
    lab.input(Input::Datagram {
        listener: Side::Public,
        from: addr(CARRIER),
        bytes: dialog.carrier_request("BYE", "bye", None).into_bytes(),
        waited,
    });
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, &dialog.backend.to_string()).method(),
        Some("BYE"),
        "a call's request is never stale"
    );
}

fn stray_response() {
    let mut lab = Lab::new();
    let stray = with_body(
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {PRIVATE};branch=z9hG4bKnothing\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 BYE\r\n"
        ),
        None,
    );
    lab.backend_sends(addr(BACKEND_A), &stray);
    assert!(lab.take_sent().is_empty());
}

fn preloaded_route_refused() {
    let mut lab = Lab::new();
    let invite = Call::new("preloaded").invite("1").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRoute: <sip:198.51.100.99;lr>\r\n",
    );
    lab.carrier_sends(&invite);
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, CARRIER).code(), Some(403));
    assert_eq!(sent.len(), 1, "no open relay: {:?}", summary(&sent));
}

fn call_from_a_backend() {
    let mut lab = Lab::new();
    let head = format!(
        "INVITE sip:bob@203.0.113.7:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {BACKEND_A};branch=z9hG4bKout;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@10.0.0.10>;tag=b-out\r\nTo: <sip:bob@203.0.113.7>\r\n\
         Call-ID: outbound\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{BACKEND_A}>\r\n"
    );
    let invite = with_body(head, Some(&sdp("10.0.0.10", 50000)));
    lab.backend_sends(addr(BACKEND_A), &invite);
    let sent = lab.take_sent();
    assert_eq!(sent_to(&sent, BACKEND_A).code(), Some(100));
    let out = sent_to(&sent, "203.0.113.7:5070");
    assert_eq!((out.method(), out.side), (Some("INVITE"), Side::Public));
    assert!(
        out.values("via")[0].contains(PUBLIC),
        "{:?}",
        out.values("via")
    );
    let body = out.body();
    assert!(body.contains(&format!("c=IN IP4 {MEDIA_PUBLIC}")), "{body}");
    assert_eq!(
        lab.media.lock().expect("not poisoned").announced,
        vec![(1, Leg::B, addr("10.0.0.10:50000"))],
        "the backend's media announced on the private leg"
    );
}

fn request_addressed_to_us() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "direct");
    // A caller that ignores the route set sends to our address with no Route.
    dialog.carrier_routes.clear();
    let info = dialog
        .carrier_request("INFO", "direct-info", None)
        .replacen(
            &format!("INFO sip:alice@{}", dialog.backend),
            &format!("INFO sip:{PUBLIC}"),
            1,
        );
    lab.carrier_sends(&info);
    let sent = lab.take_sent();
    let forwarded = sent_to(&sent, &dialog.backend.to_string());
    assert_eq!(forwarded.method(), Some("INFO"));
    assert_eq!(
        forwarded.request_uri(),
        format!("sip:alice@{}", dialog.backend),
        "sent to the callee's Contact"
    );
}

fn in_dialog_503_becomes_500() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "busy-info");
    lab.carrier_sends(&dialog.carrier_request("INFO", "info", None));
    let sent = lab.take_sent();
    let info = sent_to(&sent, &dialog.backend.to_string());
    let backend = dialog.backend;
    lab.backend_sends(backend, &response(info, 503, "", backend, None));
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, CARRIER).code(),
        Some(500),
        "RFC 3261 16.7: a 503 is not passed on"
    );
}

fn scanner_blocked() {
    let mut lab = Lab::new();
    let invite = Call::new("scan").invite("1").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nUser-Agent: friendly-scanner\r\n",
    );
    lab.carrier_sends(&invite);
    assert!(lab.take_sent().is_empty(), "a scanner hears nothing");
    assert!(
        matches!(
            lab.guard.last(),
            Some(GuardUpdate::Block { source, .. }) if *source == addr(CARRIER).ip()
        ),
        "{:?}",
        lab.guard
    );
}

fn tcp_answered_on_its_connection() {
    let mut lab = Lab::new();
    lab.input(Input::Stream {
        listener: Side::Public,
        from: addr(CARRIER),
        connection: Transport::Tcp(7),
        bytes: Call::new("over-tcp").invite("1").into_bytes(),
        waited: Duration::ZERO,
    });
    let sent = lab.take_sent();
    let trying = sent_to(&sent, CARRIER);
    assert_eq!(
        (trying.code(), trying.transport),
        (Some(100), Transport::Tcp(7))
    );
    let forwarded = sent.iter().find(|s| s.method() == Some("INVITE"));
    assert_eq!(
        forwarded.map(|s| s.transport),
        Some(Transport::Udp),
        "to the backend over UDP"
    );
}

fn media_timeout_hangs_up() {
    let mut lab = Lab::new();
    let dialog = establish(&mut lab, "quiet");
    // The kernel forwarded requests of both parties the core never saw: the BYEs go above.
    *lab.kernel.cseqs.lock().expect("not poisoned") = Some([7, 3]);
    let session = lab.media.lock().expect("not poisoned").sessions[&1].clone();
    lab.input(Input::MediaTimeout(vec![session]));
    let sent = lab.take_sent();
    for (to, cseq) in [
        (CARRIER.to_owned(), "4 BYE"),
        (dialog.backend.to_string(), "8 BYE"),
    ] {
        let bye = sent_to(&sent, &to);
        assert_eq!(bye.method(), Some("BYE"), "to {to}");
        assert_eq!(bye.value("cseq"), cseq, "to {to}");
        assert!(
            bye.value("reason").contains("media timeout"),
            "{}",
            bye.value("reason")
        );
    }
    assert_eq!(lab.call_end(), (CallEnd::MediaTimeout, None));
}

fn drain_deadline_cancels_ringing() {
    let mut lab = Lab::new();
    let invite = forward_invite(&mut lab, &Call::new("ringing"), "1");
    lab.backend_sends(invite.to, &response(&invite, 180, "b", invite.to, None));
    lab.take_sent();
    lab.input(Input::HangUpAll);
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, &invite.to.to_string()).method(),
        Some("CANCEL")
    );
    let refusal = sent_to(&sent, CARRIER);
    assert_eq!(refusal.code(), Some(503));
    assert_eq!(lab.call_end(), (CallEnd::DrainDeadline, Some(503)));
}

fn recorded_call_taken_over() {
    let mut before = Lab::new();
    let mut dialog = establish(&mut before, "survivor");
    let recorded = before
        .journal
        .iter()
        .rev()
        .find_map(|line| match line {
            Line::Put(record) if record.answered_unix_ms.is_some() => Some((**record).clone()),
            _ => None,
        })
        .expect("the answered call recorded");
    // The restarted daemon's media plane adopted the call's session.
    let media = FakeMedia {
        next: 1,
        sessions: before.media.lock().expect("not poisoned").sessions.clone(),
        ..FakeMedia::default()
    };
    let mut lab = Lab::taking_over(
        config(&[BACKEND_A, BACKEND_B]),
        AdmissionConfig::default(),
        vec![recorded],
        media,
    );
    assert_eq!(
        lab.guard[..2],
        [
            GuardUpdate::DialogStarted("survivor".to_owned()),
            GuardUpdate::CallerConfirmed(addr(CARRIER).ip()),
        ]
    );
    // Its in-dialog SIP goes through the kernel again, both ways.
    assert!(
        matches!(&lab.guard[2..], [GuardUpdate::DialogForwarding(f)]
            if f.call_id == "survivor" && f.legs.iter().all(Option::is_some)),
        "{:?}",
        lab.guard
    );
    assert_eq!(lab.media.lock().expect("not poisoned").answered, vec![1]);
    lab.carrier_sends(&dialog.carrier_request("BYE", "bye-after", None));
    let sent = lab.take_sent();
    let bye = sent_to(&sent, &dialog.backend.to_string());
    let backend = dialog.backend;
    lab.backend_sends(backend, &response(bye, 200, "", backend, None));
    assert_eq!(sent_to(&lab.take_sent(), CARRIER).code(), Some(200));
    assert_eq!(lab.call_end(), (CallEnd::Bye, Some(200)));
}

/// The branch of our Via on a forwarded request.
fn our_branch(sent: &Sent) -> String {
    let via = split_top_level(sent.value("via"), b',')[0].to_owned();
    via.split(';')
        .find_map(|param| param.strip_prefix("branch="))
        .expect("a branch")
        .to_owned()
}

fn in_dialog_branch_is_stateless() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "stateless");
    let info = dialog.carrier_request("INFO", "info", None);
    let top_via = format!("SIP/2.0/UDP {CARRIER};branch=z9hG4bKinfo;rport");
    let expected = branch::stateless_branch(branch::branch_hash(
        top_via.as_bytes(),
        branch::SIDE_PRIVATE,
    ));
    lab.carrier_sends(&info);
    let sent = lab.take_sent();
    let forwarded = sent_to(&sent, &dialog.backend.to_string());
    assert_eq!(our_branch(forwarded).as_bytes(), expected);
    // A daemon restarted meanwhile (no transaction left) sends it with the same branch.
    let mut other = Lab::new();
    other.core.calls = std::mem::take(&mut lab.core.calls);
    other.carrier_sends(&info);
    let sent = other.take_sent();
    assert_eq!(
        our_branch(sent_to(&sent, &dialog.backend.to_string())).as_bytes(),
        expected
    );
    // The other way, the branch is the one for the public side.
    let backend = dialog.backend;
    other.backend_sends(backend, &dialog.backend_request("INFO", "binfo", 1));
    let sent = other.take_sent();
    let top_via = format!("SIP/2.0/UDP {backend};branch=z9hG4bKbinfo;rport");
    assert_eq!(
        our_branch(sent_to(&sent, CARRIER)).as_bytes(),
        branch::stateless_branch(branch::branch_hash(top_via.as_bytes(), branch::SIDE_PUBLIC))
    );
}

fn edits_keep_what_they_do_not_change() {
    // Without topology hiding the carrier's route set holds both our addresses.
    let mut sip = config(&[BACKEND_A]);
    sip.hiding.topology = false;
    let mut lab = Lab::with(sip, AdmissionConfig::default());
    let mut dialog = establish(&mut lab, "verbatim");
    let info = dialog.carrier_request("INFO", "info", None).replace(
        &format!("Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bKinfo;rport\r\n"),
        "Via: SIP/2.0/UDP 198.51.100.7:5070;RPort;branch=z9hG4bKinfo ,SIP/2.0/UDP  h.example;branch=z9hG4bKold\r\n",
    );
    let routes = dialog.carrier_routes.join(", ");
    let info = info.replace(
        &format!(
            "Route: {}\r\nRoute: {}\r\n",
            dialog.carrier_routes[0], dialog.carrier_routes[1]
        ),
        &format!("Route: {routes},<sip:192.0.2.99;lr>,  <sip:192.0.2.98;lr>\r\n"),
    );
    lab.carrier_sends(&info);
    let sent = lab.take_sent();
    let forwarded = sent_to(&sent, "192.0.2.99:5060");
    let text = String::from_utf8_lossy(forwarded.message.bytes()).into_owned();
    assert!(
        text.contains(
            "\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;RPort=5060;branch=z9hG4bKinfo;received=203.0.113.5 ,SIP/2.0/UDP  h.example;branch=z9hG4bKold\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\r\nRoute: <sip:192.0.2.99;lr>,  <sip:192.0.2.98;lr>\r\n"),
        "{text}"
    );
}

fn response_to_a_kernel_forwarded_bye() {
    let mut lab = Lab::new();
    let dialog = establish(&mut lab, "kernel-bye");
    let backend = dialog.backend;
    // The BYE went through the XDP program: the backend answers a request the core never saw.
    let branch = String::from_utf8_lossy(&branch::stateless_branch(7)).into_owned();
    let ok = format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP {PRIVATE};branch={branch};rport=5060;received=10.0.0.1\r\n\
         Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKbye;rport=5062;received=203.0.113.6\r\n\
         From: <sip:carrier@203.0.113.5>;tag={}\r\nTo: <sip:alice@{PUBLIC}>;tag={}\r\n\
         Call-ID: kernel-bye\r\nCSeq: 3 BYE\r\nServer: backend 1.0\r\nContent-Length: 0\r\n\r\n",
        dialog.call.tag, dialog.to_tag
    );
    lab.backend_sends(backend, &ok);
    let sent = lab.take_sent();
    let relayed = sent_to(&sent, "203.0.113.6:5062");
    assert_eq!(relayed.code(), Some(200));
    assert_eq!(relayed.values("via").len(), 1, "our Via popped");
    assert!(
        relayed.values("server").is_empty(),
        "hidden from the public side"
    );
    assert_eq!(lab.call_end(), (CallEnd::Bye, Some(200)));
    assert!(lab.core.calls.is_empty());
}

/// The differential corpus (`sbc_common::sip_forward::corpus`): every request goes through
/// the proxy core and through the kernel's forwarding (its userspace run, the same code the
/// XDP program steps through); a request the kernel forwards must leave both byte for byte
/// the same, to the same place. The XDP program is held to the same corpus in the
/// privileged tests.
fn kernel_forwarding_matches_the_proxy() {
    use sbc_common::sip_forward::{
        ForwardScratch,
        corpus::{self, Expect, Sender, Topology},
        forward,
    };
    const SEED: u64 = 0x5eed;
    let socket = |(ip, port): ([u8; 4], u16)| SocketAddr::from((ip, port));
    let mut failures = Vec::new();
    let mut scratch = ForwardScratch::zeroed();
    for (topology, case) in corpus::all_cases() {
        let mut config = config(&[BACKEND_A]);
        config.hiding.topology = topology == Topology::Hidden;
        let mut lab = Lab::with(config, AdmissionConfig::default());
        let dialog = establish(&mut lab, corpus::CALL_ID);
        assert_eq!(dialog.backend, socket(corpus::BACKEND));
        let key = lab.core.calls.keys().next().expect("the call").clone();
        let forwarding = lab.core.forwarding(&key).expect("an answered call");
        assert_eq!(forwarding.tags, [corpus::CALLER_TAG, corpus::CALLEE_TAG]);
        let map_value = forwarding.map_value(SEED).expect("fits the kernel's table");
        // What the XDP tests install is what the daemon writes.
        assert_eq!(map_value, corpus::dialog(SEED, topology));
        let selves = lab.core.sip_selves();
        assert_eq!(selves, corpus::selves());
        let source = socket(case.sender.source());
        match case.sender {
            Sender::Carrier => lab.carrier_sends(case.message),
            Sender::Backend => lab.backend_sends(source, case.message),
        }
        let sent = lab.take_sent();
        let target = socket(case.sender.target());
        let proxied: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.to == target && s.message.is_request() != case.is_response())
            .collect();
        let kernel = forward(
            case.message.as_bytes(),
            &map_value,
            &selves,
            case.arrival(SEED),
            &mut scratch,
        )
        .map(|len| String::from_utf8_lossy(&scratch.out.bytes[..len]).into_owned());
        let outcome = match (case.expect, &kernel, proxied.as_slice()) {
            (Expect::Forward, Ok(text), [proxy]) if proxy.message.bytes() == text.as_bytes() => {
                continue;
            }
            (Expect::Forward, Ok(text), [proxy]) => format!(
                "different bytes\n  proxy:  {:?}\n  kernel: {text:?}",
                String::from_utf8_lossy(proxy.message.bytes()),
            ),
            (Expect::Forward, _, proxied) => {
                format!("kernel {kernel:?}, proxy sent {} there", proxied.len())
            }
            (Expect::Pass(reason), Err(got), _) if *got == reason => continue,
            (Expect::Pass(reason), _, _) => format!("expected {reason:?}, got {kernel:?}"),
        };
        failures.push(format!("{}: {outcome}", case.name));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A request of a dialog the kernel forwards, which reached the daemon anyway (sent to our
/// address, or before the kernel knew the call): its answer goes back through the kernel, so
/// no transaction here waits for it, retransmits it or answers 408.
fn kernel_forwarded_dialog_is_stateless_here() {
    let mut lab = Lab::new();
    let mut dialog = establish(&mut lab, "kernel");
    *lab.kernel.forwards.lock().expect("not poisoned") = true;
    lab.carrier_sends(&dialog.carrier_request("BYE", "bye", None));
    let sent = lab.take_sent();
    assert_eq!(
        sent_to(&sent, &dialog.backend.to_string()).method(),
        Some("BYE")
    );
    let bye = crate::sip::Method::Bye;
    assert!(!lab.core.server.values().any(|tx| tx.info.method == bye));
    assert!(!lab.core.client.keys().any(|key| key.method == bye));
    lab.advance(Duration::from_secs(40));
    assert!(lab.take_sent().is_empty(), "no retransmission, no 408");
    // The kernel forwarded the answer and reports the end: the delay from the BYE counts.
    let at = lab.now.at;
    lab.input(Input::EndedInKernel {
        call_id: "kernel".to_owned(),
        code: 200,
        at,
        disconnect_delay: None,
    });
    assert_eq!(lab.call_end(), (CallEnd::Bye, Some(200)));
    let ended: Vec<_> = lab
        .events
        .iter()
        .filter(|e| e.name() == "call_ended")
        .collect();
    assert_eq!(ended.len(), 1);
}
