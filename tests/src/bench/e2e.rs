//! Section 5: end to end in the namespace lab. vip (XDP, `tunnel` and `dsr-l2`) against
//! the kernel's own nftables DNAT load balancer (`numgen` over the backends in a
//! prerouting NAT chain, the way kube-proxy's nftables mode does it), on the same
//! topology (client → router → LB node → 4 backends) with the same bounded load: a
//! fixed number of client threads, each opening one TCP connection per request
//! (`whoami`, one line back) for a fixed time, closed loop. Trials alternate between
//! the balancers so a busy phase of this shared machine hits all alike.
//!
//! CPU time is the machine's (user + system + irq + softirq from /proc/stat, all CPUs)
//! per request: client, router, backends and LB share the CPUs and softirq work cannot
//! be attributed to a namespace. The client and the servers do the same work on both
//! sides, so the difference between the rows is the difference of the balancers (with
//! DNAT the replies also cross the LB node; with vip they go from backend to router).

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use aya::programs::xdp::XdpMode;
use vip_common::{BACKEND_UP, GlobalConfig, PROTO_TCP, VIP_F_DSR_L2};
use vip_user::{
    control::maglev::{self, MaglevBackend},
    datapath::{self, Datapath, Limits, decap::Decap},
};

use super::{report::Report, stats::Trials};
use crate::lab::{
    Balancer, Lab, LabSpec, LbNode, Mode,
    client::{self, Proto},
    netns,
    vipd::HealthConfig,
    viplab::VipLab,
};

/// Section title.
pub const SECTION: &str = "5. end to end (lab): vip vs nftables DNAT";

/// The bounded load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent client threads.
    pub clients: usize,
    /// How long each trial sends.
    pub duration: Duration,
    /// Trials per balancer.
    pub trials: usize,
}

/// What one trial measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    conns_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
    failures: usize,
}

enum Side {
    Vip(VipLab),
    /// vip_lb loaded and configured by this process through `vip_user::datapath` (the
    /// same library vipd uses), for when vipd cannot start in the lab. Fields drop in
    /// order: programs detach before the lab goes.
    InProcess {
        /// Held so that its programs stay attached. Boxed: the loaded objects are some
        /// 2 KB, the other variants a few hundred bytes.
        _vip: Box<InProcessVip>,
        /// The topology.
        lab: Lab,
    },
    Nft(Lab),
}

impl Side {
    /// The in-process datapath's reason counters (for a failure message).
    fn reasons(&self) -> String {
        match self {
            Side::InProcess { _vip: v, .. } => v
                ._lb
                .reason_counts()
                .map(|r| {
                    r.iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| format!("{}={n}", k.name()))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|e| e.to_string()),
            _ => String::new(),
        }
    }

    fn lab(&self) -> &Lab {
        match self {
            Side::Vip(v) => &v.lab,
            Side::InProcess { lab: l, .. } | Side::Nft(l) => l,
        }
    }
}

/// The datapath on the LB node and the decap programs on the backends.
struct InProcessVip {
    _lb: Datapath,
    _decaps: Vec<Decap>,
    _port_pass: aya::Ebpf,
}

