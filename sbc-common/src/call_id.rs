//! Finding and hashing the Call-ID of a SIP message, a word (8 bytes) at a time.
//!
//! The XDP program copies the first `SCAN_BUFFER` bytes of a datagram into a `ScanWindow` and
//! runs `CallIdScan::step` from `bpf_loop` (the verifier checks one step, not every iteration
//! of a long scan); the daemon runs the same steps over its own copy with
//! `find_call_id_hash`. A step goes two lines on (a `bpf_loop` call costs about a line's
//! reading), each from one line start to the next: it finds the line feeds of
//! a word at once (SWAR), up to `STEP_WORDS` words on, and tells the line by its first eight
//! bytes. The scan's state (`CallIdScan`) lives beside the window in map memory, whose values
//! the verifier does not track: each step is verified once, whatever the cursor.
//!
//! What it accepts: a header line (after the first line) named `Call-ID` (any case) or `i`
//! (the compact form), at most 7 blanks, a colon, at most 7 blanks (each run read as one word), then
//! the value up to the first byte below `!` (a blank or a line end: RFC 3261's `word` has no
//! such byte). It gives up at the blank line that ends the headers, on a value longer than
//! `CALL_ID_MAX` or folded onto the next line, and when the bytes run out (a scan is cut at
//! `SCAN_BUFFER` bytes): the packet is then treated as out of dialog, which is limited but
//! never lost while under its limit.

pub use crate::words::{MessageWords, SCAN_WINDOW, ScanWindow, Words};
use crate::words::{
    WordHasher, bytes_equal, first_below_bang, first_bytes, first_flagged_byte, hash_bytes,
    is_blank, leading_blanks,
};

/// Bytes of a datagram that are scanned at most.
pub const SCAN_BUFFER: usize = 2048;
/// Words the header search looks through per step for the next line start (a loop with one
/// way out per word, cheap to verify: eight cover most header lines in one step).
const STEP_WORDS: usize = 8;
/// Words of a Call-ID value hashed per step (one branch each, no loop: cheap to verify).
const VALUE_STEP_WORDS: usize = 8;
/// Longest Call-ID value hashed.
pub const CALL_ID_MAX: usize = 256;

/// `Call-ID` lower-cased in its first seven bytes (little-endian), and the bits that lower-case
/// its letters (not the `-`, which `| 0x20` would leave alone but a `\r` would turn into).
const CALL_ID_NAME: u64 = u64::from_le_bytes(*b"call-id\0");
const CALL_ID_LETTERS: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0, 0x20, 0x20, 0]);
const SEVEN_BYTES: u64 = 0x00ff_ffff_ffff_ffff;

/// The key of a dialog in the dialogs map, as the daemon computes it from a parsed Call-ID.
pub fn call_id_hash(call_id: &[u8], seed: u64) -> u64 {
    hash_bytes(call_id, seed)
}

/// A Call-ID scan over a `ScanWindow`, in three parts so that no `bpf_loop` step holds a loop
/// within a loop (the verifier would follow every combination): `step` per word finds the
/// header, `start_value` reads past its colon, `value_step` per word hashes the value.
#[repr(C)]
pub struct CallIdScan {
    /// Bytes of the window that hold the message.
    len: usize,
    /// The first byte the search has not looked at for line feeds.
    cursor: usize,
    /// Where the Call-ID header's name ends (0: not found).
    name_end: usize,
    value_start: usize,
    hasher: WordHasher,
    result: Option<u64>,
}

impl CallIdScan {
    /// Steps of `value_step` a value takes at most.
    pub const VALUE_STEPS: usize = CALL_ID_MAX / 8 / VALUE_STEP_WORDS;

    /// A scan of the first `len` bytes of a window (at most `SCAN_BUFFER`).
    #[inline(always)]
    pub const fn new(len: usize, seed: u64) -> Self {
        Self {
            len: if len > SCAN_BUFFER { SCAN_BUFFER } else { len },
            cursor: 0,
            name_end: 0,
            value_start: 0,
            hasher: WordHasher::new(seed),
            result: None,
        }
    }

    /// Steps the header search may take at most: each moves its cursor on by a byte at least.
    #[inline(always)]
    pub const fn steps(&self) -> usize {
        self.len
    }

    /// The Call-ID's hash, if the scan found one.
    #[inline(always)]
    pub const fn result(&self) -> Option<u64> {
        self.result
    }

    /// One step of the search for the Call-ID header: two lines (see `line_step`). Each step
    /// is a `bpf_loop` call in the kernel, which costs as much as reading a line.
    #[inline(always)]
    pub fn step(&mut self, window: &impl Words) -> bool {
        self.line_step(window) && self.line_step(window)
    }

