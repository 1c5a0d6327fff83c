//! Backends named by host, found as RFC 3263 says a SIP client finds a server: NAPTR records
//! choose the SRV name for the transport (else `_sip._udp.<host>` and its kin), SRV records
//! give targets with priorities and weights, A/AAAA records their addresses; without SRV, the
//! host's own addresses at the transport's default port; with a port given, only the host's
//! addresses. Every answer comes with how long it may be used (its records' shortest TTL).
//!
//! The lookups are Hickory DNS's (`hickory-resolver`), which also caches answers for their TTL.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::{
        rr::{RData, RecordType},
        xfer::Protocol,
    },
};
use serde::Deserialize;
use tracing::warn;

use super::config::{BackendHostConfig, BackendTransport};

/// `[sip.dns]`: where names are looked up, and how long answers are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// The DNS servers to ask (UDP, TCP for long answers); none: the system's
    /// (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// An answer is used at most this long, whatever its TTL, and at least one second.
    pub max_ttl_secs: u64,
    /// After a failed lookup the last answer stays in use and the lookup is tried again this
    /// soon (a DNS server that is away does not take the backends with it).
    pub retry_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            max_ttl_secs: 3600,
            retry_secs: 5,
        }
    }
}

/// One place a backend named by host is reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    /// SRV priority: lower first; targets of a higher one only when none of the lowest can
    /// take the call.
    pub priority: u16,
    /// SRV weight within a priority.
    pub weight: u16,
}

/// A host's targets, and until when they may be used.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub targets: Vec<Target>,
    pub valid_until: Instant,
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    pub fn new(config: &DnsConfig) -> anyhow::Result<Self> {
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio().context("reading the system's DNS configuration")?
        } else {
            let mut servers = ResolverConfig::new();
            for &server in &config.servers {
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    servers.add_name_server(NameServerConfig::new(server, protocol));
                }
            }
            TokioResolver::builder_with_config(servers, TokioConnectionProvider::default())
        };
        let mut options = ResolverOpts::default();
        options.positive_max_ttl = Some(Duration::from_secs(config.max_ttl_secs.max(1)));
        // A name that does not exist yet (a backend being provisioned) is asked again soon.
        options.negative_max_ttl = Some(Duration::from_secs(config.retry_secs.max(1)));
        *builder.options_mut() = options;
        Ok(Self {
            inner: builder.build(),
        })
    }

    /// The targets of `host` (RFC 3263 4): with `port`, its addresses; else those its NAPTR
    /// and SRV records name for `transport`; else its addresses at the default port.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: BackendTransport,
    ) -> anyhow::Result<Resolution> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let address = SocketAddr::new(ip, port.unwrap_or(default_port(transport)));
            return Ok(Resolution {
                targets: vec![Target {
                    address,
                    priority: 0,
                    weight: 1,
                }],
                valid_until: Instant::now() + Duration::from_secs(86_400),
            });
        }
        if let Some(port) = port {
            return self.addresses(host, port, 0, 1).await;
        }
        let mut valid_until = None;
        let srv_name = match self.inner.lookup(host, RecordType::NAPTR).await {
            Ok(naptr) => {
                valid_until = Some(naptr.valid_until());
                let offers: Vec<Naptr> = naptr
                    .iter()
                    .filter_map(|record| match record {
                        RData::NAPTR(naptr) => Some(Naptr {
                            order: naptr.order(),
                            preference: naptr.preference(),
                            flags: String::from_utf8_lossy(naptr.flags()).into_owned(),
                            service: String::from_utf8_lossy(naptr.services()).into_owned(),
                            replacement: naptr.replacement().to_utf8(),
                        }),
                        _ => None,
                    })
                    .collect();
                srv_name_of_naptr(&offers, transport)
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => None,
            Err(e) => return Err(e).with_context(|| format!("NAPTR of {host}")),
        }
        .unwrap_or_else(|| format!("{}.{host}", srv_prefix(transport)));

        let srv = match self.inner.srv_lookup(srv_name.as_str()).await {
            Ok(srv) => srv,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                // No SRV: the host itself, at the transport's default port (RFC 3263 4.2).
                return self.addresses(host, default_port(transport), 0, 1).await;
            }
            Err(e) => return Err(e).with_context(|| format!("SRV of {srv_name}")),
        };
        let mut resolution = Resolution {
            targets: Vec::new(),
            valid_until: earliest(valid_until, srv.as_lookup().valid_until()),
        };
        for record in srv.iter() {
            let target = record.target().to_utf8();
            // "." says the service is not offered there (RFC 2782).
            if target == "." {
                continue;
            }
            let found = self
                .addresses(&target, record.port(), record.priority(), record.weight())
                .await
                .with_context(|| format!("{srv_name} names {target}"))?;
            resolution.targets.extend(found.targets);
            resolution.valid_until = resolution.valid_until.min(found.valid_until);
        }
        if resolution.targets.is_empty() {
            bail!("{srv_name} names no address");
        }
        Ok(resolution)
    }

    /// The A and AAAA addresses of `host`, each a target at `port`.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        priority: u16,
        weight: u16,
    ) -> anyhow::Result<Resolution> {
        let ips = self
            .inner
            .lookup_ip(host)
            .await
            .with_context(|| format!("the addresses of {host}"))?;
        let targets: Vec<Target> = ips
            .iter()
            .map(|ip| Target {
                address: SocketAddr::new(ip, port),
                priority,
                weight,
            })
            .collect();
        if targets.is_empty() {
            bail!("{host} has no address");
        }
        Ok(Resolution {
            targets,
            valid_until: ips.valid_until(),
        })
    }
}

