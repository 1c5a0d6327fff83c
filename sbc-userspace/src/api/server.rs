//! Routes of the control API.
//!
//! | method and path | what | answer (`api::contract`) |
//! |---|---|---|
//! | `GET /v1/health` | liveness, dataplane mode, session count | `Health` |
//! | `GET /v1/sessions` | every media session with its counters | `Sessions` |
//! | `POST /v1/sessions` | create one (`SessionSpec`); 503 + Retry-After when full | `SessionInfo` |
//! | `GET /v1/sessions/{id}` | one session | `SessionInfo` |
//! | `DELETE /v1/sessions/{id}` | end it; answers its final counters | `SessionInfo` |
//! | `GET /v1/stats` | XDP verdicts by reason, port pool use, SIP and admission counters | `Stats` |
//! | `GET /v1/blocks` | the dynamic blocks in force | `Blocks` |
//! | `POST /v1/blocks` | block a source (`BlockRequest`) | `BlockRequest`, as applied |
//! | `DELETE /v1/blocks/{address}` | lift a block | `Unblocked` |
//! | `POST /v1/reload` | read `[admission]` from the config file again | `Reloaded` |
//! | `GET /v1/status` | version, uptime, drain state, call and backend counts | `Status` |
//! | `GET /v1/calls` | every call with its media sessions (legs, counters, latching) | `Calls` |
//! | `GET /v1/calls/{call_id}` | the calls with that Call-ID | `Calls` |
//! | `GET /v1/backends` | the backend pool: health, load, failure ratio | `Backends` |
//! | `POST /v1/drain` | refuse new calls, exit once the last call has ended | `DrainStarted` |
//! | `GET /metrics` | Prometheus metrics | text |
//!
//! Every refusal answers `Refusal` (`{"error": ..}`).
//!
//! Over TCP (`api.listen`) every route needs `Authorization: Bearer <token>` when
//! `api.token_file` is set; the Unix socket is guarded by its file mode.
use std::{
    io,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
};

use anyhow::{Context as _, bail};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::net::{TcpListener, UnixListener};

pub use super::state::ApiState;
use super::{
    admission,
    contract::{Health, PortPool, Sessions, Stats},
    metrics, operations,
    state::error,
};
use crate::{
    dataplane::ReasonCounters,
    media::{EndReason, MediaError, RETRY_AFTER_SECS, SessionSpec},
};

/// The API's TCP listener and the token its clients must present.
pub struct TcpApi {
    pub address: SocketAddr,
    pub token: Option<String>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route("/v1/sessions/{id}", get(show_session).delete(end_session))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/blocks",
            get(admission::list_blocks).post(admission::add_block),
        )
        .route(
            "/v1/blocks/{address}",
            axum::routing::delete(admission::remove_block),
        )
        .route("/v1/reload", post(admission::reload))
        .route("/v1/status", get(operations::status))
        .route("/v1/calls", get(operations::list_calls))
        .route("/v1/calls/{call_id}", get(operations::show_call))
        .route("/v1/backends", get(operations::backends))
        .route("/v1/fleet", get(operations::fleet))
        .route("/v1/drain", post(operations::drain))
        .route("/v1/takeover", post(operations::takeover))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

impl IntoResponse for MediaError {
    fn into_response(self) -> Response {
        match &self {
            MediaError::Invalid(_) => error(StatusCode::BAD_REQUEST, &self),
            MediaError::NotFound(_) => error(StatusCode::NOT_FOUND, &self),
            MediaError::Internal(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &self),
            MediaError::Exhausted(_) => {
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, &self);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                response
            }
        }
    }
}

async fn health(State(api): State<Arc<ApiState>>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        dataplane: api.dataplane.as_str().to_owned(),
        sessions: api.plane.session_count(),
    })
}

async fn list_sessions(State(api): State<Arc<ApiState>>) -> Json<Sessions> {
    Json(Sessions {
        sessions: api.plane.list(),
    })
}

async fn create_session(State(api): State<Arc<ApiState>>, body: Bytes) -> Response {
    let spec: SessionSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid session request: {e}"),
            );
        }
    };
    match api.plane.create(&spec) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn show_session(State(api): State<Arc<ApiState>>, UrlPath(id): UrlPath<u32>) -> Response {
    match api.plane.get(id) {
        Some(info) => Json(info).into_response(),
        None => MediaError::NotFound(id).into_response(),
    }
}

async fn end_session(State(api): State<Arc<ApiState>>, UrlPath(id): UrlPath<u32>) -> Response {
    // Answer once the ports are free: a client that ends a session to make room can retry.
    match api.plane.end(id, EndReason::Deleted) {
        Ok(ended) => Json(ended.ports_released().await).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn stats(State(api): State<Arc<ApiState>>) -> Response {
    let by_name = |counters: Vec<(sbc_common::Reason, u64)>| {
        counters
            .into_iter()
            .map(|(reason, count)| (reason.name().to_owned(), count))
            .collect()
    };
    let xdp_reasons = match api.reasons.as_ref().map(ReasonCounters::read) {
        None => None,
        Some(Ok(counters)) => Some(by_name(counters)),
        Some(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let ports = api
        .plane
        .ports_in_use()
        .into_iter()
        .map(|(address, in_use, capacity)| PortPool {
            address,
            in_use,
            capacity,
        })
        .collect();
    Json(Stats {
        xdp_reasons,
        // With the userspace dataplane the daemon gives the guard's verdicts itself.
        guard_reasons: by_name(api.admission.guard.userspace_reasons()),
        ports,
        sessions: api.plane.session_count(),
        sip: api.sip.as_ref().map(|counters| counters.snapshot()),
        admission: api.admission_counters.as_ref().map(|c| c.snapshot()),
    })
    .into_response()
}

/// Whether a request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(request: &axum::extract::Request, token: &str) -> bool {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Binds the API's Unix socket, refusing if another daemon already serves on it.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another sbc daemon is serving on {}; stop it first (one daemon per instance)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding API socket {}", path.display()))?;
    // The API creates and ends sessions: keep it to root (and whoever root lets in by group).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    unix: UnixListener,
    tcp: Option<TcpApi>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_for_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp_server = match tcp {
        Some(TcpApi { address, token }) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("binding API address {address}"))?;
            let router = match token {
                Some(token) => router.clone().layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        let allowed = bearer_matches(&request, &token);
                        async move {
                            if allowed {
                                next.run(request).await
                            } else {
                                error(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
                            }
                        }
                    },
                )),
                None => router.clone(),
            };
            let server = axum::serve(listener, router)
                .with_graceful_shutdown(wait_for_stop(stop_rx.clone()));
            Some(tokio::spawn(async move { server.await }))
        }
        None => None,
    };
    let unix_server =
        axum::serve(unix, router).with_graceful_shutdown(wait_for_stop(stop_rx.clone()));
    let unix_server = tokio::spawn(async move { unix_server.await });
    shutdown.await;
    let _ = stop_tx.send(true);
    unix_server.await??;
    if let Some(server) = tcp_server {
        server.await??;
    }
    Ok(())
}
