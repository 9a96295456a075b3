//! Section 1f: what the live trace costs a packet (tunnel, IPv4 TCP established): the
//! datapath without the hook (the code before the trace existed), with it and the trace
//! off, armed with a match the packet fails ('src 198.18.0.0/16 and dst port 443'), and
//! armed with one it meets. Timed (ratios against the floors of this run) and counted
//! (instructions, as section 1e counts them).
//!
//! The matching row in time runs with a full ring: `repeat` iterations outrun any reader,
//! so after the first records each packet takes the "ring full, count it lost" path
//! (parse, match, the scratch record and its frame copy, a failed output, a counter).
//! Its count is of the path that does get a record (the interpreter's ring never fills):
//! the scratch record, the copy of the snap length, the connection-table and Maglev
//! questions, the output.

use anyhow::{Context, Result, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
};
use vip_common::{MAP_TRACE_CTL, MAP_TRACE_RING, TraceCtl};
use vip_user::tracematch;

use super::{
    VIP_BENCH,
    datapath::DEFAULT_SETUP,
    insns::Program,
    lbsetup, packets,
    per_packet::{Floors, row},
    report::Report,
    stats::Trials,
    testrun::{Method, ns_per_packet, run_once},
};
use crate::fixture::action;

/// Section title.
pub const LIVE_TRACE: &str = "1f. live trace cost (tunnel, IPv4 TCP established)";

/// Snap length of the armed rows (vipctl's default).
const SNAP: u32 = 128;

fn set_trace(ebpf: &mut Ebpf, ctl: TraceCtl) -> Result<()> {
    let mut a: Array<&mut MapData, TraceCtl> = ebpf
        .map_mut(MAP_TRACE_CTL)
        .context("the bench object has no TRACE_CTL")?
        .try_into()?;
    a.set(0, ctl, 0)?;
    Ok(())
}

fn drain(ebpf: &mut Ebpf) -> Result<u64> {
    let mut r: RingBuf<&mut MapData> = ebpf
        .map_mut(MAP_TRACE_RING)
        .context("the bench object has no TRACE_RING")?
        .try_into()?;
    let mut n = 0;
    while r.next().is_some() {
        n += 1;
    }
    Ok(n)
}

/// Section 1f.
pub fn run(report: &mut Report, method: Method, floors: Option<Floors>) -> Result<()> {
    let mut ebpf = lbsetup::load(DEFAULT_SETUP)?;
    let pkt = packets::tcp_v4(packets::client_v4());
    let off = TraceCtl::default();
    let miss = tracematch::parse("src 198.18.0.0/16 and dst port 443", SNAP)?;
    let hit = tracematch::parse("src 198.18.0.0/16 and dst port 80", SNAP)?;
    let rows: [(&str, &str, TraceCtl, &str); 4] = [
        (
            "without the trace hook",
            "bench_lb_untraced",
            off,
            "the datapath as before the live trace",
        ),
        (
            "trace off",
            "bench_lb",
            off,
            "what vip_lb runs while no trace is armed",
        ),
        (
            "trace on, not matching",
            "bench_lb",
            miss,
            "armed with 'src 198.18.0.0/16 and dst port 443'",
        ),
        (
            "trace on, matching",
            "bench_lb",
            hit,
            "armed with 'src 198.18.0.0/16 and dst port 80'; timed with the ring full \
             (records counted lost), counted with room in the ring",
        ),
    ];
    // The flow is pinned first, with the trace off, so every row is of the established
    // path (the matching count asks the connection table and finds it).
    let (v, _) = run_once(&mut ebpf, "bench_lb_once", &pkt)?;
    ensure!(v == action::TX, "the established packet was not forwarded");
    let one = Method {
        trials: 1,
        ..method
    };
    let mut samples = vec![Vec::with_capacity(method.trials); rows.len()];
    for _ in 0..method.trials {
        for ((name, prog, ctl, _), s) in rows.iter().zip(&mut samples) {
            set_trace(&mut ebpf, *ctl)?;
            let t = ns_per_packet(&mut ebpf, prog, &pkt, action::TX, one)
                .with_context(|| format!("measuring {name}"))?;
            s.push(t.median);
            set_trace(&mut ebpf, off)?;
            drain(&mut ebpf)?;
        }
    }
    let program = Program::parse(VIP_BENCH)?;
    let mut base_insns = 0u64;
    let mut base_ns = 0f64;
    for (i, ((name, prog, ctl, note), s)) in rows.iter().zip(&samples).enumerate() {
        let t = Trials::of(s);
        set_trace(&mut ebpf, *ctl)?;
        let counted = program
            .run(&ebpf, prog, &pkt)
            .with_context(|| format!("counting {name}"))?;
        set_trace(&mut ebpf, off)?;
        drain(&mut ebpf)?;
        ensure!(counted.verdict == action::TX, "{name}: interpreted verdict");
        if i == 0 {
            base_insns = counted.insns;
            base_ns = t.median;
        }
        let extra = format!(
            "{note}; {} instructions ({:+} against no hook), {:.3}x the no-hook time",
            counted.insns,
            counted.insns as i64 - base_insns as i64,
            t.median / base_ns
        );
        match floors {
            Some(f) => row(report, LIVE_TRACE, name, t, &f, &extra),
            None => {
                report
                    .push(LIVE_TRACE, *name, super::report::NS_PER_PACKET, t)
                    .note = extra
            }
        }
    }
    Ok(())
}
