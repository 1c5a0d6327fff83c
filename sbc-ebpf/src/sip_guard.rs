//! The SIP guard: UDP SIP to one of our listeners is let up to the daemon or dropped here,
//! before it costs a context switch. The order and the arithmetic are `sbc_common::guard`'s.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::lpm_trie::Key,
    cty::{c_long, c_void},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use network_types::udp::UdpHdr;
use sbc_common::{
    Block, GuardConfig, IpAddress, Reason, SourceBucket, SourceLimit,
    call_id::{CallIdScanner, SCAN_BUFFER, Step},
    guard::{BLOCK_RATE, GUARD_ON, RULE_ALLOW, RULE_BLOCK, is_invite},
};

use crate::{
    Verdict,
    maps::{
        SBC_BLOCKS, SBC_DIALOGS, SBC_GUARD, SBC_SCAN, SBC_SOURCE_RULES, SBC_SOURCES, ScanBuffer,
    },
    parse::Ipv4Udp,
};

/// Adds one to a counter in a shared map value. Two CPUs may race and lose an increment: these
/// counters inform operators, and an atomic per packet is not worth exactness here.
#[inline(always)]
fn count(counter: *mut u64) {
    // SAFETY: `counter` points into a map value, which lives as long as the entry.
    unsafe { *counter += 1 };
}

#[inline(always)]
pub fn sip(ctx: &XdpContext, packet: &Ipv4Udp) -> Verdict {
    let Some(config) = SBC_GUARD.get(0) else {
        return Verdict::pass(Reason::PassSipUnguarded);
    };
    if config.flags & GUARD_ON == 0 {
        return Verdict::pass(Reason::PassSipUnguarded);
    }
    // SAFETY: the parser bounds-checked the IPv4 header.
    let source = IpAddress::from_ipv4(unsafe { (*packet.ip).src_addr });

    // 1. Blocklisted CIDRs are dropped whatever they send; allowlisted ones carry their limit.
    let rule = SBC_SOURCE_RULES.get(&Key::new(128, source.octets));
    let (limit, allowlisted) = match rule {
        Some(rule) if rule.action == RULE_BLOCK => {
            return Verdict::drop(Reason::DropSipBlocklisted);
        }
        Some(rule) if rule.action == RULE_ALLOW => (rule.limit, true),
        _ => (config.default_limit, false),
    };
    if limit.is_unlimited() {
        return Verdict::pass(Reason::PassSipUnlimited);
    }

    // 2. Known dialogs are never limited (a datagram with nothing to read is limited as any).
    let payload = Payload::copy(ctx, packet);
    if let Some(payload) = &payload
        && let Some(dialog_id) = payload.call_id(config.dialog_seed)
        && let Some(dialog) = SBC_DIALOGS.get_ptr_mut(dialog_id)
    {
        // SAFETY: a pointer into the map value just looked up.
        count(unsafe { &raw mut (*dialog).packets });
        return Verdict::pass(Reason::PassSipDialog);
    }

    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // 3. Dynamic blocks (an allowlisted source is never blocked for its behaviour).
    if !allowlisted && let Some(block) = SBC_BLOCKS.get_ptr_mut(source) {
        // SAFETY: a pointer into the map value just looked up.
        unsafe {
            if (*block).is_active(now) {
                count(&raw mut (*block).dropped);
                return Verdict::drop(Reason::DropSipBlocked);
            }
        }
    }

    // 4. The source's buckets: its packet rate, and for an INVITE that starts a call (its
    // dialog is unknown) its INVITE rate too.
    let invite = payload.is_some_and(|payload| payload.is_invite());
    rate_limit(config, &source, &limit, allowlisted, invite, now)
}

