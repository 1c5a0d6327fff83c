//! Transaction state (RFC 3261 17): what the proxy remembers per request it received (server
//! side) and per request it sent (client side), and how they are named.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    backends::BackendId,
    names::{CallKey, ClientKey, ServerKey},
};
use crate::{
    side::Side,
    sip::{Message, Method, check},
};

/// RFC 3261 timer T1 (RTT estimate) and T2 (largest non-INVITE retransmit interval).
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// How long a finished transaction is kept to absorb retransmissions (64 * T1).
pub const LINGER: Duration = Duration::from_secs(32);
/// Timer C: how long a proxied INVITE may ring unanswered (RFC 3261: more than 3 minutes).
pub const TIMER_C: Duration = Duration::from_secs(181);

/// The connection number of a caller's TCP connection held by a previous daemon: nothing is
/// sent on it (connections are numbered from 0 up).
pub const GONE_CONNECTION: u64 = u64::MAX;

/// How a message reached us, and so how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// A TCP connection, by its number.
    Tcp(u64),
    /// A TLS connection (accepted on `[sip.tls]`), by its number.
    Tls(u64),
    /// A TCP connection to the peer, which the driver opens, or reuses when it has one open
    /// (requests we send over TCP; their responses come back on it as `Tcp`).
    TcpOut,
    /// The same over TLS (a backend with `transport = "tls"`).
    TlsOut,
}

impl Transport {
    /// Whether it delivers or fails by itself: requests over it are not retransmitted
    /// (RFC 3261 17.1.1.2).
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }

    /// Whether it is a connection we open (`TcpOut`, `TlsOut`).
    pub fn outbound(self) -> bool {
        matches!(self, Transport::TcpOut | Transport::TlsOut)
    }

    /// Itself when it is a connection a peer opened (TCP or TLS), which requests to that
    /// peer may go back on.
    pub fn connection(self) -> Option<Self> {
        matches!(self, Transport::Tcp(_) | Transport::Tls(_)).then_some(self)
    }

    /// Its name in a Via.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) | Transport::TcpOut => "TCP",
            Transport::Tls(_) | Transport::TlsOut => "TLS",
        }
    }
}

/// What a request's way to its next hop says of how to reach it, besides what is configured
/// for that hop (`Core::request_transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// The URI it is sent by asks for TCP (`transport=tcp`).
    pub tcp_asked: bool,
    /// The connection the party it goes to reached us over, which it goes back on.
    pub connection: Option<Transport>,
}

/// Where a message came from: responses go back the same way (RFC 3581; the same TCP
/// connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub side: Side,
    pub address: SocketAddr,
    pub transport: Transport,
}

impl Peer {
    /// A peer reached over UDP from a side's listener.
    pub fn udp(side: Side, address: SocketAddr) -> Self {
        Self {
            side,
            address,
            transport: Transport::Udp,
        }
    }
}

pub struct ServerTx {
    pub upstream: Peer,
    pub request: Message,
    pub info: check::Request,
    /// The call it belongs to, if any.
    pub call: Option<CallKey>,
    /// Our To tag for responses we generate.
    pub to_tag: String,
    pub last_response: Option<Vec<u8>>,
    pub final_code: Option<u16>,
    /// The client transaction currently carrying the request.
    pub client: Option<ClientKey>,
    /// The forwarded request without our Via (each attempt adds its own).
    pub template: Vec<u8>,
    pub out_side: Side,
    /// How its next hop is reached, besides what is configured for it.
    pub reach: Reach,
    /// Sent to a backend chosen from the pool (new requests from the public side), or to a
    /// trunk target DNS found: failures fail over, and a final failure is our own 503.
    pub balanced: bool,
    /// Where to try next if the current one fails.
    pub candidates: Vec<Candidate>,
    pub cancelled: bool,
    /// A provisional response went upstream: the caller has heard something, no failover.
    pub provisional_forwarded: bool,
    /// When the request arrived (RFC 6076 delays are measured from here).
    pub received: Instant,
}

/// Where a failed request may go next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// A backend of the pool, if it is still healthy then.
    Backend(BackendId),
    /// Another target of the trunk (its SRV records, RFC 3263 4.3).
    Trunk(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Carries a request we proxy.
    Forward,
    /// A CANCEL we send for a request we proxied.
    Cancel,
    /// An OPTIONS health probe of this backend.
    Probe(BackendId),
    /// A BYE we originate (media timeout).
    Bye,
}

pub struct ClientTx {
    pub server: Option<ServerKey>,
    pub purpose: Purpose,
    pub method: Method,
    pub target: SocketAddr,
    pub side: Side,
    /// How it is sent (`Udp`, `TcpOut`, `TlsOut`, or a party's own connection); its CANCEL
    /// and ACK go the same way.
    pub transport: Transport,
    pub bytes: Vec<u8>,
    pub backend: Option<BackendId>,
    pub provisional: bool,
    pub final_code: Option<u16>,
    pub interval: Duration,
    /// When the request was first sent (a backend's latency is measured from here).
    pub sent: Instant,
}

impl ClientTx {
    /// A client transaction for a request the proxy originates itself.
    pub fn own(purpose: Purpose, method: Method, to: Peer, bytes: Vec<u8>, sent: Instant) -> Self {
        Self {
            server: None,
            purpose,
            method,
            target: to.address,
            side: to.side,
            transport: to.transport,
            bytes,
            backend: match purpose {
                Purpose::Probe(id) => Some(id),
                _ => None,
            },
            provisional: false,
            final_code: None,
            interval: T1,
            sent,
        }
    }

    pub fn is_invite(&self) -> bool {
        self.method == Method::Invite
    }

    /// Still retransmitting: INVITE until anything arrives, others until a final response
    /// (over UDP only).
    pub fn awaiting(&self) -> bool {
        self.final_code.is_none() && !(self.is_invite() && self.provisional)
    }

    /// Where it is sent, and how.
    pub fn peer(&self) -> Peer {
        Peer {
            side: self.side,
            address: self.target,
            transport: self.transport,
        }
    }
}