/// Builds a lab with nothing on the LB node, then attaches vip_lb to its eth0 and
/// configures one TCP VIP over every backend (next hops by `bpf_fib_lookup`; the lab
/// warms the LB's neighbour cache).
fn in_process(mode: Mode) -> Result<Side> {
    let lab = Lab::build(LabSpec::new(BACKENDS, mode)).context("building the lab")?;
    let mut decaps = Vec::new();
    if mode == Mode::Tunnel {
        for b in &lab.backends {
            let addr = IpAddr::V4(b.addr4);
            let d = netns::within(b.netns(), move || -> Result<Decap> {
                let mut d = Decap::load(None)?;
                d.program_mut().attach("eth0", XdpMode::default())?;
                d.add_local(addr)?;
                Ok(d)
            })??;
            decaps.push(d);
        }
    }
    // bpf_fib_lookup answers "forwarding disabled" on an interface that does not
    // forward: a load balancer is a router for its VIPs.
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", lab.lb_nodes[0].netns(), "sysctl", "-qw"])
        .args([
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
        ])
        .status()
        .context("running sysctl in the LB namespace")?;
    ensure!(
        status.success(),
        "enabling forwarding in the LB namespace failed"
    );
    let lb_src = lab.lb_nodes[0].addr4;
    let vip = lab.vip4();
    let backends: Vec<MaglevBackend> = lab
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| MaglevBackend {
            id: j as u32,
            identity: SocketAddr::new(IpAddr::V4(b.addr4), vip.port()),
            weight: 1,
        })
        .collect();
    let mtu = lab.spec.client_mtu + 100;
    let dp = netns::within(lab.lb_nodes[0].netns(), move || -> Result<Datapath> {
        let limits = Limits {
            max_vips: 4,
            max_backends: 16,
            table_size: 65_537,
            max_conns: 65_536,
            maglev_pool: vip_common::maglev_pool_default(4, 65_537) as u32,
        };
        let mut dp = Datapath::load(&limits, None)?;
        dp.set_global(&GlobalConfig {
            flags: 0,
            mtu,
            tunnel_src_v4_be: u32::from_ne_bytes(lb_src.octets()),
            tunnel_src_v4_hash_bits: 0,
            tunnel_src_v6: [0; 4],
            ..GlobalConfig::default()
        })?;
        let flags = if mode == Mode::DsrL2 { VIP_F_DSR_L2 } else { 0 };
        for b in &backends {
            dp.set_backend(
                b.id,
                &datapath::keys::backend(b.identity.ip(), BACKEND_UP, 1, 0, flags),
            )?;
        }
        let table = maglev::build(&backends, 65_537);
        dp.publish_vip(
            &datapath::keys::vip_key(vip, PROTO_TCP),
            0,
            flags,
            65_537,
            &table,
            &[],
        )?;
        dp.program_mut().attach(LbNode::IFACE, XdpMode::default())?;
        Ok(dp)
    })??;
    // What vip_lb sends back with XDP_TX must get into the switch port's stack: an
    // XDP_PASS program there gives the port NAPI (GRO alone did not, in this lab).
    let port_pass = netns::within(lab.switch_netns(), || -> Result<aya::Ebpf> {
        let mut e = super::testrun::load_all(super::VIP_BENCH, &["bench_pass_bare"])?;
        let p: &mut aya::programs::Xdp = e
            .program_mut("bench_pass_bare")
            .context("bench_pass_bare")?
            .try_into()?;
        p.attach("plb0", XdpMode::default())?;
        Ok(e)
    })??;
    Ok(Side::InProcess {
        _vip: Box::new(InProcessVip {
            _lb: dp,
            _decaps: decaps,
            _port_pass: port_pass,
        }),
        lab,
    })
}

const BACKENDS: usize = 4;

