//! `cargo xtask demo`: a lab of namespaces, the daemon with XDP in native mode, real SIP calls
//! from a SIPp caller through the sbc to a SIPp backend with RTP both ways, then media sessions
//! streamed through the control API; reports of what arrived and which path relayed it.
use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::events::Event;

use crate::{
    calls::{open_calls, relayed_packets},
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    rtp::{Direction, PACKET_INTERVAL, RTP_PAYLOAD_BYTES, Traffic},
    sipp::{self, CallKind},
};

#[derive(clap::Args, Debug)]
pub struct DemoOptions {
    /// SIP calls placed by SIPp through the sbc to a SIPp backend (RTP from a pcap, echoed).
    #[arg(long, default_value_t = 20)]
    pub calls: u32,
    /// New calls per second.
    #[arg(long, default_value_t = 5)]
    pub rate: u32,
    /// Media sessions created through the control API (half with RTCP on port + 1, half
    /// rtcp-mux).
    #[arg(long, default_value_t = 40)]
    pub sessions: usize,
    /// Seconds of media on those sessions.
    #[arg(long, default_value_t = 6)]
    pub seconds: u64,
    /// Relay media with XDP (the default) or in the daemon only.
    #[arg(long, default_value = "xdp", value_parser = ["xdp", "userspace"])]
    pub dataplane: String,
}

pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo builds network namespaces and loads XDP: run it as root"
    );
    let dataplane: &'static str = if options.dataplane == "userspace" {
        "userspace"
    } else {
        "xdp"
    };
    println!("[1/6] building the lab (network namespaces caller, sbc, callee)");
    let lab = Lab::up("demo")?;
    println!("      {}", lab.describe());

    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = sipp::Backend::start(&lab.callee, backend)?;
    println!(
        "[2/6] starting sbc: {dataplane} dataplane (XDP native on pub0, priv0), SIP on \
         {SBC_PUBLIC}:5060, SIPp backend at {backend} echoing RTP"
    );
    let daemon_options = DaemonOptions {
        dataplane,
        sip_backends: vec![backend],
        ..Default::default()
    };
    let mut daemon = Daemon::start(&lab, &daemon_options)?;

    sip_calls(&lab, &daemon, options)?;
    media_sessions(&lab, &daemon, options)?;

    daemon.stop()?;
    drop(daemon);
    drop(lab);
    println!("\nlab torn down");
    Ok(())
}

/// Phase one: SIPp calls with RTP, and a line per call from the daemon's events.
fn sip_calls(lab: &Lab, daemon: &Daemon, options: &DemoOptions) -> anyhow::Result<()> {
    println!(
        "[3/6] SIPp places {} calls at {}/s through the sbc (each: INVITE, 7 s of G.711 RTP from \
         a pcap echoed back by the backend, BYE along the route set)",
        options.calls, options.rate
    );
    let limit = Duration::from_secs(u64::from(options.calls / options.rate.max(1)) + 40);
    let caller = SocketAddr::new(CALLER.into(), 5060);
    let target = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    let result = sipp::place_calls(
        &lab.caller,
        caller,
        target,
        CallKind::Scenario("media_uac"),
        (options.calls, options.rate),
        limit,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let events = daemon.events();
    let setup_ms: HashMap<&str, u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::CallAnswered(answered) => Some((answered.call_id.as_str(), answered.setup_ms)),
            _ => None,
        })
        .collect();
    println!(
        "\n  {:<28} {:>6} {:>9} {:>11} {:>12} {:>12}",
        "call", "code", "setup ms", "duration s", "RTP c->b", "RTP b->c"
    );
    let (mut kernel, mut userspace) = (0u64, 0u64);
    for event in &events {
        match event {
            Event::CallEnded(ended) => {
                let (forward, backward) = ended
                    .rtp_packets
                    .map_or((0, 0), |p| (p.caller_to_callee, p.callee_to_caller));
                println!(
                    "  {:<28} {:>6} {:>9} {:>11.1} {:>12} {:>12}",
                    ended.call_id,
                    ended.final_code.map_or("-".into(), |c| c.to_string()),
                    setup_ms
                        .get(ended.call_id.as_str())
                        .map_or("-".into(), |ms| ms.to_string()),
                    ended.duration_ms.unwrap_or(0) as f64 / 1000.0,
                    forward,
                    backward,
                );
            }
            Event::MediaSessionEnded(ended) => {
                for leg in ended.session.iter().flat_map(|s| &s.legs) {
                    kernel += leg.rtp.kernel_packets;
                    userspace += leg.rtp.userspace_packets;
                }
            }
            _ => {}
        }
    }
    println!(
        "\n  SIPp: {} calls successful, {} failed\n  RTP relayed in the kernel: {kernel} packets \
         ({:.2} %), in userspace: {userspace}",
        result.successful,
        result.failed,
        100.0 * kernel as f64 / (kernel + userspace).max(1) as f64
    );
    let metrics = daemon.metrics()?;
    println!("\n  the same calls as Prometheus scrapes them (GET /metrics, 127.0.0.1:9470):");
    for series in [
        "sbc_calls_attempted_total",
        "sbc_calls_answered_total",
        "sbc_calls_ended_total{reason=\"bye\"}",
        "sbc_session_establishment_ratio",
        "sbc_call_setup_seconds_count{stage=\"answered\"}",
        "sbc_media_packets_total{path=\"kernel\"}",
        "sbc_media_packets_total{path=\"userspace\"}",
    ] {
        println!("    {series} {}", metrics.get(series));
    }
    let silent = metrics.sum("sbc_calls_no_audio_total", &[]);
    println!("    sbc_calls_no_audio_total (all directions) {silent}");
    // SIP of calls that are up, forwarded by the XDP program without the daemon (the BYEs
    // and their 200s; the ACKs arrive before the call is confirmed, and go up).
    for reason in ["forward_sip_request", "forward_sip_response"] {
        let label = format!("reason=\"{reason}\"");
        let forwarded = metrics.sum("sbc_packet_decisions_total", &[&label]);
        println!("    sbc_packet_decisions_total{{{label}}} {forwarded}");
    }
    Ok(())
}

