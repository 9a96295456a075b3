//! `vipctl`: its command line (clap), the request each command sends, and running it.
//! Kept in the library, with [`render`] and [`trace`], so tests run the exact parser and
//! printers the binary uses.

// The doc comments of the clap types are vipctl's --help text, where `[ADDR]:PORT` and
// `<instance>` are literal text, not links or HTML.
#![allow(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    reason = "clap help text"
)]

pub mod client;
pub mod ha;
pub mod live;
pub mod render;
pub mod trace;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::{
        self, Acl, AddressError, AdminState, BackendSpec, CheckOverride, HashMode, HealthCheck,
        Mode, Prefix, Protocol, VipId, VipSpec, parse_addr_port,
    },
    protocol::{Change, HaRole, Request},
};

/// Change and inspect a running vipd.
#[derive(Debug, Parser)]
#[command(
    name = "vipctl",
    version,
    about = "Change and inspect a running vipd (JSON over its Unix socket)."
)]
pub struct Cli {
    /// vipd's API socket (default: /run/vip/<instance>.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Instance name, used to find the socket when --socket is not given.
    #[arg(long, global = true, default_value = "default")]
    pub instance: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How long to wait for vipd to accept and answer ("30s", "2m").
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: std::time::Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// vipctl commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// VIPs: add, del, list.
    #[command(subcommand)]
    Vip(VipCmd),
    /// Backends: add, del, set, drain, list.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// Counters of VIPs and backends, connection table, packets by reason.
    Stats,
    /// Which backend owns a flow (from the live tables): `flow tcp CLIENT:PORT VIP:PORT`.
    Flow {
        /// tcp or udp.
        proto: Protocol,
        /// Client address and port, e.g. 198.18.0.1:40000 or [2001:db8::1]:40000.
        src: String,
        /// VIP address and port.
        dst: String,
    },
    /// Make the VIPs in FILE the running set (idempotent: unchanged VIPs are not touched).
    Apply {
        /// Config file (only its [[vip]] sections are used).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Show what `apply -f FILE` would change.
    Diff {
        /// Config file.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Make vipd re-read its config file (as SIGHUP).
    Reload,
    /// This node's VIP routes (announced by BGP through BIRD): drain, undrain, status.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Run packets through a private copy of vip_lb loaded with a config (needs root; does
    /// not touch a running vipd).
    Trace(TraceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `source <(vipctl completions bash)`.
    Completions {
        /// The shell.
        shell: crate::manual::Shell,
    },
    /// Write vipctl's man pages (one per command and subcommand) into a directory.
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// HA groups: set a role (from keepalived's notify FIFO script or ucarp's scripts), status,
    /// check (keepalived's track_script).
    #[command(subcommand)]
    Ha(HaCmd),
}

/// `vipctl ha ...`.
#[derive(Debug, Subcommand)]
pub enum HaCmd {
    /// Set GROUP's role on this node (idempotent). With vipd down the pinned role map
    /// is written directly.
    Set {
        /// The [[group]] name.
        group: String,
        /// active, standby or fault.
        #[arg(value_enum)]
        role: HaRole,
    },
    /// Every group: role, since, VIPs, announcements sent.
    Status,
    /// Exit 0 when vipd serves and GROUP has a VIP with a backend up, 1 otherwise.
    Check {
        /// The [[group]] name.
        group: String,
    },
}

/// `vipctl trace` arguments.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Config file whose VIPs and settings the private datapath gets (replay).
    #[arg(long, required_unless_present = "live")]
    pub config: Option<PathBuf>,
    /// One flow: PROTO CLIENT:PORT VIP:PORT (a TCP SYN or a UDP datagram is built).
    #[arg(long, num_args = 3, value_names = ["PROTO", "SRC", "DST"], conflicts_with = "pcap", required_unless_present_any = ["pcap", "live"])]
    pub flow: Option<Vec<String>>,
    /// A pcap or pcapng capture (Ethernet link type) whose packets are run in order.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Trace the running vipd's datapath on live traffic instead of replaying.
    #[arg(long, requires = "match_expr", conflicts_with_all = ["config", "flow", "pcap"])]
    pub live: bool,
    /// With --live: which packets, e.g. 'src 198.18.0.0/16 and dst port 443' (terms:
    /// tcp udp icmp icmp6 ip ip6, [src|dst] [host|net] ADDR[/LEN], [src|dst] port N,
    /// vip ADDR; joined by 'and').
    #[arg(long = "match", value_name = "EXPR")]
    pub match_expr: Option<String>,
    /// With --live: stop after N packets.
    #[arg(long, requires = "live")]
    pub count: Option<u64>,
    /// With --live: stop after this long ("10s", "2m").
    #[arg(long, requires = "live", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// With --live: write the matching frames (as received, up to --snaplen bytes) to
    /// this pcapng file.
    #[arg(long, requires = "live", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// With --live: frame bytes captured per packet (at most 256).
    #[arg(long, requires = "live", default_value_t = 128)]
    pub snaplen: u32,
}

/// `vipctl node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Withdraw every VIP route of this node (routers send new flows elsewhere; the
    /// datapath keeps forwarding what still arrives). Kept across vipd restarts.
    Drain,
    /// Announce the VIP routes again (those whose VIPs are ready).
    Undrain,
    /// Per VIP: announced, or why not.
    Status,
}

/// `vipctl vip ...`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per vipctl run; boxing would only obscure clap's derive"
)]
pub enum VipCmd {
    /// List VIPs.
    List,
    /// Add a VIP (no backends yet; health check none).
    Add {
        /// ADDR:PORT[/PROTO], ADDR:* for all ports, IPv6 as [ADDR]:PORT.
        vip: String,
        /// tunnel or dsr-l2.
        #[arg(long, default_value = "tunnel")]
        mode: Mode,
        /// 5tuple or src.
        #[arg(long, default_value = "5tuple")]
        hash: HashMode,
        /// Do not use the connection table.
        #[arg(long)]
        no_conntrack: bool,
        /// Maglev table size (prime; default: the daemon's limits.table_size).
        #[arg(long)]
        table_size: Option<u32>,
        /// Health check of the backends.
        #[command(flatten)]
        check: CheckArgs,
        /// Source prefix that may open flows (repeatable); with any, sources that match
        /// no prefix are refused. The longest prefix across --allow and --deny decides.
        #[arg(long, value_name = "PREFIX")]
        allow: Vec<String>,
        /// Source prefix that may not open flows (repeatable).
        #[arg(long, value_name = "PREFIX")]
        deny: Vec<String>,
    },
    /// Replace a VIP's source access list (no --allow and no --deny: remove it). Applies
    /// to new flows; flows already in the connection table keep going.
    Acl {
        /// ADDR:PORT[/PROTO].
        vip: String,
        /// Source prefix that may open flows (repeatable).
        #[arg(long, value_name = "PREFIX")]
        allow: Vec<String>,
        /// Source prefix that may not open flows (repeatable).
        #[arg(long, value_name = "PREFIX")]
        deny: Vec<String>,
    },
    /// Delete a VIP.
    Del {
        /// ADDR:PORT[/PROTO].
        vip: String,
    },
}

