//! Section 4, flood survival: established TCP flows sending steadily while a flood of
//! ten times the connection table's capacity of packets from random sources goes
//! through, all through BPF_PROG_TEST_RUN on `vip_lb` as vipd loads it. The figure is
//! the fraction of established flows whose every packet reached the backend it had,
//! with and without one backend drained (state draining, Maglev table without it)
//! during the flood. A SYN flood pins nothing (a TCP flow is pinned by its handshake's
//! ACK); a flood of ACKs is pinned packet by packet (the fallback), on probation, and
//! may replace no established flow that sent within the last seven seconds or so.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, ensure};
use vip_common::{
    BACKEND_DRAINING, BACKEND_UP, CONFIG_F_ICMP_TOO_BIG, GlobalConfig, NEXTHOP_F_VALID, NextHop,
    PROTO_TCP,
};
use vip_user::{
    control::maglev::{self, MaglevBackend},
    datapath::{
        Datapath, Limits,
        keys::{addr_words, backend, vip_key},
    },
};

use super::{balance::SECTION, report::Report, stats::Trials};
use crate::{
    fixture::{action, run_xdp},
    packet::{L4, frame},
};

/// Maglev table size (prime).
const M: u32 = 65_537;
/// Backend ids 1..=BACKENDS, at 198.18.2.id.
const BACKENDS: u32 = 4;
/// The VIP.
const VIP: &str = "198.18.1.10:80";

/// What floods the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flood {
    /// TCP SYNs (not pinned).
    Syn,
    /// TCP ACKs of flows never seen (pinned on their first packet).
    Ack,
}

/// The VIP's Maglev table over backends `ids` (a drained backend has weight 0, as vipd
/// builds it).
fn table(ids: &[u32]) -> Vec<u32> {
    let bs: Vec<MaglevBackend> = ids
        .iter()
        .map(|&id| MaglevBackend {
            id,
            identity: SocketAddr::from(([198, 18, 2, id as u8], 80)),
            weight: 1,
        })
        .collect();
    maglev::build(&bs, M)
}

/// A datapath with one TCP VIP over `BACKENDS` backends and `max_conns` flows.
fn setup(max_conns: u32) -> Result<Datapath> {
    let limits = Limits {
        max_vips: 4,
        max_backends: 16,
        table_size: M,
        max_conns,
        maglev_pool: vip_common::maglev_pool_default(4, M) as u32,
    };
    let mut dp = Datapath::load(&limits, None).context("loading vip_lb")?;
    let (v6, _) = addr_words("2001:db8:ffff::".parse().expect("address"));
    dp.set_global(&GlobalConfig {
        flags: CONFIG_F_ICMP_TOO_BIG,
        mtu: 1500,
        tunnel_src_v4_be: u32::from_ne_bytes([198, 19, 0, 0]),
        tunnel_src_v4_hash_bits: 8,
        tunnel_src_v6: v6,
        ..GlobalConfig::default()
    })?;
    let ids: Vec<u32> = (1..=BACKENDS).collect();
    for &id in &ids {
        dp.set_backend(id, &backend_at(id, BACKEND_UP))?;
        dp.set_nexthop(
            id,
            &NextHop {
                dst_mac: [2, 0, 0, 0, 1, id as u8],
                src_mac: [2, 0, 0, 0, 0, 0xfe],
                ifindex: 0,
                flags: NEXTHOP_F_VALID,
            },
        )?;
    }
    publish(&mut dp, &ids)?;
    Ok(dp)
}

fn backend_at(id: u32, state: u8) -> vip_common::Backend {
    backend(
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, id as u8)),
        state,
        1,
        0,
        0,
    )
}

fn publish(dp: &mut Datapath, ids: &[u32]) -> Result<()> {
    let key = vip_key(VIP.parse().expect("VIP"), PROTO_TCP);
    dp.publish_vip(&key, 0, 0, M, &table(ids), &[])?;
    Ok(())
}

/// Sends one TCP packet and returns the backend it was tunnelled to (outer IPv4 dst).
fn send(dp: &mut Datapath, src: SocketAddr, syn: bool) -> Result<u8> {
    let f = frame(src, VIP.parse().expect("VIP"), L4::Tcp { syn }, b"");
    let (verdict, out) = run_xdp(dp.program_mut(), &f);
    ensure!(
        verdict == action::TX && out.len() >= 34,
        "{src}: not forwarded ({})",
        action::name(verdict)
    );
    Ok(out[33])
}

