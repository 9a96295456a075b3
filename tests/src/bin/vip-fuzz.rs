//! `cargo xtask fuzz [--seed N] [--packets N] [--max-time SECS]`: the differential run
//! of `vip_lb` against the user-space model (`vip_tests::differential`), long. Prints
//! the frames run, the mismatches (the first few as hex, with the seed and the frame
//! number that reproduce them) and the `XDP_ABORTED` count; exits non-zero on any
//! mismatch or abort. Needs root (it loads BPF programs; nothing is attached).

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use vip_tests::differential::{self, DEFAULT_SEED, KINDS, Options, Report};

const USAGE: &str = "usage: vip-fuzz [--seed N] [--packets N] [--max-time SECS]";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vip-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A whole number, decimal or `0x` hex, with `_` allowed between digits.
fn number(flag: &str, v: &str) -> Result<u64> {
    let v = v.replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    parsed.with_context(|| format!("{flag} {v:?}: give a whole number (decimal or 0x hex)"))
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        packets: 10_000_000,
        seed: DEFAULT_SEED,
        keep: 5,
        progress_every: 1_000_000,
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--seed" => opts.seed = number(flag, value()?)?,
            "--packets" => opts.packets = number(flag, value()?)?,
            "--max-time" => {
                opts.max_time = Some(Duration::from_secs(number(flag, value()?)?));
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(opts)
}

fn rate(r: &Report) -> f64 {
    r.ran as f64 / r.elapsed.as_secs_f64().max(1e-9)
}

fn run() -> Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse(&args)?;
    println!(
        "fuzz: seed {:#x}, {} frames{}",
        opts.seed,
        opts.packets,
        opts.max_time
            .map(|t| format!(", at most {}s", t.as_secs()))
            .unwrap_or_default()
    );
    let report = differential::run(&opts, |r| {
        println!(
            "fuzz: {} frames, {} mismatches, {} XDP_ABORTED, {:.0}s ({:.0} frames/s)",
            r.ran,
            r.mismatches,
            r.aborted,
            r.elapsed.as_secs_f64(),
            rate(r)
        );
    })?;
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(report.kinds)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("fuzz: seed {:#x}", report.seed);
    println!(
        "fuzz: packets run {} ({} generated; {})",
        report.ran,
        report.generated,
        kinds.join(", ")
    );
    println!("fuzz: reasons (model): {}", report.reason_names());
    println!(
        "fuzz: tunnelled frames decapsulated back: {}",
        report.round_trips
    );
    println!(
        "fuzz: time {:.1}s ({:.0} frames/s){}",
        report.elapsed.as_secs_f64(),
        rate(&report),
        if report.timed_out {
            ", stopped by --max-time"
        } else {
            ""
        }
    );
    println!("fuzz: XDP_ABORTED {}", report.aborted);
    println!("fuzz: mismatches {}", report.mismatches);
    for m in &report.first {
        println!("{m}");
        println!(
            "  reproduce: cargo xtask fuzz --seed {:#x} --packets {}",
            report.seed, m.index
        );
    }
    let missing = report.missing_reasons();
    if !missing.is_empty() {
        println!("fuzz: reasons never reached: {missing:?}");
    }
    Ok(report.mismatches == 0 && report.aborted == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_flags_and_refuses_what_it_does_not_know() {
        let o = parse(&args(&[
            "--seed",
            "0x10",
            "--packets",
            "1_000",
            "--max-time",
            "60",
        ]))
        .unwrap();
        assert_eq!((o.seed, o.packets), (16, 1000));
        assert_eq!(o.max_time, Some(Duration::from_secs(60)));
        let o = parse(&[]).unwrap();
        assert_eq!((o.seed, o.packets), (DEFAULT_SEED, 10_000_000));
        for bad in [&["--seed"][..], &["--packets", "ten"], &["--verbose"]] {
            let e = parse(&args(bad)).unwrap_err().to_string();
            assert!(e.contains(bad[0]) || e.contains("ten"), "{e}");
        }
    }
}
