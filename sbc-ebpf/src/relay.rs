//! The media relay: forward a datagram of a latched flow to the other leg's peer.
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use sbc_common::{
    Flow, IpAddress, Reason, SourceCheck, checksum::ChecksumUpdate, flow::check_source,
};

use crate::{
    Verdict,
    forward::{self, NextHop},
    maps::SBC_FLOW_STATS,
    parse::{Ipv4Udp, header_at},
};

/// Not inlined, as `sip_guard::sip`: its locals stay off the SIP path's stack.
#[inline(never)]
pub fn media(ctx: &XdpContext, packet: &Ipv4Udp, flow: &Flow) -> Verdict {
    match try_media(ctx, packet, *flow) {
        Ok(verdict) => verdict,
        Err(reason) => reason.into(),
    }
}

#[inline(always)]
fn try_media(ctx: &XdpContext, packet: &Ipv4Udp, flow: Flow) -> Result<Verdict, Reason> {
    let (ip, udp) = (packet.ip, packet.udp);
    // SAFETY: `parse::ipv4_udp` bounds-checked both headers.
    let (src_addr, src_port, ttl, udp_len) = unsafe {
        (
            (*ip).src_addr,
            u16::from_ne_bytes((*udp).src),
            (*ip).ttl,
            u16::from_be_bytes((*udp).len),
        )
    };
    // This CPU's counters of the flow (none only for a slot out of range).
    let stats = SBC_FLOW_STATS.get_ptr_mut(flow.stats_slot);

    match check_source(&flow, &IpAddress::from_ipv4(src_addr), src_port) {
        SourceCheck::Latch => return Err(Reason::PassNotLatched),
        SourceCheck::Foreign => {
            if let Some(stats) = stats {
                // SAFETY: per-CPU value, only this CPU writes it.
                unsafe { (*stats).foreign_dropped += 1 };
            }
            return Ok(Verdict::drop(Reason::DropForeignSource));
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
    if packet.vlan_tagged {
        return Err(Reason::PassVlanTagged);
    }
    if ttl <= 1 {
        return Err(Reason::PassTtlExpired);
    }
    if flow.new_dst_port == 0 {
        return Err(Reason::PassNoDestination);
    }
    let (Some(new_src), Some(new_dst)) = (flow.new_src.ipv4(), flow.new_dst.ipv4()) else {
        return Err(Reason::PassFibFailed);
    };

    // Find the next hop before touching the frame: a refusal must pass up the original bytes.
    // SAFETY: bounds checked by the parser.
    let tot_len = u16::from_be_bytes(unsafe { (*ip).tot_len });
    let memo = stats.map(|stats| {
        // SAFETY: per-CPU value, only this CPU touches it.
        unsafe { &raw mut (*stats).next_hop }
    });
    let ports = (flow.new_src_port, flow.new_dst_port);
    let next_hop = forward::remembered_next_hop(ctx, memo, new_src, new_dst, ports, tot_len, now)?;

    rewrite(ctx, packet, &flow, new_src, new_dst, &next_hop)?;
    if let Some(stats) = stats {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += u64::from(udp_len) - UdpHdr::LEN as u64;
        }
    }
    Ok(forward::send(ctx, &next_hop))
}

/// Rewrites Ethernet, IPv4 and UDP headers in place, updating both checksums incrementally.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    packet: &Ipv4Udp,
    flow: &Flow,
    new_src: [u8; 4],
    new_dst: [u8; 4],
    next_hop: &NextHop,
) -> Result<(), Reason> {
    // The parser rejected VLAN-tagged frames before this point, so Ethernet is at offset 0.
    let eth: *mut EthHdr = header_at(ctx, 0).ok_or(Reason::PassTruncatedEthernet)?;
    let (ip, udp): (*mut Ipv4Hdr, *mut UdpHdr) = (packet.ip, packet.udp);
    // SAFETY: all three headers were bounds-checked by `header_at` / the parser.
    unsafe {
        (*eth).dst_addr = next_hop.dst_mac;
        (*eth).src_addr = next_hop.src_mac;

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

        let old_sport = u16::from_be_bytes((*udp).src);
        let old_dport = u16::from_be_bytes((*udp).dst);
        let new_sport = u16::from_be(flow.new_src_port);
        let new_dport = u16::from_be(flow.new_dst_port);
        (*udp).src = new_sport.to_be_bytes();
        (*udp).dst = new_dport.to_be_bytes();
        let check = u16::from_be_bytes((*udp).check);
        // A zero UDP checksum means "none" (RFC 768): it stays zero.
        if check != 0 {
            (*udp).check = ChecksumUpdate::new(check)
                .replace_4(old_src, new_src)
                .replace_4(old_dst, new_dst)
                .replace_u16(old_sport, new_sport)
                .replace_u16(old_dport, new_dport)
                .finish_udp()
                .to_be_bytes();
        }
    }
    Ok(())
}
