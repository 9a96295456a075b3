//! How `vipctl` shows vipd's answers: aligned columns for people, JSON for programs.

use std::net::SocketAddr;

use super::{BackendCmd, CliError, Command, HaCmd, Output, UsageError, VipCmd};
use crate::{
    config::VipId,
    protocol::{
        ApplyResult, BackendState, BackendStatus, FlowAnswer, HaGroupStatus, NodeStatus, Response,
        Status,
    },
};

/// Renders vipd's response to `cmd` for people (table) or programs (JSON).
pub fn render(cmd: &Command, resp: Response, output: Output) -> Result<String, CliError> {
    let r = match resp {
        Response::Error(message) => return Err(CliError::Refused { message }),
        r => r,
    };
    let r = &r;
    if output == Output::Json {
        let value = match (cmd, r) {
            (Command::Vip(VipCmd::List), Response::Status(s)) => {
                serde_json::to_value(&s.vips).expect("serializes")
            }
            (Command::Backend(BackendCmd::List { vip }), Response::Status(s)) => {
                serde_json::to_value(backend_rows(s, vip.as_deref())?).expect("serializes")
            }
            (_, Response::Status(s)) => serde_json::to_value(s).expect("serializes"),
            (_, Response::Flow(f)) => serde_json::to_value(f).expect("serializes"),
            (_, Response::Applied(a)) => serde_json::to_value(a).expect("serializes"),
            (_, Response::Node(n)) => serde_json::to_value(n).expect("serializes"),
            (Command::Ha(HaCmd::Check { group }), Response::Ha(h)) => {
                super::ha::check(h, group)?;
                serde_json::to_value(h.iter().find(|g| &g.group == group)).expect("serializes")
            }
            (_, Response::Ha(h)) => serde_json::to_value(h).expect("serializes"),
            (
                _,
                Response::TraceStarted { .. } | Response::TraceRecord(_) | Response::TraceEnd(_),
            ) => serde_json::to_value(r).expect("serializes"),
            (_, Response::Error(_)) => unreachable!("errors returned above"),
        };
        return Ok(serde_json::to_string_pretty(&value).expect("serializes"));
    }
    if let Response::Node(n) = r {
        return Ok(node_table(n));
    }
    match cmd {
        Command::Vip(VipCmd::List) => {
            let s = status(r)?;
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
                "ACL",
            ])];
            for v in &s.vips {
                let up = v
                    .backends
                    .iter()
                    .filter(|b| b.state == BackendState::Up)
                    .count();
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
                    v.acl.to_string(),
                ]);
            }
            Ok(columns(&t) + &unmanaged_lines(s))
        }
        Command::Backend(BackendCmd::List { vip }) => {
            let s = status(r)?;
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
            for (v, b) in backend_rows(s, vip.as_deref())? {
                t.push(vec![
                    v.to_string(),
                    b.addr.to_string(),
                    b.id.to_string(),
                    b.weight.to_string(),
                    b.admin.to_string(),
                    if b.healthy { "pass" } else { "fail" }.into(),
                    b.state.to_string(),
                    b.slots.to_string(),
                    b.packets.to_string(),
                    b.bytes.to_string(),
                    b.new_flows.to_string(),
                ]);
            }
            Ok(columns(&t))
        }
        Command::Stats => {
            let s = status(r)?;
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
            let f = flow(r)?;
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
            if let Some(acl) = &f.acl {
                out += &format!("acl:      {acl}\n");
            }
            out += &format!("backend:  {}\n", show(f.backend));
            Ok(out)
        }
        Command::Apply { .. } | Command::Diff { .. } => {
            let a = applied(r)?;
            let mut out = if a.changes.is_empty() {
                "no changes\n".to_string()
            } else {
                a.changes.join("\n") + "\n"
            };
            if matches!(cmd, Command::Apply { .. }) {
                out += &format!("{} map writes\n", a.map_writes);
            }
            Ok(out + &warning_lines(a))
        }
        Command::Ha(HaCmd::Check { group }) => super::ha::check(ha(r)?, group).map_err(Into::into),
        Command::Ha(_) => {
            let mut t = vec![row(&[
                "GROUP",
                "ROLE",
                "SINCE",
                "TRANSITIONS",
                "INTERFACES",
                "VIPS",
                "HEALTHY_VIPS",
                "GARPS_SENT",
            ])];
            for g in ha(r)? {
                t.push(vec![
                    g.group.clone(),
                    g.role.name().to_string(),
                    since(g.since_unix_ms),
                    g.transitions.to_string(),
                    g.interfaces.join(","),
                    g.vips.join(","),
                    g.healthy_vips.to_string(),
                    g.garps_sent.to_string(),
                ]);
            }
            Ok(columns(&t))
        }
        _ => {
            let a = applied(r)?;
            let mut out = a.changes.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out += &format!("ok ({} map writes)\n", a.map_writes);
            Ok(out + &warning_lines(a))
        }
    }
}

