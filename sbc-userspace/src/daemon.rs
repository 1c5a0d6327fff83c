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
    cluster::{Claim, ClusterHealth, Mirror},
    config::{Config, DataplaneMode, NoAudioAction, NoAudioConfig, SigtermAction},
    dataplane::{
        DialogEvents, FlowMaps, GuardMaps, PinLayout, ReasonCounters, maps::FlowStatsReader, pins,
        xdp,
    },
    drain::Drain,
    events::{Event, EventSink, GroupReleased, GroupTakenOver},
    fleet,
    media::{AudioDeadlines, EndReason, MediaPlane, MediaSettings},
    proxy::{
        self, ProxyHandle,
        journal::{CallRecord, Journal, Line},
    },
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
    // Floating addresses are looked at when the node takes their group.
    if config.floating() {
        config.check_interfaces().map_err(in_file)?;
    } else {
        config.check_environment().map_err(in_file)?;
    }
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
            Outcome::LetGo => forget_group(&config)?,
        }
    }
}

/// How serving ended.
enum Outcome {
    /// Told to stop.
    Stopped,
    /// The node's group is no longer its own (`[cluster]`): its calls are the new owner's.
    LetGo,
}

/// Forgets the calls of a group let go: the pinned flows and dialogs (the new owner relays
/// them) and the journal (a restart must not take them back).
fn forget_group(config: &Config) -> anyhow::Result<()> {
    let layout = PinLayout::new(&config.dataplane.bpffs, &config.instance);
    if layout.exists() {
        layout.remove()?;
    }
    Journal::remove(&config.call_state_file())?;
    Ok(())
}

