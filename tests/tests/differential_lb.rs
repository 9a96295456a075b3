//! Differential test: `vip_lb` under `BPF_PROG_TEST_RUN` and the user-space reference
//! model (`vip_tests::model`) must agree on the verdict, the reason and the backend of
//! every frame, over well-formed, odd and randomly mutated frames. `XDP_ABORTED` never.
//! Frames the program passes must come out untouched.
//!
//! The connection table is small (many flows share a set, so full sets replace flows),
//! and two VIPs' tables change every [`REPUBLISH_EVERY`] frames, so a pinned flow's
//! backend often differs from what its VIP's table gives now: the model and the datapath
//! must agree on which flows the table still holds, not only on the hash.
//!
//! `VIP_DIFF_PACKETS` sets the count (default 100,000); `VIP_DIFF_SEED` the seed.

use std::net::{IpAddr, SocketAddr};

use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UP, CONFIG_F_ICMP_TOO_BIG, ConnState, GlobalConfig,
    NEXTHOP_F_VALID, NextHop, PROTO_TCP, PROTO_UDP, Reason, VIP_F_DSR_L2, VIP_F_HASH_SRC_ONLY,
    VIP_F_NO_CONNTRACK,
};
use vip_tests::{
    fixture::{action, hex, run_xdp},
    model::Model,
    packet::{
        IPV6_DSTOPTS, IPV6_FRAGMENT, IPV6_HOPOPTS, L4, checksum_errors, frame, icmp_error_about,
        ipv4_fragment, ipv4_no_df, with_ipv4_options, with_ipv6_ext, with_macs, with_ttl,
        with_vlan,
    },
    privileged::require_root,
};
use vip_user::{
    control::maglev::{self, MaglevBackend},
    datapath::{
        Datapath, Limits,
        decap::Decap,
        keys::{addr_words, backend, flow_key, vip_key},
    },
};

const M: u32 = 31;
/// Flows the connection table is sized for (64 sets of 4).
const MAX_CONNS: u32 = 256;
/// Frames between two changes of the rotating VIPs' tables.
const REPUBLISH_EVERY: usize = 2_000;
/// VIPs whose tables change during the run (ids).
const ROTATING: [u32; 2] = [0, 6];

struct Rng(u64);
impl Rng {
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
}

/// Backend hosts: number, address, state, generation. As vipd does, each VIP has its
/// own backend id per host ([`bid`]), carrying the VIP's id and flags.
const BACKENDS: [(u32, &str, u8, u32); 8] = [
    (1, "198.18.2.1", BACKEND_UP, 1),
    (2, "198.18.2.2", BACKEND_UP, 1),
    (3, "198.18.2.3", BACKEND_DRAINING, 1),
    (4, "198.18.2.4", BACKEND_DOWN, 1),
    (5, "2001:db8:2::5", BACKEND_UP, 1),
    (6, "2001:db8:2::6", BACKEND_UP, 3),
    (7, "2001:db8:2::7", BACKEND_DOWN, 1),
    (8, "198.18.2.8", BACKEND_UP, 1),
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
    (10, "[2001:db8:1::13]:80", PROTO_TCP, 0, &[2]),
    (11, "198.18.1.15:0", PROTO_TCP, 0, &[6, 8]),
];

/// The Maglev table of VIP `vip` over backend hosts `hosts`.
fn table(vip: u32, hosts: &[u32]) -> Vec<u32> {
    let bs: Vec<MaglevBackend> = hosts
        .iter()
        .map(|host| {
            let b = BACKENDS.iter().find(|b| b.0 == *host).unwrap();
            MaglevBackend {
                id: bid(vip, *host),
                identity: SocketAddr::new(b.1.parse().unwrap(), 80),
                weight: 1 + host % 3,
            }
        })
        .collect();
    maglev::build(&bs, M)
}

