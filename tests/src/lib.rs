//! The lab the integration tests and the demo run in: network namespaces joined by veth pairs,
//! the sbc daemon started inside one of them, and RTP/RTCP peers in the others.
//!
//! Everything here creates only namespaces and interfaces of its own (named with a per-process
//! prefix), with addresses that exist only inside them, and removes them on drop, also when a
//! test fails.
pub mod bench;
pub mod bpftool;
pub mod calls;
pub mod conformance;
pub mod daemon;
pub mod demo;
pub mod dns_server;
pub mod fleet;
pub mod flood;
pub mod frames;
pub mod http;
pub mod lab;
pub mod netns;
pub mod privileges;
pub mod process_cpu;
pub mod redis;
pub mod responder;
pub mod rtp;
pub mod scripted;
pub mod sip_probe;
pub mod sipp;
pub mod tls;
pub mod xdp_fixture;

use std::time::{Duration, Instant};

/// Waits up to `limit` for `holds` to be true.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut holds: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !holds() {
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