/// The unmanaged VIPs under `vip list`, each with its backends, and what to do.
fn unmanaged_lines(s: &Status) -> String {
    if s.unmanaged.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nunmanaged (in the pinned maps, but in no config or state file; still forwarding as found):\n",
    );
    for u in &s.unmanaged {
        let backends: Vec<String> = u
            .backends
            .iter()
            .map(|b| format!("{} (id {}, {})", b.addr, b.id, b.state))
            .collect();
        out += &format!(
            "  {}  slot {}  backends: {}\n",
            u.vip,
            u.slot,
            if backends.is_empty() {
                "none".to_string()
            } else {
                backends.join(", ")
            }
        );
    }
    out + "`vipctl vip del VIP` removes one; `vipctl apply -f FILE` makes FILE's VIPs the running set and removes them all\n"
}

/// `warning: ...` lines, one per warning in the answer.
fn warning_lines(a: &ApplyResult) -> String {
    a.warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect()
}

type BackendRow<'a> = (VipId, &'a BackendStatus);

fn backend_rows<'a>(s: &'a Status, vip: Option<&str>) -> Result<Vec<BackendRow<'a>>, CliError> {
    let filter = vip
        .map(|v| v.parse::<VipId>())
        .transpose()
        .map_err(|source| UsageError::Address {
            what: "VIP",
            source,
        })?;
    if let Some(f) = filter
        && !s.vips.iter().any(|v| v.vip == f)
    {
        return Err(CliError::NoSuchVip { vip: f });
    }
    Ok(s.vips
        .iter()
        .filter(|v| filter.is_none_or(|f| v.vip == f))
        .flat_map(|v| v.backends.iter().map(move |b| (v.vip, b)))
        .collect())
}

/// The status in an answer to a status request.
fn status(r: &Response) -> Result<&Status, CliError> {
    match r {
        Response::Status(s) => Ok(s),
        other => Err(unexpected("status", other)),
    }
}

/// The answer to a flow request.
fn flow(r: &Response) -> Result<&FlowAnswer, CliError> {
    match r {
        Response::Flow(f) => Ok(f),
        other => Err(unexpected("flow", other)),
    }
}

/// The groups in an answer to an HA request.
fn ha(r: &Response) -> Result<&[HaGroupStatus], CliError> {
    match r {
        Response::Ha(h) => Ok(h),
        other => Err(unexpected("ha", other)),
    }
}

/// A role's age: "12s ago" (or "-" when never set).
fn since(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = crate::datapath::neigh::now_unix_ms();
    let secs = now.saturating_sub(unix_ms) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string() + " ago"
}

/// The answer to a change, apply or reload.
fn applied(r: &Response) -> Result<&ApplyResult, CliError> {
    match r {
        Response::Applied(a) => Ok(a),
        other => Err(unexpected("change", other)),
    }
}

/// `vipctl node status` (and the answer to drain / undrain) for people.
fn node_table(n: &NodeStatus) -> String {
    let out = format!(
        "node {}; VIP routes in table {} (protocol {})\n",
        if n.drained { "DRAINED" } else { "in service" },
        n.table,
        n.protocol
    );
    let mut t = vec![row(&["VIP", "STATE", "ROUTE", "WHY NOT"])];
    for v in &n.vips {
        t.push(vec![
            v.vip.to_string(),
            v.state.clone(),
            if v.route { "present" } else { "absent" }.into(),
            v.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out + &columns(&t)
}

fn unexpected(request: &'static str, answer: &Response) -> CliError {
    CliError::UnexpectedAnswer {
        request,
        answer: answer.kind(),
    }
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
