//! The sbc behind a 1:1 NAT, as on a cloud VM: pub0 holds only an inside address, and the
//! carrier reaches it through the NAT's outside address (nftables DNAT/SNAT in a namespace of
//! its own, `Lab::behind_nat`), which the sbc advertises (`sip.public_advertise`). Calls must
//! have audio both ways, relayed in the kernel once latched, and the carrier must never be
//! told the inside address nor the backends' (topology hiding, on by default: its SIPp
//! scenario checks every message it receives), while its in-dialog requests still go through
//! the kernel. The carrier's own SDP names a private address (a carrier behind its own NAT):
//! its media is latched where it really comes from (symmetric RTP, the default).
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc_tests::{
    calls::ended_pcap_calls,
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sipp::{self, Backend, CallKind},
};

const CALLS: usize = 100;

#[test]
fn calls_through_a_one_to_one_nat_have_audio_and_name_only_the_outside_address() {
    require_lab_privileges();
    let lab = Lab::behind_nat("nat").expect("lab behind a NAT");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            ..Default::default()
        },
    )
    .expect("daemon");

    let result = sipp::place_calls(
        &lab.caller,
        SocketAddr::new(CALLER.into(), 5060),
        SocketAddr::new(SBC_PUBLIC.into(), 5060),
        CallKind::Scenario("nat_uac"),
        (CALLS as u32, 20),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), CALLS as u64, 0),
        "calls failed (a failed check of what the carrier was told fails its call):\n{}\n{}",
        result.output,
        daemon.log()
    );

    let (_, share) = ended_pcap_calls(&daemon, CALLS);
    assert!(
        share >= 0.98,
        "only {share:.4} of RTP relayed in the kernel"
    );
    // The carrier's in-dialog requests, sent to the Contact we gave for the hidden backend,
    // were the kernel's to forward (to the backend's own): every BYE at least, and not one
    // went up for a Request-URI the kernel did not know.
    let maps = daemon.maps().expect("sbc maps, from the pins");
    let reasons = &maps["xdp_reasons"];
    let count = |name: &str| reasons[name].as_u64().unwrap_or_default();
    assert!(
        count("forward_sip_request") >= CALLS as u64 && count("pass_sip_in_dialog_mismatch") == 0,
        "{reasons}"
    );
}

/// The outside address read from a file, as a provisioning hook writes a cloud VM's elastic IP:
/// at start, and again on reload, when it moved (SIGHUP or `sbc reload`). What the kernel
/// writes in our Via and Record-Route and what new media sessions advertise follow it; a
/// file that names no address is refused and the running address kept.
#[test]
fn the_outside_address_is_read_from_a_file_and_again_on_reload() {
    require_lab_privileges();
    let lab = Lab::behind_nat("natfile").expect("lab behind a NAT");
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("public-ip");
    std::fs::write(&file, format!("{SBC_PUBLIC}\n")).expect("written");
    let backend = SocketAddr::new(CALLEE.into(), 5060);
    let _backend = Backend::start(&lab.callee, backend).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend],
            sip_keys: format!("public_advertise_file = \"{}\"\n", file.display()),
            ..Default::default()
        },
    )
    .expect("daemon");
    let record_route = || {
        let maps = daemon.maps().expect("sbc maps");
        maps["sip_self"]["public"]["record_route"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(record_route(), format!("<sip:{SBC_PUBLIC}:5060;lr>"));

    // The elastic IP moved: SIGHUP.
    let moved = "198.18.1.9";
    std::fs::write(&file, format!("{moved}\n")).expect("written");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while record_route() != format!("<sip:{moved}:5060;lr>") {
        assert!(
            Instant::now() < deadline,
            "still {}:\n{}",
            record_route(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let session = daemon
        .create_session(
            SocketAddr::new(CALLER.into(), 40000),
            SocketAddr::new(CALLEE.into(), 40000),
            false,
        )
        .expect("a media session")
        .json::<sbc::media::SessionInfo>()
        .expect("its description");
    assert_eq!(session.legs[0].advertised.to_string(), moved);

    // A file that names no address: refused, the running address kept.
    std::fs::write(&file, "<html>metadata service down</html>\n").expect("written");
    let reload = daemon.command(&["reload"]).expect("sbc reload");
    let said = String::from_utf8_lossy(&reload.stderr);
    assert!(
        !reload.status.success() && said.contains("sip.public_advertise_file"),
        "{said}"
    );
    assert_eq!(record_route(), format!("<sip:{moved}:5060;lr>"));
}
