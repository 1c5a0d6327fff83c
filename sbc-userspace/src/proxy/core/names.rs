//! How the core names what it keeps: calls, and server and client transactions. Keys are
//! only compared and hashed (a client transaction's branch is also reused by its CANCEL); the
//! journal records them as their text.
use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::sip::{Message, Method, check};

/// Calls are named by Call-ID and the caller's tag: a Call-ID alone may collide (RFC 5118's
/// example messages share one). Only compared, never taken apart; recorded in the journal as
/// `call-id;tag`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CallKey(String);

impl CallKey {
    pub fn new(call_id: &str, caller_tag: &str) -> Self {
        Self(format!("{call_id};{caller_tag}"))
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a server transaction: only compared, never taken apart (see `of`). Recorded in
/// the journal as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerKey(String);

impl ServerKey {
    /// The server transaction a request belongs to: RFC 3261 branch matching, or the RFC 2543
    /// fallback (Call-ID, CSeq, From tag, top Via) for requests without a magic-cookie branch.
    /// ACK is matched to its INVITE. The source address is part of the name too: user agents
    /// that reuse branches (some do) must not see each other's responses.
    pub fn of(message: &Message, request: &check::Request, source: SocketAddr) -> Self {
        let method = if request.method == Method::Ack {
            Method::Invite.as_str()
        } else {
            request.method.as_str()
        };
        let top = &request.vias[0];
        Self(match top.branch() {
            Some(branch) if top.has_rfc3261_branch() => {
                format!(
                    "{source}|{branch}|{}:{}|{method}",
                    top.host,
                    top.port.unwrap_or(5060)
                )
            }
            _ => format!(
                "{source}|2543|{}|{}|{}|{}|{method}",
                request.call_id,
                request.cseq,
                request.from.tag().unwrap_or_default(),
                message.value("via").unwrap_or_default()
            ),
        })
    }
}

#[cfg(test)]
impl ServerKey {
    /// Any name, for tests of what stores keys.
    pub fn named(name: &str) -> Self {
        Self(name.to_owned())
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a client transaction: the branch of our Via and the method (a CANCEL shares
/// the branch of the INVITE it cancels). Recorded in the journal as `branch|METHOD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

impl ClientKey {
    pub fn new(branch: &str, method: Method) -> Self {
        Self {
            branch: branch.to_owned(),
            method,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.branch, self.method)
    }
}

impl From<ClientKey> for String {
    fn from(key: ClientKey) -> Self {
        key.to_string()
    }
}

impl TryFrom<String> for ClientKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (branch, method) = text
            .rsplit_once('|')
            .ok_or_else(|| format!("a client transaction key is branch|METHOD, not {text:?}"))?;
        Ok(Self::new(branch, Method::parse(method)))
    }
}
