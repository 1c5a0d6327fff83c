//! An in-dialog request, read and planned for forwarding as the daemon's proxy forwards it
//! (`sbc-userspace`, `proxy/core/requests.rs`, the reference the differential test holds this
//! to):
//! - our Via on top, `SIP/2.0/UDP <our address on the way out>;branch=<stateless>;rport`;
//! - the previous hop's Via marked: a bare `rport` gets the source port, `received` the source
//!   address when the Via names another host; the line is then rewritten `Name: value`;
//! - Max-Forwards decremented (`Name: n`), or `Max-Forwards: 69` added before the blank line;
//! - our Route values removed: every Route line must hold only ours, exactly as we wrote them
//!   in Record-Route (any other hop, or ours written otherwise, goes up);
//! - on the way from the private to the public side, the configured headers removed;
//! - everything else as received, the body included.
//!
//! It goes up unchanged (with the reason) when the request is not one the kernel is sure of:
//! another method than ACK, BYE, INFO, OPTIONS, NOTIFY, REFER, MESSAGE, PRACK, UPDATE and
//! INVITE, an SDP body, a Request-URI, Call-ID or tag other than the dialog's, folded lines,
//! a quoted or non-UDP top Via, a header that may appear once appearing twice, Proxy-Require,
//! a Content-Length other than the body's, Max-Forwards 0 or above 255.
//!
//! The scan is a state machine stepped line by line (`step`, from `bpf_loop` in the kernel):
//! each step does a bounded piece of work and keeps everything in `RequestScan`, which the
//! XDP program keeps in map memory.
use super::{
    plan::Plan,
    text::{decimal, dotted},
};
use crate::{
    Reason,
    branch::{STATELESS_BRANCH_LEN, branch_hasher, hex_words},
    call_id::SCAN_BUFFER,
    dialog::{
        CALL_ID_TEXT, Dialog, DialogLeg, LEG_FORWARD, MAX_STRIPPED, SELF_TEXT, SipSelves, TAG_TEXT,
    },
    words::{
        HIGHS, ONES, WordHasher, Words, bytes_equal, first_below_bang, first_bytes,
        first_flagged_byte, is_blank, leading_blanks,
    },
};

/// What a step does next.
mod phase {
    pub const METHOD: u32 = 0;
    pub const SOURCE: u32 = 22;
    pub const CLASSIFY: u32 = 23;
    pub const URI: u32 = 1;
    pub const VERSION: u32 = 2;
    pub const BEGIN_LINE: u32 = 3;
    pub const FIND_LINE_END: u32 = 4;
    pub const VIA: u32 = 5;
    pub const VIA_PARAMS: u32 = 6;
    pub const VIA_HASH: u32 = 7;
    pub const VIA_EDIT: u32 = 8;
    pub const ROUTE_VALUE: u32 = 9;
    pub const ROUTE_COMPARE: u32 = 10;
    pub const MAX_FORWARDS: u32 = 11;
    pub const CALL_ID: u32 = 12;
    pub const COMPARE: u32 = 13;
    pub const TAG_SEARCH: u32 = 14;
    pub const TAG_FOUND: u32 = 15;
    pub const CSEQ: u32 = 16;
    pub const CONTENT_LENGTH: u32 = 17;
    pub const CONTENT_TYPE: u32 = 18;
    pub const STRIP: u32 = 19;
    pub const END: u32 = 20;
    pub const DONE: u32 = 21;
}

/// The headers the scan tells apart (`RequestScan::seen` has a bit for each).
mod header {
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
    /// Headers that may appear once (RFC 3261 and the daemon's checks): a second one goes up.
    pub const SINGLE: u32 = 1 << MAX_FORWARDS
        | 1 << CALL_ID
        | 1 << FROM
        | 1 << TO
        | 1 << CSEQ
        | 1 << CONTENT_LENGTH
        | 1 << CONTENT_TYPE;
    /// Headers every request carries.
    pub const REQUIRED: u32 = 1 << VIA | 1 << CALL_ID | 1 << FROM | 1 << TO | 1 << CSEQ;
}

