//! Incremental Internet checksum update (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
//!
//! Used by the XDP program when it rewrites addresses, ports and TTL, and unit-tested here on the
//! host against a full recomputation.

/// Accumulates the changes to one checksum field; values are 16-bit words in network order.
#[derive(Clone, Copy, Debug)]
pub struct ChecksumUpdate {
    sum: u32,
}

impl ChecksumUpdate {
    /// Starts from the checksum currently in the header (as a big-endian value).
    #[inline(always)]
    pub const fn new(check: u16) -> Self {
        Self { sum: !check as u32 }
    }

    #[inline(always)]
    pub const fn remove_u16(mut self, old: u16) -> Self {
        self.sum += !old as u32;
        self
    }

    #[inline(always)]
    pub const fn add_u16(mut self, new: u16) -> Self {
        self.sum += new as u32;
        self
    }

    /// Replaces a 16-bit word.
    #[inline(always)]
    pub const fn replace_u16(self, old: u16, new: u16) -> Self {
        self.remove_u16(old).add_u16(new)
    }

    /// Replaces a 4-byte field (an IPv4 address) given as its bytes in network order.
    #[inline(always)]
    pub const fn replace_4(self, old: [u8; 4], new: [u8; 4]) -> Self {
        self.replace_u16(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        )
        .replace_u16(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        )
    }

    /// Replaces fields whose 16-bit words sum to `old` with ones summing to `new` (sums of
    /// at most 65,536 words each).
    #[inline(always)]
    pub const fn replace_sum(self, old: u32, new: u32) -> Self {
        self.remove_u16(fold(old)).add_u16(fold(new))
    }

    /// The updated checksum (big-endian value).
    #[inline(always)]
    pub const fn finish(self) -> u16 {
        let mut sum = self.sum;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }

    /// The updated UDP checksum: 0 means "no checksum" in UDP over IPv4, so a computed 0 is sent
    /// as 0xffff (RFC 768).
    #[inline(always)]
    pub const fn finish_udp(self) -> u16 {
        match self.finish() {
            0 => 0xffff,
            c => c,
        }
    }
}

/// A sum of 16-bit words folded to sixteen bits (ones' complement: carries wrap around).
#[inline(always)]
const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// The ones' complement sum of a payload taken eight bytes at a time. The sum does not depend
/// on the byte order it is taken in (RFC 1071 2.B), so little-endian words do, swapped at the
/// end.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordSum {
    sum: u64,
}

impl WordSum {
    pub const fn new() -> Self {
        Self { sum: 0 }
    }

    /// Adds eight bytes (bytes past the payload's end must be zero).
    #[inline(always)]
    pub const fn add(&mut self, word: u64) {
        let (sum, carry) = self.sum.overflowing_add(word);
        self.sum = sum + carry as u64;
    }

    /// Adds a run of the payload that starts at byte `offset`, summed as the 32-bit halves of
    /// its little-endian words (`halves_of`: BPF has no carry flag, and halves need no carry
    /// for runs of up to 2^31 words). A run at an odd offset has its 16-bit lanes a byte off
    /// the payload's: multiplying by 2^8 modulo 0xffff, all a ones' complement sum keeps,
    /// swaps them back.
    #[inline(always)]
    pub const fn add_run(&mut self, halves: u64, offset: usize) {
        let folded = (halves & 0xffff_ffff) + (halves >> 32);
        self.add(folded << (8 * (offset & 1)));
    }

    /// The sum folded to sixteen bits, as a big-endian value.
    #[inline(always)]
    pub const fn folded(self) -> u16 {
        let mut sum = (self.sum & 0xffff_ffff) + (self.sum >> 32);
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        (sum as u16).swap_bytes()
    }
}

/// What a word adds to a run's sum of 32-bit halves (`WordSum::add_run`).
#[inline(always)]
pub const fn halves_of(word: u64) -> u64 {
    (word & 0xffff_ffff) + (word >> 32)
}

/// The UDP checksum of a datagram over IPv4 (RFC 768) whose payload sums to `payload` (a
/// `WordSum::folded`): the pseudo-header, the UDP header and the payload. Ports and the
/// length are values, not network order.
#[inline(always)]
pub const fn udp_ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    len: u16,
    payload: u16,
) -> u16 {
    let mut sum = payload as u32
        + u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
        + 17
        + len as u32
        + ports.0 as u32
        + ports.1 as u32
        + len as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    match !(sum as u16) {
        0 => 0xffff,
        check => check,
    }
}

