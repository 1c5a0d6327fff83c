//! Reading a SIP message a word (8 bytes) at a time, the way both the XDP program and the
//! daemon do: the `Words` a scan reads, and the SWAR tests that look at eight bytes at once.

/// Size of a `ScanWindow`: a power of two (word indexes are masked into it, which the verifier
/// can follow) that leaves room to read whole words past the scanned bytes.
pub const SCAN_WINDOW: usize = 4096;

pub const ONES: u64 = 0x0101_0101_0101_0101;
pub const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes a scan reads a word at a time. What lies past the message is never relied on: the
/// XDP program's window holds an earlier datagram's bytes there, the daemon's reading zeros.
pub trait Words {
    /// The aligned word `index` (bytes `8 * index ..`), little-endian.
    fn word(&self, index: usize) -> u64;

    /// The eight bytes from `offset` on, as one little-endian word (two aligned reads, and no
    /// branch: each one doubles the paths the verifier follows through a loop).
    #[inline(always)]
    fn word_at(&self, offset: usize) -> u64 {
        let (index, shift) = (offset / 8, (offset % 8) * 8);
        // `<< 1 << (63 - shift)` is `<< (64 - shift)`, and shifts everything out at 0.
        (self.word(index) >> shift) | (self.word(index + 1) << 1 << (63 - shift))
    }

    #[inline(always)]
    fn byte(&self, offset: usize) -> u8 {
        self.word_at(offset) as u8
    }
}

/// The first bytes of a datagram, copied where whole words can be read at any offset.
#[repr(C, align(8))]
pub struct ScanWindow {
    pub bytes: [u8; SCAN_WINDOW],
}

impl Words for ScanWindow {
    #[inline(always)]
    fn word(&self, index: usize) -> u64 {
        // SAFETY: the window's bytes are 8-aligned (the struct's alignment) and N long.
        unsafe { masked_word::<SCAN_WINDOW>(&self.bytes, index) }
    }

    #[inline(always)]
    fn byte(&self, offset: usize) -> u8 {
        self.bytes[offset & (SCAN_WINDOW - 1)]
    }
}

/// Word `index` (little-endian) of the first `N` bytes of `bytes`, the index masked into them
/// (`N` a power of two): how every buffer a scan reads a word at a time is read, an index the
/// verifier can follow and an aligned load.
///
/// # Safety
/// `bytes` must be 8-aligned and at least `N` long.
#[inline(always)]
pub unsafe fn masked_word<const N: usize>(bytes: &[u8], index: usize) -> u64 {
    // SAFETY: the index is masked into the first N bytes, which the caller vouches for.
    let word = unsafe { *bytes.as_ptr().add((index & (N / 8 - 1)) * 8).cast::<u64>() };
    u64::from_le(word)
}

/// A message as the daemon holds it, read in place (zeros past its end): no copy per datagram.
pub struct MessageWords<'a>(pub &'a [u8]);

impl Words for MessageWords<'_> {
    fn word(&self, index: usize) -> u64 {
        let mut word = [0u8; 8];
        let start = index.saturating_mul(8).min(self.0.len());
        let bytes = &self.0[start..self.0.len().min(start + 8)];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    }

    fn byte(&self, offset: usize) -> u8 {
        self.0.get(offset).copied().unwrap_or(0)
    }
}

/// The high bit of each byte of `word` that is zero, and of no other (exact, unlike the
/// cheaper test that may flag a byte above a zero one).
#[inline(always)]
pub const fn zero_bytes(word: u64) -> u64 {
    let low_bits = (word & !HIGHS).wrapping_add(!HIGHS);
    !(low_bits | word | !HIGHS)
}

/// The high bit of each byte of `word` equal to `byte`.
#[inline(always)]
pub const fn bytes_equal(word: u64, byte: u8) -> u64 {
    zero_bytes(word ^ (ONES * byte as u64))
}

/// The high bit of the first byte of `word` (lowest address) below `!`, and perhaps of later
/// ones: the classic borrow test is exact up to the first hit, which is all a scan needs.
#[inline(always)]
pub const fn first_below_bang(word: u64) -> u64 {
    word.wrapping_sub(ONES * b'!' as u64) & !word & HIGHS
}

