//! `vipd run` and `vipd down`: load (or adopt) the pinned datapath, bring it to the
//! config, attach it through pinned links, serve; and take it all down again.

use std::path::{Path, PathBuf};

use super::{api, event_loop};
use crate::{
    config::{Config, ConfigError, LimitsSpec},
    control::{
        owner::{Owner, OwnerError},
        state_file::{StateFile, StateFileError},
    },
    datapath::{
        Datapath, DatapathError,
        tables::limits,
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
    /// Runtime / signal setup failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `vipd run -c FILE`.
pub fn run(config_path: &Path) -> Result<(), ServiceError> {
    let cfg = Config::load(config_path)?;
    if cfg.datapath.interfaces.is_empty() {
        return Err(ServiceError::NoInterfaces(
            config_path.display().to_string(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    // A second vipd for the same instance must fail before touching maps.
    if std::os::unix::net::UnixStream::connect(&cfg.api.socket).is_ok() {
        return Err(api::ListenError::InUse(cfg.api.socket.clone()).into());
    }
    let socket = cfg.api.socket.clone();
    let result = serve(cfg, config_path, &rt);
    let _ = std::fs::remove_file(&socket);
    result
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
    let pinned = pin.join(vip_common::MAP_MAGLEV).exists();
    let state = StateFile::read(&cfg.state_file)?;
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
                "adopting pinned maps without a state file: backend ids are assigned afresh, so established flows may re-hash once"
            ),
        }
    }
    let mut dp = Datapath::load(&limits(&cfg.limits), Some(&pin))?;
    let adopted = dp.adopted();
    tracing::info!(pin = %pin.display(), adopted, "datapath loaded");
    for iface in &cfg.datapath.interfaces {
        let idx = xdp_link::interface_index(iface).ok_or_else(|| LinkSetupError::NoInterface {
            iface: iface.clone(),
        })?;
        dp.add_tx_port(idx)?;
    }
    // The MAC that proxy ARP/NDP answers carry, for every interface vip_lb or a group
    // uses.
    let mut ifaces: Vec<&String> = cfg.datapath.interfaces.iter().collect();
    ifaces.extend(cfg.groups.iter().flat_map(|g| &g.interfaces));
    ifaces.sort();
    ifaces.dedup();
    for iface in ifaces {
        let idx = xdp_link::interface_index(iface).ok_or_else(|| LinkSetupError::NoInterface {
            iface: iface.clone(),
        })?;
        match super::garp::interface_mac(iface) {
            Ok(mac) => dp.set_if_mac(idx, mac)?,
            Err(e) => {
                tracing::warn!(%iface, error = %e, "cannot read the interface's MAC: no ARP/NDP answers there")
            }
        }
    }
    // Tables first, then the program: a fresh attachment never sees empty tables, and an
    // adopted one keeps serving from the pinned maps throughout.
    let mut owner = Owner::start(&cfg, dp, Some(cfg.state_file.clone()))?;
    tracing::info!(
        vips = owner.vips().len(),
        map_writes = owner.last_stats.map_writes(),
        "config applied"
    );
    for iface in &cfg.datapath.interfaces {
        let how = xdp_link::attach_pinned(
            owner.tables_mut().program_mut(),
            iface,
            cfg.datapath.xdp_mode,
            &xdp_link::link_pin(&pin, iface),
        )?;
        match how {
            Attached::New => tracing::info!(%iface, "vip_lb attached (link pinned)"),
            Attached::Adopted => {
                tracing::info!(%iface, "adopted the pinned link; program replaced atomically")
            }
        }
    }
    for stale in pinned_links(&pin) {
        if !cfg
            .datapath
            .interfaces
            .iter()
            .any(|i| xdp_link::link_pin(&pin, i) == stale)
        {
            tracing::info!(pin = %stale.display(), "interface no longer configured: detaching");
            xdp_link::detach_pinned(&stale)?;
        }
    }
    // The socket appears only now, so "it answers" means "it is serving".
    let (listener, access) = api::listen(&cfg.api.socket, cfg.api.mode, cfg.api.group.as_deref())?;
    rt.block_on(event_loop::run(
        owner,
        cfg,
        config_path.to_owned(),
        listener,
        access,
    ))?;
    Ok(())
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

/// `vipd down`: detaches vip_lb everywhere (removing the pinned links) and unpins the
/// maps (connection table and counters are gone afterwards).
pub fn down(instance: &str, socket: &Path, force: bool) -> Result<Vec<String>, ServiceError> {
    if !force && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ServiceError::StillRunning {
            instance: instance.to_string(),
            socket: socket.to_owned(),
        });
    }
    let dir = crate::config::pin_dir(instance);
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
