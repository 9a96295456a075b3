//! Packet fixtures: a table of {name, input bytes, expected verdict, expected output
//! bytes, expected counter} run through `BPF_PROG_TEST_RUN` on a loaded, unattached
//! program. Map setup is done by the test on the [`Ebpf`] before the table runs.

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use vip_common::{MAP_REASONS, Reason};
use vip_user::datapath::{Datapath, decap::Decap};

/// XDP verdicts, as the kernel numbers them.
pub mod action {
    /// `XDP_ABORTED`: a program error. Never expected.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;

    /// Printable name of a verdict.
    pub fn name(a: u32) -> &'static str {
        match a {
            ABORTED => "XDP_ABORTED",
            DROP => "XDP_DROP",
            PASS => "XDP_PASS",
            TX => "XDP_TX",
            REDIRECT => "XDP_REDIRECT",
            _ => "unknown verdict",
        }
    }
}

/// What the output packet must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Byte for byte the input (the datapath must not touch what it does not own).
    Unchanged,
    /// Exactly these bytes.
    Bytes(Vec<u8>),
    /// Not checked (dropped packets).
    Any,
}

/// One row of a fixture table.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// What the case shows.
    pub name: &'static str,
    /// The frame, from the Ethernet header on.
    pub input: Vec<u8>,
    /// Expected verdict (see [`action`]).
    pub verdict: u32,
    /// Expected output frame.
    pub output: Output,
    /// The reason counter that must go up by one.
    pub reason: Reason,
}

/// Loads an object (not attaching anything) and the XDP program `prog` in it.
pub fn load(object: &[u8], prog: &str) -> Ebpf {
    load_with(&mut EbpfLoader::new(), object, prog)
}

/// [`load`] with a prepared loader (map sizes, pins).
pub fn load_with(loader: &mut EbpfLoader<'_>, object: &[u8], prog: &str) -> Ebpf {
    let mut ebpf = loader
        .load(object)
        .unwrap_or_else(|e| panic!("loading the eBPF object failed: {e:#}"));
    let xdp: &mut Xdp = ebpf
        .program_mut(prog)
        .unwrap_or_else(|| panic!("no program {prog} in the object"))
        .try_into()
        .expect("an XDP program");
    xdp.load()
        .unwrap_or_else(|e| panic!("the verifier refused {prog}: {}", verifier_log(&e)));
    ebpf
}

fn verifier_log(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("{io_error}\n{verifier_log}")
        }
        other => format!("{other:#}"),
    }
}

/// Packets counted under `reason` so far, summed over CPUs.
pub fn reason_count(ebpf: &Ebpf, reason: Reason) -> u64 {
    let map = ebpf.map(MAP_REASONS).expect("REASONS map");
    let counters = PerCpuArray::<_, u64>::try_from(map).expect("per-CPU array of u64");
    counters
        .get(&(reason as u32), 0)
        .expect("reason index in range")
        .iter()
        .sum()
}

/// Runs every row of `table` through `prog` in `ebpf`; see [`run_table_on`].
pub fn run_table(ebpf: &mut Ebpf, prog: &str, table: &[Fixture]) {
    run_table_on(&mut Loaded { ebpf, prog }, table);
}

/// A program in a plain loaded object, as a [`Target`].
struct Loaded<'a> {
    ebpf: &'a mut Ebpf,
    prog: &'a str,
}

impl Target for Loaded<'_> {
    fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(self.prog)
            .expect("program exists")
            .try_into()
            .expect("an XDP program")
    }
    fn counts(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .map(|r| (*r, reason_count(self.ebpf, *r)))
            .collect()
    }
}

/// Lower-case hex, a space every 4 bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(4)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs one frame through an already loaded XDP program once; returns the verdict and
/// the output frame.
pub fn run_xdp(xdp: &mut Xdp, input: &[u8]) -> (u32, Vec<u8>) {
    // Room for the largest encapsulation the datapath adds.
    let mut out = vec![0u8; input.len() + 256];
    let res = xdp
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:#}"));
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// A loaded program the fixture tables run on: `vip_user`'s [`Datapath`] or [`Decap`].
pub trait Target {
    /// The XDP program.
    fn xdp(&mut self) -> &mut Xdp;
    /// Packets per reason so far.
    fn counts(&self) -> Vec<(Reason, u64)>;
}

impl Target for Datapath {
    fn xdp(&mut self) -> &mut Xdp {
        self.program_mut()
    }
    fn counts(&self) -> Vec<(Reason, u64)> {
        self.reason_counts().expect("reading the reason counters")
    }
}

impl Target for Decap {
    fn xdp(&mut self) -> &mut Xdp {
        self.program_mut()
    }
    fn counts(&self) -> Vec<(Reason, u64)> {
        self.reason_counts().expect("reading the reason counters")
    }
}

/// Like [`run_table`], on a [`Target`]. Every expected output given as bytes is also
/// checked with an independent parser (etherparse): all its checksums must be right.
pub fn run_table_on(target: &mut dyn Target, table: &[Fixture]) {
    let mut failures = Vec::new();
    for case in table {
        let count = |t: &dyn Target, r: Reason| {
            t.counts()
                .into_iter()
                .find(|(x, _)| *x == r)
                .map(|(_, n)| n)
                .unwrap_or(0)
        };
        let before = count(target, case.reason);
        let (verdict, out) = run_xdp(target.xdp(), &case.input);
        let after = count(target, case.reason);
        if verdict != case.verdict {
            failures.push(format!(
                "{}: verdict {} (want {})",
                case.name,
                action::name(verdict),
                action::name(case.verdict)
            ));
        }
        let want = match &case.output {
            Output::Unchanged => Some(&case.input),
            Output::Bytes(b) => {
                for e in crate::packet::checksum_errors(&out) {
                    failures.push(format!("{}: output has a bad {e}", case.name));
                }
                Some(b)
            }
            Output::Any => None,
        };
        if let Some(want) = want
            && &out != want
        {
            failures.push(format!(
                "{}: output differs\n  got  {}\n  want {}",
                case.name,
                hex(&out),
                hex(want)
            ));
        }
        if after != before + 1 {
            let moved: Vec<String> = target
                .counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}={n}", r.name()))
                .collect();
            failures.push(format!(
                "{}: counter {} went from {before} to {after} (want +1); counters now: {}",
                case.name,
                case.reason.name(),
                moved.join(" ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}
