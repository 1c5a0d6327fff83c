//! The guard's decision on one UDP SIP datagram to a listener, written once: the XDP program
//! runs it over its BPF maps, the daemon's userspace dataplane over its own tables, so the
//! slow path decides exactly as the fast path does.
//!
//! In this order:
//! 1. with the guard off, everything goes up (`PassSipUnguarded`);
//! 2. a source under a dynamic block is dropped, before anything else is looked up or read,
//!    unless it is the caller of a call we hold that acknowledged its answer (the block says
//!    so; then that call's datagrams pass, nothing else): a flood from a blocked source costs
//!    one lookup. A block applies as found:
//!    behaviour never blocks an allowlisted source (the kernel blocks none, the daemon refuses
//!    to, and a reload that allowlists a source lifts what its behaviour earned), so a block
//!    that names one is an operator's;
//! 3. a source in a blocklisted CIDR is dropped; an allowlisted CIDR's sources are held to its
//!    rule's limit, everyone else to the default one; a source without a limit goes up
//!    (`PassSipUnlimited`: backends, unlimited trunks) before anything is read of its datagram;
//! 4. a known dialog (its seeded Call-ID hash is in the dialogs table) goes up, never limited;
//! 5. the source's buckets: every datagram takes a packet token, an INVITE (which would start
//!    a call: its dialog is unknown) an INVITE token too; without one it is dropped, and a
//!    source that keeps exceeding its limits earns a dynamic block (never an allowlisted one).
use super::{BLOCK_RATE, GUARD_ON, GuardConfig, RULE_ALLOW, RULE_BLOCK, SourceBucket, SourceRule};
use crate::{Block, IpAddress, Reason, SourceLimit};

/// The tables the guard decides from.
pub trait GuardTables {
    /// The rule of the longest listed prefix that holds `source`.
    fn rule(&self, source: &IpAddress) -> Option<SourceRule>;
    /// Whether `dialog` (a seeded Call-ID hash) is a call the proxy holds; where the table
    /// keeps counts, it counts the datagram against the dialog.
    fn knows_dialog(&mut self, dialog: u64) -> bool;
    /// Whether `source` is the caller of a call the proxy holds, and acknowledged its answer:
    /// asked when a block is set (the block carries the answer, `Block::party`).
    fn is_party(&self, source: &IpAddress) -> bool;
    /// The source's dynamic block, active or expired, if it has one.
    fn block(&mut self, source: &IpAddress) -> Option<&mut Block>;
    fn set_block(&mut self, source: &IpAddress, block: Block);
    /// The source's buckets, created full for `limit` when it has none; `None`: no room for
    /// them (the datagram is not the one to pay for that, and goes up).
    fn bucket(
        &mut self,
        source: &IpAddress,
        limit: &SourceLimit,
        now_ns: u64,
    ) -> Option<&mut SourceBucket>;
}

/// What the guard reads of a datagram, only once its source is found to be limited: the
/// reading (a copy, a scan) is the costly part.
pub trait GuardedDatagram {
    /// Whether it is an INVITE (see `is_invite`).
    fn is_invite(&self) -> bool;
    /// The seeded hash of its Call-ID, if it has one the guard can find.
    fn call_id_hash(&self, seed: u64) -> Option<u64>;
}

/// A datagram the guard could not read (empty, or its copy failed): it is limited as any.
impl<D: GuardedDatagram> GuardedDatagram for Option<D> {
    #[inline(always)]
    fn is_invite(&self) -> bool {
        self.as_ref().is_some_and(D::is_invite)
    }

    #[inline(always)]
    fn call_id_hash(&self, seed: u64) -> Option<u64> {
        self.as_ref()
            .and_then(|datagram| datagram.call_id_hash(seed))
    }
}

/// The guard's verdict: whether the datagram goes up, and why (the counted reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub pass: bool,
    pub reason: Reason,
}

impl Decision {
    const fn pass(reason: Reason) -> Self {
        Self { pass: true, reason }
    }

