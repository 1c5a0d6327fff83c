//! The sbc XDP program: relays RTP/RTCP of known media flows in the kernel, and guards the SIP
//! listeners against floods.
//!
//! parse (Ethernet, one VLAN tag, IPv4 or IPv6, UDP) → classify by destination:
//! - a SIP listener (compared in place, no lookup): dynamic blocks, blocklists, known dialogs
//!   (their in-dialog SIP over IPv4 forwarded here), per-source token buckets;
//! - a media flow: check the source against the latched peer → rewrite → next hop by
//!   `bpf_fib_lookup` → `XDP_TX` or a DEVMAP redirect (a flow between families goes up).
//!
//! Whatever it does not fully understand goes up with `XDP_PASS`, and every verdict is counted
//! by reason (see `sbc_common::Reason`).
#![no_std]
#![no_main]
// Unaligned word loads and stores in assembly (see `assembly::load`).
#![feature(asm_experimental_arch)]

mod assembly;
mod counters;
mod flow_table;
mod forward;
mod in_dialog;
mod loops;
mod maps;
mod parse;
mod relay;
mod sip_guard;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sbc_common::{Flow, FlowKey, Reason};

use crate::{
    flow_table::flow_at,
    maps::SBC_SIP_LISTENERS,
    parse::{Datagram, Ipv4Udp, Ipv6Udp},
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
    let verdict = match parse::udp(&ctx) {
        Ok(Datagram::V4(packet)) => classify_v4(&ctx, &packet),
        Ok(Datagram::V6(packet)) => classify_v6(&ctx, &packet),
        Err(reason) => Verdict::pass(reason),
    };
    counters::count(verdict.reason);
    verdict.action
}

/// SIP to one of our listeners, or media to one of our relay ports: the destination decides.
#[inline(always)]
fn classify_v4(ctx: &XdpContext, packet: &Ipv4Udp) -> Verdict {
    let datagram = Datagram::V4(*packet);
    let destination = datagram.destination();
    if is_sip_listener(&destination) {
        let verdict = sip_guard::sip(ctx, packet);
        // Sent from here, not from within the SIP path: the stack of a chain of BPF calls is
        // limited to 512 bytes, and the SIP path's and the sending's would exceed it together.
        if verdict.action == Verdict::ASSEMBLED.action {
            return in_dialog::send(ctx);
        }
        return verdict;
    }
    match flow_at(&destination) {
        Ok(flow) => relay::media_v4(ctx, packet, flow),
        Err(reason) => Verdict::pass(reason),
    }
}

/// As `classify_v4`. No IPv6 address is held in `main`'s frame (which heads the IPv4 SIP
/// path's chain of calls, 512 bytes of stack in all), nor in the relay's: the destination is
/// looked up in a function of its own. The kernel forwards no SIP over IPv6, so its guard is
/// the lighter `sip_guard::sip_v6`.
#[inline(always)]
fn classify_v6(ctx: &XdpContext, packet: &Ipv6Udp) -> Verdict {
    match destination_v6(packet) {
        DestinationV6::SipListener => sip_guard::sip_v6(ctx, packet),
        DestinationV6::Media(flow) => relay::media_v6(ctx, packet, flow),
        DestinationV6::Neither(reason) => Verdict::pass(reason),
    }
}

enum DestinationV6 {
    SipListener,
    Media(&'static Flow),
    /// Neither a listener nor a flow to relay by: why.
    Neither(Reason),
}

#[inline(never)]
fn destination_v6(packet: &Ipv6Udp) -> DestinationV6 {
    let destination = Datagram::V6(*packet).destination();
    if is_sip_listener(&destination) {
        return DestinationV6::SipListener;
    }
    flow_at(&destination).map_or_else(DestinationV6::Neither, DestinationV6::Media)
}

/// Listeners are checked before the flows: they are compared in place, and a flood to them
/// then costs no lookup of the flows.
#[inline(always)]
fn is_sip_listener(destination: &FlowKey) -> bool {
    SBC_SIP_LISTENERS
        .get(0)
        .is_some_and(|listeners| listeners.holds(destination))
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
