//! The backend pool: which media server gets a new call (policy), and whether it is healthy.
//!
//! Health is the backend's own doing only: probes, and how it answers the INVITEs sent to it.
//! What an outsider's requests provoke (a MESSAGE it ignores, a REGISTER it rejects) never
//! counts, or anyone could take the backend out. Only answered probes bring a down backend
//! back (answered calls only with probes off), and a probe answer that is late while the backend answers other traffic is not a
//! failure: under load the answer waited in a queue, the backend is alive.
use std::{
    net::SocketAddr,
    ops::{Index, IndexMut},
    time::Instant,
};

use crate::proxy::{
    config::{BackendTransport, BalancePolicy, HealthConfig, SipConfig, code_range},
    dns::Target,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    /// Where it comes from: `[[sip.backends]]`, or the DNS of `[[sip.backend_hosts]]`.
    pub source: Source,
    pub transport: BackendTransport,
    pub weight: u32,
    /// SRV priority (0 for a backend given by address): a new call goes to the lowest
    /// priority that has a healthy backend with room.
    pub priority: u16,
    /// No longer among its host's targets: it keeps its calls but takes no new ones, and is
    /// not probed.
    pub retired: bool,
    /// A probe timer of its own is running.
    pub probing: bool,
    pub health: Health,
    /// Consecutive failures and answered probes.
    failures: u32,
    successes: u32,
    /// When anything was last heard from it.
    last_heard: Option<Instant>,
    /// Calls established through it.
    pub active_calls: usize,
    /// Its `max_calls` (0: no limit).
    pub max_calls: usize,
    /// For smooth weighted round robin.
    current_weight: i64,
    pub changed_at: Instant,
}

/// Where a backend of the pool comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[sip.backends]]`, by address.
    Address,
    /// A target of `[[sip.backend_hosts]]` entry `n`, found by DNS.
    Host(usize),
}

/// A backend of the pool, by its place in it (also its place in the stats): those of
/// `[[sip.backends]]` in their order, then the targets DNS found, in the order they were first
/// found. A place is never reused, so that a transaction's candidates keep meaning what they
/// meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId(usize);

impl BackendId {
    /// Its place in the pool and in `SipStats::backends`.
    pub fn index(self) -> usize {
        self.0
    }
}

/// The most targets one host's DNS adds to the pool over the daemon's life: a name whose
/// answers keep changing must not grow it without bound.
pub const MAX_TARGETS_PER_HOST: usize = 64;

#[derive(Debug)]
pub struct Backends {
    list: Vec<Backend>,
    policy: BalancePolicy,
    health: HealthConfig,
    alive: Vec<(u16, u16)>,
    next: usize,
}

/// What a backend did, as its health counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A probe got an alive answer: the only thing that brings a down backend back.
    ProbeAlive,
    /// A probe got another answer, or none while nothing else was heard from the backend.
    ProbeFailed,
    /// An INVITE it left unanswered, or answered 408 or 5xx.
    CallFailed,
    /// Any other answer to an INVITE (or a late probe while it answers traffic): alive, so its
    /// failures start over; not a recovery.
    Alive,
}

impl Observation {
    pub fn is_failure(self) -> bool {
        matches!(self, Self::ProbeFailed | Self::CallFailed)
    }
}

/// What a DNS answer changed in the pool (`Backends::resolved`).
#[derive(Debug, PartialEq, Eq)]
pub struct Joined {
    /// Targets new to the pool.
    pub added: Vec<BackendId>,
    /// How many of the host's targets retired now.
    pub retired: usize,
}

/// What a health observation changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameUp,
}

impl Backends {
    pub fn new(config: &SipConfig, now: Instant) -> Self {
        Self {
            list: config
                .backends
                .iter()
                .map(|b| {
                    let weight = b.weight;
                    let shape = (b.transport, b.max_calls);
                    Backend::new(b.address, Source::Address, shape, (0, weight), now)
                })
                .collect(),
            policy: config.policy,
            alive: config
                .health
                .alive_codes
                .iter()
                .filter_map(|c| code_range(c))
                .collect(),
            health: config.health.clone(),
            next: 0,
        }
    }

    pub fn id_of(&self, address: SocketAddr) -> Option<BackendId> {
        self.list
            .iter()
            .position(|b| b.address == address)
            .map(BackendId)
    }

    /// Every backend, in the pool's order (retired ones too).
    pub fn iter(&self) -> impl Iterator<Item = (BackendId, &Backend)> {
        self.list.iter().enumerate().map(|(i, b)| (BackendId(i), b))
    }

