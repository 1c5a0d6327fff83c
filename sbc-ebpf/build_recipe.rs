// How to build the XDP object: the one recipe shared by `cargo xtask build-ebpf` and by
// `sbc-userspace/build.rs` (both `#[path]`-include this file), so the two cannot drift.
//
// The eBPF crate needs `-Z build-std=core`; we get it from the same stable toolchain as the rest of
// the workspace with RUSTC_BOOTSTRAP=1 (verified in TOOLCHAIN.md), so there is one toolchain to
// install. `-C debuginfo=2 -C link-arg=--btf` makes bpf-linker emit BTF, which gives the maps their
// typed keys and values for `bpftool map dump`. `--disable-expand-memcpy-in-order` lets LLVM
// write small memsets and memcpys as stores: with bpf-linker's default it keeps them as calls to
// aya-ebpf's byte-at-a-time `memset`, and it makes them of any run of fields set to zero (a
// tenth of the SIP forwarding's time went there).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

pub const BPF_TARGET: &str = "bpfel-unknown-none";
const PACKAGE: &str = "sbc-ebpf";
/// The sbc's XDP program, and the benchmark's generator and sink (not part of the sbc).
const BINARIES: [&str; 2] = ["sbc-xdp", "sbc-bench-xdp"];

/// The stable path of a built object: `<workspace>/target/ebpf/<binary>.o`.
fn built_object(workspace: &Path, binary: &str) -> PathBuf {
    workspace
        .join("target")
        .join("ebpf")
        .join(format!("{binary}.o"))
}

/// The sbc's XDP object: `<workspace>/target/ebpf/sbc-xdp.o`.
pub fn object_path(workspace: &Path) -> PathBuf {
    built_object(workspace, BINARIES[0])
}

/// The benchmark's object: `<workspace>/target/ebpf/sbc-bench-xdp.o`.
#[allow(dead_code)] // Used by the tests crate's benchmark, not by every includer.
pub fn bench_object_path(workspace: &Path) -> PathBuf {
    built_object(workspace, BINARIES[1])
}

/// `cargo <subcommand>` for the eBPF crate, with the recipe's target, `build-std` and flags.
pub fn cargo_for_bpf(workspace: &Path, cargo: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([subcommand, "--package", PACKAGE, "--bins", "--release"])
        .args([
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(workspace.join("target").join("ebpf"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf\x1f-Clink-arg=--disable-expand-memcpy-in-order",
        );
    // Settings meant for the host build must not leak into the BPF build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Builds the XDP object with `cargo` (the path of the cargo that runs us) and returns its path.
pub fn build(workspace: &Path, cargo: &Path) -> Result<PathBuf, String> {
    check_prerequisites()?;
    let mut cmd = cargo_for_bpf(workspace, cargo, "build");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.display()))?;
    if !status.success() {
        return Err(format!(
            "building the XDP object failed ({status}): {cmd:?}"
        ));
    }
    for binary in BINARIES {
        let built = workspace
            .join("target")
            .join("ebpf")
            .join(BPF_TARGET)
            .join("release")
            .join(binary);
        let object = built_object(workspace, binary);
        std::fs::copy(&built, &object).map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                built.display(),
                object.display()
            )
        })?;
    }
    Ok(object_path(workspace))
}

/// bpf-linker and rust-src are the two things a stock Rust install lacks; say so plainly.
fn check_prerequisites() -> Result<(), String> {
    let mut missing = String::new();
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push_str("bpf-linker is not on PATH; ");
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let rust_src = sysroot.join("lib/rustlib/src/rust/library/core");
    if !rust_src.is_dir() {
        let _ = write!(
            missing,
            "rust-src is not installed in {}; ",
            sysroot.display()
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{missing}run `cargo xtask setup` to install the eBPF toolchain"
        ))
    }
}
