//! Names, sizes and pinning layout of the maps (the contract between both sides).

/// Version of the map layout. Pins live under `<bpffs>/sbc/<instance>/v<MAP_ABI_VERSION>/`, so a
/// daemon with another layout never misreads old maps; bump it whenever the type of a map that
/// carries calls changes (a map of `REBUILT` is replaced instead, see there; the flow table's
/// and its counters' earlier layouts are carried across by the daemon, without a new version:
/// `dataplane/flow_table_upgrade.rs`, `dataplane/counters_upgrade.rs`).
pub const MAP_ABI_VERSION: u32 = 6;

/// `Array<FlowEntry>` indexed by `FlowTableLayout::index`: what to do with media arriving at a
/// local address and port.
pub const FLOWS: &str = "SBC_FLOWS";
/// `Array<FlowTableLayout>` of one entry: which addresses and ports `SBC_FLOWS` covers.
pub const FLOW_LAYOUT: &str = "SBC_FLOW_LAYOUT";
/// `PerCpuArray<FlowStats>` indexed by `Flow::stats_slot`: per-flow counters kept by the XDP
/// program.
pub const FLOW_STATS: &str = "SBC_FLOW_STATS";
/// `PerCpuArray<u64>` indexed by `Reason`: why each verdict was given.
pub const REASONS: &str = "SBC_REASONS";
/// `DevMapHash` keyed by ifindex: interfaces the program may redirect to.
pub const EGRESS: &str = "SBC_EGRESS";

/// `Array<SipListeners>` of one entry: the addresses and ports of our SIP listeners (UDP),
/// which the guard protects.
pub const SIP_LISTENERS: &str = "SBC_SIP_LISTENERS";
/// `Array<GuardConfig>` of one entry: the guard's limits and switches.
pub const GUARD: &str = "SBC_GUARD";
/// `LpmTrie<[u8; 16], SourceRule>`: allow- and blocklisted CIDRs.
pub const SOURCE_RULES: &str = "SBC_SOURCE_RULES";
/// `LruHashMap<IpAddress, SourceBucket>`: the token bucket of each recent SIP source.
pub const SOURCES: &str = "SBC_SOURCES";
/// `LruHashMap<IpAddress, Block>`: sources blocked for a while.
pub const BLOCKS: &str = "SBC_BLOCKS";
/// `HashMap<u64, Dialog>`: the known dialogs, by Call-ID hash, and for established calls what
/// the program needs to forward their in-dialog SIP.
pub const DIALOGS: &str = "SBC_DIALOGS";
/// `RingBuf` of `DialogEnded`: the dialogs the kernel saw end (the final response to a BYE
/// forwarded), for the daemon to end their calls; kept while the daemon is away.
pub const DIALOG_EVENTS: &str = "SBC_DIALOG_EVENTS";
/// Its size in bytes (a power of two, whole pages): room for some 10,000 ends.
pub const DIALOG_EVENTS_BYTES: usize = 512 * 1024;
/// `Array<SipSelves>` of one entry: our SIP addresses on each side as the proxy writes them,
/// for in-dialog SIP forwarded in the kernel.
pub const SIP_SELF: &str = "SBC_SIP_SELF";
/// `HashMap<IpAddress, u32>`: the callers that acknowledged the answer of calls we hold (the
/// value is 1; the daemon counts their calls): the guard drops a blocked source's datagrams
/// unread unless it is one of them.
pub const PARTIES: &str = "SBC_PARTIES";

/// All maps, for pinning and re-opening.
pub const ALL: &[&str] = &[
    FLOWS,
    FLOW_LAYOUT,
    FLOW_STATS,
    REASONS,
    EGRESS,
    SIP_LISTENERS,
    GUARD,
    SOURCE_RULES,
    SOURCES,
    BLOCKS,
    DIALOGS,
    PARTIES,
    SIP_SELF,
    DIALOG_EVENTS,
];

/// Maps that hold nothing a call needs, only what the daemon writes anew at every start
/// (configuration, listeners, verdict counters, rate buckets, dynamic blocks). A pinned one
/// whose layout differs from this build's is replaced rather than refused: an upgrade that
/// changes only these keeps every call and loses counts, buckets and blocks, which rebuild.
pub const REBUILT: &[&str] = &[
    REASONS,
    SIP_LISTENERS,
    GUARD,
    SOURCE_RULES,
    SOURCES,
    BLOCKS,
    PARTIES,
    SIP_SELF,
];

/// Capacity the object declares for the flow maps (what a loader other than the daemon's
/// gets); the daemon sizes them from its port range instead
/// (`sbc-userspace/src/dataplane/table_sizes.rs`).
pub const MAX_FLOWS: usize = 65536;
/// Capacity of the redirect map.
pub const MAX_EGRESS: usize = 64;
/// SIP listeners the map holds (public and private, with room to spare).
pub const MAX_SIP_LISTENERS: usize = 8;
/// Capacity of the source rules (CIDRs in allow- and blocklists).
pub const MAX_SOURCE_RULES: usize = 16384;
/// Sources whose buckets are kept; the least recently seen make room for new ones.
pub const MAX_SOURCES: usize = 65536;
/// Dynamic blocks kept; when full, the least recently hit make room.
pub const MAX_BLOCKS: usize = 16384;
/// Capacity the object declares for the dialogs map (about one per call); the daemon loads it
/// sized from its limits instead, as the flows.
pub const MAX_DIALOGS: usize = 65536;
/// Capacity the object declares for the parties map (at most one per call); sized as dialogs.
pub const MAX_PARTIES: usize = MAX_DIALOGS;

/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "sbc_xdp";
