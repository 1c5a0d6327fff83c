//! A fleet of edges (`[cluster]`): calls shared in Redis, address groups moved by VRRP.
//!
//! Every node serves one **address group** at a time: a public and a private address that float
//! between nodes (keepalived moves them). The node holding a group's addresses owns the group:
//! it claims it in Redis (the group's epoch goes up by one), takes over the calls the group's
//! previous owner shared, and shares its own (`mirror`). A node that loses the addresses, or
//! finds that another node claimed the group after it (split brain), lets the group go and waits
//! on standby (`standby`), its calls left to the new owner.
//!
//! Redis keys:
//! - `sbc:group:<group>`: hash `epoch` (claims so far), `owner` (the node that made the last);
//! - `sbc:call:<group>:<call key>`: JSON `SharedCall` (owner, epoch, the journal's record and
//!   the flows of its media), expiring after `ttl_secs` unless its owner refreshes it;
//! - `sbc:node:<node>`: JSON `Heartbeat`, same TTL.
pub mod limits;
mod mirror;
mod ownership;
mod shared;
pub mod standby;

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, AtomicU64},
    time::Duration,
};

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

pub use self::{
    mirror::Mirror,
    ownership::{Claim, Claimed},
    shared::{SharedCall, SharedSession},
};
use crate::{clock::unix_ms, config_error::ConfigError, proxy::core::names::CallKey};

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the fleet's state lives: `redis://host:port[/db]`.
    pub redis: String,
    /// This node's name in the fleet (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// Without `groups`: the name of the group the node's own addresses make (default: the
    /// node's name).
    #[serde(default)]
    pub group: Option<String>,
    /// A record lives this long unless its owner refreshes it (every third of it).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// The fleet's address groups (the same list on every node). Each group's addresses take
    /// the place of `media.public_address` / `private_address` and of the SIP listeners'
    /// addresses while this node serves it.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// The groups this node may serve, one at a time: its own for an active node, several for
    /// a standby (default: every group).
    #[serde(default)]
    pub serves: Vec<String>,
    /// `sbc drain` on a node serving a floating group: new calls are refused until at most
    /// this many remain (0: until every call has ended, or the drain deadline passes), then
    /// the group and its remaining calls are handed to another node and the daemon exits.
    #[serde(default)]
    pub drain_hand_over_at: u64,
    /// The file keepalived tracks (`track_file`, weight 0): sbc writes 1 to hand its group
    /// over (keepalived then gives the addresses up) and 0 when it starts. Default:
    /// `<state_dir>/vrrp-fault`.
    #[serde(default)]
    pub fault_file: Option<std::path::PathBuf>,
    /// Admission limits of the whole fleet, shared out among its nodes.
    #[serde(default)]
    pub limits: limits::FleetLimits,
}

/// `[[cluster.groups]]`: a pair of floating addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    pub public_address: IpAddr,
    /// Default: the public address (one address for both sides).
    #[serde(default)]
    pub private_address: Option<IpAddr>,
}

/// An address group as a node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub public: IpAddr,
    pub private: IpAddr,
    /// Its addresses float (`[[cluster.groups]]`): they may come and go on this host.
    pub floating: bool,
}

fn default_ttl_secs() -> u64 {
    30
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == ':')
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
            if value.as_deref().is_some_and(|v| !valid_name(v)) {
                return Err(ConfigError::new(
                    key,
                    "must be a name without spaces or ':'",
                ));
            }
        }
        if self.groups.is_empty() {
            if !self.serves.is_empty() {
                return Err(ConfigError::new(
                    "cluster.serves",
                    "names groups, but no [[cluster.groups]] defines any",
                ));
            }
            return Ok(());
        }
        if self.group.is_some() {
            return Err(ConfigError::new(
                "cluster.group",
                "cannot be set with [[cluster.groups]]: list the groups this node serves in cluster.serves",
            ));
        }
        for (index, group) in self.groups.iter().enumerate() {
            if !valid_name(&group.name) {
                return Err(ConfigError::new(
                    &format!("cluster.groups[{index}].name"),
                    "must be a name without spaces or ':'",
                ));
            }
            if self.groups[..index].iter().any(|g| g.name == group.name) {
                return Err(ConfigError::new(
                    &format!("cluster.groups[{index}].name"),
                    format!("{:?} names two groups", group.name),
                ));
            }
            let private = group.private_address.unwrap_or(group.public_address);
            if private.is_ipv4() != group.public_address.is_ipv4() {
                return Err(ConfigError::new(
                    &format!("cluster.groups[{index}].private_address"),
                    "must be of the public address's family",
                ));
            }
        }
        if let Some(unknown) = self
            .serves
            .iter()
            .find(|name| !self.groups.iter().any(|g| &g.name == *name))
        {
            return Err(ConfigError::new(
                "cluster.serves",
                format!("names {unknown:?}, which no [[cluster.groups]] defines"),
            ));
        }
        Ok(())
    }

    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }

    /// The groups this node may serve; without `groups`, the one its own addresses make.
    pub fn served_groups(&self, own: (IpAddr, IpAddr)) -> Vec<Group> {
        if self.groups.is_empty() {
            return vec![Group {
                name: self.group.clone().unwrap_or_else(|| self.node_name()),
                public: own.0,
                private: own.1,
                floating: false,
            }];
        }
        self.groups
            .iter()
            .filter(|g| self.serves.is_empty() || self.serves.contains(&g.name))
            .map(|g| Group {
                name: g.name.clone(),
                public: g.public_address,
                private: g.private_address.unwrap_or(g.public_address),
                floating: true,
            })
            .collect()
    }

    pub fn client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(self.redis.as_str())?)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sbc".to_owned())
}

