//! Network-namespace labs: clients → router → load-balancer node(s) → backends, with
//! direct server return (backends answer clients through the router, not the LB).
//!
//! ```text
//!  client(s) ──veth── router ──veth── switch (br0) ──veth── LB node 1..n  (vip_lb on eth0)
//!                                        │
//!                                        └──────veth── backend 1..m (VIP on lo, server)
//! ```
//! The router, the LB nodes and the backends share one L2 segment (a bridge inside the
//! lab's own `switch` namespace): `dsr-l2` needs that, `tunnel` works over it too. The
//! router routes the VIP prefix to the LB node(s) (an ECMP multipath route with L4
//! hashing when there are several) and is the backends' way back to the clients.
//!
//! Everything is created inside namespaces whose names carry this process id and a
//! counter, and removed on drop, after a panic (a hook, see [`install_cleanup_handlers`])
//! and on Ctrl-C.

pub mod client;
pub mod cmd;
pub mod failover;
pub mod inject;
pub mod netns;
pub mod process;
mod topology;
pub mod vipd;
pub mod viplab;
pub mod xdp_pass;

pub use topology::{Backend, Balancer, Lab, LabSpec, LbNode, Mode, addr};

/// What went wrong while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A tool could not be started at all.
    #[error(
        "could not run `{command}`: {source} (is iproute2/ethtool/nftables installed? `cargo xtask setup` installs them)"
    )]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("could not enter network namespace {netns}: {source} (run as root)")]
    Netns {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A binary the lab runs is not built.
    #[error(
        "{binary} not found next to {searched}; build it first with `cargo build -p {package} --bins` (or set VIP_BIN_DIR)"
    )]
    MissingBinary {
        binary: String,
        package: String,
        searched: String,
    },
    /// Something did not become ready in time.
    #[error("{what} did not become ready within {secs} s{detail}")]
    NotReady {
        what: String,
        secs: u64,
        detail: String,
    },
}

/// Installs a panic hook and a SIGINT/SIGTERM handler that remove every namespace and pin
/// directory this process created, for binaries built with `panic = "abort"` (the demo)
/// where no destructor runs. Tests do not need it (they unwind, and guards clean up).
pub fn install_cleanup_handlers() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        netns::cleanup_everything();
    }));
    // Block the signals in this thread (and so in every thread spawned later), and wait for
    // them in one thread of our own: no async-signal-safety constraints on the cleanup.
    // SAFETY: plain libc calls on a local, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set_copy = set;
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set_copy, &mut sig);
            eprintln!("\ninterrupted: removing the lab's namespaces...");
            netns::cleanup_everything();
            std::process::exit(130);
        });
    }
}

/// Finds a binary of this workspace: `VIP_BIN_DIR`, else next to the running executable
/// (the demo lives in `target/<profile>/`), else one directory up (tests live in
/// `target/<profile>/deps/`).
pub fn workspace_binary(name: &str, package: &str) -> Result<std::path::PathBuf, LabError> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("VIP_BIN_DIR") {
        dirs.push(std::path::PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::MissingBinary {
        binary: name.to_string(),
        package: package.to_string(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A global lock: labs are heavy on a 2-core machine, so tests build them one at a time
/// (cargo runs tests of one binary in parallel threads). Across test binaries cargo
/// already runs serially.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
