//! A fleet of three nodes (two active, one standby) with keepalived and Redis: a node is lost
//! in the middle of its calls (its daemon killed with SIGKILL, its keepalived too, its link
//! down) and the standby takes its address group over: every call keeps its media, is
//! re-INVITEd and hung up through the standby afterwards, and ends exactly once.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::{
    events::{CallEnd, CallEnded, Event, GroupTakenOver, Kind},
    media::session::Leg,
    proxy::core::calls::CallState,
};
use sbc_tests::{
    daemon::{Daemon, sbc_binary},
    fleet::{BACKEND, CARRIER, FleetLab, GROUPS, Keepalived, REDIS, wait_until},
    privileges::require_lab_privileges,
    redis::RedisServer,
    rtp::{Call, Traffic},
    sipp::{self, Backend, CallKind},
};

/// Calls per active node.
const CALLS: usize = 50;
/// The media gap the fleet promises when a node is lost (keepalived's detection dominates).
const MAX_GAP: Duration = Duration::from_secs(3);
/// A node that stays up loses no media.
const MAX_LOSS_ELSEWHERE: Duration = Duration::from_millis(100);
const CALLER_PORT_BASE: u16 = 40000;
const CALLEE_PORT_BASE: u16 = 50000;

/// The calls `daemon` holds, all answered, with the lab's RTP peers of call `first + i`.
fn media_of(daemon: &Daemon, first: usize) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let calls = loop {
        let calls = daemon.calls().expect("GET /v1/calls");
        if calls.len() == CALLS && calls.iter().all(|c| c.state == CallState::Answered) {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "calls not all answered: {calls:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let session = call.media[0].as_ref().expect("the call's media session");
            let port = |base: u16| base + 2 * (first + i) as u16;
            Call {
                caller: SocketAddr::new(CARRIER.into(), port(CALLER_PORT_BASE)),
                caller_sends_to: session.legs[Leg::A].local_rtp,
                callee: SocketAddr::new(BACKEND.into(), port(CALLEE_PORT_BASE)),
                callee_sends_to: session.legs[Leg::B].local_rtp,
                rtcp_mux: false,
            }
        })
        .collect()
}

/// Every node's keepalived and sbc log, for a failure's message.
fn logs(keepalived: &BTreeMap<&str, Keepalived>, daemons: &BTreeMap<&str, Daemon>) -> String {
    let mut all = String::new();
    for (name, daemon) in daemons {
        if let Some(vrrp) = keepalived.get(name) {
            all += &format!("==== keepalived on node {name}\n{}\n", vrrp.log());
        }
        all += &format!("==== sbc on node {name}\n{}\n", daemon.log());
    }
    all
}

/// Whether the node's daemon serves `group`.
fn serving(daemon: &Daemon, group: &str) -> bool {
    daemon
        .status()
        .ok()
        .and_then(|status| status.cluster)
        .is_some_and(|cluster| cluster.state == "serving" && cluster.group == group)
}

