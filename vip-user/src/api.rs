//! The control API: one JSON request per line over a Unix socket, one JSON response
//! per line back. The socket's permissions (mode, group) decide who can connect;
//! SO_PEERCRED re-checks every connection, so a socket left with loose permissions by
//! mistake still refuses strangers.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{
    config::{Protocol, VipSpec},
    owner::Change,
};

/// A request from vipctl.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// A runtime change.
    Change {
        /// The change.
        change: Change,
    },
    /// Make the VIPs of this config text the running set (`dry_run`: only show the diff).
    Apply {
        /// Config file text (only its `[[vip]]` sections are used).
        text: String,
        /// Name of the file, for error messages.
        origin: String,
        /// Only compute the difference.
        dry_run: bool,
    },
    /// Everything: VIPs, backends, counters.
    Status,
    /// Which backend owns a flow.
    Flow {
        /// Protocol.
        proto: Protocol,
        /// Client address.
        src: SocketAddr,
        /// VIP address.
        dst: SocketAddr,
    },
    /// Re-read the config file (as SIGHUP).
    Reload,
}

/// vipd's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// What went wrong, said so the operator can fix it; `None` on success.
    pub error: Option<String>,
    /// The result (shape depends on the request).
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    /// A success.
    pub fn ok(result: impl Serialize) -> Self {
        Response {
            error: None,
            result: serde_json::to_value(result).expect("results serialize"),
        }
    }

    /// A failure.
    pub fn err(e: impl std::fmt::Display) -> Self {
        Response {
            error: Some(e.to_string()),
            result: serde_json::Value::Null,
        }
    }
}

/// The result of `apply` / `diff`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Differences, one per line (`+` added, `-` removed, `~` changed).
    pub changes: Vec<String>,
    /// Map writes made (0 for a dry run or no change).
    pub map_writes: u64,
}

