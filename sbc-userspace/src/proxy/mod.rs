//! The SIP proxy: a record-routing, transaction-stateful proxy (RFC 3261 16, 17; RFC 3581)
//! between the public side (carriers, trunks) and the private side (backends), anchoring every
//! call's media in the relay.
//!
//! One task owns all SIP state (transactions, calls, backend health) and handles one event at a
//! time: datagrams from the listeners, timers, and media timeouts. Nothing is shared, so nothing
//! is locked; the media plane is the only thing it calls out to.
mod admit;
mod answered;
mod backends;
mod build;
mod call_end;
mod calls;
mod continuity;
mod hangup;
mod health;
pub mod hiding;
mod inspect;
mod intake;
pub mod journal;
mod lanes;
mod no_audio;
mod requests;
mod responses;
mod shed_answer;
pub mod stats;
pub mod tcp;
mod transactions;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sbc_common::guard::BLOCK_ABUSE;
use timer_queue::next_expired;
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::time::DelayQueue;
use tracing::{debug, warn};

use self::{
    backends::Backends,
    calls::Call,
    inspect::Query,
    intake::{Intake, bind, spawn_receiver},
    journal::Journal,
    lanes::{LaneReceivers, Lanes},
    stats::{Origin, SipStats, method_label},
    transactions::{ClientTx, Peer, ServerTx, Transport},
};
pub use self::{calls::CallSummary, inspect::BackendSummary};
use crate::{
    admission::{Admission, AdmissionConfig, AdmissionCounters, SipGuard},
    clock::monotonic_ns,
    config::SipConfig,
    drain::Drain,
    events::EventSink,
    media::{MediaPlane, SessionInfo, SilentLeg},
    side::Side,
    sip::{
        inbound::{self, Inbound},
        via::Via,
    },
};

/// How often the proxy collects what intake shed, to hold it against its sources.
const SHED_COLLECTION: Duration = Duration::from_millis(200);

/// What the proxy task reacts to.
pub enum Event {
    Datagram {
        listener: Side,
        from: SocketAddr,
        bytes: Vec<u8>,
        received: Instant,
    },
    /// A complete message read from a TCP connection.
    Stream {
        listener: Side,
        from: SocketAddr,
        connection: u64,
        bytes: Vec<u8>,
        received: Instant,
    },
    Connected {
        connection: u64,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    Disconnected {
        connection: u64,
    },
    /// Media sessions the media plane ended for lack of media, with their final counters.
    MediaTimeout(Vec<SessionInfo>),
    /// A reloaded `[admission]`.
    Reconfigure(Box<AdmissionConfig>),
    /// From the admin API.
    Query(Query),
    /// A drain's deadline passed: end every call.
    HangUpAll,
    /// Answered calls' media legs that missed their deadline; `hang_up`: end those calls.
    NoAudio {
        silent: Vec<SilentLeg>,
        hang_up: bool,
    },
}

impl Event {
    /// When a message arrived (in the kernel, for a datagram); `None` for other events.
    fn received(&self) -> Option<Instant> {
        match self {
            Event::Datagram { received, .. } | Event::Stream { received, .. } => Some(*received),
            _ => None,
        }
    }
}

/// Timers, each naming what it is about; a timer whose subject is gone or has moved on is
/// simply ignored when it fires.
#[derive(Debug, Clone)]
enum Timer {
    Retransmit(String),
    ClientTimeout(String),
    /// Timer C: an INVITE that rang but was never answered.
    Proceeding(String),
    ClientDone(String),
    ServerDone(String),
    Probe(usize),
}

struct Listener {
    socket: Arc<UdpSocket>,
    address: SocketAddr,
}

/// A handle to the running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    lanes: Lanes,
    intake: Arc<Intake>,
    pub stats: Arc<SipStats>,
    pub admission: Arc<AdmissionCounters>,
}

impl ProxyHandle {
    pub fn reconfigure(&self, admission: AdmissionConfig) {
        self.intake.reconfigure(&admission);
        let _ = self.lanes.control(Event::Reconfigure(Box::new(admission)));
    }

