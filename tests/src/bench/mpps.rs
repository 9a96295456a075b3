//! Section 6: packets per second through the real XDP path, and the load balancer's CPU
//! time per packet on it.
//!
//! `BPF_PROG_TEST_RUN` (sections 0-2) leaves out the driver, the transmission and the
//! receiving side. Here `vip_lb` runs attached in native mode to a veth and forwards
//! real frames:
//!
//! ```text
//!  namespace G                                   namespace L
//!  generator --live frames, XDP_TX--> [gen veth] ----> [lb veth]  vip_lb | floor | stack
//!  counting sink (XDP, drops) <------ [gen veth] <---- [lb veth]  XDP_TX / forwarding
//! ```
//!
//! - The generator is `mpps_gen` run by `BPF_PROG_TEST_RUN` in live-frames mode
//!   (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+) with the generator veth as ingress: its
//!   `XDP_TX` transmits every frame out of that veth, each with a flow of its own number
//!   (a cycle of 16 or 65,536 flows seen before the window, or a never-seen flow per
//!   frame).
//! - The sink, `mpps_sink` on the same veth, counts what arrived (not what was sent),
//!   counts what has the row's expected output shape, and samples a frame, which the
//!   harness decodes and checks against the datapath's own connection table.
//! - Per row, on the load balancer's veth: the floor (`mpps_tx`: swap MACs, `XDP_TX`),
//!   `vip_lb` (tunnel and dsr-l2 VIPs of one loaded datapath, connection table of 1M
//!   flows) or the kernel forwarding with nftables DNAT (an `XDP_PASS` program keeps the
//!   veth's NAPI, as in section 5's lab).
//! - Both veths have threaded NAPI; the load balancer's NAPI thread is pinned to one CPU,
//!   the generator and the sink's NAPI thread to the other, all three real-time (see
//!   `realtime`). The figure is the load balancer thread's CPU time
//!   (`/proc/PID/schedstat`) per frame that arrived. When that thread is below 90% busy,
//!   the Mpps are the harness's limit, not the balancer's.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf, Pod,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    programs::{Xdp, xdp::XdpMode},
    util::nr_cpus,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use vip_common::{BACKEND_UP, GlobalConfig, NEXTHOP_F_VALID, NextHop, PROTO_TCP, VIP_F_DSR_L2};
use vip_user::{
    control::maglev::{self, MaglevBackend},
    datapath::{self, Datapath, Limits},
};

use super::{VIP_MPPS, machine::pin_to_cpu, report::Report, stats::Trials};
use crate::{
    lab::{cmd, netns, xdp_pass},
    packet::{CLIENT_MAC, L4, LB_MAC, frame},
};

/// Section title.
pub const SECTION: &str = "6. packets per second through the real XDP path (veth, native)";

/// Flows of the "established" rows (a power of two: the generator's mask).
const ESTABLISHED_FLOWS: u32 = 1 << 16;
/// Connection-table capacity, filled before the new-flow rows.
const TABLE_FLOWS: u32 = 1 << 20;
/// The load balancer's address (tunnel source) on its veth.
const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The generator side's address: the next hop of everything the LB node forwards.
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Backends (all behind the generator's veth, where the sink counts them).
const BACKENDS: u8 = 4;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const LIVE_FRAMES: u32 = 1 << 1;
/// Frames the kernel makes per batch in live-frames mode (default 64). Frames reach the
/// load balancer's ring 16 at a time, but its NAPI thread is woken only at the end of a
/// batch: with batches of 16 it sleeps less (seen here: 45% busy with 256, 63% with 16,
/// the same offered load).
const BATCH: u32 = 16;
/// Frames per live-frames call (about a tenth of a second at the rates seen here).
const FRAMES_PER_CALL: u32 = 1 << 18;

fn backend_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 1 + i)
}
fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0x6d, 0, 0, 0x02, i]
}
fn vip_tunnel() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 1), 80)
}
fn vip_dsr() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 2), 80)
}
fn vip_nft() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 3), 80)
}

/// Flow `f`'s client, as `mpps_gen` makes it: 198.18.128.0/17, ports from 1024.
fn client(f: u32) -> SocketAddrV4 {
    let addr = 0xc612_8000 | ((f >> 15) & 0x7fff);
    SocketAddrV4::new(Ipv4Addr::from(addr), 1024 + (f & 0x7fff) as u16)
}

/// `mpps_gen`'s configuration (same layout as in `vip_mpps.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GenConfig {
    frame: [u64; 8],
    base: u32,
    mask: u32,
    ip_rest: u32,
    l4_rest: u32,
}
// SAFETY: repr(C), integers only, no padding (64 + 16 bytes).
unsafe impl Pod for GenConfig {}

/// `mpps_sink`'s configuration (same layout as in `vip_mpps.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SinkConfig {
    eth: u64,
    eth_mask: u64,
    proto: u32,
    daddr: u32,
    daddr_mask: u32,
    inner_daddr: u32,
}
// SAFETY: as GenConfig (32 bytes).
unsafe impl Pod for SinkConfig {}

/// One frame the sink copied.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Sample {
    len: u64,
    words: [u64; 12],
}
// SAFETY: as GenConfig.
unsafe impl Pod for Sample {}

fn be16(b: &[u8], i: usize) -> u32 {
    u32::from(u16::from_be_bytes([b[i], b[i + 1]]))
}

