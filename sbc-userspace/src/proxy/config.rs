//! The `[sip]` section of the configuration: listeners, backends and how they are chosen and
//! watched, bounds on what is accepted, TCP, topology hiding; checked here, where it is used.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use super::{dns::DnsConfig, tcp::TcpConfig, tls::TlsConfig};
use crate::{advertise::AdvertiseSource, config_error::ConfigError, sip::bounds};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Where carriers and trunks send SIP (UDP).
    pub public_listen: SocketAddr,
    /// Where backends send SIP; defaults to `public_listen` (one interface).
    #[serde(default)]
    pub private_listen: Option<SocketAddr>,
    /// The address carriers reach `public_listen` by, when that is not the bound one (a 1:1
    /// NAT in front of the edge, as a cloud VM's external IP): written in our Via,
    /// Record-Route and Contact on the public side, while sockets, XDP flows and routing use
    /// the bound address. Media advertises it too unless `media.public_advertise` says
    /// otherwise.
    #[serde(default)]
    pub public_advertise: Option<IpAddr>,
    /// Where `public_advertise` is read at start and on every reload instead (a cloud VM's
    /// external address, which may move): a command whose output's first line is the address
    /// (the provider's metadata service), or a file holding it. At most one of the three.
    #[serde(default)]
    pub public_advertise_command: Option<String>,
    #[serde(default)]
    pub public_advertise_file: Option<PathBuf>,
    /// The same on the private side, for backends that reach the edge through a NAT.
    #[serde(default)]
    pub private_advertise: Option<IpAddr>,
    /// The media servers new calls from the public side go to.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Media servers named by host: their targets found by DNS (RFC 3263) and kept for their
    /// TTL, each a backend of its own beside `backends`.
    #[serde(default)]
    pub backend_hosts: Vec<BackendHostConfig>,
    /// Where and how backends named by host are looked up.
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub policy: BalancePolicy,
    /// An INVITE unanswered (not even 100) this long goes to the next backend.
    #[serde(default = "default_invite_timeout_ms")]
    pub invite_timeout_ms: u64,
    /// Where new requests from the private side go when their Request-URI names no IP address.
    #[serde(default)]
    pub trunk: Option<SocketAddr>,
    /// Or the trunk named by host, found by DNS as a backend host is (RFC 3263): a request
    /// tries its targets by SRV priority and weight, failing over on 408, 5xx or silence.
    #[serde(default)]
    pub trunk_host: Option<String>,
    /// With `trunk_host`: only its A/AAAA records, at this port.
    #[serde(default)]
    pub trunk_port: Option<u16>,
    /// How requests reach the trunk, as a backend's `transport`, `server_name` and `tls_ca`.
    #[serde(default)]
    pub trunk_transport: BackendTransport,
    #[serde(default)]
    pub trunk_server_name: Option<String>,
    #[serde(default)]
    pub trunk_tls_ca: Option<PathBuf>,
    /// Retry-After of our 503s.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
    #[serde(default)]
    pub health: HealthConfig,
    /// Bounds on header fields and tokens: what exceeds them is refused, not forwarded.
    #[serde(default)]
    pub limits: bounds::Bounds,
    /// Bounds on SIP over TCP: connections, and how long a message may take.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// What the public side does not learn: which users exist, what runs behind the edge.
    #[serde(default)]
    pub hiding: HidingConfig,
    /// A TLS listener on the public side, with its certificate and key.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl SipConfig {
    pub fn private_listen(&self) -> SocketAddr {
        self.private_listen.unwrap_or(self.public_listen)
    }

    /// How requests reach `target` when it is a backend configured by address or the trunk
    /// (the pool knows those found by DNS).
    pub fn transport_to(&self, target: SocketAddr) -> Option<BackendTransport> {
        if self.trunk == Some(target) {
            return Some(self.trunk_transport);
        }
        self.backends
            .iter()
            .find(|backend| backend.address == target)
            .map(|backend| backend.transport)
    }

    /// Where the public address to advertise is read, if it is not written here.
    pub fn advertise_source(&self) -> Option<AdvertiseSource> {
        let command = self.public_advertise_command.clone();
        let file = self.public_advertise_file.clone();
        command
            .map(AdvertiseSource::Command)
            .or(file.map(AdvertiseSource::File))
    }

    /// Reads the public address to advertise from its source, if it has one, into
    /// `public_advertise` (a problem names the source's key).
    pub fn detect_advertised(&mut self) -> Result<(), ConfigError> {
        let Some(source) = self.advertise_source() else {
            return Ok(());
        };
        let address = source
            .read()
            .map_err(|e| ConfigError::new(source.key(), e))?;
        check_advertised(source.key(), address, self.public_listen.ip())?;
        self.public_advertise = Some(address);
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: SocketAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Concurrent calls this backend takes (0: no limit); a full backend is skipped.
    #[serde(default)]
    pub max_calls: u32,
    /// How requests reach it: `udp` (the default; a request over 1300 bytes still goes by
    /// TCP, RFC 3261 18.1.1), `tcp` or `tls`, over a connection kept open and reused.
    #[serde(default)]
    pub transport: BackendTransport,
    /// With `tls`: the name its certificate must be for (checked, and sent as SNI), and the
    /// PEM file of the authorities to trust for it (default: the system's).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

/// `[[sip.backend_hosts]]`: media servers a DNS name stands for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendHostConfig {
    /// Its NAPTR and SRV records name the targets (priorities and weights), else its A/AAAA
    /// records at the transport's default port.
    pub host: String,
    /// With a port, only the host's A/AAAA records are asked (RFC 3263 4.2).
    #[serde(default)]
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls` (over connections kept open, as a backend's).
    #[serde(default)]
    pub transport: BackendTransport,
    /// With `tls`: the name the targets' certificates must be for (default: `host`), and the
    /// authorities to trust (default: the system's).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Concurrent calls each target takes (0: no limit).
    #[serde(default)]
    pub max_calls: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    Weighted,
    LeastCalls,
    CallIdHash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Probe backends with OPTIONS (off for media servers that do not answer OPTIONS: then
    /// only real traffic says whether a backend is healthy).
    pub probes: bool,
    /// Time between OPTIONS probes of each backend.
    pub interval_ms: u64,
    /// A probe unanswered this long failed.
    pub timeout_ms: u64,
    /// Consecutive failures (probes, INVITE timeouts, 5xx) that mark a backend down.
    pub failure_threshold: u32,
    /// Consecutive answered probes that bring it back.
    pub recovery_threshold: u32,
    /// Probe answers that count as alive: codes ("404") or ranges ("200-299").
    pub alive_codes: Vec<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probes: true,
            interval_ms: 2000,
            timeout_ms: 1000,
            failure_threshold: 2,
            recovery_threshold: 2,
            alive_codes: vec!["200-299".into()],
        }
    }
}

/// Parses an `alive_codes` entry: "404" or "200-299".
pub fn code_range(entry: &str) -> Option<(u16, u16)> {
    let (low, high) = entry.split_once('-').unwrap_or((entry, entry));
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    ((100..=699).contains(&low) && low <= high && high <= 699).then_some((low, high))
}

fn default_invite_timeout_ms() -> u64 {
    2000
}

fn default_retry_after_secs() -> u32 {
    5
}

/// A name to look up in DNS: not empty, no blanks.
fn check_dns_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() || name.contains(char::is_whitespace) {
        return Err(ConfigError::new(key, "must be a DNS name"));
    }
    Ok(())
}

fn default_weight() -> u32 {
    1
}

impl SipConfig {
    /// Checks what parsing cannot, naming the key of the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sip = self;
        if sip.backends.is_empty() && sip.backend_hosts.is_empty() {
            return Err(ConfigError::new(
                "sip.backends",
                "lists no backend: name at least one media server (or sip.backend_hosts)",
            ));
        }
        for (i, host) in sip.backend_hosts.iter().enumerate() {
            check_dns_name(&format!("sip.backend_hosts[{i}].host"), &host.host)?;
        }
        for (i, backend) in sip.backends.iter().enumerate() {
            if backend.weight == 0 {
                return Err(ConfigError::new(
                    &format!("sip.backends[{i}].weight"),
                    "must be at least 1",
                ));
            }
            if backend.transport == BackendTransport::Tls && backend.server_name.is_none() {
                return Err(ConfigError::new(
                    &format!("sip.backends[{i}].server_name"),
                    "is needed with transport = \"tls\": the name its certificate is for",
                ));
            }
            // Two entries for one server would double its share and split its health.
            if let Some(first) = sip.backends[..i]
                .iter()
                .position(|other| other.address == backend.address)
            {
                return Err(ConfigError::new(
                    &format!("sip.backends[{i}].address"),
                    format!("{} is already sip.backends[{first}]", backend.address),
                ));
            }
        }
        if let Some(host) = &sip.trunk_host {
            if sip.trunk.is_some() {
                return Err(ConfigError::new(
                    "sip.trunk_host",
                    "and sip.trunk both name the trunk: keep one",
                ));
            }
            check_dns_name("sip.trunk_host", host)?;
        }
        if sip.trunk_transport == BackendTransport::Tls
            && sip.trunk_server_name.is_none()
            && sip.trunk_host.is_none()
        {
            return Err(ConfigError::new(
                "sip.trunk_server_name",
                "is needed with trunk_transport = \"tls\": the name its certificate is for",
            ));
        }
        // One source of the public address: written, or read from a command or a file.
        let sources = [
            ("sip.public_advertise", sip.public_advertise.is_some()),
            (
                "sip.public_advertise_command",
                sip.public_advertise_command.is_some(),
            ),
            (
                "sip.public_advertise_file",
                sip.public_advertise_file.is_some(),
            ),
        ];
        let mut given = sources.iter().filter(|(_, set)| *set).map(|(key, _)| *key);
        if let (Some(first), Some(second)) = (given.next(), given.next()) {
            return Err(ConfigError::new(
                second,
                format!("{first} is set too: give the public address one way"),
            ));
        }
        for (key, advertised, bound) in [
            (
                "sip.public_advertise",
                sip.public_advertise,
                sip.public_listen,
            ),
            (
                "sip.private_advertise",
                sip.private_advertise,
                sip.private_listen(),
            ),
        ] {
            if let Some(advertised) = advertised {
                check_advertised(key, advertised, bound.ip())?;
            }
        }
        if sip.invite_timeout_ms == 0 {
            return Err(ConfigError::new(
                "sip.invite_timeout_ms",
                "must be at least 1",
            ));
        }
        let tcp = &sip.tcp;
        for (key, value) in [
            ("sip.tcp.max_connections", tcp.max_connections as u64),
            (
                "sip.tcp.max_connections_per_source",
                tcp.max_connections_per_source as u64,
            ),
            ("sip.tcp.message_timeout_ms", tcp.message_timeout_ms),
            ("sip.tcp.idle_secs", tcp.idle_secs),
            ("sip.tcp.connect_timeout_ms", tcp.connect_timeout_ms),
            ("sip.tcp.dead_after_ms", tcp.dead_after_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        let limits = &sip.limits;
        for (key, value, least) in [
            (
                "sip.limits.max_headers",
                limits.max_headers,
                bounds::MIN_HEADERS,
            ),
            (
                "sip.limits.max_header_bytes",
                limits.max_header_bytes,
                bounds::MIN_HEADER_BYTES,
            ),
            (
                "sip.limits.max_token_bytes",
                limits.max_token_bytes,
                bounds::MIN_TOKEN_BYTES,
            ),
        ] {
            if value < least {
                return Err(ConfigError::new(
                    key,
                    format!("must be at least {least} (valid messages need that much)"),
                ));
            }
        }
        let health = &sip.health;
        for (key, value) in [
            ("sip.health.interval_ms", health.interval_ms),
            ("sip.health.timeout_ms", health.timeout_ms),
            (
                "sip.health.failure_threshold",
                u64::from(health.failure_threshold),
            ),
            (
                "sip.health.recovery_threshold",
                u64::from(health.recovery_threshold),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if let Some(bad) = health.alive_codes.iter().find(|c| code_range(c).is_none()) {
            return Err(ConfigError::new(
                "sip.health.alive_codes",
                format!("{bad:?} is neither a status code nor a range like \"200-299\""),
            ));
        }
        Ok(())
    }
}

/// An address to advertise instead of `bound`: one parties can send to, of the same family.
pub fn check_advertised(key: &str, advertised: IpAddr, bound: IpAddr) -> Result<(), ConfigError> {
    if advertised.is_unspecified() || advertised.is_multicast() || advertised.is_loopback() {
        return Err(ConfigError::new(
            key,
            format!("{advertised} is no address a party can send to"),
        ));
    }
    if advertised.is_ipv4() != bound.is_ipv4() {
        return Err(ConfigError::new(
            key,
            format!("{advertised} is not of the family of the bound address {bound}"),
        ));
    }
    Ok(())
}

/// `[sip.hiding]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HidingConfig {
    /// Answer "no such user" to untrusted sources as an existing user is answered.
    pub uniform_failures: bool,
    /// Headers removed from messages that leave on the public side from a backend.
    pub strip_headers: Vec<String>,
    /// Topology hiding: what leaves on the public side from the private one names no party
    /// of the private side. Their Contacts become ours (their user part kept, in-dialog
    /// requests to it go on to the real one) and their Vias stay here (restored on the
    /// responses).
    pub topology: bool,
}

impl Default for HidingConfig {
    fn default() -> Self {
        Self {
            uniform_failures: true,
            strip_headers: ["Server", "User-Agent", "Warning"]
                .map(String::from)
                .to_vec(),
            topology: true,
        }
    }
}
