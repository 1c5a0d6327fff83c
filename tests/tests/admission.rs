//! Admission control and flood protection in the lab: polite refusals for sources over their
//! limits, allowlisted trunks, scanners blocked and unblocked, established calls that keep
//! working from a source that is being limited, and a flood that dies in the kernel while
//! SIPp's calls go through.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use sbc::events::{CallEnd, CallEnded};
use sbc_tests::{
    daemon::{Daemon, DaemonOptions},
    flood::{self, Flood, Mix},
    lab::{CALLEE, CALLER, Lab, ROGUE, SBC_PUBLIC},
    netns::Netns,
    privileges::require_lab_privileges,
    scripted, sip_probe,
    sipp::{self, Backend, CallKind, CallerResult},
};

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

const SBC_SIP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(SBC_PUBLIC), 5060);

/// The lab with SIPp's answering backend and the daemon, configured with `admission`.
fn setup(tag: &str, dataplane: &'static str, admission: &str) -> (Lab, Backend, Daemon) {
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let backend = Backend::start(&lab.callee, backend_address).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            dataplane,
            sip_backends: vec![backend_address],
            extra_config: admission.to_owned(),
            ..Default::default()
        },
    )
    .expect("daemon");
    (lab, backend, daemon)
}

/// `calls` calls at `rate` per second from the caller, each answered and hung up at once or
/// refused with 503 and Retry-After (`tests/scenarios/admission_uac.xml`); SIPp fails a call
/// that gets anything else.
fn call_or_refusal(lab: &Lab, daemon: &Daemon, calls: u32, rate: u32) -> CallerResult {
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        SBC_SIP,
        CallKind::Scenario("admission_uac"),
        (calls, rate),
        Duration::from_secs(60),
    )
    .expect("SIPp caller");
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), u64::from(calls), 0),
        "a call was neither answered nor refused with Retry-After:\n{}\n{}",
        result.output,
        daemon.log()
    );
    result
}

fn count_events(daemon: &Daemon, name: &str) -> usize {
    daemon
        .events()
        .iter()
        .filter(|event| event.name() == name)
        .count()
}

