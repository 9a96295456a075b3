//! The `vipd` configuration file (TOML): parsing, defaults and whole-config validation.
//!
//! Parsing is strict (unknown keys are errors naming the line); validation collects every
//! problem in the file at once and says, for each, where it is and what to change. The
//! result is a [`Config`] of plain `std::net` types that the rest of the control plane
//! trusts without checking again.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub mod acl;
mod address;
mod names;

pub use acl::{Acl, AclDecision, AclEntry, Prefix};
pub use address::{AddressError, parse_addr_port};
pub use names::UnknownName;
use names::named_enum;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key or value the format does not allow.
    #[error("{path}: {message}")]
    Parse {
        /// The file (or `<input>`).
        path: String,
        /// toml's message: line, column, the offending text and what was expected.
        message: String,
    },
    /// The file parsed but describes something vipd cannot run.
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `<input>`).
        path: String,
        /// Every problem found, each naming its place and the fix.
        problems: Vec<String>,
    },
}

named_enum! {
    /// Protocol of a VIP.
    #[derive(Hash, PartialOrd, Ord)]
    pub enum Protocol: "protocol" {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => vip_common::PROTO_TCP,
            Protocol::Udp => vip_common::PROTO_UDP,
        }
    }
}

named_enum! {
    /// How packets reach the backends of a VIP.
    #[derive(Default)]
    pub enum Mode: "mode" {
        /// IPIP / IP6IP6 / 4-in-6 encapsulation (backends run `vipd decap`).
        #[default]
        Tunnel = "tunnel",
        /// Rewrite the destination MAC (backends on the same L2, VIP on their loopback).
        DsrL2 = "dsr-l2",
    }
}

named_enum! {
    /// What the flow hash covers.
    #[derive(Default)]
    pub enum HashMode: "hash" {
        /// The 5-tuple (default).
        #[default]
        FiveTuple = "5tuple",
        /// The source address only (client affinity).
        Src = "src",
    }
}

named_enum! {
    /// Administrative state of a backend, set by the operator and independent of health.
    #[derive(Default)]
    pub enum AdminState: "backend state" {
        /// In service (if healthy).
        #[default]
        Ready = "ready",
        /// No new flows; existing flows stay (weight 0).
        Drain = "drain",
        /// Out of service: no flows at all, existing flows re-hash.
        Maint = "maint",
    }
}

named_enum! {
    /// XDP attach mode.
    #[derive(Default)]
    pub enum XdpMode: "XDP mode" {
        /// Driver mode; fails if the driver has no XDP support.
        Native = "native",
        /// Generic (skb) mode: works everywhere, slower.
        Generic = "generic",
        /// Native where the driver supports it, otherwise generic.
        #[default]
        Auto = "auto",
    }
}

/// Identity of a VIP: address, port (0 = all ports) and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VipId {
    /// VIP address.
    pub addr: IpAddr,
    /// Destination port; 0 means every port ("all ports" VIP).
    pub port: u16,
    /// Protocol.
    pub proto: Protocol,
}

impl fmt::Display for VipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = if self.port == 0 {
            "*".to_string()
        } else {
            self.port.to_string()
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{port}/{}", self.proto),
            IpAddr::V6(a) => write!(f, "[{a}]:{port}/{}", self.proto),
        }
    }
}

named_enum! {
    /// What a health check probes (the `type` key of `[vip.health]`).
    pub enum CheckType: "health-check type" {
        /// No check: always healthy.
        None = "none",
        /// TCP connect.
        Tcp = "tcp",
        /// HTTP GET.
        Http = "http",
        /// HTTP GET over TLS.
        Https = "https",
        /// A UDP datagram gets an answer.
        Udp = "udp",
    }
}

/// Health check of a VIP's backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is checked.
    pub kind: CheckKind,
    /// Port to probe; `None` = the backend's port.
    pub port: Option<u16>,
    /// Time between checks.
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Time a check may take.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

/// The kind of health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// No check: the backend is always healthy.
    None,
    /// TCP connect succeeds.
    Tcp,
    /// HTTP GET answered with a status in `expect_status`.
    Http {
        /// Request path.
        path: String,
        /// Host header (default: the backend address).
        host: Option<String>,
        /// Inclusive status range that counts as healthy.
        expect_status: (u16, u16),
    },
    /// HTTP GET over TLS (rustls), answered with a status in `expect_status`.
    Https {
        /// Request path.
        path: String,
        /// Host header (default: the backend address).
        host: Option<String>,
        /// Inclusive status range that counts as healthy.
        expect_status: (u16, u16),
        /// SNI and the name the certificate must hold (default: `host` without its port
        /// if set, else the backend's IP address).
        tls_server_name: Option<String>,
        /// Verify the certificate chain and name; false accepts any certificate.
        tls_verify: bool,
        /// A CA (PEM file) trusted besides the system store.
        tls_ca: Option<PathBuf>,
    },
    /// A UDP datagram gets any answer (an ICMP port-unreachable fails it).
    Udp {
        /// Payload to send.
        payload: String,
    },
}

impl CheckKind {
    /// The `type` word of this kind.
    pub fn check_type(&self) -> CheckType {
        match self {
            CheckKind::None => CheckType::None,
            CheckKind::Tcp => CheckType::Tcp,
            CheckKind::Http { .. } => CheckType::Http,
            CheckKind::Https { .. } => CheckType::Https,
            CheckKind::Udp { .. } => CheckType::Udp,
        }
    }
}

/// Health-check keys given for one backend (`[vip.backend.health]`, `vipctl backend add
/// --check...`), each replacing the VIP's own; a key not given is the VIP's. Also the
/// parsed form of `[vip.health]`, merged over the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOverride {
    /// `type`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckType>,
    /// `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `interval`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_text"
    )]
    pub interval: Option<Duration>,
    /// `timeout`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_text"
    )]
    pub timeout: Option<Duration>,
    /// `rise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// `fall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// `path` (http, https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `host` (http, https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `expect_status` (http, https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<(u16, u16)>,
    /// `payload` (udp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// `tls_server_name` (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// `tls_verify` (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// `tls_ca` (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

impl CheckOverride {
    /// Every key of `check`, as if all were written out.
    fn of(check: &HealthCheck) -> Self {
        let mut o = CheckOverride {
            kind: Some(check.kind.check_type()),
            port: check.port,
            interval: Some(check.interval),
            timeout: Some(check.timeout),
            rise: Some(check.rise),
            fall: Some(check.fall),
            ..CheckOverride::default()
        };
        match &check.kind {
            CheckKind::None | CheckKind::Tcp => {}
            CheckKind::Http {
                path,
                host,
                expect_status,
            } => {
                (o.path, o.host, o.expect_status) =
                    (Some(path.clone()), host.clone(), Some(*expect_status));
            }
            CheckKind::Https {
                path,
                host,
                expect_status,
                tls_server_name,
                tls_verify,
                tls_ca,
            } => {
                (o.path, o.host, o.expect_status) =
                    (Some(path.clone()), host.clone(), Some(*expect_status));
                (o.tls_server_name, o.tls_verify, o.tls_ca) =
                    (tls_server_name.clone(), Some(*tls_verify), tls_ca.clone());
            }
            CheckKind::Udp { payload } => o.payload = Some(payload.clone()),
        }
        o
    }

