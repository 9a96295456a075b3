//! The control API: one JSON request per line over a Unix socket, one JSON response
//! per line back. The socket's permissions (mode, group) decide who can connect;
//! SO_PEERCRED re-checks every connection, so a socket left with loose permissions by
//! mistake still refuses strangers.
//!
//! Its users are trusted, not their clients: connections are capped in all and per user
//! ([`ApiLimits`]), a request must arrive whole within a time limit and below a size
//! limit, and every request that cannot be served (too big, too late, not UTF-8, not
//! JSON) is answered with an error saying why, never just closed.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{
    listener::{self, Slots},
    live_trace::{self, Tracer},
};
use crate::{
    config::ApiSpec,
    protocol::{Request, Response},
};

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

/// The API server's bounds (from `[api]`).
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// Connections at once, all users together.
    pub max_connections: usize,
    /// Connections at once per peer uid (root and vipd's own user excepted).
    pub max_connections_per_user: usize,
    /// Time to send the whole request.
    pub request_timeout: Duration,
    /// Largest request, in bytes.
    pub max_request_bytes: usize,
}

impl ApiLimits {
    /// The bounds `[api]` sets.
    pub fn of(api: &ApiSpec) -> Self {
        ApiLimits {
            max_connections: api.max_connections as usize,
            max_connections_per_user: api.max_connections_per_user as usize,
            request_timeout: api.request_timeout,
            max_request_bytes: api.max_request_bytes as usize,
        }
    }
}

impl Default for ApiLimits {
    /// The defaults of `[api]`.
    fn default() -> Self {
        ApiLimits {
            max_connections: 64,
            max_connections_per_user: 16,
            request_timeout: Duration::from_secs(5),
            max_request_bytes: 1 << 20,
        }
    }
}

/// How long vipd tries to write an answer to a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections held per peer uid.
#[derive(Debug, Default)]
struct PerUser(Mutex<HashMap<u32, usize>>);

/// One connection of a user, given back on drop.
#[derive(Debug)]
struct UserSlot(Arc<PerUser>, u32);

impl PerUser {
    fn take(self: &Arc<Self>, uid: u32, max: usize) -> Option<UserSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(uid).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSlot(self.clone(), uid))
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Answers `why` without waiting (a client that does not read gets nothing) and closes.
fn refuse(s: UnixStream, why: String) {
    let mut line = serde_json::to_string(&Response::err(why)).expect("serializes");
    line.push('\n');
    let _ = s.try_write(line.as_bytes());
}

/// Serves the API socket: accepts (backing off when out of file descriptors), holds at
/// most `limits.max_connections` connections and `limits.max_connections_per_user` per
/// user (root and vipd's own user excepted, so an operator always gets in), and serves
/// each on a task of its own with [`serve_connection`].
pub async fn serve<F, Fut>(
    listener: UnixListener,
    access: Access,
    limits: ApiLimits,
    tracer: Option<Arc<Tracer>>,
    handle: F,
) where
    F: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    let slots = Slots::new(limits.max_connections);
    let users = Arc::new(PerUser::default());
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let (s, _) = listener::accept("api", || listener.accept()).await;
        let Some(slot) = slots.take() else {
            refuse(
                s,
                format!(
                    "vipd is serving its maximum of {} API connections (api.max_connections): try again in a moment",
                    slots.max()
                ),
            );
            continue;
        };
        let user = match s.peer_cred().map(|c| c.uid()) {
            Ok(uid) if uid != 0 && uid != me => {
                match users.take(uid, limits.max_connections_per_user) {
                    Some(u) => Some(u),
                    None => {
                        refuse(
                            s,
                            format!(
                                "uid {uid} already holds {} API connections (api.max_connections_per_user): close some and try again",
                                limits.max_connections_per_user
                            ),
                        );
                        continue;
                    }
                }
            }
            _ => None,
        };
        let handle = handle.clone();
        let tracer = tracer.clone();
        tokio::spawn(async move {
            let _held = (slot, user);
            serve_connection(s, access, &limits, tracer.as_deref(), handle).await;
        });
    }
}

/// `n` bytes for people.
fn size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Decodes one request line (its bytes, newline included): a [`Request`], or the
/// message the client gets saying why there is none.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "vipd cannot read this request: it is not UTF-8 (an invalid byte at offset {}); requests are JSON text, one per line",
            e.valid_up_to()
        )
    })?;
    serde_json::from_str::<Request>(text).map_err(|e| {
        format!("vipd cannot read this request ({e}): are vipd and vipctl the same version?")
    })
}

