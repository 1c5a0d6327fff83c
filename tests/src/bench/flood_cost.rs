//! What a flood costs the system under test: one source sends INVITEs (each with a Call-ID of
//! its own) at a fixed rate, and the CPU time of the system's processes over the flood is
//! compared with the wall time; so is the run time of the sbc's XDP program (the kernel's
//! `bpf_stats`), which softirq spends where no process shows it.
use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use sbc_common::maps::XDP_PROGRAM;

use super::{
    SystemUnderTest,
    bpf_stats::{self, ProgramRuns},
    report::Measurement,
};
use crate::{
    flood::{self, Flood, Mix},
    lab::{Lab, ROGUE},
};

const SECTION: &str = "Flood";
/// The CPU of the system under test's processes over the flood, against wall time.
pub const METRIC: &str = "CPU used during the flood";
/// The XDP program's run time over the flood, against wall time.
pub const XDP_METRIC: &str = "XDP program run time during the flood";
pub fn measure(
    lab: &Lab,
    system_under_test: &dyn SystemUnderTest,
    target: SocketAddr,
    system: &str,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Vec<Measurement>> {
    // Held for the measurement: the kernel counts program run time only while asked to.
    let _stats = bpf_stats::enable()?;
    let before = system_under_test.cpu_time()?;
    let verdicts_before = system_under_test.guard_verdicts();
    let xdp_before = ProgramRuns::of(XDP_PROGRAM)?;
    let report = flood::start(
        &lab.rogue,
        SocketAddr::new(ROGUE.into(), 5060),
        target,
        Flood {
            packets: (f64::from(rate) * duration.as_secs_f64()) as u64,
            duration: duration + Duration::from_secs(2),
            mix: Mix::Invites,
            pace: Some(rate),
        },
    )
    .join()
    .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
    .context("flood")?;
    let used = system_under_test.cpu_time()? - before;
    let xdp_used = ProgramRuns::of(XDP_PROGRAM)?.since(xdp_before).time;
    let verdicts: Vec<String> = system_under_test
        .guard_verdicts()
        .into_iter()
        .zip(verdicts_before)
        .map(|((name, after), (_, before))| format!("{name} {}", after - before))
        .collect();
    let achieved = report.packets_per_sec();
    let mut row = Measurement::new(
        SECTION,
        system,
        METRIC,
        used.as_secs_f64() / report.elapsed.as_secs_f64() * 100.0,
        "% of a core",
    )
    .note(format!(
        "{achieved:.0} INVITE/s from one source for {:.0} s",
        report.elapsed.as_secs_f64()
    ));
    if achieved < f64::from(rate) * 0.95 {
        row.note += " (generator-limited)";
    }
    if !verdicts.is_empty() {
        row.note += &format!("; guard: {}", verdicts.join(", "));
    }
    let mut rows = vec![row];
    if !xdp_used.is_zero() {
        let per_packet = xdp_used.as_nanos() as f64 / report.sent.max(1) as f64;
        rows.push(
            Measurement::new(
                SECTION,
                system,
                XDP_METRIC,
                xdp_used.as_secs_f64() / report.elapsed.as_secs_f64() * 100.0,
                "% of a core",
            )
            .note(format!("{per_packet:.0} ns per datagram (bpf_stats)")),
        );
    }
    Ok(rows)
}