    const fn drop(reason: Reason) -> Self {
        Self {
            pass: false,
            reason,
        }
    }
}

/// Decides on one datagram from `source` (see the module's order). `read` gives the datagram
/// and `now` the monotonic clock, each asked only when the decision needs it.
#[inline(always)]
pub fn decide<T: GuardTables, D: GuardedDatagram>(
    config: &GuardConfig,
    tables: &mut T,
    source: &IpAddress,
    read: impl FnOnce() -> D,
    now: impl FnOnce() -> u64,
) -> Decision {
    if config.flags & GUARD_ON == 0 {
        return Decision::pass(Reason::PassSipUnguarded);
    }
    let now = now();
    // Blocks and buckets hold a source as `source_key` (an IPv6 source's /64); its rule and
    // whether it is a party go by its own address.
    let limited = source.source_key();
    // Counted as dropped at once: that keeps a flood at one lookup of the block; the rare
    // datagram of a blocked caller's call that passes takes its count back.
    let blocked = match tables.block(&limited) {
        Some(block) if block.is_active(now) => {
            block.dropped += 1;
            Some(block.party != 0)
        }
        _ => None,
    };
    if let Some(party) = blocked {
        // Only a caller of a call we hold gets anything through: that call's datagrams.
        if party && knows_dialog(config, tables, &read()) {
            if let Some(block) = tables.block(&limited) {
                block.dropped = block.dropped.saturating_sub(1);
            }
            return Decision::pass(Reason::PassSipDialog);
        }
        return Decision::drop(Reason::DropSipBlocked);
    }

    let (limit, allowlisted) = match tables.rule(source) {
        Some(rule) if rule.action == RULE_BLOCK => {
            return Decision::drop(Reason::DropSipBlocklisted);
        }
        Some(rule) if rule.action == RULE_ALLOW => (rule.limit, true),
        _ => (config.default_limit, false),
    };
    if limit.is_unlimited() {
        return Decision::pass(Reason::PassSipUnlimited);
    }

    let datagram = read();
    if knows_dialog(config, tables, &datagram) {
        return Decision::pass(Reason::PassSipDialog);
    }

    let Some(bucket) = tables.bucket(&limited, &limit, now) else {
        return Decision::pass(Reason::PassSip);
    };
    let verdict = bucket.admit(&limit, datagram.is_invite(), now);
    if matches!(verdict, Reason::PassSip) {
        return Decision::pass(verdict);
    }
    let threshold = limit.drops_to_block(verdict, config.block_after_drops);
    if !allowlisted && bucket.strike(threshold, now) {
        let block = Block {
            until_ns: now.saturating_add(config.block_ns),
            dropped: 0,
            reason: BLOCK_RATE,
            party: 0,
        };
        tables.set_block(&limited, block);
        // Asked after the block is in: a party the daemon records meanwhile finds the block
        // and marks it, one it recorded before is found here.
        if tables.is_party(source)
            && let Some(block) = tables.block(&limited)
        {
            block.party = 1;
        }
    }
    Decision::drop(verdict)
}

/// Whether the datagram's Call-ID is that of a call the proxy holds.
#[inline(always)]
fn knows_dialog<T: GuardTables, D: GuardedDatagram>(
    config: &GuardConfig,
    tables: &mut T,
    datagram: &D,
) -> bool {
    datagram
        .call_id_hash(config.dialog_seed)
        .is_some_and(|dialog| tables.knows_dialog(dialog))
}

/// A whole datagram, as the daemon holds it (the XDP program reads a copy of its first bytes).
impl GuardedDatagram for &[u8] {
    fn is_invite(&self) -> bool {
        super::starts_an_invite(self)
    }

    fn call_id_hash(&self, seed: u64) -> Option<u64> {
        crate::call_id::find_call_id_hash(self, seed)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, vec, vec::Vec};

    use super::{super::script, *};

