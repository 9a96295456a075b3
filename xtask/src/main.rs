//! `cargo xtask setup | build | lint | test | demo | install | bench | fuzz`.
//!
//! Every command that needs the eBPF toolchain runs `setup` first, so a fresh machine
//! needs nothing but `cargo xtask test` (or `demo`).

mod build;
mod install;
mod lint;
mod setup;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Project tasks for vip.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the build needs (Debian packages, bpf-linker, the eBPF toolchain).
    Setup,
    /// Build the eBPF programs and the user-space binaries.
    Build {
        /// Build user space in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Check formatting, import cycles, clippy (host and eBPF), rustdoc and unused
    /// dependencies.
    Lint,
    /// Run `lint`, then every test: unit tests, BPF_PROG_TEST_RUN fixtures, namespace labs.
    Test {
        /// Skip the lint (quick local runs; CI always lints).
        #[arg(long)]
        no_lint: bool,
        /// Passed to the test binaries (a test-name filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start a lab in network namespaces with vipd and send real traffic through a VIP.
    Demo,
    /// Build vipd and vipctl (release) and install them with shell completions, man
    /// pages, the systemd unit and the example config.
    Install {
        /// Installation prefix.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage everything under this root instead of / (for packaging).
        #[arg(long, default_value = "")]
        destdir: PathBuf,
    },
    /// Differential fuzzing of the XDP program against the user-space model: random,
    /// mutated and adversarial frames through BPF_PROG_TEST_RUN (needs root).
    Fuzz {
        /// The generator's seed (decimal or 0x hex); a run is determined by it.
        #[arg(long)]
        seed: Option<String>,
        /// Frames to run.
        #[arg(long, default_value = "10000000")]
        packets: u64,
        /// Stop after this many seconds, whatever --packets says.
        #[arg(long)]
        max_time: Option<u64>,
    },
    /// Run the benchmarks and write target/bench/.
    Bench {
        /// Passed to the benchmark binary (e.g. a section name).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            build::all(release)
        }
        Command::Lint => {
            setup::run()?;
            lint::run()
        }
        Command::Test { no_lint, args } => {
            setup::run()?;
            if !no_lint {
                lint::run()?;
            }
            test::run(&args)
        }
        Command::Install { prefix, destdir } => {
            setup::run()?;
            install::run(&prefix, &destdir)
        }
        Command::Demo => {
            setup::run()?;
            build::ebpf()?;
            build::lab_bins(true)?;
            build::run_bin("vip-tests", "vip-demo", true, &[])
        }
        Command::Fuzz {
            seed,
            packets,
            max_time,
        } => {
            setup::run()?;
            build::ebpf()?;
            let mut args = vec!["--packets".to_string(), packets.to_string()];
            if let Some(seed) = seed {
                args.extend(["--seed".to_string(), seed]);
            }
            if let Some(secs) = max_time {
                args.extend(["--max-time".to_string(), secs.to_string()]);
            }
            build::run_bin("vip-tests", "vip-fuzz", true, &args)
        }
        Command::Bench { args } => {
            setup::run()?;
            build::ebpf()?;
            // Section 5 starts the lab's backend servers.
            build::lab_bins(true)?;
            build::run_bin("vip-tests", "vip-bench", true, &args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The cargo target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// True when running under CI (`CI=true`): privileged tests must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn test_takes_no_lint_before_the_test_binaries_arguments() {
        let cli = Cli::parse_from(["xtask", "test", "--no-lint", "lab_", "--nocapture"]);
        let Command::Test { no_lint, args } = cli.command else {
            panic!("not test");
        };
        assert!(no_lint);
        assert_eq!(args, ["lab_", "--nocapture"]);
        let cli = Cli::parse_from(["xtask", "test", "--nocapture"]);
        let Command::Test { no_lint, args } = cli.command else {
            panic!("not test");
        };
        assert!(!no_lint);
        assert_eq!(args, ["--nocapture"]);
    }
}
