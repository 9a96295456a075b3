//! Per-packet cost of `vip_lb` under `BPF_PROG_TEST_RUN`, against a parse-only floor
//! (`vip_floor`) measured in the same run. Ignored by default (timings belong in
//! benchmarks, not tests); run with
//! `cargo test -p vip-tests --release --test lb_cost_fixtures -- --ignored --nocapture`.
//!
//! Every call uses `repeat = 1` with a fresh copy of the frame, for every program alike:
//! with `repeat > 1` the kernel would re-run the program on the frame it has already
//! encapsulated. Scenarios are interleaved in rounds so drift hits all of them alike.
//! Each scenario also checks its verdict, so a number is never for the wrong path.

use std::{net::SocketAddr, path::PathBuf};

use aya::{
    EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use vip_common::{BACKEND_UP, GlobalConfig, NEXTHOP_F_VALID, NextHop, PROTO_TCP};
use vip_tests::{
    fixture::action,
    packet::{L4, frame, sa},
    privileged::require_root,
};
use vip_user::datapath::{
    Datapath, Limits,
    keys::{addr_words, backend, vip_key},
};

const M: u32 = 65537;
const CALLS_PER_ROUND: usize = 2_000;
const ROUNDS: usize = 25;

fn floor_object() -> Vec<u8> {
    let dir = option_env!("VIP_EBPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bpfel-unknown-none/release")
        });
    std::fs::read(dir.join("vip-floor")).unwrap_or_else(|e| {
        panic!(
            "reading {}/vip-floor: {e}; build it with `cargo xtask build`",
            dir.display()
        )
    })
}

/// Runs `frame` once; returns (verdict, nanoseconds the kernel measured).
fn once(xdp: &mut Xdp, frame: &[u8], out: &mut [u8]) -> (u32, u64) {
    let r = xdp
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos() as u64)
}

struct Scenario {
    name: &'static str,
    program: usize, // 0 = vip_lb, 1 = vip_floor
    frames: Vec<Vec<u8>>,
    next: usize,
    verdict: u32,
    samples: Vec<u64>,
}

