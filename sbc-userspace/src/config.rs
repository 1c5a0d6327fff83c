//! The daemon's TOML configuration: parsing, defaults, and validation that names the key.
//!
//! Two stages: `parse` checks the file on its own (syntax, unknown keys, types, ranges), and
//! `check_host` checks it against the host (interfaces exist; addresses are local, but a fleet
//! node's floating ones, checked when it takes their group). `sbc run` and `sbc check-config`
//! run both.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use crate::proxy::config::{BackendConfig, BalancePolicy, HealthConfig, SipConfig};
use crate::{
    admission::AdmissionConfig, media::LatchPolicy, proxy::config::check_advertised, side::Side,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this daemon's pinned state (`<bpffs>/sbc/<instance>/`) and API socket.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Where the daemon keeps what a restarted daemon needs besides the pinned maps (the
    /// established calls); default `/run/sbc/<instance>`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    pub media: MediaConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The SIP proxy; without it the daemon anchors media for the control API only.
    #[serde(default)]
    pub sip: Option<SipConfig>,
    /// A fleet's shared call state (Redis); without it the node stands alone.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Rate limits, allow- and blocklists, dynamic blocks (applies to the SIP proxy).
    #[serde(default)]
    pub admission: AdmissionConfig,
    #[serde(default)]
    pub drain: DrainConfig,
}

/// What SIGTERM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigtermAction {
    /// Stop at once; the kernel keeps relaying established calls and the next daemon adopts
    /// them (restarts and upgrades).
    #[default]
    Stop,
    /// Drain: refuse new calls, exit once the last call ends (scale-in).
    Drain,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// How long established calls may go on once a drain begins; then they get BYE.
    pub deadline_secs: u64,
    pub on_sigterm: SigtermAction,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            // Long calls are rare past two hours; a scale-in should not wait much longer.
            deadline_secs: 7200,
            on_sigterm: SigtermAction::Stop,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    /// Media relayed in the kernel (XDP), with the userspace relay for what comes up.
    Xdp,
    /// No XDP at all: every packet relayed by the daemon.
    Userspace,
}

impl DataplaneMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Userspace => "userspace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// In the driver (fast path proper).
    Native,
    /// In the generic network stack, for drivers without XDP support.
    Generic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    pub mode: DataplaneMode,
    pub xdp_mode: XdpAttachMode,
    /// Interfaces the XDP program is attached to (where media arrives and leaves).
    pub interfaces: Vec<String>,
    /// Where bpffs is (or gets) mounted.
    pub bpffs: PathBuf,
    /// `bpf_fib_lookup` only answers for interfaces with forwarding on: turn it on for the
    /// XDP interfaces at start (IPv4, and IPv6 when a media address is IPv6; an interface that
    /// took router advertisements keeps taking them). When false, the daemon refuses to start
    /// if it is off.
    pub enable_forwarding: bool,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            mode: DataplaneMode::Xdp,
            xdp_mode: XdpAttachMode::Native,
            interfaces: Vec::new(),
            bpffs: PathBuf::from("/sys/fs/bpf"),
            enable_forwarding: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Local address for legs on the public side (carriers, trunks).
    pub public_address: IpAddr,
    /// Local address for legs on the private side (backends); defaults to the public one.
    #[serde(default)]
    pub private_address: Option<IpAddr>,
    /// The address the public side's parties send media to, when that is not
    /// `public_address` (a 1:1 NAT in front of the edge): written in SDP (`c=`, `o=`,
    /// `a=rtcp`), while the relay binds and the XDP flows match `public_address`. Defaults to
    /// `sip.public_advertise`.
    #[serde(default)]
    pub public_advertise: Option<IpAddr>,
    /// The same on the private side; defaults to `sip.private_advertise`.
    #[serde(default)]
    pub private_advertise: Option<IpAddr>,
    /// First port of the relay range (inclusive).
    pub port_min: u16,
    /// Last port of the relay range (inclusive).
    pub port_max: u16,
    /// A session with no media in either direction for this long is ended.
    #[serde(default = "default_media_timeout")]
    pub timeout_secs: u64,
    /// Refuse new sessions beyond this many (0 = only the port range limits).
    #[serde(default)]
    pub max_sessions: usize,
    #[serde(default)]
    pub no_audio: NoAudioConfig,
    #[serde(default)]
    pub latching: LatchingConfig,
}

