//! `sbc run`: start the dataplane, adopt pinned state, serve the API until told to stop.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    admission::{
        AdmissionControl, SipGuard,
        control::{Reconfigure, Reread},
    },
    advertise::Readvertise,
    api::server::{self, ApiState},
    config::{Config, DataplaneMode, NoAudioAction, NoAudioConfig, SigtermAction},
    dataplane::{
        DialogEvents, FlowMaps, GuardMaps, PinLayout, ReasonCounters, maps::FlowStatsReader, pins,
        xdp,
    },
    drain::Drain,
    events::EventSink,
    fleet,
    media::{AudioDeadlines, EndReason, MediaPlane, MediaSettings},
    proxy::{self, ProxyHandle, journal::Journal},
    reload::Reload,
    side::Side,
};

pub struct RunOptions {
    /// Start from nothing: drop whatever a previous daemon pinned.
    pub clean: bool,
    /// The file the configuration came from, read again on reload.
    pub config_path: Option<std::path::PathBuf>,
}

pub fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    // A config problem names its file, as `sbc check-config` does.
    let in_file = |e: crate::config::ConfigError| match &options.config_path {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => anyhow::Error::new(e),
    };
    config.validate().map_err(in_file)?;
    config.check_host().map_err(in_file)?;
    let mut config = config;
    if let Some(sip) = config.sip.as_mut() {
        sip.detect_advertised().map_err(in_file)?;
    }
    raise_open_files_limit(u64::from(config.media.port_max - config.media.port_min) + 1);
    let mut clean = options.clean;
    loop {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let outcome = runtime.block_on(serve_node(&config, &options, clean));
        // Every task of the group served ends here, its sockets closed.
        runtime.shutdown_timeout(Duration::from_secs(1));
        clean = false;
        match outcome? {
            Outcome::Stopped => return Ok(()),
            Outcome::LetGo => forget_calls(&config)?,
            Outcome::HandedOver => return forget_calls(&config),
        }
    }
}

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Told to stop.
    Stopped,
    /// The node's group is no longer its own (`[cluster]`): its calls are the new owner's,
    /// and the node stands by again.
    LetGo,
    /// A drain handed the group to another node (`[cluster]`): the daemon exits.
    HandedOver,
}

/// Forgets every call: the pinned state (flows, dialogs, links) and the journal. After a
/// group is let go its calls are the new owner's, and a restart must not take them back;
/// `--clean` starts from nothing.
fn forget_calls(config: &Config) -> anyhow::Result<()> {
    PinLayout::new(&config.dataplane.bpffs, &config.instance).remove()?;
    Journal::remove(&config.call_state_file())?;
    Ok(())
}

/// Serves the node's configuration, or with `[cluster]` the group it takes after standing by.
async fn serve_node(config: &Config, options: &RunOptions, clean: bool) -> anyhow::Result<Outcome> {
    if clean {
        if config.dataplane.mode == DataplaneMode::Xdp {
            pins::ensure_bpffs(&config.dataplane.bpffs)?;
        }
        forget_calls(config)?;
        info!("--clean: removed pinned state and recorded calls");
    }
    let Some(cluster) = &config.cluster else {
        return serve(config.clone(), options, None).await;
    };
    let Some(taking) = fleet::stand_by(config, cluster).await? else {
        return Ok(Outcome::Stopped);
    };
    let config = config.for_group(&taking.group);
    config.check_addresses()?;
    serve(config, options, Some(taking)).await
}

fn media_settings(config: &Config) -> MediaSettings {
    MediaSettings {
        public_address: config.media.public_address,
        private_address: config.media.private_address(),
        public_advertised: config.media_advertised(Side::Public),
        private_advertised: config.media_advertised(Side::Private),
        port_min: config.media.port_min,
        port_max: config.media.port_max,
        timeout: std::time::Duration::from_secs(config.media.timeout_secs),
        max_sessions: config.media.max_sessions,
        latching: config.media.latching.policy,
        learning: std::time::Duration::from_millis(config.media.latching.learning_ms),
    }
}

