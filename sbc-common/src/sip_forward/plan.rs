//! How a forwarded message is made from the received one: a list of pieces, each a run of the
//! received bytes or of text the forwarding inserts, in order. The scan that reads the
//! message builds the plan as it goes (its edits come in the order of the bytes they touch);
//! the pieces are then copied out in runs, one after the other (`Plan::next_run`: a byte at a
//! time by `Plan::assemble` here, a word at a time in the XDP program).
use super::FRAME_HEADERS;
use crate::words::{SCAN_WINDOW, Words, first_bytes, masked_word};

/// Pieces a plan holds at most, a power of two (each copy of received bytes makes two: the text inserted
/// before it, perhaps empty, and the copy); a message that needs more goes up.
pub const MAX_PIECES: usize = 64;
/// Bytes of inserted text a plan holds at most (a power of two: offsets are masked into it).
pub const INSERT_BUFFER: usize = 512;
/// Longest message assembled, and the mask of positions and lengths in the buffer it is
/// assembled in (a power of two, as the scan window).
pub const OUT_BUFFER: usize = SCAN_WINDOW;
/// Bytes of a piece copied in one run at most (a multiple of 8): the XDP program copies a run
/// with a loop the verifier follows to its end, so a long piece takes several short runs.
pub const RUN_BYTES: usize = 64;
/// Runs a plan that fits takes at most: one per piece, and one more per `RUN_BYTES` of
/// message a piece holds past its first run.
pub const MAX_RUNS: usize = MAX_PIECES + OUT_BUFFER / RUN_BYTES;

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
        self.count <= MAX_PIECES && self.inserted_len <= INSERT_BUFFER && self.out_len < OUT_BUFFER
    }

    #[inline(always)]
    fn push(&mut self, offset: usize, len: usize, inserted: u16) {
        self.pieces[self.count & (MAX_PIECES - 1)] = Piece {
            offset: offset as u16,
            len: len as u16,
            inserted,
            _pad: 0,
        };
        // An empty piece is overwritten by the next (each piece costs an assembly step).
        self.count += usize::from(len != 0);
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

/// Where a message is assembled: `OUT_BUFFER` bytes and room for a run's words past them, so
/// that a run copied at any masked position stays within it (what the XDP verifier checks each
/// store against), right after the frame headers the XDP program writes for it (header and
/// message then leave for the frame in one copy).
#[repr(C, align(8))]
pub struct OutBuffer {
    /// Puts `bytes` at a multiple of 8.
    pub _align: [u8; 6],
    pub headers: [u8; FRAME_HEADERS],
    pub bytes: [u8; OUT_BUFFER + RUN_BYTES + 8],
}

/// Where the assembly of a plan stands: the piece being copied, its bytes copied, and the
/// message's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    pub piece: usize,
    pub piece_done: usize,
    pub written: usize,
}

/// `len` bytes (at most `RUN_BYTES`) from `from` in the received message, or in the plan's
/// inserted text, to be copied to `to` in the assembled one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub inserted: bool,
    pub from: usize,
    pub len: usize,
    pub to: usize,
}

impl Plan {
    /// The next run to copy, the cursor moved past it; `None` after the last piece.
    #[inline(always)]
    pub fn next_run(&self, cursor: &mut Cursor) -> Option<Run> {
        if cursor.piece >= self.count {
            return None;
        }
        let piece = self.pieces[cursor.piece & (MAX_PIECES - 1)];
        let left = usize::from(piece.len).wrapping_sub(cursor.piece_done);
        let len = if left > RUN_BYTES { RUN_BYTES } else { left };
        let run = Run {
            inserted: piece.inserted != 0,
            from: usize::from(piece.offset) + cursor.piece_done,
            len,
            to: cursor.written,
        };
        cursor.written += len;
        if len == left {
            cursor.piece += 1;
            cursor.piece_done = 0;
        } else {
            cursor.piece_done += len;
        }
        Some(run)
    }

    /// The message the plan makes of `message` (whose bytes the plan was made from), written
    /// to the start of `out`, run by run as the XDP program copies it: its length, or `None`
    /// if it does not fit there.
    pub fn assemble(&self, message: &impl Words, out: &mut [u8]) -> Option<usize> {
        let mut cursor = Cursor::default();
        while let Some(run) = self.next_run(&mut cursor) {
            let target = out.get_mut(run.to..run.to + run.len)?;
            for (k, byte) in target.iter_mut().enumerate() {
                *byte = if run.inserted {
                    self.inserted.byte(run.from + k)
                } else {
                    message.byte(run.from + k)
                };
            }
        }
        Some(cursor.written)
    }
}
