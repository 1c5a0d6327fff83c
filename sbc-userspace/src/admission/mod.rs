//! Admission control: who may send how much.
//!
//! Two layers with one configuration (`[admission]`):
//! - the guard (`guard`): per-datagram limits on out-of-dialog SIP, CIDR allow- and blocklists
//!   and dynamic blocks, enforced by the XDP program (or by the daemon itself with the
//!   userspace dataplane) before the proxy spends anything on a datagram;
//! - the limiter (`limiter`): the proxy's per-request decisions for new calls and other
//!   out-of-dialog requests (rates per source and overall, concurrent calls, overload),
//!   refused politely with 503 and Retry-After.
//!
//! Known dialogs pass both untouched: established calls are never limited.
pub mod config;
pub mod control;
pub mod enumeration;
pub mod guard;
pub mod limiter;
pub mod rate;

pub use config::{AdmissionConfig, QUEUE_LIMIT, SourceLimits};
pub use control::AdmissionControl;
pub use guard::{BlockInfo, SipGuard};
pub use limiter::{Admission, AdmissionCounters, AdmissionTotals, FleetShare, Refusal};
