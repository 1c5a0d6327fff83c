//! The pinned maps can be read by an operator: bpftool prints the flows with named fields
//! (BTF), and `sbc maps` prints the same table with the daemon stopped.
use sbc_tests::{
    bpftool,
    calls::open_calls,
    daemon::{Daemon, DaemonOptions},
    lab::Lab,
    privileges::require_lab_privileges,
};

#[test]
fn bpftool_and_sbc_maps_show_the_flows() {
    require_lab_privileges();
    let lab = Lab::up("inspect").expect("lab");
    let mut daemon = Daemon::start(&lab, &DaemonOptions::default()).expect("daemon");
    let opened = open_calls(&daemon, 0..2, false).expect("sessions");
    daemon.stop().expect("clean stop");

    let dump = daemon
        .bpftool_map("dump", "SBC_FLOWS")
        .expect("bpftool dumps the flows");
    let entries = bpftool::published_flows(&dump);
    assert_eq!(entries.len(), 8, "two sessions of four flows: {entries:?}");
    for (entry, value) in &entries {
        for field in [
            "new_src",
            "new_dst",
            "peer",
            "new_src_port",
            "new_dst_port",
            "flags",
            "session_id",
            "leg",
            "stream",
        ] {
            assert!(
                !value[field].is_null(),
                "bpftool shows no field {field} at entry {entry}: {value}"
            );
        }
    }
    let ids: Vec<u64> = entries
        .iter()
        .map(|(_, value)| value["session_id"].as_u64().unwrap())
        .collect();
    for (id, _) in &opened {
        assert_eq!(ids.iter().filter(|&&i| i == u64::from(*id)).count(), 4);
    }

    let table = daemon.command(&["maps"]).expect("sbc maps");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(text.contains("8 flows"), "{text}");
    assert!(text.contains("198.18.1.1:20000"), "{text}");

    // `sbc maps` names each flow's entry, the key bpftool looks it up by.
    let json = daemon
        .command(&["maps", "--json"])
        .expect("sbc maps --json");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let mut named: Vec<u64> = report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| flow["table_entry"].as_u64().expect("table_entry"))
        .collect();
    let mut dumped: Vec<u64> = entries.iter().map(|(entry, _)| *entry).collect();
    named.sort_unstable();
    dumped.sort_unstable();
    assert_eq!(named, dumped);
}