/// How the fleet's state stands for a node serving a group, as the metrics and `sbc status`
/// show it.
#[derive(Debug)]
pub struct ClusterHealth {
    pub node: String,
    pub group: String,
    /// The groups this node may serve (`cluster.serves`).
    pub serves: Vec<String>,
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
    /// This node's claim on the group (0: not yet made, Redis was away).
    pub epoch: AtomicU64,
}

/// A node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The group it serves; empty on standby.
    pub group: String,
    pub calls: u64,
    pub epoch: u64,
    pub unix_ms: u64,
}

/// A node of the fleet, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNode {
    pub node: String,
    /// The group it serves; empty on standby.
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
    pub fn new(
        client: redis::Client,
        node: String,
        (group, serves): (String, Vec<String>),
        ttl: Duration,
    ) -> Self {
        Self {
            node,
            group,
            serves,
            client,
            ttl,
            redis_up: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            writes_failed: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Every node whose heartbeat Redis holds, by name.
    pub async fn fleet(&self) -> anyhow::Result<Vec<FleetNode>> {
        fleet(&self.client, self.ttl).await
    }
}

/// Every node whose heartbeat Redis holds, by name.
pub async fn fleet(client: &redis::Client, ttl: Duration) -> anyhow::Result<Vec<FleetNode>> {
    let read = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let keys = scan(&mut connection, "sbc:node:*").await?;
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
                healthy: fresh(age, ttl),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}

/// A heartbeat this old is on time: two refreshes (each a third of the TTL) may be missed.
fn fresh(age_ms: u64, ttl: Duration) -> bool {
    age_ms <= (2 * ttl / 3).as_millis() as u64
}

/// Every key matching `pattern` (SCAN, never KEYS: Redis keeps serving meanwhile).
async fn scan(
    connection: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut scan: redis::AsyncIter<'_, String> = connection.scan_match(pattern).await?;
    let mut keys = Vec::new();
    while let Some(key) = scan.next_item().await {
        keys.push(key?);
    }
    Ok(keys)
}

pub fn call_key(group: &str, call: &CallKey) -> String {
    format!("sbc:call:{group}:{call}")
}

pub fn node_key(node: &str) -> String {
    format!("sbc:node:{node}")
}

pub fn group_key(group: &str) -> String {
    format!("sbc:group:{group}")
}

/// How long one Redis round may take: nothing waits on Redis longer.
const ROUND_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        let config: ClusterConfig = toml::from_str(text).expect("toml");
        config.validate().map(|()| config)
    }

    #[test]
    fn groups_are_named_once_and_served_by_name() {
        let groups = r#"
            redis = "redis://127.0.0.1"
            [[groups]]
            name = "a"
            public_address = "192.0.2.10"
            private_address = "10.0.0.10"
            [[groups]]
            name = "b"
            public_address = "192.0.2.20"
        "#;
        let config = parse(groups).unwrap();
        let served =
            config.served_groups(("192.0.2.1".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert_eq!(served.len(), 2);
        assert_eq!(served[1].private, "192.0.2.20".parse::<IpAddr>().unwrap());
        assert!(served.iter().all(|g| g.floating));

        let only_b = parse(&format!("serves = [\"b\"]\n{groups}")).unwrap();
        let served =
            only_b.served_groups(("192.0.2.1".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert_eq!(
            served.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );

        let unknown = parse(&format!("serves = [\"c\"]\n{groups}")).unwrap_err();
        assert_eq!(unknown.key, "cluster.serves");
        let both = parse(&format!("group = \"a\"\n{groups}")).unwrap_err();
        assert_eq!(both.key, "cluster.group");
        let twice = parse(&format!(
            "{groups}\n[[groups]]\nname = \"a\"\npublic_address = \"192.0.2.30\"\n"
        ))
        .unwrap_err();
        assert_eq!(twice.key, "cluster.groups[2].name");
        let mixed = parse("redis = \"redis://127.0.0.1\"\n[[groups]]\nname = \"a\"\npublic_address = \"192.0.2.10\"\nprivate_address = \"2001:db8::1\"\n").unwrap_err();
        assert_eq!(mixed.key, "cluster.groups[0].private_address");

        let alone = parse("redis = \"redis://127.0.0.1\"\nnode = \"n1\"\n").unwrap();
        let served =
            alone.served_groups(("192.0.2.1".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert_eq!(served[0].name, "n1");
        assert!(!served[0].floating);
    }
}
