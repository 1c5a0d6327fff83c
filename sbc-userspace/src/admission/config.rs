//! `[admission]`: who may send how much, and what happens to those who send too much.
use ipnet::IpNet;
use serde::Deserialize;

use crate::config_error::ConfigError;

/// Messages that may wait for the proxy at most (a few tens of MiB at worst): past it intake
/// drops every datagram and TCP readers wait, so the queue's memory stays bounded whatever
/// arrives. The shedding bounds below it are this section's to set.
pub const QUEUE_LIMIT: usize = 65_536;

/// The limits of one class of source. Every rate is per second; 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceLimits {
    /// Out-of-dialog SIP datagrams, enforced in the kernel: above it they are dropped.
    pub packets_per_sec: u32,
    pub packet_burst: u32,
    /// New INVITEs: above it they are refused with 503 and Retry-After; above twice it (and
    /// 10 more) the kernel drops them before they reach the daemon.
    pub invites_per_sec: u32,
    pub invite_burst: u32,
    /// Other out-of-dialog requests (OPTIONS, REGISTER, MESSAGE, SUBSCRIBE...): 503 above it.
    pub requests_per_sec: u32,
    pub request_burst: u32,
}

impl SourceLimits {
    const fn scaled(factor: u32) -> Self {
        Self {
            packets_per_sec: 200 * factor,
            packet_burst: 400 * factor,
            invites_per_sec: 20 * factor,
            invite_burst: 40 * factor,
            requests_per_sec: 20 * factor,
            request_burst: 40 * factor,
        }
    }
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self::scaled(1)
    }
}

fn allowlisted_default() -> SourceLimits {
    SourceLimits::scaled(10)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Off: no limit anywhere (lists, and shedding when the proxy falls behind, still apply).
    pub enabled: bool,
    /// CIDRs whose SIP is dropped in the kernel, whatever it is.
    pub blocklist: Vec<IpNet>,
    /// CIDRs (trunks) held to `allowlisted` instead of `source`, and never blocked for their
    /// behaviour. The configured backends are always allowlisted without limits.
    pub allowlist: Vec<IpNet>,
    /// Limits of every source that is not allowlisted.
    pub source: SourceLimits,
    /// Limits of allowlisted sources.
    #[serde(default = "allowlisted_default")]
    pub allowlisted: SourceLimits,
    /// New INVITEs per second for the whole SBC (0: no limit), and their burst.
    pub invites_per_sec: u32,
    pub invite_burst: u32,
    /// Concurrent calls for the whole SBC (0: no limit; backends have their own `max_calls`).
    pub max_calls: u32,
    /// Datagrams dropped over the packet limit within one second that get the source blocked
    /// (0: never).
    pub block_after_drops: u32,
    /// Requests refused over a source's limits, or shed by an overloaded daemon, within ten
    /// seconds that get it blocked (0: never).
    pub block_after_refusals: u32,
    /// How long those blocks last.
    pub block_secs: u64,
    /// A request whose User-Agent contains one of these (any case) gets its source blocked at
    /// once, unanswered.
    pub scanner_user_agents: Vec<String>,
    pub scanner_block_secs: u64,
    /// A source whose out-of-dialog requests for this many different users fail as for a
    /// missing user (404, 484, 604...) within `failed_users_window_secs` is enumerating users:
    /// it is blocked like a scanner (0: never). A caller does not ask for many users that do
    /// not exist; a word list does.
    pub block_after_failed_users: u32,
    pub failed_users_window_secs: u64,
    /// Overload: the longest a new INVITE may wait for the proxy (in the kernel's receive
    /// buffer and its queue). While new requests wait half of it, new public requests are
    /// shed on arrival (INVITEs answered 503), so those let in are served within it; one that
    /// waited longer anyway is refused (503). Calls already set up are served first,
    /// allowlisted sources up to four times as long. Kept well under SIP's 500 ms
    /// retransmission timer, so callers let in do not retransmit into the overload.
    pub overload_delay_ms: u64,
    /// Overload: when this many messages wait for the proxy, new requests from the public
    /// side that belong to no call are shed on arrival too (0: never); responses and
    /// requests of calls still get through.
    pub shed_queue_depth: usize,
    /// Overload: a new request from the public side that waited this long since it arrived
    /// (in the kernel's receive buffer and the queue) is refused at once (503) before any
    /// other work: handling it would delay the calls that are up, and dropping it would bring
    /// it back as retransmissions. Allowlisted sources get four times as long (0: never).
    pub shed_delay_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blocklist: Vec::new(),
            allowlist: Vec::new(),
            source: SourceLimits::default(),
            allowlisted: allowlisted_default(),
            invites_per_sec: 0,
            invite_burst: 0,
            max_calls: 0,
            block_after_drops: 2000,
            block_after_refusals: 100,
            block_secs: 300,
            scanner_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "VaxSIPUserAgent",
            ]
            .map(String::from)
            .to_vec(),
            scanner_block_secs: 3600,
            block_after_failed_users: 10,
            failed_users_window_secs: 60,
            overload_delay_ms: 300,
            shed_queue_depth: 2048,
            shed_delay_ms: 1000,
        }
    }
}

/// Rates above this are refused: they would be no limit at all, and bounding them keeps the
/// kernel's bucket arithmetic far from overflow.
const MAX_RATE: u32 = 10_000_000;

fn check_pair(key: &str, rate: u32, burst: u32, per: &str) -> Result<(), ConfigError> {
    if rate > MAX_RATE {
        return Err(ConfigError::new(
            &format!("{key}s_per_sec"),
            format!("{rate} is above the largest rate, {MAX_RATE}"),
        ));
    }
    if rate > 0 && burst == 0 {
        return Err(ConfigError::new(
            &format!("{key}_burst"),
            format!(
                "must be at least 1 when {key}s_per_sec is set: it is how many {per} may come at once"
            ),
        ));
    }
    Ok(())
}

impl SourceLimits {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_pair(
            &format!("{key}.packet"),
            self.packets_per_sec,
            self.packet_burst,
            "datagrams",
        )?;
        check_pair(
            &format!("{key}.invite"),
            self.invites_per_sec,
            self.invite_burst,
            "INVITEs",
        )?;
        check_pair(
            &format!("{key}.request"),
            self.requests_per_sec,
            self.request_burst,
            "requests",
        )
    }
}

impl AdmissionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate("admission.source")?;
        self.allowlisted.validate("admission.allowlisted")?;
        check_pair(
            "admission.invite",
            self.invites_per_sec,
            self.invite_burst,
            "INVITEs",
        )?;
        for (key, value) in [
            ("admission.block_secs", self.block_secs),
            ("admission.scanner_block_secs", self.scanner_block_secs),
            (
                "admission.failed_users_window_secs",
                self.failed_users_window_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if let Some(empty) = self
            .scanner_user_agents
            .iter()
            .position(|ua| ua.trim().is_empty())
        {
            return Err(ConfigError::new(
                &format!("admission.scanner_user_agents[{empty}]"),
                "is empty: it would match every User-Agent",
            ));
        }
        if self.shed_queue_depth >= QUEUE_LIMIT {
            return Err(ConfigError::new(
                "admission.shed_queue_depth",
                format!(
                    "{} is not below the queue's own bound, {QUEUE_LIMIT}, where everything is dropped",
                    self.shed_queue_depth
                ),
            ));
        }
        Ok(())
    }
}