/// One's-complement sum of the big-endian words of `b[range]`, skipping the words that
/// start at `skip` offsets.
fn sum_words(b: &[u8], range: std::ops::Range<usize>, skip: &[usize]) -> u32 {
    range
        .step_by(2)
        .filter(|i| !skip.contains(i))
        .map(|i| be16(b, i))
        .sum()
}

fn fold(mut s: u32) -> u32 {
    s = (s & 0xffff) + (s >> 16);
    (s & 0xffff) + (s >> 16)
}

/// The generator's configuration for `template` (a 64-byte Ethernet/IPv4/TCP frame):
/// the checksum sums without the fields it rewrites.
fn gen_config(template: &[u8], base: u32, mask: u32) -> Result<GenConfig> {
    ensure!(template.len() == 64, "the template must be 64 bytes");
    let mut words = [0u64; 8];
    for (w, c) in words.iter_mut().zip(template.chunks_exact(8)) {
        *w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    }
    // IPv4 header at 14..34: checksum at 24, source at 26..30.
    let ip_rest = fold(sum_words(template, 14..34, &[24, 26, 28]));
    // TCP pseudo-header: destination, protocol, TCP length; then TCP at 34..64
    // (source port at 34, checksum at 50).
    let tcp_len = (template.len() - 34) as u32;
    let pseudo = be16(template, 30) + be16(template, 32) + u32::from(PROTO_TCP) + tcp_len;
    let l4_rest = fold(pseudo + sum_words(template, 34..64, &[34, 50]));
    Ok(GenConfig {
        frame: words,
        base,
        mask,
        ip_rest,
        l4_rest,
    })
}

/// What `mpps_gen` writes for flow `f` (its arithmetic, here for the unit test).
#[cfg(test)]
fn generated(cfg: &GenConfig, f: u32) -> Vec<u8> {
    let mut b: Vec<u8> = cfg.frame.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let c = client(f);
    let src = u32::from(*c.ip());
    let (hi, lo) = (src >> 16, src & 0xffff);
    b[26..30].copy_from_slice(&src.to_be_bytes());
    b[34..36].copy_from_slice(&c.port().to_be_bytes());
    let ip = !fold(cfg.ip_rest + hi + lo) as u16;
    let l4 = !fold(cfg.l4_rest + hi + lo + u32::from(c.port())) as u16;
    b[24..26].copy_from_slice(&ip.to_be_bytes());
    b[50..52].copy_from_slice(&l4.to_be_bytes());
    b
}

/// The 64-byte TCP ACK from flow 0 to `vip`.
fn template(vip: SocketAddrV4) -> Vec<u8> {
    template_for(vip, 0)
}

/// The 64-byte TCP ACK from flow `f` to `vip`, built by etherparse.
fn template_for(vip: SocketAddrV4, f: u32) -> Vec<u8> {
    frame(
        SocketAddr::V4(client(f)),
        SocketAddr::V4(vip),
        L4::Tcp { syn: false },
        &[0x5a; 10],
    )
}

/// Where a row's frames are balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `mpps_tx` on the LB veth.
    Floor,
    /// `vip_lb`, the tunnel VIP.
    Tunnel,
    /// `vip_lb`, the dsr-l2 VIP.
    DsrL2,
    /// The kernel: forwarding + nftables DNAT.
    Nft,
}

impl Side {
    const ALL: [Side; 4] = [Side::Floor, Side::Tunnel, Side::DsrL2, Side::Nft];

    fn name(self) -> &'static str {
        match self {
            Side::Floor => "floor: swap MACs + XDP_TX",
            Side::Tunnel => "vip_lb tunnel",
            Side::DsrL2 => "vip_lb dsr-l2",
            Side::Nft => "nftables DNAT (kernel forwarding)",
        }
    }

    fn vip(self) -> SocketAddrV4 {
        match self {
            Side::Floor | Side::Tunnel => vip_tunnel(),
            Side::DsrL2 => vip_dsr(),
            Side::Nft => vip_nft(),
        }
    }

    /// What the sink counts as this side's output.
    fn sink(self) -> SinkConfig {
        let eth = |mac: [u8; 6], n: usize| {
            let mut v = [0u8; 8];
            let mut m = [0u8; 8];
            v[..n].copy_from_slice(&mac[..n]);
            m[..n].fill(0xff);
            (u64::from_ne_bytes(v), u64::from_ne_bytes(m))
        };
        let addr = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
        let backends = (
            addr(Ipv4Addr::new(198, 18, 2, 0)),
            addr(Ipv4Addr::new(255, 255, 255, 0)),
        );
        let (e, m, proto, (daddr, mask), inner) = match self {
            Side::Floor => {
                let (e, m) = eth(CLIENT_MAC, 6);
                (e, m, PROTO_TCP, (addr(*self.vip().ip()), u32::MAX), 0)
            }
            Side::Tunnel => {
                let (e, m) = eth(backend_mac(0), 5);
                (e, m, 4, backends, addr(*self.vip().ip()))
            }
            Side::DsrL2 => {
                let (e, m) = eth(backend_mac(0), 5);
                (e, m, PROTO_TCP, (addr(*self.vip().ip()), u32::MAX), 0)
            }
            Side::Nft => {
                let (e, m) = eth(CLIENT_MAC, 6);
                (e, m, PROTO_TCP, backends, 0)
            }
        };
        SinkConfig {
            eth: e,
            eth_mask: m,
            proto: u32::from(proto),
            daddr,
            daddr_mask: mask,
            inner_daddr: inner,
        }
    }
}

