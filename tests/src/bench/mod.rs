//! `cargo xtask bench`: the relay and the proxy measured side by side in one run, in a lab of
//! network namespaces of its own, so that the noise of a shared machine falls on every
//! configuration alike. Timed assertions have no place in the tests; numbers are made here.
//!
//! The load generators run on CPU 0 and the system under test on CPU 1 (on a machine with at
//! least two), so that each configuration gets the same one core.
pub mod bpf_stats;
pub mod calls;
pub mod flood_cost;
pub mod in_dialog;
pub mod kernel_cost;
pub mod peer;
pub mod relay;
pub mod report;
pub mod rtpengine_ng;
pub mod scale;

use std::{net::SocketAddr, time::Duration};

use report::{Machine, Measurement, Report, Target};
use sbc_common::Reason;

use crate::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, Lab, SBC_PUBLIC},
    redis::RedisServer,
    sipp::{self, Backend},
};

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Minutes: every measurement, smaller and shorter.
    Quick,
    /// The numbers for BENCHMARKS.md.
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Quick => "quick",
            Self::Full => "full",
        }
    }
}

/// A stack measured beside the SBC in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Kamailio (record-routing proxy, dispatcher) with rtpengine anchoring the media in
    /// userspace (Debian packages kamailio and rtpengine-daemon).
    KamailioRtpengine,
}

/// A part of the benchmark, to run alone while working on it (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    KernelCost,
    CallSetup,
    Scale,
    Relay,
    Flood,
    InDialog,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub peer: Option<Peer>,
    /// The sections to run; empty: all of them.
    pub only: Vec<Section>,
    /// Concurrent streams of the paced relay runs; by default 1,000, and `full_sessions()` too
    /// in the full run.
    pub streams: Option<Vec<u32>>,
}

/// The most streams a relay run takes: each is a session of two media ports from the
/// daemon's range of 40,000 in the benchmark, and stream i uses caller port 10000+i and
/// callee port 30000+i.
pub const MAX_RELAY_STREAMS: u32 = 20_000;

impl Options {
    fn stream_counts(&self) -> anyhow::Result<Vec<u32>> {
        let counts = match (&self.streams, self.mode) {
            (Some(counts), _) => counts.clone(),
            (None, Mode::Full) => vec![1_000, full_sessions()],
            (None, Mode::Quick) => vec![1_000],
        };
        for &count in &counts {
            anyhow::ensure!(
                (1..=MAX_RELAY_STREAMS).contains(&count),
                "--streams: {count} is not between 1 and {MAX_RELAY_STREAMS}"
            );
        }
        anyhow::ensure!(!counts.is_empty(), "--streams: give at least one count");
        Ok(counts)
    }
}

/// What the benchmark reads of a system under test while it measures.
pub trait SystemUnderTest: Sync {
    /// The CPU time all of its processes have used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration>;

    /// The SIP guard's verdicts so far, by reason, where the system has such a guard.
    fn guard_verdicts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

impl SystemUnderTest for Daemon {
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        Daemon::cpu_time(self)
    }

    fn guard_verdicts(&self) -> Vec<(&'static str, u64)> {
        [
            Reason::DropSipBlocked,
            Reason::DropSipInviteRate,
            Reason::DropSipRateLimited,
            Reason::PassSip,
        ]
        .into_iter()
        .map(|reason| {
            let count = Daemon::guard_verdicts(self, reason.name()).unwrap_or_default();
            (reason.name(), count)
        })
        .collect()
    }
}

/// The CPU of the system under test, and of everything else.
const SUT_CPU: usize = 1;
const LOAD_CPU: usize = 0;

/// The core of the system under test, if the machine has one to spare. Counted from the
/// online CPUs, not `available_parallelism` (which follows this process's affinity: once
/// `pin_load_generators` ran, it saw one CPU, and every system under test was started on the
/// load generators' core).
fn sut_cpu() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (usize::try_from(online).unwrap_or(1) > SUT_CPU).then_some(SUT_CPU)
}

