//! What the proxy counts: SIP messages by side, method and code; calls from attempt to end;
//! setup latencies and the RFC 6076 measures; each backend's health, load and answers. The
//! proxy task writes, `/metrics` and `GET /v1/stats` read, so everything here is atomic or
//! briefly locked.
use std::{
    net::SocketAddr,
    sync::Arc,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::{
    metrics::{CounterMap, Histogram, HistogramMap},
    side::Side,
    sip::Method,
};

/// An INVITE that starts a call (no To tag yet): its final response ends a call attempt.
pub fn is_initial_invite(request: &crate::sip::Message) -> bool {
    request.is_request()
        && request.method() == Some(Method::Invite.as_str())
        && request
            .value("to")
            .and_then(|to| crate::sip::address::parse(to).ok())
            .is_some_and(|to| to.tag().is_none())
}

pub fn side_label(side: Side) -> &'static str {
    match side {
        Side::Public => "public",
        Side::Private => "private",
    }
}

/// Who produced a final response to an initial INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The proxy itself (admission, no backend, our timeout or 487).
    Local,
    /// Relayed from the far side.
    Relayed,
    /// The proxy refusing a malformed request: answered, but no call attempt.
    Malformed,
}

/// Why an initial INVITE failed, from its final code and who gave it.
pub fn failure_reason(code: u16, origin: Origin) -> &'static str {
    match (code, origin) {
        (487, _) => "cancelled",
        (408, _) => "timeout",
        (_, Origin::Local | Origin::Malformed) => "refused",
        (_, Origin::Relayed) => "rejected",
    }
}

/// RFC 6076 section 4's classes of a final response to an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rfc6076 {
    /// 2xx: the session was established.
    Established,
    /// 480, 486, 600, 603: the callee was reached and declined (SEER counts these as effective).
    UserFailure,
    /// 408, 500, 503, 504: the network failed the attempt (ISA).
    Ineffective,
    /// 3xx: excluded from SER and SEER.
    Redirected,
    Other,
}

impl Rfc6076 {
    pub fn of(code: u16) -> Self {
        match code {
            200..=299 => Self::Established,
            300..=399 => Self::Redirected,
            480 | 486 | 600 | 603 => Self::UserFailure,
            408 | 500 | 503 | 504 => Self::Ineffective,
            _ => Self::Other,
        }
    }
}

/// The share of a backend's last 128 final answers that were failures (5xx, 408, no answer):
/// a ratio an alert can use as is, updated by the proxy task alone.
#[derive(Default)]
struct RecentFailures {
    /// One bit per answer, the newest lowest (1: a failure), and how many bits are filled.
    window: std::sync::Mutex<(u128, u32)>,
}

impl RecentFailures {
    fn forget(&self) {
        *self.window.lock().unwrap_or_else(|p| p.into_inner()) = (0, 0);
    }

    fn record(&self, failed: bool) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (bits, filled) = &mut *window;
        *bits = (*bits << 1) | u128::from(failed);
        *filled = (*filled + 1).min(128);
    }

    /// 0 before the first answer.
    fn ratio(&self) -> f64 {
        let (bits, filled) = *self.window.lock().unwrap_or_else(|p| p.into_inner());
        // Bits shifted in beyond `filled` are zeros, so all ones counted are in the window.
        f64::from(bits.count_ones()) / f64::from(filled.max(1))
    }
}

pub struct BackendStats {
    pub address: SocketAddr,
    pub up: AtomicBool,
    pub active_calls: AtomicU64,
    /// Final answers by class (`2xx`...`6xx`) and `timeout`, requests and probes alike.
    pub answers: CounterMap<(&'static str, &'static str)>,
    /// From sending a request (INVITE, OPTIONS probe...) to its first response.
    pub latency: HistogramMap<&'static str>,
    recent: RecentFailures,
}

fn code_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}

impl BackendStats {
    fn new(address: SocketAddr) -> Self {
        Self {
            address,
            up: AtomicBool::new(true),
            active_calls: AtomicU64::new(0),
            answers: CounterMap::default(),
            latency: HistogramMap::default(),
            recent: RecentFailures::default(),
        }
    }