    /// The backends in service (not retired).
    pub fn serving(&self) -> impl Iterator<Item = (BackendId, &Backend)> {
        self.iter().filter(|(_, b)| !b.retired)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Host entry `host` now stands for `targets` (its DNS answer): targets it did not have
    /// join the pool, those it no longer has retire, the others take their new priority and
    /// weight (a weight of 0 counts as 1: a small share, as RFC 2782 gives it). An address the
    /// pool has from elsewhere stays that entry's.
    pub fn resolved(
        &mut self,
        host: usize,
        targets: &[Target],
        (transport, max_calls): (BackendTransport, u32),
        now: Instant,
    ) -> Joined {
        let mut retired = 0;
        for backend in &mut self.list {
            if backend.source != Source::Host(host) {
                continue;
            }
            match targets.iter().find(|t| t.address == backend.address) {
                Some(target) => {
                    backend.retired = false;
                    backend.priority = target.priority;
                    backend.weight = u32::from(target.weight.max(1));
                }
                None if !backend.retired => {
                    backend.retired = true;
                    retired += 1;
                }
                None => {}
            }
        }
        let mut added = Vec::new();
        for target in targets {
            if self.list.iter().any(|b| b.address == target.address) {
                continue;
            }
            let of_host = self
                .list
                .iter()
                .filter(|b| b.source == Source::Host(host))
                .count();
            if of_host >= MAX_TARGETS_PER_HOST {
                break;
            }
            let weight = u32::from(target.weight.max(1));
            let order = (target.priority, weight);
            let shape = (transport, max_calls);
            let backend = Backend::new(target.address, Source::Host(host), shape, order, now);
            self.list.push(backend);
            added.push(BackendId(self.list.len() - 1));
        }
        Joined { added, retired }
    }

    /// Whether a backend can take another call.
    fn has_room(&self, index: usize) -> bool {
        let backend = &self.list[index];
        backend.max_calls == 0 || backend.active_calls < backend.max_calls
    }

    /// Whether there are healthy backends and every one is at its `max_calls`.
    pub fn all_full(&self) -> bool {
        let mut up = (0..self.list.len())
            .filter(|&i| self.list[i].health == Health::Up && !self.list[i].retired)
            .peekable();
        up.peek().is_some() && up.all(|i| !self.has_room(i))
    }

    /// The healthy backends with room for a call, in the order to try them for a new call:
    /// the policy's choice among the lowest priority, the rest of that priority after it, then
    /// each higher priority in turn (RFC 2782: a higher priority only when the lower fail).
    pub fn candidates(&mut self, call_id: &str) -> Vec<BackendId> {
        let mut healthy: Vec<usize> = (0..self.list.len())
            .filter(|&i| {
                let backend = &self.list[i];
                backend.health == Health::Up && !backend.retired && self.has_room(i)
            })
            .collect();
        let Some(lowest) = healthy.iter().map(|&i| self.list[i].priority).min() else {
            return Vec::new();
        };
        // Stable: within a priority the pool's order, which the policies rotate.
        healthy.sort_by_key(|&i| self.list[i].priority);
        let first_tier = healthy
            .iter()
            .take_while(|&&i| self.list[i].priority == lowest)
            .count();
        let (tier, rest) = healthy.split_at(first_tier);
        let first = match self.policy {
            BalancePolicy::RoundRobin => {
                self.next = self.next.wrapping_add(1);
                tier[self.next % tier.len()]
            }
            BalancePolicy::Weighted => self.smooth_weighted(tier),
            BalancePolicy::LeastCalls => *tier
                .iter()
                .min_by_key(|&&i| self.list[i].active_calls)
                .expect("not empty"),
            BalancePolicy::CallIdHash => tier[fnv1a(call_id.as_bytes()) as usize % tier.len()],
        };
        let position = tier
            .iter()
            .position(|&i| i == first)
            .expect("chosen from the tier");
        tier[position..]
            .iter()
            .chain(&tier[..position])
            .chain(rest)
            .map(|&i| BackendId(i))
            .collect()
    }

    /// Nginx's smooth weighted round robin: even spread, proportional to weights.
    fn smooth_weighted(&mut self, healthy: &[usize]) -> usize {
        let total: i64 = healthy
            .iter()
            .map(|&i| i64::from(self.list[i].weight))
            .sum();
        for &i in healthy {
            self.list[i].current_weight += i64::from(self.list[i].weight);
        }
        let best = *healthy
            .iter()
            .max_by_key(|&&i| (self.list[i].current_weight, std::cmp::Reverse(i)))
            .expect("not empty");
        self.list[best].current_weight -= total;
        best
    }

    pub fn is_alive_code(&self, code: u16) -> bool {
        self.alive
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }

    /// Something arrived from this backend.
    pub fn heard_from(&mut self, id: BackendId, now: Instant) {
        self[id].last_heard = Some(now);
    }

    /// Whether anything arrived from this backend after `since`.
    pub fn heard_since(&self, id: BackendId, since: Instant) -> bool {
        self[id].last_heard.is_some_and(|heard| heard > since)
    }

    pub fn observe(&mut self, id: BackendId, observation: Observation, now: Instant) -> Transition {
        // Without probes, answered calls are all there is to bring a backend back.
        let observation = match observation {
            Observation::Alive if !self.health.probes => Observation::ProbeAlive,
            other => other,
        };
        let backend = &mut self.list[id.0];
        match observation {
            Observation::ProbeAlive => {
                backend.failures = 0;
                backend.successes += 1;
                if backend.health == Health::Down
                    && backend.successes >= self.health.recovery_threshold
                {
                    return backend.change(Health::Up, now);
                }
            }
            Observation::Alive => backend.failures = 0,
            Observation::ProbeFailed | Observation::CallFailed => {
                backend.successes = 0;
                backend.failures += 1;
                if backend.health == Health::Up && backend.failures >= self.health.failure_threshold
                {
                    return backend.change(Health::Down, now);
                }
            }
        }
        Transition::None
    }
}

impl Index<BackendId> for Backends {
    type Output = Backend;

