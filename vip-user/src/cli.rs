//! `vipctl`'s command line and output formatting (kept in the library so tests can run
//! the exact parser and printers the binary uses).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    api::{self, ApplyResult, Request, Response},
    config::{
        AdminState, BackendSpec, HashMode, HealthCheck, Mode, Protocol, VipId, VipSpec,
        parse_addr_port,
    },
    owner::{Change, FlowAnswer, Status},
};

/// Change and inspect a running vipd.
#[derive(Debug, Parser)]
#[command(name = "vipctl", version, about)]
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
    },
    /// Delete a VIP.
    Del {
        /// ADDR:PORT[/PROTO].
        vip: String,
    },
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

/// A usage error with what to write instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn vip_arg(s: &str) -> Result<VipId, UsageError> {
    s.parse().map_err(UsageError)
}

fn backend_arg(vip: &VipId, s: &str) -> Result<SocketAddr, UsageError> {
    let (ip, port) = parse_addr_port(s, true).map_err(UsageError)?;
    Ok(SocketAddr::new(ip, port.unwrap_or(vip.port)))
}

fn sock_arg(s: &str, what: &str) -> Result<SocketAddr, UsageError> {
    match parse_addr_port(s, false) {
        Ok((ip, Some(p))) if p != 0 => Ok(SocketAddr::new(ip, p)),
        Ok(_) => Err(UsageError(format!("{what} {s:?} needs a port"))),
        Err(e) => Err(UsageError(format!("{what}: {e}"))),
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
        }) => change(Change::VipAdd {
            spec: VipSpec {
                id: vip_arg(vip)?,
                mode: *mode,
                hash: *hash,
                conntrack: !no_conntrack,
                table_size: table_size.unwrap_or(0),
                health: HealthCheck::none(),
                backends: Vec::new(),
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
                return Err(UsageError(
                    "backend set needs --weight N and/or --state ready|drain|maint".into(),
                ));
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
                return Err(UsageError(
                    "the client and VIP addresses must be of the same family".into(),
                ));
            }
            Ok(Some(Request::Flow {
                proto: *proto,
                src,
                dst,
            }))
        }
        Command::Apply { file } | Command::Diff { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            Ok(Some(Request::Apply {
                text,
                origin: file.display().to_string(),
                dry_run: matches!(cmd, Command::Diff { .. }),
            }))
        }
        Command::Reload => Ok(Some(Request::Reload)),
    }
}

