//! Fleet-wide admission limits (`[cluster.limits]`): a global rate of new INVITEs and a global
//! number of concurrent calls, shared out among the nodes serving a group.
//!
//! Nothing on the call-setup path asks Redis: every quarter second each node reports its use
//! (calls, INVITEs offered per second) to one Redis hash and reads everyone's, and gives its
//! proxy its share: its own calls plus a part of the headroom left, and a part of the rate, in
//! proportion to the demand each node sees (an idle node leaves its part to busy ones). A
//! node that cannot reach Redis for a second falls back to an even share (the limit divided
//! by the nodes it last saw, or by the configured groups).
use std::{
    collections::HashMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{admission::FleetShare, clock::unix_ms, proxy::ProxyHandle};

/// `[cluster.limits]`: 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetLimits {
    /// New INVITEs per second across the fleet.
    pub invites_per_sec: u32,
    /// Concurrent calls across the fleet.
    pub max_calls: u32,
}

impl FleetLimits {
    pub fn any(&self) -> bool {
        self.invites_per_sec > 0 || self.max_calls > 0
    }
}

/// A node's use of the fleet's limits, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    /// New INVITEs per second it saw (admitted or not): its demand.
    pub offered_per_sec: f64,
    pub unix_ms: u64,
}

/// Where every node's use is: a hash, node → `Usage`.
const USAGE_KEY: &str = "sbc:usage";
const SHARE_EVERY: Duration = Duration::from_millis(250);
/// A report older than this is a node that stopped (its calls, if taken over, are counted by
/// the node that took them).
const STALE_AFTER_MS: u64 = 2_000;
/// Without Redis this long, a node falls back to an even share.
const FALL_BACK_AFTER: Duration = Duration::from_secs(1);

/// This node's share given its use and the other nodes' (all fresh).
pub fn share_of(limits: FleetLimits, own: &Usage, others: &[Usage]) -> FleetShare {
    let nodes = (1 + others.len()) as f64;
    let everyone = || std::iter::once(own).chain(others);
    let demand: f64 = everyone().map(|u| u.offered_per_sec.max(0.0)).sum();
    let weight = if demand > 0.0 {
        own.offered_per_sec.max(0.0) / demand
    } else {
        1.0 / nodes
    };
    let max_calls = (limits.max_calls > 0).then(|| {
        let used: u64 = everyone().map(|u| u.calls).sum();
        let headroom = u64::from(limits.max_calls).saturating_sub(used);
        let share = own.calls + (headroom as f64 * weight).floor() as u64;
        u32::try_from(share).unwrap_or(u32::MAX)
    });
    let invites_per_sec = (limits.invites_per_sec > 0).then(|| {
        let global = f64::from(limits.invites_per_sec);
        let share = if demand <= global {
            // Everyone gets what it asks, and the rest is split evenly.
            own.offered_per_sec.max(0.0) + (global - demand) / nodes
        } else {
            global * weight
        };
        (share.floor() as u32).max(1)
    });
    FleetShare {
        invites_per_sec,
        max_calls,
    }
}

/// The even share of `nodes` nodes.
pub fn fallback(limits: FleetLimits, nodes: usize) -> FleetShare {
    let nodes = nodes.max(1) as u32;
    FleetShare {
        invites_per_sec: (limits.invites_per_sec > 0)
            .then(|| (limits.invites_per_sec / nodes).max(1)),
        max_calls: (limits.max_calls > 0).then(|| limits.max_calls / nodes),
    }
}

