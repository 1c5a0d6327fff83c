//! The SIP guard: what the XDP program needs to drop floods before they reach the daemon, and
//! the decision it makes on each datagram (`decision::decide`, the daemon's userspace
//! dataplane runs the same one over its own tables; `script` is the table of cases both play).
//!
//! The INVITE limit here is a flood limit, twice the daemon's own per-source INVITE rate: a
//! source slightly over its limit still gets a 503 from the daemon for the excess, and a
//! source far over it (a botnet's member) costs the daemon no more than twice its share.
use crate::Reason;

mod decision;
mod listeners;
pub mod script;

pub use decision::{Decision, GuardTables, GuardedDatagram, decide};
pub use listeners::SipListeners;

/// A packet rate limit for one source: a token bucket refilled at `rate` packets per second,
/// holding at most `burst`. A rate of 0 means no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PacketLimit {
    pub rate: u32,
    pub burst: u32,
}

impl PacketLimit {
    pub const UNLIMITED: Self = Self { rate: 0, burst: 0 };

    pub const fn is_unlimited(&self) -> bool {
        self.rate == 0
    }
}

/// The kernel's limits of one source: every out-of-dialog datagram, and of those the INVITEs
/// that would start a call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceLimit {
    pub packets: PacketLimit,
    pub invites: PacketLimit,
}

impl SourceLimit {
    pub const UNLIMITED: Self = Self {
        packets: PacketLimit::UNLIMITED,
        invites: PacketLimit::UNLIMITED,
    };

    pub const fn is_unlimited(&self) -> bool {
        self.packets.is_unlimited() && self.invites.is_unlimited()
    }

    /// Drops within one second that earn a source a block, for a drop of this `verdict`:
    /// `block_after_drops` for the packet rate; for INVITEs, no more than half the kernel's
    /// INVITE rate (a source whose new calls overflow it so, sending at 1.5 times the
    /// kernel's rate and three times its own limit, is a flood whatever its packet rate).
    /// 0: never.
    #[inline(always)]
    pub const fn drops_to_block(&self, verdict: Reason, block_after_drops: u32) -> u32 {
        let invite_floods = if self.invites.rate > 1 {
            self.invites.rate / 2
        } else {
            1
        };
        if matches!(verdict, Reason::DropSipInviteRate)
            && block_after_drops > 0
            && invite_floods < block_after_drops
        {
            invite_floods
        } else {
            block_after_drops
        }
    }
}

/// Whether a datagram starting with these 8 bytes (little-endian) is an INVITE: the first
/// bytes of a request are its method, and the kernel needs no more to tell a call from
/// other SIP.
#[inline(always)]
pub const fn is_invite(head: u64) -> bool {
    const INVITE: u64 = u64::from_le_bytes(*b"INVITE \0");
    head & 0x00ff_ffff_ffff_ffff == INVITE
}

/// `is_invite` of a whole message, as the daemon holds it.
pub fn starts_an_invite(message: &[u8]) -> bool {
    message
        .first_chunk::<8>()
        .is_some_and(|head| is_invite(u64::from_le_bytes(*head)))
}

/// `GuardConfig::flags`: the guard is on (off, every SIP packet goes up unexamined).
pub const GUARD_ON: u32 = 1;

/// The one entry of the guard's configuration map, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GuardConfig {
    /// The limits of sources outside every allowlisted CIDR.
    pub default_limit: SourceLimit,
    /// Packets dropped over the limit within one second that earn the source a dynamic
    /// block; 0: never block for the rate alone.
    pub block_after_drops: u32,
    pub flags: u32,
    /// How long such a block lasts.
    pub block_ns: u64,
    /// Seeds the Call-ID hash, so dialog keys cannot be precomputed from outside.
    pub dialog_seed: u64,
}

/// `SourceRule::action`: the CIDR is allowlisted with the rule's own limit.
pub const RULE_ALLOW: u32 = 1;
/// `SourceRule::action`: the CIDR is blocklisted.
pub const RULE_BLOCK: u32 = 2;

/// Value of the source rules (an LPM trie keyed by prefix length and `IpAddress` octets; IPv4
/// prefixes are IPv4-mapped, so a /24 is stored as a /120). The longest prefix wins, so an
/// allowlisted host inside a blocklisted range is allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceRule {
    pub action: u32,
    pub limit: SourceLimit,
}

/// Why a source is blocked (`Block::reason`).
pub const BLOCK_RATE: u32 = 1;
/// It sent a scanner's User-Agent.
pub const BLOCK_SCANNER: u32 = 2;
/// Its requests kept being refused by the daemon's admission limits.
pub const BLOCK_ABUSE: u32 = 3;
/// An operator blocked it.
pub const BLOCK_MANUAL: u32 = 4;

