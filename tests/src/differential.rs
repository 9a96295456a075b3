//! The differential run: `vip_lb` under `BPF_PROG_TEST_RUN` and the user-space reference
//! model ([`crate::model`]) must agree on the verdict, the reason counted, the backend
//! and the output bytes of every frame, over well-formed, randomly mutated, adversarial
//! (structured lies) and random frames. `XDP_ABORTED` never. Every frame tunnelled to a
//! backend must also come back out of `vip_decap` as the client sent it.
//!
//! Two users: the fixtures test `differential` (100,000 frames, in CI) and
//! `cargo xtask fuzz` (`vip-fuzz`, 10,000,000 by default). Both run [`run`]; a run is
//! determined by its seed (the frames and the connection table's seed), so a mismatch at
//! frame `N` is reproduced by running the same seed with `--packets N`.
//!
//! The connection table is small (many flows share a set, so full sets replace flows),
//! and two VIPs' tables change every [`REPUBLISH_EVERY`] frames, so a pinned flow's
//! backend often differs from what its VIP's table gives now: the model and the datapath
//! must agree on which flows the table still holds, not only on the hash.
//!
//! `BPF_PROG_TEST_RUN`'s `repeat` runs one frame many times; every frame here is
//! different and changes the state the next one meets, so each is one call.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UP, CONFIG_F_ICMP_TOO_BIG, ConnState, FAMILY_V6,
    GlobalConfig, NEXTHOP_F_VALID, NextHop, PROTO_TCP, PROTO_UDP, Reason, VIP_F_DSR_L2,
    VIP_F_HASH_SRC_ONLY, VIP_F_NO_CONNTRACK,
};
use vip_user::{
    config::Acl,
    control::maglev::{self, MaglevBackend},
    datapath::{
        Datapath, Limits,
        decap::Decap,
        keys::{addr_words, backend, flow_key, vip_key},
    },
};

use crate::{
    fixture::{Output, action, hex, run_xdp},
    lab::netns::{self, Netns},
    model::Model,
    packet::{
        CLIENT_MAC, IPV6_DSTOPTS, IPV6_FRAGMENT, IPV6_HOPOPTS, L4, LB_MAC, frame, icmp_error_about,
        ipv4_fragment, ipv4_no_df, with_ipv4_options, with_ipv6_ext, with_ttl, with_vlan,
    },
};

const M: u32 = 31;
/// Flows the connection table is sized for (64 sets of 4).
const MAX_CONNS: u32 = 256;
/// Frames between two changes of the rotating VIPs' tables.
pub const REPUBLISH_EVERY: u64 = 2_000;
/// VIPs whose tables change during the run (ids).
const ROTATING: [u32; 2] = [0, 6];
/// Backend host without a next hop: `bpf_fib_lookup` runs for it, in the run's own
/// network namespace, which has no routes, so frames for it are dropped (`DropNoRoute`).
const UNROUTED_HOST: u32 = 9;

/// The default seed of both users.
pub const DEFAULT_SEED: u64 = 0x5eed_1234_abcd_0001;

/// Reasons that no frame of this run can make `vip_lb` count: `DropInternal` (the kernel
/// refusing a head adjustment), `Decapsulated` (counted by `vip_decap`, which the run
/// checks through its round trips), and the answers of proxy ARP/NDP (the run announces
/// no address; the neighbour fixtures check those answers byte for byte).
pub const UNREACHABLE_BY_FRAMES: [Reason; 5] = [
    Reason::DropInternal,
    Reason::Decapsulated,
    Reason::ArpReplied,
    Reason::NdpAdvertised,
    Reason::PassNeighNotActive,
];

/// A small, fast, seedable generator (xorshift64, seeded through splitmix64 so that
/// any seed, 0 included, gives a full-period state).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(z | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Backend hosts: number, address, state, generation. As vipd does, each VIP has its
/// own backend id per host ([`bid`]), carrying the VIP's id and flags.
const BACKENDS: [(u32, &str, u8, u32); 9] = [
    (1, "198.18.2.1", BACKEND_UP, 1),
    (2, "198.18.2.2", BACKEND_UP, 1),
    (3, "198.18.2.3", BACKEND_DRAINING, 1),
    (4, "198.18.2.4", BACKEND_DOWN, 1),
    (5, "2001:db8:2::5", BACKEND_UP, 1),
    (6, "2001:db8:2::6", BACKEND_UP, 3),
    (7, "2001:db8:2::7", BACKEND_DOWN, 1),
    (8, "198.18.2.8", BACKEND_UP, 1),
    // Up, but without a route (see UNROUTED_HOST).
    (9, "198.18.2.9", BACKEND_UP, 1),
];

/// Backend ids per VIP (hosts are numbered below this).
const HOSTS_PER_VIP: u32 = 16;

