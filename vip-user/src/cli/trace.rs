//! `vipctl trace`: "why did this flow go there". Loads a private, unattached `vip_lb`
//! (no pins, touches no running vipd), brings it to a config through the same owner and
//! reconcile code vipd runs, and runs packets through `BPF_PROG_TEST_RUN`. For each
//! packet it prints the verdict, the reason, the backend the datapath chose (from its
//! per-backend counters) beside the backend the user-space model predicts, and the
//! output frame.
//!
//! Next hops: the private instance has no ingress interface, so every backend gets a
//! synthetic next hop (MACs [`TRACE_SRC_MAC`] → [`TRACE_DST_MAC`], leave by the ingress
//! = `XDP_TX`) instead of `bpf_fib_lookup` on this host's routes; `--fib` would be the
//! place to change that.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::programs::{TestRun, TestRunOptions};
use serde::Serialize;
use vip_common::{NEXTHOP_F_VALID, NextHop};

use super::{Output, TraceArgs, UsageError, sock_arg};
use crate::{
    config::{Config, ConfigError, Protocol, UnknownName},
    control::owner::{Owner, OwnerError},
    datapath::{Datapath, DatapathError, tables::limits},
};

/// Why `vipctl trace` could not trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Neither or both of `--flow` and `--pcap`.
    #[error("give either --flow PROTO SRC DST or --pcap FILE")]
    NoInput,
    /// `--flow` is not `PROTO SRC DST`.
    #[error("--flow takes PROTO SRC DST, e.g. --flow tcp 198.18.0.1:40000 198.18.1.10:80")]
    FlowArgs,
    /// `--flow`'s protocol is unknown.
    #[error("--flow: {0}")]
    Protocol(#[from] UnknownName),
    /// `--flow`'s addresses are malformed.
    #[error("--flow: {0}")]
    Usage(#[from] UsageError),
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The private datapath could not be loaded.
    #[error("loading a private vip_lb failed (vipctl trace needs root): {source}")]
    Load {
        /// What the loader said.
        #[source]
        source: DatapathError,
    },
    /// The config could not be brought into the private datapath.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// Reading or writing the private datapath's maps failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The kernel refused to run the program on a packet.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] aya::programs::ProgramError),
    /// The pcap file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadPcap {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A packet `BPF_PROG_TEST_RUN` cannot run as a whole frame.
    #[error(
        "packet {packet} is {len} bytes: trace runs frames of {}..={} bytes ({}), so nothing was traced",
        ETH_HEADER_LEN,
        MAX_TRACE_FRAME,
        if *len < ETH_HEADER_LEN {
            "shorter than an Ethernet header, which no interface delivers"
        } else {
            "BPF_PROG_TEST_RUN splits a longer one and vip_lb would see only its first part; \
             a GRO/TSO-merged packet captured on the host? capture with `ethtool -K IFACE gro off`"
        }
    )]
    FrameSize {
        /// 1-based packet number.
        packet: usize,
        /// Its length.
        len: usize,
    },
    /// The pcap file is not one trace can replay.
    #[error("{}: {source}", path.display())]
    Pcap {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: PcapError,
    },
}

/// What is wrong with a capture file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Shorter than any capture file's header.
    #[error("too short for a pcap or pcapng file ({len} bytes)")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// Neither pcap nor pcapng.
    #[error("not a pcap or pcapng file (bad magic number {magic:#010x})")]
    BadMagic {
        /// The file's first four bytes, big-endian.
        magic: u32,
    },
    /// Not an Ethernet capture.
    #[error("link type {link} is not Ethernet (1): capture on an Ethernet interface")]
    NotEthernet {
        /// The file's (or the packet's interface's) link type.
        link: u32,
    },
    /// The file ends inside a packet or a block.
    #[error("the file is cut short after {packets} whole packets")]
    CutShort {
        /// Packets read whole before the cut.
        packets: usize,
    },
    /// A packet was captured shorter than it was on the wire.
    #[error(
        "packet {packet} was captured truncated ({captured} of {length} bytes): capture with a larger snap length"
    )]
    Truncated {
        /// 1-based packet number.
        packet: usize,
        /// Bytes captured.
        captured: usize,
        /// Bytes on the wire.
        length: usize,
    },
    /// A pcapng packet names an interface the file does not describe.
    #[error("packet {packet} names interface {interface}, which the file does not describe")]
    NoInterface {
        /// 1-based packet number.
        packet: usize,
        /// The interface id.
        interface: u32,
    },
    /// A header or block is malformed.
    #[error("{format} file corrupt after {packets} whole packets: {detail}")]
    Corrupt {
        /// `pcap` or `pcapng`.
        format: &'static str,
        /// Packets read whole before it.
        packets: usize,
        /// What the reader found wrong.
        detail: String,
    },
}