#[cfg(test)]
mod tests {
    /// Runs at every offset and of every length, summed as the XDP program sums the runs it
    /// copies, make the sum of the whole payload.
    #[test]
    fn runs_at_any_offset_sum_as_the_whole() {
        let payload: std::vec::Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        let mut whole = WordSum::new();
        for chunk in payload.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            whole.add(u64::from_le_bytes(word));
        }
        for first in 0..24 {
            for second in 0..40 {
                let mut runs = WordSum::new();
                let cuts = [0, first, first + second, payload.len()];
                for bounds in cuts.windows(2) {
                    let mut halves = 0;
                    for chunk in payload[bounds[0]..bounds[1]].chunks(8) {
                        let mut word = [0u8; 8];
                        word[..chunk.len()].copy_from_slice(chunk);
                        halves += halves_of(u64::from_le_bytes(word));
                    }
                    runs.add_run(halves, bounds[0]);
                }
                assert_eq!(
                    runs.folded(),
                    whole.folded(),
                    "cut at {first} and {}",
                    first + second
                );
            }
        }
    }

    use super::*;

    fn full(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|&w| w as u32).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn incremental_matches_full_recomputation() {
        // A pseudo-random walk over many headers, each with one address and one word changed.
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..10_000 {
            let mut words: [u16; 10] = core::array::from_fn(|_| next() as u16);
            words[5] = 0;
            words[5] = full(&words);
            let old_addr = [words[6].to_be_bytes(), words[7].to_be_bytes()].concat();
            let new_addr = next().to_be_bytes();
            let old_word = words[2];
            let new_word = next() as u16;
            let update = ChecksumUpdate::new(words[5])
                .replace_4(old_addr.try_into().unwrap(), new_addr)
                .replace_u16(old_word, new_word);
            words[6] = u16::from_be_bytes([new_addr[0], new_addr[1]]);
            words[7] = u16::from_be_bytes([new_addr[2], new_addr[3]]);
            words[2] = new_word;
            let check = update.finish();
            words[5] = 0;
            let expected = full(&words);
            assert_eq!(check, expected);
        }
    }

    #[test]
    fn an_ipv6_address_replaced_by_its_sums_checks_as_recomputed() {
        let mut seed = 0x0bad_cafeu32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..1_000 {
            let mut words: [u16; 12] = core::array::from_fn(|_| next() as u16);
            words[0] = 0;
            words[0] = full(&words);
            let old: [u8; 16] = core::array::from_fn(|i| words[2 + i / 2].to_be_bytes()[i % 2]);
            let new: [u8; 16] = core::array::from_fn(|_| next() as u8);
            let sum = |bytes: &[u8; 16]| -> u32 {
                bytes
                    .chunks(2)
                    .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
                    .sum()
            };
            let check = ChecksumUpdate::new(words[0])
                .replace_sum(sum(&old), sum(&new))
                .finish();
            for i in 0..8 {
                words[2 + i] = u16::from_be_bytes([new[2 * i], new[2 * i + 1]]);
            }
            words[0] = 0;
            assert_eq!(check, full(&words));
        }
    }

    #[test]
    fn udp_zero_result_becomes_ffff() {
        // A sum of all ones computes to 0, which UDP must send as 0xffff.
        assert_eq!(ChecksumUpdate::new(0).finish(), 0);
        assert_eq!(ChecksumUpdate::new(0).finish_udp(), 0xffff);
        assert_eq!(ChecksumUpdate::new(0x1234).finish_udp(), 0x1234);
    }

    #[test]
    fn a_payload_summed_by_words_checks_as_summed_by_pairs() {
        let mut seed = 0x9e37_79b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in 0..300usize {
            let payload: std::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let (src, dst, ports) = ([192, 0, 2, 1], [10, 0, 0, 10], (5060, 5062));
            let udp_len = (8 + len) as u16;
            let mut sum = WordSum::new();
            for chunk in payload.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                sum.add(u64::from_le_bytes(word));
            }
            let check = udp_ipv4(src, dst, ports, udp_len, sum.folded());
            // The whole datagram with its pseudo-header, in 16-bit words, checksum field 0.
            let mut bytes = std::vec::Vec::new();
            bytes.extend_from_slice(&src);
            bytes.extend_from_slice(&dst);
            bytes.extend_from_slice(&[0, 17]);
            bytes.extend_from_slice(&udp_len.to_be_bytes());
            bytes.extend_from_slice(&ports.0.to_be_bytes());
            bytes.extend_from_slice(&ports.1.to_be_bytes());
            bytes.extend_from_slice(&udp_len.to_be_bytes());
            bytes.extend_from_slice(&[0, 0]);
            bytes.extend_from_slice(&payload);
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            let words: std::vec::Vec<u16> = bytes
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            let expected = match full(&words) {
                0 => 0xffff,
                c => c,
            };
            assert_eq!(check, expected, "{len} bytes");
        }
    }
}
