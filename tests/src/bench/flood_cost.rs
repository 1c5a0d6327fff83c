//! What a flood costs the system under test: one source sends INVITEs (each with a Call-ID of
//! its own) at a fixed rate, and the CPU time of the system's processes over the flood is
//! compared with the wall time.
use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use super::{SystemUnderTest, report::Measurement};
use crate::{
    flood::{self, Flood, Mix},
    lab::{Lab, ROGUE},
};

const SECTION: &str = "Flood";
/// The CPU of the system under test's processes over the flood, against wall time.
pub const METRIC: &str = "CPU used during the flood";

pub fn measure(
    lab: &Lab,
    system_under_test: &dyn SystemUnderTest,
    target: SocketAddr,
    system: &str,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Vec<Measurement>> {
    let before = system_under_test.cpu_time()?;
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
    Ok(vec![row])
}
