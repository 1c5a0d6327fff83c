//! Established calls carry on with the daemon gone: 50 SIP calls with media through the sbc,
//! the daemon killed with SIGKILL and *not* restarted; the XDP program alone carries the
//! callers' and callees' INFO and OPTIONS (and the answers) and the BYE of whoever hangs up,
//! while the RTP of calls not ended yet keeps flowing. When the daemon is started again, every
//! call that ended meanwhile gets its one `call_ended` event, with its real duration, and its
//! media session goes.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::events::{CallEnd, CallEnded, Kind};
use sbc_tests::{
    calls::answered_calls,
    daemon::DaemonOptions,
    lab::{CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    rtp::Traffic,
    scripted,
    sipp::{self, CallKind},
};

const CALLS: u32 = 50;
/// At most this much media may be lost per call and direction.
const MAX_MEDIA_LOSS: Duration = Duration::from_millis(100);
/// How long the calls stay up before their in-dialog requests (the scenarios' pause).
const HELD: Duration = Duration::from_secs(5);

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Who hangs up.
#[derive(Clone, Copy, Debug)]
enum HangsUp {
    Caller,
    Callee,
}

fn calls_carry_on_without_the_daemon(tag: &str, hangs_up: HangsUp) {
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let (uas, uac) = match hangs_up {
        HangsUp::Caller => ("kernel_uas", "kernel_uac"),
        HangsUp::Callee => ("kernel_uas_callee_hangs_up", "kernel_uac_callee_hangs_up"),
    };
    // Topology hiding keeps a backend's Vias in a transaction of the daemon's until the
    // answer: with it, the callee's requests wait for the daemon (retransmitted until it is
    // back). Without it, all of a call's SIP is the kernel's alone, which this test holds.
    let options = DaemonOptions {
        extra_config: "[sip.hiding]\ntopology = false\n".to_owned(),
        ..Default::default()
    };
    let (mut backend, mut daemon) = scripted::start(&lab, uas, CALLS, options);
    let (result, answered_at, report) = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                addr(SBC_PUBLIC, 5060),
                CallKind::Scenario(uac),
                (CALLS, 50),
                Duration::from_secs(40),
            )
        });
        let media = answered_calls(&daemon, CALLS as usize, Duration::from_secs(15));
        let answered_at = Instant::now();
        // Media for as long as the calls are held, across the daemon's death.
        let traffic = Traffic::start(&lab, &media, HELD - Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1500));
        daemon.kill9();
        let report = traffic.finish().expect("media");
        let result = caller.join().expect("caller thread").expect("SIPp caller");
        (result, answered_at, report)
    });
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(CALLS), 0),
        "every call's INFO, OPTIONS and BYE answered end to end with no daemon:\n{}\n{}",
        result.output,
        daemon.log()
    );
    assert_eq!(
        backend.wait(Duration::from_secs(10)),
        Some(0),
        "the backend did not play every call through (INFO, OPTIONS, its INFO, BYE):\n{}",
        backend.output()
    );
    report.assert_loss_within(MAX_MEDIA_LOSS, "with the daemon gone");
    let hung_up_at = Instant::now();
    // All of it went through the kernel: per call, the caller's INFO, OPTIONS and the callee's
    // INFO, a BYE, and their answers; nothing passed up to the daemon that was not there.
    let maps = daemon.maps().expect("sbc maps, from the pins");
    let reasons = maps["xdp_reasons"].clone();
    let count = |name: &str| reasons[name].as_u64().unwrap_or_default();
    let forwarded = (count("forward_sip_request"), count("forward_sip_response"));
    assert_eq!(
        forwarded,
        (4 * u64::from(CALLS), 4 * u64::from(CALLS)),
        "{reasons}"
    );
    let passed_up: Vec<&String> = reasons
        .as_object()
        .expect("counters by name")
        .keys()
        .filter(|name| {
            name.starts_with("pass_sip_in_dialog") || name.starts_with("pass_sip_response")
        })
        .filter(|name| count(name) > 0)
        .collect();
    assert!(passed_up.is_empty(), "{reasons}");
    // `sbc maps` shows each dialog as the kernel holds it, ended by the BYE it forwarded.
    let dialogs = maps["dialogs"].as_array().expect("dialogs");
    assert_eq!(dialogs.len(), CALLS as usize);
    for dialog in dialogs {
        assert_eq!(dialog["ended"]["code"], 200, "{dialog}");
        assert_eq!(dialog["caller"]["forwarded_in_kernel"], true, "{dialog}");
        assert_eq!(
            dialog["callee"]["requests"],
            2 - u64::from(matches!(hangs_up, HangsUp::Caller)),
            "{dialog}"
        );
    }

    // The daemon comes back: the calls it held ended while it was away, each once.
    daemon.spawn(&[]).expect("the daemon starts again");
    let events = daemon.events_once("call_ended", CALLS as usize, Duration::from_secs(10));
    let mut ends: BTreeMap<String, Vec<&CallEnded>> = BTreeMap::new();
    for ended in events.iter().filter_map(CallEnded::of_ref) {
        ends.entry(ended.call_id.clone()).or_default().push(ended);
    }
    assert_eq!(
        ends.len(),
        CALLS as usize,
        "calls with an end event: {ends:?}"
    );
    // The duration runs from the answer to the BYE's answer in the kernel: at least the time
    // the calls were held, at most until the test saw them done (not until the restart).
    let longest = hung_up_at.duration_since(answered_at) + Duration::from_secs(2);
    for (call_id, events) in &ends {
        assert_eq!(
            events.len(),
            1,
            "{call_id} ended more than once: {events:?}"
        );
        let event = events[0];
        assert_eq!(
            (event.reason, event.final_code),
            (CallEnd::Bye, Some(200)),
            "{event:?}"
        );
        let duration = Duration::from_millis(event.duration_ms.expect("an answered call"));
        assert!(
            duration >= HELD - Duration::from_secs(1) && duration <= longest,
            "{call_id} lasted {duration:?}, not its real duration (held {HELD:?}, done within {longest:?}): {event:?}"
        );
    }
    let left = daemon.calls().expect("calls");
    assert!(left.is_empty(), "{left:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.sessions().expect("sessions").is_empty() {
        assert!(Instant::now() < deadline, "media sessions left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn calls_carry_on_without_the_daemon_and_the_caller_hangs_up() {
    calls_carry_on_without_the_daemon("no-daemon-a", HangsUp::Caller);
}

#[test]
fn calls_carry_on_without_the_daemon_and_the_callee_hangs_up() {
    calls_carry_on_without_the_daemon("no-daemon-b", HangsUp::Callee);
}
