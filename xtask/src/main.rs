//! `cargo xtask <task>`: everything the project does besides compiling, in one place.
//!
//! It depends on nothing that needs the eBPF toolchain, so `setup` can run on a machine that
//! has none of it yet.
mod setup;

#[path = "../../sbc-ebpf/build_recipe.rs"]
mod recipe;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sbc project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, rust-src, bpf-linker (skips what is present).
    Setup {
        /// Also exercise every install step whose result is present: each Debian package has an
        /// install candidate, rust-src can be added, bpf-linker builds into a throwaway root.
        #[arg(long)]
        verify: bool,
    },
    /// Build the XDP object (with BTF) at target/ebpf/sbc-xdp.o.
    BuildEbpf,
    /// Build the XDP object, the sbc binary and the lab.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run the whole test suite, privileged tests included (as root), the
    /// lab tests against the daemon built with the `lab` profile (optimised, checks kept).
    Test {
        /// Extra arguments for the privileged tests' harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        filter: Vec<String>,
    },
    /// cargo fmt --check and clippy (host crates and the XDP program), warnings as errors.
    Lint,
    /// The network-namespace lab for manual play.
    Lab {
        #[arg(value_parser = ["up", "down"])]
        action: String,
    },
    /// Set up, build in release, and measure the relay and the proxy side by side (as root);
    /// results in target/bench/.
    Bench {
        /// Arguments for the benchmark: --full for the full run (see `cargo xtask bench -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the demo: media through the sbc in a lab of namespaces (as root).
    Demo {
        /// Arguments for the demo (see `cargo xtask demo -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The value of `--peer` among the benchmark's arguments (`--peer X` or `--peer=X`).
fn peer_argument(args: &[String]) -> Option<&str> {
    args.iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix("--peer") {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        })
}

/// Runs a command in the workspace, failing if it fails.
fn run(program: impl AsRef<OsStr>, args: &[&str], envs: &[(&str, &OsStr)]) -> anyhow::Result<()> {
    let program = program.as_ref();
    let mut command = Command::new(program);
    command.current_dir(workspace()).args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status})",
            program.display(),
            args.join(" ")
        );
    }
    Ok(())
}

/// Passed and failed tests, summed over `cargo test` result lines.
#[derive(Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test` with `args`, echoing its output and adding up its result lines.
fn cargo_test(
    args: &[&str],
    envs: &[(&str, &OsStr)],
    counts: &mut TestCounts,
) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, BufReader};
    let mut command = Command::new(cargo());
    command
        .current_dir(workspace())
        .arg("test")
        // Every suite runs even after a failure, so one run reports all that is broken.
        .arg("--no-fail-fast")
        .args(args)
        .stdout(std::process::Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().context("cannot run cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        // "test result: ok. 5 passed; 0 failed; 0 ignored; ..."
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split(['.', ';']) {
                let mut words = part.split_whitespace();
                match (words.next().map(str::parse::<u64>), words.next()) {
                    (Some(Ok(n)), Some("passed")) => counts.passed += n,
                    (Some(Ok(n)), Some("failed")) => counts.failed += n,
                    _ => {}
                }
            }
        }
    }
    Ok(child.wait()?.success())
}

fn build_ebpf() -> anyhow::Result<PathBuf> {
    let object = recipe::build(&workspace(), &cargo()).map_err(anyhow::Error::msg)?;
    println!("XDP object: {}", object.display());
    Ok(object)
}

fn build(release: bool) -> anyhow::Result<PathBuf> {
    build_ebpf()?;
    let mut args = vec!["build", "-p", "sbc-userspace", "-p", "sbc-tests", "--bins"];
    if release {
        args.push("--release");
    }
    run(cargo(), &args, &[])?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace().join("target").join(profile))
}

/// The daemon the privileged tests run, built with the `lab` profile: optimised as operators
/// run it (the flood and overload tests measure it at 100,000 datagrams/s, where a debug build
/// lost two thirds of them in its receive buffer), with the debug build's checks kept.
fn build_lab_daemon() -> anyhow::Result<PathBuf> {
    run(
        cargo(),
        &["build", "-p", "sbc-userspace", "--bins", "--profile", "lab"],
        &[],
    )?;
    Ok(workspace().join("target").join("lab").join("sbc"))
}

fn lab_binary(bin_dir: &Path) -> PathBuf {
    bin_dir.join("sbc-lab")
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup { verify: false } => setup::install(),
        Task::Setup { verify: true } => setup::install_and_verify(),
        Task::BuildEbpf => build_ebpf().map(drop),
        Task::Build { release } => build(release).map(drop),
        Task::Lint => {
            run(cargo(), &["fmt", "--all", "--", "--check"], &[])?;
            run(
                cargo(),
                // The default members: every crate but the eBPF one, which is linted below.
                &["clippy", "--all-targets", "--", "-D", "warnings"],
                &[],
            )?;
            let mut clippy_bpf = recipe::cargo_for_bpf(&workspace(), &cargo(), "clippy");
            let status = clippy_bpf.args(["--", "-D", "warnings"]).status()?;
            anyhow::ensure!(status.success(), "clippy on the XDP program failed");
            Ok(())
        }
        Task::Test { filter } => {
            setup::install()?;
            build(false)?;
            let daemon = build_lab_daemon()?;
            let mut counts = TestCounts::default();
            println!("== unit tests");
            let unit_ok = cargo_test(&["--workspace", "--exclude", "sbc-tests"], &[], &mut counts)?;
            println!("== privileged tests: XDP fixtures, network-namespace lab (serially)");
            let mut args = vec!["-p", "sbc-tests", "--", "--test-threads=1"];
            args.extend(filter.iter().map(String::as_str));
            let lab_ok = cargo_test(&args, &[("SBC_BIN", daemon.as_os_str())], &mut counts)?;
            println!("tests: {} passed, {} failed", counts.passed, counts.failed);
            anyhow::ensure!(unit_ok && lab_ok, "tests failed");
            Ok(())
        }
        Task::Lab { action } => {
            let bin_dir = build(false)?;
            run(lab_binary(&bin_dir), &[&action], &[])
        }
        Task::Bench { args } => {
            setup::install()?;
            if let Some(peer) = peer_argument(&args) {
                setup::install_bench_peer(peer)?;
            }
            let bin_dir = build(true)?;
            let sbc = bin_dir.join("sbc");
            let mut bench_args = vec!["bench"];
            bench_args.extend(args.iter().map(String::as_str));
            run(
                lab_binary(&bin_dir),
                &bench_args,
                &[("SBC_BIN", sbc.as_os_str())],
            )
        }
        Task::Demo { args } => {
            setup::install()?;
            let bin_dir = build(false)?;
            let sbc = bin_dir.join("sbc");
            let mut demo_args = vec!["demo"];
            demo_args.extend(args.iter().map(String::as_str));
            run(
                lab_binary(&bin_dir),
                &demo_args,
                &[("SBC_BIN", sbc.as_os_str())],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_found_in_either_spelling() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            peer_argument(&args(&["--full", "--peer", "kamailio-rtpengine"])),
            Some("kamailio-rtpengine")
        );
        assert_eq!(
            peer_argument(&args(&["--peer=kamailio-rtpengine"])),
            Some("kamailio-rtpengine")
        );
        assert_eq!(peer_argument(&args(&["--full"])), None);
        assert_eq!(peer_argument(&args(&["--peer"])), None);
    }
}