/// Keeps the proxy's share of the fleet's limits current, for as long as the node serves.
/// `groups`: how many groups the fleet has (the nodes to share among before Redis has said).
pub async fn keep_shared(
    client: redis::Client,
    node: String,
    limits: FleetLimits,
    groups: usize,
    proxy: ProxyHandle,
) {
    let mut nodes_seen = groups.max(1);
    let mut applied: Option<FleetShare> = None;
    let mut reached = Instant::now();
    let mut falling_back = false;
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let (mut offered_before, mut measured_at) = (offered(&proxy), Instant::now());
    let mut tick = tokio::time::interval(SHARE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let offered_now = offered(&proxy);
        let elapsed = measured_at.elapsed().as_secs_f64().max(0.001);
        let own = Usage {
            calls: proxy.active_calls(),
            offered_per_sec: offered_now.saturating_sub(offered_before) as f64 / elapsed,
            unix_ms: unix_ms(),
        };
        (offered_before, measured_at) = (offered_now, Instant::now());
        let exchanged = exchange(&client, &mut connection, &node, &own);
        let share = match tokio::time::timeout(SHARE_EVERY * 2, exchanged).await {
            Ok(Ok(others)) => {
                reached = Instant::now();
                if falling_back {
                    info!("fleet limits: Redis is back, sharing by demand again");
                    falling_back = false;
                }
                nodes_seen = 1 + others.len();
                share_of(limits, &own, &others)
            }
            failed => {
                connection = None;
                if reached.elapsed() < FALL_BACK_AFTER {
                    continue;
                }
                if !falling_back {
                    let why = match failed {
                        Ok(Err(e)) => format!("{e:#}"),
                        _ => "no answer".to_owned(),
                    };
                    warn!(
                        nodes = nodes_seen,
                        "fleet limits: Redis is away ({why}); admitting this node's even share"
                    );
                    falling_back = true;
                }
                fallback(limits, nodes_seen)
            }
        };
        if applied != Some(share) {
            proxy.fleet_share(share);
            applied = Some(share);
        }
    }
}

fn offered(proxy: &ProxyHandle) -> u64 {
    proxy.admission.invites_offered.load(Ordering::Relaxed)
}

/// Reports this node's use and reads the other nodes' fresh reports.
async fn exchange(
    client: &redis::Client,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    node: &str,
    own: &Usage,
) -> anyhow::Result<Vec<Usage>> {
    if connection.is_none() {
        *connection = Some(client.get_multiplexed_async_connection().await?);
    }
    let connection = connection.as_mut().expect("connected above");
    let (all,): (HashMap<String, String>,) = redis::pipe()
        .hset(USAGE_KEY, node, serde_json::to_string(own)?)
        .ignore()
        .hgetall(USAGE_KEY)
        .query_async(connection)
        .await?;
    let now = own.unix_ms;
    let mut stale = Vec::new();
    let others = all
        .into_iter()
        .filter(|(name, _)| name != node)
        .filter_map(|(name, text)| {
            let usage: Usage = serde_json::from_str(&text).ok()?;
            if now.saturating_sub(usage.unix_ms) > STALE_AFTER_MS {
                stale.push(name);
                return None;
            }
            Some(usage)
        })
        .collect();
    if !stale.is_empty() {
        let _: () = connection.hdel(USAGE_KEY, stale).await?;
    }
    Ok(others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(calls: u64, offered_per_sec: f64) -> Usage {
        Usage {
            calls,
            offered_per_sec,
            unix_ms: 0,
        }
    }

    #[test]
    fn the_headroom_and_the_rate_go_where_the_demand_is() {
        let limits = FleetLimits {
            invites_per_sec: 100,
            max_calls: 60,
        };
        // Node a holds 40 calls and sees no new ones; this node asks: the 20 left are its.
        let share = share_of(limits, &usage(0, 50.0), &[usage(40, 0.0)]);
        assert_eq!(share.max_calls, Some(20));
        // Demand within the rate: each gets what it asks, the rest evenly.
        assert_eq!(share.invites_per_sec, Some(75));
        // Over the rate: split by demand.
        let share = share_of(limits, &usage(10, 150.0), &[usage(10, 50.0)]);
        assert_eq!(share.invites_per_sec, Some(75));
        assert_eq!(share.max_calls, Some(10 + 30));
        // Nobody asks: the headroom is split evenly; a full fleet leaves a node its own calls.
        let share = share_of(limits, &usage(10, 0.0), &[usage(10, 0.0), usage(10, 0.0)]);
        assert_eq!(share.max_calls, Some(10 + 10));
        let full = share_of(limits, &usage(30, 5.0), &[usage(40, 5.0)]);
        assert_eq!(full.max_calls, Some(30));
        // No limits configured: none shared.
        let none = share_of(FleetLimits::default(), &usage(1, 1.0), &[]);
        assert_eq!(none, FleetShare::default());
        // Redis away: an even share of what the node last saw.
        assert_eq!(
            fallback(limits, 2),
            FleetShare {
                invites_per_sec: Some(50),
                max_calls: Some(30)
            }
        );
    }
}
