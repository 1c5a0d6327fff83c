//! `cargo xtask setup [--verify]`: installs what this project needs on a fresh machine (Debian 12,
//! a Rust toolchain from rustup, root), skipping whatever is already present, and says plainly what
//! it cannot do.
//!
//! Skipping what is present hides broken install steps: a machine that keeps what earlier work
//! installed never runs them. `--verify` therefore also exercises every step whose result is
//! already here (every Debian package has an install candidate, rust-src can be added, bpf-linker
//! builds from its pinned version into a throwaway root), so CI catches a step that a fresh
//! machine would trip over.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::run;

/// Debian packages the tests, the demo and operators use.
const RUNTIME_PACKAGES: &[&str] = &[
    "iproute2",     // ip, netns, veth
    "util-linux",   // nsenter
    "ethtool",      // lab interface offloads
    "procps",       // sysctl
    "bpftool",      // inspecting maps and programs
    "sip-tester",   // SIPp: callers and backends in the tests and the demo
    "nftables",     // nft: the 1:1 NAT in front of the sbc in the lab behind a NAT
    "stunnel4",     // TLS for the lab's SIPp carrier (Debian's SIPp is built without TLS)
    "openssl",      // the lab's TLS certificates, and what the sbc's TLS listener offers
    "dnsmasq-base", // the lab's DNS server: SRV records of backends named by host
    "redis-server", // the fleet's shared call state ([cluster]) in the lab
    "keepalived",   // VRRP: moves the fleet's floating addresses between nodes in the lab
    "prometheus",   // promtool: the tests check the /metrics exposition with it
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
/// The bpf-linker the project is verified with. An exact version: cargo rejects `--version 0.13`
/// ("unexpected end of input while parsing minor version number").
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Every Debian package the project names, for `--verify`.
fn all_packages() -> impl Iterator<Item = &'static str> {
    RUNTIME_PACKAGES
        .iter()
        .chain(KAMAILIO_RTPENGINE_PACKAGES)
        .chain(BPF_LINKER_BUILD_PACKAGES)
        .copied()
}

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

/// What `program --version` prints, if it runs and succeeds.
fn version_of(program: &Path) -> Option<String> {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Runs one set-up step: announces it, says every 30 s that it is still going (apt and the
/// bpf-linker build run for minutes), reports how long it took, and on failure names the command
/// that does the same by hand.
fn step(
    label: &str,
    by_hand: &str,
    action: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    println!("setup: {label} ...");
    let start = Instant::now();
    let (done, finished) = mpsc::channel::<()>();
    let heartbeat = {
        let label = label.to_owned();
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_secs(30))
            {
                println!(
                    "setup: {label}: still running ({} s so far)",
                    start.elapsed().as_secs()
                );
            }
        })
    };
    let result = action();
    drop(done);
    let _ = heartbeat.join();
    let took = start.elapsed().as_secs();
    match result {
        Ok(()) => {
            println!("setup: {label}: done in {took} s");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "{e:#}\nsetup step `{label}` failed after {took} s; to run it by hand:\n    {by_hand}"
        )),
    }
}

fn require_debian_root(what: &str) -> anyhow::Result<()> {
    if !Path::new("/etc/debian_version").exists() {
        bail!("this is not Debian, so setup cannot use apt; install the equivalents of: {what}");
    }
    if !is_root() {
        bail!("{what}: apt needs root; run setup as root");
    }
    Ok(())
}

fn apt_update() -> anyhow::Result<()> {
    run("apt-get", &["update", "-q"], &[])
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
    let list = missing.join(" ");
    require_debian_root(&list)?;
    let by_hand = format!("apt-get update && apt-get install -y --no-install-recommends {list}");
    step(&format!("apt-get install {list}"), &by_hand, || {
        apt_update()?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        let noninteractive = std::ffi::OsStr::new("noninteractive");
        run("apt-get", &args, &[("DEBIAN_FRONTEND", noninteractive)])
    })
}

fn has_rust_src() -> anyhow::Result<bool> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context(
            "rustup is needed to add rust-src (the eBPF crate builds core from source); \
             a fresh machine here means a Rust toolchain installed by rustup",
        )?;
    Ok(String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src")))
}

/// `rustup component add rust-src`: a no-op when present, so `--verify` runs it as it is.
fn add_rust_src() -> anyhow::Result<()> {
    let by_hand = "rustup component add rust-src";
    step("rustup component add rust-src", by_hand, || {
        run("rustup", &["component", "add", "rust-src"], &[])
    })
}

fn ensure_rust_src() -> anyhow::Result<()> {
    if has_rust_src()? {
        return Ok(());
    }
    add_rust_src()
}

/// `cargo install` arguments for the pinned bpf-linker against LLVM 22, into `root` when given
/// (otherwise cargo's own, `~/.cargo`).
fn bpf_linker_install_args(root: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "install",
        "bpf-linker",
        "--locked",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]
    .map(OsString::from)
    .into();
    if let Some(root) = root {
        args.push("--root".into());
        args.push(root.into());
    }
    args
}

