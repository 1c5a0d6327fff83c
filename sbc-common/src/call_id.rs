//! Finding and hashing the Call-ID of a SIP message, one byte at a time.
//!
//! `CallIdScanner` is a small state machine fed the message's bytes in order. The XDP program
//! feeds it from `bpf_loop` (the verifier checks one step, not every iteration of a long scan);
//! the daemon's tests feed it from a slice with `call_id_hash`: the same code either way.
//!
//! What it accepts: a header line (after the first line) named `Call-ID` (any case) or `i` (the
//! compact form), optional blanks, a colon, optional blanks, then the value up to the first
//! blank or line end. It gives up at the blank line that ends the headers, on a value longer
//! than `CALL_ID_MAX` or folded onto the next line, and when the bytes run out (a scan is cut
//! at `SCAN_BUFFER` bytes): the packet is then treated as out of dialog, which is limited but
//! never lost while under its limit.
use crate::guard::Fnv1a;

/// Bytes of a datagram that are scanned at most (the size of the XDP program's scan buffer).
pub const SCAN_BUFFER: usize = 2048;
/// Longest Call-ID value hashed.
pub const CALL_ID_MAX: u32 = 256;
/// Blanks accepted before and after the colon.
const BLANKS_MAX: u32 = 8;
const NAME_BYTES: &[u8; 7] = b"call-id";

// States (plain integers: the scanner lives in BPF stack memory and is matched on cheaply).
/// Inside a line that is not the Call-ID header (the first line starts here).
const IN_LINE: u32 = 0;
/// Right after a line feed.
const LINE_START: u32 = 1;
/// `count` bytes of `call-id` matched.
const IN_NAME: u32 = 2;
/// The compact name `i` matched.
const COMPACT: u32 = 3;
/// The name matched; `count` blanks before the colon.
const BEFORE_COLON: u32 = 4;
/// The colon matched; `count` blanks after it.
const AFTER_COLON: u32 = 5;
/// `count` bytes of the value hashed.
const VALUE: u32 = 6;

/// What a byte fed to the scanner led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep feeding.
    More,
    /// The Call-ID's hash (the byte fed ended its value).
    Found(u64),
    /// There is no Call-ID to find within the bounds.
    NotFound,
}

#[repr(C)]
pub struct CallIdScanner {
    state: u32,
    count: u32,
    hasher: Fnv1a,
}

#[inline(always)]
fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

impl CallIdScanner {
    #[inline(always)]
    pub const fn new(seed: u64) -> Self {
        Self {
            state: IN_LINE,
            count: 0,
            hasher: Fnv1a::new(seed),
        }
    }

    #[inline(always)]
    fn go(&mut self, state: u32, count: u32) -> Step {
        self.state = state;
        self.count = count;
        Step::More
    }

    /// Not the Call-ID after all: on to the next line.
    #[inline(always)]
    fn other_line(&mut self, byte: u8) -> Step {
        self.go(if byte == b'\n' { LINE_START } else { IN_LINE }, 0)
    }

