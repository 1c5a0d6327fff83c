//! Header parsing with explicit bounds checks: Ethernet, at most one VLAN tag, IPv4 without
//! options or fragmentation or IPv6 without extension headers, UDP. Each refusal names its
//! `Reason`.
use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sbc_common::{FlowKey, IpAddress, Reason};

/// A frame that carries a complete IPv4/UDP header pair.
#[derive(Clone, Copy)]
pub struct Ipv4Udp {
    pub ip: *mut Ipv4Hdr,
    pub udp: *mut UdpHdr,
    /// The frame carried one 802.1Q/802.1ad tag in front of IPv4.
    pub vlan_tagged: bool,
}

/// A frame that carries a complete IPv6/UDP header pair, UDP right after the fixed header.
#[derive(Clone, Copy)]
pub struct Ipv6Udp {
    pub ip: *mut Ipv6Hdr,
    pub udp: *mut UdpHdr,
    pub vlan_tagged: bool,
}

/// A UDP datagram of either family.
pub enum Datagram {
    V4(Ipv4Udp),
    V6(Ipv6Udp),
}

impl Datagram {
    /// Its destination address and port, as the flows and listeners are keyed.
    #[inline(always)]
    pub fn destination(&self) -> FlowKey {
        // SAFETY: the parser bounds-checked both headers.
        unsafe {
            let mut key = FlowKey::udp(
                IpAddress::UNSPECIFIED,
                u16::from_ne_bytes((*self.udp()).dst),
            );
            match self {
                Self::V4(packet) => key.addr = IpAddress::from_ipv4((*packet.ip).dst_addr),
                Self::V6(packet) => ipv6_address(&raw const (*packet.ip).dst_addr, &mut key.addr),
            }
            key
        }
    }

    /// Its (bounds-checked) UDP header.
    #[inline(always)]
    fn udp(&self) -> *mut UdpHdr {
        match self {
            Self::V4(packet) => packet.udp,
            Self::V6(packet) => packet.udp,
        }
    }
}

/// An IPv6 address in the frame, copied as a block: LLVM then moves it a piece at a time
/// straight from the frame to its place, instead of gathering all of its bytes in registers
/// and spilling them to the stack that a chain of calls shares (512 bytes in all).
///
/// # Safety
/// `at` points to 16 bounds-checked bytes of the frame.
#[inline(always)]
unsafe fn ipv6_address(at: *const [u8; 16], to: &mut IpAddress) {
    // SAFETY: 16 readable bytes (see above) to 16 writable ones.
    unsafe { core::ptr::copy_nonoverlapping(at.cast::<u8>(), to.octets.as_mut_ptr(), 16) };
}

/// IPv6 extension headers (RFC 8200 4, and IANA's list): hop-by-hop, routing, fragment,
/// ESP, AH, destination options, mobility, HIP, shim6.
#[inline(always)]
fn is_extension_header(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140)
}

/// A pointer to a `T` at `offset` into the frame, if the frame holds all of it.
#[inline(always)]
pub fn header_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == EtherType::Ieee8021q as u16 || ether_type == EtherType::Ieee8021ad as u16
}

const IPV4_FLAG_MF: u8 = 0x20;
const IPV4_FRAG_OFFSET_HIGH: u8 = 0x1f;

