//! The SIP guard: UDP SIP to one of our listeners is let up to the daemon or dropped here,
//! before it costs a context switch. The decision is `sbc_common::guard::decide`, the one the
//! daemon's userspace dataplane makes too; this file gives it the maps and the datagram.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::lpm_trie::Key,
    cty::{c_long, c_void},
    helpers::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use network_types::udp::UdpHdr;
use sbc_common::{
    Block, Dialog, GuardConfig, IpAddress, Reason, SourceBucket, SourceLimit, SourceRule,
    call_id::{CallIdScan, SCAN_BUFFER, Words as _},
    guard::{Decision, GuardTables, GuardedDatagram, decide, is_invite},
};

use crate::{
    Verdict, in_dialog,
    loops::run_loop,
    maps::{
        SBC_BLOCKS, SBC_DIALOGS, SBC_GUARD, SBC_PARTIES, SBC_SCAN, SBC_SOURCE_RULES, SBC_SOURCES,
        ScanScratch,
    },
    parse::{Ipv4Udp, Ipv6Udp, header_at},
};

/// Adds one to a counter in a shared map value. Two CPUs may race and lose an increment: these
/// counters inform operators, and an atomic per packet is not worth exactness here.
#[inline(always)]
fn count(counter: *mut u64) {
    // SAFETY: `counter` points into a map value, which lives as long as the entry.
    unsafe { *counter += 1 };
}

/// A function of its own (a BPF-to-BPF call), not inlined: the stack of a call chain is
/// limited to 512 bytes, and the media path's locals must not count against the forwarding's
/// `bpf_loop` callbacks.
#[inline(never)]
pub fn sip(ctx: &XdpContext, packet: &Ipv4Udp) -> Verdict {
    // SAFETY: the parser bounds-checked the IPv4 header.
    let source = IpAddress::from_ipv4(unsafe { (*packet.ip).src_addr });
    let (config, decision, found) = match guard(ctx, &source, packet.udp) {
        Ok(guarded) => guarded,
        Err(verdict) => return verdict,
    };
    forward_in_dialog(ctx, packet, config.dialog_seed, found)
        .unwrap_or(Verdict::pass(decision.reason))
}

/// The guard over IPv6, where the kernel forwards no SIP: a known dialog's goes up to the
/// daemon. Not inlined, as `sip`, and without the forwarding's locals: it is called a frame
/// deeper (from `classify_v6`).
#[inline(never)]
pub fn sip_v6(ctx: &XdpContext, packet: &Ipv6Udp) -> Verdict {
    // SAFETY: the parser bounds-checked the IPv6 header.
    let source = IpAddress {
        octets: unsafe { (*packet.ip).src_addr },
    };
    match guard(ctx, &source, packet.udp) {
        Ok((_, decision, _)) if decision.reason == Reason::PassSipDialog => {
            Verdict::pass(Reason::PassSipIpv6InDialog)
        }
        Ok((_, decision, _)) => Verdict::pass(decision.reason),
        Err(verdict) => verdict,
    }
}

/// The guard's decision on a datagram from `source` (its bounds-checked UDP header `udp`): the
/// verdict when it is dropped or goes up as it is, else what the kernel may forward, with the
/// dialog the guard found it in (`None`: a source it let through unread).
#[inline(always)]
fn guard(
    ctx: &XdpContext,
    source: &IpAddress,
    udp: *mut UdpHdr,
) -> Result<(&'static GuardConfig, Decision, Option<*mut Dialog>), Verdict> {
    let Some(config) = SBC_GUARD.get(0) else {
        return Err(Verdict::pass(Reason::PassSipUnguarded));
    };
    let mut maps = GuardMaps { dialog: None };
    let decision = decide(
        config,
        &mut maps,
        source,
        || Payload::copy(ctx, udp),
        // The coarse clock (a tick's resolution, within a tick of the daemon's CLOCK_MONOTONIC)
        // is plenty for buckets and blocks of seconds, and costs a VM far less to read.
        // SAFETY: no preconditions.
        || unsafe { bpf_ktime_get_coarse_ns() },
    );
    if !decision.pass {
        return Err(Verdict::drop(decision.reason));
    }
    // What the guard lets up may be an established call's request the kernel forwards itself.
    let found = match decision.reason {
        Reason::PassSipDialog => maps.dialog,
        Reason::PassSipUnlimited | Reason::PassSipUnguarded => None,
        _ => return Err(Verdict::pass(decision.reason)),
    };
    Ok((config, decision, found))
}