/// Events are written as calls end; the last BYE may still be in flight.
fn wait_for_events(daemon: &Daemon, name: &str, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = count_events(daemon, name);
        if seen >= count || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn blocked_addresses(daemon: &Daemon) -> Vec<IpAddr> {
    daemon
        .blocks()
        .expect("blocks")
        .iter()
        .map(|block| block.address)
        .collect()
}

/// Sends one OPTIONS to the SBC and returns the status codes of the answers.
fn options_answers(ns: &Netns, local: SocketAddr, user_agent: &str) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call_id = format!(
        "options-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let request = sip_probe::options(local, SBC_SIP, &call_id, user_agent);
    sip_probe::send_waiting(ns, local, SBC_SIP, &request, Duration::from_millis(700))
        .expect("probe")
        .iter()
        .filter_map(|answer| answer.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok())
        .collect()
}

#[test]
fn a_source_slightly_over_its_limit_gets_503_for_the_excess_only() {
    let (lab, _backend, daemon) = setup(
        "adm-over",
        "xdp",
        "[admission.source]\ninvites_per_sec = 5\ninvite_burst = 5\n",
    );
    // 6 calls/s for 10 s against 5/s with a burst of 5: about 55 fit, the rest do not.
    let calls = 60;
    call_or_refusal(&lab, &daemon, calls, 6);
    let refused = daemon
        .admission_totals()
        .unwrap()
        .refused_source_invite_rate;
    let answered = wait_for_events(&daemon, "call_answered", (calls as u64 - refused) as usize);
    eprintln!("{answered} calls answered, {refused} refused with 503");
    assert!(
        (1..=15).contains(&refused),
        "{refused} of {calls} calls refused at 6/s against a limit of 5/s:\n{}",
        daemon.log()
    );
    assert_eq!(
        answered as u64 + refused,
        u64::from(calls),
        "every call is either answered or refused"
    );
    assert!(
        blocked_addresses(&daemon).is_empty(),
        "a source slightly over its limit is refused politely, not blocked"
    );
}

#[test]
fn an_allowlisted_trunk_at_five_times_the_default_limit_is_never_limited() {
    let (lab, _backend, daemon) = setup(
        "adm-allow",
        "xdp",
        &format!(
            "[admission]\nallowlist = [\"{CALLER}/32\"]\n\
             [admission.source]\ninvites_per_sec = 4\ninvite_burst = 4\n\
             [admission.allowlisted]\npackets_per_sec = 2000\npacket_burst = 4000\n\
             invites_per_sec = 40\ninvite_burst = 40\n"
        ),
    );
    // 20 calls/s: five times the per-source limit.
    call_or_refusal(&lab, &daemon, 100, 20);
    assert_eq!(wait_for_events(&daemon, "call_answered", 100), 100);
    let totals = daemon.admission_totals().unwrap();
    assert_eq!(
        (
            totals.refused_source_invite_rate,
            totals.refused_global_invite_rate,
            totals.refused_overload
        ),
        (0, 0, 0),
        "{totals:?}"
    );
    for reason in ["drop_sip_rate_limited", "drop_sip_blocked"] {
        assert_eq!(daemon.guard_verdicts(reason).unwrap(), 0, "{reason}");
    }

    // A scanner's User-Agent from the trunk (a PBX that says "friendly-scanner", say) blocks
    // nothing: it is answered, and nothing lists or reports it as blocked.
    let answers = options_answers(&lab.caller, addr(CALLER, 5098), "friendly-scanner");
    assert_eq!(answers, vec![200], "the allowlisted trunk's OPTIONS");
    assert!(
        blocked_addresses(&daemon).is_empty(),
        "the trunk is listed as blocked"
    );
    assert_eq!(count_events(&daemon, "source_blocked"), 0);

    // The same caller without the allowlist (reloaded, no restart) is held to 4/s.
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    let without = config.replace(&format!("allowlist = [\"{CALLER}/32\"]\n"), "");
    assert_ne!(config, without);
    std::fs::write(&daemon.config, without).unwrap();
    let reload = daemon.command(&["reload"]).unwrap();
    assert!(reload.status.success(), "{reload:?}");
    call_or_refusal(&lab, &daemon, 40, 20);
    let refused = daemon
        .admission_totals()
        .unwrap()
        .refused_source_invite_rate;
    assert!(
        refused >= 10,
        "only {refused} of 40 calls at 20/s refused once the caller is no longer allowlisted"
    );
}

fn scanner_is_blocked_then_unblocked(dataplane: &'static str) {
    let block = Duration::from_secs(3);
    let (lab, _backend, daemon) = setup(
        &format!("adm-scan-{dataplane}"),
        dataplane,
        &format!("[admission]\nscanner_block_secs = {}\n", block.as_secs()),
    );
    let rogue = addr(ROGUE, 5060);
    assert_eq!(options_answers(&lab.rogue, rogue, "Linphone/5.2"), [200]);

    // The scanner's first request gets no answer at all, and blocks it.
    assert_eq!(
        options_answers(&lab.rogue, rogue, "friendly-scanner"),
        [] as [u16; 0],
        "a scanner was answered:\n{}",
        daemon.log()
    );
    let blocked_at = Instant::now();
    let blocks = daemon.blocks().unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].address, IpAddr::V4(ROGUE));
    assert_eq!(blocks[0].reason, "scanner");
    let listed = daemon.command(&["blocks", "list"]).unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&ROGUE.to_string()),
        "`sbc blocks list` does not show the scanner: {listed:?}"
    );

    // Whatever it sends now is dropped before the proxy; others are served.
    let dropped_before = daemon.guard_verdicts("drop_sip_blocked").unwrap();
    assert_eq!(
        options_answers(&lab.rogue, rogue, "Linphone/5.2"),
        [] as [u16; 0]
    );
    assert!(daemon.guard_verdicts("drop_sip_blocked").unwrap() > dropped_before);
    assert_eq!(
        options_answers(&lab.caller, addr(CALLER, 5070), "Linphone/5.2"),
        [200]
    );

    // After the block time it is answered again.
    let still_blocked = blocked_at.elapsed();
    assert!(
        still_blocked < block,
        "the checks took {still_blocked:?}, longer than the block"
    );
    let deadline = blocked_at + block + Duration::from_secs(3);
    let unblocked_after = loop {
        if options_answers(&lab.rogue, rogue, "Linphone/5.2") == [200] {
            break blocked_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "still blocked long after the block time:\n{}",
            daemon.log()
        );
    };
    assert!(
        unblocked_after >= still_blocked,
        "unblocked after {unblocked_after:?}"
    );
    assert!(blocked_addresses(&daemon).is_empty());
}

