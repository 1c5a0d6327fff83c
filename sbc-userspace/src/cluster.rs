//! Shared call state of a fleet (`[cluster]`): every call the journal records is mirrored to
//! Redis, with its owner (this node), the owner's epoch and a TTL the owner refreshes, so that
//! another node can take the calls over when this one is lost. The journal stays the node's own
//! record; Redis is the fleet's.
//!
//! Nothing here sits on the packet or call-setup path: the proxy hands each journal line to a
//! channel (`Mirror::record`, never blocking) and one task writes them to Redis in pipelined
//! batches. The task keeps the node's current calls itself, so a node that loses Redis goes on
//! from memory (and its journal), reports itself degraded (metric, `sbc status`, event) and,
//! when Redis is back, writes every current call again.
//!
//! Keys: `sbc:call:<group>:<call key>` (JSON: owner, epoch, written, record; expires after
//! `ttl_secs`), `sbc:node:<node>` (JSON heartbeat: group, calls, epoch; same TTL), and
//! `sbc:epoch:<group>` (the group's epoch, read at start).
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    clock::unix_ms,
    config_error::ConfigError,
    events::{ClusterDegraded, ClusterRestored, Event, EventSink},
    proxy::{
        core::names::CallKey,
        journal::{CallRecord, Line},
    },
};

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the fleet's state lives: `redis://host:port[/db]`.
    pub redis: String,
    /// This node's name in the fleet (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// The address group this node serves (default: the node's name).
    #[serde(default)]
    pub group: Option<String>,
    /// A record lives this long unless its owner refreshes it (every third of it).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
}

fn default_ttl_secs() -> u64 {
    30
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        redis::Client::open(self.redis.as_str())
            .map_err(|e| ConfigError::new("cluster.redis", format!("is not a Redis URL: {e}")))?;
        if self.ttl_secs < 3 {
            return Err(ConfigError::new(
                "cluster.ttl_secs",
                format!("must be at least 3 ({} given)", self.ttl_secs),
            ));
        }
        for (key, value) in [("cluster.node", &self.node), ("cluster.group", &self.group)] {
            if value.as_deref().is_some_and(|v| {
                v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == ':')
            }) {
                return Err(ConfigError::new(
                    key,
                    "must be a name without spaces or ':'",
                ));
            }
        }
        Ok(())
    }

    fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sbc".to_owned())
}

/// How the fleet's state stands, as the metrics and `sbc status` show it.
#[derive(Debug)]
pub struct ClusterHealth {
    pub node: String,
    pub group: String,
    /// Where the fleet's state is read (`fleet`).
    client: redis::Client,
    ttl: Duration,
    /// Redis answered the last write (or heartbeat).
    pub redis_up: AtomicBool,
    /// Calls this node holds (and mirrors).
    pub calls: AtomicU64,
    /// Batches Redis did not take (each retried whole).
    pub writes_failed: AtomicU64,
    /// Full rewrites after Redis came back.
    pub resyncs: AtomicU64,
    pub epoch: AtomicU64,
}

/// The handle the proxy records journal lines through.
#[derive(Clone)]
pub struct Mirror {
    lines: mpsc::UnboundedSender<Line>,
    pub health: Arc<ClusterHealth>,
}

impl Mirror {
    /// Starts mirroring to `config.redis`; `calls` are the ones this node holds already (taken
    /// over from its journal after a restart).
    pub fn start(
        config: &ClusterConfig,
        calls: &[CallRecord],
        events: Arc<EventSink>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis.as_str())?;
        let node = config.node_name();
        let group = config.group.clone().unwrap_or_else(|| node.clone());
        let ttl = Duration::from_secs(config.ttl_secs);
        let health = Arc::new(ClusterHealth {
            node,
            group,
            client: client.clone(),
            ttl,
            redis_up: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            writes_failed: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        });
        let (lines, receiver) = mpsc::unbounded_channel();
        let mirror = Self {
            lines,
            health: Arc::clone(&health),
        };
        for record in calls {
            mirror.record(&Line::Put(Box::new(record.clone())));
        }
        tokio::spawn(run(client, receiver, health, events, ttl));
        Ok(mirror)
    }

    /// Hands a journal line over to be written; never waits.
    pub fn record(&self, line: &Line) {
        // The task ends only with the daemon.
        let _ = self.lines.send(line.clone());
    }
}

