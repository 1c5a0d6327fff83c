//! The life of media sessions around the daemon: a crash and restart, running out of ports,
//! and the media timeout.
use std::{collections::BTreeSet, ffi::OsStr, time::Duration};

use sbc::{api::contract::Refusal, events::MediaSessionEnded, media::EndReason};
use sbc_tests::{
    bpftool,
    calls::{open_calls, relayed_packets},
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    privileges::require_lab_privileges,
    rtp::{Traffic, TrafficReport},
};
use serde_json::Value;

/// The ids of the media sessions that ended for `reason`, in the order they ended.
fn ended_sessions(daemon: &Daemon, reason: EndReason) -> Vec<u64> {
    daemon
        .events_of::<MediaSessionEnded>()
        .into_iter()
        .filter(|ended| ended.reason == reason)
        .map(|ended| u64::from(ended.session.expect("its counters").id))
        .collect()
}

fn kernel_packets(maps: &Value) -> u64 {
    maps["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|f| f["packets"].as_u64().unwrap())
        .sum()
}

fn session_ids(daemon: &Daemon) -> BTreeSet<u64> {
    daemon
        .sessions()
        .expect("sessions")
        .iter()
        .map(|s| u64::from(s.id))
        .collect()
}

#[test]
fn media_survives_kill_9_and_a_restarted_daemon_adopts_and_ends_the_sessions() {
    require_lab_privileges();
    let lab = Lab::up("restart").expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let mut opened = open_calls(&daemon, 0..10, false).expect("sessions");
    opened.extend(open_calls(&daemon, 10..20, true).expect("rtcp-mux sessions"));
    let ids: BTreeSet<u64> = opened.iter().map(|(id, _)| u64::from(*id)).collect();
    let calls: Vec<_> = opened.into_iter().map(|(_, call)| call).collect();

    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(7));
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill9();
    let while_down = daemon.maps().expect("sbc maps with the daemon down");
    std::thread::sleep(Duration::from_secs(2));
    let later = daemon.maps().expect("sbc maps with the daemon down");
    assert!(
        kernel_packets(&later) > kernel_packets(&while_down) + 1000,
        "the kernel stopped relaying when the daemon died ({} then {})",
        kernel_packets(&while_down),
        kernel_packets(&later)
    );

    daemon.spawn(&[]).expect("restart");
    assert_eq!(
        session_ids(&daemon),
        ids,
        "the restarted daemon lists other sessions"
    );
    let report = traffic.finish().expect("traffic");
    assert_media_kept(&report, "the crash", &daemon);

    for id in &ids {
        let response = daemon
            .api
            .delete(&format!("/v1/sessions/{id}"))
            .expect("delete");
        assert_eq!(
            response.status, 200,
            "ending adopted session {id}: {}",
            response.body
        );
    }
    let maps = daemon.maps().expect("maps");
    assert_eq!(
        maps["flows"].as_array().unwrap().len(),
        0,
        "flows left behind: {maps}"
    );
    let stats = daemon.stats().expect("stats");
    assert!(
        stats.ports.iter().all(|pool| pool.in_use == 0),
        "ports left allocated: {stats:?}"
    );
    let ended: BTreeSet<u64> = ended_sessions(&daemon, EndReason::Deleted)
        .into_iter()
        .collect();
    assert_eq!(ended, ids, "one end event per adopted session");
}

#[test]
fn an_adopted_session_keeps_the_silence_the_kernel_saw() {
    require_lab_privileges();
    let lab = Lab::up("adopt-idle").expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let calls: Vec<_> = open_calls(&daemon, 0..2, true)
        .expect("sessions")
        .into_iter()
        .map(|(_, call)| call)
        .collect();
    Traffic::start(&lab, &calls, Duration::from_secs(1))
        .finish()
        .expect("traffic");
    // Quiet for two seconds, then the daemon dies and a new one adopts the sessions: their
    // silence started before it, and the media timeout must count it.
    std::thread::sleep(Duration::from_secs(2));
    daemon.kill9();
    daemon.spawn(&[]).expect("restart");
    let sessions = daemon.sessions().expect("sessions");
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        assert!(
            session.idle_ms >= 2000,
            "session {} counts its silence from the adoption: idle {} ms",
            session.id,
            session.idle_ms
        );
    }
}