/// Reads one request from a connection (within `limits`), asks `handle` for the answer,
/// writes it back. Every request gets an answer, an unreadable one an error naming why.
/// A live trace ([`Request::TraceLive`]) is served by `tracer` on the connection itself,
/// one JSON line per record.
pub async fn serve_connection<F, Fut>(
    s: UnixStream,
    access: Access,
    limits: &ApiLimits,
    tracer: Option<&Tracer>,
    handle: F,
) where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if let Err(why) = access.allows(&s) {
        tracing::warn!(%why, "refused an API connection");
        let (_, mut w) = s.into_split();
        let mut line = serde_json::to_string(&Response::err(why)).expect("serializes");
        line.push('\n');
        let _ = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line.as_bytes())).await;
        return;
    }
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r).take(limits.max_request_bytes as u64 + 1);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(limits.request_timeout, r.read_until(b'\n', &mut buf)).await;
    let oversized = matches!(read, Ok(Ok(_)) if buf.len() > limits.max_request_bytes);
    let resp = match read {
        Err(_) => Response::err(format!(
            "no complete request within {} (api.request_timeout): send one JSON request per line",
            humantime::format_duration(limits.request_timeout)
        )),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading an API request failed");
            return;
        }
        Ok(Ok(0)) => return,
        Ok(Ok(_)) if buf.len() > limits.max_request_bytes => Response::err(format!(
            "request refused: it is larger than {} (api.max_request_bytes): apply a large config in parts, or raise the limit",
            size(limits.max_request_bytes)
        )),
        Ok(Ok(_)) => match decode_request(&buf) {
            Ok(Request::TraceLive {
                expr,
                count,
                duration_ms,
                snap_len,
            }) => match tracer {
                Some(t) => {
                    let session = live_trace::Session {
                        expr,
                        count,
                        duration: duration_ms.map(Duration::from_millis),
                        snap_len,
                    };
                    live_trace::serve(t, session, r, &mut w).await;
                    return;
                }
                None => Response::err(
                    "this vipd has no live trace (its datapath lacks the trace maps): upgrade vipd",
                ),
            },
            Ok(req) => handle(req).await,
            Err(why) => Response::err(why),
        },
    };
    let mut out = serde_json::to_string(&resp).expect("responses serialize");
    out.push('\n');
    let _ = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(out.as_bytes())).await;
    if oversized {
        // Closing with the rest of the request unread would reset the connection and
        // the client would never read why: read the rest away for a moment first.
        let _ = w.shutdown().await;
        let mut rest = r.into_inner();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::copy(&mut rest, &mut tokio::io::sink()),
        )
        .await;
    }
}

#[cfg(test)]
mod property_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `bytes` on one end of a socket pair served by `serve_connection` (then
    /// closes the sending side if `close`) and returns the answer, or "no answer" after
    /// `wait`.
    async fn exchange(bytes: Vec<u8>, close: bool, wait: std::time::Duration) -> String {
        let (server, mut client) = UnixStream::pair().unwrap();
        let serving = tokio::spawn(async move {
            serve_connection(
                server,
                Access { gid: None },
                &ApiLimits::default(),
                None,
                |_| async { Response::err("handled") },
            )
            .await
        });
        let talk = async {
            let _ = client.write_all(&bytes).await;
            if close {
                let _ = client.shutdown().await;
            }
            let mut answer = String::new();
            let _ = client.read_to_string(&mut answer).await;
            answer
        };
        let answer = tokio::time::timeout(wait, talk)
            .await
            .unwrap_or_else(|_| "no answer".into());
        serving.abort();
        answer
    }

    #[tokio::test]
    async fn a_request_that_is_not_utf8_gets_an_error_answer() {
        let answer = exchange(
            b"{\"cmd\":\"st\xffatus\"}\n".to_vec(),
            false,
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(answer.contains("UTF-8"), "{answer:?}");
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_with_a_clear_error() {
        let mut big = vec![b' '; 2 << 20];
        big.push(b'\n');
        let answer = exchange(big, true, std::time::Duration::from_secs(10)).await;
        assert!(answer.contains("larger than 1 MiB"), "{answer:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_dropped_after_the_read_timeout() {
        // Paused time: the 5 s read timeout passes at once, the 60 s bound never.
        let answer = exchange(
            b"{\"cmd\":".to_vec(),
            false,
            std::time::Duration::from_secs(60),
        )
        .await;
        assert!(answer.contains("within 5s"), "{answer:?}");
    }

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
