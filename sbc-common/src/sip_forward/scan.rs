//! Reading an in-dialog request or response and planning its forwarding as the daemon's
//! proxy does it (`sbc-userspace`, `proxy/core/requests.rs` and `responses.rs`, the reference
//! the differential test holds this to).
//!
//! A request (`start_line`, `via`, `request_edits`) gets:
//! - the Request-URI the dialog's leg leaves with (the other party's Contact: another one
//!   than it carries when that party is hidden from the sender, `[sip.hiding] topology`);
//! - our Via on top, `SIP/2.0/UDP <our address on the way out>;branch=<stateless>;rport`;
//! - the previous hop's Via marked: a bare `rport` gets the source port, `received` the source
//!   address when the Via names another host; the line is then rewritten `Name: value`;
//! - Max-Forwards decremented (`Name: n`), or `Max-Forwards: 69` added before the blank line;
//! - our Route values removed: every Route line must hold only ours, exactly as we wrote them
//!   in Record-Route (any other hop, or ours written otherwise, goes up).
//!
//! A response (to a request forwarded with a stateless branch, by the kernel or the daemon)
//! gets our Via removed; the Via below it must send it to the dialog's party that sent the
//! request, as the proxy would read it (`received`, `rport`, the host and port).
//!
//! A response from a party hidden from where it goes (`LEG_ANSWERS_HIDDEN`) loses its Contact
//! (it answers no target refresh, and the daemon removes such a one too).
//!
//! Both: on the way from the private to the public side, the configured headers removed;
//! everything else as received, the body included. They go up unchanged (with the reason)
//! when the kernel is not sure of them: another method than ACK, BYE, INFO, OPTIONS, NOTIFY,
//! REFER, MESSAGE, PRACK, UPDATE and INVITE, a 100 Trying, an SDP body, a Request-URI,
//! Call-ID or tag other than the dialog's, folded lines, a quoted or non-UDP Via, a header
//! that may appear once appearing twice, Proxy-Require, a Content-Length other than the
//! body's, Max-Forwards 0 or above 255, a response for a transaction of the daemon's.
//!
//! The scan is a state machine stepped line by line (`step`, from `bpf_loop` in the kernel,
//! where each step costs a call): a step reads a whole line of the common length (its name
//! classified, its end found, and a value of one step read: Max-Forwards, Call-ID, CSeq,
//! Content-Length and -Type, a header removed, the blank line), or a value (compared, searched
//! or hashed up to eight words at once, a comparison begun where its value is found, a Via's
//! parameters where its host is, its edits where its hash ends); no loop within a loop, and
//! what was chosen among candidates is read back from memory before the step goes on (the
//! verifier then follows one state, not one per candidate). Everything lives in `DialogScan`,
//! which the XDP program keeps in map memory, where the verifier tracks no values.
use super::plan::Plan;
use crate::{
    Reason,
    call_id::SCAN_BUFFER,
    dialog::{CALL_ID_TEXT, Dialog, DialogLeg, MAX_STRIPPED, SipSelves, TAG_TEXT, Text},
    words::{
        HIGHS, ONES, Words, bytes_equal, first_below_bang, first_bytes, first_flagged_byte,
        is_blank, last_flagged_byte, leading_blanks,
    },
};

/// What a step does next.
pub(super) mod phase {
    pub const METHOD: u32 = 0;
    pub const URI: u32 = 1;
    pub const BEGIN_LINE: u32 = 3;
    pub const FIND_LINE_END: u32 = 4;
    pub const VIA: u32 = 5;
    pub const VIA_PARAMS: u32 = 6;
    pub const VIA_HASH: u32 = 7;
    pub const ROUTE_VALUE: u32 = 9;
    pub const COMPARE: u32 = 13;
    pub const TAG_SEARCH: u32 = 14;
    pub const DONE: u32 = 21;
    pub const SOURCE: u32 = 22;
    pub const POP_VIA: u32 = 24;
    pub const POP_VIA_END: u32 = 25;
    pub const NEXT_VIA: u32 = 26;
    pub const NEXT_VIA_PARAMS: u32 = 27;
    pub const CONTACT: u32 = 28;
    pub const CONTACT_HASH: u32 = 29;
}

