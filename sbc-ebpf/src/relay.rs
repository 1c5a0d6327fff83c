//! The media relay: forward a datagram of a latched flow to the other leg's peer, IPv4 to IPv4
//! or IPv6 to IPv6 (a flow between families goes up: the daemon's relay translates).
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use sbc_common::{
    Flow, FlowStats, IpAddress, Reason, SourceCheck, checksum::ChecksumUpdate, flow::check_source,
};

use crate::{
    Verdict,
    forward::{self, NextHop},
    maps::SBC_FLOW_STATS,
    parse::{Ipv4Udp, Ipv6Udp, header_at},
};

/// What the relay needs of an arriving datagram's headers, whichever its family.
struct Arrival {
    src: IpAddress,
    /// Network byte order.
    src_port: u16,
    /// IPv4 TTL or IPv6 hop limit.
    hops: u8,
    /// The whole IP packet's length (for the egress MTU check).
    ip_len: u16,
    udp_len: u16,
    vlan_tagged: bool,
}

/// Where an admitted datagram goes.
struct Departure {
    next_hop: NextHop,
    stats: Option<*mut FlowStats>,
}

/// Not inlined, as `sip_guard::sip`: its locals stay off the SIP path's stack.
#[inline(never)]
pub fn media_v4(ctx: &XdpContext, packet: &Ipv4Udp, flow: &Flow) -> Verdict {
    let (ip, udp) = (packet.ip, packet.udp);
    // SAFETY: `parse::udp` bounds-checked both headers.
    let arrival = unsafe {
        Arrival {
            src: IpAddress::from_ipv4((*ip).src_addr),
            src_port: u16::from_ne_bytes((*udp).src),
            hops: (*ip).ttl,
            ip_len: u16::from_be_bytes((*ip).tot_len),
            udp_len: u16::from_be_bytes((*udp).len),
            vlan_tagged: packet.vlan_tagged,
        }
    };
    let departure = match admit(ctx, &arrival, flow) {
        Ok(departure) => departure,
        Err(verdict) => return verdict,
    };
    let (Some(new_src), Some(new_dst)) = (flow.new_src.ipv4(), flow.new_dst.ipv4()) else {
        return Verdict::pass(Reason::PassFamilyTranslation);
    };
    match rewrite_v4(ctx, packet, flow, new_src, new_dst, &departure.next_hop) {
        Ok(()) => send(ctx, &arrival, &departure),
        Err(reason) => reason.into(),
    }
}

/// As `media_v4`, for IPv6.
#[inline(never)]
pub fn media_v6(ctx: &XdpContext, packet: &Ipv6Udp, flow: &Flow) -> Verdict {
    let (ip, udp) = (packet.ip, packet.udp);
    // SAFETY: `parse::udp` bounds-checked both headers.
    let arrival = unsafe {
        Arrival {
            src: IpAddress {
                octets: (*ip).src_addr,
            },
            src_port: u16::from_ne_bytes((*udp).src),
            hops: (*ip).hop_limit,
            ip_len: u16::from_be_bytes((*ip).payload_len) + Ipv6Hdr::LEN as u16,
            udp_len: u16::from_be_bytes((*udp).len),
            vlan_tagged: packet.vlan_tagged,
        }
    };
    let departure = match admit(ctx, &arrival, flow) {
        Ok(departure) => departure,
        Err(verdict) => return verdict,
    };
    match rewrite_v6(ctx, packet, flow, &departure.next_hop) {
        Ok(()) => send(ctx, &arrival, &departure),
        Err(reason) => reason.into(),
    }
}

/// The checks before a datagram is relayed (its source, its hops, the other leg's peer) and
/// its next hop, found before the frame is touched: a refusal passes up the original bytes.
#[inline(always)]
fn admit(ctx: &XdpContext, arrival: &Arrival, flow: &Flow) -> Result<Departure, Verdict> {
    // This CPU's counters of the flow (none only for a slot out of range).
    let stats = SBC_FLOW_STATS.get_ptr_mut(flow.stats_slot);
    match check_source(flow, &arrival.src, arrival.src_port) {
        SourceCheck::Latch => return Err(Verdict::pass(Reason::PassNotLatched)),
        SourceCheck::Foreign => {
            if let Some(stats) = stats {
                // SAFETY: per-CPU value, only this CPU writes it.
                unsafe { (*stats).foreign_dropped += 1 };
            }
            return Err(Verdict::drop(Reason::DropForeignSource));
        }
        SourceCheck::Accept => {}
    }
    // The coarse clock (a tick's resolution) is plenty for timeouts of seconds and for the
    // next-hop memo, and costs less per packet.
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(stats) = stats {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { (*stats).last_seen_ns = now };
    }
    if arrival.vlan_tagged {
        return Err(Verdict::pass(Reason::PassVlanTagged));
    }
    if arrival.hops <= 1 {
        return Err(Verdict::pass(Reason::PassTtlExpired));
    }
    if flow.new_dst_port == 0 {
        return Err(Verdict::pass(Reason::PassNoDestination));
    }
    if flow.new_dst.ipv4().is_some() != arrival.src.ipv4().is_some() {
        return Err(Verdict::pass(Reason::PassFamilyTranslation));
    }
    let memo = stats.map(|stats| {
        // SAFETY: per-CPU value, only this CPU touches it.
        unsafe { &raw mut (*stats).next_hop }
    });
    let ports = (flow.new_src_port, flow.new_dst_port);
    let next_hop = forward::remembered_next_hop(
        ctx,
        memo,
        flow.generation,
        (&flow.new_src, &flow.new_dst),
        ports,
        arrival.ip_len,
        now,
    )
    .map_err(Verdict::pass)?;
    Ok(Departure { next_hop, stats })
}