#[test]
fn a_scanner_is_blocked_after_its_first_request_and_unblocked_later_xdp() {
    scanner_is_blocked_then_unblocked("xdp");
}

#[test]
fn a_scanner_is_blocked_after_its_first_request_and_unblocked_later_userspace() {
    scanner_is_blocked_then_unblocked("userspace");
}

/// Where a flood comes from, and what it is.
struct Flooder<'a> {
    ns: &'a Netns,
    local: SocketAddr,
    flood: Flood,
}

/// Three calls with re-INVITEs at 1.5 s and 3 s and a BYE at 8 s after they are answered
/// (`reinvite_uac`/`reinvite_uas`), with `flooder` starting once they are up; `during` runs
/// when the flood has ended, before the calls do. Every call must play through, and end with
/// its BYE. Returns the daemon for more checks.
fn calls_through_a_flood(
    lab: &Lab,
    options: DaemonOptions,
    flooder: Flooder,
    during: impl FnOnce(&Daemon),
) -> Daemon {
    let calls = 3;
    let (mut backend, daemon) = scripted::start(lab, "reinvite_uas", calls, options);
    let result = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                SBC_SIP,
                CallKind::Scenario("reinvite_uac"),
                (calls, 3),
                Duration::from_secs(40),
            )
        });
        std::thread::sleep(Duration::from_millis(1200));
        let report = flood::start(flooder.ns, flooder.local, SBC_SIP, flooder.flood)
            .join()
            .expect("flood thread")
            .expect("flood");
        eprintln!("flood: {report:?}");
        during(&daemon);
        caller.join().expect("caller thread").expect("SIPp caller")
    });
    assert_eq!(
        (result.exit_code, result.successful, result.failed),
        (Some(0), u64::from(calls), 0),
        "established calls broke during the flood:\n{}\n{}",
        result.output,
        daemon.log()
    );
    assert_eq!(
        backend.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        backend.output()
    );
    let ended: Vec<CallEnded> = daemon.events_of();
    assert_eq!(ended.len(), calls as usize);
    for event in &ended {
        assert_eq!(event.reason, CallEnd::Bye, "{event:?}");
    }
    daemon
}

fn established_calls_survive_their_source_being_limited(dataplane: &'static str) {
    require_lab_privileges();
    let lab = Lab::up(&format!("adm-est-{dataplane}")).expect("lab");
    let options = DaemonOptions {
        dataplane,
        extra_config: "[admission]\nblock_after_drops = 500\nblock_secs = 60\n".into(),
        ..Default::default()
    };
    // The calls' own source floods out-of-dialog requests: paced so that a daemon deciding
    // in userspace reads them all rather than its socket dropping most of them.
    let flooder = Flooder {
        ns: &lab.caller,
        local: addr(CALLER, 5099),
        flood: Flood {
            packets: 10_000,
            duration: Duration::from_secs(3),
            // Requests that set up no call: the backend's script is for three.
            mix: Mix::Options,
            pace: Some(5_000),
        },
    };
    let daemon = calls_through_a_flood(&lab, options, flooder, |daemon| {
        // Limited by the daemon (503s, and a block for too many of them), by the kernel's
        // packet bucket, or both, depending on which limit the flood reaches first.
        let limited = daemon
            .admission_totals()
            .unwrap()
            .refused_source_request_rate
            + daemon.guard_verdicts("drop_sip_rate_limited").unwrap();
        assert!(
            limited > 0,
            "the caller was never rate limited: {:?}\n{}",
            daemon.stats().unwrap(),
            daemon.log()
        );
        assert!(
            blocked_addresses(daemon).contains(&IpAddr::V4(CALLER)),
            "the caller was not blocked for its flood: {:?}",
            daemon.blocks()
        );
        // A new call from it is not served now.
        let invite = sip_probe::invite(addr(CALLER, 5098), SBC_SIP, "new-while-blocked");
        let answers = sip_probe::send_waiting(
            &lab.caller,
            addr(CALLER, 5098),
            SBC_SIP,
            &invite,
            Duration::from_millis(700),
        )
        .expect("probe");
        assert!(
            answers.is_empty(),
            "a blocked source was served: {answers:?}"
        );
    });
    assert!(daemon.guard_verdicts("pass_sip_dialog").unwrap() > 0);
    assert!(daemon.guard_verdicts("drop_sip_blocked").unwrap() > 0);
}