    /// The keys given, by name (for messages).
    fn given(&self) -> Vec<&'static str> {
        [
            ("path", self.path.is_some()),
            ("host", self.host.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("payload", self.payload.is_some()),
            ("tls_server_name", self.tls_server_name.is_some()),
            ("tls_verify", self.tls_verify.is_some()),
            ("tls_ca", self.tls_ca.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(k, _)| k)
        .collect()
    }
}

/// The keys of a check type besides the common ones (type, port, interval, timeout, rise,
/// fall).
fn keys_of(t: CheckType) -> &'static [&'static str] {
    const HTTP: &[&str] = &["path", "host", "expect_status"];
    const HTTPS: &[&str] = &[
        "path",
        "host",
        "expect_status",
        "tls_server_name",
        "tls_verify",
        "tls_ca",
    ];
    match t {
        CheckType::None | CheckType::Tcp => &[],
        CheckType::Http => HTTP,
        CheckType::Https => HTTPS,
        CheckType::Udp => &["payload"],
    }
}

impl HealthCheck {
    /// This check with the keys `o` gives in place of its own. A key of the old type that
    /// the new type has too (http and https share path, host and expect_status) is kept;
    /// a key `o` gives that its type does not have is a problem, named as in the file.
    pub fn merged(&self, o: &CheckOverride) -> Result<HealthCheck, Vec<String>> {
        let mut problems = Vec::new();
        let kind = o.kind.unwrap_or(self.kind.check_type());
        let misplaced: Vec<_> = o
            .given()
            .into_iter()
            .filter(|k| !keys_of(kind).contains(k))
            .collect();
        if !misplaced.is_empty() {
            let with: Vec<_> = [CheckType::Http, CheckType::Https, CheckType::Udp]
                .into_iter()
                .filter(|t| misplaced.iter().all(|k| keys_of(*t).contains(k)))
                .map(|t| format!("type = \"{t}\""))
                .collect();
            let names: Vec<_> = misplaced.iter().map(|k| format!("health.{k}")).collect();
            problems.push(format!(
                "{} {} not apply to type = \"{kind}\": remove {} or change the type{}",
                names.join(", "),
                if misplaced.len() == 1 { "does" } else { "do" },
                if misplaced.len() == 1 { "it" } else { "them" },
                if with.is_empty() {
                    String::new()
                } else {
                    format!(" (to {})", with.join(" or "))
                }
            ));
        }
        let mut all = CheckOverride::of(self);
        if kind != self.kind.check_type() {
            // The old type's own keys do not carry over, except those the new type has.
            let old = std::mem::take(&mut all);
            all = CheckOverride {
                port: old.port,
                interval: old.interval,
                timeout: old.timeout,
                rise: old.rise,
                fall: old.fall,
                ..CheckOverride::default()
            };
            if keys_of(kind).contains(&"path") {
                (all.path, all.host, all.expect_status) = (old.path, old.host, old.expect_status);
            }
        }
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        let path = pick(&o.path, &all.path).unwrap_or_else(|| "/".into());
        let host = pick(&o.host, &all.host);
        let expect_status = o.expect_status.or(all.expect_status).unwrap_or((200, 399));
        let kind = match kind {
            CheckType::None => CheckKind::None,
            CheckType::Tcp => CheckKind::Tcp,
            CheckType::Http => CheckKind::Http {
                path,
                host,
                expect_status,
            },
            CheckType::Https => CheckKind::Https {
                path,
                host,
                expect_status,
                tls_server_name: pick(&o.tls_server_name, &all.tls_server_name),
                tls_verify: o.tls_verify.or(all.tls_verify).unwrap_or(true),
                tls_ca: o.tls_ca.clone().or_else(|| all.tls_ca.clone()),
            },
            CheckType::Udp => CheckKind::Udp {
                payload: pick(&o.payload, &all.payload).unwrap_or_default(),
            },
        };
        let check = HealthCheck {
            kind,
            port: o.port.or(all.port),
            interval: o.interval.unwrap_or(self.interval),
            timeout: o.timeout.unwrap_or(self.timeout),
            rise: o.rise.unwrap_or(self.rise),
            fall: o.fall.unwrap_or(self.fall),
        };
        if problems.is_empty() {
            Ok(check)
        } else {
            Err(problems)
        }
    }

    /// A check that always passes.
    pub fn none() -> Self {
        HealthCheck {
            kind: CheckKind::None,
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// A backend of a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    /// Address and port (port 0 for an all-ports VIP).
    pub addr: SocketAddr,
    /// Relative share of new flows (0 = no new flows, as drain).
    pub weight: u32,
    /// Operator state.
    pub state: AdminState,
    /// Health-check keys of this backend's own, merged over the VIP's check (see
    /// [`VipSpec::check_of`]). Boxed: most backends have none, and a spec travels in
    /// every API message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Box<CheckOverride>>,
}

/// A VIP with its options and backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSpec {
    /// Address, port, protocol.
    pub id: VipId,
    /// Forwarding mode.
    pub mode: Mode,
    /// What the flow hash covers.
    pub hash: HashMode,
    /// Use the connection table.
    pub conntrack: bool,
    /// Maglev table size M (prime).
    pub table_size: u32,
    /// Backend health check.
    pub health: HealthCheck,
    /// Backends, in file order (order does not matter to Maglev).
    pub backends: Vec<BackendSpec>,
    /// The HA group whose active node answers ARP/NDP for the VIP's address
    /// (`announce = "arp"`, `group = NAME`); `None`: the VIP is reached by a route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_group: Option<String>,
    /// Whether this VIP's host route is announced; `None` follows `[announce] enabled`.
    #[serde(default)]
    pub announce: Option<bool>,
    /// Backends that must be up (healthy, not in maintenance) for the route to be
    /// announced.
    #[serde(default = "one")]
    pub min_healthy: u32,
    /// Who may open flows to the VIP (`allow` / `deny`); empty: everyone.
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub acl: Acl,
}

fn one() -> u32 {
    1
}

/// `[announce]`: the kernel routing table vipd keeps the announceable VIPs' host routes
/// in, for a routing daemon (BIRD) to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceSpec {
    /// Default for VIPs that do not say `announce`.
    pub enabled: bool,
    /// Routing table id (not main, local or default).
    pub table: u32,
    /// Route protocol id marking vipd's routes (routes with another id are never touched).
    pub protocol: u8,
}

impl Default for AnnounceSpec {
    fn default() -> Self {
        AnnounceSpec {
            enabled: false,
            table: 100,
            protocol: 200,
        }
    }
}

impl AnnounceSpec {
    /// Whether `vip`'s route is managed at all.
    pub fn covers(&self, vip: &VipSpec) -> bool {
        vip.announce.unwrap_or(self.enabled)
    }
}

