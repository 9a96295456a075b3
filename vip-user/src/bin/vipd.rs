//! `vipd`: loads the vip datapath, owns its maps and keeps them right.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vip_user::config::Config;

/// The vip load-balancer daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file without touching anything.
    Check {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                let backends: usize = c.vips.iter().map(|v| v.backends.len()).sum();
                println!(
                    "{}: OK (instance {}, {} VIPs, {backends} backends)",
                    config.display(),
                    c.instance,
                    c.vips.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vipd: {e}");
                ExitCode::from(2)
            }
        },
    }
}
