//! `vipd run` and `vipd down`: load (or adopt) the pinned datapath, bring it to the
//! config, attach it through pinned links, serve; and take it all down again.

use std::path::{Path, PathBuf};

use super::{
    announce::{AnnounceError, RouteTable},
    api, event_loop,
};
use crate::{
    config::{AnnounceSpec, Config, ConfigError, LimitsSpec},
    control::{
        owner::{Owner, OwnerError},
        state_file::{StateFile, StateFileError},
    },
    datapath::{
        Datapath, DatapathError,
        tables::limits,
        trace::TraceMaps,
        xdp_link::{self, Attached, LinkSetupError},
    },
};

/// Why vipd could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No interfaces.
    #[error("{0}: [datapath] interfaces is empty: name the interfaces vip_lb should attach to")]
    NoInterfaces(String),
    /// The datapath could not be loaded or set up.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// /sys/fs/bpf is not a BPF filesystem.
    #[error(
        "/sys/fs/bpf is not a BPF filesystem, so nothing can be pinned there: mount it (`mount -t bpf bpf /sys/fs/bpf`). Note that `ip netns exec` remounts /sys without it: use `vipd run --netns NAME` or `nsenter --net=/run/netns/NAME vipd run ...` instead"
    )]
    NoBpffs,
    /// The state file is unreadable.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The pinned maps have other sizes than the config asks for.
    #[error(
        "the maps pinned in {} were created with {pinned:?} but the config asks for {wanted:?}: map sizes cannot change under a running datapath; run `vipd down` (drops connections) to resize, or restore [limits]",
        pin.display()
    )]
    LimitsChanged {
        /// The pin directory.
        pin: PathBuf,
        /// The limits the pinned maps were made with.
        pinned: LimitsSpec,
        /// The config's.
        wanted: LimitsSpec,
    },
    /// The network namespace to run in could not be entered.
    #[error("{action} network namespace {}: {source} (`ip netns list` shows them)", path.display())]
    Netns {
        /// "opening" or "entering".
        action: &'static str,
        /// `/run/netns/NAME`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The owner refused the config.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// Attaching failed.
    #[error(transparent)]
    Link(#[from] LinkSetupError),
    /// The API socket could not be set up.
    #[error(transparent)]
    Listen(#[from] api::ListenError),
    /// vipd still runs.
    #[error(
        "vipd for instance {instance} is still running (it answers on {socket}): stop it (SIGTERM) before `vipd down`, or pass --force"
    )]
    StillRunning {
        /// Instance.
        instance: String,
        /// Its socket.
        socket: PathBuf,
    },
    /// Removing pins failed.
    #[error("removing {path}: {source}")]
    Unpin {
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VIP routes could not be withdrawn.
    #[error(transparent)]
    Announce(#[from] AnnounceError),
    /// Another vipd owns the instance.
    #[error(
        "vipd for instance {instance} is running ({}holding the lock {}): stop it first (SIGTERM{}), {otherwise}",
        pid.map_or(String::new(), |p| format!("pid {p}, ")),
        path.display(),
        pid.map_or(String::new(), |p| format!(": `kill {p}`"))
    )]
    Locked {
        /// The instance.
        instance: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it into the lock file.
        pid: Option<u32>,
        /// The other way out, for the command that was refused.
        otherwise: &'static str,
    },
    /// The lock file could not be opened or locked.
    #[error("locking instance {instance} with {}: {source}", path.display())]
    Lock {
        /// The instance.
        instance: String,
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Runtime / signal setup failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The lock that makes one `vipd` the owner of an instance: `flock` on
/// [`crate::config::lock_path`], held for as long as this value lives (the kernel drops
/// it when the process exits, even on SIGKILL, so a lock is never stale). The file
/// holds the owner's PID, for the message a second `vipd` prints; it is never removed
/// (a lock file unlinked while another process waits on it would let two in).
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Takes the lock of `instance`, or says who holds it.
    /// `otherwise` ends the message when it is held ("or ...").
    pub fn acquire(instance: &str, otherwise: &'static str) -> Result<Self, ServiceError> {
        Self::acquire_at(&crate::config::lock_path(instance), instance, otherwise)
    }

    fn acquire_at(
        path: &Path,
        instance: &str,
        otherwise: &'static str,
    ) -> Result<Self, ServiceError> {
        use std::{
            io::{Read, Seek, Write},
            os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
        };
        let path = path.to_path_buf();
        let io = |source| ServiceError::Lock {
            instance: instance.to_string(),
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(ServiceError::Locked {
                instance: instance.to_string(),
                path,
                pid: text.trim().parse().ok(),
                otherwise,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(InstanceLock { _file: file })
    }
}

/// The API socket this vipd bound, removed when dropped only if the path still names
/// that socket: another vipd may have replaced it (this one then leaves it alone).
#[derive(Debug)]
struct OwnSocket {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl OwnSocket {
    fn new(path: &Path) -> Self {
        OwnSocket {
            path: path.to_owned(),
            identity: file_identity(path),
        }
    }
}

impl Drop for OwnSocket {
    fn drop(&mut self) {
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// (device, inode) of the file at `path`, not following a symlink.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// `vipd run -c FILE`.
pub fn run(config_path: &Path) -> Result<(), ServiceError> {
    let cfg = Config::load(config_path)?;
    if cfg.datapath.interfaces.is_empty() {
        return Err(ServiceError::NoInterfaces(
            config_path.display().to_string(),
        ));
    }
    // A second vipd for the same instance must fail before touching anything.
    let _lock = InstanceLock::acquire(&cfg.instance, "or give this config another instance name")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    // Another instance configured with this socket.
    if std::os::unix::net::UnixStream::connect(&cfg.api.socket).is_ok() {
        return Err(api::ListenError::InUse(cfg.api.socket.clone()).into());
    }
    serve(cfg, config_path, &rt)
}

fn serve(
    cfg: Config,
    config_path: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<(), ServiceError> {
    let pin = cfg.pin_dir();
    if !is_bpffs(Path::new("/sys/fs/bpf")) {
        return Err(ServiceError::NoBpffs);
    }
    // Everything that can be checked without the maps is checked before they are
    // created or adopted: a start refused here leaves no pin behind and writes nothing.
    let mut ifindexes = Vec::new();
    for iface in &cfg.datapath.interfaces {
        let idx = xdp_link::interface_index(iface).ok_or_else(|| LinkSetupError::NoInterface {
            iface: iface.clone(),
        })?;
        ifindexes.push(idx);
    }
    // The interfaces whose MAC proxy ARP/NDP answers carry: every one vip_lb or an HA
    // group uses.
    let mut mac_ifaces: Vec<(String, u32)> = Vec::new();
    for iface in cfg
        .datapath
        .interfaces
        .iter()
        .chain(cfg.groups.iter().flat_map(|g| &g.interfaces))
    {
        let idx = xdp_link::interface_index(iface).ok_or_else(|| LinkSetupError::NoInterface {
            iface: iface.clone(),
        })?;
        if !mac_ifaces.iter().any(|(_, i)| *i == idx) {
            mac_ifaces.push((iface.clone(), idx));
        }
    }
    if let Some(g) = cfg.api.group.as_deref()
        && api::group_id(g).is_none()
    {
        return Err(api::ListenError::NoGroup(g.to_string()).into());
    }
    let state = StateFile::read(&cfg.state_file)?;
    if let Some(s) = &state {
        s.check(&cfg.state_file, &cfg.limits)?;
    }
    let pinned = pin.join(vip_common::MAP_MAGLEV).exists();
    if pinned {
        match state.as_ref().and_then(|s| s.limits) {
            Some(l) if l != cfg.limits => {
                return Err(ServiceError::LimitsChanged {
                    pin,
                    pinned: l,
                    wanted: cfg.limits,
                });
            }
            Some(_) => {}
            None => tracing::warn!(
                state = %cfg.state_file.display(),
                "adopting pinned maps without a state file: the config's VIPs keep the ids the maps give them, other VIPs found there are kept as unmanaged"
            ),
        }
    }
    // Created by this start: removed again if it fails before serving, so a failed
    // start leaves the instance as it found it (nothing pinned).
    let fresh = !pinned_anything(&pin);
    let started = start(&cfg, &pin, &ifindexes, &mac_ifaces);
    let (owner, listener, access, socket, trace) = match started {
        Ok(s) => s,
        Err(e) => {
            if fresh {
                match unpin_all(&pin) {
                    Ok(_) => {
                        tracing::info!(pin = %pin.display(), "start failed: removed the pins it created")
                    }
                    Err(u) => {
                        tracing::warn!(pin = %pin.display(), error = %u, "start failed, and removing the pins it created failed too")
                    }
                }
            }
            return Err(e);
        }
    };
    rt.block_on(event_loop::run(
        owner,
        cfg,
        config_path.to_owned(),
        listener,
        access,
        trace,
    ))?;
    drop(socket);
    Ok(())
}

type Started = (
    Owner<Datapath>,
    tokio::net::UnixListener,
    api::Access,
    OwnSocket,
    Option<TraceMaps>,
);

/// Loads or adopts the datapath, brings it to the config, attaches it and opens the API
/// socket: everything up to serving.
fn start(
    cfg: &Config,
    pin: &Path,
    ifindexes: &[u32],
    mac_ifaces: &[(String, u32)],
) -> Result<Started, ServiceError> {
    let mut dp = Datapath::load(&limits(&cfg.limits), Some(pin))?;
    let adopted = dp.adopted();
    let trace = match dp.take_trace() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "no live trace: its maps could not be opened");
            None
        }
    };
    tracing::info!(pin = %pin.display(), adopted, "datapath loaded");
    // Tables first, then the program: a fresh attachment never sees empty tables, and an
    // adopted one keeps serving from the pinned maps throughout.
    let mut owner = Owner::start(cfg, dp, Some(cfg.state_file.clone()))?;
    tracing::info!(
        vips = owner.vips().len(),
        map_writes = owner.last_stats.map_writes(),
        "config applied"
    );
    for &idx in ifindexes {
        owner.tables_mut().add_tx_port(idx)?;
    }
    for (iface, idx) in mac_ifaces {
        match super::garp::interface_mac(iface) {
            Ok(mac) => owner.tables_mut().set_if_mac(*idx, mac)?,
            Err(e) => {
                tracing::warn!(%iface, error = %e, "cannot read the interface's MAC: no ARP/NDP answers there")
            }
        }
    }
    for iface in &cfg.datapath.interfaces {
        let how = xdp_link::attach_pinned(
            owner.tables_mut().program_mut(),
            iface,
            cfg.datapath.xdp_mode,
            &xdp_link::link_pin(pin, iface),
        )?;
        match how {
            Attached::New => tracing::info!(%iface, "vip_lb attached (link pinned)"),
            Attached::Adopted => {
                tracing::info!(%iface, "adopted the pinned link; program replaced atomically")
            }
        }
    }
    for stale in pinned_links(pin) {
        if !cfg
            .datapath
            .interfaces
            .iter()
            .any(|i| xdp_link::link_pin(pin, i) == stale)
        {
            tracing::info!(pin = %stale.display(), "interface no longer configured: detaching");
            xdp_link::detach_pinned(&stale)?;
        }
    }
    // The socket appears only now, so "it answers" means "it is serving".
    let (listener, access) = api::listen(&cfg.api.socket, cfg.api.mode, cfg.api.group.as_deref())?;
    let socket = OwnSocket::new(&cfg.api.socket);
    Ok((owner, listener, access, socket, trace))
}

/// True if anything (a map, a link, the layout marker) is pinned in `dir`.
fn pinned_anything(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// True if `p` is a mounted bpffs.
pub fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs on a valid path into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated; st is valid for writes.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Moves this process into the network namespace `/run/netns/NAME` (as `ip netns exec`
/// does, but keeping the mount namespace, so /sys/fs/bpf pins are the host's). Must be
/// called before any thread starts.
pub fn enter_netns(name: &str) -> Result<(), ServiceError> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let f = std::fs::File::open(&path).map_err(|source| ServiceError::Netns {
        action: "opening",
        path: path.clone(),
        source,
    })?;
    // SAFETY: f is an open namespace file; setns only changes this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(ServiceError::Netns {
            action: "entering",
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn pinned_links(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `vipd down`: withdraws vipd's VIP routes from `announce`'s table (first, so routers
/// stop sending before the datapath goes), detaches vip_lb everywhere (removing the pinned
/// links) and unpins the maps (connection table and counters are gone afterwards).
/// Refused while a vipd owns the instance (its lock) or answers on `socket`, unless
/// `force`; holds the lock meanwhile, so no vipd starts half way through.
pub fn down(
    instance: &str,
    socket: &Path,
    force: bool,
    announce: &AnnounceSpec,
) -> Result<Vec<String>, ServiceError> {
    let _lock = match InstanceLock::acquire(instance, "or pass --force to `vipd down`") {
        Ok(l) => Some(l),
        Err(e @ ServiceError::Locked { .. }) if !force => return Err(e),
        Err(_) => None,
    };
    if !force && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ServiceError::StillRunning {
            instance: instance.to_string(),
            socket: socket.to_owned(),
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let withdrawn = rt.block_on(async {
        RouteTable::open(announce.table, announce.protocol)?
            .remove_all()
            .await
    })?;
    let mut done: Vec<String> = withdrawn
        .into_iter()
        .map(|a| format!("withdrew the route of {a} from table {}", announce.table))
        .collect();
    done.extend(unpin_all(&crate::config::pin_dir(instance))?);
    Ok(done)
}

/// Detaches every pinned link in `dir`, unpins everything else and removes the
/// directory; says what it did.
fn unpin_all(dir: &Path) -> Result<Vec<String>, ServiceError> {
    let dir = dir.to_path_buf();
    let mut done = Vec::new();
    for link in pinned_links(&dir) {
        xdp_link::detach_pinned(&link)?;
        done.push(format!("detached {}", link.display()));
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_file() || !p.is_dir() {
                std::fs::remove_file(&p).map_err(|source| ServiceError::Unpin {
                    path: p.clone(),
                    source,
                })?;
                done.push(format!("unpinned {}", p.display()));
            }
        }
    }
    if dir.exists() && std::fs::remove_dir(&dir).is_ok() {
        done.push(format!("removed {}", dir.display()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vip-lifecycle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Regression: one owner per instance; the second is told who holds it.
    #[test]
    fn a_second_owner_of_an_instance_is_refused_with_the_holders_pid() {
        let dir = temp_dir("lock");
        let path = dir.join("lb1.lock");
        let first = InstanceLock::acquire_at(&path, "lb1", "or else").unwrap();
        let err = InstanceLock::acquire_at(&path, "lb1", "or else").unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, ServiceError::Locked { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {pid}")) && msg.contains(&format!("`kill {pid}`")),
            "{msg}"
        );
        drop(first);
        InstanceLock::acquire_at(&path, "lb1", "or else").expect("free once the owner is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: the socket is removed on exit only by the vipd that bound it.
    #[test]
    fn the_socket_is_removed_only_by_the_vipd_that_bound_it() {
        let dir = temp_dir("socket");
        let path = dir.join("api.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mine = OwnSocket::new(&path);
        // Another vipd replaced it meanwhile.
        std::fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(mine);
        assert!(path.exists(), "removed another vipd's socket");
        drop(first);
        let theirs = OwnSocket::new(&path);
        drop(theirs);
        assert!(!path.exists(), "its owner removes it");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
