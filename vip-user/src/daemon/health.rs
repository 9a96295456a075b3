//! Backend health checks: one task per (VIP, backend) with a check, counting consecutive
//! passes and failures and telling the owner only about transitions (after `rise`
//! passes or `fall` failures).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
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

/// The targets for a VIP set: every backend whose check (the VIP's, with the backend's
/// own keys merged over it) is other than `none`.
pub fn targets(vips: &[VipSpec]) -> Vec<Target> {
    let mut out = Vec::new();
    for v in vips {
        for b in &v.backends {
            let check = v.check_of(b);
            if matches!(check.kind, CheckKind::None) {
                continue;
            }
            let port = check.port.unwrap_or(b.addr.port());
            out.push(Target {
                ident: (v.id, b.addr),
                probe: SocketAddr::new(b.addr.ip(), port),
                check,
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
    /// The TLS handshake failed, or the backend's certificate was refused.
    #[error("TLS handshake with {server_name}: {source}: {fix}")]
    Tls {
        /// The name sent (SNI) and verified.
        server_name: String,
        /// rustls' reason.
        #[source]
        source: std::io::Error,
        /// What to set or change.
        fix: &'static str,
    },
    /// The check's extra CA cannot be used.
    #[error(transparent)]
    TlsCa {
        /// The file and why.
        #[from]
        source: TlsCaError,
    },
    /// The name to verify is neither a DNS name nor an IP address.
    #[error(
        "{name:?} cannot be a TLS server name: set tls_server_name to the name the backend's certificate holds"
    )]
    TlsName {
        /// The name (from `tls_server_name` or `host`).
        name: String,
    },
}

/// An https check's `tls_ca` that cannot be used (kept to repeat at every probe: the
/// file is read once, when the checker starts).
#[derive(Clone, Debug, thiserror::Error)]
#[error("health.tls_ca {}: {reason}: give the path of a readable PEM file holding the CA certificate (and restart the check, e.g. with `vipctl reload`)", path.display())]
pub struct TlsCaError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// `map_err` for a failed socket step.
fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> ProbeError {
    move |source| ProbeError::Io { step, source }
}

/// Runs one probe with the check's timeout; on success, what the backend answered.
pub async fn probe(t: &Target) -> Result<String, ProbeError> {
    let tls = tls_setup(&t.check.kind)?;
    probe_with(t, tls.as_ref()).await
}

/// [`probe`] with the TLS client setup already built (a checker builds it once).
async fn probe_with(t: &Target, tls: Option<&Arc<ClientConfig>>) -> Result<String, ProbeError> {
    match tokio::time::timeout(t.check.timeout, probe_inner(t, tls)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            timeout: t.check.timeout,
        }),
    }
}

async fn probe_inner(t: &Target, tls: Option<&Arc<ClientConfig>>) -> Result<String, ProbeError> {
    match &t.check.kind {
        CheckKind::None => Ok("no check".into()),
        CheckKind::Tcp => TcpStream::connect(t.probe)
            .await
            .map(|_| "connected".into())
            .map_err(io("connect")),
        CheckKind::Http {
            path,
            host,
            expect_status,
        } => {
            let s = TcpStream::connect(t.probe).await.map_err(io("connect"))?;
            http_get(s, path, host.as_deref(), t.probe, *expect_status).await
        }
        CheckKind::Https {
            path,
            host,
            expect_status,
            tls_server_name,
            ..
        } => {
            let name = match tls_server_name
                .as_deref()
                .or(host.as_deref().map(host_name))
            {
                Some(n) => ServerName::try_from(n.to_string())
                    .map_err(|_| ProbeError::TlsName { name: n.into() })?,
                None => ServerName::IpAddress(t.probe.ip().into()),
            };
            let config = match tls {
                Some(c) => c.clone(),
                None => tls_setup(&t.check.kind)?.expect("an https check has a TLS setup"),
            };
            let s = TcpStream::connect(t.probe).await.map_err(io("connect"))?;
            let server_name = name.to_str().into_owned();
            let s = tokio_rustls::TlsConnector::from(config)
                .connect(name, s)
                .await
                .map_err(|source| ProbeError::Tls {
                    server_name,
                    fix: tls_fix(&source),
                    source,
                })?;
            http_get(s, path, host.as_deref(), t.probe, *expect_status).await
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

/// One HTTP/1.0 GET over `s` (TCP or TLS); passes if the status is in `lo..=hi`.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
    host: Option<&str>,
    probe: SocketAddr,
    (lo, hi): (u16, u16),
) -> Result<String, ProbeError> {
    let host = host.map_or_else(
        || match probe {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        },
        str::to_string,
    );
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
    if (lo..=hi).contains(&status) {
        Ok(format!("HTTP {status}"))
    } else {
        Err(ProbeError::Status { status, lo, hi })
    }
}

/// A Host header's name without its port (`www.example.com:8443` -> `www.example.com`,
/// `[2001:db8::1]:443` -> `2001:db8::1`): the default TLS server name.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
        _ => host,
    }
}

