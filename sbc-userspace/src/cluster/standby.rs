//! A node on standby: serving no group, it watches for one of its groups' addresses to arrive
//! on this host (keepalived moved them here), and heartbeats meanwhile so the fleet sees it.
//!
//! A group whose addresses arrive while the node watches is taken at once: VRRP decided that
//! its owner is gone. Addresses that are here already when the node starts (a restart, or the
//! node that lost a split brain and still holds them) are taken only when no other node that is
//! alive owns the group, so a daemon restart never takes calls from the node serving them.
use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{Claim, Group, Heartbeat, node_key};
use crate::clock::unix_ms;

/// How often the addresses are looked at: keepalived's address change is seen within this.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// How often a node whose addresses are here asks Redis whether the group's owner still lives.
const ASK_OWNER_EVERY: Duration = Duration::from_secs(1);

/// `sbc takeover`: serve this group (or the first of ours whose addresses are here) now.
pub struct TakeoverRequest {
    pub group: Option<String>,
    pub reply: oneshot::Sender<Result<String, String>>,
}

pub struct Standby {
    pub client: redis::Client,
    pub node: String,
    pub groups: Vec<Group>,
    pub ttl: Duration,
}

/// Whether `ip` is an address of this host (binding to it works only then).
pub fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn here(group: &Group) -> bool {
    is_local(group.public) && is_local(group.private)
}

impl Standby {
    /// Waits until this node should serve one of its groups, and says which.
    pub async fn wait(&self, requests: &mut mpsc::Receiver<TakeoverRequest>) -> Group {
        // Groups whose addresses were away at some point while we watched.
        let mut were_away: HashSet<String> = HashSet::new();
        let mut asked_owner: Option<Instant> = None;
        let mut waiting_for: Option<String> = None;
        let mut look = tokio::time::interval(LOOK_EVERY);
        let mut beat = tokio::time::interval(self.ttl / 3);
        loop {
            tokio::select! {
                _ = look.tick() => {}
                _ = beat.tick() => {
                    self.heartbeat().await;
                    continue;
                }
                Some(request) = requests.recv() => {
                    let wanted = self.groups.iter().find(|g| {
                        request.group.as_ref().is_none_or(|name| &g.name == name)
                    });
                    match wanted {
                        Some(group) if here(group) => {
                            let _ = request.reply.send(Ok(group.name.clone()));
                            info!(group = %group.name, "taking the group over: asked to");
                            return group.clone();
                        }
                        Some(group) => {
                            let _ = request.reply.send(Err(format!(
                                "group {}'s addresses ({}, {}) are not on this host",
                                group.name, group.public, group.private
                            )));
                        }
                        None => {
                            let _ = request.reply.send(Err(format!(
                                "this node serves no group {:?}",
                                request.group.unwrap_or_default()
                            )));
                        }
                    }
                    continue;
                }
            }
            for group in &self.groups {
                if !here(group) {
                    were_away.insert(group.name.clone());
                    continue;
                }
                if were_away.contains(&group.name) {
                    info!(group = %group.name, "the group's addresses arrived: taking it over");
                    return group.clone();
                }
                if asked_owner.is_some_and(|asked| asked.elapsed() < ASK_OWNER_EVERY) {
                    continue;
                }
                asked_owner = Some(Instant::now());
                let claim = Claim {
                    client: &self.client,
                    group: &group.name,
                    node: &self.node,
                };
                match claim.live_owner(self.ttl).await {
                    Ok(None) => return group.clone(),
                    Ok(Some(owner)) => {
                        if waiting_for.as_ref() != Some(&owner) {
                            info!(group = %group.name, owner,
                                  "the group's addresses are here, but {owner} serves it: waiting until it stops");
                            waiting_for = Some(owner);
                        }
                    }
                    Err(e) => {
                        // Serving without the fleet's state beats not serving what is ours.
                        warn!(group = %group.name, "cannot ask Redis who owns the group ({e:#}); serving it");
                        return group.clone();
                    }
                }
            }
        }
    }

    async fn heartbeat(&self) {
        let beat = Heartbeat {
            group: String::new(),
            calls: 0,
            epoch: 0,
            unix_ms: unix_ms(),
        };
        let write = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            redis::AsyncCommands::set_ex::<_, _, ()>(
                &mut connection,
                node_key(&self.node),
                serde_json::to_string(&beat)?,
                self.ttl.as_secs(),
            )
            .await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(super::ROUND_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("standby heartbeat not written: {e:#}"),
            Err(_) => warn!("standby heartbeat not written: Redis did not answer"),
        }
    }
}