    pub fn media_timed_out(&self, sessions: Vec<SessionInfo>) {
        if !sessions.is_empty() {
            let _ = self.lanes.control(Event::MediaTimeout(sessions));
        }
    }

    pub fn no_audio(&self, silent: Vec<SilentLeg>, hang_up: bool) {
        if !silent.is_empty() {
            let _ = self.lanes.control(Event::NoAudio { silent, hang_up });
        }
    }

    /// Calls being set up or established.
    pub fn active_calls(&self) -> u64 {
        self.stats.calls_active.load(Ordering::Relaxed)
    }

    pub fn hang_up_all(&self) {
        let _ = self.lanes.control(Event::HangUpAll);
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<CallSummary>> {
        self.ask(Query::Calls).await
    }

    pub async fn backends(&self) -> anyhow::Result<Vec<BackendSummary>> {
        self.ask(Query::Backends).await
    }

    /// Puts a question in the proxy task's queue and waits for its answer.
    async fn ask<T>(
        &self,
        query: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
    ) -> anyhow::Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.lanes.control(Event::Query(query(reply)));
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the SIP proxy has stopped"))
    }
}

pub struct Proxy {
    public: Listener,
    private: Listener,
    backends: Backends,
    server: HashMap<String, ServerTx>,
    client: HashMap<String, ClientTx>,
    calls: HashMap<String, Call>,
    /// Writers of the open TCP connections.
    connections: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    timers: DelayQueue<Timer>,
    plane: Arc<MediaPlane>,
    events: Arc<EventSink>,
    config: SipConfig,
    stats: Arc<SipStats>,
    guard: Arc<SipGuard>,
    intake: Arc<Intake>,
    admission: Admission,
    admission_counters: Arc<AdmissionCounters>,
    drain: Arc<Drain>,
    journal: Journal,
    hiding: hiding::Hiding,
    /// Refusals by transaction, so retransmissions get them again and count once.
    answered: answered::Answered,
    /// How long the datagram being handled waited to be (the proxy's overload signal).
    event_delay: Duration,
    /// Makes our branches and tags unique to this process.
    token: String,
    sequence: u64,
}

impl Proxy {
    /// Binds the listeners and starts the proxy task.
    pub async fn start(
        config: &SipConfig,
        admission: &AdmissionConfig,
        guard: Arc<SipGuard>,
        plane: Arc<MediaPlane>,
        events: Arc<EventSink>,
        drain: Arc<Drain>,
        state_file: &std::path::Path,
    ) -> anyhow::Result<ProxyHandle> {
        let (journal, recorded) = Journal::open(state_file)?;
        let public = bind(config.public_listen).await?;
        let private = if config.private_listen() == config.public_listen {
            Arc::clone(&public)
        } else {
            bind(config.private_listen()).await?
        };
        let (lanes, receivers) = Lanes::new(Arc::clone(&guard));
        let stats = Arc::new(SipStats::new(config.backends.iter().map(|b| b.address)));
        let admission_counters = Arc::new(AdmissionCounters::default());
        let intake = Arc::new(Intake::new(
            admission,
            config.retry_after_secs,
            Arc::clone(&admission_counters),
        ));
        let receive = |socket: &Arc<UdpSocket>, side| {
            let (guard, intake) = (Arc::clone(&guard), Arc::clone(&intake));
            spawn_receiver(Arc::clone(socket), side, lanes.clone(), guard, intake);
        };
        receive(&public, Side::Public);
        if !Arc::ptr_eq(&public, &private) {
            receive(&private, Side::Private);
        }
        let connections = Arc::new(AtomicU64::new(0));
        let tcp_connections = tcp::Connections::new(config.tcp.clone(), Arc::clone(&stats));
        let mut tcp_listeners = vec![(config.public_listen, Side::Public)];
        if config.private_listen() != config.public_listen {
            tcp_listeners.push((config.private_listen(), Side::Private));
        }
        for (address, side) in tcp_listeners {
            let (lanes, intake, numbers) =
                (lanes.clone(), Arc::clone(&intake), Arc::clone(&connections));
            let limits = Arc::clone(&tcp_connections);
            tcp::listen(address, side, lanes, intake, numbers, limits).await?;
        }
        let backend_ips = config.backends.iter().map(|b| b.address.ip()).collect();
        let token = format!(
            "{:x}",
            crate::clock::unix_ms() ^ u64::from(std::process::id())
        );
        let mut proxy = Proxy {
            public: Listener {
                socket: public,
                address: config.public_listen,
            },
            private: Listener {
                socket: private,
                address: config.private_listen(),
            },
            backends: Backends::new(config),
            server: HashMap::new(),
            client: HashMap::new(),
            calls: HashMap::new(),
            connections: HashMap::new(),
            timers: DelayQueue::new(),
            plane,
            events,
            config: config.clone(),
            stats: Arc::clone(&stats),
            guard,
            intake: Arc::clone(&intake),
            admission: Admission::new(admission, backend_ips, monotonic_ns()),
            admission_counters: Arc::clone(&admission_counters),
            drain,
            journal,
            hiding: hiding::Hiding::new(&config.hiding),
            answered: answered::Answered::new(transactions::LINGER),
            event_delay: Duration::ZERO,
            token,
            sequence: 0,
        };
        proxy.restore_calls(recorded);
        proxy.start_probes();
        tokio::spawn(proxy.run(receivers));
        Ok(ProxyHandle {
            lanes,
            intake,
            stats,
            admission: admission_counters,
        })
    }

