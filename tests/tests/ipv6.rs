//! Calls over IPv6, and calls between the families: SIPp callers and backends on the lab's IPv6
//! links, RTP both ways. Between IPv6 legs the XDP program relays the media (its reason
//! counters say so); between an IPv4 carrier and an IPv6 backend the daemon's relay anchors
//! the call across the families, the kernel sending that media up.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sbc_tests::{
    calls::ended_pcap_calls,
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE6, CALLER, CALLER6, Lab, SBC_PRIVATE6, SBC_PUBLIC, SBC_PUBLIC6},
    privileges::require_lab_privileges,
    sipp::{self, Backend, CallKind},
};

const CALLS: usize = 50;

/// Places `CALLS` calls with media from the caller at `caller` to the sbc at `sbc`, each of
/// which must succeed; the share of RTP the kernel relayed, and its reason counters.
fn calls_with_media(
    lab: &Lab,
    daemon: &Daemon,
    caller: SocketAddr,
    sbc: SocketAddr,
) -> (f64, serde_json::Value) {
    let result = sipp::place_calls(
        &lab.caller,
        caller,
        sbc,
        CallKind::WithMedia,
        (CALLS as u32, 10),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), CALLS as u64, 0),
        "not every call succeeded:\n{}\n{}",
        result.output,
        daemon.log()
    );
    let (_, share) = ended_pcap_calls(daemon, CALLS);
    let maps = daemon.maps().expect("sbc maps, from the pins");
    (share, maps["xdp_reasons"].clone())
}

/// The lab with a SIPp backend on the callee's IPv6 address and the sbc bound on `public`
/// and `private`: 50 calls with media from the caller at `caller`; the kernel's share of the
/// RTP and its reason counters.
fn calls_between(
    tag: &str,
    (public, private): (IpAddr, IpAddr),
    caller: IpAddr,
) -> (f64, serde_json::Value) {
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let backend = SocketAddr::new(CALLEE6.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            addresses: Some((public, private)),
            ..Default::default()
        },
    )
    .expect("daemon");
    calls_with_media(
        &lab,
        &daemon,
        SocketAddr::new(caller, 5060),
        SocketAddr::new(public, 5060),
    )
}

fn count(reasons: &serde_json::Value, name: &str) -> u64 {
    reasons[name].as_u64().unwrap_or_default()
}

#[test]
fn ipv6_calls_have_their_media_relayed_in_the_kernel() {
    let (share, reasons) = calls_between(
        "ipv6",
        (SBC_PUBLIC6.into(), SBC_PRIVATE6.into()),
        CALLER6.into(),
    );
    assert!(
        share >= 0.98,
        "only {share:.4} of RTP relayed in the kernel: {reasons}"
    );
    assert!(
        count(&reasons, "forward_redirect") > 0 && count(&reasons, "pass_family_translation") == 0,
        "{reasons}"
    );
    // The caller's SIP went through the guard over IPv6 (within its limits).
    assert!(count(&reasons, "pass_sip") > 0, "{reasons}");
}

#[test]
fn a_call_from_ipv4_to_an_ipv6_backend_is_anchored_across_the_families() {
    let (share, reasons) = calls_between(
        "mixed",
        (SBC_PUBLIC.into(), SBC_PRIVATE6.into()),
        CALLER.into(),
    );
    // Every call had its media both ways (`ended_pcap_calls` checks each call's counters);
    // the kernel sent it up to be translated, as it must.
    assert!(
        count(&reasons, "pass_family_translation") > 0,
        "{reasons} (kernel share {share:.4})"
    );
}
