//! `sbc maps`: the pinned flows, their counters, the dialogs whose SIP the kernel forwards and
//! the XDP verdict counters, read straight from bpffs, so it works while the daemon is down
//! (or gone).
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use sbc_common::{
    Dialog, DialogLeg, SipSelf, SipSelves,
    branch::{SIDE_PRIVATE, SIDE_PUBLIC},
    dialog::{LEG_ANSWERS_HIDDEN, LEG_FORWARD},
    flow::STREAM_RTP,
};
use serde_json::{Value, json};

use crate::{
    clock::monotonic_ns,
    dataplane::{FlowMaps, GuardMaps, PinLayout, ReasonCounters, maps::FlowStatsReader},
    media::session::{Leg, socket_addr},
};

pub fn read(layout: &PinLayout) -> anyhow::Result<Value> {
    if !layout.dir.exists() {
        bail!(
            "no pinned state at {} (no daemon has run with XDP for this instance)",
            layout.dir.display()
        );
    }
    let maps = FlowMaps::open(layout)?;
    let flows = maps.flows()?;
    let stats = FlowStatsReader::open(layout)?;
    let now = monotonic_ns();
    let mut rows: Vec<Value> = flows
        .iter()
        .map(|(key, flow)| {
            let counters = stats.get(flow.stats_slot).unwrap_or_default();
            json!({
                "session": flow.session_id,
                "leg": Leg::of_flow(flow.leg).map_or("?", Leg::name),
                "stream": if flow.stream == STREAM_RTP { "rtp" } else { "rtcp" },
                "local": socket_addr(&key.addr, key.port).to_string(),
                // The key of its entry in SBC_FLOWS, for `bpftool map lookup`.
                "table_entry": maps.entry_of(key),
                "latched": flow.is_latched(),
                "locked": flow.is_latched() && !flow.is_learning(),
                "matched": flow.is_latched().then(|| flow.peer_match().name()),
                "peer": flow.is_latched()
                    .then(|| socket_addr(&flow.peer, flow.peer_port).to_string()),
                "send_from": socket_addr(&flow.new_src, flow.new_src_port).to_string(),
                "send_to": (flow.new_dst_port != 0)
                    .then(|| socket_addr(&flow.new_dst, flow.new_dst_port).to_string()),
                "packets": counters.packets,
                "bytes": counters.bytes,
                "foreign_dropped": counters.foreign_dropped,
                "idle_ms": (counters.last_seen_ns != 0)
                    .then(|| now.saturating_sub(counters.last_seen_ns) / 1_000_000),
            })
        })
        .collect();
    rows.sort_by_key(|row| {
        (
            row["session"].as_u64(),
            row["leg"].as_str().map(str::to_owned),
            row["stream"].as_str().map(str::to_owned),
        )
    });
    let guard = GuardMaps::open(layout)?;
    let mut dialogs: Vec<Value> = guard
        .dialogs()
        .iter()
        .map(|(id, dialog)| dialog_row(*id, dialog, now))
        .collect();
    let selves = guard.sip_selves()?;
    dialogs.sort_by_key(|row| row["call_id"].as_str().map(str::to_owned));
    let reasons: serde_json::Map<String, Value> = ReasonCounters::open(layout)?
        .read()?
        .into_iter()
        .map(|(reason, count)| (reason.name().to_owned(), count.into()))
        .collect();
    Ok(json!({
        "pin_dir": layout.dir.display().to_string(),
        "flows": rows,
        "dialogs": dialogs,
        "sip_self": sip_self_rows(&selves),
        "xdp_reasons": reasons,
    }))
}

/// Our addresses per side as the kernel compares and writes them: the listener it sends
/// from, and the Via and Record-Route the parties were told.
fn sip_self_rows(selves: &SipSelves) -> Value {
    let side = |side: &SipSelf| {
        json!({
            "listener": socket_addr(&side.listener.addr, side.listener.port).to_string(),
            "via": String::from_utf8_lossy(side.via.as_bytes()),
            "record_route": String::from_utf8_lossy(side.route.as_bytes()),
        })
    };
    json!({
        "public": side(&selves.sides[usize::from(SIDE_PUBLIC)]),
        "private": side(&selves.sides[usize::from(SIDE_PRIVATE)]),
    })
}