/// Phase two: media sessions through the control API, streamed both ways.
fn media_sessions(lab: &Lab, daemon: &Daemon, options: &DemoOptions) -> anyhow::Result<()> {
    let half = options.sessions / 2;
    println!(
        "\n[4/6] creating {} media sessions through the control API ({half} with RTCP on port + 1, {} rtcp-mux)",
        options.sessions,
        options.sessions - half
    );
    // Peers on ports of their own, clear of the SIPp calls.
    let mut calls = open_calls(daemon, 1000..1000 + half, false)?;
    calls.extend(open_calls(
        daemon,
        1000 + half..1000 + options.sessions,
        true,
    )?);
    let calls: Vec<_> = calls.into_iter().map(|(_, call)| call).collect();

    println!(
        "[5/6] streaming RTP both ways for {} s: one {}-byte G.711 payload every {} ms per stream, RTCP every 500 ms",
        options.seconds,
        RTP_PAYLOAD_BYTES,
        PACKET_INTERVAL.as_millis()
    );
    let before = relayed_packets(daemon)?;
    let duration = Duration::from_secs(options.seconds);
    let traffic = Traffic::start(lab, &calls, duration);
    let start = Instant::now();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        let (kernel, userspace) = relayed_packets(daemon)?;
        println!(
            "      {:>2} s  sent {:>7}  received {:>7}  relayed in kernel {:>7}  in userspace {:>5}",
            start.elapsed().as_secs(),
            traffic
                .progress
                .sent
                .load(std::sync::atomic::Ordering::Relaxed),
            traffic
                .progress
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
            kernel - before.0,
            userspace - before.1
        );
    }
    let report = traffic.finish()?;
    let (kernel, userspace) = relayed_packets(daemon)?;
    let (kernel, userspace) = (kernel - before.0, userspace - before.1);

    println!("[6/6] results\n");
    println!(
        "  {:<16} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "direction", "RTP sent", "RTP recv", "RTCP sent", "RTCP recv", "loss"
    );
    for (name, direction) in [
        ("caller -> callee", report.caller_to_callee()),
        ("callee -> caller", report.callee_to_caller()),
    ] {
        print_direction(name, &direction);
    }
    println!(
        "\n  relayed in the kernel (XDP): {kernel:>8} packets ({:.2} %)\n  relayed in userspace:        {userspace:>8} packets (first packets: latching, ARP)",
        100.0 * kernel as f64 / (kernel + userspace).max(1) as f64
    );
    let stats = daemon.stats()?;
    if let Some(reasons) = &stats.xdp_reasons {
        println!("\n  XDP verdicts (whole run):");
        for (name, count) in reasons.iter().filter(|(_, count)| **count != 0) {
            println!("    {name:<26} {count}");
        }
    }
    let latched = daemon
        .sessions()?
        .iter()
        .filter(|s| s.legs.iter().all(|leg| leg.latched))
        .count();
    println!(
        "\n  sessions with both legs latched: {latched} of {}",
        calls.len()
    );
    Ok(())
}

fn print_direction(name: &str, d: &Direction) {
    let loss = 100.0 * (1.0 - d.delivered());
    println!(
        "  {name:<16} {:>10} {:>10} {:>10} {:>10} {:>7.3}%",
        d.rtp_sent, d.rtp_received, d.rtcp_sent, d.rtcp_received, loss
    );
}