/// Lines describing how `new` differs from `old` (VIPs matched by identity, backends by
/// address). Empty if they are the same.
pub fn diff(old: &[VipSpec], new: &[VipSpec]) -> Vec<String> {
    let mut out = Vec::new();
    for o in old {
        if !new.iter().any(|n| n.id == o.id) {
            out.push(format!("- vip {}", o.id));
        }
    }
    for n in new {
        let Some(o) = old.iter().find(|o| o.id == n.id) else {
            out.push(format!(
                "+ vip {} mode={} hash={} conntrack={} table_size={} backends={}",
                n.id,
                n.mode,
                n.hash,
                n.conntrack,
                n.table_size,
                n.backends.len()
            ));
            for b in &n.backends {
                out.push(format!(
                    "+ backend {} {} weight={} state={}",
                    n.id, b.addr, b.weight, b.state
                ));
            }
            continue;
        };
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("~ vip {} {name}: {a} -> {b}", n.id));
            }
        };
        field("mode", o.mode.to_string(), n.mode.to_string());
        field("hash", o.hash.to_string(), n.hash.to_string());
        field(
            "conntrack",
            o.conntrack.to_string(),
            n.conntrack.to_string(),
        );
        field(
            "table_size",
            o.table_size.to_string(),
            n.table_size.to_string(),
        );
        field(
            "health",
            format!("{:?}", o.health),
            format!("{:?}", n.health),
        );
        for ob in &o.backends {
            if !n.backends.iter().any(|b| b.addr == ob.addr) {
                out.push(format!("- backend {} {}", n.id, ob.addr));
            }
        }
        for nb in &n.backends {
            match o.backends.iter().find(|b| b.addr == nb.addr) {
                None => out.push(format!(
                    "+ backend {} {} weight={} state={}",
                    n.id, nb.addr, nb.weight, nb.state
                )),
                Some(ob) => {
                    if ob.weight != nb.weight {
                        out.push(format!(
                            "~ backend {} {} weight: {} -> {}",
                            n.id, nb.addr, ob.weight, nb.weight
                        ));
                    }
                    if ob.state != nb.state {
                        out.push(format!(
                            "~ backend {} {} state: {} -> {}",
                            n.id, nb.addr, ob.state, nb.state
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Why a client could not talk to vipd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error(
        "cannot connect to vipd at {path}: {source}. Is vipd running (`vipd run -c FILE`)? Is this the right socket (--socket, or --instance NAME for /run/vip/NAME.sock)? Are you root or in the socket's group?"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The conversation failed.
    #[error("talking to vipd at {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// vipd answered something unreadable.
    #[error(
        "vipd answered something this vipctl cannot read ({0}): are vipd and vipctl the same version?"
    )]
    Protocol(String),
}

/// Sends one request and waits for the response (blocking; vipctl is not async).
pub fn call(path: &Path, req: &Request) -> Result<Response, ClientError> {
    use std::io::{BufRead, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let io = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut r = std::io::BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol(
            "vipd closed the connection without answering (see its log: it may have refused your user id)".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another vipd answers on the socket.
    #[error(
        "another vipd is already serving {0}: stop it first, or give this instance another [api] socket"
    )]
    InUse(PathBuf),
    /// Creating, binding or setting permissions failed.
    #[error("setting up the API socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The group does not exist.
    #[error("api.group {0:?} does not exist: create it or fix the name")]
    NoGroup(String),
}

/// Who may use the API.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// The group allowed besides root (and vipd's own user).
    pub gid: Option<u32>,
}

/// Resolves a group name.
pub fn group_id(name: &str) -> Option<u32> {
    let content = std::fs::read_to_string("/etc/group").ok()?;
    content.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

/// Binds the socket with `mode` and `group`, replacing a stale socket file.
pub fn listen(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<(UnixListener, Access), ListenError> {
    let io = |source| ListenError::Io {
        path: path.to_owned(),
        source,
    };
    let gid = match group {
        Some(g) => Some(group_id(g).ok_or_else(|| ListenError::NoGroup(g.to_string()))?),
        None => None,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Bind under a restrictive umask so the socket is never briefly open to others.
    // SAFETY: umask has no preconditions; vipd sets it only here, before serving.
    let old = unsafe { libc::umask(0o077) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(io)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok((l, Access { gid }))
}

impl Access {
    /// Checks the peer with SO_PEERCRED: root, vipd's own user, or a member (primary or
    /// supplementary) of the configured group.
    pub fn allows(&self, s: &UnixStream) -> Result<(), String> {
        let cred = s
            .peer_cred()
            .map_err(|e| format!("SO_PEERCRED failed: {e}"))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if cred.uid() == 0 || cred.uid() == me {
            return Ok(());
        }
        if let Some(gid) = self.gid {
            if cred.gid() == gid {
                return Ok(());
            }
            if let Some(pid) = cred.pid()
                && supplementary_groups(pid).contains(&gid)
            {
                return Ok(());
            }
        }
        Err(format!(
            "uid {} (gid {}) is not allowed: only root{} may use the vipd API",
            cred.uid(),
            cred.gid(),
            if self.gid.is_some() {
                " and the configured api.group"
            } else {
                ""
            }
        ))
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Reads one request from a connection, asks `handle` for the answer, writes it back.
pub async fn serve_connection<F, Fut>(s: UnixStream, access: Access, handle: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if let Err(why) = access.allows(&s) {
        tracing::warn!(%why, "refused an API connection");
        let (_, mut w) = s.into_split();
        let mut line = serde_json::to_string(&Response::err(why)).expect("serializes");
        line.push('\n');
        let _ = w.write_all(line.as_bytes()).await;
        return;
    }
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    if r.read_line(&mut line).await.is_err() || line.is_empty() {
        return;
    }
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req).await,
        Err(e) => Response::err(format!(
            "vipd cannot read this request ({e}): are vipd and vipctl the same version?"
        )),
    };
    let mut out = serde_json::to_string(&resp).expect("responses serialize");
    out.push('\n');
    let _ = w.write_all(out.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn diff_names_every_change_and_nothing_else() {
        let a = Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[[vip.backend]]\naddress = \"198.18.2.2\"\n[[vip]]\naddress = \"198.18.1.11:80\"\n",
            "a",
        )
        .unwrap()
        .vips;
        let b = Config::parse(
            "[[vip]]\naddress = \"198.18.1.10:80\"\nhash = \"src\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\nweight = 3\n[[vip.backend]]\naddress = \"198.18.2.3\"\n[[vip]]\naddress = \"[2001:db8::1]:80\"\n",
            "b",
        )
        .unwrap()
        .vips;
        assert!(diff(&a, &a).is_empty());
        assert_eq!(
            diff(&a, &b),
            [
                "- vip 198.18.1.11:80/tcp",
                "~ vip 198.18.1.10:80/tcp hash: 5tuple -> src",
                "- backend 198.18.1.10:80/tcp 198.18.2.2:80",
                "~ backend 198.18.1.10:80/tcp 198.18.2.1:80 weight: 1 -> 3",
                "+ backend 198.18.1.10:80/tcp 198.18.2.3:80 weight=1 state=ready",
                "+ vip [2001:db8::1]:80/tcp mode=tunnel hash=5tuple conntrack=true table_size=65537 backends=0",
            ]
        );
    }
}