/// Value of the dynamic blocks map, keyed by source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Block {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at which the block ends; `u64::MAX`: never.
    pub until_ns: u64,
    /// Packets dropped by this block.
    pub dropped: u64,
    pub reason: u32,
    /// 1 while the source is the caller of a call we hold that acknowledged its answer (see
    /// `GuardTables::is_party`): that call's datagrams pass the block. Kept here by whoever
    /// writes a block or changes a party, so that a blocked source costs one lookup.
    pub party: u32,
}

impl Block {
    pub const fn is_active(&self, now_ns: u64) -> bool {
        self.until_ns > now_ns
    }
}

const NS_PER_SEC: u64 = 1_000_000_000;
/// A bucket never refills for more than this long at once, so `elapsed * rate` cannot
/// overflow (rates are capped far below `u64::MAX / MAX_REFILL_NS`).
const MAX_REFILL_NS: u64 = 60 * NS_PER_SEC;

/// A token bucket refilled at a `PacketLimit`'s rate up to its burst. Tokens are kept in
/// billionths so a refill of any duration adds exactly `elapsed_ns * rate` of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TokenBucket {
    pub nanotokens: u64,
    pub refilled_ns: u64,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub const fn full(limit: &PacketLimit, now_ns: u64) -> Self {
        Self {
            nanotokens: limit.burst as u64 * NS_PER_SEC,
            refilled_ns: now_ns,
        }
    }

    /// Takes one token: true if there was one. No limit (rate 0) always has one.
    #[inline(always)]
    pub fn take(&mut self, limit: &PacketLimit, now_ns: u64) -> bool {
        if limit.is_unlimited() {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        let elapsed = if elapsed > MAX_REFILL_NS {
            MAX_REFILL_NS
        } else {
            elapsed
        };
        let capacity = limit.burst as u64 * NS_PER_SEC;
        let refilled = self.nanotokens + elapsed * limit.rate as u64;
        self.nanotokens = if refilled > capacity {
            capacity
        } else {
            refilled
        };
        self.refilled_ns = now_ns;
        if self.nanotokens >= NS_PER_SEC {
            self.nanotokens -= NS_PER_SEC;
            true
        } else {
            false
        }
    }
}

/// Value of the per-source buckets map (an LRU hash keyed by source address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceBucket {
    pub packets: TokenBucket,
    pub invites: TokenBucket,
    /// Start of the one-second window that `window_drops` counts in.
    pub window_ns: u64,
    pub window_drops: u32,
    pub _pad: u32,
    pub passed: u64,
    pub dropped: u64,
}

impl SourceBucket {
    /// Buckets that start full.
    pub const fn full(limit: &SourceLimit, now_ns: u64) -> Self {
        Self {
            packets: TokenBucket::full(&limit.packets, now_ns),
            invites: TokenBucket::full(&limit.invites, now_ns),
            window_ns: now_ns,
            window_drops: 0,
            _pad: 0,
            passed: 0,
            dropped: 0,
        }
    }

    /// The verdict on one out-of-dialog datagram from this source (`invite`: it is an
    /// INVITE, see `is_invite`): `PassSip`, or the limit it is over. Counts the outcome.
    #[inline(always)]
    pub fn admit(&mut self, limit: &SourceLimit, invite: bool, now_ns: u64) -> Reason {
        let verdict = if !self.packets.take(&limit.packets, now_ns) {
            Reason::DropSipRateLimited
        } else if invite && !self.invites.take(&limit.invites, now_ns) {
            Reason::DropSipInviteRate
        } else {
            Reason::PassSip
        };
        if matches!(verdict, Reason::PassSip) {
            self.passed += 1;
        } else {
            self.dropped += 1;
        }
        verdict
    }

    /// Records a datagram dropped over a limit: true when the source has now dropped
    /// `threshold` datagrams within one second (it earns a block, and the count starts over).
    #[inline(always)]
    pub fn strike(&mut self, threshold: u32, now_ns: u64) -> bool {
        if threshold == 0 {
            return false;
        }
        if now_ns.saturating_sub(self.window_ns) >= NS_PER_SEC {
            self.window_ns = now_ns;
            self.window_drops = 0;
        }
        self.window_drops += 1;
        if self.window_drops >= threshold {
            self.window_drops = 0;
            true
        } else {
            false
        }
    }
}