/// Health-check options of `vipctl vip add` and `vipctl backend add` (the same keys as
/// `[vip.health]`). For a VIP, an option not given takes the default shown; for a
/// backend, it takes the VIP's value (a backend given none has exactly the VIP's check).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// none, tcp, http, https or udp [VIP default: none].
    #[arg(long)]
    pub check: Option<String>,
    /// Port to probe [VIP default: each backend's port].
    #[arg(long)]
    pub check_port: Option<u16>,
    /// HTTP(S) path [VIP default: /].
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP(S) Host header [VIP default: the backend address].
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP(S) status (range) that counts as healthy, e.g. 200-399 [VIP default: 200-399].
    #[arg(long)]
    pub expect_status: Option<String>,
    /// UDP payload to send.
    #[arg(long)]
    pub payload: Option<String>,
    /// HTTPS: SNI and the name the certificate must hold [VIP default: the host without
    /// its port, else the backend's IP].
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// HTTPS: verify the certificate (false accepts any, e.g. self-signed) [VIP default: true].
    #[arg(long)]
    pub tls_verify: Option<bool>,
    /// HTTPS: a CA (PEM file, absolute path on vipd's host) trusted besides the system store.
    #[arg(long)]
    pub tls_ca: Option<String>,
    /// Time between checks, e.g. 2s [VIP default: 2s].
    #[arg(long)]
    pub interval: Option<String>,
    /// Time a check may take, e.g. 1s [VIP default: 1s].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Passes that bring a backend up [VIP default: 2].
    #[arg(long)]
    pub rise: Option<u32>,
    /// Failures that take a backend down [VIP default: 3].
    #[arg(long)]
    pub fall: Option<u32>,
}

