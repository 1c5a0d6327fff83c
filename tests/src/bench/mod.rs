//! `cargo xtask bench`: the relay and the proxy measured side by side in one run, in a lab of
//! network namespaces of its own, so that the noise of a shared machine falls on every
//! configuration alike. Timed assertions have no place in the tests; numbers are made here.
//!
//! The load generators run on CPU 0 and the system under test on CPU 1 (on a machine with at
//! least two), so that each configuration gets the same one core.
pub mod calls;
pub mod flood_cost;
pub mod kernel_cost;
pub mod report;
pub mod scale;

use std::{net::SocketAddr, time::Duration};

use report::{Machine, Measurement, Report, Target};

use crate::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, Lab, SBC_PUBLIC},
    sipp::Backend,
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

/// The CPU of the system under test, and of everything else.
const SUT_CPU: usize = 1;
const LOAD_CPU: usize = 0;

fn sut_cpu() -> Option<usize> {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) > SUT_CPU).then_some(SUT_CPU)
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

/// Admission off: call setup is measured, not the limits.
const NO_LIMITS: &str = "[admission]\nenabled = false\n";

pub fn run(mode: Mode) -> anyhow::Result<Report> {
    pin_load_generators()?;
    let full = mode == Mode::Full;
    let mut measurements: Vec<Measurement> = Vec::new();

    eprintln!("== in-kernel cost (BPF_PROG_TEST_RUN)");
    measurements.extend(kernel_cost::measure(if full {
        10_000_000
    } else {
        1_000_000
    })?);

    let lab = Lab::up("bench")?;
    let backend_address = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend_address)?;
    let sbc_sip = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    {
        let daemon = sbc(&lab, backend_address, "xdp", NO_LIMITS)?;
        eprintln!("== call setup");
        let steps = calls::Steps {
            rates: if full {
                vec![100, 200, 400, 600, 800, 1000, 1200, 1500, 2000, 2500]
            } else {
                vec![100, 200, 400, 800]
            },
            seconds_per_step: if full { 15 } else { 4 },
        };
        measurements.extend(calls::measure(&lab, sbc_sip, "SBC (XDP)", &steps)?);
        eprintln!("== scale and memory");
        measurements.extend(scale::sessions(&daemon, if full { 10_000 } else { 2_000 })?);
        let (count, rate) = if full { (5_000, 250) } else { (1_000, 200) };
        measurements.extend(scale::held_calls(&lab, &daemon, sbc_sip, count, rate)?);
    }
    eprintln!("== flood");
    let (rate, seconds) = if full { (100_000, 20) } else { (100_000, 5) };
    for (dataplane, system) in [
        ("xdp", "SBC (XDP)"),
        ("userspace", "SBC (userspace dataplane)"),
    ] {
        // The production defaults of [admission].
        let daemon = sbc(&lab, backend_address, dataplane, "")?;
        measurements.extend(flood_cost::measure(
            &lab,
            &daemon,
            sbc_sip,
            system,
            rate,
            Duration::from_secs(seconds),
        )?);
    }

    let mut report = Report {
        mode: mode.name(),
        machine: Machine::read(),
        measurements,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    Ok(report)
}

/// The targets of issue 5, judged on this run's numbers.
fn targets(report: &Report) -> Vec<Target> {
    let judged = |text, value: Option<f64>, unit: &str, met: &dyn Fn(f64) -> bool| Target {
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
            "ns",
            &|ns| ns < 200.0,
        ),
        judged(
            "Flood of 100,000 INVITE/s from one source: daemon under 5 % of a core",
            report.find("Flood", "SBC (XDP)", "daemon CPU during the flood"),
            "% of a core",
            &|share| share < 5.0,
        ),
        Target {
            text: "XDP relay: 10x the packets per CPU-second of the userspace relay, and at least plain routing's packets/s",
            measured: None,
            met: None,
        },
        Target {
            text: "p99 added latency of the XDP path under 50 us at 10,000 streams",
            measured: None,
            met: None,
        },
        Target {
            text: "Call setup with media anchoring: 1.5x the calls/s of Kamailio + rtpengine, one core each",
            measured: None,
            met: None,
        },
    ]
}
