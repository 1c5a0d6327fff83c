//! Re-adopting sessions: those a previous daemon left in the pinned flow map, and those of calls
//! taken over from another node of the fleet (`[cluster]`, their flows as it shared them).
//!
//! The kernel keeps relaying latched media while no daemon runs. Each flow carries its session
//! id, leg and stream, so a new daemon rebuilds every session from the map alone: it reserves
//! and binds the same ports (the slow path must receive again) and restarts their relays. A
//! session taken over is rebuilt the same way from its shared flows, under an id of this
//! daemon, and its flows are installed in the kernel as they were: a latched peer stays
//! latched, so media flows again as soon as it arrives here.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};

use sbc_common::{
    Flow, FlowKey,
    flow::{FLOW_OF_CALL, LEG_A, LEG_B, STREAM_RTCP, STREAM_RTP},
};
use tracing::{info, warn};

use super::{
    latching::Expected,
    plane::{MediaPlane, NewFlow, Session, State},
    session::{EndReason, LegPorts, socket_addr},
    socket::MediaSocket,
};
use crate::{
    clock::monotonic_ns,
    events::{self, Event},
    side::Side,
};

impl MediaPlane {
    pub(super) fn adopt_kernel_sessions(self: &Arc<Self>) {
        let mut state = self.lock();
        let flows = match state.kernel.as_ref().map(|kernel| kernel.flows()) {
            None => return,
            Some(Ok(flows)) => flows,
            Some(Err(e)) => {
                warn!("cannot read pinned flows, starting without them: {e:#}");
                return;
            }
        };
        let mut by_session: BTreeMap<u32, Vec<(FlowKey, Flow)>> = BTreeMap::new();
        for (key, flow) in flows {
            by_session
                .entry(flow.session_id)
                .or_default()
                .push((key, flow));
        }
        let mut adopted = 0;
        for (id, flows) in &by_session {
            match self.adopt_session(&mut state, *id, flows, Installed::Already) {
                Ok(()) => adopted += 1,
                Err(problem) => {
                    warn!(
                        session = id,
                        "cannot adopt pinned session ({problem}); removing it"
                    );
                    if let Some(kernel) = state.kernel.as_mut() {
                        for (key, _) in flows {
                            kernel.remove(key);
                        }
                    }
                    self.events
                        .emit(Event::MediaSessionEnded(events::MediaSessionEnded {
                            reason: EndReason::AdoptFailed,
                            session: None,
                            session_id: Some(*id),
                            problem: Some(problem),
                        }));
                }
            }
        }
        state.next_id = by_session
            .keys()
            .max()
            .map_or(1, |max| max.checked_add(1).unwrap_or(1));
        if adopted > 0 {
            info!(
                sessions = adopted,
                "adopted media sessions from pinned state"
            );
        }
    }

    /// Adopts the sessions of calls taken over from another node: `(its id there, its flows)`.
    /// Returns the id each adopted session has here; a session that cannot be adopted (its
    /// ports taken, flows that do not make a session) is left out, and its call then ends as
    /// one that lost its media.
    pub fn adopt_shared(
        self: &Arc<Self>,
        sessions: Vec<(u32, Vec<(FlowKey, Flow)>)>,
    ) -> HashMap<u32, u32> {
        let mut state = self.lock();
        let mut ids = HashMap::new();
        for (theirs, mut flows) in sessions {
            let ours = state.allocate_id();
            for (_, flow) in &mut flows {
                flow.session_id = ours;
            }
            match self.adopt_session(&mut state, ours, &flows, Installed::NotYet) {
                Ok(()) => {
                    ids.insert(theirs, ours);
                }
                Err(problem) => warn!(
                    session = theirs,
                    "cannot adopt a media session taken over from another node: {problem}"
                ),
            }
        }
        ids
    }

    /// The flows of the given sessions, as the kernel (or the userspace relay) forwards by
    /// them now: what another node needs to take the sessions over.
    pub fn flows_of(&self, ids: &[u32]) -> Vec<(u32, Vec<(FlowKey, Flow)>)> {
        let state = self.lock();
        ids.iter()
            .filter_map(|id| {
                let session = state.sessions.get(id)?;
                let flows = session
                    .keys()
                    .filter_map(|key| Some((key, state.flows.get(&key)?.flow)))
                    .collect();
                Some((*id, flows))
            })
            .collect()
    }

    fn side_of(&self, local: SocketAddr) -> Side {
        if local.ip() == self.settings.public_address {
            Side::Public
        } else {
            Side::Private
        }
    }

