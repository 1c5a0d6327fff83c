//! The media plane: sessions, their ports and flows, latching, and the userspace relay's
//! forwarding decision.
//!
//! Every flow exists twice: in `State::flows` (what the userspace relay forwards by) and, with
//! XDP, in the kernel flow map (what the fast path forwards by). Both are written here and only
//! here, under one lock, so they never disagree.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use sbc_common::{
    Flow, FlowKey, FlowStats, IpAddress, SourceCheck,
    flow::{FLOW_OF_CALL, PeerMatch, STREAM_RTP, check_source},
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{
    audio_watch::{AudioDeadlines, AudioState, SilentLeg},
    latching::{Decision, Expected, LatchPolicy, Learning, Refusal, keeps},
    ports::AllocError,
    relay,
    session::{
        EndReason, LatchInfo, Leg, LegInfo, LegPorts, LegSpec, SessionInfo, SessionSpec,
        StreamCounters, flow_key, socket_addr,
    },
    socket::{MediaSocket, SharedPool},
    totals::{Accumulator, MediaTotals, SharedAccumulator},
};
use crate::{
    clock::monotonic_ns,
    dataplane::{FlowMaps, maps::FlowStatsReader},
    events::{self, Event, EventSink},
    side::Side,
};

/// How long a refused caller should wait before trying again (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Where each side's legs are bound (and the XDP flows match).
    pub public_address: IpAddr,
    pub private_address: IpAddr,
    /// What each side's parties are told to send to (`Config::media_advertised`), at start:
    /// `MediaPlane::readvertise` moves it.
    pub public_advertised: IpAddr,
    pub private_advertised: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub timeout: Duration,
    /// 0: no limit but the port range.
    pub max_sessions: usize,
    /// Which sources may latch a leg.
    pub latching: LatchPolicy,
    /// How long after a leg's first latch a better-matching source may still replace it.
    pub learning: Duration,
}

#[derive(Debug)]
pub enum MediaError {
    /// The request itself is wrong.
    Invalid(String),
    NotFound(u32),
    /// Out of ports or sessions: try again later.
    Exhausted(String),
    /// The kernel or the OS refused (map full, bind error).
    Internal(String),
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) | Self::Exhausted(m) | Self::Internal(m) => f.write_str(m),
            Self::NotFound(id) => write!(f, "no media session {id}"),
        }
    }
}

impl std::error::Error for MediaError {}

/// Packets that the userspace relay saw on one flow.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UserCounters {
    pub packets: u64,
    pub bytes: u64,
    pub foreign_dropped: u64,
    pub unsignalled_dropped: u64,
    pub undeliverable: u64,
    pub last_seen_ns: u64,
}

pub(super) struct FlowEntry {
    /// As mirrored in the kernel: forwarding, and the locked peer once latched.
    pub flow: Flow,
    /// What signalling says about the peer, and until when a better match may replace a
    /// provisional one (the peer itself is in `flow`).
    pub learning: Learning,
    /// The socket of the other leg's port: relayed packets leave from it.
    pub out: Arc<MediaSocket>,
    pub counters: UserCounters,
}

pub(super) struct Session {
    pub rtcp_mux: bool,
    pub legs: [LegPorts; 2],
    /// When it was created, or its media timeout armed.
    pub created_ns: u64,
    /// Since when its silence counts (its idle time, until media arrives): its creation, its
    /// arming if no media had come before, or for a session adopted after a restart the last
    /// packet the kernel saw of it.
    pub quiet_since_ns: u64,
    /// Whether the media timeout applies yet (a call's media is only expected once answered).
    pub armed: bool,
    /// Made for a call of the SIP proxy (`create_for_call`), not through the API.
    pub of_call: bool,
    pub relays: Vec<JoinHandle<()>>,
    /// What each leg's party said about the stream, and whether its media is overdue.
    pub audio: AudioState,
}

impl Session {
    pub fn keys(&self) -> impl Iterator<Item = FlowKey> + '_ {
        self.legs
            .iter()
            .flat_map(|leg| leg.ports().map(|(_, local)| flow_key(local)))
    }
}

pub(super) struct State {
    /// Boxed, as the flows: a table grows by doubling, and its empty slots then cost a pointer
    /// each rather than a whole entry (a few hundred bytes a session at any count).
    pub sessions: BTreeMap<u32, Box<Session>>,
    pub flows: HashMap<FlowKey, Box<FlowEntry>>,
    pub kernel: Option<FlowMaps>,
    pub next_id: u32,
}

