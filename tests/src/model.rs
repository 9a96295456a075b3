//! A user-space reference model of `vip_lb`: for one frame, the verdict, the reason, the
//! backend and the output frame, computed from the same configuration with the same flow hash
//! (`vip_common::flow_hash`) and the same Maglev tables, but parsed and decided by
//! independent, straightforward code; output frames are built with `etherparse`
//! ([`crate::packet`]). The differential run ([`crate::differential`]: the fixtures
//! test and `cargo xtask fuzz`) sends random and mutated frames through both and
//! requires them to agree. It is test code, not part of vipd: `vipctl flow` and
//! `vipctl trace` answer from the control plane's own state.
//!
//! The model assumes every backend it forwards to has a next hop set with
//! [`Model::set_nexthop`] (`bpf_fib_lookup` is the kernel's, not modelled: a backend
//! without one is predicted `DropNoRoute`, what an LB without a route does).
//!
//! The connection table is the one thing the model does not write independently: it
//! keeps the same sets the datapath does and places flows with the same shared code
//! (`vip_common::flowtable`), seeded and sized by the datapath's global settings
//! ([`Model::set_global`] with `Datapath::written_global`), because which flow a full
//! set replaces is a property of that code, not of the specification.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

pub mod maglev;

use vip_common::{
    BACKEND_DOWN, BACKEND_UNUSED, Backend, CONFIG_F_ICMP_TOO_BIG, ConnState, FAMILY_V4, FAMILY_V6,
    FlowKey, FlowSet, GlobalConfig, NEXTHOP_F_VALID, NextHop, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP, Reason, VIP_F_DSR_L2, VIP_F_HASH_SRC_ONLY, VIP_F_NO_CONNTRACK, VipKey, flow_clock,
    flow_hash, flow_set_index, flow_table_hash, tunnel_hash, vip_filter_bit,
};

use vip_user::{config::Acl, datapath::keys::words_addr};

use crate::{
    fixture::{Output, action},
    packet::{Outer, too_big_answer, tunnelled, with_macs},
};

/// What the model predicts for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// XDP action (see [`action`]).
    pub action: u32,
    /// The reason counted.
    pub reason: Reason,
    /// The backend the frame goes to (forwarded and steered frames only).
    pub backend: Option<u32>,
    /// Forwarded by MAC rewrite (`dsr-l2`) rather than through a tunnel.
    pub dsr_l2: bool,
    /// The frame the datapath must give back.
    pub output: Output,
}

/// A published VIP as the model keeps it.
#[derive(Clone, Debug)]
struct ModelVip {
    id: u32,
    flags: u32,
    table: Vec<u32>,
    acl: Acl,
}

/// The configuration and connection table the model decides from.
#[derive(Clone, Debug, Default)]
pub struct Model {
    vips: HashMap<VipKey, ModelVip>,
    markers: HashMap<VipKey, usize>,
    /// VIP-address filter bits of the published VIP addresses.
    filter: HashSet<u32>,
    backends: HashMap<u32, Backend>,
    nexthops: HashMap<u32, NextHop>,
    /// Connection-table sets by index (absent = empty).
    flows: HashMap<u32, FlowSet>,
    config: GlobalConfig,
    /// Interface the frames arrive on (`BPF_PROG_TEST_RUN` uses the loopback, 1).
    pub ingress_ifindex: u32,
    /// Interfaces in the redirect devmap.
    pub tx_ports: Vec<u32>,
}

const ETH_LEN: usize = 14;
const IPV6_EXT: [u8; 5] = [0, 43, 44, 51, 60];
const MAX_IPV6_EXT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anomaly {
    None,
    Fragment,
    Ipv6Ext,
    Malformed,
}

