//! `vipctl`: the command-line client of `vipd`.

use clap::{Parser, Subcommand};

/// Change and inspect a running vipd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show VIPs and their backends.
    List,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::List => anyhow::bail!("not implemented in this build"),
    }
}
