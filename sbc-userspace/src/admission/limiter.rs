//! The daemon's admission decisions for out-of-dialog requests: per-source and global rates,
//! concurrent calls, overload. In-dialog requests never come here.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use sbc_common::{PacketLimit, TokenBucket};

use super::{
    config::{AdmissionConfig, SourceLimits},
    enumeration::FailedUsers,
    rate::{SourceBuckets, limit},
};

/// Refusals are counted per source over this window for `block_after_refusals`.
const REFUSAL_WINDOW_NS: u64 = 10_000_000_000;

/// Why a request is refused (503 with Retry-After); `block` when the source has now earned a
/// dynamic block for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub block: Option<Duration>,
}

/// What admission refused, by reason (in `GET /v1/stats`).
#[derive(Default)]
pub struct AdmissionCounters {
    pub source_invite_rate: AtomicU64,
    pub source_request_rate: AtomicU64,
    pub global_invite_rate: AtomicU64,
    pub max_calls: AtomicU64,
    /// Over this node's share of the fleet's limits (`[cluster.limits]`).
    pub fleet_invite_rate: AtomicU64,
    pub fleet_max_calls: AtomicU64,
    /// New INVITEs admission looked at (admitted or not): the demand a node reports to its
    /// fleet when the fleet's limits are shared out.
    pub invites_offered: AtomicU64,
    pub overload: AtomicU64,
    /// New INVITEs while the daemon drains.
    pub draining: AtomicU64,
    pub scanners: AtomicU64,
    /// New requests dropped on arrival because the proxy's queue was deep.
    pub shed_new_requests: AtomicU64,
    /// Of those, INVITEs answered 503 on arrival (the answers are bounded per second).
    pub shed_answered: AtomicU64,
    /// Datagrams dropped on arrival because the proxy's queue was full.
    pub shed_queue_full: AtomicU64,
    /// Datagrams the kernel dropped because a SIP listener's receive buffer was full (the
    /// listener was not read fast enough; nothing of them was seen).
    pub shed_receive_buffer: AtomicU64,
    /// New requests refused at once (503) because they waited past `shed_delay_ms`.
    pub shed_late: AtomicU64,
}

impl AdmissionCounters {
    pub fn snapshot(&self) -> AdmissionTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AdmissionTotals {
            refused_source_invite_rate: get(&self.source_invite_rate),
            refused_source_request_rate: get(&self.source_request_rate),
            refused_global_invite_rate: get(&self.global_invite_rate),
            refused_max_calls: get(&self.max_calls),
            refused_fleet_invite_rate: get(&self.fleet_invite_rate),
            refused_fleet_max_calls: get(&self.fleet_max_calls),
            refused_overload: get(&self.overload),
            refused_draining: get(&self.draining),
            scanners_blocked: get(&self.scanners),
            shed_new_requests: get(&self.shed_new_requests),
            shed_answered: get(&self.shed_answered),
            shed_queue_full: get(&self.shed_queue_full),
            shed_receive_buffer: get(&self.shed_receive_buffer),
            shed_late: get(&self.shed_late),
        }
    }
}

/// What admission refused, blocked and shed, as `GET /v1/stats` shows it (`admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionTotals {
    pub refused_source_invite_rate: u64,
    pub refused_source_request_rate: u64,
    pub refused_global_invite_rate: u64,
    pub refused_max_calls: u64,
    #[serde(default)]
    pub refused_fleet_invite_rate: u64,
    #[serde(default)]
    pub refused_fleet_max_calls: u64,
    pub refused_overload: u64,
    pub refused_draining: u64,
    pub scanners_blocked: u64,
    pub shed_new_requests: u64,
    pub shed_answered: u64,
    pub shed_queue_full: u64,
    pub shed_receive_buffer: u64,
    pub shed_late: u64,
}

