//! The lab for people: `up` and `down` for manual play, `demo` for the README's first command,
//! `bench` for the numbers. Run through `cargo xtask lab up|down`, `cargo xtask demo` and
//! `cargo xtask bench`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sbc_tests::{
    bench::{self, Mode, Peer, Section},
    lab::Lab,
};

/// Namespaces of the manual lab: sbc-lab-caller, sbc-lab-sbc, sbc-lab-callee, sbc-lab-rogue.
const MANUAL_PREFIX: &str = "sbc-lab";

#[derive(Parser)]
#[command(name = "sbc-lab", about = "Network-namespace lab for the sbc")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the lab namespaces and leave them up.
    Up,
    /// Remove the lab namespaces.
    Down,
    /// Run the demo: media sessions with RTP both ways through the sbc, then a report.
    Demo(sbc_tests::demo::DemoOptions),
    /// Measure the relay and the proxy side by side; print one table and write it as JSON and
    /// Markdown.
    Bench(BenchOptions),
}

#[derive(Args)]
struct BenchOptions {
    /// The full run (the numbers for BENCHMARKS.md); the default is a quick run.
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// A quick run (the default): every measurement, smaller and shorter.
    #[arg(long)]
    quick: bool,
    /// Also measure this stack on the same harness, for ratios against it (installed by
    /// `cargo xtask bench`); the default run measures the SBC alone.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Concurrent streams of the paced relay runs, comma-separated (default: 1000; the full run
    /// adds 9000). The saturation runs use the smallest.
    #[arg(long, value_delimiter = ',')]
    streams: Option<Vec<u32>>,
    /// Run only these sections, comma-separated (while working on one); the table then has
    /// only their rows.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up => {
            Lab::down(MANUAL_PREFIX);
            let lab = Lab::up_named(MANUAL_PREFIX)?;
            println!("lab up: {}", lab.describe());
            println!(
                "run the daemon inside it with:\n  nsenter --net=/run/netns/{0}-sbc target/debug/sbc run --config examples/lab.toml\n\
                 and remove it with `cargo xtask lab down`",
                MANUAL_PREFIX
            );
            lab.keep();
        }
        Command::Down => {
            Lab::down(MANUAL_PREFIX);
            println!("lab down");
        }
        Command::Demo(options) => sbc_tests::demo::run(&options)?,
        Command::Bench(options) => {
            sbc_tests::privileges::require_lab_privileges();
            let mode = if options.full {
                Mode::Full
            } else {
                Mode::Quick
            };
            let report = bench::run(&bench::Options {
                mode,
                peer: options.peer,
                streams: options.streams,
                only: options.only,
            })?;
            print!("{}", report.text());
            report.write(&options.out)?;
            println!(
                "\nwritten: {0}/results.json, {0}/results.md",
                options.out.display()
            );
        }
    }
    Ok(())
}
