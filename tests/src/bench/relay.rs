//! RTP relay throughput, cost and latency. A generator that is not the limit sends G.711-sized
//! RTP frames from the caller's namespace: the kernel itself runs `bench_generate` in
//! BPF_PROG_TEST_RUN's live-frame mode, which stamps each frame with its stream and the time
//! and transmits it (a userspace sender tops out near 130,000 frames/s here). On the callee,
//! `bench_sink` (XDP) counts the frames and records their one-way latency from the stamp,
//! then drops them, so the receiver is cheap too. In between, one of three configurations:
//! plain kernel routing through the sbc namespace (the harness' ceiling), the XDP fast path,
//! and the daemon's userspace relay (and rtpengine's, when the peer is measured); each with the
//! same streams, paced per stream.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
    util::nr_cpus,
};
use sbc::{api::contract::SessionInfo, media::session::Leg};
use sbc_common::{
    bench::{
        FrameHeader, GENERATOR_PROGRAM, HEADER_MAP, LATENCY_BUCKETS, LATENCY_MAP, MAX_STREAMS,
        RTP_OFFSET, SINK_MAP, SINK_PROGRAM, STREAM_COUNT_MAP, STREAMS_MAP, SinkCounters, Stream,
        bucket_floor,
    },
    maps::XDP_PROGRAM,
};

use super::{
    SystemUnderTest,
    bpf_stats::{self, ProgramRuns},
    report::Measurement,
};
use crate::{
    frames::UdpFrame,
    lab::{CALLEE, CALLER, Lab},
    netns::{self, Netns},
};

/// Frames per live-frame batch (the kernel's maximum is 256; 64 is NAPI's budget).
const LIVE_BATCH: u32 = 64;
/// Frames per BPF_PROG_TEST_RUN call at most (~25 ms of frames at full speed): below the
/// generator's full speed a call carries what is due, so frames go out smoothly.
const MAX_CALL: u64 = 65_536;
/// A G.711 stream: one frame every 20 ms.
pub const STREAM_PPS: u64 = 50;

/// The benchmark's XDP programs, with the sink attached to the callee's interface.
pub struct Harness {
    ebpf: Ebpf,
    sink: Option<XdpLinkId>,
    caller_ns: String,
    callee_ns: String,
    /// The caller's interface towards the sbc, in its namespace: where frames are sent.
    caller_ifindex: u32,
}

fn object() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/sbc-bench-xdp.o")
}

