//! Section 3e: the resident memory of a running `vipd` (the real binary, `vipd run`)
//! with 1 and with 10,000 VIPs: its own memory, not the maps' (those are kernel memory,
//! section 3b).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{apply, report::Report, stats::Trials};
use crate::lab::{
    cmd,
    netns::{self, Netns},
    process::LabProcess,
    workspace_binary,
};

/// Section title (shares section 3's table).
pub const SECTION: &str = super::control::SECTION;

/// A `vipd run` of its own instance, attached to a veth in a namespace of its own;
/// stopped, its maps unpinned and the namespace removed on drop.
struct Daemon {
    process: Option<LabProcess>,
    config: PathBuf,
    files: Vec<PathBuf>,
    pin_dir: String,
    _netns: Netns,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_with(libc::SIGTERM);
        }
        if let Ok(vipd) = workspace_binary("vipd", "vip-user") {
            let _ = std::process::Command::new(vipd)
                .args(["down", "--force", "-c"])
                .arg(&self.config)
                .output();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        netns::remove_pin_dir(&self.pin_dir);
    }
}

/// A line of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Starts vipd with `vips` VIPs and returns its resident and peak memory (KiB) once its
/// API answers.
fn measure(vips: u32, tag: &str) -> Result<(u64, u64)> {
    let vipd = workspace_binary("vipd", "vip-user")?;
    let vipctl = workspace_binary("vipctl", "vip-user")?;
    let pid = std::process::id();
    let dir = std::env::temp_dir();
    let config = dir.join(format!("vipbench-{pid}-{tag}.toml"));
    let log = dir.join(format!("vipbench-{pid}-{tag}.log"));
    let name = format!("{pid}{tag}");
    let ns = Netns::create(&netns::unique_prefix())?;
    cmd::ip(
        ns.name(),
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    )?;
    for dev in ["v0", "v1"] {
        cmd::ip(ns.name(), &["link", "set", dev, "up"])?;
    }
    let text = apply::config_text_named(vips, apply::PER_VIP_AT_10K, &name, "v0");
    std::fs::write(&config, &text).context("writing the vipd config")?;
    let socket = PathBuf::from(format!("/tmp/vipbench-{name}.sock"));
    let state = PathBuf::from(format!("/tmp/vipbench-{name}-state.json"));
    let pin_dir = format!("/sys/fs/bpf/vip/vipbench{name}");
    netns::register_pin_dir(&pin_dir);
    let args = vec![
        "run".to_string(),
        "-c".into(),
        config.display().to_string(),
        "--netns".into(),
        ns.name().to_string(),
    ];
    let mut daemon = Daemon {
        process: None,
        config: config.clone(),
        files: vec![config.clone(), log.clone(), socket.clone(), state],
        pin_dir,
        _netns: ns,
    };
    let process = LabProcess::spawn("vipd", "", &vipd, &args, &log)?;
    let child = process.pid().context("vipd's pid")?;
    daemon.process = Some(process);
    let start = Instant::now();
    loop {
        let ok = std::process::Command::new(&vipctl)
            .arg("--socket")
            .arg(&socket)
            .args(["vip", "list"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        let running = daemon.process.as_mut().is_some_and(LabProcess::is_running);
        if !running || start.elapsed() > Duration::from_secs(120) {
            bail!(
                "vipd with {vips} VIPs did not answer: {}",
                tail(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((status_kib(child, "VmRSS:")?, status_kib(child, "VmHWM:")?))
}

fn tail(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(10)..].join("\n"))
}

/// The rows: vipd's resident memory with 1 VIP and with 10,000 (6 backends each).
pub fn run(report: &mut Report) -> Result<()> {
    let (small, _) = measure(1, "rss1")?;
    let (big, peak) = measure(10_000, "rss10k")?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    report
        .push(
            SECTION,
            "vipd resident memory, 1 VIP",
            "MiB",
            Trials::exact(mib(small)),
        )
        .note =
        "VmRSS of `vipd run` once its API answers (attached to a veth in a namespace of its own)"
            .into();
    let row = report.push(
        SECTION,
        format!(
            "vipd resident memory, 10000 VIPs ({} backends each)",
            apply::PER_VIP_AT_10K
        ),
        "MiB",
        Trials::exact(mib(big)),
    );
    row.ratios
        .push(("1 VIP".into(), big as f64 / small.max(1) as f64));
    row.note = format!(
        "VmRSS once its API answers; peak (VmHWM) {:.1} MiB; {:.1} KiB per VIP over 1 VIP",
        mib(peak),
        (big.saturating_sub(small)) as f64 / 10_000.0
    );
    Ok(())
}
