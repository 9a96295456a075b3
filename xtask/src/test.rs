//! `cargo xtask test`: builds the eBPF objects, runs every test of the workspace, then
//! the packet fixtures on Debian's 6.1 and 6.12 kernels (`cargo xtask kernels`), and
//! ends with one line that counts passed, failed and skipped tests.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::Stdio,
    thread,
};

use anyhow::{Context, Result, bail};

use crate::{build, in_ci, kernels};

/// What a privileged test prints (to the real stderr, past libtest's capture) when it
/// skips outside CI. Keep in sync with `vip_tests::privileged`.
const SKIP_MARKER: &str = "vip-test-skipped:";

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    skipped: u64,
}

/// Runs the whole suite; `with_kernels` adds the run on other kernels.
pub fn run(args: &[String], with_kernels: bool) -> Result<()> {
    build::ebpf()?;
    build::lab_bins(false)?;
    if in_ci() {
        eprintln!("test: CI=true, privileged tests may not skip");
    }
    let mut cmd = build::cargo_user();
    cmd.args(["test", "--locked", "--no-fail-fast"])
        .arg("--")
        .args(args);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let stderr = child.stderr.take().expect("piped");
    let err_reader = thread::spawn(move || tee(stderr, &mut std::io::stderr()));
    let mut tally = tee(child.stdout.take().expect("piped"), &mut std::io::stdout());
    let err_tally = err_reader.join().expect("stderr reader");
    tally.skipped += err_tally.skipped;
    let status = child.wait()?;
    // The same fixtures under the verifiers of the kernels users run. Not with a test
    // filter: that asks for some tests, and the kernels' run is all of the fixtures.
    let mut kernels_failed = Vec::new();
    if with_kernels && args.is_empty() {
        let summary = kernels::run(&kernels::Options::default())?;
        tally.passed += summary.passed;
        tally.failed += summary.failed;
        kernels_failed = summary.bad;
    } else if with_kernels {
        eprintln!("test: a test filter was given: not running the fixtures on other kernels");
    }
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed,
        tally.failed,
        tally.skipped + tally.ignored
    );
    if !status.success() || tally.failed > 0 {
        bail!("tests failed ({status})");
    }
    if !kernels_failed.is_empty() {
        bail!("the fixtures failed on {}", kernels_failed.join(", "));
    }
    if in_ci() && tally.skipped > 0 {
        bail!("{} privileged tests skipped under CI=true", tally.skipped);
    }
    Ok(())
}

/// Copies a stream line by line to `out` and counts libtest's result lines and skips.
fn tee(from: impl Read, out: &mut impl Write) -> Tally {
    let mut tally = Tally::default();
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            tally.passed += count(rest, "passed");
            tally.failed += count(rest, "failed");
            tally.ignored += count(rest, "ignored");
        } else if line.contains(SKIP_MARKER) {
            tally.skipped += 1;
        }
    }
    tally
}

/// The number before `word` in "ok. 3 passed; 0 failed; ...".
fn count(text: &str, word: &str) -> u64 {
    text.split(';')
        .filter_map(|part| {
            let mut it = part.split_whitespace().rev();
            (it.next() == Some(word)).then(|| it.next()?.parse::<u64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_result_lines() {
        let rest =
            "ok. 12 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(rest, "passed"), 12);
        assert_eq!(count(rest, "failed"), 1);
        assert_eq!(count(rest, "ignored"), 2);
        let text = b"test result: FAILED. 3 passed; 1 failed; 0 ignored\nvip-test-skipped: x\n";
        let t = tee(&text[..], &mut Vec::new());
        assert_eq!((t.passed, t.failed, t.skipped), (3, 1, 1));
    }
}