/// The backend id of host `host` in VIP `vip` (below 256: the id is the next hop's last
/// MAC byte, which is how the output names its backend).
fn bid(vip: u32, host: u32) -> u32 {
    vip * HOSTS_PER_VIP + host
}

/// (id, addr, proto, flags, backend hosts)
type VipSpec = (u32, &'static str, u8, u32, &'static [u32]);
const VIPS: [VipSpec; 12] = [
    (0, "198.18.1.10:80", PROTO_TCP, 0, &[1, 2, 3, 8]),
    (1, "198.18.1.10:0", PROTO_UDP, 0, &[1, 5]),
    (2, "198.18.1.11:443", PROTO_TCP, VIP_F_DSR_L2, &[1, 2]),
    (
        3,
        "198.18.1.12:80",
        PROTO_TCP,
        VIP_F_HASH_SRC_ONLY,
        &[1, 2, 8],
    ),
    (
        4,
        "198.18.1.13:80",
        PROTO_TCP,
        VIP_F_NO_CONNTRACK,
        &[2, 4, 8],
    ),
    (5, "198.18.1.14:53", PROTO_UDP, 0, &[]),
    (6, "[2001:db8:1::10]:80", PROTO_TCP, 0, &[5, 6, 7]),
    (
        7,
        "[2001:db8:1::10]:0",
        PROTO_UDP,
        VIP_F_NO_CONNTRACK,
        &[5, 1],
    ),
    (8, "[2001:db8:1::11]:443", PROTO_TCP, VIP_F_DSR_L2, &[5, 6]),
    (
        9,
        "[2001:db8:1::12]:80",
        PROTO_TCP,
        VIP_F_HASH_SRC_ONLY,
        &[1, 6],
    ),
    (10, "[2001:db8:1::13]:80", PROTO_TCP, 0, &[2, 9]),
    (11, "198.18.1.15:0", PROTO_TCP, 0, &[6, 8]),
];

/// The Maglev table of VIP `vip` over backend hosts `hosts`.
fn table(vip: u32, hosts: &[u32]) -> Vec<u32> {
    let bs: Vec<MaglevBackend> = hosts
        .iter()
        .map(|host| {
            let b = BACKENDS.iter().find(|b| b.0 == *host).expect("known host");
            MaglevBackend {
                id: bid(vip, *host),
                identity: SocketAddr::new(b.1.parse().expect("address"), 80),
                weight: 1 + host % 3,
            }
        })
        .collect();
    maglev::build(&bs, M)
}

/// What the run writes its configuration into: the datapath, or only the model.
trait Sink {
    fn set_global(&mut self, cfg: &GlobalConfig) -> GlobalConfig;
    fn set_backend(&mut self, id: u32, b: &vip_common::Backend);
    fn set_nexthop(&mut self, id: u32, nh: &NextHop);
    fn publish(&mut self, key: &vip_common::VipKey, id: u32, flags: u32, table: &[u32], acl: &Acl);
    fn insert_conn(&mut self, key: &vip_common::FlowKey, c: &ConnState);
}

/// The datapath and the model, written together.
struct Both<'a> {
    dp: &'a mut Datapath,
    model: &'a mut Model,
}

impl Sink for Both<'_> {
    fn set_global(&mut self, cfg: &GlobalConfig) -> GlobalConfig {
        self.dp.set_global(cfg).expect("writing the global config");
        // With the connection table's seed and size, which the datapath chose.
        let written = self.dp.written_global();
        self.model.set_global(&written);
        written
    }
    fn set_backend(&mut self, id: u32, b: &vip_common::Backend) {
        self.dp.set_backend(id, b).expect("writing a backend");
        self.model.set_backend(id, b);
    }
    fn set_nexthop(&mut self, id: u32, nh: &NextHop) {
        self.dp.set_nexthop(id, nh).expect("writing a next hop");
        self.model.set_nexthop(id, nh);
    }
    fn publish(&mut self, key: &vip_common::VipKey, id: u32, flags: u32, table: &[u32], acl: &Acl) {
        self.dp
            .publish_vip(
                key,
                id,
                flags,
                M,
                table,
                &acl.entries(key.family == FAMILY_V6),
            )
            .expect("publishing a VIP");
        self.model.publish_vip(key, id, flags, table, acl);
    }
    fn insert_conn(&mut self, key: &vip_common::FlowKey, c: &ConnState) {
        self.dp.insert_conn(key, c).expect("pinning a flow");
        self.model.insert_conn(key, c);
    }
}

