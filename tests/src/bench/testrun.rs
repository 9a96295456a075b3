//! Timing XDP programs with `BPF_PROG_TEST_RUN`, by the two valid methods:
//! - `repeat` mode: one call with `repeat` iterations; the kernel reports the mean time
//!   per iteration. Only valid for programs that leave the packet as they found it (the
//!   `vip_bench` programs restore it), because every iteration runs on the same buffer.
//! - many-calls mode: `repeat = 1`, many calls, wall-clock time per call. Includes the
//!   syscall, so it is only compared with floors measured the same way.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};

use super::stats::Trials;

/// Interface index the packets arrive on (`xdp_md.ingress_ifindex`); 0 leaves the
/// kernel's default (the loopback of the current namespace). Set by the next-hop section,
/// whose `bpf_fib_lookup` needs a real interface with routes and neighbours.
pub static INGRESS_IFINDEX: AtomicU32 = AtomicU32::new(0);

/// The `xdp_md` context for a packet of `len` bytes arriving on [`INGRESS_IFINDEX`].
fn ctx_in(len: usize) -> Option<[u8; 24]> {
    let ifindex = INGRESS_IFINDEX.load(Ordering::Relaxed);
    if ifindex == 0 {
        return None;
    }
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: data is the metadata length (0), data_end the packet length.
    let words = [0u32, len as u32, 0, ifindex, 0, 0];
    let mut out = [0u8; 24];
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    Some(out)
}

/// How a packet was run.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// Iterations per call (repeat mode) ...
    pub repeat: u32,
    /// ... or calls of `repeat = 1` (many-calls mode) when `repeat == 1`.
    pub calls: u32,
    /// Trials; the figure is their median.
    pub trials: usize,
}

/// Mean ns per packet of `prog` on `packet`, over `method.trials` trials. Every call must
/// give `verdict` and, in repeat mode, leave the packet unchanged (the restoring
/// wrapper worked), else the figure would be of another path and this fails.
pub fn ns_per_packet(
    ebpf: &mut Ebpf,
    prog: &str,
    packet: &[u8],
    verdict: u32,
    method: Method,
) -> Result<Trials> {
    let xdp = xdp(ebpf, prog)?;
    let mut out = vec![0u8; packet.len() + 256];
    let ctx = ctx_in(packet.len());
    let mut samples = Vec::with_capacity(method.trials);
    for _ in 0..method.trials {
        let ns = if method.repeat > 1 {
            let r = xdp
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    data_out: Some(&mut out),
                    ctx_in: ctx.as_ref().map(|c| &c[..]),
                    repeat: method.repeat,
                    ..TestRunOptions::default()
                })
                .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
            ensure!(
                r.return_value == verdict,
                "{prog} returned verdict {} (want {verdict}): it is not running the path \
                 this figure is named after",
                r.return_value
            );
            ensure!(
                &out[..r.data_size_out as usize] == packet,
                "{prog} did not restore the packet: later iterations would measure another \
                 path"
            );
            r.duration.as_nanos() as f64
        } else {
            let start = Instant::now();
            for _ in 0..method.calls {
                let r = xdp
                    .test_run(TestRunOptions {
                        data_in: Some(packet),
                        data_out: Some(&mut out),
                        ctx_in: ctx.as_ref().map(|c| &c[..]),
                        ..TestRunOptions::default()
                    })
                    .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
                if r.return_value != verdict {
                    bail!(
                        "{prog} returned verdict {} (want {verdict})",
                        r.return_value
                    );
                }
            }
            start.elapsed().as_nanos() as f64 / f64::from(method.calls)
        };
        samples.push(ns);
    }
    Ok(Trials::of(&samples))
}

/// One benchmark case: a program, a packet and the verdict it must give.
#[derive(Debug, Clone)]
pub struct Case {
    /// Row name.
    pub name: String,
    /// Program in the object.
    pub prog: &'static str,
    /// The frame.
    pub packet: Vec<u8>,
    /// Expected verdict.
    pub verdict: u32,
}

/// The unwrapped datapath in `vip_bench`, run once on a case's packet before it is
/// measured (see [`interleaved`]).
const ESTABLISH: &str = "bench_lb_once";

/// Measures every case, trial by trial in turn (case 1, 2, .., n, then again), so that a
/// slow phase of this shared machine hits every case alike and the ratios stay fair.
///
/// When the object has the datapath, each case's packet first goes once through it: the
/// new-flow cases put millions of flows in the connection table, which may replace the
/// entry of the flow an established-flow case measures (it would then measure one miss,
/// or a lookup-only stage would find nothing).
pub fn interleaved(ebpf: &mut Ebpf, cases: &[Case], method: Method) -> Result<Vec<Trials>> {
    let one = Method {
        trials: 1,
        ..method
    };
    let establish = ebpf.program(ESTABLISH).is_some();
    let mut samples = vec![Vec::with_capacity(method.trials); cases.len()];
    for _ in 0..method.trials {
        for (c, s) in cases.iter().zip(&mut samples) {
            if establish {
                run_once(ebpf, ESTABLISH, &c.packet)?;
            }
            let t = ns_per_packet(ebpf, c.prog, &c.packet, c.verdict, one)
                .with_context(|| format!("measuring {}", c.name))?;
            s.push(t.median);
        }
    }
    Ok(samples.iter().map(|s| Trials::of(s)).collect())
}

/// One run of `prog` (`repeat = 1`): verdict and output frame.
pub fn run_once(ebpf: &mut Ebpf, prog: &str, packet: &[u8]) -> Result<(u32, Vec<u8>)> {
    let xdp = xdp(ebpf, prog)?;
    let mut out = vec![0u8; packet.len() + 256];
    let ctx = ctx_in(packet.len());
    let r = xdp
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: ctx.as_ref().map(|c| &c[..]),
            ..TestRunOptions::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

fn xdp<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(prog)
        .with_context(|| format!("no program {prog} in the object"))?
        .try_into()
        .with_context(|| format!("{prog} is not an XDP program"))
}

/// Loads every XDP program in `object` (a verifier refusal names the program).
pub fn load_all(object: &[u8], progs: &[&str]) -> Result<Ebpf> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(object)
        .context("loading the eBPF object")?;
    for p in progs {
        xdp(&mut ebpf, p)?
            .load()
            .map_err(|e| anyhow::anyhow!("the verifier refused {p}: {}", verifier_log(&e)))?;
    }
    Ok(ebpf)
}

fn verifier_log(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => format!("{io_error}\n{verifier_log}"),
        other => format!("{other:#}"),
    }
}
