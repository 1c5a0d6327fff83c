//! The API of a node on standby (`[cluster]`, serving no group yet): what it is, the fleet, and
//! `POST /v1/takeover`. Everything else waits until it serves a group.
use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::{mpsc, oneshot};

use super::{
    contract::{ClusterStatus, Health, Status, TakenOver, TakeoverRequest},
    state::{error, fleet_answer},
};
use crate::{cluster::standby, drain::DrainStatus};

pub struct StandbyApi {
    pub node: String,
    /// The groups it may take.
    pub serves: Vec<String>,
    /// `drain.deadline_secs`, for the status (a node on standby has nothing to drain).
    pub drain_deadline_secs: u64,
    pub client: redis::Client,
    pub ttl: Duration,
    pub dataplane: String,
    pub requests: mpsc::Sender<standby::TakeoverRequest>,
    pub started: std::time::Instant,
}

pub fn router(state: Arc<StandbyApi>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/fleet", get(fleet))
        .route("/v1/takeover", post(takeover))
        .fallback(|| async {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is on standby: it serves no address group yet (sbc takeover)",
            )
        })
        .with_state(state)
}

async fn health(State(api): State<Arc<StandbyApi>>) -> Json<Health> {
    Json(Health {
        status: "standby".into(),
        dataplane: api.dataplane.clone(),
        sessions: 0,
    })
}

async fn status(State(api): State<Arc<StandbyApi>>) -> Json<Status> {
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_secs: api.started.elapsed().as_secs(),
        dataplane: api.dataplane.clone(),
        drain: DrainStatus {
            draining: false,
            deadline_secs: api.drain_deadline_secs,
            remaining_secs: None,
        },
        calls: None,
        sessions: 0,
        backends: None,
        cluster: Some(ClusterStatus {
            node: api.node.clone(),
            group: String::new(),
            state: "standby".into(),
            serves: api.serves.clone(),
            redis_up: false,
            calls: 0,
            epoch: 0,
        }),
    })
}

async fn fleet(State(api): State<Arc<StandbyApi>>) -> Response {
    fleet_answer(crate::cluster::fleet(&api.client, api.ttl).await)
}

async fn takeover(State(api): State<Arc<StandbyApi>>, body: Bytes) -> Response {
    let asked = match TakeoverRequest::from_body(&body) {
        Ok(asked) => asked,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let (reply, answer) = oneshot::channel();
    let request = standby::TakeoverRequest {
        group: asked.group,
        reply,
    };
    if api.requests.send(request).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is leaving standby",
        );
    }
    match answer.await {
        Ok(Ok(group)) => Json(TakenOver {
            group,
            already: false,
        })
        .into_response(),
        Ok(Err(why)) => error(StatusCode::CONFLICT, why),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is leaving standby",
        ),
    }
}