/// The texts of the dialog a `COMPARE` step holds a value to.
mod text {
    pub const CALL_ID: u32 = 0;
    pub const CALLER_TAG: u32 = 1;
    pub const CALLEE_TAG: u32 = 2;
}

/// Words of a token (Request-URI) or value hashed per step.
const HASH_STEP_WORDS: usize = 4;
/// Words a search looks through per step for what it looks for.
const SEARCH_STEP_WORDS: usize = 8;
/// Longest Request-URI, and longest header line the scan edits or checks.
const LINE_MAX: usize = 512;
/// Steps a scan may take: one per line start and a few per line it reads, and per word.
pub const REQUEST_STEPS: usize = SCAN_BUFFER / 2;
/// The Max-Forwards a request without one gets, once decremented (RFC 3261 16.6 step 3).
const DEFAULT_MAX_FORWARDS: u32 = 70;
/// Longest CSeq number (RFC 3261 8.1.1.5: below 2**31).
const MAX_CSEQ: u64 = (1 << 31) - 1;
/// What follows our Via's text in its line: the branch, `;rport` and the line's end.
const OUR_VIA_TAIL: usize = STATELESS_BRANCH_LEN + 8;

/// The methods forwarded in the kernel, by the first word of the request (the method and
/// its space, little-endian), and that word's length.
const METHODS: [(u64, usize); 10] = [
    (u64::from_le_bytes(*b"ACK \0\0\0\0"), 4),
    (u64::from_le_bytes(*b"BYE \0\0\0\0"), 4),
    (u64::from_le_bytes(*b"INFO \0\0\0"), 5),
    (u64::from_le_bytes(*b"OPTIONS "), 8),
    (u64::from_le_bytes(*b"NOTIFY \0"), 7),
    (u64::from_le_bytes(*b"REFER \0\0"), 6),
    (u64::from_le_bytes(*b"MESSAGE "), 8),
    (u64::from_le_bytes(*b"PRACK \0\0"), 6),
    (u64::from_le_bytes(*b"UPDATE \0"), 7),
    (u64::from_le_bytes(*b"INVITE \0"), 7),
];

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

