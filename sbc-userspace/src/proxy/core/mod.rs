//! The proxy's protocol core, without I/O: it is handed one input at a time with the time it
//! happens (`handle(now, Input)`) and queues what should happen in the world (`Output`: send
//! this, record that, wake me then). It reads no clock, owns no socket and spawns nothing, so
//! every branch of its RFC 3261 logic can be driven by a unit test with a fake clock
//! (`tests`); the driver (`proxy::driver`) does the I/O for the daemon.
//!
//! Its state (transactions, calls, backend health, admission) is its own; the media plane is
//! reached through `MediaAnchoring`, synchronously, because an SDP must name ports that exist.
mod addresses;
mod admit;
pub(super) mod anchoring;
mod answered;
mod backends;
pub(super) mod build;
pub mod call_end;
pub mod calls;
mod continuity;
pub mod forwarding;
mod found_by_dns;
mod hangup;
mod health;
pub mod hiding;
pub mod inspect;
pub mod names;
mod no_audio;
pub mod record;
mod requests;
mod responses;
mod target_refresh;
#[cfg(test)]
mod tests;
pub(super) mod transactions;

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use sbc_common::{guard::BLOCK_ABUSE, sip_forward::UDP_MAX_REQUEST};
use tracing::debug;

use self::{
    addresses::OurAddresses,
    anchoring::MediaAnchoring,
    answered::Answered,
    backends::{BackendId, Backends},
    calls::Call,
    hiding::Hiding,
    names::CallKey,
    names::{ClientKey, ServerKey},
    record::{CallRecord, Line},
    transactions::{ClientTx, Peer, ServerTx, Transport},
};
use super::{
    config::{BackendTransport, SipConfig},
    dns::{Named, Target},
    stats::{self, Origin, SipStats},
};
use crate::{
    admission::{Admission, AdmissionConfig, AdmissionCounters},
    clock::Now,
    drain::Drain,
    events::Event,
    media::{SessionInfo, SilentLeg},
    side::Side,
    sip::{
        Method,
        inbound::{self, Inbound},
    },
};

/// What the core reacts to.
pub enum Input {
    /// A UDP datagram, with how long it waited (in the kernel's buffer and the queue) before
    /// the core got it: the proxy's overload signal.
    Datagram {
        listener: Side,
        from: SocketAddr,
        bytes: Vec<u8>,
        waited: Duration,
    },
    /// A complete message read from a TCP connection.
    Stream {
        listener: Side,
        from: SocketAddr,
        /// `Transport::Tcp` or `Tls`, with the connection's number.
        connection: Transport,
        bytes: Vec<u8>,
        waited: Duration,
    },
    /// A timer the core scheduled.
    Timer(Timer),
    /// A request the core sent (`Output::Send` with `on_failure`) could not be sent: the
    /// client transaction it names failed as if its hop answered 503 (RFC 3261 16.9).
    SendFailed(ClientKey),
    /// Media sessions the media plane ended for lack of media, with their final counters.
    MediaTimeout(Vec<SessionInfo>),
    /// Answered calls' media legs that missed their deadline; `hang_up`: end those calls.
    NoAudio {
        silent: Vec<SilentLeg>,
        hang_up: bool,
    },
    /// What intake shed since last time, per source: counted against the sources.
    Shed(Vec<(IpAddr, u32)>),
    /// A reloaded `[admission]`.
    Reconfigure(Box<AdmissionConfig>),
    /// This node's share of the fleet's limits now.
    FleetShare(crate::admission::FleetShare),
    /// A side's parties are told this address from now on (an elastic IP that moved).
    Readvertise { side: Side, address: IpAddr },
    /// A TCP connection we opened to this peer closed, or could not be opened.
    ConnectionLost { side: Side, address: SocketAddr },
    /// DNS says what a backend host or the trunk stands for now.
    Resolved { of: Named, targets: Vec<Target> },
    /// A drain's deadline passed: end every call.
    HangUpAll,
    /// The kernel forwarded the final response (`code`) to a BYE of the call with this
    /// Call-ID at `at`: the call ended then.
    EndedInKernel {
        call_id: String,
        code: u16,
        at: Instant,
        /// From the BYE to its final response, when the BYE went through the kernel too.
        disconnect_delay: Option<Duration>,
    },
}

