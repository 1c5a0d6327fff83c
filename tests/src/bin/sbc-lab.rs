//! The lab for people: `up` and `down` for manual play, `demo` for the README's first command.
//! Run through `cargo xtask lab up|down` and `cargo xtask demo`.
use clap::{Parser, Subcommand};
use sbc_tests::lab::Lab;

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
    }
    Ok(())
}
