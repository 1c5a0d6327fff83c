//! The SIP guard as the daemon holds it: it programs the XDP program's maps, or, with the
//! userspace dataplane, makes the same decisions itself on each datagram before the proxy
//! sees it (invariant: the slow path behaves as the fast path, only slower).
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use ipnet::IpNet;
use sbc_common::{
    Block, DialogEnd, GuardConfig, IpAddress, Reason, SipSelves, SourceBucket, SourceLimit,
    SourceRule,
    call_id::{call_id_hash, find_call_id_hash as scan_call_id},
    guard::{
        BLOCK_ABUSE, BLOCK_MANUAL, BLOCK_RATE, BLOCK_SCANNER, GUARD_ON, GuardTables, RULE_ALLOW,
        RULE_BLOCK, decide,
    },
};
use serde::Serialize;

use super::{
    config::{AdmissionConfig, SourceLimits},
    rate::limit,
};
use crate::{
    clock::monotonic_ns,
    dataplane::{DialogEvents, GuardMaps},
    proxy::core::{KernelDialogs, forwarding::Forwarding},
};

/// Why a source is blocked, as operators read it.
pub fn block_reason_name(reason: u32) -> &'static str {
    match reason {
        BLOCK_RATE => "packet_rate",
        BLOCK_SCANNER => "scanner",
        BLOCK_ABUSE => "refusals",
        BLOCK_MANUAL => "manual",
        _ => "unknown",
    }
}

/// Why a block was not put in place.
#[derive(Debug)]
pub enum BlockRefused {
    /// The source is allowlisted (a trunk or a backend), which its behaviour never blocks.
    Allowlisted(IpAddr),
    /// The blocks map could not be written.
    Failed(anyhow::Error),
}

impl std::fmt::Display for BlockRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allowlisted(source) => write!(
                f,
                "{source} is allowlisted: only an operator blocks it, never its behaviour"
            ),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BlockRefused {}

/// A dynamic block, as `GET /v1/blocks` and `sbc blocks` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BlockInfo {
    pub address: IpAddr,
    pub reason: String,
    /// Seconds until it ends; `None`: until removed.
    pub remaining_secs: Option<u64>,
    /// Datagrams dropped because of it.
    pub dropped: u64,
}

/// Where the guard's state lives.
enum Tables {
    Kernel(Box<GuardMaps>),
    /// The userspace dataplane's copy of what the kernel maps would hold (its dialogs are
    /// `State::dialogs`).
    Userspace {
        blocks: HashMap<IpAddress, Block>,
        buckets: HashMap<IpAddress, SourceBucket>,
        /// Verdicts by reason, as the kernel counts them in SBC_REASONS.
        reasons: Vec<u64>,
    },
}

struct State {
    tables: Tables,
    config: GuardConfig,
    /// The CIDR rules, longest prefix first (the userspace lookup takes the first match).
    rules: Vec<(IpNet, SourceRule)>,
    /// The dialogs by id (the seeded Call-ID hash): a dialog entry goes when its last call
    /// does.
    dialogs: HashMap<u64, HeldDialog>,
    /// Calls per caller address: a blocked source that is one keeps its calls' signalling.
    parties: HashMap<IpAddress, usize>,
    /// Dialogs the kernel saw end while no daemon ran (its map is rebuilt at start).
    ended_while_away: Vec<(u64, DialogEnd)>,
    /// Backends DNS found (`trust_backends`), allowlisted without limits as the configured
    /// ones are, through every reconfiguration.
    found_backends: Vec<IpAddr>,
}

pub struct SipGuard {
    state: Mutex<State>,
    /// The kernel decides (XDP): `admit` has nothing to do, and takes no lock to know it.
    in_kernel: bool,
    /// The kernel's reports of dialogs it saw end, for the proxy to watch.
    dialog_ends: Mutex<Option<DialogEvents>>,
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: `seed` is a valid, writable buffer of its length.
    let filled = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if filled == 8 {
        u64::from_ne_bytes(seed)
    } else {
        // Only unpredictability suffers, never correctness.
        monotonic_ns() ^ u64::from(std::process::id()).rotate_left(32)
    }
}