impl VipSpec {
    /// The check `backend` gets: the VIP's, with the backend's own keys merged over it.
    /// (A validated spec always merges; if it did not, the VIP's check is used.)
    pub fn check_of(&self, backend: &BackendSpec) -> HealthCheck {
        match &backend.health {
            Some(o) => self
                .health
                .merged(o)
                .unwrap_or_else(|_| self.health.clone()),
            None => self.health.clone(),
        }
    }
}

/// An HA group (`[[group]]`): VIPs that move between nodes together, announced on
/// `interfaces`; its role on this node is set by `vipctl ha set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// Name (`vipctl ha set NAME ...`), at most 31 bytes.
    pub name: String,
    /// Interfaces the group's VIPs are announced on (default: `[datapath] interfaces`).
    pub interfaces: Vec<String>,
    /// Gratuitous ARPs / unsolicited NAs sent per VIP and interface on becoming active.
    pub garp_repeat: u32,
    /// Time between two of them.
    pub garp_interval: Duration,
}

/// Default of `garp_repeat`: keepalived's `garp_master_repeat`.
pub const GARP_REPEAT: u32 = 5;
/// Default of `garp_interval`.
pub const GARP_INTERVAL: Duration = Duration::from_millis(200);

/// Map capacities, fixed when the datapath is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsSpec {
    /// VIPs.
    pub max_vips: u32,
    /// Backends across all VIPs (one per VIP and backend).
    pub max_backends: u32,
    /// Largest Maglev table size M (prime); also the default per VIP.
    pub table_size: u32,
    /// Flows the connection table is sized for (rounded up to a power of two of sets of
    /// `vip_common::FLOW_WAYS`).
    pub max_conns: u32,
    /// Entries of the Maglev pool, shared by all VIPs: each takes
    /// `vip_common::maglev_region_entries` of its own M (see [`maglev_pool_need`]).
    /// Default `vip_common::maglev_pool_default`. Missing from state files written
    /// before the pool existed (read as 0: other limits, so their ids are not kept).
    #[serde(default)]
    pub maglev_pool: u32,
}

/// Maglev pool entries `vips` need: each VIP's region
/// (`vip_common::maglev_region_entries` of its M), plus the largest region once more,
/// for a VIP whose M changes (its new region is written while its old one is in use).
pub fn maglev_pool_need(vips: &[VipSpec]) -> u64 {
    let regions = vips
        .iter()
        .map(|v| vip_common::maglev_region_entries(v.table_size));
    regions.clone().sum::<u64>() + regions.max().unwrap_or(0)
}

/// Datapath-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathSpec {
    /// Interfaces `vip_lb` is attached to.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Largest packet (IP header on) the LB may send after encapsulation.
    pub mtu: u32,
    /// Answer oversize DF packets with ICMP frag-needed / packet-too-big.
    pub icmp_too_big: bool,
    /// Outer IPv4 source prefix of tunnelled packets.
    pub tunnel_source_v4: (Ipv4Addr, u8),
    /// Outer IPv6 source prefix of tunnelled packets (at most /96).
    pub tunnel_source_v6: (Ipv6Addr, u8),
}

/// The control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSpec {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Permission bits of the socket.
    pub mode: u32,
    /// Group that owns the socket (and may use it), besides root.
    pub group: Option<String>,
    /// Connections served at once, all users together; more are answered with an
    /// error and closed, so idle clients cannot use up vipd's open files.
    pub max_connections: u32,
    /// Connections one user (peer uid) may hold at once, root excepted, so one user's
    /// idle connections cannot lock the others out.
    pub max_connections_per_user: u32,
    /// How long a client has to send its whole request.
    pub request_timeout: Duration,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: u32,
}

/// The Prometheus endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsSpec {
    /// Listen address.
    pub listen: SocketAddr,
    /// Scrapes served at once; more are answered 503 and closed.
    pub max_connections: u32,
    /// How often the snapshot scrapes are served from is refreshed.
    pub refresh: Duration,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Instance name: pins live in `/sys/fs/bpf/vip/<instance>/`.
    pub instance: String,
    /// Where runtime changes are persisted.
    pub state_file: PathBuf,
    /// Datapath settings.
    pub datapath: DatapathSpec,
    /// Map capacities.
    pub limits: LimitsSpec,
    /// Control socket.
    pub api: ApiSpec,
    /// The Prometheus endpoint (`None` = none).
    pub metrics: Option<MetricsSpec>,
    /// VIPs in file order.
    pub vips: Vec<VipSpec>,
    /// Route announcement.
    pub announce: AnnounceSpec,
    /// HA groups in file order.
    pub groups: Vec<GroupSpec>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, origin, None)
    }

    /// Parses config text for its VIPs only, as a running vipd does for
    /// `vipctl apply -f`: defaults and limits come from `limits` (the running datapath's),
    /// whatever the file's `[limits]` says.
    pub fn parse_vips(
        text: &str,
        origin: &str,
        limits: &LimitsSpec,
    ) -> Result<Vec<VipSpec>, ConfigError> {
        Ok(Self::parse_with(text, origin, Some(*limits))?.vips)
    }

    fn parse_with(
        text: &str,
        origin: &str,
        limits: Option<LimitsSpec>,
    ) -> Result<Self, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut v = Validator::new(text, limits);
        let cfg = v.file(raw);
        if v.problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems: v.problems,
            })
        }
    }

    /// Parses the keys of one health-check table (as `[vip.backend.health]` holds them)
    /// without merging them over anything: `vipctl backend add --check...` sends them so,
    /// and vipd checks the merge against the VIP's own check.
    pub fn parse_check_keys(text: &str, origin: &str) -> Result<CheckOverride, ConfigError> {
        let raw: raw::Health = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut v = Validator::new(text, None);
        match v.check_keys(raw, "backend") {
            Some(keys) if v.problems.is_empty() => Ok(keys),
            _ => Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems: v.problems,
            }),
        }
    }

    /// The pin directory of this instance.
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.instance)
    }

    /// The settings that differ between `self` (running) and `new` and that only a
    /// restart can apply: which pins, interfaces, socket and state file vipd uses.
    /// `[limits]` is not among them: it needs `vipd down` (see `Owner::reload`).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        [
            ("instance", self.instance == new.instance),
            ("state_file", self.state_file == new.state_file),
            (
                "[datapath] interfaces",
                self.datapath.interfaces == new.datapath.interfaces,
            ),
            (
                "[datapath] xdp_mode",
                self.datapath.xdp_mode == new.datapath.xdp_mode,
            ),
            ("[api]", self.api == new.api),
            (
                "[announce] table",
                self.announce.table == new.announce.table,
            ),
            (
                "[announce] protocol",
                self.announce.protocol == new.announce.protocol,
            ),
            ("[[group]]", self.groups == new.groups),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(what, _)| what)
        .collect()
    }
}

/// `/sys/fs/bpf/vip/<instance>`.
pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/vip").join(instance)
}

/// The lock file that makes one `vipd` the owner of an instance:
/// `/run/vip/<instance>.lock`. It follows the instance (which names the pins), not the
/// socket or state file, so two configs of one instance cannot both run.
pub fn lock_path(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/vip/{instance}.lock"))
}

/// The API socket of an instance whose config names none: `/run/vip/<instance>.sock`.
pub fn default_socket(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/vip/{instance}.sock"))
}