    fn index(&self, id: BackendId) -> &Backend {
        &self.list[id.0]
    }
}

impl IndexMut<BackendId> for Backends {
    fn index_mut(&mut self, id: BackendId) -> &mut Backend {
        &mut self.list[id.0]
    }
}

impl Backend {
    /// A healthy backend without calls: `(transport, max_calls)` as configured, `(priority,
    /// weight)` as configured or found.
    fn new(
        address: SocketAddr,
        source: Source,
        (transport, max_calls): (BackendTransport, u32),
        (priority, weight): (u16, u32),
        now: Instant,
    ) -> Self {
        Self {
            address,
            source,
            transport,
            weight,
            priority,
            retired: false,
            probing: false,
            health: Health::Up,
            failures: 0,
            successes: 0,
            last_heard: None,
            active_calls: 0,
            max_calls: max_calls as usize,
            current_weight: 0,
            changed_at: now,
        }
    }

    fn change(&mut self, health: Health, now: Instant) -> Transition {
        self.health = health;
        self.changed_at = now;
        self.failures = 0;
        self.successes = 0;
        match health {
            Health::Up => Transition::CameUp,
            Health::Down => Transition::WentDown,
        }
    }
}

/// A stable hash (FNV-1a): the same Call-ID always picks the same backend.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::BackendConfig;