/// What the scan found out about a request, as the forwarding needs it.
#[repr(C)]
pub struct RequestScan {
    /// Bytes of the message.
    pub len: usize,
    pub phase: u32,
    /// `Reason` of the outcome: a pass reason, or `ForwardSipRequest`.
    pub reason: u32,
    /// The leg the request arrived on (its sender's).
    pub leg: usize,
    /// The dialogs map's hash seed.
    pub seed: u64,
    pub source: [u8; 4],
    /// Host byte order.
    pub source_port: u16,
    /// The side the request leaves on (`branch::SIDE_*`).
    pub out_side: u8,
    pub _pad: u8,
    /// The source address as text (`a.b.c.d`), and its length.
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
    /// A value held against one of the dialog's texts (`text::*`), a word a step.
    pub compare_at: usize,
    pub compare_len: usize,
    pub compare_word: usize,
    pub compare_text: u32,
    /// A Route value held against our two Record-Route values: which still match.
    pub route_matches: u32,
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
const fn lower(word: u64) -> u64 {
    let seven_bits = word & !HIGHS;
    let from_a = seven_bits.wrapping_add(ONES * (0x80 - b'A' as u64));
    let past_z = seven_bits.wrapping_add(ONES * (0x80 - b'Z' as u64 - 1));
    let upper = from_a & !past_z & !word & HIGHS;
    word | (upper >> 2)
}

/// How many decimal digits `word` starts with (8 at most), and their value. SWAR, without a
/// loop: the digits are moved to the top of the word and combined pairwise.
#[inline(always)]
fn leading_digits(word: u64) -> (usize, u64) {
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
fn trailing_blanks(message: &impl Words, from: usize, end: usize) -> usize {
    if end <= from {
        return 0;
    }
    let word = message.word_at(end.wrapping_sub(8));
    let blanks = bytes_equal(word, b' ') | bytes_equal(word, b'\t');
    let count = ((!blanks & HIGHS).leading_zeros() / 8) as usize;
    let span = end - from;
    if count > span { span } else { count }
}

/// The first byte from `from` (up to `SEARCH_STEP_WORDS` words on) that `marks` flags; `Err`
/// with where to go on when there is none that far.
#[inline(always)]
fn find(message: &impl Words, from: usize, marks: impl Fn(u64) -> u64) -> Result<usize, usize> {
    let mut flags = 0;
    let mut at = from;
    let mut k = 0;
    while k < SEARCH_STEP_WORDS {
        if flags == 0 {
            at = from + 8 * k;
            flags = marks(message.word_at(at));
        }
        k += 1;
    }
    if flags == 0 {
        Err(from + 8 * SEARCH_STEP_WORDS)
    } else {
        Ok(at + first_flagged_byte(flags))
    }
}

impl RequestScan {
    /// Sets up a scan of a `len`-byte request from `source`:`source_port` arriving on `leg`
    /// of a dialog; `seed` is the dialogs map's (`GuardConfig::dialog_seed`).
    #[inline(always)]
    pub fn start(&mut self, len: usize, leg: usize, source: [u8; 4], source_port: u16, seed: u64) {
        self.len = len;
        self.seed = seed;
        self.phase = phase::METHOD;
        self.reason = Reason::ForwardSipRequest as u32;
        self.leg = leg & 1;
        self.source = source;
        self.source_port = source_port;
        self.seen = 0;
        self.rport_end = 0;
        self.received = 0;
        self.max_forwards = DEFAULT_MAX_FORWARDS;
        self.content_length = 0;
        self.sdp = 0;
        self.plan.clear();
    }

    /// Whether the scan ended with a request to forward (the plan holds it).
    #[inline(always)]
    pub fn forwards(&self) -> bool {
        self.phase == phase::DONE && self.reason == Reason::ForwardSipRequest as u32
    }

    /// The outcome as a `Reason`: `ForwardSipRequest`, or why the request goes up (a scan
    /// that ran out of steps: the message was too long for it).
    #[inline(always)]
    pub fn verdict(&self) -> u32 {
        if self.phase == phase::DONE {
            self.reason
        } else {
            Reason::PassSipInDialogSize as u32
        }
    }

    #[inline(always)]
    fn pass(&mut self, reason: Reason) -> bool {
        self.reason = reason as u32;
        self.phase = phase::DONE;
        false
    }

    #[inline(always)]
    fn leg<'a>(&self, dialog: &'a Dialog) -> &'a DialogLeg {
        &dialog.legs[self.leg & 1]
    }

    /// One step; false when the scan is over (`reason` says how). Each phase is one bounded
    /// piece of work without a loop inside a loop, and leaves everything it found here.
    #[inline(always)]
    pub fn step(&mut self, message: &impl Words, dialog: &Dialog, selves: &SipSelves) -> bool {
        match self.phase {
            phase::METHOD => self.method(message, dialog),
            phase::SOURCE => self.source(),
            phase::CLASSIFY => self.classify(selves),
            phase::URI => self.uri(message, dialog),
            phase::VERSION => self.version(message, selves),
            phase::BEGIN_LINE => self.begin_line(message),
            phase::FIND_LINE_END => self.find_line_end(message),
            phase::VIA => self.via(message),
            phase::VIA_PARAMS => self.via_params(message),
            phase::VIA_HASH => self.via_hash(message),
            phase::VIA_EDIT => self.via_edit(),
            phase::ROUTE_VALUE => self.route_value(),
            phase::ROUTE_COMPARE => self.route_compare(message, selves),
            phase::MAX_FORWARDS => self.max_forwards(message),
            phase::CALL_ID => self.call_id(dialog),
            phase::COMPARE => self.compare(message, dialog),
            phase::TAG_SEARCH => self.tag_search(message),
            phase::TAG_FOUND => self.tag_found(message, dialog),
            phase::CSEQ => self.cseq(message),
            phase::CONTENT_LENGTH => self.content_length(message),
            phase::CONTENT_TYPE => self.content_type(message),
            phase::STRIP => self.strip(),
            phase::END => self.end(message),
            _ => false,
        }
    }