#[test]
fn established_calls_keep_working_from_a_rate_limited_source_xdp() {
    established_calls_survive_their_source_being_limited("xdp");
}

#[test]
fn established_calls_keep_working_from_a_rate_limited_source_userspace() {
    established_calls_survive_their_source_being_limited("userspace");
}

/// With the userspace dataplane a flood that the limits let through (here: no packet limit,
/// no blocks) reaches the proxy, which falls behind: new requests are shed on arrival while
/// the calls already up keep their re-INVITEs and BYEs.
#[test]
fn an_overloaded_daemon_sheds_new_requests_before_calls_userspace() {
    require_lab_privileges();
    let lab = Lab::up("adm-shed").expect("lab");
    let options = DaemonOptions {
        dataplane: "userspace",
        extra_config: "[admission]\nshed_queue_depth = 32\nblock_after_refusals = 0\n\
                       [admission.source]\npackets_per_sec = 10000000\npacket_burst = 10000000\n"
            .into(),
        ..Default::default()
    };
    let flooder = Flooder {
        ns: &lab.rogue,
        local: addr(ROGUE, 5060),
        // Paced within what the daemon's receiver can read: beyond that the kernel drops at
        // the full socket, blind to what is in the datagrams (which is what XDP is for).
        flood: Flood {
            packets: 240_000,
            duration: Duration::from_secs(8),
            mix: Mix::Options,
            pace: Some(30_000),
        },
    };
    let daemon = calls_through_a_flood(&lab, options, flooder, |_| {});
    let shed = daemon.admission_totals().unwrap().shed_new_requests;
    eprintln!(
        "shed {shed} new requests; {} refused with 503",
        daemon
            .admission_totals()
            .unwrap()
            .refused_source_request_rate
    );
    assert!(shed > 0, "nothing was shed:\n{}", daemon.log());
}

/// The kernel's verdicts on datagrams to the SIP listeners: (dropped, passed to the daemon).
fn sip_verdicts(daemon: &Daemon) -> (u64, u64) {
    let sum = |reasons: &[&str]| -> u64 {
        reasons
            .iter()
            .map(|reason| daemon.guard_verdicts(reason).unwrap())
            .sum()
    };
    (
        sum(&[
            "drop_sip_rate_limited",
            "drop_sip_blocked",
            "drop_sip_blocklisted",
        ]),
        sum(&[
            "pass_sip",
            "pass_sip_dialog",
            "pass_sip_unlimited",
            "pass_sip_unguarded",
        ]),
    )
}

/// SIPp's calls with media, and the daemon CPU time they cost.
fn calls_with_media(lab: &Lab, daemon: &Daemon, calls: u32) -> (CallerResult, Duration) {
    let before = daemon.cpu_time().unwrap();
    let result = sipp::place_calls(
        &lab.caller,
        addr(CALLER, 5060),
        SBC_SIP,
        CallKind::WithMedia,
        (calls, 20),
        Duration::from_secs(90),
    )
    .expect("SIPp caller");
    (result, daemon.cpu_time().unwrap() - before)
}

