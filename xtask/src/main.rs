//! `cargo xtask setup | build | lint | test | kernels | demo | install | bench | fuzz`.
//!
//! Every command that needs the eBPF toolchain runs `setup` first, so a fresh machine
//! needs nothing but `cargo xtask test` (or `demo`).

mod build;
mod install;
mod kernels;
mod lint;
mod setup;
mod test;

use std::{path::PathBuf, time::Duration};

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
    /// Run `lint`, then every test: unit tests, BPF_PROG_TEST_RUN fixtures, namespace labs,
    /// and the fixtures again on Debian's 6.1 and 6.12 kernels (`kernels`).
    Test {
        /// Skip the lint (quick local runs; CI always lints).
        #[arg(long)]
        no_lint: bool,
        /// Skip the fixtures on other kernels (`cargo xtask kernels`, 4-7 minutes);
        /// refused under CI=true.
        #[arg(long)]
        no_kernels: bool,
        /// Passed to the test binaries (a test-name filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot Debian's kernels in qemu (software emulation) and run the packet fixtures and
    /// the differential test on each: the verifiers and JITs users meet (also the last
    /// step of `test`).
    Kernels {
        /// A kernel series (`6.1`, `6.12`: the newest Debian build of it) or an image
        /// package (`linux-image-6.1.0-57-amd64`); repeat for several. Default: 6.1, 6.12.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// Bound, in seconds, on one kernel's boot and run; the guest is killed past it.
        #[arg(long, default_value_t = kernels::DEFAULT_TIMEOUT_SECS,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Virtual CPUs of each guest.
        #[arg(long, default_value_t = kernels::DEFAULT_CPUS,
              value_parser = clap::value_parser!(u32).range(1..=64))]
        cpus: u32,
        /// Frames of the differential test in each guest. Every frame costs a few
        /// `bpf()` calls, which software emulation makes some 50 times slower than the
        /// host: 100,000 (the host's count) take about 4 minutes a kernel.
        #[arg(long, default_value_t = kernels::DEFAULT_DIFF_PACKETS)]
        diff_packets: u64,
        /// Passed to the fixtures binary inside (a test-name filter, `--skip NAME`, ...).
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
        Command::Test {
            no_lint,
            no_kernels,
            args,
        } => {
            if no_kernels && in_ci() {
                anyhow::bail!("--no-kernels is refused under CI=true: nothing may be left out");
            }
            setup::run()?;
            if !no_lint {
                lint::run()?;
            }
            test::run(&args, !no_kernels)
        }
        Command::Kernels {
            kernels,
            timeout,
            cpus,
            diff_packets,
            args,
        } => {
            setup::run()?;
            kernels::run(&kernels::Options {
                kernels,
                timeout: Duration::from_secs(timeout),
                cpus,
                diff_packets,
                args,
            })?
            .check()
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
    fn kernels_takes_several_kernels_and_refuses_zero_cpus() {
        let cli = Cli::parse_from([
            "xtask", "kernels", "--kernel", "6.1", "--kernel", "5.10", "--cpus", "1", "lb::",
        ]);
        let Command::Kernels {
            kernels,
            cpus,
            args,
            ..
        } = cli.command
        else {
            panic!("not kernels");
        };
        assert_eq!(kernels, ["6.1", "5.10"]);
        assert_eq!(cpus, 1);
        assert_eq!(args, ["lb::"]);
        assert!(Cli::try_parse_from(["xtask", "kernels", "--cpus", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "kernels", "--timeout", "0"]).is_err());
    }

    #[test]
    fn test_takes_no_lint_before_the_test_binaries_arguments() {
        let cli = Cli::parse_from(["xtask", "test", "--no-lint", "lab_", "--nocapture"]);
        let Command::Test { no_lint, args, .. } = cli.command else {
            panic!("not test");
        };
        assert!(no_lint);
        assert_eq!(args, ["lab_", "--nocapture"]);
        let cli = Cli::parse_from(["xtask", "test", "--nocapture"]);
        let Command::Test { no_lint, args, .. } = cli.command else {
            panic!("not test");
        };
        assert!(!no_lint);
        assert_eq!(args, ["--nocapture"]);
    }
}
