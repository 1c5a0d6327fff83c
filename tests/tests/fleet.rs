//! A fleet of three nodes (two active, one standby) with keepalived and Redis (`fleet::FleetLab`):
//! a node is lost in the middle of its calls (its daemon killed with SIGKILL, its keepalived
//! too, its link down) and the standby takes its address group over: every call keeps its
//! media, is re-INVITEd and hung up (half by the carrier, half by the backend) through the
//! standby afterwards, and ends exactly once. A drained node hands its group over; a split
//! brain (two nodes holding a group's addresses at once) leaves each call with one owner; the
//! fleet's admission limits hold across nodes.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::{
    cluster::SharedCall,
    events::{CallEnd, CallEnded, Event, GroupReleased, GroupTakenOver, Kind},
};
use sbc_tests::{
    calls::answered_calls_of,
    daemon::{Daemon, sbc_binary},
    fleet::{BACKEND, CARRIER, FleetLab, GROUPS, Keepalived, REDIS},
    privileges::require_lab_privileges,
    redis::RedisServer,
    rtp::{Call, Direction, Traffic},
    sipp::{self, Backend, CallKind, CallerResult},
    wait_until,
};

/// Calls per active node.
const CALLS: usize = 50;
/// The media gap the fleet promises when a node is lost (keepalived's detection dominates).
const MAX_GAP: Duration = Duration::from_secs(3);
/// A node that stays up loses no media.
const MAX_LOSS_ELSEWHERE: Duration = Duration::from_millis(100);
const BACKEND_SIP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(BACKEND), 5060);
/// The backend whose calls the callee hangs up.
const BACKEND_SIP_HANGS_UP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(BACKEND), 5062);

/// The calls `daemon` holds, all answered, with the lab's RTP peers of call `first + i`.
fn media_of(daemon: &Daemon, first: usize) -> Vec<Call> {
    let peers = (CARRIER.into(), BACKEND.into());
    answered_calls_of(daemon, CALLS, Duration::from_secs(15), peers, first)
}

/// The lab running: Redis, the backends, a daemon and keepalived on every node, each active
/// node serving its group and the standby serving none.
struct Fleet {
    lab: FleetLab,
    redis: RedisServer,
    backends: Vec<Backend>,
    daemons: BTreeMap<&'static str, Daemon>,
    keepalived: BTreeMap<&'static str, Keepalived>,
}