/// Keeps this process and what it starts (SIPp, floods) off the system under test's core.
fn pin_load_generators() -> anyhow::Result<()> {
    if sut_cpu().is_none() {
        return Ok(());
    }
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(LOAD_CPU, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            anyhow::bail!(
                "cannot pin the load generators: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The SBC as the benchmark runs it: XDP dataplane, pinned, a large port range.
fn sbc(
    lab: &Lab,
    backend: SocketAddr,
    dataplane: &'static str,
    admission: &str,
) -> anyhow::Result<Daemon> {
    Daemon::start(
        lab,
        &DaemonOptions {
            dataplane,
            port_min: 20_000,
            port_max: 59_999,
            sip_backends: vec![backend],
            extra_config: admission.to_owned(),
            cpu: sut_cpu(),
            ..Default::default()
        },
    )
}

/// Sessions (and relay streams) of the full run's scale tests: 10,000, as the issue asks,
/// where the daemon can have the descriptors (`sessions_that_fit`).
fn full_sessions() -> u32 {
    sessions_that_fit(10_000)
}

/// `wanted` sessions where the daemon can have the descriptors, else the most whole thousands
/// that fit. Every media port is a socket and a session takes two, so 10,000 sessions need more
/// than 20,000 descriptors: the daemon raises its hard limit where it may (CAP_SYS_RESOURCE),
/// as this process tries here for it to inherit.
fn sessions_that_fit(wanted: u32) -> u32 {
    // The daemon's own descriptors besides media: maps, listeners, API, logs.
    const OTHER_DESCRIPTORS: u64 = 2_000;
    let needed = u64::from(wanted) * 2 + OTHER_DESCRIPTORS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return wanted;
    }
    if limit.rlim_max < needed {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_cur,
            rlim_max: needed,
        };
        // SAFETY: a valid rlimit; refused without CAP_SYS_RESOURCE, which the fallback covers.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return wanted;
        }
    }
    let fit = limit.rlim_max.saturating_sub(OTHER_DESCRIPTORS) / 2 / 1_000 * 1_000;
    fit.min(u64::from(wanted)) as u32
}

/// Admission off: call setup is measured, not the limits.
const NO_LIMITS: &str = "[admission]\nenabled = false\n";

/// Admission on (overload refusal and shedding), without per-source limits.
const OVERLOAD_ADMISSION: &str = "[admission.source]\npackets_per_sec = 0\npacket_burst = 0\n\
     invites_per_sec = 0\ninvite_burst = 0\nrequests_per_sec = 0\nrequest_burst = 0\n";

pub fn run(options: &Options) -> anyhow::Result<Report> {
    let stream_counts = options.stream_counts()?;
    pin_load_generators()?;
    let full = options.mode == Mode::Full;
    let peer = options.peer;
    let mut measurements: Vec<Measurement> = Vec::new();
    let runs = |section| options.only.is_empty() || options.only.contains(&section);

    if runs(Section::KernelCost) {
        eprintln!("== in-kernel cost (BPF_PROG_TEST_RUN)");
        measurements.extend(kernel_cost::measure(if full {
            10_000_000
        } else {
            1_000_000
        })?);
    }

    let lab = Lab::up("bench")?;
    let backend_address = SocketAddr::new(CALLEE.into(), 5060);
    let sbc_sip = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    if runs(Section::CallSetup) {
        eprintln!("== call setup");
        measurements.extend(call_setup_section(&lab, backend_address, full, peer)?);
    }
    if runs(Section::Scale) {
        let _backend = Backend::start(&lab.callee, backend_address)?;
        let daemon = sbc(&lab, backend_address, "xdp", NO_LIMITS)?;
        eprintln!("== scale and memory");
        measurements.extend(scale::sessions(
            &daemon,
            if full { full_sessions() } else { 2_000 },
        )?);
        // A call without rtcp-mux takes four ports (two legs, RTP and RTCP): 4,000 calls fit
        // under the descriptor limit of a sandbox that caps full_sessions() at 9,000.
        let (count, rate) = if full { (4_000, 250) } else { (1_000, 200) };
        measurements.extend(scale::held_calls(&lab, &daemon, sbc_sip, count, rate)?);
    }
    if runs(Section::Relay) {
        eprintln!("== RTP relay");
        measurements.extend(relay_section(
            &lab,
            backend_address,
            full,
            &stream_counts,
            peer,
        )?);
    }
    if runs(Section::Flood) {
        eprintln!("== flood");
        measurements.extend(flood_section(&lab, backend_address, full, peer)?);
    }
    if runs(Section::InDialog) {
        eprintln!("== in-dialog latency");
        measurements.extend(in_dialog::measure(&lab, backend_address)?);
    }

    let mut report = Report {
        mode: options.mode.name(),
        machine: Machine::read(),
        measurements,
        targets: Vec::new(),
    };
    let fewest = stream_counts.iter().copied().min().unwrap_or(0);
    let most = stream_counts.iter().copied().max().unwrap_or(0);
    report.targets = targets(&report, (fewest, most));
    Ok(report)
}