    /// The next line start within `STEP_WORDS` words from the cursor (or, with none there,
    /// past those words); false when the search is over (found, or known not to be there).
    /// Branches but no loop; the cursor lives in this struct, which the XDP program keeps in
    /// map memory, where the verifier tracks no values (on its stack, each position would be a
    /// state of its own).
    #[inline(always)]
    fn line_step(&mut self, window: &impl Words) -> bool {
        let from = self.cursor;
        if from >= self.len {
            return false;
        }
        let word = from / 8;
        // Line feeds before the cursor were followed already.
        let mut feeds = bytes_equal(window.word(word), b'\n') & !first_bytes(u64::MAX, from % 8);
        let mut at = word * 8;
        for n in 1..STEP_WORDS {
            if feeds != 0 {
                break;
            }
            feeds = bytes_equal(window.word(word + n), b'\n');
            at = (word + n) * 8;
        }
        if feeds == 0 {
            self.cursor = (word + STEP_WORDS) * 8;
            return true;
        }
        // A line starts after each line feed; the first line is the start line, never a header.
        let line = at + first_flagged_byte(feeds) + 1;
        if line >= self.len {
            return false;
        }
        self.cursor = line;
        let head = window.word_at(line);
        let first = head as u8;
        if first == b'\r' || first == b'\n' {
            // The blank line that ends the headers.
            return false;
        }
        // The name, then a colon or a blank (`Call-Info`, `If-Match`: other headers).
        let name_len = if (head | CALL_ID_LETTERS) & SEVEN_BYTES == CALL_ID_NAME {
            7
        } else if first | 0x20 == b'i' {
            1
        } else {
            return true;
        };
        let next = (head >> (name_len * 8)) as u8;
        if next == b':' || is_blank(next) {
            self.name_end = line + name_len;
            return false;
        }
        true
    }

    /// After `step` found the header: reads past the colon to the value; false if there is
    /// none to hash. Without loops (a word at a time), so that the verifier follows one path.
    #[inline(always)]
    pub fn start_value(&mut self, window: &impl Words) -> bool {
        if self.name_end == 0 {
            return false;
        }
        let colon = self.name_end + leading_blanks(window.word_at(self.name_end));
        if window.byte(colon) != b':' {
            return false;
        }
        let value = colon + 1 + leading_blanks(window.word_at(colon + 1));
        // Empty, folded onto the next line, too many blanks, or past the datagram.
        if value >= self.len || window.byte(value) < b'!' {
            return false;
        }
        self.value_start = value;
        true
    }

    /// The whole scan, its parts run in turn (the XDP program runs them from `bpf_loop`).
    pub fn run(mut self, window: &impl Words) -> Option<u64> {
        for _ in 0..self.steps() {
            if !self.step(window) {
                break;
            }
        }
        if self.start_value(window) {
            for n in 0..Self::VALUE_STEPS {
                if !self.value_step(window, n) {
                    break;
                }
            }
        }
        self.result()
    }

    /// Hashes the `VALUE_STEP_WORDS` words of step `n` of the value (`n` below
    /// `VALUE_STEPS`); false once the value ended.
    #[inline(always)]
    pub fn value_step(&mut self, window: &impl Words, n: usize) -> bool {
        for k in 0..VALUE_STEP_WORDS {
            let offset = (n * VALUE_STEP_WORDS + k) * 8;
            let word = window.word_at(self.value_start + offset);
            let ends = first_below_bang(word);
            if ends != 0 {
                let len = offset + first_flagged_byte(ends);
                // The byte that ends the value must be one of the message's.
                if self.value_start + len < self.len && len < CALL_ID_MAX {
                    let hasher = WordHasher::from_state(self.hasher.state());
                    self.result = Some(hasher.finish(first_bytes(word, len - offset), len));
                }
                return false;
            }
            self.hasher.write_word(word);
        }
        true
    }
}

/// The seeded hash of the Call-ID of `message` (at most its first `SCAN_BUFFER` bytes), as
/// the XDP program computes it.
pub fn find_call_id_hash(message: &[u8], seed: u64) -> Option<u64> {
    CallIdScan::new(message.len(), seed).run(&MessageWords(message))
}

#[cfg(test)]
mod tests {
    use std::format;

    use super::*;

    fn scan(message: &[u8]) -> Option<u64> {
        find_call_id_hash(message, 42)
    }

    fn expect(call_id: &str) -> Option<u64> {
        Some(call_id_hash(call_id.as_bytes(), 42))
    }

    const ID: &str = "a84b4c76e66710@pc33.atlanta.com";

    #[test]
    fn both_forms_in_any_case_with_blanks() {
        for header in [
            "Call-ID: a84b4c76e66710@pc33.atlanta.com",
            "call-id:a84b4c76e66710@pc33.atlanta.com",
            "CALL-ID  :\ta84b4c76e66710@pc33.atlanta.com  ",
            "i: a84b4c76e66710@pc33.atlanta.com",
            "I :a84b4c76e66710@pc33.atlanta.com",
        ] {
            // Every alignment of the header against the words.
            for pad in 0..8 {
                let message = format!(
                    "BYE sip:bob@192.0.2.4 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1{}\r\n{header}\r\nCSeq: 2 BYE\r\n\r\n",
                    "x".repeat(pad)
                );
                assert_eq!(scan(message.as_bytes()), expect(ID), "{header}, {pad}");
            }
        }
    }