/// INVITEs per second (and at once) the kernel lets a source send beyond twice its limit:
/// with a limit of a few per second, a caller that missed our 503 still gets its
/// retransmissions answered (the same 503) instead of silence.
const INVITE_FLOOD_SLACK: u32 = 10;

/// What the guard holds a class of sources to: their packet rate, and twice their INVITE rate
/// and a little more (between one and two times it the daemon refuses the excess politely,
/// with 503; beyond that a source is flooding, and its excess never reaches the daemon).
fn kernel_limit(limits: &SourceLimits) -> SourceLimit {
    let flood = |allowed: u32| {
        if allowed == 0 {
            0
        } else {
            allowed.saturating_mul(2).saturating_add(INVITE_FLOOD_SLACK)
        }
    };
    SourceLimit {
        packets: limit(limits.packets_per_sec, limits.packet_burst),
        invites: limit(flood(limits.invites_per_sec), flood(limits.invite_burst)),
    }
}

impl SipGuard {
    /// A guard that programs the kernel maps. The dialog seed of a previous daemon is kept
    /// (its dialog entries stay meaningful); dialogs themselves are rebuilt from our calls,
    /// after the ends the kernel recorded while no daemon ran are kept for them.
    pub fn kernel(mut maps: GuardMaps, dialog_ends: DialogEvents) -> anyhow::Result<Self> {
        let mut config = maps.config()?;
        if config.dialog_seed == 0 {
            config.dialog_seed = random_seed();
        }
        let ended_while_away = maps.ended_dialogs();
        for id in maps.dialog_ids() {
            maps.remove_dialog(id);
        }
        // Parties are recorded again as calls are taken over; until then no block lets a
        // call's datagrams through.
        for party in maps.parties() {
            maps.remove_party(&party);
        }
        for (address, block) in maps.blocks() {
            if block.party != 0 {
                maps.mark_block_party(&address, false);
            }
        }
        maps.set_config(config)?;
        let guard = Self::with(Tables::Kernel(Box::new(maps)), config);
        guard.lock().ended_while_away = ended_while_away;
        *guard.dialog_ends.lock().unwrap_or_else(|p| p.into_inner()) = Some(dialog_ends);
        Ok(guard)
    }