    /// Serves, in this order: what keeps calls going (the urgent lane), expired timers
    /// (retransmissions, timeouts), the collection of what intake shed, then new requests
    /// from the public side.
    async fn run(mut self, mut lanes: LaneReceivers) {
        let mut shed_collection = tokio::time::interval(SHED_COLLECTION);
        shed_collection.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                event = lanes.urgent.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
                Some(timer) = next_expired(&mut self.timers) => self.on_timer(timer),
                _ = shed_collection.tick() => self.hold_shedding_against_sources(),
                Some(event) = lanes.new_requests.next() => self.on_event(event),
            }
            self.publish_gauges();
        }
    }

    /// What intake shed, per source, counts against the source as refusals would.
    fn hold_shedding_against_sources(&mut self) {
        let now = monotonic_ns();
        for (source, requests) in self.intake.take_shed() {
            self.shed_from(source, requests, now);
        }
    }

    /// `requests` new requests of `source` were shed: it is blocked if that makes too many.
    fn shed_from(&mut self, source: IpAddr, requests: u32, now: u64) {
        if let Some(block) = self.admission.shed(source, requests, now) {
            self.block_source(source, block, BLOCK_ABUSE, "its requests kept being shed");
        }
    }

    /// Copies what the proxy task holds alone (calls, backend health and load) to the shared
    /// stats, after every event: a few stores, so a scrape never waits for the proxy.
    fn publish_gauges(&self) {
        let stats = &self.stats;
        stats
            .calls_active
            .store(self.calls.len() as u64, Ordering::Relaxed);
        for (backend, published) in self.backends.list.iter().zip(&stats.backends) {
            published
                .up
                .store(backend.health == backends::Health::Up, Ordering::Relaxed);
            published
                .active_calls
                .store(backend.active_calls as u64, Ordering::Relaxed);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Datagram {
                listener,
                from,
                bytes,
                received,
            } => {
                self.intake.taken();
                self.event_delay = received.elapsed();
                if self.is_stale_new_request(listener, from, &bytes) {
                    self.admission_counters
                        .shed_late
                        .fetch_add(1, Ordering::Relaxed);
                    self.shed_from(from.ip(), 1, monotonic_ns());
                    let peer = Peer {
                        side: Side::Public,
                        address: from,
                        transport: Transport::Udp,
                    };
                    return self.refuse_stale(peer, &bytes);
                }
                self.on_datagram(listener, from, &bytes);
            }
            Event::Stream {
                listener,
                from,
                connection,
                bytes,
                received,
            } => {
                self.intake.taken();
                self.event_delay = received.elapsed();
                let peer = Peer {
                    side: self.side_of(listener, from),
                    address: from,
                    transport: Transport::Tcp(connection),
                };
                self.on_message(peer, inbound::message(&bytes));
            }
            Event::Connected { connection, writer } => {
                self.connections.insert(connection, writer);
            }
            Event::Disconnected { connection } => {
                self.connections.remove(&connection);
            }
            Event::MediaTimeout(sessions) => self.on_media_timeout(&sessions),
            Event::Reconfigure(admission) => self.admission.reconfigure(&admission),
            Event::Query(query) => self.answer(query),
            Event::HangUpAll => self.hang_up_all(),
            Event::NoAudio { silent, hang_up } => self.on_no_audio(silent, hang_up),
        }
    }

    /// A new request from the public side that waited (in the kernel's buffer and the queue)
    /// past `admission.shed_delay_ms`, four times as long for allowlisted sources: it is
    /// refused at once, not handled, so the calls that are up go first. Responses and
    /// requests of calls are never stale.
    fn is_stale_new_request(&self, listener: Side, from: SocketAddr, bytes: &[u8]) -> bool {
        let Some(bound) = self.admission.shed_delay() else {
            return false;
        };
        if self.event_delay < bound
            || self.side_of(listener, from) == Side::Private
            || bytes.starts_with(b"SIP/2.0 ")
            || self.guard.knows_dialog(bytes)
        {
            return false;
        }
        !self.admission.is_trusted(from.ip()) || self.event_delay >= 4 * bound
    }

    /// Which side a datagram came from: its listener, or with one shared listener, whether
    /// it came from a backend.
    fn side_of(&self, listener: Side, from: SocketAddr) -> Side {
        if self.public.address != self.private.address {
            return listener;
        }
        if self
            .backends
            .list
            .iter()
            .any(|b| b.address.ip() == from.ip())
        {
            Side::Private
        } else {
            Side::Public
        }
    }

    fn on_datagram(&mut self, listener: Side, from: SocketAddr, bytes: &[u8]) {
        let peer = Peer {
            side: self.side_of(listener, from),
            address: from,
            transport: Transport::Udp,
        };
        self.on_message(peer, inbound::datagram(bytes));
    }

    fn on_message(&mut self, peer: Peer, inbound: Inbound) {
        let (side, from) = (peer.side, peer.address);
        match inbound {
            Inbound::Request(message, request) => {
                if let Err(rejection) = self.config.limits.check_request(&message, &request) {
                    self.stats.oversized.fetch_add(1, Ordering::Relaxed);
                    let message = Some(message);
                    return self.on_message(peer, Inbound::Refuse { rejection, message });
                }
                self.stats
                    .requests
                    .increment((side, method_label(&request.method)));
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
                let method = method_label(&response.cseq_method);
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
                            &response,
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

    fn listener(&self, side: Side) -> &Listener {
        match side {
            Side::Public => &self.public,
            Side::Private => &self.private,
        }
    }

    fn other(side: Side) -> Side {
        match side {
            Side::Public => Side::Private,
            Side::Private => Side::Public,
        }
    }

    /// Answers a peer the way it reached us (UDP, or its TCP connection).
    fn send_to(&self, peer: Peer, bytes: &[u8]) -> bool {
        match peer.transport {
            Transport::Udp => self.send(peer.side, peer.address, bytes),
            Transport::Tcp(connection) => self
                .connections
                .get(&connection)
                .is_some_and(|writer| writer.send(bytes.to_vec()).is_ok()),
        }
    }

    /// Sends a response to `request` back to its sender, counted by side, method and code; a
    /// final response to an initial INVITE also closes that call attempt in the stats.
    fn respond(
        &self,
        peer: Peer,
        request: &crate::sip::Message,
        code: u16,
        bytes: &[u8],
        origin: Origin,
    ) {
        let method = method_label(request.method().unwrap_or_default());
        self.stats
            .responses_sent
            .increment((peer.side, method, code));
        if code >= 200 && origin != Origin::Malformed && stats::is_initial_invite(request) {
            self.stats.invite_finished(code, origin);
        }
        self.send_to(peer, bytes);
    }

    /// Sends a datagram; false (and logged) when the transport refused it. A full send
    /// buffer is no refusal: under load it fills, and the datagram counts as sent and lost,
    /// which the transaction's own retransmissions (or its sender's) repair. Treating it as
    /// a failed hop would answer callers 500 and blame a healthy backend.
    fn send(&self, side: Side, to: SocketAddr, bytes: &[u8]) -> bool {
        match self.listener(side).socket.try_send_to(bytes, to) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.stats.send_busy.fetch_add(1, Ordering::Relaxed);
                debug!(%to, "SIP send buffer full: left to retransmission");
                true
            }
            Err(e) => {
                warn!(%to, "sending SIP failed: {e}");
                false
            }
        }
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// A fresh branch: the magic cookie, our token, a sequence number.
    fn branch(&mut self) -> String {
        let n = self.next_sequence();
        format!("z9hG4bK{}.{n}", self.token)
    }

    /// A fresh branch ending with a request's loop hash (see `requests::loop_hash`).
    fn branch_with(&mut self, loop_hash: &str) -> String {
        format!("{}-{loop_hash}", self.branch())
    }

    fn tag(&mut self) -> String {
        let n = self.next_sequence();
        format!("{}{n}", self.token)
    }

    /// Our Via for a request leaving on `side`.
    fn via_line(&self, side: Side, branch: &str) -> String {
        format!(
            "SIP/2.0/UDP {};branch={branch};rport",
            self.listener(side).address
        )
    }

    /// Our Record-Route/Route URI on `side`.
    fn uri(&self, side: Side) -> String {
        format!("<sip:{};lr>", self.listener(side).address)
    }

    /// Whether a SIP URI names this proxy (either listener).
    fn is_us(&self, host: &crate::sip::uri::Host, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        [&self.public.address, &self.private.address]
            .iter()
            .any(|a| host.ip() == Some(a.ip()) && a.port() == port)
    }

    /// Sends a request the proxy originates (CANCEL, BYE, probe) in a client transaction that
    /// retransmits until answered; `end` is when to give up on it.
    fn originate(&mut self, key: String, tx: ClientTx, end: Timer, after: Duration) {
        self.send(tx.side, tx.target, &tx.bytes);
        self.client.insert(key.clone(), tx);
        self.schedule(Timer::Retransmit(key), transactions::T1);
        self.schedule(end, after);
    }

    fn schedule(&mut self, timer: Timer, after: Duration) {
        self.timers.insert(timer, after);
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

/// Where a response goes for a Via (RFC 3261 18.2.2 with RFC 3581): `received` and `rport`
/// when the hop set them, else the sent-by.
fn via_destination(via: &Via) -> Option<SocketAddr> {
    let host = via
        .param("received")
        .and_then(|p| p.value.as_deref())
        .and_then(|r| r.trim_matches(['[', ']']).parse().ok())
        .or_else(|| via.host.ip())?;
    let port = via
        .param("rport")
        .and_then(|p| p.value.as_deref())
        .and_then(|p| p.parse().ok())
        .or(via.port)
        .unwrap_or(5060);
    Some(SocketAddr::new(host, port))
}

/// `DelayQueue::next` without the `futures` crate: poll it in place.
mod timer_queue {
    use std::{future::poll_fn, task::Poll};

    use tokio_util::time::DelayQueue;

    /// The next expired timer; pending forever while the queue is empty (the select arm
    /// then waits on the other branch).
    pub async fn next_expired<T>(queue: &mut DelayQueue<T>) -> Option<T> {
        poll_fn(|cx| match queue.poll_expired(cx) {
            Poll::Ready(Some(expired)) => Poll::Ready(Some(expired.into_inner())),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        })
        .await
    }
}