/// The model alone, with a fixed connection-table geometry (for the generator's
/// coverage check, which needs no kernel).
impl Sink for Model {
    fn set_global(&mut self, cfg: &GlobalConfig) -> GlobalConfig {
        let cfg = GlobalConfig {
            flow_seed: 0x1234_5678,
            flow_sets_mask: MAX_CONNS / 4 - 1,
            ..*cfg
        };
        Model::set_global(self, &cfg);
        cfg
    }
    fn set_backend(&mut self, id: u32, b: &vip_common::Backend) {
        Model::set_backend(self, id, b);
    }
    fn set_nexthop(&mut self, id: u32, nh: &NextHop) {
        Model::set_nexthop(self, id, nh);
    }
    fn publish(&mut self, key: &vip_common::VipKey, id: u32, flags: u32, table: &[u32], acl: &Acl) {
        self.publish_vip(key, id, flags, table, acl);
    }
    fn insert_conn(&mut self, key: &vip_common::FlowKey, c: &ConnState) {
        Model::insert_conn(self, key, c);
    }
}

/// The access list of VIP `vip` in rotation round `round` (clients are 198.18.0.1-40 and
/// 2001:db8::1-40, see [`client`]): allow and deny lists nested both ways, both
/// families, one on a VIP without connection tracking; VIP 0 (rotating) changes its list
/// each round, so flows admitted under one list meet the next.
fn acl_of(vip: u32, round: u64) -> Acl {
    let list = |allow: &[&str], deny: &[&str]| Acl {
        allow: allow.iter().map(|p| p.parse().expect("prefix")).collect(),
        deny: deny.iter().map(|p| p.parse().expect("prefix")).collect(),
    };
    match (vip, round % 2) {
        // An allow list with a deny inside and an allow inside that; clients 33-40 match
        // nothing. The next round: a deny list only.
        (0, 0) => list(
            &["198.18.0.0/27", "198.18.0.4/30", "2001:db8::/32"],
            &["198.18.0.0/28"],
        ),
        (0, _) => list(&[], &["198.18.0.16/28", "198.18.0.24/29"]),
        (3, _) => list(&[], &["198.18.0.8/29"]),
        (4, _) => list(&["198.18.0.0/26"], &["198.18.0.32/30"]),
        (6, _) => list(
            &["2001:db8::/120", "2001:db8::c/126", "198.18.0.0/15"],
            &["2001:db8::/124"],
        ),
        (7, _) => list(&[], &["2001:db8::20/123"]),
        _ => Acl::default(),
    }
}

fn configure(sink: &mut dyn Sink) {
    let (v6, _) = addr_words("2001:db8:ffff::".parse().expect("address"));
    let cfg = GlobalConfig {
        flags: CONFIG_F_ICMP_TOO_BIG,
        mtu: 1500,
        tunnel_src_v4_be: u32::from_ne_bytes([198, 19, 0, 0]),
        tunnel_src_v4_hash_bits: 12,
        tunnel_src_v6: v6,
        ..GlobalConfig::default()
    };
    sink.set_global(&cfg);
    for (vip, _, _, flags, hosts) in VIPS {
        for &host in hosts {
            let (_, addr, state, generation) = *BACKENDS.iter().find(|b| b.0 == host).unwrap();
            let id = bid(vip, host);
            let b = backend(addr.parse().unwrap(), state, generation, vip, flags);
            sink.set_backend(id, &b);
            if host == UNROUTED_HOST {
                continue;
            }
            let nh = NextHop {
                dst_mac: [2, 0, 0, 0, 1, id as u8],
                src_mac: [2, 0, 0, 0, 0, 0xfe],
                ifindex: 0,
                flags: NEXTHOP_F_VALID,
            };
            sink.set_nexthop(id, &nh);
        }
    }
    for (id, addr, proto, flags, hosts) in VIPS {
        let key = vip_key(addr.parse().unwrap(), proto);
        sink.publish(&key, id, flags, &table(id, hosts), &acl_of(id, 0));
    }
    // Pinned flows the hash would not choose: to a draining backend (kept), a down one
    // (re-hashed), a stale generation (re-hashed), and in a VIP without connection
    // tracking (not used: its backends say so).
    let pins = [
        ("198.18.0.1:1000", "198.18.1.10:80", bid(0, 3), 1),
        ("198.18.0.2:1000", "198.18.1.10:80", bid(0, 4), 1),
        ("198.18.0.3:1000", "198.18.1.10:80", bid(0, 8), 0),
        ("198.18.0.4:1000", "198.18.1.13:80", bid(4, 2), 1),
        ("[2001:db8::1]:1000", "[2001:db8:1::10]:80", bid(6, 7), 1),
        ("[2001:db8::2]:1000", "[2001:db8:1::10]:80", bid(6, 6), 3),
    ];
    for (c, v, id, generation) in pins {
        let k = flow_key(c.parse().unwrap(), v.parse().unwrap(), PROTO_TCP);
        let s = ConnState {
            backend_id: id,
            generation,
        };
        sink.insert_conn(&k, &s);
    }
}

