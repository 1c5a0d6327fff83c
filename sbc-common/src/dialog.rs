//! The dialogs map and what the XDP program needs to forward SIP of established calls: each
//! call's identity (Call-ID, both tags), per direction where its requests go, and our own
//! addresses as the proxy writes them (`SipSelf`).
//!
//! A direction is a *leg*, named by the party that sends on it: leg 0 carries the caller's
//! requests (and the callee's responses to them), leg 1 the callee's. A request arrives at
//! our listener on its sender's side (`DialogLeg::listener`) and leaves from our listener on
//! the other side (`out_side`) to the other party's Contact (`target`).
use crate::{
    FlowKey, IpAddress,
    words::{Words, masked_word},
};

/// Longest Call-ID of a dialog the kernel forwards (longer ones stay with the daemon).
pub const CALL_ID_TEXT: usize = 128;
/// Longest tag of a dialog the kernel forwards.
pub const TAG_TEXT: usize = 64;
/// Longest Request-URI the kernel writes in a forwarded request (a longer Contact leaves its
/// dialog's direction with the daemon).
pub const TARGET_URI_TEXT: usize = 128;
/// Room for one of our own texts (a Via sent-by with `;branch=`, a Record-Route URI).
pub const SELF_TEXT: usize = 64;
/// Room for a header name the edge removes from what leaves on the public side.
pub const HEADER_NAME_TEXT: usize = 16;
/// Header names removed on the way out to the public side, at most.
pub const MAX_STRIPPED: usize = 4;

/// Bytes of text with their length, 8-aligned so that they can be compared a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text<const N: usize> {
    pub bytes: [u8; N],
    pub len: u32,
    pub _pad: u32,
}

impl<const N: usize> Text<N> {
    pub const EMPTY: Self = Self {
        bytes: [0; N],
        len: 0,
        _pad: 0,
    };

    /// `text`, or `None` when it does not fit.
    pub fn new(text: &[u8]) -> Option<Self> {
        let mut value = Self::EMPTY;
        value.bytes.get_mut(..text.len())?.copy_from_slice(text);
        value.len = text.len() as u32;
        Some(value)
    }

    #[inline(always)]
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len().min(N)]
    }
}

/// A text is read a word at a time, bytes past its length included (`N` is a power of two
/// of at least 16, so that word indexes are masked into it).
impl<const N: usize> Words for Text<N> {
    #[inline(always)]
    fn word(&self, index: usize) -> u64 {
        // SAFETY: the text's bytes are 8-aligned (the struct's alignment) and N long.
        unsafe { masked_word::<N>(&self.bytes, index) }
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// One direction of a dialog: the requests one party sends, and the responses to them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogLeg {
    /// The seeded hash (`call_id::call_id_hash`, the dialog seed) of the Request-URI this
    /// party's requests carry: the other party's Contact, as this party was told it (ours,
    /// when the other party is hidden from it). Another one goes up.
    pub request_uri_hash: u64,
    /// The Request-URI they leave with: the other party's Contact.
    pub target_uri: Text<TARGET_URI_TEXT>,
    /// Our listener on the sender's side, where its requests arrive.
    pub listener: FlowKey,
    /// Where its requests go: the other party's Contact, resolved.
    pub target: FlowKey,
    /// Where its sender is: the responses to its requests go there.
    pub party: FlowKey,
    /// The side they leave on (`branch::SIDE_PUBLIC` or `SIDE_PRIVATE`).
    pub out_side: u8,
    /// `LEG_FORWARD` when the kernel forwards this leg at all.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// The highest CSeq number the kernel forwarded on this leg (the daemon's own requests in
    /// the dialog, a BYE on media timeout, must go above it).
    pub cseq: u32,
    /// Requests the kernel forwarded on this leg, and responses to them.
    pub requests: u64,
    pub responses: u64,
    /// When the kernel last forwarded a BYE on this leg (CLOCK_MONOTONIC, nanoseconds).
    pub bye_ns: u64,
}

/// `DialogLeg::flags`: the kernel forwards this leg's in-dialog requests (and the responses
/// to them). Without it a leg still tells the listener a response to the other leg's
/// requests arrives at.
pub const LEG_FORWARD: u8 = 1;
/// `DialogLeg::flags`: the party answering this leg's requests is hidden from their sender
/// (topology hiding): the Contact of its responses is removed.
pub const LEG_ANSWERS_HIDDEN: u8 = 2;

/// Value of the dialogs map, keyed by `call_id::call_id_hash` of a dialog's Call-ID.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialog {
    /// Packets of this dialog let through by the guard.
    pub packets: u64,
    pub call_id: Text<CALL_ID_TEXT>,
    /// The caller's tag (its From tag) and the callee's (its To tag).
    pub tags: [Text<TAG_TEXT>; 2],
    pub legs: [DialogLeg; 2],
    /// Set by the kernel when it forwarded the final response to a BYE: the call is over.
    pub ended: DialogEnd,
}

