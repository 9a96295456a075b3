//! `vipctl`'s side of the API: one request over vipd's Unix socket, one response back,
//! within a time limit (a stopped or stuck vipd must not hang `vipctl`, or a script).

use std::{
    os::fd::{FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::protocol::{Request, Response};

/// How long `vipctl` waits for vipd unless told otherwise (`--wait`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// vipd did not accept or answer in time.
    #[error(
        "vipd at {path} did not answer within {}: it may be stopped (SIGSTOP), stuck or overloaded (see its log); a long `apply` may need a larger --wait",
        humantime::format_duration(*.waited)
    )]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// How long vipctl waited.
        waited: Duration,
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

/// Connects to the Unix socket `path` without blocking past `deadline`: a listener whose
/// backlog is full (a stuck vipd) makes a blocking `connect` wait for ever.
fn connect(
    path: &Path,
    deadline: Instant,
) -> Result<std::os::unix::net::UnixStream, std::io::Error> {
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied in below, bounds-checked.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the socket path is longer than 107 bytes",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket() has no memory preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        // SAFETY: addr is a valid sockaddr_un of the size given.
        let rc = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&addr as *const libc::sockaddr_un).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        // EAGAIN: the listener's backlog is full; it may drain.
        if e.raw_os_error() != Some(libc::EAGAIN) || Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Sends one request and waits at most `timeout` for the response (blocking; vipctl is
/// not async).
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut answer = None;
    stream(path, req, timeout, |r| {
        answer = Some(r);
        false
    })?;
    answer.ok_or_else(|| ClientError::Protocol("vipd sent no answer".into()))
}

/// Sends one request and hands each response line to `each` until it returns false or
/// vipd closes the connection (a live trace: records arrive as long as it runs).
/// Connecting, sending and the first answer are bounded by `timeout` together; the lines
/// after it are not.
pub fn stream(
    path: &Path,
    req: &Request,
    timeout: Duration,
    mut each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    use std::io::{BufRead, Write};
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        path: path.to_owned(),
        waited: timeout,
    };
    let s = connect(path, deadline).map_err(|source| match source.raw_os_error() {
        Some(libc::EAGAIN) => timed_out(),
        _ => ClientError::Connect {
            path: path.to_owned(),
            source,
        },
    })?;
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => ClientError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    s.set_write_timeout(Some(remaining())).map_err(io)?;
    (&s).write_all(line.as_bytes()).map_err(io)?;
    // The timeout bounds each read; vipd writes its first answer at once, so in practice
    // it bounds the whole of it.
    s.set_read_timeout(Some(remaining())).map_err(io)?;
    let mut r = std::io::BufReader::new(&s);
    let mut first = true;
    loop {
        let mut answer = String::new();
        let n = r.read_line(&mut answer).map_err(io)?;
        if n == 0 {
            if first {
                return Err(ClientError::Protocol(
                    "vipd closed the connection without answering (see its log: it may have refused your user id)".into(),
                ));
            }
            return Ok(());
        }
        if first {
            first = false;
            s.set_read_timeout(None).map_err(io)?;
        }
        let resp =
            serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !each(resp) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vipd that is stopped (SIGSTOP) but still listening: the connection is queued,
    /// nobody reads or answers. vipctl must give up with a clear error, not hang.
    #[test]
    fn a_socket_nobody_answers_on_times_out() {
        let dir = std::env::temp_dir().join(format!("vipctl-timeout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stopped.sock");
        let _ = std::fs::remove_file(&path);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(call(&p, &Request::Status, Duration::from_millis(500)));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = result
            .expect("vipctl hung on a socket nobody answers on")
            .unwrap_err();
        assert!(e.to_string().contains("did not answer within"), "{e}");
    }
}
