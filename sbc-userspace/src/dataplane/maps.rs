//! Typed access to the pinned maps, shared by the daemon and `sbc maps`.
//!
//! Maps are always opened from their pins, after their sizes are checked against this build's
//! types (invariant: maps are the contract), so a daemon never misreads another layout.
use std::path::Path;

use anyhow::{Context as _, bail};
use aya::maps::{Map, MapData, MapInfo, PerCpuArray, PerCpuValues};
use sbc_common::{
    Block, Dialog, Flow, FlowEntry, FlowKey, FlowStats, FlowTableLayout, GuardConfig, IpAddress,
    Reason, SipListeners, SipSelves, SourceBucket, SourceRule,
    maps::{
        BLOCKS, DIALOG_EVENTS, DIALOG_EVENTS_BYTES, DIALOGS, EGRESS, FLOW_LAYOUT, FLOW_STATS,
        FLOWS, GUARD, MAX_BLOCKS, MAX_EGRESS, MAX_SOURCE_RULES, MAX_SOURCES, PARTIES, REASONS,
        SIP_LISTENERS, SIP_SELF, SOURCE_RULES, SOURCES,
    },
};

use super::{PinLayout, flow_table::FlowTable, stats_slots::StatsSlots};

/// Key size, value size and capacity this build expects of each pinned map; the capacity of
/// the per-call tables is the configuration's (`table_sizes`), not the build's.
fn expected_layout(name: &str) -> Option<(u32, u32, Option<u32>)> {
    let size = |n: usize| n as u32;
    let fixed = |key: u32, value: u32, entries: usize| Some((key, value, Some(entries as u32)));
    match name {
        FLOWS => Some((4, size(size_of::<FlowEntry>()), None)),
        FLOW_LAYOUT => fixed(4, size(size_of::<FlowTableLayout>()), 1),
        FLOW_STATS => Some((4, size(size_of::<FlowStats>()), None)),
        REASONS => fixed(4, 8, Reason::COUNT as usize),
        // A devmap value is `struct bpf_devmap_val` (ifindex + program).
        EGRESS => fixed(4, 8, MAX_EGRESS),
        SIP_LISTENERS => fixed(4, size(size_of::<SipListeners>()), 1),
        GUARD => fixed(4, size(size_of::<GuardConfig>()), 1),
        // An LPM trie key is the prefix length (u32) and the address.
        SOURCE_RULES => fixed(
            4 + size(size_of::<IpAddress>()),
            size(size_of::<SourceRule>()),
            MAX_SOURCE_RULES,
        ),
        SOURCES => fixed(
            size(size_of::<IpAddress>()),
            size(size_of::<SourceBucket>()),
            MAX_SOURCES,
        ),
        BLOCKS => fixed(
            size(size_of::<IpAddress>()),
            size(size_of::<Block>()),
            MAX_BLOCKS,
        ),
        DIALOGS => Some((8, size(size_of::<Dialog>()), None)),
        PARTIES => Some((size(size_of::<IpAddress>()), 4, None)),
        SIP_SELF => fixed(4, size(size_of::<SipSelves>()), 1),
        // A ring buffer has neither key nor value, only bytes.
        DIALOG_EVENTS => fixed(0, 0, DIALOG_EVENTS_BYTES),
        _ => None,
    }
}

/// How a pinned map's layout differs from this build's, if it does.
pub fn layout_difference(path: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let Some((key, value, entries)) = expected_layout(name) else {
        bail!("no layout is known for map {name}");
    };
    let info = MapInfo::from_pin(path).with_context(|| format!("reading {}", path.display()))?;
    let found = (info.key_size(), info.value_size(), info.max_entries());
    let expected = (key, value, entries.unwrap_or(found.2));
    Ok((found != expected).then(|| {
        format!(
            "pinned map {} has key/value size and capacity {found:?}, this build expects \
             {expected:?}",
            path.display()
        )
    }))
}

/// Fails with a clear message if a pinned map has another layout than this build's.
pub fn check_pinned(path: &Path, name: &str) -> anyhow::Result<()> {
    if let Some(difference) = layout_difference(path, name)? {
        bail!(
            "{difference}; it was left by an incompatible build: stop it and start with \
             `sbc run --clean` (drops the media it still relays)"
        );
    }
    Ok(())
}

