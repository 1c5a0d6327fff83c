//! The SIP proxy: a record-routing, transaction-stateful proxy (RFC 3261 16, 17; RFC 3581)
//! between the public side (carriers, trunks) and the private side (backends), anchoring every
//! call's media in the relay.
//!
//! The protocol itself is `core`: a state machine without I/O, handed one input at a time with
//! the time (a message, a timer, a media notice) and asked for what to do (send, record,
//! schedule). One task (`driver`) owns the core, the sockets and the timers, and handles one
//! queued item at a time: nothing is shared, so nothing is locked; the media plane is the only
//! thing the core calls out to (`anchoring`).
mod arriving;
pub mod config;
pub mod core;
pub mod dns;
mod driver;
mod intake;
pub mod journal;
mod lanes;
mod shed_answer;
pub mod stats;
pub mod tcp;
pub mod tls;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use sbc_common::DialogEnd;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;
use tracing::warn;

pub use self::core::{calls::CallSummary, hiding, inspect::BackendSummary};
use self::{
    config::SipConfig,
    core::{Core, Input, KernelDialogs, Parts, inspect::Query, transactions::Transport},
    driver::Driver,
    intake::{Intake, bind, spawn_receiver},
    journal::{CallRecord, Journal},
    lanes::Lanes,
    stats::SipStats,
};
use crate::{
    admission::{AdmissionConfig, AdmissionCounters, FleetShare, SipGuard},
    clock::Now,
    cluster::ClusterHealth,
    dataplane::DialogEvents,
    drain::Drain,
    events::EventSink,
    media::{MediaPlane, SessionInfo, SilentLeg},
    side::Side,
    sip::via::Via,
};

/// What waits in the proxy task's lanes.
pub enum Queued {
    Datagram {
        listener: Side,
        from: SocketAddr,
        bytes: Vec<u8>,
        received: Instant,
    },
    /// A complete message read from a TCP or TLS connection (`Transport::Tcp` or `Tls`).
    Stream {
        listener: Side,
        from: SocketAddr,
        connection: Transport,
        bytes: Vec<u8>,
        received: Instant,
    },
    Connected {
        connection: u64,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    Disconnected {
        connection: u64,
    },
    /// Media sessions the media plane ended for lack of media, with their final counters.
    MediaTimeout(Vec<SessionInfo>),
    /// A reloaded `[admission]`.
    Reconfigure(Box<AdmissionConfig>),
    /// This node's share of the fleet's limits now.
    FleetShare(FleetShare),
    /// A side's parties are told this address from now on (it moved).
    Readvertise {
        side: Side,
        address: IpAddr,
    },
    /// From the admin API.
    Query(Query),
    /// A drain's deadline passed: end every call.
    HangUpAll,
    /// Answered calls' media legs that missed their deadline; `hang_up`: end those calls.
    NoAudio {
        silent: Vec<SilentLeg>,
        hang_up: bool,
    },
    /// DNS says what a backend host or the trunk stands for now.
    Resolved {
        of: dns::Named,
        targets: Vec<dns::Target>,
    },
    /// The kernel forwarded the final response to a call's BYE.
    EndedInKernel {
        call_id: String,
        end: DialogEnd,
    },
}

impl Queued {
    /// When a message arrived (in the kernel, for a datagram); `None` for other events.
    fn received(&self) -> Option<Instant> {
        match self {
            Queued::Datagram { received, .. } | Queued::Stream { received, .. } => Some(*received),
            _ => None,
        }
    }
}

/// A handle to the running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    lanes: Lanes,
    intake: Arc<Intake>,
    pub stats: Arc<SipStats>,
    pub admission: Arc<AdmissionCounters>,
    /// The TLS listener's certificate, reloaded on reload.
    pub tls: Option<Arc<tls::Certificates>>,
    /// How the fleet's shared state stands (`[cluster]`).
    pub cluster: Option<Arc<ClusterHealth>>,
}

impl ProxyHandle {
    pub fn reconfigure(&self, admission: AdmissionConfig) {
        self.intake.reconfigure(&admission);
        let _ = self.lanes.control(Queued::Reconfigure(Box::new(admission)));
    }

    /// This node's share of the fleet's limits (`cluster::limits`).
    pub fn fleet_share(&self, share: FleetShare) {
        let _ = self.lanes.control(Queued::FleetShare(share));
    }

    /// A side's advertised address moved (`advertise::Readvertise`).
    pub fn readvertise(&self, side: Side, address: IpAddr) {
        let _ = self.lanes.control(Queued::Readvertise { side, address });
    }

    pub fn media_timed_out(&self, sessions: Vec<SessionInfo>) {
        if !sessions.is_empty() {
            let _ = self.lanes.control(Queued::MediaTimeout(sessions));
        }
    }

    pub fn no_audio(&self, silent: Vec<SilentLeg>, hang_up: bool) {
        if !silent.is_empty() {
            let _ = self.lanes.control(Queued::NoAudio { silent, hang_up });
        }
    }

