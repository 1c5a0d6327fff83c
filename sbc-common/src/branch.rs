//! The branch of our Via on in-dialog requests, computed from the request itself as a
//! stateless proxy computes it (RFC 3261 16.11): a hash of the top Via value the request
//! arrived with and of the side it leaves on. The daemon and the XDP program forward the same
//! dialogs, so a request and its retransmissions get the same branch whichever of them sends
//! it, across restarts; and a response whose top Via has this prefix answers a request that
//! either of them may have forwarded.
use crate::words::{WordHasher, hash_bytes};

/// What every stateless branch starts with: the magic cookie, then a mark no transaction
/// branch of ours carries (those go on with hex digits).
pub const STATELESS_BRANCH_PREFIX: &[u8; 12] = b"z9hG4bK-sbc-";
/// Length of a stateless branch: the prefix and sixteen hex digits.
pub const STATELESS_BRANCH_LEN: usize = STATELESS_BRANCH_PREFIX.len() + 16;

/// The sides a request may leave on, as the dialog maps number them.
pub const SIDE_PUBLIC: u8 = 0;
pub const SIDE_PRIVATE: u8 = 1;

/// The hash seed for requests leaving on `out_side`: the same request sent both ways (a
/// spiral) must not carry one branch twice.
#[inline(always)]
pub const fn branch_seed(out_side: u8) -> u64 {
    0x5bc0_b7a2_c4e1_0000 | out_side as u64
}

/// A new hash of a top Via value, fed a word at a time (the XDP program's way).
#[inline(always)]
pub const fn branch_hasher(out_side: u8) -> WordHasher {
    WordHasher::new(branch_seed(out_side))
}

/// The hash of `top_via` (the first value of the request's first Via, trimmed, as received)
/// for a request leaving on `out_side`.
pub fn branch_hash(top_via: &[u8], out_side: u8) -> u64 {
    hash_bytes(top_via, branch_seed(out_side))
}

/// The branch for a hash: the prefix, then the hash in lower-case hex, most significant first.
#[inline(always)]
pub fn stateless_branch(hash: u64) -> [u8; STATELESS_BRANCH_LEN] {
    let mut branch = [0u8; STATELESS_BRANCH_LEN];
    branch[..STATELESS_BRANCH_PREFIX.len()].copy_from_slice(STATELESS_BRANCH_PREFIX);
    let (high, low) = hex_words(hash);
    branch[STATELESS_BRANCH_PREFIX.len()..][..8].copy_from_slice(&high.to_be_bytes());
    branch[STATELESS_BRANCH_PREFIX.len() + 8..].copy_from_slice(&low.to_be_bytes());
    branch
}

/// The sixteen lower-case hex digits of `value` as two words, most significant digit in the
/// most significant byte (so `to_be_bytes` writes them in reading order).
#[inline(always)]
pub const fn hex_words(value: u64) -> (u64, u64) {
    (hex_word((value >> 32) as u32), hex_word(value as u32))
}

/// Eight hex digits of `nibbles`, one per byte: every byte mapped at once, no table, no branch.
#[inline(always)]
const fn hex_word(nibbles: u32) -> u64 {
    let mut spread = 0u64;
    let mut i = 0;
    while i < 8 {
        spread |= ((nibbles as u64 >> (4 * i)) & 0xf) << (8 * i);
        i += 1;
    }
    let ones = 0x0101_0101_0101_0101_u64;
    // Adding 0x76 sets the high bit of the bytes of 10 and more: the letters.
    let letters = ((spread + ones * 0x76) >> 7) & ones;
    spread + ones * b'0' as u64 + letters * (b'a' - b'0' - 10) as u64
}

#[cfg(test)]
mod tests {
    use std::{format, string::String};

    use super::*;

    #[test]
    fn branches_are_the_prefix_and_the_hash_in_hex() {
        for hash in [0, 1, 0xa, 0xf0, 0x0123_4567_89ab_cdef, u64::MAX] {
            let branch = stateless_branch(hash);
            assert_eq!(
                String::from_utf8_lossy(&branch),
                format!("z9hG4bK-sbc-{hash:016x}")
            );
        }
    }

    #[test]
    fn one_via_gives_one_branch_per_side() {
        let via = b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport";
        assert_eq!(branch_hash(via, SIDE_PUBLIC), branch_hash(via, SIDE_PUBLIC));
        assert_ne!(
            branch_hash(via, SIDE_PUBLIC),
            branch_hash(via, SIDE_PRIVATE)
        );
        assert_ne!(
            branch_hash(via, SIDE_PUBLIC),
            branch_hash(
                b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhdt;rport",
                SIDE_PUBLIC
            )
        );
    }
}