#[test]
fn a_lost_node_s_calls_are_taken_over_by_the_standby() {
    require_lab_privileges();
    let lab = FleetLab::up("fleet").expect("fleet lab");
    let redis = RedisServer::start(&lab.backend, REDIS).expect("redis");
    let backend_at = SocketAddr::new(BACKEND.into(), 5060);
    let mut backend = Backend::start_scenario(
        &lab.backend,
        backend_at,
        &sipp::scenario("restart_uas"),
        Some(2 * CALLS as u32),
    )
    .expect("backend");
    let mut daemons = BTreeMap::new();
    for node in &lab.nodes {
        let config = node.sbc_config(backend_at, (20000, 29999));
        let daemon = Daemon::start_node(&node.ns.name, &config).expect("sbc node");
        daemons.insert(node.name, daemon);
    }
    let notify = |name: &str| {
        format!(
            "{} takeover --socket {} --group",
            sbc_binary().display(),
            daemons[name].dir.path().join("api.sock").display()
        )
    };
    // The active nodes first: each becomes master of its group and serves it.
    let mut keepalived = BTreeMap::new();
    for name in ["a", "b"] {
        let started = Keepalived::start(lab.node(name), Some(&notify(name))).expect("keepalived");
        keepalived.insert(name, started);
    }
    for (name, group) in [("a", &GROUPS[0]), ("b", &GROUPS[1])] {
        wait_until(
            &format!("node {name} serving group {}", group.name),
            Duration::from_secs(10),
            || lab.node(name).holds(group) && serving(&daemons[name], group.name),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&keepalived, &daemons)));
    }
    let standby = Keepalived::start(lab.node("s"), Some(&notify("s"))).expect("keepalived");
    keepalived.insert("s", standby);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !serving(&daemons["s"], "a") && !serving(&daemons["s"], "b"),
        "the standby took a group while both active nodes live:\n{}",
        logs(&keepalived, &daemons)
    );

    let (results, report) = std::thread::scope(|scope| {
        // Each call: INVITE, 12 s established, re-INVITE, BYE from the carrier.
        let callers: Vec<_> = GROUPS
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let carrier = &lab.carrier;
                scope.spawn(move || {
                    sipp::place_calls(
                        carrier,
                        SocketAddr::new(CARRIER.into(), 5060 + 10 * index as u16),
                        SocketAddr::new(group.public.into(), 5060),
                        CallKind::Scenario("restart_uac"),
                        (CALLS as u32, 50),
                        Duration::from_secs(60),
                    )
                })
            })
            .collect();
        let mut calls = media_of(&daemons["a"], 0);
        calls.extend(media_of(&daemons["b"], CALLS));
        let traffic = Traffic::between(&lab.carrier, &lab.backend, &calls, Duration::from_secs(8));
        std::thread::sleep(Duration::from_secs(2));
        // Node a is gone: its daemon, its keepalived, its link.
        daemons.get_mut("a").unwrap().kill9();
        keepalived.get_mut("a").unwrap().kill9();
        lab.node("a")
            .ns
            .ip(&["link", "set", "eth0", "down"])
            .expect("link down");
        let lost_at = Instant::now();
        wait_until(
            "the standby serving group a",
            Duration::from_secs(5),
            || serving(&daemons["s"], "a"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&keepalived, &daemons)));
        eprintln!(
            "the standby serves group a {:?} after node a was lost",
            lost_at.elapsed()
        );
        let report = traffic.finish().expect("media");
        let results: Vec<_> = callers
            .into_iter()
            .map(|caller| caller.join().expect("caller thread").expect("SIPp caller"))
            .collect();
        (results, report)
    });

    // Media: every call of node a kept it, with a gap within the bound; node b's lost nothing.
    let worst = |calls: &[[sbc_tests::rtp::Direction; 2]]| {
        calls
            .iter()
            .flat_map(|call| call.iter())
            .map(|direction| direction.rtp_sent.saturating_sub(direction.rtp_received) * 20)
            .max()
            .unwrap_or(0)
    };
    let (lost_node, other_node) = report.calls.split_at(CALLS);
    eprintln!(
        "worst media gap: {} ms on the lost node's calls, {} ms on the other's",
        worst(lost_node),
        worst(other_node)
    );
    for (calls, bound, which) in [
        (lost_node, MAX_GAP, "a call of the lost node"),
        (
            other_node,
            MAX_LOSS_ELSEWHERE,
            "a call of the node that stayed",
        ),
    ] {
        for (i, call) in calls.iter().enumerate() {
            for direction in call {
                let gap_ms = direction.rtp_sent.saturating_sub(direction.rtp_received) * 20;
                assert!(
                    gap_ms <= bound.as_millis() as u64,
                    "{which} ({i}) lost {gap_ms} ms of media: {direction:?}"
                );
                assert!(direction.rtp_received > 0, "{which} ({i}) had no media");
            }
        }
    }

    // Signalling: every call re-INVITEd and hung up afterwards, through the standby for group a.
    for (result, group) in results.iter().zip(GROUPS) {
        assert_eq!(
            (result.successful, result.failed),
            (CALLS as u64, 0),
            "calls of group {}:\n{}\n{}",
            group.name,
            result.output,
            daemons["s"].log()
        );
    }
    assert_eq!(
        backend.wait(Duration::from_secs(15)),
        Some(0),
        "the backend saw every call as scripted:\n{}",
        backend.output()
    );

    // Exactly one end per call, across the fleet; the takeover said what it took.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<Event> = daemons.values().flat_map(Daemon::events).collect();
        let ended = events.iter().filter_map(CallEnded::of_ref).count();
        if ended >= 2 * CALLS || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut ends: BTreeMap<&str, Vec<&CallEnded>> = BTreeMap::new();
    for ended in events.iter().filter_map(CallEnded::of_ref) {
        ends.entry(&ended.call_id).or_default().push(ended);
    }
    assert_eq!(ends.len(), 2 * CALLS, "calls with an end event");
    for (call_id, ended) in &ends {
        assert_eq!(
            ended.len(),
            1,
            "{call_id} ended {} times: {ended:?}",
            ended.len()
        );
        assert_eq!(
            (ended[0].reason, ended[0].final_code),
            (CallEnd::Bye, Some(200)),
            "{ended:?}"
        );
    }
    let taken: Vec<GroupTakenOver> = daemons["s"].events_of();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (
            taken[0].group.as_str(),
            taken[0].calls,
            taken[0].calls_without_media
        ),
        ("a", CALLS as u64, 0),
        "{taken:?}"
    );
    assert_eq!(taken[0].previous_owner.as_deref(), Some("node-a"));
    wait_until(
        "the ended calls gone from Redis",
        Duration::from_secs(5),
        || redis.keys("sbc:call:*").is_ok_and(|keys| keys.is_empty()),
    )
    .expect("Redis cleaned up");
}
