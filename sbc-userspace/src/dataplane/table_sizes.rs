//! How large the kernel's per-call tables are made: from what the configuration can hold, not
//! for the most any configuration could need. The object declares the largest sizes
//! (`sbc_common::maps::MAX_*`); the loader replaces them with these.
//!
//! A pinned table of another size (the port range changed across a restart) is made anew when
//! it holds nothing; one that holds calls is kept as it is, with a warning, so that a restart
//! never costs a call: the new size takes effect at the next start without calls. (The flow
//! table follows its layout instead, its flows carried: `flow_table_upgrade`.)
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{HashMap, MapData, MapInfo};
use sbc_common::{
    Dialog, FlowStats,
    maps::{DIALOGS, FLOW_STATS, PARTIES},
};
use tracing::{info, warn};

use super::PinLayout;
use crate::config::Config;

/// Flows a media session can install at most: two legs, RTP and RTCP.
const FLOWS_PER_SESSION: u64 = 4;
/// Fewest calls the dialog tables are made for: they allocate per entry, so a floor costs
/// nothing and spares a tiny port range from refusing kernel forwarding early.
const MIN_CALLS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// The flow counters `SBC_FLOW_STATS`: one per flow, a flow per local address and port.
    /// (The flow table itself has an entry for every address and port: `flow_table`.)
    pub flows: u32,
    /// `SBC_DIALOGS` and `SBC_PARTIES`: at most one of each per call.
    pub calls: u32,
}

impl TableSizes {
    /// A flow is keyed by the local address and port it arrives on, so the port range on each
    /// media address bounds them (or `media.max_sessions`, if lower). Every call holds a port
    /// on each side, so calls are at most half the flows (or `admission.max_calls`, if lower);
    /// twice that leaves room for dialogs whose end the daemon has not yet cleared.
    pub fn of(config: &Config) -> Self {
        let media = &config.media;
        let ports = u64::from(media.port_max - media.port_min) + 1;
        let addresses = if media.public_address == media.private_address() {
            1
        } else {
            2
        };
        let mut flows = ports * addresses;
        if media.max_sessions > 0 {
            flows = flows.min(FLOWS_PER_SESSION * media.max_sessions as u64);
        }
        let mut calls = flows / 2;
        if config.admission.max_calls > 0 {
            calls = calls.min(u64::from(config.admission.max_calls));
        }
        let calls = (2 * calls).max(MIN_CALLS);
        let fit = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            flows: fit(flows),
            calls: fit(calls),
        }
    }

    /// Kernel memory the flow counters take whatever the load: a per-CPU array is allocated
    /// whole (the hash tables allocate per entry).
    pub fn counters_bytes(&self, cpus: usize) -> u64 {
        let entry = size_of::<FlowStats>().next_multiple_of(8) as u64;
        u64::from(self.flows) * entry * cpus as u64
    }

    /// The size each per-call table is to be created with.
    pub fn of_map(&self, name: &str) -> Option<u32> {
        match name {
            FLOW_STATS => Some(self.flows),
            DIALOGS | PARTIES => Some(self.calls),
            _ => None,
        }
    }
}

/// Tables sized together, and whether calls are held in them (given the first table's pin,
/// and whether any flow is installed).
struct Sized {
    maps: &'static [&'static str],
    holds_calls: fn(&Path, bool) -> anyhow::Result<bool>,
}

const SIZED: &[Sized] = &[
    Sized {
        maps: &[FLOW_STATS],
        holds_calls: |_, flows_installed| Ok(flows_installed),
    },
    Sized {
        maps: &[DIALOGS],
        holds_calls: |path, _| not_empty::<u64, Dialog>(path),
    },
    // Rebuilt from the calls at every start: never worth keeping at another size.
    Sized {
        maps: &[PARTIES],
        holds_calls: |_, _| Ok(false),
    },
];

fn not_empty<K: aya::Pod, V: aya::Pod>(path: &Path) -> anyhow::Result<bool> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let map: HashMap<MapData, K, V> = HashMap::try_from(aya::maps::Map::HashMap(data))?;
    Ok(map.keys().next().is_some())
}

fn pinned_size(path: &Path) -> anyhow::Result<u32> {
    Ok(MapInfo::from_pin(path)
        .with_context(|| format!("reading {}", path.display()))?
        .max_entries())
}

/// Unpins each pinned per-call table whose size differs from `sizes` and holds no call, so
/// the loader creates it anew at its configured size; keeps, with a warning, those that hold
/// calls. The old program keeps its copies until its links take the new program.
pub fn fit_pinned(
    layout: &PinLayout,
    sizes: &TableSizes,
    flows_installed: bool,
) -> anyhow::Result<()> {
    for group in SIZED {
        // The group's first pinned table of another size, if any.
        let mut differing = None;
        for &name in group.maps {
            let path = layout.map(name);
            let wanted = sizes.of_map(name).expect("every sized map has a size");
            if path.exists() {
                let pinned = pinned_size(&path)?;
                if pinned != wanted {
                    differing = Some((name, pinned, wanted));
                    break;
                }
            }
        }
        let Some((first, pinned, wanted)) = differing else {
            continue;
        };
        if (group.holds_calls)(&layout.map(group.maps[0]), flows_installed)? {
            warn!(
                map = first,
                pinned,
                configured = wanted,
                "a kernel table holds calls at the size of a previous configuration: kept \
                 until a start without calls (or `sbc run --clean`, which drops them)"
            );
            continue;
        }
        for &name in group.maps {
            let path = layout.map(name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("unpinning {}", path.display()))?;
            }
        }
        info!(
            map = first,
            pinned, wanted, "kernel table resized to the configuration (it held no call)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "instance = \"lab\"\n[dataplane]\ninterfaces = [\"pub0\"]\n[media]\n\
             public_address = \"198.51.100.10\"\nport_min = 20000\nport_max = 29999\n{extra}"
        );
        Config::parse(&text).expect("config")
    }

    #[test]
    fn flows_follow_the_port_range_on_each_media_address() {
        let one = TableSizes::of(&config(""));
        assert_eq!(one.flows, 10_000);
        assert_eq!(one.calls, 10_000);
        let two = TableSizes::of(&config("private_address = \"10.0.0.10\"\n"));
        assert_eq!(two.flows, 20_000);
        assert_eq!(two.calls, 20_000);
    }

    #[test]
    fn session_and_call_limits_bound_the_tables() {
        let sessions = TableSizes::of(&config("max_sessions = 1000\n"));
        assert_eq!(sessions.flows, 4_000);
        assert_eq!(sessions.calls, 4_000);
        let calls = TableSizes::of(&config("[admission]\nmax_calls = 100\n"));
        assert_eq!(calls.flows, 10_000);
        assert_eq!(calls.calls, MIN_CALLS as u32);
        let calls = TableSizes::of(&config("[admission]\nmax_calls = 3000\n"));
        assert_eq!(calls.calls, 6_000);
    }
}
