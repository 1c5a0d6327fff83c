//! A node's calls shared with its fleet through Redis (`[cluster]`): a redis-server on the
//! backends' network, 10 held SIPp calls through the sbc. Each call is in Redis with this node
//! as its owner and a TTL; Redis killed during the calls: none is lost, the node reports itself
//! degraded (status, metric, event); a new, empty Redis: every call is written again within
//! seconds; the calls end: their records go. `sbc fleet` lists the node from its heartbeat.
use std::{net::SocketAddr, time::Duration};

use sbc::{cluster::SharedCall, events::Event};
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    redis::RedisServer,
    sipp::{self, Backend, CallKind},
    wait_until,
};

const CALLS: usize = 10;
const CALL_KEYS: &str = "sbc:call:edge-a:*";

/// Waits up to 5 s for `what` to hold.
fn eventually(what: &str, daemon: &Daemon, holds: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(5), holds)
        .unwrap_or_else(|e| panic!("{e}:\n{}", daemon.log()));
}

#[test]
fn calls_are_shared_in_redis_and_survive_its_loss() {
    require_lab_privileges();
    let lab = Lab::up("cluster").expect("lab");
    let redis_at = SocketAddr::new(CALLEE.into(), 6379);
    let redis = RedisServer::start(&lab.callee, redis_at).expect("redis");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            extra_config: format!(
                "[cluster]\nredis = \"redis://{redis_at}\"\nnode = \"edge-a\"\nttl_secs = 6\n"
            ),
            ..Default::default()
        },
    )
    .expect("daemon");
    let (result, redis) = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                SocketAddr::new(CALLER.into(), 5060),
                SocketAddr::new(SBC_PUBLIC.into(), 5060),
                CallKind::Held(Duration::from_secs(12)),
                (CALLS as u32, 10),
                Duration::from_secs(40),
            )
        });
        let redis = while_calls_are_held(&lab, &daemon, redis);
        let result = caller.join().expect("caller thread").expect("SIPp caller");
        (result, redis)
    });
    assert_eq!(
        (result.successful, result.failed),
        (CALLS as u64, 0),
        "{}\n{}",
        result.output,
        daemon.log()
    );
    // Ended calls leave Redis.
    eventually("the ended calls removed", &daemon, || shared(&redis) == 0);
    let events = daemon.events();
    let named = |name: &str| events.iter().filter(|e| e.name() == name).count();
    assert_eq!(named("cluster_degraded"), 1, "{events:?}");
    // Restored once at start (the first write) and once after the loss.
    assert_eq!(named("cluster_restored"), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ClusterRestored(r) if r.calls == CALLS as u64)),
        "{events:?}"
    );
}

fn shared(redis: &RedisServer) -> usize {
    redis.keys(CALL_KEYS).expect("keys").len()
}

/// While the calls are up: each in Redis, owned by this node, with a TTL; Redis lost (the node
/// degraded) and a new, empty one (every call written again). The new Redis.
fn while_calls_are_held(lab: &Lab, daemon: &Daemon, redis: RedisServer) -> RedisServer {
    eventually("the calls in Redis", daemon, || shared(&redis) == CALLS);
    let keys = redis.keys(CALL_KEYS).expect("keys");
    let record: SharedCall =
        serde_json::from_str(&redis.cli(&["GET", &keys[0]]).expect("GET")).expect("a record");
    assert_eq!(record.owner, "edge-a");
    let ttl: i64 = redis
        .cli(&["TTL", &keys[0]])
        .expect("TTL")
        .trim()
        .parse()
        .expect("a TTL");
    assert!((1..=6).contains(&ttl), "TTL {ttl}");
    assert!(
        !redis.keys("sbc:node:edge-a").expect("keys").is_empty(),
        "heartbeat"
    );
    // The fleet as its heartbeats say: this node, its group, its calls.
    let fleet = daemon.command(&["fleet"]).expect("sbc fleet");
    let listing = String::from_utf8_lossy(&fleet.stdout);
    let row = listing
        .lines()
        .find(|line| line.starts_with("edge-a "))
        .unwrap_or_else(|| panic!("no row for the node:\n{listing}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    let calls = CALLS.to_string();
    assert_eq!(
        (fields[1], fields[2], fields[5]),
        ("edge-a", calls.as_str(), "ok"),
        "{listing}"
    );

    // Redis is lost: the calls go on, the node says it is degraded.
    let redis_at = redis.address;
    drop(redis);
    let redis_up = || {
        daemon
            .status()
            .ok()
            .and_then(|s| s.cluster)
            .map(|c| c.redis_up)
    };
    eventually("degraded in status", daemon, || redis_up() == Some(false));
    let metrics = daemon.metrics().expect("metrics");
    assert_eq!(metrics.get("sbc_cluster_redis_up"), 0.0);
    assert_eq!(metrics.get("sbc_cluster_calls"), CALLS as f64);

    // A new Redis, empty: every call is written again.
    let redis = RedisServer::start(&lab.callee, redis_at).expect("redis again");
    eventually("the calls rewritten", daemon, || shared(&redis) == CALLS);
    assert_eq!(redis_up(), Some(true));
    let metrics = daemon.metrics().expect("metrics");
    assert_eq!(metrics.get("sbc_cluster_resyncs_total"), 1.0);
    redis
}
