//! Keeping the flows a start finds pinned when the flow table must be made anew: the table is
//! laid out by the media addresses and port range, so a configuration that changes them needs
//! another table, and builds before 2026-12-05 kept the flows in a hash table.
//!
//! A pinned table of the configured layout is kept as it is; any other is read, unpinned, and
//! its flows are written into the new table before the new program is attached. Until its link
//! takes the new program, the old one relays from the old table, so no packet is lost. A flow
//! whose address or port the configuration no longer has is left out: its session could not be
//! adopted either (its port is not this daemon's to bind), so it ends at this start.
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData, MapInfo};
use sbc_common::{
    Flow, FlowEntry, FlowKey, FlowTableLayout,
    maps::{FLOW_LAYOUT, FLOWS},
};
use tracing::{info, warn};

use super::{
    PinLayout,
    flow_table::{self, FlowTable},
};

/// The flows installed in the pinned table, whichever its form (none if there is no table).
pub fn pinned_flows(pins: &PinLayout) -> anyhow::Result<Vec<(FlowKey, Flow)>> {
    let path = pins.map(FLOWS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let info = MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
    if info.key_size() as usize == size_of::<FlowKey>()
        && info.value_size() as usize == size_of::<Flow>()
    {
        let earlier: HashMap<MapData, FlowKey, Flow> =
            HashMap::try_from(Map::HashMap(MapData::from_pin(&path)?))
                .context("opening the earlier flow hash table")?;
        return earlier
            .iter()
            .map(|entry| entry.context("reading the earlier flow hash table"))
            .collect();
    }
    if !pins.map(FLOW_LAYOUT).exists() {
        bail!(
            "the pinned flow table {} has no layout beside it; it was left by an incompatible \
             build: stop it and start with `sbc run --clean` (drops the media it still relays)",
            path.display()
        );
    }
    FlowTable::open(pins)?.installed()
}

/// The flow table a start makes or keeps.
pub struct TablePlan {
    pub layout: FlowTableLayout,
    /// Flows to write into the new table (none when the pinned one is kept).
    carried: Vec<(FlowKey, Flow)>,
    /// The earlier table and layout, unpinned, and where they were: pinned back if the new
    /// ones cannot be made, so that a daemon that tries again still finds the flows.
    earlier: Vec<(Map, PathBuf)>,
}

/// Keeps the pinned table if it has the configured layout; otherwise unpins it (and its
/// layout), to carry the `installed` flows that the configured layout covers into a new one.
pub fn plan(
    pins: &PinLayout,
    layout: FlowTableLayout,
    installed: Vec<(FlowKey, Flow)>,
) -> anyhow::Result<TablePlan> {
    let table = pins.map(FLOWS);
    let keep = table.exists()
        && MapInfo::from_pin(&table)?.value_size() as usize == size_of::<FlowEntry>()
        && pins.map(FLOW_LAYOUT).exists()
        && flow_table::read_layout(pins)? == layout
        && MapInfo::from_pin(&table)?.max_entries() == layout.capacity();
    if keep {
        return Ok(TablePlan {
            layout,
            carried: Vec::new(),
            earlier: Vec::new(),
        });
    }
    let mut earlier = Vec::new();
    for path in [table, pins.map(FLOW_LAYOUT)] {
        if path.exists() {
            let map = Map::Array(
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?,
            );
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
            earlier.push((map, path));
        }
    }
    let found = installed.len();
    let carried: Vec<_> = installed
        .into_iter()
        .filter(|(key, _)| layout.index(key).is_some())
        .collect();
    if !earlier.is_empty() {
        info!(
            flows = carried.len(),
            entries = layout.capacity(),
            port_min = layout.port_min,
            ports = layout.ports,
            addresses = layout.address_count,
            "the flow table is made anew for the media addresses and ports; its flows are carried"
        );
    }
    if carried.len() < found {
        warn!(
            flows = found - carried.len(),
            "flows on addresses or ports the configuration no longer has are not carried: their \
             sessions end"
        );
    }
    Ok(TablePlan {
        layout,
        carried,
        earlier,
    })
}

impl TablePlan {
    /// Pins the earlier table and layout back where they were (the new ones could not be
    /// made).
    pub fn put_back(self) -> anyhow::Result<()> {
        for (map, path) in self.earlier {
            map.pin(&path)
                .with_context(|| format!("pinning {} back", path.display()))?;
        }
        Ok(())
    }

    /// Writes the layout and the carried flows into the tables the loader made or kept (before
    /// the new program is attached).
    pub fn restore(self, pins: &PinLayout) -> anyhow::Result<()> {
        flow_table::write_layout(pins, &self.layout)?;
        let mut table = FlowTable::open(pins)?;
        for (key, flow) in self.carried {
            table.publish(&key, Some(flow))?;
        }
        Ok(())
    }
}
