//! In-dialog SIP of established calls, forwarded in the kernel byte for byte as the daemon's
//! proxy would send it (`sbc_common::sip_forward`): the request is read and planned from the
//! guard's copy of the datagram, assembled in this CPU's scratch, written back over the frame
//! (resized), and sent from our listener on the other side to the dialog's next hop. Whatever
//! the plan refuses goes up unchanged with its reason.
use aya_ebpf::{
    cty::{c_long, c_void},
    helpers::{bpf_loop, bpf_xdp_adjust_tail, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use sbc_common::{
    Dialog, FlowKey, IpAddress, Reason, SipSelves,
    checksum::{ChecksumUpdate, udp_ipv4},
    sip_forward::{Assembly, ForwardScratch, REQUEST_STEPS, plan::OUT_BUFFER},
    words::ScanWindow,
};

use crate::{
    Verdict,
    forward::{self, NextHop},
    maps::{SBC_DIALOGS, SBC_FORWARD, SBC_SIP_SELF},
    parse::{Ipv4Udp, header_at},
};

/// A forwarded datagram's TTL: a new one, as the daemon's socket would send it.
const TTL: u8 = 64;
/// Where the SIP payload starts in an untagged IPv4/UDP frame.
const PAYLOAD_OFFSET: usize = EthHdr::LEN + Ipv4Hdr::LEN + UdpHdr::LEN;

/// What the `bpf_loop` steps work on: pointers into map values, kept on the stack (the
/// verifier follows pointers spilled there into the callback).
#[repr(C)]
struct Steps {
    forward: *mut ForwardScratch,
    window: *const ScanWindow,
    dialog: *const Dialog,
    selves: *const SipSelves,
}

/// The in-dialog request in `window` (the guard's copy of the datagram, its Call-ID hashed
/// to `dialog_id`): forwarded, or passed up with a reason; `None` when it belongs to no
/// dialog the kernel forwards (the guard's verdict stands).
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    packet: &Ipv4Udp,
    window: *const ScanWindow,
    dialog_id: u64,
    seed: u64,
) -> Option<Verdict> {
    if packet.vlan_tagged {
        return None;
    }
    let dialog = SBC_DIALOGS.get_ptr_mut(dialog_id)?;
    let selves = SBC_SIP_SELF.get_ptr(0)?;
    let scratch = SBC_FORWARD.get_ptr_mut(0)?;
    let (ip, udp) = (packet.ip, packet.udp);
    // SAFETY: the parser bounds-checked both headers; `dialog` points into its map value.
    let (source, source_port, listener, payload_len) = unsafe {
        (
            (*ip).src_addr,
            u16::from_be_bytes((*udp).src),
            FlowKey::udp(
                IpAddress::from_ipv4((*ip).dst_addr),
                u16::from_ne_bytes((*udp).dst),
            ),
            usize::from(u16::from_be_bytes((*udp).len)) - UdpHdr::LEN,
        )
    };
    // The leg is the one whose requests arrive at this listener.
    // SAFETY: a pointer into the map value just looked up.
    let leg = unsafe {
        if (*dialog).legs[0].listener == listener {
            0
        } else if (*dialog).legs[1].listener == listener {
            1
        } else {
            return None;
        }
    };
    let mut steps = Steps {
        forward: scratch,
        window,
        dialog,
        selves,
    };
    // SAFETY: this CPU's scratch; the loops below only touch it through `steps`.
    unsafe {
        (*scratch)
            .request
            .start(payload_len, leg, source, source_port, seed);
        run_loop(REQUEST_STEPS, request_step, &mut steps);
        let verdict = (*scratch).request.verdict();
        if verdict != Reason::ForwardSipRequest as u32 {
            return Some(Verdict::pass(
                Reason::from_index(verdict).unwrap_or(Reason::PassSipInDialogForm),
            ));
        }
        (*scratch).assembly = Assembly::new();
        run_loop(Assembly::STEPS, assembly_step, &mut steps);
        let len = (*scratch).request.plan.out_len;
        Assembly::clear_after(&mut (*scratch).out, len);
        run_loop(Assembly::sum_steps(len), sum_step, &mut steps);
    }
    Some(match send(ctx, scratch, dialog, selves, leg, payload_len) {
        Ok(verdict) => verdict,
        Err(reason) => reason.into(),
    })
}

/// Writes the assembled message over the frame and sends it to the leg's next hop.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    scratch: *mut ForwardScratch,
    dialog: *mut Dialog,
    selves: *const SipSelves,
    leg: usize,
    payload_len: usize,
) -> Result<Verdict, Reason> {
    // SAFETY: pointers into map values looked up by the caller.
    let (out_len, from, to, sum, cseq) = unsafe {
        let request = &(*scratch).request;
        (
            request.plan.out_len,
            (*selves).sides[usize::from(request.out_side & 1)].listener,
            (*dialog).legs[leg & 1].target,
            (*scratch).assembly.sum.folded(),
            request.cseq,
        )
    };
    let (Some(src), Some(dst)) = (from.addr.ipv4(), to.addr.ipv4()) else {
        return Err(Reason::PassFibFailed);
    };
    if out_len == 0 || out_len >= OUT_BUFFER {
        return Err(Reason::PassSipInDialogSize);
    }
    let udp_len = (out_len + UdpHdr::LEN) as u16;
    let tot_len = udp_len + Ipv4Hdr::LEN as u16;
    // Where it goes is settled before the frame changes: a refusal passes up the original.
    let next_hop = forward::next_hop(ctx, src, dst, (from.port, to.port), tot_len)?;
    // SAFETY: the helper checks the frame's room itself; on failure the frame is unchanged.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, out_len as i32 - payload_len as i32) } != 0 {
        return Err(Reason::PassSipInDialogSize);
    }
    let len = (out_len & (OUT_BUFFER - 1)) as u32;
    // SAFETY: `len` bytes (below the buffer's size) of this CPU's assembled message.
    let stored = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            PAYLOAD_OFFSET as u32,
            (*scratch).out.bytes.as_mut_ptr().cast::<c_void>(),
            len,
        )
    };
    if stored != 0 {
        return Ok(Verdict::drop(Reason::DropSipRewriteFailed));
    }
    let ports = (u16::from_be(from.port), u16::from_be(to.port));
    if rewrite_headers(ctx, (src, dst), ports, tot_len, sum, &next_hop).is_none() {
        return Ok(Verdict::drop(Reason::DropSipRewriteFailed));
    }
    // SAFETY: a pointer into the map value; two CPUs may race on a count (see sip_guard).
    unsafe {
        let leg = &mut (*dialog).legs[leg & 1];
        leg.requests += 1;
        if cseq > leg.cseq {
            leg.cseq = cseq;
        }
    }
    let sent = forward::send(ctx, &next_hop);
    Ok(Verdict {
        action: sent.action,
        reason: if sent.reason == Reason::DropRedirectFailed {
            sent.reason
        } else {
            Reason::ForwardSipRequest
        },
    })
}