pub struct MediaPlane {
    pub(super) settings: MediaSettings,
    /// What each side's parties are told now, by `Side::index`.
    advertised: RwLock<[IpAddr; 2]>,
    pub(super) state: Mutex<State>,
    /// The relay ports of each local address (their own locks: sockets give ports back).
    pub(super) pools: HashMap<IpAddr, SharedPool>,
    kernel_stats: Option<FlowStatsReader>,
    pub(super) events: Arc<EventSink>,
    /// Counters of every session since start (`media_totals`).
    pub(super) totals: SharedAccumulator,
}

/// A flow about to be activated.
pub(super) struct NewFlow {
    pub key: FlowKey,
    pub flow: Flow,
    /// What signalling says about the peer that sends to it.
    pub expected: Expected,
    /// The socket it sends from (the other leg's).
    pub out: Arc<MediaSocket>,
    /// The socket it receives on (its own).
    pub own: Arc<MediaSocket>,
}

/// A leg whose ports are bound: its sockets by stream (RTP, then RTCP if any).
pub(super) struct BoundLeg {
    pub leg: LegPorts,
    pub sockets: Vec<Arc<MediaSocket>>,
}

/// What signalling says about a leg's peer: where it receives media (from its SDP) and where
/// its SIP came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAnnouncement {
    pub rtp: SocketAddr,
    /// The RTCP port from `a=rtcp`; port + 1 when absent.
    pub rtcp_port: Option<u16>,
    pub sip_source: Option<IpAddr>,
}

impl PeerAnnouncement {
    /// Where the peer receives the given stream: RTCP at the RTP address, on the `a=rtcp` port
    /// or port + 1.
    fn media(&self, stream: u8) -> SocketAddr {
        if stream == STREAM_RTP {
            self.rtp
        } else {
            let port = self.rtcp_port.unwrap_or(self.rtp.port().wrapping_add(1));
            SocketAddr::new(self.rtp.ip(), port)
        }
    }

    fn expected(&self, stream: u8) -> Expected {
        Expected {
            media: Some(self.media(stream)),
            sip_source: self.sip_source,
        }
    }
}

/// What a session spec says about a leg's peer, for latching (`None`: nothing).
fn announcement(spec: &LegSpec) -> Option<PeerAnnouncement> {
    spec.peer.map(|rtp| PeerAnnouncement {
        rtp,
        rtcp_port: None,
        sip_source: spec.sip_source,
    })
}

/// The flows of a new session: what arrives on a leg's port leaves from the other leg's port of
/// the same stream, towards the other leg's peer (unknown until announced or latched).
fn session_flows(
    id: u32,
    legs: &[BoundLeg; 2],
    peers: [Option<PeerAnnouncement>; 2],
) -> Vec<NewFlow> {
    let mut flows = Vec::with_capacity(4);
    for leg in Leg::BOTH {
        let (bound, other) = (&legs[leg], &legs[leg.other()]);
        for (slot, (stream, local)) in bound.leg.ports().enumerate() {
            let new_src = other
                .leg
                .local(stream)
                .expect("both legs have the same streams");
            let new_dst = peers[leg.other()].map(|peer| peer.media(stream));
            let flow = Flow {
                new_src: IpAddress::from(new_src.ip()),
                new_src_port: new_src.port().to_be(),
                new_dst: new_dst.map_or(IpAddress::UNSPECIFIED, |d| IpAddress::from(d.ip())),
                new_dst_port: new_dst.map_or(0, |d| d.port().to_be()),
                peer: IpAddress::UNSPECIFIED,
                peer_port: 0,
                flags: 0,
                session_id: id,
                leg: leg.flow_tag(),
                stream,
                generation: 0,
                // The kernel maps assign it when the flow is installed.
                stats_slot: 0,
            };
            flows.push(NewFlow {
                key: flow_key(local),
                flow,
                expected: peers[leg].map_or_else(Expected::default, |p| p.expected(stream)),
                out: Arc::clone(&other.sockets[slot]),
                own: Arc::clone(&bound.sockets[slot]),
            });
        }
    }
    flows
}

