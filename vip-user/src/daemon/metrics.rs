//! Prometheus metrics (OpenMetrics text) on the configured TCP address.
//!
//! Datapath counters live in BPF maps and only the owner reads them, so scrapes are not
//! answered from the maps: a [`refresh`] task asks the owner for a [`Status`] every
//! `[metrics] refresh` (and soon after a change), renders it off the async workers, and
//! every scrape is served that text. A scrape never waits for the owner, and forty of
//! them cost the owner nothing more than one. Health-check metrics are kept here as they
//! happen, and dropped with their backend. The listener caps its connections and backs
//! off when out of file descriptors ([`super::listener`]). Labels are VIP, backend and
//! reason only: never per flow.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};

use super::listener::{self, Slots};
use crate::{
    control::reconcile::BackendIdentity,
    protocol::{BackendState, HaRole, Status},
};

/// Labels of a per-VIP series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    /// `ADDR:PORT/PROTO`.
    pub vip: String,
}

/// Labels of a per-backend series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `ADDR:PORT/PROTO`.
    pub vip: String,
    /// `ADDR:PORT`.
    pub backend: String,
}

/// Labels of a health-check result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// VIP.
    pub vip: String,
    /// Backend.
    pub backend: String,
    /// pass | fail.
    pub result: String,
}

/// Labels of a route withdrawal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// health | drain | detached | removed.
    pub cause: String,
}

/// Labels of an HA group series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaLabels {
    /// The `[[group]]` name.
    pub group: String,
}

/// Labels of the HA role gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaRoleLabels {
    /// The `[[group]]` name.
    pub group: String,
    /// active | standby | fault.
    pub role: String,
}

/// Labels of a reason counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Reason name.
    pub reason: String,
}

