//! Calls across daemon restarts: every call is recorded in the journal from the moment its
//! INVITE is forwarded, and a new daemon takes the recorded calls over at start. An answered
//! call's re-INVITEs and BYEs are routed and its end reported as if nothing had happened. A
//! call still being set up gets its INVITE transactions back, so the answer is anchored and
//! relayed, a CANCEL or Timer C ends it, and the caller's ACK and BYE find the call. Media never
//! stopped: the kernel kept relaying it, and the media plane has adopted its sessions by then;
//! sessions made for calls that no record claims are freed.
use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use tracing::{debug, info, warn};

use super::{
    Core, GuardUpdate, Timer,
    call_end::CallEnd,
    calls::Call,
    names::CallKey,
    names::ServerKey,
    record::{CallRecord, Line, SetupRecord},
    transactions::{
        ClientTx, GONE_CONNECTION, Peer, Purpose, Reach, ServerTx, T1, TIMER_C, Transport,
    },
};
use crate::{
    events::{self, Event},
    sip::{
        Method,
        inbound::{self, Inbound},
    },
};

impl Core {
    /// Records (again) an answered call's dialog.
    pub(super) fn persist(&mut self, key: &CallKey) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.answered.is_none() {
            return;
        }
        call.journaled = true;
        let backend = call.backend.map(|id| self.backends[id].address);
        let record = call.record(key, backend, None, self.now);
        self.journal(Line::Put(Box::new(record)));
    }

    /// Records (again) a call being set up, with the INVITE transactions of `server_key`: when
    /// its INVITE is forwarded (to a first backend, or on failover) and when it first rings.
    pub(super) fn persist_setup(&mut self, server_key: &ServerKey) {
        let Some(tx) = self.server.get(server_key) else {
            return;
        };
        if tx.info.method != Method::Invite || tx.info.in_dialog() || tx.final_code.is_some() {
            return;
        }
        let (Some(call_key), Some(client_key)) = (tx.call.clone(), tx.client.clone()) else {
            return;
        };
        let (Some(client), Some(call)) = (self.client.get(&client_key), self.calls.get(&call_key))
        else {
            return;
        };
        if call.answered.is_some() {
            return;
        }
        let (Ok(invite), Ok(forwarded)) = (
            std::str::from_utf8(tx.request.bytes()),
            std::str::from_utf8(&client.bytes),
        ) else {
            debug!(call_id = %call.call_id, "an INVITE that is not UTF-8 is not recorded: a restart would lose its call");
            return;
        };
        let setup = SetupRecord {
            server_key: server_key.to_owned(),
            invite: invite.to_owned(),
            upstream: tx.upstream.address,
            upstream_side: tx.upstream.side,
            upstream_udp: tx.upstream.transport == Transport::Udp,
            to_tag: tx.to_tag.clone(),
            client_key,
            forwarded: forwarded.to_owned(),
            target: client.target,
            out_side: client.side,
            out_tcp: client.transport.reliable(),
            provisional: client.provisional,
        };
        let backend = call.backend.map(|id| self.backends[id].address);
        let record = call.record(&call_key, backend, Some(setup), self.now);
        self.journal(Line::Put(Box::new(record)));
        if let Some(call) = self.calls.get_mut(&call_key) {
            call.journaled = true;
        }
    }

    /// Takes over the calls a previous daemon recorded, then frees the media sessions made
    /// for calls that none of them claims. An answered call none of whose media sessions
    /// survived (the userspace dataplane loses them with the process) cannot go on: it is
    /// reported ended; a call being set up is then ended on both sides.
    pub(super) fn restore_calls(&mut self, records: Vec<CallRecord>) {
        let (mut established, mut setting_up) = (0, 0);
        let mut claimed = HashSet::new();
        for mut record in records {
            let key = record.key.clone();
            let sessions: Vec<u32> = record.media.iter().flatten().copied().collect();
            let media_lost =
                !sessions.is_empty() && sessions.iter().all(|id| self.media.session(*id).is_none());
            claimed.extend(sessions.iter().copied());
            let setup = record.setup.take();
            if record.answered_unix_ms.is_some() && media_lost {
                warn!(call_id = %record.call_id, "a recorded call lost its media in the restart; ending it");
                self.journal(Line::End(key));
                self.emit(Event::CallEnded(events::CallEnded {
                    call_id: record.call_id,
                    reason: CallEnd::MediaLostInRestart,
                    final_code: None,
                    duration_ms: None,
                    rtp_packets: None,
                }));
                continue;
            }
            let backend = record.backend.and_then(|a| self.backends.id_of(a));
            let call = Call::restore(record, backend, self.now);
            self.guard(GuardUpdate::DialogStarted(call.call_id.clone()));
            if let Some(caller) = call.confirmed_caller() {
                self.guard(GuardUpdate::CallerConfirmed(caller));
            }
            let answered = call.answered.is_some();
            self.calls.insert(key.clone(), call);
            if answered {
                if let Some(forwarding) = self.forwarding(&key) {
                    self.guard(GuardUpdate::DialogForwarding(Box::new(forwarding)));
                }
                for id in &sessions {
                    self.media.answered(*id);
                }
                if let Some(id) = backend {
                    self.backends[id].active_calls += 1;
                }
                established += 1;
                continue;
            }
            let Some(setup) = setup else {
                // Recorded without its transactions: nothing can answer its caller.
                self.end_call(&key, CallEnd::LostInRestart, None);
                continue;
            };
            let (server_key, upstream_udp) = (setup.server_key.clone(), setup.upstream_udp);
            if let Err(why) = self.restore_setup(&key, setup) {
                warn!(call = %key, "cannot resume a call being set up: {why}");
                self.end_call(&key, CallEnd::LostInRestart, None);
                continue;
            }
            setting_up += 1;
            if media_lost || !upstream_udp {
                warn!(call = %key, "a call being set up lost its {} in the restart; ending it",
                      if media_lost { "media" } else { "caller's TCP connection" });
                self.abandon_setup(&server_key);
            }
        }
        self.stats
            .calls_established
            .fetch_add(established, Ordering::Relaxed);
        if established + setting_up > 0 {
            info!(
                established,
                setting_up, "took over the calls of the previous daemon"
            );
        }
        let orphans = self.media.end_orphans(&claimed);
        if !orphans.is_empty() {
            warn!(
                sessions = orphans.len(),
                "freed media sessions of calls that no recorded call claims"
            );
        }
    }

    /// Puts a recorded call's INVITE transactions back, with the timers they would have run.
    fn restore_setup(&mut self, call_key: &CallKey, setup: SetupRecord) -> Result<(), String> {
        let Inbound::Request(request, info) = inbound::message(setup.invite.as_bytes()) else {
            return Err("its INVITE no longer reads as a request".into());
        };
        let started = self
            .calls
            .get(call_key)
            .map_or(self.now.at, |c| c.started());
        let transport = if setup.upstream_udp {
            Transport::Udp
        } else {
            Transport::Tcp(GONE_CONNECTION)
        };
        self.server.insert(
            setup.server_key.clone(),
            ServerTx {
                upstream: Peer {
                    side: setup.upstream_side,
                    address: setup.upstream,
                    transport,
                },
                request,
                info,
                call: Some(call_key.clone()),
                to_tag: setup.to_tag,
                last_response: None,
                final_code: None,
                client: Some(setup.client_key.clone()),
                // No failover: the other candidates were not recorded.
                template: Vec::new(),
                out_side: setup.out_side,
                reach: Reach {
                    tcp_asked: setup.out_tcp,
                    connection: None,
                },
                balanced: false,
                candidates: Vec::new(),
                cancelled: false,
                provisional_forwarded: setup.provisional,
                received: started,
            },
        );
        self.client.insert(
            setup.client_key.clone(),
            ClientTx {
                server: Some(setup.server_key),
                purpose: Purpose::Forward,
                method: Method::Invite,
                target: setup.target,
                side: setup.out_side,
                transport: self.request_transport(setup.target, setup.out_tcp, 0),
                bytes: setup.forwarded.into_bytes(),
                backend: self.backends.id_of(setup.target),
                provisional: setup.provisional,
                final_code: None,
                interval: T1,
                sent: self.now.at,
            },
        );
        let key = setup.client_key;
        if setup.provisional {
            // Timer C runs from when the INVITE went out, not from the restart.
            let left = TIMER_C.saturating_sub(self.now.since(started));
            self.schedule(Timer::Proceeding(key), left.max(Duration::from_secs(1)));
        } else {
            // Nothing came back yet: send it again, and time out as a fresh attempt would.
            let timeout = Duration::from_millis(self.config.invite_timeout_ms);
            self.schedule(Timer::Retransmit(key.clone()), Duration::ZERO);
            self.schedule(Timer::ClientTimeout(key), timeout);
        }
        Ok(())
    }

    /// Ends a resumed call attempt that cannot go on: the caller gets 503 (if it can still be
    /// reached), the backend CANCEL once it has rung (a later provisional response is
    /// cancelled as it comes).
    fn abandon_setup(&mut self, server_key: &ServerKey) {
        let Some(tx) = self.server.get_mut(server_key) else {
            return;
        };
        tx.cancelled = true;
        let client = tx.client.clone();
        if let Some(client) = client.filter(|k| self.client.get(k).is_some_and(|c| c.provisional)) {
            self.send_cancel(&client);
        }
        self.finish_invite(server_key, 503, None);
    }
}
