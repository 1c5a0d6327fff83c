//! Media flows: the entries the daemon writes and the XDP program forwards by.
//!
//! One flow exists per local media port (RTP, and RTCP unless rtcp-mux is used). A packet that
//! arrives at `FlowKey` is sent on from `Flow::new_src:new_src_port` to
//! `Flow::new_dst:new_dst_port`, provided it came from the latched peer.

/// An IP address of either family, as 16 bytes in network order.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so the same maps can carry IPv6
/// later without changing their layout. Aligned to 4 so the XDP program may compare it by words.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct IpAddress {
    pub octets: [u8; 16],
}

impl IpAddress {
    pub const UNSPECIFIED: Self = Self { octets: [0; 16] };

    /// The IPv4-mapped form of an IPv4 address given as its four octets.
    #[inline(always)]
    pub const fn from_ipv4(v4: [u8; 4]) -> Self {
        Self {
            octets: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
            ],
        }
    }

    /// The four IPv4 octets, when this is an IPv4-mapped address.
    #[inline(always)]
    pub fn ipv4(&self) -> Option<[u8; 4]> {
        let o = &self.octets;
        if o[..10] == [0; 10] && o[10] == 0xff && o[11] == 0xff {
            Some([o[12], o[13], o[14], o[15]])
        } else {
            None
        }
    }

    pub fn is_unspecified(&self) -> bool {
        self.octets == [0; 16] || self.ipv4() == Some([0; 4])
    }

    /// The address a source is limited and blocked as: an IPv4 address itself, an IPv6
    /// address its /64. A host on IPv6 holds a whole /64 (SLAAC and privacy addresses hand
    /// its addresses out of it), so limits per address would let one attacker be 2^64
    /// sources.
    #[inline(always)]
    pub fn source_key(&self) -> Self {
        if self.ipv4().is_some() {
            return *self;
        }
        let mut key = *self;
        let mut i = 8;
        while i < 16 {
            key.octets[i] = 0;
            i += 1;
        }
        key
    }

    /// The address as a `core::net::IpAddr` (IPv4-mapped addresses become IPv4).
    pub fn to_ip(&self) -> core::net::IpAddr {
        match self.ipv4() {
            Some(v4) => core::net::IpAddr::from(v4),
            None => core::net::IpAddr::from(self.octets),
        }
    }
}

impl From<core::net::IpAddr> for IpAddress {
    fn from(ip: core::net::IpAddr) -> Self {
        match ip {
            core::net::IpAddr::V4(v4) => Self::from_ipv4(v4.octets()),
            core::net::IpAddr::V6(v6) => Self {
                octets: v6.octets(),
            },
        }
    }
}

/// Transport protocol number of a flow key (only UDP media today).
pub const PROTO_UDP: u8 = 17;

/// Key of the flows map: the local address and port a media packet arrives at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub addr: IpAddress,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl FlowKey {
    #[inline(always)]
    pub const fn udp(addr: IpAddress, port_be: u16) -> Self {
        Self {
            addr,
            port: port_be,
            proto: PROTO_UDP,
            _pad: 0,
        }
    }
}

/// `Flow::flags`: the flow has a peer (its real source, learnt from its packets); the program
/// forwards the peer's packets. Until then it passes the flow's packets up and the daemon
/// decides who may latch (only a source that matches what signalling says about the peer).
pub const FLOW_LATCHED: u16 = 1;

/// `Flow::flags`: the latched peer is provisional. It matched signalling less than exactly, and
/// for a short learning window a better-matching source may replace it, so the program passes
/// other sources' packets up to the daemon instead of dropping them. Cleared when the daemon
/// locks the peer.
pub const FLOW_LEARNING: u16 = 2;

/// `Flow::flags`: the flow's session belongs to a call of the SIP proxy (not one made through
/// the API), so a restarted daemon frees it when no recorded call claims it. The daemon's
/// bookkeeping; the program ignores it.
pub const FLOW_OF_CALL: u16 = 4;

/// `Flow::flags` bits 8..=11: how the latched peer matched signalling ([`PeerMatch`]). The
/// daemon's bookkeeping, kept in the map so that a restarted daemon still knows; the program
/// ignores it.
const FLOW_PEER_MATCH_SHIFT: u16 = 8;
const FLOW_PEER_MATCH_MASK: u16 = 0xf << FLOW_PEER_MATCH_SHIFT;

