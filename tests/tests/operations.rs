//! Operating the edge: Prometheus metrics during live calls (checked by promtool and against
//! what the test did), the admin API and CLI, and drains from the CLI and from SIGTERM.
use std::{
    ffi::OsStr,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sbc::{
    events::{CallEnd, CallEnded, Kind},
    proxy::core::calls::CallState,
};
use sbc_tests::{
    bpftool,
    daemon::{Daemon, DaemonOptions},
    lab::{CALLEE, CALLER, Lab, SBC_PUBLIC},
    privileges::require_lab_privileges,
    sip_probe,
    sipp::{self, Backend, CallKind, CallerResult},
};
use serde_json::Value;

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Waits until the daemon has written `count` events of that kind; all of that kind.
fn wait_for_events<K: Kind>(daemon: &Daemon, count: usize) -> Vec<K> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<K> = daemon.events_of();
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A daemon in front of one SIPp backend that answers and echoes RTP.
fn lab_with_backend(name: &str, options: DaemonOptions) -> (Lab, Backend, Daemon) {
    let lab = Lab::up(name).expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let backend = Backend::start(&lab.callee, backend_address).expect("backend");
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            sip_backends: vec![backend_address],
            ..options
        },
    )
    .expect("daemon");
    (lab, backend, daemon)
}

fn place(lab: &Lab, port: u16, kind: CallKind, calls: u32, rate: u32) -> CallerResult {
    sipp::place_calls(
        &lab.caller,
        addr(CALLER, port),
        addr(SBC_PUBLIC, 5060),
        kind,
        (calls, rate),
        Duration::from_secs(60),
    )
    .expect("SIPp caller")
}

/// RTP packets SIPp's `uac_pcap` plays per call: g711a.pcap (236) then dtmf_2833_1.pcap (10);
/// the backend echoes each one.
const PCAP_RTP_PACKETS: f64 = 236.0 + 10.0;

#[test]
fn metrics_pass_promtool_during_live_calls_and_count_what_happened() {
    require_lab_privileges();
    let (lab, _backend, daemon) = lab_with_backend("metrics", DaemonOptions::default());
    const CALLS: u32 = 20;
    let (result, live) = std::thread::scope(|scope| {
        let caller = scope.spawn(|| place(&lab, 5060, CallKind::WithMedia, CALLS, 10));
        // The pcap plays for about 5 s per call: scrape while calls carry media.
        std::thread::sleep(Duration::from_millis(2500));
        let live = daemon.metrics().expect("scrape during calls");
        assert_cli_shows_live_calls(&daemon);
        (caller.join().expect("caller thread"), live)
    });
    live.promtool_check().expect("the live scrape");
    assert!(
        live.get("sbc_calls_established") > 0.0 && live.get("sbc_media_flows") > 0.0,
        "no call up at the live scrape:\n{}",
        live.text
    );
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(CALLS), 0),
        "{}",
        result.output
    );
    let ended: Vec<CallEnded> = wait_for_events(&daemon, CALLS as usize);
    assert_eq!(ended.len(), CALLS as usize);

    let after = daemon.metrics().expect("scrape after the calls");
    after.promtool_check().expect("the scrape after the calls");
    let calls = f64::from(CALLS);
    for (series, expected) in [
        ("sbc_calls_attempted_total", calls),
        ("sbc_calls_answered_total", calls),
        ("sbc_calls_ended_total{reason=\"bye\"}", calls),
        ("sbc_calls_active", 0.0),
        ("sbc_calls_established", 0.0),
        ("sbc_media_sessions", 0.0),
        ("sbc_session_attempts_total{class=\"established\"}", calls),
        ("sbc_session_establishment_ratio", 1.0),
        ("sbc_call_setup_seconds_count{stage=\"answered\"}", calls),
        ("sbc_session_disconnect_delay_seconds_count", calls),
        (
            "sbc_sip_requests_received_total{side=\"public\",method=\"INVITE\"}",
            calls,
        ),
        (
            "sbc_sip_responses_sent_total{side=\"public\",method=\"INVITE\",code=\"200\"}",
            calls,
        ),
        (
            "sbc_sip_responses_sent_total{side=\"public\",method=\"INVITE\",code=\"100\"}",
            calls,
        ),
        ("sbc_backend_up{backend=\"198.18.2.2:5060\"}", 1.0),
    ] {
        assert_eq!(after.get(series), expected, "{series} in:\n{}", after.text);
    }
    // The answers to the BYEs came back through the daemon or, the calls being established,
    // through the kernel, which forwards their SIP itself.
    let answered_in_daemon =
        after.get("sbc_sip_responses_received_total{side=\"private\",method=\"BYE\",code=\"200\"}");
    let answered_in_kernel = daemon
        .xdp_reason("forward_sip_response")
        .expect("the kernel's counters") as f64;
    assert_eq!(
        answered_in_daemon + answered_in_kernel,
        calls,
        "BYEs answered:\n{}",
        after.text
    );
    // What SIPp sent: the pcap each way of every call.
    let sent = PCAP_RTP_PACKETS * 2.0 * calls;
    let relayed = after.sum("sbc_media_packets_total", &[]);
    assert!(
        (relayed - sent).abs() <= sent * 0.01,
        "{relayed} media packets counted, {sent} sent:\n{}",
        after.text
    );
    assert!(
        after.get("sbc_media_packets_total{path=\"kernel\"}") >= 0.98 * relayed,
        "media mostly relayed in the kernel:\n{}",
        after.text
    );
    let forwarded = after.sum("sbc_packet_decisions_total", &["action=\"forward\""]);
    assert!(
        forwarded >= after.get("sbc_media_packets_total{path=\"kernel\"}"),
        "XDP forward verdicts ({forwarded}) cover the kernel's media packets"
    );

    // The Grafana dashboard only uses metrics the daemon exposes.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/grafana/sbc-dashboard.json"),
    )
    .expect("the dashboard");
    let _: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut rest = dashboard.as_str();
    while let Some(at) = rest.find("sbc_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            after.text.contains(&format!("# TYPE {family} ")),
            "the dashboard uses {name}, which /metrics does not expose"
        );
    }

    // The same counts through the admin API and the CLI.
    let status = daemon.command(&["status"]).expect("sbc status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("taking calls") && status.contains("1 of 1 healthy"),
        "{status}"
    );
}

