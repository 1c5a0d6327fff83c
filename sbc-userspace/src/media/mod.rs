//! The media plane: relay ports, sessions, latching, and the userspace relay.
mod adopt;
pub mod plane;
pub mod ports;
mod relay;
pub mod session;

pub use plane::{EndReason, MediaError, MediaPlane, MediaSettings, RETRY_AFTER_SECS};
pub use session::{SessionInfo, SessionSpec};
