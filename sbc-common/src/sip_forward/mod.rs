//! SIP of established calls forwarded in the kernel, byte for byte as the daemon's proxy
//! forwards it: the XDP program reads an in-dialog request with `RequestScan`, which builds
//! a `Plan` of the message to send, whose pieces are then copied out. The scan runs the same
//! here and in the daemon's tests, which compare what it plans with the proxy's own output.
#[cfg(any(test, feature = "user"))]
pub mod corpus;
pub mod plan;
mod request_edits;
pub mod scan;
mod start_line;
pub mod text;
mod via;

pub use plan::{Cursor, OutBuffer, Plan};
pub use scan::{DialogScan, SCAN_STEPS};

/// The largest request sent over UDP (RFC 3261 18.1.1: 200 bytes under the path MTU, 1300
/// when it is not known); a larger one goes by TCP, which the daemon does: the kernel passes
/// it up.
pub const UDP_MAX_REQUEST: usize = 1300;

use crate::{
    Reason,
    checksum::WordSum,
    dialog::{Dialog, SipSelves},
    flow::{IpAddress, NextHopMemo},
    words::{MessageWords, Words},
};

/// Everything a forwarding needs besides the message: the scan's state, the buffer the
/// message is assembled in. The XDP program keeps one per CPU in map memory.
#[repr(C)]
pub struct ForwardScratch {
    pub scan: DialogScan,
    /// The message assembled, after the frame's new Ethernet, IPv4 and UDP headers (written
    /// whole by the XDP program: the frame may grow at its head as well as at its tail).
    pub out: OutBuffer,
    /// Where the XDP program's copy of the plan into `out` stands, and the sum of what it
    /// copied (for the UDP checksum).
    pub cursor: Cursor,
    pub sum: WordSum,
    /// The dialogs map's key of the message's dialog (for the XDP program's report).
    pub dialog_id: u64,
    /// The XDP program's memos of the next hops it sent to, by destination (`memo_slot`):
    /// in-dialog SIP goes to few addresses (the trunks and backends), over and over.
    pub next_hops: [AddressedNextHop; NEXT_HOP_SLOTS],
}

/// A next hop remembered for forwarded SIP. Destinations share the slots, so each names the
/// addresses it was found for (a media flow's memo is its own, and checked by its generation).
#[repr(C)]
pub struct AddressedNextHop {
    pub src: IpAddress,
    pub dst: IpAddress,
    pub hop: NextHopMemo,
}

impl AddressedNextHop {
    /// The memo for `src` to `dst`: this slot's, emptied first if it was another pair's.
    #[inline(always)]
    pub fn for_pair(&mut self, src: &IpAddress, dst: &IpAddress) -> &mut NextHopMemo {
        if self.src != *src || self.dst != *dst {
            self.src = *src;
            self.dst = *dst;
            self.hop.until_ns = 0;
        }
        &mut self.hop
    }
}

/// Next hops a CPU remembers for forwarded SIP (a power of two).
pub const NEXT_HOP_SLOTS: usize = 8;

impl ForwardScratch {
    /// The memo slot of next hops to `destination`.
    #[inline(always)]
    pub fn memo_slot(destination: [u8; 4]) -> usize {
        let hash = u32::from_ne_bytes(destination).wrapping_mul(0x9e37_79b9);
        (hash >> 29) as usize & (NEXT_HOP_SLOTS - 1)
    }
}

/// Bytes of Ethernet, IPv4 (no options) and UDP headers.
pub const FRAME_HEADERS: usize = 14 + 20 + 8;
const _: () = assert!(
    core::mem::offset_of!(OutBuffer, bytes) % 8 == 0
        && core::mem::offset_of!(OutBuffer, bytes)
            == core::mem::offset_of!(OutBuffer, headers) + FRAME_HEADERS,
    "the message follows its headers, at a multiple of 8"
);

impl ForwardScratch {
    /// A scratch with every byte zero (what a fresh per-CPU map value holds).
    pub fn zeroed() -> Self {
        // SAFETY: every field is an integer, an array of them or a bool, for which zero is a
        // valid value.
        unsafe { core::mem::zeroed() }
    }
}

/// Runs a whole forwarding of `message` (a datagram's payload, a request or a response) as
/// the XDP program does, step by step: a request from `source` on `leg` of `dialog`, or a
/// response to a request of `leg`. The message to send is `scratch.out.bytes[..len]`, or the
/// reason it goes up.
pub fn forward(
    message: &[u8],
    dialog: &Dialog,
    selves: &SipSelves,
    arrival: Arrival,
    scratch: &mut ForwardScratch,
) -> Result<usize, Reason> {
    forward_words(
        &MessageWords(message),
        message.len(),
        dialog,
        selves,
        arrival,
        scratch,
    )
}

/// Where and how a message arrived: the leg it belongs to, its source, the dialogs map's seed.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub leg: usize,
    pub source: ([u8; 4], u16),
    pub seed: u64,
}

/// Whether a message whose first eight bytes are `head` (little-endian) is a response.
#[inline(always)]
pub const fn is_response(head: u64) -> bool {
    head == u64::from_le_bytes(*b"SIP/2.0 ")
}