#[test]
#[ignore = "measurement, not a test: run with --ignored --nocapture"]
fn per_packet_cost() {
    if !require_root("per_packet_cost") {
        return;
    }
    let limits = Limits {
        max_vips: 4,
        max_backends: 4 * BACKENDS_PER_VIP,
        table_size: M,
        max_conns: std::env::var("VIP_COST_CONNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1 << 20),
    };
    let mut dp = Datapath::load(&limits, None).expect("loading vip_lb");
    let (v6, _) = addr_words("2001:db8:ffff::".parse().unwrap());
    dp.set_global(&GlobalConfig {
        flags: 0,
        mtu: 1500,
        tunnel_src_v4_be: u32::from_ne_bytes([198, 19, 0, 0]),
        tunnel_src_v4_hash_bits: 8,
        tunnel_src_v6: v6,
        ..GlobalConfig::default()
    })
    .unwrap();
    let ids = add_backends(&mut dp, 0, 0);
    let table = vip_user::control::maglev::build(&ids, M);
    dp.publish_vip(&vip_key(sa("198.18.1.10:80"), PROTO_TCP), 0, 0, 0, &table)
        .unwrap();
    let v6_ids = add_backends(&mut dp, 1, 0);
    dp.publish_vip(
        &vip_key(sa("[2001:db8:1::10]:80"), PROTO_TCP),
        1,
        0,
        1,
        &vip_user::control::maglev::build(&v6_ids, M),
    )
    .unwrap();
    // The fib-lookup variant: a VIP whose backend has no pinned next hop.
    let fib_id = 2 * BACKENDS_PER_VIP;
    dp.set_backend(
        fib_id,
        &backend("198.18.2.40".parse().unwrap(), BACKEND_UP, 1, 2, 0),
    )
    .unwrap();
    dp.publish_vip(
        &vip_key(sa("198.18.1.11:80"), PROTO_TCP),
        2,
        0,
        2,
        &vec![fib_id; M as usize],
    )
    .unwrap();
    let stateless_ids = add_backends(&mut dp, 3, vip_common::VIP_F_NO_CONNTRACK);
    dp.publish_vip(
        &vip_key(sa("198.18.1.12:80"), PROTO_TCP),
        3,
        vip_common::VIP_F_NO_CONNTRACK,
        3,
        &vip_user::control::maglev::build(&stateless_ids, M),
    )
    .unwrap();

    let payload = [0u8; 64];
    let est4 = frame(
        sa("198.18.0.1:40000"),
        sa("198.18.1.10:80"),
        L4::Tcp { syn: false },
        &payload,
    );
    let est6 = frame(
        sa("[2001:db8::1]:40000"),
        sa("[2001:db8:1::10]:80"),
        L4::Tcp { syn: false },
        &payload,
    );
    let other = frame(
        sa("198.18.0.1:40000"),
        sa("198.18.1.200:80"),
        L4::Tcp { syn: false },
        &payload,
    );
    let fib = frame(
        sa("198.18.0.1:40000"),
        sa("198.18.1.11:80"),
        L4::Tcp { syn: false },
        &payload,
    );
    let flows_to = |vip: &str| -> Vec<Vec<u8>> {
        (0..CALLS_PER_ROUND * ROUNDS)
            .map(|i| {
                let src = format!(
                    "198.18.{}.{}:{}",
                    100 + i / 65000 % 50,
                    i / 250 % 250 + 1,
                    1024 + i % 250
                );
                frame(sa(&src), sa(vip), L4::Tcp { syn: true }, &payload)
            })
            .collect()
    };
    let new_flows = flows_to("198.18.1.10:80");
    let stateless_flows = flows_to("198.18.1.12:80");

    let mut floor_ebpf = EbpfLoader::new()
        .load(&floor_object())
        .expect("loading vip_floor");
    let floor: &mut Xdp = floor_ebpf
        .program_mut("vip_floor")
        .unwrap()
        .try_into()
        .unwrap();
    floor.load().expect("verifier accepts vip_floor");

    // Warm up the established flows (one conntrack entry each).
    let mut out = vec![0u8; 2048];
    for f in [&est4, &est6] {
        assert_eq!(once(dp.program_mut(), f, &mut out).0, action::TX);
    }

    let mut scenarios = vec![
        Scenario {
            name: "floor: parse only (ipv4 tcp)",
            program: 1,
            frames: vec![est4.clone()],
            next: 0,
            verdict: action::PASS,
            samples: vec![],
        },
        Scenario {
            name: "floor: parse only (ipv6 tcp)",
            program: 1,
            frames: vec![est6.clone()],
            next: 0,
            verdict: action::PASS,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: non-VIP ipv4 (VIP-address filter miss, PASS)",
            program: 0,
            frames: vec![other],
            next: 0,
            verdict: action::PASS,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: established ipv4 flow (conntrack hit, IPIP/4in6, TX)",
            program: 0,
            frames: vec![est4],
            next: 0,
            verdict: action::TX,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: established ipv6 flow (conntrack hit, encap, TX)",
            program: 0,
            frames: vec![est6],
            next: 0,
            verdict: action::TX,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: new ipv4 flow (miss, hash, Maglev, insert, TX)",
            program: 0,
            frames: new_flows,
            next: 0,
            verdict: action::TX,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: new ipv4 flow, VIP without conntrack (hash, Maglev, TX)",
            program: 0,
            frames: stateless_flows,
            next: 0,
            verdict: action::TX,
            samples: vec![],
        },
        Scenario {
            name: "vip_lb: established ipv4, no pinned next hop (bpf_fib_lookup)",
            program: 0,
            frames: vec![fib],
            next: 0,
            verdict: u32::MAX,
            samples: vec![],
        },
    ];
    for _ in 0..ROUNDS {
        for s in &mut scenarios {
            for _ in 0..CALLS_PER_ROUND {
                let f = &s.frames[s.next % s.frames.len()];
                s.next += 1;
                let xdp: &mut Xdp = if s.program == 0 {
                    dp.program_mut()
                } else {
                    &mut *floor
                };
                let (v, ns) = once(xdp, f, &mut out);
                if s.verdict != u32::MAX {
                    assert_eq!(action::name(v), action::name(s.verdict), "{}", s.name);
                }
                s.samples.push(ns);
            }
        }
    }
    let floor4 = mean(&scenarios[0].samples);
    eprintln!(
        "per-packet cost, BPF_PROG_TEST_RUN repeat=1, {} calls each, interleaved in {ROUNDS} rounds:",
        CALLS_PER_ROUND * ROUNDS
    );
    eprintln!(
        "{:<70} {:>8} {:>8} {:>8} {:>10}",
        "scenario", "mean ns", "p50 ns", "p90 ns", "- floor4"
    );
    for s in &mut scenarios {
        let m = mean(&s.samples);
        s.samples.sort_unstable();
        let p = |q: f64| s.samples[((s.samples.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{:<70} {:>8.1} {:>8} {:>8} {:>10.1}",
            s.name,
            m,
            p(0.5),
            p(0.9),
            m - floor4
        );
    }
    // Control-plane side: publishing a whole new table, and one that differs by one
    // backend's share (what a backend going down costs).
    let key = vip_key(sa("198.18.1.10:80"), PROTO_TCP);
    let other_table: Vec<u32> = table.iter().map(|id| (id + 1) % 32).collect();
    let fewer: Vec<vip_user::control::maglev::MaglevBackend> =
        ids.iter().copied().filter(|b| b.id != 5).collect();
    let fewer_table = vip_user::control::maglev::build(&fewer, M);
    for (name, t) in [
        ("publish: a wholly different table", &other_table),
        (
            "publish: the same table again (other half was different)",
            &table,
        ),
        ("publish: one backend of 32 removed", &fewer_table),
    ] {
        let start = std::time::Instant::now();
        let stats = dp.publish_vip(&key, 0, 0, 0, t).unwrap();
        eprintln!(
            "{name:<70} {:>8.1} ms, {} entries written",
            start.elapsed().as_secs_f64() * 1e3,
            stats.table_writes
        );
    }
    // For reference: the paths that leave the frame untouched can also be measured with
    // repeat > 1, which takes the per-call timer overhead out.
    for (name, xdp_is_lb, f) in [
        (
            "floor, repeat=100000 (ipv4)",
            false,
            &scenarios[0].frames[0],
        ),
        (
            "vip_lb non-VIP, repeat=100000",
            true,
            &scenarios[2].frames[0],
        ),
    ] {
        let xdp: &mut Xdp = if xdp_is_lb {
            dp.program_mut()
        } else {
            &mut *floor
        };
        let r = xdp
            .test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                repeat: 100_000,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        eprintln!("{name:<70} {:>8.1}", r.duration.as_nanos() as f64);
    }
}

/// Backend ids per VIP.
const BACKENDS_PER_VIP: u32 = 32;

/// Writes VIP `vip`'s 32 backends (ids `vip * 32 ..`, IPv4 and IPv6 alternately, with
/// pinned next hops) carrying `flags`; returns the Maglev input.
fn add_backends(
    dp: &mut Datapath,
    vip: u32,
    flags: u32,
) -> Vec<vip_user::control::maglev::MaglevBackend> {
    (0..BACKENDS_PER_VIP)
        .map(|i| {
            let id = vip * BACKENDS_PER_VIP + i;
            let addr: std::net::IpAddr = if i % 2 == 0 {
                format!("198.18.2.{}", i + 1).parse().unwrap()
            } else {
                format!("2001:db8:2::{}", i + 1).parse().unwrap()
            };
            dp.set_backend(id, &backend(addr, BACKEND_UP, 1, vip, flags))
                .unwrap();
            dp.set_nexthop(
                id,
                &NextHop {
                    dst_mac: [2, 0, 0, 0, 1, i as u8],
                    src_mac: [2, 0, 0, 0, 0, 0xfe],
                    ifindex: 0,
                    flags: NEXTHOP_F_VALID,
                },
            )
            .unwrap();
            vip_user::control::maglev::MaglevBackend {
                id,
                identity: SocketAddr::new(addr, 80),
                weight: 1,
            }
        })
        .collect()
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}