    /// The kernel's reports of dialogs it saw end, for one watcher.
    pub fn take_dialog_ends(&self) -> Option<DialogEvents> {
        self.dialog_ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub fn userspace() -> Self {
        let config = GuardConfig {
            dialog_seed: random_seed(),
            ..GuardConfig::default()
        };
        Self::with(
            Tables::Userspace {
                blocks: HashMap::new(),
                buckets: HashMap::new(),
                reasons: vec![0; Reason::COUNT as usize],
            },
            config,
        )
    }

    fn with(tables: Tables, config: GuardConfig) -> Self {
        Self {
            in_kernel: matches!(tables, Tables::Kernel(_)),
            state: Mutex::new(State {
                tables,
                config,
                rules: Vec::new(),
                dialogs: HashMap::new(),
                parties: HashMap::new(),
                ended_while_away: Vec::new(),
                found_backends: Vec::new(),
            }),
            dialog_ends: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Tables and counters only: nothing a panic elsewhere can leave inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `[admission]`: limits, lists (and the backends, allowlisted without limits),
    /// and the listeners to protect.
    pub fn configure(
        &self,
        admission: &AdmissionConfig,
        backends: &[IpAddr],
        listeners: &[SocketAddr],
    ) -> anyhow::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        state.config = GuardConfig {
            default_limit: kernel_limit(&admission.source),
            block_after_drops: admission.block_after_drops,
            flags: if admission.enabled { GUARD_ON } else { 0 },
            block_ns: admission.block_secs.saturating_mul(1_000_000_000),
            dialog_seed: state.config.dialog_seed,
        };
        let allowlisted = kernel_limit(&admission.allowlisted);
        let rule = |action, limit| SourceRule { action, limit };
        let rules: Vec<(IpNet, SourceRule)> = admission
            .blocklist
            .iter()
            .map(|net| (*net, rule(RULE_BLOCK, SourceLimit::UNLIMITED)))
            .chain(
                admission
                    .allowlist
                    .iter()
                    .map(|net| (*net, rule(RULE_ALLOW, allowlisted))),
            )
            .chain(
                backends
                    .iter()
                    .chain(&state.found_backends)
                    .map(|ip| (IpNet::from(*ip), rule(RULE_ALLOW, SourceLimit::UNLIMITED))),
            )
            .collect();
        state.rules = longest_prefix_first(rules);
        if let Tables::Kernel(maps) = &mut state.tables {
            maps.set_config(state.config)?;
            maps.set_rules(&state.rules)?;
            maps.set_listeners(listeners)?;
        }
        // The guard applies a block as found: a block for behaviour may not name a source now
        // allowlisted (an operator's own blocks stand).
        let rules = &state.rules;
        let stale = |address: &IpAddress, block: &Block| {
            block.reason != BLOCK_MANUAL
                && matching_rule(rules, address.to_ip())
                    .is_some_and(|rule| rule.action == RULE_ALLOW)
        };
        match &mut state.tables {
            Tables::Kernel(maps) => {
                for (address, block) in maps.blocks() {
                    if stale(&address, &block) {
                        maps.unblock(&address);
                    }
                }
            }
            Tables::Userspace { blocks, .. } => {
                blocks.retain(|address, block| !stale(address, block));
            }
        }
        Ok(())
    }

    fn dialog_id(state: &State, call_id: &str) -> u64 {
        call_id_hash(call_id.as_bytes(), state.config.dialog_seed)
    }

    /// A call with this Call-ID is set up: its in-dialog traffic is never limited from now on.
    pub fn dialog_started(&self, call_id: &str) -> anyhow::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        let id = Self::dialog_id(state, call_id);
        let held = state.dialogs.entry(id).or_insert_with(|| HeldDialog {
            calls: 0,
            call_id: call_id.to_owned(),
        });
        held.calls += 1;
        match &mut state.tables {
            Tables::Kernel(maps) if held.calls == 1 => maps.add_dialog(id),
            _ => Ok(()),
        }
    }

    /// The Call-ID of the dialog `id`, if it is one of ours.
    pub fn call_id_of(&self, id: u64) -> Option<String> {
        self.lock()
            .dialogs
            .get(&id)
            .map(|held| held.call_id.clone())
    }

    /// The dialogs of our calls whose end the kernel recorded (their final BYE response went
    /// through it), while no daemon ran or since, as Call-IDs with how they ended.
    pub fn ended_in_kernel(&self) -> Vec<(String, DialogEnd)> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut ended = std::mem::take(&mut state.ended_while_away);
        if let Tables::Kernel(maps) = &state.tables {
            ended.extend(maps.ended_dialogs());
        }
        ended
            .into_iter()
            .filter_map(|(id, end)| Some((state.dialogs.get(&id)?.call_id.clone(), end)))
            .collect()
    }

    /// How many SIP messages of the call `call_id` the kernel forwarded itself.
    pub fn forwarded_in_kernel(&self, call_id: &str) -> Option<u64> {
        let state = self.lock();
        let Tables::Kernel(maps) = &state.tables else {
            return None;
        };
        maps.forwarded(Self::dialog_id(&state, call_id))
    }