impl CheckArgs {
    /// The options given, as the keys of a `[vip.health]` table.
    fn toml_keys(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let mut toml = String::new();
        for (k, v) in [
            ("type", &self.check),
            ("path", &self.path),
            ("host", &self.host),
            ("expect_status", &self.expect_status),
            ("payload", &self.payload),
            ("tls_server_name", &self.tls_server_name),
            ("tls_ca", &self.tls_ca),
            ("interval", &self.interval),
            ("timeout", &self.timeout),
        ] {
            if let Some(v) = v {
                toml += &format!("{k} = {}\n", q(v));
            }
        }
        for (k, v) in [
            ("port", self.check_port.map(u32::from)),
            ("rise", self.rise),
            ("fall", self.fall),
        ] {
            if let Some(v) = v {
                toml += &format!("{k} = {v}\n");
            }
        }
        if let Some(v) = self.tls_verify {
            toml += &format!("tls_verify = {v}\n");
        }
        toml
    }

    /// A VIP's health check, parsed by the config file's own rules (so errors read alike).
    pub fn health(&self) -> Result<HealthCheck, UsageError> {
        let mut keys = self.toml_keys();
        if self.check.is_none() {
            keys.insert_str(0, "type = \"none\"\n");
        }
        let toml = format!("[[vip]]\naddress = \"192.0.2.1:1\"\n[vip.health]\n{keys}");
        match crate::config::Config::parse(&toml, "options") {
            Ok(c) => Ok(c.vips[0].health.clone()),
            Err(e) => Err(option_problem(&e)),
        }
    }

    /// A backend's own check keys (`None` if no option is given). Only each value is
    /// checked here: vipd checks them merged over the VIP's check.
    pub fn backend_keys(&self) -> Result<Option<CheckOverride>, UsageError> {
        let keys = self.toml_keys();
        if keys.is_empty() {
            return Ok(None);
        }
        crate::config::Config::parse_check_keys(&keys, "options")
            .map(Some)
            .map_err(|e| option_problem(&e))
    }
}

/// A config problem about generated text, said in terms of the options given.
fn option_problem(e: &config::ConfigError) -> UsageError {
    let mut msg = e
        .to_string()
        .replace("options: 1 problem(s):\n  - ", "")
        .replace("VIP 192.0.2.1:1/tcp: ", "")
        .replace("backend: ", "")
        .replace("health.type", "--check")
        .replace("health.port", "--check-port");
    // Each key as its option is spelled.
    for key in [
        "expect_status",
        "tls_server_name",
        "tls_verify",
        "tls_ca",
        "path",
        "host",
        "payload",
        "interval",
        "timeout",
        "rise",
        "fall",
    ] {
        msg = msg.replace(
            &format!("health.{key}"),
            &format!("--{}", key.replace('_', "-")),
        );
    }
    for t in config::CheckType::NAMES {
        msg = msg.replace(&format!("type = \"{t}\""), &format!("--check {t}"));
    }
    // The line numbers are of the generated text, not of anything the user wrote.
    let msg = match msg.strip_prefix("line ") {
        Some(rest) => rest
            .split_once(": ")
            .map_or(msg.clone(), |(_, m)| m.to_string()),
        None => msg,
    };
    UsageError::HealthCheck { problem: msg }
}

/// `vipctl backend ...`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per vipctl run; boxing would only obscure clap's derive"
)]
pub enum BackendCmd {
    /// List backends (of one VIP, or all).
    List {
        /// ADDR:PORT[/PROTO].
        vip: Option<String>,
    },
    /// Add a backend to a VIP.
    Add {
        /// ADDR:PORT[/PROTO].
        vip: String,
        /// Backend ADDR[:PORT] (port defaults to the VIP's).
        backend: String,
        /// Weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// ready, drain or maint.
        #[arg(long, default_value = "ready")]
        state: AdminState,
        /// This backend's own health-check keys, each in place of the VIP's.
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Remove a backend (its flows re-hash).
    Del {
        /// ADDR:PORT[/PROTO].
        vip: String,
        /// Backend ADDR[:PORT].
        backend: String,
    },
    /// Change a backend's weight and/or admin state.
    Set {
        /// ADDR:PORT[/PROTO].
        vip: String,
        /// Backend ADDR[:PORT].
        backend: String,
        /// New weight.
        #[arg(long)]
        weight: Option<u32>,
        /// ready, drain or maint.
        #[arg(long)]
        state: Option<AdminState>,
    },
    /// Drain a backend: no new flows, existing flows stay.
    Drain {
        /// ADDR:PORT[/PROTO].
        vip: String,
        /// Backend ADDR[:PORT].
        backend: String,
    },
}

/// A command line vipctl cannot act on; nothing was sent to vipd. Each message says
/// what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// An address argument is malformed.
    #[error("{what}: {source}")]
    Address {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: AddressError,
    },
    /// An address argument needs a port.
    #[error("{what} {text:?} needs a port")]
    NeedsPort {
        /// Which argument.
        what: &'static str,
        /// What was given.
        text: String,
    },
    /// `backend set` without anything to set.
    #[error("backend set needs --weight N and/or --state ready|drain|maint")]
    NothingToSet,
    /// A flow whose client and VIP are of different address families.
    #[error("the client and VIP addresses must be of the same family")]
    MixedFamilies,
    /// The config file to apply could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An --allow or --deny prefix is malformed.
    #[error("--{option} {problem}")]
    Prefix {
        /// `allow` or `deny`.
        option: &'static str,
        /// What is wrong and how to write it.
        problem: String,
    },
    /// The health-check options do not make a valid check (the config file's own rule,
    /// with the option names in place of the file's keys).
    #[error("{problem}")]
    HealthCheck {
        /// The rule that was broken and how to fix it.
        problem: String,
    },
}