#[test]
fn port_exhaustion_is_refused_cleanly_and_disturbs_nothing() {
    require_lab_privileges();
    let lab = Lab::up("ports").expect("lab");
    // 20 ports per address: ten RTP/RTCP pairs, so ten sessions.
    let options = DaemonOptions {
        port_min: 20000,
        port_max: 20019,
        ..Default::default()
    };
    let daemon = Daemon::start(&lab, &options).expect("daemon");
    let opened = open_calls(&daemon, 0..10, false).expect("ten sessions fit");
    let before = session_ids(&daemon);

    for rtcp_mux in [false, true] {
        let response = daemon
            .create_session(
                "198.18.1.2:41000".parse().unwrap(),
                "198.18.2.2:51000".parse().unwrap(),
                rtcp_mux,
            )
            .expect("request");
        assert_eq!(response.status, 503, "{}", response.body);
        assert_eq!(response.retry_after, Some(5), "503 without Retry-After");
        let error = response.json::<Refusal>().expect("a refusal").error;
        assert!(
            error.contains("exhausted") && error.contains("20000-20019"),
            "unclear error: {error}"
        );
    }
    assert_eq!(
        session_ids(&daemon),
        before,
        "a refused request changed the sessions"
    );

    let calls: Vec<_> = opened.iter().map(|(_, call)| *call).collect();
    let report = Traffic::start(&lab, &calls, Duration::from_secs(2))
        .finish()
        .expect("traffic");
    for direction in [report.caller_to_callee(), report.callee_to_caller()] {
        assert!(
            direction.delivered() >= 0.999,
            "existing sessions lost media: {direction:?}"
        );
    }

    let freed = opened[0].0;
    assert_eq!(
        daemon
            .api
            .delete(&format!("/v1/sessions/{freed}"))
            .unwrap()
            .status,
        200
    );
    let again = daemon
        .create_session(
            "198.18.1.2:41000".parse().unwrap(),
            "198.18.2.2:51000".parse().unwrap(),
            false,
        )
        .expect("request");
    assert_eq!(
        again.status, 201,
        "freed ports were not reusable: {}",
        again.body
    );
}

#[test]
fn idle_sessions_end_after_the_media_timeout_and_are_reported() {
    require_lab_privileges();
    let lab = Lab::up("timeout").expect("lab");
    let options = DaemonOptions {
        media_timeout_secs: 2,
        ..Default::default()
    };
    let daemon = Daemon::start(&lab, &options).expect("daemon");
    let opened = open_calls(&daemon, 0..2, false).expect("sessions");
    let (active, idle) = (opened[0].0, opened[1].0);

    // Timeout 2 s, checked once a second: the idle session ends within 3 s, the active one
    // within 3 s of its last packet. Each check leaves a second of margin.
    let traffic = Traffic::start(&lab, &[opened[0].1], Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(
        session_ids(&daemon),
        BTreeSet::from([u64::from(active)]),
        "only the idle session should have ended"
    );
    traffic.finish().expect("traffic");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        session_ids(&daemon).is_empty(),
        "the session outlived its media"
    );

    let timeouts = ended_sessions(&daemon, EndReason::MediaTimeout);
    assert_eq!(timeouts, vec![u64::from(idle), u64::from(active)]);
    let stats = daemon.stats().unwrap();
    assert!(stats.ports.iter().all(|pool| pool.in_use == 0), "{stats:?}");
}

#[test]
fn a_restarted_daemon_reattaches_xdp_to_a_recreated_interface() {
    require_lab_privileges();
    let lab = Lab::up("reattach").expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let calls: Vec<_> = open_calls(&daemon, 0..4, false)
        .expect("sessions")
        .into_iter()
        .map(|(_, call)| call)
        .collect();
    daemon.stop().expect("clean stop");
    lab.recreate_public_interface().expect("new pub0");
    daemon.spawn(&[]).expect("restart");

    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1500));
    let warm = relayed_packets(&daemon).expect("counters");
    let report = traffic.finish().expect("traffic");
    let done = relayed_packets(&daemon).expect("counters");
    for direction in [report.caller_to_callee(), report.callee_to_caller()] {
        assert!(direction.delivered() >= 0.999, "{direction:?}");
    }
    let (kernel, userspace) = (done.0 - warm.0, done.1 - warm.1);
    assert!(
        kernel as f64 >= 0.99 * (kernel + userspace) as f64,
        "XDP is not relaying on the new pub0: {kernel} kernel, {userspace} userspace\n{}",
        daemon.log()
    );
}