    /// Calls being set up or established.
    pub fn active_calls(&self) -> u64 {
        self.stats.calls_active.load(Ordering::Relaxed)
    }

    pub fn hang_up_all(&self) {
        let _ = self.lanes.control(Queued::HangUpAll);
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<CallSummary>> {
        self.ask(Query::Calls).await
    }

    pub async fn backends(&self) -> anyhow::Result<Vec<BackendSummary>> {
        self.ask(Query::Backends).await
    }

    /// Puts a question in the proxy task's queue and waits for its answer.
    async fn ask<T>(
        &self,
        query: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
    ) -> anyhow::Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.lanes.control(Queued::Query(query(reply)));
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the SIP proxy has stopped"))
    }
}

/// Starts a task per name to look up (each `[[sip.backend_hosts]]` entry, `sip.trunk_host`)
/// that keeps its targets current.
fn keep_names_resolved(config: &SipConfig, lanes: &Lanes) -> anyhow::Result<()> {
    let trunk = config.trunk_host.as_ref().map(|host| dns::Lookup {
        host: host.clone(),
        port: config.trunk_port,
        transport: config.trunk_transport,
    });
    let names: Vec<_> = config
        .backend_hosts
        .iter()
        .enumerate()
        .map(|(n, entry)| (dns::Named::BackendHost(n), dns::Lookup::of(entry)))
        .chain(trunk.map(|lookup| (dns::Named::Trunk, lookup)))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let resolver = Arc::new(dns::Resolver::new(&config.dns)?);
    for (of, lookup) in names {
        let lanes = lanes.clone();
        tokio::spawn(dns::keep_resolved(
            Arc::clone(&resolver),
            lookup,
            config.dns.clone(),
            move |targets| lanes.control(Queued::Resolved { of, targets }),
        ));
    }
    Ok(())
}

/// Binds the listeners and starts the proxy task.
pub async fn start(
    config: &SipConfig,
    admission: &AdmissionConfig,
    guard: Arc<SipGuard>,
    plane: Arc<MediaPlane>,
    events: Arc<EventSink>,
    drain: Arc<Drain>,
    (journal, recorded, cluster): (Journal, Vec<CallRecord>, Option<Arc<ClusterHealth>>),
) -> anyhow::Result<ProxyHandle> {
    let public = bind(config.public_listen).await?;
    let private = if config.private_listen() == config.public_listen {
        Arc::clone(&public)
    } else {
        bind(config.private_listen()).await?
    };
    let (lanes, receivers) = Lanes::new(Arc::clone(&guard));
    let stats = Arc::new(SipStats::new(config.backends.iter().map(|b| b.address)));
    let admission_counters = Arc::new(AdmissionCounters::default());
    let intake = Arc::new(Intake::new(
        admission,
        config.retry_after_secs,
        Arc::clone(&admission_counters),
    ));
    let receive = |socket: &Arc<tokio::net::UdpSocket>, side| {
        let (guard, intake) = (Arc::clone(&guard), Arc::clone(&intake));
        spawn_receiver(Arc::clone(socket), side, lanes.clone(), guard, intake);
    };
    receive(&public, Side::Public);
    if !Arc::ptr_eq(&public, &private) {
        receive(&private, Side::Private);
    }
    let connections = Arc::new(AtomicU64::new(0));
    let tcp_connections = tcp::Connections::new(config.tcp.clone(), Arc::clone(&stats));
    let mut tcp_listeners = vec![(config.public_listen, Side::Public)];
    if config.private_listen() != config.public_listen {
        tcp_listeners.push((config.private_listen(), Side::Private));
    }
    let tls = match &config.tls {
        Some(tls) => Some((tls.listen, tls::Certificates::load(tls)?)),
        None => None,
    };
    let tcp_listeners = tcp_listeners
        .into_iter()
        .map(|(address, side)| (address, side, None));
    let tls_listener = tls
        .iter()
        .map(|(address, certificates)| (*address, Side::Public, Some(Arc::clone(certificates))));
    for (address, side, certificates) in tcp_listeners.chain(tls_listener) {
        let queues = (lanes.clone(), Arc::clone(&intake));
        let (numbers, limits) = (Arc::clone(&connections), Arc::clone(&tcp_connections));
        tcp::listen(address, side, certificates, queues, numbers, limits).await?;
    }
    let now = Now::read();
    let parts = Parts {
        media: Box::new(plane),
        kernel: Arc::clone(&guard) as Arc<dyn KernelDialogs>,
        stats: Arc::clone(&stats),
        admission_counters: Arc::clone(&admission_counters),
        drain,
        token: format!("{:x}", now.unix_ms ^ u64::from(std::process::id())),
    };
    let mut core = Core::new(config, admission, parts, now);
    // Before any call is taken over: its dialog's forwarding needs our addresses.
    guard
        .set_sip_selves(&core.sip_selves())
        .map_err(|e| e.context("writing our SIP addresses to the kernel"))?;
    core.start(now, recorded);
    keep_names_resolved(config, &lanes)?;
    let mut local = [config.public_listen.ip(); 2];
    local[usize::from(Side::Private.index())] = config.private_listen().ip();
    let mut tls_peers = HashMap::new();
    for (index, backend) in config.backends.iter().enumerate() {
        if backend.transport == config::BackendTransport::Tls {
            let peer = tls::TlsPeer::for_backend(backend, index)?;
            tls_peers.insert(backend.address, Arc::new(peer));
        }
    }
    if let (Some(trunk), config::BackendTransport::Tls) = (config.trunk, config.trunk_transport) {
        tls_peers.insert(trunk, Arc::new(tls::TlsPeer::for_trunk(config)?));
    }
    let mut named_tls = HashMap::new();
    for (index, entry) in config.backend_hosts.iter().enumerate() {
        if entry.transport == config::BackendTransport::Tls {
            let peer = tls::TlsPeer::for_backend_host(entry, index)?;
            named_tls.insert(dns::Named::BackendHost(index), Arc::new(peer));
        }
    }
    if config.trunk_host.is_some() && config.trunk_transport == config::BackendTransport::Tls {
        named_tls.insert(
            dns::Named::Trunk,
            Arc::new(tls::TlsPeer::for_trunk(config)?),
        );
    }
    let outbound = tcp::Outbound::new(tcp::Dialer {
        lanes: lanes.clone(),
        intake: Arc::clone(&intake),
        numbers: Arc::clone(&connections),
        limits: config.tcp.clone(),
        stats: Arc::clone(&stats),
        local,
        tls: std::sync::RwLock::new(tls_peers),
        named_tls,
    });
    let mut driver = Driver {
        core,
        public,
        private,
        connections: HashMap::new(),
        outbound,
        timers: DelayQueue::new(),
        events,
        journal,
        guard: Arc::clone(&guard),
        intake: Arc::clone(&intake),
        stats: Arc::clone(&stats),
    };
    driver.perform();
    // Calls whose BYE went through the kernel while no daemon watched ended then.
    for (call_id, end) in guard.ended_in_kernel() {
        let now = Now::read();
        driver.handle_at(now, ended_in_kernel(call_id, &end, &now));
    }
    if let Some(dialog_ends) = guard.take_dialog_ends() {
        tokio::spawn(watch_dialog_ends(
            dialog_ends,
            Arc::clone(&guard),
            lanes.clone(),
        ));
    }
    tokio::spawn(driver.run(receivers));
    Ok(ProxyHandle {
        lanes,
        intake,
        stats,
        admission: admission_counters,
        tls: tls.map(|(_, certificates)| certificates),
        cluster,
    })
}