/// Why vipctl could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong; nothing was sent.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// vipd could not be reached, or answered something unreadable.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// vipd refused or failed the request; nothing was changed unless it says so.
    #[error("{message}")]
    Refused {
        /// vipd's explanation.
        message: String,
    },
    /// vipd answered with another kind of result than the request calls for.
    #[error(
        "vipd answered a {request} request with a {answer} result: are vipd and vipctl the same version?"
    )]
    UnexpectedAnswer {
        /// The request.
        request: &'static str,
        /// What came back.
        answer: &'static str,
    },
    /// The VIP named on the command line is not running.
    #[error("no VIP {vip}: `vipctl vip list` shows the VIPs")]
    NoSuchVip {
        /// The VIP asked about.
        vip: VipId,
    },
    /// The man pages could not be written.
    #[error(transparent)]
    Man(Box<crate::manual::ManError>),
    /// `vipctl ha` without vipd, or an unfit group for `vipctl ha check`.
    #[error(transparent)]
    Ha(#[from] ha::HaCliError),
    /// `vipctl trace` failed (boxed: it carries the loader's errors, which are large).
    #[error(transparent)]
    Trace(Box<trace::TraceError>),
    /// `vipctl trace --live` failed.
    #[error(transparent)]
    Live(Box<live::LiveError>),
}

impl From<crate::manual::ManError> for CliError {
    fn from(e: crate::manual::ManError) -> Self {
        CliError::Man(Box::new(e))
    }
}

impl From<trace::TraceError> for CliError {
    fn from(e: trace::TraceError) -> Self {
        CliError::Trace(Box::new(e))
    }
}

fn vip_arg(s: &str) -> Result<VipId, UsageError> {
    s.parse().map_err(|source| UsageError::Address {
        what: "VIP",
        source,
    })
}

fn backend_arg(vip: &VipId, s: &str) -> Result<SocketAddr, UsageError> {
    let (ip, port) = parse_addr_port(s, true).map_err(|source| UsageError::Address {
        what: "backend",
        source,
    })?;
    Ok(SocketAddr::new(ip, port.unwrap_or(vip.port)))
}

/// An `ADDR:PORT` argument (a client or VIP address of a flow).
pub fn sock_arg(s: &str, what: &'static str) -> Result<SocketAddr, UsageError> {
    match parse_addr_port(s, false) {
        Ok((ip, Some(p))) if p != 0 => Ok(SocketAddr::new(ip, p)),
        Ok(_) => Err(UsageError::NeedsPort {
            what,
            text: s.into(),
        }),
        Err(source) => Err(UsageError::Address { what, source }),
    }
}

