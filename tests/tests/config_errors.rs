//! A bad config stops `sbc run` (and `sbc check-config`) at once, with a message that names the
//! key and what is wrong with it.
use std::process::Command;

use sbc_tests::daemon::sbc_binary;

const GOOD: &str = r#"
instance = "cfgtest"
[dataplane]
interfaces = ["lo"]
[media]
public_address = "127.0.0.1"
port_min = 20000
port_max = 20999
[api]
socket = "/nonexistent/sbc-cfgtest.sock"
"#;

/// Runs `sbc <command> --config <text>` and returns (success, stderr, the config's path).
fn sbc_with_config(command: &str, text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbc.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(sbc_binary())
        .args([command, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        path.display().to_string(),
    )
}

fn assert_rejected(text: &str, key: &str, detail: &str) {
    for command in ["run", "check-config"] {
        let (ok, stderr, path) = sbc_with_config(command, text);
        assert!(!ok, "`sbc {command}` accepted a bad config");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(detail),
            "`sbc {command}` did not name `{key}` ({detail}): {stderr}"
        );
        assert!(
            stderr.contains(&path),
            "`sbc {command}` did not name the file {path}: {stderr}"
        );
    }
}

#[test]
fn unknown_key_is_named() {
    assert_rejected(
        &GOOD.replace("port_max = 20999", "port_max = 20999\nport_maximum = 3"),
        "media.port_maximum",
        "unknown field",
    );
}

#[test]
fn bad_port_range_is_named() {
    assert_rejected(
        &GOOD.replace("port_min = 20000", "port_min = 21000"),
        "media.port_min",
        "must be below media.port_max",
    );
    assert_rejected(
        &GOOD.replace("port_max = 20999", "port_max = 99999"),
        "media.port_max",
        "invalid value",
    );
}

#[test]
fn missing_interface_is_named() {
    assert_rejected(
        &GOOD.replace(r#"["lo"]"#, r#"["sbc-missing0"]"#),
        "dataplane.interfaces",
        "interface \"sbc-missing0\" does not exist",
    );
}

#[test]
fn a_duplicate_backend_is_named() {
    let sip = "[sip]\npublic_listen = \"127.0.0.1:5060\"\n\
               [[sip.backends]]\naddress = \"127.0.0.2:5060\"\n\
               [[sip.backends]]\naddress = \"127.0.0.3:5060\"\n\
               [[sip.backends]]\naddress = \"127.0.0.2:5060\"\n";
    assert_rejected(
        &format!("{GOOD}{sip}"),
        "sip.backends[2].address",
        "127.0.0.2:5060 is already sip.backends[0]",
    );
}

#[test]
fn a_good_config_passes_the_check() {
    let (ok, stderr, _) = sbc_with_config("check-config", GOOD);
    assert!(ok, "{stderr}");
}