#[derive(Clone, Copy, Debug)]
struct Parsed {
    l3: usize,
    l4: usize,
    ip_len: usize,
    key: FlowKey,
    df: bool,
    ttl: u8,
    anomaly: Anomaly,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

fn word(f: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn words(f: &[u8], at: usize) -> [u32; 4] {
    [
        word(f, at),
        word(f, at + 4),
        word(f, at + 8),
        word(f, at + 12),
    ]
}

fn has(f: &[u8], at: usize, len: usize) -> bool {
    at + len <= f.len()
}

/// The fate of an ARP frame whose message starts at `l3`. The model announces no address
/// (the differential run configures no HA group), so a well-formed request is passed as
/// `vip_lb` passes a request for an address it does not answer for; the answers
/// themselves are checked byte for byte by the neighbour fixtures.
fn arp(f: &[u8], l3: usize) -> Reason {
    const ARP_LEN: usize = 28;
    if !has(f, l3, ARP_LEN) {
        return Reason::PassArpMalformed;
    }
    let a = &f[l3..l3 + ARP_LEN];
    // Ethernet hardware, IPv4 protocol, their address lengths.
    if a[..6] != [0, 1, 8, 0, 6, 4] {
        return Reason::PassArpMalformed;
    }
    Reason::PassArpNotVip
}

/// True when `vip_lb` hands an ICMPv6 packet (well-formed, no anomaly) to its
/// neighbour-solicitation code: the message follows the fixed IPv6 header directly and
/// is a solicitation. With no address announced in the model, every such packet is
/// ignored (`PassNdpIgnored`), whatever its fields.
fn is_neighbour_solicitation(f: &[u8], p: &Parsed) -> bool {
    const ND_NEIGHBOR_SOLICIT: u8 = 135;
    p.key.family == FAMILY_V6
        && p.key.proto == PROTO_ICMPV6
        && p.l4 == p.l3 + 40
        && has(f, p.l4, 2)
        && f[p.l4] == ND_NEIGHBOR_SOLICIT
}

/// Parses as the datapath does; `wanted` is the VIP-address filter, applied as soon as
/// the destination address is read (a refused address is `PassNotVip`, whatever follows).
fn parse(f: &[u8], wanted: impl Fn(&[u32; 4], u8) -> bool) -> Result<Parsed, Reason> {
    let mut ether_type = be16(f, 12)
        .filter(|_| f.len() >= ETH_LEN)
        .ok_or(Reason::PassUnparsed)?;
    let mut l3 = ETH_LEN;
    if ether_type == 0x8100 || ether_type == 0x88a8 {
        if !has(f, l3, 4) {
            return Err(Reason::PassUnparsed);
        }
        ether_type = be16(f, l3 + 2).expect("checked");
        l3 += 4;
        if ether_type == 0x8100 || ether_type == 0x88a8 {
            return Err(Reason::PassUnparsed);
        }
    }
    let mut p = Parsed {
        l3,
        l4: 0,
        ip_len: 0,
        key: FlowKey::default(),
        df: true,
        ttl: 0,
        anomaly: Anomaly::None,
    };
    match ether_type {
        0x0800 => {
            if !has(f, l3, 20) {
                return Err(Reason::PassMalformed);
            }
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            if f[l3] >> 4 != 4 || ihl < 20 {
                return Err(Reason::PassMalformed);
            }
            p.key.family = FAMILY_V4;
            p.key.proto = f[l3 + 9];
            p.key.src[0] = word(f, l3 + 12);
            p.key.dst[0] = word(f, l3 + 16);
            if !wanted(&p.key.dst, FAMILY_V4) {
                return Err(Reason::PassNotVip);
            }
            p.ttl = f[l3 + 8];
            let frag = be16(f, l3 + 6).expect("checked");
            p.df = frag & 0x4000 != 0;
            p.ip_len = usize::from(be16(f, l3 + 2).expect("checked"));
            p.l4 = l3 + ihl;
            if p.ip_len < ihl || l3 + p.ip_len > f.len() {
                p.anomaly = Anomaly::Malformed;
            } else if frag & 0x3fff != 0 {
                p.anomaly = Anomaly::Fragment;
            }
        }
        0x86dd => {
            if !has(f, l3, 40) {
                return Err(Reason::PassMalformed);
            }
            if f[l3] >> 4 != 6 {
                return Err(Reason::PassMalformed);
            }
            p.key.family = FAMILY_V6;
            p.key.src = words(f, l3 + 8);
            p.key.dst = words(f, l3 + 24);
            if !wanted(&p.key.dst, FAMILY_V6) {
                return Err(Reason::PassNotVip);
            }
            p.ttl = f[l3 + 7];
            p.ip_len = usize::from(be16(f, l3 + 4).expect("checked")) + 40;
            if l3 + p.ip_len > f.len() {
                p.anomaly = Anomaly::Malformed;
            }
            let mut next = f[l3 + 6];
            let mut off = l3 + 40;
            let mut walked = 0;
            while walked < MAX_IPV6_EXT && p.anomaly == Anomaly::None {
                if !IPV6_EXT.contains(&next) {
                    break;
                }
                if !has(f, off, 2) {
                    p.anomaly = Anomaly::Malformed;
                    break;
                }
                let len = match next {
                    44 => {
                        p.anomaly = Anomaly::Fragment;
                        8
                    }
                    51 => (usize::from(f[off + 1]) + 2) * 4,
                    _ => (usize::from(f[off + 1]) + 1) * 8,
                };
                next = f[off];
                off += len;
                walked += 1;
            }
            if p.anomaly == Anomaly::None && IPV6_EXT.contains(&next) {
                p.anomaly = Anomaly::Ipv6Ext;
            }
            if p.anomaly == Anomaly::None && off > l3 + p.ip_len {
                p.anomaly = Anomaly::Malformed;
            }
            p.key.proto = next;
            p.l4 = off;
        }
        0x0806 => return Err(arp(f, l3)),
        _ => return Err(Reason::PassNotVip),
    }
    if p.anomaly == Anomaly::None && (p.key.proto == PROTO_TCP || p.key.proto == PROTO_UDP) {
        let min = if p.key.proto == PROTO_TCP { 20 } else { 8 };
        if has(f, p.l4, 4) && p.l4 + min <= l3 + p.ip_len {
            p.key.src_port_be = u16::from_ne_bytes([f[p.l4], f[p.l4 + 1]]);
            p.key.dst_port_be = u16::from_ne_bytes([f[p.l4 + 2], f[p.l4 + 3]]);
        } else {
            p.anomaly = Anomaly::Malformed;
        }
    }
    // TCP data offset below 5 words or past the IP packet: malformed (as vip_lb).
    if p.anomaly == Anomaly::None && p.key.proto == PROTO_TCP {
        let doff = f
            .get(p.l4 + 12)
            .map(|b| usize::from(b >> 4) * 4)
            .unwrap_or(0);
        if doff < 20 || p.l4 + doff > l3 + p.ip_len {
            p.anomaly = Anomaly::Malformed;
        }
    }
    Ok(p)
}

fn pass(reason: Reason) -> Prediction {
    Prediction {
        action: action::PASS,
        reason,
        backend: None,
        dsr_l2: false,
        output: Output::Unchanged,
    }
}

fn drop(reason: Reason) -> Prediction {
    Prediction {
        action: action::DROP,
        reason,
        backend: None,
        dsr_l2: false,
        output: Output::Any,
    }
}

/// An address from its network-order words.
fn ip_of(words: &[u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
}

impl Model {
    /// An empty model (no VIPs: everything passes).
    pub fn new() -> Self {
        Self {
            ingress_ifindex: 1,
            ..Self::default()
        }
    }

    /// The datapath's global settings as it has them (`Datapath::written_global`): the
    /// configuration, and the connection table's seed and size. A new seed or size
    /// empties the model's table (its flows were placed under the old ones).
    pub fn set_global(&mut self, cfg: &GlobalConfig) {
        if (cfg.flow_seed, cfg.flow_sets_mask)
            != (self.config.flow_seed, self.config.flow_sets_mask)
        {
            self.flows.clear();
        }
        self.config = *cfg;
    }

    /// See `Datapath::set_backend`.
    pub fn set_backend(&mut self, id: u32, b: &Backend) {
        self.backends.insert(id, *b);
    }

    /// See `Datapath::set_nexthop`.
    pub fn set_nexthop(&mut self, id: u32, nh: &NextHop) {
        self.nexthops.insert(id, *nh);
    }

    /// See `Datapath::publish_vip` (the table is kept whole; slots do not matter here).
    /// `acl` is the VIP's source access list as configured: the model decides from its
    /// prefixes itself, not from the trie entries user space derives from it.
    pub fn publish_vip(&mut self, key: &VipKey, id: u32, flags: u32, table: &[u32], acl: &Acl) {
        let marker = VipKey {
            port_be: 0,
            proto: 0,
            ..*key
        };
        if self
            .vips
            .insert(
                *key,
                ModelVip {
                    id,
                    flags,
                    table: table.to_vec(),
                    acl: acl.clone(),
                },
            )
            .is_none()
        {
            *self.markers.entry(marker).or_default() += 1;
        }
        self.filter.insert(vip_filter_bit(&key.addr, key.family));
    }

    /// See `Datapath::insert_conn`.
    pub fn insert_conn(&mut self, key: &FlowKey, c: &ConnState) {
        let (set, h) = self.flow_slot(key);
        self.flows.entry(set).or_default().insert(key, h, c);
    }

    /// The connection-table entry the model holds for a flow.
    pub fn conn(&self, key: &FlowKey) -> Option<ConnState> {
        let (set, h) = self.flow_slot(key);
        self.flows.get(&set)?.find(key, h).map(|(_, c)| c)
    }

    /// The connection-table set of a flow and its hash.
    fn flow_slot(&self, key: &FlowKey) -> (u32, u64) {
        let h = flow_table_hash(key, self.config.flow_seed);
        (flow_set_index(h, self.config.flow_sets_mask), h)
    }

    /// False when no VIP address has the filter bit of `addr` (the datapath then passes
    /// the packet without any lookup).
    fn maybe_vip(&self, addr: &[u32; 4], family: u8) -> bool {
        self.filter.contains(&vip_filter_bit(addr, family))
    }

    fn lookup_vip(&self, key: &FlowKey) -> Option<&ModelVip> {
        let mut vk = VipKey {
            addr: key.dst,
            port_be: key.dst_port_be,
            proto: key.proto,
            family: key.family,
        };
        self.vips.get(&vk).or_else(|| {
            vk.port_be = 0;
            self.vips.get(&vk)
        })
    }

    fn usable(&self, id: u32) -> Option<Backend> {
        self.backends
            .get(&id)
            .copied()
            .filter(|b| b.state != BACKEND_UNUSED && b.state != BACKEND_DOWN)
    }

    /// Decides one frame, updating the connection table as the datapath does: parse with
    /// the VIP-address filter on the destination (an ICMP error stands for its inner
    /// flow, whose VIP address is filtered again), the TTL, the
    /// connection table (a usable pinned backend is used with its VIP's flags as the
    /// backend carries them, without a VIP lookup), else the VIP's Maglev table (the
    /// flow is pinned when the VIP tracks connections, a TCP flow not by a SYN).
    pub fn decide(&mut self, f: &[u8]) -> Prediction {
        let p = match parse(f, |a, family| self.maybe_vip(a, family)) {
            Ok(p) => p,
            Err(reason) => return pass(reason),
        };
        let icmp_error = p.key.proto == PROTO_ICMP || p.key.proto == PROTO_ICMPV6;
        if icmp_error && p.anomaly == Anomaly::None && is_neighbour_solicitation(f, &p) {
            return pass(Reason::PassNdpIgnored);
        }
        let key = if icmp_error {
            match self.inner_flow(f, &p) {
                Ok(k) => k,
                Err(v) => return v,
            }
        } else {
            if p.anomaly != Anomaly::None {
                return self.anomaly(&p);
            }
            if p.key.proto != PROTO_TCP && p.key.proto != PROTO_UDP {
                return pass(Reason::PassNotVip);
            }
            p.key
        };
        let not_vip = pass(if icmp_error {
            Reason::PassIcmpNotVip
        } else {
            Reason::PassNotVip
        });
        // The packet's own address passed the filter in `parse`; an ICMP error's inner
        // flow is filtered here.
        if icmp_error && !self.maybe_vip(&key.dst, key.family) {
            return not_vip;
        }
        if p.ttl <= 1 {
            return match self.lookup_vip(&key) {
                Some(_) => drop(Reason::DropTtl),
                None => not_vip,
            };
        }
        let (set, h) = self.flow_slot(&key);
        if let Some((id, b)) = self.pinned(set, h, &key) {
            return self.forward(f, &p, icmp_error, id, &b, b.vip_flags, h);
        }
        let Some(vip) = self.lookup_vip(&key).cloned() else {
            return not_vip;
        };
        if refused(&vip.acl, words_addr(key.src, key.family)) {
            return drop(Reason::DropAcl);
        }
        let (id, b) = match self.maglev_pick(&vip, &key) {
            Ok(picked) => picked,
            Err(r) => return drop(r),
        };
        // An ICMP error never creates a connection-table entry, nor does a TCP SYN (a
        // TCP flow is pinned by its first packet without SYN).
        let syn = p.key.proto == PROTO_TCP && f.get(p.l4 + 13).is_some_and(|b| b & 0x02 != 0);
        if vip.flags & VIP_F_NO_CONNTRACK == 0 && !icmp_error && !syn {
            let conn = ConnState {
                backend_id: id,
                generation: b.generation,
            };
            // On probation, as the datapath admits it (it may not be pinned at all).
            self.flows
                .entry(set)
                .or_default()
                .admit(&key, h, &conn, flow_now);
        }
        self.forward(f, &p, icmp_error, id, &b, vip.flags, h)
    }

    /// The backend `key` is pinned to in set `set`, if its entry checks out and the
    /// backend is the one pinned (same generation), usable, and its VIP tracks
    /// connections. Marks the entry as recently used.
    fn pinned(&mut self, set: u32, h: u64, key: &FlowKey) -> Option<(u32, Backend)> {
        let (way, c) = self.flows.get(&set)?.find(key, h)?;
        let b = self
            .usable(c.backend_id)
            .filter(|b| b.generation == c.generation && b.vip_flags & VIP_F_NO_CONNTRACK == 0)?;
        self.flows.get_mut(&set)?.touch(way);
        Some((c.backend_id, b))
    }

    /// Sends frame `f` to backend `id` in the mode `vip_flags` give; `h` is the flow's
    /// connection-table hash (the tunnel's outer source and flow label come from it).
    #[expect(
        clippy::too_many_arguments,
        reason = "the decision's state, as the datapath's forward() takes it"
    )]
    fn forward(
        &self,
        f: &[u8],
        p: &Parsed,
        icmp_error: bool,
        id: u32,
        backend: &Backend,
        vip_flags: u32,
        h: u64,
    ) -> Prediction {
        let Some(nh) = self
            .nexthops
            .get(&id)
            .filter(|n| n.flags & NEXTHOP_F_VALID != 0)
            .copied()
        else {
            return drop(Reason::DropNoRoute);
        };
        let dsr_l2 = vip_flags & VIP_F_DSR_L2 != 0;
        let overhead = if backend.family == FAMILY_V4 { 20 } else { 40 };
        if !dsr_l2 {
            let cfg = self.config;
            if cfg.mtu != 0 && p.ip_len + overhead > cfg.mtu as usize {
                let answer = !icmp_error
                    && cfg.flags & CONFIG_F_ICMP_TOO_BIG != 0
                    && p.df
                    && (p.key.family == FAMILY_V4 || p.l4 - p.l3 == 40);
                return if answer {
                    Prediction {
                        action: action::TX,
                        reason: Reason::IcmpTooBigSent,
                        backend: None,
                        dsr_l2: false,
                        output: Output::Bytes(too_big_answer(f, cfg.mtu - overhead as u32)),
                    }
                } else {
                    drop(Reason::DropTooBig)
                };
            }
        }
        let action = if nh.ifindex == 0 || nh.ifindex == self.ingress_ifindex {
            action::TX
        } else if self.tx_ports.contains(&nh.ifindex) {
            action::REDIRECT
        } else {
            return drop(Reason::DropNoRoute);
        };
        let output = if dsr_l2 {
            with_macs(f, nh.dst_mac, nh.src_mac)
        } else {
            tunnelled(
                f,
                nh.dst_mac,
                nh.src_mac,
                self.outer(backend, tunnel_hash(h)),
            )
        };
        Prediction {
            action,
            reason: if icmp_error {
                Reason::IcmpSteered
            } else {
                Reason::Forwarded
            },
            backend: Some(id),
            dsr_l2,
            output: Output::Bytes(output),
        }
    }

    /// The outer header of a tunnel to `backend` for a flow whose tunnel hash is `th`:
    /// the configured source prefix with the hash in its low bits, the hash's low 20 bits
    /// as the IPv6 flow label.
    fn outer(&self, backend: &Backend, th: u32) -> Outer {
        let cfg = &self.config;
        let src = if backend.family == FAMILY_V4 {
            let bits = cfg.tunnel_src_v4_hash_bits.min(32);
            let mask = if bits == 32 {
                u32::MAX
            } else {
                (1 << bits) - 1
            };
            let prefix = u32::from_be(cfg.tunnel_src_v4_be);
            IpAddr::from(((prefix & !mask) | (th & mask)).to_be_bytes())
        } else {
            let mut words = cfg.tunnel_src_v6;
            words[3] = th.to_be();
            ip_of(&words, FAMILY_V6)
        };
        Outer {
            src,
            dst: ip_of(&backend.addr, backend.family),
            flow_label: th & 0xfffff,
        }
    }

    fn anomaly(&self, p: &Parsed) -> Prediction {
        let marker = VipKey {
            addr: p.key.dst,
            port_be: 0,
            proto: 0,
            family: p.key.family,
        };
        // The address passed the filter in `parse`; another address may share the bit.
        let ours = self.markers.get(&marker).is_some_and(|n| *n > 0);
        match (p.anomaly, ours) {
            (Anomaly::Fragment, true) => drop(Reason::DropFragment),
            (Anomaly::Fragment, false) => pass(Reason::PassNotVip),
            (Anomaly::Ipv6Ext, true) => drop(Reason::DropIpv6Ext),
            (Anomaly::Ipv6Ext, false) => pass(Reason::PassUnparsed),
            (_, true) => drop(Reason::DropMalformed),
            (_, false) => pass(Reason::PassMalformed),
        }
    }

    fn inner_flow(&self, f: &[u8], p: &Parsed) -> Result<FlowKey, Prediction> {
        if p.anomaly != Anomaly::None {
            return Err(self.anomaly(p));
        }
        let not_ours = Err(pass(Reason::PassIcmpNotVip));
        if !has(f, p.l4, 2) {
            return not_ours;
        }
        let icmp_type = f[p.l4];
        let inner = p.l4 + 8;
        let mut key = FlowKey {
            family: p.key.family,
            ..FlowKey::default()
        };
        let inner_l4 = if p.key.proto == PROTO_ICMP {
            if icmp_type != 3 && icmp_type != 11 {
                return not_ours;
            }
            if !has(f, inner, 20) {
                return not_ours;
            }
            let ihl = usize::from(f[inner] & 0x0f) * 4;
            if f[inner] >> 4 != 4 || ihl < 20 {
                return not_ours;
            }
            key.proto = f[inner + 9];
            key.src[0] = word(f, inner + 16);
            key.dst[0] = word(f, inner + 12);
            inner + ihl
        } else {
            if !(1..=3).contains(&icmp_type) {
                return not_ours;
            }
            if !has(f, inner, 40) {
                return not_ours;
            }
            key.proto = f[inner + 6];
            key.src = words(f, inner + 24);
            key.dst = words(f, inner + 8);
            inner + 40
        };
        if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
            return not_ours;
        }
        if !has(f, inner_l4, 4) {
            return not_ours;
        }
        key.src_port_be = u16::from_ne_bytes([f[inner_l4 + 2], f[inner_l4 + 3]]);
        key.dst_port_be = u16::from_ne_bytes([f[inner_l4], f[inner_l4 + 1]]);
        Ok(key)
    }