    /// An established call's in-dialog SIP may be forwarded in the kernel as `forwarding`
    /// says (the userspace dataplane forwards it all itself).
    pub fn dialog_forwarding(&self, forwarding: &Forwarding) -> anyhow::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        let id = Self::dialog_id(state, &forwarding.call_id);
        let seed = state.config.dialog_seed;
        match &mut state.tables {
            // A call whose Call-ID or tags are too long for the kernel stays with the daemon.
            Tables::Kernel(maps) if state.dialogs.contains_key(&id) => {
                match forwarding.map_value(seed) {
                    Some(dialog) => maps.set_dialog(id, dialog),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Our SIP addresses as the proxy writes them, for the kernel's forwarding.
    pub fn set_sip_selves(&self, selves: &SipSelves) -> anyhow::Result<()> {
        match &mut self.lock().tables {
            Tables::Kernel(maps) => maps.set_sip_selves(selves),
            Tables::Userspace { .. } => Ok(()),
        }
    }

    /// `caller` acknowledged the answer of a call: a block of it lets that call's in-dialog
    /// traffic through (until `dialog_ended` names it).
    pub fn caller_confirmed(&self, caller: IpAddr) -> anyhow::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        let party = IpAddress::from(caller);
        let calls = state.parties.entry(party).or_insert(0);
        *calls += 1;
        if *calls > 1 {
            return Ok(());
        }
        // The tables learn of the first call only. The party is recorded before a block is
        // marked: the kernel, setting a block, asks for the party after (see `decide`).
        if let Tables::Kernel(maps) = &mut state.tables {
            maps.add_party(party)?;
        }
        mark_block_party(&mut state.tables, &party, true);
        Ok(())
    }

    /// The end of a call `dialog_started` began; `caller`, if `caller_confirmed` named it.
    pub fn dialog_ended(&self, call_id: &str, caller: Option<IpAddr>) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(caller) = caller {
            let party = IpAddress::from(caller);
            if let Some(party_calls) = state.parties.get_mut(&party) {
                *party_calls -= 1;
                if *party_calls == 0 {
                    state.parties.remove(&party);
                    if let Tables::Kernel(maps) = &mut state.tables {
                        maps.remove_party(&party);
                    }
                    mark_block_party(&mut state.tables, &party, false);
                }
            }
        }
        let id = Self::dialog_id(state, call_id);
        let Some(held) = state.dialogs.get_mut(&id) else {
            return;
        };
        held.calls -= 1;
        if held.calls > 0 {
            return;
        }
        state.dialogs.remove(&id);
        if let Tables::Kernel(maps) = &mut state.tables {
            maps.remove_dialog(id);
        }
    }

    /// Whether a datagram's Call-ID is that of a call we hold (found as the XDP program
    /// finds it).
    pub fn knows_dialog(&self, datagram: &[u8]) -> bool {
        self.dialog_id_of(datagram)
            .is_some_and(|id| self.holds_dialog(id))
    }

    /// A datagram's dialog key: its Call-ID, found as the XDP program finds it, hashed with the
    /// guard's seed. The scan runs outside the lock.
    pub fn dialog_id_of(&self, datagram: &[u8]) -> Option<u64> {
        let seed = self.lock().config.dialog_seed;
        scan_call_id(datagram, seed)
    }

    /// Whether `id` (see `dialog_id_of`) is the dialog of a call we hold.
    pub fn holds_dialog(&self, id: u64) -> bool {
        self.lock().dialogs.contains_key(&id)
    }

    /// Whether `source` is allowlisted (a trunk or a backend): its longest matching rule
    /// allows it. Intake asks only when it sheds, to shed strangers first.
    pub fn is_allowlisted(&self, source: IpAddr) -> bool {
        matching_rule(&self.lock().rules, source).is_some_and(|rule| rule.action == RULE_ALLOW)
    }

    /// Blocks a source for `duration` (`None`: until unblocked); an IPv6 source is blocked
    /// with its /64 (`IpAddress::source_key`). An allowlisted source is never blocked for its
    /// behaviour, only by an operator (`BLOCK_MANUAL`): the guard applies a block as it finds
    /// it, before the source's rule.
    pub fn block(
        &self,
        source: IpAddr,
        duration: Option<Duration>,
        reason: u32,
    ) -> Result<(), BlockRefused> {
        if reason != BLOCK_MANUAL && self.is_allowlisted(source) {
            return Err(BlockRefused::Allowlisted(source));
        }
        let until_ns = duration.map_or(u64::MAX, |d| {
            monotonic_ns().saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64)
        });
        let address = IpAddress::from(source);
        let mut state = self.lock();
        let block = Block {
            until_ns,
            dropped: 0,
            reason,
            party: u32::from(state.parties.contains_key(&address)),
        };
        let blocked = address.source_key();
        match &mut state.tables {
            Tables::Kernel(maps) => maps.block(blocked, block).map_err(BlockRefused::Failed),
            Tables::Userspace { blocks, .. } => {
                blocks.insert(blocked, block);
                Ok(())
            }
        }
    }

