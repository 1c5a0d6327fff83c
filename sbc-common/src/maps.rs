//! Names, sizes and pinning layout of the maps (the contract between both sides).

/// Version of the map layout. Pins live under `<bpffs>/sbc/<instance>/v<MAP_ABI_VERSION>/`, so a
/// daemon with another layout never misreads old maps; bump it whenever a shared type changes.
pub const MAP_ABI_VERSION: u32 = 1;

/// `HashMap<FlowKey, Flow>`: what to do with media arriving at a local port.
pub const FLOWS: &str = "SBC_FLOWS";
/// `PerCpuHashMap<FlowKey, FlowStats>`: per-flow counters kept by the XDP program.
pub const FLOW_STATS: &str = "SBC_FLOW_STATS";
/// `PerCpuArray<u64>` indexed by `Reason`: why each verdict was given.
pub const REASONS: &str = "SBC_REASONS";
/// `DevMapHash` keyed by ifindex: interfaces the program may redirect to.
pub const EGRESS: &str = "SBC_EGRESS";

/// All maps, for pinning and re-opening.
pub const ALL: &[&str] = &[FLOWS, FLOW_STATS, REASONS, EGRESS];

/// Capacity of the flow maps (two legs, RTP and RTCP: up to four flows per session).
pub const MAX_FLOWS: usize = 65536;
/// Capacity of the redirect map.
pub const MAX_EGRESS: usize = 64;

/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "sbc_xdp";