#[inline(always)]
fn rate_limit(
    config: &GuardConfig,
    source: &IpAddress,
    limit: &SourceLimit,
    allowlisted: bool,
    invite: bool,
    now: u64,
) -> Verdict {
    let bucket = match SBC_SOURCES.get_ptr_mut(source) {
        Some(bucket) => bucket,
        None => {
            let _ = SBC_SOURCES.insert(
                source,
                SourceBucket::full(limit, now),
                u64::from(BPF_NOEXIST),
            );
            match SBC_SOURCES.get_ptr_mut(source) {
                Some(bucket) => bucket,
                // The LRU map always makes room; should it not, the packet is not the one to
                // pay for it.
                None => return Verdict::pass(Reason::PassSip),
            }
        }
    };
    // SAFETY: a pointer into the map value just looked up. Two CPUs may update one source's
    // bucket at once and lose a refill or a token: the limit is approximate by that much, and
    // a lock would cost every packet more than the error is worth.
    let bucket = unsafe { &mut *bucket };
    let verdict = bucket.admit(limit, invite, now);
    if matches!(verdict, Reason::PassSip) {
        return Verdict::pass(verdict);
    }
    let threshold = limit.drops_to_block(verdict, config.block_after_drops);
    if !allowlisted && bucket.strike(threshold, now) {
        let block = Block {
            until_ns: now.saturating_add(config.block_ns),
            dropped: 0,
            reason: BLOCK_RATE,
            _pad: 0,
        };
        let _ = SBC_BLOCKS.insert(source, block, 0);
    }
    Verdict::drop(verdict)
}

/// The state of one Call-ID scan, on the stack and handed to each `bpf_loop` step.
struct Scan {
    /// This CPU's copy of the payload, looked up once for the whole scan.
    buffer: *const ScanBuffer,
    scanner: CallIdScanner,
    result: Option<u64>,
}

/// One `bpf_loop` step: feeds byte `index` of the scan buffer. Returns 1 to stop the loop.
extern "C" fn scan_step(index: u64, scan: *mut c_void) -> c_long {
    let scan = scan.cast::<Scan>();
    // SAFETY: `scan` is the caller's `Scan`, alive for the whole loop; its buffer is this
    // CPU's, and the index is masked into it (bpf_loop stops at the copied length, which is
    // at most its size).
    unsafe {
        let byte = (*(*scan).buffer).bytes[index as usize & (SCAN_BUFFER - 1)];
        match (*scan).scanner.feed(byte) {
            Step::More => 0,
            Step::Found(hash) => {
                (*scan).result = Some(hash);
                1
            }
            Step::NotFound => 1,
        }
    }
}

/// The first bytes of a datagram's payload, copied into this CPU's scan buffer.
struct Payload {
    buffer: *const ScanBuffer,
    len: usize,
}

impl Payload {
    /// Copies up to `SCAN_BUFFER` bytes of the payload; `None` if it is empty or the copy
    /// failed.
    #[inline(always)]
    fn copy(ctx: &XdpContext, packet: &Ipv4Udp) -> Option<Self> {
        let buffer = SBC_SCAN.get_ptr_mut(0)?;
        let payload_offset = packet.udp as usize - ctx.data() + UdpHdr::LEN;
        // SAFETY: the parser bounds-checked the UDP header, and its length against the frame.
        let payload_len =
            usize::from(u16::from_be_bytes(unsafe { (*packet.udp).len })) - UdpHdr::LEN;
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
                (*buffer).bytes.as_mut_ptr().cast(),
                len as u32,
            )
        };
        (copied == 0).then_some(Self { buffer, len })
    }

    /// Whether the payload is an INVITE (by its first bytes).
    #[inline(always)]
    fn is_invite(&self) -> bool {
        if self.len < 8 {
            return false;
        }
        // SAFETY: the buffer is this CPU's, and its first 8 bytes were copied from the frame.
        let head = unsafe { core::ptr::read_unaligned((*self.buffer).bytes.as_ptr().cast()) };
        is_invite(u64::from_le(head))
    }

    /// The seeded hash of the datagram's Call-ID, if it lies within the copied bytes.
    #[inline(always)]
    fn call_id(&self, seed: u64) -> Option<u64> {
        let mut scan = Scan {
            buffer: self.buffer,
            scanner: CallIdScanner::new(seed),
            result: None,
        };
        // The callback is passed as a function address (the loader turns it into a
        // BPF_PSEUDO_FUNC reference); it must reach the helper unchanged.
        let step = scan_step as extern "C" fn(u64, *mut c_void) -> c_long;
        // SAFETY: `scan` outlives the call; the callback has the signature bpf_loop expects.
        unsafe {
            bpf_loop(
                self.len as u32,
                step as *mut c_void,
                (&raw mut scan).cast(),
                0,
            )
        };
        scan.result
    }
}