    /// The method, one of `METHODS`.
    #[inline(always)]
    fn method(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
        let leg = self.leg(dialog);
        if leg.flags & LEG_FORWARD == 0 {
            return self.pass(Reason::PassSipDialog);
        }
        self.out_side = leg.out_side & 1;
        if self.len > SCAN_BUFFER {
            return self.pass(Reason::PassSipInDialogSize);
        }
        // One candidate per first letter (two for `I`): a search through all of them would
        // leave the verifier a path per candidate at each candidate.
        let head = message.word_at(0);
        let candidate = match head as u8 {
            b'A' => METHODS[0],
            b'B' => METHODS[1],
            b'I' if head >> 8 & 0xff == u64::from(b'N') && head >> 16 & 0xff == u64::from(b'F') => {
                METHODS[2]
            }
            b'O' => METHODS[3],
            b'N' => METHODS[4],
            b'R' => METHODS[5],
            b'M' => METHODS[6],
            b'P' => METHODS[7],
            b'U' => METHODS[8],
            b'I' => METHODS[9],
            _ => return self.pass(Reason::PassSipInDialogMethod),
        };
        let (name, len) = candidate;
        if first_bytes(head, len) != name {
            return self.pass(Reason::PassSipInDialogMethod);
        }
        self.method = first_bytes(name, len - 1);
        self.method_len = len - 1;
        self.hash_start = len;
        self.phase = phase::SOURCE;
        true
    }

    /// The source address written out, for the Via's `received`; the Request-URI's hash
    /// started. (A step of its own: the method's search above leaves one path per method,
    /// which the verifier follows to the step's end.)
    #[inline(always)]
    fn source(&mut self) -> bool {
        let (text, text_len) = dotted(self.source);
        self.source_text = text;
        self.source_text_len = text_len;
        self.hash_at = self.hash_start;
        self.hash_end = 0;
        // Seeded as the dialogs map's keys: the daemon hashes the Contact with `call_id_hash`.
        self.hasher = WordHasher::new(self.seed).state();
        self.phase = phase::URI;
        true
    }

    /// The Request-URI, hashed `HASH_STEP_WORDS` words a step up to its first byte below `!`,
    /// then held against the one this leg's requests carry.
    #[inline(always)]
    fn uri(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
        let mut hasher = WordHasher::from_state(self.hasher);
        let mut k = 0;
        while k < HASH_STEP_WORDS {
            let word = message.word_at(self.hash_at);
            let ends = first_below_bang(word);
            if ends != 0 {
                let n = first_flagged_byte(ends);
                let len = self.hash_at + n - self.hash_start;
                self.hash_end = self.hash_at + n;
                let hash = hasher.finish(first_bytes(word, n), len);
                if self.hash_end >= self.len || len == 0 || len > LINE_MAX {
                    return self.pass(Reason::PassSipInDialogForm);
                }
                if hash != self.leg(dialog).request_uri_hash {
                    return self.pass(Reason::PassSipInDialogMismatch);
                }
                self.phase = phase::VERSION;
                return true;
            }
            hasher.write_word(word);
            self.hash_at += 8;
            k += 1;
        }
        self.hasher = hasher.state();
        if self.hash_at - self.hash_start > LINE_MAX {
            return self.pass(Reason::PassSipInDialogForm);
        }
        true
    }