/// The index of the lowest byte whose high bit is set in `flags` (only high bits set), by a
/// multiplication rather than `trailing_zeros`, which BPF computes with a table lookup whose
/// index the verifier must then track.
#[inline(always)]
pub const fn first_flagged_byte(flags: u64) -> usize {
    let lowest = (flags & flags.wrapping_neg()) >> 7;
    (lowest.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// The index of the highest byte whose high bit is set in `flags` (not zero, only high bits
/// set): the flags smeared down to the lowest byte, and the top one isolated.
#[inline(always)]
pub const fn last_flagged_byte(flags: u64) -> usize {
    let mut below = flags | flags >> 8;
    below |= below >> 16;
    below |= below >> 32;
    first_flagged_byte(below & !(below >> 8))
}

/// The bytes of `word` before byte `n` (`n` from 0 to 8).
#[inline(always)]
pub const fn first_bytes(word: u64, n: usize) -> u64 {
    if n >= 8 {
        word
    } else {
        word & ((1u64 << (n * 8)) - 1)
    }
}

#[inline(always)]
pub fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// How many blanks `word` starts with (8: it is all blanks, more than a header may have).
/// Counted with `first_flagged_byte`: see there why not `trailing_zeros`.
#[inline(always)]
pub fn leading_blanks(word: u64) -> usize {
    let others = !(bytes_equal(word, b' ') | bytes_equal(word, b'\t')) & HIGHS;
    if others == 0 {
        8
    } else {
        first_flagged_byte(others)
    }
}

/// A seeded hash fed a word at a time (it keys the dialogs map by Call-ID, and makes the
/// branch of in-dialog requests). Not cryptographic; a random seed keeps strangers from aiming
/// at a given key.
#[derive(Clone, Copy)]
pub struct WordHasher(u64);

impl WordHasher {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    #[inline(always)]
    pub const fn new(seed: u64) -> Self {
        Self(Self::OFFSET ^ seed)
    }

    /// A hash resumed from `state` (a scan that keeps its hasher across steps copies it).
    #[inline(always)]
    pub const fn from_state(state: u64) -> Self {
        Self(state)
    }

    #[inline(always)]
    pub const fn state(&self) -> u64 {
        self.0
    }

    /// Eight bytes of the value, little-endian.
    #[inline(always)]
    pub fn write_word(&mut self, word: u64) {
        let mixed = (self.0 ^ word).wrapping_mul(Self::MULTIPLIER);
        self.0 = mixed.rotate_left(29);
    }

    /// The last, partial word (its bytes past the value zero: a value whose length is a
    /// multiple of eight ends with an empty one) and the value's length.
    #[inline(always)]
    pub fn finish(mut self, last: u64, len: usize) -> u64 {
        self.write_word(last);
        // The finaliser of MurmurHash3, so that every input bit reaches every output bit.
        let mut hash = self.0 ^ len as u64;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}

/// The seeded hash of `bytes`, as a scan computes it a word at a time.
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut hasher = WordHasher::new(seed);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        hasher.write_word(u64::from_le_bytes(word.try_into().expect("eight bytes")));
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    hasher.finish(u64::from_le_bytes(last), bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of flagged bytes: the lowest and the highest flagged ones are found.
    #[test]
    fn flagged_bytes_are_found_at_both_ends() {
        for bits in 1u32..256 {
            let flags = (0..8)
                .filter(|byte| bits & (1 << byte) != 0)
                .fold(0u64, |flags, byte| flags | 0x80 << (8 * byte));
            assert_eq!(first_flagged_byte(flags), bits.trailing_zeros() as usize);
            assert_eq!(last_flagged_byte(flags), 31 - bits.leading_zeros() as usize);
        }
    }

    #[test]
    fn leading_blanks_are_counted_up_to_a_word() {
        let word = |text: &[u8; 8]| u64::from_le_bytes(*text);
        assert_eq!(leading_blanks(word(b"value;x=")), 0);
        assert_eq!(leading_blanks(word(b" \t value")), 3);
        assert_eq!(leading_blanks(word(b"       x")), 7);
        assert_eq!(leading_blanks(word(b" \t \t \t \t")), 8);
    }
}