#[inline(always)]
pub fn udp(ctx: &XdpContext) -> Result<Datagram, Reason> {
    // 1. Ethernet, and at most one VLAN tag.
    let eth: *mut EthHdr = header_at(ctx, 0).ok_or(Reason::PassTruncatedEthernet)?;
    // SAFETY: `header_at` checked that the whole header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    let vlan_tagged = is_vlan(ether_type);
    if vlan_tagged {
        let vlan: *mut VlanHdr = header_at(ctx, offset).ok_or(Reason::PassTruncatedEthernet)?;
        // SAFETY: bounds checked by `header_at`.
        ether_type = unsafe { (*vlan).ether_type };
        offset += VlanHdr::LEN;
        if is_vlan(ether_type) {
            return Err(Reason::PassStackedVlan);
        }
    }
    if ether_type == EtherType::Ipv6 as u16 {
        return ipv6_udp(ctx, offset, vlan_tagged).map(Datagram::V6);
    }
    if ether_type != EtherType::Ipv4 as u16 {
        return Err(Reason::PassNotIp);
    }

    // 2. IPv4: version 4, no options, not a fragment, total length inside the frame.
    let ip: *mut Ipv4Hdr = header_at(ctx, offset).ok_or(Reason::PassTruncatedIpv4)?;
    // SAFETY: bounds checked by `header_at`.
    let (vihl, frags, tot_len, proto) = unsafe {
        (
            (*ip).vihl,
            (*ip).frags,
            u16::from_be_bytes((*ip).tot_len) as usize,
            (*ip).proto,
        )
    };
    if vihl >> 4 != 4 || vihl & 0x0f < 5 || tot_len < Ipv4Hdr::LEN {
        return Err(Reason::PassBadIpv4);
    }
    if vihl & 0x0f != 5 {
        return Err(Reason::PassIpv4Options);
    }
    if frags[0] & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_HIGH) != 0 || frags[1] != 0 {
        return Err(Reason::PassFragment);
    }
    if ctx.data() + offset + tot_len > ctx.data_end() {
        return Err(Reason::PassTruncatedIpv4);
    }
    if proto != IpProto::Udp as u8 {
        return Err(Reason::PassNotUdp);
    }

    // 3. UDP, with a length that fits the IPv4 payload.
    let udp_offset = offset + Ipv4Hdr::LEN;
    let udp: *mut UdpHdr = header_at(ctx, udp_offset).ok_or(Reason::PassTruncatedUdp)?;
    // SAFETY: bounds checked by `header_at`.
    let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
    if udp_len < UdpHdr::LEN || udp_len > tot_len - Ipv4Hdr::LEN {
        return Err(Reason::PassTruncatedUdp);
    }

    Ok(Datagram::V4(Ipv4Udp {
        ip,
        udp,
        vlan_tagged,
    }))
}

/// IPv6 at `offset`: version 6, UDP as the next header (an extension header goes up: the
/// kernel handles fragments and options), the payload inside the frame. Not inlined: its
/// locals stay off `main`'s frame, which heads the SIP path's chain of calls (see `guard_sip`).
#[inline(always)]
fn ipv6_udp(ctx: &XdpContext, offset: usize, vlan_tagged: bool) -> Result<Ipv6Udp, Reason> {
    let ip: *mut Ipv6Hdr = header_at(ctx, offset).ok_or(Reason::PassBadIpv6)?;
    // SAFETY: bounds checked by `header_at`.
    let (version, payload_len, next_header) = unsafe {
        (
            (*ip).vcf[0] >> 4,
            u16::from_be_bytes((*ip).payload_len) as usize,
            (*ip).next_hdr,
        )
    };
    if version != 6 || ctx.data() + offset + Ipv6Hdr::LEN + payload_len > ctx.data_end() {
        return Err(Reason::PassBadIpv6);
    }
    if next_header != IpProto::Udp as u8 {
        return Err(if is_extension_header(next_header) {
            Reason::PassIpv6Extension
        } else {
            Reason::PassNotUdp
        });
    }
    let udp: *mut UdpHdr = header_at(ctx, offset + Ipv6Hdr::LEN).ok_or(Reason::PassTruncatedUdp)?;
    // SAFETY: bounds checked by `header_at`.
    let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
    if udp_len < UdpHdr::LEN || udp_len > payload_len {
        return Err(Reason::PassTruncatedUdp);
    }
    Ok(Ipv6Udp {
        ip,
        udp,
        vlan_tagged,
    })
}