    /// ` SIP/2.0` and the line's end; then our Via goes in after the start line, all of it
    /// but the branch (known once the top Via is read) written now.
    #[inline(always)]
    fn version(&mut self, message: &impl Words, selves: &SipSelves) -> bool {
        let at = self.hash_end;
        if message.word_at(at) != u64::from_le_bytes(*b" SIP/2.0") {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let ending = message.word_at(at + 8);
        let next = if first_bytes(ending, 2) == u64::from(u16::from_le_bytes(*b"\r\n")) {
            at + 10
        } else if ending as u8 == b'\n' {
            at + 9
        } else {
            return self.pass(Reason::PassSipInDialogForm);
        };
        self.next = next;
        self.plan.copy_to(next);
        let via = &selves.sides[usize::from(self.out_side & 1)].via;
        self.plan
            .insert_word(u64::from_le_bytes(*b"Via: \0\0\0"), 5);
        self.plan.insert_text(via, via.len(), SELF_TEXT / 8);
        self.via_slot = self.plan.reserve(OUR_VIA_TAIL);
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// A new line at `next`: the blank line that ends the headers, or a header to classify
    /// by its name's key.
    #[inline(always)]
    fn begin_line(&mut self, message: &impl Words) -> bool {
        let line = self.next;
        if line >= self.len {
            return self.pass(Reason::PassSipInDialogForm);
        }
        self.line = line;
        let head = message.word_at(line);
        let first = head as u8;
        if first == b'\r' || first == b'\n' {
            self.phase = phase::END;
            return true;
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
                _ => header::OTHER,
            },
            2 if named(b"to") => header::TO,
            3 if named(b"via") => header::VIA,
            4 if named(b"from") => header::FROM,
            4 if named(b"cseq") => header::CSEQ,
            5 if named(b"route") => header::ROUTE,
            7 if named(b"call-id") => header::CALL_ID,
            12 if named(b"max-forwards") => header::MAX_FORWARDS,
            12 if named(b"content-type") => header::CONTENT_TYPE,
            13 if named(b"proxy-require") => header::PROXY_REQUIRE,
            14 if named(b"content-length") => header::CONTENT_LENGTH,
            _ => header::OTHER,
        };
        self.class = class;
        self.name_key = key;
        self.name_end = line + name_len;
        self.phase = phase::CLASSIFY;
        true
    }

    /// What the line's header means for the scan (a step of its own, as `source`): one the
    /// scan reads, one removed on the way out, or another.
    #[inline(always)]
    fn classify(&mut self, selves: &SipSelves) -> bool {
        let mut class = self.class & 31;
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
        // Only the first Via is the previous hop's.
        self.class = if class == header::VIA && self.seen & bit != 0 {
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
    /// its value to its header's reader.
    #[inline(always)]
    fn find_line_end(&mut self, message: &impl Words) -> bool {
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
        if self.class == header::OTHER {
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
        self.phase = match self.class {
            header::VIA => phase::VIA,
            header::ROUTE => phase::ROUTE_VALUE,
            header::MAX_FORWARDS => phase::MAX_FORWARDS,
            header::CALL_ID => phase::CALL_ID,
            header::FROM | header::TO => phase::TAG_SEARCH,
            header::CSEQ => phase::CSEQ,
            header::CONTENT_LENGTH => phase::CONTENT_LENGTH,
            header::CONTENT_TYPE => phase::CONTENT_TYPE,
            _ => phase::STRIP,
        };
        true
    }

    /// The top Via: `SIP/2.0/UDP`, then its host compared with the source address.
    #[inline(always)]
    fn via(&mut self, message: &impl Words) -> bool {
        let start = self.value_start;
        if message.word_at(start) != u64::from_le_bytes(*b"SIP/2.0/")
            || first_bytes(message.word_at(start + 8), 4) != u64::from(u32::from_le_bytes(*b"UDP "))
        {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let host = start + 12;
        let len = self.source_text_len & 15;
        let low = message.word_at(host);
        let high = message.word_at(host + 8);
        if low as u8 == b'[' {
            return self.pass(Reason::PassSipInDialogForm);
        }
        // The host ends at a port, a parameter, another value, a blank or the line's end.
        let after = message.byte(host + len);
        let same = first_bytes(low, len) == self.source_text[0]
            && first_bytes(high, len.saturating_sub(8)) == self.source_text[1]
            && (after < b'!' || after == b':' || after == b';' || after == b',');
        self.received = u32::from(!same);
        self.cursor = host;
        self.phase = phase::VIA_PARAMS;
        true
    }

    /// The top Via's parameters, a mark (`;`, `,` or `"`) a step, up to its first value's end:
    /// a bare `rport` found, quotes refused (a quoted comma would end the value elsewhere).
    #[inline(always)]
    fn via_params(&mut self, message: &impl Words) -> bool {
        let marks =
            |word: u64| bytes_equal(word, b';') | bytes_equal(word, b',') | bytes_equal(word, b'"');
        let mark = match find(message, self.cursor, marks) {
            Ok(mark) => mark,
            Err(on) => {
                self.cursor = on;
                if on >= self.value_end {
                    return self.first_value_ends(message, self.value_end);
                }
                return true;
            }
        };
        if mark >= self.value_end {
            return self.first_value_ends(message, self.value_end);
        }
        let byte = message.byte(mark);
        if byte == b'"' {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if byte == b',' {
            return self.first_value_ends(message, mark);
        }
        let name = message.word_at(mark + 1);
        let after = (name >> 40) as u8;
        let bare = after < b'!' || after == b';' || after == b',' || mark + 6 == self.value_end;
        if self.rport_end == 0
            && lower(first_bytes(name, 5)) == u64::from_le_bytes(*b"rport\0\0\0")
            && bare
        {
            self.rport_end = mark + 6;
        }
        self.cursor = mark + 1;
        true
    }

    /// The first Via value ends before `end` (and the blanks before it): hash it for the branch.
    #[inline(always)]
    fn first_value_ends(&mut self, message: &impl Words, end: usize) -> bool {
        let end = end - trailing_blanks(message, self.value_start, end);
        self.first_end = end;
        if self.rport_end > end {
            self.rport_end = 0;
        }
        self.hash_start = self.value_start;
        self.hash_at = self.value_start;
        self.hash_end = end;
        self.hasher = branch_hasher(self.out_side).state();
        self.phase = phase::VIA_HASH;
        true
    }

    /// Hashes the first Via value, `HASH_STEP_WORDS` words a step, for the stateless branch.
    #[inline(always)]
    fn via_hash(&mut self, message: &impl Words) -> bool {
        let mut hasher = WordHasher::from_state(self.hasher);
        let mut k = 0;
        while k < HASH_STEP_WORDS {
            let left = self.hash_end - self.hash_at.min(self.hash_end);
            if left < 8 {
                let word = first_bytes(message.word_at(self.hash_at), left);
                self.branch_hash = hasher.finish(word, self.hash_end - self.hash_start);
                self.phase = phase::VIA_EDIT;
                return true;
            }
            hasher.write_word(message.word_at(self.hash_at));
            self.hash_at += 8;
            k += 1;
        }
        self.hasher = hasher.state();
        true
    }

    /// The top Via's edits, if any: the line rewritten `Name: value` with `=port` after a
    /// bare rport and `;received=address` after the first value.
    #[inline(always)]
    fn via_edit(&mut self) -> bool {
        if self.rport_end != 0 || self.received != 0 {
            self.plan.copy_to(self.name_end);
            self.plan.skip_to(self.value_start);
            self.plan
                .insert_word(u64::from(u16::from_le_bytes(*b": ")), 2);
            if self.rport_end != 0 {
                self.plan.copy_to(self.rport_end);
                let (digits, len) = decimal(u32::from(self.source_port));
                self.plan
                    .insert_word((digits << 8) | u64::from(b'='), len + 1);
            }
            self.plan.copy_to(self.first_end);
            if self.received != 0 {
                let len = self.source_text_len & 15;
                self.plan.insert_word(u64::from_le_bytes(*b";receive"), 8);
                self.plan
                    .insert_word(u64::from(u16::from_le_bytes(*b"d=")), 2);
                self.plan.insert_word(self.source_text[0], len.min(8));
                self.plan
                    .insert_word(self.source_text[1], len.saturating_sub(8));
            }
            self.plan.copy_to(self.value_end);
            self.plan.skip_to(self.next);
            self.plan
                .insert_word(u64::from(u16::from_le_bytes(*b"\r\n")), 2);
        }
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// A Route value starts at `cursor`: it is held against both of our Record-Route values.
    #[inline(always)]
    fn route_value(&mut self) -> bool {
        self.compare_word = 0;
        self.route_matches = 0b11;
        self.phase = phase::ROUTE_COMPARE;
        true
    }

    /// A word of the Route value against each of ours; once one matched whole, what follows
    /// must be another value or the line's end (then the whole line goes).
    #[inline(always)]
    fn route_compare(&mut self, message: &impl Words, selves: &SipSelves) -> bool {
        let k = self.compare_word;
        let word = message.word_at(self.cursor + 8 * k);
        let mut matches = self.route_matches;
        let mut matched = 0;
        let mut side = 0;
        while side < 2 {
            let route = &selves.sides[side].route;
            let len = route.len();
            let n = len.saturating_sub(8 * k);
            if n == 0 || first_bytes(word, n) != first_bytes(route.word(k), n) {
                matches &= !(1 << side);
            } else if n <= 8 {
                matched = len;
            }
            side += 1;
        }
        self.route_matches = matches;
        self.compare_word = k + 1;
        if matched == 0 {
            if matches == 0 || k >= SELF_TEXT / 8 {
                return self.pass(Reason::PassSipInDialogRoute);
            }
            return true;
        }
        let after = self.cursor + matched;
        if after >= self.value_end {
            if after > self.value_end {
                return self.pass(Reason::PassSipInDialogRoute);
            }
            self.plan.copy_to(self.line);
            self.plan.skip_to(self.next);
            self.phase = phase::BEGIN_LINE;
            return true;
        }
        let comma = after + leading_blanks(message.word_at(after));
        if message.byte(comma) != b',' {
            return self.pass(Reason::PassSipInDialogRoute);
        }
        self.cursor = comma + 1 + leading_blanks(message.word_at(comma + 1));
        self.phase = phase::ROUTE_VALUE;
        true
    }

    /// Max-Forwards: 1 to 3 digits, at most 255; 0 is the daemon's to answer (483).
    #[inline(always)]
    fn max_forwards(&mut self, message: &impl Words) -> bool {
        let (count, value) = leading_digits(message.word_at(self.value_start));
        if count == 0 || count > 3 || self.value_start + count != self.value_end || value > 255 {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if value == 0 {
            return self.pass(Reason::PassSipInDialogHops);
        }
        self.max_forwards = value as u32;
        self.plan.copy_to(self.name_end);
        self.plan.skip_to(self.next);
        let (digits, len) = decimal(self.max_forwards - 1);
        self.plan.insert_word(
            (digits << 16) | u64::from(u16::from_le_bytes(*b": ")),
            len + 2,
        );
        self.plan
            .insert_word(u64::from(u16::from_le_bytes(*b"\r\n")), 2);
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// The Call-ID: as long as the dialog's, then held against it word by word.
    #[inline(always)]
    fn call_id(&mut self, dialog: &Dialog) -> bool {
        let len = self.value_end - self.value_start;
        if len != dialog.call_id.len() || len == 0 || len > CALL_ID_TEXT {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        self.compare_with(text::CALL_ID, self.value_start, len)
    }

    #[inline(always)]
    fn compare_with(&mut self, text: u32, at: usize, len: usize) -> bool {
        self.compare_text = text;
        self.compare_at = at;
        self.compare_len = len;
        self.compare_word = 0;
        self.phase = phase::COMPARE;
        true
    }

    /// A word of a value against the dialog's text; the line is done once all matched.
    #[inline(always)]
    fn compare(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
        let k = self.compare_word;
        let n = self.compare_len.saturating_sub(8 * k);
        if n == 0 {
            self.phase = phase::BEGIN_LINE;
            return true;
        }
        let expected = match self.compare_text {
            text::CALL_ID => dialog.call_id.word(k),
            text::CALLER_TAG => dialog.tags[0].word(k),
            _ => dialog.tags[1].word(k),
        };
        let word = message.word_at(self.compare_at + 8 * k);
        if first_bytes(word, n) != first_bytes(expected, n) {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        self.compare_word = k + 1;
        true
    }

    /// From or To, a mark (`;` or `>`) a step: the last `;tag=` after the last `>` (the
    /// header's, not its URI's).
    #[inline(always)]
    fn tag_search(&mut self, message: &impl Words) -> bool {
        let marks = |word: u64| bytes_equal(word, b';') | bytes_equal(word, b'>');
        let mark = match find(message, self.cursor, marks) {
            Ok(mark) if mark < self.value_end => mark,
            Ok(_) => {
                self.phase = phase::TAG_FOUND;
                return true;
            }
            Err(on) => {
                self.cursor = on;
                if on >= self.value_end {
                    self.phase = phase::TAG_FOUND;
                }
                return true;
            }
        };
        if message.byte(mark) == b'>' {
            self.last_close = mark;
        } else if lower(first_bytes(message.word_at(mark + 1), 4))
            == u64::from(u32::from_le_bytes(*b"tag="))
        {
            self.tag_at = mark + 5;
        }
        self.cursor = mark + 1;
        true
    }

    /// The tag found is the one this header must carry: From the sender's, To the other's.
    #[inline(always)]
    fn tag_found(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
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
        let text = if party == 0 {
            text::CALLER_TAG
        } else {
            text::CALLEE_TAG
        };
        self.compare_with(text, at, len)
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
        let len = self.method_len;
        if method == self.value_start + count
            || first_bytes(message.word_at(method), len) != self.method
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
        let body_len = self.len - body;
        let declared = self.seen & (1 << header::CONTENT_LENGTH) != 0;
        if declared && self.content_length != body_len {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if body_len > 0 && self.sdp != 0 {
            return self.pass(Reason::PassSipInDialogSdp);
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
        if !self.plan.fits() {
            return self.pass(Reason::PassSipInDialogSize);
        }
        self.phase = phase::DONE;
        false
    }

    /// Our Via's branch and the rest of its line, into the place kept for them (whose last
    /// word ends exactly at its end: the text inserted after it is written already).
    #[inline(always)]
    fn write_branch(&mut self) {
        let (high, low) = hex_words(self.branch_hash);
        // The hex digits in reading order, as little-endian words.
        let (high, low) = (high.swap_bytes(), low.swap_bytes());
        let at = self.via_slot;
        self.plan
            .write_inserted(at, u64::from_le_bytes(*b"z9hG4bK-"));
        let mark = u64::from(u32::from_le_bytes(*b"sbc-"));
        self.plan.write_inserted(at + 8, mark | high << 32);
        self.plan.write_inserted(at + 16, high >> 32 | low << 32);
        self.plan.write_inserted(at + 24, low >> 32);
        self.plan
            .write_inserted(at + 28, u64::from_le_bytes(*b";rport\r\n"));
    }
}