/// An Ethernet header: `BPF_PROG_TEST_RUN` refuses a shorter frame.
pub const ETH_HEADER_LEN: usize = 14;

/// The longest frame `BPF_PROG_TEST_RUN` gives an XDP program in one buffer: a 4 KiB page
/// less XDP's 256-byte headroom and the 320-byte `skb_shared_info` (x86-64, Linux 6.x;
/// measured: 3,520 bytes seen whole, 3,521 split). A longer one is split into fragments
/// that `vip_lb`, not a multi-buffer program, does not see, so it would be traced as
/// malformed, which says nothing about the packet.
pub const MAX_TRACE_FRAME: usize = 3520;

/// Refuses, before anything is loaded, a frame that `BPF_PROG_TEST_RUN` cannot run whole.
pub fn check_frames(frames: &[Vec<u8>]) -> Result<(), TraceError> {
    match frames
        .iter()
        .position(|f| !(ETH_HEADER_LEN..=MAX_TRACE_FRAME).contains(&f.len()))
    {
        Some(i) => Err(TraceError::FrameSize {
            packet: i + 1,
            len: frames[i].len(),
        }),
        None => Ok(()),
    }
}

/// Source MAC of synthetic next hops.
pub const TRACE_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of synthetic next hops.
pub const TRACE_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xbe];

/// What happened to one packet.
#[derive(Clone, Debug, Serialize)]
pub struct Traced {
    /// 1-based packet number.
    pub packet: usize,
    /// The flow, if the packet parsed as TCP/UDP over IP.
    pub flow: Option<String>,
    /// XDP verdict name.
    pub verdict: String,
    /// Datapath reason (counter that went up).
    pub reason: Option<String>,
    /// Backend the datapath chose (its counter went up).
    pub backend: Option<SocketAddr>,
    /// Backend the user-space model (connection table, then Maglev) predicted.
    pub model_backend: Option<SocketAddr>,
    /// The model's Maglev slot.
    pub model_slot: Option<u32>,
    /// What the VIP's source access list says about the client (`None`: no list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    /// Input length.
    pub input_len: usize,
    /// Output frame, hex.
    pub output_hex: String,
    /// Output summary (outer headers).
    pub output_summary: String,
}

/// Runs `vipctl trace`.
pub fn run(args: &TraceArgs, output: Output) -> Result<String, TraceError> {
    let frames = match (&args.flow, &args.pcap) {
        (Some(f), None) => vec![frame_for_flow(f)?],
        (None, Some(p)) => read_pcap(p)?,
        _ => return Err(TraceError::NoInput),
    };
    let Some(config) = &args.config else {
        return Err(TraceError::NoInput);
    };
    let results = trace_frames(config, &frames)?;
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&results).expect("serializes") + "\n",
        Output::Table => results.iter().map(render).collect::<Vec<_>>().join("\n"),
    })
}