/// Who may latch a media leg (see `media::latching`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatchingConfig {
    /// `strict` (the SDP's address and port only), `nat-aware` (also the SDP's address with
    /// another port, or the address the SIP came from) or `any` (the first source: labs only).
    pub policy: LatchPolicy,
    /// After a leg's first latch, a better-matching source may replace it for this long.
    pub learning_ms: u64,
}

impl Default for LatchingConfig {
    fn default() -> Self {
        Self {
            policy: LatchPolicy::NatAware,
            // Long enough for a NAT'd phone's first packets from an odd port to be bettered by
            // its real one, short enough that media reaches the kernel within seconds.
            learning_ms: 3000,
        }
    }
}

/// Longest learning window accepted: beyond it, media stays in userspace for no gain.
const MAX_LEARNING_MS: u64 = 30_000;

/// What to do about an answered call whose media is missing in a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoAudioAction {
    /// An event and a metric.
    #[default]
    Report,
    /// Also end the call: BYE to both sides with a Reason header.
    Hangup,
}

/// No-audio detection for answered calls (per direction).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoAudioConfig {
    pub enabled: bool,
    /// Media from each side must start this long after the answer (or after a hold ends).
    pub first_packet_secs: u64,
    /// A direction silent this long after media flowed is reported.
    pub silence_secs: u64,
    pub action: NoAudioAction,
}

impl Default for NoAudioConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Phones send within a packet time of the answer; a few seconds covers slow
            // early-media-less gateways without letting a silent caller wait long.
            first_packet_secs: 5,
            silence_secs: 10,
            action: NoAudioAction::Report,
        }
    }
}

impl MediaConfig {
    pub fn private_address(&self) -> IpAddr {
        self.private_address.unwrap_or(self.public_address)
    }
}

impl Config {
    /// The media address written in SDP for `side`: its advertised address (media's own, else
    /// SIP's), or the one the relay binds.
    pub fn media_advertised(&self, side: Side) -> IpAddr {
        let (media, sip, bound) = match side {
            Side::Public => (
                self.media.public_advertise,
                self.sip.as_ref().and_then(|sip| sip.public_advertise),
                self.media.public_address,
            ),
            Side::Private => (
                self.media.private_advertise,
                self.sip.as_ref().and_then(|sip| sip.private_advertise),
                self.media.private_address(),
            ),
        };
        media.or(sip).unwrap_or(bound)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket of the control API; default `/run/sbc/<instance>/api.sock`.
    pub socket: Option<PathBuf>,
    /// TCP listener of the same API and of `/metrics`; loopback by default.
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token that TCP clients must send (`Authorization: Bearer
    /// ...`); required when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
}

/// Where the admin API and `/metrics` listen unless configured otherwise.
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9470);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: None,
            listen: Some(DEFAULT_API_LISTEN),
            token_file: None,
        }
    }
}

impl ApiConfig {
    /// The token TCP clients must present, read from `token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "api.token_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let token = token.trim();
        if token.len() < 16 {
            return Err(ConfigError::new(
                "api.token_file",
                format!(
                    "{} holds a token shorter than 16 characters",
                    path.display()
                ),
            ));
        }
        Ok(Some(token.to_owned()))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// File that receives one JSON line per event (appended).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `sbc=debug`; RUST_LOG overrides it.
    pub level: String,
    pub format: LogFormat,
    /// At most this many log lines per second in all (a flood cannot fill the disk).
    pub max_lines_per_sec: u32,
    /// At most this many per second from any one place in the code (one noisy warning
    /// cannot crowd out the others).
    pub max_lines_per_sec_per_site: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            max_lines_per_sec: 200,
            max_lines_per_sec_per_site: 20,
        }
    }
}

fn default_instance() -> String {
    "default".into()
}

fn default_media_timeout() -> u64 {
    60
}

pub use crate::config_error::ConfigError;

