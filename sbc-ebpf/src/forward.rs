//! Next hop and transmission: `bpf_fib_lookup` for the egress interface and MAC addresses, then
//! `XDP_TX` when the egress is the ingress interface, else a DEVMAP redirect.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action,
    },
    helpers::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
};
use sbc_common::{
    IpAddress, Reason,
    flow::{NEXT_HOP_MEMO_NS, NextHopMemo},
};

use crate::{
    Verdict,
    maps::{SBC_EGRESS, SBC_FIB},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_UDP: u8 = 17;

pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Resolves where a packet from `src` to `dst` (UDP, ports in network byte order, both
/// addresses of one family; `ip_len` the whole IP packet's length) leaves, as the kernel's
/// routing would send it.
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    src: &IpAddress,
    dst: &IpAddress,
    (src_port, dst_port): (u16, u16),
    ip_len: u16,
) -> Result<NextHop, Reason> {
    let params = SBC_FIB.get_ptr_mut(0).ok_or(Reason::PassFibFailed)?;
    // SAFETY: this CPU's value, only this program run touches it; bpf_fib_lookup is a plain
    // C struct for which all-zero is a valid value.
    let params = unsafe {
        *params = core::mem::zeroed();
        &mut *params
    };
    params.l4_protocol = IPPROTO_UDP;
    params.sport = src_port;
    params.dport = dst_port;
    params.__bindgen_anon_1.tot_len = ip_len;
    params.ifindex = ctx.ingress_ifindex() as u32;
    match (src.ipv4(), dst.ipv4()) {
        (Some(src), Some(dst)) => {
            params.family = AF_INET;
            params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
        }
        (None, None) => {
            params.family = AF_INET6;
            params.__bindgen_anon_3.ipv6_src = words(&src.octets);
            params.__bindgen_anon_4.ipv6_dst = words(&dst.octets);
        }
        _ => return Err(Reason::PassFamilyTranslation),
    }

    // SAFETY: `params` is a valid, writable bpf_fib_lookup of the size we pass.
    let ret = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(Reason::PassNoNeighbour),
        BPF_FIB_LKUP_RET_FWD_DISABLED => return Err(Reason::PassForwardingDisabled),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(Reason::PassFragNeeded),
        _ => return Err(Reason::PassFibFailed),
    }
    let next_hop = NextHop {
        ifindex: params.ifindex,
        src_mac: params.smac,
        dst_mac: params.dmac,
    };
    // A redirect can only go to an interface the daemon put in the egress map; check it now,
    // while the frame is still untouched.
    if next_hop.ifindex != ctx.ingress_ifindex() as u32
        && SBC_EGRESS.get_ifindex(next_hop.ifindex).is_none()
    {
        return Err(Reason::PassRedirectFailed);
    }
    Ok(next_hop)
}

/// An IPv6 address as the four words `bpf_fib_lookup` holds it in (network order in memory).
#[inline(always)]
fn words(octets: &[u8; 16]) -> [u32; 4] {
    let word =
        |i: usize| u32::from_ne_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// The next hop from a memo of this CPU's (`NextHopMemo`) for the flow's value `generation`,
/// or looked up and remembered there: `bpf_fib_lookup` is the largest part of a forwarded
/// packet's cost.
#[inline(always)]
pub fn remembered_next_hop(
    ctx: &XdpContext,
    memo: Option<*mut NextHopMemo>,
    generation: u16,
    (src, dst): (&IpAddress, &IpAddress),
    ports: (u16, u16),
    ip_len: u16,
    now: u64,
) -> Result<NextHop, Reason> {
    let ingress = ctx.ingress_ifindex() as u32;
    if let Some(memo) = memo {
        // SAFETY: a per-CPU value, only this CPU touches it.
        let memo = unsafe { &*memo };
        if memo.answers(generation, ingress, ip_len, now) {
            return Ok(NextHop {
                ifindex: memo.egress_ifindex,
                src_mac: memo.src_mac,
                dst_mac: memo.dst_mac,
            });
        }
    }
    let next_hop = next_hop(ctx, src, dst, ports, ip_len)?;
    if let Some(memo) = memo {
        // SAFETY: a per-CPU value, only this CPU touches it.
        unsafe {
            *memo = NextHopMemo {
                until_ns: now + NEXT_HOP_MEMO_NS,
                generation,
                max_len: ip_len,
                ingress_ifindex: ingress,
                egress_ifindex: next_hop.ifindex,
                src_mac: next_hop.src_mac,
                dst_mac: next_hop.dst_mac,
            }
        };
    }
    Ok(next_hop)
}

#[inline(always)]
pub fn send(ctx: &XdpContext, next_hop: &NextHop) -> Verdict {
    if next_hop.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::ForwardTx,
        };
    }
    match SBC_EGRESS.redirect(next_hop.ifindex, 0) {
        Ok(action) => Verdict {
            action,
            reason: Reason::ForwardRedirect,
        },
        // Checked in `next_hop`; if the entry vanished since, the rewritten frame is lost.
        Err(_) => Verdict::drop(Reason::DropRedirectFailed),
    }
}