impl MediaPlane {
    /// A media plane; with `kernel`, flows are mirrored into the XDP maps and whatever those
    /// maps already hold (from a previous daemon) is adopted.
    pub fn new(
        settings: MediaSettings,
        kernel: Option<(FlowMaps, FlowStatsReader)>,
        events: Arc<EventSink>,
    ) -> Arc<Self> {
        let mut pools = HashMap::new();
        for address in [settings.public_address, settings.private_address] {
            pools
                .entry(address)
                .or_insert_with(|| SharedPool::new(settings.port_min, settings.port_max));
        }
        let (kernel, kernel_stats) = kernel.unzip();
        let mut advertised = [settings.public_advertised; 2];
        advertised[usize::from(Side::Private.index())] = settings.private_advertised;
        let plane = Arc::new(Self {
            settings,
            advertised: RwLock::new(advertised),
            state: Mutex::new(State {
                sessions: BTreeMap::new(),
                flows: HashMap::new(),
                kernel,
                next_id: 1,
            }),
            pools,
            kernel_stats,
            events,
            totals: SharedAccumulator::default(),
        });
        plane.adopt_kernel_sessions();
        plane
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the tables half-written in a way that
        // is worse than stopping media for good, so keep going with the data as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where a side's legs are bound.
    pub fn address(&self, side: Side) -> IpAddr {
        match side {
            Side::Public => self.settings.public_address,
            Side::Private => self.settings.private_address,
        }
    }

    /// What a side's parties are told to send media to (in SDP).
    pub fn advertised(&self, side: Side) -> IpAddr {
        let advertised = self.advertised.read().unwrap_or_else(|p| p.into_inner());
        advertised[usize::from(side.index())]
    }

    /// A side's parties are told `address` from now on (in the SDP of new offers and
    /// answers; the sessions set up before keep relaying: they are bound, not advertised).
    pub fn readvertise(&self, side: Side, address: IpAddr) {
        let mut advertised = self.advertised.write().unwrap_or_else(|p| p.into_inner());
        advertised[usize::from(side.index())] = address;
    }

    pub fn ports_in_use(&self) -> Vec<(IpAddr, usize, usize)> {
        self.pools
            .iter()
            .map(|(addr, pool)| {
                let pool = pool.lock();
                (*addr, pool.in_use(), pool.capacity())
            })
            .collect()
    }

    fn validate(&self, spec: &SessionSpec) -> Result<(), MediaError> {
        for (name, leg) in [("a", &spec.a), ("b", &spec.b)] {
            let Some(peer) = leg.peer else { continue };
            let local = self.address(leg.side);
            if peer.is_ipv4() != local.is_ipv4() {
                return Err(MediaError::Invalid(format!(
                    "leg {name}: peer {peer} and local address {local} are of different IP families"
                )));
            }
            if peer.port() == 0 || peer.ip().is_unspecified() {
                return Err(MediaError::Invalid(format!(
                    "leg {name}: peer {peer} is not a media address (omit it to learn it from the first packet)"
                )));
            }
            if !spec.rtcp_mux && peer.port() == u16::MAX {
                return Err(MediaError::Invalid(format!(
                    "leg {name}: peer port {} leaves no room for RTCP on port + 1",
                    peer.port()
                )));
            }
        }
        Ok(())
    }

    /// Creates a session: binds its ports, installs its flows, starts its relays.
    pub fn create(self: &Arc<Self>, spec: &SessionSpec) -> Result<SessionInfo, MediaError> {
        self.create_session(spec, false)
    }

    /// Creates a session for a call of the SIP proxy. Its media timeout waits for `arm` (the
    /// call is not answered yet), and its flows say it belongs to a call, so that a restarted
    /// daemon frees it if no recorded call claims it.
    pub fn create_for_call(
        self: &Arc<Self>,
        spec: &SessionSpec,
    ) -> Result<SessionInfo, MediaError> {
        self.create_session(spec, true)
    }

    /// Starts a session's media timeout: from now if no media came yet, else media that
    /// already flowed (early media, or a call taken over after a restart) keeps counting.
    pub fn arm(&self, id: u32) {
        let now = monotonic_ns();
        let mut state = self.lock();
        let Some(seen) = state
            .sessions
            .get(&id)
            .map(|session| self.media_seen_ns(&state, session))
        else {
            return;
        };
        if let Some(session) = state.sessions.get_mut(&id) {
            session.armed = true;
            session.created_ns = now;
            if seen == 0 {
                session.quiet_since_ns = now;
            }
        }
    }

    /// The kernel's counters of a flow: one read of its slot, which the state knows (the
    /// watch reads every session's once a second).
    fn kernel_counters(&self, state: &State, key: &FlowKey) -> Option<FlowStats> {
        let slot = state.kernel.as_ref()?.stats_slot(key)?;
        self.kernel_stats.as_ref()?.get(slot)
    }

    /// When media last arrived on any of a session's ports, relayed in the kernel or here
    /// (0: never).
    pub(super) fn media_seen_ns(&self, state: &State, session: &Session) -> u64 {
        session
            .keys()
            .map(|key| {
                let here = state.flows.get(&key).map_or(0, |e| e.counters.last_seen_ns);
                let kernel = self
                    .kernel_counters(state, &key)
                    .map_or(0, |stats| stats.last_seen_ns);
                here.max(kernel)
            })
            .max()
            .unwrap_or(0)
    }

    /// Ends the sessions made for calls that none of `claimed` is (adopted from a daemon that
    /// died before it recorded their call, or after it recorded its end).
    pub fn end_orphans(&self, claimed: &std::collections::HashSet<u32>) -> Vec<SessionInfo> {
        let orphans: Vec<u32> = self
            .lock()
            .sessions
            .iter()
            .filter(|(id, session)| session.of_call && !claimed.contains(id))
            .map(|(&id, _)| id)
            .collect();
        orphans
            .into_iter()
            .filter_map(|id| self.end(id, EndReason::Orphaned).ok().map(|e| e.info))
            .collect()
    }

    fn create_session(
        self: &Arc<Self>,
        spec: &SessionSpec,
        of_call: bool,
    ) -> Result<SessionInfo, MediaError> {
        self.validate(spec)?;
        let mut state = self.lock();
        let max = self.settings.max_sessions;
        if max > 0 && state.sessions.len() >= max {
            return Err(MediaError::Exhausted(format!(
                "the media session limit ({max}) is reached"
            )));
        }
        let pair = !spec.rtcp_mux;
        // On failure the sockets bound so far close, giving their ports back.
        let legs = [
            self.bind_leg(spec.a.side, pair)?,
            self.bind_leg(spec.b.side, pair)?,
        ];
        let id = state.allocate_id();
        let mut entries = session_flows(id, &legs, [announcement(&spec.a), announcement(&spec.b)]);
        if of_call {
            for entry in &mut entries {
                entry.flow.flags |= FLOW_OF_CALL;
            }
        }
        state.install_in_kernel(&entries)?;
        let relays = self.activate_flows(&mut state, entries);
        let [a, b] = legs;
        let now = monotonic_ns();
        state.sessions.insert(
            id,
            Box::new(Session {
                rtcp_mux: spec.rtcp_mux,
                legs: [a.leg, b.leg],
                created_ns: now,
                quiet_since_ns: now,
                // A call's media is only expected once it is answered.
                armed: !of_call,
                of_call,
                relays,
                audio: AudioState::default(),
            }),
        );
        let info = self.info_locked(&state, id, monotonic_ns());
        drop(state);
        if let Some(info) = &info {
            self.events
                .emit(Event::MediaSessionCreated(events::MediaSessionCreated {
                    session: info.clone(),
                }));
        }
        info.ok_or(MediaError::Internal(
            "session vanished while created".into(),
        ))
    }

    /// Registers flows for the userspace relay and starts a relay on each flow's own socket.
    pub(super) fn activate_flows(
        self: &Arc<Self>,
        state: &mut State,
        flows: Vec<NewFlow>,
    ) -> Vec<JoinHandle<()>> {
        flows
            .into_iter()
            .map(|new| {
                state.flows.insert(
                    new.key,
                    Box::new(FlowEntry {
                        flow: new.flow,
                        learning: Learning::new(new.expected),
                        out: new.out,
                        counters: UserCounters::default(),
                    }),
                );
                let (plane, key) = (Arc::clone(self), new.key);
                relay::spawn(new.own, move |src, len| plane.on_packet(&key, src, len))
            })
            .collect()
    }

    /// Tells a session what signalling says about a leg's peer (from its SDP and its SIP):
    /// who may latch the leg, and where the other leg's media goes until the peer latches. A
    /// latched peer that signalling no longer admits as well as before (a re-INVITE to a new
    /// media server, a peer latched before signalling spoke) is forgotten: the leg learns again.
    pub fn announce_peer(
        &self,
        id: u32,
        leg: Leg,
        announced: PeerAnnouncement,
    ) -> Result<(), MediaError> {
        let mut state = self.lock();
        let state = &mut *state;
        let session = state.sessions.get(&id).ok_or(MediaError::NotFound(id))?;
        if announced.rtp.is_ipv4() != session.legs[leg].rtp.is_ipv4() {
            return Err(MediaError::Invalid(format!(
                "peer {} is of another IP family than leg {}",
                announced.rtp,
                leg.name()
            )));
        }
        let (own, other) = (session.legs[leg].clone(), session.legs[leg.other()].clone());
        for (stream, local) in own.ports() {
            let own_key = flow_key(local);
            let Some(entry) = state.flows.get_mut(&own_key) else {
                continue;
            };
            let expected = announced.expected(stream);
            let peer = socket_addr(&entry.flow.peer, entry.flow.peer_port);
            let policy = self.settings.latching;
            if entry.flow.is_latched() && !keeps(policy, &expected, peer, entry.flow.peer_match()) {
                entry.learning = Learning::new(expected);
                entry.flow.unlatch();
                let flow = entry.flow;
                if let Some(kernel) = state.kernel.as_mut() {
                    kernel
                        .update(&own_key, &flow)
                        .map_err(|e| MediaError::Internal(format!("{e:#}")))?;
                }
            } else {
                entry.learning.expected = expected;
            }
            let has_peer = entry.flow.is_latched();
            // The other leg's flow of this stream sends to this peer: to where it said it
            // receives, until its own packets latch where it really is.
            let Some(other_local) = other.local(stream) else {
                continue;
            };
            let key = flow_key(other_local);
            let (Some(entry), false) = (state.flows.get_mut(&key), has_peer) else {
                continue;
            };
            let peer = announced.media(stream);
            entry.flow.new_dst = IpAddress::from(peer.ip());
            entry.flow.new_dst_port = peer.port().to_be();
            let flow = entry.flow;
            if let Some(kernel) = state.kernel.as_mut() {
                kernel
                    .update(&key, &flow)
                    .map_err(|e| MediaError::Internal(format!("{e:#}")))?;
            }
        }
        Ok(())
    }

    pub fn get(&self, id: u32) -> Option<SessionInfo> {
        let state = self.lock();
        self.info_locked(&state, id, monotonic_ns())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let state = self.lock();
        let now = monotonic_ns();
        state
            .sessions
            .keys()
            .filter_map(|&id| self.info_locked(&state, id, now))
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Flows installed (in the kernel map too, with XDP): one per local media port.
    pub fn flow_count(&self) -> usize {
        self.lock().flows.len()
    }

    /// Ends a session: stops its relays, removes its flows, reports it. Its ports are free
    /// again once the relays have let go of their sockets (`EndedSession::ports_released`).
    pub fn end(&self, id: u32, reason: EndReason) -> Result<EndedSession, MediaError> {
        let mut state = self.lock();
        let info = self
            .info_locked(&state, id, monotonic_ns())
            .ok_or(MediaError::NotFound(id))?;
        let session = state.sessions.remove(&id).ok_or(MediaError::NotFound(id))?;
        for relay in &session.relays {
            relay.abort();
        }
        for key in session.keys() {
            state.flows.remove(&key);
            if let Some(kernel) = state.kernel.as_mut() {
                kernel.remove(&key);
            }
        }
        drop(state);
        self.settle_totals(&info);
        self.events
            .emit(Event::MediaSessionEnded(events::MediaSessionEnded {
                reason,
                session: Some(info.clone()),
                session_id: None,
                problem: None,
            }));
        Ok(EndedSession {
            info,
            relays: session.relays,
        })
    }

    /// The once-a-second look at the armed sessions: each is read once (with XDP, a syscall
    /// per flow), those with no media either way for the media timeout are ended, and with
    /// `audio` the legs of answered calls that missed an audio deadline are found.
    pub fn watch(&self, audio: Option<AudioDeadlines>) -> Watched {
        let timeout_ms = self.settings.timeout.as_millis() as u64;
        let armed: Vec<u32> = {
            let mut state = self.lock();
            state.lock_learnt_peers(monotonic_ns());
            state
                .sessions
                .iter()
                .filter(|(_, session)| session.armed)
                .map(|(&id, _)| id)
                .collect()
        };
        let mut watched = Watched::default();
        for id in armed {
            let Some(info) = self.get(id) else { continue };
            if info.idle_ms >= timeout_ms {
                if let Ok(ended) = self.end(id, EndReason::MediaTimeout) {
                    info!(
                        session = id,
                        "media session ended: no media for the timeout"
                    );
                    watched.idle.push(ended.info);
                }
            } else if let Some(deadlines) = audio
                && let Some(session) = self.lock().sessions.get_mut(&id)
            {
                let missed = session
                    .audio
                    .missed_deadlines(&info, deadlines, monotonic_ns());
                watched.silent.extend(missed);
            }
        }
        watched
    }

    /// Starts expecting media on a session's legs (its call was answered).
    pub fn watch_audio(&self, id: u32) {
        if let Some(session) = self.lock().sessions.get_mut(&id) {
            session.audio.watch(monotonic_ns());
        }
    }

    /// Records what a leg's party said in its SDP for this stream.
    pub fn note_direction(&self, id: u32, leg: Leg, sends: bool, receives: bool) {
        if let Some(session) = self.lock().sessions.get_mut(&id) {
            session
                .audio
                .note_direction(leg, sends, receives, monotonic_ns());
        }
    }

    /// The totals over every session since the daemon started, live ones included.
    pub fn media_totals(&self) -> MediaTotals {
        let ids: Vec<u32> = self.lock().sessions.keys().copied().collect();
        for id in ids {
            // The accumulator first, then the session: `end` removes a session before it
            // settles its account, so a session found here is settled after this read.
            let mut accumulator = self.lock_totals();
            if let Some(info) = self.get(id) {
                accumulator.take(&info);
            }
        }
        self.lock_totals().totals()
    }

    /// Takes an ended session's final counters into the totals.
    fn settle_totals(&self, info: &SessionInfo) {
        self.lock_totals().settle(info);
    }

    fn lock_totals(&self) -> MutexGuard<'_, Accumulator> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every session (userspace dataplane shutdown: nothing would relay them).
    pub fn end_all(&self, reason: EndReason) {
        let ids: Vec<u32> = self.lock().sessions.keys().copied().collect();
        for id in ids {
            let _ = self.end(id, reason);
        }
    }

    /// The userspace relay's decision for a datagram that arrived at `local` from `src`: where
    /// to send it and from which socket, or `None` to drop it (counted).
    pub fn on_packet(
        &self,
        local: &FlowKey,
        src: SocketAddr,
        len: usize,
    ) -> Option<(Arc<MediaSocket>, SocketAddr)> {
        let now = monotonic_ns();
        let mut state = self.lock();
        let state = &mut *state;
        let entry = state.flows.get_mut(local)?;
        if entry.flow.is_learning() && entry.learning.is_over(now) {
            state.lock_peer(local);
        }
        let entry = state.flows.get_mut(local)?;
        let refused =
            match check_source(&entry.flow, &IpAddress::from(src.ip()), src.port().to_be()) {
                SourceCheck::Accept => None,
                SourceCheck::Foreign => Some(Refusal::Foreign),
                SourceCheck::Latch => {
                    let current = entry.flow.is_latched().then(|| entry.flow.peer_match());
                    let window = self.settings.learning.as_nanos() as u64;
                    match entry
                        .learning
                        .consider(current, src, now, self.settings.latching, window)
                    {
                        Decision::Refuse(refusal) => Some(refusal),
                        Decision::Latch { matched, lock } => {
                            state.latch(local, src, matched, lock);
                            None
                        }
                    }
                }
            };
        let entry = state.flows.get_mut(local)?;
        if let Some(refusal) = refused {
            match refusal {
                Refusal::Unsignalled => entry.counters.unsignalled_dropped += 1,
                Refusal::Foreign => entry.counters.foreign_dropped += 1,
            }
            return None;
        }
        entry.counters.last_seen_ns = now;
        if entry.flow.new_dst_port == 0 {
            entry.counters.undeliverable += 1;
            return None;
        }
        entry.counters.packets += 1;
        entry.counters.bytes += len as u64;
        let dst = socket_addr(&entry.flow.new_dst, entry.flow.new_dst_port);
        Some((Arc::clone(&entry.out), dst))
    }

    pub(super) fn info_locked(&self, state: &State, id: u32, now: u64) -> Option<SessionInfo> {
        let session = state.sessions.get(&id)?;
        let mut last_seen = session.quiet_since_ns;
        // A stream's counters, its flow, and when media last arrived on it (0: never).
        let mut stream_info = |local: SocketAddr| -> (StreamCounters, Option<Flow>, u64) {
            let key = flow_key(local);
            let mut counters = StreamCounters::default();
            let mut stream_seen = 0;
            let entry = state.flows.get(&key);
            if let Some(entry) = entry {
                counters.userspace_packets = entry.counters.packets;
                counters.userspace_bytes = entry.counters.bytes;
                counters.foreign_dropped = entry.counters.foreign_dropped;
                counters.unsignalled_dropped = entry.counters.unsignalled_dropped;
                counters.undeliverable = entry.counters.undeliverable;
                stream_seen = entry.counters.last_seen_ns;
            }
            if let Some(kernel) = self.kernel_counters(state, &key) {
                counters.kernel_packets = kernel.packets;
                counters.kernel_bytes = kernel.bytes;
                counters.foreign_dropped += kernel.foreign_dropped;
                stream_seen = stream_seen.max(kernel.last_seen_ns);
            }
            last_seen = last_seen.max(stream_seen);
            (counters, entry.map(|e| e.flow), stream_seen)
        };
        let mut legs = Vec::with_capacity(2);
        let mut flows = Vec::with_capacity(2);
        for leg in &session.legs {
            let (rtp, flow, rtp_seen) = stream_info(leg.rtp);
            let rtcp = leg.rtcp.map(|rtcp| stream_info(rtcp).0);
            let rtp_idle_ms = (rtp_seen != 0).then(|| now.saturating_sub(rtp_seen) / 1_000_000);
            legs.push((leg, rtp, rtcp, rtp_idle_ms));
            flows.push(flow);
        }
        let flows: [Option<Flow>; 2] = flows.try_into().ok()?;
        let leg_infos: Vec<LegInfo> = legs
            .into_iter()
            .zip(Leg::BOTH)
            .map(|((leg, rtp, rtcp, rtp_idle_ms), which)| {
                // This leg's peer is where the other leg's flow sends to.
                let peer = flows[which.other()]
                    .filter(|f| f.new_dst_port != 0)
                    .map(|f| socket_addr(&f.new_dst, f.new_dst_port));
                let latch = latch_info(state, leg.rtp);
                LegInfo {
                    name: which,
                    side: leg.side,
                    local_rtp: leg.rtp,
                    local_rtcp: leg.rtcp,
                    advertised: self.advertised(leg.side),
                    peer,
                    latched: latch.is_some(),
                    latch,
                    rtcp_latch: leg.rtcp.and_then(|rtcp| latch_info(state, rtcp)),
                    rtp,
                    rtcp,
                    rtp_idle_ms,
                }
            })
            .collect();
        Some(SessionInfo {
            id,
            rtcp_mux: session.rtcp_mux,
            age_ms: now.saturating_sub(session.created_ns) / 1_000_000,
            idle_ms: now.saturating_sub(last_seen) / 1_000_000,
            legs: leg_infos.try_into().ok()?,
        })
    }
}

/// Who a flow's peer is, how it matched signalling and whether it is locked.
fn latch_info(state: &State, local: SocketAddr) -> Option<LatchInfo> {
    let flow = state.flows.get(&flow_key(local))?.flow;
    flow.is_latched().then(|| LatchInfo {
        peer: socket_addr(&flow.peer, flow.peer_port),
        matched: flow.peer_match(),
        locked: !flow.is_learning(),
    })
}

fn stream_name(stream: u8) -> &'static str {
    if stream == STREAM_RTP { "rtp" } else { "rtcp" }
}

/// What `MediaPlane::watch` found.
#[derive(Debug, Default)]
pub struct Watched {
    /// Sessions ended for the media timeout, in their final state.
    pub idle: Vec<SessionInfo>,
    /// Legs of answered calls whose media missed its deadline.
    pub silent: Vec<SilentLeg>,
}

/// A session that has ended: its final state, and its relays, which are stopping.
pub struct EndedSession {
    pub info: SessionInfo,
    relays: Vec<JoinHandle<()>>,
}

impl EndedSession {
    /// Waits until the session's relays have stopped: its sockets are closed and its ports
    /// can be allocated again.
    pub async fn ports_released(self) -> SessionInfo {
        for relay in self.relays {
            // Aborted: the only outcome is that the task (and its socket) is gone.
            let _ = relay.await;
        }
        self.info
    }
}

impl MediaPlane {
    /// Allocates and binds a leg's ports on its side's address (a pair unless rtcp-mux).
    fn bind_leg(&self, side: Side, pair: bool) -> Result<BoundLeg, MediaError> {
        let address = self.address(side);
        let pool = &self.pools[&address];
        let (first, sockets) = pool.bind(address, pair).map_err(|e| match e {
            AllocError::Exhausted { in_use, capacity } => {
                let (min, max) = pool.lock().range();
                MediaError::Exhausted(format!(
                    "media ports {min}-{max} on {address} are exhausted ({in_use} of {capacity} in use)"
                ))
            }
            AllocError::Bind(e) => {
                MediaError::Internal(format!("cannot bind a media port on {address}: {e}"))
            }
        })?;
        let leg = LegPorts {
            side,
            rtp: SocketAddr::new(address, first),
            rtcp: pair.then(|| SocketAddr::new(address, first + 1)),
        };
        Ok(BoundLeg { leg, sockets })
    }
}

impl State {
    /// `peer` is the flow's peer now (locked when `lock`, else provisional): the kernel
    /// forwards its packets from now on, and what the other leg relays to this peer goes where
    /// it sends from (symmetric RTP).
    fn latch(&mut self, local: &FlowKey, peer: SocketAddr, matched: PeerMatch, lock: bool) {
        let Some(entry) = self.flows.get_mut(local) else {
            return;
        };
        let peer_ip = IpAddress::from(peer.ip());
        entry
            .flow
            .latch(peer_ip, peer.port().to_be(), matched, !lock);
        let flow = entry.flow;
        let reverse_key = FlowKey::udp(flow.new_src, flow.new_src_port);
        let reverse = self.flows.get_mut(&reverse_key).map(|reverse| {
            reverse.flow.new_dst = peer_ip;
            reverse.flow.new_dst_port = peer.port().to_be();
            reverse.flow
        });
        if let Some(kernel) = self.kernel.as_mut() {
            let written = kernel.update(local, &flow).and_then(|()| match &reverse {
                Some(reverse) => kernel.update(&reverse_key, reverse),
                None => Ok(()),
            });
            if let Err(e) = written {
                warn!("latching {peer} in the kernel failed, relaying in userspace: {e:#}");
            }
        }
        info!(
            session = flow.session_id,
            leg = Leg::of_flow(flow.leg).map_or("?", Leg::name),
            stream = stream_name(flow.stream),
            %peer,
            matched = matched.name(),
            locked = lock,
            "latched media peer"
        );
    }

