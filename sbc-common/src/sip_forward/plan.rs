//! How a forwarded message is made from the received one: a list of pieces, each a run of the
//! received bytes or of text the forwarding inserts, in order. The scan that reads the
//! message builds the plan as it goes (its edits come in the order of the bytes they touch);
//! `Assembly` then copies the pieces out a word at a time, a `bpf_loop` step per few words.
use crate::{
    checksum::WordSum,
    words::{SCAN_WINDOW, Words, first_bytes, masked_word},
};

/// Pieces a plan holds at most, a power of two (each copy of received bytes makes two: the text inserted
/// before it, perhaps empty, and the copy); a message that needs more goes up.
pub const MAX_PIECES: usize = 64;
/// Bytes of inserted text a plan holds at most (a power of two: offsets are masked into it).
pub const INSERT_BUFFER: usize = 512;
/// Size of the buffer a message is assembled in (a power of two, as the scan window); the
/// longest message assembled is a step's overrun shorter.
pub const OUT_BUFFER: usize = SCAN_WINDOW;
/// Words an assembly step copies at most.
const COPY_STEP_WORDS: usize = 8;

/// A run of bytes: `len` bytes from `offset` in the received message, or in the plan's
/// inserted text when `inserted` is 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub offset: u16,
    pub len: u16,
    pub inserted: u16,
    pub _pad: u16,
}

/// Text the forwarding inserts, read a word at a time like a message (with room past its
/// end for a word written at its last offset).
#[repr(C, align(8))]
pub struct Inserted {
    pub bytes: [u8; INSERT_BUFFER + 8],
}

impl Words for Inserted {
    #[inline(always)]
    fn word(&self, index: usize) -> u64 {
        // SAFETY: the buffer's bytes are 8-aligned (the struct's alignment), longer than N.
        unsafe { masked_word::<INSERT_BUFFER>(&self.bytes, index) }
    }
}

/// The pieces of a forwarded message, and the text they insert.
///
/// Its operations do not branch on what they are given (the XDP verifier would follow every
/// combination of such branches through a scan step): text is inserted by appending it to
/// `inserted`, and each `copy_to` first emits what was inserted since the last one (perhaps
/// nothing), then the copy. Whether it all fit is judged once, by `fits`.
#[repr(C)]
pub struct Plan {
    pub pieces: [Piece; MAX_PIECES],
    pub count: usize,
    /// The received bytes before this offset are in the plan (copied or skipped).
    pub done_to: usize,
    /// Bytes of `inserted` used, and where the text not yet in a piece starts.
    pub inserted_len: usize,
    pub inserted_from: usize,
    /// Length of the message the plan makes.
    pub out_len: usize,
    pub inserted: Inserted,
}

impl Plan {
    #[inline(always)]
    pub fn clear(&mut self) {
        self.count = 0;
        self.done_to = 0;
        self.inserted_len = 0;
        self.inserted_from = 0;
        self.out_len = 0;
    }

    /// Whether every piece and every inserted byte fit, and the message does.
    #[inline(always)]
    pub fn fits(&self) -> bool {
        self.count <= MAX_PIECES
            && self.inserted_len <= INSERT_BUFFER
            && self.out_len <= OUT_BUFFER - OVERRUN
    }

    #[inline(always)]
    fn push(&mut self, offset: usize, len: usize, inserted: u16) {
        self.pieces[self.count & (MAX_PIECES - 1)] = Piece {
            offset: offset as u16,
            len: len as u16,
            inserted,
            _pad: 0,
        };
        self.count += 1;
        self.out_len = self.out_len.wrapping_add(len);
    }

    /// The text inserted since the last copy, then the received bytes from where the plan
    /// stands up to `end`, unchanged. An `end` before where it stands (a message whose parts
    /// overlap) makes a length that wraps, which `fits` refuses.
    #[inline(always)]
    pub fn copy_to(&mut self, end: usize) {
        let from = self.inserted_from;
        self.push(from, self.inserted_len - from, 1);
        self.inserted_from = self.inserted_len;
        self.push(self.done_to, end.wrapping_sub(self.done_to), 0);
        self.done_to = end;
    }

    /// The received bytes from where the plan stands up to `end` (not before it) are left out.
    #[inline(always)]
    pub fn skip_to(&mut self, end: usize) {
        self.done_to = end;
    }

    /// Inserts the first `len` bytes (at most 8) of `word` here.
    #[inline(always)]
    pub fn insert_word(&mut self, word: u64, len: usize) {
        self.write_inserted(self.inserted_len, first_bytes(word, len));
        self.inserted_len += len;
    }

    /// Inserts `text` (`len` bytes, at most `max_words` words) here, a whole word at a time.
    #[inline(always)]
    pub fn insert_text(&mut self, text: &impl Words, len: usize, max_words: usize) {
        let at = self.inserted_len;
        let mut i = 0;
        while i < max_words {
            self.write_inserted(at + i * 8, text.word(i));
            i += 1;
        }
        // A longer text than it may be makes the plan too long to fit.
        self.inserted_len += if len > max_words * 8 {
            INSERT_BUFFER
        } else {
            len
        };
    }