impl Harness {
    pub fn new(lab: &Lab) -> anyhow::Result<Self> {
        let bytes = std::fs::read(object()).with_context(|| {
            format!(
                "reading {} (`cargo xtask build-ebpf` builds it)",
                object().display()
            )
        })?;
        let mut ebpf = Ebpf::load(&bytes).context("loading the benchmark's XDP object")?;
        for name in [GENERATOR_PROGRAM, SINK_PROGRAM] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            program.load().with_context(|| format!("loading {name}"))?;
        }
        let caller_ifindex = netns::within(&lab.caller.name, || {
            sbc::config::interface_index("eth0").context("no eth0 in the caller")
        })??;
        let mut harness = Self {
            ebpf,
            sink: None,
            caller_ns: lab.caller.name.clone(),
            callee_ns: lab.callee.name.clone(),
            caller_ifindex,
        };
        let sink: &mut Xdp = harness.ebpf.program_mut(SINK_PROGRAM).unwrap().try_into()?;
        let link = netns::within(&harness.callee_ns, || sink.attach("eth0", XdpMode::Driver))?
            .context("attaching the sink to the callee's eth0")?;
        harness.sink = Some(link);
        Ok(harness)
    }

    /// The headers every frame gets, and the streams the generator cycles through.
    fn set_frame(&mut self, frame: &[u8], streams: &[Stream]) -> anyhow::Result<()> {
        let mut header = FrameHeader {
            bytes: [0; RTP_OFFSET],
            _pad: [0; 6],
        };
        header.bytes.copy_from_slice(&frame[..RTP_OFFSET]);
        let mut headers: Array<_, FrameHeader> =
            Array::try_from(self.ebpf.map_mut(HEADER_MAP).unwrap())?;
        headers.set(0, header, 0)?;
        ensure!(streams.len() as u32 <= MAX_STREAMS, "too many streams");
        let mut table: Array<_, Stream> = Array::try_from(self.ebpf.map_mut(STREAMS_MAP).unwrap())?;
        for (i, stream) in streams.iter().enumerate() {
            table.set(i as u32, *stream, 0)?;
        }
        let mut count: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(STREAM_COUNT_MAP).unwrap())?;
        count.set(0, streams.len() as u32, 0)?;
        Ok(())
    }

    fn reset_sink(&mut self) -> anyhow::Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        let mut counters: PerCpuArray<_, SinkCounters> =
            PerCpuArray::try_from(self.ebpf.map_mut(SINK_MAP).unwrap())?;
        counters.set(
            0,
            PerCpuValues::try_from(vec![SinkCounters::default(); cpus])?,
            0,
        )?;
        let mut latency: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut(LATENCY_MAP).unwrap())?;
        for bucket in 0..LATENCY_BUCKETS {
            latency.set(bucket, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// What the sink saw: its counters and the latency histogram.
    fn sink_report(&self) -> anyhow::Result<(SinkCounters, Vec<u64>)> {
        let counters: PerCpuArray<_, SinkCounters> =
            PerCpuArray::try_from(self.ebpf.map(SINK_MAP).unwrap())?;
        let total = counters
            .get(&0, 0)?
            .iter()
            .fold(SinkCounters::default(), SinkCounters::merge);
        let latency: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(LATENCY_MAP).unwrap())?;
        let histogram = (0..LATENCY_BUCKETS)
            .map(|bucket| Ok(latency.get(&bucket, 0)?.iter().sum()))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        Ok((total, histogram))
    }

    /// Sends `frames` frames (`frame` with ports and stamp filled in per stream) at `rate`
    /// frames/s, stopping at `limit` if they are not all out by then; returns how many were
    /// sent. `GENERATOR_THREADS` threads on the calling thread's CPU share the rate: each
    /// BPF_PROG_TEST_RUN call ends with a wait off the CPU (`CALL_END_WAIT`), which one thread
    /// would spend idle.
    fn send(&self, frame: &[u8], rate: u64, frames: u64, limit: Duration) -> anyhow::Result<u64> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, self.caller_ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let program: &Xdp = self.ebpf.program(GENERATOR_PROGRAM).unwrap().try_into()?;
        let threads = GENERATOR_THREADS;
        let started = Instant::now();
        std::thread::scope(|scope| {
            let senders: Vec<_> = (0..threads)
                .map(|i| {
                    // This thread's share: the rate and frames split evenly, the rest to the first.
                    let share =
                        |total: u64| total / threads + u64::from(i == 0) * (total % threads);
                    let (rate, frames, ctx) = (share(rate).max(1), share(frames), &ctx);
                    scope.spawn(move || {
                        netns::within(&self.caller_ns, || {
                            paced_runs(program, (frame, ctx), rate, frames, (started, limit))
                        })?
                    })
                })
                .collect();
            senders
                .into_iter()
                .map(|sender| sender.join().expect("a generator thread panicked"))
                .sum()
        })
    }
}

/// Generator threads: enough that one is always running while the others wait for their
/// call's end (measured: one thread made 165,000 frames/s in calls of 4,096 frames, its CPU
/// 90 % idle; four make 4.4 million in calls of 65,536, their CPU busy).
const GENERATOR_THREADS: u64 = 4;

/// How long a BPF_PROG_TEST_RUN call in live-frame mode waits before it returns, at most: its
/// page pool is destroyed after an RCU grace period (25-140 ms on this VM). A thread sends
/// that far ahead of its schedule, so that its frames are out by the end of the run.
const CALL_END_WAIT: Duration = Duration::from_millis(150);

