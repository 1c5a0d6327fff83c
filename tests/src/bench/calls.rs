//! Call setup through a proxy with media anchoring: SIPp places short calls (INVITE with an SDP
//! offer, 180, 200 with the answer, ACK, BYE; `bench_uac` against a `bench_uas` backend, both
//! following the route set as RFC 3261 asks) at stepped rates, so every call also gets a media
//! session; the highest rate with fewer than 0.5 % failed calls is the result, with SIPp's
//! response times (INVITE to 200) at that rate. The system under test runs on one core, the
//! load generators on the other.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{SystemUnderTest, report::Measurement};
use crate::{
    lab::{CALLER, Lab},
    sipp::{self, CallKind},
};

const SECTION: &str = "Call setup";
/// The metric of a system's result.
pub const HIGHEST_RATE: &str = "highest rate with < 0.5 % failed";
/// A step fails at this share of failed calls.
const FAILURE_BOUND: f64 = 0.005;

#[derive(Debug, Clone)]
pub struct Steps {
    /// Offered calls per second, in order.
    pub rates: Vec<u32>,
    pub seconds_per_step: u32,
}

/// One step's outcome.
#[derive(Debug, Clone)]
struct Step {
    rate: u32,
    /// Calls answered and hung up.
    successful: u64,
    failed_share: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// SIPp could not place the calls at the offered rate.
    generator_limited: bool,
    /// SIPp did not finish the step (it had to be stopped, or reported nothing).
    unfinished: Option<String>,
    /// The share of one core the system under test's processes used while the calls were
    /// offered, and how
    /// busy its core was (softirqs serving its sockets included): with the core far from
    /// full, the load generators on the other core were the limit, not the system.
    sut_core_share: Option<f64>,
    sut_core_busy: Option<f64>,
}

impl Step {
    /// How busy the system under test was, as a row's note.
    fn load_note(&self) -> String {
        let percent =
            |share: Option<f64>| share.map_or("?".to_owned(), |s| format!("{:.0}", s * 100.0));
        format!(
            "system under test at {} % of a core, its core {} % busy",
            percent(self.sut_core_share),
            percent(self.sut_core_busy)
        )
    }

    fn unfinished_note(&self) -> Option<String> {
        self.unfinished
            .as_ref()
            .map(|why| format!("SIPp did not finish the step: {why}"))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn step(
    lab: &Lab,
    target: SocketAddr,
    sut: &dyn SystemUnderTest,
    rate: u32,
    seconds: u32,
) -> anyhow::Result<Step> {
    let calls = rate * seconds;
    let started = Load::start(sut);
    // The load is read over the offered window: after it, SIPp may wait out the timers of
    // calls that failed, with the system under test idle.
    let (placed, load) = std::thread::scope(|scope| {
        let window = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(u64::from(seconds)));
            started.read(sut)
        });
        let placed = sipp::place_calls(
            &lab.caller,
            SocketAddr::new(CALLER.into(), 5060),
            target,
            CallKind::Scenario("bench_uac"),
            (calls, rate),
            Duration::from_secs(u64::from(seconds) * 3 + 30),
        );
        (placed, window.join().unwrap_or_default())
    });
    let elapsed = started.at.elapsed().as_secs_f64();
    let result = match placed {
        Ok(result) => result,
        // An overloaded step may leave SIPp with nothing to say: the step failed.
        Err(e) => {
            return Ok(Step {
                rate,
                successful: 0,
                failed_share: 1.0,
                p50_ms: f64::NAN,
                p99_ms: f64::NAN,
                generator_limited: false,
                unfinished: Some(format!("{e:#}").lines().next().unwrap_or("").to_owned()),
                sut_core_share: load.share,
                sut_core_busy: load.core_busy,
            });
        }
    };
    let mut times = result.response_times_ms.clone();
    times.sort_by(f64::total_cmp);
    // Calls SIPp never completed count as failed too.
    let failed_share = 1.0 - result.successful as f64 / f64::from(calls);
    Ok(Step {
        rate,
        successful: result.successful,
        failed_share,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        // Short calls take milliseconds: a run much longer than the schedule with (almost)
        // every call answered was SIPp's own pace. With calls failing, SIPp waits out their
        // timers: the system under test was the limit.
        generator_limited: failed_share < FAILURE_BOUND
            && elapsed > f64::from(seconds) * 1.25 + 2.0,
        unfinished: None,
        sut_core_share: load.share,
        sut_core_busy: load.core_busy,
    })
}

/// The system under test's CPU time and its core's busy ticks at a step's start.
struct Load {
    at: Instant,
    cpu: Option<Duration>,
    core: Option<(usize, (u64, u64))>,
}

/// How loaded the system under test was over a window.
#[derive(Default)]
struct LoadRead {
    share: Option<f64>,
    core_busy: Option<f64>,
}