/// The calls the kernel saw end, as it reports them, handed to the core.
async fn watch_dialog_ends(mut ends: DialogEvents, guard: Arc<SipGuard>, lanes: Lanes) {
    loop {
        match ends.next().await {
            Ok(ended) => {
                for end in ended {
                    // A dialog the daemon no longer holds ended here already.
                    let Some(call_id) = guard.call_id_of(end.dialog) else {
                        continue;
                    };
                    let _ = lanes.control(Queued::EndedInKernel {
                        call_id,
                        end: end.end,
                    });
                }
            }
            Err(e) => {
                warn!("no longer reading the kernel's dialog ends: {e:#}");
                return;
            }
        }
    }
}

/// The core's input for a call whose end the kernel recorded (its times CLOCK_MONOTONIC).
fn ended_in_kernel(call_id: String, end: &DialogEnd, now: &Now) -> Input {
    Input::EndedInKernel {
        call_id,
        code: end.code,
        at: kernel_instant(end.at_ns, now),
        disconnect_delay: (end.bye_ns != 0 && end.bye_ns <= end.at_ns)
            .then(|| std::time::Duration::from_nanos(end.at_ns - end.bye_ns)),
    }
}

/// The instant of a CLOCK_MONOTONIC time the kernel took (at most `now`).
fn kernel_instant(at_ns: u64, now: &Now) -> std::time::Instant {
    let ago = std::time::Duration::from_nanos(now.monotonic_ns.saturating_sub(at_ns));
    now.at.checked_sub(ago).unwrap_or(now.at)
}

/// Where a response goes for a Via (RFC 3261 18.2.2 with RFC 3581): `received` and `rport`
/// when the hop set them, else the sent-by.
fn via_destination(via: &Via) -> Option<SocketAddr> {
    let host = via
        .param("received")
        .and_then(|p| p.value.as_deref())
        .and_then(|r| r.trim_matches(['[', ']']).parse().ok())
        .or_else(|| via.host.ip())?;
    let port = via
        .param("rport")
        .and_then(|p| p.value.as_deref())
        .and_then(|p| p.parse().ok())
        .or(via.port)
        .unwrap_or(5060);
    Some(SocketAddr::new(host, port))
}
