//! The kernel side as the daemon sees it: pinned state, the typed maps, and the XDP program.
pub mod maps;
pub mod pins;
pub mod xdp;

pub use maps::{FlowMaps, ReasonCounters};
pub use pins::PinLayout;