/// The scanner User-Agents, lower-cased once for matching.
/// What a source's limits and refusals are counted by: the source, or an IPv6 source's /64
/// (see `IpAddress::source_key`), as the guard counts it.
fn source_key(source: IpAddr) -> IpAddr {
    sbc_common::IpAddress::from(source).source_key().to_ip()
}

fn scanner_needles(config: &AdmissionConfig) -> Vec<String> {
    config
        .scanner_user_agents
        .iter()
        .map(|ua| ua.to_ascii_lowercase())
        .collect()
}

fn failed_users(config: &AdmissionConfig) -> FailedUsers {
    FailedUsers::new(
        config.block_after_failed_users,
        config.failed_users_window_secs,
    )
}

pub struct Admission {
    config: AdmissionConfig,
    /// The backends, which have no limits at all.
    backends: Vec<IpAddr>,
    invites: SourceBuckets,
    requests: SourceBuckets,
    global_invites: TokenBucket,
    refusals: HashMap<IpAddr, (u64, u32)>,
    scanner_needles: Vec<String>,
    failed_users: FailedUsers,
    /// This node's share of the fleet's limits, and its INVITE bucket.
    fleet: Option<(FleetShare, TokenBucket)>,
}

/// What a node of a fleet may admit of the fleet's limits (`cluster::limits`); `None`: no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetShare {
    pub invites_per_sec: Option<u32>,
    pub max_calls: Option<u32>,
}

impl FleetShare {
    /// A second's worth of INVITEs may come at once.
    fn invites(&self) -> PacketLimit {
        let rate = self.invites_per_sec.unwrap_or(0);
        limit(rate, rate.max(1))
    }
}

impl Admission {
    pub fn new(config: &AdmissionConfig, backends: Vec<IpAddr>, now_ns: u64) -> Self {
        let global = limit(config.invites_per_sec, config.invite_burst);
        Self {
            config: config.clone(),
            backends,
            invites: SourceBuckets::default(),
            requests: SourceBuckets::default(),
            global_invites: TokenBucket::full(&global, now_ns),
            refusals: HashMap::new(),
            scanner_needles: scanner_needles(config),
            failed_users: failed_users(config),
            fleet: None,
        }
    }

    /// This node's share of the fleet's limits from now on; its bucket keeps what it holds,
    /// within the new share.
    pub fn set_fleet_share(&mut self, share: FleetShare, now_ns: u64) {
        let bucket = match self.fleet.take() {
            Some((_, bucket)) => bucket,
            None => TokenBucket::full(&share.invites(), now_ns),
        };
        self.fleet = Some((share, bucket));
    }

    /// Takes a new configuration; buckets and refusal counts carry over.
    pub fn reconfigure(&mut self, config: &AdmissionConfig) {
        if (
            config.block_after_failed_users,
            config.failed_users_window_secs,
        ) != (
            self.config.block_after_failed_users,
            self.config.failed_users_window_secs,
        ) {
            self.failed_users = failed_users(config);
        }
        self.config = config.clone();
        self.scanner_needles = scanner_needles(config);
    }

    fn in_allowlist(&self, source: IpAddr) -> bool {
        self.config
            .allowlist
            .iter()
            .any(|net| net.contains(&source))
    }

    /// The limits `source` is held to; `None` for a backend (no limits).
    fn limits_of(&self, source: IpAddr) -> Option<&SourceLimits> {
        if self.backends.contains(&source) {
            None
        } else if self.in_allowlist(source) {
            Some(&self.config.allowlisted)
        } else {
            Some(&self.config.source)
        }
    }

    /// Backends and allowlisted trunks are never blocked for their behaviour.
    fn is_allowlisted(&self, source: IpAddr) -> bool {
        self.backends.contains(&source) || self.in_allowlist(source)
    }

