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

mod address;
mod names;

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
    /// A UDP datagram gets any answer (an ICMP port-unreachable fails it).
    Udp {
        /// Payload to send.
        payload: String,
    },
}

impl HealthCheck {
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
    pub announce: Option<String>,
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
    /// Prometheus listen address (`None` = no metrics endpoint).
    pub metrics: Option<SocketAddr>,
    /// VIPs in file order.
    pub vips: Vec<VipSpec>,
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
        let mut v = Validator {
            text,
            problems: Vec::new(),
            limits_override: limits,
        };
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

    /// The pin directory of this instance.
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.instance)
    }
}

/// `/sys/fs/bpf/vip/<instance>`.
pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/vip").join(instance)
}

/// The API socket of an instance whose config names none: `/run/vip/<instance>.sock`.
pub fn default_socket(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/vip/{instance}.sock"))
}

/// Validates a set of VIPs against limits (used for runtime changes too).
pub fn validate_vips(vips: &[VipSpec], limits: &LimitsSpec) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut backends = 0u64;
    for vip in vips {
        if !seen.insert(vip.id) {
            problems.push(format!("VIP {} is defined twice: remove one", vip.id));
        }
        check_vip(vip, limits, &mut |p| {
            problems.push(format!("VIP {}: {p}", vip.id))
        });
        backends += vip.backends.len() as u64;
    }
    if vips.len() as u64 > u64::from(limits.max_vips) {
        problems.push(format!(
            "{} VIPs but limits.max_vips is {}: raise [limits] max_vips (needs a datapath reload with `vipd down` + `vipd run`) or remove VIPs",
            vips.len(),
            limits.max_vips
        ));
    }
    if backends > u64::from(limits.max_backends) {
        problems.push(format!(
            "{backends} backends in all VIPs but limits.max_backends is {}: raise [limits] max_backends or remove backends",
            limits.max_backends
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_vip(vip: &VipSpec, limits: &LimitsSpec, report: &mut dyn FnMut(String)) {
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
    let h = &vip.health;
    if !matches!(h.kind, CheckKind::None) {
        if h.interval.is_zero() {
            report("health.interval is 0: use a duration such as \"2s\"".into());
        }
        if h.timeout.is_zero() || h.timeout > h.interval {
            report(format!(
                "health.timeout {} must be above 0 and at most health.interval {}",
                humantime::format_duration(h.timeout),
                humantime::format_duration(h.interval)
            ));
        }
        if h.rise == 0 || h.fall == 0 {
            report("health.rise and health.fall must be at least 1".into());
        }
        if vip.id.port == 0 && h.port.is_none() {
            report(
                "the VIP takes all ports, so its health check needs a port: set health.port".into(),
            );
        }
    }
    if let CheckKind::Http {
        path,
        expect_status: (lo, hi),
        ..
    } = &h.kind
    {
        if !path.starts_with('/') {
            report(format!("health.path {path:?} must start with '/'"));
        }
        if !(100..=599).contains(lo) || !(100..=599).contains(hi) || lo > hi {
            report(format!(
                "health.expect_status {lo}-{hi} is not a range of HTTP statuses: use e.g. \"200-399\""
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
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub socket: Option<PathBuf>,
        pub mode: Option<Spanned<String>>,
        pub group: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub listen: Spanned<String>,
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
        #[serde(default)]
        pub backend: Vec<Backend>,
        pub announce: Option<Spanned<String>>,
        pub group: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Health {
        #[serde(rename = "type")]
        pub kind: Spanned<String>,
        pub port: Option<u16>,
        pub interval: Option<Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub rise: Option<u32>,
        pub fall: Option<u32>,
        pub path: Option<String>,
        pub host: Option<String>,
        pub expect_status: Option<Spanned<String>>,
        pub payload: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub address: Spanned<String>,
        #[serde(default = "one")]
        pub weight: u32,
        #[serde(default)]
        pub state: AdminState,
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

struct Validator<'a> {
    text: &'a str,
    problems: Vec<String>,
    limits_override: Option<LimitsSpec>,
}

impl Validator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
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
            Ok(a) => Some(a),
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
            groups,
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
        let out = LimitsSpec {
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
        // Each VIP has two halves of M slots (double buffering) in one array.
        let slots = u64::from(out.max_vips) * 2 * u64::from(out.table_size);
        if slots > u64::from(u32::MAX) {
            self.problems.push(format!(
                "[limits]: max_vips {} x 2 x table_size {} = {slots} Maglev slots exceeds 2^32: lower one of them",
                out.max_vips, out.table_size
            ));
        }
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
        ApiSpec {
            socket: a.socket.unwrap_or_else(|| default_socket(instance)),
            mode,
            group: a.group,
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
            Some(h) => self.health(h, id).unwrap_or_else(HealthCheck::none),
            None => HealthCheck::none(),
        };
        let mut backends = Vec::new();
        for b in v.backend {
            match parse_addr_port(b.address.get_ref(), true) {
                Ok((ip, p)) => backends.push(BackendSpec {
                    addr: SocketAddr::new(ip, p.unwrap_or(port)),
                    weight: b.weight,
                    state: b.state,
                }),
                Err(e) => self.at(&b.address, format!("backend address of VIP {id}: {e}")),
            }
        }
        let announce = match (&v.announce, &v.group) {
            (None, None) => None,
            (Some(a), _) if a.get_ref() != "arp" => {
                self.at(a, format!("announce = {:?}: the only way is \"arp\" (proxy ARP/NDP by the group's active node)", a.get_ref()));
                None
            }
            (Some(a), None) => {
                self.at(a, format!("VIP {id}: announce = \"arp\" needs group = NAME, one of the [[group]] names"));
                None
            }
            (None, Some(g)) => {
                self.at(
                    g,
                    format!("VIP {id}: group is set but announce is not: add announce = \"arp\""),
                );
                None
            }
            (Some(_), Some(g)) => {
                if !groups.iter().any(|x| &x.name == g.get_ref()) {
                    self.at(
                        g,
                        format!(
                            "VIP {id}: group {:?} is not defined: add a [[group]] with that name",
                            g.get_ref()
                        ),
                    );
                }
                Some(g.get_ref().clone())
            }
        };
        let spec = VipSpec {
            id,
            mode: v.mode,
            hash: v.hash,
            conntrack: v.conntrack,
            table_size: v.table_size.unwrap_or(limits.table_size),
            health,
            backends,
            announce,
        };
        let line = self.line(v.address.span());
        check_vip(&spec, limits, &mut |p| {
            self.problems.push(format!("line {line}: VIP {id}: {p}"))
        });
        Some(spec)
    }

    fn health(&mut self, h: raw::Health, vip: VipId) -> Option<HealthCheck> {
        let dur = |me: &mut Self, s: &Option<Spanned<String>>, def: u64, what: &str| match s {
            None => Some(Duration::from_secs(def)),
            Some(s) => {
                match humantime::parse_duration(s.get_ref()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        me.at(s, format!("VIP {vip}: health.{what} {:?}: {e}; write e.g. \"2s\" or \"500ms\"", s.get_ref()));
                        None
                    }
                }
            }
        };
        let interval = dur(self, &h.interval, 2, "interval");
        let timeout = dur(self, &h.timeout, 1, "timeout");
        let kind = match h.kind.get_ref().as_str() {
            "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => {
                let expect_status = match &h.expect_status {
                    None => (200, 399),
                    Some(s) => match parse_status_range(s.get_ref()) {
                        Some(r) => r,
                        None => {
                            self.at(s, format!("VIP {vip}: health.expect_status {:?}: write one status (\"200\") or a range (\"200-399\")", s.get_ref()));
                            (200, 399)
                        }
                    },
                };
                CheckKind::Http {
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                    host: h.host.clone(),
                    expect_status,
                }
            }
            "udp" => CheckKind::Udp {
                payload: h.payload.clone().unwrap_or_default(),
            },
            other => {
                self.at(
                    &h.kind,
                    format!("VIP {vip}: health.type {other:?}: use none, tcp, http or udp"),
                );
                return None;
            }
        };
        let not_http = !matches!(kind, CheckKind::Http { .. });
        if not_http && (h.path.is_some() || h.host.is_some() || h.expect_status.is_some()) {
            self.at(&h.kind, format!("VIP {vip}: health.path/host/expect_status only apply to type = \"http\": remove them or change the type"));
        }
        if !matches!(kind, CheckKind::Udp { .. }) && h.payload.is_some() {
            self.at(
                &h.kind,
                format!("VIP {vip}: health.payload only applies to type = \"udp\""),
            );
        }
        Some(HealthCheck {
            kind,
            port: h.port,
            interval: interval?,
            timeout: timeout?,
            rise: h.rise.unwrap_or(2),
            fall: h.fall.unwrap_or(3),
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
