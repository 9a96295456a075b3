//! Per-packet figures and the floors they are compared with.

use anyhow::{Context, Result};
use aya::Ebpf;

use super::{
    report::{NS_PER_PACKET, Report},
    stats::Trials,
    testrun::{Method, ns_per_packet},
};

/// The floors' medians, the baselines of every per-packet ratio.
#[derive(Debug, Clone, Copy)]
pub struct Floors {
    /// `XDP_PASS` at once.
    pub pass: f64,
    /// Parse + swap MACs + `XDP_TX`.
    pub swap: f64,
    /// Parse + minimal IPIP + `XDP_TX`.
    pub encap: f64,
}

impl Floors {
    /// Ratios of `ns` to each floor, for a row.
    pub fn ratios(&self, ns: f64) -> Vec<(String, f64)> {
        vec![
            ("pass floor".into(), ns / self.pass),
            ("swap floor".into(), ns / self.swap),
            ("encap floor".into(), ns / self.encap),
        ]
    }
}

/// The many-calls cross-check: `repeat = 1`, wall-clock time per call (syscall included).
pub fn many_calls(
    report: &mut Report,
    ebpf: &mut Ebpf,
    progs: &[(&str, &str, Vec<u8>, u32)],
    method: Method,
) -> Result<()> {
    let section = "0b. cross-check: repeat=1, many calls (syscall included)";
    let mut pass = None;
    for (name, prog, pkt, verdict) in progs {
        let t = ns_per_packet(ebpf, prog, pkt, *verdict, method)
            .with_context(|| format!("measuring {name} call by call"))?;
        let row = report.push(section, *name, "ns/call", t);
        row.note = format!("{} calls per trial", method.calls);
        match pass {
            None => pass = Some(t.median),
            Some(p) => row.ratios.push(("bare pass".into(), t.median / p)),
        }
    }
    Ok(())
}

/// Adds one measured per-packet row with its ratios to the floors.
pub fn row(report: &mut Report, section: &str, name: &str, t: Trials, floors: &Floors, note: &str) {
    let row = report.push(section, name, NS_PER_PACKET, t);
    row.ratios = floors.ratios(t.median);
    row.note = note.into();
}