/// Republishes the [`ROTATING`] VIPs without their `round`th backend host (every host
/// again when that is the only one).
fn rotate(sink: &mut dyn Sink, round: u64) {
    for (id, addr, proto, flags, hosts) in VIPS.into_iter().filter(|v| ROTATING.contains(&v.0)) {
        let left_out = hosts[(round % hosts.len() as u64) as usize];
        let members: Vec<u32> = hosts
            .iter()
            .copied()
            .filter(|h| *h != left_out || hosts.len() == 1)
            .collect();
        let key = vip_key(addr.parse().unwrap(), proto);
        sink.publish(&key, id, flags, &table(id, &members), &acl_of(id, round));
    }
}

fn client(rng: &mut Rng, v6: bool) -> SocketAddr {
    // A small population, so flows repeat and hit the connection table.
    let host = 1 + rng.below(40) as u8;
    let port = [1000u16, 40000, 40001, 55555][rng.below(4)];
    if v6 {
        SocketAddr::new(
            IpAddr::from([
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, host,
            ]),
            port,
        )
    } else {
        SocketAddr::new(IpAddr::from([198, 18, 0, host]), port)
    }
}

fn destination(rng: &mut Rng, v6: bool) -> SocketAddr {
    let v4s = [
        "198.18.1.10",
        "198.18.1.11",
        "198.18.1.12",
        "198.18.1.13",
        "198.18.1.14",
        "198.18.1.15",
        "198.18.1.99",
    ];
    let v6s = [
        "2001:db8:1::10",
        "2001:db8:1::11",
        "2001:db8:1::12",
        "2001:db8:1::13",
        "2001:db8:1::99",
    ];
    let addr: IpAddr = if v6 { rng.pick(&v6s) } else { rng.pick(&v4s) }
        .parse()
        .unwrap();
    let port = [80u16, 443, 53, 8080, 0][rng.below(5)];
    SocketAddr::new(addr, port)
}

fn router(v6: bool) -> IpAddr {
    if v6 { "2001:db8:9::1" } else { "198.18.9.1" }
        .parse()
        .unwrap()
}

/// A well-formed frame, with the oddities a real network has: ICMP errors about VIP
/// flows, low TTLs, IPv4 options, fragments, IPv6 extension headers, VLAN tags.
fn well_formed(rng: &mut Rng) -> Vec<u8> {
    let v6 = rng.chance(40);
    let (c, d) = (client(rng, v6), destination(rng, v6));
    let len = match rng.below(10) {
        0 => 1400 + rng.below(100),
        1 => rng.below(1500),
        _ => rng.below(64),
    };
    let payload = vec![0xab; len];
    let l4 = if rng.chance(60) {
        L4::Tcp {
            syn: rng.chance(50),
        }
    } else {
        L4::Udp
    };
    let mut f = frame(c, d, l4, &payload);
    if rng.chance(8) {
        // An ICMP error from a router about the reverse of this flow.
        let mut reply = frame(d, c, l4, &payload[..payload.len().min(16)])[14..].to_vec();
        if rng.chance(20) {
            reply.truncate(rng.below(reply.len()));
        }
        if reply.len() >= 48 || (!v6 && reply.len() >= 28) {
            f = icmp_error_about(router(v6), &reply, 1280 + rng.below(200) as u32);
        }
    }
    let is_v4 = f[12] == 0x08;
    if rng.chance(5) {
        f = with_ttl(&f, rng.below(3) as u8);
    }
    if is_v4 && rng.chance(5) {
        f = with_ipv4_options(&f, &[1, 1, 1, 0, 7, 3, 4, 0][..4 * (1 + rng.below(2))]);
    }
    if is_v4 && rng.chance(5) {
        f = ipv4_fragment(&f, rng.chance(50), rng.below(3) as u16 * 100);
    }
    if is_v4 && rng.chance(5) {
        f = ipv4_no_df(&f);
    }
    if !is_v4 && rng.chance(10) {
        let kinds: Vec<u8> = (0..1 + rng.below(6))
            .map(|_| *rng.pick(&[IPV6_HOPOPTS, IPV6_DSTOPTS, IPV6_DSTOPTS, IPV6_FRAGMENT]))
            .collect();
        f = with_ipv6_ext(&f, &kinds);
    }
    if rng.chance(5) {
        f = with_vlan(&f, rng.below(4095) as u16);
    }
    f
}

/// A [`well_formed`] frame, or (2 in 100) an ARP frame.
fn well_formed_or_arp(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(2) {
        arp(rng)
    } else {
        well_formed(rng)
    }
}

/// An ARP request (now and then a reply) from a client asking for a destination's
/// address (a VIP's or another), as routers and hosts on the LB's segment send them.
fn arp(rng: &mut Rng) -> Vec<u8> {
    let (IpAddr::V4(c), IpAddr::V4(d)) = (client(rng, false).ip(), destination(rng, false).ip())
    else {
        unreachable!("IPv4 addresses")
    };
    let op = if rng.chance(80) { 1 } else { 2 };
    crate::packet::arp([0xff; 6], op, CLIENT_MAC, c, [0; 6], d)
}