/// The headers the scan tells apart (`RequestScan::seen` has a bit for each).
pub(super) mod header {
    pub const OTHER: u32 = 0;
    pub const VIA: u32 = 1;
    pub const ROUTE: u32 = 2;
    pub const MAX_FORWARDS: u32 = 3;
    pub const CALL_ID: u32 = 4;
    pub const FROM: u32 = 5;
    pub const TO: u32 = 6;
    pub const CSEQ: u32 = 7;
    pub const CONTENT_LENGTH: u32 = 8;
    pub const CONTENT_TYPE: u32 = 9;
    pub const STRIP: u32 = 10;
    pub const PROXY_REQUIRE: u32 = 11;
    /// Read in a re-INVITE or an UPDATE only (a target refresh goes up).
    pub const CONTACT: u32 = 12;
    /// Headers that may appear once (RFC 3261 and the daemon's checks): a second one goes up.
    pub const SINGLE: u32 = 1 << MAX_FORWARDS
        | 1 << CONTACT
        | 1 << CALL_ID
        | 1 << FROM
        | 1 << TO
        | 1 << CSEQ
        | 1 << CONTENT_LENGTH
        | 1 << CONTENT_TYPE;
    /// Headers every request carries.
    pub const REQUIRED: u32 = 1 << VIA | 1 << CALL_ID | 1 << FROM | 1 << TO | 1 << CSEQ;
}

/// The texts a `COMPARE` step holds a value to.
pub(super) mod expected {
    pub const CALL_ID: u32 = 0;
    pub const CALLER_TAG: u32 = 1;
    pub const CALLEE_TAG: u32 = 2;
    /// Our Via on the side a response arrives on, up to its branch.
    pub const OUR_VIA: u32 = 3;
}

/// Words a search looks through per step for what it looks for.
const SEARCH_STEP_WORDS: usize = 8;
/// Words of a value compared per step.
const COMPARE_STEP_WORDS: usize = 8;
/// Words of a value (Request-URI, Via, Contact) hashed per step.
pub(super) const HASH_STEP_WORDS: usize = 8;
/// Longest Request-URI, and longest header line the scan edits or checks.
pub(super) const LINE_MAX: usize = 512;
/// Steps a scan may take: one per line start and a few per line it reads, and per word.
pub const SCAN_STEPS: usize = SCAN_BUFFER / 2;
/// The Max-Forwards a request without one gets, once decremented (RFC 3261 16.6 step 3).
const DEFAULT_MAX_FORWARDS: u32 = 70;
/// Longest CSeq number (RFC 3261 8.1.1.5: below 2**31).
const MAX_CSEQ: u64 = (1 << 31) - 1;
/// A header name as the scan keys it: its first sixteen bytes, lower-case, zero past it.
const fn key(name: &[u8]) -> (u64, u64) {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < name.len() {
        bytes[i] = name[i];
        i += 1;
    }
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    let mut k = 0;
    while k < 8 {
        low[k] = bytes[k];
        high[k] = bytes[8 + k];
        k += 1;
    }
    (u64::from_le_bytes(low), u64::from_le_bytes(high))
}