/// The datagram forwarded as an established call's in-dialog SIP, or passed up for a reason
/// of its own; `None` when it is no such call's. The guard found its dialog already when it
/// scanned it (`found`); a source it does not limit (a backend) is scanned only now, and not
/// for an INVITE.
#[inline(always)]
fn forward_in_dialog(
    ctx: &XdpContext,
    packet: &Ipv4Udp,
    seed: u64,
    found: Option<*mut Dialog>,
) -> Option<Verdict> {
    let scratch = SBC_SCAN.get_ptr_mut(0)?;
    let (dialog_id, dialog) = if let Some(dialog) = found {
        // SAFETY: this CPU's scratch, where the guard's scan of this datagram left its result.
        (unsafe { (*scratch).scan.result() }?, dialog)
    } else {
        // A source the guard lets through unread (a backend, an unlimited trunk, everyone
        // with the guard off) is read for a dialog only if it is no INVITE, told by the
        // payload's first eight bytes in place: a flood of new calls from it costs one load
        // more, and a re-INVITE goes to the daemon anyway but for the rare one without SDP.
        let payload_offset = packet.udp as usize - ctx.data() + UdpHdr::LEN;
        let head: *const [u8; 8] = header_at(ctx, payload_offset)?;
        // SAFETY: bounds-checked by `header_at`.
        if is_invite(u64::from_le_bytes(unsafe { *head })) {
            return None;
        }
        let dialog_id = Payload::copy(ctx, packet.udp)?.call_id_hash(seed)?;
        (dialog_id, SBC_DIALOGS.get_ptr_mut(dialog_id)?)
    };
    // SAFETY: this CPU's scratch, holding this datagram's first bytes.
    let window = unsafe { &raw const (*scratch).window };
    in_dialog::forward(packet, window, (dialog_id, dialog), seed)
}

/// The guard's tables are the program's maps; the entry of the dialog a datagram was found to
/// belong to is kept for its forwarding (one lookup of the dialogs map, not two). Values are changed in place through pointers
/// into the maps: two CPUs may update one source's bucket or block at once and lose a refill,
/// a token or a count, so limits are approximate by that much; a lock would cost every packet
/// more than the error is worth.
struct GuardMaps {
    dialog: Option<*mut Dialog>,
}

impl GuardTables for GuardMaps {
    #[inline(always)]
    fn rule(&self, source: &IpAddress) -> Option<SourceRule> {
        SBC_SOURCE_RULES.get(&Key::new(128, source.octets)).copied()
    }

    #[inline(always)]
    fn knows_dialog(&mut self, dialog: u64) -> bool {
        let Some(entry) = SBC_DIALOGS.get_ptr_mut(dialog) else {
            return false;
        };
        // SAFETY: a pointer into the map value just looked up.
        count(unsafe { &raw mut (*entry).packets });
        self.dialog = Some(entry);
        true
    }

    #[inline(always)]
    fn is_party(&self, source: &IpAddress) -> bool {
        SBC_PARTIES.get_ptr(source).is_some()
    }

    #[inline(always)]
    fn block(&mut self, source: &IpAddress) -> Option<&mut Block> {
        // SAFETY: a pointer into the map value just looked up (see the type's doc).
        SBC_BLOCKS
            .get_ptr_mut(source)
            .map(|block| unsafe { &mut *block })
    }

    #[inline(always)]
    fn set_block(&mut self, source: &IpAddress, block: Block) {
        let _ = SBC_BLOCKS.insert(source, block, 0);
    }