    /// Allowlists backends DNS found without limits, as the configured ones (kept through
    /// reconfiguration); those already allowlisted so change nothing.
    pub fn trust_backends(&self, ips: &[IpAddr]) -> anyhow::Result<()> {
        let mut state = self.lock();
        let state = &mut *state;
        let unlimited = SourceRule {
            action: RULE_ALLOW,
            limit: SourceLimit::UNLIMITED,
        };
        let mut changed = false;
        for &ip in ips {
            let net = IpNet::from(ip);
            if state
                .rules
                .iter()
                .any(|(n, rule)| *n == net && *rule == unlimited)
            {
                continue;
            }
            state.found_backends.push(ip);
            state.rules.push((net, unlimited));
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        state.rules = longest_prefix_first(std::mem::take(&mut state.rules));
        if let Tables::Kernel(maps) = &mut state.tables {
            maps.set_rules(&state.rules)?;
        }
        Ok(())
    }

    /// Lifts a block (of an IPv6 source's /64); false if the source was not blocked.
    pub fn unblock(&self, source: IpAddr) -> bool {
        let address = IpAddress::from(source).source_key();
        match &mut self.lock().tables {
            Tables::Kernel(maps) => maps.unblock(&address),
            Tables::Userspace { blocks, .. } => blocks.remove(&address).is_some(),
        }
    }

    /// The blocks in force; expired ones are removed on the way.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        let now = monotonic_ns();
        let mut state = self.lock();
        let all: Vec<(IpAddress, Block)> = match &state.tables {
            Tables::Kernel(maps) => maps.blocks(),
            Tables::Userspace { blocks, .. } => blocks.iter().map(|(a, b)| (*a, *b)).collect(),
        };
        let mut active = Vec::new();
        for (address, block) in all {
            if !block.is_active(now) {
                match &mut state.tables {
                    Tables::Kernel(maps) => {
                        maps.unblock(&address);
                    }
                    Tables::Userspace { blocks, .. } => {
                        blocks.remove(&address);
                    }
                }
                continue;
            }
            active.push(BlockInfo {
                address: address.to_ip(),
                reason: block_reason_name(block.reason).to_owned(),
                remaining_secs: (block.until_ns != u64::MAX)
                    .then(|| (block.until_ns - now).div_ceil(1_000_000_000)),
                dropped: block.dropped,
            });
        }
        active.sort_by_key(|b| b.address);
        active
    }

    /// The userspace dataplane's verdicts by reason (empty with XDP: the kernel counts them).
    pub fn userspace_reasons(&self) -> Vec<(Reason, u64)> {
        match &self.lock().tables {
            Tables::Kernel(_) => Vec::new(),
            Tables::Userspace { reasons, .. } => Reason::ALL
                .iter()
                .zip(reasons)
                .filter(|(_, count)| **count > 0)
                .map(|(reason, count)| (*reason, *count))
                .collect(),
        }
    }

