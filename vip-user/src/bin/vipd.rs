//! `vipd`: loads the vip datapath, owns its maps and keeps them right.

use clap::{Parser, Subcommand};

/// The vip load-balancer daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the datapath, attach it, apply the config and serve the API.
    Run {
        /// Config file (TOML).
        #[arg(short, long)]
        config: std::path::PathBuf,
    },
    /// Validate a config file without touching anything.
    Check {
        /// Config file (TOML).
        #[arg(short, long)]
        config: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } | Command::Check { .. } => {
            anyhow::bail!("not implemented in this build")
        }
    }
}