/// The `i`th established client (198.18.0.0/16).
fn client(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8)),
        40_000,
    )
}

/// The `i`th flood source: spread over 198.19.0.0/16 and all ports by a multiplicative
/// hash (distinct from every established client).
fn flood_source(i: u32) -> SocketAddr {
    let x = i.wrapping_mul(2_654_435_761);
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 19, (x >> 24) as u8, (x >> 16) as u8)),
        (x & 0xffff) as u16 | 1024,
    )
}

/// Flood packets between two rounds of the established flows (at most): each flow sends
/// a packet at least every 131,072 flood packets, well under a second of this bench.
const CHUNK: u64 = 1 << 17;

/// The fraction of `flows` established flows whose every packet reached the backend it
/// first had, while a flood of ten times the table's capacity went through, in chunks
/// with one packet of every established flow between two chunks ("sending steadily").
/// With `drain`, the backend of flow 0 is drained (state draining, Maglev table without
/// it) after the first chunk: during the flood.
fn survival(max_conns: u32, flows: u32, flood: Flood, drain: bool) -> Result<f64> {
    let mut dp = setup(max_conns)?;
    let capacity = Limits {
        max_conns,
        ..Limits::default()
    }
    .conn_capacity();
    // Each flow's handshake (SYN, then the ACK that pins it) and a first data packet.
    let mut first = Vec::with_capacity(flows as usize);
    for i in 0..flows {
        send(&mut dp, client(i), true)?;
        let b = send(&mut dp, client(i), false)?;
        first.push(b);
    }
    let mut kept = vec![true; flows as usize];
    let mut round = |dp: &mut Datapath| -> Result<()> {
        for (i, b) in (0..flows).zip(&first) {
            if send(dp, client(i), false)? != *b {
                kept[i as usize] = false;
            }
        }
        Ok(())
    };
    round(&mut dp)?;
    let total = capacity * 10;
    let chunk = capacity.min(CHUNK);
    let mut sent = 0u64;
    let mut chunks = 0;
    while sent < total {
        let n = chunk.min(total - sent);
        for i in sent..sent + n {
            send(&mut dp, flood_source(i as u32), flood == Flood::Syn)?;
        }
        sent += n;
        chunks += 1;
        if drain && chunks == 1 {
            let drained = u32::from(first[0]);
            dp.set_backend(drained, &backend_at(drained, BACKEND_DRAINING))?;
            let rest: Vec<u32> = (1..=BACKENDS).filter(|id| *id != drained).collect();
            publish(&mut dp, &rest)?;
        }
        round(&mut dp)?;
    }
    let kept = kept.iter().filter(|k| **k).count() as f64;
    Ok(kept / f64::from(flows))
}

/// The rows: 10,000 established flows in the default table and in two small ones
/// (`max_conns` 32,768 and 16,384: in the latter about 6% of the flows find their set of
/// four already held by four others and are never pinned, so a drain moves those of the
/// drained backend). `quick` leaves the default table out (its flood is ten million
/// packets).
pub fn run(report: &mut Report, quick: bool) -> Result<()> {
    let defaults = Limits::default().max_conns;
    let mut tables = vec![32_768u32, 16_384];
    if !quick {
        tables.insert(0, defaults);
    }
    let flows = 10_000u32;
    for max_conns in tables {
        for flood in [Flood::Syn, Flood::Ack] {
            for drain in [false, true] {
                let kept = survival(max_conns, flows, flood, drain)?;
                let what = match flood {
                    Flood::Syn => "SYN",
                    Flood::Ack => "ACK (fallback)",
                };
                let drained = if drain {
                    ", 1 of 4 drained during it"
                } else {
                    ""
                };
                report
                    .push(
                        SECTION,
                        format!(
                            "flood survival: {flows} flows, max_conns {max_conns}, 10x capacity \
                             of {what}{drained}"
                        ),
                        "fraction",
                        Trials::exact(kept),
                    )
                    .note = "established flows sending between flood chunks, every packet at \
                             its first backend; goal ≥ 0.99"
                    .into();
            }
        }
    }
    Ok(())
}
