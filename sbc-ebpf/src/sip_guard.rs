//! The SIP guard: UDP SIP to one of our listeners is let up to the daemon or dropped here,
//! before it costs a context switch. The decision is `sbc_common::guard::decide`, the one the
//! daemon's userspace dataplane makes too; this file gives it the maps and the datagram.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::lpm_trie::Key,
    cty::{c_long, c_void},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use network_types::udp::UdpHdr;
use sbc_common::{
    Block, IpAddress, Reason, SourceBucket, SourceLimit, SourceRule,
    call_id::{CallIdScanner, SCAN_BUFFER, Step},
    guard::{GuardTables, GuardedDatagram, decide, is_invite},
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
    // SAFETY: the parser bounds-checked the IPv4 header.
    let source = IpAddress::from_ipv4(unsafe { (*packet.ip).src_addr });
    let decision = decide(
        config,
        &mut GuardMaps,
        &source,
        || Payload::copy(ctx, packet),
        // SAFETY: no preconditions.
        || unsafe { bpf_ktime_get_ns() },
    );
    if decision.pass {
        Verdict::pass(decision.reason)
    } else {
        Verdict::drop(decision.reason)
    }
}

/// The guard's tables are the program's maps. Values are changed in place through pointers
/// into the maps: two CPUs may update one source's bucket or block at once and lose a refill,
/// a token or a count, so limits are approximate by that much; a lock would cost every packet
/// more than the error is worth.
struct GuardMaps;

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
        true
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
}

impl GuardedDatagram for Payload {
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
    fn call_id_hash(&self, seed: u64) -> Option<u64> {
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