/// Renders vipd's response to `cmd` for people (table) or programs (JSON).
pub fn render(cmd: &Command, resp: &Response, output: Output) -> Result<String, String> {
    if let Some(e) = &resp.error {
        return Err(e.clone());
    }
    let r = &resp.result;
    if output == Output::Json {
        let value = match cmd {
            Command::Vip(VipCmd::List) => {
                let s: Status = parse(r)?;
                serde_json::to_value(&s.vips).expect("serializes")
            }
            Command::Backend(BackendCmd::List { vip }) => {
                let s: Status = parse(r)?;
                serde_json::to_value(backend_rows(&s, vip.as_deref())?).expect("serializes")
            }
            _ => r.clone(),
        };
        return Ok(serde_json::to_string_pretty(&value).expect("serializes"));
    }
    match cmd {
        Command::Vip(VipCmd::List) => {
            let s: Status = parse(r)?;
            let mut t = vec![row(&[
                "VIP",
                "MODE",
                "HASH",
                "CONNTRACK",
                "M",
                "UP",
                "PACKETS",
                "BYTES",
                "NEW_FLOWS",
                "DROPPED",
            ])];
            for v in &s.vips {
                let up = v.backends.iter().filter(|b| b.state == "up").count();
                t.push(vec![
                    v.vip.to_string(),
                    v.mode.clone(),
                    v.hash.clone(),
                    on_off(v.conntrack),
                    v.table_size.to_string(),
                    format!("{up}/{}", v.backends.len()),
                    v.packets.to_string(),
                    v.bytes.to_string(),
                    v.new_flows.to_string(),
                    v.dropped.to_string(),
                ]);
            }
            Ok(columns(&t))
        }
        Command::Backend(BackendCmd::List { vip }) => {
            let s: Status = parse(r)?;
            let mut t = vec![row(&[
                "VIP",
                "BACKEND",
                "ID",
                "WEIGHT",
                "ADMIN",
                "HEALTH",
                "STATE",
                "SLOTS",
                "PACKETS",
                "BYTES",
                "NEW_FLOWS",
            ])];
            for (v, b) in backend_rows(&s, vip.as_deref())? {
                t.push(vec![
                    v.to_string(),
                    b.addr.to_string(),
                    b.id.to_string(),
                    b.weight.to_string(),
                    b.admin.to_string(),
                    if b.healthy { "pass" } else { "fail" }.into(),
                    b.state.clone(),
                    b.slots.to_string(),
                    b.packets.to_string(),
                    b.bytes.to_string(),
                    b.new_flows.to_string(),
                ]);
            }
            Ok(columns(&t))
        }
        Command::Stats => {
            let s: Status = parse(r)?;
            let mut out = format!(
                "connections: {} of {} ({:.1}%)\n\n",
                s.conns,
                s.conn_capacity,
                100.0 * s.conns as f64 / s.conn_capacity.max(1) as f64
            );
            let mut t = vec![row(&[
                "VIP / BACKEND",
                "PACKETS",
                "BYTES",
                "NEW_FLOWS",
                "DROPPED",
            ])];
            for v in &s.vips {
                t.push(vec![
                    v.vip.to_string(),
                    v.packets.to_string(),
                    v.bytes.to_string(),
                    v.new_flows.to_string(),
                    v.dropped.to_string(),
                ]);
                for b in &v.backends {
                    t.push(vec![
                        format!("  {}", b.addr),
                        b.packets.to_string(),
                        b.bytes.to_string(),
                        b.new_flows.to_string(),
                        String::new(),
                    ]);
                }
            }
            out += &columns(&t);
            out += "\n";
            let mut t = vec![row(&["REASON", "PACKETS"])];
            for (name, n) in &s.reasons {
                t.push(vec![name.clone(), n.to_string()]);
            }
            out += &columns(&t);
            Ok(out)
        }
        Command::Flow { .. } => {
            let f: FlowAnswer = parse(r)?;
            let show = |a: Option<SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
            let mut out = format!("vip:      {}\nhash:     {:#010x}\n", f.vip, f.hash);
            out += &match f.slot {
                Some(s) => format!("maglev:   slot {s} -> {}\n", show(f.maglev_backend)),
                None => "maglev:   no table (no backend up)\n".into(),
            };
            out += &match &f.conntrack {
                Some(c) => format!(
                    "conntrack: backend id {} generation {} -> {}{}\n",
                    c.backend_id,
                    c.generation,
                    show(c.backend),
                    if c.usable {
                        ""
                    } else {
                        " (not usable: the flow will re-hash)"
                    }
                ),
                None => "conntrack: no entry\n".into(),
            };
            out += &format!("backend:  {}\n", show(f.backend));
            Ok(out)
        }
        Command::Apply { .. } | Command::Diff { .. } => {
            let a: ApplyResult = parse(r)?;
            let mut out = if a.changes.is_empty() {
                "no changes\n".to_string()
            } else {
                a.changes.join("\n") + "\n"
            };
            if matches!(cmd, Command::Apply { .. }) {
                out += &format!("{} map writes\n", a.map_writes);
            }
            Ok(out)
        }
        _ => {
            let a: ApplyResult = parse(r)?;
            let mut out = a.changes.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out += &format!("ok ({} map writes)\n", a.map_writes);
            Ok(out)
        }
    }
}

type BackendRow<'a> = (crate::config::VipId, &'a crate::owner::BackendStatus);

fn backend_rows<'a>(s: &'a Status, vip: Option<&str>) -> Result<Vec<BackendRow<'a>>, String> {
    let filter = vip.map(|v| v.parse::<VipId>()).transpose()?;
    if let Some(f) = filter
        && !s.vips.iter().any(|v| v.vip == f)
    {
        return Err(format!("no VIP {f}: `vipctl vip list` shows the VIPs"));
    }
    Ok(s.vips
        .iter()
        .filter(|v| filter.is_none_or(|f| v.vip == f))
        .flat_map(|v| v.backends.iter().map(move |b| (v.vip, b)))
        .collect())
}

fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| {
        format!("vipd answered something this vipctl cannot read ({e}): are vipd and vipctl the same version?")
    })
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns separated by two spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// The socket path from the flags.
pub fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/vip/{}.sock", cli.instance)))
}

/// Runs a command that talks to vipd; returns the text to print or the error.
pub fn run_remote(cli: &Cli, req: &Request) -> Result<String, String> {
    let resp = api::call(&socket_path(cli), req).map_err(|e| e.to_string())?;
    render(&cli.command, &resp, cli.output)
}