/// Loads the private datapath with `config` and runs `frames` through it in order (all
/// of them [`check_frames`]-sized, or none).
pub fn trace_frames(config: &Path, frames: &[Vec<u8>]) -> Result<Vec<Traced>, TraceError> {
    check_frames(frames)?;
    let cfg = Config::load(config)?;
    let dp =
        Datapath::load(&limits(&cfg.limits), None).map_err(|source| TraceError::Load { source })?;
    let mut owner = Owner::start(&cfg, dp, None)?;
    let ids = owner.backend_ids();
    for (_, id) in &ids {
        owner.tables_mut().set_nexthop(
            *id,
            &NextHop {
                dst_mac: TRACE_DST_MAC,
                src_mac: TRACE_SRC_MAC,
                ifindex: 0,
                flags: NEXTHOP_F_VALID,
            },
        )?;
    }
    let mut out = Vec::new();
    for (n, frame) in frames.iter().enumerate() {
        let flow = parse_flow(frame);
        let model = flow.and_then(|(p, s, d)| owner.flow(p, s, d).ok());
        let before_b: Vec<u64> = ids
            .iter()
            .map(|(_, id)| {
                owner
                    .tables()
                    .backend_counters(*id)
                    .map(|c| c.packets)
                    .unwrap_or(0)
            })
            .collect();
        let before_r = owner.tables().reason_counts()?;
        let mut data_out = vec![0u8; frame.len() + 256];
        let res = owner
            .tables_mut()
            .program_mut()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                ..TestRunOptions::default()
            })
            .map_err(TraceError::TestRun)?;
        data_out.truncate(res.data_size_out as usize);
        let after_r = owner.tables().reason_counts()?;
        let reason = after_r
            .iter()
            .zip(&before_r)
            .find(|((_, a), (_, b))| a > b)
            .map(|((r, _), _)| r.name().to_string());
        let backend = ids
            .iter()
            .zip(&before_b)
            .find_map(|(((_, addr), id), before)| {
                let now = owner
                    .tables()
                    .backend_counters(*id)
                    .map(|c| c.packets)
                    .unwrap_or(0);
                (now > *before).then_some(*addr)
            });
        let dropped_or_passed = res.return_value <= 2;
        out.push(Traced {
            packet: n + 1,
            flow: flow.map(|(p, s, d)| format!("{p} {s} -> {d}")),
            verdict: verdict_name(res.return_value).into(),
            reason,
            backend,
            model_backend: model.as_ref().and_then(|m| m.backend),
            model_slot: model.as_ref().and_then(|m| m.slot),
            acl: model.as_ref().and_then(|m| m.acl.clone()),
            input_len: frame.len(),
            output_hex: if dropped_or_passed && data_out == *frame {
                String::new()
            } else {
                hex(&data_out)
            },
            output_summary: if data_out == *frame {
                "unchanged".into()
            } else {
                summarize(&data_out)
            },
        });
    }
    Ok(out)
}

fn render(t: &Traced) -> String {
    let show = |a: Option<SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
    let mut s = format!(
        "packet {}: {} ({} bytes)\n  verdict: {}{}\n  backend: {}\n  model:   {}{}\n  output:  {}\n",
        t.packet,
        t.flow.as_deref().unwrap_or("not TCP/UDP over IP"),
        t.input_len,
        t.verdict,
        t.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        show(t.backend),
        show(t.model_backend),
        t.model_slot
            .map(|s| format!(" (Maglev slot {s})"))
            .unwrap_or_default(),
        t.output_summary,
    );
    if let Some(acl) = &t.acl {
        s += &format!("  acl:     {acl}\n");
    }
    if !t.output_hex.is_empty() {
        s += &format!("  bytes:   {}\n", t.output_hex);
    }
    s
}

/// Printable XDP verdict.
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `PROTO SRC DST` from the command line → an Ethernet frame (TCP SYN or UDP datagram).
pub fn frame_for_flow(f: &[String]) -> Result<Vec<u8>, TraceError> {
    let [proto, src, dst] = f else {
        return Err(TraceError::FlowArgs);
    };
    let proto: Protocol = proto.parse()?;
    let src = sock_arg(src, "source")?;
    let dst = sock_arg(dst, "destination")?;
    Ok(build_frame(proto, src, dst, b"vip trace")?)
}

