//! The daemon's part in a fleet (`[cluster]`): standing by until one of its address groups is
//! its own, taking over the calls the group's previous owner shared, and noticing when the
//! group is no longer its own.
//!
//! Taking a group over is what a restarted daemon does with its own calls, fed from Redis: the
//! calls' records go to the proxy as a journal's would, and their media sessions are rebuilt
//! from the shared flows (`MediaPlane::adopt_shared`), latched peers and all, on the same ports
//! of the group's addresses.
use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    api::{
        server,
        standby::{self, StandbyApi},
    },
    cluster::{
        Claim, Claimed, ClusterConfig, Group, Mirror, SharedCall,
        standby::{Standby, is_local},
    },
    config::Config,
    media::MediaPlane,
    proxy::journal::CallRecord,
};

/// A group this node is to serve, with its claim (`None`: Redis did not answer; the node
/// serves without taking calls over and claims the group once Redis is back).
pub struct Taking {
    pub group: Group,
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
    let (requests, mut asked) = mpsc::channel(4);
    let api = StandbyApi {
        node: node.clone(),
        serves: groups.iter().map(|g| g.name.clone()).collect(),
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
pub fn take_over_calls(
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
