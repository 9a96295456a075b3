//! `vipctl`: the command-line client of `vipd`.

use std::process::ExitCode;

use clap::Parser;
use vip_user::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) => cli::trace::run(args, cli.output),
        cmd => match cli::request(cmd) {
            Ok(Some(req)) => cli::run_remote(&cli, &req),
            Ok(None) => unreachable!("only trace runs without vipd"),
            Err(e) => {
                eprintln!("vipctl: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vipctl: {e}");
            ExitCode::FAILURE
        }
    }
}
