//! Prometheus metrics (OpenMetrics text) on the configured TCP address.
//!
//! Datapath counters live in BPF maps, so each scrape asks the owner for a [`Status`]
//! and renders it; health-check metrics are kept here as they happen. Labels are VIP,
//! backend and reason only: never per flow.

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
    net::TcpListener,
};

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

/// Serves `GET /metrics` (any path, in fact) on `addr`; `status` fetches a snapshot.
pub async fn serve<F, Fut>(listener: TcpListener, metrics: Arc<Metrics>, status: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<Status>> + Send,
{
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let (code, body) = match status().await {
                Some(st) => ("200 OK", metrics.render(&st)),
                None => ("503 Service Unavailable", "vipd is shutting down\n".into()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
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
}