const CALL_SETUP: &str = "Call setup";
const SBC_XDP: &str = "SBC (XDP)";
const SBC_XDP_CLUSTER: &str = "SBC (XDP, [cluster] Redis)";

/// Call setup through the SBC and, if asked, the peer: each with a fresh backend, stepped
/// rates, then the ratio.
fn call_setup_section(
    lab: &Lab,
    backend: SocketAddr,
    full: bool,
    peer: Option<Peer>,
) -> anyhow::Result<Vec<Measurement>> {
    let steps = calls::Steps {
        rates: if full {
            vec![
                200, 400, 700, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 3000, 3500, 4000, 5000,
            ]
        } else {
            vec![250, 500, 1000, 1500, 1750, 2000, 2250, 3000]
        },
        seconds_per_step: if full { 15 } else { 4 },
    };
    let target = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    let serve =
        || Backend::start_scenario(&lab.callee, backend, &sipp::scenario("bench_uas"), None);
    let mut rows = Vec::new();
    {
        let _backend = serve()?;
        let daemon = sbc(lab, backend, "xdp", NO_LIMITS)?;
        rows.extend(calls::measure(lab, target, SBC_XDP, &daemon, &steps)?);
    }
    {
        // The same with the fleet's shared state on: every call written to Redis (never on
        // the setup path), to show that it costs call setup nothing.
        let _backend = serve()?;
        let redis = RedisServer::start(&lab.callee, SocketAddr::new(CALLEE.into(), 6379))?;
        let cluster = format!(
            "{NO_LIMITS}[cluster]\nredis = \"redis://{}\"\nnode = \"bench\"\n",
            redis.address
        );
        let daemon = sbc(lab, backend, "xdp", &cluster)?;
        rows.extend(calls::measure(
            lab,
            target,
            SBC_XDP_CLUSTER,
            &daemon,
            &steps,
        )?);
        let shared = redis.keys("sbc:node:*")?;
        anyhow::ensure!(
            !shared.is_empty(),
            "the [cluster] run wrote no heartbeat to Redis: it measured nothing of the fleet"
        );
    }
    let rate_of = |rows: &[Measurement], system: &str| {
        rows.iter()
            .find(|m| m.subject == system && m.metric == calls::HIGHEST_RATE)
            .map(|m| m.value)
    };
    if let (Some(alone), Some(shared)) = (rate_of(&rows, SBC_XDP), rate_of(&rows, SBC_XDP_CLUSTER))
        && alone > 0.0
    {
        rows.push(
            Measurement::new(
                CALL_SETUP,
                format!("{SBC_XDP_CLUSTER} / {SBC_XDP}"),
                calls::HIGHEST_RATE,
                shared / alone,
                "x",
            )
            .note("the fleet's state in Redis (written off the setup path) against none"),
        );
    }
    let capacity = rate_of(&rows, SBC_XDP).map_or(0, |rate| rate as u32);
    if capacity > 0 {
        // Admission on, as in production, but no per-source limit: the one SIPp caller
        // stands for many callers, and what is measured is the edge past its capacity.
        let _backend = serve()?;
        let daemon = sbc(lab, backend, "xdp", OVERLOAD_ADMISSION)?;
        let refused = || -> anyhow::Result<u64> {
            let totals = daemon.admission_totals()?;
            Ok(totals.refused_overload
                + totals.shed_late
                + totals.shed_new_requests
                + totals.shed_queue_full)
        };
        let seconds = steps.seconds_per_step * 2;
        rows.extend(calls::overload(
            lab, target, SBC_XDP, &daemon, capacity, seconds, &refused,
        )?);
    }
    if peer.is_some() {
        let _backend = serve()?;
        let peer_system = peer::KamailioRtpengine::start(lab, backend, sut_cpu(), false)?;
        rows.extend(calls::measure(
            lab,
            target,
            peer::NAME,
            &peer_system,
            &steps,
        )?);
        let rate = |system: &str| {
            rows.iter()
                .find(|m| m.subject == system && m.metric == calls::HIGHEST_RATE)
                .map(|m| m.value)
        };
        if let (Some(sbc), Some(peer_rate)) = (rate(SBC_XDP), rate(peer::NAME))
            && peer_rate > 0.0
        {
            let highest = steps.rates.last().map(|&r| f64::from(r));
            let note = if Some(sbc) == highest {
                "one core each; a lower bound: the SBC passed the highest step"
            } else {
                "one core each"
            };
            rows.push(
                Measurement::new(
                    CALL_SETUP,
                    format!("{SBC_XDP} / {}", peer::NAME),
                    calls::HIGHEST_RATE,
                    sbc / peer_rate,
                    "x",
                )
                .note(note),
            );
        }
    }
    Ok(rows)
}