    /// Whether a request from `source` with this User-Agent is a scanner's, to be blocked. Never
    /// for backends and allowlisted trunks: they are not blocked for behaviour, and a list that
    /// showed them blocked while their traffic passes would mislead the operator.
    pub fn is_scanner(&self, source: IpAddr, user_agent: &str) -> bool {
        if !self.config.enabled || self.is_allowlisted(source) {
            return false;
        }
        let user_agent = user_agent.to_ascii_lowercase();
        self.scanner_needles
            .iter()
            .any(|needle| user_agent.contains(needle.as_str()))
    }

    pub fn scanner_block(&self) -> Duration {
        Duration::from_secs(self.config.scanner_block_secs)
    }

    /// How long a new request may have waited (kernel buffer and queue) and still be handled
    /// (`None`: no bound).
    pub fn shed_delay(&self) -> Option<Duration> {
        (self.config.shed_delay_ms > 0).then(|| Duration::from_millis(self.config.shed_delay_ms))
    }

    /// Whether `source` is trusted: a backend or an allowlisted trunk (never blocked for its
    /// behaviour, told the truth about users).
    pub fn is_trusted(&self, source: IpAddr) -> bool {
        self.is_allowlisted(source)
    }

    /// Backends DNS found: trusted as the configured ones.
    pub fn trust_backends(&mut self, ips: &[IpAddr]) {
        for &ip in ips {
            if !self.backends.contains(&ip) {
                self.backends.push(ip);
            }
        }
    }

    /// An out-of-dialog request from `source` for `user` failed as for a missing user: how
    /// long to block the source, if this makes it an enumerator.
    pub fn user_failed(&mut self, source: IpAddr, user: &str, now_ns: u64) -> Option<Duration> {
        if !self.config.enabled || self.is_allowlisted(source) {
            return None;
        }
        self.failed_users
            .failed(source_key(source), user, now_ns)
            .then(|| self.scanner_block())
    }