/// One generator thread: `frames` frames at `rate` frames/s from `started`, until `limit`.
fn paced_runs(
    program: &Xdp,
    (frame, ctx): (&[u8], &[u8]),
    rate: u64,
    frames: u64,
    (started, limit): (Instant, Duration),
) -> anyhow::Result<u64> {
    let mut sent = 0u64;
    loop {
        let elapsed = started.elapsed();
        if sent >= frames || elapsed >= limit {
            return Ok(sent);
        }
        let due = ((rate as f64 * (elapsed + CALL_END_WAIT).as_secs_f64()) as u64).min(frames);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let batch = (due - sent).min(MAX_CALL) as u32;
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.ctx_in = Some(ctx);
        options.repeat = batch;
        options.attrs = TestRunAttrs::new().xdp_live_frames(LIVE_BATCH);
        program
            .test_run(options)
            .context("BPF_PROG_TEST_RUN in live-frame mode")?;
        sent += u64::from(batch);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Detach where it was attached (the namespace may already be gone with its veth).
        if let Some(link) = self.sink.take()
            && let Ok(sink) = <&mut Xdp>::try_from(self.ebpf.program_mut(SINK_PROGRAM).unwrap())
        {
            let _ = netns::within(&self.callee_ns, || sink.detach(link));
        }
    }
}

/// Busy CPU time of each CPU, from /proc/stat (seconds). Per-process or softirq figures
/// would miss work: the kernel runs the receive path of a frame the generator sends in the
/// generator's own system call, on its way out.
#[derive(Debug, Clone, Default)]
struct MachineCpu {
    per_cpu: Vec<f64>,
}

impl MachineCpu {
    fn read() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        // SAFETY: sysconf has no preconditions.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let per_cpu = stat
            .lines()
            .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
            .map(|line| {
                let fields: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|f| f.parse().unwrap_or(0.0))
                    .collect();
                ensure!(fields.len() >= 8, "short /proc/stat line: {line}");
                // user nice system idle iowait irq softirq steal
                let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
                Ok(busy / per_sec)
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        ensure!(!per_cpu.is_empty(), "no CPU in /proc/stat");
        Ok(Self { per_cpu })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            per_cpu: self
                .per_cpu
                .iter()
                .zip(&before.per_cpu)
                .map(|(now, then)| now - then)
                .collect(),
        }
    }
}

/// One configuration between generator and sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    Routing,
    Xdp,
    Userspace,
    /// rtpengine (userspace forwarding), set up as Kamailio sets it up for a call.
    Rtpengine,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Self::Routing => "plain routing",
            Self::Xdp => "XDP fast path",
            Self::Userspace => "userspace relay",
            Self::Rtpengine => "rtpengine (userspace)",
        }
    }
}

/// A configuration ready to carry streams: where frames go, and the relay's processes if
/// there are any.
pub struct Setup {
    pub path: Path,
    pub relay: Option<Box<dyn SystemUnderTest>>,
    pub streams: Vec<Stream>,
    pub destination: Ipv4Addr,
}

/// What one run at one rate found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub offered_pps: f64,
    pub sent: u64,
    pub delivered: u64,
    pub seconds: f64,
    /// Busy CPU-seconds of each CPU over the run.
    pub busy_by_cpu: Vec<f64>,
    /// CPU seconds of the relay's processes (none for plain routing).
    pub relay_cpu: Option<f64>,
    pub histogram: Vec<u64>,
}

impl Outcome {
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    pub fn loss(&self) -> f64 {
        1.0 - self.delivered as f64 / self.sent.max(1) as f64
    }

    pub fn generator_limited(&self) -> bool {
        (self.sent as f64) < self.offered_pps * self.seconds * 0.98
    }