/// A call as the fleet sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedCall {
    pub owner: String,
    pub epoch: u64,
    pub written_unix_ms: u64,
    pub record: CallRecord,
}

/// A node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub group: String,
    pub calls: u64,
    pub epoch: u64,
    pub unix_ms: u64,
}

/// A node of the fleet, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNode {
    pub node: String,
    pub group: String,
    pub calls: u64,
    pub epoch: u64,
    /// Since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Its heartbeat is younger than two refresh periods (a node that stopped writing is late
    /// before its key expires at `ttl_secs`).
    pub healthy: bool,
}

impl ClusterHealth {
    /// Every node whose heartbeat Redis holds, by name.
    pub async fn fleet(&self) -> anyhow::Result<Vec<FleetNode>> {
        let read = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let keys: Vec<String> = {
                let mut scan: redis::AsyncIter<'_, String> =
                    connection.scan_match("sbc:node:*").await?;
                let mut keys = Vec::new();
                while let Some(key) = scan.next_item().await {
                    keys.push(key?);
                }
                keys
            };
            let values: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                connection.mget(&keys).await?
            };
            anyhow::Ok((keys, values))
        };
        let (keys, values) = tokio::time::timeout(ROUND_TIMEOUT, read)
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {ROUND_TIMEOUT:?}"))??;
        let now = unix_ms();
        let late_after = (2 * self.ttl / 3).as_millis() as u64;
        let mut nodes: Vec<FleetNode> = keys
            .iter()
            .zip(values)
            .filter_map(|(key, value)| {
                let heartbeat: Heartbeat = serde_json::from_str(&value?).ok()?;
                let age = now.saturating_sub(heartbeat.unix_ms);
                Some(FleetNode {
                    node: key.strip_prefix("sbc:node:")?.to_owned(),
                    group: heartbeat.group,
                    calls: heartbeat.calls,
                    epoch: heartbeat.epoch,
                    heartbeat_age_ms: age,
                    healthy: age <= late_after,
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }
}

pub fn call_key(group: &str, call: &CallKey) -> String {
    format!("sbc:call:{group}:{call}")
}

pub fn node_key(node: &str) -> String {
    format!("sbc:node:{node}")
}

fn epoch_key(group: &str) -> String {
    format!("sbc:epoch:{group}")
}

/// What is still to be written.
#[derive(Default)]
struct Pending {
    puts: BTreeSet<CallKey>,
    ends: BTreeSet<CallKey>,
}

/// How often pending lines are written, and how long one Redis round may take.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const ROUND_TIMEOUT: Duration = Duration::from_secs(1);

async fn run(
    client: redis::Client,
    mut lines: mpsc::UnboundedReceiver<Line>,
    health: Arc<ClusterHealth>,
    events: Arc<EventSink>,
    ttl: Duration,
) {
    let mut calls: BTreeMap<CallKey, CallRecord> = BTreeMap::new();
    let mut pending = Pending::default();
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    // Degraded until the first write lands: the event says when it does.
    let mut degraded_since: Option<u64> = Some(unix_ms());
    // Whether a write landed before: the next restore after a loss is a full rewrite.
    let mut written_before = false;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut refresh = tokio::time::interval(ttl / 3);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refreshing = tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { return };
                take(line, &mut calls, &mut pending);
                health.calls.store(calls.len() as u64, Ordering::Relaxed);
                continue;
            }
            _ = flush.tick() => false,
            _ = refresh.tick() => true,
        };
        if pending.puts.is_empty() && pending.ends.is_empty() && !refreshing {
            continue;
        }
        let round = write_round(
            &client,
            &mut connection,
            &health,
            &calls,
            &pending,
            refreshing,
            ttl,
        );
        match tokio::time::timeout(ROUND_TIMEOUT, round).await {
            Ok(Ok(())) => {
                pending = Pending::default();
                health.redis_up.store(true, Ordering::Relaxed);
                if let Some(since) = degraded_since.take() {
                    if written_before {
                        health.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    written_before = true;
                    info!(calls = calls.len(), "the fleet's state in Redis is current");
                    events.emit(Event::ClusterRestored(ClusterRestored {
                        node: health.node.clone(),
                        degraded_ms: unix_ms().saturating_sub(since),
                        calls: calls.len() as u64,
                    }));
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("no answer within {ROUND_TIMEOUT:?}"),
                };
                connection = None;
                health.writes_failed.fetch_add(1, Ordering::Relaxed);
                health.redis_up.store(false, Ordering::Relaxed);
                if degraded_since.is_none() {
                    degraded_since = Some(unix_ms());
                    warn!(
                        calls = calls.len(),
                        "Redis is away: calls go on from memory and the journal, rewritten when it is back: {why}"
                    );
                    events.emit(Event::ClusterDegraded(ClusterDegraded {
                        node: health.node.clone(),
                        cause: why,
                    }));
                }
                // Everything current is written again once Redis is back (it may have lost
                // what it had: a restart without persistence).
                pending.puts.extend(calls.keys().cloned());
            }
        }
    }
}