/// What a flood of INVITEs costs the SBC with each dataplane and, if asked, the peer.
fn flood_section(
    lab: &Lab,
    backend: SocketAddr,
    full: bool,
    peer: Option<Peer>,
) -> anyhow::Result<Vec<Measurement>> {
    let (rate, seconds) = if full { (100_000, 20) } else { (100_000, 5) };
    let duration = Duration::from_secs(seconds);
    let target = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend)?;
    let mut rows = Vec::new();
    for (dataplane, system) in [("xdp", SBC_XDP), ("userspace", "SBC (userspace dataplane)")] {
        // The production defaults of [admission].
        let daemon = sbc(lab, backend, dataplane, "")?;
        rows.extend(flood_cost::measure(
            lab, &daemon, target, system, rate, duration,
        )?);
    }
    if peer.is_some() {
        // Its stock anti-flood check (pike) on, as the SBC's admission limits are.
        let peer = peer::KamailioRtpengine::start(lab, backend, sut_cpu(), true)?;
        let system = format!("{} (pike)", peer::NAME);
        rows.extend(flood_cost::measure(
            lab, &peer, target, &system, rate, duration,
        )?);
    }
    Ok(rows)
}

/// A relay configuration with `streams` streams ready to run.
fn relay_setup(
    lab: &Lab,
    backend: SocketAddr,
    path: relay::Path,
    streams: u32,
) -> anyhow::Result<relay::Setup> {
    let relayed = |relay: Box<dyn SystemUnderTest>, streams| relay::Setup {
        path,
        relay: Some(relay),
        streams,
        destination: SBC_PUBLIC,
    };
    Ok(match path {
        relay::Path::Routing => relay::Setup {
            path,
            relay: None,
            streams: relay::routed_streams(streams),
            destination: CALLEE,
        },
        relay::Path::Xdp | relay::Path::Userspace => {
            let dataplane = if path == relay::Path::Xdp {
                "xdp"
            } else {
                "userspace"
            };
            let daemon = sbc(lab, backend, dataplane, NO_LIMITS)?;
            let streams = relay::relayed_streams(&daemon, streams)?;
            relayed(Box::new(daemon), streams)
        }
        relay::Path::Rtpengine => {
            let peer = peer::KamailioRtpengine::start(lab, backend, sut_cpu(), false)?;
            let streams = peer.relayed_streams(streams)?;
            relayed(Box::new(peer), streams)
        }
    })
}

