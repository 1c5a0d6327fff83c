//! What every route of the API works with: the daemon's parts (`ApiState`), and how a route
//! refuses (`error`).
use std::sync::Arc;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::contract::Refusal;
use crate::{
    admission::{AdmissionControl, AdmissionCounters},
    config::DataplaneMode,
    dataplane::ReasonCounters,
    drain::Drain,
    media::MediaPlane,
    proxy::{ProxyHandle, stats::SipStats},
    reload::Reload,
};

pub struct ApiState {
    pub plane: Arc<MediaPlane>,
    pub reasons: Option<ReasonCounters>,
    pub dataplane: DataplaneMode,
    /// The SIP proxy's counters, when it runs.
    pub sip: Option<Arc<SipStats>>,
    pub admission_counters: Option<Arc<AdmissionCounters>>,
    pub admission: Arc<AdmissionControl>,
    /// What `POST /v1/reload` does, as SIGHUP.
    pub reload: Arc<Reload>,
    pub proxy: Option<ProxyHandle>,
    pub drain: Arc<Drain>,
    pub started: std::time::Instant,
}

/// A refusal with `status` and the reason why.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let refusal = Refusal {
        error: message.to_string(),
    };
    (status, Json(refusal)).into_response()
}

/// `GET /v1/fleet`'s answer: the nodes, or 503 when Redis did not say.
pub fn fleet_answer(nodes: anyhow::Result<Vec<crate::cluster::FleetNode>>) -> Response {
    match nodes {
        Ok(nodes) => Json(super::contract::Fleet { nodes }).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading the fleet: {e:#}"),
        ),
    }
}