/// Counts a rewritten datagram and sends it.
#[inline(always)]
fn send(ctx: &XdpContext, arrival: &Arrival, departure: &Departure) -> Verdict {
    if let Some(stats) = departure.stats {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += u64::from(arrival.udp_len) - UdpHdr::LEN as u64;
        }
    }
    forward::send(ctx, &departure.next_hop)
}

/// The new Ethernet addresses; the parser rejected VLAN-tagged frames before a rewrite, so
/// Ethernet is at offset 0.
#[inline(always)]
fn rewrite_ethernet(ctx: &XdpContext, next_hop: &NextHop) -> Result<(), Reason> {
    let eth: *mut EthHdr = header_at(ctx, 0).ok_or(Reason::PassTruncatedEthernet)?;
    // SAFETY: bounds-checked by `header_at`.
    unsafe {
        (*eth).dst_addr = next_hop.dst_mac;
        (*eth).src_addr = next_hop.src_mac;
    }
    Ok(())
}

/// The UDP ports, and the UDP checksum updated for them and for the addresses (`addresses`:
/// the update with the old and new addresses in it, by the caller's family; `None`: the
/// datagram has no checksum).
#[inline(always)]
fn rewrite_udp(udp: *mut UdpHdr, flow: &Flow, addresses: Option<ChecksumUpdate>) {
    // SAFETY: bounds-checked by the parser.
    unsafe {
        let old_sport = u16::from_be_bytes((*udp).src);
        let old_dport = u16::from_be_bytes((*udp).dst);
        let new_sport = u16::from_be(flow.new_src_port);
        let new_dport = u16::from_be(flow.new_dst_port);
        (*udp).src = new_sport.to_be_bytes();
        (*udp).dst = new_dport.to_be_bytes();
        if let Some(addresses) = addresses {
            (*udp).check = addresses
                .replace_u16(old_sport, new_sport)
                .replace_u16(old_dport, new_dport)
                .finish_udp()
                .to_be_bytes();
        }
    }
}

/// Rewrites Ethernet, IPv4 and UDP headers in place, updating both checksums incrementally.
#[inline(always)]
fn rewrite_v4(
    ctx: &XdpContext,
    packet: &Ipv4Udp,
    flow: &Flow,
    new_src: [u8; 4],
    new_dst: [u8; 4],
    next_hop: &NextHop,
) -> Result<(), Reason> {
    rewrite_ethernet(ctx, next_hop)?;
    let (ip, udp): (*mut Ipv4Hdr, *mut UdpHdr) = (packet.ip, packet.udp);
    // SAFETY: both headers were bounds-checked by the parser.
    unsafe {
        let old_src = (*ip).src_addr;
        let old_dst = (*ip).dst_addr;
        let ttl_proto_old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).ttl -= 1;
        let ttl_proto_new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).src_addr = new_src;
        (*ip).dst_addr = new_dst;
        (*ip).check = ChecksumUpdate::new(u16::from_be_bytes((*ip).check))
            .replace_4(old_src, new_src)
            .replace_4(old_dst, new_dst)
            .replace_u16(ttl_proto_old, ttl_proto_new)
            .finish()
            .to_be_bytes();
        // A zero UDP checksum means "none" over IPv4 (RFC 768): it stays zero.
        let check = u16::from_be_bytes((*udp).check);
        let addresses = (check != 0).then(|| {
            ChecksumUpdate::new(check)
                .replace_4(old_src, new_src)
                .replace_4(old_dst, new_dst)
        });
        rewrite_udp(udp, flow, addresses);
    }
    Ok(())
}

/// Rewrites Ethernet, IPv6 and UDP headers in place (IPv6 has no header checksum; the UDP
/// checksum, mandatory over IPv6, is updated incrementally).
#[inline(always)]
fn rewrite_v6(
    ctx: &XdpContext,
    packet: &Ipv6Udp,
    flow: &Flow,
    next_hop: &NextHop,
) -> Result<(), Reason> {
    rewrite_ethernet(ctx, next_hop)?;
    let (ip, udp): (*mut Ipv6Hdr, *mut UdpHdr) = (packet.ip, packet.udp);
    // SAFETY: both headers were bounds-checked by the parser.
    unsafe {
        (*ip).hop_limit -= 1;
        // The old addresses summed where they lie, before they are overwritten.
        let old = sum_words(&raw const (*ip).src_addr) + sum_words(&raw const (*ip).dst_addr);
        let new = sum_words(&flow.new_src.octets) + sum_words(&flow.new_dst.octets);
        (*ip).src_addr = flow.new_src.octets;
        (*ip).dst_addr = flow.new_dst.octets;
        let addresses = ChecksumUpdate::new(u16::from_be_bytes((*udp).check)).replace_sum(old, new);
        rewrite_udp(udp, flow, Some(addresses));
    }
    Ok(())
}

/// The sum of an IPv6 address's 16-bit words (in network order), read a word at a time where
/// it lies: the relay's frame shares 512 bytes of stack with `main`'s, and LLVM would move the
/// bytes one at a time through registers and spill them.
///
/// # Safety
/// `address` points to 16 readable bytes at an even address (an IPv6 header is 2-byte aligned
/// wherever Ethernet and a VLAN tag put it; a map value is 4-byte aligned).
#[inline(always)]
unsafe fn sum_words(address: *const [u8; 16]) -> u32 {
    let words = address.cast::<u16>();
    let mut sum = 0u32;
    let mut i = 0;
    while i < 8 {
        // SAFETY: word `i` of the 16 bytes, aligned (see above).
        sum += u32::from(u16::from_be(unsafe { words.add(i).read_volatile() }));
        i += 1;
    }
    sum
}
