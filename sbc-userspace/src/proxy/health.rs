//! Active health checks: an OPTIONS probe per backend every interval; answers with an alive
//! code count as success, other answers and silence as failure (with what real traffic shows,
//! see `responses`), against the configured thresholds.
use std::time::Duration;

use super::{
    Proxy, Timer, build,
    transactions::{ClientTx, Purpose, client_key},
};
use crate::media::session::Side;

impl Proxy {
    pub(super) fn start_probes(&mut self) {
        if !self.config.health.probes {
            return;
        }
        for index in 0..self.backends.list.len() {
            // Stagger the first probes so they do not all go out at once.
            self.schedule(
                Timer::Probe(index),
                Duration::from_millis(50 * index as u64 + 10),
            );
        }
    }

    pub(super) fn probe(&mut self, index: usize) {
        let interval = Duration::from_millis(self.config.health.interval_ms);
        self.schedule(Timer::Probe(index), interval);
        let target = self.backends.list[index].address;
        let branch = self.branch();
        let n = self.next_sequence();
        let local = self.private.address;
        let bytes = build::RequestBuilder::new("OPTIONS", &format!("sip:{target}"))
            .header("Via", &self.via_line(Side::Private, &branch))
            .header("Max-Forwards", "70")
            .header("From", &format!("<sip:sbc@{local}>;tag=hc{n}"))
            .header("To", &format!("<sip:{target}>"))
            .header("Call-ID", &format!("hc{n}.{}@{}", self.token, local.ip()))
            .header("CSeq", &format!("{n} OPTIONS"))
            .finish();
        let key = client_key(&branch, "OPTIONS");
        let probe = ClientTx::own(
            Purpose::Probe(index),
            "OPTIONS",
            Side::Private,
            target,
            bytes,
        );
        let timeout = Duration::from_millis(self.config.health.timeout_ms);
        self.originate(key.clone(), probe, Timer::ClientTimeout(key), timeout);
    }

    pub(super) fn probe_answered(&mut self, index: usize, code: u16) {
        let transition = if self.backends.is_alive_code(code) {
            self.backends.record_success(index)
        } else {
            self.backends.record_failure(index)
        };
        self.log_transition(index, transition, "probe answer");
    }
}
