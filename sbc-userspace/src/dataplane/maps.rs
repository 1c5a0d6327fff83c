//! Typed access to the pinned maps, shared by the daemon and `sbc maps`.
//!
//! Maps are always opened from their pins, after their sizes are checked against this build's
//! types (invariant: maps are the contract), so a daemon never misreads another layout.
use std::path::Path;

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap, PerCpuValues};
use sbc_common::{
    Block, Dialog, Flow, FlowKey, FlowStats, GuardConfig, IpAddress, Reason, SourceBucket,
    SourceRule,
    maps::{
        BLOCKS, DIALOGS, EGRESS, FLOW_STATS, FLOWS, GUARD, MAX_BLOCKS, MAX_DIALOGS, MAX_EGRESS,
        MAX_FLOWS, MAX_SIP_LISTENERS, MAX_SOURCE_RULES, MAX_SOURCES, REASONS, SIP_LISTENERS,
        SOURCE_RULES, SOURCES,
    },
};

use super::PinLayout;

/// Key size, value size and capacity this build expects of each pinned map.
fn expected_layout(name: &str) -> Option<(u32, u32, u32)> {
    let size = |n: usize| n as u32;
    match name {
        FLOWS => Some((
            size(size_of::<FlowKey>()),
            size(size_of::<Flow>()),
            MAX_FLOWS as u32,
        )),
        FLOW_STATS => Some((
            size(size_of::<FlowKey>()),
            size(size_of::<FlowStats>()),
            MAX_FLOWS as u32,
        )),
        REASONS => Some((4, 8, Reason::COUNT)),
        // A devmap value is `struct bpf_devmap_val` (ifindex + program).
        EGRESS => Some((4, 8, MAX_EGRESS as u32)),
        SIP_LISTENERS => Some((size(size_of::<FlowKey>()), 4, MAX_SIP_LISTENERS as u32)),
        GUARD => Some((4, size(size_of::<GuardConfig>()), 1)),
        // An LPM trie key is the prefix length (u32) and the address.
        SOURCE_RULES => Some((
            4 + size(size_of::<IpAddress>()),
            size(size_of::<SourceRule>()),
            MAX_SOURCE_RULES as u32,
        )),
        SOURCES => Some((
            size(size_of::<IpAddress>()),
            size(size_of::<SourceBucket>()),
            MAX_SOURCES as u32,
        )),
        BLOCKS => Some((
            size(size_of::<IpAddress>()),
            size(size_of::<Block>()),
            MAX_BLOCKS as u32,
        )),
        DIALOGS => Some((8, size(size_of::<Dialog>()), MAX_DIALOGS as u32)),
        _ => None,
    }
}

/// Fails with a clear message if a pinned map has another layout than this build's.
pub fn check_pinned(path: &Path, name: &str) -> anyhow::Result<()> {
    let Some((key, value, entries)) = expected_layout(name) else {
        bail!("no layout is known for map {name}");
    };
    let info = MapInfo::from_pin(path).with_context(|| format!("reading {}", path.display()))?;
    let found = (info.key_size(), info.value_size(), info.max_entries());
    if found != (key, value, entries) {
        bail!(
            "pinned map {} has key/value size and capacity {found:?}, this build expects {:?}; \
             it was left by an incompatible build: stop it and start with `sbc run --clean` \
             (drops the media it still relays)",
            path.display(),
            (key, value, entries)
        );
    }
    Ok(())
}

pub(super) fn open(layout: &PinLayout, name: &str) -> anyhow::Result<MapData> {
    let path = layout.map(name);
    check_pinned(&path, name)?;
    MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
}

/// The flow table and its counters, as written by the daemon.
pub struct FlowMaps {
    flows: HashMap<MapData, FlowKey, Flow>,
    stats: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    cpus: usize,
}

impl FlowMaps {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        Ok(Self {
            flows: HashMap::try_from(Map::HashMap(open(layout, FLOWS)?))?,
            stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(open(layout, FLOW_STATS)?))?,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e)?,
        })
    }

    /// Adds a new flow with zeroed counters (counters first, so the program always finds them).
    pub fn install(&mut self, key: &FlowKey, flow: &Flow) -> anyhow::Result<()> {
        let zero = PerCpuValues::try_from(vec![FlowStats::default(); self.cpus])?;
        self.stats
            .insert(key, zero, 0)
            .context("adding flow counters to the kernel map")?;
        self.update(key, flow)
    }

    /// Replaces a flow's forwarding (latching, a new destination); counters are kept.
    pub fn update(&mut self, key: &FlowKey, flow: &Flow) -> anyhow::Result<()> {
        self.flows
            .insert(key, flow, 0)
            .map_err(|e| anyhow::anyhow!("writing the kernel flow map (capacity {MAX_FLOWS}): {e}"))
    }

    /// Removes a flow and its counters; a flow that is already gone is not an error.
    pub fn remove(&mut self, key: &FlowKey) {
        let _ = self.flows.remove(key);
        let _ = self.stats.remove(key);
    }

    pub fn flows(&self) -> anyhow::Result<Vec<(FlowKey, Flow)>> {
        self.flows
            .iter()
            .map(|entry| entry.context("reading the kernel flow map"))
            .collect()
    }
}

/// Read-only access to the per-flow counters, usable without the daemon's state lock.
pub struct FlowStatsReader {
    stats: PerCpuHashMap<MapData, FlowKey, FlowStats>,
}

impl FlowStatsReader {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        Ok(Self {
            stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(open(layout, FLOW_STATS)?))?,
        })
    }

    /// The counters of one flow summed over CPUs (last seen: the latest of any CPU).
    pub fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        let per_cpu = self.stats.get(key, 0).ok()?;
        Some(per_cpu.iter().fold(FlowStats::default(), FlowStats::merge))
    }
}

/// The per-CPU verdict counters, summed.
pub struct ReasonCounters {
    counters: PerCpuArray<MapData, u64>,
}

impl ReasonCounters {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        Ok(Self {
            counters: PerCpuArray::try_from(Map::PerCpuArray(open(layout, REASONS)?))?,
        })
    }

    pub fn read(&self) -> anyhow::Result<Vec<(Reason, u64)>> {
        Reason::ALL
            .iter()
            .map(|&reason| {
                let per_cpu = self
                    .counters
                    .get(&(reason as u32), 0)
                    .context("reading the reason counters")?;
                Ok((reason, per_cpu.iter().sum()))
            })
            .collect()
    }
}