    /// Reserves `len` bytes of inserted text here, to be written later with `write_inserted`;
    /// returns where they start in the inserted text.
    #[inline(always)]
    pub fn reserve(&mut self, len: usize) -> usize {
        let at = self.inserted_len;
        self.inserted_len += len;
        at
    }

    /// Writes a word of inserted text at `at` (masked into the buffer; the bytes after it may
    /// be overwritten later).
    #[inline(always)]
    pub fn write_inserted(&mut self, at: usize, word: u64) {
        let at = at & (INSERT_BUFFER - 1);
        // SAFETY: `at + 8` is within the buffer (`INSERT_BUFFER + 8` bytes).
        unsafe {
            self.inserted
                .bytes
                .as_mut_ptr()
                .add(at)
                .cast::<u64>()
                .write_unaligned(word.to_le())
        };
    }
}

/// Copying a plan's pieces out into a buffer, `COPY_STEP_WORDS` words a step; then summing
/// what was assembled for the UDP checksum. Neither looks at a byte to decide what to do with
/// the next (the XDP verifier follows every such branch as a path of its own): a step copies
/// whole words, running past the end of its piece into what the next piece overwrites.
#[repr(C)]
pub struct Assembly {
    /// The piece being copied, and how far into it.
    pub piece: usize,
    pub within: usize,
    /// Where the next byte goes.
    pub at: usize,
    /// Bytes of the assembled message summed so far, and their sum.
    pub summed: usize,
    pub sum: WordSum,
}

/// What a copy step may write past its piece's end.
const OVERRUN: usize = COPY_STEP_WORDS * 8;

/// The buffer a message is assembled in: `OUT_BUFFER` bytes and room for a step's overrun.
#[repr(C, align(8))]
pub struct OutBuffer {
    pub bytes: [u8; OUT_BUFFER + OVERRUN],
}

impl OutBuffer {
    /// The aligned word `index` (masked into the buffer).
    #[inline(always)]
    fn word(&self, index: usize) -> u64 {
        // SAFETY: the buffer's bytes are 8-aligned (the struct's alignment), longer than N.
        unsafe { masked_word::<OUT_BUFFER>(&self.bytes, index) }
    }

    /// Writes `COPY_STEP_WORDS` words from `at` (masked into the buffer, whose spare room
    /// takes the overrun), the `k`th made by `word(k)`.
    #[inline(always)]
    fn write_step(&mut self, at: usize, word: impl Fn(usize) -> u64) {
        let at = at & (OUT_BUFFER - 1);
        let mut k = 0;
        while k < COPY_STEP_WORDS {
            // SAFETY: `at + 8 * k + 8` is within the buffer (`OUT_BUFFER + OVERRUN` bytes).
            unsafe {
                self.bytes
                    .as_mut_ptr()
                    .add(at + 8 * k)
                    .cast::<u64>()
                    .write_unaligned(word(k).to_le())
            };
            k += 1;
        }
    }
}

impl Assembly {
    pub const fn new() -> Self {
        Self {
            piece: 0,
            within: 0,
            at: 0,
            summed: 0,
            sum: WordSum::new(),
        }
    }

    /// Steps an assembly takes at most: a piece of fewer than `OVERRUN` bytes takes one.
    pub const STEPS: usize = MAX_PIECES + OUT_BUFFER / OVERRUN;

    /// Copies the next `OVERRUN` bytes of the current piece (whole words, from the message or
    /// the inserted text: both are read, one kept); false when every piece is out.
    #[inline(always)]
    pub fn step(&mut self, plan: &Plan, message: &impl Words, out: &mut OutBuffer) -> bool {
        if self.piece >= plan.count || self.piece >= MAX_PIECES {
            return false;
        }
        let piece = plan.pieces[self.piece % MAX_PIECES];
        let from = piece.offset as usize + self.within;
        let inserted = 0u64.wrapping_sub(u64::from(piece.inserted & 1));
        out.write_step(self.at, |k| {
            let offset = from + 8 * k;
            (message.word_at(offset) & !inserted) | (plan.inserted.word_at(offset) & inserted)
        });
        let left = piece.len as usize - self.within;
        let copied = if left < OVERRUN { left } else { OVERRUN };
        self.at += copied;
        self.within += copied;
        if self.within >= piece.len as usize {
            self.piece += 1;
            self.within = 0;
        }
        true
    }

    /// Sum steps for a message of `len` bytes.
    #[inline(always)]
    pub const fn sum_steps(len: usize) -> usize {
        len.div_ceil(OVERRUN)
    }

    /// Clears the bytes after the assembled message that the sum steps read.
    #[inline(always)]
    pub fn clear_after(out: &mut OutBuffer, len: usize) {
        out.write_step(len, |_| 0);
    }

    /// Adds the next `OVERRUN` assembled bytes to the sum (run `sum_steps` times, after
    /// `clear_after`: whatever it reads past the message is zero).
    #[inline(always)]
    pub fn sum_step(&mut self, out: &OutBuffer) {
        let mut k = 0;
        while k < COPY_STEP_WORDS {
            self.sum.add(out.word(self.summed / 8 + k));
            k += 1;
        }
        self.summed += OVERRUN;
    }
}

impl Default for Assembly {
    fn default() -> Self {
        Self::new()
    }
}