    #[inline(always)]
    fn bucket(
        &mut self,
        source: &IpAddress,
        limit: &SourceLimit,
        now_ns: u64,
    ) -> Option<&mut SourceBucket> {
        let bucket = match SBC_SOURCES.get_ptr_mut(source) {
            Some(bucket) => bucket,
            None => {
                let full = SourceBucket::full(limit, now_ns);
                let _ = SBC_SOURCES.insert(source, full, u64::from(BPF_NOEXIST));
                // The LRU map always makes room; should it not, there is no bucket.
                SBC_SOURCES.get_ptr_mut(source)?
            }
        };
        // SAFETY: a pointer into the map value just looked up (see the type's doc).
        Some(unsafe { &mut *bucket })
    }
}

/// One `bpf_loop` step of the header search (see `CallIdScan::step`, which keeps its own
/// cursor): a `loops::Step`.
extern "C" fn header_step(_index: u64, scratch: *mut c_void) -> c_long {
    // SAFETY: `scratch` is the caller's pointer to this CPU's scratch, alive for the whole
    // loop; `step` masks every index into the window.
    unsafe {
        let scratch = *scratch.cast::<*mut ScanScratch>();
        c_long::from(!(*scratch).scan.step(&(*scratch).window))
    }
}

/// One `bpf_loop` step of hashing the value (see `CallIdScan::value_step`).
extern "C" fn value_step(n: u64, scratch: *mut c_void) -> c_long {
    // SAFETY: as in `header_step`.
    unsafe {
        let scratch = *scratch.cast::<*mut ScanScratch>();
        c_long::from(!(*scratch).scan.value_step(&(*scratch).window, n as usize))
    }
}

/// The first bytes of a datagram's payload, copied into this CPU's scan buffer.
struct Payload {
    scratch: *mut ScanScratch,
    len: usize,
}

impl Payload {
    /// Copies up to `SCAN_BUFFER` bytes of the payload of the datagram whose (bounds-checked)
    /// UDP header is `udp`; `None` if it is empty or the copy failed.
    #[inline(always)]
    fn copy(ctx: &XdpContext, udp: *mut UdpHdr) -> Option<Self> {
        let scratch = SBC_SCAN.get_ptr_mut(0)?;
        let payload_offset = udp as usize - ctx.data() + UdpHdr::LEN;
        // SAFETY: the parser bounds-checked the UDP header, and its length against the frame.
        let payload_len = usize::from(u16::from_be_bytes(unsafe { (*udp).len })) - UdpHdr::LEN;
        let len = if payload_len > SCAN_BUFFER {
            SCAN_BUFFER
        } else {
            payload_len
        };
        if len == 0 {
            return None;
        }
        // SAFETY: copies `len` (at most the buffer's size) bytes of the frame into this CPU's
        // buffer; the helper checks the frame bounds itself.
        let copied = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                payload_offset as u32,
                (*scratch).window.bytes.as_mut_ptr().cast(),
                len as u32,
            )
        };
        (copied == 0).then_some(Self { scratch, len })
    }
}

impl GuardedDatagram for Payload {
    /// Whether the payload is an INVITE (by its first bytes).
    #[inline(always)]
    fn is_invite(&self) -> bool {
        if self.len < 8 {
            return false;
        }
        // SAFETY: the buffer is this CPU's, and its first 8 bytes were copied from the frame.
        let head = unsafe { (*self.scratch).window.word(0) };
        is_invite(head)
    }

    /// The seeded hash of the datagram's Call-ID, if it lies within the copied bytes.
    #[inline(always)]
    fn call_id_hash(&self, seed: u64) -> Option<u64> {
        let scratch = self.scratch;
        // SAFETY: this CPU's scratch, looked up in `copy`.
        unsafe {
            (*scratch).scan = CallIdScan::new(self.len, seed);
            // The loops' context, on the stack: the pointer to the scratch.
            let mut context = scratch;
            run_loop((*scratch).scan.steps(), header_step, &mut context);
            if (*scratch).scan.start_value(&(*scratch).window) {
                run_loop(CallIdScan::VALUE_STEPS, value_step, &mut context);
            }
            (*scratch).scan.result()
        }
    }
}
