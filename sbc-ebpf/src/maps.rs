//! The maps of the program. Their key and value types come from `sbc-common` (the contract);
//! they are declared as BTF maps so `bpftool map dump` prints every field by name.
use aya_ebpf::{
    btf_maps::{DevMapHash, HashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use sbc_common::{
    Flow, FlowKey, FlowStats, Reason,
    maps::{MAX_EGRESS, MAX_FLOWS},
};

#[btf_map]
pub static SBC_FLOWS: HashMap<FlowKey, Flow, MAX_FLOWS> = HashMap::new();

#[btf_map]
pub static SBC_FLOW_STATS: PerCpuHashMap<FlowKey, FlowStats, MAX_FLOWS> = PerCpuHashMap::new();

#[btf_map]
pub static SBC_REASONS: PerCpuArray<u64, { Reason::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static SBC_EGRESS: DevMapHash<MAX_EGRESS> = DevMapHash::new();