/// How a dialog ended in the kernel: when (CLOCK_MONOTONIC, nanoseconds; 0: it did not), when
/// its BYE went through (0: not through the kernel), the BYE's final status, and the leg whose
/// party sent the BYE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogEnd {
    pub at_ns: u64,
    pub bye_ns: u64,
    pub code: u16,
    pub by_leg: u8,
    pub _pad: [u8; 5],
}

/// What the kernel reports on `SBC_DIALOG_EVENTS` when it forwarded the final response to a
/// BYE: which dialog (its key in the dialogs map) ended, as `Dialog::ended` records it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogEnded {
    pub dialog: u64,
    pub end: DialogEnd,
}

impl Dialog {
    /// A dialog the guard knows but the kernel does not forward (no leg set up yet).
    pub const KNOWN: Self = Self {
        packets: 0,
        call_id: Text::EMPTY,
        tags: [Text::EMPTY; 2],
        legs: [DialogLeg {
            request_uri_hash: 0,
            target_uri: Text::EMPTY,
            listener: FlowKey::udp(IpAddress::UNSPECIFIED, 0),
            target: FlowKey::udp(IpAddress::UNSPECIFIED, 0),
            party: FlowKey::udp(IpAddress::UNSPECIFIED, 0),
            out_side: 0,
            flags: 0,
            _pad: [0; 2],
            cseq: 0,
            requests: 0,
            responses: 0,
            bye_ns: 0,
        }; 2],
        ended: DialogEnd {
            at_ns: 0,
            bye_ns: 0,
            code: 0,
            by_leg: 0,
            _pad: [0; 5],
        },
    };

    /// This dialog as the daemon describes it, with what the kernel keeps in `held`, the
    /// entry it holds: the packets counted, per leg the counts, the highest CSeq and the last
    /// BYE's time, and an end it recorded. (A dialog is rewritten when its targets change;
    /// what the kernel learnt meanwhile must not be lost.)
    pub fn keeping_kernel_state(self, held: &Dialog) -> Dialog {
        let mut dialog = self;
        dialog.packets = held.packets;
        for (leg, held) in dialog.legs.iter_mut().zip(&held.legs) {
            leg.cseq = held.cseq;
            leg.requests = held.requests;
            leg.responses = held.responses;
            leg.bye_ns = held.bye_ns;
        }
        dialog.ended = held.ended;
        dialog
    }
}

impl Default for Dialog {
    fn default() -> Self {
        Self::KNOWN
    }
}