async fn serve(
    config: Config,
    options: &RunOptions,
    taking: Option<fleet::Taking>,
) -> anyhow::Result<Outcome> {
    // First, so a second daemon for the same instance stops before touching anything.
    let socket = config.api_socket();
    let api_listener = server::bind_unix(&socket)?;
    let token = config.api.token()?;
    let layout = PinLayout::new(&config.dataplane.bpffs, &config.instance);
    let mode = config.dataplane.mode;
    let (kernel, reasons, guard) = match mode {
        DataplaneMode::Xdp => {
            pins::ensure_bpffs(&config.dataplane.bpffs)?;
            xdp::start(&config, &layout)?;
            let maps = FlowMaps::open(&layout)?;
            let stats = FlowStatsReader::open(&layout)?;
            let guard = SipGuard::kernel(GuardMaps::open(&layout)?, DialogEvents::open(&layout)?)?;
            (
                Some((maps, stats)),
                Some(ReasonCounters::open(&layout)?),
                guard,
            )
        }
        DataplaneMode::Userspace => {
            if layout.exists() {
                warn!(
                    dir = %layout.instance_dir.display(),
                    "removing this instance's pinned XDP state: the userspace dataplane does not use it"
                );
                layout.remove()?;
            }
            (None, None, SipGuard::userspace())
        }
    };
    let guard = Arc::new(guard);
    let drain = Arc::new(Drain::new(Duration::from_secs(config.drain.deadline_secs)));
    let events = Arc::new(EventSink::open(config.events.file.as_deref())?);
    let plane = MediaPlane::new(media_settings(&config), kernel, Arc::clone(&events));
    // The calls (and with `[cluster]` the group's) are the SIP proxy's: without it there are
    // none to record or take over.
    let (proxy, mirror) = match &config.sip {
        Some(sip) => {
            let (mut journal, mut recorded) = Journal::open(&config.call_state_file())?;
            let mirror = taking
                .as_ref()
                .zip(config.cluster.as_ref())
                .map(|(taking, cluster)| {
                    fleet::take_over(
                        taking,
                        cluster,
                        &plane,
                        &events,
                        (&mut journal, &mut recorded),
                    )
                });
            let health = mirror.as_ref().map(|m| Arc::clone(&m.health));
            let proxy = proxy::start(
                sip,
                &config.admission,
                Arc::clone(&guard),
                Arc::clone(&plane),
                Arc::clone(&events),
                Arc::clone(&drain),
                (journal, recorded, health),
            )
            .await?;
            (Some(proxy), mirror)
        }
        None => (None, None),
    };
    if let (Some(taking), Some(cluster), Some(proxy)) = (&taking, &config.cluster, &proxy)
        && cluster.limits.any()
    {
        tokio::spawn(crate::cluster::limits::keep_shared(
            taking.client.clone(),
            taking.node.clone(),
            cluster.limits,
            cluster.groups.len(),
            proxy.clone(),
        ));
    }
    let reconfigure_proxy = proxy.clone().map(|proxy| -> Reconfigure {
        Box::new(move |admission| proxy.reconfigure(admission.clone()))
    });
    let reread = options
        .config_path
        .clone()
        .map(|path| -> Reread { Box::new(move || Ok(Config::load(&path)?.admission)) });
    let admission = Arc::new(AdmissionControl::new(
        guard,
        reconfigure_proxy,
        config.backend_ips(),
        config.guarded_listeners(),
        reread,
    ));
    admission.apply(&config.admission)?;
    let public_address = match (&config.sip, &proxy) {
        (Some(sip), Some(proxy)) => sip.advertise_source().map(|source| {
            let bound = sip.public_listen.ip();
            let current = sip.public_advertise.unwrap_or(bound);
            let media_follows = config.media.public_advertise.is_none();
            Readvertise::new(
                source,
                (bound, current),
                media_follows,
                proxy.clone(),
                Arc::clone(&plane),
            )
        }),
        _ => None,
    };
    let reload = Arc::new(Reload {
        admission: Arc::clone(&admission),
        public_address,
        tls: proxy.as_ref().and_then(|proxy| proxy.tls.clone()),
    });
    tokio::spawn(reload_on_sighup(Arc::clone(&reload)));
    tokio::spawn(crate::logging::report_suppressed());
    let reaper = tokio::spawn(watch_media(
        Arc::clone(&plane),
        proxy.clone(),
        config.media.no_audio.clone(),
    ));
    let router = server::router(Arc::new(ApiState {
        plane: Arc::clone(&plane),
        reasons,
        dataplane: mode,
        sip: proxy.as_ref().map(|p| Arc::clone(&p.stats)),
        admission_counters: proxy.as_ref().map(|p| Arc::clone(&p.admission)),
        admission,
        reload,
        proxy: proxy.clone(),
        drain: Arc::clone(&drain),
        started: std::time::Instant::now(),
    }));
    let tcp = config.api.listen.map(|address| server::TcpApi {
        address,
        token: token.clone(),
    });
    info!(
        instance = %config.instance,
        dataplane = ?mode,
        api = %socket.display(),
        sessions = plane.session_count(),
        "sbc running"
    );
    let hand_over_at = taking
        .as_ref()
        .filter(|taking| taking.group.floating)
        .zip(config.cluster.as_ref())
        .map(|(_, cluster)| cluster.drain_hand_over_at);
    let stopped = until_stopped(
        Arc::clone(&drain),
        Arc::clone(&plane),
        proxy.clone(),
        (config.drain.on_sigterm, hand_over_at),
    );
    let (outcome, ended) = tokio::sync::oneshot::channel();
    let fault_file = config.fault_file();
    let events_at_end = Arc::clone(&events);
    let ended_by = async move {
        let serving = taking.as_ref().zip(mirror.as_ref());
        let lost = async {
            match serving {
                Some((taking, mirror)) => fleet::lost(&taking.group, Some(mirror)).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            stop = stopped => match (stop, serving, &fault_file) {
                (Stop::HandOver, Some((taking, mirror)), Some(fault_file)) => {
                    fleet::hand_over(taking, mirror, fault_file, &events_at_end).await
                }
                _ => Outcome::Stopped,
            },
            why = lost => {
                if let Some((taking, mirror)) = serving {
                    fleet::let_go(taking, mirror, &events_at_end, &why).await;
                }
                Outcome::LetGo
            }
        };
        let _ = outcome.send(end);
    };
    server::serve(api_listener, tcp, router, ended_by).await?;
    let outcome = ended.await.unwrap_or(Outcome::Stopped);
    reaper.abort();
    let _ = std::fs::remove_file(&socket);
    if outcome != Outcome::Stopped {
        // The group's new owner has its calls; this node forgets them (`forget_calls`).
        return Ok(outcome);
    }
    match mode {
        DataplaneMode::Userspace => plane.end_all(EndReason::Shutdown),
        DataplaneMode::Xdp => info!(
            sessions = plane.session_count(),
            "stopping; the kernel keeps relaying latched media and the next daemon adopts it"
        ),
    }
    Ok(Outcome::Stopped)
}

/// Once a second: ends sessions without media (the proxy then ends their calls with BYE),
/// and tells the proxy about answered calls with a silent direction.
async fn watch_media(plane: Arc<MediaPlane>, proxy: Option<ProxyHandle>, no_audio: NoAudioConfig) {
    let deadlines = AudioDeadlines {
        first_packet: Duration::from_secs(no_audio.first_packet_secs),
        silence: Duration::from_secs(no_audio.silence_secs),
    };
    let hang_up = no_audio.action == NoAudioAction::Hangup;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let plane = Arc::clone(&plane);
        let audio = (no_audio.enabled && proxy.is_some()).then_some(deadlines);
        // Reading kernel counters is a syscall per flow: keep it off the async workers.
        let watched = tokio::task::spawn_blocking(move || plane.watch(audio)).await;
        if let (Ok(watched), Some(proxy)) = (watched, &proxy) {
            proxy.media_timed_out(watched.idle);
            proxy.no_audio(watched.silent, hang_up);
        }
    }
}

