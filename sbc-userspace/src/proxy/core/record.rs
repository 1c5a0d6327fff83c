//! What the core records of a call for a restarted daemon (the journal's lines), and so what a
//! new core takes over at start. The driver writes them (`proxy::journal`).
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{
    names::{CallKey, ClientKey, ServerKey},
    transactions::Transport,
};
use crate::side::Side;

/// One end of a call, as the proxy needs it to reach that end itself (BYE on media timeout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Party {
    pub side: Side,
    /// Its From (caller) or To (callee) value, tag included once known.
    pub address: String,
    pub contact: Option<String>,
    /// Route set towards it, nearest first.
    pub route_set: Vec<String>,
    pub source: Option<SocketAddr>,
    pub cseq: u32,
    /// The TCP or TLS connection it reached us over: requests to it go back on it (a
    /// carrier over TLS is reached on the connection it opened). Not recorded: connections
    /// do not outlive the daemon.
    #[serde(skip)]
    pub connection: Option<Transport>,
}

/// What a restarted daemon needs of a call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub key: CallKey,
    pub call_id: String,
    pub caller: Party,
    pub callee: Party,
    pub media: Vec<Option<u32>>,
    pub backend: Option<SocketAddr>,
    pub started_unix_ms: u64,
    /// `None` while the call is being set up.
    pub answered_unix_ms: Option<u64>,
    /// The INVITE transactions of a call being set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupRecord>,
}

/// A call's INVITE in flight: the caller's request as received (the server transaction) and
/// as forwarded (the client transaction), so that a restarted daemon can take the answer,
/// anchor its media and relay it, or end the attempt cleanly on both sides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetupRecord {
    pub server_key: ServerKey,
    /// The caller's INVITE as received, and where from.
    pub invite: String,
    pub upstream: SocketAddr,
    pub upstream_side: Side,
    /// Over UDP: a TCP connection dies with the daemon, and its caller with it.
    pub upstream_udp: bool,
    /// Our To tag for the responses we make.
    pub to_tag: String,
    pub client_key: ClientKey,
    /// The INVITE as sent to the next hop, our Via on top.
    pub forwarded: String,
    pub target: SocketAddr,
    pub out_side: Side,
    /// It went over TCP (a restarted daemon sends it again on a new connection).
    #[serde(default)]
    pub out_tcp: bool,
    /// A provisional response came back (the INVITE is no longer retransmitted; CANCEL may go).
    pub provisional: bool,
}

/// One line of the journal: what the proxy core asks to be recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Line {
    /// A call, recorded (again).
    Put(Box<CallRecord>),
    /// A call's end, by its key.
    End(CallKey),
}