/// Builds bpf-linker with `cargo install`: the one recipe for the install and for `--verify`.
fn build_bpf_linker(root: Option<&Path>) -> anyhow::Result<()> {
    apt_install(BPF_LINKER_BUILD_PACKAGES)?;
    let args = bpf_linker_install_args(root);
    let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    let by_hand = format!(
        "apt-get install -y {} && PATH={LLVM_PREFIX}/bin:$PATH LLVM_SYS_221_PREFIX={LLVM_PREFIX} \
         cargo {}",
        BPF_LINKER_BUILD_PACKAGES.join(" "),
        shown.join(" ")
    );
    let label = match root {
        None => format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"),
        Some(root) => format!(
            "verify: building bpf-linker {BPF_LINKER_VERSION} into {} (a few minutes)",
            root.display()
        ),
    };
    step(&label, &by_hand, || {
        // Without LLVM 22's bin directory first on PATH, llvm-sys cannot find `-lLLVM`.
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        let status = Command::new(crate::cargo())
            .args(&args)
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .status()
            .context("cannot run cargo")?;
        anyhow::ensure!(
            status.success(),
            "cargo install bpf-linker failed ({status})"
        );
        Ok(())
    })
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    match version_of(Path::new("bpf-linker")) {
        Some(version) => {
            if !version.ends_with(BPF_LINKER_VERSION) {
                println!(
                    "setup: using the {version} on PATH; the project is verified with \
                     {BPF_LINKER_VERSION} (`cargo uninstall bpf-linker` and setup installs it)"
                );
            }
            Ok(())
        }
        None => build_bpf_linker(None),
    }
}

/// Installs what a benchmark peer needs; `peer` as `sbc-lab bench --peer` names it.
pub fn install_bench_peer(peer: &str) -> anyhow::Result<()> {
    match peer {
        "kamailio-rtpengine" => apt_install(KAMAILIO_RTPENGINE_PACKAGES),
        // sbc-lab rejects an unknown peer with the list of known ones.
        _ => Ok(()),
    }
}

/// Installs whatever is missing.
pub fn install() -> anyhow::Result<()> {
    let start = Instant::now();
    apt_install(RUNTIME_PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    println!(
        "setup: all prerequisites present ({} s)",
        start.elapsed().as_secs()
    );
    Ok(())
}

/// The candidate version `apt-cache policy` names for the package, if any.
fn apt_candidate(policy: &str) -> Option<&str> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|candidate| *candidate != "(none)")
}

fn verify_apt_candidates() -> anyhow::Result<()> {
    let packages: Vec<&str> = all_packages().collect();
    require_debian_root(&packages.join(" "))?;
    let by_hand = format!("apt-get update && apt-cache policy {}", packages.join(" "));
    step(
        "verify: every Debian package the project names has an install candidate",
        &by_hand,
        || {
            apt_update()?;
            let mut without = Vec::new();
            for package in &packages {
                let policy = Command::new("apt-cache")
                    .args(["policy", package])
                    .output()
                    .context("cannot run apt-cache")?;
                match apt_candidate(&String::from_utf8_lossy(&policy.stdout)) {
                    Some(candidate) => println!("setup:   {package} {candidate}"),
                    None => without.push(*package),
                }
            }
            anyhow::ensure!(
                without.is_empty(),
                "no install candidate for: {}",
                without.join(" ")
            );
            Ok(())
        },
    )
}

/// A directory under the system's temporary one that is removed when dropped, also after a
/// failed build.
struct ThrowawayDir(PathBuf);

impl ThrowawayDir {
    fn new(name: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ThrowawayDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn verify_bpf_linker_build() -> anyhow::Result<()> {
    let root = ThrowawayDir::new("sbc-setup-verify-bpf-linker")?;
    build_bpf_linker(Some(&root.0))?;
    let built = root.0.join("bin").join("bpf-linker");
    let version = version_of(&built)
        .with_context(|| format!("{} --version did not answer", built.display()))?;
    anyhow::ensure!(
        version.ends_with(BPF_LINKER_VERSION),
        "the verified build says `{version}`, not {BPF_LINKER_VERSION}"
    );
    println!("setup: verify: {version} builds and runs");
    Ok(())
}

/// Installs whatever is missing, then exercises every install step even where its result is
/// present, so a step that would fail on a fresh machine fails here too.
pub fn install_and_verify() -> anyhow::Result<()> {
    install()?;
    let start = Instant::now();
    verify_apt_candidates()?;
    add_rust_src()?;
    verify_bpf_linker_build()?;
    println!(
        "setup: verify: every install step works ({} s)",
        start.elapsed().as_secs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpf_linker_pin_is_an_exact_version_cargo_accepts() {
        let parts: Vec<&str> = BPF_LINKER_VERSION.split('.').collect();
        assert_eq!(parts.len(), 3, "major.minor.patch: {BPF_LINKER_VERSION}");
        assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()));
    }

    #[test]
    fn an_apt_candidate_is_read_from_the_policy() {
        let available = "sip-tester:\n  Installed: (none)\n  Candidate: 1:3.6.1-1+b2\n";
        assert_eq!(apt_candidate(available), Some("1:3.6.1-1+b2"));
        let unavailable = "foo:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(apt_candidate(unavailable), None);
        // apt-cache prints nothing at all for a name it has never heard of.
        assert_eq!(apt_candidate(""), None);
    }

    #[test]
    fn the_install_recipe_targets_the_throwaway_root_when_given() {
        let args = bpf_linker_install_args(Some(Path::new("/tmp/x")));
        let tail: Vec<_> = args.iter().rev().take(2).collect();
        assert_eq!(tail, [&OsString::from("/tmp/x"), &OsString::from("--root")]);
        assert!(!bpf_linker_install_args(None).contains(&OsString::from("--root")));
    }
}