impl Config {
    /// The addresses the SIP guard protects: the SIP listeners, with an unspecified address
    /// replaced by the media address of its side (what packets are actually sent to).
    pub fn guarded_listeners(&self) -> Vec<SocketAddr> {
        let Some(sip) = &self.sip else {
            return Vec::new();
        };
        let mut listeners = Vec::new();
        for (listen, address) in [
            (sip.public_listen, self.media.public_address),
            (sip.private_listen(), self.media.private_address()),
        ] {
            let listener = if listen.ip().is_unspecified() {
                SocketAddr::new(address, listen.port())
            } else {
                listen
            };
            if !listeners.contains(&listener) {
                listeners.push(listener);
            }
        }
        listeners
    }

    /// The backends' addresses (allowlisted by the SIP guard without limits).
    pub fn backend_ips(&self) -> Vec<IpAddr> {
        self.sip.as_ref().map_or_else(Vec::new, |sip| {
            sip.backends.iter().map(|b| b.address.ip()).collect()
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates a configuration, without looking at the host.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(file)", e.to_string().trim_end().to_owned()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = match e.path().to_string().as_str() {
                "." => "(top level)".to_owned(),
                path => path.to_owned(),
            };
            // toml's message carries a source excerpt; the first line of the inner error is
            // the problem itself.
            let problem = e.inner().message().trim().to_owned();
            ConfigError::new(&key, problem)
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let valid_instance = !self.instance.is_empty()
            && self.instance.len() <= 32
            && self
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_instance {
            return Err(ConfigError::new(
                "instance",
                format!(
                    "{:?} must be 1 to 32 characters of letters, digits, '-' or '_'",
                    self.instance
                ),
            ));
        }
        let media = &self.media;
        if media.port_min == 0 {
            return Err(ConfigError::new("media.port_min", "must be at least 1"));
        }
        if media.port_min >= media.port_max {
            return Err(ConfigError::new(
                "media.port_min",
                format!(
                    "must be below media.port_max ({} >= {})",
                    media.port_min, media.port_max
                ),
            ));
        }
        if media.port_max - media.port_min < 3 {
            return Err(ConfigError::new(
                "media.port_max",
                "the range must hold at least two port pairs",
            ));
        }
        if media.timeout_secs == 0 {
            return Err(ConfigError::new("media.timeout_secs", "must be at least 1"));
        }
        for (key, secs) in [
            (
                "media.no_audio.first_packet_secs",
                media.no_audio.first_packet_secs,
            ),
            ("media.no_audio.silence_secs", media.no_audio.silence_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if media.latching.learning_ms > MAX_LEARNING_MS {
            return Err(ConfigError::new(
                "media.latching.learning_ms",
                format!(
                    "must be at most {MAX_LEARNING_MS} ({} given)",
                    media.latching.learning_ms
                ),
            ));
        }
        self.admission.validate()?;
        for (key, addr) in [
            ("media.public_address", media.public_address),
            ("media.private_address", media.private_address()),
        ] {
            if addr.is_unspecified() || addr.is_multicast() {
                return Err(ConfigError::new(
                    key,
                    format!("{addr} is not a unicast address of this host"),
                ));
            }
        }
        if let Some(sip) = &self.sip {
            sip.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        for (key, advertised, bound) in [
            (
                "media.public_advertise",
                media.public_advertise,
                media.public_address,
            ),
            (
                "media.private_advertise",
                media.private_advertise,
                media.private_address(),
            ),
        ] {
            if let Some(advertised) = advertised {
                check_advertised(key, advertised, bound)?;
            }
        }
        if let Some(listen) = self.api.listen
            && !listen.ip().is_loopback()
            && self.api.token_file.is_none()
        {
            return Err(ConfigError::new(
                "api.token_file",
                format!(
                    "must be set: api.listen ({listen}) is not a loopback address, and the admin API ends calls"
                ),
            ));
        }
        if self.log.max_lines_per_sec == 0 || self.log.max_lines_per_sec_per_site == 0 {
            return Err(ConfigError::new(
                "log.max_lines_per_sec",
                "must be at least 1 (and so must log.max_lines_per_sec_per_site)",
            ));
        }
        if self.drain.deadline_secs == 0 {
            return Err(ConfigError::new(
                "drain.deadline_secs",
                "must be at least 1",
            ));
        }
        if self.dataplane.mode == DataplaneMode::Xdp && self.dataplane.interfaces.is_empty() {
            return Err(ConfigError::new(
                "dataplane.interfaces",
                "lists no interface; name where media arrives, or set dataplane.mode = \"userspace\"",
            ));
        }
        Ok(())
    }

    /// Checks the configuration against this host: interfaces exist and addresses are local.
    pub fn check_environment(&self) -> Result<(), ConfigError> {
        self.check_interfaces()?;
        self.check_addresses()
    }

    /// What `sbc run` and `sbc check-config` check on this host: everything, but a fleet
    /// node's floating addresses, which are looked at when the node takes their group.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        if self.floating() {
            self.check_interfaces()
        } else {
            self.check_environment()
        }
    }

    /// Whether this node's addresses float (`[[cluster.groups]]`): they are checked when the
    /// node takes a group, not at start.
    pub fn floating(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.groups.is_empty())
    }

    /// This configuration with `group`'s addresses in place of the node's own.
    pub fn for_group(&self, group: &crate::cluster::Group) -> Config {
        let mut config = self.clone();
        if !group.floating {
            return config;
        }
        config.media.public_address = group.public;
        config.media.private_address = Some(group.private);
        if let Some(sip) = config.sip.as_mut() {
            let port = sip.public_listen.port();
            sip.public_listen.set_ip(group.public);
            let private_port = sip.private_listen.map_or(port, |listen| listen.port());
            sip.private_listen = Some(SocketAddr::new(group.private, private_port));
            if let Some(tls) = sip.tls.as_mut() {
                tls.listen.set_ip(group.public);
            }
        }
        config
    }

    /// The API token and the XDP interfaces.
    pub fn check_interfaces(&self) -> Result<(), ConfigError> {
        self.api.token()?;
        if self.dataplane.mode == DataplaneMode::Xdp {
            for name in &self.dataplane.interfaces {
                if interface_index(name).is_none() {
                    return Err(ConfigError::new(
                        "dataplane.interfaces",
                        format!("interface {name:?} does not exist"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The media and SIP addresses are this host's.
    pub fn check_addresses(&self) -> Result<(), ConfigError> {
        let mut local = vec![
            ("media.public_address", self.media.public_address),
            ("media.private_address", self.media.private_address()),
        ];
        if let Some(sip) = &self.sip {
            local.push(("sip.public_listen", sip.public_listen.ip()));
            local.push(("sip.private_listen", sip.private_listen().ip()));
        }
        for (key, addr) in local {
            if let Err(e) = UdpSocket::bind(SocketAddr::new(addr, 0)) {
                return Err(ConfigError::new(
                    key,
                    format!("cannot bind to {addr} ({e}); is it assigned to an interface?"),
                ));
            }
        }
        Ok(())
    }

    /// The journal of established calls (see `proxy::journal`).
    pub fn call_state_file(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&self.instance))
            .join(CALL_STATE_FILE)
    }

    /// The file keepalived tracks for this node (`cluster.fault_file`).
    pub fn fault_file(&self) -> Option<PathBuf> {
        let cluster = self.cluster.as_ref()?;
        Some(cluster.fault_file.clone().unwrap_or_else(|| {
            self.state_dir
                .clone()
                .unwrap_or_else(|| default_state_dir(&self.instance))
                .join("vrrp-fault")
        }))
    }

    pub fn api_socket(&self) -> PathBuf {
        self.api
            .socket
            .clone()
            .unwrap_or_else(|| default_api_socket(&self.instance))
    }
}

/// Where an instance keeps its runtime state unless configured otherwise: on tmpfs, like the
/// pinned maps it goes with.
pub fn default_state_dir(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/sbc/{instance}"))
}

/// The journal of established calls, in the state directory.
pub const CALL_STATE_FILE: &str = "calls.jsonl";

pub fn default_api_socket(instance: &str) -> PathBuf {
    default_state_dir(instance).join("api.sock")
}

/// The ifindex of a network interface in this network namespace.
pub fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configs_are_valid() {
        for name in ["lab.toml", "production.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            Config::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn the_api_off_loopback_needs_a_token() {
        let text = format!("{GOOD}\n[api]\nlisten = \"0.0.0.0:9470\"\n");
        let error = Config::parse(&text).unwrap_err();
        assert_eq!(error.key, "api.token_file", "{error}");
    }

    const GOOD: &str = r#"
        instance = "lab"
        [dataplane]
        interfaces = ["pub0", "priv0"]
        [media]
        public_address = "198.18.1.1"
        private_address = "198.18.2.1"
        port_min = 20000
        port_max = 20999
    "#;

    fn key_of(text: &str) -> String {
        Config::parse(text).unwrap_err().key
    }

    #[test]
    fn good_config_gets_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.mode, DataplaneMode::Xdp);
        assert_eq!(c.dataplane.xdp_mode, XdpAttachMode::Native);
        assert_eq!(c.media.timeout_secs, 60);
        assert_eq!(c.api_socket(), PathBuf::from("/run/sbc/lab/api.sock"));
    }

    /// Behind a 1:1 NAT: media advertises what SIP does unless told otherwise, and an address
    /// no party can send to, or of the other family, is refused with its key.
    #[test]
    fn advertised_addresses() {
        let sip = |extra: &str| {
            format!(
                "{GOOD}\n[sip]\npublic_listen = \"198.18.1.1:5060\"\n{extra}\n\
                 [[sip.backends]]\naddress = \"198.18.2.10:5060\"\n"
            )
        };
        let behind = Config::parse(&sip("public_advertise = \"203.0.113.10\"")).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(behind.media_advertised(Side::Public), ip("203.0.113.10"));
        assert_eq!(behind.media_advertised(Side::Private), ip("198.18.2.1"));
        let own = GOOD.replace(
            "port_min = 20000",
            "public_advertise = \"203.0.113.11\"\nport_min = 20000",
        );
        let media_own = Config::parse(&format!(
            "{own}\n[sip]\npublic_listen = \"198.18.1.1:5060\"\npublic_advertise = \"203.0.113.10\"\n\
             [[sip.backends]]\naddress = \"198.18.2.10:5060\"\n"
        ))
        .unwrap();
        assert_eq!(media_own.media_advertised(Side::Public), ip("203.0.113.11"));
        assert_eq!(
            key_of(&sip("public_advertise = \"2001:db8::10\"")),
            "sip.public_advertise"
        );
        assert_eq!(
            key_of(&sip("private_advertise = \"0.0.0.0\"")),
            "sip.private_advertise"
        );
        assert_eq!(
            key_of(&GOOD.replace(
                "port_min = 20000",
                "private_advertise = \"127.0.0.1\"\nport_min = 20000"
            )),
            "media.private_advertise"
        );
    }

    /// A backend over TLS must say which name its certificate is for.
    #[test]
    fn a_tls_backend_names_its_server() {
        let backend = |extra: &str| {
            format!(
                "{GOOD}\n[sip]\npublic_listen = \"198.18.1.1:5060\"\n\
                 [[sip.backends]]\naddress = \"198.18.2.10:5061\"\ntransport = \"tls\"\n{extra}"
            )
        };
        assert_eq!(key_of(&backend("")), "sip.backends[0].server_name");
        assert!(Config::parse(&backend("server_name = \"pbx.example.com\"\n")).is_ok());
    }

    /// The public address read from a command or a file, at start: one source only, and
    /// what it gives is held to what a written one is.
    #[test]
    fn advertised_address_read_from_its_source() {
        let sip = |extra: &str| {
            format!(
                "{GOOD}\n[sip]\npublic_listen = \"198.18.1.1:5060\"\n{extra}\n\
                 [[sip.backends]]\naddress = \"198.18.2.10:5060\"\n"
            )
        };
        assert_eq!(
            key_of(&sip(
                "public_advertise = \"203.0.113.10\"\npublic_advertise_file = \"/run/ip\""
            )),
            "sip.public_advertise_file"
        );
        let detected = |source: &str| {
            let mut config = Config::parse(&sip(source)).unwrap();
            config.sip.as_mut().unwrap().detect_advertised()?;
            let address = config.sip.as_ref().unwrap().public_advertise;
            Ok::<_, ConfigError>((address, config.media_advertised(Side::Public)))
        };
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let (sip_address, media_address) =
            detected("public_advertise_command = \"echo 203.0.113.20\"").unwrap();
        assert_eq!(
            (sip_address, Some(media_address)),
            (ip("203.0.113.20"), ip("203.0.113.20"))
        );
        let error = detected("public_advertise_command = \"echo 2001:db8::1\"").unwrap_err();
        assert_eq!(error.key, "sip.public_advertise_command", "{error}");
        let error = detected("public_advertise_file = \"/nonexistent/sbc-ip\"").unwrap_err();
        assert_eq!(error.key, "sip.public_advertise_file", "{error}");
    }

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let err = Config::parse(&GOOD.replace("port_max = 20999", "port_max = 20999\nbogus = 1"))
            .unwrap_err();
        assert_eq!(err.key, "media.bogus", "{err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert_eq!(key_of(&format!("colour = 1\n{GOOD}")), "colour");
    }

    #[test]
    fn cluster_problems_name_their_key() {
        let cluster = |body: &str| format!("{GOOD}\n[cluster]\n{body}");
        assert!(Config::parse(&cluster("redis = \"redis://10.0.0.20:6379\"\n")).is_ok());
        assert_eq!(key_of(&cluster("redis = \"not a url\"\n")), "cluster.redis");
        assert_eq!(
            key_of(&cluster("redis = \"redis://r\"\nttl_secs = 1\n")),
            "cluster.ttl_secs"
        );
        assert_eq!(
            key_of(&cluster("redis = \"redis://r\"\nnode = \"a:b\"\n")),
            "cluster.node"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            key_of(&GOOD.replace("port_min = 20000", "port_min = 30000")),
            "media.port_min"
        );
        assert_eq!(
            key_of(&GOOD.replace("port_min = 20000", "port_min = 70000")),
            "media.port_min"
        );
        assert_eq!(
            key_of(&GOOD.replace("198.18.1.1", "not-an-ip")),
            "media.public_address"
        );
        assert_eq!(
            key_of(&GOOD.replace(r#"["pub0", "priv0"]"#, "[]")),
            "dataplane.interfaces"
        );
        assert_eq!(key_of(&GOOD.replace("\"lab\"", "\"a/b\"")), "instance");
        assert_eq!(
            key_of(&GOOD.replace("[dataplane]", "[dataplane]\nmode = \"dpdk\"")),
            "dataplane.mode"
        );
    }

    #[test]
    fn admission_problems_name_their_key() {
        let with = |admission: &str| format!("{GOOD}\n[admission]\n{admission}");
        let c = Config::parse(&with("allowlist = [\"192.0.2.0/24\"]")).unwrap();
        assert_eq!(c.admission.allowlist.len(), 1);
        assert_eq!(c.admission.source.invites_per_sec, 20);
        assert_eq!(
            key_of(&with("blocklist = [\"10.0.0.0/33\"]")),
            "admission.blocklist[0]"
        );
        assert_eq!(
            key_of(&with("source = { packet_burst = 0 }")),
            "admission.source.packet_burst"
        );
        assert_eq!(
            key_of(&with("invites_per_sec = 50")),
            "admission.invite_burst"
        );
        assert_eq!(
            key_of(&with("scanner_user_agents = [\"sipvicious\", \" \"]")),
            "admission.scanner_user_agents[1]"
        );
        assert_eq!(key_of(&with("block_secs = 0")), "admission.block_secs");
        assert_eq!(
            key_of(&with("shed_queue_depth = 100000")),
            "admission.shed_queue_depth"
        );
        assert_eq!(key_of(&with("rate = 5")), "admission.rate");
    }

    #[test]
    fn missing_interface_is_named() {
        let c = Config::parse(&GOOD.replace("pub0", "sbc-no-such-if0")).unwrap();
        let err = c.check_environment().unwrap_err();
        assert_eq!(err.key, "dataplane.interfaces");
        assert!(err.problem.contains("sbc-no-such-if0"), "{err}");
    }
}
