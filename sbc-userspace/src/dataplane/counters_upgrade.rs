//! An upgrade across the flow counters' change of layout: builds before this one kept 96 bytes
//! per flow and CPU (the counters, then a next-hop memo that named both addresses); this one
//! keeps 64, one cache line (the memo is checked against the flow's generation instead).
//!
//! A pinned counters table of the earlier layout is read before it is unpinned, and the
//! counters of every installed flow are written into the new table before the new program is
//! attached: packets and bytes go on from where they were, and the last packet's time (which the
//! media timeout and no-audio detection go by) is kept. The memos start empty. Until its link
//! takes the new program, the old one counts into the old table: those few milliseconds of
//! counts are lost, the media is not.
use std::path::PathBuf;

use anyhow::Context as _;
use aya::maps::{Map, MapData, MapInfo, PerCpuArray, PerCpuValues};
use sbc_common::{Flow, FlowKey, FlowStats, maps::FLOW_STATS};
use tracing::info;

use super::PinLayout;

/// `FlowStats` as builds up to 2026-12-05 laid it out.
#[repr(C)]
#[derive(Clone, Copy)]
struct EarlierFlowStats {
    packets: u64,
    bytes: u64,
    last_seen_ns: u64,
    foreign_dropped: u64,
    _next_hop: [u64; 8],
}

// SAFETY: `repr(C)`, integers only, no padding.
unsafe impl aya::Pod for EarlierFlowStats {}

impl From<EarlierFlowStats> for FlowStats {
    fn from(earlier: EarlierFlowStats) -> Self {
        FlowStats {
            packets: earlier.packets,
            bytes: earlier.bytes,
            last_seen_ns: earlier.last_seen_ns,
            foreign_dropped: earlier.foreign_dropped,
            next_hop: Default::default(),
        }
    }
}

/// The counters of the installed flows, read from a table of the earlier layout.
pub struct CarriedCounters {
    /// The earlier table's size: the flow table it belongs to keeps its size, and the new
    /// counters must cover its slots.
    pub capacity: u32,
    /// Each installed flow's slot and its counters on each CPU.
    slots: Vec<(u32, Vec<FlowStats>)>,
    /// The earlier table, unpinned, and where it was pinned: pinned back if the new table
    /// cannot be made, so that a daemon that tries again still finds the counters.
    earlier: Map,
    path: PathBuf,
}

/// If the pinned counters table has the earlier layout: unpins it, and returns the counters of
/// the `installed` flows (none when there are none: the new table is then simply made at its
/// configured size).
pub fn carry(
    layout: &PinLayout,
    installed: &[(FlowKey, Flow)],
) -> anyhow::Result<Option<CarriedCounters>> {
    let path = layout.map(FLOW_STATS);
    if !path.exists() {
        return Ok(None);
    }
    let info = MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
    if info.value_size() as usize != size_of::<EarlierFlowStats>() {
        return Ok(None);
    }
    let earlier =
        Map::PerCpuArray(MapData::from_pin(&path).context("opening the earlier flow counters")?);
    let counters: PerCpuArray<&MapData, EarlierFlowStats> = PerCpuArray::try_from(&earlier)?;
    let slots = installed
        .iter()
        .map(
            |&(
                _,
                Flow {
                    stats_slot: slot, ..
                },
            )| {
                let per_cpu = counters
                    .get(&slot, 0)
                    .with_context(|| format!("reading the earlier counters of slot {slot}"))?;
                Ok((slot, per_cpu.iter().copied().map(FlowStats::from).collect()))
            },
        )
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    info!(
        flows = slots.len(),
        "the flow counters had the earlier 96-byte layout: carried into the new one"
    );
    Ok((!slots.is_empty()).then_some(CarriedCounters {
        capacity: info.max_entries(),
        slots,
        earlier,
        path,
    }))
}

impl CarriedCounters {
    /// Pins the earlier table back where it was (the new one could not be made).
    pub fn put_back(self) -> anyhow::Result<()> {
        self.earlier.pin(&self.path).with_context(|| {
            format!(
                "pinning the earlier flow counters back at {}",
                self.path.display()
            )
        })
    }

    /// Writes the counters into the new table (made by the loader, not yet counted in).
    pub fn restore(self, table: &mut Map) -> anyhow::Result<()> {
        let mut counters: PerCpuArray<&mut MapData, FlowStats> = PerCpuArray::try_from(table)?;
        for (slot, per_cpu) in self.slots {
            counters
                .set(slot, PerCpuValues::try_from(per_cpu)?, 0)
                .with_context(|| format!("writing the carried counters of slot {slot}"))?;
        }
        Ok(())
    }
}