/// The relay configurations measured: the SBC's two and the harness' ceiling, and the peer's
/// if asked.
fn relay_paths(peer: Option<Peer>) -> Vec<relay::Path> {
    let mut paths = vec![
        relay::Path::Routing,
        relay::Path::Xdp,
        relay::Path::Userspace,
    ];
    if peer.is_some() {
        paths.push(relay::Path::Rtpengine);
    }
    paths
}

/// Paced streams through each configuration, then each one's saturation point, then ratios.
fn relay_section(
    lab: &Lab,
    backend: SocketAddr,
    full: bool,
    stream_counts: &[u32],
    peer: Option<Peer>,
) -> anyhow::Result<Vec<Measurement>> {
    // Without an XDP program on pub0 (routing, userspace relays) the generator's frames need
    // the veth's NAPI, which GRO turns on; routing needs forwarding.
    lab.sbc.exec("ethtool", &["-K", "pub0", "gro", "on"])?;
    lab.sbc.sysctl("net.ipv4.ip_forward", "1")?;
    let paths = relay_paths(peer);
    let mut harness = relay::Harness::new(lab)?;
    let mut rows = Vec::new();
    let seconds = Duration::from_secs(if full { 10 } else { 4 });
    let mut per_million = std::collections::HashMap::new();
    let mut latency = std::collections::HashMap::new();
    for &streams in stream_counts {
        for &path in &paths {
            let Some(setup) = latched_setup(&mut harness, lab, backend, path, streams, &mut rows)?
            else {
                continue;
            };
            let rate = u64::from(streams) * relay::STREAM_PPS;
            let outcome = relay::run(&mut harness, lab, &setup, rate, seconds)?;
            eprintln!(
                "  {}, {streams} streams: {:.0} delivered/s, loss {:.3} %",
                path.label(),
                outcome.delivered_pps(),
                outcome.loss() * 100.0
            );
            rows.extend(relay::paced_rows(path, streams, &outcome));
            per_million.insert((path, streams), outcome.cpu_per_million(outcome.cpu_busy()));
            latency.insert((path, streams), [0.5, 0.99].map(|p| outcome.latency_us(p)));
        }
    }
    // Saturation: each configuration as fast as the generator sends, and its own CPU per
    // frame: the machine's less the generator's and sink's, measured alone first with as
    // many streams.
    let step = Duration::from_secs(if full { 4 } else { 2 });
    let saturation_streams = stream_counts.iter().copied().min().unwrap_or(1_000);
    // The XDP relay also at every larger count, and in a full run at as many sessions as the
    // benchmark's port range holds (or the descriptor limit lets the daemon open): its cost
    // per frame against the number of flows.
    let mut xdp_counts = stream_counts.to_vec();
    if full {
        xdp_counts.push(sessions_that_fit(MAX_RELAY_STREAMS));
    }
    xdp_counts.sort_unstable();
    xdp_counts.dedup();
    let mut harness_alone = std::collections::HashMap::new();
    for &streams in &xdp_counts {
        let alone = relay::harness_alone(&mut harness, lab, streams, step)?;
        eprintln!(
            "  generator and sink alone, {streams} streams: {:.0} delivered/s, {:.0} ns per frame",
            alone.delivered_pps(),
            alone.cpu_ns_per_frame()
        );
        rows.extend(relay::harness_rows(streams, &alone));
        harness_alone.insert(streams, alone);
    }
    let mut saturation = std::collections::HashMap::new();
    let mut per_core = std::collections::HashMap::new();
    for &path in &paths {
        let counts = if path == relay::Path::Xdp {
            xdp_counts.clone()
        } else {
            vec![saturation_streams]
        };
        for streams in counts {
            let Some(setup) = latched_setup(&mut harness, lab, backend, path, streams, &mut rows)?
            else {
                continue;
            };
            let outcome = relay::unpaced(&mut harness, lab, &setup, step)?;
            eprintln!(
                "  {}, unpaced, {streams} streams: {:.0} delivered/s, loss {:.3} %",
                path.label(),
                outcome.delivered_pps(),
                outcome.loss() * 100.0
            );
            let alone = &harness_alone[&streams];
            let harness_ns = alone.cpu_ns_per_frame();
            rows.extend(relay::unpaced_rows(path, streams, &outcome, alone));
            if streams != saturation_streams {
                continue;
            }
            saturation.insert(path, outcome.delivered_pps());
            per_core.insert(path, outcome.relayed_per_core(harness_ns));
            if path == relay::Path::Xdp {
                let programs = relay::program_costs(&mut harness, lab, &setup, step)?;
                let relay_ns = outcome.relay_ns_per_frame(harness_ns);
                rows.extend(relay::cost_rows(&programs, harness_ns, relay_ns));
            }
        }
    }
    let relays = &paths[1..];
    // Added latency: a relay's latency less plain routing's over the same harness.
    for &streams in stream_counts {
        let routing = latency[&(relay::Path::Routing, streams)];
        for &path in relays {
            let Some(relayed) = latency.get(&(path, streams)) else {
                continue;
            };
            for (i, metric) in ["added latency p50", "added latency p99"]
                .into_iter()
                .enumerate()
            {
                rows.push(
                    Measurement::new(
                        RELAY,
                        format!("{}, {streams} streams", path.label()),
                        metric,
                        relayed[i] - routing[i],
                        "us",
                    )
                    .note("against plain routing through the same harness"),
                );
            }
        }
    }
    // The XDP fast path against each userspace relay, per CPU-second.
    for &streams in stream_counts {
        let xdp = per_million[&(relay::Path::Xdp, streams)];
        for &path in &relays[1..] {
            let Some(relay_cost) = per_million.get(&(path, streams)) else {
                continue;
            };
            rows.push(
                Measurement::new(
                    RELAY,
                    format!("XDP / {}, {streams} streams", path.label()),
                    PER_CPU_SECOND,
                    relay_cost / xdp,
                    "x",
                )
                .note(
                    "whole machine, generator and sink included: the relays' own ratio is higher",
                ),
            );
        }
    }
    for &path in paths.iter().filter(|&&p| p != relay::Path::Xdp) {
        if let Some(relayed) = per_core.get(&path) {
            rows.push(
                Measurement::new(
                    RELAY,
                    format!("XDP / {}, per core", path.label()),
                    relay::PER_CORE,
                    per_core[&relay::Path::Xdp] / relayed,
                    "x",
                )
                .note("frames one core relays at each one's own CPU per frame"),
            );
        }
    }
    for &path in relays.iter().filter(|&&p| p != relay::Path::Xdp) {
        if let Some(relayed) = saturation.get(&path) {
            rows.push(Measurement::new(
                RELAY,
                format!("XDP / {}, saturation", path.label()),
                DELIVERED,
                saturation[&relay::Path::Xdp] / relayed,
                "x",
            ));
        }
    }
    rows.push(Measurement::new(
        RELAY,
        "XDP / plain routing, saturation",
        DELIVERED,
        saturation[&relay::Path::Xdp] / saturation[&relay::Path::Routing],
        "x",
    ));
    Ok(rows)
}

