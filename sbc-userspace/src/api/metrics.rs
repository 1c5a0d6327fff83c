//! `GET /metrics`: everything the daemon counts, in the Prometheus text format. Read at scrape
//! time from the proxy's stats, admission's counters, the media plane and the kernel's per-CPU
//! maps; the proxy is never asked, so a scrape cannot wait behind a flood.
use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use sbc_common::Reason;

use super::state::{ApiState, error};
use crate::{
    admission::AdmissionCounters,
    cluster::ClusterHealth,
    media::MediaTotals,
    metrics::{Exposition, HistogramSnapshot, NO_LABELS},
    proxy::stats::{BackendStats, Rfc6076, SipStats, side_label},
};

/// A gauge family with one sample per item: name, help, and the item's value.
type GaugeOf<T> = (&'static str, &'static str, fn(&T) -> f64);

pub(super) fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What the exposition needs that costs syscalls, read off the async workers.
struct DataplaneReadings {
    media: MediaTotals,
    decisions: Vec<(Reason, u64)>,
    sessions: usize,
    flows: usize,
    ports: Vec<(IpAddr, usize, usize)>,
}

pub async fn metrics(State(api): State<Arc<ApiState>>) -> Response {
    let reader = Arc::clone(&api);
    let readings = tokio::task::spawn_blocking(move || read_dataplane(&reader)).await;
    let readings = match readings {
        Ok(Ok(readings)) => readings,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut out = Exposition::default();
    out.gauge(
        "sbc_build_info",
        "The running sbc's version (always 1).",
        [(&[("version", env!("CARGO_PKG_VERSION"))][..], 1.0)],
    );
    out.gauge_value(
        "sbc_draining",
        "1 while the daemon drains (new calls refused, established ones finishing).",
        f64::from(u8::from(api.drain.is_draining())),
    );
    if let Some(sip) = &api.sip {
        write_sip(&mut out, sip);
        write_calls(&mut out, sip);
        write_backends(&mut out, sip);
    }
    if let Some(admission) = &api.admission_counters {
        write_admission(&mut out, admission);
    }
    if let Some(cluster) = api.proxy.as_ref().and_then(|p| p.cluster.as_ref()) {
        write_cluster(&mut out, cluster);
    }
    write_dataplane(&mut out, &readings);
    out.counter_value(
        "sbc_log_lines_suppressed_total",
        "Log lines dropped by log.max_lines_per_sec / max_lines_per_sec_per_site.",
        crate::logging::suppressed_lines(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.finish(),
    )
        .into_response()
}

fn read_dataplane(api: &ApiState) -> anyhow::Result<DataplaneReadings> {
    // With XDP the kernel decides (all reasons); with the userspace dataplane the daemon's
    // own guard gives the SIP guard's share of them.
    let decisions = match &api.reasons {
        Some(reasons) => reasons.read()?,
        None => api.admission.guard.userspace_reasons(),
    };
    Ok(DataplaneReadings {
        media: api.plane.media_totals(),
        decisions,
        sessions: api.plane.session_count(),
        flows: api.plane.flow_count(),
        ports: api.plane.ports_in_use(),
    })
}

fn write_sip(out: &mut Exposition, sip: &SipStats) {
    let requests = sip.requests.snapshot();
    out.counter(
        "sbc_sip_requests_received_total",
        "SIP requests received, by the side they came from and method (retransmissions included).",
        requests.iter().map(|((side, method), n)| {
            let labels = [("side", side_label(*side)), ("method", *method)];
            (labels, *n)
        }),
    );
    for (name, help, map) in [
        (
            "sbc_sip_responses_received_total",
            "SIP responses received, by the side they came from, the method they answer and code.",
            &sip.responses_received,
        ),
        (
            "sbc_sip_responses_sent_total",
            "SIP responses sent (the proxy's own and relayed ones), by the side they went to, the method they answer and code.",
            &sip.responses_sent,
        ),
    ] {
        let samples: Vec<_> = map
            .snapshot()
            .into_iter()
            .map(|((side, method, code), n)| (side_label(side), method, code.to_string(), n))
            .collect();
        out.counter(
            name,
            help,
            samples.iter().map(|(side, method, code, n)| {
                let labels = [
                    ("side", *side),
                    ("method", *method),
                    ("code", code.as_str()),
                ];
                (labels, *n)
            }),
        );
    }
    out.counter(
        "sbc_sip_malformed_total",
        "Malformed or unsupported SIP messages: answered with an error, or dropped when no answer could be formed.",
        [
            (&[("action", "answered")][..], load(&sip.refused)),
            (&[("action", "dropped")][..], load(&sip.dropped)),
        ],
    );
    out.counter_value(
        "sbc_sip_send_busy_total",
        "SIP datagrams the send buffer had no room for: left to retransmission (a sign of overload), never a failed hop.",
        load(&sip.send_busy),
    );
    out.gauge_value(
        "sbc_sip_tcp_connections",
        "Open SIP TCP connections.",
        load(&sip.tcp_open) as f64,
    );
    out.counter_value(
        "sbc_sip_tcp_refused_total",
        "SIP TCP connections closed at once: over sip.tcp.max_connections or max_connections_per_source.",
        load(&sip.tcp_refused),
    );
    out.counter_value(
        "sbc_sip_tcp_slow_closed_total",
        "SIP TCP connections closed because a message took longer than sip.tcp.message_timeout_ms.",
        load(&sip.tcp_slow_closed),
    );
    out.counter_value(
        "sbc_sip_tcp_peers_lost_total",
        "SIP TCP connections the proxy opened that the peer ended: closed, reset, never accepted, or gone silent past sip.tcp.dead_after_ms (their requests fail over).",
        load(&sip.tcp_peers_lost),
    );
    out.counter_value(
        "sbc_sip_oversized_total",
        "SIP messages beyond [sip.limits] (header count, header or token length): requests refused with 400, responses dropped; also counted in sbc_sip_malformed_total.",
        load(&sip.oversized),
    );
}

fn write_calls(out: &mut Exposition, sip: &SipStats) {
    out.counter_value(
        "sbc_calls_attempted_total",
        "Initial INVITEs received (retransmissions not counted), refused ones included.",
        load(&sip.calls_attempted),
    );
    out.counter_value(
        "sbc_calls_answered_total",
        "Initial INVITEs answered with a 2xx.",
        load(&sip.calls_answered),
    );
    let failed: Vec<_> = sip
        .calls_failed
        .snapshot()
        .into_iter()
        .map(|((reason, code), n)| (reason, code.to_string(), n))
        .collect();
    out.counter(
        "sbc_calls_failed_total",
        "Initial INVITEs that got a final failure: refused by the edge, rejected by the far side, cancelled or timed out; by final code.",
        failed.iter().map(|(reason, code, n)| {
            let labels = [("reason", *reason), ("code", code.as_str())];
            (labels, *n)
        }),
    );
    let ended = sip.calls_ended.snapshot();
    out.counter(
        "sbc_calls_ended_total",
        "Answered calls that ended, by why (bye, media_timeout, ...).",
        ended.iter().map(|(reason, n)| {
            let labels = [("reason", *reason)];
            (labels, *n)
        }),
    );
    let no_audio = sip.no_audio.snapshot();
    out.counter(
        "sbc_calls_no_audio_total",
        "Media directions of answered calls that missed their deadline: no_media (nothing since the answer) or media_stopped, by direction.",
        no_audio.iter().map(|((direction, silence), n)| {
            ([("direction", *direction), ("silence", *silence)], *n)
        }),
    );
    out.gauge_value(
        "sbc_calls_active",
        "Calls the proxy holds: being set up or established.",
        load(&sip.calls_active) as f64,
    );
    out.gauge_value(
        "sbc_calls_established",
        "Answered calls not ended yet.",
        load(&sip.calls_established) as f64,
    );
    out.histogram(
        "sbc_call_setup_seconds",
        "From an initial INVITE's arrival to its first 18x (stage ringing) and to its 2xx (stage answered).",
        [
            (&[("stage", "ringing")][..], sip.setup_ringing.snapshot()),
            (&[("stage", "answered")][..], sip.setup_answered.snapshot()),
        ],
    );
    out.histogram(
        "sbc_session_request_delay_seconds",
        "RFC 6076 SRD: from an initial INVITE's arrival to the first response other than 100, failures included.",
        [(NO_LABELS, sip.session_request_delay.snapshot())],
    );
    out.histogram(
        "sbc_session_disconnect_delay_seconds",
        "RFC 6076 SDD: from a BYE's arrival to its final response.",
        [(NO_LABELS, sip.session_disconnect_delay.snapshot())],
    );
    let classes = [
        (Rfc6076::Established, "established"),
        (Rfc6076::UserFailure, "user_failure"),
        (Rfc6076::Ineffective, "ineffective"),
        (Rfc6076::Redirected, "redirected"),
        (Rfc6076::Other, "other"),
    ];
    out.counter(
        "sbc_session_attempts_total",
        "Final responses to initial INVITEs by RFC 6076 class: established (2xx), user_failure (480, 486, 600, 603), ineffective (408, 500, 503, 504), redirected (3xx), other.",
        classes.iter().map(|(class, name)| {
            let labels = [("class", *name)];
            (labels, sip.invite_outcomes.get(class))
        }),
    );
    let (ser, seer, isa) = sip.rfc6076_ratios();
    out.gauge_value(
        "sbc_session_establishment_ratio",
        "RFC 6076 SER since start: established / (attempts - redirected); NaN before the first attempt.",
        ser,
    );
    out.gauge_value(
        "sbc_session_establishment_effectiveness_ratio",
        "RFC 6076 SEER since start: (established + user_failure) / (attempts - redirected).",
        seer,
    );
    out.gauge_value(
        "sbc_ineffective_session_attempts_ratio",
        "RFC 6076 ISA since start: ineffective / attempts.",
        isa,
    );
}

fn write_cluster(out: &mut Exposition, cluster: &ClusterHealth) {
    out.gauge_value(
        "sbc_cluster_redis_up",
        "1 while Redis takes this node's writes of its calls; 0: degraded (calls kept in memory and the journal, rewritten when Redis is back).",
        f64::from(u8::from(cluster.redis_up.load(Ordering::Relaxed))),
    );
    out.gauge_value(
        "sbc_cluster_calls",
        "Calls this node holds and shares with its fleet.",
        load(&cluster.calls) as f64,
    );
    out.counter_value(
        "sbc_cluster_write_failures_total",
        "Rounds of writes to Redis that failed (each retried whole).",
        load(&cluster.writes_failed),
    );
    out.counter_value(
        "sbc_cluster_resyncs_total",
        "Times Redis went away and every call was written again once it was back.",
        load(&cluster.resyncs),
    );
}

fn write_backends(out: &mut Exposition, sip: &SipStats) {
    let backends = sip.backends.snapshot();
    let names: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
    let gauges: [GaugeOf<BackendStats>; 3] = [
        (
            "sbc_backend_up",
            "1 while the backend is healthy (OPTIONS probes and real traffic), 0 while it is down.",
            |b| f64::from(u8::from(b.up.load(Ordering::Relaxed))),
        ),
        (
            "sbc_backend_calls_active",
            "Established calls through the backend.",
            |b| load(&b.active_calls) as f64,
        ),
        (
            "sbc_backend_failure_ratio",
            "Share of the backend's last 128 final answers that were 5xx, 408 or none at all.",
            BackendStats::failure_ratio,
        ),
    ];
    for (name, help, value) in gauges {
        out.gauge(
            name,
            help,
            backends
                .iter()
                .zip(&names)
                .map(|(backend, name)| ([("backend", name.as_str())], value(backend))),
        );
    }
    let answers: Vec<_> = backends
        .iter()
        .zip(&names)
        .flat_map(|(backend, name)| {
            backend
                .answers
                .snapshot()
                .into_iter()
                .map(move |((method, class), n)| (name.as_str(), method, class, n))
        })
        .collect();
    out.counter(
        "sbc_backend_answers_total",
        "Final answers from each backend to requests and health probes, by method and class (2xx..6xx, timeout).",
        answers.iter().map(|(backend, method, class, n)| {
            let labels = [("backend", *backend), ("method", *method), ("class", *class)];
            (labels, *n)
        }),
    );
    let latency: Vec<(Vec<(&str, &str)>, HistogramSnapshot)> = backends
        .iter()
        .zip(&names)
        .flat_map(|(backend, name)| {
            backend
                .latency
                .snapshot()
                .into_iter()
                .map(move |(method, snapshot)| {
                    (
                        vec![("backend", name.as_str()), ("method", method)],
                        snapshot,
                    )
                })
        })
        .collect();
    out.histogram(
        "sbc_backend_response_seconds",
        "From sending a request (INVITE, OPTIONS probe, ...) to a backend to its first response.",
        latency.iter().map(|(labels, s)| (&labels[..], s.clone())),
    );
}

fn write_admission(out: &mut Exposition, admission: &AdmissionCounters) {
    out.counter(
        "sbc_admission_refusals_total",
        "Requests refused with 503 and Retry-After by admission control, by reason.",
        [
            ("source_invite_rate", &admission.source_invite_rate),
            ("source_request_rate", &admission.source_request_rate),
            ("global_invite_rate", &admission.global_invite_rate),
            ("max_calls", &admission.max_calls),
            ("fleet_invite_rate", &admission.fleet_invite_rate),
            ("fleet_max_calls", &admission.fleet_max_calls),
            ("overload", &admission.overload),
            ("draining", &admission.draining),
        ]
        .map(|(reason, counter)| ([("reason", reason)], load(counter))),
    );
    out.counter_value(
        "sbc_admission_scanners_blocked_total",
        "Requests from SIP scanners (by User-Agent), left unanswered and their source blocked.",
        load(&admission.scanners),
    );
    out.counter(
        "sbc_admission_shed_total",
        "Datagrams shed while the proxy was behind: new requests shed on arrival (half of overload_delay_ms behind, or shed_queue_depth queued) or refused at once (503) past shed_delay_ms, everything dropped with the queue full, and what the kernel dropped with a listener's receive buffer full.",
        [
            (&[("reason", "new_request")][..], load(&admission.shed_new_requests)),
            (&[("reason", "queue_full")][..], load(&admission.shed_queue_full)),
            (&[("reason", "receive_buffer")][..], load(&admission.shed_receive_buffer)),
            (&[("reason", "late")][..], load(&admission.shed_late)),
        ],
    );
    out.counter_value(
        "sbc_admission_shed_answered_total",
        "New INVITEs shed on arrival (reason new_request) that were answered 503 with Retry-After at once; the answers are bounded per second.",
        load(&admission.shed_answered),
    );
}

fn write_dataplane(out: &mut Exposition, readings: &DataplaneReadings) {
    let decisions: Vec<_> = readings
        .decisions
        .iter()
        .map(|(reason, n)| {
            let name = reason.name();
            let action = name.split('_').next().unwrap_or("pass");
            ([("reason", name), ("action", action)], *n)
        })
        .collect();
    out.counter(
        "sbc_packet_decisions_total",
        "Packets decided by the XDP program (or, with the userspace dataplane, the daemon's SIP guard), by reason: forward, pass to the daemon, or drop.",
        decisions.iter().map(|(labels, n)| (&labels[..], *n)),
    );
    let media = &readings.media;
    out.counter(
        "sbc_media_packets_total",
        "RTP and RTCP packets relayed, by path: in the kernel (XDP) or by the daemon.",
        [
            (&[("path", "kernel")][..], media.kernel_packets),
            (&[("path", "userspace")][..], media.userspace_packets),
        ],
    );
    out.counter(
        "sbc_media_bytes_total",
        "RTP and RTCP bytes (IP payload) relayed, by path.",
        [
            (&[("path", "kernel")][..], media.kernel_bytes),
            (&[("path", "userspace")][..], media.userspace_bytes),
        ],
    );
    out.counter(
        "sbc_media_dropped_total",
        "Media packets not relayed: from a source other than the latched peer, from a source that matches nothing signalling says about the peer (before latching), or before the other leg's peer was known.",
        [
            (&[("reason", "foreign_source")][..], media.foreign_dropped),
            (&[("reason", "unsignalled_source")][..], media.unsignalled_dropped),
            (&[("reason", "undeliverable")][..], media.undeliverable),
        ],
    );
    out.gauge_value(
        "sbc_media_sessions",
        "Media sessions anchored (one per active m= line of each call).",
        readings.sessions as f64,
    );
    out.gauge_value(
        "sbc_media_flows",
        "Media flows installed: one per local RTP or RTCP port, mirrored in the kernel with XDP.",
        readings.flows as f64,
    );
    let addresses: Vec<String> = readings.ports.iter().map(|(a, ..)| a.to_string()).collect();
    let gauges: [GaugeOf<(IpAddr, usize, usize)>; 2] = [
        (
            "sbc_media_ports_in_use",
            "Relay ports allocated on each media address.",
            |&(_, in_use, _)| in_use as f64,
        ),
        (
            "sbc_media_ports_capacity",
            "Relay ports each media address has (media.port_min..=port_max).",
            |&(_, _, capacity)| capacity as f64,
        ),
    ];
    for (name, help, value) in gauges {
        out.gauge(
            name,
            help,
            readings
                .ports
                .iter()
                .zip(&addresses)
                .map(|(ports, address)| ([("address", address.as_str())], value(ports))),
        );
    }
}
