//! The node's calls, mirrored to Redis for its fleet.
//!
//! Nothing here sits on the packet or call-setup path: the proxy hands each journal line to a
//! channel (`Mirror::record`, never blocking) and one task writes them to Redis in batches, each
//! call with the flows of its media as they stand (a call whose peers latch later is written
//! again then). The task keeps the node's current calls itself, so a node that loses Redis goes
//! on from memory (and its journal), reports itself degraded (metric, `sbc status`, event) and,
//! when Redis is back, writes every current call again.
//!
//! Every batch is fenced: a script writes it only while the group's epoch is still this node's
//! claim. A node that finds another claim after its own (split brain: both held the addresses)
//! writes nothing more and says so (`Mirror::superseded`): the daemon then lets the group go.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    ClusterHealth, Heartbeat, ROUND_TIMEOUT, SharedCall, SharedSession, call_key, group_key,
    node_key,
};
use crate::{
    clock::unix_ms,
    events::{ClusterDegraded, ClusterRestored, Event, EventSink},
    media::MediaPlane,
    proxy::{
        core::names::CallKey,
        journal::{CallRecord, Line},
    },
};

/// `KEYS[1]`: the group. `ARGV`: epoch, TTL, node, then the puts (count, key/value pairs), the
/// deletes (count, keys) and the refreshes (count, keys). Returns 1 when written, 0 when the
/// group's epoch is another claim's (nothing written). A group Redis forgot (restarted without
/// persistence) is this node's again at its epoch.
const FENCED_WRITE: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'owner', ARGV[3])
elseif epoch ~= ARGV[1] then
  return 0
end
local ttl = ARGV[2]
local at = 4
local count = tonumber(ARGV[at]); at = at + 1
for _ = 1, count do redis.call('SET', ARGV[at], ARGV[at + 1], 'EX', ttl); at = at + 2 end
count = tonumber(ARGV[at]); at = at + 1
for _ = 1, count do redis.call('DEL', ARGV[at]); at = at + 1 end
count = tonumber(ARGV[at]); at = at + 1
for _ = 1, count do redis.call('EXPIRE', ARGV[at], ttl); at = at + 1 end
return 1
";

/// The handle the proxy records journal lines through.
#[derive(Clone)]
pub struct Mirror {
    lines: mpsc::UnboundedSender<Line>,
    pub health: Arc<ClusterHealth>,
    superseded: watch::Receiver<Option<u64>>,
}

impl Mirror {
    /// Starts mirroring the group's calls under `health.epoch`; `calls` are the ones this node
    /// holds already (its journal's after a restart, and those it took over).
    pub fn start(
        health: Arc<ClusterHealth>,
        calls: &[CallRecord],
        plane: Arc<MediaPlane>,
        events: Arc<EventSink>,
    ) -> Self {
        let (lines, receiver) = mpsc::unbounded_channel();
        let (supersede, superseded) = watch::channel(None);
        let mirror = Self {
            lines,
            health: Arc::clone(&health),
            superseded,
        };
        for record in calls {
            mirror.record(&Line::Put(Box::new(record.clone())));
        }
        let task = Task {
            health,
            plane,
            events,
            supersede,
            calls: BTreeMap::new(),
            written: BTreeMap::new(),
            pending: Pending::default(),
            connection: None,
        };
        tokio::spawn(task.run(receiver));
        mirror
    }

    /// Hands a journal line over to be written; never waits.
    pub fn record(&self, line: &Line) {
        // The task ends only with the daemon.
        let _ = self.lines.send(line.clone());
    }

    /// Resolves with the epoch of the claim that superseded this node's (it then writes no
    /// more).
    pub async fn superseded(&self) -> u64 {
        let mut watch = self.superseded.clone();
        let epoch = match watch.wait_for(Option::is_some).await {
            Ok(epoch) => *epoch,
            Err(_) => None,
        };
        match epoch {
            Some(epoch) => epoch,
            None => std::future::pending().await,
        }
    }
}