/// The access list of `--allow` and `--deny` prefixes (vipd checks the list against the
/// VIP's family, as it checks the config file's).
fn acl_args(allow: &[String], deny: &[String]) -> Result<Acl, UsageError> {
    let parse = |option: &'static str, list: &[String]| {
        list.iter()
            .map(|p| {
                p.parse::<Prefix>()
                    .map_err(|problem| UsageError::Prefix { option, problem })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Acl {
        allow: parse("allow", allow)?,
        deny: parse("deny", deny)?,
    })
}

/// The API request for a command (`None` for commands that do not talk to vipd).
pub fn request(cmd: &Command) -> Result<Option<Request>, UsageError> {
    let change = |c| Ok(Some(Request::Change { change: c }));
    match cmd {
        Command::Vip(VipCmd::List) | Command::Backend(BackendCmd::List { .. }) | Command::Stats => {
            Ok(Some(Request::Status))
        }
        Command::Vip(VipCmd::Add {
            vip,
            mode,
            hash,
            no_conntrack,
            table_size,
            check,
            allow,
            deny,
        }) => change(Change::VipAdd {
            spec: Box::new(VipSpec {
                id: vip_arg(vip)?,
                mode: *mode,
                hash: *hash,
                conntrack: !no_conntrack,
                table_size: table_size.unwrap_or(0),
                health: check.health()?,
                backends: Vec::new(),
                announce: None,
                min_healthy: 1,
                ha_group: None,
                acl: acl_args(allow, deny)?,
            }),
        }),
        Command::Vip(VipCmd::Acl { vip, allow, deny }) => change(Change::VipAcl {
            vip: vip_arg(vip)?,
            acl: acl_args(allow, deny)?,
        }),
        Command::Vip(VipCmd::Del { vip }) => change(Change::VipDel { vip: vip_arg(vip)? }),
        Command::Backend(BackendCmd::Add {
            vip,
            backend,
            weight,
            state,
            check,
        }) => {
            let vip = vip_arg(vip)?;
            change(Change::BackendAdd {
                vip,
                backend: BackendSpec {
                    addr: backend_arg(&vip, backend)?,
                    weight: *weight,
                    state: *state,
                    health: check.backend_keys()?.map(Box::new),
                },
            })
        }
        Command::Backend(BackendCmd::Del { vip, backend }) => {
            let vip = vip_arg(vip)?;
            change(Change::BackendDel {
                vip,
                addr: backend_arg(&vip, backend)?,
            })
        }
        Command::Backend(BackendCmd::Set {
            vip,
            backend,
            weight,
            state,
        }) => {
            if weight.is_none() && state.is_none() {
                return Err(UsageError::NothingToSet);
            }
            let vip = vip_arg(vip)?;
            change(Change::BackendSet {
                vip,
                addr: backend_arg(&vip, backend)?,
                weight: *weight,
                state: *state,
            })
        }
        Command::Backend(BackendCmd::Drain { vip, backend }) => {
            let vip = vip_arg(vip)?;
            change(Change::BackendSet {
                vip,
                addr: backend_arg(&vip, backend)?,
                weight: None,
                state: Some(AdminState::Drain),
            })
        }
        Command::Flow { proto, src, dst } => {
            let src = sock_arg(src, "client address")?;
            let dst = sock_arg(dst, "VIP address")?;
            if src.is_ipv4() != dst.is_ipv4() {
                return Err(UsageError::MixedFamilies);
            }
            Ok(Some(Request::Flow {
                proto: *proto,
                src,
                dst,
            }))
        }
        Command::Apply { file } | Command::Diff { file } => {
            let text = std::fs::read_to_string(file).map_err(|source| UsageError::ReadFile {
                path: file.clone(),
                source,
            })?;
            Ok(Some(Request::Apply {
                text,
                origin: file.display().to_string(),
                dry_run: matches!(cmd, Command::Diff { .. }),
            }))
        }
        Command::Reload => Ok(Some(Request::Reload)),
        Command::Node(NodeCmd::Drain) => Ok(Some(Request::NodeDrain { drained: true })),
        Command::Node(NodeCmd::Undrain) => Ok(Some(Request::NodeDrain { drained: false })),
        Command::Node(NodeCmd::Status) => Ok(Some(Request::NodeStatus)),
        Command::Ha(HaCmd::Set { group, role }) => Ok(Some(Request::HaSet {
            group: group.clone(),
            role: *role,
        })),
        Command::Ha(HaCmd::Status | HaCmd::Check { .. }) => Ok(Some(Request::HaStatus)),
        Command::Trace(_) | Command::Completions { .. } | Command::Man { .. } => Ok(None),
    }
}

/// The socket path from the flags.
pub fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| config::default_socket(&cli.instance))
}

/// Runs a command that talks to vipd; returns the text to print. `vipctl ha set` with
/// vipd not answering writes the pinned role map itself.
pub fn run_remote(cli: &Cli, req: &Request) -> Result<String, CliError> {
    let resp = match client::call(&socket_path(cli), req, cli.wait) {
        Err(client::ClientError::Connect { .. })
            if let Command::Ha(HaCmd::Set { group, role }) = &cli.command =>
        {
            return Ok(ha::set_offline(&cli.instance, group, *role)?);
        }
        r => r?,
    };
    render::render(&cli.command, resp, cli.output)
}