/// Flows of the "few flows" rows: their connection-table entries stay in the CPU's caches.
const FEW_FLOWS: u32 = 16;

/// Which flows a row sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flows {
    /// A cycle of [`FEW_FLOWS`] flows: what the established-flow rows would cost without
    /// cache misses on the connection table (the difference is the measured reason).
    Few,
    /// A cycle of [`ESTABLISHED_FLOWS`] flows, all seen before the window.
    Established,
    /// A flow never seen before per frame.
    New,
}

impl Flows {
    fn name(self) -> &'static str {
        match self {
            Flows::Few => "16 established flows",
            Flows::Established => "65,536 established flows",
            Flows::New => "a new flow per packet",
        }
    }
}

/// Measurement window and trials.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How long each row counts.
    pub window: Duration,
    /// Trials per row (interleaved across the rows).
    pub trials: usize,
}

/// The two namespaces and their veth pair. Dropping it deletes both (and so the veths
/// and every XDP program attached to them).
struct Topology {
    gen_ns: netns::Netns,
    lb_ns: netns::Netns,
    gen_if: String,
    lb_if: String,
}

impl Topology {
    fn build() -> Result<Self> {
        let prefix = netns::unique_prefix();
        let gen_ns = netns::Netns::create(&format!("{prefix}g"))?;
        let lb_ns = netns::Netns::create(&format!("{prefix}l"))?;
        // Short interface names: the NAPI thread is found by its name, "napi/IF-ID",
        // and a thread name holds 15 bytes.
        let tag = format!("m{:x}", std::process::id() & 0xf_ffff);
        let t = Topology {
            gen_if: format!("{tag}g"),
            lb_if: format!("{tag}l"),
            gen_ns,
            lb_ns,
        };
        let (g, l) = (t.gen_ns.name(), t.lb_ns.name());
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        // One queue each: one NAPI instance per veth, one thread to pin.
        cmd::ip(
            g,
            &[
                "link",
                "add",
                &t.gen_if,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                &t.lb_if,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "netns",
                l,
            ],
        )?;
        cmd::ip(
            g,
            &["link", "set", &t.gen_if, "address", &mac(CLIENT_MAC), "up"],
        )?;
        cmd::ip(l, &["link", "set", &t.lb_if, "address", &mac(LB_MAC), "up"])?;
        cmd::ip(
            g,
            &["addr", "add", &format!("{GEN_ADDR}/24"), "dev", &t.gen_if],
        )?;
        cmd::ip(
            l,
            &["addr", "add", &format!("{LB_ADDR}/24"), "dev", &t.lb_if],
        )?;
        // The kernel-forwarding row: routes to the backends and back to the clients via
        // the generator side, whose neighbour entry is permanent (its sink drops ARP).
        for (k, v) in [
            ("net.ipv4.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            cmd::sysctl(l, k, v)?;
        }
        cmd::sysctl(l, &format!("net.ipv4.conf.{}.rp_filter", t.lb_if), "0")?;
        cmd::ip(
            l,
            &[
                "neigh",
                "add",
                &GEN_ADDR.to_string(),
                "lladdr",
                &mac(CLIENT_MAC),
                "dev",
                &t.lb_if,
                "nud",
                "permanent",
            ],
        )?;
        for net in ["198.18.2.0/24", "198.18.128.0/17"] {
            cmd::ip(l, &["route", "add", net, "via", &GEN_ADDR.to_string()])?;
        }
        let map = (0..BACKENDS)
            .map(|i| format!("{i} : {}", backend_addr(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let vip = vip_nft();
        cmd::nft(
            l,
            &format!(
                "table ip mpps {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n  \
                 ip daddr {} tcp dport {} dnat to numgen inc mod {BACKENDS} map {{ {map} }}\n \
                 }}\n}}\n",
                vip.ip(),
                vip.port()
            ),
        )?;
        Ok(t)
    }
}

/// Makes `ifname`'s NAPI threaded (it has NAPI only while an XDP program is attached,
/// and the kernel refuses the setting without).
fn threaded(ns: &str, ifname: &str) -> Result<()> {
    cmd::run_in(
        ns,
        "sh",
        &["-c", &format!("echo 1 > /sys/class/net/{ifname}/threaded")],
    )
    .with_context(|| format!("making {ifname}'s NAPI threaded"))?;
    Ok(())
}

/// Runs `f` with the calling thread inside namespace `ns`, then returns it home.
fn in_ns<T>(ns: &str, f: impl FnOnce() -> T) -> Result<T> {
    let home = fs::File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    netns::enter(ns)?;
    let out = f();
    // SAFETY: a valid namespace fd; affects only this thread.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "returning from namespace {ns}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(out)
}

/// The NAPI thread of `ifname` (threaded NAPI names it `napi/IF-ID`), waiting up to a
/// second for it to appear after an XDP attach.
fn napi_thread(ifname: &str) -> Result<i32> {
    let prefix = format!("napi/{ifname}-");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut found = Vec::new();
        for e in fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(&prefix)) {
                found.push(pid);
            }
        }
        match found.as_slice() {
            [pid] => return Ok(*pid),
            [] | [_, _, ..] if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            [] => bail!("no NAPI thread {prefix}*: is threaded NAPI on?"),
            many => bail!("several NAPI threads {prefix}*: {many:?}"),
        }
    }
}

/// Makes NAPI thread `pid` real-time (`SCHED_FIFO`): it runs as soon as frames wait,
/// ahead of the machine's other tenants and of the generator. That is the harness's
/// back-pressure: the sink drains its ring before the generator makes more frames, so
/// frames are lost (if at all) in front of the load balancer, where losing them costs
/// it nothing, not after it. The thread only runs while frames arrive, and the kernel's
/// real-time throttling leaves others 5% of the CPU even then.
fn realtime(pid: i32) -> Result<()> {
    realtime_at(pid, 50)
}

/// The generator's real-time priority: below the NAPI threads', so the sink preempts
/// it, above every normal task, so that it runs without the pauses during which the
/// load balancer's 256-frame ring would run dry (seen: the balancer idle half the time
/// while 90% of the frames were lost in front of it).
const GENERATOR_PRIORITY: i32 = 40;

fn realtime_at(pid: i32, priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a valid sched_param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        bail!(
            "making thread {pid} real-time: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Undoes [`realtime`].
fn not_realtime(pid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param) } != 0 {
        bail!(
            "making thread {pid} a normal one again: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn pin_pid(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning thread {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Nanoseconds thread `pid` has run (`/proc/PID/schedstat`, first field).
fn cpu_ns(pid: i32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("reading /proc/{pid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected schedstat {s:?}"))
}

/// The generator: a thread in the generator's namespace, pinned, calling live-frames
/// `BPF_PROG_TEST_RUN` until stopped. Stops (and joins) on drop.
struct Generator {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Generator {
    fn start(prog_fd: i32, ns: &str, ifname: &str, frame: Vec<u8>, cpu: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, ns, ifname) = (stop.clone(), ns.to_string(), ifname.to_string());
        let handle = std::thread::spawn(move || -> Result<()> {
            netns::enter(&ns)?;
            pin_to_cpu(cpu)?;
            realtime_at(0, GENERATOR_PRIORITY)?;
            let c = std::ffi::CString::new(ifname.clone()).expect("no NUL in a name");
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            ensure!(ifindex != 0, "no interface {ifname} in {ns}");
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
            while !s.load(Ordering::Relaxed) {
                live_frames(prog_fd, &frame, &ctx, FRAMES_PER_CALL)?;
            }
            Ok(())
        });
        Generator {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the generator thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One live-frames `BPF_PROG_TEST_RUN` call of `repeat` frames (aya 0.14's wrapper has
/// no `flags`).
fn live_frames(prog_fd: i32, frame: &[u8], ctx: &[u32; 6], repeat: u32) -> Result<()> {
    const BPF_PROG_TEST_RUN: i64 = 10;
    // union bpf_attr, test: prog_fd, retval, data_size_in, data_size_out, data_in,
    // data_out, repeat, duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out, flags, cpu,
    // batch_size.
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    attr[40..44].copy_from_slice(&(size_of_val(ctx) as u32).to_ne_bytes());
    attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
    attr[64..68].copy_from_slice(&LIVE_FRAMES.to_ne_bytes());
    attr[72..76].copy_from_slice(&BATCH.to_ne_bytes());
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed; the pointers in it
    // (frame, ctx) outlive the call and the kernel only reads them (no data_out).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if rc < 0 {
        bail!(
            "BPF_PROG_TEST_RUN in live-frames mode: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn percpu_sum(ebpf: &Ebpf, map: &str, index: u32) -> Result<u64> {
    let m: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(map).with_context(|| format!("map {map}"))?)?;
    Ok(m.get(&index, 0)?.iter().sum())
}

/// The sink's two counters (arrived, matched), summed over CPUs, read in one lookup.
fn sink_counts(ebpf: &Ebpf) -> Result<[u64; 2]> {
    let m: PerCpuArray<&MapData, [u64; 2]> =
        PerCpuArray::try_from(ebpf.map("MPPS_SINK_COUNT").context("map MPPS_SINK_COUNT")?)?;
    Ok(m.get(&0, 0)?
        .iter()
        .fold([0, 0], |a, c| [a[0] + c[0], a[1] + c[1]]))
}

fn percpu_zero(ebpf: &mut Ebpf, map: &str, index: u32) -> Result<()> {
    let mut m: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(ebpf.map_mut(map).with_context(|| format!("map {map}"))?)?;
    let n = nr_cpus().map_err(|(_, e)| e)?;
    m.set(index, PerCpuValues::try_from(vec![0u64; n])?, 0)?;
    Ok(())
}

fn set_one<T: Pod>(ebpf: &mut Ebpf, map: &str, v: &T) -> Result<()> {
    let mut m: Array<&mut MapData, T> =
        Array::try_from(ebpf.map_mut(map).with_context(|| format!("map {map}"))?)?;
    m.set(0, v, 0)?;
    Ok(())
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

/// What is attached to the LB veth for a row.
enum Attached {
    Floor(aya::programs::xdp::XdpLinkId),
    Vip(aya::programs::xdp::XdpLinkId),
    /// The link lives while the descriptor is open.
    Pass(OwnedFd),
}

/// One row's trial.
#[derive(Debug, Clone, Copy, Default)]
struct RowSample {
    mpps: f64,
    cpu_ns_per_packet: f64,
    lb_busy: f64,
    arrived_of_sent: f64,
    matched: f64,
}

/// Everything a trial needs.
struct Bench {
    topo: Topology,
    progs: Ebpf,
    dp: Datapath,
    /// Next never-used flow number.
    next_new: u32,
    lb_cpu: usize,
    other_cpu: usize,
}

impl Bench {
    /// Sends `side`'s frames with `flows` and measures over `window` (after a warm-up).
    fn trial(&mut self, side: Side, flows: Flows, window: Duration) -> Result<RowSample> {
        let lb_if = self.topo.lb_if.clone();
        let lb_ns = self.topo.lb_ns.name().to_string();
        let attached = match side {
            Side::Floor => {
                let p = xdp(&mut self.progs, "mpps_tx")?;
                Attached::Floor(in_ns(&lb_ns, || p.attach(&lb_if, XdpMode::Driver))??)
            }
            Side::Tunnel | Side::DsrL2 => {
                let dp = &mut self.dp;
                Attached::Vip(in_ns(&lb_ns, || {
                    dp.program_mut().attach(&lb_if, XdpMode::Driver)
                })??)
            }
            Side::Nft => Attached::Pass(xdp_pass::attach(&lb_ns, &lb_if)?),
        };
        let r = self.attached_trial(side, flows, window);
        // Detach before any error goes up (the namespace's removal would as well).
        let detached = match attached {
            Attached::Floor(id) => xdp(&mut self.progs, "mpps_tx")?
                .detach(id)
                .context("detaching mpps_tx"),
            Attached::Vip(id) => self.dp.program_mut().detach(id).context("detaching vip_lb"),
            Attached::Pass(fd) => {
                drop(fd);
                Ok(())
            }
        };
        let s = r?;
        detached?;
        Ok(s)
    }

    fn attached_trial(&mut self, side: Side, flows: Flows, window: Duration) -> Result<RowSample> {
        threaded(self.topo.lb_ns.name(), &self.topo.lb_if)?;
        let lb_pid = napi_thread(&self.topo.lb_if)?;
        pin_pid(lb_pid, self.lb_cpu)?;
        realtime(lb_pid)?;
        let sink_pid = napi_thread(&self.topo.gen_if)?;
        pin_pid(sink_pid, self.other_cpu)?;
        realtime(sink_pid)?;
        self.measure(side, flows, window, lb_pid)
    }

    fn measure(
        &mut self,
        side: Side,
        flows: Flows,
        window: Duration,
        lb_pid: i32,
    ) -> Result<RowSample> {
        let (base, mask) = match flows {
            Flows::Few => (0, FEW_FLOWS - 1),
            Flows::Established => (0, ESTABLISHED_FLOWS - 1),
            Flows::New => (self.next_new, u32::MAX),
        };
        let t = template(side.vip());
        set_one(&mut self.progs, "MPPS_GEN", &gen_config(&t, base, mask)?)?;
        set_one(&mut self.progs, "MPPS_SINK", &side.sink())?;
        percpu_zero(&mut self.progs, "MPPS_GEN_COUNT", 0)?;
        let fd = xdp(&mut self.progs, "mpps_gen")?.fd()?.as_fd().as_raw_fd();
        let generator = Generator::start(
            fd,
            self.topo.gen_ns.name(),
            &self.topo.gen_if,
            t,
            self.other_cpu,
        );
        // Warm up: the established flows all seen (twice over), queues and caches full.
        let warm = Instant::now();
        while percpu_sum(&self.progs, "MPPS_GEN_COUNT", 0)? < 2 * u64::from(ESTABLISHED_FLOWS)
            || warm.elapsed() < Duration::from_millis(200)
        {
            ensure!(
                warm.elapsed() < Duration::from_secs(10),
                "the generator made too few frames in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let snap = |b: &Bench| -> Result<[u64; 4]> {
            let sink = sink_counts(&b.progs)?;
            Ok([
                sink[0],
                sink[1],
                percpu_sum(&b.progs, "MPPS_GEN_COUNT", 0)?,
                cpu_ns(lb_pid)?,
            ])
        };
        // Real-time while it takes the snapshots, so that they are not delayed behind the
        // sink and the generator on this CPU (the window's ends would drift apart).
        realtime(0)?;
        let t0 = Instant::now();
        let a = snap(self);
        std::thread::sleep(window);
        let b = snap(self);
        let elapsed = t0.elapsed().as_nanos() as f64;
        not_realtime(0)?;
        let (a, b) = (a?, b?);
        generator.finish()?;
        if flows == Flows::New {
            let made = percpu_sum(&self.progs, "MPPS_GEN_COUNT", 0)?;
            self.next_new = self.next_new.wrapping_add(made as u32);
        }
        let [arrived, matched, sent, cpu] = [0, 1, 2, 3].map(|i| (b[i] - a[i]) as f64);
        ensure!(
            arrived > 0.0,
            "{}, {}: nothing arrived at the sink ({sent} frames sent)",
            side.name(),
            flows.name()
        );
        Ok(RowSample {
            mpps: arrived / elapsed * 1e3,
            cpu_ns_per_packet: cpu / arrived,
            lb_busy: cpu / elapsed,
            arrived_of_sent: arrived / sent.max(1.0),
            matched: matched / arrived,
        })
    }

    /// Decodes the sink's sampled frame and checks it is `side`'s output for one of the
    /// generator's flows (for `vip_lb`: sent to the backend its connection table pins
    /// that flow to).
    fn check_sample(&self, side: Side) -> Result<String> {
        let m: Array<&MapData, Sample> =
            Array::try_from(self.progs.map("MPPS_SAMPLE").context("map MPPS_SAMPLE")?)?;
        let s = m.get(&0, 0)?;
        let bytes: Vec<u8> = s
            .words
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .take(s.len as usize)
            .collect();
        ensure!(bytes.len() >= 64, "no frame was sampled");
        // The sink copies whole words: the IPIP frame (84 bytes) is sampled up to byte
        // 80, which leaves out 4 bytes of the inner payload. Zeros stand for them.
        let mut bytes = bytes;
        let total = 14 + usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        if (bytes.len()..bytes.len() + 8).contains(&total) {
            bytes.resize(total, 0);
        }
        let p = SlicedPacket::from_ethernet(&bytes).context("decoding the sampled frame")?;
        let dst_mac: [u8; 6] = bytes[..6].try_into().expect("6 bytes");
        let src_mac: [u8; 6] = bytes[6..12].try_into().expect("6 bytes");
        let Some(NetSlice::Ipv4(outer)) = &p.net else {
            bail!("the sampled frame is not IPv4: {bytes:02x?}");
        };
        let oh = outer.header();
        let (src, dst) = (oh.source_addr(), oh.destination_addr());
        let in_clients = |a: Ipv4Addr| a.octets()[..2] == [198, 18] && a.octets()[2] >= 128;
        let backend_of = |dst_mac: [u8; 6]| -> Result<u8> {
            ensure!(
                dst_mac[..5] == backend_mac(0)[..5] && dst_mac[5] < BACKENDS,
                "destination MAC {dst_mac:02x?} is no backend's"
            );
            Ok(dst_mac[5])
        };
        let pinned = |client: SocketAddrV4, vip: SocketAddrV4| -> Result<u32> {
            let key = datapath::keys::flow_key(client.into(), vip.into(), PROTO_TCP);
            Ok(self
                .dp
                .lookup_conn(&key)?
                .with_context(|| format!("flow {client} is not in the connection table"))?
                .backend_id)
        };
        let tcp_ports = |t: &Option<TransportSlice>| match t {
            Some(TransportSlice::Tcp(t)) => Some((t.source_port(), t.destination_port())),
            _ => None,
        };
        let what = match side {
            Side::Floor => {
                ensure!(
                    dst_mac == CLIENT_MAC && src_mac == LB_MAC,
                    "MACs not swapped"
                );
                ensure!(
                    in_clients(src) && dst == *vip_tunnel().ip(),
                    "{src} -> {dst}"
                );
                format!("{src} -> {dst}, MACs swapped")
            }
            Side::Tunnel => {
                let b = backend_of(dst_mac)?;
                ensure!(
                    oh.protocol() == etherparse::IpNumber::IPV4
                        && src == LB_ADDR
                        && dst == backend_addr(b),
                    "outer {src} -> {dst} proto {:?}",
                    oh.protocol()
                );
                // The inner packet: the client's frame as sent.
                let inner = etherparse::Ipv4Slice::from_slice(outer.payload().payload)
                    .context("decoding the inner IPv4 packet")?;
                let ih = inner.header();
                let t = etherparse::TcpSlice::from_slice(inner.payload().payload)
                    .context("decoding the inner TCP")?;
                let client = SocketAddrV4::new(ih.source_addr(), t.source_port());
                ensure!(
                    in_clients(*client.ip()) && ih.destination_addr() == *vip_tunnel().ip(),
                    "inner {client} -> {}",
                    ih.destination_addr()
                );
                let id = pinned(client, vip_tunnel())?;
                ensure!(
                    id == u32::from(b),
                    "flow {client} is pinned to backend {id}, sent to {b}"
                );
                format!(
                    "IPIP {src} -> {dst} carrying {client} -> {}, the backend its flow is pinned to",
                    vip_tunnel()
                )
            }
            Side::DsrL2 => {
                let b = backend_of(dst_mac)?;
                let (sport, _) = tcp_ports(&p.transport).context("no TCP")?;
                let client = SocketAddrV4::new(src, sport);
                ensure!(in_clients(src) && dst == *vip_dsr().ip(), "{src} -> {dst}");
                let id = pinned(client, vip_dsr())?;
                ensure!(
                    id == u32::from(BACKENDS + b),
                    "flow {client} is pinned to backend {id}, sent to {}",
                    BACKENDS + b
                );
                format!(
                    "{client} -> {dst} to backend MAC {:02x?}, the backend its flow is pinned to",
                    dst_mac
                )
            }
            Side::Nft => {
                let (_, dport) = tcp_ports(&p.transport).context("no TCP")?;
                ensure!(
                    in_clients(src)
                        && (0..BACKENDS).any(|i| dst == backend_addr(i))
                        && dport == vip_nft().port()
                        && oh.ttl() == 63,
                    "{src} -> {dst}:{dport} ttl {}",
                    oh.ttl()
                );
                format!("{src} -> {dst}:{dport} (DNAT, forwarded)")
            }
        };
        Ok(what)
    }
}

/// Loads `vip_lb` with a connection table of [`TABLE_FLOWS`], one tunnel VIP and one
/// dsr-l2 VIP over [`BACKENDS`] backends each, next hops resolved (XDP_TX to the
/// backends' MACs).
fn load_vip() -> Result<Datapath> {
    let limits = Limits {
        max_vips: 4,
        max_backends: 16,
        table_size: 65_537,
        maglev_pool: vip_common::maglev_pool_default(4, 65_537) as u32,
        max_conns: TABLE_FLOWS,
    };
    let mut dp = Datapath::load(&limits, None).context("loading vip_lb")?;
    dp.set_global(&GlobalConfig {
        flags: 0,
        mtu: 1500,
        tunnel_src_v4_be: u32::from_ne_bytes(LB_ADDR.octets()),
        tunnel_src_v4_hash_bits: 0,
        tunnel_src_v6: [0; 4],
        ..GlobalConfig::default()
    })?;
    for (vip_id, (vip, flags)) in [(vip_tunnel(), 0), (vip_dsr(), VIP_F_DSR_L2)]
        .into_iter()
        .enumerate()
    {
        let vip_id = vip_id as u32;
        let mut members = Vec::new();
        for i in 0..BACKENDS {
            let id = vip_id * u32::from(BACKENDS) + u32::from(i);
            let addr = IpAddr::V4(backend_addr(i));
            dp.set_backend(
                id,
                &datapath::keys::backend(addr, BACKEND_UP, 1, vip_id, flags),
            )?;
            dp.set_nexthop(
                id,
                &NextHop {
                    dst_mac: backend_mac(i),
                    src_mac: LB_MAC,
                    ifindex: 0,
                    flags: NEXTHOP_F_VALID,
                },
            )?;
            members.push(MaglevBackend {
                id,
                identity: SocketAddr::new(addr, vip.port()),
                weight: 1,
            });
        }
        let table = maglev::build(&members, 65_537);
        dp.publish_vip(
            &datapath::keys::vip_key(vip.into(), PROTO_TCP),
            vip_id,
            flags,
            65_537,
            &table,
            &[],
        )?;
    }
    Ok(dp)
}

/// Runs `prog` once on `frame` with `BPF_PROG_TEST_RUN` (not live): verdict and output.
fn run_once(ebpf: &mut Ebpf, prog: &str, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    use aya::programs::{TestRun, TestRunOptions};
    let mut out = vec![0u8; frame.len() + 64];
    let r = xdp(ebpf, prog)?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// Checks the section's programs on single frames (no attachment, no namespace): the
/// generator writes exactly the frame of flow `base + n` (so its checksum arithmetic
/// agrees with etherparse's) whatever the page held before, and the sink drops every
/// frame, counts the ones with the row's output shape and samples the first. Run before
/// the section measures anything, and by the `mpps_programs` fixture. Needs root.
pub fn self_check() -> Result<()> {
    ensure!(
        !VIP_MPPS.is_empty(),
        "the bench eBPF object vip-mpps was not built: run `cargo xtask build`"
    );
    // The generator's frame counter is per CPU: stay on one for the whole check.
    std::thread::spawn(|| -> Result<()> {
        pin_to_cpu(super::machine::current_cpu())?;
        let mut ebpf = aya::EbpfLoader::new()
            .load(VIP_MPPS)
            .context("loading vip-mpps")?;
        for p in ["mpps_gen", "mpps_sink"] {
            xdp(&mut ebpf, p)?
                .load()
                .with_context(|| format!("loading {p}"))?;
        }
        let vip = vip_dsr();
        let base = 0x1234_5678;
        set_one(
            &mut ebpf,
            "MPPS_GEN",
            &gen_config(&template(vip), base, u32::MAX)?,
        )?;
        percpu_zero(&mut ebpf, "MPPS_GEN_COUNT", 0)?;
        for n in 0..3 {
            // What the page held before: garbage, as after a round trip.
            let (verdict, out) = run_once(&mut ebpf, "mpps_gen", &[0xa5; 64])?;
            ensure!(verdict == 3, "mpps_gen answered {verdict} (want XDP_TX)");
            ensure!(
                out == template_for(vip, base + n),
                "mpps_gen's frame {n} is not flow {}'s: {out:02x?}",
                base + n
            );
        }
        set_one(&mut ebpf, "MPPS_SINK", &Side::DsrL2.sink())?;
        let mut good = template_for(vip, 7);
        good[..6].copy_from_slice(&backend_mac(2));
        let other = template_for(vip, 7);
        for f in [&good, &other, &good] {
            let (verdict, _) = run_once(&mut ebpf, "mpps_sink", f)?;
            ensure!(verdict == 1, "mpps_sink answered {verdict} (want XDP_DROP)");
        }
        let counts = sink_counts(&ebpf)?;
        ensure!(
            counts == [3, 2],
            "mpps_sink counted {counts:?} (want 3 arrived, 2 matched)"
        );
        let m: Array<&MapData, Sample> =
            Array::try_from(ebpf.map("MPPS_SAMPLE").context("map MPPS_SAMPLE")?)?;
        let s = m.get(&0, 0)?;
        let sampled: Vec<u8> = s.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        ensure!(
            s.len == 64 && sampled[..64] == good[..],
            "mpps_sink sampled {} bytes {sampled:02x?}, not the first frame",
            s.len
        );
        Ok(())
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The section: builds the topology, fills the connection table, then measures every
/// row `plan.trials` times, interleaved.
pub fn run(report: &mut Report, plan: Plan) -> Result<()> {
    ensure!(
        !VIP_MPPS.is_empty(),
        "the bench eBPF object vip-mpps was not built: run `cargo xtask bench`"
    );
    ensure!(nr_cpus().map_err(|(_, e)| e)? >= 2, "needs two CPUs");
    self_check().context("checking the generator and the sink")?;
    crate::lab::install_cleanup_handlers();
    let _serial = crate::lab::serial();
    let topo = Topology::build().context("building the veth pair")?;
    let mut progs = aya::EbpfLoader::new()
        .load(VIP_MPPS)
        .context("loading vip-mpps")?;
    for p in ["mpps_gen", "mpps_tx", "mpps_sink"] {
        xdp(&mut progs, p)?
            .load()
            .with_context(|| format!("loading {p}"))?;
    }
    let gen_if = topo.gen_if.clone();
    let sink = xdp(&mut progs, "mpps_sink")?;
    let _sink_link = in_ns(topo.gen_ns.name(), || sink.attach(&gen_if, XdpMode::Driver))??;
    threaded(topo.gen_ns.name(), &topo.gen_if)?;
    let mut bench = Bench {
        topo,
        progs,
        dp: load_vip()?,
        next_new: ESTABLISHED_FLOWS,
        lb_cpu: 1,
        other_cpu: 0,
    };
    pin_to_cpu(bench.other_cpu)?;

    // Fill the connection table with never-seen flows (unmeasured), then check the
    // datapath pinned them.
    let fill = Duration::from_secs(1);
    let started = Instant::now();
    while bench.dp.conn_count()? < u64::from(TABLE_FLOWS) {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the connection table holds only {} flows after 30 s of new ones",
            bench.dp.conn_count()?,
        );
        let s = bench.trial(Side::Tunnel, Flows::New, fill)?;
        eprintln!(
            "vip-bench: filling vip_lb's connection table: {} flows, {:.2} Mpps",
            bench.dp.conn_count()?,
            s.mpps
        );
    }
    let table_fill = bench.dp.conn_count()?;

    let rows: Vec<(Side, Flows)> = Side::ALL
        .iter()
        .flat_map(|s| [(*s, Flows::Few), (*s, Flows::Established), (*s, Flows::New)])
        .collect();
    let mut samples: Vec<Vec<RowSample>> = vec![Vec::new(); rows.len()];
    let mut checked: Vec<String> = vec![String::new(); Side::ALL.len()];
    for _ in 0..plan.trials {
        for (i, (side, flows)) in rows.iter().enumerate() {
            let s = bench
                .trial(*side, *flows, plan.window)
                .with_context(|| format!("{}, {}", side.name(), flows.name()))?;
            ensure!(
                s.matched >= 0.99,
                "{}, {}: only {:.1}% of the frames that arrived are its output",
                side.name(),
                flows.name(),
                s.matched * 100.0
            );
            let k = Side::ALL.iter().position(|x| x == side).expect("a side");
            checked[k] = bench
                .check_sample(*side)
                .with_context(|| format!("{}: the sampled frame", side.name()))?;
            samples[i].push(s);
        }
    }

    let median = |i: usize, f: fn(&RowSample) -> f64| {
        Trials::of(&samples[i].iter().map(f).collect::<Vec<_>>())
    };
    let index = |side: Side, flows: Flows| {
        rows.iter()
            .position(|r| *r == (side, flows))
            .expect("every row is measured")
    };
    for (i, (side, flows)) in rows.iter().enumerate() {
        let cpu = median(i, |s| s.cpu_ns_per_packet);
        let busy = median(i, |s| s.lb_busy).median;
        let k = Side::ALL.iter().position(|x| x == side).expect("a side");
        let bound = if busy < 0.9 {
            "harness-bound (LB CPU below 90%): the Mpps are the generator's and sink's limit"
        } else {
            "LB-bound"
        };
        let note = format!(
            "LB NAPI thread {:.0}% busy ({bound}); {:.1}% of sent arrived; {:.2}% matched the \
             output shape; sampled frame: {}",
            busy * 100.0,
            median(i, |s| s.arrived_of_sent).median * 100.0,
            median(i, |s| s.matched).median * 100.0,
            checked[k]
        );
        let r = report.push(
            SECTION,
            format!("{}, {}: LB CPU per packet", side.name(), flows.name()),
            "ns CPU/packet",
            cpu,
        );
        if *side != Side::Floor {
            let floor = median(index(Side::Floor, *flows), |s| s.cpu_ns_per_packet).median;
            r.ratios
                .push(("floor XDP_TX (same run)".into(), cpu.median / floor));
        }
        if *side != Side::Nft {
            let nft = median(index(Side::Nft, *flows), |s| s.cpu_ns_per_packet).median;
            r.ratios
                .push(("nftables DNAT (same run)".into(), cpu.median / nft));
        }
        r.note = note;
        report
            .push(
                SECTION,
                format!("{}, {}: arrived", side.name(), flows.name()),
                "Mpps",
                median(i, |s| s.mpps),
            )
            .note = format!(
            "counted at the sink over {:.1} s windows; {}",
            plan.window.as_secs_f64(),
            match (flows, side) {
                (Flows::New, Side::Tunnel | Side::DsrL2) => format!(
                    "vip_lb's connection table held {table_fill} flows before the first window"
                ),
                (Flows::New, Side::Nft) => format!(
                    "conntrack's table is full after the first {} (nf_conntrack_max)",
                    fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
                        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
                ),
                _ => flows.name().to_string(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's checksum arithmetic (mirrored here) gives, for flows across the
    /// whole range, exactly the frame etherparse builds for that flow.
    #[test]
    fn generated_frames_are_the_flows_frames() {
        let vip = vip_tunnel();
        let cfg = gen_config(&template(vip), 0, u32::MAX).unwrap();
        for f in [0, 1, 0x7fff, 0x8000, 123_456_789, u32::MAX >> 2] {
            assert_eq!(generated(&cfg, f), template_for(vip, f), "flow {f}");
        }
    }
}
