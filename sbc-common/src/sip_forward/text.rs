//! The few texts the forwarding writes, made a word at a time: decimal numbers and dotted
//! IPv4 addresses. Both are computed without a branch on the number's digits: the XDP program's verifier
//! follows each branch as a path of its own, and a branch per digit multiplies them.

/// 1 when `n` is at least `bound`, else 0, without a branch.
#[inline(always)]
const fn at_least(n: u32, bound: u32) -> usize {
    ((n as u64 + ((1u64 << 32) - bound as u64)) >> 32) as usize
}

/// The decimal digits of `n` (at most 99,999,999) as the bytes of a word, most significant
/// first, and how many there are: all eight digits made, then the leading zeros shifted out.
#[inline(always)]
pub const fn decimal(n: u32) -> (u64, usize) {
    let n = if n > 99_999_999 { 99_999_999 } else { n };
    let count = 1
        + at_least(n, 10)
        + at_least(n, 100)
        + at_least(n, 1_000)
        + at_least(n, 10_000)
        + at_least(n, 100_000)
        + at_least(n, 1_000_000)
        + at_least(n, 10_000_000);
    let mut word = 0u64;
    let mut rest = n;
    let mut i = 0;
    while i < 8 {
        word |= ((rest % 10) as u64 + b'0' as u64) << (8 * (7 - i));
        rest /= 10;
        i += 1;
    }
    (word >> (8 * (8 - count)), count)
}

/// `a.b.c.d` for an IPv4 address: its bytes as two words (little-endian, zeros after), and
/// its length (7 to 15).
#[inline(always)]
pub const fn dotted(octets: [u8; 4]) -> ([u64; 2], usize) {
    let (mut low, mut high) = (0u64, 0u64);
    let mut len = 0;
    let mut i = 0;
    while i < 4 {
        let n = octets[i] as u32;
        let count = 1 + at_least(n, 10) + at_least(n, 100);
        let digits = (b'0' as u64 + (n / 100) as u64)
            | (b'0' as u64 + (n / 10 % 10) as u64) << 8
            | (b'0' as u64 + (n % 10) as u64) << 16;
        let digits = digits >> (8 * (3 - count));
        // A dot before every octet but the first.
        let (text, text_len) = if i == 0 {
            (digits, count)
        } else {
            ((digits << 8) | b'.' as u64, count + 1)
        };
        // Appended at byte `len` of the pair of words, which may straddle them.
        let in_low = 0u64.wrapping_sub(((len >> 3) ^ 1) as u64);
        let shift = (8 * len) & 63;
        low |= (text << shift) & in_low;
        high |= ((text >> 1 >> (63 - shift)) & in_low) | ((text << shift) & !in_low);
        len += text_len;
        i += 1;
    }
    ([low, high], len)
}

#[cfg(test)]
mod tests {
    use std::{format, string::String, vec::Vec};

    use super::*;

    fn text(word: u64, len: usize) -> String {
        String::from_utf8(word.to_le_bytes()[..len].to_vec()).unwrap()
    }

    #[test]
    fn numbers_and_addresses_read_as_written() {
        for n in [0, 7, 10, 69, 255, 5060, 65535, 12_345_678, 99_999_999] {
            let (word, len) = decimal(n);
            assert_eq!(text(word, len), format!("{n}"));
        }
        for octets in [
            [0, 0, 0, 0],
            [192, 0, 2, 1],
            [255, 255, 255, 255],
            [10, 20, 100, 9],
        ] {
            let (words, len) = dotted(octets);
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let expected = core::net::Ipv4Addr::from(octets);
            assert_eq!(&bytes[..len], format!("{expected}").as_bytes());
            assert!(bytes[len..].iter().all(|&b| b == 0));
        }
    }
}
