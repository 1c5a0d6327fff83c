//! bpftool, as the tests run it on the daemon's pinned maps: the kernel's own view of them.
use std::{ffi::OsStr, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Runs bpftool with `args`; its output, or an error with what it said.
pub fn run<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> anyhow::Result<Vec<u8>> {
    let mut command = Command::new("bpftool");
    command.args(args);
    let output = command
        .output()
        .context("bpftool is installed (`cargo xtask setup`)")?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// Runs bpftool with `args` in JSON mode and parses what it prints.
pub fn json<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> anyhow::Result<Value> {
    let mut all = vec![OsStr::new("-j").to_owned()];
    all.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
    Ok(serde_json::from_slice(&run(all)?)?)
}

/// The installed flows of a dump of the flow table (`SBC_FLOWS`, an array with an entry for
/// every local media address and port): each one's entry and the version the program reads,
/// with named fields.
pub fn published_flows(dump: &Value) -> Vec<(u64, Value)> {
    const FLOW_INSTALLED: u64 = sbc_common::flow_table::FLOW_INSTALLED as u64;
    let entries = dump.as_array().map(Vec::as_slice).unwrap_or_default();
    entries
        .iter()
        .filter_map(|entry| {
            let formatted = &entry["formatted"];
            let value = &formatted["value"];
            let sequence = value["sequence"].as_u64()?;
            let version = &value["versions"][(sequence & 1) as usize];
            let installed = version["flags"].as_u64()? & FLOW_INSTALLED != 0;
            installed.then(|| {
                (
                    formatted["key"].as_u64().unwrap_or(u64::MAX),
                    version.clone(),
                )
            })
        })
        .collect()
}