/// `max_entries` of a pinned map, as bpftool reads it.
fn pinned_capacity(daemon: &Daemon, map: &str) -> u64 {
    let shown = daemon
        .bpftool_map("show", map)
        .expect("bpftool shows the map");
    shown["max_entries"].as_u64().expect("max_entries")
}

/// Every frame of `report` delivered both ways (at least 99.9 %), across `what`.
fn assert_media_kept(report: &TrafficReport, what: &str, daemon: &Daemon) {
    for direction in [report.caller_to_callee(), report.callee_to_caller()] {
        assert!(
            direction.delivered() >= 0.999,
            "media was lost across {what}: {direction:?}\n{}",
            daemon.log()
        );
    }
}

/// The kernel tables are as large as the port range makes them (10,000 ports on each of two
/// media addresses: 20,000 flows). A restart with a smaller range while sessions hold flows
/// lays the flow table out anew and carries the flows, so media goes on through the restart;
/// the counters holding flows keep their size until the next start with no session. Tables
/// holding nothing take the new size at once.
#[test]
fn the_kernel_tables_follow_the_port_range_and_a_resize_never_costs_a_call() {
    require_lab_privileges();
    let lab = Lab::up("tables").expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    assert_eq!(pinned_capacity(&daemon, "SBC_FLOWS"), 20_000);
    assert_eq!(pinned_capacity(&daemon, "SBC_FLOW_STATS"), 20_000);
    assert_eq!(pinned_capacity(&daemon, "SBC_DIALOGS"), 20_000);

    let opened = open_calls(&daemon, 0..4, true).expect("sessions");
    let ids: Vec<u32> = opened.iter().map(|(id, _)| *id).collect();
    let calls: Vec<_> = opened.into_iter().map(|(_, call)| call).collect();
    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let config = std::fs::read_to_string(&daemon.config).expect("config");

    // A smaller range that still holds the sessions' ports.
    daemon.kill9();
    std::fs::write(
        &daemon.config,
        config.replace("port_max = 29999", "port_max = 24999"),
    )
    .expect("config with a smaller port range");
    daemon.spawn(&[]).expect("restart with sessions held");
    assert_eq!(
        pinned_capacity(&daemon, "SBC_FLOWS"),
        10_000,
        "the flow table does not follow the range"
    );
    assert!(
        daemon.log().contains("its flows are carried"),
        "the new layout is not reported:\n{}",
        daemon.log()
    );
    assert_eq!(pinned_capacity(&daemon, "SBC_FLOW_STATS"), 20_000);
    assert_eq!(
        pinned_capacity(&daemon, "SBC_DIALOGS"),
        10_000,
        "an empty table kept its old size"
    );
    assert!(
        daemon.log().contains("kept until a start without calls"),
        "the kept size is not reported:\n{}",
        daemon.log()
    );

    let report = traffic.finish().expect("traffic");
    assert_media_kept(&report, "the restart", &daemon);

    for id in ids {
        let response = daemon
            .api
            .delete(&format!("/v1/sessions/{id}"))
            .expect("delete");
        assert_eq!(response.status, 200, "{}", response.body);
    }
    daemon.stop().expect("stop");
    daemon.spawn(&[]).expect("restart without sessions");
    assert_eq!(pinned_capacity(&daemon, "SBC_FLOWS"), 10_000);
    assert_eq!(pinned_capacity(&daemon, "SBC_FLOW_STATS"), 10_000);
    let more = open_calls(&daemon, 0..2, true).expect("sessions in the resized tables");
    let calls: Vec<_> = more.into_iter().map(|(_, call)| call).collect();
    let report = Traffic::start(&lab, &calls, Duration::from_secs(2))
        .finish()
        .expect("traffic");
    let (kernel, _) = relayed_packets(&daemon).expect("relayed packets");
    assert!(
        kernel > 0,
        "nothing relayed in the kernel after the resize: {report:?}"
    );
}

/// Packets each flow had counted under the earlier build, in the test below.
const EARLIER_PACKETS: u64 = 1_000_000;

