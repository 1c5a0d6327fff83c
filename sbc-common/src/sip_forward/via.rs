//! The Vias: a request's previous hop marked and hashed for our branch; a response's top
//! Via (ours) removed and the one below it checked against the party it goes to.
use super::{
    scan::{
        DialogScan, HASH_STEP_WORDS, expected, find, leading_digits, lower, phase, trailing_blanks,
    },
    text::decimal,
};
use crate::{
    Reason,
    branch::{STATELESS_BRANCH_PREFIX, branch_hasher},
    dialog::{Dialog, SipSelves},
    words::{WordHasher, Words, bytes_equal, first_below_bang, first_bytes, leading_blanks},
};

impl DialogScan {
    /// The top Via: `SIP/2.0/UDP`, then its host compared with the source address.
    #[inline(always)]
    pub(super) fn via(&mut self, message: &impl Words) -> bool {
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
        self.via_params(message)
    }

    /// The top Via's parameters, a mark (`;`, `,` or `"`) a step, up to its first value's end:
    /// a bare `rport` found, quotes refused (a quoted comma would end the value elsewhere).
    #[inline(always)]
    pub(super) fn via_params(&mut self, message: &impl Words) -> bool {
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

    /// Hashes the first Via value for the stateless branch.
    #[inline(always)]
    pub(super) fn via_hash(&mut self, message: &impl Words) -> bool {
        let Some(hash) = self.hash_value(message) else {
            return true;
        };
        self.branch_hash = hash;
        self.via_edit()
    }

    /// `HASH_STEP_WORDS` words more of the value from `hash_start` to `hash_end` hashed (from
    /// `hash_at`, with `hasher`): its hash once it is all in.
    #[inline(always)]
    pub(super) fn hash_value(&mut self, message: &impl Words) -> Option<u64> {
        let mut hasher = WordHasher::from_state(self.hasher);
        let mut k = 0;
        while k < HASH_STEP_WORDS {
            let left = self.hash_end - self.hash_at.min(self.hash_end);
            if left < 8 {
                let word = first_bytes(message.word_at(self.hash_at), left);
                return Some(hasher.finish(word, self.hash_end - self.hash_start));
            }
            hasher.write_word(message.word_at(self.hash_at));
            self.hash_at += 8;
            k += 1;
        }
        self.hasher = hasher.state();
        None
    }

    /// The top Via's edits, if any: the line rewritten `Name: value` with `=port` after a
    /// bare rport and `;received=address` after the first value.
    #[inline(always)]
    pub(super) fn via_edit(&mut self) -> bool {
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

    /// A response's top Via must be ours on the side it arrives on, with a stateless branch
    /// (a response to a request the daemon forwarded in a transaction is the daemon's).
    #[inline(always)]
    pub(super) fn pop_via(
        &mut self,
        message: &impl Words,
        dialog: &Dialog,
        selves: &SipSelves,
    ) -> bool {
        let ours = &selves.sides[usize::from(self.out_side & 1 ^ 1)].via;
        self.our_via_len = ours.len() & 63;
        if ours.is_empty() || self.value_end - self.value_start < self.our_via_len + 28 {
            return self.pass(Reason::PassSipResponseStateful);
        }
        self.compare_with(
            expected::OUR_VIA,
            self.value_start,
            self.our_via_len,
            phase::POP_VIA_END,
        ) && self.compare(message, dialog, selves)
    }

    /// Past our Via's text: the stateless branch's prefix, then the end of our value. Alone
    /// in its line, the line goes; followed by others, they stay, rewritten `Name: values`.
    #[inline(always)]
    pub(super) fn pop_via_end(&mut self, message: &impl Words) -> bool {
        if self.vias == 0 {
            let branch = self.value_start + self.our_via_len;
            let prefix = u64::from_le_bytes(*b"z9hG4bK-");
            let mark = u64::from(u32::from_le_bytes(*b"sbc-"));
            if message.word_at(branch) != prefix
                || first_bytes(message.word_at(branch + 8), 4) != mark
            {
                return self.pass(Reason::PassSipResponseStateful);
            }
            self.vias = 1;
            self.cursor = branch + STATELESS_BRANCH_PREFIX.len();
        }
        let marks = |word: u64| bytes_equal(word, b',') | bytes_equal(word, b'"');
        let mark = match find(message, self.cursor, marks) {
            Ok(mark) if mark < self.value_end => mark,
            Ok(_) => self.value_end,
            Err(on) if on < self.value_end => {
                self.cursor = on;
                return true;
            }
            Err(_) => self.value_end,
        };
        if mark == self.value_end {
            self.plan.copy_to(self.line);
            self.plan.skip_to(self.next);
            self.phase = phase::BEGIN_LINE;
            return true;
        }
        if message.byte(mark) == b'"' {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let rest = mark + 1 + leading_blanks(message.word_at(mark + 1));
        self.plan.copy_to(self.name_end);
        self.plan.skip_to(rest);
        self.plan
            .insert_word(u64::from(u16::from_le_bytes(*b": ")), 2);
        self.plan.copy_to(self.value_end);
        self.plan.skip_to(self.next);
        self.plan
            .insert_word(u64::from(u16::from_le_bytes(*b"\r\n")), 2);
        // The Via below ours is the rest of this line's first value.
        self.value_start = rest;
        self.phase = phase::NEXT_VIA;
        true
    }

    /// The Via below ours (from `value_start`): `SIP/2.0/UDP`, a host compared with the
    /// party's address, perhaps a port.
    #[inline(always)]
    pub(super) fn next_via(&mut self, message: &impl Words) -> bool {
        let start = self.value_start;
        if message.word_at(start) != u64::from_le_bytes(*b"SIP/2.0/")
            || first_bytes(message.word_at(start + 8), 4) != u64::from(u32::from_le_bytes(*b"UDP "))
        {
            return self.pass(Reason::PassSipInDialogForm);
        }
        let host = start + 12;
        self.host_matches = u32::from(self.names_source(message, host));
        self.received_seen = 0;
        self.received_matches = 0;
        self.rport = 0;
        self.via_port = 0;
        // The host ends at a port, a parameter, another value, a blank or the line's end.
        let ends = |word: u64| {
            bytes_equal(word, b':')
                | bytes_equal(word, b';')
                | bytes_equal(word, b',')
                | first_below_bang(word)
        };
        let end = match find(message, host, ends) {
            Ok(end) => end,
            Err(_) => return self.pass(Reason::PassSipInDialogForm),
        };
        self.cursor = end;
        if message.byte(end) == b':' {
            let (count, port) = leading_digits(message.word_at(end + 1));
            if count == 0 || count > 5 || port > 65535 {
                return self.pass(Reason::PassSipInDialogForm);
            }
            self.via_port = port as u32;
            self.cursor = end + 1 + count;
        }
        self.phase = phase::NEXT_VIA_PARAMS;
        true
    }

    /// Whether the text at `at` is `source` (as written by `dotted`) and ends there.
    #[inline(always)]
    fn names_source(&self, message: &impl Words, at: usize) -> bool {
        let len = self.source_text_len & 15;
        let after = message.byte(at + len);
        first_bytes(message.word_at(at), len) == self.source_text[0]
            && first_bytes(message.word_at(at + 8), len.saturating_sub(8)) == self.source_text[1]
            && (after < b'!' || after == b':' || after == b';' || after == b',')
    }

    /// The Via below ours, a parameter a step (`received`, `rport`) to its value's end; then
    /// where it sends the response must be the party: `received` or the host, `rport` or the
    /// port or 5060.
    #[inline(always)]
    pub(super) fn next_via_params(&mut self, message: &impl Words) -> bool {
        let marks =
            |word: u64| bytes_equal(word, b';') | bytes_equal(word, b',') | bytes_equal(word, b'"');
        let mark = match find(message, self.cursor, marks) {
            Ok(mark) if mark < self.value_end => mark,
            Ok(_) => return self.next_via_checked(),
            Err(on) if on < self.value_end => {
                self.cursor = on;
                return true;
            }
            Err(_) => return self.next_via_checked(),
        };
        match message.byte(mark) {
            b'"' => return self.pass(Reason::PassSipInDialogForm),
            b',' => return self.next_via_checked(),
            _ => {}
        }
        let name = lower(message.word_at(mark + 1));
        if name == u64::from_le_bytes(*b"received") && message.byte(mark + 9) == b'=' {
            self.received_seen = 1;
            self.received_matches = u32::from(self.names_source(message, mark + 10));
        } else if first_bytes(name, 6) == u64::from_le_bytes(*b"rport=\0\0") {
            let (count, port) = leading_digits(message.word_at(mark + 7));
            self.rport = if count == 0 || count > 5 {
                0
            } else {
                port as u32
            };
        }
        self.cursor = mark + 1;
        true
    }

    #[inline(always)]
    fn next_via_checked(&mut self) -> bool {
        let address = if self.received_seen != 0 {
            self.received_matches
        } else {
            self.host_matches
        };
        let port = if self.rport != 0 {
            self.rport
        } else if self.via_port != 0 {
            self.via_port
        } else {
            5060
        };
        if address == 0 || port != u32::from(self.source_port) {
            return self.pass(Reason::PassSipInDialogMismatch);
        }
        self.vias = 2;
        self.phase = phase::BEGIN_LINE;
        true
    }
}
