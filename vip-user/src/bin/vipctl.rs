//! `vipctl`: the command-line client of `vipd`.

use std::process::ExitCode;

use clap::Parser;
use vip_user::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli::request(&cli.command) {
        Ok(Some(req)) => cli::run_remote(&cli, &req),
        Ok(None) => unreachable!("every command talks to vipd"),
        Err(e) => {
            eprintln!("vipctl: {e}");
            return ExitCode::from(2);
        }
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
