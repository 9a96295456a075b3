//! Backend health checks: one task per (VIP, backend) with a check, counting consecutive
//! passes and failures and telling the owner only about transitions (after `rise`
//! passes or `fall` failures).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
    task::JoinHandle,
};

use super::metrics::Metrics;
use crate::{
    config::{CheckKind, HealthCheck, VipSpec},
    control::reconcile::BackendIdentity,
};

/// One backend to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Which backend of which VIP.
    pub ident: BackendIdentity,
    /// Where to probe (backend address, check port).
    pub probe: SocketAddr,
    /// The check.
    pub check: HealthCheck,
}

/// A backend changed health.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The backend.
    pub ident: BackendIdentity,
    /// New health.
    pub up: bool,
    /// The last probe's outcome, for the log.
    pub detail: String,
    /// The checker's first verdict, sent even when health did not change: until every
    /// backend of a VIP has one, its route is left as it is.
    pub first: bool,
}

/// The targets for a VIP set (backends of VIPs with a check other than `none`).
pub fn targets(vips: &[VipSpec]) -> Vec<Target> {
    let mut out = Vec::new();
    for v in vips {
        if matches!(v.health.kind, CheckKind::None) {
            continue;
        }
        for b in &v.backends {
            let port = v.health.port.unwrap_or(b.addr.port());
            out.push(Target {
                ident: (v.id, b.addr),
                probe: SocketAddr::new(b.addr.ip(), port),
                check: v.health.clone(),
            });
        }
    }
    out
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The backend did not answer in time.
    #[error("no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The check's timeout.
        timeout: Duration,
    },
    /// A socket operation failed.
    #[error("{step}: {source}")]
    Io {
        /// connect, send, read, bind or recv.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("not an HTTP answer: {first_line:?}")]
    NotHttp {
        /// The answer's first line.
        first_line: String,
    },
    /// The HTTP status is outside the expected range.
    #[error("HTTP {status}, expected {lo}-{hi}")]
    Status {
        /// The status received.
        status: u16,
        /// Lowest healthy status.
        lo: u16,
        /// Highest healthy status.
        hi: u16,
    },
}

/// `map_err` for a failed socket step.
fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> ProbeError {
    move |source| ProbeError::Io { step, source }
}

/// Runs one probe with the check's timeout; on success, what the backend answered.
pub async fn probe(t: &Target) -> Result<String, ProbeError> {
    match tokio::time::timeout(t.check.timeout, probe_inner(t)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            timeout: t.check.timeout,
        }),
    }
}

async fn probe_inner(t: &Target) -> Result<String, ProbeError> {
    match &t.check.kind {
        CheckKind::None => Ok("no check".into()),
        CheckKind::Tcp => TcpStream::connect(t.probe)
            .await
            .map(|_| "connected".into())
            .map_err(io("connect")),
        CheckKind::Http {
            path,
            host,
            expect_status: (lo, hi),
        } => {
            let mut s = TcpStream::connect(t.probe).await.map_err(io("connect"))?;
            let host = host.clone().unwrap_or_else(|| match t.probe {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            });
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: vipd-health\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.map_err(io("send"))?;
            let mut buf = vec![0u8; 256];
            let mut n = 0;
            while n < buf.len() && !buf[..n].contains(&b'\n') {
                let k = s.read(&mut buf[n..]).await.map_err(io("read"))?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| ProbeError::NotHttp {
                    first_line: line.lines().next().unwrap_or("").into(),
                })?;
            if (*lo..=*hi).contains(&status) {
                Ok(format!("HTTP {status}"))
            } else {
                Err(ProbeError::Status {
                    status,
                    lo: *lo,
                    hi: *hi,
                })
            }
        }
        CheckKind::Udp { payload } => {
            let local: SocketAddr = if t.probe.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = UdpSocket::bind(local).await.map_err(io("bind"))?;
            s.connect(t.probe).await.map_err(io("connect"))?;
            s.send(payload.as_bytes()).await.map_err(io("send"))?;
            let mut buf = [0u8; 512];
            s.recv(&mut buf)
                .await
                .map(|n| format!("{n} bytes back"))
                .map_err(io("recv"))
        }
    }
}

/// Keeps one checker task per target, restarting a task only when its check changed.
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: HashMap<BackendIdentity, (Target, JoinHandle<()>)>,
}