/// What the scan found out about a request or response, as the forwarding needs it.
#[repr(C)]
pub struct DialogScan {
    /// Bytes of the message.
    pub len: usize,
    pub phase: u32,
    /// `Reason` of the outcome: a pass reason, or `ForwardSipRequest`/`ForwardSipResponse`.
    pub reason: u32,
    /// 1 for a response.
    pub response: u32,
    /// The leg of the request (a response's is the request's it answers).
    pub leg: usize,
    /// The dialogs map's hash seed.
    pub seed: u64,
    /// The address a Via must name: a request's source, or the party a response goes to.
    pub source: [u8; 4],
    /// Host byte order.
    pub source_port: u16,
    /// The side the message leaves on (`branch::SIDE_*`).
    pub out_side: u8,
    pub _pad: u8,
    /// `source` as text (`a.b.c.d`), and its length.
    pub source_text: [u64; 2],
    pub source_text_len: usize,
    /// The request's method (its bytes as a word), and its length.
    pub method: u64,
    pub method_len: usize,
    /// A token or value being hashed: where it started, where the next word starts, where
    /// it ends (found for a token), the hash so far.
    pub hash_start: usize,
    pub hash_at: usize,
    pub hash_end: usize,
    pub hasher: u64,
    /// The line being read: its start, where its name ends, where its content ends (before
    /// the line ending), where the next line starts, what header it is.
    pub line: usize,
    pub name_end: usize,
    pub content_end: usize,
    pub next: usize,
    pub class: u32,
    /// The line's name as `key` makes it.
    pub name_key: (u64, u64),
    /// Bits of the headers seen (`header::*`).
    pub seen: u32,
    /// The value of the line being read: start, and end without trailing blanks.
    pub value_start: usize,
    pub value_end: usize,
    /// A search within the line.
    pub cursor: usize,
    /// A value held against one of the dialog's texts (`text::*`), a word a step, and the
    /// phase that follows a match.
    pub compare_at: usize,
    pub compare_len: usize,
    pub compare_word: usize,
    pub compare_text: u32,
    pub compare_then: u32,
    /// The top Via: where a bare `rport` ends (0: none), whether `received` is added, where
    /// the first value ends.
    pub rport_end: usize,
    pub received: u32,
    pub sdp: u32,
    pub first_end: usize,
    pub branch_hash: u64,
    /// From/To: where the last `;tag=` value starts (0: none), and the last `>`.
    pub tag_at: usize,
    pub last_close: usize,
    /// A response's top Via popped (1), and the one below it checked (2); the length of our
    /// Via's text before its branch.
    pub vias: u32,
    pub our_via_len: usize,
    /// The Via below ours: whether its host and its `received` name the party, and its port
    /// and `rport` (0: none).
    pub host_matches: u32,
    pub received_seen: u32,
    pub received_matches: u32,
    pub via_port: u32,
    pub rport: u32,
    /// A response from a party hidden from where it goes (`LEG_ANSWERS_HIDDEN`).
    pub from_hidden: u32,
    /// A response's status code, and whether it answers a BYE.
    pub status: u32,
    pub bye: u32,
    pub max_forwards: u32,
    pub cseq: u32,
    pub content_length: usize,
    /// Where our Via line's branch goes in the plan's inserted text.
    pub via_slot: usize,
    pub plan: Plan,
}

/// `word` with its upper-case letters lower-cased (nothing else changes: `| 0x20` alone would
/// turn a CR into `-`).
#[inline(always)]
pub(super) const fn lower(word: u64) -> u64 {
    let seven_bits = word & !HIGHS;
    let from_a = seven_bits.wrapping_add(ONES * (0x80 - b'A' as u64));
    let past_z = seven_bits.wrapping_add(ONES * (0x80 - b'Z' as u64 - 1));
    let upper = from_a & !past_z & !word & HIGHS;
    word | (upper >> 2)
}

