//! `vipctl`'s side of the API: one request over vipd's Unix socket, one response back.

use std::path::{Path, PathBuf};

use crate::protocol::{Request, Response};

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