/// The frame's headers for its new payload: our address and port to the next hop's, new
/// lengths, a fresh TTL and both checksums.
#[inline(always)]
fn rewrite_headers(
    ctx: &XdpContext,
    (src, dst): ([u8; 4], [u8; 4]),
    (sport, dport): (u16, u16),
    tot_len: u16,
    payload_sum: u16,
    next_hop: &NextHop,
) -> Option<()> {
    // The frame was resized: every header is found again.
    let eth: *mut EthHdr = header_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = header_at(ctx, EthHdr::LEN)?;
    let udp: *mut UdpHdr = header_at(ctx, EthHdr::LEN + Ipv4Hdr::LEN)?;
    let udp_len = tot_len - Ipv4Hdr::LEN as u16;
    // SAFETY: all three headers were bounds-checked by `header_at`.
    unsafe {
        (*eth).dst_addr = next_hop.dst_mac;
        (*eth).src_addr = next_hop.src_mac;
        let old_ttl = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        let new_ttl = u16::from_be_bytes([TTL, (*ip).proto]);
        (*ip).check = ChecksumUpdate::new(u16::from_be_bytes((*ip).check))
            .replace_4((*ip).src_addr, src)
            .replace_4((*ip).dst_addr, dst)
            .replace_u16(u16::from_be_bytes((*ip).tot_len), tot_len)
            .replace_u16(old_ttl, new_ttl)
            .finish()
            .to_be_bytes();
        (*ip).src_addr = src;
        (*ip).dst_addr = dst;
        (*ip).tot_len = tot_len.to_be_bytes();
        (*ip).ttl = TTL;
        (*udp).src = sport.to_be_bytes();
        (*udp).dst = dport.to_be_bytes();
        (*udp).len = udp_len.to_be_bytes();
        (*udp).check = udp_ipv4(src, dst, (sport, dport), udp_len, payload_sum).to_be_bytes();
    }
    Some(())
}

/// One step of reading the request (`RequestScan::step`); 1 stops the loop.
extern "C" fn request_step(_index: u64, steps: *mut c_void) -> c_long {
    // SAFETY: `steps` is the caller's, alive for the whole loop, its pointers into map values.
    unsafe {
        let steps = &*steps.cast::<Steps>();
        let more = (*steps.forward)
            .request
            .step(&*steps.window, &*steps.dialog, &*steps.selves);
        c_long::from(!more)
    }
}

/// One step of assembling the message (`Assembly::step`); 1 stops the loop.
extern "C" fn assembly_step(_index: u64, steps: *mut c_void) -> c_long {
    // SAFETY: as in `request_step`.
    unsafe {
        let steps = &*steps.cast::<Steps>();
        let scratch = steps.forward;
        let more = (*scratch).assembly.step(
            &(*scratch).request.plan,
            &*steps.window,
            &mut (*scratch).out,
        );
        c_long::from(!more)
    }
}

/// One step of summing the assembled message (`Assembly::sum_step`).
extern "C" fn sum_step(_index: u64, steps: *mut c_void) -> c_long {
    // SAFETY: as in `request_step`.
    unsafe {
        let scratch = (*steps.cast::<Steps>()).forward;
        (*scratch).assembly.sum_step(&(*scratch).out);
    }
    0
}

/// Runs `step` over `steps` up to `count` times, until it asks to stop.
#[inline(always)]
fn run_loop(count: usize, step: extern "C" fn(u64, *mut c_void) -> c_long, steps: &mut Steps) {
    // SAFETY: `steps` outlives the call; the callback has the signature bpf_loop expects.
    unsafe {
        bpf_loop(
            count as u32,
            step as *mut c_void,
            (steps as *mut Steps).cast(),
            0,
        )
    };
}
