//! The daemon's part in a fleet (`[cluster]`): standing by until one of its address groups is
//! its own, taking over the calls the group's previous owner shared, and noticing when the
//! group is no longer its own.
//!
//! Taking a group over is what a restarted daemon does with its own calls, fed from Redis: the
//! calls' records go to the proxy as a journal's would, and their media sessions are rebuilt
//! from the shared flows (`MediaPlane::adopt_shared`), latched peers and all, on the same ports
//! of the group's addresses.
use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    api::{
        server,
        standby::{self, StandbyApi},
    },
    cluster::{
        Claim, Claimed, ClusterConfig, ClusterHealth, Group, Mirror, SharedCall,
        standby::{Standby, is_local},
    },
    config::Config,
    events::{Event, EventSink, GroupReleased, GroupTakenOver},
    media::MediaPlane,
    proxy::journal::{CallRecord, Journal, Line},
};

/// A group this node is to serve, with its claim (`None`: Redis did not answer; the node
/// serves without taking calls over and claims the group once Redis is back).
pub struct Taking {
    pub group: Group,
    /// The groups the node may serve (`cluster.serves`), for its status.
    pub serves: Vec<String>,
    pub claimed: Option<Claimed>,
    pub client: redis::Client,
    pub node: String,
}

/// Stands by, serving the standby API, until one of this node's groups is its own; `None`
/// when told to stop (SIGTERM, SIGINT) meanwhile.
pub async fn stand_by(config: &Config, cluster: &ClusterConfig) -> anyhow::Result<Option<Taking>> {
    let client = cluster.client()?;
    let node = cluster.node_name();
    let groups =
        cluster.served_groups((config.media.public_address, config.media.private_address()));
    let serves: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let (requests, mut asked) = mpsc::channel(4);
    let api = StandbyApi {
        node: node.clone(),
        serves: serves.clone(),
        drain_deadline_secs: config.drain.deadline_secs,
        client: client.clone(),
        ttl: cluster.ttl(),
        dataplane: config.dataplane.mode.as_str().to_owned(),
        requests,
        started: std::time::Instant::now(),
    };
    let socket = config.api_socket();
    let listener = server::bind_unix(&socket)?;
    let tcp = config.api.listen.map(|address| server::TcpApi {
        address,
        token: config.api.token().ok().flatten(),
    });
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let api_server = tokio::spawn(server::serve(
        listener,
        tcp,
        standby::router(Arc::new(api)),
        async {
            let _ = api_stopped.await;
        },
    ));
    let standby = Standby {
        client: client.clone(),
        node: node.clone(),
        groups,
        ttl: cluster.ttl(),
    };
    info!(
        node,
        "on standby: waiting for one of this node's address groups"
    );
    let group = tokio::select! {
        group = standby.wait(&mut asked) => Some(group),
        () = stop_signal() => None,
    };
    // A `sbc takeover` that came in while the addresses were seen arriving waits for its
    // answer, and the API's graceful stop waits for it: answer every one before stopping.
    asked.close();
    while let Ok(request) = asked.try_recv() {
        let answer = match &group {
            Some(taken)
                if request
                    .group
                    .as_ref()
                    .is_none_or(|name| name == &taken.name) =>
            {
                Ok(taken.name.clone())
            }
            _ => Err("the node is leaving standby".to_owned()),
        };
        let _ = request.reply.send(answer);
    }
    let _ = stop_api.send(());
    if let Ok(Err(e)) = api_server.await {
        warn!("the standby API stopped: {e:#}");
    }
    let _ = std::fs::remove_file(&socket);
    let Some(group) = group else {
        return Ok(None);
    };
    let claim = Claim {
        client: &client,
        group: &group.name,
        node: &node,
    };
    let claimed = match claim.make().await {
        Ok(claimed) => Some(claimed),
        Err(e) => {
            warn!(group = %group.name, "cannot claim the group in Redis ({e:#}): serving it without taking calls over");
            None
        }
    };
    Ok(Some(Taking {
        group,
        serves,
        claimed,
        client,
        node,
    }))
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM on standby: stopping"),
        _ = int.recv() => info!("SIGINT on standby: stopping"),
    }
}

/// The calls to take over: those other nodes shared for the group (this node's own are in its
/// journal, which knows better), each with its media adopted here. A call whose media could
/// not be adopted keeps a session id that names nothing, so the proxy ends it as a call that
/// lost its media. Returns the records and how many lost their media.
fn take_over_calls(
    plane: &Arc<MediaPlane>,
    claimed: &Claimed,
    node: &str,
    journaled: &[CallRecord],
) -> (Vec<CallRecord>, u64) {
    let mut without_media = 0;
    let records = claimed
        .calls
        .iter()
        .filter(|call| call.owner != node && !journaled.iter().any(|r| r.key == call.record.key))
        .map(|call| {
            let (record, complete) = adopt_media(plane, call);
            without_media += u64::from(!complete);
            record
        })
        .collect();
    (records, without_media)
}

