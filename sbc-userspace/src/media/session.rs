//! Media sessions: what is asked for, what is held, and what is reported.
//!
//! A session anchors one media stream between two peers. Each of its two legs ("a" and "b") has
//! a local RTP port (and RTCP on port + 1 unless rtcp-mux is used) on the side's address; what
//! arrives on one leg is relayed out of the other leg's port to that leg's peer.
use std::{
    net::{IpAddr, SocketAddr},
    ops::{Index, IndexMut},
};

use sbc_common::{
    FlowKey, IpAddress,
    flow::{LEG_A, LEG_B, PeerMatch, STREAM_RTCP, STREAM_RTP},
};
use serde::{Deserialize, Serialize};

use crate::side::Side;

/// One leg of a session to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegSpec {
    pub side: Side,
    /// Where the peer said it receives (SDP `c=`/`m=`; RTCP on port + 1). Without it (and
    /// without `sip_source`) nothing latches the leg unless `media.latching.policy = "any"`.
    #[serde(default)]
    pub peer: Option<SocketAddr>,
    /// Where the peer's signalling comes from: a NAT'd peer may latch from this address.
    #[serde(default)]
    pub sip_source: Option<IpAddr>,
}

/// A session to create (the body of `POST /v1/sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// RTP and RTCP share one port (RFC 5761); otherwise RTCP uses port + 1.
    #[serde(default)]
    pub rtcp_mux: bool,
    pub a: LegSpec,
    pub b: LegSpec,
}

/// One of a session's two legs. A call's sessions have leg A on the public side and leg B on
/// the private one (`facing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub const BOTH: [Leg; 2] = [Leg::A, Leg::B];

    pub fn other(self) -> Self {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    /// How the API, the events and the logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Leg::A => "a",
            Leg::B => "b",
        }
    }

    /// How the kernel's flows name it (`Flow::leg`).
    pub fn flow_tag(self) -> u8 {
        match self {
            Leg::A => LEG_A,
            Leg::B => LEG_B,
        }
    }

    pub fn of_flow(tag: u8) -> Option<Self> {
        match tag {
            LEG_A => Some(Leg::A),
            LEG_B => Some(Leg::B),
            _ => None,
        }
    }

    /// The leg of a call's session that faces `side`.
    pub fn facing(side: Side) -> Self {
        match side {
            Side::Public => Leg::A,
            Side::Private => Leg::B,
        }
    }
}

/// Whatever a session keeps per leg, indexed by leg.
impl<T> Index<Leg> for [T; 2] {
    type Output = T;

    fn index(&self, leg: Leg) -> &T {
        &self[leg as usize]
    }
}

impl<T> IndexMut<Leg> for [T; 2] {
    fn index_mut(&mut self, leg: Leg) -> &mut T {
        &mut self[leg as usize]
    }
}

/// A leg's local ports, as held by the media plane.
#[derive(Debug, Clone)]
pub struct LegPorts {
    pub side: Side,
    pub rtp: SocketAddr,
    pub rtcp: Option<SocketAddr>,
}

impl LegPorts {
    /// The local ports of this leg with the stream each carries.
    pub fn ports(&self) -> impl Iterator<Item = (u8, SocketAddr)> + '_ {
        std::iter::once((STREAM_RTP, self.rtp)).chain(self.rtcp.map(|rtcp| (STREAM_RTCP, rtcp)))
    }

    pub fn local(&self, stream: u8) -> Option<SocketAddr> {
        if stream == STREAM_RTP {
            Some(self.rtp)
        } else {
            self.rtcp
        }
    }
}

pub fn flow_key(local: SocketAddr) -> FlowKey {
    FlowKey::udp(IpAddress::from(local.ip()), local.port().to_be())
}

pub fn socket_addr(addr: &IpAddress, port_be: u16) -> SocketAddr {
    SocketAddr::new(addr.to_ip(), u16::from_be(port_be))
}

/// Counters of packets that arrived on one local port, by the path that relayed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamCounters {
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub userspace_packets: u64,
    pub userspace_bytes: u64,
    /// Dropped because they came from someone other than the latched peer.
    pub foreign_dropped: u64,
    /// Dropped before the leg latched: the source matched nothing signalling says about the
    /// peer (a spray at the port range, for instance).
    pub unsignalled_dropped: u64,
    /// Arrived before the other leg's peer was known, so could not be relayed.
    pub undeliverable: u64,
}

impl StreamCounters {
    pub fn packets(&self) -> u64 {
        self.kernel_packets + self.userspace_packets
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegInfo {
    pub name: Leg,
    pub side: Side,
    pub local_rtp: SocketAddr,
    pub local_rtcp: Option<SocketAddr>,
    /// The address this leg's peer is told to send to (in SDP): `local_rtp`'s, unless its side
    /// is behind a NAT (`media.*_advertise`), whose ports are the same.
    pub advertised: IpAddr,
    /// Where this leg's media is sent: the latched source, else the announced address.
    pub peer: Option<SocketAddr>,
    /// Whether the leg's RTP has a peer (locked, or chosen while learning).
    pub latched: bool,
    /// Who latched the leg's RTP, and how it matched signalling.
    pub latch: Option<LatchInfo>,
    /// The same for its RTCP port (none with rtcp-mux).
    pub rtcp_latch: Option<LatchInfo>,
    /// What arrived on this leg (and was relayed to the other).
    pub rtp: StreamCounters,
    pub rtcp: Option<StreamCounters>,
    /// Since RTP last arrived on this leg (`None`: never).
    pub rtp_idle_ms: Option<u64>,
}

/// A latched peer as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatchInfo {
    pub peer: SocketAddr,
    /// How it matched signalling: `sdp`, `sdp-address`, `sip-source`, `unchecked` (policy
    /// `any`) or `unknown` (latched by an older daemon): `PeerMatch::name`.
    #[serde(with = "peer_match_by_name")]
    pub matched: PeerMatch,
    /// false while a better-matching source may still replace it.
    pub locked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u32,
    pub rtcp_mux: bool,
    pub age_ms: u64,
    /// Time since media last arrived on any leg (since creation when none has).
    pub idle_ms: u64,
    pub legs: [LegInfo; 2],
}

/// Why a media session ended (the `media_session_ended` event's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Deleted,
    MediaTimeout,
    Shutdown,
    AdoptFailed,
    /// The call it belonged to ended (BYE, CANCEL, a failed INVITE).
    CallEnded,
    /// Adopted from the pinned state, made for a call that no recorded call claims.
    Orphaned,
}

/// How a leg fell silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Silence {
    /// No packet since media became expected.
    NoMedia,
    /// Packets came, then stopped.
    MediaStopped,
}

impl Silence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMedia => "no_media",
            Self::MediaStopped => "media_stopped",
        }
    }
}

/// A `PeerMatch` (a kernel map type) written and read by its name.
mod peer_match_by_name {
    use sbc_common::flow::PeerMatch;
    use serde::{Deserialize, Deserializer, Serializer};

    const ALL: [PeerMatch; 5] = [
        PeerMatch::Unknown,
        PeerMatch::Unchecked,
        PeerMatch::SipSource,
        PeerMatch::SdpAddress,
        PeerMatch::Sdp,
    ];

    pub fn serialize<S: Serializer>(matched: &PeerMatch, writer: S) -> Result<S::Ok, S::Error> {
        writer.serialize_str(matched.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(reader: D) -> Result<PeerMatch, D::Error> {
        let name = String::deserialize(reader)?;
        ALL.into_iter()
            .find(|matched| matched.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("no peer match is named {name:?}")))
    }
}
