//! Section 3c: applying configs through the control plane's owner (the code vipd runs for
//! its config file, SIGHUP and `vipctl apply`), into a loaded `vip_lb`: a whole config of
//! 1,000 and 10,000 VIPs, a reload that changes one VIP of 10,000, and what a packet
//! costs while an apply runs.

use std::{
    fmt::Write as _,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use vip_common::{NEXTHOP_F_VALID, NextHop};
use vip_user::{
    config::Config,
    control::owner::Owner,
    daemon::event_loop,
    datapath::{Datapath, tables},
    protocol::{Request, Response},
};

use super::{packets, report::Report, stats::Trials};
use crate::fixture::action;

/// Section title (shares section 3's table).
pub const SECTION: &str = super::control::SECTION;

/// Small Maglev tables (prime): 10,000 VIPs × 2 halves × 65537 entries would need 2.6
/// GB of kernel memory (see docs/benchmarks.md).
const TABLE_SIZE: u32 = 1021;

/// The most backends per VIP that 10,000 VIPs can have: every (VIP, backend) pair is a
/// backend id of its own, and ids are 16 bits wide in the Maglev tables (at most
/// 65,536), so 10,000 × 10 does not fit.
pub const PER_VIP_AT_10K: u32 = 6;

/// A config of `vips` VIPs of `per_vip` backends each (addresses from 198.19.0.0/16),
/// with room for 24 more VIPs; VIP `bump`'s first backend gets weight 2 (a reload
/// that changes one VIP).
fn config_text(vips: u32, per_vip: u32, bump: Option<u32>) -> String {
    config_text_full(vips, per_vip, bump, &std::process::id().to_string(), None)
}

/// The bench config (as `config_text` writes it) for instance `vipbench{name}`, with its API socket
/// `/tmp/vipbench-{name}.sock` and state file `/tmp/vipbench-{name}-state.json`,
/// attached to `interface`.
pub fn config_text_named(vips: u32, per_vip: u32, name: &str, interface: &str) -> String {
    config_text_full(vips, per_vip, None, name, Some(interface))
}

fn config_text_full(
    vips: u32,
    per_vip: u32,
    bump: Option<u32>,
    name: &str,
    interface: Option<&str>,
) -> String {
    let mut s = String::new();
    let pid = name;
    let _ = writeln!(s, "instance = \"vipbench{pid}\"");
    let _ = writeln!(s, "state_file = \"/tmp/vipbench-{pid}-state.json\"\n");
    let interfaces = interface.map_or(String::new(), |i| format!("\"{i}\""));
    let _ = writeln!(s, "[datapath]\ninterfaces = [{interfaces}]\nmtu = 1600\n");
    let max_vips = vips + 24;
    let _ = writeln!(
        s,
        "[limits]\nmax_vips = {max_vips}\nmax_backends = {}\ntable_size = {TABLE_SIZE}\nmax_conns = 65536\n",
        (max_vips * per_vip).min(vip_common::MAX_BACKEND_IDS)
    );
    let _ = writeln!(s, "[api]\nsocket = \"/tmp/vipbench-{pid}.sock\"\n");
    for i in 0..vips {
        let _ = writeln!(
            s,
            "[[vip]]\naddress = \"{}\"\nprotocol = \"tcp\"\nmode = \"tunnel\"\ntable_size = {TABLE_SIZE}\n",
            vip_addr(i)
        );
        let _ = writeln!(s, "[vip.health]\ntype = \"none\"\n");
        for j in 0..per_vip {
            let weight = if bump == Some(i) && j == 0 { 2 } else { 1 };
            let _ = writeln!(
                s,
                "[[vip.backend]]\naddress = \"198.19.{}.{}:8080\"\nweight = {weight}\nstate = \"ready\"\n",
                j / 250,
                j % 250 + 1
            );
        }
    }
    s
}

/// VIP `i`'s address (up to 32,768 VIPs).
fn vip_addr(i: u32) -> std::net::SocketAddr {
    let host = i % 32_768;
    std::net::SocketAddr::from(([198, 19, 128 + (host >> 8) as u8, host as u8], 80))
}

fn parse(text: &str, what: &str) -> Result<Config> {
    Config::parse(text, what).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every row of the section.
pub fn run(report: &mut Report, trials: usize) -> Result<()> {
    whole_config(report, trials, 1000, 10)?;
    whole_config(report, trials, 10_000, PER_VIP_AT_10K)?;
    reload_one(report, trials)?;
    forwarding_during_apply(report, trials)?;
    Ok(())
}

/// Times `Owner::set_vips` with a whole config on a fresh datapath, `trials` times.
fn whole_config(report: &mut Report, trials: usize, vips: u32, per_vip: u32) -> Result<()> {
    let full = parse(&config_text(vips, per_vip, None), "bench config")?;
    let empty = parse(&config_text(0, per_vip, None), "bench config (no VIPs)")?;
    // The same limits for both, so the empty owner can take the full set.
    let empty = Config {
        limits: full.limits,
        ..empty
    };
    let mut writes = 0;
    let mut samples = Vec::new();
    for _ in 0..trials {
        let dp = Datapath::load(&tables::limits(&full.limits), None)
            .context("loading vip_lb for the apply benchmark")?;
        let mut owner = Owner::start(&empty, dp, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = Instant::now();
        let stats = owner
            .set_vips(full.vips.clone())
            .map_err(|e| anyhow::anyhow!("applying {vips} VIPs: {e}"))?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        writes = stats.map_writes();
    }
    report
        .push(
            SECTION,
            format!("apply a {vips}-VIP config ({per_vip} backends each, M={TABLE_SIZE})"),
            "ms",
            Trials::of(&samples),
        )
        .note = format!(
        "vip_user::control::owner::Owner::set_vips into a loaded vip_lb (what vipd does for its \
         config / vipctl apply): validation, ids, {vips} Maglev builds, {writes} map writes"
    );
    Ok(())
}

/// Scratch files of one benchmark, removed on drop.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A SIGHUP that changes one VIP of 10,000: what vipd's event loop does for it
/// (`event_loop::handle(Request::Reload)`): read and check the file, reconcile, persist
/// the state file (written and fsynced), report the change. Its parts are timed too: the
/// file alone (`Config::load`), and the reconcile alone (`Owner::reload` on a second
/// owner without a state file).
fn reload_one(report: &mut Report, trials: usize) -> Result<()> {
    let vips = 10_000;
    let pid = std::process::id();
    let config_path = PathBuf::from(format!("/tmp/vipbench-{pid}-reload.toml"));
    let state_path = PathBuf::from(format!("/tmp/vipbench-{pid}-reload-state.json"));
    let _scratch = Scratch(vec![config_path.clone(), state_path.clone()]);
    let texts = [
        config_text(vips, PER_VIP_AT_10K, None),
        config_text(vips, PER_VIP_AT_10K, Some(vips / 2)),
    ];
    let parsed = [
        parse(&texts[0], "bench config")?,
        parse(&texts[1], "bench config")?,
    ];
    let mut cfg = parsed[0].clone();
    std::fs::write(&config_path, &texts[0]).context("writing the bench config")?;
    let load = || {
        Datapath::load(&tables::limits(&cfg.limits), None)
            .context("loading vip_lb for the reload benchmark")
    };
    let mut owner = Owner::start(&cfg, load()?, Some(state_path.clone()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut bare = Owner::start(&cfg, load()?, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut reload, mut parse_ms, mut reconcile_ms, mut writes) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    // No HA groups in the bench config: the reload's HA step finds nothing to announce.
    let mut ha = vip_user::daemon::ha::Ha::default();
    for t in 0..trials {
        let next = (t + 1) % 2;
        std::fs::write(&config_path, &texts[next]).context("writing the bench config")?;
        let start = Instant::now();
        let resp = event_loop::handle(&mut owner, &mut ha, &mut cfg, &config_path, Request::Reload);
        reload.push(start.elapsed().as_secs_f64() * 1e3);
        let Response::Applied(applied) = resp else {
            anyhow::bail!("the reload failed: {resp:?}");
        };
        ensure!(
            applied.changes.len() == 1,
            "one backend's weight changed, the reload says {:?}",
            applied.changes
        );
        writes = applied.map_writes;
        let start = Instant::now();
        Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        parse_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        bare.reload(&parsed[next])
            .map_err(|e| anyhow::anyhow!("reloading: {e}"))?;
        reconcile_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let state_kib = std::fs::metadata(&state_path).map_or(0, |m| m.len() / 1024);
    let (parse_ms, reconcile_ms) = (Trials::of(&parse_ms), Trials::of(&reconcile_ms));
    let reload = Trials::of(&reload);
    report
        .push(
            SECTION,
            format!("SIGHUP reload changing 1 VIP of {vips} ({PER_VIP_AT_10K} backends each)"),
            "ms",
            reload,
        )
        .note = format!(
        "vip_user::daemon::event_loop::handle(Reload): read + check the {} KiB file, \
         reconcile ({writes} map writes), persist the {state_kib} KiB state file (fsync)",
        texts[0].len() / 1024,
    );
    let mut part = |name: &str, t: Trials, note: &str| {
        let row = report.push(SECTION, name.to_string(), "ms", t);
        row.ratios
            .push(("the whole reload".into(), t.median / reload.median));
        row.note = note.into();
    };
    part(
        "  of which reading and checking the file",
        parse_ms,
        "Config::load of the same file",
    );
    part(
        "  of which the reconcile",
        reconcile_ms,
        "Owner::reload of the parsed file on an owner without a state file: plan, \
         allocate, build the changed table, write what differs",
    );
    Ok(())
}

/// The per-packet cost of the live `vip_lb` (its own maps, the ones the owner writes)
/// while an apply of 10,000 VIPs runs, against the same calls just before: an
/// established flow of a VIP the apply leaves alone, `BPF_PROG_TEST_RUN` with one packet
/// per call (the program rewrites the packet, so repeat mode would measure its own
/// output). Every call must forward.
fn forwarding_during_apply(report: &mut Report, trials: usize) -> Result<()> {
    let vips = 10_000;
    let full = parse(&config_text(vips, PER_VIP_AT_10K, None), "bench config")?;
    let first = Config {
        vips: full.vips[..1].to_vec(),
        ..full.clone()
    };
    let (mut idle, mut during, mut calls_during) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        let mut dp = Datapath::load(&tables::limits(&full.limits), None)
            .context("loading vip_lb for the forwarding benchmark")?;
        // Every backend's next hop is known: no `bpf_fib_lookup` in the way.
        let nh = NextHop {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            ifindex: 0,
            flags: NEXTHOP_F_VALID,
        };
        for id in 0..full.limits.max_backends {
            dp.set_nexthop(id, &nh)?;
        }
        // A second descriptor of the same program, for the thread that runs packets.
        let prog: OwnedFd = dp
            .program_mut()
            .fd()?
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating vip_lb's descriptor")?;
        let mut owner = Owner::start(&first, dp, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pkt = packets::padded(
            packets::client_v4(),
            vip_addr(0),
            crate::packet::L4::Tcp { syn: false },
        );
        // The flow's first packet fills its connection-table entry.
        ensure!(run_once(&prog, &pkt)?.0 == action::TX, "not forwarded");
        let calls = 2_000;
        let before: Vec<f64> = (0..calls)
            .map(|_| run_once(&prog, &pkt).map(|(_, ns)| ns))
            .collect::<Result<_>>()?;
        let done = Arc::new(AtomicBool::new(false));
        let runner = {
            let done = Arc::clone(&done);
            let pkt = pkt.clone();
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut ns = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let (verdict, t) = run_once(&prog, &pkt)?;
                    ensure!(
                        verdict == action::TX,
                        "a packet was not forwarded during the apply: {}",
                        action::name(verdict)
                    );
                    ns.push(t);
                }
                Ok(ns)
            })
        };
        let applied = owner.set_vips(full.vips.clone());
        done.store(true, Ordering::Relaxed);
        let ns = runner.join().expect("the packet thread")?;
        applied.map_err(|e| anyhow::anyhow!("applying {vips} VIPs: {e}"))?;
        ensure!(!ns.is_empty(), "no packet ran during the apply");
        idle.push(Trials::of(&before).median);
        during.push(Trials::of(&ns).median);
        calls_during.push(ns.len() as f64);
    }
    let (idle, during) = (Trials::of(&idle), Trials::of(&during));
    report
        .push(
            SECTION,
            "established flow, per call, no apply running",
            "ns/call",
            idle,
        )
        .note =
        "BPF_PROG_TEST_RUN on the live vip_lb, one packet per call (syscall included)".into();
    let row = report.push(
        SECTION,
        format!("established flow, per call, while {vips} VIPs are applied"),
        "ns/call",
        during,
    );
    row.ratios
        .push(("no apply running".into(), during.median / idle.median));
    row.note = format!(
        "the same calls from a second thread during Owner::set_vips of {vips} VIPs; every \
         one forwarded ({} calls per apply, median); on 2 CPUs the apply and the packets \
         share the machine",
        Trials::of(&calls_during).median
    );
    Ok(())
}

/// `bpf_attr` for `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h, the `test` member).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `BPF_PROG_TEST_RUN`, the `bpf()` command.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// One `BPF_PROG_TEST_RUN` of `pkt` on the program behind `prog` (a raw call: aya's
/// `TestRun` wants the program object, which the owner's datapath keeps): the verdict
/// and the call's wall-clock ns.
fn run_once(prog: &OwnedFd, pkt: &[u8]) -> Result<(u32, f64)> {
    let mut out = vec![0u8; pkt.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: pkt.len() as u32,
        data_size_out: out.len() as u32,
        data_in: pkt.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    let start = Instant::now();
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the buffers it
    // points to live until the call returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    let ns = start.elapsed().as_nanos() as f64;
    ensure!(
        rc == 0,
        "BPF_PROG_TEST_RUN of vip_lb: {}",
        std::io::Error::last_os_error()
    );
    Ok((attr.retval, ns))
}
