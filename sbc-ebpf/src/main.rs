//! The sbc XDP program: relays RTP/RTCP of known media flows in the kernel, and guards the SIP
//! listeners against floods.
//!
//! parse (Ethernet, one VLAN tag, IPv4, UDP) → classify by destination:
//! - a SIP listener (compared in place, no lookup): dynamic blocks, blocklists, known dialogs
//!   (their in-dialog SIP forwarded here), per-source token buckets;
//! - a media flow: check the source against the latched peer → rewrite → next hop by
//!   `bpf_fib_lookup` → `XDP_TX` or a DEVMAP redirect.
//!
//! Whatever it does not fully understand goes up with `XDP_PASS`, and every verdict is counted
//! by reason (see `sbc_common::Reason`).
#![no_std]
#![no_main]
// Unaligned word loads and stores in assembly (see `assembly::load`).
#![feature(asm_experimental_arch)]

mod assembly;
mod counters;
mod forward;
mod in_dialog;
mod loops;
mod maps;
mod parse;
mod relay;
mod sip_guard;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sbc_common::{FlowKey, IpAddress, Reason};

use crate::{
    maps::{SBC_FLOWS, SBC_SIP_LISTENERS},
    parse::Ipv4Udp,
};

/// What the program does with a frame, and why.
pub struct Verdict {
    action: u32,
    reason: Reason,
}

impl Verdict {
    pub const fn pass(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    pub const fn drop(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            reason,
        }
    }

    /// Not a verdict yet: an in-dialog message is assembled in this CPU's scratch, for
    /// `in_dialog::send` to write out and send.
    pub const ASSEMBLED: Self = Self {
        action: u32::MAX,
        reason: Reason::ForwardSipRequest,
    };
}

impl From<Reason> for Verdict {
    /// Anything the fast path declines goes up to the complete slow path.
    fn from(reason: Reason) -> Self {
        Self::pass(reason)
    }
}

#[xdp]
pub fn sbc_xdp(ctx: XdpContext) -> u32 {
    let verdict = match parse::ipv4_udp(&ctx) {
        Ok(packet) => classify(&ctx, &packet),
        Err(reason) => Verdict::pass(reason),
    };
    counters::count(verdict.reason);
    verdict.action
}

/// Media to one of our relay ports, or SIP to one of our listeners: the destination decides.
#[inline(always)]
fn classify(ctx: &XdpContext, packet: &Ipv4Udp) -> Verdict {
    // SAFETY: the parser bounds-checked both headers.
    let (dst_addr, dst_port) =
        unsafe { ((*packet.ip).dst_addr, u16::from_ne_bytes((*packet.udp).dst)) };
    let destination = FlowKey::udp(IpAddress::from_ipv4(dst_addr), dst_port);
    // Listeners first: they are compared in place, and a flood to them then costs no lookup
    // of the flows.
    if SBC_SIP_LISTENERS
        .get(0)
        .is_some_and(|listeners| listeners.holds(&destination))
    {
        let verdict = sip_guard::sip(ctx, packet);
        // Sent from here, not from within the SIP path: the stack of a chain of BPF calls is
        // limited to 512 bytes, and the SIP path's and the sending's would exceed it together.
        if verdict.action == Verdict::ASSEMBLED.action {
            return in_dialog::send(ctx);
        }
        return verdict;
    }
    // SAFETY: the daemon replaces flow values whole with bpf_map_update_elem; the value is
    // copied out at once and no reference is held across a helper that could free it.
    if let Some(flow) = unsafe { SBC_FLOWS.get(destination) } {
        return relay::media(ctx, packet, flow);
    }
    Verdict::pass(Reason::PassNoFlow)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach this; it exists only to satisfy no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
