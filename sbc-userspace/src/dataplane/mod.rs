//! The kernel side as the daemon sees it: pinned state, the typed maps, and the XDP program.
mod counters_upgrade;
pub mod dialog_events;
pub mod flow_table;
mod flow_table_upgrade;
pub mod guard_maps;
pub mod maps;
pub mod pins;
mod stats_slots;
pub mod table_sizes;
pub mod xdp;

pub use dialog_events::DialogEvents;
pub use guard_maps::GuardMaps;
pub use maps::{FlowMaps, ReasonCounters};
pub use pins::PinLayout;