#[test]
fn a_flood_dies_in_the_kernel_while_calls_with_media_go_through() {
    let (lab, _backend, daemon) = setup("adm-flood", "xdp", "");
    // 12 s of calls at 20/s, each with 7 s of RTP both ways.
    let calls = 240;
    let (quiet, quiet_cpu) = calls_with_media(&lab, &daemon, calls);
    assert_eq!(
        (quiet.successful, quiet.failed),
        (u64::from(calls), 0),
        "calls failed without any flood:\n{}",
        quiet.output
    );

    // The same calls again, while the rogue host floods INVITEs and OPTIONS.
    let (dropped_before, passed_before) = sip_verdicts(&daemon);
    let ((flooded, flooded_cpu), flood) = std::thread::scope(|scope| {
        let flood = flood::start(
            &lab.rogue,
            addr(ROGUE, 5060),
            SBC_SIP,
            Flood {
                packets: 4_000_000,
                duration: Duration::from_secs(11),
                mix: Mix::InvitesAndOptions,
                pace: None,
            },
        );
        let calls = scope.spawn(|| calls_with_media(&lab, &daemon, calls));
        let flood = flood.join().expect("flood thread").expect("flood");
        (calls.join().expect("caller thread"), flood)
    });
    let (dropped, passed) = sip_verdicts(&daemon);
    let (dropped, passed) = (dropped - dropped_before, passed - passed_before);
    eprintln!(
        "flood: {} packets in {:.1?} ({:.0} packets/s); at the SBC {dropped} SIP datagrams \
         dropped in the kernel, {passed} passed to the daemon; \
         daemon CPU {quiet_cpu:?} without the flood, {flooded_cpu:?} with it; \
         calls {}/{calls} without, {}/{calls} with",
        flood.sent,
        flood.elapsed,
        flood.packets_per_sec(),
        quiet.successful,
        flooded.successful,
    );
    assert!(
        flooded.successful * 1000 >= u64::from(calls) * 995,
        "fewer than 99.5 % of the calls succeeded during the flood:\n{}\n{}",
        flooded.output,
        daemon.log()
    );
    assert!(
        flood.elapsed >= Duration::from_secs(10),
        "the flood stopped early"
    );
    assert!(
        flood.packets_per_sec() >= 50_000.0,
        "the lab generated only {:.0} packets/s",
        flood.packets_per_sec()
    );
    // The lab's own links lose a little of the flood on the way (veth queues overflow);
    // what reaches the SBC dies in XDP, except the first few packets the source's bucket
    // lets through before it is blocked, next to the calls' own signalling.
    assert!(
        (dropped + passed) as f64 >= flood.sent as f64 * 0.9,
        "only {} of {} flood packets reached the SBC",
        dropped + passed,
        flood.sent
    );
    assert!(
        passed <= u64::from(calls) * 12 + 1_000,
        "{passed} SIP datagrams reached the daemon for {calls} calls"
    );
    assert!(
        dropped as f64 >= (dropped + passed) as f64 * 0.99,
        "the kernel dropped only {dropped} of {} SIP datagrams",
        dropped + passed
    );
    assert!(
        flooded_cpu <= quiet_cpu * 2,
        "the daemon used {flooded_cpu:?} of CPU during the flood, {quiet_cpu:?} without"
    );
}

/// A caller that misses our 503 (a lost datagram, under load) retransmits its INVITE: it gets
/// the same 503 again, and the attempt, the refusal and its weight towards a block count once.
#[test]
fn a_retransmitted_refused_invite_gets_the_same_answer_and_counts_once() {
    let (lab, _backend, daemon) = setup(
        "adm-retrans",
        "xdp",
        "[admission.source]\ninvites_per_sec = 1\ninvite_burst = 1\n",
    );
    let local = addr(CALLER, 5090);
    let first = sip_probe::invite(local, SBC_SIP, "retrans-first");
    let answers = sip_probe::send(&lab.caller, local, SBC_SIP, &first).expect("first");
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 200")),
        "{answers:?}"
    );

    let refused = sip_probe::invite(local, SBC_SIP, "retrans-refused");
    let mut to_tags = Vec::new();
    for _ in 0..3 {
        let answers = sip_probe::send(&lab.caller, local, SBC_SIP, &refused).expect("refused");
        let last = answers.last().cloned().unwrap_or_default();
        assert!(last.starts_with("SIP/2.0 503"), "{answers:?}");
        assert!(last.contains("Retry-After:"), "{last}");
        let to = last
            .lines()
            .find(|l| l.starts_with("To:"))
            .unwrap_or_default()
            .to_owned();
        to_tags.push(to);
    }
    assert!(
        to_tags.windows(2).all(|w| w[0] == w[1]),
        "three different answers: {to_tags:?}"
    );
    assert_eq!(
        daemon
            .admission_totals()
            .unwrap()
            .refused_source_invite_rate,
        1
    );
    let status = daemon.status().expect("status");
    assert_eq!(status.calls.map(|c| c.attempted), Some(2), "{status:?}");
}

