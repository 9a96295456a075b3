//! Section 4: balance and disruption of the Maglev tables. Flows are spread over the
//! table by a uniform hash, so the fraction of table entries that change backend is the
//! fraction of (new, untracked) flows that change backend.
//!
//! The Maglev paper (NSDI 2016, §3.4 and Fig. 12) trades some disruption for balance:
//! more than the ideal 1/N of entries move when a backend leaves, less so as M grows, and
//! it asks for M > 100·N to keep every backend's share within 1% — so N = 1000 with
//! M = 65537 is outside its recommendation, and shows it.

use vip_user::control::maglev::{self, MaglevBackend};

use super::{control::backends, report::Report, stats::Trials};

/// Section title.
pub const SECTION: &str = "4. balance and disruption";

/// Max/mean slots, and the fraction moved when one backend leaves or joins.
pub fn run(report: &mut Report) {
    for m in [65_537u32, 655_373] {
        for n in [10u32, 100, 1000] {
            let bs = backends(n);
            let table = maglev::build(&bs, m);
            let mut slots = vec![0u64; n as usize];
            for &id in &table {
                slots[id as usize] += 1;
            }
            let mean = f64::from(m) / f64::from(n);
            let max = *slots.iter().max().expect("n > 0") as f64;
            report
                .push(
                    SECTION,
                    format!("max/mean slots M={m} N={n}"),
                    "ratio",
                    Trials::exact(max / mean),
                )
                .note = "1.0 is perfect; Maglev guarantees ≤ ceil(M/N)/(M/N)".into();

            let removed: Vec<MaglevBackend> =
                bs.iter().copied().filter(|b| b.id != n / 2).collect();
            let moved = moved_fraction(&table, &maglev::build(&removed, m));
            let ideal = 1.0 / f64::from(n);
            let row = report.push(
                SECTION,
                format!("moved when 1 of {n} removed, M={m}"),
                "fraction",
                Trials::exact(moved),
            );
            row.ratios.push(("ideal 1/N".into(), moved / ideal));
            row.note = format!("ideal 1/N = {ideal:.4}");

            let mut added = bs.clone();
            added.push(backends(n + 1)[n as usize]);
            let moved = moved_fraction(&table, &maglev::build(&added, m));
            let ideal = 1.0 / f64::from(n + 1);
            let row = report.push(
                SECTION,
                format!("moved when 1 added to {n}, M={m}"),
                "fraction",
                Trials::exact(moved),
            );
            row.ratios.push(("ideal 1/(N+1)".into(), moved / ideal));
            row.note = format!("ideal 1/(N+1) = {ideal:.4}");
        }
    }
}

fn moved_fraction(before: &[u32], after: &[u32]) -> f64 {
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    moved as f64 / before.len() as f64
}