    /// The guard's tables as plain maps; rules matched longest prefix first.
    #[derive(Default)]
    struct Tables {
        rules: Vec<(u32, u8, SourceRule)>,
        dialogs: HashMap<u64, u64>,
        parties: Vec<IpAddress>,
        blocks: HashMap<IpAddress, Block>,
        buckets: HashMap<IpAddress, SourceBucket>,
    }

    impl GuardTables for Tables {
        fn rule(&self, source: &IpAddress) -> Option<SourceRule> {
            let address = u32::from_be_bytes(source.ipv4()?);
            self.rules
                .iter()
                .filter(|(net, prefix, _)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    address & mask == *net & mask
                })
                .max_by_key(|(_, prefix, _)| *prefix)
                .map(|(_, _, rule)| *rule)
        }

        fn knows_dialog(&mut self, dialog: u64) -> bool {
            self.dialogs
                .get_mut(&dialog)
                .map(|packets| *packets += 1)
                .is_some()
        }

        fn is_party(&self, source: &IpAddress) -> bool {
            self.parties.contains(source)
        }

        fn block(&mut self, source: &IpAddress) -> Option<&mut Block> {
            self.blocks.get_mut(source)
        }

        fn set_block(&mut self, source: &IpAddress, block: Block) {
            self.blocks.insert(*source, block);
        }

