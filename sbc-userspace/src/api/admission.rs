//! Admission routes: dynamic blocks and reloading `[admission]`.
use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sbc_common::guard::BLOCK_MANUAL;

use super::{
    contract::{BlockRequest, Blocks, Reloaded, Unblocked},
    state::{ApiState, error},
};

pub async fn list_blocks(State(api): State<Arc<ApiState>>) -> Response {
    let guard = Arc::clone(&api.admission.guard);
    // Reading the kernel map is a syscall per entry.
    match tokio::task::spawn_blocking(move || guard.blocks()).await {
        Ok(blocks) => Json(Blocks { blocks }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn add_block(State(api): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: BlockRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid block request: {e}"),
            );
        }
    };
    if request.secs == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "secs must be at least 1 (omit it to block until removed)",
        );
    }
    let duration = request.secs.map(Duration::from_secs);
    match api
        .admission
        .guard
        .block(request.address, duration, BLOCK_MANUAL)
    {
        Ok(()) => (StatusCode::CREATED, Json(request)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn remove_block(
    State(api): State<Arc<ApiState>>,
    UrlPath(address): UrlPath<String>,
) -> Response {
    let Ok(address) = address.parse::<IpAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{address:?} is not an IP address"),
        );
    };
    if api.admission.guard.unblock(address) {
        Json(Unblocked { address }).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("{address} is not blocked"))
    }
}

pub async fn reload(State(api): State<Arc<ApiState>>) -> Response {
    let reload = Arc::clone(&api.reload);
    match tokio::task::spawn_blocking(move || reload.reload()).await {
        Ok(Ok(reloaded)) => Json(Reloaded { reloaded }).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