/// How a latched peer's source matched what signalling said about it; a better match orders
/// higher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum PeerMatch {
    /// Not recorded (latched by a daemon that did not record it).
    Unknown = 0,
    /// Signalling was not consulted (latching policy `any`, labs only).
    Unchecked = 1,
    /// The address the party's SIP came from, any port (a NAT'd peer whose SDP names a
    /// private address).
    SipSource = 2,
    /// The SDP's address with another port (a NAT that keeps the address).
    SdpAddress = 3,
    /// The SDP's address and port.
    Sdp = 4,
}

impl PeerMatch {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Unchecked => "unchecked",
            Self::SipSource => "sip-source",
            Self::SdpAddress => "sdp-address",
            Self::Sdp => "sdp",
        }
    }

    const fn from_bits(bits: u16) -> Self {
        match bits {
            1 => Self::Unchecked,
            2 => Self::SipSource,
            3 => Self::SdpAddress,
            4 => Self::Sdp,
            _ => Self::Unknown,
        }
    }
}

/// Which of a session's two legs a flow belongs to (the port the packet arrived at).
pub const LEG_A: u8 = 0;
pub const LEG_B: u8 = 1;

/// What a flow carries: RTP (also RTCP when multiplexed) or RTCP on port + 1.
pub const STREAM_RTP: u8 = 0;
pub const STREAM_RTCP: u8 = 1;

/// Value of the flows map: where to send what arrives, and from whom to accept it.
///
/// Written only by the daemon. Besides forwarding, it carries the session id, leg and stream so a
/// restarted daemon can rebuild its sessions from the pinned map alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Flow {
    /// Source address of forwarded packets: our local address on the other leg.
    pub new_src: IpAddress,
    /// Destination of forwarded packets: the other leg's peer (latched or announced).
    pub new_dst: IpAddress,
    /// This leg's peer: the only source accepted once `FLOW_LATCHED` is set.
    pub peer: IpAddress,
    /// Network byte order.
    pub new_src_port: u16,
    /// Network byte order.
    pub new_dst_port: u16,
    /// Network byte order.
    pub peer_port: u16,
    pub flags: u16,
    pub session_id: u32,
    pub leg: u8,
    pub stream: u8,
    /// Changes with every write of the flow by the daemon (`FlowMaps`), so that a next-hop memo
    /// made for an earlier value (another destination) is not used: the memo is checked
    /// against it instead of against both addresses. Wraps; a flow is not rewritten 65,536
    /// times within a memo's life.
    pub generation: u16,
    /// This flow's entry in the per-CPU counters (`SBC_FLOW_STATS`, an array): an array slot
    /// costs the program far less per packet than a second hash lookup by key. The daemon
    /// assigns it, one per installed flow.
    pub stats_slot: u32,
}

impl Flow {
    pub const fn is_latched(&self) -> bool {
        self.flags & FLOW_LATCHED != 0
    }

    /// Latched to a provisional peer that a better match may still replace.
    pub const fn is_learning(&self) -> bool {
        self.flags & FLOW_LEARNING != 0
    }

    /// How the latched peer matched signalling.
    pub const fn peer_match(&self) -> PeerMatch {
        PeerMatch::from_bits((self.flags & FLOW_PEER_MATCH_MASK) >> FLOW_PEER_MATCH_SHIFT)
    }

    /// Makes `peer` (port in network byte order) the flow's peer: locked (only it may send from
    /// now on), or provisional while `learning`.
    pub fn latch(&mut self, peer: IpAddress, port_be: u16, matched: PeerMatch, learning: bool) {
        self.peer = peer;
        self.peer_port = port_be;
        self.flags = (self.flags & !(FLOW_PEER_MATCH_MASK | FLOW_LEARNING))
            | FLOW_LATCHED
            | if learning { FLOW_LEARNING } else { 0 }
            | ((matched as u16) << FLOW_PEER_MATCH_SHIFT);
    }

    /// Ends the learning window: the provisional peer is the peer.
    pub fn lock(&mut self) {
        self.flags &= !FLOW_LEARNING;
    }

