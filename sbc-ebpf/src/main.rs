//! The sbc XDP program: relays RTP/RTCP of known media flows in the kernel.
//!
//! parse (Ethernet, one VLAN tag, IPv4, UDP) → look up the flow of the destination port → check
//! the source against the latched peer → rewrite → next hop by `bpf_fib_lookup` → `XDP_TX` or a
//! DEVMAP redirect. Whatever it does not fully understand goes up with `XDP_PASS`, and every
//! verdict is counted by reason (see `sbc_common::Reason`).
#![no_std]
#![no_main]

mod counters;
mod forward;
mod maps;
mod parse;
mod relay;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sbc_common::Reason;

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
        Ok(packet) => relay::media(&ctx, &packet),
        Err(reason) => Verdict::pass(reason),
    };
    counters::count(verdict.reason);
    verdict.action
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