    /// With the userspace dataplane, whether a datagram from `source` to a SIP listener goes
    /// on to the proxy: the XDP program's decision (`sbc_common::guard::decide`) over the
    /// daemon's own tables. With XDP the kernel has decided already.
    pub fn admit(&self, source: IpAddr, datagram: &[u8]) -> bool {
        if self.in_kernel {
            return true;
        }
        let mut state = self.lock();
        let state = &mut *state;
        let Tables::Userspace {
            blocks,
            buckets,
            reasons,
        } = &mut state.tables
        else {
            return true;
        };
        let mut tables = DaemonTables {
            rules: &state.rules,
            dialogs: &state.dialogs,
            parties: &state.parties,
            blocks,
            buckets,
        };
        let decision = decide(
            &state.config,
            &mut tables,
            &IpAddress::from(source),
            || datagram,
            monotonic_ns,
        );
        reasons[decision.reason as usize] += 1;
        decision.pass
    }
}

/// Marks a block of `source`, if it has one, as a party's or not (`Block::party`).
fn mark_block_party(tables: &mut Tables, source: &IpAddress, party: bool) {
    let blocked = source.source_key();
    match tables {
        Tables::Kernel(maps) => maps.mark_block_party(&blocked, party),
        Tables::Userspace { blocks, .. } => {
            if let Some(block) = blocks.get_mut(&blocked) {
                block.party = u32::from(party);
            }
        }
    }
}

/// CIDR rules in the order the userspace lookup takes them: its first match is the longest.
fn longest_prefix_first(mut rules: Vec<(IpNet, SourceRule)>) -> Vec<(IpNet, SourceRule)> {
    rules.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    rules
}

/// The rule of the longest prefix in `rules` (longest first) that holds `source`.
fn matching_rule(rules: &[(IpNet, SourceRule)], source: IpAddr) -> Option<SourceRule> {
    rules
        .iter()
        .find(|(net, _)| net.contains(&source))
        .map(|(_, rule)| *rule)
}

/// The userspace dataplane's guard tables, borrowed from the guard's state for one decision.
/// A dialog of calls we hold: how many (a Call-ID may be reused), and its Call-ID.
struct HeldDialog {
    calls: usize,
    call_id: String,
}

struct DaemonTables<'a> {
    /// Longest prefix first.
    rules: &'a [(IpNet, SourceRule)],
    dialogs: &'a HashMap<u64, HeldDialog>,
    parties: &'a HashMap<IpAddress, usize>,
    blocks: &'a mut HashMap<IpAddress, Block>,
    buckets: &'a mut HashMap<IpAddress, SourceBucket>,
}

impl GuardTables for DaemonTables<'_> {
    fn rule(&self, source: &IpAddress) -> Option<SourceRule> {
        matching_rule(self.rules, source.to_ip())
    }

    fn knows_dialog(&mut self, dialog: u64) -> bool {
        self.dialogs.contains_key(&dialog)
    }

    fn is_party(&self, source: &IpAddress) -> bool {
        self.parties.contains_key(source)
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
        if self.buckets.len() >= sbc_common::maps::MAX_SOURCES && !self.buckets.contains_key(source)
        {
            // The kernel's table is an LRU of this size; forget the idlest here.
            let cutoff = now_ns.saturating_sub(60_000_000_000);
            self.buckets.retain(|_, b| b.packets.refilled_ns > cutoff);
        }
        Some(
            self.buckets
                .entry(*source)
                .or_insert_with(|| SourceBucket::full(limit, now_ns)),
        )
    }
}

impl KernelDialogs for SipGuard {
    fn highest_cseqs(&self, call_id: &str) -> Option<[u32; 2]> {
        let state = self.lock();
        let Tables::Kernel(maps) = &state.tables else {
            return None;
        };
        maps.highest_cseqs(Self::dialog_id(&state, call_id))
    }