/// How many decimal digits `word` starts with (8 at most), and their value. SWAR, without a
/// loop: the digits are moved to the top of the word and combined pairwise.
#[inline(always)]
pub(super) fn leading_digits(word: u64) -> (usize, u64) {
    let digits = word.wrapping_sub(ONES * b'0' as u64);
    // A byte is no digit when it was below `0` (wrapped) or is above 9 after the subtraction.
    let not_digit = (digits.wrapping_add(ONES * (0x80 - 10)) | digits | word) & HIGHS;
    let count = if not_digit == 0 {
        8
    } else {
        first_flagged_byte(not_digit)
    };
    if count == 0 {
        return (0, 0);
    }
    // The digits, most significant first, moved up so that zeros lead.
    let mut v = first_bytes(digits, count) << (8 * (8 - count));
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    v = (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff;
    (count, v)
}

/// How many blanks end the bytes before `end` (at most eight, and no further back than
/// `from`).
#[inline(always)]
pub(super) fn trailing_blanks(message: &impl Words, from: usize, end: usize) -> usize {
    if end <= from {
        return 0;
    }
    let word = message.word_at(end.wrapping_sub(8));
    let others = !(bytes_equal(word, b' ') | bytes_equal(word, b'\t')) & HIGHS;
    let count = if others == 0 {
        8
    } else {
        7 - last_flagged_byte(others)
    };
    let span = end - from;
    if count > span { span } else { count }
}

/// The first byte from `from` on (within the `SEARCH_STEP_WORDS` aligned words from the one
/// holding it) that `marks` flags; `Err` with where to go on when there is none that far.
/// Aligned words are one read each; the bytes before `from` in the first are made DEL, which
/// no search looks for and which stops no borrow test (see `first_below_bang`).
#[inline(always)]
pub(super) fn find(
    message: &impl Words,
    from: usize,
    marks: impl Fn(u64) -> u64,
) -> Result<usize, usize> {
    let first = from / 8;
    let kept = !((1u64 << (8 * (from % 8))) - 1);
    let mut flags = marks((message.word(first) & kept) | ((ONES * 0x7f) & !kept));
    let mut at = 8 * first;
    let mut k = 1;
    while k < SEARCH_STEP_WORDS {
        if flags == 0 {
            at = 8 * (first + k);
            flags = marks(message.word(first + k));
        }
        k += 1;
    }
    if flags == 0 {
        Err(8 * (first + SEARCH_STEP_WORDS))
    } else {
        Ok(at + first_flagged_byte(flags))
    }
}

/// Whether `;tag=` (any case) is at `at`.
#[inline(always)]
fn is_tag(message: &impl Words, at: usize) -> bool {
    lower(first_bytes(message.word_at(at), 5)) == u64::from_le_bytes(*b";tag=\0\0\0")
}

/// Whether the words from word `first` (`COMPARE_STEP_WORDS` of them) of the `len` bytes at
/// `at` differ from `text`'s: whole words first, then the last, partial one if it is among
/// them (few values live at once: the verifier's stack is small).
#[inline(always)]
pub(super) fn differs(
    message: &impl Words,
    at: usize,
    len: usize,
    first: usize,
    text: &impl Words,
) -> bool {
    let mut difference = 0;
    let mut i = 0;
    while i < COMPARE_STEP_WORDS {
        let k = first + i;
        if 8 * k + 8 <= len {
            difference |= message.word_at(at + 8 * k) ^ text.word(k);
        }
        i += 1;
    }
    let last = len / 8;
    if last >= first && last < first + COMPARE_STEP_WORDS {
        let partial = (1u64 << (8 * (len % 8))) - 1;
        difference |= (message.word_at(at + 8 * last) ^ text.word(last)) & partial;
    }
    difference != 0
}

impl DialogScan {
    /// Sets up a scan of a `len`-byte message on `leg` of a dialog: a request from `source`
    /// (`source_port`), or a `response` (going to the leg's party, whatever it came from);
    /// `seed` is the dialogs map's (`GuardConfig::dialog_seed`).
    #[inline(always)]
    pub fn start(
        &mut self,
        len: usize,
        leg: usize,
        response: bool,
        source: ([u8; 4], u16),
        seed: u64,
    ) {
        self.len = len;
        self.seed = seed;
        self.response = u32::from(response);
        self.phase = phase::METHOD;
        self.reason = if response {
            Reason::ForwardSipResponse as u32
        } else {
            Reason::ForwardSipRequest as u32
        };
        self.leg = leg & 1;
        (self.source, self.source_port) = source;
        self.seen = 0;
        self.vias = 0;
        self.rport_end = 0;
        self.received = 0;
        self.bye = 0;
        self.max_forwards = DEFAULT_MAX_FORWARDS;
        self.content_length = 0;
        self.sdp = 0;
        self.plan.clear();
    }

    /// The outcome as a `Reason`: `ForwardSipRequest`/`ForwardSipResponse`, or why the
    /// message goes up (a scan that ran out of steps: the message was too long for it).
    #[inline(always)]
    pub fn verdict(&self) -> u32 {
        if self.phase == phase::DONE {
            self.reason
        } else {
            Reason::PassSipInDialogSize as u32
        }
    }

    /// Whether the message is a target refresh request (RFC 3261 12.2, RFC 3311): a
    /// re-INVITE or an UPDATE, whose Contact may name a new target.
    #[inline(always)]
    pub fn refreshes_target(&self) -> bool {
        self.response == 0
            && (self.method == u64::from_le_bytes(*b"INVITE\0\0")
                || self.method == u64::from_le_bytes(*b"UPDATE\0\0"))
    }

    /// Whether the message is a BYE request.
    #[inline(always)]
    pub fn is_bye(&self) -> bool {
        self.response == 0 && self.method == u64::from(u32::from_le_bytes(*b"BYE\0"))
    }

    /// Whether the scan ended with a message to forward (the plan holds it).
    #[inline(always)]
    pub fn forwards(&self) -> bool {
        let forward = self.verdict();
        forward == Reason::ForwardSipRequest as u32 || forward == Reason::ForwardSipResponse as u32
    }

    #[inline(always)]
    pub(super) fn pass(&mut self, reason: Reason) -> bool {
        self.reason = reason as u32;
        self.phase = phase::DONE;
        false
    }

    #[inline(always)]
    pub(super) fn leg<'a>(&self, dialog: &'a Dialog) -> &'a DialogLeg {
        &dialog.legs[self.leg & 1]
    }

    /// One step; false when the scan is over (`verdict` says how).
    #[inline(always)]
    pub fn step(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        // Most steps begin a line: asked first, not found down a chain of compares.
        if self.phase == phase::BEGIN_LINE {
            return self.begin_line(message, dialog, selves);
        }
        match self.phase {
            phase::METHOD => self.method(message, dialog),
            phase::SOURCE => self.source(message, dialog, selves),
            phase::URI => self.uri(message, dialog, selves),
            phase::FIND_LINE_END => self.find_line_end(message, dialog, selves),
            phase::VIA => self.via(message),
            phase::VIA_PARAMS => self.via_params(message),
            phase::VIA_HASH => self.via_hash(message),
            phase::POP_VIA => self.pop_via(message, dialog, selves),
            phase::POP_VIA_END => self.pop_via_end(message),
            phase::NEXT_VIA => self.next_via(message),
            phase::NEXT_VIA_PARAMS => self.next_via_params(message),
            phase::ROUTE_VALUE => self.route_value(message, selves),
            phase::COMPARE => self.compare(message, dialog, selves),
            phase::TAG_SEARCH => self.tag_search(message, dialog, selves),
            phase::CONTACT => self.contact(message),
            phase::CONTACT_HASH => self.contact_hash(message, dialog),
            _ => false,
        }
    }

    /// A new line at `next`: the blank line that ends the headers, or a header classified by
    /// its name's key, its end found and its value handed to its reader (one step for a line
    /// of up to `SEARCH_STEP_WORDS` words, the common case).
    #[inline(always)]
    pub(super) fn begin_line(
        &mut self,
        message: &impl Words,
        dialog: &Dialog,
        selves: &SipSelves,
    ) -> bool {
        let line = self.next;
        if line >= self.len {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.line = line;
        let head = message.word_at(line);
        let first = head as u8;
        if first == b'\r' || first == b'\n' {
            return self.end(message);
        }
        if is_blank(first) {
            // A folded line: the daemon unfolds it.
            return self.pass(Reason::PassSipInDialogForm);
        }
        // The name ends at a colon, a blank or the line's end (all below `!` but the colon).
        let (head, tail) = (lower(head), lower(message.word_at(line + 8)));
        let ends = |word: u64| bytes_equal(word, b':') | first_below_bang(word);
        let name_len = if ends(head) != 0 {
            first_flagged_byte(ends(head))
        } else if ends(tail) != 0 {
            8 + first_flagged_byte(ends(tail))
        } else {
            16
        };
        let key = (
            first_bytes(head, name_len),
            first_bytes(tail, name_len.saturating_sub(8)),
        );
        // The candidates of the name's length, and of its first letter for compact forms.
        let named = |name: &[u8]| key == self::key(name);
        let class = match name_len {
            1 => match key.0 as u8 {
                b'v' => header::VIA,
                b'i' => header::CALL_ID,
                b'f' => header::FROM,
                b't' => header::TO,
                b'l' => header::CONTENT_LENGTH,
                b'c' => header::CONTENT_TYPE,
                b'm' => header::CONTACT,
                _ => header::OTHER,
            },
            2 if named(b"to") => header::TO,
            3 if named(b"via") => header::VIA,
            4 if named(b"from") => header::FROM,
            4 if named(b"cseq") => header::CSEQ,
            5 if named(b"route") => header::ROUTE,
            7 if named(b"call-id") => header::CALL_ID,
            7 if named(b"contact") => header::CONTACT,
            12 if named(b"max-forwards") => header::MAX_FORWARDS,
            12 if named(b"content-type") => header::CONTENT_TYPE,
            13 if named(b"proxy-require") => header::PROXY_REQUIRE,
            14 if named(b"content-length") => header::CONTENT_LENGTH,
            _ => header::OTHER,
        };
        self.class = class;
        self.name_key = key;
        self.name_end = line + name_len;
        self.classify(selves) && self.find_line_end(message, dialog, selves)
    }

    /// The class of the line being read, read back from the scan's memory: the verifier then
    /// follows one state from here, not one per header name the class was chosen among.
    #[inline(always)]
    fn line_class(&self) -> u32 {
        // SAFETY: a field of `self`.
        unsafe { core::ptr::read_volatile(&raw const self.class) }
    }

    /// What the line's header means for the scan: one the scan reads, one removed on the way
    /// out, or another.
    #[inline(always)]
    fn classify(&mut self, selves: &SipSelves) -> bool {
        let mut class = self.line_class() & 31;
        // A hidden party's Contact in its response to a request that is no target refresh
        // (the kernel forwards no other) updates nothing: it goes, as the daemon removes it.
        if class == header::CONTACT && self.from_hidden != 0 {
            class = header::STRIP;
        }
        // Route, Max-Forwards and Proxy-Require mean nothing to a response; a Contact, to
        // anything but a target refresh request.
        if self.response != 0
            && (class == header::ROUTE
                || class == header::MAX_FORWARDS
                || class == header::PROXY_REQUIRE)
            || class == header::CONTACT && !self.refreshes_target()
        {
            class = header::OTHER;
        }
        if class == header::OTHER {
            let out = &selves.sides[usize::from(self.out_side & 1)];
            let name_len = self.name_end - self.line;
            let mut k = 0;
            while k < MAX_STRIPPED {
                let strip = &out.strip[k];
                if (k as u32) < out.stripped
                    && strip.len() == name_len
                    && self.name_key == (strip.word(0), strip.word(1))
                {
                    class = header::STRIP;
                }
                k += 1;
            }
        }
        let bit = 1u32 << class;
        if self.seen & bit & header::SINGLE != 0 || class == header::PROXY_REQUIRE {
            return self.pass(Reason::PassSipInDialogForm);
        }
        // Only the first Via is the previous hop's; of a response's, the second line too when
        // ours was alone in the first.
        let later_via = class == header::VIA && self.seen & bit != 0;
        self.class = if later_via && !(self.response != 0 && self.vias == 1) {
            header::OTHER
        } else {
            class
        };
        self.seen |= bit;
        self.cursor = self.line;
        self.phase = phase::FIND_LINE_END;
        true
    }

    /// Finds where the current line ends (up to `SEARCH_STEP_WORDS` words a step), then hands
    /// its value to its header's reader: the readers that take one step read it in this one.
    #[inline(always)]
    fn find_line_end(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        let feed = match find(message, self.cursor, |word| bytes_equal(word, b'\n')) {
            Ok(feed) => feed,
            Err(on) => {
                self.cursor = on;
                if on >= self.len {
                    return self.pass(Reason::PassSipInDialogForm);
                }
                return true;
            }
        };
        if feed >= self.len {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.next = feed + 1;
        self.content_end = if feed > self.line && message.byte(feed - 1) == b'\r' {
            feed - 1
        } else {
            feed
        };
        if self.line_class() == header::OTHER {
            self.phase = phase::BEGIN_LINE;
            return true;
        }
        if self.content_end - self.line > LINE_MAX {
            return self.pass(Reason::PassSipInDialogSize);
        }
        // The value: past the name, blanks, the colon and blanks (at most 7 each way).
        let colon = self.name_end + leading_blanks(message.word_at(self.name_end));
        if message.byte(colon) != b':' || colon >= self.content_end {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let value = colon + 1 + leading_blanks(message.word_at(colon + 1));
        let value = if value > self.content_end {
            self.content_end
        } else {
            value
        };
        self.value_start = value;
        self.value_end = self.content_end - trailing_blanks(message, value, self.content_end);
        self.cursor = value;
        self.tag_at = 0;
        self.last_close = 0;
        let via = match (self.response, self.vias) {
            (0, _) => phase::VIA,
            (_, 0) => phase::POP_VIA,
            _ => phase::NEXT_VIA,
        };
        let then = match self.line_class() {
            header::VIA => via,
            header::ROUTE => phase::ROUTE_VALUE,
            header::FROM | header::TO => phase::TAG_SEARCH,
            header::CONTACT => phase::CONTACT,
            header::MAX_FORWARDS => return self.max_forwards(message),
            header::CALL_ID => return self.call_id(message, dialog, selves),
            header::CSEQ => return self.cseq(message),
            header::CONTENT_LENGTH => return self.content_length(message),
            header::CONTENT_TYPE => return self.content_type(message),
            _ => return self.strip(),
        };
        self.phase = then;
        true
    }

    /// The Call-ID: as long as the dialog's, then held against it word by word, its first
    /// words at once.
    #[inline(always)]
    fn call_id(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        let len = self.value_end - self.value_start;
        if len != dialog.call_id.len() || len == 0 || len > CALL_ID_TEXT {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        self.compare_with(expected::CALL_ID, self.value_start, len, phase::BEGIN_LINE)
            && self.compare(message, dialog, selves)
    }

    /// Sets up holding the `len` bytes at `at` against `text` (`expected`), then phase `then`;
    /// its callers go on with the first `compare` in the same step.
    #[inline(always)]
    pub(super) fn compare_with(&mut self, text: u32, at: usize, len: usize, then: u32) -> bool {
        self.compare_text = text;
        self.compare_then = then;
        self.compare_at = at;
        self.compare_len = len;
        self.compare_word = 0;
        self.phase = phase::COMPARE;
        true
    }

    /// `COMPARE_STEP_WORDS` words of a value against one of the texts it must be;
    /// `compare_then` once all matched.
    #[inline(always)]
    pub(super) fn compare(
        &mut self,
        message: &impl Words,
        dialog: &Dialog,
        selves: &SipSelves,
    ) -> bool {
        // The texts of 64 bytes chosen first: one comparison for them all.
        let short: &Text<TAG_TEXT> = match self.compare_text {
            expected::CALLER_TAG => &dialog.tags[0],
            expected::CALLEE_TAG => &dialog.tags[1],
            // Ours on the side a response arrives on: the other than it leaves on.
            _ => &selves.sides[usize::from(self.out_side & 1 ^ 1)].via,
        };
        let differs = if self.compare_text == expected::CALL_ID {
            self.value_differs(message, &dialog.call_id)
        } else {
            self.value_differs(message, short)
        };
        if differs {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        self.compare_word += COMPARE_STEP_WORDS;
        if 8 * self.compare_word >= self.compare_len {
            self.phase = self.compare_then;
        }
        true
    }

    /// Whether the compared value's next words differ from `text`'s.
    #[inline(always)]
    fn value_differs(&self, message: &impl Words, text: &impl Words) -> bool {
        differs(
            message,
            self.compare_at,
            self.compare_len,
            self.compare_word,
            text,
        )
    }

    /// From or To, `SEARCH_STEP_WORDS` words a step: the last `;tag=` and the last `>` (the
    /// tag must follow it: it is the header's, not its URI's). A word with more than two
    /// `;` (parameters of a letter or two) goes up rather than being looked at closer.
    #[inline(always)]
    fn tag_search(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        let mut crowded = 0;
        let mut k = 0;
        while k < SEARCH_STEP_WORDS {
            let at = self.cursor + 8 * k;
            let word = first_bytes(message.word_at(at), self.value_end.saturating_sub(at));
            let closes = bytes_equal(word, b'>');
            if closes != 0 {
                self.last_close = at + last_flagged_byte(closes);
            }
            let marks = bytes_equal(word, b';');
            if marks != 0 {
                let (first, last) = (first_flagged_byte(marks), last_flagged_byte(marks));
                if is_tag(message, at + first) {
                    self.tag_at = at + first + 5;
                }
                if is_tag(message, at + last) {
                    self.tag_at = at + last + 5;
                }
                crowded |= marks & !(0x80 << (8 * first)) & !(0x80 << (8 * last));
            }
            k += 1;
        }
        if crowded != 0 {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.cursor += 8 * SEARCH_STEP_WORDS;
        if self.cursor < self.value_end {
            return true;
        }
        self.tag_found(message, dialog, selves)
    }

    /// The tag found is the one this header must carry: From the sender's, To the other's.
    #[inline(always)]
    fn tag_found(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        let sender = self.leg & 1;
        let party = if self.class == header::FROM {
            sender
        } else {
            sender ^ 1
        };
        let len = dialog.tags[party & 1].len();
        let at = self.tag_at;
        if at == 0 || at < self.last_close || len == 0 || len > TAG_TEXT {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        // The tag ends where the expected one does: at the value's end or a delimiter.
        let after = message.byte(at + len);
        if at + len != self.value_end && after != b';' && after != b',' && !is_blank(after) {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        let tag = if party == 0 {
            expected::CALLER_TAG
        } else {
            expected::CALLEE_TAG
        };
        self.compare_with(tag, at, len, phase::BEGIN_LINE) && self.compare(message, dialog, selves)
    }

    /// CSeq: a number below 2^31, blanks, and the request's method.
    #[inline(always)]
    fn cseq(&mut self, message: &impl Words) -> bool {
        let (count, value) = leading_digits(message.word_at(self.value_start));
        let (more, rest) = leading_digits(message.word_at(self.value_start + 8));
        // Ten digits at most: eight, then two more at most.
        let (count, value) = match (count, more) {
            (8, 0) => (8, value),
            (8, 1) => (9, value * 10 + rest),
            (8, 2) => (10, value * 100 + rest),
            (8, _) => (11, 0),
            _ => (count, value),
        };
        if count == 0 || count > 10 || value > MAX_CSEQ {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let method = self.value_start + count;
        let method = method + leading_blanks(message.word_at(method));
        if method == self.value_start + count {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if self.response != 0 {
            // An INVITE's or UPDATE's answer may change the call (a new target, hold): the
            // daemon's. Both method names are six letters long.
            let word = first_bytes(message.word_at(method), 6);
            let refresh = word == u64::from_le_bytes(*b"INVITE\0\0")
                || word == u64::from_le_bytes(*b"UPDATE\0\0");
            if refresh && method + 6 == self.value_end {
                return self.pass(Reason::PassSipResponseStateful);
            }
            // Which request it answers: a BYE's final response ends the call.
            let bye = first_bytes(word, 3) == u64::from(u32::from_le_bytes(*b"BYE\0"));
            self.bye = u32::from(bye && method + 3 == self.value_end);
            self.cseq = value as u32;
            self.phase = phase::BEGIN_LINE;
            return true;
        }
        let len = self.method_len;
        if first_bytes(message.word_at(method), len) != self.method
            || method + len != self.value_end
        {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.cseq = value as u32;
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// Content-Length: the body's length, checked at the end.
    #[inline(always)]
    fn content_length(&mut self, message: &impl Words) -> bool {
        let (count, value) = leading_digits(message.word_at(self.value_start));
        if count == 0 || count > 4 || self.value_start + count != self.value_end {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.content_length = value as usize;
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// Content-Type: an SDP body is the daemon's (its media is re-anchored).
    #[inline(always)]
    fn content_type(&mut self, message: &impl Words) -> bool {
        let head = lower(message.word_at(self.value_start));
        let tail = lower(first_bytes(message.word_at(self.value_start + 8), 7));
        if head == u64::from_le_bytes(*b"applicat") && tail == u64::from_le_bytes(*b"ion/sdp\0") {
            self.sdp = 1;
        }
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// A header the public side does not see: the whole line goes.
    #[inline(always)]
    fn strip(&mut self) -> bool {
        if self.class == header::STRIP {
            self.plan.copy_to(self.line);
            self.plan.skip_to(self.next);
        }
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// The blank line: the body checked, Max-Forwards added if missing, our Via's branch
    /// written.
    #[inline(always)]
    fn end(&mut self, message: &impl Words) -> bool {
        let line = self.line;
        let body = if message.byte(line) == b'\r' {
            if message.byte(line + 1) != b'\n' {
                return self.pass(Reason::PassSipInDialogForm);
            }
            line + 2
        } else {
            line + 1
        };
        if body > self.len || self.seen & header::REQUIRED != header::REQUIRED {
            return self.pass(Reason::PassSipInDialogForm);
        }
        // A target refresh without a Contact the kernel read: the daemon's to judge.
        if self.refreshes_target() && self.seen & (1 << header::CONTACT) == 0 {
            return self.pass(Reason::PassSipInDialogTarget);
        }
        let body_len = self.len - body;
        let declared = self.seen & (1 << header::CONTENT_LENGTH) != 0;
        if declared && self.content_length != body_len {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if body_len > 0 && self.sdp != 0 {
            return self.pass(Reason::PassSipInDialogSdp);
        }
        if self.response != 0 {
            // Without a Via of the party's below ours, the proxy sends it nowhere.
            if self.vias != 2 {
                return self.pass(Reason::PassSipInDialogForm);
            }
            self.plan.copy_to(self.len);
            if !self.plan.fits() {
                return self.pass(Reason::PassSipInDialogSize);
            }
            self.phase = phase::DONE;
            return false;
        }
        if self.seen & (1 << header::MAX_FORWARDS) == 0 {
            self.plan.copy_to(line);
            self.plan.insert_word(u64::from_le_bytes(*b"Max-Forw"), 8);
            self.plan.insert_word(u64::from_le_bytes(*b"ards: 69"), 8);
            self.plan
                .insert_word(u64::from(u16::from_le_bytes(*b"\r\n")), 2);
        }
        self.plan.copy_to(self.len);
        self.write_branch();
        if !self.plan.fits() || self.plan.out_len > super::UDP_MAX_REQUEST {
            return self.pass(Reason::PassSipInDialogSize);
        }
        self.phase = phase::DONE;
        false
    }
}