fn configure(dp: &mut Datapath, model: &mut Model) {
    let (v6, _) = addr_words("2001:db8:ffff::".parse().unwrap());
    let cfg = GlobalConfig {
        flags: CONFIG_F_ICMP_TOO_BIG,
        mtu: 1500,
        tunnel_src_v4_be: u32::from_ne_bytes([198, 19, 0, 0]),
        tunnel_src_v4_hash_bits: 12,
        tunnel_src_v6: v6,
        ..GlobalConfig::default()
    };
    dp.set_global(&cfg).unwrap();
    // With the connection table's seed and size, which the datapath chose.
    model.set_global(&dp.written_global());
    for (vip, _, _, flags, hosts) in VIPS {
        for &host in hosts {
            let (_, addr, state, generation) = *BACKENDS.iter().find(|b| b.0 == host).unwrap();
            let id = bid(vip, host);
            let b = backend(addr.parse().unwrap(), state, generation, vip, flags);
            dp.set_backend(id, &b).unwrap();
            model.set_backend(id, &b);
            let nh = NextHop {
                dst_mac: [2, 0, 0, 0, 1, id as u8],
                src_mac: [2, 0, 0, 0, 0, 0xfe],
                ifindex: 0,
                flags: NEXTHOP_F_VALID,
            };
            dp.set_nexthop(id, &nh).unwrap();
            model.set_nexthop(id, &nh);
        }
    }
    for (id, addr, proto, flags, hosts) in VIPS {
        let key = vip_key(addr.parse().unwrap(), proto);
        let t = table(id, hosts);
        dp.publish_vip(&key, id, flags, id, &t).unwrap();
        model.publish_vip(&key, id, flags, &t);
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
        dp.insert_conn(&k, &s).unwrap();
        model.insert_conn(&k, &s);
    }
}

/// Republishes the [`ROTATING`] VIPs without their `round`th backend host (every host
/// again when that is the only one), in both.
fn rotate(dp: &mut Datapath, model: &mut Model, round: usize) {
    for (id, addr, proto, flags, hosts) in VIPS.into_iter().filter(|v| ROTATING.contains(&v.0)) {
        let left_out = hosts[round % hosts.len()];
        let members: Vec<u32> = hosts
            .iter()
            .copied()
            .filter(|h| *h != left_out || hosts.len() == 1)
            .collect();
        let key = vip_key(addr.parse().unwrap(), proto);
        let t = table(id, &members);
        dp.publish_vip(&key, id, flags, id, &t).unwrap();
        model.publish_vip(&key, id, flags, &t);
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
            let router: IpAddr = if v6 { "2001:db8:9::1" } else { "198.18.9.1" }
                .parse()
                .unwrap();
            f = icmp_error_about(router, &reply, 1280 + rng.below(200) as u32);
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

fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 if !f.is_empty() => {
                // Flip a byte in the headers, where it matters most.
                let i = rng.below(f.len().min(80));
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len().min(80));
                f[i] = rng.next() as u8;
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            _ => f.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
        }
    }
    f
}

