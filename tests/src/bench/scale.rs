//! Scale and memory: media sessions created and deleted per second through the control API
//! (one client, one request at a time), and what calls cost in memory: the daemon's resident
//! set per 1,000 sessions and per 1,000 SIP calls held up by SIPp, and the kernel maps.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use sbc::api::contract::SessionInfo;

use super::report::Measurement;
use crate::{
    daemon::Daemon,
    lab::{CALLEE, CALLER, Lab},
    sipp::{self, CallKind},
};

const SECTION: &str = "Scale and memory";

/// The daemon's resident set, from /proc.
pub fn resident_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc status")
}

/// The kernel memory of every BPF map the process holds (`memlock` in its fds' fdinfo).
pub fn map_memory_bytes(pid: u32) -> anyhow::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if let (Some(_), Some(id), Some(memlock)) =
            (field("map_type:"), field("map_id:"), field("memlock:"))
            && seen.insert(id)
        {
            total += memlock.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(total)
}

fn session_count(daemon: &Daemon) -> anyhow::Result<u64> {
    Ok(daemon.stats()?.sessions as u64)
}

/// Creates `count` sessions one request at a time, then deletes them.
pub fn sessions(daemon: &Daemon, count: u32) -> anyhow::Result<Vec<Measurement>> {
    let pid = daemon.pid().context("daemon not running")?;
    let before = resident_kib(pid)?;
    let maps_idle = map_memory_bytes(pid)?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..count {
        let port = 10_000 + (i % 50_000) as u16;
        let session: SessionInfo = daemon
            .create_session(
                SocketAddr::new(CALLER.into(), port),
                SocketAddr::new(CALLEE.into(), port),
                true,
            )?
            .expect(201)
            .with_context(|| format!("session {i} refused"))?;
        ids.push(session.id);
    }
    let created = started.elapsed();
    let after = resident_kib(pid)?;
    let maps = map_memory_bytes(pid)?;
    let started = Instant::now();
    for id in &ids {
        let _: SessionInfo = daemon
            .api
            .delete(&format!("/v1/sessions/{id}"))?
            .expect(200)
            .with_context(|| format!("delete {id}"))?;
    }
    let deleted = started.elapsed();
    let per_thousand = f64::from(count) / 1000.0;
    let system = "SBC";
    Ok(vec![
        Measurement::new(
            SECTION,
            system,
            "media sessions created per second (API)",
            f64::from(count) / created.as_secs_f64(),
            "sessions/s",
        )
        .note(format!("{count} sessions, rtcp-mux, one client")),
        Measurement::new(
            SECTION,
            system,
            "media sessions deleted per second (API)",
            f64::from(count) / deleted.as_secs_f64(),
            "sessions/s",
        ),
        Measurement::new(
            SECTION,
            system,
            "daemon memory per 1,000 media sessions",
            (after - before) / per_thousand / 1024.0,
            "MiB",
        )
        .note("resident set growth"),
        Measurement::new(
            SECTION,
            system,
            "kernel map memory with no session",
            maps_idle as f64 / (1024.0 * 1024.0),
            "MiB",
        )
        .note("all maps; the flow table and its counters sized from the port range, the guard's for floods"),
        Measurement::new(
            SECTION,
            system,
            "kernel map memory per 1,000 media sessions",
            (maps.saturating_sub(maps_idle)) as f64 / per_thousand / (1024.0 * 1024.0),
            "MiB",
        )
        .note("dialogs and callers allocated as calls use them; the flow table and counters are whole"),
    ])
}

/// Holds `count` SIP calls up (SIPp, `rate` per second) and measures the daemon's memory
/// with all of them up.
pub fn held_calls(
    lab: &Lab,
    daemon: &Daemon,
    target: SocketAddr,
    count: u32,
    rate: u32,
) -> anyhow::Result<Vec<Measurement>> {
    let pid = daemon.pid().context("daemon not running")?;
    let before = resident_kib(pid)?;
    let ramp = Duration::from_secs_f64(f64::from(count) / f64::from(rate));
    let hold = ramp + Duration::from_secs(10);
    let (result, peak) = std::thread::scope(|scope| {
        let calls = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                SocketAddr::new(CALLER.into(), 5060),
                target,
                CallKind::Held(hold),
                (count, rate),
                ramp + hold + Duration::from_secs(30),
            )
        });
        let deadline = Instant::now() + ramp + Duration::from_secs(8);
        let mut peak = (0, before);
        while Instant::now() < deadline {
            let up = session_count(daemon)?;
            peak = (up, resident_kib(pid)?);
            if up >= u64::from(count) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let result = calls.join().expect("SIPp thread")?;
        anyhow::Ok((result, peak))
    })?;
    let (up, resident) = peak;
    ensure!(
        up >= u64::from(count) * 99 / 100,
        "only {up} of {count} calls were up at once ({} failed)",
        result.failed
    );
    Ok(vec![
        Measurement::new(
            SECTION,
            "SBC",
            "daemon memory per 1,000 calls up",
            (resident - before) / (up as f64 / 1000.0) / 1024.0,
            "MiB",
        )
        .note(format!(
            "{up} SIP calls with media sessions, resident set growth"
        )),
    ])
}
