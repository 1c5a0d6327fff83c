//! The start line: a request's method, Request-URI and version (after which our Via goes
//! in), or a response's status.
use super::{
    scan::{DialogScan, HASH_STEP_WORDS, LINE_MAX, header, leading_digits, phase},
    text::dotted,
};
use crate::{
    Reason,
    branch::STATELESS_BRANCH_LEN,
    call_id::SCAN_BUFFER,
    dialog::{Dialog, LEG_ANSWERS_HIDDEN, LEG_FORWARD, SELF_TEXT, SipSelves, TARGET_URI_TEXT},
    words::{WordHasher, Words, first_below_bang, first_bytes, first_flagged_byte},
};

/// What follows our Via's text in its line: the branch, `;rport` and the line's end.
pub(super) const OUR_VIA_TAIL: usize = STATELESS_BRANCH_LEN + 8;

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

impl DialogScan {
    /// The direction: a request leaves on its leg's out side, a response on the other, to
    /// the party that sent the request. Then a request's method, one of `METHODS`.
    #[inline(always)]
    pub(super) fn method(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
        let leg = self.leg(dialog);
        if leg.flags & LEG_FORWARD == 0 {
            return self.pass(Reason::PassSipDialog);
        }
        if self.len > SCAN_BUFFER {
            return self.pass(Reason::PassSipInDialogSize);
        }
        self.from_hidden = u32::from(leg.flags & LEG_ANSWERS_HIDDEN != 0) & self.response;
        if self.response != 0 {
            self.out_side = leg.out_side & 1 ^ 1;
            let party = leg.party;
            self.source = party.addr.ipv4().unwrap_or([0; 4]);
            self.source_port = u16::from_be(party.port);
            self.phase = phase::SOURCE;
            return true;
        }
        self.out_side = leg.out_side & 1;
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

    /// The address a Via must name written out, then a request's Request-URI read (and its
    /// version, when the URI ends within this step) or a response's status line. (A step of
    /// its own: the method's search above leaves one path per method, which the verifier
    /// would follow through all of that.)
    #[inline(always)]
    pub(super) fn source(
        &mut self,
        message: &impl Words,
        dialog: &Dialog,
        selves: &SipSelves,
    ) -> bool {
        let (text, text_len) = dotted(self.source);
        self.source_text = text;
        self.source_text_len = text_len;
        if self.response != 0 {
            return self.status(message);
        }
        self.hash_at = self.hash_start;
        self.hash_end = 0;
        // Seeded as the dialogs map's keys: the daemon hashes the Contact with `call_id_hash`.
        self.hasher = WordHasher::new(self.seed).state();
        self.phase = phase::URI;
        self.uri(message, dialog, selves)
    }

    /// A response's status line: `SIP/2.0`, three digits and the reason phrase, copied as it
    /// is. A 100 Trying goes no further than the hop that sent it.
    #[inline(always)]
    pub(super) fn status(&mut self, message: &impl Words) -> bool {
        let (count, code) = leading_digits(message.word_at(8));
        let after = message.byte(11);
        if message.word_at(0) != u64::from_le_bytes(*b"SIP/2.0 ")
            || count != 3
            || !(after == b' ' || after == b'\r' || after == b'\n')
        {
            return self.pass(Reason::PassSipInDialogForm);
        }
        if code == 100 {
            return self.pass(Reason::PassSipInDialogTrying);
        }
        self.status = code as u32;
        // The status line is read as a line of no header: its end found, nothing edited.
        self.line = 0;
        self.class = header::OTHER;
        self.cursor = 0;
        self.phase = phase::FIND_LINE_END;
        true
    }

    /// The Request-URI, hashed `HASH_STEP_WORDS` words a step up to its first byte below `!`,
    /// then held against the one this leg's requests carry and replaced by the one they leave
    /// with (`DialogLeg::target_uri`).
    #[inline(always)]
    pub(super) fn uri(
        &mut self,
        message: &impl Words,
        dialog: &Dialog,
        selves: &SipSelves,
    ) -> bool {
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
                let leg = self.leg(dialog);
                if hash != leg.request_uri_hash {
                    return self.pass(Reason::PassSipInDialogMismatch);
                }
                // It leaves with the other party's Contact (the one it carries when that
                // party is not hidden from it: then the same bytes).
                self.plan.copy_to(self.hash_start);
                let target = &leg.target_uri;
                self.plan
                    .insert_text(target, target.len(), TARGET_URI_TEXT / 8);
                self.plan.skip_to(self.hash_end);
                return self.version(message, selves);
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
    pub(super) fn version(&mut self, message: &impl Words, selves: &SipSelves) -> bool {
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
}