impl Fleet {
    /// `scripted`: how many calls the backends' scripts play, half each: one where the caller
    /// hangs up (`restart_uas`), one where the callee does (`restart_uas_callee_hangs_up`),
    /// taking calls in turn; `None`: SIPp's own backend answers every call. `extra`: more of
    /// every node's configuration.
    fn up(tag: &str, scripted: Option<u32>, extra: &str) -> Self {
        let lab = FleetLab::up(tag).expect("fleet lab");
        let redis = RedisServer::start(&lab.backend, REDIS).expect("redis");
        let backends = match scripted {
            Some(calls) => [
                ("restart_uas", BACKEND_SIP),
                ("restart_uas_callee_hangs_up", BACKEND_SIP_HANGS_UP),
            ]
            .into_iter()
            .map(|(script, address)| {
                Backend::start_scenario(
                    &lab.backend,
                    address,
                    &sipp::scenario(script),
                    Some(calls / 2),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>(),
            None => Backend::start(&lab.backend, BACKEND_SIP).map(|backend| vec![backend]),
        }
        .expect("backends");
        let addresses: Vec<SocketAddr> = match scripted {
            Some(_) => vec![BACKEND_SIP, BACKEND_SIP_HANGS_UP],
            None => vec![BACKEND_SIP],
        };
        let mut fleet = Self {
            daemons: BTreeMap::new(),
            keepalived: BTreeMap::new(),
            lab,
            redis,
            backends,
        };
        for node in &fleet.lab.nodes {
            let config = node.sbc_config(&addresses, (20000, 29999)) + extra;
            let daemon = Daemon::start_node(&node.ns.name, &config).expect("sbc node");
            fleet.daemons.insert(node.name, daemon);
        }
        // The active nodes first: each becomes master of its group and serves it.
        for name in ["a", "b"] {
            fleet.start_keepalived(name);
        }
        for (name, group) in [("a", &GROUPS[0]), ("b", &GROUPS[1])] {
            fleet.wait(&format!("node {name} serving group {}", group.name), || {
                fleet.lab.node(name).holds(group) && fleet.serving(name, group.name)
            });
        }
        fleet.start_keepalived("s");
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !fleet.serving("s", "a") && !fleet.serving("s", "b"),
            "the standby took a group while both active nodes live:\n{}",
            fleet.logs()
        );
        fleet
    }

    /// keepalived on node `name`, its notify hook calling `sbc takeover` on the node's daemon.
    fn start_keepalived(&mut self, name: &'static str) {
        let notify = format!(
            "{} takeover --socket {} --group",
            sbc_binary().display(),
            self.daemons[name].dir.path().join("api.sock").display()
        );
        let fault_file = self.daemons[name].dir.path().join("vrrp-fault");
        let started =
            Keepalived::start(self.lab.node(name), Some(&notify), &fault_file).expect("keepalived");
        self.keepalived.insert(name, started);
    }

    /// Whether node `name`'s daemon serves `group`.
    fn serving(&self, name: &str, group: &str) -> bool {
        self.daemons[name]
            .status()
            .ok()
            .and_then(|status| status.cluster)
            .is_some_and(|cluster| cluster.state == "serving" && cluster.group == group)
    }

    /// Waits up to 10 s for `holds`, failing with every log.
    fn wait(&self, what: &str, holds: impl FnMut() -> bool) {
        wait_until(what, Duration::from_secs(10), holds)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Every node's keepalived and sbc log, for a failure's message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (name, daemon) in &self.daemons {
            if let Some(vrrp) = self.keepalived.get(name) {
                all += &format!("==== keepalived on node {name}\n{}\n", vrrp.log());
            }
            all += &format!("==== sbc on node {name}\n{}\n", daemon.log());
        }
        all
    }

    /// Places `CALLS` calls on each group (INVITE, 12 s established, re-INVITE, BYE from either
    /// side) in the background of `during`, which gets each answered call's media.
    fn with_calls<T>(&self, during: impl FnOnce(Vec<Call>) -> T) -> (Vec<CallerResult>, T) {
        std::thread::scope(|scope| {
            let callers: Vec<_> = GROUPS
                .iter()
                .enumerate()
                .map(|(index, group)| {
                    let carrier = &self.lab.carrier;
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
            let mut calls = media_of(&self.daemons["a"], 0);
            calls.extend(media_of(&self.daemons["b"], CALLS));
            let outcome = during(calls);
            let results = callers
                .into_iter()
                .map(|caller| caller.join().expect("caller thread").expect("SIPp caller"))
                .collect();
            (results, outcome)
        })
    }

    /// Every call of both callers went through; the backends played all of them as scripted
    /// (half hung up by the caller, half by the callee); each call ended exactly once across
    /// the fleet, with a BYE answered 200.
    fn assert_every_call_completed_once(&mut self, results: &[CallerResult]) -> Vec<Event> {
        for (result, group) in results.iter().zip(GROUPS) {
            assert_eq!(
                (result.successful, result.failed),
                (CALLS as u64, 0),
                "calls of group {}:\n{}\n{}",
                group.name,
                result.output,
                self.logs()
            );
        }
        for backend in &mut self.backends {
            assert_eq!(
                backend.wait(Duration::from_secs(15)),
                Some(0),
                "a backend saw calls other than scripted:\n{}",
                backend.output()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let events = loop {
            let events: Vec<Event> = self.daemons.values().flat_map(Daemon::events).collect();
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
        wait_until(
            "the ended calls gone from Redis",
            Duration::from_secs(5),
            || {
                self.redis
                    .keys("sbc:call:*")
                    .is_ok_and(|keys| keys.is_empty())
            },
        )
        .expect("Redis cleaned up");
        events
    }
}

/// Every call whose group moved kept its media with a gap within `MAX_GAP`; the calls of the
/// node that stayed lost at most `MAX_LOSS_ELSEWHERE`.
fn assert_media_kept(moved: &[[Direction; 2]], stayed: &[[Direction; 2]]) {
    eprintln!(
        "worst media gap: {} ms on the calls that moved, {} ms on the others",
        worst_gap_ms(moved),
        worst_gap_ms(stayed)
    );
    for (calls, bound, which) in [
        (moved, MAX_GAP, "a call that moved"),
        (stayed, MAX_LOSS_ELSEWHERE, "a call of the node that stayed"),
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
}

/// The worst media gap of these calls, over both directions: packets lost × 20 ms.
fn worst_gap_ms(calls: &[[Direction; 2]]) -> u64 {
    calls
        .iter()
        .flatten()
        .map(|direction| direction.rtp_sent.saturating_sub(direction.rtp_received) * 20)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_lost_node_s_calls_are_taken_over_by_the_standby() {
    require_lab_privileges();
    let mut fleet = Fleet::up("fleet", Some(2 * CALLS as u32), "");
    let (results, report) = fleet.with_calls(|calls| {
        let lab = &fleet.lab;
        let traffic = Traffic::between(&lab.carrier, &lab.backend, &calls, Duration::from_secs(8));
        std::thread::sleep(Duration::from_secs(2));
        // Node a is gone: its daemon, its keepalived, its link.
        fleet.daemons["a"]
            .signal(libc::SIGKILL)
            .expect("kill -9 node a's sbc");
        fleet.keepalived["a"].kill9();
        let link_down = lab.node("a").ns.ip(&["link", "set", "eth0", "down"]);
        link_down.expect("node a's link down");
        let lost_at = Instant::now();
        fleet.wait("the standby serving group a", || fleet.serving("s", "a"));
        eprintln!(
            "the standby serves group a {:?} after node a was lost",
            lost_at.elapsed()
        );
        traffic.finish().expect("media")
    });

    // Media: every call of node a kept it, with a gap within the bound; node b's lost nothing.
    let (moved, stayed) = report.calls.split_at(CALLS);
    assert_media_kept(moved, stayed);
    // Every call re-INVITEd and hung up afterwards (group a's through the standby), once.
    fleet.assert_every_call_completed_once(&results);
    let taken: Vec<GroupTakenOver> = fleet.daemons["s"].events_of();
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
}

/// Scale-in: `sbc drain` on node b (configured to hand over at once) gives its group, with its
/// 50 calls, to the standby through keepalived (the tracked fault file), and the daemon exits.
/// The calls keep their media and end once, through the standby.
#[test]
fn a_drained_node_hands_its_group_and_calls_to_the_standby() {
    require_lab_privileges();
    let mut fleet = Fleet::up("drain", Some(2 * CALLS as u32), "");
    let (results, report) = fleet.with_calls(|calls| {
        let lab = &fleet.lab;
        let traffic = Traffic::between(&lab.carrier, &lab.backend, &calls, Duration::from_secs(8));
        std::thread::sleep(Duration::from_secs(2));
        let drain = fleet.daemons["b"].command(&["drain"]).expect("sbc drain");
        assert!(drain.status.success(), "{drain:?}");
        fleet.wait("the standby serving group b", || fleet.serving("s", "b"));
        fleet.wait("node b's daemon gone", || {
            fleet.daemons["b"].status().is_err()
        });
        traffic.finish().expect("media")
    });
    let (stayed, moved) = report.calls.split_at(CALLS);
    assert_media_kept(moved, stayed);
    fleet.assert_every_call_completed_once(&results);
    let released: Vec<GroupReleased> = fleet.daemons["b"].events_of();
    assert_eq!(released.len(), 1, "{released:?}");
    assert!(released[0].reason.contains("drained"), "{released:?}");
    let taken: Vec<GroupTakenOver> = fleet.daemons["s"].events_of();
    assert_eq!(
        taken
            .iter()
            .map(|t| (t.group.as_str(), t.calls))
            .collect::<Vec<_>>(),
        [("b", CALLS as u64)],
        "{taken:?}"
    );
}

/// A split brain: the standby stops hearing node a's VRRP adverts (nftables drops them) and
/// takes group a's addresses while node a still holds them. The later claim wins: node a
/// finds its writes refused and lets the group go; when the adverts pass again the standby
/// yields the addresses (lower priority) and node a takes the group back from Redis. At every
/// moment each call has one owner, and every call ends once.
#[test]
fn a_split_brain_leaves_each_call_with_one_owner() {
    require_lab_privileges();
    let mut fleet = Fleet::up("split", Some(2 * CALLS as u32), "");
    let node_a = fleet.lab.node("a").address.to_string();
    let (results, (during, after)) = fleet.with_calls(|_| {
        let standby = &fleet.lab.node("s").ns;
        let nft = |script: &str| {
            standby
                .exec("nft", &[script])
                .expect("nft in the standby's namespace");
        };
        nft(&format!(
            "add table ip split; add chain ip split input {{ type filter hook input priority 0; }}; \
             add rule ip split input ip saddr {node_a} ip protocol vrrp drop"
        ));
        fleet.wait("the standby serving group a (split brain)", || {
            fleet.serving("s", "a")
        });
        fleet.wait("node a letting group a go", || !fleet.serving("a", "a"));
        assert!(
            fleet.lab.node("a").holds(&GROUPS[0]) && fleet.lab.node("s").holds(&GROUPS[0]),
            "both nodes hold group a's addresses in a split brain"
        );
        let during = settled_owners(&fleet, "node-s");
        nft("delete table ip split");
        fleet.wait("node a serving group a again", || fleet.serving("a", "a"));
        fleet.wait("the standby back on standby", || !fleet.serving("s", "a"));
        (during, settled_owners(&fleet, "node-a"))
    });
    for (owners, expected, when) in [
        (&during, "node-s", "during the split brain"),
        (&after, "node-a", "after it healed"),
    ] {
        assert_eq!(owners.len(), CALLS, "group a's calls {when}: {owners:?}");
        for (call, (held_by, shared_by)) in owners {
            assert_eq!(
                (held_by.as_slice(), shared_by.as_str()),
                (&[expected.to_owned()][..], expected),
                "call {call} {when}: held by {held_by:?}, shared in Redis by {shared_by}"
            );
        }
    }
    fleet.assert_every_call_completed_once(&results);
    let released: Vec<GroupReleased> = fleet.daemons["a"].events_of();
    assert!(
        released
            .iter()
            .any(|r| r.reason.contains("claimed the group after")),
        "node a let the group go when superseded: {released:?}"
    );
}

/// Group a's calls once `owner` both holds every one and has written them to Redis, or as they
/// stand after 5 s. The group's epoch decides at once; the records' owner follows with the new
/// owner's first write round (every 200 ms), so Redis may name the previous owner briefly. No
/// call is ever held by two nodes: checked in every snapshot.
fn settled_owners(fleet: &Fleet, owner: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = owners(fleet);
        for (call, (held_by, _)) in &snapshot {
            assert!(held_by.len() <= 1, "call {call} held by {held_by:?}");
        }
        let settled = snapshot.len() == CALLS
            && snapshot
                .values()
                .all(|(held_by, shared_by)| held_by == &[owner] && shared_by == owner);
        if settled || Instant::now() > deadline {
            return snapshot;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Group a's calls: which nodes hold each (their `GET /v1/calls`; a node on standby holds
/// none), and which node shares each in Redis.
fn owners(fleet: &Fleet) -> BTreeMap<String, (Vec<String>, String)> {
    let mut owners: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for key in fleet.redis.keys("sbc:call:a:*").expect("redis keys") {
        let text = fleet.redis.cli(&["GET", &key]).expect("redis get");
        let shared: SharedCall = serde_json::from_str(text.trim()).expect("a shared call");
        owners.entry(shared.record.call_id).or_default().1 = shared.owner;
    }
    for (name, daemon) in &fleet.daemons {
        let Ok(calls) = daemon.calls() else { continue };
        if !fleet.serving(name, "a") {
            continue;
        }
        for call in calls {
            let entry = owners.entry(call.call_id).or_default();
            entry.0.push(format!("node-{name}"));
        }
    }
    owners
}

/// Fleet-wide limits (`[cluster.limits] max_calls = 60`): node a holds 40 calls, so node b
/// admits at most the 20 left, refusing the rest with 503 and Retry-After; with Redis gone
/// both fall back to an even share (30 each), and node b admits exactly 30.
#[test]
fn fleet_wide_limits_hold_across_nodes_and_fall_back_to_an_even_share() {
    require_lab_privileges();
    let fleet = Fleet::up("limits", None, "[cluster.limits]\nmax_calls = 60\n");
    let place = |group_index: usize, calls: u32, held: Duration| {
        let carrier = &fleet.lab.carrier;
        let group = &GROUPS[group_index];
        sipp::place_calls(
            carrier,
            SocketAddr::new(CARRIER.into(), 5100 + 10 * group_index as u16),
            SocketAddr::new(group.public.into(), 5060),
            CallKind::HeldScenario("admission_uac", held),
            (calls, 20),
            Duration::from_secs(60),
        )
        .expect("SIPp caller")
    };
    let refused = |name: &str| {
        fleet.daemons[name]
            .admission_totals()
            .expect("admission totals")
            .refused_fleet_max_calls
    };
    std::thread::scope(|scope| {
        let held = scope.spawn(|| place(0, 40, Duration::from_secs(25)));
        fleet.wait("node a holding 40 calls", || {
            fleet.daemons["a"]
                .calls()
                .is_ok_and(|calls| calls.len() == 40)
        });
        // Every call either answered and held or refused with 503 and Retry-After.
        let second = place(1, 40, Duration::from_secs(4));
        assert_eq!(second.successful, 40, "{}", second.output);
        let admitted = 40 - refused("b");
        eprintln!("with Redis: node b admitted {admitted} of 40");
        assert!(
            (10..=20).contains(&admitted),
            "node b admitted {admitted} calls while node a held 40 of the fleet's 60"
        );

        fleet.redis.kill();
        std::thread::sleep(Duration::from_secs(2));
        let refused_before = refused("b");
        let third = place(1, 40, Duration::from_secs(4));
        assert_eq!(third.successful, 40, "{}", third.output);
        let admitted = 40 - (refused("b") - refused_before);
        eprintln!("without Redis: node b admitted {admitted} of 40");
        assert_eq!(admitted, 30, "an even share of the fleet's 60 calls");
        let held = held.join().expect("caller thread");
        assert_eq!(held.successful, 40, "{}", held.output);
        assert_eq!(refused("a"), 0, "node a refused nothing");
    });
}