/// Blind mutations: bit flips and random bytes in the headers, truncation, junk added.
fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 if !f.is_empty() => {
                // Flip a bit in the headers, where it matters most.
                let i = rng.below(f.len().min(80));
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len().min(80));
                f[i] = rng.byte();
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            _ => f.extend((0..rng.below(16)).map(|_| rng.byte())),
        }
    }
    f
}

/// Offset of the IP header (after one VLAN tag, if any).
fn l3_of(f: &[u8]) -> usize {
    if f.len() >= 14 && f[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    }
}

/// A value near `v` (off by a little either way) or anywhere.
fn lie16(rng: &mut Rng, v: u16) -> u16 {
    match rng.below(4) {
        0 => v.wrapping_add(1 + rng.below(8) as u16),
        1 => v.wrapping_sub(1 + rng.below(8) as u16),
        2 => rng.below(64) as u16,
        _ => rng.next() as u16,
    }
}

/// Structured lies in a well-formed frame: one header field made inconsistent with the
/// rest (lengths, IHL, data offset, versions, EtherTypes), tag games, long or lying
/// IPv6 extension chains, fragments, and ICMP messages of every kind about VIP flows.
/// IPv4 header checksums are kept right half the time (the datapath does not check them;
/// the result must not depend on it).
fn adversarial(rng: &mut Rng) -> Vec<u8> {
    let mut f = well_formed(rng);
    let l3 = l3_of(&f);
    let v4 = f[l3 - 2..l3] == [0x08, 0x00];
    // The helpers of `crate::packet` edit untagged frames.
    let untagged = l3 == 14;
    let ihl = if v4 {
        usize::from(f[l3] & 0x0f) * 4
    } else {
        40
    };
    let l4 = l3 + ihl;
    match rng.below(12) {
        0 if v4 => {
            let tot = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
            f[l3 + 2..l3 + 4].copy_from_slice(&lie16(rng, tot).to_be_bytes());
        }
        0 => {
            let plen = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
            f[l3 + 4..l3 + 6].copy_from_slice(&lie16(rng, plen).to_be_bytes());
        }
        1 if v4 => f[l3] = 0x40 | rng.below(16) as u8,
        1 => f[l3] = (rng.below(16) as u8) << 4 | (f[l3] & 0x0f),
        2 if f.len() > l4 + 13 => {
            // TCP data offset (in UDP, a payload byte: harmless).
            f[l4 + 12] = (rng.below(16) as u8) << 4 | (f[l4 + 12] & 0x0f);
        }
        3 if f.len() > l4 + 6 => {
            // UDP length (in TCP, the sequence number: harmless).
            let ulen = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]);
            f[l4 + 4..l4 + 6].copy_from_slice(&lie16(rng, ulen).to_be_bytes());
        }
        4 => {
            // Two tags (802.1ad outside, 802.1Q inside, or two 802.1Q), or one tag and
            // nothing after it.
            let mut g = with_vlan(&f, rng.below(4095) as u16);
            if rng.chance(50) {
                g = with_vlan(&g, rng.below(4095) as u16);
                if rng.chance(50) {
                    g[12..14].copy_from_slice(&[0x88, 0xa8]);
                }
            } else {
                g.truncate(14 + rng.below(6));
            }
            f = g;
        }
        5 if !v4 && untagged => {
            // An extension chain past what the datapath walks, or with lying lengths,
            // AH (51) and routing (43) headers among them.
            let kinds: Vec<u8> = (0..1 + rng.below(7))
                .map(|_| *rng.pick(&[0u8, 43, 44, 51, 60, 60]))
                .collect();
            let mut g = with_ipv6_ext(&f, &kinds);
            if rng.chance(50) {
                // Lie in one header's length byte.
                let i = rng.below(kinds.len());
                g[l3 + 40 + 8 * i + 1] = rng.byte();
            }
            f = g;
        }
        6 if v4 && untagged => {
            // A non-first fragment, or a first one; offsets up to the largest.
            f = ipv4_fragment(&f, rng.chance(50), rng.below(0x2000) as u16);
        }
        6 if !v4 && untagged => {
            let mut g = with_ipv6_ext(&f, &[IPV6_FRAGMENT]);
            // Fragment offset (13 bits) and M.
            let off = (rng.below(0x2000) as u16) << 3 | u16::from(rng.chance(50));
            g[l3 + 42..l3 + 44].copy_from_slice(&off.to_be_bytes());
            f = g;
        }
        7 => f = icmp_about_vip(rng, !v4),
        8 => {
            // The other family's EtherType, or one that is not IP at all.
            let t: [u8; 2] = *rng.pick(&[[0x86, 0xdd], [0x08, 0x00], [0x08, 0x06], [0x88, 0xcc]]);
            f[l3 - 2..l3].copy_from_slice(&t);
        }
        9 if v4 && untagged => {
            // Junk IP options, and IHL saying more than is there.
            let opts: Vec<u8> = (0..4 * (1 + rng.below(10))).map(|_| rng.byte()).collect();
            f = with_ipv4_options(&f, &opts);
            if rng.chance(50) {
                f.truncate(l3 + 20 + rng.below(opts.len()));
            }
        }
        10 => f = with_ttl(&f, *rng.pick(&[0u8, 1, 2, 255])),
        _ => {
            // A protocol number other than TCP/UDP/ICMP in an otherwise valid packet.
            let proto = *rng.pick(&[0u8, 2, 4, 41, 47, 50, 58, 132, 255]);
            if v4 {
                f[l3 + 9] = proto;
            } else {
                f[l3 + 6] = proto;
            }
        }
    }
    if v4 && rng.chance(50) {
        set_ipv4_checksum(&mut f, l3);
    }
    f
}