/// A name to keep resolved, and how it is reached.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub host: String,
    pub port: Option<u16>,
    pub transport: BackendTransport,
}

impl Lookup {
    pub fn of(entry: &BackendHostConfig) -> Self {
        Self {
            host: entry.host.clone(),
            port: entry.port,
            transport: entry.transport,
        }
    }
}

/// Keeps `lookup`'s targets current for as long as `found` takes them (it returns false once
/// the proxy is gone): looked up at once, then again when the answer's TTL runs out (at least
/// a second, at most `max_ttl_secs`); a failed lookup leaves the last answer in use and is
/// tried again after `retry_secs`.
pub async fn keep_resolved(
    resolver: std::sync::Arc<Resolver>,
    lookup: Lookup,
    dns: DnsConfig,
    mut found: impl FnMut(Vec<Target>) -> bool,
) {
    let (shortest, longest) = (
        Duration::from_secs(1),
        Duration::from_secs(dns.max_ttl_secs.max(1)),
    );
    loop {
        let wait = match resolver
            .resolve(&lookup.host, lookup.port, lookup.transport)
            .await
        {
            Ok(resolution) => {
                if !found(resolution.targets) {
                    return;
                }
                let left = resolution
                    .valid_until
                    .saturating_duration_since(Instant::now());
                left.clamp(shortest, longest)
            }
            Err(e) => {
                let host = &lookup.host;
                warn!(%host, "looking up a host failed, its last answer stays in use: {e:#}");
                Duration::from_secs(dns.retry_secs.max(1))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What a lookup was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Named {
    /// `[[sip.backend_hosts]]` entry `n`.
    BackendHost(usize),
    /// `sip.trunk_host`.
    Trunk,
}

/// The order to try `targets` in for one request (RFC 2782): lowest priority first; within a
/// priority, drawn by weight (a target of weight 0 only after those with weight). `seed`
/// makes the draw (a request's Call-ID hash: its retransmissions and failovers agree).
pub fn try_order(targets: &[Target], seed: u64) -> Vec<SocketAddr> {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64: spread enough for a weighted draw, and reproducible.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut left: Vec<Target> = targets.to_vec();
    left.sort_by_key(|t| t.priority);
    let mut order = Vec::with_capacity(left.len());
    while let Some(priority) = left.first().map(|t| t.priority) {
        let tier = left.iter().take_while(|t| t.priority == priority).count();
        let total: u64 = left[..tier].iter().map(|t| u64::from(t.weight)).sum();
        let chosen = if total == 0 {
            0
        } else {
            let mut point = next() % total;
            left[..tier]
                .iter()
                .position(|t| {
                    let weight = u64::from(t.weight);
                    let here = point < weight;
                    point = point.saturating_sub(weight);
                    here
                })
                .unwrap_or(0)
        };
        order.push(left.remove(chosen).address);
    }
    order
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

/// What a NAPTR record offers (RFC 3403), as read.
#[derive(Debug, Clone)]
struct Naptr {
    order: u16,
    preference: u16,
    flags: String,
    service: String,
    replacement: String,
}

/// The NAPTR service that names a transport (RFC 3263 4.1).
fn naptr_service(transport: BackendTransport) -> &'static str {
    match transport {
        BackendTransport::Udp => "SIP+D2U",
        BackendTransport::Tcp => "SIP+D2T",
        BackendTransport::Tls => "SIPS+D2T",
    }
}

/// The SRV name of a transport at `host` when no NAPTR names one (RFC 3263 4.1).
fn srv_prefix(transport: BackendTransport) -> &'static str {
    match transport {
        BackendTransport::Udp => "_sip._udp",
        BackendTransport::Tcp => "_sip._tcp",
        BackendTransport::Tls => "_sips._tcp",
    }
}

fn default_port(transport: BackendTransport) -> u16 {
    match transport {
        BackendTransport::Tls => 5061,
        _ => 5060,
    }
}

/// The SRV name the NAPTR records give for `transport`: the first in order, then preference,
/// of the records with the "s" flag (an SRV name follows) that offer its service.
fn srv_name_of_naptr(offers: &[Naptr], transport: BackendTransport) -> Option<String> {
    let service = naptr_service(transport);
    offers
        .iter()
        .filter(|offer| {
            offer.flags.eq_ignore_ascii_case("s") && offer.service.eq_ignore_ascii_case(service)
        })
        .min_by_key(|offer| (offer.order, offer.preference))
        .map(|offer| offer.replacement.trim_end_matches('.').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(order: u16, preference: u16, flags: &str, service: &str, to: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: flags.into(),
            service: service.into(),
            replacement: to.into(),
        }
    }

    #[test]
    fn naptr_picks_the_transport_s_service_by_order_then_preference() {
        let offers = [
            offer(20, 10, "s", "SIP+D2U", "_sip._udp.late.example."),
            offer(10, 20, "S", "SIP+D2U", "_sip._udp.second.example."),
            offer(10, 10, "s", "SIP+D2T", "_sip._tcp.example."),
            offer(10, 15, "s", "sip+d2u", "_sip._udp.first.example."),
            offer(1, 1, "a", "SIP+D2U", "not-an-srv.example."),
        ];
        assert_eq!(
            srv_name_of_naptr(&offers, BackendTransport::Udp).as_deref(),
            Some("_sip._udp.first.example")
        );
        assert_eq!(
            srv_name_of_naptr(&offers, BackendTransport::Tcp).as_deref(),
            Some("_sip._tcp.example")
        );
        assert_eq!(srv_name_of_naptr(&offers, BackendTransport::Tls), None);
    }

    #[test]
    fn targets_are_tried_by_priority_then_drawn_by_weight() {
        let target = |last: u8, priority, weight| Target {
            address: SocketAddr::from(([10, 0, 0, last], 5060)),
            priority,
            weight,
        };
        let targets = [
            target(1, 10, 3),
            target(2, 10, 1),
            target(3, 5, 0),
            target(4, 20, 100),
        ];
        let mut firsts = [0u32; 2];
        for seed in 0..4000u64 {
            let order = try_order(&targets, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert_eq!(order.len(), 4);
            assert_eq!(order[0], targets[2].address, "the lowest priority first");
            assert_eq!(order[3], targets[3].address, "the highest last");
            firsts[usize::from(order[1] == targets[1].address)] += 1;
        }
        let share = f64::from(firsts[0]) / 4000.0;
        assert!((0.7..0.8).contains(&share), "weight 3 of 4 drawn {share}");
        assert_eq!(try_order(&targets, 7), try_order(&targets, 7));
    }

    #[test]
    fn without_naptr_the_transport_names_the_srv_and_the_port() {
        assert_eq!(srv_prefix(BackendTransport::Udp), "_sip._udp");
        assert_eq!(srv_prefix(BackendTransport::Tls), "_sips._tcp");
        assert_eq!(default_port(BackendTransport::Tcp), 5060);
        assert_eq!(default_port(BackendTransport::Tls), 5061);
    }
}