    fn adopt_session(
        self: &Arc<Self>,
        state: &mut State,
        id: u32,
        flows: &[(FlowKey, Flow)],
        installed: Installed,
    ) -> Result<(), String> {
        let local_of = |leg: u8, stream: u8| {
            flows
                .iter()
                .find(|(_, f)| f.leg == leg && f.stream == stream)
                .map(|(key, _)| socket_addr(&key.addr, key.port))
        };
        let rtcp_mux = local_of(LEG_A, STREAM_RTCP).is_none();
        let mut legs = Vec::with_capacity(2);
        for leg in [LEG_A, LEG_B] {
            let rtp = local_of(leg, STREAM_RTP).ok_or("a leg has no RTP flow")?;
            let rtcp = local_of(leg, STREAM_RTCP);
            if rtcp.is_none() != rtcp_mux {
                return Err("its legs disagree on rtcp-mux".into());
            }
            legs.push(LegPorts {
                side: self.side_of(rtp),
                rtp,
                rtcp,
            });
        }
        if flows.len() != if rtcp_mux { 2 } else { 4 } {
            return Err(format!("it has {} flows", flows.len()));
        }

        // On failure the sockets bound so far close, giving their ports back.
        let sockets = self.rebind_ports(legs.iter().flat_map(|leg| leg.ports()))?;
        let mut entries = Vec::with_capacity(flows.len());
        for (key, flow) in flows {
            let out = socket_addr(&flow.new_src, flow.new_src_port);
            let Some(out) = sockets.get(&out) else {
                return Err(format!(
                    "a flow sends from {out}, which is not one of its ports"
                ));
            };
            entries.push(NewFlow {
                key: *key,
                flow: *flow,
                expected: expected_peer(flows, flow),
                out: Arc::clone(out),
                own: Arc::clone(&sockets[&socket_addr(&key.addr, key.port)]),
            });
        }

        if installed == Installed::NotYet {
            state
                .install_in_kernel(&entries)
                .map_err(|e| format!("installing its flows: {e}"))?;
        }
        let of_call = flows.iter().any(|(_, flow)| flow.flags & FLOW_OF_CALL != 0);
        let relays = self.activate_flows(state, entries);
        // A learning window died with the daemon that opened it: keep the peer it chose.
        for (key, _) in flows.iter().filter(|(_, flow)| flow.is_learning()) {
            state.lock_peer(key);
        }
        let legs: [LegPorts; 2] = legs.try_into().expect("two legs");
        let now = monotonic_ns();
        let mut session = Session {
            rtcp_mux,
            legs,
            created_ns: now,
            quiet_since_ns: now,
            // A call's session waits for its restored call to arm it (once answered).
            armed: !of_call,
            of_call,
            relays,
            audio: Default::default(),
        };
        // Its silence did not start with this daemon: the kernel kept its last packet's time.
        let seen = self.media_seen_ns(state, &session);
        if seen != 0 {
            session.quiet_since_ns = seen;
        }
        state.sessions.insert(id, Box::new(session));
        Ok(())
    }

    /// Takes and binds the given ports again; all or nothing.
    fn rebind_ports(
        &self,
        ports: impl Iterator<Item = (u8, SocketAddr)>,
    ) -> Result<HashMap<SocketAddr, Arc<MediaSocket>>, String> {
        ports
            .map(|(_, local)| {
                let pool = self
                    .pools
                    .get(&local.ip())
                    .ok_or_else(|| format!("{local} is not a media address of this daemon"))?;
                Ok((local, pool.rebind(local)?))
            })
            .collect()
    }
}

/// Whether an adopted session's flows are in the kernel map already (pinned by the previous
/// daemon) or come from elsewhere (another node's shared state).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Installed {
    Already,
    NotYet,
}

/// What signalling said about an adopted flow's peer, as far as the pinned flows tell. A flow
/// that has not latched may latch to where the other leg sends to its peer (the SDP's
/// address). For a latched one nothing is known (the other leg sends to the latched peer, not
/// to the SDP's address), so the restored call's next SDP sets it without unlatching. The SIP
/// source is not in the map; the restored call announces it again.
fn expected_peer(flows: &[(FlowKey, Flow)], flow: &Flow) -> Expected {
    if flow.is_latched() {
        return Expected::default();
    }
    let reverse_key = FlowKey::udp(flow.new_src, flow.new_src_port);
    let media = flows
        .iter()
        .find(|(key, _)| *key == reverse_key)
        .map(|(_, reverse)| reverse)
        .filter(|reverse| reverse.new_dst_port != 0)
        .map(|reverse| socket_addr(&reverse.new_dst, reverse.new_dst_port));
    Expected {
        media,
        sip_source: None,
    }
}