/// What the core asks of the world, in the order it asks.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send `bytes` to `to` the way the peer is reached (a listener's socket for UDP, its
    /// connection for TCP). A full send buffer is no failure (retransmissions repair the
    /// loss); a refusal by the transport is reported back as `Input::SendFailed(on_failure)`
    /// when it names a client transaction.
    Send {
        to: Peer,
        bytes: Vec<u8>,
        on_failure: Option<ClientKey>,
    },
    /// A line for the events file.
    Event(Box<Event>),
    /// A line for the call journal.
    Journal(Line),
    /// Wake the core with `Input::Timer(timer)` after this long.
    Schedule(Timer, Duration),
    /// A change to the SIP guard's tables.
    Guard(GuardUpdate),
}

/// What the core changes in the SIP guard (the kernel's maps, or the daemon's own tables).
#[derive(Debug, PartialEq)]
pub enum GuardUpdate {
    /// A call with this Call-ID is set up: its in-dialog traffic is not limited.
    DialogStarted(String),
    /// The caller at this address acknowledged a call's answer: a block of its address does
    /// not cut that call's signalling off.
    CallerConfirmed(IpAddr),
    /// An established call's in-dialog SIP may go through the kernel, as this says.
    DialogForwarding(Box<forwarding::Forwarding>),
    /// A call ended (its caller given if it had confirmed the call).
    DialogEnded {
        call_id: String,
        confirmed_caller: Option<IpAddr>,
    },
    /// Our addresses as the kernel compares and writes them changed (`Core::sip_selves`).
    SipSelves(Box<sbc_common::SipSelves>),
    /// Backends DNS found: allowlisted without limits, as the configured ones.
    TrustBackends(Vec<IpAddr>),
    /// Block a source for `duration`; `why` goes into the log and the `source_blocked` event,
    /// which the driver writes once the block is in place.
    Block {
        source: IpAddr,
        duration: Duration,
        reason: u32,
        why: String,
    },
}

/// Timers, each naming what it is about; a timer whose subject is gone or has moved on is
/// simply ignored when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Timer {
    Retransmit(ClientKey),
    ClientTimeout(ClientKey),
    /// Timer C: an INVITE that rang but was never answered.
    Proceeding(ClientKey),
    ClientDone(ClientKey),
    ServerDone(ServerKey),
    Probe(BackendId),
}

pub struct Core {
    /// The listeners' addresses, bound and advertised.
    pub(super) addresses: OurAddresses,
    pub(super) backends: Backends,
    /// The targets DNS found for `sip.trunk_host` (none until it answers).
    pub(super) trunk_targets: Vec<Target>,
    pub(super) server: HashMap<ServerKey, ServerTx>,
    pub(super) client: HashMap<ClientKey, ClientTx>,
    pub(super) calls: HashMap<CallKey, Call>,
    pub(super) media: Box<dyn MediaAnchoring>,
    pub(super) kernel: Arc<dyn KernelDialogs>,
    pub(super) config: SipConfig,
    pub(super) stats: Arc<SipStats>,
    pub(super) admission: Admission,
    pub(super) admission_counters: Arc<AdmissionCounters>,
    /// Read only: whether the daemon is draining.
    pub(super) drain: Arc<Drain>,
    pub(super) hiding: Hiding,
    /// Refusals by transaction, so retransmissions get them again and count once.
    pub(super) answered: Answered,
    /// How long the message being handled waited to be (the proxy's overload signal).
    pub(super) waited: Duration,
    /// The time of the input being handled.
    pub(super) now: Now,
    /// Makes our branches and tags unique to this process.
    token: String,
    sequence: u64,
    outputs: VecDeque<Output>,
}

/// What the kernel knows of a call's in-dialog requests that it forwarded itself.
pub trait KernelDialogs: Send + Sync {
    /// The highest CSeq numbers it forwarded in the call `call_id`: the caller's requests,
    /// the callee's (`None`: it forwards none of the call's).
    fn highest_cseqs(&self, call_id: &str) -> Option<[u32; 2]>;
    /// Whether it forwards the in-dialog SIP of the call `call_id`.
    fn forwards(&self, call_id: &str) -> bool;
}

/// What a core is made of, apart from its configuration.
pub struct Parts {
    pub media: Box<dyn MediaAnchoring>,
    pub kernel: Arc<dyn KernelDialogs>,
    pub stats: Arc<SipStats>,
    pub admission_counters: Arc<AdmissionCounters>,
    pub drain: Arc<Drain>,
    /// Makes branches and tags unique to this process.
    pub token: String,
}

