//! `vipctl`: the command-line client of `vipd`.

use std::process::ExitCode;

use clap::Parser;
use vip_user::{
    Report,
    cli::{self, Cli, CliError, Command},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) => cli::trace::run(args, cli.output).map_err(CliError::from),
        cmd => match cli::request(cmd) {
            Ok(Some(req)) => cli::run_remote(&cli, &req),
            Ok(None) => unreachable!("only trace runs without vipd"),
            Err(e) => {
                eprintln!("vipctl: {}", Report(&e));
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
            // The one place vipctl prints an error: with every cause.
            eprintln!("vipctl: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}