/// Metrics that vipd records as things happen (the rest come from the maps per scrape).
#[derive(Debug)]
pub struct Metrics {
    check_duration: Family<BackendLabels, Histogram>,
    checks: Family<CheckLabels, Counter>,
    announced: Family<VipLabels, Gauge>,
    withdrawals: Family<CauseLabels, Counter>,
    /// Serialises rendering (families are shared).
    render_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            check_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 14))
            }),
            checks: Family::default(),
            announced: Family::default(),
            withdrawals: Family::default(),
            render_lock: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Records one health probe.
    pub fn observe_check(&self, ident: &BackendIdentity, took: Duration, passed: bool) {
        let vip = ident.0.to_string();
        let backend = ident.1.to_string();
        self.check_duration
            .get_or_create(&BackendLabels {
                vip: vip.clone(),
                backend: backend.clone(),
            })
            .observe(took.as_secs_f64());
        self.checks
            .get_or_create(&CheckLabels {
                vip,
                backend,
                result: if passed { "pass" } else { "fail" }.into(),
            })
            .inc();
    }

    /// Drops the health-check series of a backend that is no longer checked, so removed
    /// backends leave no stale series behind.
    pub fn forget(&self, ident: &BackendIdentity) {
        let (vip, backend) = (ident.0.to_string(), ident.1.to_string());
        self.check_duration.remove(&BackendLabels {
            vip: vip.clone(),
            backend: backend.clone(),
        });
        for result in ["pass", "fail"] {
            self.checks.remove(&CheckLabels {
                vip: vip.clone(),
                backend: backend.clone(),
                result: result.into(),
            });
        }
    }

    /// Which VIPs this node announces now (1) or not (0); VIPs not listed are dropped.
    pub fn set_announced(&self, vips: &[(String, bool)]) {
        self.announced.clear();
        for (vip, on) in vips {
            self.announced
                .get_or_create(&VipLabels { vip: vip.clone() })
                .set(i64::from(*on));
        }
    }

    /// Counts one route withdrawal.
    pub fn count_withdrawal(&self, cause: &str) {
        self.withdrawals
            .get_or_create(&CauseLabels {
                cause: cause.into(),
            })
            .inc();
    }

    /// The OpenMetrics text for a status snapshot.
    pub fn render(&self, s: &Status) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut reg = Registry::default();
        let vip_packets = Family::<VipLabels, Counter>::default();
        let vip_bytes = Family::<VipLabels, Counter>::default();
        let vip_new = Family::<VipLabels, Counter>::default();
        let vip_dropped = Family::<VipLabels, Counter>::default();
        let be_packets = Family::<BackendLabels, Counter>::default();
        let be_bytes = Family::<BackendLabels, Counter>::default();
        let be_new = Family::<BackendLabels, Counter>::default();
        let be_up = Family::<BackendLabels, Gauge>::default();
        let be_weight = Family::<BackendLabels, Gauge>::default();
        let be_slots = Family::<BackendLabels, Gauge>::default();
        let be_transitions = Family::<BackendLabels, Counter>::default();
        for v in &s.vips {
            let l = VipLabels {
                vip: v.vip.to_string(),
            };
            vip_packets.get_or_create(&l).inc_by(v.packets);
            vip_bytes.get_or_create(&l).inc_by(v.bytes);
            vip_new.get_or_create(&l).inc_by(v.new_flows);
            vip_dropped.get_or_create(&l).inc_by(v.dropped);
            for b in &v.backends {
                let l = BackendLabels {
                    vip: v.vip.to_string(),
                    backend: b.addr.to_string(),
                };
                be_packets.get_or_create(&l).inc_by(b.packets);
                be_bytes.get_or_create(&l).inc_by(b.bytes);
                be_new.get_or_create(&l).inc_by(b.new_flows);
                be_up
                    .get_or_create(&l)
                    .set(i64::from(b.state == BackendState::Up));
                let effective = if b.state == BackendState::Up {
                    b.weight
                } else {
                    0
                };
                be_weight.get_or_create(&l).set(i64::from(effective));
                be_slots.get_or_create(&l).set(i64::from(b.slots));
                be_transitions
                    .get_or_create(&l)
                    .inc_by(b.health_transitions);
            }
        }
        let conns = Gauge::<i64>::default();
        conns.set(s.conns as i64);
        let capacity = Gauge::<i64>::default();
        capacity.set(s.conn_capacity as i64);
        let reasons = Family::<ReasonLabels, Counter>::default();
        let drops = Family::<ReasonLabels, Counter>::default();
        for (r, n) in &s.reasons {
            let l = ReasonLabels { reason: r.clone() };
            reasons.get_or_create(&l).inc_by(*n);
            if r.starts_with("drop_") {
                drops.get_or_create(&l).inc_by(*n);
            }
        }
        reg.register("vip_packets", "Packets forwarded per VIP", vip_packets);
        reg.register(
            "vip_bytes",
            "Bytes forwarded per VIP (before encapsulation)",
            vip_bytes,
        );
        reg.register("vip_new_flows", "New flows hashed per VIP", vip_new);
        reg.register(
            "vip_dropped",
            "Packets to a VIP that were dropped",
            vip_dropped,
        );
        reg.register(
            "vip_backend_packets",
            "Packets forwarded per backend",
            be_packets,
        );
        reg.register("vip_backend_bytes", "Bytes forwarded per backend", be_bytes);
        reg.register(
            "vip_backend_new_flows",
            "New flows pinned per backend",
            be_new,
        );
        reg.register("vip_backend_up", "1 if the backend takes new flows", be_up);
        reg.register(
            "vip_backend_weight",
            "Effective weight (0 unless up)",
            be_weight,
        );
        reg.register(
            "vip_backend_maglev_slots",
            "Maglev table slots owned",
            be_slots,
        );
        reg.register(
            "vip_backend_health_transitions",
            "Health state changes",
            be_transitions,
        );
        reg.register(
            "vip_health_check_duration_seconds",
            "Duration of health probes",
            self.check_duration.clone(),
        );
        reg.register(
            "vip_health_checks",
            "Health probes by result",
            self.checks.clone(),
        );
        reg.register("vip_conntrack_entries", "Connection-table entries", conns);
        reg.register(
            "vip_conntrack_capacity",
            "Connection-table capacity",
            capacity,
        );
        reg.register(
            "vip_datapath_packets",
            "Packets by datapath reason",
            reasons,
        );
        reg.register("vip_drops", "Dropped packets by reason", drops);
        reg.register(
            "vip_announced",
            "1 if this node announces the VIP's route",
            self.announced.clone(),
        );
        reg.register(
            "vip_route_withdrawals",
            "VIP routes withdrawn, by cause",
            self.withdrawals.clone(),
        );
        let ha_role = Family::<HaRoleLabels, Gauge>::default();
        let ha_transitions = Family::<HaLabels, Counter>::default();
        let ha_garps = Family::<HaLabels, Counter>::default();
        for g in &s.ha {
            for role in [HaRole::Active, HaRole::Standby, HaRole::Fault] {
                ha_role
                    .get_or_create(&HaRoleLabels {
                        group: g.group.clone(),
                        role: role.name().to_string(),
                    })
                    .set(i64::from(g.role == role));
            }
            let l = HaLabels {
                group: g.group.clone(),
            };
            ha_transitions
                .get_or_create(&l)
                .inc_by(u64::from(g.transitions));
            ha_garps.get_or_create(&l).inc_by(g.garps_sent);
        }
        reg.register(
            "vip_ha_role",
            "1 for the HA group's role on this node (active, standby, fault)",
            ha_role,
        );
        reg.register(
            "vip_ha_transitions",
            "Role changes of the HA group (kept in the pinned map)",
            ha_transitions,
        );
        reg.register(
            "vip_ha_announcements_sent",
            "Gratuitous ARPs and unsolicited neighbour advertisements sent since vipd started",
            ha_garps,
        );
        let mut out = String::new();
        encode(&mut out, &reg).expect("writing to a String cannot fail");
        out
    }
}

/// The text scrapes are served: `None` until the first snapshot is rendered.
pub type Exposition = watch::Receiver<Option<Arc<String>>>;

/// The shortest time between two snapshots, however often they are asked for.
pub const MIN_REFRESH: Duration = Duration::from_millis(100);