/// An Ethernet frame carrying a TCP SYN (no payload) or a UDP datagram with `payload`,
/// with correct checksums; `src` and `dst` of one family.
pub fn build_frame(
    proto: Protocol,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, UsageError> {
    let l4 = match proto {
        Protocol::Tcp => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&src.port().to_be_bytes());
            t[2..4].copy_from_slice(&dst.port().to_be_bytes());
            t[4..8].copy_from_slice(&1u32.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x02; // SYN
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            t
        }
        Protocol::Udp => {
            let len = 8 + payload.len();
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&src.port().to_be_bytes());
            u[2..4].copy_from_slice(&dst.port().to_be_bytes());
            u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            u.extend_from_slice(payload);
            u
        }
    };
    let mut l4 = l4;
    let csum_off = if proto == Protocol::Tcp { 16 } else { 6 };
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10]); // dst: the LB
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x20]); // src: the router
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto.number()]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            let c = checksum(&[&pseudo, &l4]);
            l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto.number();
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto.number()]);
            let c = checksum(&[&pseudo, &l4]);
            l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            ip[6] = proto.number();
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            frame.extend_from_slice(&ip);
        }
        _ => return Err(UsageError::MixedFamilies),
    }
    frame.extend_from_slice(&l4);
    Ok(frame)
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for p in parts {
        for c in p.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    if c == 0 { 0xffff } else { c }
}

/// The 5-tuple of an Ethernet/IP/TCP-or-UDP frame (no VLAN, IPv4 options honoured, no
/// IPv6 extension headers).
pub fn parse_flow(f: &[u8]) -> Option<(Protocol, SocketAddr, SocketAddr)> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (proto, src, dst, l4) = match ethertype {
        0x0800 => {
            let ip = f.get(14..34)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (ip[9], IpAddr::from(s), IpAddr::from(d), 14 + ihl)
        }
        0x86dd => {
            let ip = f.get(14..54)?;
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (ip[6], IpAddr::from(s), IpAddr::from(d), 54)
        }
        _ => return None,
    };
    let proto = match proto {
        vip_common::PROTO_TCP => Protocol::Tcp,
        vip_common::PROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    let p = f.get(l4..l4 + 4)?;
    Some((
        proto,
        SocketAddr::new(src, u16::from_be_bytes([p[0], p[1]])),
        SocketAddr::new(dst, u16::from_be_bytes([p[2], p[3]])),
    ))
}

fn summarize(f: &[u8]) -> String {
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if f.len() < 14 {
        return format!("{} bytes", f.len());
    }
    let mut s = format!(
        "{} bytes, eth {} -> {}",
        f.len(),
        mac(&f[6..12]),
        mac(&f[0..6])
    );
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let outer = match ethertype {
        0x0800 if f.len() >= 34 => {
            let s4: [u8; 4] = f[26..30].try_into().expect("4");
            let d4: [u8; 4] = f[30..34].try_into().expect("4");
            Some((f[23], IpAddr::from(s4), IpAddr::from(d4)))
        }
        0x86dd if f.len() >= 54 => {
            let s6: [u8; 16] = f[22..38].try_into().expect("16");
            let d6: [u8; 16] = f[38..54].try_into().expect("16");
            Some((f[20], IpAddr::from(s6), IpAddr::from(d6)))
        }
        _ => None,
    };
    if let Some((p, a, b)) = outer {
        let kind = match p {
            vip_common::PROTO_IPIP => "IPv4-in-IP",
            vip_common::PROTO_IPV6 => "IPv6-in-IP",
            vip_common::PROTO_TCP => "TCP",
            vip_common::PROTO_UDP => "UDP",
            _ => "IP",
        };
        s += &format!(", {kind} {a} -> {b}");
    }
    s
}