/// What is still to be written.
#[derive(Default)]
struct Pending {
    puts: BTreeSet<CallKey>,
    ends: BTreeSet<CallKey>,
}

/// How often pending lines are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct Task {
    health: Arc<ClusterHealth>,
    plane: Arc<MediaPlane>,
    events: Arc<EventSink>,
    supersede: watch::Sender<Option<u64>>,
    calls: BTreeMap<CallKey, CallRecord>,
    /// The media each call was last written with, while some of its flows had no latched peer
    /// yet: written again once they have (or change otherwise).
    written: BTreeMap<CallKey, Vec<SharedSession>>,
    pending: Pending,
    connection: Option<redis::aio::MultiplexedConnection>,
}

/// How a write round went.
enum Round {
    Written,
    /// Another node claimed the group after this one, at this epoch.
    Superseded(u64),
}

impl Task {
    async fn run(mut self, mut lines: mpsc::UnboundedReceiver<Line>) {
        let ttl = self.health.ttl;
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
                    self.take(line);
                    continue;
                }
                _ = flush.tick() => false,
                _ = refresh.tick() => true,
            };
            self.note_latched_media();
            if self.pending.puts.is_empty() && self.pending.ends.is_empty() && !refreshing {
                continue;
            }
            match tokio::time::timeout(ROUND_TIMEOUT, self.write_round(refreshing, ttl)).await {
                Ok(Ok(Round::Written)) => {
                    self.pending = Pending::default();
                    self.health.redis_up.store(true, Ordering::Relaxed);
                    if let Some(since) = degraded_since.take() {
                        if written_before {
                            self.health.resyncs.fetch_add(1, Ordering::Relaxed);
                        }
                        written_before = true;
                        info!(
                            calls = self.calls.len(),
                            "the fleet's state in Redis is current"
                        );
                        self.events.emit(Event::ClusterRestored(ClusterRestored {
                            node: self.health.node.clone(),
                            degraded_ms: unix_ms().saturating_sub(since),
                            calls: self.calls.len() as u64,
                        }));
                    }
                }
                Ok(Ok(Round::Superseded(epoch))) => {
                    warn!(
                        group = %self.health.group,
                        ours = self.health.epoch.load(Ordering::Relaxed),
                        theirs = epoch,
                        "another node claimed this group after us; writing nothing more"
                    );
                    let _ = self.supersede.send(Some(epoch));
                    return;
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => format!("{e:#}"),
                        _ => format!("no answer within {ROUND_TIMEOUT:?}"),
                    };
                    self.connection = None;
                    self.health.writes_failed.fetch_add(1, Ordering::Relaxed);
                    self.health.redis_up.store(false, Ordering::Relaxed);
                    if degraded_since.is_none() {
                        degraded_since = Some(unix_ms());
                        warn!(
                            calls = self.calls.len(),
                            "Redis is away: calls go on from memory and the journal, rewritten when it is back: {why}"
                        );
                        self.events.emit(Event::ClusterDegraded(ClusterDegraded {
                            node: self.health.node.clone(),
                            cause: why,
                        }));
                    }
                    // Everything current is written again once Redis is back (it may have lost
                    // what it had: a restart without persistence).
                    self.pending.puts.extend(self.calls.keys().cloned());
                }
            }
        }
    }

    /// A journal line into the node's calls and what is to be written.
    fn take(&mut self, line: Line) {
        match line {
            Line::Put(record) => {
                self.pending.ends.remove(&record.key);
                self.pending.puts.insert(record.key.clone());
                self.calls.insert(record.key.clone(), *record);
            }
            Line::End(key) => {
                self.pending.puts.remove(&key);
                self.calls.remove(&key);
                self.written.remove(&key);
                self.pending.ends.insert(key);
            }
        }
        self.health
            .calls
            .store(self.calls.len() as u64, Ordering::Relaxed);
    }

    /// Calls written before their peers latched are written again once the flows changed.
    fn note_latched_media(&mut self) {
        let changed: Vec<CallKey> = self
            .written
            .iter()
            .filter(|(key, before)| self.media_of(&self.calls[*key]).0 != **before)
            .map(|(key, _)| key.clone())
            .collect();
        self.pending.puts.extend(changed);
    }

    /// The call's media sessions with their flows as they stand, and whether every flow has
    /// latched its peer (nothing more to learn: the call need not be written again for it).
    fn media_of(&self, record: &CallRecord) -> (Vec<SharedSession>, bool) {
        let ids: Vec<u32> = record.media.iter().flatten().copied().collect();
        let sessions = self.plane.flows_of(&ids);
        let latched = sessions
            .iter()
            .all(|(_, flows)| flows.iter().all(|(_, flow)| flow.is_latched()));
        let shared = sessions
            .iter()
            .map(|(id, flows)| SharedSession::new(*id, flows))
            .collect();
        (shared, latched)
    }

    /// One round: the pending puts and ends and (`refreshing`) every current call's TTL, in
    /// one fenced script; then the heartbeat. Connects (and claims the group, if Redis was
    /// away when this node took it) first if there is no connection.
    async fn write_round(&mut self, refreshing: bool, ttl: Duration) -> anyhow::Result<Round> {
        if self.connection.is_none() {
            self.connection = Some(
                self.health
                    .client
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        if self.health.epoch.load(Ordering::Relaxed) == 0 {
            let claim = super::Claim {
                client: &self.health.client,
                group: &self.health.group,
                node: &self.health.node,
            };
            let claimed = claim.make().await?;
            self.health.epoch.store(claimed.epoch, Ordering::Relaxed);
        }
        let epoch = self.health.epoch.load(Ordering::Relaxed);
        let group = self.health.group.clone();
        let ttl_secs = ttl.as_secs();
        let now = unix_ms();
        let mut puts = Vec::new();
        for key in &self.pending.puts {
            let Some(record) = self.calls.get(key) else {
                continue;
            };
            let (media, settled) = self.media_of(record);
            let shared = SharedCall {
                owner: self.health.node.clone(),
                epoch,
                written_unix_ms: now,
                record: record.clone(),
                media,
            };
            puts.push((call_key(&group, key), serde_json::to_string(&shared)?));
            if settled {
                self.written.remove(key);
            } else {
                self.written.insert(key.clone(), shared.media);
            }
        }
        let refreshed: Vec<String> = if refreshing {
            self.calls
                .keys()
                .filter(|key| !self.pending.puts.contains(*key))
                .map(|key| call_key(&group, key))
                .collect()
        } else {
            Vec::new()
        };
        let fenced = redis::Script::new(FENCED_WRITE);
        let mut script = fenced.prepare_invoke();
        script
            .key(group_key(&group))
            .arg(epoch)
            .arg(ttl_secs)
            .arg(&self.health.node)
            .arg(puts.len());
        for (key, value) in &puts {
            script.arg(key).arg(value);
        }
        script.arg(self.pending.ends.len());
        for key in &self.pending.ends {
            script.arg(call_key(&group, key));
        }
        script.arg(refreshed.len());
        for key in &refreshed {
            script.arg(key);
        }
        let connection = self.connection.as_mut().expect("connected above");
        let written: i64 = script.invoke_async(connection).await?;
        if written == 0 {
            let theirs: Option<u64> =
                redis::AsyncCommands::hget(connection, group_key(&group), "epoch").await?;
            return Ok(Round::Superseded(theirs.unwrap_or_default()));
        }
        let heartbeat = Heartbeat {
            group,
            calls: self.calls.len() as u64,
            epoch,
            unix_ms: now,
        };
        redis::AsyncCommands::set_ex::<_, _, ()>(
            connection,
            node_key(&self.health.node),
            serde_json::to_string(&heartbeat)?,
            ttl_secs,
        )
        .await?;
        Ok(Round::Written)
    }
}