/// `forward` over the first `len` bytes of `words`.
fn forward_words(
    words: &impl Words,
    len: usize,
    dialog: &Dialog,
    selves: &SipSelves,
    arrival: Arrival,
    scratch: &mut ForwardScratch,
) -> Result<usize, Reason> {
    let scan = &mut scratch.scan;
    let response = is_response(words.word_at(0));
    scan.start(len, arrival.leg, response, arrival.source, arrival.seed);
    scan_steps(scan, words, dialog, selves);
    if !scan.forwards() {
        return Err(Reason::from_index(scan.verdict()).unwrap_or(Reason::PassSipInDialogForm));
    }
    scratch
        .scan
        .plan
        .assemble(words, &mut scratch.out.bytes)
        .ok_or(Reason::PassSipInDialogSize)
}

/// Steps `scan` to its verdict, as `bpf_loop` does in the kernel (at most `SCAN_STEPS`);
/// how many steps it took.
fn scan_steps(
    scan: &mut DialogScan,
    words: &impl Words,
    dialog: &Dialog,
    selves: &SipSelves,
) -> usize {
    (1..=SCAN_STEPS)
        .find(|_| !scan.step(words, dialog, selves))
        .unwrap_or(SCAN_STEPS)
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::{corpus::*, *};
    use crate::words::{SCAN_WINDOW, ScanWindow};

    fn run(
        message: &[u8],
        (topology, case): (Topology, &Case),
        scratch: &mut ForwardScratch,
    ) -> Result<usize, Reason> {
        forward(
            message,
            &dialog(9, topology),
            &selves(),
            case.arrival(9),
            scratch,
        )
    }

    #[test]
    fn the_corpus_gets_what_it_expects() {
        let mut scratch = ForwardScratch::zeroed();
        for (topology, case) in all_cases() {
            let outcome = run(case.message.as_bytes(), (topology, case), &mut scratch);
            match case.expect {
                Expect::Forward => assert!(outcome.is_ok(), "{}: {outcome:?}", case.name),
                Expect::Pass(reason) => assert_eq!(outcome, Err(reason), "{}", case.name),
            }
        }
    }

    /// Every cut and every single-byte change of every case: the scan ends within its steps
    /// (never on an arithmetic overflow, which a debug build would catch) and a cut message is
    /// never forwarded as if whole.
    #[test]
    fn cut_and_changed_messages_end_cleanly() {
        let mut scratch = ForwardScratch::zeroed();
        let bytes = [
            b':', b';', b',', b' ', b'\t', b'\r', b'\n', b'"', b'>', b'<', b'0', b'x',
        ];
        for (topology, case) in all_cases() {
            let whole = case.message.as_bytes();
            for cut in 0..whole.len() {
                let outcome = run(&whole[..cut], (topology, case), &mut scratch);
                assert!(outcome.is_err(), "{} cut at {cut}", case.name);
                for byte in bytes {
                    let mut changed: Vec<u8> = whole.to_vec();
                    changed[cut] = byte;
                    let _ = run(&changed, (topology, case), &mut scratch);
                }
            }
            let long = vec![b'a'; 3000];
            // A direction the kernel does not forward goes up before its size is looked at.
            let too_long = match case.expect {
                Expect::Pass(Reason::PassSipDialog) => Reason::PassSipDialog,
                _ => Reason::PassSipInDialogSize,
            };
            assert_eq!(run(&long, (topology, case), &mut scratch), Err(too_long));
        }
    }

    /// Each step is a `bpf_loop` call in the kernel, some 25 ns of the forwarding's cost:
    /// the common messages must not take more of them unnoticed.
    #[test]
    fn common_messages_take_few_steps() {
        for (name, most) in [("sipp_bye", 19), ("backend_200_to_a_bye", 20)] {
            let case = CASES.iter().find(|c| c.name == name).expect("a case");
            let mut scratch = ForwardScratch::zeroed();
            let (arrival, message) = (case.arrival(9), case.message.as_bytes());
            let scan = &mut scratch.scan;
            let (leg, source) = (arrival.leg, arrival.source);
            scan.start(message.len(), leg, case.is_response(), source, arrival.seed);
            let dialog = dialog(9, Topology::Open);
            let taken = scan_steps(scan, &MessageWords(message), &dialog, &selves());
            assert!(scan.forwards(), "{name}: {:?}", scan.verdict());
            assert!(
                taken <= most,
                "{name}: {taken} steps, at most {most} expected"
            );
        }
    }

    /// The XDP program reads a message in a window whose bytes past it hold an earlier
    /// datagram's: here the ones most likely to mislead a scan. Every cut of every case gets
    /// the same outcome there as alone.
    #[test]
    fn what_lies_past_the_message_never_counts() {
        let mut scratch = ForwardScratch::zeroed();
        let mut window = ScanWindow {
            bytes: [0; SCAN_WINDOW],
        };
        let garbage = b"\r\n\r\n;tag=c-corpus1;rport, <sip:10.0.0.1:5060;lr>\n";
        for (topology, case) in all_cases() {
            let whole = case.message.as_bytes();
            for cut in 0..=whole.len() {
                for (byte, fill) in window.bytes.iter_mut().zip(garbage.iter().cycle()) {
                    *byte = *fill;
                }
                window.bytes[..cut].copy_from_slice(&whole[..cut]);
                let windowed = forward_words(
                    &window,
                    cut,
                    &dialog(9, topology),
                    &selves(),
                    case.arrival(9),
                    &mut scratch,
                )
                .map(|len| scratch.out.bytes[..len].to_vec());
                let alone = run(&whole[..cut], (topology, case), &mut scratch)
                    .map(|len| scratch.out.bytes[..len].to_vec());
                assert_eq!(windowed, alone, "{} cut at {cut}", case.name);
            }
        }
    }
}