/// Replaces the pinned flow counters with a table of the layout builds before 2026-12-05 made
/// (96 bytes a flow and CPU: packets, bytes, last seen, foreign drops, then a 64-byte next-hop
/// memo, here garbage that would misroute if it were taken as a memo), holding
/// `EARLIER_PACKETS` for each installed flow, last seen now.
fn pin_earlier_flow_counters(daemon: &Daemon) {
    let flows = bpftool::published_flows(&daemon.bpftool_map("dump", "SBC_FLOWS").expect("flows"));
    let capacity = pinned_capacity(daemon, "SBC_FLOW_STATS").to_string();
    let path = daemon.pin_dir.join("SBC_FLOW_STATS");
    std::fs::remove_file(&path).expect("unpin the counters");
    let layout = [
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "96",
        "entries",
        &capacity,
    ];
    let create = ["map".as_ref(), "create".as_ref(), path.as_os_str()]
        .into_iter()
        .chain(layout.iter().map(OsStr::new))
        .chain(["name", "SBC_FLOW_STATS"].map(OsStr::new));
    bpftool::run(create).expect("bpftool creates the earlier counters");
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    let mut value = Vec::new();
    for counter in [EARLIER_PACKETS, EARLIER_PACKETS * 160, now_ns, 7] {
        value.extend(counter.to_le_bytes());
    }
    value.extend([0xff; 64]);
    let value: Vec<String> = value.iter().map(u8::to_string).collect();
    for (_, flow) in &flows {
        let slot = flow["stats_slot"].as_u64().expect("stats_slot") as u32;
        let key: Vec<String> = slot.to_le_bytes().iter().map(u8::to_string).collect();
        // bpftool writes the value to every CPU's copy.
        let update = ["map", "update", "pinned"]
            .map(OsStr::new)
            .into_iter()
            .chain([path.as_os_str(), OsStr::new("key")])
            .chain(key.iter().map(OsStr::new))
            .chain([OsStr::new("value")])
            .chain(value.iter().map(OsStr::new));
        bpftool::run(update).expect("bpftool writes the earlier counters");
    }
}

/// Four calls relaying media through a daemon that is killed, its pins rewritten by `earlier`
/// as an earlier build would have left them, and started again: the new build must say it
/// `carried` them and keep every call with its media. The lab, the daemon and `sbc maps`
/// after, for the checks of each upgrade, with what `earlier` returned.
fn upgrade_with_calls_relaying<T>(
    name: &str,
    earlier: impl FnOnce(&Daemon) -> T,
    carried: &str,
) -> (Lab, Daemon, Value, T) {
    require_lab_privileges();
    let lab = Lab::up(name).expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let opened = open_calls(&daemon, 0..4, false).expect("sessions");
    let ids: BTreeSet<u64> = opened.iter().map(|(id, _)| u64::from(*id)).collect();
    let calls: Vec<_> = opened.into_iter().map(|(_, call)| call).collect();
    let traffic = Traffic::start(&lab, &calls, Duration::from_secs(6));
    std::thread::sleep(Duration::from_secs(1));
    daemon.kill9();
    let found = earlier(&daemon);
    daemon
        .spawn(&[])
        .expect("the new build starts over the earlier pins");
    assert!(
        daemon.log().contains(carried),
        "no word of what was carried ({carried}):\n{}",
        daemon.log()
    );
    let report = traffic.finish().expect("traffic");
    assert_media_kept(&report, "the upgrade", &daemon);
    assert_eq!(session_ids(&daemon), ids, "a session was lost");
    let maps = daemon.maps().expect("maps");
    assert_eq!(
        maps["flows"].as_array().map(Vec::len),
        Some(16),
        "four sessions of four flows: {maps}"
    );
    (lab, daemon, maps, found)
}

/// An upgrade from a build whose flow counters had the earlier layout, with calls relaying
/// media: the new daemon carries each flow's counters into its own layout and keeps every
/// call; its program relays with the new table and does not take the old memo.
#[test]
fn an_upgrade_carries_the_flow_counters_of_the_earlier_layout_and_keeps_every_call() {
    let (_lab, daemon, maps, ()) = upgrade_with_calls_relaying(
        "counters-up",
        pin_earlier_flow_counters,
        "carried into the new one",
    );
    let shown = daemon
        .bpftool_map("show", "SBC_FLOW_STATS")
        .expect("the new counters");
    assert_eq!(shown["bytes_value"].as_u64(), Some(64), "{shown}");
    for flow in maps["flows"].as_array().expect("flows") {
        let packets = flow["packets"].as_u64().expect("packets");
        assert!(
            packets > EARLIER_PACKETS,
            "a flow's counters were not carried, or it relayed nothing since: {flow}"
        );
    }
}