        fn bucket(
            &mut self,
            source: &IpAddress,
            limit: &SourceLimit,
            now_ns: u64,
        ) -> Option<&mut SourceBucket> {
            Some(
                self.buckets
                    .entry(*source)
                    .or_insert_with(|| SourceBucket::full(limit, now_ns)),
            )
        }
    }

    const SEED: u64 = 0x5eed;

    fn scripted_tables() -> Tables {
        let rules = script::RULES
            .iter()
            .map(|(net, prefix, action, limit)| {
                let rule = SourceRule {
                    action: *action,
                    limit: *limit,
                };
                (u32::from_be_bytes(*net), *prefix, rule)
            })
            .collect();
        let known = crate::call_id::call_id_hash(script::KNOWN_CALL_ID.as_bytes(), SEED);
        Tables {
            rules,
            dialogs: HashMap::from([(known, 0)]),
            parties: vec![IpAddress::from_ipv4(script::KNOWN_CALLER)],
            ..Tables::default()
        }
    }

    #[test]
    fn the_script_plays_out_over_plain_tables() {
        let config = script::config(SEED);
        let mut tables = scripted_tables();
        for (n, step) in script::STEPS.iter().enumerate() {
            let source = IpAddress::from_ipv4(step.source);
            let decision = decide(&config, &mut tables, &source, || step.payload, || 1_000);
            assert_eq!(
                decision,
                Decision {
                    pass: step.pass,
                    reason: step.reason
                },
                "step {n}: {}",
                step.what
            );
        }
        let flooder = IpAddress::from_ipv4(script::FLOODER);
        assert_eq!(tables.blocks[&flooder].dropped, 2, "what the block dropped");
        assert_eq!(tables.blocks[&flooder].reason, BLOCK_RATE);
        let trunk = IpAddress::from_ipv4(script::TRUNK);
        assert!(!tables.blocks.contains_key(&trunk), "allowlisted");
        assert_eq!(tables.dialogs.values().sum::<u64>(), 4, "dialog packets");
    }

    #[test]
    fn an_ipv6_host_is_one_source_whatever_address_of_its_64_it_sends_from() {
        let config = script::config(SEED);
        let mut tables = scripted_tables();
        let options: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\n\r\n";
        let from = |address: &str| IpAddress::from(address.parse::<core::net::IpAddr>().unwrap());
        let mut send = |address: &str| {
            decide(&config, &mut tables, &from(address), || options, || 1_000).reason
        };
        let burst = script::config(SEED).default_limit.packets.burst;
        for host in 0..burst {
            let address = std::format!("2001:db8:66:1::{:x}", host + 1);
            assert_eq!(send(&address), Reason::PassSip, "{address}");
        }
        assert_eq!(
            send("2001:db8:66:1:ffff::9"),
            Reason::DropSipRateLimited,
            "another address of the same /64 takes from the same bucket"
        );
        assert_eq!(send("2001:db8:66:2::1"), Reason::PassSip, "another /64");
        assert_eq!(tables.buckets.len(), 2);
    }

    #[test]
    fn an_expired_block_lets_the_source_take_tokens_again() {
        let config = script::config(SEED);
        let mut tables = scripted_tables();
        let source = IpAddress::from_ipv4(script::STRANGER);
        let options: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\n\r\n";
        tables.set_block(
            &source,
            Block {
                until_ns: 2_000,
                ..Block::default()
            },
        );
        let at = |tables: &mut Tables, now: u64| {
            decide(&config, tables, &source, || options, || now).reason
        };
        assert_eq!(at(&mut tables, 1_999), Reason::DropSipBlocked);
        assert_eq!(at(&mut tables, 2_000), Reason::PassSip);
    }

    #[test]
    fn nothing_is_read_of_a_blocked_source_that_is_no_caller() {
        let unread = || -> &[u8] { panic!("the datagram was read") };
        let mut tables = scripted_tables();
        let flooder = IpAddress::from_ipv4(script::FLOODER);
        tables.set_block(
            &flooder,
            Block {
                until_ns: 2_000,
                ..Block::default()
            },
        );
        let config = script::config(SEED);
        let decision = decide(&config, &mut tables, &flooder, unread, || 1_000);
        assert_eq!(decision, Decision::drop(Reason::DropSipBlocked));
        assert_eq!(tables.blocks[&flooder].dropped, 1);
    }

    #[test]
    fn a_block_applies_without_limits_and_a_callers_call_takes_its_count_back() {
        let mut tables = scripted_tables();
        let config = GuardConfig {
            default_limit: SourceLimit::UNLIMITED,
            ..script::config(SEED)
        };
        let caller = IpAddress::from_ipv4(script::KNOWN_CALLER);
        tables.set_block(
            &caller,
            Block {
                until_ns: u64::MAX,
                party: 1,
                ..Block::default()
            },
        );
        let bye: &[u8] = b"BYE sip:a@b SIP/2.0\r\nCall-ID: known-call@192.0.2.10\r\n\r\n";
        let options: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: other@b\r\n\r\n";
        let decision = decide(&config, &mut tables, &caller, || bye, || 1_000);
        assert_eq!(decision, Decision::pass(Reason::PassSipDialog));
        let decision = decide(&config, &mut tables, &caller, || options, || 1_000);
        assert_eq!(
            decision,
            Decision::drop(Reason::DropSipBlocked),
            "a block holds even where no limit does"
        );
        assert_eq!(tables.blocks[&caller].dropped, 1, "only what it dropped");
    }

    #[test]
    fn nothing_is_read_of_an_unguarded_or_unlimited_datagram() {
        let unread = || -> &[u8] { panic!("the datagram was read") };
        let mut tables = scripted_tables();
        let off = GuardConfig {
            flags: 0,
            ..script::config(SEED)
        };
        let stranger = IpAddress::from_ipv4(script::STRANGER);
        let decision = decide(&off, &mut tables, &stranger, unread, || 0);
        assert_eq!(decision, Decision::pass(Reason::PassSipUnguarded));
        let backend = IpAddress::from_ipv4(script::BACKEND);
        let decision = decide(&script::config(SEED), &mut tables, &backend, unread, || 0);
        assert_eq!(decision, Decision::pass(Reason::PassSipUnlimited));
    }

    #[test]
    fn an_unreadable_datagram_is_limited_as_any() {
        let mut tables = scripted_tables();
        let stranger = IpAddress::from_ipv4(script::STRANGER);
        let config = script::config(SEED);
        let passed = (0..6)
            .filter(|_| decide(&config, &mut tables, &stranger, || None::<&[u8]>, || 0).pass)
            .count();
        assert_eq!(passed, 4, "the packet burst, no dialog, no INVITE token");
    }
}
