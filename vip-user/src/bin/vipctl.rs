//! `vipctl`: the command-line client of `vipd`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use vip_user::{
    Report,
    cli::{self, Cli, CliError, Command},
    manual,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) if args.live => cli::live::run(&cli, args),
        Command::Trace(args) => cli::trace::run(args, cli.output).map_err(CliError::from),
        Command::Completions { shell } => Ok(manual::completions(Cli::command(), *shell)),
        Command::Man { dir } => manual::man_pages(Cli::command(), dir)
            .map(|pages| format!("wrote {} man pages into {}\n", pages.len(), dir.display()))
            .map_err(CliError::from),
        cmd => match cli::request(cmd) {
            Ok(Some(req)) => cli::run_remote(&cli, &req),
            Ok(None) => unreachable!("only trace, completions and man run without vipd"),
            Err(e) => {
                eprintln!("vipctl: {}", Report(&e));
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(text) => {
            // A closed pipe (`vipctl ... | head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The one place vipctl prints an error: with every cause.
            eprintln!("vipctl: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}