    /// Feeds the next byte of the message.
    #[inline(always)]
    pub fn feed(&mut self, byte: u8) -> Step {
        // ASCII letters lower-case with 0x20; the '-' of the name is unaffected by it.
        let lower = byte | 0x20;
        match self.state {
            IN_LINE => self.other_line(byte),
            LINE_START => {
                if byte == b'\r' || byte == b'\n' {
                    Step::NotFound
                } else if lower == b'c' {
                    self.go(IN_NAME, 1)
                } else if lower == b'i' {
                    self.go(COMPACT, 0)
                } else {
                    self.other_line(byte)
                }
            }
            IN_NAME => {
                let index = self.count as usize;
                if index < NAME_BYTES.len() && lower == NAME_BYTES[index] {
                    if index + 1 == NAME_BYTES.len() {
                        self.go(BEFORE_COLON, 0)
                    } else {
                        self.go(IN_NAME, self.count + 1)
                    }
                } else {
                    self.other_line(byte)
                }
            }
            COMPACT | BEFORE_COLON => {
                if byte == b':' {
                    self.go(AFTER_COLON, 0)
                } else if is_blank(byte) && self.count < BLANKS_MAX {
                    self.go(BEFORE_COLON, self.count + 1)
                } else {
                    self.other_line(byte)
                }
            }
            AFTER_COLON => {
                if is_blank(byte) && self.count < BLANKS_MAX {
                    self.go(AFTER_COLON, self.count + 1)
                } else if is_blank(byte) || byte == b'\r' || byte == b'\n' {
                    // Empty, folded onto the next line, or too many blanks.
                    Step::NotFound
                } else {
                    self.hasher.write_byte(byte);
                    self.go(VALUE, 1)
                }
            }
            VALUE => {
                if is_blank(byte) || byte == b'\r' || byte == b'\n' {
                    Step::Found(self.hasher.finish())
                } else if self.count + 1 >= CALL_ID_MAX {
                    Step::NotFound
                } else {
                    self.hasher.write_byte(byte);
                    self.go(VALUE, self.count + 1)
                }
            }
            _ => Step::NotFound,
        }
    }
}

/// The seeded hash of the Call-ID of `message` (at most its first `SCAN_BUFFER` bytes), as
/// the XDP program computes it.
pub fn call_id_hash(message: &[u8], seed: u64) -> Option<u64> {
    let mut scanner = CallIdScanner::new(seed);
    for &byte in message.iter().take(SCAN_BUFFER) {
        match scanner.feed(byte) {
            Step::More => {}
            Step::Found(hash) => return Some(hash),
            Step::NotFound => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::format;

    use super::*;
    use crate::guard;

    fn scan(message: &[u8]) -> Option<u64> {
        call_id_hash(message, 42)
    }

    fn expect(call_id: &str) -> Option<u64> {
        Some(guard::call_id_hash(call_id.as_bytes(), 42))
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
            let message = format!(
                "BYE sip:bob@192.0.2.4 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n{header}\r\nCSeq: 2 BYE\r\n\r\n"
            );
            assert_eq!(scan(message.as_bytes()), expect(ID), "{header}");
        }
    }

    #[test]
    fn lookalike_headers_and_bodies_are_not_the_call_id() {
        let message = "INVITE sip:b@h SIP/2.0\r\nIf-Match: x\r\nCall-Info: <http://x>\r\n\
                       i-x: y\r\n\r\nCall-ID: in-the-body\r\n";
        assert_eq!(scan(message.as_bytes()), None);
        // A response carries it the same way.
        let response = format!("SIP/2.0 200 OK\r\nCall-Id: {ID}\r\n\r\n");
        assert_eq!(scan(response.as_bytes()), expect(ID));
    }

    #[test]
    fn out_of_bounds_values_are_not_found() {
        let padding = format!("X-Pad: {}\r\n", "p".repeat(SCAN_BUFFER - 40));
        let late = format!("OPTIONS sip:a@b SIP/2.0\r\n{padding}Call-ID: {ID}\r\n\r\n");
        assert_eq!(scan(late.as_bytes()), None, "ends past the scanned bytes");
        let long = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {}\r\n\r\n",
            "c".repeat(CALL_ID_MAX as usize)
        );
        assert_eq!(scan(long.as_bytes()), None, "too long");
        let longest = "c".repeat(CALL_ID_MAX as usize - 1);
        let fits = format!("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {longest}\r\n\r\n");
        assert_eq!(scan(fits.as_bytes()), expect(&longest));
        let cut = format!("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: {ID}");
        assert_eq!(
            scan(&cut.as_bytes()[..cut.len() - 3]),
            None,
            "runs past the datagram"
        );
        assert_eq!(
            scan(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID:   \r\n\r\n"),
            None,
            "empty"
        );
    }
}