/// A dialog as the kernel holds it: its identity, per direction (the caller's requests, the
/// callee's) where they arrive and go and what went through, and its end if the kernel saw it.
fn dialog_row(id: u64, dialog: &Dialog, now: u64) -> Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let leg = |leg: &DialogLeg, tag| {
        json!({
            "tag": tag,
            "forwarded_in_kernel": leg.flags & LEG_FORWARD != 0,
            "request_uri_out": text(leg.target_uri.as_bytes()),
            "answerer_hidden": leg.flags & LEG_ANSWERS_HIDDEN != 0,
            "listener": socket_addr(&leg.listener.addr, leg.listener.port).to_string(),
            "next_hop": socket_addr(&leg.target.addr, leg.target.port).to_string(),
            "party": socket_addr(&leg.party.addr, leg.party.port).to_string(),
            "leaves_on": if leg.out_side == SIDE_PUBLIC { "public" } else { "private" },
            "requests": leg.requests,
            "responses": leg.responses,
            "highest_cseq": leg.cseq,
        })
    };
    json!({
        "id": format!("{id:016x}"),
        "call_id": text(dialog.call_id.as_bytes()),
        "guard_packets": dialog.packets,
        "caller": leg(&dialog.legs[0], text(dialog.tags[0].as_bytes())),
        "callee": leg(&dialog.legs[1], text(dialog.tags[1].as_bytes())),
        "ended": (dialog.ended.at_ns != 0).then(|| json!({
            "ms_ago": now.saturating_sub(dialog.ended.at_ns) / 1_000_000,
            "code": dialog.ended.code,
            "bye_from": if dialog.ended.by_leg == 0 { "caller" } else { "callee" },
        })),
    })
}

pub fn render(report: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let flows = report["flows"].as_array().context("report without flows")?;
    writeln!(
        out,
        "pinned state: {}",
        report["pin_dir"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "{:>7} {:>3} {:>4}  {:<21} {:<21} {:<12} {:<21} {:<21} {:>10} {:>12} {:>8} {:>8}",
        "SESSION",
        "LEG",
        "STRM",
        "LOCAL",
        "PEER (LATCHED)",
        "MATCHED",
        "SEND FROM",
        "SEND TO",
        "PACKETS",
        "BYTES",
        "FOREIGN",
        "IDLE_MS"
    )?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for row in flows {
        writeln!(
            out,
            "{:>7} {:>3} {:>4}  {:<21} {:<21} {:<12} {:<21} {:<21} {:>10} {:>12} {:>8} {:>8}",
            row["session"].as_u64().unwrap_or(0),
            text(&row["leg"]),
            text(&row["stream"]),
            text(&row["local"]),
            text(&row["peer"]),
            // `?`: provisional, a better-matching source may still replace it.
            match (row["matched"].as_str(), row["locked"].as_bool()) {
                (Some(matched), Some(false)) => format!("{matched}?"),
                (Some(matched), _) => matched.to_owned(),
                (None, _) => "-".to_owned(),
            },
            text(&row["send_from"]),
            text(&row["send_to"]),
            row["packets"].as_u64().unwrap_or(0),
            row["bytes"].as_u64().unwrap_or(0),
            row["foreign_dropped"].as_u64().unwrap_or(0),
            row["idle_ms"]
                .as_u64()
                .map_or("-".into(), |ms| ms.to_string()),
        )?;
    }
    writeln!(out, "{} flows\n", flows.len())?;
    render_dialogs(&mut out, report)?;
    writeln!(out, "\nXDP verdicts (non-zero):")?;
    if let Some(reasons) = report["xdp_reasons"].as_object() {
        for (name, count) in reasons.iter().filter(|(_, c)| c.as_u64() != Some(0)) {
            writeln!(out, "  {name:<26} {}", count.as_u64().unwrap_or(0))?;
        }
    }
    Ok(out)
}

/// One line per direction of each dialog: who sends, where it arrives and goes, what the
/// kernel forwarded.
fn render_dialogs(out: &mut String, report: &Value) -> anyhow::Result<()> {
    let dialogs = report["dialogs"]
        .as_array()
        .context("report without dialogs")?;
    writeln!(
        out,
        "{:<36} {:<6} {:<3} {:<21} {:<21} {:>8} {:>9} {:>6}  ENDED",
        "CALL-ID", "FROM", "FWD", "ARRIVES AT", "GOES TO", "REQUESTS", "RESPONSES", "CSEQ"
    )?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    for dialog in dialogs {
        let ended = dialog["ended"].as_object().map_or("-".to_owned(), |end| {
            format!(
                "{} by the {}, {} ms ago",
                end["code"],
                text(&end["bye_from"]),
                end["ms_ago"]
            )
        });
        for side in ["caller", "callee"] {
            let leg = &dialog[side];
            writeln!(
                out,
                "{:<36} {:<6} {:<3} {:<21} {:<21} {:>8} {:>9} {:>6}  {}",
                text(&dialog["call_id"]),
                side,
                if leg["forwarded_in_kernel"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                text(&leg["listener"]),
                text(&leg["next_hop"]),
                leg["requests"].as_u64().unwrap_or(0),
                leg["responses"].as_u64().unwrap_or(0),
                leg["highest_cseq"].as_u64().unwrap_or(0),
                ended,
            )?;
        }
    }
    writeln!(out, "{} dialogs", dialogs.len())?;
    Ok(())
}
