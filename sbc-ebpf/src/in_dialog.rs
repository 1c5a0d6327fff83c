//! In-dialog SIP of established calls, forwarded in the kernel byte for byte as the daemon's
//! proxy would send it (`sbc_common::sip_forward`): a request or a response is read and
//! planned from the guard's copy of the datagram, assembled in this CPU's scratch, written
//! back over the frame (resized), and sent from our listener on the other side: a request to
//! the dialog's next hop, a response to the party whose request it answers. Whatever the plan
//! refuses goes up unchanged with its reason. The final response to a BYE ends the dialog:
//! recorded in its map entry and reported on `SBC_DIALOG_EVENTS` for the daemon.
use aya_ebpf::{
    cty::{c_long, c_void},
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use sbc_common::{
    Dialog, DialogEnd, DialogEnded, FlowKey, IpAddress, Reason, SipSelves,
    checksum::{ChecksumUpdate, udp_ipv4},
    sip_forward::{FRAME_HEADERS, ForwardScratch, SCAN_STEPS, is_response, plan::OUT_BUFFER},
    words::{ScanWindow, Words as _},
};

use crate::{
    Verdict, assembly,
    forward::{self, NextHop},
    loops::run_loop,
    maps::{SBC_DIALOG_EVENTS, SBC_DIALOGS, SBC_FORWARD, SBC_SIP_SELF},
    parse::{Ipv4Udp, header_at},
};

/// A forwarded datagram's TTL: a new one, as the daemon's socket would send it.
const TTL: u8 = 64;
const IPPROTO_UDP: u8 = 17;

/// What the `bpf_loop` steps work on: pointers into map values, kept on the stack (the
/// verifier follows pointers spilled there into the callback).
#[repr(C)]
struct Steps {
    forward: *mut ForwardScratch,
    window: *const ScanWindow,
    dialog: *const Dialog,
    selves: *const SipSelves,
}

/// The in-dialog message in `window` (the guard's copy of the datagram, its Call-ID hashed
/// to `dialog_id`, whose entry is `dialog`): forwarded, or passed up with a reason; `None`
/// when it belongs to no dialog the kernel forwards (the guard's verdict stands).
#[inline(always)]
pub fn forward(
    packet: &Ipv4Udp,
    window: *const ScanWindow,
    (dialog_id, dialog): (u64, *mut Dialog),
    seed: u64,
) -> Option<Verdict> {
    if packet.vlan_tagged {
        return None;
    }
    let (ip, udp) = (packet.ip, packet.udp);
    // SAFETY: the parser bounds-checked both headers; `window` is this CPU's scratch, its
    // first bytes copied from this datagram.
    let (source, source_port, listener, payload_len, response) = unsafe {
        (
            (*ip).src_addr,
            u16::from_be_bytes((*udp).src),
            FlowKey::udp(
                IpAddress::from_ipv4((*ip).dst_addr),
                u16::from_ne_bytes((*udp).dst),
            ),
            usize::from(u16::from_be_bytes((*udp).len)) - UdpHdr::LEN,
            is_response((*window).word(0)),
        )
    };
    // A request arrives at its leg's listener; a response at the other leg's.
    // SAFETY: a pointer into the map value just looked up.
    let arrived = unsafe {
        if (*dialog).legs[0].listener == listener {
            0
        } else if (*dialog).legs[1].listener == listener {
            1
        } else {
            return None;
        }
    };
    let leg = arrived ^ usize::from(response);
    // Looked up only for a dialog the kernel forwards (a call not confirmed yet has no legs).
    let selves = SBC_SIP_SELF.get_ptr(0)?;
    let scratch = SBC_FORWARD.get_ptr_mut(0)?;
    let mut steps = Steps {
        forward: scratch,
        window,
        dialog,
        selves,
    };
    // SAFETY: this CPU's scratch; the loops below only touch it through `steps`.
    unsafe {
        (*scratch)
            .scan
            .start(payload_len, leg, response, (source, source_port), seed);
        run_loop(SCAN_STEPS, scan_step, &mut steps);
        let verdict = (*scratch).scan.verdict();
        if !(*scratch).scan.forwards() {
            return Some(Verdict::pass(
                Reason::from_index(verdict).unwrap_or(Reason::PassSipInDialogForm),
            ));
        }
        if !assembly::assemble(scratch, window) {
            return Some(Verdict::pass(Reason::PassSipCopyFailed));
        }
    }
    // SAFETY: this CPU's scratch.
    unsafe { (*scratch).dialog_id = dialog_id };
    Some(Verdict::ASSEMBLED)
}

/// Writes out and sends the message `forward` assembled in this CPU's scratch. Called by the
/// program's entry, not within the SIP path (see `Verdict::ASSEMBLED`): its own function, its
/// map values looked up again (a pointer does not survive a BPF call's return).
#[inline(never)]
pub fn send(ctx: &XdpContext) -> Verdict {
    let Some(scratch) = SBC_FORWARD.get_ptr_mut(0) else {
        return Verdict::pass(Reason::PassSipDialog);
    };
    // SAFETY: this CPU's scratch, filled by `forward` for this datagram.
    let dialog_id = unsafe { (*scratch).dialog_id };
    let (Some(dialog), Some(selves)) =
        (SBC_DIALOGS.get_ptr_mut(dialog_id), SBC_SIP_SELF.get_ptr(0))
    else {
        // The daemon ended the dialog meanwhile.
        return Verdict::pass(Reason::PassSipDialog);
    };
    match write_out(ctx, scratch, dialog, selves) {
        Ok(verdict) => verdict,
        Err(reason) => reason.into(),
    }
}

/// Writes the assembled message over the frame and sends it on: a request from our listener
/// on its way out to the leg's next hop, a response from the leg's listener to its party.
#[inline(always)]
fn write_out(
    ctx: &XdpContext,
    scratch: *mut ForwardScratch,
    dialog: *mut Dialog,
    selves: *const SipSelves,
) -> Result<Verdict, Reason> {
    // SAFETY: pointers into map values looked up by the caller.
    let (out_len, payload_len, response, from, to, sum, leg, dialog_id) = unsafe {
        let scan = &(*scratch).scan;
        let leg_index = scan.leg & 1;
        let leg = &(*dialog).legs[leg_index];
        let response = scan.response != 0;
        let (from, to) = if response {
            (leg.listener, leg.party)
        } else {
            let out = (*selves).sides[usize::from(scan.out_side & 1)].listener;
            (out, leg.target)
        };
        (
            scan.plan.out_len,
            scan.len,
            response,
            from,
            to,
            (*scratch).sum.folded(),
            leg_index,
            (*scratch).dialog_id,
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
    // SAFETY: this CPU's scratch; the slot index is masked into its memos.
    let memo = unsafe {
        &raw mut *(*scratch).next_hops[ForwardScratch::memo_slot(dst)]
            .for_pair(&from.addr, &to.addr)
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (pair, ports) = ((&from.addr, &to.addr), (from.port, to.port));
    // The slot holds this pair's memo only: one generation is all it has.
    let next_hop = forward::remembered_next_hop(ctx, Some(memo), 0, pair, ports, tot_len, now)?;
    let addresses = Addresses {
        src,
        dst,
        ports: (u16::from_be(from.port), u16::from_be(to.port)),
    };
    // SAFETY: this CPU's scratch.
    let headers = unsafe { &mut (*scratch).out.headers };
    write_headers(headers, &addresses, tot_len, sum, &next_hop, ctx)
        .ok_or(Reason::PassTruncatedIpv4)?;
    resize(ctx, out_len as i32 - payload_len as i32)?;
    let len = FRAME_HEADERS + (out_len & (OUT_BUFFER - 1));
    // SAFETY: the headers and `out_len` bytes (below the buffer's size) of this CPU's
    // assembled message right after them; the helper checks the frame's bounds itself.
    let stored = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            0,
            (*scratch).out.headers.as_mut_ptr().cast::<c_void>(),
            len as u32,
        ) == 0
    };
    if !stored {
        return Ok(Verdict::drop(Reason::DropSipRewriteFailed));
    }
    note_forwarded(scratch, dialog, leg, dialog_id);
    let sent = forward::send(ctx, &next_hop);
    let forwarded = if response {
        Reason::ForwardSipResponse
    } else {
        Reason::ForwardSipRequest
    };
    Ok(Verdict {
        action: sent.action,
        reason: if sent.reason == Reason::DropRedirectFailed {
            sent.reason
        } else {
            forwarded
        },
    })
}

/// Counts what went through on the leg; a BYE's final response ends the dialog, recorded in
/// its entry and reported to the daemon (a full ring loses the report, not the record).
#[inline(always)]
fn note_forwarded(scratch: *mut ForwardScratch, dialog: *mut Dialog, leg: usize, dialog_id: u64) {
    // SAFETY: pointers into map values; two CPUs may race on a count (see sip_guard).
    unsafe {
        let scan = &(*scratch).scan;
        let counts = &mut (*dialog).legs[leg & 1];
        if scan.response == 0 {
            counts.requests += 1;
            if scan.cseq > counts.cseq {
                counts.cseq = scan.cseq;
            }
            if scan.is_bye() {
                counts.bye_ns = bpf_ktime_get_ns();
            }
            return;
        }
        counts.responses += 1;
        if scan.bye == 0 || scan.status < 200 || (*dialog).ended.at_ns != 0 {
            return;
        }
        let end = DialogEnd {
            at_ns: bpf_ktime_get_ns(),
            bye_ns: counts.bye_ns,
            code: scan.status as u16,
            by_leg: leg as u8,
            _pad: [0; 5],
        };
        (*dialog).ended = end;
        let _ = SBC_DIALOG_EVENTS.output_untyped::<DialogEnded>(
            DialogEnded {
                dialog: dialog_id,
                end,
            },
            0,
        );
    }
}

/// Where a forwarded datagram goes: our address to the next hop's, ports as values.
struct Addresses {
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
}

/// The frame's headers for its new payload, built whole in `headers`: Ethernet to the next
/// hop, IPv4 from our address (the received header's TOS, ID and flags kept, a fresh TTL, the
/// checksum in full) and UDP with the checksum of the assembled payload (`payload_sum`).
#[inline(always)]
fn write_headers(
    headers: &mut [u8; FRAME_HEADERS],
    to: &Addresses,
    tot_len: u16,
    payload_sum: u16,
    next_hop: &NextHop,
    ctx: &XdpContext,
) -> Option<()> {
    let ip: *const Ipv4Hdr = header_at(ctx, EthHdr::LEN)?;
    // SAFETY: bounds-checked by `header_at`; read before the frame changes.
    let (tos, id, frags) = unsafe { ((*ip).tos, (*ip).id, (*ip).frags) };
    headers[..6].copy_from_slice(&next_hop.dst_mac);
    headers[6..12].copy_from_slice(&next_hop.src_mac);
    headers[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut headers[EthHdr::LEN..EthHdr::LEN + Ipv4Hdr::LEN];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip[4..6].copy_from_slice(&id);
    ip[6..8].copy_from_slice(&frags);
    ip[8] = TTL;
    ip[9] = IPPROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&to.src);
    ip[16..20].copy_from_slice(&to.dst);
    let mut check = ChecksumUpdate::new(0xffff);
    let mut i = 0;
    while i < Ipv4Hdr::LEN {
        check = check.add_u16(u16::from_be_bytes([ip[i], ip[i + 1]]));
        i += 2;
    }
    ip[10..12].copy_from_slice(&check.finish().to_be_bytes());
    let udp_len = tot_len - Ipv4Hdr::LEN as u16;
    let udp = &mut headers[EthHdr::LEN + Ipv4Hdr::LEN..];
    udp[..2].copy_from_slice(&to.ports.0.to_be_bytes());
    udp[2..4].copy_from_slice(&to.ports.1.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let check = udp_ipv4(to.src, to.dst, to.ports, udp_len, payload_sum);
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    Some(())
}

/// Makes the frame `delta` bytes longer (or shorter): at its tail, or where the tail has no
/// room (a driver's buffer ends close after the frame), at its head (XDP keeps headroom).
/// The headers are written whole afterwards, so where the room comes from does not matter.
#[inline(always)]
fn resize(ctx: &XdpContext, delta: i32) -> Result<(), Reason> {
    // SAFETY: the helpers check the frame's room themselves; on failure it is unchanged.
    unsafe {
        if bpf_xdp_adjust_tail(ctx.ctx, delta) == 0
            || (delta > 0 && bpf_xdp_adjust_head(ctx.ctx, -delta) == 0)
        {
            return Ok(());
        }
    }
    Err(Reason::PassSipInDialogSize)
}

/// One step of reading the message (`DialogScan::step`); 1 stops the loop.
extern "C" fn scan_step(_index: u64, steps: *mut c_void) -> c_long {
    // SAFETY: `steps` is the caller's, alive for the whole loop, its pointers into map values.
    unsafe {
        let steps = &*steps.cast::<Steps>();
        let more = (*steps.forward)
            .scan
            .step(&*steps.window, &*steps.dialog, &*steps.selves);
        c_long::from(!more)
    }
}