/// The Ethernet frames of a capture file: pcap (either byte order, µs or ns) or pcapng
/// (what tcpdump and Wireshark write by default; every section, Enhanced, Simple and
/// obsolete Packet Blocks, other blocks skipped).
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>, TraceError> {
    let b = std::fs::read(path).map_err(|source| TraceError::ReadPcap {
        path: path.into(),
        source,
    })?;
    parse_pcap(&b).map_err(|source| TraceError::Pcap {
        path: path.into(),
        source,
    })
}

/// The first four bytes of a pcapng file (its Section Header Block's type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// See [`read_pcap`].
pub fn parse_pcap(b: &[u8]) -> Result<Vec<Vec<u8>>, PcapError> {
    if b.starts_with(&PCAPNG_MAGIC) {
        parse_pcapng(b)
    } else {
        parse_classic(b)
    }
}

/// What went wrong reading at a point where `packets` whole packets were read.
fn corrupt(format: &'static str, packets: usize, e: pcap_file::PcapError) -> PcapError {
    match e {
        pcap_file::PcapError::IncompleteBuffer => PcapError::CutShort { packets },
        e => PcapError::Corrupt {
            format,
            packets,
            detail: e.to_string(),
        },
    }
}

/// A captured packet of `length` bytes on the wire, as the `packet`th frame.
fn whole(packet: usize, data: &[u8], length: u32) -> Result<Vec<u8>, PcapError> {
    let length = length as usize;
    if data.len() < length {
        return Err(PcapError::Truncated {
            packet,
            captured: data.len(),
            length,
        });
    }
    Ok(data.to_vec())
}

fn parse_classic(b: &[u8]) -> Result<Vec<Vec<u8>>, PcapError> {
    use pcap_file::{DataLink, pcap::PcapParser};
    if b.len() < 24 {
        return Err(PcapError::TooShort { len: b.len() });
    }
    let (mut rest, parser) = PcapParser::new(b).map_err(|e| match e {
        pcap_file::PcapError::InvalidField(_) => PcapError::BadMagic {
            magic: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        },
        e => corrupt("pcap", 0, e),
    })?;
    let header = parser.header();
    if header.datalink != DataLink::ETHERNET {
        return Err(PcapError::NotEthernet {
            link: header.datalink.into(),
        });
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        // Raw packets: the lengths are checked here (a short capture is "truncated",
        // whatever the header's snap length says) and timestamps do not matter.
        let (r, p) = parser
            .next_raw_packet(rest)
            .map_err(|e| corrupt("pcap", out.len(), e))?;
        out.push(whole(out.len() + 1, &p.data, p.orig_len)?);
        rest = r;
    }
    Ok(out)
}

fn parse_pcapng(b: &[u8]) -> Result<Vec<Vec<u8>>, PcapError> {
    use pcap_file::{
        DataLink,
        pcapng::{Block, PcapNgParser},
    };
    let (mut rest, mut parser) = PcapNgParser::new(b).map_err(|e| corrupt("pcapng", 0, e))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (r, block) = parser
            .next_block(rest)
            .map_err(|e| corrupt("pcapng", out.len(), e))?;
        rest = r;
        let packet = out.len() + 1;
        let (interface, data, length) = match &block {
            Block::EnhancedPacket(p) => (p.interface_id, &p.data[..], p.original_len),
            // A Simple Packet Block's data is padded to 4 bytes, and is the packet cut to
            // the interface's snap length: its length is the smaller of the two.
            Block::SimplePacket(p) => {
                let n = p.data.len().min(p.original_len as usize);
                (0, &p.data[..n], p.original_len)
            }
            Block::Packet(p) => (u32::from(p.interface_id), &p.data[..], p.original_len),
            _ => continue,
        };
        let Some(iface) = parser.interfaces().get(interface as usize) else {
            return Err(PcapError::NoInterface { packet, interface });
        };
        if iface.linktype != DataLink::ETHERNET {
            return Err(PcapError::NotEthernet {
                link: iface.linktype.into(),
            });
        }
        out.push(whole(packet, data, length)?);
    }
    Ok(out)
}

#[cfg(test)]
mod property_tests;