/// The overload signal counts the time a datagram waits in the kernel's receive buffer, not
/// only in the proxy's queue: with the daemon stopped (SIGSTOP) for 1.5 s while INVITEs
/// arrive, they have waited past the bounds (`overload_delay_ms` 1 s: intake sheds at half
/// of it) when it resumes, and are refused at once (a 503 and nothing else: no 100 Trying,
/// nothing forwarded); an allowlisted trunk's, given four times as long, is served, and a
/// fresh INVITE afterwards is too.
#[test]
fn requests_that_waited_in_the_kernel_buffer_are_refused_as_stale() {
    let (lab, _backend, daemon) = setup(
        "adm-stale",
        "xdp",
        &format!("[admission]\nallowlist = [\"{CALLER}/32\"]\noverload_delay_ms = 1000\n"),
    );
    let pid = daemon.pid().expect("running") as libc::pid_t;
    // SAFETY: signals to the daemon this test started, by its PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let send = |ns: &Netns, local: SocketAddr, call_id: &str| {
        let invite = sip_probe::invite(local, SBC_SIP, call_id);
        sip_probe::send_waiting(ns, local, SBC_SIP, &invite, Duration::from_secs(3)).expect("send")
    };
    let (rogue, send) = (&lab.rogue, &send);
    let (stale, trunk) = std::thread::scope(|scope| {
        let stale: Vec<_> = (0..5u16)
            .map(|n| {
                let call_id = format!("stale-{n}");
                scope.spawn(move || send(rogue, addr(ROGUE, 5200 + n), &call_id))
            })
            .collect();
        let trunk = scope.spawn(|| send(&lab.caller, addr(CALLER, 5300), "trunk"));
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let stale: Vec<Vec<String>> = stale
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        (stale, trunk.join().expect("thread"))
    });
    for (n, answers) in stale.iter().enumerate() {
        assert!(
            answers.len() == 1
                && answers[0].starts_with("SIP/2.0 503")
                && answers[0].contains("Retry-After:"),
            "stale INVITE {n} was not refused at once: {answers:?}"
        );
    }
    assert!(
        trunk.iter().any(|a| a.starts_with("SIP/2.0 200")),
        "the trunk's INVITE: {trunk:?}"
    );
    let totals = daemon.admission_totals().expect("stats");
    assert_eq!(
        totals.shed_late + totals.shed_answered,
        5,
        "refused late or on arrival: {totals:?}"
    );
    let fresh = sip_probe::invite(addr(ROGUE, 5299), SBC_SIP, "fresh");
    let answers = sip_probe::send(&lab.rogue, addr(ROGUE, 5299), SBC_SIP, &fresh).expect("send");
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 200")),
        "{answers:?}"
    );
}

