//! What only a request gets: our Route values removed, Max-Forwards decremented, and the
//! branch of our Via written once the top Via was hashed.
use super::{
    scan::{DialogScan, differs, find, leading_digits, phase},
    text::decimal,
};
use crate::{
    Reason,
    branch::hex_words,
    dialog::{Dialog, SELF_TEXT, SipSelves},
    words::{WordHasher, Words, bytes_equal, first_below_bang, leading_blanks},
};

impl DialogScan {
    /// A Route value starts at `cursor`: it must be one of our two Record-Route values (they
    /// end with `>`, so that the value can be neither's prefix and be the other); what
    /// follows must be another value or the line's end (then the whole line goes).
    #[inline(always)]
    pub(super) fn route_value(&mut self, message: &impl Words, selves: &SipSelves) -> bool {
        let mut matched = 0;
        let mut side = 0;
        while side < 2 {
            let route = &selves.sides[side].route;
            let len = route.len();
            if len != 0 && len <= SELF_TEXT && !differs(message, self.cursor, len, 0, route) {
                matched = len;
            }
            side += 1;
        }
        if matched == 0 {
            return self.pass(Reason::PassSipInDialogRoute);
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

    /// A re-INVITE's or an UPDATE's Contact: its first URI, as the daemon reads it (within
    /// `<>`, or up to a parameter, another value or a blank), is hashed and must be its
    /// sender's known one, which the other leg's requests carry as Request-URI. Another form
    /// goes up.
    #[inline(always)]
    pub(super) fn contact(&mut self, message: &impl Words) -> bool {
        let start = self.value_start;
        let bracketed = message.byte(start) == b'<';
        let marks = |word: u64| {
            if bracketed {
                bytes_equal(word, b'>')
            } else {
                bytes_equal(word, b';')
                    | bytes_equal(word, b',')
                    | bytes_equal(word, b'<')
                    | bytes_equal(word, b'"')
                    | first_below_bang(word)
            }
        };
        let uri = start + usize::from(bracketed);
        let Ok(end) = find(message, uri, marks) else {
            return self.pass(Reason::PassSipInDialogTarget);
        };
        // The end must lie within the value, and be `>`, or a bare URI's end (not a display
        // name's `<` or quote).
        let byte = message.byte(end);
        if end > self.value_end || end == uri || byte == b'<' || byte == b'"' {
            return self.pass(Reason::PassSipInDialogTarget);
        }
        self.hash_start = uri;
        self.hash_at = uri;
        self.hash_end = end;
        self.hasher = WordHasher::new(self.seed).state();
        self.phase = phase::CONTACT_HASH;
        true
    }

    /// The Contact's URI hashed; another than the sender's known Contact goes up.
    #[inline(always)]
    pub(super) fn contact_hash(&mut self, message: &impl Words, dialog: &Dialog) -> bool {
        let Some(hash) = self.hash_value(message) else {
            return true;
        };
        // The sender's Contact is the Request-URI of the other leg's requests.
        if hash != dialog.legs[(self.leg & 1) ^ 1].request_uri_hash {
            return self.pass(Reason::PassSipInDialogTarget);
        }
        self.phase = phase::BEGIN_LINE;
        true
    }

    /// Max-Forwards: 1 to 3 digits, at most 255; 0 is the daemon's to answer (483).
    #[inline(always)]
    pub(super) fn max_forwards(&mut self, message: &impl Words) -> bool {
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

    /// Our Via's branch and the rest of its line, into the place kept for them (whose last
    /// word ends exactly at its end: the text inserted after it is written already).
    #[inline(always)]
    pub(super) fn write_branch(&mut self) {
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
