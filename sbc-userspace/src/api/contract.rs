//! The admin API's requests and answers, as types: the server writes them, and the client, the
//! CLI and the tests read them (`ApiResponse::expect`). Which route answers which is in the route
//! table of `api::server`.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use crate::{
    admission::{AdmissionTotals, BlockInfo},
    drain::DrainStatus,
    media::{SessionInfo, SessionSpec},
    proxy::{BackendSummary, CallSummary, stats::SipCounters},
};

/// Why a request was refused (with a 4xx or 5xx status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while the daemon serves.
    pub status: String,
    /// `xdp` or `userspace`.
    pub dataplane: String,
    pub sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    pub sessions: Vec<SessionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The XDP program's verdicts by reason (`None` with the userspace dataplane).
    pub xdp_reasons: Option<BTreeMap<String, u64>>,
    /// The SIP guard's verdicts by reason, when the daemon plays the guard itself.
    pub guard_reasons: BTreeMap<String, u64>,
    pub ports: Vec<PortPool>,
    pub sessions: usize,
    /// `None` without a `[sip]` table.
    pub sip: Option<SipCounters>,
    pub admission: Option<AdmissionTotals>,
}

/// One media address's port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPool {
    pub address: IpAddr,
    pub in_use: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocks {
    pub blocks: Vec<BlockInfo>,
}

/// A source to block (the body of `POST /v1/blocks`), for `secs` (`None`: until removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub address: IpAddr,
    #[serde(default)]
    pub secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unblocked {
    pub address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The part of the configuration read again (`admission`).
    pub reloaded: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub dataplane: String,
    pub drain: DrainStatus,
    /// `None` without a `[sip]` table.
    pub calls: Option<CallCounts>,
    pub sessions: usize,
    pub backends: Option<BackendCounts>,
    /// `None` without a `[cluster]` table.
    #[serde(default)]
    pub cluster: Option<ClusterStatus>,
}

/// This node in its fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    /// The address group it serves; empty on standby.
    pub group: String,
    /// `serving` or `standby`.
    #[serde(default = "serving")]
    pub state: String,
    /// The groups it may serve (`cluster.serves`).
    #[serde(default)]
    pub serves: Vec<String>,
    /// Redis takes this node's writes; false: degraded (calls go on from memory).
    pub redis_up: bool,
    pub calls: u64,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub active: u64,
    pub established: u64,
    pub attempted: u64,
    pub answered: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendCounts {
    pub total: usize,
    pub healthy: usize,
}

/// Calls, oldest first, each with its media sessions as they stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calls {
    pub calls: Vec<CallSummary<SessionInfo>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backends {
    pub backends: Vec<BackendSummary>,
}

/// `GET /v1/fleet`: the nodes whose heartbeats the fleet's Redis holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub nodes: Vec<crate::cluster::FleetNode>,
}

fn serving() -> String {
    "serving".into()
}

/// The body of `POST /v1/takeover` (optional): which group to serve (default: the first of
/// the node's groups whose addresses are on this host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeoverRequest {
    #[serde(default)]
    pub group: Option<String>,
}

impl TakeoverRequest {
    /// The request's body: empty (no group named) or this type as JSON.
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.is_empty() {
            return Ok(Self { group: None });
        }
        serde_json::from_slice(body)
    }
}

/// The group a node serves after `POST /v1/takeover`; `already`: it served it before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenOver {
    pub group: String,
    pub already: bool,
}

/// A drain, as it began: what is left to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStarted {
    #[serde(flatten)]
    pub drain: DrainStatus,
    pub calls: u64,
    pub sessions: usize,
}