const _: () = assert!(core::mem::size_of::<PacketLimit>() == 8);
const _: () = assert!(core::mem::size_of::<SourceLimit>() == 16);
const _: () = assert!(core::mem::size_of::<TokenBucket>() == 16);
const _: () = assert!(core::mem::size_of::<GuardConfig>() == 40);
const _: () = assert!(core::mem::size_of::<SourceRule>() == 20);
const _: () = assert!(core::mem::size_of::<Block>() == 24);
const _: () = assert!(core::mem::size_of::<SourceBucket>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `repr(C)`, has no padding (explicit `_pad` fields) and holds only
    // integers, so every bit pattern is valid.
    unsafe impl aya::Pod for super::PacketLimit {}
    unsafe impl aya::Pod for super::SourceLimit {}
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::SourceRule {}
    unsafe impl aya::Pod for super::Block {}
    unsafe impl aya::Pod for super::SourceBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NS_PER_SEC;

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let limit = PacketLimit { rate: 10, burst: 5 };
        let mut bucket = TokenBucket::full(&limit, SEC);
        let passed = (0..20).filter(|_| bucket.take(&limit, SEC)).count();
        assert_eq!(passed, 5, "the burst, then nothing at the same instant");
        // 10 per second: one token every 100 ms.
        assert!(!bucket.take(&limit, SEC + 99_000_000));
        assert!(bucket.take(&limit, SEC + 100_000_000));
        assert!(!bucket.take(&limit, SEC + 100_000_001));
        // A long silence refills only up to the burst.
        let later = SEC * 3600;
        assert_eq!((0..20).filter(|_| bucket.take(&limit, later)).count(), 5);
        let mut unlimited = TokenBucket::default();
        assert!((0..1000).all(|_| unlimited.take(&PacketLimit::UNLIMITED, SEC)));
    }

    #[test]
    fn a_clock_going_backwards_takes_nothing_and_adds_nothing() {
        let limit = PacketLimit { rate: 1, burst: 1 };
        let mut bucket = TokenBucket::full(&limit, 10 * SEC);
        assert!(bucket.take(&limit, 10 * SEC));
        assert!(!bucket.take(&limit, 5 * SEC));
    }

    #[test]
    fn invites_take_a_token_of_their_own_after_the_packet_token() {
        let limit = SourceLimit {
            packets: PacketLimit { rate: 1, burst: 4 },
            invites: PacketLimit { rate: 1, burst: 2 },
        };
        let mut source = SourceBucket::full(&limit, SEC);
        let verdicts =
            [true, true, true, false, false].map(|invite| source.admit(&limit, invite, SEC));
        assert_eq!(
            verdicts,
            [
                Reason::PassSip,
                Reason::PassSip,
                Reason::DropSipInviteRate,
                Reason::PassSip,
                Reason::DropSipRateLimited,
            ],
            "two INVITEs, then only other requests, each taking a packet token"
        );
        assert_eq!((source.passed, source.dropped), (3, 2));
        // Other requests do not spend the INVITE tokens.
        let later = 2 * SEC;
        assert_eq!(source.admit(&limit, true, later), Reason::PassSip);
        let open = SourceLimit {
            invites: PacketLimit::UNLIMITED,
            ..limit
        };
        assert_eq!(
            source.admit(&open, true, 3 * SEC),
            Reason::PassSip,
            "no INVITE limit"
        );
    }

    #[test]
    fn invite_floods_are_blocked_sooner_than_packet_floods() {
        let limit = SourceLimit {
            packets: PacketLimit {
                rate: 200,
                burst: 400,
            },
            invites: PacketLimit {
                rate: 50,
                burst: 90,
            },
        };
        assert_eq!(limit.drops_to_block(Reason::DropSipInviteRate, 2000), 25);
        assert_eq!(limit.drops_to_block(Reason::DropSipRateLimited, 2000), 2000);
        assert_eq!(
            limit.drops_to_block(Reason::DropSipInviteRate, 0),
            0,
            "never"
        );
        assert_eq!(limit.drops_to_block(Reason::DropSipInviteRate, 20), 20);
    }

    #[test]
    fn only_an_invite_is_an_invite() {
        let head = |bytes: &[u8]| u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert!(is_invite(head(b"INVITE sip:a@b SIP/2.0")));
        for other in [
            &b"INVITEX sip:a@b"[..],
            b"invite sip:a@b SIP",
            b"SIP/2.0 200 OK\r\n",
            b"OPTIONS sip:a@b",
            b" INVITE sip:a@b",
        ] {
            assert!(!is_invite(head(other)), "{other:?}");
        }
    }

    #[test]
    fn strikes_within_one_second_earn_a_block() {
        let mut bucket = SourceBucket::default();
        assert!(!bucket.strike(0, 0), "0: never");
        assert!(!bucket.strike(3, SEC));
        assert!(!bucket.strike(3, SEC + 1));
        // A new window starts over.
        assert!(!bucket.strike(3, 2 * SEC + 2));
        assert!(!bucket.strike(3, 2 * SEC + 3));
        assert!(bucket.strike(3, 2 * SEC + 4));
        assert!(
            !bucket.strike(3, 2 * SEC + 5),
            "counting starts over after a block"
        );
    }
}