/// Our own SIP addresses on one side, as the proxy writes them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipSelf {
    /// Our listener on this side: the source of what we send there.
    pub listener: FlowKey,
    pub _pad: u32,
    /// `SIP/2.0/UDP <address>;branch=`: our Via on requests leaving on this side, before the
    /// branch.
    pub via: Text<SELF_TEXT>,
    /// `<sip:<address>;lr>`: our Record-Route on this side, as parties send it back in Route.
    pub route: Text<SELF_TEXT>,
    /// Lower-case names of the headers removed from what leaves on this side coming from the
    /// other (topology hiding: the public side only), `stripped` of them.
    pub strip: [Text<HEADER_NAME_TEXT>; MAX_STRIPPED],
    pub stripped: u32,
    pub _pad2: u32,
}

/// Our addresses on both sides (`branch::SIDE_*` order): the one value of `SBC_SIP_SELF`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipSelves {
    pub sides: [SipSelf; 2],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: every one is `#[repr(C)]` of integers and arrays of them with explicit padding
    // (checked by the size assertions below), so any bit pattern is valid.
    unsafe impl<const N: usize> bytemuck::Zeroable for Text<N> {}
    unsafe impl<const N: usize> bytemuck::Pod for Text<N> {}
    unsafe impl bytemuck::Zeroable for DialogLeg {}
    unsafe impl bytemuck::Pod for DialogLeg {}
    unsafe impl bytemuck::Zeroable for Dialog {}
    unsafe impl bytemuck::Pod for Dialog {}
    unsafe impl bytemuck::Zeroable for SipSelf {}
    unsafe impl bytemuck::Pod for SipSelf {}
    unsafe impl aya::Pod for Dialog {}
    unsafe impl bytemuck::Zeroable for SipSelves {}
    unsafe impl bytemuck::Pod for SipSelves {}
    unsafe impl aya::Pod for SipSelves {}
    unsafe impl bytemuck::Zeroable for DialogEnded {}
    unsafe impl bytemuck::Pod for DialogEnded {}
}

const _: () = assert!(core::mem::size_of::<Text<TAG_TEXT>>() == TAG_TEXT + 8);
const _: () = assert!(core::mem::size_of::<DialogEnded>() == 32);
const DIALOG_LEG: usize = 104 + TARGET_URI_TEXT + 8;
const _: () = assert!(core::mem::size_of::<DialogLeg>() == DIALOG_LEG);
const _: () = assert!(
    core::mem::size_of::<Dialog>()
        == 8 + (CALL_ID_TEXT + 8) + 2 * (TAG_TEXT + 8) + 2 * DIALOG_LEG + 24
);
const _: () = assert!(
    core::mem::size_of::<SipSelf>()
        == 20 + 4 + 2 * (SELF_TEXT + 8) + MAX_STRIPPED * (HEADER_NAME_TEXT + 8) + 8
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A dialog rewritten with new targets keeps what the kernel counted and recorded, and
    /// takes everything else from the daemon's description.
    #[test]
    fn a_rewritten_dialog_keeps_the_kernels_state() {
        let mut held = Dialog::KNOWN;
        held.packets = 7;
        held.legs[0].cseq = 41;
        held.legs[1].requests = 3;
        held.legs[1].responses = 2;
        held.legs[1].bye_ns = 99;
        held.ended.at_ns = 1234;
        let mut described = Dialog::KNOWN;
        described.legs[0].request_uri_hash = 5;
        described.legs[0].flags = LEG_FORWARD;
        described.legs[0].target = FlowKey::udp(IpAddress::from_ipv4([10, 0, 0, 99]), 5070);
        let rewritten = described.keeping_kernel_state(&held);
        assert_eq!(rewritten.packets, 7);
        assert_eq!(rewritten.legs[0].cseq, 41);
        assert_eq!(
            (rewritten.legs[1].requests, rewritten.legs[1].responses),
            (3, 2)
        );
        assert_eq!(rewritten.legs[1].bye_ns, 99);
        assert_eq!(rewritten.ended.at_ns, 1234);
        assert_eq!(rewritten.legs[0].target, described.legs[0].target);
        assert_eq!(rewritten.legs[0].request_uri_hash, 5);
        assert_eq!(rewritten.legs[0].flags, LEG_FORWARD);
    }
}
