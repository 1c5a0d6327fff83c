//! The proxy task: the I/O around the protocol core. It takes what the listeners, TCP
//! connections, timers, the media plane and the admin API queued for the proxy, hands it to the
//! core with the time, and does what the core asks (send, write an event or a journal line,
//! schedule a timer, change the guard).
use std::{collections::HashMap, net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use timer_queue::next_expired;
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::time::DelayQueue;
use tracing::{debug, warn};

use super::{
    Queued,
    core::{
        Core, GuardUpdate, Input, Output, Timer,
        transactions::{Peer, Transport},
    },
    intake::Intake,
    journal::Journal,
    lanes::LaneReceivers,
    stats::SipStats,
    tcp::Outbound,
};
use crate::{
    admission::{SipGuard, guard::block_reason_name},
    clock::Now,
    events::{self, Event, EventSink},
    side::Side,
};

/// How often the proxy collects what intake shed, to hold it against its sources.
const SHED_COLLECTION: std::time::Duration = std::time::Duration::from_millis(200);

pub struct Driver {
    pub core: Core,
    pub public: Arc<UdpSocket>,
    pub private: Arc<UdpSocket>,
    /// Writers of the open TCP connections (accepted, and opened by us).
    pub connections: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    /// The connections we opened, by peer.
    pub outbound: Outbound,
    pub timers: DelayQueue<Timer>,
    pub events: Arc<EventSink>,
    pub journal: Journal,
    pub guard: Arc<SipGuard>,
    pub intake: Arc<Intake>,
    pub stats: Arc<SipStats>,
}

impl Driver {
    /// Serves, in this order: what keeps calls going (the urgent lane), expired timers
    /// (retransmissions, timeouts), the collection of what intake shed, then new requests
    /// from the public side.
    pub async fn run(mut self, mut lanes: LaneReceivers) {
        let mut shed_collection = tokio::time::interval(SHED_COLLECTION);
        shed_collection.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                queued = lanes.urgent.recv() => match queued {
                    Some(queued) => self.on_queued(queued),
                    None => return,
                },
                Some(timer) = next_expired(&mut self.timers) => self.handle(Input::Timer(timer)),
                _ = shed_collection.tick() => self.collect_shedding(),
                Some(queued) = lanes.new_requests.next() => self.on_queued(queued),
            }
        }
    }

    /// What intake shed counts against its sources as refusals would.
    fn collect_shedding(&mut self) {
        let shed: Vec<_> = self.intake.take_shed().into_iter().collect();
        if !shed.is_empty() {
            self.handle(Input::Shed(shed));
        }
    }

    fn on_queued(&mut self, queued: Queued) {
        let input = match queued {
            Queued::Datagram {
                listener,
                from,
                bytes,
                received,
            } => {
                self.intake.taken();
                Input::Datagram {
                    listener,
                    from,
                    bytes,
                    waited: received.elapsed(),
                }
            }
            Queued::Stream {
                listener,
                from,
                connection,
                bytes,
                received,
            } => {
                self.intake.taken();
                Input::Stream {
                    listener,
                    from,
                    connection,
                    bytes,
                    waited: received.elapsed(),
                }
            }
            Queued::Connected { connection, writer } => {
                self.connections.insert(connection, writer);
                return;
            }
            Queued::Disconnected { connection } => {
                self.connections.remove(&connection);
                match self.outbound.closed(connection) {
                    Some((side, address)) => Input::ConnectionLost { side, address },
                    None => return,
                }
            }
            Queued::Query(query) => return query.answer(&self.core, Now::read()),
            Queued::MediaTimeout(sessions) => Input::MediaTimeout(sessions),
            Queued::Reconfigure(admission) => Input::Reconfigure(admission),
            Queued::FleetShare(share) => Input::FleetShare(share),
            Queued::Readvertise { side, address } => Input::Readvertise { side, address },
            Queued::HangUpAll => Input::HangUpAll,
            Queued::Resolved { of, targets } => {
                self.outbound.resolved(of, &targets);
                Input::Resolved { of, targets }
            }
            Queued::NoAudio { silent, hang_up } => Input::NoAudio { silent, hang_up },
            Queued::EndedInKernel { call_id, end } => {
                let now = Now::read();
                return self.handle_at(now, super::ended_in_kernel(call_id, &end, &now));
            }
        };
        self.handle(input);
    }

    fn handle(&mut self, input: Input) {
        self.handle_at(Now::read(), input);
    }

    pub fn handle_at(&mut self, now: Now, input: Input) {
        self.core.handle(now, input);
        self.perform();
    }

    /// Does what the core asked, in order; requests that could not be sent go back to it
    /// (which may ask for more).
    pub fn perform(&mut self) {
        loop {
            let mut failed = Vec::new();
            while let Some(output) = self.core.poll_output() {
                match output {
                    Output::Send {
                        to,
                        bytes,
                        on_failure,
                    } => {
                        if !self.send(to, &bytes) {
                            failed.extend(on_failure);
                        }
                    }
                    Output::Event(event) => self.events.emit(*event),
                    Output::Journal(line) => self.journal.append(&line),
                    Output::Schedule(timer, after) => {
                        self.timers.insert(timer, after);
                    }
                    Output::Guard(update) => self.update_guard(update),
                }
            }
            if failed.is_empty() {
                return;
            }
            let now = Now::read();
            for client_key in failed {
                self.core.handle(now, Input::SendFailed(client_key));
            }
        }
    }

    /// Sends to a peer the way it is reached; false (and logged) when the transport refused
    /// it. A full send buffer is no refusal: under load it fills, and the message counts as
    /// sent and lost, which retransmissions repair. Treating it as a failed hop would answer
    /// callers 500 and blame a healthy backend.
    fn send(&mut self, to: Peer, bytes: &[u8]) -> bool {
        match to.transport {
            Transport::Udp => self.send_datagram(to.side, to.address, bytes),
            Transport::Tcp(connection) | Transport::Tls(connection) => self
                .connections
                .get(&connection)
                .is_some_and(|writer| writer.send(bytes.to_vec()).is_ok()),
            // A connection that cannot be opened, or is lost, reports its requests failed
            // when it closes (`Input::ConnectionLost`).
            Transport::TcpOut | Transport::TlsOut => {
                let tls = to.transport == Transport::TlsOut;
                let writer = self
                    .outbound
                    .writer_to((to.side, to.address, tls), &mut self.connections);
                writer.send(bytes.to_vec()).is_ok()
            }
        }
    }

    fn send_datagram(&self, side: Side, to: SocketAddr, bytes: &[u8]) -> bool {
        let socket = match side {
            Side::Public => &self.public,
            Side::Private => &self.private,
        };
        match socket.try_send_to(bytes, to) {
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

    fn update_guard(&self, update: GuardUpdate) {
        match update {
            GuardUpdate::DialogStarted(call_id) => {
                if let Err(e) = self.guard.dialog_started(&call_id) {
                    warn!(%call_id, "the kernel will limit this call's signalling: {e:#}");
                }
            }
            GuardUpdate::CallerConfirmed(caller) => {
                if let Err(e) = self.guard.caller_confirmed(caller) {
                    warn!(%caller, "a block of this caller would cut its calls off: {e:#}");
                }
            }
            GuardUpdate::DialogForwarding(forwarding) => {
                if let Err(e) = self.guard.dialog_forwarding(&forwarding) {
                    let call_id = &forwarding.call_id;
                    warn!(%call_id, "this call's SIP stays with the daemon: {e:#}");
                }
            }
            GuardUpdate::DialogEnded {
                call_id,
                confirmed_caller,
            } => self.guard.dialog_ended(&call_id, confirmed_caller),
            GuardUpdate::SipSelves(selves) => {
                if let Err(e) = self.guard.set_sip_selves(&selves) {
                    warn!("the kernel still names our previous addresses: {e:#}");
                }
            }
            GuardUpdate::TrustBackends(ips) => {
                if let Err(e) = self.guard.trust_backends(&ips) {
                    warn!(?ips, "the kernel limits these backends as strangers: {e:#}");
                }
            }
            GuardUpdate::Block {
                source,
                duration,
                reason,
                why,
            } => {
                if let Err(e) = self.guard.block(source, Some(duration), reason) {
                    warn!(%source, "cannot block source: {e:#}");
                    return;
                }
                let (reason, secs) = (block_reason_name(reason), duration.as_secs());
                warn!(%source, secs, reason, "source blocked: {why}");
                self.events
                    .emit(Event::SourceBlocked(events::SourceBlocked {
                        address: source,
                        reason: reason.to_owned(),
                        secs,
                        detail: why,
                    }));
            }
        }
    }
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
