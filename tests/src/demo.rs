//! `cargo xtask demo`: a lab, the daemon with XDP in native mode, a few dozen media sessions
//! with RTP and RTCP both ways, and a report of what arrived and which path relayed it.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    calls::{open_calls, relayed_packets},
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    rtp::{Direction, PACKET_INTERVAL, RTP_PAYLOAD_BYTES, Traffic},
};

#[derive(clap::Args, Debug)]
pub struct DemoOptions {
    /// Media sessions to create (half with RTCP on port + 1, half rtcp-mux).
    #[arg(long, default_value_t = 40)]
    pub sessions: usize,
    /// Seconds of media.
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
    println!("[1/5] building the lab (network namespaces caller, sbc, callee)");
    let lab = Lab::up("demo")?;
    println!("      {}", lab.describe());

    println!(
        "[2/5] starting sbc with the {dataplane} dataplane (XDP in native mode on pub0, priv0)"
    );
    let mut daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            dataplane,
            ..Default::default()
        },
    )?;

    let half = options.sessions / 2;
    println!(
        "[3/5] creating {} media sessions ({half} with RTCP on port + 1, {} rtcp-mux)",
        options.sessions,
        options.sessions - half
    );
    let mut calls = open_calls(&daemon, 0..half, false)?;
    calls.extend(open_calls(&daemon, half..options.sessions, true)?);
    let calls: Vec<_> = calls.into_iter().map(|(_, call)| call).collect();

    println!(
        "[4/5] streaming RTP both ways for {} s: one {}-byte G.711 payload every {} ms per stream, RTCP every 500 ms",
        options.seconds,
        RTP_PAYLOAD_BYTES,
        PACKET_INTERVAL.as_millis()
    );
    let duration = Duration::from_secs(options.seconds);
    let traffic = Traffic::start(&lab, &calls, duration);
    let start = Instant::now();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        let (kernel, userspace) = relayed_packets(&daemon)?;
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
            kernel,
            userspace
        );
    }
    let report = traffic.finish()?;
    let (kernel, userspace) = relayed_packets(&daemon)?;

    println!("[5/5] results\n");
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
    let total = kernel + userspace;
    println!(
        "\n  relayed in the kernel (XDP): {kernel:>8} packets ({:.2} %)\n  relayed in userspace:        {userspace:>8} packets (first packets: latching, ARP)",
        100.0 * kernel as f64 / total.max(1) as f64
    );
    let stats = daemon.api.get("/v1/stats")?.body;
    if let Some(reasons) = stats["xdp_reasons"].as_object() {
        println!("\n  XDP verdicts:");
        for (name, count) in reasons.iter().filter(|(_, c)| c.as_u64() != Some(0)) {
            println!("    {name:<26} {count}");
        }
    }
    let sessions = daemon.api.get("/v1/sessions")?.body;
    let latched = sessions["sessions"]
        .as_array()
        .context("no sessions")?
        .iter()
        .filter(|s| {
            s["legs"]
                .as_array()
                .is_some_and(|legs| legs.iter().all(|l| l["latched"] == Value::Bool(true)))
        })
        .count();
    println!(
        "\n  sessions with both legs latched: {latched} of {}",
        calls.len()
    );
    daemon.stop()?;
    drop(daemon);
    drop(lab);
    println!("\nlab torn down");
    Ok(())
}

fn print_direction(name: &str, d: &Direction) {
    let loss = 100.0 * (1.0 - d.delivered());
    println!(
        "  {name:<16} {:>10} {:>10} {:>10} {:>10} {:>7.3}%",
        d.rtp_sent, d.rtp_received, d.rtcp_sent, d.rtcp_received, loss
    );
}