impl Core {
    /// A core with no calls yet: `restore` gives it a previous daemon's, and `start` its
    /// health probes.
    pub fn new(config: &SipConfig, admission: &AdmissionConfig, parts: Parts, now: Now) -> Self {
        let backend_ips = config.backends.iter().map(|b| b.address.ip()).collect();
        Self {
            addresses: OurAddresses::new(config),
            backends: Backends::new(config, now.at),
            trunk_targets: Vec::new(),
            server: HashMap::new(),
            client: HashMap::new(),
            calls: HashMap::new(),
            media: parts.media,
            kernel: parts.kernel,
            config: config.clone(),
            stats: parts.stats,
            admission: Admission::new(admission, backend_ips, now.monotonic_ns),
            admission_counters: parts.admission_counters,
            drain: parts.drain,
            hiding: Hiding::new(&config.hiding),
            answered: Answered::new(transactions::LINGER),
            waited: Duration::ZERO,
            now,
            token: parts.token,
            sequence: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Takes over the calls a previous daemon recorded, and starts the health probes.
    pub fn start(&mut self, now: Now, recorded: Vec<CallRecord>) {
        self.now = now;
        self.restore_calls(recorded);
        self.start_probes();
    }

    /// Handles one input at `now`; what it leads to waits in `poll_output`.
    pub fn handle(&mut self, now: Now, input: Input) {
        self.now = now;
        match input {
            Input::Datagram {
                listener,
                from,
                bytes,
                waited,
            } => {
                self.waited = waited;
                let peer = self.peer(listener, from, Transport::Udp);
                self.on_message(peer, inbound::datagram(&bytes));
            }
            Input::Stream {
                listener,
                from,
                connection,
                bytes,
                waited,
            } => {
                self.waited = waited;
                let peer = self.peer(listener, from, connection);
                self.on_message(peer, inbound::message(&bytes));
            }
            Input::Timer(timer) => self.on_timer(timer),
            Input::SendFailed(client_key) => self.transport_failed(&client_key),
            Input::MediaTimeout(sessions) => self.on_media_timeout(&sessions),
            Input::NoAudio { silent, hang_up } => self.on_no_audio(silent, hang_up),
            Input::Shed(sources) => {
                for (source, requests) in sources {
                    self.shed_from(source, requests);
                }
            }
            Input::Reconfigure(admission) => self.admission.reconfigure(&admission),
            Input::FleetShare(share) => {
                self.admission.set_fleet_share(share, self.now.monotonic_ns)
            }
            Input::ConnectionLost { side, address } => self.connection_lost(side, address),
            Input::Resolved { of, targets } => match of {
                Named::BackendHost(host) => self.backends_resolved(host, &targets),
                Named::Trunk => self.trunk_resolved(targets),
            },
            Input::Readvertise { side, address } => {
                self.addresses.readvertise(side, address);
                let selves = Box::new(self.sip_selves());
                self.guard(GuardUpdate::SipSelves(selves));
            }
            Input::HangUpAll => self.hang_up_all(),
            Input::EndedInKernel {
                call_id,
                code,
                at,
                disconnect_delay,
            } => self.ended_in_kernel(&call_id, code, at, disconnect_delay),
        }
        self.publish_gauges();
    }

    /// The next thing the core asks of the world, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub(super) fn output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.output(Output::Event(Box::new(event)));
    }

    pub(super) fn journal(&mut self, line: Line) {
        self.output(Output::Journal(line));
    }

    pub(super) fn guard(&mut self, update: GuardUpdate) {
        self.output(Output::Guard(update));
    }

    /// `requests` new requests of `source` were shed: it is blocked if that makes too many.
    fn shed_from(&mut self, source: IpAddr, requests: u32) {
        if let Some(block) = self.admission.shed(source, requests, self.now.monotonic_ns) {
            self.block_source(source, block, BLOCK_ABUSE, "its requests kept being shed");
        }
    }

    /// Copies what the core holds alone (calls, backend health and load) to the shared
    /// stats, after every input: a few stores, so a scrape never waits for the proxy.
    fn publish_gauges(&self) {
        let stats = &self.stats;
        stats
            .calls_active
            .store(self.calls.len() as u64, Ordering::Relaxed);
        for ((_, backend), published) in self.backends.iter().zip(stats.backends.snapshot()) {
            published
                .up
                .store(backend.health == backends::Health::Up, Ordering::Relaxed);
            published
                .active_calls
                .store(backend.active_calls as u64, Ordering::Relaxed);
        }
    }

    /// A new request from the public side that waited past `admission.shed_delay_ms` (four
    /// times as long for allowlisted sources): refused at once, not handled, so the calls that
    /// are up go first. Responses and requests of calls we hold are never stale.
    fn is_stale(&self, peer: Peer, request: &crate::sip::check::Request) -> bool {
        let Some(bound) = self.admission.shed_delay() else {
            return false;
        };
        if self.waited < bound
            || peer.side == Side::Private
            || peer.transport != Transport::Udp
            || self.find_call(request).is_some()
        {
            return false;
        }
        !self.admission.is_trusted(peer.address.ip()) || self.waited >= 4 * bound
    }

    /// Who sent a message that reached `listener` from `from`.
    fn peer(&self, listener: Side, from: SocketAddr, transport: Transport) -> Peer {
        Peer {
            side: self.side_of(listener, from),
            address: from,
            transport,
        }
    }

    /// Which side a message came from: its listener, or with one shared listener, whether
    /// it came from a backend.
    fn side_of(&self, listener: Side, from: SocketAddr) -> Side {
        if !self.addresses.shared() {
            return listener;
        }
        if self
            .backends
            .iter()
            .any(|(_, b)| b.address.ip() == from.ip())
        {
            Side::Private
        } else {
            Side::Public
        }
    }

    fn on_message(&mut self, peer: Peer, inbound: Inbound) {
        let (side, from) = (peer.side, peer.address);
        match inbound {
            Inbound::Request(message, request) if self.is_stale(peer, &request) => {
                self.admission_counters
                    .shed_late
                    .fetch_add(1, Ordering::Relaxed);
                self.shed_from(from.ip(), 1);
                self.refuse_stale(peer, &message, &request);
            }
            Inbound::Request(message, request) => {
                if let Err(rejection) = self.config.limits.check_request(&message, &request) {
                    self.stats.oversized.fetch_add(1, Ordering::Relaxed);
                    let message = Some(message);
                    return self.on_message(peer, Inbound::Refuse { rejection, message });
                }
                self.stats
                    .requests
                    .increment((side, request.method.label()));
                self.on_request(peer, message, request);
            }
            Inbound::Response(message, _)
                if self.config.limits.check_headers(&message).is_err() =>
            {
                self.stats.oversized.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "response beyond sip.limits dropped");
            }
            Inbound::Response(message, response) => {
                let method = response.cseq_method.label();
                self.stats
                    .responses_received
                    .increment((side, method, response.code));
                self.on_response(side, from, message, response);
            }
            Inbound::Refuse { rejection, message } => {
                match message {
                    Some(message) => {
                        // Counted as answered only here: one datagram, one count. A malformed
                        // INVITE is no call attempt (`Origin::Malformed`).
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let extra = build::rejection_headers(&rejection);
                        let tag = self.tag();
                        let reason = format!(
                            "{} ({})",
                            build::reason_phrase(rejection.status),
                            rejection.reason
                        );
                        let response =
                            build::response(&message, rejection.status, &reason, &tag, &extra);
                        self.respond(
                            peer,
                            &message,
                            rejection.status,
                            response,
                            Origin::Malformed,
                        );
                    }
                    None => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        debug!(%from, "unanswerable request dropped: {}", rejection.reason);
                    }
                }
            }
            Inbound::Drop(why) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "dropped: {why}");
            }
            Inbound::KeepAlive => {}
        }
    }

    /// Answers a peer the way it reached us (UDP, or its TCP connection).
    pub(super) fn send_to(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.output(Output::Send {
            to: peer,
            bytes,
            on_failure: None,
        });
    }

    /// Sends a datagram from a side's listener.
    pub(super) fn send(&mut self, side: Side, to: SocketAddr, bytes: Vec<u8>) {
        self.send_to(Peer::udp(side, to), bytes);
    }

    /// Sends a response to `request` back to its sender, counted by side, method and code; a
    /// final response to an initial INVITE also closes that call attempt in the stats.
    pub(super) fn respond(
        &mut self,
        peer: Peer,
        request: &crate::sip::Message,
        code: u16,
        bytes: Vec<u8>,
        origin: Origin,
    ) {
        self.count_response(peer.side, request, code, origin);
        self.send_to(peer, bytes);
    }

    /// Counts a response to `request` sent on `side` (see `respond`).
    pub(super) fn count_response(
        &self,
        side: Side,
        request: &crate::sip::Message,
        code: u16,
        origin: Origin,
    ) {
        let method = Method::label_of(request.method().unwrap_or_default());
        self.stats.responses_sent.increment((side, method, code));
        if code >= 200 && origin != Origin::Malformed && stats::is_initial_invite(request) {
            self.stats.invite_finished(code, origin);
        }
    }

    pub(super) fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// A fresh branch: the magic cookie, our token, a sequence number.
    pub(super) fn branch(&mut self) -> String {
        let n = self.next_sequence();
        format!("z9hG4bK{}.{n}", self.token)
    }

    /// A fresh branch ending with a request's loop hash (see `requests::loop_hash`).
    pub(super) fn branch_with(&mut self, loop_hash: &str) -> String {
        format!("{}-{loop_hash}", self.branch())
    }

    pub(super) fn tag(&mut self) -> String {
        let n = self.next_sequence();
        format!("{}{n}", self.token)
    }

    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// Our Via for a request leaving on `side`.
    pub(super) fn via_line(&self, side: Side, branch: &str, transport: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.via_name(),
            self.addresses.advertised(side)
        )
    }

    /// How a request of `len` bytes (our Via included) goes to `target`: over TLS or TCP to
    /// a backend or the trunk configured for it, over TCP when its URI asks for it (`tcp_asked`:
    /// `transport=tcp`) or when UDP could fragment it (over `UDP_MAX_REQUEST`, RFC 3261
    /// 18.1.1); else UDP.
    pub(super) fn request_transport(
        &self,
        target: SocketAddr,
        tcp_asked: bool,
        len: usize,
    ) -> Transport {
        let configured = self.config.transport_to(target).or_else(|| {
            if self.trunk_targets.iter().any(|t| t.address == target) {
                return Some(self.config.trunk_transport);
            }
            self.backends
                .id_of(target)
                .map(|id| self.backends[id].transport)
        });
        match configured {
            Some(BackendTransport::Tls) => Transport::TlsOut,
            Some(BackendTransport::Tcp) => Transport::TcpOut,
            _ if tcp_asked || len > UDP_MAX_REQUEST => Transport::TcpOut,
            _ => Transport::Udp,
        }
    }

    /// Our Record-Route/Route URI on `side`.
    pub(super) fn uri(&self, side: Side) -> String {
        format!("<sip:{};lr>", self.addresses.advertised(side))
    }

    /// Our Record-Route on `side` for a party that came over TLS (`tls`: our TLS listener,
    /// which its in-dialog requests then reach), else `uri`.
    pub(super) fn record_route(&self, side: Side, tls: bool) -> String {
        match self
            .addresses
            .tls_advertised()
            .filter(|_| tls && side == Side::Public)
        {
            Some(tls) => format!("<sip:{tls};transport=tls;lr>"),
            None => self.uri(side),
        }
    }

    /// Whether a SIP URI names this proxy (either listener, bound or advertised).
    pub(super) fn is_us(&self, host: &crate::sip::uri::Host, port: Option<u16>) -> bool {
        host.ip()
            .is_some_and(|ip| self.addresses.name_us(ip, port.unwrap_or(5060)))
    }

    /// Sends a request the proxy originates (CANCEL, BYE, probe) in a client transaction that
    /// retransmits until answered; `end` is when to give up on it.
    pub(super) fn originate(&mut self, key: ClientKey, tx: ClientTx, end: Timer, after: Duration) {
        self.send_to(tx.peer(), tx.bytes.clone());
        let reliable = tx.transport.reliable();
        self.client.insert(key.clone(), tx);
        if !reliable {
            self.schedule(Timer::Retransmit(key.clone()), transactions::T1);
        }
        self.schedule(end, after);
    }

    pub(super) fn schedule(&mut self, timer: Timer, after: Duration) {
        self.output(Output::Schedule(timer, after));
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Retransmit(key) => self.retransmit(&key),
            Timer::ClientTimeout(key) => self.client_timeout(&key),
            Timer::Proceeding(key) => self.proceeding_timeout(&key),
            Timer::ClientDone(key) => {
                self.client.remove(&key);
            }
            Timer::ServerDone(key) => {
                self.server.remove(&key);
            }
            Timer::Probe(index) => self.probe(index),
        }
    }
}
