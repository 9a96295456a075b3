//! `cargo xtask bench [SECTION...] [--quick]`: per-packet cost, scaling, control plane,
//! balance, end to end. Writes target/bench/results.{json,md} and per_packet.svg, and
//! prints the table.
//!
//! Sections: `floors`, `packet`, `scale`, `control`, `balance`, `e2e`, `mpps` (default:
//! all).
//! `--quick` runs fewer iterations (for trying the harness, not for figures).
//! `--trials N` (at least 5) sets the trials of every figure (default: 9 per packet, 5
//! elsewhere); more steady the medians on a busy machine.
//! `--jit PROG` also writes the JIT image of `vip_bench`'s program PROG to
//! `target/bench/PROG.jit.bin`, for profiling with `perf` (see `bench::jit`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, ensure};
use vip_tests::{
    bench::{
        VIP_BENCH, apply, balance, control, datapath, e2e, flood, jit, lbsetup, live_trace,
        machine::{Machine, current_cpu, pin_to_cpu},
        memory, micro, mpps, nexthop, packets,
        per_packet::{self, Floors},
        report::Report,
        rss, status,
        testrun::Method,
    },
    fixture::action,
};

const SECTIONS: [&str; 8] = [
    "floors", "packet", "scale", "control", "memory", "balance", "e2e", "mpps",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The argument after `flag`, if `flag` is given.
fn args_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// The value of `flag` (an error naming `what` when it is given without one).
fn flag_value(args: &[String], flag: &str, what: &str) -> Result<Option<String>> {
    if !args.iter().any(|a| a == flag) {
        return Ok(None);
    }
    args_after(args, flag)
        .map(|v| Some(v.to_string()))
        .with_context(|| format!("{flag} needs {what}"))
}

/// `--trials N`: a whole number, at least the method's minimum of 5.
fn parse_trials(v: &str) -> Result<usize> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= 5)
        .with_context(|| format!("--trials {v:?}: give a whole number of at least 5"))
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let jit = flag_value(&args, "--jit", "a program name, e.g. bench_lb")?;
    let trials_arg = flag_value(&args, "--trials", "a number of trials, e.g. 15")?
        .map(|v| parse_trials(&v))
        .transpose()?;
    let values = [jit.as_deref(), args_after(&args, "--trials")];
    let mut wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--") && !values.contains(&Some(*a)))
        .collect();
    for w in &wanted {
        ensure!(
            SECTIONS.contains(w),
            "unknown section {w:?}: choose from {}",
            SECTIONS.join(", ")
        );
    }
    if wanted.is_empty() {
        wanted = SECTIONS.to_vec();
    }
    let on = |s: &str| wanted.contains(&s);
    let trials = trials_arg.unwrap_or(if quick { 3 } else { 5 });
    // Per-packet figures move with the machine's other tenants; more interleaved trials
    // steady their medians (each costs well under a second). `--trials N` sets every
    // section's count.
    let repeat = Method {
        repeat: if quick { 100_000 } else { 1_000_000 },
        calls: 0,
        trials: trials_arg.unwrap_or(if quick { 3 } else { 9 }),
    };
    let calls = Method {
        repeat: 1,
        calls: if quick { 20_000 } else { 200_000 },
        trials,
    };

    let mut report = Report {
        machine: Machine::detect(),
        command: format!("cargo xtask bench {}", args.join(" "))
            .trim_end()
            .to_string(),
        rows: Vec::new(),
        missing: Vec::new(),
    };
    if quick {
        report.missing.push(
            "--quick: fewer iterations and trials than the method asks; not for publishing".into(),
        );
    }

    let needs_bpf = ["floors", "packet", "scale"].iter().any(|s| on(s));
    let mut floors: Option<Floors> = None;
    if needs_bpf {
        ensure!(
            !VIP_BENCH.is_empty(),
            "the bench eBPF object vip-bench was not built: run `cargo xtask bench` (it \
             builds the eBPF programs first)"
        );
        // Per-CPU maps (counters, the wrapper's scratch) are per CPU: stay on one.
        let cpu = pin_to_cpu(current_cpu()).context("pinning the benchmark to one CPU")?;
        eprintln!("vip-bench: pinned to CPU {cpu}");
    }
    if on("floors") || on("packet") {
        floors = Some(datapath::per_packet(&mut report, repeat)?);
        let mut ebpf = lbsetup::load(datapath::DEFAULT_SETUP)?;
        let pkt = packets::tcp_v4(packets::client_v4());
        per_packet::many_calls(
            &mut report,
            &mut ebpf,
            &[
                (
                    "XDP_PASS, no wrapper",
                    "bench_pass_bare",
                    pkt.clone(),
                    action::PASS,
                ),
                (
                    "floor: IPIP encap (wrapped)",
                    "bench_encap",
                    pkt.clone(),
                    action::TX,
                ),
                (
                    "tunnel: TCP established (wrapped)",
                    "bench_lb",
                    pkt,
                    action::TX,
                ),
            ],
            calls,
        )?;
    }
    if on("packet") {
        live_trace::run(&mut report, repeat, floors)?;
        nexthop::run(&mut report, repeat, floors)?;
        micro::run(&mut report, repeat)?;
    }
    if on("scale") {
        datapath::scaling(&mut report, repeat, floors)?;
    }
    if on("control") {
        control::build_times(&mut report, trials);
        control::backend_down(&mut report, trials);
        control::publish_backend_down(&mut report, trials)?;
        apply::run(&mut report, trials)?;
        status::run(&mut report, trials)?;
        if let Err(e) = rss::run(&mut report) {
            // It starts the vipd binary: say what failed and keep the other figures.
            eprintln!("vip-bench: vipd's resident memory: {e:#}");
            report
                .missing
                .push(format!("3. vipd resident memory: {e:#}"));
        }
    }
    if on("memory") {
        memory::run(&mut report)?;
    }
    if on("balance") {
        balance::run(&mut report);
        if let Err(e) = flood::run(&mut report, quick) {
            // It loads vip_lb (root): say what failed and keep the other figures.
            eprintln!("vip-bench: flood survival: {e:#}");
            report.missing.push(format!("4. flood survival: {e:#}"));
        }
    }
    if on("e2e") {
        let load = e2e::Load {
            clients: 4,
            duration: std::time::Duration::from_secs(if quick { 1 } else { 3 }),
            trials,
        };
        if let Err(e) = e2e::run(&mut report, load) {
            // The lab needs vipd, the decap program and namespaces; say what failed and
            // keep the other sections' figures.
            eprintln!("vip-bench: section 5 failed: {e:#}");
            report.missing.push(format!("5. end to end: {e:#}"));
        }
    }
    if on("mpps") {
        let plan = mpps::Plan {
            window: std::time::Duration::from_millis(if quick { 300 } else { 1000 }),
            trials: trials_arg.unwrap_or(if quick { 1 } else { 3 }),
        };
        if let Err(e) = mpps::run(&mut report, plan) {
            // It needs namespaces, native XDP on veth and live-frames test runs; say what
            // failed and keep the other sections' figures.
            eprintln!("vip-bench: section 6 failed: {e:#}");
            report.missing.push(format!("6. packets per second: {e:#}"));
        }
    }

    let dir =
        PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
            .join("bench");
    if let Some(prog) = &jit {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{prog}.jit.bin"));
        let mut ebpf = lbsetup::load(datapath::DEFAULT_SETUP)?;
        let (len, tag) = jit::dump(&mut ebpf, prog, &path)?;
        println!(
            "JIT image of {prog}: {len} bytes in {}; perf symbol bpf_prog_{tag}_{prog} \
             (with net.core.bpf_jit_kallsyms = 1)",
            path.display()
        );
    }
    report.write(&dir)?;
    println!("{}", report.markdown());
    println!(
        "written: {0}/results.json {0}/results.md {0}/per_packet.svg",
        dir.display()
    );
    Ok(())
}