    /// The scan as the XDP program runs it: in a window whose bytes past the message hold an
    /// earlier datagram's, here the ones most likely to mislead it.
    fn scan_in_a_used_window(message: &[u8]) -> Option<u64> {
        let mut window = ScanWindow {
            bytes: [0; SCAN_WINDOW],
        };
        let garbage = b"\r\nCall-ID: stale@elsewhere\r\ni: x\n";
        for (byte, fill) in window.bytes.iter_mut().zip(garbage.iter().cycle()) {
            *byte = *fill;
        }
        let len = message.len().min(SCAN_BUFFER);
        window.bytes[..len].copy_from_slice(&message[..len]);
        CallIdScan::new(len, 42).run(&window)
    }

    #[test]
    fn what_lies_past_the_message_never_counts() {
        let whole = format!("BYE sip:b@h SIP/2.0\r\nVia: x\r\nCall-ID: {ID}\r\n\r\n");
        // Every cut of a message, including ones that end inside its Call-ID's name or value.
        for cut in 0..=whole.len() {
            let message = &whole.as_bytes()[..cut];
            assert_eq!(
                scan_in_a_used_window(message),
                scan(message),
                "cut at {cut}: {:?}",
                std::string::String::from_utf8_lossy(message)
            );
        }
        assert_eq!(scan(whole.as_bytes()), expect(ID));
    }

    #[test]
    fn the_shortest_header_lines_are_all_searched() {
        // Three-byte lines: three line starts in some words, at every alignment.
        for pad in 0..8 {
            let message = format!(
                "OPTIONS sip:a@b SIP/2.0{}\na:\nb:\nc:\nd:\ne:\ni:{ID}\n\n",
                "x".repeat(pad)
            );
            assert_eq!(scan(message.as_bytes()), expect(ID), "{pad}");
        }
    }

    #[test]
    fn values_of_every_length_hash_as_the_daemon_hashes_them() {
        for len in 1..CALL_ID_MAX {
            let id: std::string::String =
                (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let message = format!("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {id}\r\n\r\n");
            assert_eq!(scan(message.as_bytes()), expect(&id), "{len} bytes");
        }
    }

    #[test]
    fn lookalike_headers_and_bodies_are_not_the_call_id() {
        let message = "INVITE sip:b@h SIP/2.0\r\nIf-Match: x\r\nCall-Info: <http://x>\r\n\
                       i-x: y\r\nCall\rID: z\r\n\r\nCall-ID: in-the-body\r\n";
        assert_eq!(scan(message.as_bytes()), None);
        // A response carries it the same way; LF alone ends lines too.
        let response = format!("SIP/2.0 200 OK\nCall-Id: {ID}\n\n");
        assert_eq!(scan(response.as_bytes()), expect(ID));
        assert_eq!(
            scan(format!("Call-ID: {ID}\r\n\r\n").as_bytes()),
            None,
            "start line"
        );
    }

    #[test]
    fn hashes_depend_on_every_byte_and_the_seed() {
        let a = call_id_hash(ID.as_bytes(), 7);
        assert_eq!(a, call_id_hash(ID.as_bytes(), 7));
        assert_ne!(a, call_id_hash(b"a84b4c76e66710@pc33.atlanta.coM", 7));
        assert_ne!(a, call_id_hash(ID.as_bytes(), 8));
        assert_ne!(call_id_hash(b"abcdefgh", 7), call_id_hash(b"abcdefgh\0", 7));
    }

    #[test]
    fn out_of_bounds_values_are_not_found() {
        let padding = format!("X-Pad: {}\r\n", "p".repeat(SCAN_BUFFER - 40));
        let late = format!("OPTIONS sip:a@b SIP/2.0\r\n{padding}Call-ID: {ID}\r\n\r\n");
        assert_eq!(scan(late.as_bytes()), None, "ends past the scanned bytes");
        let long = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {}\r\n\r\n",
            "c".repeat(CALL_ID_MAX)
        );
        assert_eq!(scan(long.as_bytes()), None, "too long");
        let longest = "c".repeat(CALL_ID_MAX - 1);
        let fits = format!("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {longest}\r\n\r\n");
        assert_eq!(scan(fits.as_bytes()), expect(&longest));
        let cut = format!("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {ID}");
        assert_eq!(
            scan(cut.as_bytes()),
            None,
            "runs to the end of the datagram"
        );
        assert_eq!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID:   \r\n\r\n"),
            None,
            "empty"
        );
        assert_eq!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID:\r\n x\r\n\r\n"),
            None,
            "folded"
        );
    }
}
