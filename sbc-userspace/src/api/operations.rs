//! Operations routes: the daemon's status, its calls (with their media), its backends, drain.
use std::sync::{Arc, atomic::Ordering};

use super::{
    contract::{
        BackendCounts, Backends, CallCounts, Calls, ClusterStatus, DrainStarted, Status, TakenOver,
        TakeoverRequest,
    },
    metrics::load,
    state::{ApiState, error, fleet_answer},
};
use crate::proxy::CallSummary;
use axum::{
    Json,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// From the shared stats, like `/metrics`: a status never waits behind the proxy's queue.
pub async fn status(State(api): State<Arc<ApiState>>) -> Json<Status> {
    let calls = api.sip.as_ref().map(|sip| CallCounts {
        active: load(&sip.calls_active),
        established: load(&sip.calls_established),
        attempted: load(&sip.calls_attempted),
        answered: load(&sip.calls_answered),
    });
    let backends = api.sip.as_ref().map(|sip| {
        let backends = sip.backends.snapshot();
        BackendCounts {
            total: backends.len(),
            healthy: backends
                .iter()
                .filter(|b| b.up.load(Ordering::Relaxed))
                .count(),
        }
    });
    let cluster = api
        .proxy
        .as_ref()
        .and_then(|proxy| proxy.cluster.as_ref())
        .map(|cluster| ClusterStatus {
            node: cluster.node.clone(),
            group: cluster.group.clone(),
            state: "serving".into(),
            serves: cluster.serves.clone(),
            redis_up: cluster.redis_up.load(Ordering::Relaxed),
            calls: load(&cluster.calls),
            epoch: load(&cluster.epoch),
        });
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_secs: api.started.elapsed().as_secs(),
        dataplane: api.dataplane.as_str().to_owned(),
        drain: api.drain.status(),
        calls,
        sessions: api.plane.session_count(),
        cluster,
        backends,
    })
}

/// The calls as the proxy holds them, each with its media sessions in full (both legs,
/// counters by path, latching).
async fn calls_with_media(api: &Arc<ApiState>, call_id: Option<&str>) -> Result<Calls, Response> {
    let Some(proxy) = &api.proxy else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "this daemon runs no SIP proxy (no [sip] table)",
        ));
    };
    let mut calls: Vec<CallSummary> = proxy
        .calls()
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    if let Some(call_id) = call_id {
        calls.retain(|call| call.call_id == call_id);
        if calls.is_empty() {
            return Err(error(StatusCode::NOT_FOUND, format!("no call {call_id}")));
        }
    }
    calls.sort_by_key(|call| std::cmp::Reverse(call.age_ms));
    let plane = Arc::clone(&api.plane);
    let guard = Arc::clone(&api.admission.guard);
    // Media counters come from the kernel map, a syscall per flow: off the async workers.
    let calls = tokio::task::spawn_blocking(move || {
        calls
            .into_iter()
            .map(|call| CallSummary {
                kernel_sip: guard.forwarded_in_kernel(&call.call_id),
                ..call
            })
            .map(|call| call.with_media(|id| plane.get(id)))
            .collect()
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Calls { calls })
}

pub async fn list_calls(State(api): State<Arc<ApiState>>) -> Response {
    match calls_with_media(&api, None).await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

/// The calls with this Call-ID (usually one; RFC 5118-style collisions share a Call-ID).
pub async fn show_call(
    State(api): State<Arc<ApiState>>,
    UrlPath(call_id): UrlPath<String>,
) -> Response {
    match calls_with_media(&api, Some(&call_id)).await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

pub async fn backends(State(api): State<Arc<ApiState>>) -> Response {
    let Some(proxy) = &api.proxy else {
        return error(
            StatusCode::NOT_FOUND,
            "this daemon runs no SIP proxy (no [sip] table)",
        );
    };
    match proxy.backends().await {
        Ok(backends) => Json(Backends { backends }).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

/// The fleet this node belongs to, from the heartbeats in Redis.
pub async fn fleet(State(api): State<Arc<ApiState>>) -> Response {
    let Some(cluster) = api.proxy.as_ref().and_then(|proxy| proxy.cluster.as_ref()) else {
        return error(
            StatusCode::NOT_FOUND,
            "this daemon is in no fleet (no [cluster] table)",
        );
    };
    fleet_answer(cluster.fleet().await)
}

/// `sbc takeover` on a node that serves a group already: fine if it is that group (the
/// keepalived hook calls it whenever the node becomes master).
pub async fn takeover(State(api): State<Arc<ApiState>>, body: Bytes) -> Response {
    let Some(cluster) = api.proxy.as_ref().and_then(|proxy| proxy.cluster.as_ref()) else {
        return error(
            StatusCode::NOT_FOUND,
            "this daemon is in no fleet (no [cluster] table)",
        );
    };
    let asked = match TakeoverRequest::from_body(&body) {
        Ok(asked) => asked,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    match asked.group {
        Some(group) if group != cluster.group => error(
            StatusCode::CONFLICT,
            format!(
                "this node serves group {} (one group at a time): it cannot take {group} as well",
                cluster.group
            ),
        ),
        _ => Json(TakenOver {
            group: cluster.group.clone(),
            already: true,
        })
        .into_response(),
    }
}

/// Begins a drain (again: no change) and answers what is left to finish.
pub async fn drain(State(api): State<Arc<ApiState>>) -> Response {
    api.drain.begin("drain requested through the API");
    let started = DrainStarted {
        drain: api.drain.status(),
        calls: api.proxy.as_ref().map_or(0, |p| p.active_calls()),
        sessions: api.plane.session_count(),
    };
    (StatusCode::ACCEPTED, Json(started)).into_response()
}