    /// Ends a flow's learning window: its provisional peer is locked, and the kernel drops
    /// everyone else from now on.
    pub(super) fn lock_peer(&mut self, local: &FlowKey) {
        let Some(entry) = self.flows.get_mut(local) else {
            return;
        };
        entry.flow.lock();
        let flow = entry.flow;
        if let Some(kernel) = self.kernel.as_mut()
            && let Err(e) = kernel.update(local, &flow)
        {
            warn!("locking a media peer in the kernel failed: {e:#}");
        }
        info!(
            session = flow.session_id,
            leg = Leg::of_flow(flow.leg).map_or("?", Leg::name),
            stream = stream_name(flow.stream),
            peer = %socket_addr(&flow.peer, flow.peer_port),
            matched = flow.peer_match().name(),
            "locked media peer"
        );
    }

    /// Locks every flow whose learning window has passed (the kernel relays their peers'
    /// packets, so the daemon may not see one to notice).
    fn lock_learnt_peers(&mut self, now: u64) {
        let learnt: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, entry)| entry.flow.is_learning() && entry.learning.is_over(now))
            .map(|(key, _)| *key)
            .collect();
        for key in learnt {
            self.lock_peer(&key);
        }
    }

    /// Mirrors new flows into the kernel map, all or nothing.
    pub(super) fn install_in_kernel(&mut self, flows: &[NewFlow]) -> Result<(), MediaError> {
        let Some(kernel) = self.kernel.as_mut() else {
            return Ok(());
        };
        for (done, new) in flows.iter().enumerate() {
            if let Err(e) = kernel.install(&new.key, &new.flow) {
                for installed in &flows[..done] {
                    kernel.remove(&installed.key);
                }
                return Err(MediaError::Exhausted(format!("{e:#}")));
            }
        }
        Ok(())
    }

    pub(super) fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}