    /// Forgets the latched peer (signalling named another one): the flow learns again.
    pub fn unlatch(&mut self) {
        self.peer = IpAddress::UNSPECIFIED;
        self.peer_port = 0;
        self.flags &= !(FLOW_LATCHED | FLOW_LEARNING | FLOW_PEER_MATCH_MASK);
    }
}

/// How a packet's source relates to the flow it arrived on. Both the XDP program and the
/// userspace relay decide with [`check_source`], so the two paths cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// The flow has latched and this is its peer: forward.
    Accept,
    /// The flow has no peer yet, or a provisional one and this is another source: the daemon
    /// decides whether this source may latch (userspace only).
    Latch,
    /// The flow is locked to another source: drop (RTP injection / "RTP bleed").
    Foreign,
}

#[inline(always)]
pub fn check_source(flow: &Flow, src: &IpAddress, src_port_be: u16) -> SourceCheck {
    if flow.flags & FLOW_LATCHED == 0 {
        SourceCheck::Latch
    } else if flow.peer == *src && flow.peer_port == src_port_be {
        SourceCheck::Accept
    } else if flow.flags & FLOW_LEARNING != 0 {
        SourceCheck::Latch
    } else {
        SourceCheck::Foreign
    }
}

/// Per-CPU counters of one flow, written only by the XDP program (packets it forwarded or
/// dropped); the daemon sums them over CPUs. Host byte order. One cache line: the relay touches
/// all of it for every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC (coarse: a tick's resolution) of the last packet seen, forwarded or not.
    pub last_seen_ns: u64,
    /// Packets dropped because they came from a source other than the latched peer.
    pub foreign_dropped: u64,
    /// This CPU's memo of the flow's next hop (not a counter: `merge` keeps one side's).
    pub next_hop: NextHopMemo,
}

/// How long the relay reuses a next hop before asking `bpf_fib_lookup` again: a route or
/// neighbour change reaches a flow within this time.
pub const NEXT_HOP_MEMO_NS: u64 = 250_000_000;

/// A next hop the relay looked up for a flow, so that `bpf_fib_lookup` (the largest part of
/// the per-packet cost) runs a few times a second per flow instead of for every packet. It is
/// used only for the flow's value it was found for (`Flow::generation`: the same addresses),
/// for the same ingress, for frames no longer than one that passed the MTU check, and until
/// `until_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NextHopMemo {
    /// 0: empty.
    pub until_ns: u64,
    /// `Flow::generation` of the value it was found for.
    pub generation: u16,
    /// The IP length (IPv4 total length, IPv6 payload length) that passed the MTU check.
    pub max_len: u16,
    pub ingress_ifindex: u32,
    pub egress_ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl NextHopMemo {
    /// Whether the memo answers for a frame of `len` bytes of the flow's value `generation`
    /// that arrived on `ingress` at `now_ns`.
    #[inline(always)]
    pub fn answers(&self, generation: u16, ingress: u32, len: u16, now_ns: u64) -> bool {
        now_ns < self.until_ns
            && self.generation == generation
            && self.ingress_ifindex == ingress
            && len <= self.max_len
    }
}

impl FlowStats {
    /// Adds another CPU's counters to these (last seen: the later of the two).
    pub fn merge(self, other: &FlowStats) -> FlowStats {
        FlowStats {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            last_seen_ns: self.last_seen_ns.max(other.last_seen_ns),
            foreign_dropped: self.foreign_dropped + other.foreign_dropped,
            next_hop: self.next_hop,
        }
    }
}