    fn pool(policy: BalancePolicy, weights: &[u32]) -> Backends {
        let config = SipConfig {
            backend_hosts: Vec::new(),
            dns: Default::default(),
            public_listen: "127.0.0.1:5060".parse().unwrap(),
            private_listen: None,
            public_advertise: None,
            public_advertise_command: None,
            public_advertise_file: None,
            private_advertise: None,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| BackendConfig {
                    address: format!("127.0.0.{}:5060", i + 2).parse().unwrap(),
                    weight,
                    max_calls: 0,
                    transport: Default::default(),
                    server_name: None,
                    tls_ca: None,
                })
                .collect(),
            policy,
            invite_timeout_ms: 2000,
            trunk: None,
            trunk_host: None,
            trunk_port: None,
            trunk_transport: Default::default(),
            trunk_server_name: None,
            trunk_tls_ca: None,
            retry_after_secs: 5,
            health: HealthConfig::default(),
            limits: Default::default(),
            tcp: Default::default(),
            hiding: Default::default(),
            tls: None,
        };
        Backends::new(&config, Instant::now())
    }

    #[test]
    fn weighted_spreads_by_weight_and_lists_the_rest_for_failover() {
        let mut backends = pool(BalancePolicy::Weighted, &[3, 1]);
        let firsts: Vec<BackendId> = (0..8).map(|_| backends.candidates("x")[0]).collect();
        assert_eq!(firsts.iter().filter(|&&id| id == BackendId(0)).count(), 6);
        assert_eq!(backends.candidates("x").len(), 2);
    }

    #[test]
    fn health_thresholds_and_down_backends_are_skipped() {
        use Observation::*;
        let mut backends = pool(BalancePolicy::RoundRobin, &[1, 1]);
        assert_eq!(
            backends.observe(BackendId(0), CallFailed, Instant::now()),
            Transition::None
        );
        // An answered call in between: the failures start over.
        assert_eq!(
            backends.observe(BackendId(0), Alive, Instant::now()),
            Transition::None
        );
        assert_eq!(
            backends.observe(BackendId(0), ProbeFailed, Instant::now()),
            Transition::None
        );
        assert_eq!(
            backends.observe(BackendId(0), CallFailed, Instant::now()),
            Transition::WentDown
        );
        assert_eq!(backends.candidates("x"), vec![BackendId(1)]);
        // The calls it still carries are answered: that brings it no closer to coming back.
        for _ in 0..10 {
            assert_eq!(
                backends.observe(BackendId(0), Alive, Instant::now()),
                Transition::None
            );
        }
        assert_eq!(
            backends.observe(BackendId(0), ProbeAlive, Instant::now()),
            Transition::None
        );
        assert_eq!(
            backends.observe(BackendId(0), ProbeAlive, Instant::now()),
            Transition::CameUp
        );
        assert_eq!(backends.candidates("x").len(), 2);
        // A fresh health period: one failure is not yet enough.
        assert_eq!(
            backends.observe(BackendId(0), ProbeFailed, Instant::now()),
            Transition::None
        );
        let mut hashed = pool(BalancePolicy::CallIdHash, &[1, 1, 1]);
        assert_eq!(hashed.candidates("abc")[0], hashed.candidates("abc")[0]);
    }

    #[test]
    fn only_what_arrived_after_a_moment_counts_as_heard_since() {
        let mut backends = pool(BalancePolicy::RoundRobin, &[1]);
        let probe_sent = Instant::now();
        assert!(!backends.heard_since(BackendId(0), probe_sent));
        backends.heard_from(
            BackendId(0),
            probe_sent + std::time::Duration::from_millis(5),
        );
        assert!(backends.heard_since(BackendId(0), probe_sent));
        assert!(
            !backends.heard_since(BackendId(0), probe_sent + std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn full_backends_are_skipped_until_every_one_is_full() {
        let mut backends = pool(BalancePolicy::LeastCalls, &[1, 1]);
        backends.list[0].max_calls = 2;
        backends.list[0].active_calls = 2;
        assert_eq!(backends.candidates("x"), vec![BackendId(1)]);
        assert!(!backends.all_full());
        backends.list[1].max_calls = 1;
        backends.list[1].active_calls = 1;
        assert!(backends.candidates("x").is_empty());
        assert!(backends.all_full());
        // None up is not "all full": the log and the 503 say no backend is available.
        for backend in &mut backends.list {
            backend.health = Health::Down;
        }
        assert!(!backends.all_full());
    }

    fn target(address: &str, priority: u16, weight: u16) -> Target {
        Target {
            address: address.parse().unwrap(),
            priority,
            weight,
        }
    }

    #[test]
    fn dns_targets_join_retire_and_return_in_place() {
        let mut backends = pool(BalancePolicy::Weighted, &[1]);
        let shape = (BackendTransport::Udp, 0);
        let joined = backends.resolved(
            0,
            &[
                target("10.0.0.1:5060", 10, 3),
                target("10.0.0.2:5060", 10, 1),
            ],
            shape,
            Instant::now(),
        );
        assert_eq!(joined.added, vec![BackendId(1), BackendId(2)]);
        // An SRV answer for the address configured by hand leaves it that entry's.
        let joined = backends.resolved(
            0,
            &[
                target("127.0.0.2:5060", 10, 1),
                target("10.0.0.2:5060", 10, 5),
            ],
            shape,
            Instant::now(),
        );
        assert!(joined.added.is_empty());
        assert_eq!(joined.retired, 1);
        assert!(backends[BackendId(1)].retired, "no longer a target");
        assert_eq!(backends[BackendId(2)].weight, 5);
        assert_eq!(backends[BackendId(0)].source, Source::Address);
        let joined = backends.resolved(0, &[target("10.0.0.1:5060", 10, 0)], shape, Instant::now());
        assert!(joined.added.is_empty(), "it returns in its old place");
        assert!(!backends[BackendId(1)].retired && backends[BackendId(2)].retired);
        assert_eq!(backends[BackendId(1)].weight, 1, "weight 0 counts as 1");
        assert_eq!(backends.serving().count(), 2);
    }

    #[test]
    fn a_higher_srv_priority_only_after_every_lower_one_and_weights_within_it() {
        let mut backends = pool(BalancePolicy::Weighted, &[]);
        let shape = (BackendTransport::Udp, 0);
        backends.resolved(
            0,
            &[
                target("10.0.0.1:5060", 10, 3),
                target("10.0.0.2:5060", 10, 1),
                target("10.0.0.3:5060", 20, 100),
            ],
            shape,
            Instant::now(),
        );
        let firsts: Vec<BackendId> = (0..8).map(|_| backends.candidates("x")[0]).collect();
        assert_eq!(firsts.iter().filter(|&&id| id == BackendId(0)).count(), 6);
        assert_eq!(firsts.iter().filter(|&&id| id == BackendId(1)).count(), 2);
        assert_eq!(
            backends.candidates("x").last(),
            Some(&BackendId(2)),
            "the higher priority last, for failover"
        );
        for id in [BackendId(0), BackendId(1)] {
            backends[id].health = Health::Down;
        }
        assert_eq!(backends.candidates("x"), vec![BackendId(2)]);
    }
}
