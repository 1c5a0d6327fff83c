//! Active health checks: an OPTIONS probe per backend every interval; answers with an alive
//! code count as success, other answers and silence as failure (with what the backend does
//! with the calls sent to it, see `responses`), against the configured thresholds.
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{
    Core, Timer,
    backends::{BackendId, Observation, Transition},
    build,
    names::ClientKey,
    transactions::{ClientTx, Peer, Purpose},
};
use crate::{
    events::{self, Event},
    side::Side,
    sip::Method,
};

impl Core {
    pub(super) fn start_probes(&mut self) {
        if !self.config.health.probes {
            return;
        }
        let ids: Vec<BackendId> = self.backends.serving().map(|(id, _)| id).collect();
        self.start_probes_of(&ids);
    }

    /// Starts probing `ids` (backends that joined the pool or returned to it), unless they
    /// are probed already.
    pub(super) fn start_probes_of(&mut self, ids: &[BackendId]) {
        if !self.config.health.probes {
            return;
        }
        for &id in ids {
            if std::mem::replace(&mut self.backends[id].probing, true) {
                continue;
            }
            // Stagger the first probes so they do not all go out at once.
            let stagger = Duration::from_millis(50 * id.index() as u64 + 10);
            self.schedule(Timer::Probe(id), stagger);
        }
    }

    pub(super) fn probe(&mut self, id: BackendId) {
        // A retired backend is probed no more; the probes start again if it returns.
        if self.backends[id].retired {
            self.backends[id].probing = false;
            return;
        }
        let interval = Duration::from_millis(self.config.health.interval_ms);
        self.schedule(Timer::Probe(id), interval);
        let target = self.backends[id].address;
        let branch = self.branch();
        let n = self.next_sequence();
        let local = self.addresses.advertised(Side::Private);
        let to = Peer {
            side: Side::Private,
            address: target,
            transport: self.request_transport(target, false, 0),
        };
        let bytes = build::RequestBuilder::new(&Method::Options, &format!("sip:{target}"))
            .header("Via", &self.via_line(Side::Private, &branch, to.transport))
            .header("Max-Forwards", "70")
            .header("From", &format!("<sip:sbc@{local}>;tag=hc{n}"))
            .header("To", &format!("<sip:{target}>"))
            .header("Call-ID", &format!("hc{n}.{}@{}", self.token(), local.ip()))
            .header("CSeq", &format!("{n} OPTIONS"))
            .finish();
        let key = ClientKey::new(&branch, Method::Options);
        let probe = ClientTx::own(Purpose::Probe(id), Method::Options, to, bytes, self.now.at);
        let timeout = Duration::from_millis(self.config.health.timeout_ms);
        self.originate(key.clone(), probe, Timer::ClientTimeout(key), timeout);
    }

    pub(super) fn probe_answered(&mut self, id: BackendId, code: u16) {
        let observation = if self.backends.is_alive_code(code) {
            Observation::ProbeAlive
        } else {
            Observation::ProbeFailed
        };
        self.observe_backend(id, observation, "probe answer");
    }

    /// A probe or INVITE sent at `sent` got no answer: `failure`, unless the backend answered
    /// anything else since: then the answer is late (queued behind load), not missing, and
    /// the backend is alive.
    pub(super) fn backend_left_unanswered(
        &mut self,
        id: BackendId,
        sent: Instant,
        failure: Observation,
        cause: &str,
    ) {
        let observation = if self.backends.heard_since(id, sent) {
            Observation::Alive
        } else {
            failure
        };
        self.observe_backend(id, observation, cause);
    }

    /// Counts what a backend did toward its health (and its share of recent failures), and
    /// reports a change of health.
    pub(super) fn observe_backend(&mut self, id: BackendId, observation: Observation, cause: &str) {
        let stats = self.stats.backends.get(id.index());
        stats.observed(observation.is_failure());
        let transition = self.backends.observe(id, observation, self.now.at);
        let address = self.backends[id].address;
        match transition {
            Transition::WentDown => {
                stats.health_changed();
                warn!(backend = %address, cause, "backend marked down");
                self.emit(Event::BackendDown(events::BackendDown {
                    backend: address,
                    cause: cause.to_owned(),
                }));
            }
            Transition::CameUp => {
                stats.health_changed();
                info!(backend = %address, "backend back up");
                self.emit(Event::BackendUp(events::BackendUp { backend: address }));
            }
            Transition::None => {}
        }
    }
}
