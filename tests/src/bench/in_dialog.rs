//! In-dialog request latency: SIPp sets calls up and sends ten INFOs in each, one after the
//! other (`indialog_uac` against an `indialog_uas` backend), timing each INFO to its 200.
//! Through the XDP program (the kernel forwards the INFOs and their answers), through the
//! daemon (the userspace dataplane), and both again while the daemon is saturated by a flood
//! of OPTIONS from a source the guard does not limit: the kernel's path must not care.
use std::{net::SocketAddr, time::Duration};

use super::{report::Measurement, sbc};
use crate::{
    flood::{self, Flood, Mix},
    lab::{CALLER, Lab, ROGUE, SBC_PUBLIC},
    sipp::{self, Backend, CallKind},
};

const SECTION: &str = "In-dialog latency";
const CALLS: u32 = 50;
const INFOS_PER_CALL: usize = 10;
/// No per-source limit: the flood reaches the daemon whatever its rate (an allowlisted
/// trunk's, or a misbehaving backend's).
const UNLIMITED: &str = "[admission]\nenabled = false\n";
/// The flood's rate and length: past what the daemon serves, over the INFOs' whole window.
const FLOOD_RATE: u32 = 100_000;
const FLOOD_FOR: Duration = Duration::from_secs(10);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The rows of each path, with and without the flood.
pub fn measure(lab: &Lab, backend: SocketAddr) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for (dataplane, path) in [
        ("xdp", "SBC (XDP): in the kernel"),
        ("userspace", "SBC (userspace dataplane): through the daemon"),
    ] {
        for flooded in [false, true] {
            let _backend = Backend::start_scenario(
                &lab.callee,
                backend,
                &sipp::scenario("indialog_uas"),
                None,
            )?;
            // The system under test, for as long as its run lasts.
            let _daemon = sbc(lab, backend, dataplane, UNLIMITED)?;
            let system = if flooded {
                format!("{path}, daemon flooded with {FLOOD_RATE} OPTIONS/s")
            } else {
                path.to_owned()
            };
            rows.extend(run(lab, &system, flooded)?);
        }
    }
    Ok(rows)
}

fn run(lab: &Lab, system: &str, flooded: bool) -> anyhow::Result<Vec<Measurement>> {
    let target = SocketAddr::new(SBC_PUBLIC.into(), 5060);
    let placed = std::thread::scope(|scope| {
        let calls = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                SocketAddr::new(CALLER.into(), 5060),
                target,
                CallKind::Scenario("indialog_uac"),
                (CALLS, CALLS),
                Duration::from_secs(60),
            )
        });
        // Once the calls are set up (a second), before their INFOs (four seconds after).
        let flood = flooded.then(|| {
            std::thread::sleep(Duration::from_millis(2000));
            flood::start(
                &lab.rogue,
                SocketAddr::new(ROGUE.into(), 5070),
                target,
                Flood {
                    packets: u64::from(FLOOD_RATE) * FLOOD_FOR.as_secs(),
                    duration: FLOOD_FOR,
                    mix: Mix::Options,
                    pace: Some(FLOOD_RATE),
                },
            )
        });
        let placed = calls.join();
        if let Some(flood) = flood {
            let _ = flood.join();
        }
        placed
    });
    let result = placed.map_err(|_| anyhow::anyhow!("the SIPp thread panicked"))??;
    let mut times = result.response_times_ms.clone();
    times.sort_by(f64::total_cmp);
    // SIPp logs one response time per call and timer: the last INFO's.
    let note = format!(
        "{} samples, {} of {CALLS} calls completed (each with {INFOS_PER_CALL} INFOs); SIPp's timer: 1 ms resolution",
        times.len(),
        result.successful
    );
    Ok(vec![
        Measurement::new(
            SECTION,
            system,
            "INFO to 200, p50",
            percentile(&times, 0.5),
            "ms",
        )
        .note(note.clone()),
        Measurement::new(
            SECTION,
            system,
            "INFO to 200, p99",
            percentile(&times, 0.99),
            "ms",
        )
        .note(note),
    ])
}