/// A configuration set up (or, for the peer, a row saying why not) with every stream latched.
fn latched_setup(
    harness: &mut relay::Harness,
    lab: &Lab,
    backend: SocketAddr,
    path: relay::Path,
    streams: u32,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<Option<relay::Setup>> {
    let setup = peer_may_fail(
        relay_setup(lab, backend, path, streams),
        path,
        streams,
        rows,
    )?;
    if let Some(setup) = &setup {
        relay::latch(harness, lab, setup)?;
    }
    Ok(setup)
}

/// The SBC's configurations must set up; the peer may not (rtpengine holds four sockets per
/// session and runs out under a low open-files limit): a row says so and the run goes on.
fn peer_may_fail(
    setup: anyhow::Result<relay::Setup>,
    path: relay::Path,
    streams: u32,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<Option<relay::Setup>> {
    match setup {
        Ok(setup) => Ok(Some(setup)),
        Err(e) if path == relay::Path::Rtpengine => {
            eprintln!("  {}, {streams} streams: not set up: {e:#}", path.label());
            rows.push(
                Measurement::new(
                    RELAY,
                    format!("{}, {streams} streams", path.label()),
                    "delivered",
                    f64::NAN,
                    "packets/s",
                )
                .note(format!(
                    "not measured: the sessions could not be set up ({e:#})"
                )),
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

const RELAY: &str = "RTP relay";
const PER_CPU_SECOND: &str = "packets per CPU-second";
const DELIVERED: &str = "delivered packets/s";

/// XDP relay: 10x the userspace relay's packets per CPU-second, and at least plain routing's
/// packets/s.
fn relay_target(report: &Report, streams: u32) -> Target {
    let per_cpu = report.find(
        RELAY,
        &format!(
            "XDP / {}, {streams} streams",
            relay::Path::Userspace.label()
        ),
        PER_CPU_SECOND,
    );
    let versus_routing = report.find(RELAY, "XDP / plain routing, saturation", DELIVERED);
    let (measured, met) = match (per_cpu, versus_routing) {
        (Some(cpu), Some(routing)) => (
            Some(format!(
                "{cpu:.1}x the userspace relay's packets per CPU-second ({streams} streams); \
                 {routing:.2}x routing's packets/s"
            )),
            Some(cpu >= 10.0 && routing >= 1.0),
        ),
        _ => (None, None),
    };
    Target {
        text: "XDP relay: 10x the packets per CPU-second of the userspace relay, and at least plain routing's packets/s",
        measured,
        met,
    }
}

/// The targets of issue 5, judged on this run's numbers; the relay's at the fewest and the
/// most streams measured.
fn targets(report: &Report, (fewest, most): (u32, u32)) -> Vec<Target> {
    let judged = |text, value: Option<f64>, unit: String, met: &dyn Fn(f64) -> bool| Target {
        text,
        measured: value.map(|v| format!("{v:.1} {unit}")),
        met: value.map(met),
    };
    vec![
        judged(
            "XDP program cost under 200 ns per media packet",
            report.find(
                "In-kernel cost",
                "RTP frame of a latched flow (relayed)",
                "time per packet",
            ),
            "ns".into(),
            &|ns| ns < 200.0,
        ),
        judged(
            "XDP program cost of forwarding an established call's in-dialog request under 1.5 us",
            report.find(
                "In-kernel cost",
                "SIP BYE of an established call, forwarded (SIPp's)",
                "time per packet",
            ),
            "ns".into(),
            &|ns| ns < 1500.0,
        ),
        judged(
            "Flood of 100,000 INVITE/s from one source: daemon and XDP program together under \
             5 % of a core",
            report
                .find("Flood", SBC_XDP, flood_cost::METRIC)
                .zip(report.find("Flood", SBC_XDP, flood_cost::XDP_METRIC))
                .map(|(daemon, program)| daemon + program),
            "% of a core".into(),
            &|share| share < 5.0,
        ),
        relay_target(report, fewest),
        judged(
            "p99 added latency of the XDP path under 50 us at 10,000 streams",
            report.find(
                RELAY,
                &format!("{}, {most} streams", relay::Path::Xdp.label()),
                "added latency p99",
            ),
            format!("us over plain routing at {most} streams"),
            &|us| us < 50.0,
        ),
        judged(
            "Call setup with media anchoring: 1.5x the calls/s of Kamailio + rtpengine, one core each",
            report.find(
                CALL_SETUP,
                &format!("{SBC_XDP} / {}", peer::NAME),
                calls::HIGHEST_RATE,
            ),
            "x (measured with --peer kamailio-rtpengine)".into(),
            &|ratio| ratio >= 1.5,
        ),
    ]
}
