//! Figures for the README: Maglev build time (M = 65537 and 655373, 1000 backends, as in
//! the Maglev paper's table) and the map writes one backend going down costs through the
//! real owner → datapath path. Run as root, in release mode:
//! `cargo run --release -p vip-user --example maglev_cost`.

use std::{net::SocketAddr, time::Instant};

use vip_user::{
    config::Config,
    control::{
        maglev::{self, MaglevBackend},
        owner::Owner,
    },
    datapath::{Datapath, tables::limits},
};

fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            id: i,
            identity: SocketAddr::from(([198, 18, 2 + (i / 250) as u8, (i % 250) as u8 + 1], 80)),
            weight: 1,
        })
        .collect()
}

fn main() {
    for m in [65_537u32, 655_373] {
        let b = backends(1000);
        let _ = maglev::build(&b, m); // warm up
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let table = maglev::build(&b, m);
            times.push(t.elapsed());
            assert_eq!(table.len(), m as usize);
        }
        times.sort();
        println!(
            "maglev build M={m} N=1000: median {:.2} ms (min {:.2} ms, max {:.2} ms, 7 runs)",
            times[3].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[6].as_secs_f64() * 1e3
        );
    }

    for (n, m) in [
        (1000u32, 65_537u32),
        (1000, 655_373),
        (100, 65_537),
        (10, 65_537),
    ] {
        let all = backends(n);
        let t0 = maglev::build(&all, m);
        let without: Vec<_> = all.iter().filter(|b| b.id != 8).copied().collect();
        let t1 = maglev::build(&without, m);
        let owned = t0.iter().filter(|&&x| x == 8).count();
        let moved = t0.iter().zip(&t1).filter(|(a, b)| a != b).count();
        println!(
            "maglev N={n} M={m}: removing one backend (owning {owned} slots) changes {moved} entries"
        );
    }
    for (n, m) in [(1000u32, 65_537u32), (100, 65_537), (10, 65_537)] {
        let mut text = format!(
            "[limits]\nmax_vips = 2\nmax_backends = 1024\ntable_size = {m}\nmax_conns = 1024\n[[vip]]\naddress = \"198.18.1.10:80\"\n"
        );
        for b in backends(n) {
            text += &format!("[[vip.backend]]\naddress = \"{}\"\n", b.identity);
        }
        let cfg = Config::parse(&text, "bench").unwrap();
        let dp = match Datapath::load(&limits(&cfg.limits), None) {
            Ok(d) => d,
            Err(e) => {
                println!("map-write figures need root (loading vip_lb failed: {e})");
                return;
            }
        };
        let t = Instant::now();
        let mut owner = Owner::start(&cfg, dp, None).unwrap();
        let initial = t.elapsed();
        let ident = (cfg.vips[0].id, cfg.vips[0].backends[7].addr);
        let mut line = format!(
            "N={n} M={m}: initial apply {} writes in {:.1} ms",
            owner.last_stats.map_writes(),
            initial.as_secs_f64() * 1e3
        );
        for round in 0..3 {
            let t = Instant::now();
            let down = owner.set_health(ident, false).unwrap();
            let took = t.elapsed();
            let up = owner.set_health(ident, true).unwrap();
            line += &format!(
                "; down #{}: {} writes ({} table + VIP entry + {} backend) in {:.1} ms, up: {} writes",
                round + 1,
                down.map_writes(),
                down.publish_writes - 1,
                down.backend_writes,
                took.as_secs_f64() * 1e3,
                up.map_writes()
            );
        }
        // A different backend going down now: the inactive half holds the table from two
        // changes ago, so the writes are this backend's slots plus the last change's.
        let other = (cfg.vips[0].id, cfg.vips[0].backends[8].addr);
        let owned = owner.status().vips[0].backends[8].slots;
        let d = owner.set_health(other, false).unwrap();
        line += &format!(
            "; another backend (owning {owned} slots) down: {} writes ({} table)",
            d.map_writes(),
            d.publish_writes - 1
        );
        println!("{line}");
    }
}