#[test]
fn datapath_agrees_with_the_model() {
    if !require_root("datapath_agrees_with_the_model") {
        return;
    }
    let packets: usize = std::env::var("VIP_DIFF_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("VIP_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let limits = Limits {
        max_vips: 16,
        max_backends: 16 * HOSTS_PER_VIP,
        table_size: M,
        max_conns: MAX_CONNS,
    };
    let mut dp = Datapath::load(&limits, None).expect("loading vip_lb");
    let mut model = Model::new();
    configure(&mut dp, &mut model);
    // The backends' side: every tunnelled frame must come back out of vip_decap as the
    // client sent it.
    let mut decap = Decap::load(None).expect("loading vip_decap");
    for b in BACKENDS {
        decap.add_local(b.1.parse().unwrap()).unwrap();
    }
    let mut round_trips = 0u64;
    let mut rng = Rng(seed);
    let mut reasons_before = dp.reason_counts().unwrap();
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::<&'static str, u64>::new();
    let mut ran = 0usize;
    let mut n = 0usize;
    while ran < packets {
        n += 1;
        let base = well_formed(&mut rng);
        let input = if rng.chance(30) {
            mutate(&mut rng, base)
        } else {
            base
        };
        if input.len() < 14 {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL);
            // no driver delivers one either.
            continue;
        }
        ran += 1;
        if ran.is_multiple_of(REPUBLISH_EVERY) {
            rotate(&mut dp, &mut model, ran / REPUBLISH_EVERY);
        }
        let want = model.decide(&input);
        let (verdict, out) = run_xdp(dp.program_mut(), &input);
        let reasons_after = dp.reason_counts().unwrap();
        let moved: Vec<Reason> = reasons_after
            .iter()
            .zip(&reasons_before)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        reasons_before = reasons_after;
        let backend = (verdict == action::TX
            && matches!(want.reason, Reason::Forwarded | Reason::IcmpSteered))
        .then(|| u32::from(out[5]));
        *tally.entry(want.reason.name()).or_default() += 1;
        let mut problems = Vec::new();
        if verdict == action::ABORTED {
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
        if backend.is_some() && backend != want.backend {
            problems.push(format!("backend {backend:?} (model {:?})", want.backend));
        }
        if verdict == action::PASS && out != input {
            problems.push("a passed frame was modified".into());
        }
        // Headers the LB wrote must be right whatever the client sent: the ICMP answer
        // whole, a tunnel's outer IPv4 header (the inner packet is the client's).
        if verdict == action::TX && want.reason == Reason::IcmpTooBigSent {
            for e in checksum_errors(&out) {
                problems.push(format!("ICMP answer has a bad {e}"));
            }
        }
        if backend.is_some() && !want.dsr_l2 {
            let l3 = if out[12] == 0x81 { 18 } else { 14 };
            if out[l3 - 2..l3] == [0x08, 0x00] {
                let h = etherparse::Ipv4HeaderSlice::from_slice(&out[l3..]).map(|h| h.to_header());
                if h.as_ref()
                    .map(|h| h.calc_header_checksum() != h.header_checksum)
                    .unwrap_or(true)
                {
                    problems.push(format!("bad outer IPv4 header: {h:?}"));
                }
            }
        }
        if backend.is_some() && want.dsr_l2 && problems.is_empty() {
            let id = backend.unwrap_or_default() as u8;
            if out != with_macs(&input, [2, 0, 0, 0, 1, id], [2, 0, 0, 0, 0, 0xfe]) {
                problems.push(format!("dsr-l2 changed more than the MACs: {}", hex(&out)));
            }
        }
        if backend.is_some() && !want.dsr_l2 && problems.is_empty() {
            let (dv, dout) = run_xdp(decap.program_mut(), &out);
            round_trips += 1;
            if dv != action::PASS || dout.get(12..) != input.get(12..) || dout[..12] != out[..12] {
                problems.push(format!(
                    "vip_decap did not give back the client's packet: {} {}",
                    action::name(dv),
                    hex(&dout)
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "packet {n}: {}\n  input {}",
                problems.join("; "),
                hex(&input)
            ));
            if failures.len() >= 20 {
                break;
            }
        }
    }
    eprintln!(
        "differential: {ran} frames run ({n} generated), {round_trips} tunnelled frames \
         decapsulated back, reasons: {tally:?}"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Enough of every interesting fate was exercised for the agreement to mean something.
    for r in [
        "forwarded",
        "icmp_steered",
        "drop_malformed",
        "drop_fragment",
        "drop_no_backend",
        "icmp_too_big_sent",
        "pass_not_vip",
        "drop_ttl",
        "drop_ipv6_ext",
    ] {
        assert!(
            tally.get(r).copied().unwrap_or(0) >= 10.min(packets as u64 / 1000),
            "too few {r}: {tally:?}"
        );
    }
}