/// Validates a set of VIPs against limits (used for runtime changes too).
pub fn validate_vips(vips: &[VipSpec], limits: &LimitsSpec) -> Result<(), Vec<String>> {
    validate_vips_except(vips, limits, |_| false)
}

/// [`validate_vips`] for a set in which the VIPs `known_good` picks already passed it
/// under the same `limits` (a running VIP a change leaves as it is): their own checks
/// are skipped, as they find nothing, and what depends on the whole set (a VIP given
/// twice, the totals) is checked as ever. The answer is the same as `validate_vips`'s.
pub fn validate_vips_except(
    vips: &[VipSpec],
    limits: &LimitsSpec,
    known_good: impl Fn(&VipSpec) -> bool,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = HashSet::with_capacity(vips.len());
    let mut backends = 0u64;
    for vip in vips {
        if !seen.insert(vip.id) {
            problems.push(format!("VIP {} is defined twice: remove one", vip.id));
        }
        if !known_good(vip) {
            check_vip(vip, limits, &mut |p| {
                problems.push(format!("VIP {}: {p}", vip.id))
            });
        }
        backends += vip.backends.len() as u64;
    }
    if vips.len() as u64 > u64::from(limits.max_vips) {
        problems.push(format!(
            "{} VIPs but limits.max_vips is {}: raise [limits] max_vips (needs a datapath reload with `vipd down` + `vipd run`) or remove VIPs",
            vips.len(),
            limits.max_vips
        ));
    }
    for v6 in [false, true] {
        let n: usize = vips
            .iter()
            .filter(|v| v.id.addr.is_ipv6() == v6)
            .map(|v| v.acl.entries(v6).len())
            .sum();
        if n > vip_common::ACL_MAX_PREFIXES as usize {
            problems.push(format!(
                "{n} {} access-list prefixes in all VIPs (each allow list counts one more, its default) exceed the {} the datapath holds: merge prefixes",
                if v6 { "IPv6" } else { "IPv4" },
                vip_common::ACL_MAX_PREFIXES
            ));
        }
    }
    if backends > u64::from(limits.max_backends) {
        problems.push(format!(
            "{backends} backends in all VIPs but limits.max_backends is {}: raise [limits] max_backends or remove backends",
            limits.max_backends
        ));
    }
    let need = maglev_pool_need(vips);
    if need > u64::from(limits.maglev_pool) {
        // Name the first VIP that does not fit, as the pool fills in order.
        let mut used = 0u64;
        let spare = need
            - vips
                .iter()
                .map(|v| vip_common::maglev_region_entries(v.table_size))
                .sum::<u64>();
        let first = vips.iter().find(|v| {
            used += vip_common::maglev_region_entries(v.table_size);
            used + spare > u64::from(limits.maglev_pool)
        });
        let who = first.map_or(String::new(), |v| {
            format!(
                "VIP {} needs {} entries (two tables of M = {}) where {} are left; ",
                v.id,
                vip_common::maglev_region_entries(v.table_size),
                v.table_size,
                (u64::from(limits.maglev_pool) + vip_common::maglev_region_entries(v.table_size))
                    .saturating_sub(used + spare)
            )
        });
        problems.push(format!(
            "{who}the Maglev tables of all {} VIPs need {need} entries ({spare} of them kept free so a VIP's M can change), but limits.maglev_pool is {}: raise [limits] maglev_pool to at least {need} (needs `vipd down` and a start), or lower some VIP's table_size",
            vips.len(),
            limits.maglev_pool
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Why `ip` cannot be a VIP's or a backend's address, if it cannot: none of these is one
/// host that clients or the LB can reach as a unicast peer.
fn unusable_address(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Why a health check's HTTP path or Host cannot go into a request line or header as it
/// is: a CR or LF would end the line and let the text write a request of its own (vipd
/// runs as root and connects to the backends), and a space or other control character
/// breaks the request line.
fn unsafe_in_http(text: &str) -> bool {
    text.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The shortest health-check interval and timeout: below it, checks are a flood rather
/// than a measurement (and 1 ns was accepted once).
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

fn check_vip(vip: &VipSpec, limits: &LimitsSpec, report: &mut dyn FnMut(String)) {
    if let Some(why) = unusable_address(vip.id.addr) {
        report(format!(
            "VIP address {} is {why}: write the unicast address clients send to",
            vip.id.addr
        ));
    }
    for p in vip.acl.problems(vip.id.addr.is_ipv6()) {
        report(p);
    }
    if !is_prime(vip.table_size) {
        report(format!(
            "table_size {} is not prime: use a prime such as {}",
            vip.table_size,
            next_prime(vip.table_size)
        ));
    }
    if vip.table_size > limits.table_size {
        report(format!(
            "table_size {} exceeds limits.table_size {}: lower it or raise [limits] table_size",
            vip.table_size, limits.table_size
        ));
    }
    if vip.backends.len() as u64 > u64::from(vip.table_size) {
        report(format!(
            "{} backends do not fit a Maglev table of {}: raise table_size",
            vip.backends.len(),
            vip.table_size
        ));
    }
    let mut seen = HashSet::new();
    for b in &vip.backends {
        if !seen.insert(b.addr) {
            report(format!("backend {} is listed twice: remove one", b.addr));
        }
        if vip.id.port == 0 && b.addr.port() != 0 {
            report(format!(
                "backend {} has a port but the VIP takes all ports: give the backend without a port",
                b.addr
            ));
        }
        if let Some(why) = unusable_address(b.addr.ip()) {
            report(format!(
                "backend {}: {} is {why}: write the backend's own address",
                b.addr,
                b.addr.ip()
            ));
        } else if b.addr.ip() == vip.id.addr {
            report(format!(
                "backend {} is the VIP's own address: the LB would send the VIP's packets back to itself, which would loop; write the backend's own address",
                b.addr
            ));
        }
        if b.weight > MAX_WEIGHT {
            report(format!(
                "backend {} weight {} is above {MAX_WEIGHT}: scale the weights down",
                b.addr, b.weight
            ));
        }
        match (vip.id.addr, b.addr.ip(), vip.mode) {
            (IpAddr::V6(_), IpAddr::V4(_), Mode::Tunnel) => report(format!(
                "backend {} is IPv4 but the VIP is IPv6: tunnel mode can carry IPv4 in IPv6, not IPv6 in IPv4; use an IPv6 backend address",
                b.addr
            )),
            (v, a, Mode::DsrL2) if v.is_ipv4() != a.is_ipv4() => report(format!(
                "backend {} is not of the VIP's address family: dsr-l2 forwards the packet unchanged, so the backend must be of the same family",
                b.addr
            )),
            _ => {}
        }
    }
    check_health(&vip.health, vip.id.port == 0, report);
    for b in &vip.backends {
        let Some(o) = &b.health else { continue };
        let mut report = |p: String| report(format!("backend {}: {p}", b.addr));
        match vip.health.merged(o) {
            Ok(h) => check_health(&h, vip.id.port == 0, &mut report),
            Err(problems) => problems.into_iter().for_each(&mut report),
        }
    }
}

/// The rules of one check (a VIP's, or a backend's merged over it).
fn check_health(h: &HealthCheck, all_ports: bool, report: &mut dyn FnMut(String)) {
    if !matches!(h.kind, CheckKind::None) {
        for (what, d) in [("interval", h.interval), ("timeout", h.timeout)] {
            if d < MIN_CHECK_INTERVAL {
                report(format!(
                    "health.{what} {} is below the minimum of {}: write a duration such as \"100ms\" or \"2s\"",
                    humantime::format_duration(d),
                    humantime::format_duration(MIN_CHECK_INTERVAL)
                ));
            }
        }
        if h.timeout >= MIN_CHECK_INTERVAL && h.timeout > h.interval {
            report(format!(
                "health.timeout {} must be above 0 and at most health.interval {}",
                humantime::format_duration(h.timeout),
                humantime::format_duration(h.interval)
            ));
        }
        if h.rise == 0 || h.fall == 0 {
            report("health.rise and health.fall must be at least 1".into());
        }
        if all_ports && h.port.is_none() {
            report(
                "the VIP takes all ports, so its health check needs a port: set health.port".into(),
            );
        }
    }
    if let CheckKind::Http {
        path,
        host,
        expect_status: (lo, hi),
    }
    | CheckKind::Https {
        path,
        host,
        expect_status: (lo, hi),
        ..
    } = &h.kind
    {
        if !path.starts_with('/') {
            report(format!("health.path {path:?} must start with '/'"));
        }
        if unsafe_in_http(path) {
            report(format!(
                "health.path {path:?} contains a control character or space: write a URL path such as \"/healthz\", percent-encoded (e.g. %20 for a space)"
            ));
        }
        if let Some(host) = host
            && unsafe_in_http(host)
        {
            report(format!(
                "health.host {host:?} contains a control character or space: write a host name such as \"www.example.com\" (with \":PORT\" if needed)"
            ));
        }
        if !(100..=599).contains(lo) || !(100..=599).contains(hi) || lo > hi {
            report(format!(
                "health.expect_status {lo}-{hi} is not a range of HTTP statuses: use e.g. \"200-399\""
            ));
        }
    }
    if let CheckKind::Https {
        tls_server_name,
        tls_ca,
        ..
    } = &h.kind
    {
        if let Some(name) = tls_server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            report(format!(
                "health.tls_server_name {name:?} is neither a DNS name nor an IP address: write the name the backend's certificate holds, e.g. \"api.example.com\""
            ));
        }
        if let Some(ca) = tls_ca
            && !ca.is_absolute()
        {
            report(format!(
                "health.tls_ca {:?} is not an absolute path: write the full path of a PEM file, e.g. \"/etc/vip/backend-ca.pem\"",
                ca.display()
            ));
        }
    }
}

/// Largest backend weight (keeps weight sums far from overflow in Maglev).
pub const MAX_WEIGHT: u32 = 65_535;

/// True if `n` is prime (trial division: table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The smallest prime >= n.
pub fn next_prime(n: u32) -> u32 {
    let mut c = n.max(2);
    while !is_prime(c) {
        c += 1;
    }
    c
}

/// The raw file layout, exactly as written by the operator.
mod raw {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub instance: Option<Spanned<String>>,
        pub state_file: Option<PathBuf>,
        #[serde(default)]
        pub datapath: Datapath,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub api: Api,
        pub metrics: Option<Metrics>,
        #[serde(default)]
        pub announce: Announce,
        #[serde(default)]
        pub vip: Vec<Vip>,
        #[serde(default)]
        pub group: Vec<Group>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Group {
        pub name: Spanned<String>,
        #[serde(default)]
        pub interfaces: Vec<String>,
        pub garp_repeat: Option<Spanned<u32>>,
        pub garp_interval: Option<Spanned<String>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Announce {
        #[serde(default)]
        pub enabled: bool,
        pub table: Option<Spanned<u32>>,
        pub protocol: Option<Spanned<u32>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Datapath {
        #[serde(default)]
        pub interfaces: Vec<String>,
        #[serde(default)]
        pub xdp_mode: XdpMode,
        pub mtu: Option<Spanned<u32>>,
        #[serde(default)]
        pub icmp_too_big: bool,
        pub tunnel_source_v4: Option<Spanned<String>>,
        pub tunnel_source_v6: Option<Spanned<String>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub max_vips: Option<Spanned<u32>>,
        pub max_backends: Option<Spanned<u32>>,
        pub table_size: Option<Spanned<u32>>,
        pub max_conns: Option<Spanned<u32>>,
        pub maglev_pool: Option<Spanned<u32>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub socket: Option<PathBuf>,
        pub mode: Option<Spanned<String>>,
        pub group: Option<String>,
        pub max_connections: Option<Spanned<u32>>,
        pub max_connections_per_user: Option<Spanned<u32>>,
        pub request_timeout: Option<Spanned<String>>,
        pub max_request_bytes: Option<Spanned<u32>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub listen: Spanned<String>,
        pub max_connections: Option<Spanned<u32>>,
        pub refresh: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Vip {
        pub address: Spanned<String>,
        #[serde(default = "tcp")]
        pub protocol: Protocol,
        #[serde(default)]
        pub mode: Mode,
        #[serde(default)]
        pub hash: HashMode,
        #[serde(default = "yes")]
        pub conntrack: bool,
        pub table_size: Option<u32>,
        pub health: Option<Health>,
        pub announce: Option<Spanned<VipAnnounce>>,
        pub min_healthy: Option<Spanned<u32>>,
        #[serde(default)]
        pub backend: Vec<Backend>,
        pub group: Option<Spanned<String>>,
        #[serde(default)]
        pub allow: Vec<Spanned<String>>,
        #[serde(default)]
        pub deny: Vec<Spanned<String>>,
    }

    /// A VIP's `announce`: `true`/`false` (its host route, as `"route"`/`"none"`), or a
    /// word.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum VipAnnounce {
        Route(bool),
        Word(String),
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Health {
        #[serde(rename = "type")]
        pub kind: Option<Spanned<String>>,
        pub port: Option<u16>,
        pub interval: Option<Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub rise: Option<u32>,
        pub fall: Option<u32>,
        pub path: Option<String>,
        pub host: Option<String>,
        pub expect_status: Option<Spanned<String>>,
        pub payload: Option<String>,
        pub tls_server_name: Option<String>,
        pub tls_verify: Option<bool>,
        pub tls_ca: Option<PathBuf>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub address: Spanned<String>,
        #[serde(default = "one")]
        pub weight: u32,
        #[serde(default)]
        pub state: AdminState,
        pub health: Option<Health>,
    }

    fn tcp() -> Protocol {
        Protocol::Tcp
    }
    fn yes() -> bool {
        true
    }
    fn one() -> u32 {
        1
    }
}

/// The line (from 1) of `text` where `span` starts; `ends` caches where lines end.
fn line_of(
    text: &str,
    ends: &std::cell::OnceCell<Vec<usize>>,
    span: std::ops::Range<usize>,
) -> usize {
    let ends = ends.get_or_init(|| {
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i)
            .collect()
    });
    ends.partition_point(|&e| e < span.start) + 1
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<String>,
    limits_override: Option<LimitsSpec>,
    /// Where each line of `text` ends, built at the first problem: counting the lines
    /// before every VIP took 40 s for a 10,000-VIP file.
    line_ends: std::cell::OnceCell<Vec<usize>>,
}

impl Validator<'_> {
    fn new(text: &str, limits_override: Option<LimitsSpec>) -> Validator<'_> {
        Validator {
            text,
            problems: Vec::new(),
            limits_override,
            line_ends: std::cell::OnceCell::new(),
        }
    }

    fn line(&self, span: std::ops::Range<usize>) -> usize {
        line_of(self.text, &self.line_ends, span)
    }

    fn at<T>(&mut self, s: &Spanned<T>, msg: impl fmt::Display) {
        let line = self.line(s.span());
        self.problems.push(format!("line {line}: {msg}"));
    }

    fn file(&mut self, f: raw::File) -> Config {
        let instance = match &f.instance {
            Some(s) => {
                let name = s.get_ref();
                if name.is_empty()
                    || name.len() > 32
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    self.at(s, format!("instance {name:?}: use 1-32 letters, digits, '-' or '_' (it names /sys/fs/bpf/vip/<instance>)"));
                }
                name.clone()
            }
            None => "default".to_string(),
        };
        let state_file = f
            .state_file
            .unwrap_or_else(|| PathBuf::from(format!("/var/lib/vip/{instance}/state.json")));
        let limits = match self.limits_override {
            Some(l) => l,
            None => self.limits(&f.limits),
        };
        let datapath = self.datapath(f.datapath);
        let api = self.api(f.api, &instance);
        let metrics = f.metrics.and_then(|m| match m.listen.get_ref().parse::<SocketAddr>() {
            Ok(listen) => Some(MetricsSpec {
                listen,
                max_connections: self.count(&m.max_connections, 64, "metrics.max_connections", 1, 4096),
                refresh: self.duration(
                    &m.refresh,
                    Duration::from_secs(2),
                    "metrics.refresh",
                    (Duration::from_millis(100), Duration::from_secs(60)),
                ),
            }),
            Err(_) => {
                self.at(
                    &m.listen,
                    format!(
                        "metrics.listen {:?} is not ADDR:PORT (e.g. \"127.0.0.1:9641\" or \"[::1]:9641\")",
                        m.listen.get_ref()
                    ),
                );
                None
            }
        });
        let announce = self.announce(&f.announce);
        let groups = self.groups(f.group, &datapath);
        let mut vips = Vec::new();
        for v in f.vip {
            if let Some(v) = self.vip(v, &limits, &groups) {
                vips.push(v);
            }
        }
        if self.problems.is_empty()
            && let Err(p) = validate_vips(&vips, &limits)
        {
            self.problems.extend(p);
        }
        Config {
            instance,
            state_file,
            datapath,
            limits,
            api,
            metrics,
            vips,
            announce,
            groups,
        }
    }

    fn announce(&mut self, a: &raw::Announce) -> AnnounceSpec {
        let def = AnnounceSpec::default();
        let table = match &a.table {
            // 0 is unspecified; 253-255 are default, main and local.
            Some(t) if *t.get_ref() == 0 || (253..=255).contains(t.get_ref()) => {
                self.at(t, format!("announce.table = {}: use a table of its own (1-252 or above 255, e.g. 100), not unspec, default, main or local", t.get_ref()));
                def.table
            }
            Some(t) => *t.get_ref(),
            None => def.table,
        };
        let protocol = match &a.protocol {
            // 0-4 are the kernel's own (unspec, redirect, kernel, boot, static); 12 is
            // BIRD's, whose kernel protocol would take the routes for its own exports.
            Some(p) if *p.get_ref() <= 4 || *p.get_ref() == 12 || *p.get_ref() > 255 => {
                self.at(p, format!("announce.protocol = {}: use an id of vipd's own in 5..=255 other than 12 (BIRD's), e.g. 200", p.get_ref()));
                def.protocol
            }
            Some(p) => u8::try_from(*p.get_ref()).unwrap_or(def.protocol),
            None => def.protocol,
        };
        AnnounceSpec {
            enabled: a.enabled,
            table,
            protocol,
        }
    }

    fn groups(&mut self, raw: Vec<raw::Group>, datapath: &DatapathSpec) -> Vec<GroupSpec> {
        let mut groups: Vec<GroupSpec> = Vec::new();
        for g in raw {
            let name = g.name.get_ref().clone();
            if name.is_empty()
                || name.len() >= vip_common::HA_GROUP_NAME_LEN
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.at(
                    &g.name,
                    format!("group name {name:?}: use 1-31 letters, digits, '-' or '_'"),
                );
            }
            if groups.iter().any(|o| o.name == name) {
                self.at(
                    &g.name,
                    format!("group {name:?} is defined twice: remove one"),
                );
            }
            let garp_repeat = match g.garp_repeat {
                Some(r) if *r.get_ref() == 0 || *r.get_ref() > 100 => {
                    self.at(&r, "garp_repeat: use 1..=100");
                    GARP_REPEAT
                }
                Some(r) => *r.get_ref(),
                None => GARP_REPEAT,
            };
            let garp_interval = match g.garp_interval {
                Some(s) => match humantime::parse_duration(s.get_ref()) {
                    Ok(d) => d,
                    Err(e) => {
                        self.at(&s, format!("garp_interval: {e} (use e.g. \"200ms\")"));
                        GARP_INTERVAL
                    }
                },
                None => GARP_INTERVAL,
            };
            let interfaces = if g.interfaces.is_empty() {
                datapath.interfaces.clone()
            } else {
                g.interfaces
            };
            groups.push(GroupSpec {
                name,
                interfaces,
                garp_repeat,
                garp_interval,
            });
        }
        if groups.len() as u32 > vip_common::MAX_HA_GROUPS {
            self.problems.push(format!(
                "{} groups: at most {} fit the datapath",
                groups.len(),
                vip_common::MAX_HA_GROUPS
            ));
        }
        groups
    }

    fn limits(&mut self, l: &raw::Limits) -> LimitsSpec {
        use vip_common::defaults as d;
        let mut get = |v: &Option<Spanned<u32>>, def: u32, name: &str, min: u32, max: u32| match v {
            Some(s) if !(min..=max).contains(s.get_ref()) => {
                self.at(
                    s,
                    format!(
                        "limits.{name} = {} is out of range: use {min}..={max}",
                        s.get_ref()
                    ),
                );
                def
            }
            Some(s) => *s.get_ref(),
            None => def,
        };
        let mut out = LimitsSpec {
            max_vips: get(&l.max_vips, d::MAX_VIPS, "max_vips", 1, 65_536),
            // Maglev entries hold 16-bit backend ids.
            max_backends: get(
                &l.max_backends,
                d::MAX_BACKENDS,
                "max_backends",
                1,
                vip_common::MAX_BACKEND_IDS,
            ),
            table_size: get(&l.table_size, d::TABLE_SIZE, "table_size", 3, 1 << 24),
            max_conns: get(&l.max_conns, d::MAX_CONNS, "max_conns", 16, 1 << 27),
            maglev_pool: 0,
        };
        if let Some(s) = &l.table_size
            && !is_prime(*s.get_ref())
        {
            self.at(
                s,
                format!(
                    "limits.table_size {} is not prime: Maglev needs a prime, e.g. {}",
                    s.get_ref(),
                    next_prime(*s.get_ref())
                ),
            );
        }
        // Each VIP has two tables of its own M in one pool.
        out.maglev_pool = match &l.maglev_pool {
            Some(s) => *s.get_ref(),
            None => {
                let def = vip_common::maglev_pool_default(out.max_vips, out.table_size);
                u32::try_from(def).unwrap_or_else(|_| {
                    self.problems.push(format!(
                        "[limits]: the default maglev_pool, (max_vips {} + 1) x 2 x table_size {} = {def} entries, exceeds 2^32: set [limits] maglev_pool to what the VIPs need (two tables of their own table_size each), or lower max_vips or table_size",
                        out.max_vips, out.table_size
                    ));
                    0
                })
            }
        };
        out
    }

    fn datapath(&mut self, d: raw::Datapath) -> DatapathSpec {
        let mtu = match &d.mtu {
            Some(s) if !(576..=9216).contains(s.get_ref()) => {
                self.at(
                    s,
                    format!(
                        "datapath.mtu {} is out of range: use 576..=9216",
                        s.get_ref()
                    ),
                );
                1500
            }
            Some(s) => *s.get_ref(),
            None => 1500,
        };
        let mut seen = HashSet::new();
        for i in &d.interfaces {
            if i.is_empty() || i.len() > 15 {
                self.problems.push(format!(
                    "[datapath] interfaces: {i:?} is not an interface name (1-15 characters)"
                ));
            }
            if !seen.insert(i) {
                self.problems.push(format!(
                    "[datapath] interfaces: {i:?} is listed twice: remove one"
                ));
            }
        }
        let v4 = match &d.tunnel_source_v4 {
            Some(s) => match parse_prefix(s.get_ref()) {
                Some((IpAddr::V4(a), len)) => (a, len),
                _ => {
                    self.at(s, format!("datapath.tunnel_source_v4 {:?} is not an IPv4 prefix: write e.g. \"198.18.255.0/24\"", s.get_ref()));
                    default_tunnel_v4()
                }
            },
            None => default_tunnel_v4(),
        };
        let v6 = match &d.tunnel_source_v6 {
            Some(s) => match parse_prefix(s.get_ref()) {
                Some((IpAddr::V6(a), len)) if len <= 96 => (a, len),
                Some((IpAddr::V6(_), _)) => {
                    self.at(s, "datapath.tunnel_source_v6: the prefix must be /96 or shorter (the low 32 bits carry the flow hash)");
                    default_tunnel_v6()
                }
                _ => {
                    self.at(s, format!("datapath.tunnel_source_v6 {:?} is not an IPv6 prefix: write e.g. \"2001:db8:ffff::/96\"", s.get_ref()));
                    default_tunnel_v6()
                }
            },
            None => default_tunnel_v6(),
        };
        DatapathSpec {
            interfaces: d.interfaces,
            xdp_mode: d.xdp_mode,
            mtu,
            icmp_too_big: d.icmp_too_big,
            tunnel_source_v4: v4,
            tunnel_source_v6: v6,
        }
    }

    fn api(&mut self, a: raw::Api, instance: &str) -> ApiSpec {
        let mode = match &a.mode {
            Some(s) => match u32::from_str_radix(s.get_ref().trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 && m & 0o600 == 0o600 && m & 0o007 == 0 => m,
                _ => {
                    self.at(s, format!("api.mode {:?}: use an octal mode that lets the owner read and write and gives others nothing, e.g. \"0600\" or \"0660\"", s.get_ref()));
                    0o600
                }
            },
            None => 0o600,
        };
        if let Some(g) = &a.group
            && g.is_empty()
        {
            self.problems
                .push("api.group is empty: name a group or remove the key".into());
        }
        let max_connections = self.count(&a.max_connections, 64, "api.max_connections", 1, 65_536);
        let max_connections_per_user = self.count(
            &a.max_connections_per_user,
            16.min(max_connections),
            "api.max_connections_per_user",
            1,
            max_connections,
        );
        ApiSpec {
            socket: a.socket.unwrap_or_else(|| default_socket(instance)),
            mode,
            group: a.group,
            max_connections,
            max_connections_per_user,
            request_timeout: self.duration(
                &a.request_timeout,
                Duration::from_secs(5),
                "api.request_timeout",
                (Duration::from_millis(100), Duration::from_secs(300)),
            ),
            max_request_bytes: self.count(
                &a.max_request_bytes,
                1 << 20,
                "api.max_request_bytes",
                4096,
                1 << 28,
            ),
        }
    }

    /// A count with a default and a range.
    fn count(&mut self, v: &Option<Spanned<u32>>, def: u32, name: &str, min: u32, max: u32) -> u32 {
        match v {
            Some(s) if !(min..=max).contains(s.get_ref()) => {
                self.at(
                    s,
                    format!(
                        "{name} = {} is out of range: use {min}..={max}",
                        s.get_ref()
                    ),
                );
                def
            }
            Some(s) => *s.get_ref(),
            None => def,
        }
    }

    /// A duration (humantime text) with a default and a range.
    fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        def: Duration,
        name: &str,
        (min, max): (Duration, Duration),
    ) -> Duration {
        let Some(s) = v else { return def };
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if (min..=max).contains(&d) => d,
            Ok(_) => {
                self.at(
                    s,
                    format!(
                        "{name} {:?} is out of range: use {}..={}",
                        s.get_ref(),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                def
            }
            Err(e) => {
                self.at(
                    s,
                    format!(
                        "{name} {:?}: {e}; write e.g. \"5s\" or \"500ms\"",
                        s.get_ref()
                    ),
                );
                def
            }
        }
    }

    fn vip(&mut self, v: raw::Vip, limits: &LimitsSpec, groups: &[GroupSpec]) -> Option<VipSpec> {
        let (addr, port) = match parse_addr_port(v.address.get_ref(), false) {
            Ok((a, Some(p))) => (a, p),
            Ok((_, None)) => unreachable!("port required"),
            Err(e) => {
                self.at(&v.address, format!("vip address: {e}"));
                return None;
            }
        };
        let id = VipId {
            addr,
            port,
            proto: v.protocol,
        };
        let health = match v.health {
            Some(h) => self.vip_health(h, id).unwrap_or_else(HealthCheck::none),
            None => HealthCheck::none(),
        };
        let mut backends = Vec::new();
        for b in v.backend {
            let what = format!("VIP {id}: backend {}", b.address.get_ref());
            let own = b.health.and_then(|h| self.check_keys(h, &what));
            match parse_addr_port(b.address.get_ref(), true) {
                Ok((ip, p)) => backends.push(BackendSpec {
                    addr: SocketAddr::new(ip, p.unwrap_or(port)),
                    weight: b.weight,
                    state: b.state,
                    health: own.map(Box::new),
                }),
                Err(e) => self.at(&b.address, format!("backend address of VIP {id}: {e}")),
            }
        }
        let (announce, ha_group) = self.vip_announce(id, &v.announce, &v.group, groups);
        let acl = Acl {
            allow: self.prefixes(id, "allow", &v.allow),
            deny: self.prefixes(id, "deny", &v.deny),
        };
        let spec = VipSpec {
            acl,
            id,
            mode: v.mode,
            hash: v.hash,
            conntrack: v.conntrack,
            table_size: v.table_size.unwrap_or(limits.table_size),
            health,
            announce,
            min_healthy: match &v.min_healthy {
                Some(m) if *m.get_ref() == 0 => {
                    self.at(m, format!("min_healthy of VIP {id} is 0: use at least 1 (a VIP with no backend up must not attract traffic)"));
                    1
                }
                Some(m) => *m.get_ref(),
                None => 1,
            },
            backends,
            ha_group,
        };
        // The line is only worked out for a problem.
        let (text, ends, span) = (self.text, &self.line_ends, v.address.span());
        let problems = &mut self.problems;
        check_vip(&spec, limits, &mut |p| {
            let line = line_of(text, ends, span.clone());
            problems.push(format!("line {line}: VIP {id}: {p}"))
        });
        Some(spec)
    }

    /// A VIP's `allow` or `deny` list; a prefix that does not parse is reported at its
    /// own line and left out.
    fn prefixes(&mut self, id: VipId, key: &str, list: &[Spanned<String>]) -> Vec<Prefix> {
        let mut out = Vec::new();
        for s in list {
            match s.get_ref().parse::<Prefix>() {
                Ok(p) => out.push(p),
                Err(e) => self.at(s, format!("VIP {id}: {key}: {e}")),
            }
        }
        out
    }

    /// A VIP's `announce` and `group`: how its address reaches this node. `true` or
    /// `"route"`: its host route goes into `[announce] table` (for BGP); `false` or
    /// `"none"`: no route; `"arp"` with `group = NAME`: the group's active node answers
    /// ARP/NDP for it (and no route). Absent: `[announce] enabled` decides the route.
    /// Returns (the route setting, the HA group).
    fn vip_announce(
        &mut self,
        id: VipId,
        announce: &Option<Spanned<raw::VipAnnounce>>,
        group: &Option<Spanned<String>>,
        groups: &[GroupSpec],
    ) -> (Option<bool>, Option<String>) {
        let word = announce.as_ref().map(|a| match a.get_ref() {
            raw::VipAnnounce::Route(true) => "route",
            raw::VipAnnounce::Route(false) => "none",
            raw::VipAnnounce::Word(w) => w.as_str(),
        });
        match (word, announce, group) {
            (None, _, None) => (None, None),
            (Some("route"), _, None) => (Some(true), None),
            (Some("none"), _, None) => (Some(false), None),
            (Some("arp"), Some(a), None) => {
                self.at(a, format!("VIP {id}: announce = \"arp\" needs group = NAME, one of the [[group]] names"));
                (None, None)
            }
            (Some("arp"), _, Some(g)) => {
                if !groups.iter().any(|x| &x.name == g.get_ref()) {
                    self.at(
                        g,
                        format!(
                            "VIP {id}: group {:?} is not defined: add a [[group]] with that name",
                            g.get_ref()
                        ),
                    );
                }
                (Some(false), Some(g.get_ref().clone()))
            }
            (Some("route" | "none"), _, Some(g)) | (None, _, Some(g)) => {
                self.at(
                    g,
                    format!("VIP {id}: group is set but announce is not \"arp\": add announce = \"arp\" (a VIP of an HA group is answered by proxy ARP/NDP, not routed)"),
                );
                (None, None)
            }
            (Some(w), Some(a), _) => {
                self.at(a, format!("VIP {id}: announce = {w:?}: use \"route\" (or true: a host route for BGP), \"none\" (or false) or \"arp\" (proxy ARP/NDP by an HA group's active node)"));
                (None, None)
            }
            (Some(_), None, _) => unreachable!("a word comes from a value"),
        }
    }

    /// A VIP's `[vip.health]`: its keys over the defaults; `type` is required.
    fn vip_health(&mut self, h: raw::Health, vip: VipId) -> Option<HealthCheck> {
        let Some(kind) = &h.kind else {
            self.problems.push(format!(
                "VIP {vip}: [vip.health] has no type: write type = \"{}\"",
                CheckType::NAMES.join("\" or \"")
            ));
            return None;
        };
        let span = kind.span();
        let keys = self.check_keys(h, &format!("VIP {vip}"))?;
        match HealthCheck::none().merged(&keys) {
            Ok(c) => Some(c),
            Err(problems) => {
                let line = self.line(span);
                for p in problems {
                    self.problems.push(format!("line {line}: VIP {vip}: {p}"));
                }
                None
            }
        }
    }

    /// The keys of a `[vip.health]` or `[vip.backend.health]` table, each parsed; `what`
    /// names the VIP or backend in messages; `None` if a value is malformed (reported).
    fn check_keys(&mut self, h: raw::Health, what: &str) -> Option<CheckOverride> {
        let before = self.problems.len();
        let dur = |me: &mut Self, s: &Option<Spanned<String>>, key: &str| {
            s.as_ref()
                .and_then(|s| match humantime::parse_duration(s.get_ref()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        me.at(
                            s,
                            format!(
                                "{what}: health.{key} {:?}: {e}; write e.g. \"2s\" or \"500ms\"",
                                s.get_ref()
                            ),
                        );
                        None
                    }
                })
        };
        let interval = dur(self, &h.interval, "interval");
        let timeout = dur(self, &h.timeout, "timeout");
        let kind = h
            .kind
            .as_ref()
            .and_then(|k| match k.get_ref().parse::<CheckType>() {
                Ok(t) => Some(t),
                Err(e) => {
                    self.at(k, format!("{what}: health.type: {e}"));
                    None
                }
            });
        let expect_status = h.expect_status.as_ref().and_then(|s| match parse_status_range(s.get_ref()) {
            Some(r) => Some(r),
            None => {
                self.at(s, format!("{what}: health.expect_status {:?}: write one status (\"200\") or a range (\"200-399\")", s.get_ref()));
                None
            }
        });
        (self.problems.len() == before).then_some(CheckOverride {
            kind,
            port: h.port,
            interval,
            timeout,
            rise: h.rise,
            fall: h.fall,
            path: h.path,
            host: h.host,
            expect_status,
            payload: h.payload,
            tls_server_name: h.tls_server_name,
            tls_verify: h.tls_verify,
            tls_ca: h.tls_ca,
        })
    }
}

fn default_tunnel_v4() -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(198, 18, 255, 0), 24)
}

fn default_tunnel_v6() -> (Ipv6Addr, u8) {
    (Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0), 96)
}

/// Parses `ADDR/LEN`.
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let l: u8 = l.parse().ok()?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    (l <= max).then_some((a, l))
}

fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let v = s.trim().parse().ok()?;
            Some((v, v))
        }
    }
}

/// Serde for optional durations as humantime text.
mod opt_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_text::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for durations as humantime text ("2s", "500ms").
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod property_tests;