impl Load {
    fn start(sut: &dyn SystemUnderTest) -> Self {
        let core =
            super::sut_cpu().and_then(|cpu| Some((cpu, crate::process_cpu::core_ticks(cpu).ok()?)));
        Self {
            at: Instant::now(),
            cpu: sut.cpu_time().ok(),
            core,
        }
    }

    /// The share of a core its processes used since the start, and how busy its core was
    /// (softirqs serving its sockets included).
    fn read(&self, sut: &dyn SystemUnderTest) -> LoadRead {
        let elapsed = self.at.elapsed().as_secs_f64();
        let share = self
            .cpu
            .zip(sut.cpu_time().ok())
            .map(|(before, after)| (after - before).as_secs_f64() / elapsed);
        let core_busy = self.core.and_then(|(cpu, (busy, total))| {
            let (busy_after, total_after) = crate::process_cpu::core_ticks(cpu).ok()?;
            Some((busy_after - busy) as f64 / (total_after - total).max(1) as f64)
        });
        LoadRead { share, core_busy }
    }
}

/// Steps up the rate against `target` (labelled `system`, `sut`) until a step fails.
pub fn measure(
    lab: &Lab,
    target: SocketAddr,
    system: &str,
    sut: &dyn SystemUnderTest,
    steps: &Steps,
) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    let mut best: Option<Step> = None;
    for &rate in &steps.rates {
        let outcome = step(lab, target, sut, rate, steps.seconds_per_step)?;
        eprintln!("  {system}: {rate} calls/s offered: {outcome:?}");
        let mut notes = vec![outcome.load_note()];
        if outcome.generator_limited {
            notes.push("SIPp could not keep the offered rate (generator-limited)".into());
        }
        notes.extend(outcome.unfinished_note());
        let row = Measurement::new(
            SECTION,
            format!("{system}, {rate} calls/s offered"),
            "failed calls",
            outcome.failed_share * 100.0,
            "%",
        )
        .note(notes.join("; "));
        measurements.push(row);
        if outcome.failed_share >= FAILURE_BOUND || outcome.generator_limited {
            break;
        }
        best = Some(outcome);
    }
    let limit_note = if best.as_ref().map(|b| b.rate) == steps.rates.last().copied() {
        "the highest step offered passed: the true limit is higher"
    } else {
        ""
    };
    let best = best.unwrap_or(Step {
        rate: 0,
        successful: 0,
        failed_share: 1.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        generator_limited: false,
        unfinished: None,
        sut_core_share: None,
        sut_core_busy: None,
    });
    measurements.push(
        Measurement::new(
            SECTION,
            system,
            HIGHEST_RATE,
            f64::from(best.rate),
            "calls/s",
        )
        .note(limit_note),
    );
    for (metric, value) in [
        ("response time p50 at that rate", best.p50_ms),
        ("response time p99 at that rate", best.p99_ms),
    ] {
        measurements.push(
            Measurement::new(SECTION, system, metric, value, "ms")
                .note("SIPp's timer: 1 ms resolution"),
        );
    }
    Ok(measurements)
}

/// Past capacity (RFC 5390, 7339): offered 1.5x and 2x `capacity` calls/s for `seconds`, the
/// share of the capacity still completed as calls (goodput; the goal is at least 90 %), their
/// p99 setup time (the goal: under 1 s), and how many new requests the system under test
/// refused or shed (`refused`: a counter read before and after each step).
pub fn overload(
    lab: &Lab,
    target: SocketAddr,
    system: &str,
    sut: &dyn SystemUnderTest,
    capacity: u32,
    seconds: u32,
    refused: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for factor in [1.5, 2.0] {
        let rate = (f64::from(capacity) * factor).round() as u32;
        let before = refused()?;
        let outcome = step(lab, target, sut, rate, seconds)?;
        let refused = refused()?.saturating_sub(before);
        eprintln!(
            "  {system}: {factor}x capacity ({rate} calls/s): {outcome:?}, {refused} refused"
        );
        let subject = format!("{system}, {factor}x capacity ({rate} calls/s offered)");
        let goodput = outcome.successful as f64 / f64::from(seconds) / f64::from(capacity);
        let rows = vec![
            Measurement::new(
                OVERLOAD,
                &subject,
                "goodput (calls completed / capacity)",
                goodput * 100.0,
                "%",
            )
            .note(
                ["goal: at least 90 %".to_owned(), outcome.load_note()]
                    .into_iter()
                    .chain(outcome.unfinished_note())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Measurement::new(OVERLOAD, &subject, "setup p99", outcome.p99_ms, "ms")
                .note("goal: under 1 s"),
            Measurement::new(
                OVERLOAD,
                &subject,
                "new requests refused or shed",
                refused as f64,
                "",
            ),
        ];
        measurements.extend(rows);
    }
    Ok(measurements)
}

const OVERLOAD: &str = "Overload";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