fn stdout_of(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.command(args).expect("sbc");
    assert!(
        output.status.success(),
        "sbc {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fixed-width columns: every row is as long as the header, so each value ends where its
/// column's title does.
fn assert_columns_line_up(table: &str) {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    for row in lines {
        assert_eq!(row.len(), header.len(), "misaligned:\n{header}\n{row}");
    }
}

/// `sbc calls`, `sbc call ID` and `sbc backends` while calls carry media both ways.
fn assert_cli_shows_live_calls(daemon: &Daemon) {
    let listing = stdout_of(daemon, &["calls"]);
    let rows: Vec<&str> = listing.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{listing}");
    let latched = rows
        .iter()
        .filter(|row| row.contains(" answered ") && row.contains(" a=sdp b=sdp "))
        .count();
    assert!(
        latched > 0,
        "no answered call latched both ways to its SDP peers:\n{listing}"
    );
    let call_id = rows[0].split_whitespace().next().expect("a Call-ID");
    let call: Value = serde_json::from_str(&stdout_of(daemon, &["call", call_id])).expect("JSON");
    let call = &call[0];
    assert_eq!(call["call_id"], call_id, "{call}");
    let legs = call["media"][0]["legs"].as_array().expect("both legs");
    assert_eq!(legs.len(), 2, "{call}");
    for leg in legs {
        assert!(
            leg["local_rtp"].is_string() && leg["latched"].is_boolean(),
            "{leg}"
        );
        if leg["latched"] == true {
            assert!(
                leg["latch"]["peer"].is_string() && leg["latch"]["matched"] == "sdp",
                "{leg}"
            );
        }
        assert!(leg["rtp"]["kernel_packets"].is_u64(), "{leg}");
    }
    assert_columns_line_up(&listing);
    let backends = stdout_of(daemon, &["backends"]);
    assert_columns_line_up(&backends);
    assert!(
        backends
            .lines()
            .any(|l| l.starts_with("198.18.2.2:5060") && l.contains(" up ")),
        "{backends}"
    );
}

/// An INVITE from a fresh source: the responses' start lines and headers.
fn probe_invite(lab: &Lab, port: u16, name: &str) -> Vec<String> {
    let invite = sip_probe::invite(addr(CALLER, port), addr(SBC_PUBLIC, 5060), name);
    sip_probe::send(
        &lab.caller,
        addr(CALLER, port),
        addr(SBC_PUBLIC, 5060),
        &invite,
    )
    .expect("probe INVITE")
}

fn probe_options(lab: &Lab, port: u16, name: &str) -> Vec<String> {
    let options = sip_probe::options(addr(CALLER, port), addr(SBC_PUBLIC, 5060), name, "balancer");
    sip_probe::send(
        &lab.caller,
        addr(CALLER, port),
        addr(SBC_PUBLIC, 5060),
        &options,
    )
    .expect("probe OPTIONS")
}

/// While draining: new calls get 503 with Retry-After, OPTIONS say 503 too.
fn assert_refusing_new_calls(lab: &Lab) {
    let answers = probe_invite(lab, 5090, "drain-new-call");
    let last = answers.last().expect("an answer to the new INVITE");
    assert!(
        last.starts_with("SIP/2.0 503") && last.to_ascii_lowercase().contains("retry-after:"),
        "new INVITE while draining:\n{answers:?}"
    );
    let options = probe_options(lab, 5091, "options-draining");
    assert!(
        options.last().is_some_and(|r| r.starts_with("SIP/2.0 503")),
        "OPTIONS while draining: {options:?}"
    );
}

/// Held calls up, a drain begun by `begin`, then: new calls refused, the held calls complete,
/// and the daemon exits by itself once the last one has ended.
fn drain_with_calls_up(name: &str, options: DaemonOptions, begin: impl FnOnce(&Daemon)) -> String {
    require_lab_privileges();
    let (lab, _backend, mut daemon) = lab_with_backend(name, options);
    let before = probe_options(&lab, 5091, "options-before");
    assert!(
        before.last().is_some_and(|r| r.starts_with("SIP/2.0 200")),
        "OPTIONS before the drain: {before:?}"
    );
    const CALLS: u32 = 3;
    let result = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            place(
                &lab,
                5060,
                CallKind::Held(Duration::from_secs(6)),
                CALLS,
                10,
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = daemon.calls().expect("calls");
            let answered = calls
                .iter()
                .filter(|c| c.state == CallState::Answered)
                .count();
            if answered == CALLS as usize {
                break;
            }
            assert!(Instant::now() < deadline, "calls not up: {calls:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        begin(&daemon);
        // A signal is handled a moment after it is sent.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let status = daemon.status().expect("status");
            if status.drain.draining {
                break;
            }
            assert!(Instant::now() < deadline, "not draining: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_refusing_new_calls(&lab);
        caller.join().expect("caller thread")
    });
    assert_eq!(
        (result.successful, result.failed),
        (u64::from(CALLS), 0),
        "established calls complete during the drain:\n{}",
        result.output
    );
    let exit = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon exits once drained");
    assert!(exit.success(), "{exit}:\n{}", daemon.log());
    let ended: Vec<CallEnded> = daemon.events_of();
    let byes = ended.iter().filter(|e| e.reason == CallEnd::Bye).count();
    assert_eq!(byes, CALLS as usize, "{ended:?}");
    let log = daemon.log();
    assert!(log.contains("drained: the last call has ended"), "{log}");
    log
}

#[test]
fn sbc_drain_refuses_new_calls_and_exits_after_the_last_one() {
    let _log = drain_with_calls_up("drain-cli", DaemonOptions::default(), |daemon| {
        let output = daemon.command(&["drain"]).expect("sbc drain");
        assert!(
            output.status.success(),
            "sbc drain: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("draining: 3 calls"), "{said}");
    });
}

/// Also the JSON log format: every line the daemon wrote is one JSON object.
#[test]
fn sigterm_drains_when_configured() {
    let options = DaemonOptions {
        extra_config: "[drain]\non_sigterm = \"drain\"\n".to_owned(),
        log_format: "json",
        ..Default::default()
    };
    let log = drain_with_calls_up("drain-term", options, |daemon| {
        daemon.signal(libc::SIGTERM).expect("SIGTERM")
    });
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn the_admin_api_off_loopback_answers_only_with_its_token() {
    require_lab_privileges();
    let lab = Lab::up("api-token").expect("lab");
    let secrets = tempfile::tempdir().expect("tempdir");
    let token = "5f0c2a9e81d34b7a9c6e2f10d8b4a713";
    let token_file = secrets.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let listen = addr(SBC_PUBLIC, 9470);
    let daemon = Daemon::start(
        &lab,
        &DaemonOptions {
            api_config: format!(
                "listen = \"{listen}\"\ntoken_file = \"{}\"\n",
                token_file.display()
            ),
            ..Default::default()
        },
    )
    .expect("daemon");
    for (presented, expected) in [
        (None, 401),
        (Some("not-the-token-at-all-0000000000000"), 401),
        (Some(token), 200),
    ] {
        for path in ["/metrics", "/v1/status"] {
            let (status, body) = daemon.http_get(listen, path, presented).expect(path);
            assert_eq!(status, expected, "{path} with {presented:?}: {body}");
        }
    }
    let (_, text) = daemon
        .http_get(listen, "/metrics", Some(token))
        .expect("metrics");
    sbc_tests::http::Metrics::parse(&text)
        .promtool_check()
        .expect("promtool on a scrape of a daemon without calls");
    // The Unix socket needs no token: its file mode guards it.
    assert_eq!(daemon.api.get("/v1/status").expect("status").status, 200);
}

#[test]
fn a_drain_deadline_hangs_up_the_remaining_calls_and_exits() {
    require_lab_privileges();
    let options = DaemonOptions {
        extra_config: "[drain]\ndeadline_secs = 2\n".to_owned(),
        ..Default::default()
    };
    let (lab, _backend, mut daemon) = lab_with_backend("drain-deadline", options);
    std::thread::scope(|scope| {
        // Held beyond the deadline and its grace: the network hangs up first. SIPp's own
        // BYE later finds no daemon, so its run is cut short by a global timeout.
        let caller = scope.spawn(|| {
            sipp::place_calls(
                &lab.caller,
                addr(CALLER, 5060),
                addr(SBC_PUBLIC, 5060),
                CallKind::Held(Duration::from_secs(6)),
                (1, 1),
                Duration::from_secs(8),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.calls().expect("calls").first().map(|c| c.state) != Some(CallState::Answered) {
            assert!(Instant::now() < deadline, "the call was not answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        let drained = Instant::now();
        assert!(
            daemon
                .command(&["drain"])
                .expect("sbc drain")
                .status
                .success()
        );
        let exit = daemon
            .wait_exit(Duration::from_secs(10))
            .expect("the daemon exits after the deadline");
        assert!(exit.success(), "{exit}:\n{}", daemon.log());
        assert!(
            drained.elapsed() >= Duration::from_secs(2),
            "exited before the deadline"
        );
        let _ = caller.join();
    });
    let ended: Vec<CallEnded> = daemon.events_of();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].reason, CallEnd::DrainDeadline, "{:?}", ended[0]);
}

/// The id of the map pinned at `path` (`bpftool map show`).
fn pinned_map_id(path: &std::path::Path) -> u64 {
    let info = bpftool::json([
        "map".as_ref(),
        "show".as_ref(),
        "pinned".as_ref(),
        path.as_os_str(),
    ])
    .expect("bpftool shows the map");
    info["id"].as_u64().expect("a map id")
}

/// Pins, in place of a daemon's map, an array of another layout (what an older build left).
fn pin_other_layout(daemon: &Daemon, name: &str) {
    let path = daemon.pin_dir.join(name);
    std::fs::remove_file(&path).expect("unpinning");
    let layout = [
        "type", "array", "key", "4", "value", "4", "entries", "3", "name", "old",
    ];
    let args = ["map".as_ref(), "create".as_ref(), path.as_os_str()]
        .into_iter()
        .chain(layout.iter().map(OsStr::new));
    bpftool::run(args).expect("bpftool creates the map");
}

/// An upgrade to a build whose guard and counter maps have another layout: the new daemon
/// replaces those (they hold nothing it does not rebuild) and keeps the maps that carry calls;
/// a call-carrying map of another layout is refused, with what to do about it.
#[test]
fn an_upgrade_replaces_the_maps_it_rebuilds_and_keeps_those_of_calls() {
    require_lab_privileges();
    let lab = Lab::up("ops-upgrade").expect("lab");
    let backend_address = addr(CALLEE, 5060);
    let _backend = Backend::start(&lab.callee, backend_address).expect("backend");
    let options = DaemonOptions {
        sip_backends: vec![backend_address],
        ..Default::default()
    };
    let mut daemon = Daemon::start(&lab, &options).expect("daemon");
    let flows = pinned_map_id(&daemon.pin_dir.join("SBC_FLOWS"));
    daemon.kill9();
    for name in ["SBC_GUARD", "SBC_REASONS", "SBC_SOURCES"] {
        pin_other_layout(&daemon, name);
    }
    daemon
        .spawn(&[])
        .expect("the new build starts over the old maps");
    assert!(
        daemon.log().contains("replacing it"),
        "no word of the replaced maps:\n{}",
        daemon.log()
    );
    assert_eq!(
        pinned_map_id(&daemon.pin_dir.join("SBC_FLOWS")),
        flows,
        "the flows map was not kept"
    );
    // The replaced guard works: an OPTIONS is let up, counted, and answered.
    let local = addr(CALLER, 5099);
    let answers = sip_probe::send(
        &lab.caller,
        local,
        addr(SBC_PUBLIC, 5060),
        &sip_probe::options(local, addr(SBC_PUBLIC, 5060), "upgrade-1", "probe"),
    )
    .expect("OPTIONS");
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 200")),
        "{answers:?}"
    );
    assert!(daemon.guard_verdicts("pass_sip").unwrap() >= 1);

    daemon.kill9();
    pin_other_layout(&daemon, "SBC_FLOWS");
    let refused = daemon
        .spawn(&[])
        .expect_err("a flows map of another layout");
    assert!(
        refused.to_string().contains("sbc run --clean"),
        "the refusal does not say what to do: {refused:#}"
    );
    daemon.spawn(&["--clean"]).expect("a clean start");
}