impl Supervisor {
    /// Starts, stops and restarts checkers so they match `targets`. `is_up` gives each
    /// new checker its starting health (what the owner currently believes).
    pub fn update(
        &mut self,
        targets: Vec<Target>,
        is_up: impl Fn(&BackendIdentity) -> bool,
        tx: &mpsc::UnboundedSender<Transition>,
        metrics: &Arc<Metrics>,
    ) {
        let wanted: HashMap<BackendIdentity, Target> =
            targets.into_iter().map(|t| (t.ident, t)).collect();
        self.tasks.retain(|ident, (t, h)| {
            let keep = wanted.get(ident) == Some(t);
            if !keep {
                h.abort();
                if !wanted.contains_key(ident) {
                    // The backend is gone (not just its check changed): so are its series.
                    metrics.forget(ident);
                }
            }
            keep
        });
        for (ident, t) in wanted {
            if self.tasks.contains_key(&ident) {
                continue;
            }
            let h = tokio::spawn(check_loop(
                t.clone(),
                is_up(&ident),
                tx.clone(),
                metrics.clone(),
            ));
            self.tasks.insert(ident, (t, h));
        }
    }

    /// Number of running checkers.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True if no checker runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for (_, h) in self.tasks.values() {
            h.abort();
        }
    }
}

/// Counts consecutive results and decides transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    /// Current health.
    pub up: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts at `up`.
    pub fn new(up: bool) -> Self {
        Hysteresis { up, streak: 0 }
    }

    /// Records one result; returns true if health flipped.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> bool {
        if passed == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let need = if self.up { fall } else { rise };
        if self.streak >= need {
            self.up = passed;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

async fn check_loop(
    t: Target,
    up: bool,
    tx: mpsc::UnboundedSender<Transition>,
    metrics: Arc<Metrics>,
) {
    let mut h = Hysteresis::new(up);
    let mut first = true;
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let start = Instant::now();
        let result = probe(&t).await;
        metrics.observe_check(&t.ident, start.elapsed(), result.is_ok());
        let passed = result.is_ok();
        if h.record(passed, t.check.rise, t.check.fall) || first {
            let detail = result.unwrap_or_else(|e| e.to_string());
            if tx
                .send(Transition {
                    ident: t.ident,
                    up: h.up,
                    detail,
                    first: std::mem::take(&mut first),
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// Shortest sensible check interval for tests and labs.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_fall_failures_and_rise_passes() {
        let mut h = Hysteresis::new(true);
        let seq = [false, false, true, false, false, false, true, true];
        let flips: Vec<bool> = seq.iter().map(|&p| h.record(p, 2, 3)).collect();
        assert_eq!(
            flips,
            [false, false, false, false, false, true, false, true]
        );
        assert!(h.up);
    }

    fn target(kind: CheckKind, probe: SocketAddr) -> Target {
        Target {
            ident: ("198.18.1.10:80".parse().unwrap(), probe),
            probe,
            check: HealthCheck {
                kind,
                port: None,
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 1,
            },
        }
    }

    #[tokio::test]
    async fn probes_pass_and_fail_for_the_right_reasons() {
        use tokio::net::TcpListener;
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = http.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    204
                } else {
                    503
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = udp.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await.unwrap();
                udp.send_to(&buf[..n], from).await.unwrap();
            }
        });
        // A port nobody listens on (bound then dropped).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let closed_udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let http_kind = |path: &str| CheckKind::Http {
            path: path.into(),
            host: None,
            expect_status: (200, 299),
        };
        let cases = [
            (
                "tcp open",
                target(CheckKind::Tcp, http_addr),
                Ok("connected"),
            ),
            ("tcp closed", target(CheckKind::Tcp, closed), Err("connect")),
            (
                "http 204 in range",
                target(http_kind("/ok"), http_addr),
                Ok("HTTP 204"),
            ),
            (
                "http 503 out of range",
                target(http_kind("/bad"), http_addr),
                Err("HTTP 503, expected 200-299"),
            ),
            (
                "udp echo",
                target(
                    CheckKind::Udp {
                        payload: "ping".into(),
                    },
                    udp_addr,
                ),
                Ok("4 bytes back"),
            ),
            (
                "udp closed port",
                target(
                    CheckKind::Udp {
                        payload: "ping".into(),
                    },
                    closed_udp,
                ),
                Err("recv"),
            ),
        ];
        for (name, t, want) in cases {
            let got = probe(&t).await;
            match (&got, want) {
                (Ok(m), Ok(w)) if m.contains(w) => {}
                (Err(e), Err(w)) if e.to_string().contains(w) => {}
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
