//! The maps of the program. Their key and value types come from `sbc-common` (the contract);
//! they are declared as BTF maps so `bpftool map dump` prints every field by name.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_fib_lookup},
    btf_maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use sbc_common::{
    Block, Dialog, Flow, FlowEntry, FlowStats, FlowTableLayout, GuardConfig, IpAddress, Reason,
    SipListeners, SipSelves, SourceBucket, SourceRule,
    call_id::{CallIdScan, ScanWindow},
    maps::{
        DIALOG_EVENTS_BYTES, MAX_BLOCKS, MAX_DIALOGS, MAX_EGRESS, MAX_FLOWS, MAX_PARTIES,
        MAX_SOURCE_RULES, MAX_SOURCES,
    },
    sip_forward::ForwardScratch,
};

/// Sized by the daemon to its layout (`SBC_FLOW_LAYOUT`): an entry for every local media
/// address and port.
#[btf_map]
pub static SBC_FLOWS: Array<FlowEntry, MAX_FLOWS> = Array::new();

#[btf_map]
pub static SBC_FLOW_LAYOUT: Array<FlowTableLayout, 1> = Array::new();

/// This CPU's copy of the flow being relayed (see `flow_table`): 68 bytes kept off the stack.
#[btf_map]
pub static SBC_FLOW_COPY: PerCpuArray<Flow, 1> = PerCpuArray::new();

#[btf_map]
pub static SBC_FLOW_STATS: PerCpuArray<FlowStats, MAX_FLOWS> = PerCpuArray::new();

#[btf_map]
pub static SBC_REASONS: PerCpuArray<u64, { Reason::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static SBC_EGRESS: DevMapHash<MAX_EGRESS> = DevMapHash::new();

#[btf_map]
pub static SBC_SIP_LISTENERS: Array<SipListeners, 1> = Array::new();

#[btf_map]
pub static SBC_GUARD: Array<GuardConfig, 1> = Array::new();

#[btf_map]
pub static SBC_SOURCE_RULES: LpmTrie<[u8; 16], SourceRule, MAX_SOURCE_RULES> = LpmTrie::new();

#[btf_map]
pub static SBC_SOURCES: LruHashMap<IpAddress, SourceBucket, MAX_SOURCES> = LruHashMap::new();

#[btf_map]
pub static SBC_BLOCKS: LruHashMap<IpAddress, Block, MAX_BLOCKS> = LruHashMap::new();

/// Allocated per call rather than for the map's whole capacity up front: a dialog holds its
/// identity and routes (hundreds of bytes), and most systems hold far fewer calls.
#[btf_map]
pub static SBC_DIALOGS: HashMap<u64, Dialog, MAX_DIALOGS, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

#[btf_map]
pub static SBC_SIP_SELF: Array<SipSelves, 1> = Array::new();

/// Records of `DialogEnded`. Its value type is left empty: a ring buffer has no value size,
/// and libbpf (bpftool) refuses one that names a type of some size.
#[btf_map]
pub static SBC_DIALOG_EVENTS: RingBuf<(), DIALOG_EVENTS_BYTES> = RingBuf::new();

/// This CPU's `bpf_fib_lookup` parameters: 64 bytes kept off the stack, which the relay's
/// frame shares with `main`'s (512 bytes for a chain of calls).
#[btf_map]
pub static SBC_FIB: PerCpuArray<bpf_fib_lookup, 1> = PerCpuArray::new();

/// The state of an in-dialog forwarding and the buffer its message is assembled in, per CPU.
#[btf_map]
pub static SBC_FORWARD: PerCpuArray<ForwardScratch, 1> = PerCpuArray::new();

/// Allocated per caller (only the daemon inserts).
#[btf_map]
pub static SBC_PARTIES: HashMap<IpAddress, u32, MAX_PARTIES, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// The start of a SIP payload, copied for the Call-ID scan, and the scan's state: in map
/// memory, whose contents the verifier does not track, a `bpf_loop` step is verified once; on
/// the stack, each value the state could take between steps would be a state of its own.
pub struct ScanScratch {
    pub window: ScanWindow,
    pub scan: CallIdScan,
}

/// One `ScanScratch` per CPU (XDP never nests).
#[btf_map]
pub static SBC_SCAN: PerCpuArray<ScanScratch, 1> = PerCpuArray::new();
