//! Who owns an address group: claims (the group's epoch, one up per claim, so the latest
//! claimant is known to all), releases, and the calls a claimant takes over.
//!
//! Redis runs each script as one step, so two nodes claiming at once get two different epochs
//! and the later one wins; the loser learns it at its next write (`mirror`), which the script
//! there refuses.
use redis::AsyncCommands as _;
use tracing::warn;

use super::{Heartbeat, ROUND_TIMEOUT, SharedCall, fresh, group_key, node_key, scan};

/// `KEYS[1]`: the group; `ARGV[1]`: the claiming node. Returns the new epoch and who owned the
/// group before (empty: nobody).
const CLAIM: &str = r"
local before = redis.call('HGET', KEYS[1], 'owner') or ''
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return {epoch, before}
";

/// `KEYS[1]`: the group; `ARGV`: the node and its epoch. The group has no owner afterwards,
/// unless someone claimed it since.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'owner')
  return 1
end
return 0
";

/// A node's claim on a group, with the calls it takes over.
#[derive(Debug)]
pub struct Claimed {
    pub epoch: u64,
    /// The node that owned the group before, if any.
    pub previous_owner: Option<String>,
    pub calls: Vec<SharedCall>,
}

/// What a node knows before it claims a group.
pub struct Claim<'a> {
    pub client: &'a redis::Client,
    pub group: &'a str,
    pub node: &'a str,
}

impl Claim<'_> {
    /// Claims the group and reads its shared calls (bounded: a Redis that does not answer
    /// fails the claim, and the node serves without taking anything over).
    pub async fn make(&self) -> anyhow::Result<Claimed> {
        let claim = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let (epoch, before): (u64, String) = redis::Script::new(CLAIM)
                .key(group_key(self.group))
                .arg(self.node)
                .invoke_async(&mut connection)
                .await?;
            let keys = scan(&mut connection, &format!("sbc:call:{}:*", self.group)).await?;
            let values: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                connection.mget(&keys).await?
            };
            anyhow::Ok((epoch, before, keys, values))
        };
        let (epoch, before, keys, values) = tokio::time::timeout(ROUND_TIMEOUT * 3, claim)
            .await
            .map_err(|_| {
            anyhow::anyhow!("Redis did not answer within {:?}", ROUND_TIMEOUT * 3)
        })??;
        let calls = keys
            .iter()
            .zip(values)
            .filter_map(|(key, value)| {
                let value = value?;
                serde_json::from_str(&value)
                    .map_err(|e| warn!(key, "skipping a shared call that does not read: {e}"))
                    .ok()
            })
            .collect();
        Ok(Claimed {
            epoch,
            previous_owner: Some(before).filter(|owner| !owner.is_empty()),
            calls,
        })
    }

    /// Gives the group up, if this node's claim is still the latest.
    pub async fn release(&self, epoch: u64) -> anyhow::Result<()> {
        let release = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let _: i64 = redis::Script::new(RELEASE)
                .key(group_key(self.group))
                .arg(self.node)
                .arg(epoch)
                .invoke_async(&mut connection)
                .await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(ROUND_TIMEOUT, release)
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {ROUND_TIMEOUT:?}"))?
    }

    /// Another node that owns the group and is alive (its heartbeat on time, serving the
    /// group): a node that finds its addresses at start waits for it rather than taking its
    /// calls away.
    pub async fn live_owner(&self, ttl: std::time::Duration) -> anyhow::Result<Option<String>> {
        let read = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let owner: Option<String> = connection.hget(group_key(self.group), "owner").await?;
            let Some(owner) = owner.filter(|owner| owner != self.node) else {
                return anyhow::Ok(None);
            };
            let heartbeat: Option<String> = connection.get(node_key(&owner)).await?;
            let alive = heartbeat
                .and_then(|text| serde_json::from_str::<Heartbeat>(&text).ok())
                .is_some_and(|beat| {
                    beat.group == self.group
                        && fresh(crate::clock::unix_ms().saturating_sub(beat.unix_ms), ttl)
                });
            Ok(alive.then_some(owner))
        };
        tokio::time::timeout(ROUND_TIMEOUT, read)
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {ROUND_TIMEOUT:?}"))?
    }
}
