//! The kernel flow table as the daemon reads and writes it: each flow at the entry its layout
//! gives its local address and port, published in two writes so that the XDP program never
//! relays by a half-written flow (`sbc_common::flow_table`).
use anyhow::Context as _;
use aya::maps::{Array, Map, MapData};
use sbc_common::{
    Flow, FlowEntry, FlowKey, FlowTableLayout,
    maps::{FLOW_LAYOUT, FLOWS},
};

use super::{PinLayout, maps};
use crate::config::Config;

/// The layout a configuration asks for: every port of the media range on each media address.
pub fn configured_layout(config: &Config) -> FlowTableLayout {
    let media = &config.media;
    let mut layout = FlowTableLayout {
        port_min: media.port_min,
        ports: u32::from(media.port_max - media.port_min) + 1,
        ..Default::default()
    };
    for address in [media.public_address, media.private_address()] {
        // Two addresses always fit.
        let _ = layout.add_address(address.into());
    }
    layout
}

pub struct FlowTable {
    entries: Array<MapData, FlowEntry>,
    layout: FlowTableLayout,
}

impl FlowTable {
    /// Opens the pinned table and its layout.
    pub fn open(pins: &PinLayout) -> anyhow::Result<Self> {
        let entries = Array::try_from(Map::Array(maps::open(pins, FLOWS)?))?;
        let layout = read_layout(pins)?;
        Ok(Self { entries, layout })
    }

    pub fn layout(&self) -> &FlowTableLayout {
        &self.layout
    }

    fn index(&self, key: &FlowKey) -> anyhow::Result<u32> {
        self.layout.index(key).with_context(|| {
            format!(
                "{} is outside the kernel flow table (ports {}..={} on {} addresses)",
                crate::media::session::socket_addr(&key.addr, key.port),
                self.layout.port_min,
                u32::from(self.layout.port_min) + self.layout.ports - 1,
                self.layout.address_count
            )
        })
    }

    /// The entry a key is kept at (what `bpftool map lookup` takes).
    pub fn entry_of(&self, key: &FlowKey) -> Option<u32> {
        self.layout.index(key)
    }

    /// The flow installed at `key`, as the program reads it.
    pub fn get(&self, key: &FlowKey) -> Option<Flow> {
        let index = self.layout.index(key)?;
        self.entries.get(&index, 0).ok()?.published()
    }

    /// Installs or replaces (`Some`) or removes (`None`) the flow at `key`.
    pub fn publish(&mut self, key: &FlowKey, flow: Option<Flow>) -> anyhow::Result<()> {
        let index = self.index(key)?;
        let current = self
            .entries
            .get(&index, 0)
            .context("reading the kernel flow table")?;
        for entry in current.publishing(flow) {
            self.entries
                .set(index, entry, 0)
                .context("writing the kernel flow table")?;
        }
        Ok(())
    }

    /// Every installed flow (a read of each entry: for a start and for `sbc maps`).
    pub fn installed(&self) -> anyhow::Result<Vec<(FlowKey, Flow)>> {
        let mut flows = Vec::new();
        for (index, entry) in (0..self.layout.capacity()).zip(self.entries.iter()) {
            let entry = entry.context("reading the kernel flow table")?;
            if let (Some(flow), Some(key)) = (entry.published(), self.layout.key(index)) {
                flows.push((key, flow));
            }
        }
        Ok(flows)
    }
}

/// The layout pinned beside the table.
pub fn read_layout(pins: &PinLayout) -> anyhow::Result<FlowTableLayout> {
    let map: Array<MapData, FlowTableLayout> =
        Array::try_from(Map::Array(maps::open(pins, FLOW_LAYOUT)?))?;
    map.get(&0, 0)
        .context("reading the kernel flow table's layout")
}

/// Writes the layout of a table the loader just made (before its program is attached).
pub fn write_layout(pins: &PinLayout, layout: &FlowTableLayout) -> anyhow::Result<()> {
    let mut map: Array<MapData, FlowTableLayout> =
        Array::try_from(Map::Array(maps::open(pins, FLOW_LAYOUT)?))?;
    map.set(0, layout, 0)
        .context("writing the kernel flow table's layout")
}