/// A botnet's flood: `BOTNET_SOURCES` addresses, each under every per-source limit of the
/// defaults, 100,000 INVITE/s in all, far above what the edge can serve, while an allowlisted
/// trunk places 20 calls/s. The backend refuses the flood's calls (404 for the user `probe`)
/// and answers the trunk's. The trunk keeps at least 99.5 % of its calls, with `[admission]`
/// on (`admission` is its table's extra lines) and off: overload sheds the strangers first.
/// With admission on, what is shed counts against each source, so the botnet ends up
/// blocked in the kernel (`blocked`); with it off nothing is blocked.
fn a_trunk_keeps_its_calls_through_a_distributed_flood(tag: &str, admission: &str, blocked: bool) {
    const BOTNET_SOURCES: u16 = 1_000;
    const FLOOD_RATE: u32 = 100_000;
    require_lab_privileges();
    let lab = Lab::up(tag).expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let _backend = Backend::start_scenario(
        &lab.callee,
        backend_address,
        &sipp::scenario("uas_refusing_probes"),
        None,
    )
    .expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend_address],
            extra_config: format!("[admission]\nallowlist = [\"{CALLER}/32\"]\n{admission}"),
            ..Default::default()
        },
    )
    .expect("daemon");
    let sources: Vec<SocketAddr> = lab
        .botnet(BOTNET_SOURCES)
        .expect("botnet addresses")
        .into_iter()
        .map(|ip| addr(ip, 5060))
        .collect();

    // 20 s of calls; the flood starts 2 s in and lasts 15 s.
    let calls = 400;
    let before = daemon.cpu_time().unwrap();
    let (trunk, flood) = std::thread::scope(|scope| {
        let trunk = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                SBC_SIP,
                CallKind::Short,
                (calls, 20),
                Duration::from_secs(90),
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let flood = flood::start_from(
            &lab.rogue,
            sources,
            SBC_SIP,
            Flood {
                packets: u64::from(FLOOD_RATE) * 15,
                duration: Duration::from_secs(15),
                mix: Mix::Invites,
                pace: Some(FLOOD_RATE),
            },
        )
        .join()
        .expect("flood thread")
        .expect("flood");
        (
            trunk.join().expect("trunk thread").expect("SIPp trunk"),
            flood,
        )
    });
    let cpu = daemon.cpu_time().unwrap() - before;
    let totals = daemon
        .admission_totals()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sources_blocked = daemon.blocks().expect("blocks").len();
    eprintln!(
        "flood: {} INVITEs from {BOTNET_SOURCES} sources in {:.1?} ({:.0}/s); trunk {}/{calls} \
         calls; daemon CPU {cpu:?}; {sources_blocked} sources blocked; kernel: {} dropped over \
         the INVITE rate, {} blocked, {} passed; daemon: shed {} new ({} answered 503), {} late, \
         {} queue full, {} at a full receive buffer, refused {} over source limits, {} overload",
        flood.sent,
        flood.elapsed,
        flood.packets_per_sec(),
        trunk.successful,
        daemon
            .guard_verdicts("drop_sip_invite_rate")
            .unwrap_or_default(),
        daemon
            .guard_verdicts("drop_sip_blocked")
            .unwrap_or_default(),
        daemon.guard_verdicts("pass_sip").unwrap_or_default(),
        totals.shed_new_requests,
        totals.shed_answered,
        totals.shed_late,
        totals.shed_queue_full,
        totals.shed_receive_buffer,
        totals.refused_source_invite_rate,
        totals.refused_overload,
    );
    assert!(
        flood.packets_per_sec() >= f64::from(FLOOD_RATE) * 0.9,
        "the lab generated only {:.0} INVITE/s",
        flood.packets_per_sec()
    );
    assert!(
        trunk.successful * 1000 >= u64::from(calls) * 995,
        "fewer than 99.5 % of the trunk's calls succeeded during the flood:\n{}\n{}",
        trunk.output,
        daemon.log()
    );
    if blocked {
        assert!(
            sources_blocked * 10 >= usize::from(BOTNET_SOURCES) * 9,
            "only {sources_blocked} of the botnet's {BOTNET_SOURCES} sources were blocked"
        );
    } else {
        assert_eq!(sources_blocked, 0, "blocks with admission off");
    }
}

#[test]
fn a_trunk_keeps_its_calls_through_a_distributed_flood_with_admission() {
    a_trunk_keeps_its_calls_through_a_distributed_flood("adm-botnet", "", true);
}

#[test]
fn a_trunk_keeps_its_calls_through_a_distributed_flood_without_admission() {
    a_trunk_keeps_its_calls_through_a_distributed_flood(
        "adm-botnet-off",
        "enabled = false\n",
        false,
    );
}
