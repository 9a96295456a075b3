//! The control API: one JSON request per line over a Unix socket, one JSON response
//! per line back. The socket's permissions (mode, group) decide who can connect;
//! SO_PEERCRED re-checks every connection, so a socket left with loose permissions by
//! mistake still refuses strangers.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::protocol::{Request, Response};

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

/// Why a connection to the API was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The peer's credentials could not be read.
    #[error("SO_PEERCRED failed: {0}")]
    NoCredentials(#[source] std::io::Error),
    /// The peer is neither root, vipd's user nor in the configured group.
    #[error(
        "uid {uid} (gid {gid}) is not allowed: only root{} may use the vipd API",
        if *group_configured { " and the configured api.group" } else { "" }
    )]
    NotAllowed {
        /// The peer's user id.
        uid: u32,
        /// The peer's primary group id.
        gid: u32,
        /// Whether an api.group may use the socket too.
        group_configured: bool,
    },
}

impl Access {
    /// Checks the peer with SO_PEERCRED: root, vipd's own user, or a member (primary or
    /// supplementary) of the configured group.
    pub fn allows(&self, s: &UnixStream) -> Result<(), Refused> {
        let cred = s.peer_cred().map_err(Refused::NoCredentials)?;
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
        Err(Refused::NotAllowed {
            uid: cred.uid(),
            gid: cred.gid(),
            group_configured: self.gid.is_some(),
        })
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

    #[tokio::test]
    async fn the_socket_is_private_by_default_and_not_stolen_from_a_running_vipd() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vip-api-{}", std::process::id()));
        let path = dir.join("sub/api.sock");
        let (_l, _) = listen(&path, 0o600, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = listen(&path, 0o600, None).unwrap_err();
        assert!(
            e.to_string().contains("another vipd is already serving"),
            "{e}"
        );
        let e = listen(&dir.join("other.sock"), 0o660, Some("no-such-group-vip")).unwrap_err();
        assert!(
            e.to_string()
                .contains("api.group \"no-such-group-vip\" does not exist"),
            "{e}"
        );
        // A stale socket file (no listener) is replaced.
        drop(_l);
        // SAFETY: geteuid has no preconditions.
        let group = (unsafe { libc::geteuid() } == 0).then_some("root");
        let (_l2, _) = listen(&path, 0o660, group).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
