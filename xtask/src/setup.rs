//! `cargo xtask setup`: installs the prerequisites this project needs on Debian, skipping
//! whatever is already present, and says plainly what it cannot do.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::run;

/// Debian packages the tests, the demo and operators use.
const RUNTIME_PACKAGES: &[&str] = &[
    "iproute2",   // ip, netns, veth
    "util-linux", // nsenter
    "ethtool",    // lab interface offloads
    "procps",     // sysctl
    "bpftool",    // inspecting maps and programs
    "sip-tester", // SIPp: callers and backends in the tests and the demo
    "prometheus", // promtool: the tests check the /metrics exposition with it
];

/// The benchmark's peer, `--peer kamailio-rtpengine`: the main kamailio package carries the
/// dispatcher, rr, tm, pike and rtpengine modules.
const KAMAILIO_RTPENGINE_PACKAGES: &[&str] = &["kamailio", "rtpengine-daemon"];

/// What building bpf-linker against the system's LLVM 22 needs (rustc's LLVM is 22).
const BPF_LINKER_BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn has_command(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !std::path::Path::new("/etc/debian_version").exists() {
        bail!(
            "this is not Debian, so setup cannot apt-get install; install the equivalents of: {}",
            missing.join(" ")
        );
    }
    if !is_root() {
        bail!(
            "installing {} needs root (apt-get); run setup as root",
            missing.join(" ")
        );
    }
    println!("setup: installing {}", missing.join(" "));
    run("apt-get", &["update", "-qq"], &[])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    run(
        "apt-get",
        &args,
        &[("DEBIAN_FRONTEND", "noninteractive".as_ref())],
    )
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("rustup is needed to add rust-src (the eBPF crate builds core from source)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("setup: adding rust-src");
    run("rustup", &["component", "add", "rust-src"], &[])
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if has_command("bpf-linker", "--version") {
        return Ok(());
    }
    apt_install(BPF_LINKER_BUILD_PACKAGES)?;
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)");
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(
        crate::cargo(),
        &[
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
        &[
            ("PATH", path.as_ref()),
            ("LLVM_SYS_221_PREFIX", LLVM_PREFIX.as_ref()),
        ],
    )
}

/// Installs what a benchmark peer needs; `peer` as `sbc-lab bench --peer` names it.
pub fn install_bench_peer(peer: &str) -> anyhow::Result<()> {
    match peer {
        "kamailio-rtpengine" => apt_install(KAMAILIO_RTPENGINE_PACKAGES),
        // sbc-lab rejects an unknown peer with the list of known ones.
        _ => Ok(()),
    }
}

pub fn install() -> anyhow::Result<()> {
    apt_install(RUNTIME_PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    println!("setup: all prerequisites present");
    Ok(())
}