/// Writes the right checksum into whatever IPv4 header (IHL as it says, cut at the
/// frame's end) starts at `l3`; a frame too short for one is left alone.
fn set_ipv4_checksum(f: &mut [u8], l3: usize) {
    let Some(first) = f.get(l3) else {
        return;
    };
    let end = (l3 + usize::from(first & 0x0f) * 4).min(f.len());
    if end < l3 + 12 {
        return;
    }
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let mut sum: u32 = f[l3..end]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[l3 + 10..l3 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// An ICMP or ICMPv6 message of any type to a VIP address, quoting a packet from a VIP
/// to a client (what a router sends back about a backend's answer): the quote cut at
/// any length, with IPv4 options, or of another protocol.
fn icmp_about_vip(rng: &mut Rng, v6: bool) -> Vec<u8> {
    let (c, d) = (client(rng, v6), destination(rng, v6));
    let l4 = if rng.chance(60) {
        L4::Tcp { syn: false }
    } else {
        L4::Udp
    };
    let mut reply = frame(d, c, l4, &[0x5a; 24]);
    if !v6 && rng.chance(20) {
        reply = with_ipv4_options(&reply, &[1, 1, 1, 0, 7, 3, 4, 0][..4 * (1 + rng.below(2))]);
    }
    if rng.chance(10) {
        // Quoting a packet of another protocol.
        reply[14 + if v6 { 6 } else { 9 }] = *rng.pick(&[1u8, 58, 47]);
    }
    let mut quote = reply[14..].to_vec();
    let keep = match rng.below(4) {
        0 => rng.below(quote.len() + 1),
        1 => (if v6 { 48 } else { 28 }).min(quote.len()),
        _ => quote.len(),
    };
    quote.truncate(keep);
    let (t, code) = if v6 {
        *rng.pick(&[
            (1u8, 4u8),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (128, 0),
            (129, 0),
            (135, 0),
        ])
    } else {
        *rng.pick(&[
            (3u8, 4u8),
            (3, 1),
            (3, 3),
            (11, 0),
            (12, 0),
            (0, 0),
            (8, 0),
            (5, 1),
        ])
    };
    let bytes5to8 = if t == 3 || t == 2 {
        [0, 0, 0x05, 0x00]
    } else {
        [0; 4]
    };
    let eth = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let mut out = Vec::new();
    let vip = d.ip();
    match (router(v6), vip) {
        (IpAddr::V4(r), IpAddr::V4(v)) => eth
            .ipv4(r.octets(), v.octets(), 64)
            .icmpv4_raw(t, code, bytes5to8)
            .write(&mut out, &quote),
        (IpAddr::V6(r), IpAddr::V6(v)) => eth
            .ipv6(r.octets(), v.octets(), 64)
            .icmpv6_raw(t, code, bytes5to8)
            .write(&mut out, &quote),
        _ => unreachable!("one family"),
    }
    .expect("writing an ICMP frame");
    out
}

/// Random bytes behind a random or an IP EtherType.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = 14 + rng.below(120);
    let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    let t: [u8; 2] = *rng.pick(&[[0x08, 0x00], [0x86, 0xdd], [0x81, 0x00], [0x88, 0xa8]]);
    if rng.chance(80) {
        f[12..14].copy_from_slice(&t);
    }
    if rng.chance(50) {
        // Mostly the right IP version, so the parser gets further.
        let l3 = l3_of(&f);
        if let Some(b) = f.get_mut(l3) {
            *b = if t == [0x86, 0xdd] {
                0x60 | (*b & 0x0f)
            } else {
                0x45
            };
        }
    }
    f
}

/// The kinds of generated frame, in the order of [`Report::kinds`].
pub const KINDS: [&str; 4] = ["well-formed", "mutated", "adversarial", "random"];

/// One generated frame and its kind (an index into [`KINDS`]).
pub fn generate(rng: &mut Rng) -> (usize, Vec<u8>) {
    match rng.below(100) {
        0..55 => (0, well_formed_or_arp(rng)),
        55..75 => {
            let f = well_formed_or_arp(rng);
            (1, mutate(rng, f))
        }
        75..95 => (2, adversarial(rng)),
        _ => (3, random_frame(rng)),
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames to run (frames shorter than an Ethernet header are generated but not run:
    /// `BPF_PROG_TEST_RUN` refuses them, and no driver delivers one).
    pub packets: u64,
    /// The generator's seed.
    pub seed: u64,
    /// Stop after this long, whatever `packets` says.
    pub max_time: Option<Duration>,
    /// Mismatching frames kept for the report (the count goes on).
    pub keep: usize,
    /// Stop at this many mismatches.
    pub stop_after: u64,
    /// Called every this many frames with the report so far (progress).
    pub progress_every: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            packets: 100_000,
            seed: DEFAULT_SEED,
            max_time: None,
            keep: 5,
            stop_after: u64::MAX,
            progress_every: 0,
        }
    }
}

/// One frame on which the datapath and the model disagreed.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// 1-based number of the frame among those run: `--packets` with this number and
    /// the same seed ends a run on it.
    pub index: u64,
    /// What differed.
    pub problems: Vec<String>,
    /// The frame.
    pub input: Vec<u8>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frame {}: {}\n  input {}",
            self.index,
            self.problems.join("; "),
            hex(&self.input)
        )
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Frames run.
    pub ran: u64,
    /// Frames generated (the short ones were not run).
    pub generated: u64,
    /// Frames run, by kind ([`KINDS`]).
    pub kinds: [u64; 4],
    /// Frames on which the two disagreed.
    pub mismatches: u64,
    /// The first [`Options::keep`] of them.
    pub first: Vec<Mismatch>,
    /// Frames that got `XDP_ABORTED`.
    pub aborted: u64,
    /// Frames by the reason the model predicted (indexed by `Reason as usize`).
    pub reasons: [u64; Reason::COUNT as usize],
    /// Tunnelled frames decapsulated back by `vip_decap`.
    pub round_trips: u64,
    /// How long the frames took.
    pub elapsed: Duration,
    /// The run ended at [`Options::max_time`].
    pub timed_out: bool,
}