/// Serves the node's configuration, or with `[cluster]` the group it takes after standing by.
async fn serve_node(config: &Config, options: &RunOptions, clean: bool) -> anyhow::Result<Outcome> {
    if clean {
        let layout = PinLayout::new(&config.dataplane.bpffs, &config.instance);
        if config.dataplane.mode == DataplaneMode::Xdp {
            pins::ensure_bpffs(&config.dataplane.bpffs)?;
        }
        layout.remove()?;
        Journal::remove(&config.call_state_file())?;
        info!(dir = %layout.instance_dir.display(), "--clean: removed pinned state and recorded calls");
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
    let (mut journal, mut recorded) = Journal::open(&config.call_state_file())?;
    let mirror = match (&taking, &config.cluster) {
        (Some(taking), Some(cluster)) => Some(take_over(
            taking,
            cluster,
            &plane,
            &events,
            (&mut journal, &mut recorded),
        )),
        _ => None,
    };
    let proxy = match &config.sip {
        Some(sip) => Some(
            proxy::start(
                sip,
                &config.admission,
                Arc::clone(&guard),
                Arc::clone(&plane),
                Arc::clone(&events),
                Arc::clone(&drain),
                (
                    journal,
                    recorded,
                    mirror.as_ref().map(|m| Arc::clone(&m.health)),
                ),
            )
            .await?,
        ),
        None => None,
    };
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
    let stopped = until_stopped(
        Arc::clone(&drain),
        Arc::clone(&plane),
        proxy.clone(),
        config.drain.on_sigterm,
    );
    let (outcome, ended) = tokio::sync::oneshot::channel();
    let events_at_end = Arc::clone(&events);
    let ended_by = async move {
        let group = taking.as_ref().map(|t| &t.group);
        let lost = async {
            match group {
                Some(group) => fleet::lost(group, mirror.as_ref()).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            () = stopped => None,
            why = lost => Some(why),
        };
        if let (Some(why), Some(taking), Some(mirror)) = (why.clone(), &taking, &mirror) {
            let_go(taking, mirror, &events_at_end, &why).await;
        }
        let _ = outcome.send(why);
    };
    server::serve(api_listener, tcp, router, ended_by).await?;
    let let_go = ended.await.ok().flatten().is_some();
    reaper.abort();
    let _ = std::fs::remove_file(&socket);
    if let_go {
        // The group's new owner has its calls; this node forgets them (`forget_group`).
        return Ok(Outcome::LetGo);
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

/// Takes over the calls of the group being taken (`[cluster]`) and starts sharing the node's
/// calls: the taken calls join the journal's (`recorded`) and are journaled here too, so a
/// restart of this node keeps them.
fn take_over(
    taking: &fleet::Taking,
    cluster: &crate::cluster::ClusterConfig,
    plane: &Arc<MediaPlane>,
    events: &Arc<EventSink>,
    (journal, recorded): (&mut Journal, &mut Vec<CallRecord>),
) -> Mirror {
    let (taken, without_media) = match &taking.claimed {
        Some(claimed) => fleet::take_over_calls(plane, claimed, &taking.node, recorded),
        None => (Vec::new(), 0),
    };
    for record in &taken {
        journal.append(&Line::Put(Box::new(record.clone())));
    }
    let serves = cluster
        .served_groups((taking.group.public, taking.group.private))
        .into_iter()
        .map(|g| g.name)
        .collect();
    let health = Arc::new(ClusterHealth::new(
        taking.client.clone(),
        taking.node.clone(),
        (taking.group.name.clone(), serves),
        cluster.ttl(),
    ));
    let epoch = taking.claimed.as_ref().map_or(0, |claimed| claimed.epoch);
    health
        .epoch
        .store(epoch, std::sync::atomic::Ordering::Relaxed);
    info!(
        group = %taking.group.name,
        epoch,
        taken = taken.len(),
        own = recorded.len(),
        "serving the address group"
    );
    events.emit(Event::GroupTakenOver(GroupTakenOver {
        node: taking.node.clone(),
        group: taking.group.name.clone(),
        epoch,
        previous_owner: taking
            .claimed
            .as_ref()
            .and_then(|c| c.previous_owner.clone()),
        calls: taken.len() as u64,
        calls_without_media: without_media,
    }));
    recorded.extend(taken);
    let mirror = Mirror::start(
        taking.client.clone(),
        health,
        recorded,
        Arc::clone(plane),
        Arc::clone(events),
    );
    journal.mirror_to(mirror.clone());
    mirror
}

/// Lets the group go: gives the claim up in Redis (if it is still the latest) and says so.
async fn let_go(taking: &fleet::Taking, mirror: &Mirror, events: &EventSink, why: &str) {
    warn!(group = %taking.group.name, "letting the address group go: {why}");
    let epoch = mirror
        .health
        .epoch
        .load(std::sync::atomic::Ordering::Relaxed);
    let claim = Claim {
        client: &taking.client,
        group: &taking.group.name,
        node: &taking.node,
    };
    if let Err(e) = claim.release(epoch).await {
        warn!("cannot release the group in Redis ({e:#}); its next owner claims it anyway");
    }
    events.emit(Event::GroupReleased(GroupReleased {
        node: taking.node.clone(),
        group: taking.group.name.clone(),
        reason: why.to_owned(),
        calls: mirror
            .health
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
    }));
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

/// Resolves when the daemon should stop: SIGINT; SIGTERM (at once, or after a drain when
/// `drain.on_sigterm = "drain"`, a second SIGTERM stopping at once); or a drain begun by the
/// API that has finished.
async fn until_stopped(
    drain: Arc<Drain>,
    plane: Arc<MediaPlane>,
    proxy: Option<ProxyHandle>,
    on_sigterm: SigtermAction,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    let drained = drained(&drain, plane, proxy);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => return,
            _ = int.recv() => return info!("SIGINT: shutting down"),
            _ = term.recv() => match on_sigterm {
                SigtermAction::Drain if !drain.is_draining() => drain.begin("SIGTERM"),
                SigtermAction::Drain => return info!("second SIGTERM: shutting down now"),
                SigtermAction::Stop => return info!("SIGTERM: shutting down"),
            },
        }
    }
}

/// How often a drain looks whether the last call has ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// After the drain deadline's BYEs, how long their transactions get before the daemon exits.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Resolves once a drain has begun and the last call has ended, or its deadline has passed
/// (the remaining calls are then hung up with BYE); pending forever otherwise.
async fn drained(drain: &Drain, plane: Arc<MediaPlane>, proxy: Option<ProxyHandle>) {
    drain.begun().await;
    loop {
        let calls = proxy.as_ref().map_or(0, ProxyHandle::active_calls);
        let sessions = plane.session_count();
        if calls == 0 && sessions == 0 {
            info!("drained: the last call has ended");
            return;
        }
        if drain.remaining().is_some_and(|r| r.is_zero()) {
            warn!(
                calls,
                sessions, "drain deadline passed: hanging up the remaining calls"
            );
            if let Some(proxy) = &proxy {
                proxy.hang_up_all();
            }
            tokio::time::sleep(HANGUP_GRACE).await;
            return;
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