    /// The backend the VIP's Maglev table gives a flow.
    fn maglev_pick(&self, vip: &ModelVip, key: &FlowKey) -> Result<(u32, Backend), Reason> {
        if vip.table.is_empty() {
            return Err(Reason::DropNoBackend);
        }
        let h = flow_hash(key, vip.flags & VIP_F_HASH_SRC_ONLY != 0);
        let id = vip.table[(h % vip.table.len() as u32) as usize];
        let b = self.usable(id).ok_or(Reason::DropNoBackend)?;
        Ok((id, b))
    }

    /// The VIP counter id a flow key belongs to, if it is a VIP flow.
    pub fn vip_id(&self, key: &FlowKey) -> Option<u32> {
        self.lookup_vip(key).map(|v| v.id)
    }
}

/// Whether `acl` refuses source `src`: of the prefixes of `src`'s family that contain
/// it, the longest decides (a deny refuses); none does: refused when the list allows
/// some prefixes of that family.
fn refused(acl: &Acl, src: std::net::IpAddr) -> bool {
    let bytes = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let s = bytes(src);
    let longest = |list: &[vip_user::config::Prefix]| {
        list.iter()
            .filter(|p| p.addr.is_ipv6() == src.is_ipv6())
            .filter(|p| {
                let a = bytes(p.addr);
                (0..usize::from(p.len)).all(|bit| {
                    let m = 0x80u8 >> (bit % 8);
                    a[bit / 8] & m == s[bit / 8] & m
                })
            })
            .map(|p| p.len)
            .max()
    };
    match (longest(&acl.allow), longest(&acl.deny)) {
        (None, None) => acl.allow.iter().any(|p| p.addr.is_ipv6() == src.is_ipv6()),
        (allow, deny) => deny > allow,
    }
}

/// The connection table's clock now, as the datapath reads it (`bpf_ktime_get_coarse_ns`
/// is `CLOCK_MONOTONIC_COARSE`). Only the age of a set's last sweep depends on it, in
/// whole ticks of about a second.
pub fn flow_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let ns = (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64);
    flow_clock(ns)
}