const _: () = assert!(core::mem::size_of::<IpAddress>() == 16);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 20);
const _: () = assert!(core::mem::size_of::<Flow>() == 68);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 64);
const _: () = assert!(core::mem::size_of::<NextHopMemo>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `repr(C)`, has no padding (explicit `_pad` fields) and holds only
    // integers, so every bit pattern is valid.
    unsafe impl aya::Pod for super::IpAddress {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::NextHopMemo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latched(peer: IpAddress, port: u16) -> Flow {
        Flow {
            new_src: IpAddress::UNSPECIFIED,
            new_dst: IpAddress::UNSPECIFIED,
            peer,
            new_src_port: 0,
            new_dst_port: 0,
            peer_port: port.to_be(),
            flags: FLOW_LATCHED,
            session_id: 1,
            leg: LEG_A,
            stream: STREAM_RTP,
            generation: 0,
            stats_slot: 0,
        }
    }

    #[test]
    fn ipv4_mapping_round_trips() {
        let a = IpAddress::from_ipv4([198, 18, 1, 2]);
        assert_eq!(a.ipv4(), Some([198, 18, 1, 2]));
        let mut v6 = a;
        v6.octets[0] = 0x20;
        assert_eq!(v6.ipv4(), None);
        assert!(IpAddress::from_ipv4([0; 4]).is_unspecified());
        assert!(!a.is_unspecified());
        let ip: core::net::IpAddr = "198.18.1.2".parse().unwrap();
        assert_eq!(IpAddress::from(ip), a);
        assert_eq!(a.to_ip(), ip);
        let ip6: core::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(IpAddress::from(ip6).to_ip(), ip6);
    }

    #[test]
    fn an_ipv6_source_is_limited_as_its_slash_64() {
        let v4: core::net::IpAddr = "198.18.1.2".parse().unwrap();
        assert_eq!(IpAddress::from(v4).source_key(), IpAddress::from(v4));
        let host: core::net::IpAddr = "2001:db8:1:2:a:b:c:d".parse().unwrap();
        let other: core::net::IpAddr = "2001:db8:1:2::99".parse().unwrap();
        let next: core::net::IpAddr = "2001:db8:1:3::99".parse().unwrap();
        let key = IpAddress::from(host).source_key();
        assert_eq!(key, IpAddress::from(other).source_key());
        assert_ne!(key, IpAddress::from(next).source_key());
        let network: core::net::IpAddr = "2001:db8:1:2::".parse().unwrap();
        assert_eq!(key.to_ip(), network);
    }

    #[test]
    fn source_check_latches_then_rejects_others() {
        let peer = IpAddress::from_ipv4([198, 18, 1, 2]);
        let mut flow = latched(peer, 4000);
        assert_eq!(
            check_source(&flow, &peer, 4000u16.to_be()),
            SourceCheck::Accept
        );
        assert_eq!(
            check_source(&flow, &peer, 4002u16.to_be()),
            SourceCheck::Foreign
        );
        let other = IpAddress::from_ipv4([198, 18, 1, 3]);
        assert_eq!(
            check_source(&flow, &other, 4000u16.to_be()),
            SourceCheck::Foreign
        );
        // A provisional peer is forwarded; anyone else goes up to the daemon to be judged.
        flow.latch(peer, 4000u16.to_be(), PeerMatch::SipSource, true);
        assert_eq!(
            check_source(&flow, &peer, 4000u16.to_be()),
            SourceCheck::Accept
        );
        assert_eq!(
            check_source(&flow, &other, 4000u16.to_be()),
            SourceCheck::Latch
        );
        flow.lock();
        assert_eq!(
            check_source(&flow, &other, 4000u16.to_be()),
            SourceCheck::Foreign
        );
        flow.unlatch();
        assert_eq!(
            check_source(&flow, &other, 4000u16.to_be()),
            SourceCheck::Latch
        );
    }

    #[test]
    fn the_peer_match_rides_in_the_flags_beside_the_latch() {
        let mut flow = latched(IpAddress::UNSPECIFIED, 0);
        assert_eq!(
            flow.peer_match(),
            PeerMatch::Unknown,
            "an older daemon's latch"
        );
        let peer = IpAddress::from_ipv4([198, 18, 1, 2]);
        for matched in [PeerMatch::SipSource, PeerMatch::Sdp, PeerMatch::Unchecked] {
            flow.latch(peer, 4000u16.to_be(), matched, true);
            assert!(flow.is_latched() && flow.is_learning());
            assert_eq!(flow.peer_match(), matched);
            assert_eq!(flow.peer, peer);
        }
        flow.lock();
        assert!(flow.is_latched() && !flow.is_learning());
        assert_eq!(flow.peer_match(), PeerMatch::Unchecked);
        flow.unlatch();
        assert!(!flow.is_latched() && !flow.is_learning());
        assert_eq!(flow.peer_match(), PeerMatch::Unknown);
        assert!(
            PeerMatch::Sdp > PeerMatch::SdpAddress && PeerMatch::SdpAddress > PeerMatch::SipSource
        );
    }
}