/// A journal line into the node's calls and what is to be written.
fn take(line: Line, calls: &mut BTreeMap<CallKey, CallRecord>, pending: &mut Pending) {
    match line {
        Line::Put(record) => {
            pending.ends.remove(&record.key);
            pending.puts.insert(record.key.clone());
            calls.insert(record.key.clone(), *record);
        }
        Line::End(key) => {
            pending.puts.remove(&key);
            calls.remove(&key);
            pending.ends.insert(key);
        }
    }
}

/// One pipelined round: the pending puts and ends, the heartbeat, and (`refreshing`) every
/// current call's TTL. Connects first if there is no connection.
async fn write_round(
    client: &redis::Client,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    health: &ClusterHealth,
    calls: &BTreeMap<CallKey, CallRecord>,
    pending: &Pending,
    refreshing: bool,
    ttl: Duration,
) -> anyhow::Result<()> {
    if connection.is_none() {
        let mut fresh = client.get_multiplexed_async_connection().await?;
        let epoch: Option<u64> = fresh.get(epoch_key(&health.group)).await?;
        health.epoch.store(epoch.unwrap_or(0), Ordering::Relaxed);
        *connection = Some(fresh);
    }
    let connection = connection.as_mut().expect("connected above");
    let (group, epoch) = (&health.group, health.epoch.load(Ordering::Relaxed));
    let ttl_secs = ttl.as_secs();
    let now = unix_ms();
    let mut pipe = redis::pipe();
    for key in &pending.puts {
        let Some(record) = calls.get(key) else {
            continue;
        };
        let shared = SharedCall {
            owner: health.node.clone(),
            epoch,
            written_unix_ms: now,
            record: record.clone(),
        };
        let value = serde_json::to_string(&shared)?;
        pipe.set_ex(call_key(group, key), value, ttl_secs).ignore();
    }
    for key in &pending.ends {
        pipe.del(call_key(group, key)).ignore();
    }
    if refreshing {
        for key in calls.keys().filter(|key| !pending.puts.contains(*key)) {
            pipe.expire(call_key(group, key), ttl_secs as i64).ignore();
        }
    }
    let heartbeat = Heartbeat {
        group: group.clone(),
        calls: calls.len() as u64,
        epoch,
        unix_ms: now,
    };
    pipe.set_ex(
        node_key(&health.node),
        serde_json::to_string(&heartbeat)?,
        ttl_secs,
    )
    .ignore();
    pipe.query_async::<()>(connection).await?;
    Ok(())
}
