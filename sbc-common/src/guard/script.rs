//! One table of guard cases for every implementation of its tables: the host's own test, the
//! daemon's userspace dataplane and the XDP program each play it from a fresh state and must
//! reach the same verdicts. The steps run in order within far less than a second, at rates of
//! one token per second, so the clock does not change the outcome.
use super::{GUARD_ON, GuardConfig, PacketLimit, RULE_ALLOW, RULE_BLOCK, SourceLimit};
use crate::Reason;

/// Sources by what the script makes of them.
pub const STRANGER: [u8; 4] = [203, 0, 113, 7];
pub const FLOODER: [u8; 4] = [203, 0, 113, 8];
pub const BLOCKLISTED: [u8; 4] = [198, 51, 100, 9];
pub const TRUNK: [u8; 4] = [192, 0, 2, 10];
pub const BACKEND: [u8; 4] = [10, 0, 0, 20];

/// The CIDR rules: (address, prefix length of IPv4, action, limit).
pub const RULES: &[([u8; 4], u8, u32, SourceLimit)] = &[
    ([198, 51, 100, 0], 24, RULE_BLOCK, SourceLimit::UNLIMITED),
    ([192, 0, 2, 0], 24, RULE_ALLOW, TRUNK_LIMIT),
    ([10, 0, 0, 20], 32, RULE_ALLOW, SourceLimit::UNLIMITED),
];

/// Everyone else: 4 datagrams, 2 of them INVITEs, then one per second; 3 drops in a second
/// earn a block (INVITE drops block at half the INVITE rate, at once here).
pub const DEFAULT_LIMIT: SourceLimit = SourceLimit {
    packets: PacketLimit { rate: 1, burst: 4 },
    invites: PacketLimit { rate: 1, burst: 2 },
};
const TRUNK_LIMIT: SourceLimit = SourceLimit {
    packets: PacketLimit { rate: 1, burst: 2 },
    invites: PacketLimit::UNLIMITED,
};

/// The guard's configuration for the script (its dialog seed is the player's).
pub const fn config(dialog_seed: u64) -> GuardConfig {
    GuardConfig {
        default_limit: DEFAULT_LIMIT,
        block_after_drops: 3,
        flags: GUARD_ON,
        block_ns: 3_600_000_000_000,
        dialog_seed,
    }
}

/// The Call-ID of the one call the proxy holds.
pub const KNOWN_CALL_ID: &str = "known-call@192.0.2.10";
/// Its caller (a party: blocked, it keeps the call's signalling).
pub const KNOWN_CALLER: [u8; 4] = STRANGER;

/// One datagram and what the guard must make of it.
pub struct Step {
    pub what: &'static str,
    pub source: [u8; 4],
    pub payload: &'static [u8],
    pub pass: bool,
    pub reason: Reason,
}

const INVITE: &[u8] = b"INVITE sip:a@192.0.2.1 SIP/2.0\r\nCall-ID: new-call@203.0.113.7\r\n\r\n";
const OPTIONS: &[u8] = b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nCall-ID: opt@203.0.113.7\r\n\r\n";
const IN_DIALOG: &[u8] = b"BYE sip:a@192.0.2.1 SIP/2.0\r\ni: known-call@192.0.2.10\r\n\r\n";
const RE_INVITE: &[u8] =
    b"INVITE sip:a@192.0.2.1 SIP/2.0\r\nCall-ID: known-call@192.0.2.10\r\n\r\n";

const fn step(
    what: &'static str,
    source: [u8; 4],
    payload: &'static [u8],
    pass: bool,
    reason: Reason,
) -> Step {
    Step {
        what,
        source,
        payload,
        pass,
        reason,
    }
}

pub const STEPS: &[Step] = &[
    step(
        "blocklisted CIDR",
        BLOCKLISTED,
        OPTIONS,
        false,
        Reason::DropSipBlocklisted,
    ),
    step(
        "backend, no limit",
        BACKEND,
        INVITE,
        true,
        Reason::PassSipUnlimited,
    ),
    step("first INVITE", STRANGER, INVITE, true, Reason::PassSip),
    step("second INVITE", STRANGER, INVITE, true, Reason::PassSip),
    step(
        "other request, packet token",
        STRANGER,
        OPTIONS,
        true,
        Reason::PassSip,
    ),
    step(
        "known dialog, compact form",
        STRANGER,
        IN_DIALOG,
        true,
        Reason::PassSipDialog,
    ),
    step(
        "re-INVITE of a known dialog",
        STRANGER,
        RE_INVITE,
        true,
        Reason::PassSipDialog,
    ),
    step(
        "INVITE over its rate blocks",
        STRANGER,
        INVITE,
        false,
        Reason::DropSipInviteRate,
    ),
    step("blocked", STRANGER, OPTIONS, false, Reason::DropSipBlocked),
    step(
        "blocked source, known dialog",
        STRANGER,
        IN_DIALOG,
        true,
        Reason::PassSipDialog,
    ),
    step("flooder: burst", FLOODER, OPTIONS, true, Reason::PassSip),
    step("flooder: burst", FLOODER, OPTIONS, true, Reason::PassSip),
    step("flooder: burst", FLOODER, OPTIONS, true, Reason::PassSip),
    step("flooder: burst", FLOODER, OPTIONS, true, Reason::PassSip),
    step(
        "flooder: drop 1",
        FLOODER,
        OPTIONS,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "flooder: drop 2",
        FLOODER,
        OPTIONS,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "flooder: drop 3 blocks",
        FLOODER,
        OPTIONS,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "flooder: blocked",
        FLOODER,
        OPTIONS,
        false,
        Reason::DropSipBlocked,
    ),
    step(
        "flooder: blocked, not a caller of the dialog it names",
        FLOODER,
        IN_DIALOG,
        false,
        Reason::DropSipBlocked,
    ),
    step("trunk: burst", TRUNK, INVITE, true, Reason::PassSip),
    step("trunk: burst", TRUNK, INVITE, true, Reason::PassSip),
    step(
        "trunk: over its limit",
        TRUNK,
        INVITE,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "trunk: over its limit",
        TRUNK,
        INVITE,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "trunk: never blocked",
        TRUNK,
        INVITE,
        false,
        Reason::DropSipRateLimited,
    ),
    step(
        "trunk: known dialog",
        TRUNK,
        IN_DIALOG,
        true,
        Reason::PassSipDialog,
    ),
];