    /// A new INVITE from `source`, with `active_calls` calls up and the proxy `delay` behind.
    pub fn new_invite(
        &mut self,
        source: IpAddr,
        active_calls: usize,
        delay: Duration,
        counters: &AdmissionCounters,
        now_ns: u64,
    ) -> Result<(), Refusal> {
        if !self.config.enabled {
            return Ok(());
        }
        // Allowlisted trunks are served longer into an overload than anyone else.
        let patience = if self.is_allowlisted(source) { 4 } else { 1 };
        if delay > patience * Duration::from_millis(self.config.overload_delay_ms) {
            counters.overload.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(source, "the SBC is overloaded", false, now_ns));
        }
        let max_calls = self.config.max_calls as usize;
        if max_calls > 0 && active_calls >= max_calls {
            counters.max_calls.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(source, "the call limit is reached", false, now_ns));
        }
        if let Some(limits) = self.limits_of(source) {
            let per_source = limit(limits.invites_per_sec, limits.invite_burst);
            if !self.invites.take(source_key(source), &per_source, now_ns) {
                counters.source_invite_rate.fetch_add(1, Ordering::Relaxed);
                return Err(self.refuse(source, "too many calls from this source", true, now_ns));
            }
        }
        let global = limit(self.config.invites_per_sec, self.config.invite_burst);
        if !global.is_unlimited() && !self.global_invites.take(&global, now_ns) {
            counters.global_invite_rate.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(source, "too many calls", false, now_ns));
        }
        self.within_fleet_share(source, active_calls, counters, now_ns)
    }

    /// The fleet's limits, as far as this node's share of them goes.
    fn within_fleet_share(
        &mut self,
        source: IpAddr,
        active_calls: usize,
        counters: &AdmissionCounters,
        now_ns: u64,
    ) -> Result<(), Refusal> {
        let Some((share, bucket)) = self.fleet.as_mut() else {
            return Ok(());
        };
        if share
            .max_calls
            .is_some_and(|max| active_calls >= max as usize)
        {
            counters.fleet_max_calls.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(source, "the fleet's call limit is reached", false, now_ns));
        }
        let invites = share.invites();
        if share.invites_per_sec.is_some() && !bucket.take(&invites, now_ns) {
            counters.fleet_invite_rate.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(source, "too many calls in the fleet", false, now_ns));
        }
        Ok(())
    }

    /// An out-of-dialog request other than INVITE (OPTIONS, REGISTER, MESSAGE, SUBSCRIBE...).
    pub fn other_request(
        &mut self,
        source: IpAddr,
        counters: &AdmissionCounters,
        now_ns: u64,
    ) -> Result<(), Refusal> {
        if !self.config.enabled {
            return Ok(());
        }
        let Some(limits) = self.limits_of(source) else {
            return Ok(());
        };
        let per_source: PacketLimit = limit(limits.requests_per_sec, limits.request_burst);
        if self.requests.take(source_key(source), &per_source, now_ns) {
            return Ok(());
        }
        counters.source_request_rate.fetch_add(1, Ordering::Relaxed);
        Err(self.refuse(source, "too many requests from this source", true, now_ns))
    }

    /// A refusal; one that the source caused (`its_own`) counts towards blocking it.
    fn refuse(&mut self, source: IpAddr, reason: &'static str, its_own: bool, now: u64) -> Refusal {
        let block = if its_own {
            self.count_refusals(source, 1, now)
        } else {
            None
        };
        Refusal { reason, block }
    }

    /// New requests of `source` that an overloaded daemon shed (dropped on arrival or refused
    /// as stale): they count towards blocking it as refusals do, or a botnet whose members
    /// each stay under their limits would never be blocked while it buries the daemon. How
    /// long to block it, if it has now earned a block.
    pub fn shed(&mut self, source: IpAddr, requests: u32, now: u64) -> Option<Duration> {
        self.count_refusals(source, requests, now)
    }

    /// Adds `count` refusals to `source`'s window: how long to block it, if that makes
    /// `block_after_refusals` within the window. Never for trusted sources, nor with
    /// admission off.
    fn count_refusals(&mut self, source: IpAddr, count: u32, now: u64) -> Option<Duration> {
        let threshold = self.config.block_after_refusals;
        if !self.config.enabled || threshold == 0 || self.is_allowlisted(source) {
            return None;
        }
        let (start, refused) = self.refusals.entry(source_key(source)).or_insert((now, 0));
        if now.saturating_sub(*start) >= REFUSAL_WINDOW_NS {
            (*start, *refused) = (now, 0);
        }
        *refused = refused.saturating_add(count);
        let block = (*refused >= threshold).then(|| {
            self.refusals.remove(&source);
            Duration::from_secs(self.config.block_secs)
        });
        if self.refusals.len() > 100_000 {
            self.refusals
                .retain(|_, (start, _)| now.saturating_sub(*start) < REFUSAL_WINDOW_NS);
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            source: SourceLimits {
                invites_per_sec: 2,
                invite_burst: 2,
                requests_per_sec: 1,
                request_burst: 1,
                ..SourceLimits::default()
            },
            allowlist: vec!["192.0.2.0/24".parse().unwrap()],
            max_calls: 10,
            block_after_refusals: 3,
            ..AdmissionConfig::default()
        }
    }

    const NOW: u64 = 1_000_000_000;

    #[test]
    fn per_source_rates_refuse_the_excess_and_then_block() {
        let counters = AdmissionCounters::default();
        let mut admission = Admission::new(&config(), vec![], NOW);
        let source: IpAddr = "203.0.113.5".parse().unwrap();
        let invite = |a: &mut Admission| a.new_invite(source, 0, Duration::ZERO, &counters, NOW);
        assert_eq!(invite(&mut admission), Ok(()));
        assert_eq!(invite(&mut admission), Ok(()));
        let refused = invite(&mut admission).unwrap_err();
        assert_eq!(refused.block, None);
        assert!(invite(&mut admission).unwrap_err().block.is_none());
        assert_eq!(
            invite(&mut admission).unwrap_err().block,
            Some(Duration::from_secs(300)),
            "the third refusal within ten seconds blocks"
        );
        // Other requests have their own bucket.
        assert_eq!(admission.other_request(source, &counters, NOW), Ok(()));
        assert!(admission.other_request(source, &counters, NOW).is_err());
        assert_eq!(counters.source_invite_rate.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn shed_requests_count_against_their_source_but_never_a_trusted_one() {
        let mut admission = Admission::new(&config(), vec![], NOW);
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        let trunk: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(admission.shed(stranger, 2, NOW), None, "2 of 3");
        assert_eq!(
            admission.shed(stranger, 1, NOW + 1),
            Some(Duration::from_secs(300)),
            "the third within the window"
        );
        assert_eq!(admission.shed(trunk, 1_000, NOW), None, "allowlisted");
        // Sheds far apart do not add up.
        let other: IpAddr = "203.0.113.6".parse().unwrap();
        assert_eq!(admission.shed(other, 2, NOW), None);
        assert_eq!(admission.shed(other, 2, NOW + REFUSAL_WINDOW_NS), None);
        let mut off = Admission::new(
            &AdmissionConfig {
                enabled: false,
                ..config()
            },
            vec![],
            NOW,
        );
        assert_eq!(off.shed(stranger, 1_000, NOW), None, "admission off");
    }

    #[test]
    fn allowlisted_sources_get_their_limits_and_are_never_blocked() {
        let counters = AdmissionCounters::default();
        let mut admission = Admission::new(&config(), vec!["198.18.2.2".parse().unwrap()], NOW);
        let trunk: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..400 {
            assert_eq!(
                admission.new_invite(trunk, 0, Duration::ZERO, &counters, NOW),
                Ok(())
            );
        }
        let over = admission.new_invite(trunk, 0, Duration::ZERO, &counters, NOW);
        assert_eq!(over.unwrap_err().block, None);
        let backend: IpAddr = "198.18.2.2".parse().unwrap();
        assert!((0..1000).all(|_| admission.other_request(backend, &counters, NOW).is_ok()));
    }

    #[test]
    fn calls_and_overload_refuse_new_invites_without_blaming_the_source() {
        let counters = AdmissionCounters::default();
        let mut admission = Admission::new(&config(), vec![], NOW);
        let source: IpAddr = "203.0.113.5".parse().unwrap();
        let full = admission.new_invite(source, 10, Duration::ZERO, &counters, NOW);
        assert_eq!(full.unwrap_err().reason, "the call limit is reached");
        let late = admission.new_invite(source, 0, Duration::from_secs(1), &counters, NOW);
        assert_eq!(late.unwrap_err().reason, "the SBC is overloaded");
        assert_eq!(counters.overload.load(Ordering::Relaxed), 1);
        // An allowlisted trunk is served four times as far into an overload.
        let trunk: IpAddr = "192.0.2.7".parse().unwrap();
        let delay = Duration::from_secs(1);
        assert_eq!(
            admission.new_invite(trunk, 0, delay, &counters, NOW),
            Ok(())
        );
        let later = admission.new_invite(trunk, 0, 5 * delay, &counters, NOW);
        assert_eq!(later.unwrap_err().reason, "the SBC is overloaded");
    }

    #[test]
    fn scanners_are_recognised_in_any_case() {
        let admission = Admission::new(&config(), vec!["198.18.2.2".parse().unwrap()], NOW);
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(admission.is_scanner(stranger, "friendly-scanner"));
        assert!(admission.is_scanner(stranger, "SIPVicious 0.3.4"));
        assert!(!admission.is_scanner(stranger, "Asterisk PBX 20.1"));
        // A trunk or a backend that calls itself a scanner is not blocked for it.
        for trusted in ["192.0.2.7", "198.18.2.2"] {
            assert!(!admission.is_scanner(trusted.parse().unwrap(), "friendly-scanner"));
        }
    }
}
