//! Section 3: control-plane costs. Maglev table builds (the paper, NSDI 2016 §5.3: 1.8 ms
//! for M = 65537 and 22.9 ms for M = 655373 at N = 1000) and what publishing one backend
//! going down costs.

use std::{net::SocketAddr, time::Instant};

use vip_user::control::maglev::{self, MaglevBackend};

use super::{report::Report, stats::Trials};
use crate::model::maglev as maglev_reference;

/// Section title.
pub const SECTION: &str = "3. control plane";

/// `n` equal backends with distinct identities in 198.18.0.0/15.
pub fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            id: i,
            identity: SocketAddr::from(([198, 19, (i >> 8) as u8, i as u8], 8080)),
            weight: 1,
        })
        .collect()
}

/// Time to build one table, with the reference builder (the paper's loop as vip first
/// wrote it, `model::maglev::build_reference`) timed in the same trials, interleaved, so
/// the ratio between the two does not depend on the machine's load.
pub fn build_times(report: &mut Report, trials: usize) {
    for m in [65_537u32, 655_373] {
        for n in [10u32, 100, 1000] {
            let bs = backends(n);
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            for _ in 0..trials {
                let start = Instant::now();
                let table = maglev::build(&bs, m);
                fast.push(start.elapsed().as_secs_f64() * 1e3);
                let start = Instant::now();
                let old = maglev_reference::build_reference(&bs, m);
                reference.push(start.elapsed().as_secs_f64() * 1e3);
                assert!(table.len() == m as usize && table == old);
            }
            let (fast, reference) = (Trials::of(&fast), Trials::of(&reference));
            let paper = match (m, n) {
                (65_537, 1000) => Some(1.8),
                (655_373, 1000) => Some(22.9),
                _ => None,
            };
            let row = report.push(SECTION, format!("Maglev build M={m} N={n}"), "ms", fast);
            row.ratios.push((
                "the reference builder".into(),
                fast.median / reference.median,
            ));
            if let Some(p) = paper {
                row.ratios
                    .push(("the Maglev paper's figure".into(), fast.median / p));
            }
            row.note = format!(
                "vip_user::control::maglev::build, equal weights; the reference (the paper's \
                 loop as first written, same table) took {:.3} ms [{:.3}–{:.3}]{}",
                reference.median,
                reference.min,
                reference.max,
                paper.map_or(String::new(), |p| format!("; Maglev paper: {p} ms"))
            );
        }
    }
}

/// One backend of `n` goes down: rebuild the table and find the entries that differ
/// (exactly the map writes a publish that "writes only changed entries" makes).
pub fn backend_down(report: &mut Report, trials: usize) {
    for (m, n) in [(65_537u32, 100u32), (65_537, 1000), (655_373, 1000)] {
        let bs = backends(n);
        let before = maglev::build(&bs, m);
        let mut writes = 0usize;
        let t = Trials::measure(trials, || {
            let start = Instant::now();
            let mut after_bs = bs.clone();
            after_bs[(n / 2) as usize].weight = 0;
            let after = maglev::build(&after_bs, m);
            writes = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            start.elapsed().as_secs_f64() * 1e3
        });
        report
            .push(
                SECTION,
                format!("backend down: rebuild + diff, M={m} N={n}"),
                "ms",
                t,
            )
            .note = format!(
            "user-space part only (no map writes); {writes} table entries differ = map \
             writes to publish (+1 VIP entry replace)"
        );
        report.push(
            SECTION,
            format!("backend down: entries to write, M={m} N={n}"),
            "writes",
            Trials::exact(writes as f64 + 1.0),
        );
    }
}

/// One backend of `n` goes down, published for real through `vip_user::datapath` into a
/// loaded `vip_lb`: the backend's state write, the rebuild and the double-buffered
/// publish that writes only the entries that differ in the inactive half.
pub fn publish_backend_down(report: &mut Report, trials: usize) -> anyhow::Result<()> {
    use vip_common::{BACKEND_DOWN, BACKEND_UP, PROTO_TCP};
    use vip_user::datapath::{self, Datapath, Limits};

    for (m, n) in [(65_537u32, 100u32), (65_537, 1000), (655_373, 1000)] {
        let limits = Limits {
            max_vips: 2,
            max_backends: n,
            table_size: m,
            max_conns: 1024,
            maglev_pool: vip_common::maglev_pool_default(2, m) as u32,
        };
        let mut dp = Datapath::load(&limits, None)?;
        let bs = backends(n);
        for b in &bs {
            dp.set_backend(
                b.id,
                &datapath::keys::backend(b.identity.ip(), BACKEND_UP, 1, 0, 0),
            )?;
        }
        let key = datapath::keys::vip_key(SocketAddr::from(([198, 18, 100, 1], 80)), PROTO_TCP);
        let before = maglev::build(&bs, m);
        let down = (n / 2) as usize;
        let mut writes = Vec::new();
        let t = Trials::measure(trials, || {
            // Both halves hold the table with every backend up, as after any two
            // publishes of it.
            dp.set_backend(
                bs[down].id,
                &datapath::keys::backend(bs[down].identity.ip(), BACKEND_UP, 1, 0, 0),
            )
            .expect("backend write");
            dp.publish_vip(&key, 0, 0, m, &before, &[])
                .expect("publish");
            dp.publish_vip(&key, 0, 0, m, &before, &[])
                .expect("publish");
            let start = Instant::now();
            dp.set_backend(
                bs[down].id,
                &datapath::keys::backend(bs[down].identity.ip(), BACKEND_DOWN, 1, 0, 0),
            )
            .expect("backend write");
            let mut after_bs = bs.clone();
            after_bs[down].weight = 0;
            let after = maglev::build(&after_bs, m);
            let stats = dp.publish_vip(&key, 0, 0, m, &after, &[]).expect("publish");
            writes.push(stats.table_writes);
            start.elapsed().as_secs_f64() * 1e3
        });
        report
            .push(
                SECTION,
                format!("publish backend down, M={m} N={n}"),
                "ms",
                t,
            )
            .note = format!(
            "vip_user::datapath into a loaded vip_lb: 1 backend write + rebuild + {} Maglev \
             entry writes + 1 VIP entry replace",
            writes.first().copied().unwrap_or(0)
        );
    }
    Ok(())
}