/// Replaces the pinned flow table with one of the form builds before 2026-12-05 made: a hash
/// table by local address and port (`FlowKey`, 20 bytes) of `Flow`s, holding each installed
/// flow as the kernel table publishes it.
fn pin_earlier_flow_table(daemon: &Daemon) {
    let dump = daemon.bpftool_map("dump", "SBC_FLOWS").expect("flows");
    let raw = |entry: &Value, part: &str| -> Vec<u8> {
        entry[part]
            .as_array()
            .expect("raw bytes")
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    let locals: std::collections::HashMap<u64, String> = daemon.maps().expect("maps")["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| {
            (
                flow["table_entry"].as_u64().unwrap(),
                flow["local"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let capacity = pinned_capacity(daemon, "SBC_FLOWS").to_string();
    for name in ["SBC_FLOWS", "SBC_FLOW_LAYOUT"] {
        std::fs::remove_file(daemon.pin_dir.join(name)).expect("unpin the flow table");
    }
    let path = daemon.pin_dir.join("SBC_FLOWS");
    let layout = [
        "type",
        "hash",
        "key",
        "20",
        "value",
        "68",
        "entries",
        &capacity,
        "flags",
        "1",
        "name",
        "SBC_FLOWS",
    ];
    let create = ["map".as_ref(), "create".as_ref(), path.as_os_str()]
        .into_iter()
        .chain(layout.iter().map(OsStr::new));
    bpftool::run(create).expect("bpftool creates the earlier flow table");
    let mut written = 0;
    for entry in dump.as_array().expect("entries") {
        let index = u32::from_le_bytes(raw(entry, "key").try_into().unwrap());
        let Some(local) = locals.get(&u64::from(index)) else {
            continue;
        };
        let local: std::net::SocketAddrV4 = local.parse().expect("an IPv4 lab address");
        let mut key = vec![0u8; 10];
        key.extend([0xff, 0xff]);
        key.extend(local.ip().octets());
        key.extend(local.port().to_be_bytes());
        key.extend([17, 0]);
        let value = raw(entry, "value");
        let sequence = u32::from_le_bytes(value[..4].try_into().unwrap());
        let start = 4 + 68 * (sequence as usize & 1);
        let mut flow = value[start..start + 68].to_vec();
        // The earlier table had no "installed" mark (bit 3 of the flags, at byte 54).
        flow[54] &= !(sbc_common::flow_table::FLOW_INSTALLED as u8);
        let hex = |bytes: &[u8]| bytes.iter().map(u8::to_string).collect::<Vec<_>>();
        let update = ["map", "update", "pinned"]
            .map(OsStr::new)
            .into_iter()
            .chain([path.as_os_str(), OsStr::new("key")])
            .map(OsStr::to_owned)
            .chain(hex(&key).into_iter().map(Into::into))
            .chain([OsStr::new("value").to_owned()])
            .chain(hex(&flow).into_iter().map(Into::into));
        bpftool::run(update).expect("bpftool writes an earlier flow");
        written += 1;
    }
    assert_eq!(written, locals.len(), "every installed flow was written");
}

/// An upgrade from a build that kept the flows in a hash table, with calls relaying media: the
/// new daemon carries every flow into its table (addressed by port) before its program is
/// attached, and keeps every call with its counters.
#[test]
fn an_upgrade_carries_the_flows_of_the_earlier_hash_table_and_keeps_every_call() {
    let earlier = |daemon: &Daemon| {
        let before = kernel_packets(&daemon.maps().expect("maps"));
        pin_earlier_flow_table(daemon);
        before
    };
    let (_lab, daemon, maps, before) =
        upgrade_with_calls_relaying("table-up", earlier, "its flows are carried");
    let shown = daemon.bpftool_map("show", "SBC_FLOWS").expect("the table");
    assert_eq!(shown["type"].as_str(), Some("array"), "{shown}");
    assert!(
        kernel_packets(&maps) > before,
        "the counters were lost, or the kernel relayed nothing since: {before} then {maps}"
    );
}