    /// Latency at percentile `p` (0..1), in µs, from the sink's histogram.
    pub fn latency_us(&self, p: f64) -> f64 {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank.max(1) {
                return bucket_floor(bucket as u32) as f64 / 1000.0;
            }
        }
        f64::NAN
    }

    /// Busy CPU-seconds of the whole machine.
    pub fn cpu_busy(&self) -> f64 {
        self.busy_by_cpu.iter().sum()
    }

    /// Machine CPU nanoseconds per delivered frame.
    pub fn cpu_ns_per_frame(&self) -> f64 {
        self.cpu_busy() * 1e9 / self.delivered.max(1) as f64
    }

    /// CPU nanoseconds of one CPU per delivered frame.
    pub fn core_ns_per_frame(&self, cpu: usize) -> f64 {
        self.busy_by_cpu.get(cpu).copied().unwrap_or(0.0) * 1e9 / self.delivered.max(1) as f64
    }

    /// The relay's own CPU per frame: the machine's less `harness_ns`, the generator's and
    /// sink's alone.
    pub fn relay_ns_per_frame(&self, harness_ns: f64) -> f64 {
        (self.cpu_ns_per_frame() - harness_ns).max(1.0)
    }

    /// Frames one core would relay at the relay's own CPU per frame.
    pub fn relayed_per_core(&self, harness_ns: f64) -> f64 {
        1e9 / self.relay_ns_per_frame(harness_ns)
    }

    /// Machine CPU seconds per million delivered frames.
    pub fn cpu_per_million(&self, seconds: f64) -> f64 {
        seconds / (self.delivered.max(1) as f64 / 1e6)
    }
}