/// Builds the three labs, checks each balances, then measures them in turn.
pub fn run(report: &mut Report, load: Load) -> Result<()> {
    crate::lab::install_cleanup_handlers();
    let _serial = crate::lab::serial();
    let all: Vec<usize> = (0..BACKENDS).collect();
    let mut sides: Vec<(String, Side)> = Vec::new();
    // vip through vipd, as an operator runs it; if vipd cannot start in the lab, the same
    // datapath through vip_user::datapath from this process (said in the report). A
    // balancer whose lab cannot be built at all is reported as missing.
    for mode in [Mode::DsrL2, Mode::Tunnel] {
        let which = all.clone();
        let mode_name = mode.config_name();
        match VipLab::start(LabSpec::new(BACKENDS, mode), move |lab| {
            vec![lab.vip_config(false, "tcp", &which, HealthConfig::none())]
        }) {
            Ok(vl) => sides.push((format!("vip {mode_name} (vipd)"), Side::Vip(vl))),
            Err(e) => {
                let why = e.to_string();
                let why = why.lines().next().unwrap_or_default().to_string();
                match in_process(mode) {
                    Ok(side) => {
                        report.missing.push(format!(
                            "5. vip {mode_name} via vipd: {why}; measured with the datapath \
                             loaded by the bench itself instead"
                        ));
                        sides.push((format!("vip {mode_name} (XDP, in-process)"), side));
                    }
                    Err(e2) => report.missing.push(format!(
                        "5. vip {mode_name}: vipd failed ({why}) and so did loading it \
                         in-process: {e2:#}"
                    )),
                }
            }
        }
    }
    let mut spec = LabSpec::new(BACKENDS, Mode::DsrL2);
    spec.balancer = Balancer::NftDnat;
    sides.push((
        "nftables DNAT (kernel)".to_string(),
        Side::Nft(Lab::build(spec).context("building the nftables DNAT lab")?),
    ));

    // One new connection per request leaves every client port in TIME_WAIT for 60 s: a
    // few trials exhaust the default port range and connect() then crawls (seen here: a
    // first trial at ~3,000 conn/s, the next at ~200). Same setting on every side.
    for (name, side) in &sides {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", side.lab().client_netns(0), "sysctl", "-qw"])
            .args([
                "net.ipv4.ip_local_port_range=1024 65535",
                "net.ipv4.tcp_tw_reuse=1",
            ])
            .status()
            .context("running sysctl in the client namespace")?;
        ensure!(
            status.success(),
            "{name}: setting the client's port reuse failed"
        );
    }
    if let Some(secs) = std::env::var("VIP_BENCH_E2E_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // For looking at the labs by hand (ip netns list) before the first request.
        eprintln!("vip-bench: holding the labs for {secs} s");
        std::thread::sleep(Duration::from_secs(secs));
    }
    for (name, side) in &sides {
        let lab = side.lab();
        let s = client::spread(
            lab.client_netns(0),
            lab.vip4(),
            Proto::Tcp,
            40,
            2,
            Duration::from_secs(30),
        )?;
        ensure!(
            s.failures.is_empty() && s.counts.len() == BACKENDS,
            "{name}: the lab does not balance before the benchmark: {s} {:?}; datapath \
             reasons: {}",
            s.failures.first(),
            side.reasons()
        );
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sides.len()];
    for _ in 0..load.trials {
        for (i, (name, side)) in sides.iter().enumerate() {
            let lab = side.lab();
            let s = trial(lab.client_netns(0), lab.vip4(), load)
                .with_context(|| format!("load through {name}"))?;
            samples[i].push(s);
        }
    }
    for ((name, _), s) in sides.iter().zip(&samples) {
        let pick = |f: fn(&Sample) -> f64| Trials::of(&s.iter().map(f).collect::<Vec<_>>());
        let failures: usize = s.iter().map(|x| x.failures).sum();
        let note = format!(
            "{} clients × {:.0} s, closed loop, new TCP connection per request, {BACKENDS} backends; {failures} failed",
            load.clients,
            load.duration.as_secs_f64()
        );
        report
            .push(
                SECTION,
                format!("{name}: connections/s"),
                "conn/s",
                pick(|x| x.conns_per_s),
            )
            .note = note;
        report.push(
            SECTION,
            format!("{name}: latency p50"),
            "µs",
            pick(|x| x.p50_us),
        );
        report.push(
            SECTION,
            format!("{name}: latency p99"),
            "µs",
            pick(|x| x.p99_us),
        );
        report
            .push(
                SECTION,
                format!("{name}: machine CPU per request"),
                "µs/req",
                pick(|x| x.cpu_us_per_req),
            )
            .note = "all CPUs, all namespaces (see the section's doc)".into();
    }
    drop(sides);
    Ok(())
}

/// One trial: `load.clients` threads in the client namespace, each connecting, asking
/// and closing in a loop until the time is up.
fn trial(ns: &str, vip: SocketAddr, load: Load) -> Result<Sample> {
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let failures = Arc::new(Mutex::new(0usize));
    let cpu_before = cpu_jiffies()?;
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut handles = Vec::new();
    for _ in 0..load.clients {
        let (ns, lat, fail) = (ns.to_string(), latencies.clone(), failures.clone());
        handles.push(std::thread::spawn(move || -> Result<()> {
            netns::enter(&ns)?;
            let mut mine = Vec::new();
            let mut failed = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client::whoami_tcp(vip) {
                    Ok(_) => mine.push(t.elapsed().as_micros() as u32),
                    Err(_) => failed += 1,
                }
            }
            lat.lock().expect("not poisoned").extend(mine);
            *fail.lock().expect("not poisoned") += failed;
            Ok(())
        }));
    }
    for h in handles {
        h.join().expect("a client thread panicked")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_jiffies()? - cpu_before;
    let mut lat = latencies.lock().expect("not poisoned").clone();
    ensure!(!lat.is_empty(), "no request was answered through {vip}");
    lat.sort_unstable();
    let q = |p: f64| f64::from(lat[((lat.len() - 1) as f64 * p) as usize]);
    let n = lat.len() as f64;
    Ok(Sample {
        conns_per_s: n / elapsed,
        p50_us: q(0.50),
        p99_us: q(0.99),
        cpu_us_per_req: cpu as f64 * 1e6 / clock_ticks() / n,
        failures: *failures.lock().expect("not poisoned"),
    })
}

/// Busy jiffies of all CPUs: user + nice + system + irq + softirq (not idle, iowait,
/// steal).
fn cpu_jiffies() -> Result<u64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(f.len() >= 7, "unexpected /proc/stat line {line:?}");
    Ok(f[0] + f[1] + f[2] + f[5] + f[6])
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