    /// A final answer from this backend (`None`: it never answered).
    pub fn answered(&self, method: &Method, code: Option<u16>) {
        let class = code.map_or("timeout", code_class);
        self.answers.increment((method.label(), class));
    }

    /// Something that counts toward its health happened (see `backends::Observation`).
    pub fn observed(&self, failure: bool) {
        self.recent.record(failure);
    }

    /// Its health changed: the share of failures starts over, so a backend that is up does
    /// not show the failures that had taken it down.
    pub fn health_changed(&self) {
        self.recent.forget();
    }

    /// The share of failures among its recent health observations since its health last
    /// changed.
    pub fn failure_ratio(&self) -> f64 {
        self.recent.ratio()
    }
}

#[derive(Default)]
pub struct SipStats {
    pub requests: CounterMap<(Side, &'static str)>,
    pub responses_received: CounterMap<(Side, &'static str, u16)>,
    /// Responses the proxy sent (its own and relayed), by the side they went to.
    pub responses_sent: CounterMap<(Side, &'static str, u16)>,
    /// Requests answered with an error because they were malformed or unsupported.
    pub refused: AtomicU64,
    /// Messages dropped unanswered (broken responses, unanswerable requests).
    pub dropped: AtomicU64,
    /// Datagrams the send buffer had no room for (left to retransmission, not failed).
    pub send_busy: AtomicU64,
    /// Open SIP TCP connections; connections refused over `[sip.tcp]` limits; connections
    /// closed because a message came too slowly.
    pub tcp_open: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub tcp_slow_closed: AtomicU64,
    /// Connections we opened that the peer ended: closed, reset, never accepted, or gone
    /// silent (what we sent unacknowledged for `sip.tcp.dead_after_ms`).
    pub tcp_peers_lost: AtomicU64,
    /// Messages beyond `[sip.limits]` (requests refused with 400, responses dropped; also
    /// counted in `refused` or `dropped`).
    pub oversized: AtomicU64,
    pub calls_attempted: AtomicU64,
    pub calls_answered: AtomicU64,
    /// Initial INVITEs that got a final failure, by reason and code.
    pub calls_failed: CounterMap<(&'static str, u16)>,
    /// Answered calls that ended, by why.
    pub calls_ended: CounterMap<&'static str>,
    /// Media directions of answered calls that fell silent, by direction and how.
    pub no_audio: CounterMap<(&'static str, &'static str)>,
    /// Final responses to initial INVITEs by RFC 6076 class.
    pub invite_outcomes: CounterMap<Rfc6076>,
    /// Calls held by the proxy (being set up or established) and those answered.
    pub calls_active: AtomicU64,
    pub calls_established: AtomicU64,
    /// INVITE received to the first 18x relayed, and to the 2xx.
    pub setup_ringing: Histogram,
    pub setup_answered: Histogram,
    /// RFC 6076 SRD: INVITE to the first response other than 100, failures included.
    pub session_request_delay: Histogram,
    /// RFC 6076 SDD: BYE to its final response.
    pub session_disconnect_delay: Histogram,
    pub backends: BackendStatsList,
}

/// The backends' stats, in the pool's order; the pool grows when DNS names a new target.
#[derive(Default)]
pub struct BackendStatsList(std::sync::RwLock<Vec<Arc<BackendStats>>>);

impl BackendStatsList {
    /// The stats of the backend at `index` in the pool.
    pub fn get(&self, index: usize) -> Arc<BackendStats> {
        Arc::clone(&self.read()[index])
    }

    /// Every backend's, in the pool's order.
    pub fn snapshot(&self) -> Vec<Arc<BackendStats>> {
        self.read().clone()
    }

    /// Stats for the backend that joined the pool at its end.
    pub fn push(&self, address: SocketAddr) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(BackendStats::new(address)));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<BackendStats>>> {
        // Counters only: nothing a panic elsewhere leaves inconsistent.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl SipStats {
    pub fn new(backends: impl IntoIterator<Item = SocketAddr>) -> Self {
        let stats = Self::default();
        for address in backends {
            stats.backends.push(address);
        }
        stats
    }

    /// The final response to an initial INVITE, once per call attempt.
    pub fn invite_finished(&self, code: u16, origin: Origin) {
        self.invite_outcomes.increment(Rfc6076::of(code));
        if (200..300).contains(&code) {
            self.calls_answered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.calls_failed
                .increment((failure_reason(code, origin), code));
        }
    }

    /// RFC 6076 SER, SEER and ISA over every finished attempt since the daemon started (NaN
    /// before the first).
    pub fn rfc6076_ratios(&self) -> (f64, f64, f64) {
        let get = |class| self.invite_outcomes.get(&class) as f64;
        let total: f64 = self
            .invite_outcomes
            .snapshot()
            .iter()
            .map(|(_, n)| *n as f64)
            .sum();
        let not_redirected = total - get(Rfc6076::Redirected);
        let established = get(Rfc6076::Established);
        (
            established / not_redirected,
            (established + get(Rfc6076::UserFailure)) / not_redirected,
            get(Rfc6076::Ineffective) / total,
        )
    }

    /// The counters of `GET /v1/stats`.
    pub fn snapshot(&self) -> SipCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SipCounters {
            requests: self.requests.snapshot().iter().map(|(_, n)| n).sum(),
            responses: self
                .responses_received
                .snapshot()
                .iter()
                .map(|(_, n)| n)
                .sum(),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
            oversized: get(&self.oversized),
            send_busy: get(&self.send_busy),
            tcp: TcpCounters {
                open: get(&self.tcp_open),
                refused: get(&self.tcp_refused),
                slow_closed: get(&self.tcp_slow_closed),
                peers_lost: get(&self.tcp_peers_lost),
            },
            calls_attempted: get(&self.calls_attempted),
            calls_answered: get(&self.calls_answered),
            calls_active: get(&self.calls_active),
        }
    }
}

/// The proxy's totals as `GET /v1/stats` shows them (`sip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipCounters {
    pub requests: u64,
    pub responses: u64,
    /// Malformed requests answered (400 and the like).
    pub refused: u64,
    pub dropped: u64,
    pub oversized: u64,
    /// Datagrams that met a full send buffer (left to retransmission).
    pub send_busy: u64,
    pub tcp: TcpCounters,
    pub calls_attempted: u64,
    pub calls_answered: u64,
    pub calls_active: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounters {
    pub open: u64,
    pub refused: u64,
    pub slow_closed: u64,
    /// Connections we opened that the peer ended (`SipStats::tcp_peers_lost`).
    #[serde(default)]
    pub peers_lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6076_ratios_follow_the_definitions() {
        let stats = SipStats::new([]);
        let (ser, ..) = stats.rfc6076_ratios();
        assert!(ser.is_nan(), "no attempts yet: no ratio");
        for code in [200, 200, 486, 503, 302, 404] {
            stats.invite_finished(code, Origin::Relayed);
        }
        let (ser, seer, isa) = stats.rfc6076_ratios();
        // 6 attempts, one redirected: SER 2/5, SEER (2 + 486)/5, ISA 503 of all 6.
        assert_eq!(ser, 0.4);
        assert_eq!(seer, 0.6);
        assert_eq!(isa, 1.0 / 6.0);
        assert_eq!(stats.calls_answered.load(Ordering::Relaxed), 2);
        assert_eq!(stats.calls_failed.get(&("rejected", 486)), 1);
    }

    #[test]
    fn failure_ratio_covers_the_last_observations_of_the_current_health() {
        let backend = BackendStats::new("192.0.2.1:5060".parse().unwrap());
        for failure in [false, true, true, false] {
            backend.observed(failure);
        }
        assert_eq!(backend.failure_ratio(), 0.5);
        for _ in 0..128 {
            backend.observed(false);
        }
        assert_eq!(backend.failure_ratio(), 0.0);
        backend.observed(true);
        backend.health_changed();
        assert_eq!(backend.failure_ratio(), 0.0, "a new health period");
    }
}