/// SIGHUP: reload `[admission]` from the config file, and the public address from its source.
async fn reload_on_sighup(reload: Arc<Reload>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler; reload with POST /v1/reload");
        return;
    };
    while hangup.recv().await.is_some() {
        let reload = Arc::clone(&reload);
        // Reading the file, running the command and writing the maps are blocking calls.
        match tokio::task::spawn_blocking(move || reload.reload()).await {
            Ok(Ok(reloaded)) => info!("SIGHUP: reloaded {reloaded}"),
            Ok(Err(e)) => warn!("SIGHUP: reload failed, keeping the running configuration: {e:#}"),
            Err(e) => warn!("SIGHUP: reload failed: {e}"),
        }
    }
}

/// Why the daemon stops serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// At once (a signal, a finished drain).
    Now,
    /// A drain of a node serving a floating group: its group (and the calls left) go to
    /// another node.
    HandOver,
}

/// Resolves when the daemon should stop: SIGINT; SIGTERM (at once, or after a drain when
/// `drain.on_sigterm = "drain"`, a second SIGTERM stopping at once); or a drain begun by the
/// API that has finished. `hand_over_at`: for a node serving a floating group, how few calls
/// the drain waits for before handing the group over.
async fn until_stopped(
    drain: Arc<Drain>,
    plane: Arc<MediaPlane>,
    proxy: Option<ProxyHandle>,
    (on_sigterm, hand_over_at): (SigtermAction, Option<u64>),
) -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    let drained = drained(&drain, plane, proxy, hand_over_at);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            stop = &mut drained => return stop,
            _ = int.recv() => {
                info!("SIGINT: shutting down");
                return Stop::Now;
            }
            _ = term.recv() => match on_sigterm {
                SigtermAction::Drain if !drain.is_draining() => drain.begin("SIGTERM"),
                SigtermAction::Drain => {
                    info!("second SIGTERM: shutting down now");
                    return Stop::Now;
                }
                SigtermAction::Stop => {
                    info!("SIGTERM: shutting down");
                    return Stop::Now;
                }
            },
        }
    }
}