/// The lab's MAC address of `dev` in `ns`.
fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<[u8; 6]> {
    let output = ns.ip(&["-j", "link", "show", dev])?;
    let links: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let text = links[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC for {dev}"))?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("odd MAC {text}"))
}

/// The frame the generator starts from: caller → `destination` through pub0, no UDP checksum
/// (the generator rewrites ports; the relay keeps a zero checksum zero).
fn template(lab: &Lab, destination: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
    let mut frame = UdpFrame::rtp((CALLER, 0), (destination, 0));
    frame.eth_dst = mac_of(&lab.sbc, "pub0")?;
    frame.eth_src = mac_of(&lab.caller, "eth0")?;
    frame.udp_checksum = false;
    Ok(frame.bytes())
}

/// Streams `0..count`: from caller port 10000+i to callee port 30000+i.
pub fn routed_streams(count: u32) -> Vec<Stream> {
    (0..count)
        .map(|i| Stream {
            src_port: (10_000 + i as u16).to_be(),
            dst_port: (30_000 + i as u16).to_be(),
        })
        .collect()
}

/// Creates one relay session per stream (caller port 10000+i ↔ callee port 30000+i) and
/// returns the streams aimed at the sessions' public ports.
pub fn relayed_streams(daemon: &crate::daemon::Daemon, count: u32) -> anyhow::Result<Vec<Stream>> {
    (0..count)
        .map(|i| {
            let session: SessionInfo = daemon
                .create_session(
                    SocketAddr::new(CALLER.into(), 10_000 + i as u16),
                    SocketAddr::new(CALLEE.into(), 30_000 + i as u16),
                    true,
                )?
                .expect(201)
                .with_context(|| format!("session {i}"))?;
            let local = session.legs[Leg::A].local_rtp;
            Ok(Stream {
                src_port: (10_000 + i as u16).to_be(),
                dst_port: local.port().to_be(),
            })
        })
        .collect()
}

/// Runs `setup`'s streams at `rate` frames/s for `duration`.
pub fn run(
    harness: &mut Harness,
    lab: &Lab,
    setup: &Setup,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let frames = (rate as f64 * duration.as_secs_f64()) as u64;
    run_frames(harness, lab, setup, rate, frames, duration + CALL_END_WAIT)
}

/// Sends `frames` frames of `setup`'s streams at `rate` frames/s, within `limit`.
fn run_frames(
    harness: &mut Harness,
    lab: &Lab,
    setup: &Setup,
    rate: u64,
    frames: u64,
    limit: Duration,
) -> anyhow::Result<Outcome> {
    let frame = template(lab, setup.destination)?;
    harness.set_frame(&frame, &setup.streams)?;
    harness.reset_sink()?;
    let relay_before = setup.relay.as_ref().map(|r| r.cpu_time()).transpose()?;
    let machine_before = MachineCpu::read()?;
    let started = Instant::now();
    let sent = harness.send(&frame, rate, frames, limit)?;
    // Frames still in flight (queued in the userspace relay) arrive shortly after.
    std::thread::sleep(Duration::from_millis(200));
    let seconds = started.elapsed().as_secs_f64() - 0.2;
    let machine = MachineCpu::read()?.since(&machine_before);
    let relay_cpu = match (&setup.relay, relay_before) {
        (Some(relay), Some(before)) => Some((relay.cpu_time()? - before).as_secs_f64()),
        _ => None,
    };
    let (counters, histogram) = harness.sink_report()?;
    Ok(Outcome {
        offered_pps: rate as f64,
        sent,
        delivered: counters.packets,
        seconds,
        busy_by_cpu: machine.per_cpu,
        relay_cpu,
        histogram,
    })
}

/// Sends each stream a frame, slowly, until one round gets every frame through: the relay has
/// latched every peer and the neighbours are resolved before a run.
pub fn latch(harness: &mut Harness, lab: &Lab, setup: &Setup) -> anyhow::Result<()> {
    let count = setup.streams.len() as u64;
    let rate = 20_000;
    let limit = Duration::from_secs_f64(count as f64 / rate as f64 + 2.0);
    let mut delivered = 0;
    for _ in 0..3 {
        delivered = run_frames(harness, lab, setup, rate, count, limit)?.delivered;
        if delivered >= count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!(
        "{}: only {delivered} of {count} streams got through after three rounds\n{}",
        setup.path.label(),
        link_report(lab)
    )
}

/// An offered rate no run reaches: as fast as the generator sends.
const UNPACED: u64 = 1 << 40;

/// `setup`'s streams as fast as the generator sends them, for `duration`.
pub fn unpaced(
    harness: &mut Harness,
    lab: &Lab,
    setup: &Setup,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    run_frames(harness, lab, setup, UNPACED, u64::MAX / 2, duration)
}

/// The generator and the sink alone, unpaced, with as many streams as the runs it is
/// subtracted from (the generator's own cost grows with its streams): the sink, attached to
/// the sbc's receiving interface too, ends every frame at the first hop. pub0 must have no
/// other XDP program.
pub fn harness_alone(
    harness: &mut Harness,
    lab: &Lab,
    streams: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    fn sink(harness: &mut Harness) -> anyhow::Result<&mut Xdp> {
        Ok(harness.ebpf.program_mut(SINK_PROGRAM).unwrap().try_into()?)
    }
    let program = sink(harness)?;
    let link = netns::within(&lab.sbc.name, || program.attach("pub0", XdpMode::Driver))?
        .context("attaching the sink to the sbc's pub0")?;
    let setup = Setup {
        path: Path::Routing,
        relay: None,
        streams: routed_streams(streams),
        destination: CALLEE,
    };
    let outcome = unpaced(harness, lab, &setup, duration);
    let program = sink(harness)?;
    netns::within(&lab.sbc.name, || program.detach(link))?
        .context("detaching the sink from the sbc's pub0")?;
    outcome
}

/// Each program's time per frame over an unpaced run of `setup` (`bpf_stats`, which adds two
/// clock reads to every run, so the run's rate is not reported): the generator's, the
/// sink's, and the sbc's where it runs.
pub fn program_costs(
    harness: &mut Harness,
    lab: &Lab,
    setup: &Setup,
    duration: Duration,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let _stats = bpf_stats::enable()?;
    let names = [GENERATOR_PROGRAM, XDP_PROGRAM, SINK_PROGRAM];
    let before = names
        .iter()
        .map(|name| ProgramRuns::of(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    unpaced(harness, lab, setup, duration)?;
    let mut costs = Vec::new();
    for (name, before) in names.into_iter().zip(before) {
        let runs = ProgramRuns::of(name)?.since(before);
        if runs.count > 0 {
            costs.push((name, runs.ns_per_run()));
        }
    }
    Ok(costs)
}

/// The lab links' counters on the generator's path, for a failure message.
fn link_report(lab: &Lab) -> String {
    [
        (&lab.caller, "eth0"),
        (&lab.sbc, "pub0"),
        (&lab.sbc, "priv0"),
        (&lab.callee, "eth0"),
    ]
    .iter()
    .map(|(ns, dev)| {
        let stats = ns
            .exec("ethtool", &["-S", dev])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let link = ns
            .ip(&["-s", "-s", "-d", "link", "show", dev])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("{} {dev}:\n{link}{stats}", ns.name)
    })
    .collect()
}

const SECTION: &str = "RTP relay";

/// The measurements of one paced run.
pub fn paced_rows(path: Path, streams: u32, outcome: &Outcome) -> Vec<Measurement> {
    let subject = format!("{}, {streams} streams", path.label());
    let mut note = format!(
        "{:.0} frames/s offered for {:.0} s",
        outcome.offered_pps, outcome.seconds
    );
    if outcome.generator_limited() {
        note += "; the generator could not keep the rate";
    }
    let row = |metric, value, unit| Measurement::new(SECTION, subject.clone(), metric, value, unit);
    let mut rows = vec![
        row("delivered", outcome.delivered_pps(), "packets/s").note(note),
        row("loss", outcome.loss() * 100.0, "%"),
        row("latency p50", outcome.latency_us(0.5), "us"),
        row("latency p99", outcome.latency_us(0.99), "us"),
        row("latency p99.9", outcome.latency_us(0.999), "us"),
        row(
            "machine CPU per million packets",
            outcome.cpu_per_million(outcome.cpu_busy()),
            "s",
        )
        .note("generator and sink included (the same in every configuration)"),
    ];
    if let Some(relay) = outcome.relay_cpu {
        rows.push(
            row(
                "relay process CPU per million packets",
                outcome.cpu_per_million(relay),
                "s",
            )
            .note("the relay's own processes; the XDP program runs in the kernel, counted in machine CPU"),
        );
    }
    rows
}

/// What limited an unpaced run through `path` (`None`: no relay, the harness alone), and how
/// busy each CPU was.
fn limited_by(path: Option<Path>, outcome: &Outcome) -> String {
    let share = |busy: f64| busy / outcome.seconds;
    let shares = outcome
        .busy_by_cpu
        .iter()
        .enumerate()
        .map(|(cpu, &busy)| format!("CPU {cpu} {:.0} %", share(busy) * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    // The generator runs on the first CPU (`pin_load_generators`).
    let generator_core_full = outcome
        .busy_by_cpu
        .first()
        .is_some_and(|&busy| share(busy) >= 0.9);
    let who = if outcome.loss() > 0.01 {
        format!(
            "the relay (it dropped {:.1} % of the frames)",
            outcome.loss() * 100.0
        )
    } else if generator_core_full {
        match path {
            Some(Path::Routing | Path::Xdp) => {
                "the generator's core, where the relay runs too (inline in the generator's call)"
                    .to_owned()
            }
            Some(Path::Userspace | Path::Rtpengine) | None => "the generator's core".to_owned(),
        }
    } else {
        "neither core was full".to_owned()
    };
    format!("limited by {who}; {shares}")
}

/// The generator and sink alone: the harness' ceiling on one core, and its CPU per frame,
/// which the relays' shares leave out.
pub fn harness_rows(streams: u32, outcome: &Outcome) -> Vec<Measurement> {
    let subject = format!("generator and sink alone (no relay), {streams} streams");
    vec![
        Measurement::new(
            SECTION,
            subject.clone(),
            "delivered",
            outcome.delivered_pps(),
            "packets/s",
        )
        .note(format!(
            "unpaced, {GENERATOR_THREADS} generator threads on one core; {}",
            limited_by(None, outcome)
        )),
        Measurement::new(
            SECTION,
            subject,
            "CPU per frame",
            outcome.cpu_ns_per_frame(),
            "ns",
        ),
    ]
}

/// An unpaced run through `path`: what got through and what limited it, and the relay's own
/// CPU per frame (the machine's less the harness', measured alone) with the rate one core
/// would relay at that cost.
///
/// Where the relay runs inline in the generator's call (routing, XDP), the packet path's cost is
/// also read on that core alone, and the other core's work beside it: there the daemon does
/// its once-a-second upkeep of every session, which grows with the sessions, not the frames.
pub fn unpaced_rows(
    path: Path,
    streams: u32,
    outcome: &Outcome,
    harness: &Outcome,
) -> Vec<Measurement> {
    let subject = format!("{}, unpaced, {streams} streams", path.label());
    let harness_ns = harness.cpu_ns_per_frame();
    let per_core = outcome.relayed_per_core(harness_ns);
    let row = |metric, value, unit| Measurement::new(SECTION, subject.clone(), metric, value, unit);
    let mut inline = Vec::new();
    if matches!(path, Path::Routing | Path::Xdp) {
        let on_core = |run: &Outcome| run.core_ns_per_frame(super::LOAD_CPU);
        inline.push(
            row(ON_CORE_NS, on_core(outcome) - on_core(harness), "ns").note(
                "the packet path alone: the generator's core's CPU per delivered frame less the \
                 harness's on it",
            ),
        );
        if let Some(other) = super::sut_cpu() {
            let busy = outcome.busy_by_cpu.get(other).copied().unwrap_or(0.0);
            inline.push(
                row("other core busy", busy / outcome.seconds * 100.0, "%").note(
                    "meanwhile; with XDP the daemon's core: its once-a-second reading of every \
                     session's counters (media timeout, no-audio), per session, not per frame",
                ),
            );
        }
    }
    let mut rows = vec![
        row("delivered", outcome.delivered_pps(), "packets/s").note(format!(
            "as fast as the generator sends; {}",
            limited_by(Some(path), outcome)
        )),
        row("loss", outcome.loss() * 100.0, "%"),
        row(RELAY_NS, outcome.relay_ns_per_frame(harness_ns), "ns")
            .note("machine CPU per delivered frame less the generator's and sink's alone"),
        row(PER_CORE, per_core, "packets/s"),
        row(
            "concurrent 50 pps streams per core",
            per_core / STREAM_PPS as f64,
            "streams",
        )
        .note("one direction each: a call is two"),
    ];
    rows.extend(inline);
    rows
}

/// Relay CPU per frame: the machine's less the harness'.
pub const RELAY_NS: &str = "relay CPU per frame";
/// The packet path's CPU per frame on the core it runs on, less the harness'.
pub const ON_CORE_NS: &str = "CPU per frame on its core";
/// Frames one core relays at the relay's CPU per frame.
pub const PER_CORE: &str = "relayed per core";

/// Where the nanoseconds of a relayed frame go: each program's own time (bpf_stats) and the
/// kernel's path around them.
pub fn cost_rows(programs: &[(&str, f64)], harness_ns: f64, xdp_relay_ns: f64) -> Vec<Measurement> {
    let row = |part: String, value, note: &str| {
        Measurement::new(
            SECTION,
            format!("where a frame's time goes: {part}"),
            "time per frame",
            value,
            "ns",
        )
        .note(note)
    };
    let program = |name: &str| {
        programs
            .iter()
            .find(|(program, _)| *program == name)
            .map(|(_, ns)| *ns)
    };
    let mut rows: Vec<Measurement> = programs
        .iter()
        .map(|(name, ns)| {
            row(
                format!("program {name}"),
                *ns,
                "bpf_stats run time per run: includes part of the kernel's two clock reads \
                 around each run (slow under kvm-clock)",
            )
        })
        .collect();
    if let Some(relay_program) = program(XDP_PROGRAM) {
        rows.push(row(
            "kernel around sbc_xdp".into(),
            xdp_relay_ns - relay_program,
            "XDP relay CPU per frame less sbc_xdp: veth receive, redirect, transmit",
        ));
    }
    if let (Some(generate), Some(sink)) = (program(GENERATOR_PROGRAM), program(SINK_PROGRAM)) {
        rows.push(row(
            "kernel around the harness' programs".into(),
            harness_ns - generate - sink,
            "the harness' CPU per frame less its programs: test run, one veth hop, page pool",
        ));
    }
    rows
}
