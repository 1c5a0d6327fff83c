//! Types shared by the XDP program and the daemon: the map contract.
//!
//! Every type that crosses the kernel/userspace boundary lives here and nowhere else. Layouts are
//! `#[repr(C)]` with explicit padding and compile-time size checks, so both sides agree on every
//! byte; multi-byte protocol fields (addresses, ports) are kept in network byte order so the XDP
//! program can compare and copy them without conversions.
#![no_std]

// Tests run on the host and may allocate.
#[cfg(test)]
extern crate std;

pub mod bench;
pub mod branch;
pub mod call_id;
pub mod checksum;
pub mod dialog;
pub mod flow;
pub mod flow_table;
pub mod guard;
pub mod maps;
pub mod reason;
pub mod sip_forward;
pub mod words;

pub use dialog::{Dialog, DialogEnd, DialogEnded, DialogLeg, SipSelf, SipSelves};
pub use flow::{Flow, FlowKey, FlowStats, IpAddress, SourceCheck};
pub use flow_table::{FlowEntry, FlowTableLayout};
pub use guard::{
    Block, GuardConfig, PacketLimit, SipListeners, SourceBucket, SourceLimit, SourceRule,
    TokenBucket,
};
pub use reason::Reason;