/// What to change when a handshake fails, from rustls' reason.
fn tls_fix(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            "the certificate does not hold this name: set tls_server_name to a name it holds (it defaults to host, else the backend's IP)"
        }
        Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
            "the certificate's issuer is not trusted: set tls_ca to the PEM file of its CA, or tls_verify = false to accept any certificate (e.g. a self-signed backend)"
        }
        Some(E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        )) => {
            "the certificate is expired or not yet valid: renew it on the backend (or check this host's clock)"
        }
        Some(E::InvalidCertificate(_)) => {
            "the certificate was refused: fix it on the backend, or set tls_ca to its CA, or tls_verify = false"
        }
        _ => {
            "the backend did not complete a TLS handshake: check that it serves TLS on the check's port (health.port)"
        }
    }
}

/// The system store's trust roots, read once: vipd reads them at its first https check,
/// so a CA added to the store later needs a restart (or `tls_ca`).
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's trusted certificates for https checks");
        }
        let mut roots = RootCertStore::empty();
        let (_, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "system certificates https checks cannot use");
        }
        roots
    })
}

/// The TLS client setup of an https check (`None` for other kinds).
pub fn tls_setup(kind: &CheckKind) -> Result<Option<Arc<ClientConfig>>, TlsCaError> {
    let CheckKind::Https {
        tls_verify, tls_ca, ..
    } = kind
    else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions");
    let config = if *tls_verify {
        let mut roots = native_roots().clone();
        if let Some(path) = tls_ca {
            add_ca(&mut roots, path)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

fn add_ca(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsCaError> {
    let fail = |reason: String| TlsCaError {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE in it".into()));
    }
    for c in certs {
        roots.add(c).map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// `tls_verify = false`: any certificate for any name is accepted (the handshake's own
/// signatures are still checked, so the session is with the key the certificate holds).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
    let tls = tls_setup(&t.check.kind);
    let mut first = true;
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let start = Instant::now();
        let result = match &tls {
            Ok(tls) => probe_with(&t, tls.as_ref()).await,
            Err(e) => Err(e.clone().into()),
        };
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

    /// A TLS server on 127.0.0.1 with `cert`, answering `GET /ok` 200 and anything else
    /// 503.
    async fn tls_server(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> SocketAddr {
        use rustls::pki_types::PrivateKeyDer;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: fine.
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 512];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let status = if buf[..n].starts_with(b"GET /ok ") {
                        200
                    } else {
                        503
                    };
                    let _ = s
                        .write_all(format!("HTTP/1.1 {status} X\r\n\r\n").as_bytes())
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn https_probes_verify_the_certificate_unless_told_not_to() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        // A CA, and a backend certificate it signs for 127.0.0.1 and backend.test.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "backend.test".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let signed = tls_server(&leaf, &leaf_key).await;
        // A backend with a self-signed certificate (its own issuer, trusted by nobody).
        let own_key = KeyPair::generate().unwrap();
        let own = CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .self_signed(&own_key)
            .unwrap();
        let self_signed = tls_server(&own, &own_key).await;
        let ca_file =
            std::env::temp_dir().join(format!("vip-health-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let https = |path: &str, host: Option<&str>, name: Option<&str>, verify, ca: bool| {
            CheckKind::Https {
                path: path.into(),
                host: host.map(Into::into),
                expect_status: (200, 299),
                tls_server_name: name.map(Into::into),
                tls_verify: verify,
                tls_ca: ca.then(|| ca_file.clone()),
            }
        };
        let cases = [
            (
                "verified by IP with tls_ca",
                target(https("/ok", None, None, true, true), signed),
                Ok("HTTP 200"),
            ),
            (
                "verified by the host's name (port dropped)",
                target(
                    https("/ok", Some("backend.test:8443"), None, true, true),
                    signed,
                ),
                Ok("HTTP 200"),
            ),
            (
                "a name the certificate does not hold",
                target(https("/ok", None, Some("other.test"), true, true), signed),
                Err("TLS handshake with other.test: invalid peer certificate"),
            ),
            (
                "the fix for a wrong name",
                target(https("/ok", None, Some("other.test"), true, true), signed),
                Err("set tls_server_name to a name it holds"),
            ),
            (
                "a CA not given: refused",
                target(https("/ok", None, None, true, false), signed),
                Err("set tls_ca to the PEM file of its CA, or tls_verify = false"),
            ),
            (
                "self-signed: refused by default",
                target(https("/ok", None, None, true, false), self_signed),
                Err("TLS handshake with 127.0.0.1: invalid peer certificate"),
            ),
            (
                "self-signed: accepted with tls_verify = false",
                target(https("/ok", None, None, false, false), self_signed),
                Ok("HTTP 200"),
            ),
            (
                "any name with tls_verify = false",
                target(https("/ok", None, Some("other.test"), false, false), signed),
                Ok("HTTP 200"),
            ),
            (
                "verified, but the status is out of range",
                target(https("/bad", None, None, true, true), signed),
                Err("HTTP 503, expected 200-299"),
            ),
            (
                "plain TCP where TLS is expected",
                target(
                    https("/ok", None, None, false, false),
                    plain_http_server().await,
                ),
                Err("check that it serves TLS on the check's port"),
            ),
        ];
        let mut failures = Vec::new();
        for (name, t, want) in cases {
            let got = probe(&t).await;
            match (&got, want) {
                (Ok(m), Ok(w)) if m.contains(w) => {}
                (Err(e), Err(w)) if e.to_string().contains(w) => {}
                _ => failures.push(format!(
                    "{name}: got {:?}, want {want:?}",
                    got.map_err(|e| e.to_string())
                )),
            }
        }
        let missing = target(
            CheckKind::Https {
                path: "/ok".into(),
                host: None,
                expect_status: (200, 299),
                tls_server_name: None,
                tls_verify: true,
                tls_ca: Some("/nonexistent/ca.pem".into()),
            },
            signed,
        );
        match probe(&missing).await {
            Err(e) if e.to_string().contains("health.tls_ca /nonexistent/ca.pem") => {}
            got => failures.push(format!("missing CA file: got {got:?}")),
        }
        let _ = std::fs::remove_file(&ca_file);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A plain TCP server that answers any request 200 (not TLS).
    async fn plain_http_server() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        addr
    }

    #[test]
    fn the_default_server_name_is_the_host_without_its_port() {
        for (host, name) in [
            ("www.example.com", "www.example.com"),
            ("www.example.com:8443", "www.example.com"),
            ("198.18.2.1:443", "198.18.2.1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
        ] {
            assert_eq!(host_name(host), name, "{host}");
        }
    }
}
