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
pub mod render;
pub mod trace;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::{
        self, AddressError, AdminState, BackendSpec, HashMode, HealthCheck, Mode, Protocol, VipId,
        VipSpec, parse_addr_port,
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
    /// Run packets through a private copy of vip_lb loaded with a config (needs root; does
    /// not touch a running vipd).
    Trace(TraceArgs),
    /// HA groups: set a role (from keepalived's notify or ucarp's scripts), status,
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
    /// Config file whose VIPs and settings the private datapath gets.
    #[arg(long)]
    pub config: PathBuf,
    /// One flow: PROTO CLIENT:PORT VIP:PORT (a TCP SYN or a UDP datagram is built).
    #[arg(long, num_args = 3, value_names = ["PROTO", "SRC", "DST"], conflicts_with = "pcap", required_unless_present = "pcap")]
    pub flow: Option<Vec<String>>,
    /// A pcap file (Ethernet link type) whose packets are run in order.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
}

/// `vipctl vip ...`.
#[derive(Debug, Subcommand)]
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
    },
    /// Delete a VIP.
    Del {
        /// ADDR:PORT[/PROTO].
        vip: String,
    },
}

/// Health-check options of `vipctl vip add` (the same keys as `[vip.health]`).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// none, tcp, http or udp.
    #[arg(long, default_value = "none")]
    pub check: String,
    /// Port to probe (default: each backend's port).
    #[arg(long)]
    pub check_port: Option<u16>,
    /// HTTP path.
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP Host header.
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP status (range) that counts as healthy, e.g. 200-399.
    #[arg(long)]
    pub expect_status: Option<String>,
    /// UDP payload to send.
    #[arg(long)]
    pub payload: Option<String>,
    /// Time between checks, e.g. 2s.
    #[arg(long, default_value = "2s")]
    pub interval: String,
    /// Time a check may take, e.g. 1s.
    #[arg(long, default_value = "1s")]
    pub timeout: String,
    /// Passes that bring a backend up.
    #[arg(long, default_value_t = 2)]
    pub rise: u32,
    /// Failures that take a backend down.
    #[arg(long, default_value_t = 3)]
    pub fall: u32,
}

impl CheckArgs {
    /// The health check, parsed by the config file's own rules (so errors read alike).
    pub fn health(&self) -> Result<HealthCheck, UsageError> {
        let q = |s: &str| format!("{s:?}");
        let mut toml = format!(
            "[[vip]]\naddress = \"192.0.2.1:1\"\n[vip.health]\ntype = {}\ninterval = {}\ntimeout = {}\nrise = {}\nfall = {}\n",
            q(&self.check),
            q(&self.interval),
            q(&self.timeout),
            self.rise,
            self.fall
        );
        for (k, v) in [
            ("path", &self.path),
            ("host", &self.host),
            ("expect_status", &self.expect_status),
            ("payload", &self.payload),
        ] {
            if let Some(v) = v {
                toml += &format!("{k} = {}\n", q(v));
            }
        }
        if let Some(p) = self.check_port {
            toml += &format!("port = {p}\n");
        }
        match crate::config::Config::parse(&toml, "options") {
            Ok(c) => Ok(c.vips[0].health.clone()),
            Err(e) => {
                let msg = e
                    .to_string()
                    .replace("options: 1 problem(s):\n  - ", "")
                    .replace("VIP 192.0.2.1:1/tcp: ", "")
                    .replace("health.", "--")
                    .replace("--type", "--check");
                // The line numbers are of the generated text, not of anything the user wrote.
                let msg = match msg.strip_prefix("line ") {
                    Some(rest) => rest
                        .split_once(": ")
                        .map_or(msg.clone(), |(_, m)| m.to_string()),
                    None => msg,
                };
                Err(UsageError::HealthCheck { problem: msg })
            }
        }
    }
}

/// `vipctl backend ...`.
#[derive(Debug, Subcommand)]
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
    /// `vipctl ha` without vipd, or an unfit group for `vipctl ha check`.
    #[error(transparent)]
    Ha(#[from] ha::HaCliError),
    /// `vipctl trace` failed (boxed: it carries the loader's errors, which are large).
    #[error(transparent)]
    Trace(Box<trace::TraceError>),
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
        }) => change(Change::VipAdd {
            spec: VipSpec {
                id: vip_arg(vip)?,
                mode: *mode,
                hash: *hash,
                conntrack: !no_conntrack,
                table_size: table_size.unwrap_or(0),
                health: check.health()?,
                backends: Vec::new(),
                announce: None,
            },
        }),
        Command::Vip(VipCmd::Del { vip }) => change(Change::VipDel { vip: vip_arg(vip)? }),
        Command::Backend(BackendCmd::Add {
            vip,
            backend,
            weight,
            state,
        }) => {
            let vip = vip_arg(vip)?;
            change(Change::BackendAdd {
                vip,
                backend: BackendSpec {
                    addr: backend_arg(&vip, backend)?,
                    weight: *weight,
                    state: *state,
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
        Command::Ha(HaCmd::Set { group, role }) => Ok(Some(Request::HaSet {
            group: group.clone(),
            role: *role,
        })),
        Command::Ha(HaCmd::Status | HaCmd::Check { .. }) => Ok(Some(Request::HaStatus)),
        Command::Trace(_) => Ok(None),
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
    let resp = match client::call(&socket_path(cli), req) {
        Err(client::ClientError::Connect { .. })
            if let Command::Ha(HaCmd::Set { group, role }) = &cli.command =>
        {
            return Ok(ha::set_offline(&cli.instance, group, *role)?);
        }
        r => r?,
    };
    render::render(&cli.command, resp, cli.output)
}
