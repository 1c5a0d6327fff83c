//! Privileged tests are real tests: when a prerequisite is missing they fail and say what.
use std::process::Command;

/// Panics with a clear message unless this process can build the lab (root, iproute2, nsenter).
pub fn require_lab_privileges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN) to create network \
         namespaces and load XDP; run it through `cargo xtask test` as root"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("ethtool", "ethtool"),
    ] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .or_else(|_| Command::new(tool).arg("--version").output())
            .is_ok();
        assert!(
            found,
            "this test needs `{tool}` (Debian package {package}); `cargo xtask setup` installs it"
        );
    }
}