/// A shared call's record with its sessions' ids as adopted here; false if some session was
/// not adopted.
fn adopt_media(plane: &Arc<MediaPlane>, call: &SharedCall) -> (CallRecord, bool) {
    let mut sessions = Vec::new();
    for session in &call.media {
        match session.flows() {
            Ok(flows) => sessions.push((session.id, flows)),
            Err(e) => {
                warn!(call_id = %call.record.call_id, "a shared media session does not read: {e}")
            }
        }
    }
    let ids = plane.adopt_shared(sessions);
    let mut record = call.record.clone();
    let mut complete = true;
    for id in record.media.iter_mut().flatten() {
        // 0 names no session: the call then counts as one that lost its media.
        *id = ids.get(id).copied().unwrap_or_else(|| {
            complete = false;
            0
        });
    }
    (record, complete)
}

/// Why a node must let its group go.
pub async fn lost(group: &Group, mirror: Option<&Mirror>) -> String {
    let superseded = async {
        match mirror {
            Some(mirror) => mirror.superseded().await,
            None => std::future::pending().await,
        }
    };
    let addresses_left = async {
        if !group.floating {
            return std::future::pending().await;
        }
        let mut look = tokio::time::interval(Duration::from_millis(50));
        loop {
            look.tick().await;
            if !is_local(group.public) || !is_local(group.private) {
                return;
            }
        }
    };
    tokio::select! {
        epoch = superseded => format!("another node claimed the group after this one (epoch {epoch})"),
        () = addresses_left => "its addresses left this host".to_owned(),
    }
}

/// Takes over the calls of the group being taken (`[cluster]`) and starts sharing the node's
/// calls: the taken calls join the journal's (`recorded`) and are journaled here too, so a
/// restart of this node keeps them.
pub fn take_over(
    taking: &Taking,
    cluster: &ClusterConfig,
    plane: &Arc<MediaPlane>,
    events: &Arc<EventSink>,
    (journal, recorded): (&mut Journal, &mut Vec<CallRecord>),
) -> Mirror {
    let (taken, without_media) = match &taking.claimed {
        Some(claimed) => take_over_calls(plane, claimed, &taking.node, recorded),
        None => (Vec::new(), 0),
    };
    for record in &taken {
        journal.append(&Line::Put(Box::new(record.clone())));
    }
    let health = Arc::new(ClusterHealth::new(
        taking.client.clone(),
        taking.node.clone(),
        (taking.group.name.clone(), taking.serves.clone()),
        cluster.ttl(),
    ));
    let epoch = taking.claimed.as_ref().map_or(0, |claimed| claimed.epoch);
    health
        .epoch
        .store(epoch, std::sync::atomic::Ordering::Relaxed);
    info!(
        group = %taking.group.name,
        epoch,
        taken = taken.len(),
        own = recorded.len(),
        "serving the address group"
    );
    events.emit(Event::GroupTakenOver(GroupTakenOver {
        node: taking.node.clone(),
        group: taking.group.name.clone(),
        epoch,
        previous_owner: taking
            .claimed
            .as_ref()
            .and_then(|c| c.previous_owner.clone()),
        calls: taken.len() as u64,
        calls_without_media: without_media,
    }));
    recorded.extend(taken);
    let mirror = Mirror::start(health, recorded, Arc::clone(plane), Arc::clone(events));
    journal.mirror_to(mirror.clone());
    mirror
}

/// Lets the group go: gives the claim up in Redis (if it is still the latest) and says so.
pub async fn let_go(taking: &Taking, mirror: &Mirror, events: &EventSink, why: &str) {
    warn!(group = %taking.group.name, "letting the address group go: {why}");
    let epoch = mirror
        .health
        .epoch
        .load(std::sync::atomic::Ordering::Relaxed);
    let claim = Claim {
        client: &taking.client,
        group: &taking.group.name,
        node: &taking.node,
    };
    if let Err(e) = claim.release(epoch).await {
        warn!("cannot release the group in Redis ({e:#}); its next owner claims it anyway");
    }
    events.emit(Event::GroupReleased(GroupReleased {
        node: taking.node.clone(),
        group: taking.group.name.clone(),
        reason: why.to_owned(),
        calls: mirror
            .health
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
    }));
}

/// Hands the group over at the end of a drain: tells keepalived to give the addresses up
/// (`fault_file`), waits for them to leave, and lets the group go; its calls, shared in Redis,
/// go on with the node that takes the addresses. If keepalived does not react, the daemon
/// stops holding them (a restart takes them back).
pub async fn hand_over(
    taking: &Taking,
    mirror: &Mirror,
    fault_file: &Path,
    events: &EventSink,
) -> crate::daemon::Outcome {
    use crate::daemon::Outcome;
    if let Err(e) = write_fault_file(fault_file, true) {
        warn!("cannot hand the group over ({e:#}); stopping with its calls");
        return Outcome::Stopped;
    }
    let why = "drained: handed over to another node";
    match tokio::time::timeout(HAND_OVER_WAIT, lost(&taking.group, None)).await {
        Ok(_) => {
            let_go(taking, mirror, events, why).await;
            Outcome::HandedOver
        }
        Err(_) => {
            warn!(
                file = %fault_file.display(),
                "the group's addresses are still here {HAND_OVER_WAIT:?} after asking keepalived to give them up (does it track this file?); stopping with the calls"
            );
            Outcome::Stopped
        }
    }
}

/// How long a drain waits for keepalived to move the addresses away.
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

/// The file keepalived tracks (weight 0): `1` puts the node's VRRP instances in FAULT (the
/// addresses go to another node), `0` lets them run.
fn write_fault_file(path: &Path, fault: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, if fault { "1\n" } else { "0\n" })
        .with_context(|| format!("writing {}", path.display()))
}