/// How often a drain looks whether the last call has ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// After the drain deadline's BYEs, how long their transactions get before the daemon exits.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Resolves once a drain has begun and the last call has ended, or its deadline has passed
/// (the remaining calls are then hung up with BYE); pending forever otherwise. With
/// `hand_over_at` (a floating group), once at most that many calls remain, or at the
/// deadline, it asks for the group to be handed over instead: the calls go on elsewhere.
async fn drained(
    drain: &Drain,
    plane: Arc<MediaPlane>,
    proxy: Option<ProxyHandle>,
    hand_over_at: Option<u64>,
) -> Stop {
    drain.begun().await;
    loop {
        let calls = proxy.as_ref().map_or(0, ProxyHandle::active_calls);
        let sessions = plane.session_count();
        let deadline_passed = drain.remaining().is_some_and(|r| r.is_zero());
        if let Some(few) = hand_over_at
            && (calls <= few || deadline_passed)
        {
            info!(calls, "drained: handing the address group over");
            return Stop::HandOver;
        }
        if calls == 0 && sessions == 0 {
            info!("drained: the last call has ended");
            return Stop::Now;
        }
        if deadline_passed {
            warn!(
                calls,
                sessions, "drain deadline passed: hanging up the remaining calls"
            );
            if let Some(proxy) = &proxy {
                proxy.hang_up_all();
            }
            tokio::time::sleep(HANGUP_GRACE).await;
            return Stop::Now;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// One socket per relay port, on each media address: the daemon needs a descriptor per port
/// of the range twice over, plus some for everything else. The soft limit is raised to that (or
/// as far as the hard limit goes); the hard limit too, when the daemon may (CAP_SYS_RESOURCE),
/// up to the kernel's `fs.nr_open`.
fn raise_open_files_limit(media_ports: u64) {
    let wanted = media_ports * 2 + 4096;
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1 << 20);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_max < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(nr_open),
            rlim_max: wanted.min(nr_open),
        };
        // SAFETY: a valid rlimit; refused without the capability, which the fallback covers.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    limit.rlim_cur = wanted.max(limit.rlim_cur).min(limit.rlim_max);
    // SAFETY: a valid rlimit within the hard limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if limit.rlim_cur < wanted {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-files limit is below one descriptor per media port: calls will be refused (503) before the port range is used up"
        );
    }
}