pub(super) fn open(layout: &PinLayout, name: &str) -> anyhow::Result<MapData> {
    let path = layout.map(name);
    check_pinned(&path, name)?;
    MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
}

/// The flow table and its counters, as written by the daemon: each installed flow owns a slot
/// of the counters array, named in its `stats_slot`.
pub struct FlowMaps {
    table: FlowTable,
    stats: PerCpuArray<MapData, FlowStats>,
    slots: StatsSlots,
    /// Flows the counters have room for (from the configuration of the daemon that made them).
    capacity: u32,
    cpus: usize,
}

impl FlowMaps {
    /// Opens the pinned maps, taking over the slots of flows already installed (by a daemon
    /// that ran before this one).
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        let table = FlowTable::open(layout)?;
        let stats = open(layout, FLOW_STATS)?;
        let capacity = stats.info()?.max_entries();
        let installed = table.installed()?;
        Ok(Self {
            table,
            stats: PerCpuArray::try_from(Map::PerCpuArray(stats))?,
            slots: StatsSlots::new(
                capacity,
                installed.iter().map(|(key, flow)| (*key, flow.stats_slot)),
            ),
            capacity,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e)?,
        })
    }

    /// Adds a new flow with zeroed counters (counters first, so the program never counts on
    /// another flow's).
    pub fn install(&mut self, key: &FlowKey, flow: &Flow) -> anyhow::Result<()> {
        if self.slots.of(key).is_none() {
            let slot = self.slots.take().with_context(|| {
                format!(
                    "the kernel flow counters are full ({} flows: the media port range on \
                     each address, or media.max_sessions)",
                    self.capacity
                )
            })?;
            let zero = PerCpuValues::try_from(vec![FlowStats::default(); self.cpus])?;
            if let Err(e) = self.stats.set(slot, zero, 0) {
                self.slots.give_back(slot);
                return Err(e).context("zeroing flow counters in the kernel map");
            }
            self.slots.confirm(*key, slot);
        }
        self.update(key, flow)
    }

    /// Replaces an installed flow's forwarding (latching, a new destination); counters are kept.
    /// Each write is a new generation of the flow, so the program looks its next hop up anew.
    pub fn update(&mut self, key: &FlowKey, flow: &Flow) -> anyhow::Result<()> {
        let stats_slot = self
            .slots
            .of(key)
            .context("updating a flow that was never installed")?;
        // The kernel's value is the one to follow, whichever daemon wrote it.
        let generation = self
            .table
            .get(key)
            .map_or(0, |installed| installed.generation.wrapping_add(1));
        let flow = Flow {
            stats_slot,
            generation,
            ..*flow
        };
        self.table.publish(key, Some(flow))
    }

    /// Removes a flow and frees its counters; a flow that is already gone is not an error.
    pub fn remove(&mut self, key: &FlowKey) {
        let _ = self.table.publish(key, None);
        self.slots.release(key);
    }

    pub fn flows(&self) -> anyhow::Result<Vec<(FlowKey, Flow)>> {
        self.table.installed()
    }

    /// The counters slot of an installed flow: what `FlowStatsReader::get` reads, without
    /// reading the flow table.
    pub fn stats_slot(&self, key: &FlowKey) -> Option<u32> {
        self.slots.of(key)
    }

    /// The table entry of a flow's key (for `bpftool map lookup`).
    pub fn entry_of(&self, key: &FlowKey) -> Option<u32> {
        self.table.entry_of(key)
    }
}

/// Read-only access to the per-flow counters, usable without the daemon's state lock: by a
/// flow's slot, which its `Flow::stats_slot` (or `FlowMaps::stats_slot`) names.
pub struct FlowStatsReader {
    stats: PerCpuArray<MapData, FlowStats>,
}

impl FlowStatsReader {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        Ok(Self {
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(layout, FLOW_STATS)?))?,
        })
    }

    /// The counters of a slot summed over CPUs (last seen: the latest of any CPU).
    pub fn get(&self, slot: u32) -> Option<FlowStats> {
        let per_cpu = self.stats.get(&slot, 0).ok()?;
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