impl Report {
    /// The reasons `vip_lb` can count that no frame of the run was predicted.
    pub fn missing_reasons(&self) -> Vec<Reason> {
        Reason::ALL
            .into_iter()
            .filter(|r| !UNREACHABLE_BY_FRAMES.contains(r))
            .filter(|r| self.reasons[*r as usize] == 0)
            .collect()
    }

    /// The reason tally, by name.
    pub fn reason_names(&self) -> String {
        Reason::ALL
            .iter()
            .zip(self.reasons)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs the generator through the model alone (no kernel): for checking what the
/// generator covers.
pub fn model_only(packets: u64, seed: u64) -> Report {
    let mut model = Model::new();
    configure(&mut model);
    let mut rng = Rng::new(seed);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    while report.ran < packets {
        report.generated += 1;
        let (kind, input) = generate(&mut rng);
        if input.len() < 14 {
            continue;
        }
        report.ran += 1;
        if report.ran.is_multiple_of(REPUBLISH_EVERY) {
            rotate(&mut model, report.ran / REPUBLISH_EVERY);
        }
        report.kinds[kind] += 1;
        report.reasons[model.decide(&input).reason as usize] += 1;
    }
    report
}

/// Runs the differential (needs root) in a network namespace of its own, where
/// `bpf_fib_lookup` finds no route whatever the host has.
pub fn run(opts: &Options, progress: impl FnMut(&Report) + Send + 'static) -> Result<Report> {
    let ns = Netns::create(&format!("{}fz", netns::unique_prefix()))
        .context("creating the run's network namespace")?;
    let opts = opts.clone();
    netns::within(ns.name(), move || run_here(&opts, progress))
        .context("entering the run's network namespace")?
}

/// [`run`] in the current network namespace: loads `vip_lb` and `vip_decap`.
fn run_here(opts: &Options, mut progress: impl FnMut(&Report)) -> Result<Report> {
    let limits = Limits {
        max_vips: 16,
        max_backends: 16 * HOSTS_PER_VIP,
        table_size: M,
        max_conns: MAX_CONNS,
        maglev_pool: vip_common::maglev_pool_default(16, M) as u32,
    };
    let mut dp = Datapath::load(&limits, None).context("loading vip_lb")?;
    // The connection table's seed from the run's, so the whole run (which flows share a
    // set) repeats; random per load otherwise.
    dp.reseed_flows(Rng::new(opts.seed ^ 0xf10e).next() as u32)?;
    let mut model = Model::new();
    configure(&mut Both {
        dp: &mut dp,
        model: &mut model,
    });
    // The backends' side: every tunnelled frame must come back out of vip_decap as the
    // client sent it.
    let mut decap = Decap::load(None).context("loading vip_decap")?;
    for b in BACKENDS {
        decap.add_local(b.1.parse().expect("address"))?;
    }
    let mut rng = Rng::new(opts.seed);
    let mut report = Report {
        seed: opts.seed,
        ..Report::default()
    };
    let mut reasons_before = dp.reason_counts()?;
    let start = Instant::now();
    while report.ran < opts.packets && report.mismatches < opts.stop_after {
        report.generated += 1;
        let (kind, input) = generate(&mut rng);
        if input.len() < 14 {
            continue;
        }
        report.ran += 1;
        report.kinds[kind] += 1;
        if report.ran.is_multiple_of(REPUBLISH_EVERY) {
            rotate(
                &mut Both {
                    dp: &mut dp,
                    model: &mut model,
                },
                report.ran / REPUBLISH_EVERY,
            );
            if let Some(max) = opts.max_time
                && start.elapsed() >= max
            {
                report.timed_out = true;
                break;
            }
        }
        if opts.progress_every > 0 && report.ran.is_multiple_of(opts.progress_every) {
            report.elapsed = start.elapsed();
            progress(&report);
        }
        let want = model.decide(&input);
        let (verdict, out) = run_xdp(dp.program_mut(), &input);
        let reasons_after = dp.reason_counts()?;
        let moved: Vec<Reason> = reasons_after
            .iter()
            .zip(&reasons_before)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        reasons_before = reasons_after;
        report.reasons[want.reason as usize] += 1;
        let mut problems = Vec::new();
        if verdict == action::ABORTED {
            report.aborted += 1;
            problems.push("XDP_ABORTED".to_string());
        }
        if verdict != want.action {
            problems.push(format!(
                "verdict {} (model {})",
                action::name(verdict),
                action::name(want.action)
            ));
        }
        if moved != [want.reason] {
            problems.push(format!(
                "reasons counted {moved:?} (model {:?})",
                want.reason
            ));
        }
        let backend = (verdict == action::TX
            && matches!(want.reason, Reason::Forwarded | Reason::IcmpSteered))
        .then(|| u32::from(out[5]));
        if backend.is_some() && backend != want.backend {
            problems.push(format!("backend {backend:?} (model {:?})", want.backend));
        }
        let expected = match &want.output {
            Output::Unchanged => Some(&input),
            Output::Bytes(b) => Some(b),
            Output::Any => None,
        };
        if let Some(expected) = expected
            && verdict == want.action
            && out != *expected
        {
            problems.push(format!(
                "output differs\n  got   {}\n  model {}",
                hex(&out),
                hex(expected)
            ));
        }
        if backend.is_some() && !want.dsr_l2 && problems.is_empty() {
            let (dv, dout) = run_xdp(decap.program_mut(), &out);
            report.round_trips += 1;
            if dv != action::PASS || dout.get(12..) != input.get(12..) || dout[..12] != out[..12] {
                problems.push(format!(
                    "vip_decap did not give back the client's packet: {} {}",
                    action::name(dv),
                    hex(&dout)
                ));
            }
        }
        if !problems.is_empty() {
            report.mismatches += 1;
            if report.first.len() < opts.keep {
                report.first.push(Mismatch {
                    index: report.ran,
                    problems,
                    input,
                });
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator reaches every reason `vip_lb` can count from a frame within the
    /// fixtures test's 100,000 frames (through the model: no kernel needed), and every
    /// kind of frame is made.
    #[test]
    fn generator_covers_every_reason_in_100k_frames() {
        let report = model_only(100_000, DEFAULT_SEED);
        assert_eq!(
            report.missing_reasons(),
            [],
            "never predicted; tally: {}",
            report.reason_names()
        );
        for (kind, n) in KINDS.iter().zip(report.kinds) {
            assert!(n > 1_000, "only {n} {kind} frames");
        }
    }

    #[test]
    fn reason_coverage_check_can_fail() {
        // A run of a few frames cannot reach every reason: the check must say which.
        let report = model_only(20, DEFAULT_SEED);
        assert!(!report.missing_reasons().is_empty());
        assert!(!report.missing_reasons().contains(&Reason::DropInternal));
    }

    #[test]
    fn the_generator_is_determined_by_its_seed() {
        let frames = |seed| {
            let mut rng = Rng::new(seed);
            (0..200).map(|_| generate(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(frames(7), frames(7));
        assert_ne!(frames(7), frames(8));
        // Seed 0 is a seed like any other (xorshift's zero state is avoided).
        assert_ne!(frames(0), frames(1));
    }
}