/// Keeps the exposition fresh: every `every`, or sooner when `poke`d (after a change, at
/// most every [`MIN_REFRESH`]), asks `status` for a snapshot, renders it off the async
/// workers and publishes the text on `out`. Scrapes read the last text: none waits for
/// the owner, and however many there are, the owner makes one snapshot per refresh.
/// Returns when `status` answers `None` (vipd is stopping).
pub async fn refresh<F, Fut>(
    metrics: Arc<Metrics>,
    status: F,
    every: Duration,
    poke: Arc<Notify>,
    out: watch::Sender<Option<Arc<String>>>,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Status>>,
{
    loop {
        let Some(st) = status().await else { return };
        let m = metrics.clone();
        let Ok(text) = tokio::task::spawn_blocking(move || m.render(&st)).await else {
            return;
        };
        out.send_replace(Some(Arc::new(text)));
        tokio::time::sleep(MIN_REFRESH).await;
        let _ = tokio::time::timeout(every.saturating_sub(MIN_REFRESH), poke.notified()).await;
    }
}

/// How long a scraper has to send its request, and vipd to write the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` (any path, in fact) on `listener` from `exposition`, at most
/// `max_connections` at once (more are answered 503 at once and closed), backing off when
/// out of file descriptors.
pub async fn serve(listener: TcpListener, exposition: Exposition, max_connections: usize) {
    let slots = Slots::new(max_connections);
    loop {
        let (s, _) = listener::accept("metrics", || listener.accept()).await;
        let Some(slot) = slots.take() else {
            let _ = s.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let _slot = slot;
            answer(s, exposition).await;
        });
    }
}

/// Reads a scrape's request head (bounded in size and time) and writes the exposition.
async fn answer(mut s: TcpStream, exposition: Exposition) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() || head.is_empty() {
        return;
    }
    let text = exposition.borrow().clone();
    let (code, body) = match &text {
        Some(t) => ("200 OK", t.as_str()),
        None => ("503 Service Unavailable", "vipd is starting\n"),
    };
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await
    })
    .await;
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Config, Protocol},
        control::owner::Owner,
        datapath::{fake::FakeMaps, keys::flow_key},
    };

    #[test]
    fn a_scrape_has_per_vip_and_backend_series_and_no_per_flow_labels() {
        let cfg = Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 251\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[[vip.backend]]\naddress = \"198.18.2.2\"\nstate = \"drain\"\n",
            "t",
        )
        .unwrap();
        let mut o = Owner::start(&cfg, FakeMaps::default(), None).unwrap();
        let src = "198.18.0.1:1".parse().unwrap();
        let dst = "198.18.1.10:80".parse().unwrap();
        o.tables_mut().conns.insert(
            flow_key(src, dst, Protocol::Tcp.number()),
            vip_common::ConnState::default(),
        );
        let m = Metrics::default();
        let text = m.render(&o.status());
        for want in [
            "vip_packets_total{vip=\"198.18.1.10:80/tcp\"} 0",
            "vip_backend_up{vip=\"198.18.1.10:80/tcp\",backend=\"198.18.2.1:80\"} 1",
            "vip_backend_up{vip=\"198.18.1.10:80/tcp\",backend=\"198.18.2.2:80\"} 0",
            "vip_backend_weight{vip=\"198.18.1.10:80/tcp\",backend=\"198.18.2.1:80\"} 1",
            "vip_backend_maglev_slots{vip=\"198.18.1.10:80/tcp\",backend=\"198.18.2.1:80\"} 251",
            "vip_conntrack_entries 1",
            "vip_conntrack_capacity 1048576",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("198.18.0.1"),
            "a client address leaked into a label"
        );
    }

    #[test]
    fn access_list_drops_are_exported_as_a_drop_reason() {
        let cfg = Config::parse("", "t").unwrap();
        let o = Owner::start(&cfg, FakeMaps::default(), None).unwrap();
        let mut s = o.status();
        s.reasons = vip_common::Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    u64::from(*r == vip_common::Reason::DropAcl) * 7,
                )
            })
            .collect();
        let text = Metrics::default().render(&s);
        for want in [
            "vip_datapath_packets_total{reason=\"drop_acl\"} 7",
            "vip_drops_total{reason=\"drop_acl\"} 7",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn announcement_gauges_follow_the_last_plan_and_withdrawals_count_by_cause() {
        let m = Metrics::default();
        m.set_announced(&[
            ("198.18.1.10:80/tcp".into(), true),
            ("198.18.1.11:80/tcp".into(), false),
        ]);
        m.count_withdrawal("health");
        m.count_withdrawal("health");
        m.count_withdrawal("drain");
        m.set_announced(&[("198.18.1.10:80/tcp".into(), false)]);
        let cfg = Config::parse("", "t").unwrap();
        let o = Owner::start(&cfg, FakeMaps::default(), None).unwrap();
        let text = m.render(&o.status());
        for want in [
            "vip_announced{vip=\"198.18.1.10:80/tcp\"} 0",
            "vip_route_withdrawals_total{cause=\"health\"} 2",
            "vip_route_withdrawals_total{cause=\"drain\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("198.18.1.11"),
            "a VIP no longer planned keeps no series"
        );
    }
}