    fn forwards(&self, call_id: &str) -> bool {
        let state = self.lock();
        let Tables::Kernel(maps) = &state.tables else {
            return false;
        };
        maps.forwards(Self::dialog_id(&state, call_id))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sbc_common::guard::script;

    use super::*;

    #[test]
    fn allowlisted_sources_are_blocked_by_operators_only() {
        let guard = SipGuard::userspace();
        let (trunk, other): (IpAddr, IpAddr) = (
            Ipv4Addr::new(192, 0, 2, 10).into(),
            Ipv4Addr::new(192, 0, 2, 11).into(),
        );
        guard.block(trunk, None, BLOCK_RATE).unwrap();
        guard.block(other, None, BLOCK_MANUAL).unwrap();
        let allowlisting = AdmissionConfig {
            allowlist: vec!["192.0.2.0/24".parse().unwrap()],
            ..AdmissionConfig::default()
        };
        guard.configure(&allowlisting, &[], &[]).unwrap();
        let blocked: Vec<IpAddr> = guard.blocks().iter().map(|b| b.address).collect();
        assert_eq!(
            blocked,
            [other],
            "a reload that allowlists lifts what behaviour earned"
        );
        let refused = guard.block(trunk, None, BLOCK_SCANNER).unwrap_err();
        assert!(matches!(refused, BlockRefused::Allowlisted(ip) if ip == trunk));
        assert!(refused.to_string().contains("allowlisted"), "{refused}");
        guard.block(trunk, None, BLOCK_MANUAL).unwrap();
        assert!(
            !guard.admit(trunk, b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"),
            "and it holds"
        );
    }

    /// A blocked source's calls keep their signalling exactly while it is their caller,
    /// whichever came first, the block or the call.
    #[test]
    fn a_block_lets_through_the_calls_of_its_source_while_they_last() {
        let guard = SipGuard::userspace();
        guard.lock().config.flags = GUARD_ON;
        let caller: IpAddr = Ipv4Addr::new(203, 0, 113, 7).into();
        let bye = b"BYE sip:a@b SIP/2.0\r\nCall-ID: held@b\r\n\r\n";
        guard.dialog_started("held@b").unwrap();
        guard.block(caller, None, BLOCK_MANUAL).unwrap();
        assert!(!guard.admit(caller, bye), "not yet a caller");
        guard.caller_confirmed(caller).unwrap();
        assert!(guard.admit(caller, bye), "the block learnt of the call");
        guard.block(caller, None, BLOCK_SCANNER).unwrap();
        assert!(guard.admit(caller, bye), "a block set during the call");
        guard.dialog_ended("held@b", Some(caller));
        guard.dialog_started("held@b").unwrap();
        assert!(!guard.admit(caller, bye), "its call is over");
    }

    #[test]
    fn the_userspace_dataplane_plays_the_guard_script() {
        let guard = SipGuard::userspace();
        {
            let mut state = guard.lock();
            state.config = script::config(state.config.dialog_seed);
            let rules = script::RULES
                .iter()
                .map(|(net, prefix, action, limit)| {
                    let net = IpNet::new(Ipv4Addr::from(*net).into(), *prefix).unwrap();
                    let rule = SourceRule {
                        action: *action,
                        limit: *limit,
                    };
                    (net, rule)
                })
                .collect();
            state.rules = longest_prefix_first(rules);
        }
        guard.dialog_started(script::KNOWN_CALL_ID).unwrap();
        guard
            .caller_confirmed(Ipv4Addr::from(script::KNOWN_CALLER).into())
            .unwrap();
        let counted = |reason: Reason| {
            guard
                .userspace_reasons()
                .into_iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, count)| count)
        };
        for (n, step) in script::STEPS.iter().enumerate() {
            let before = counted(step.reason);
            let passed = guard.admit(Ipv4Addr::from(step.source).into(), step.payload);
            assert_eq!(passed, step.pass, "step {n}: {}", step.what);
            assert_eq!(counted(step.reason), before + 1, "step {n}: {}", step.what);
        }
        let blocked: Vec<IpAddr> = guard.blocks().iter().map(|b| b.address).collect();
        let (stranger, flooder) = (script::STRANGER, script::FLOODER);
        assert_eq!(
            blocked,
            [Ipv4Addr::from(stranger), Ipv4Addr::from(flooder)].map(IpAddr::from)
        );
    }
}
