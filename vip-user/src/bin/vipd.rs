//! `vipd`: loads the vip datapath, owns its maps and keeps them right.

// The doc comments of the clap types are vipd's --help text, where `<instance>` is
// literal text, not HTML.
#![allow(rustdoc::invalid_html_tags, reason = "clap help text")]

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use vip_user::{
    Report,
    config::{self, Config, ConfigError, XdpMode},
    daemon::lifecycle as service,
    datapath::{
        decap,
        kernel::{self, KernelCheck, KernelTooOld},
        xdp_link,
    },
    manual,
};

/// The vip load-balancer daemon.
#[derive(Debug, Parser)]
#[command(
    name = "vipd",
    version,
    about = "The vip load-balancer daemon: loads and pins the XDP datapath, owns its maps, checks backends, serves the API and metrics."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load (or adopt) the datapath, attach it, apply the config and serve the API.
    /// SIGHUP reloads the file; SIGTERM exits and leaves traffic flowing.
    Run {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Run in network namespace /run/netns/NAME (keeps the host's /sys/fs/bpf,
        /// unlike `ip netns exec`).
        #[arg(long)]
        netns: Option<String>,
    },
    /// Validate a config file without touching anything.
    Check {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Detach vip_lb and unpin its maps (connections and counters are lost).
    Down {
        /// Config file (for the instance name, socket and `[announce]` table; without it
        /// the default table 100 and protocol 200 are cleared of vipd's routes).
        #[arg(short, long, conflicts_with = "instance")]
        config: Option<PathBuf>,
        /// Instance name (default "default").
        #[arg(long)]
        instance: Option<String>,
        /// Even if a vipd still answers on the socket.
        #[arg(long)]
        force: bool,
        /// The network namespace /run/netns/NAME vipd ran in (where its VIP routes are).
        #[arg(long)]
        netns: Option<String>,
    },
    /// The backend role: vip_decap removes vip's tunnel headers.
    #[command(subcommand)]
    Decap(DecapCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: manual::Shell,
    },
    /// Write vipd's man pages (one per command and subcommand) into a directory.
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DecapCmd {
    /// Attach vip_decap to an interface (pinned: survives this command).
    Attach {
        /// Interface receiving the tunnelled packets.
        #[arg(long)]
        iface: String,
        /// Instance name (pins under /sys/fs/bpf/vip/<instance>/decap).
        #[arg(long, default_value = "default")]
        instance: String,
        /// Local tunnel endpoint address (repeatable; default: the interface's addresses).
        #[arg(long = "local")]
        locals: Vec<IpAddr>,
        /// native, generic or auto.
        #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
        xdp_mode: XdpMode,
        /// Network namespace /run/netns/NAME of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Detach vip_decap from an interface.
    Detach {
        /// Interface.
        #[arg(long)]
        iface: String,
        /// Instance name.
        #[arg(long, default_value = "default")]
        instance: String,
    },
}

fn netns_of(c: &Command) -> Option<&str> {
    match c {
        Command::Run { netns, .. }
        | Command::Down { netns, .. }
        | Command::Decap(DecapCmd::Attach { netns, .. }) => netns.as_deref(),
        _ => None,
    }
}

/// Why a vipd command failed.
#[derive(Debug, thiserror::Error)]
enum VipdError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    #[error(transparent)]
    Decap(#[from] decap::DecapError),
    #[error(transparent)]
    Man(#[from] manual::ManError),
    #[error(transparent)]
    Kernel(#[from] KernelTooOld),
}

/// Refuses a kernel older than the oldest vip supports, before anything is loaded:
/// the verifier's refusal would not say that the kernel is the problem.
fn check_kernel() -> Result<(), KernelTooOld> {
    match kernel::check_running()? {
        KernelCheck::Supported(v) => tracing::debug!(kernel = %v, "kernel version supported"),
        KernelCheck::Unknown(release) => tracing::warn!(
            %release,
            minimum = %kernel::MIN_KERNEL,
            "cannot tell the kernel's version; going on, the verifier will judge"
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ns) = netns_of(&cli.command)
        && let Err(e) = service::enter_netns(ns)
    {
        eprintln!("vipd: {}", Report(&e));
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(text) => {
            // A closed pipe (`vipctl ... | head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The one place vipd prints an error: with every cause.
            eprintln!("vipd: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-files limit to the hard one (systemd's default soft limit, 1024,
/// is what an idle-connection flood exhausted) and logs what vipd runs with. The
/// listeners' connection caps are fitted below it (`vip_user::daemon::listener`).
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return;
    }
    let before = l.rlim_cur;
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(soft = before, hard = l.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-files limit; vipd keeps the soft limit");
            return;
        }
        tracing::info!(
            from = before,
            to = l.rlim_max,
            "open-files limit raised to the hard limit"
        );
    } else {
        tracing::info!(
            limit = before,
            "open-files limit (already the hard limit; raise LimitNOFILE to allow more)"
        );
    }
}

/// Runs a command; returns what to print.
fn run(command: Command) -> Result<String, VipdError> {
    Ok(match command {
        Command::Check { config } => {
            let c = Config::load(&config)?;
            let backends: usize = c.vips.iter().map(|v| v.backends.len()).sum();
            format!(
                "{}: OK (instance {}, {} VIPs, {backends} backends; Maglev pool: needs {} of its {} entries)\n",
                config.display(),
                c.instance,
                c.vips.len(),
                vip_user::config::maglev_pool_need(&c.vips),
                c.limits.maglev_pool
            )
        }
        Command::Run { config, .. } => {
            check_kernel()?;
            raise_open_files_limit();
            service::run(&config)?;
            String::new()
        }
        Command::Down {
            config,
            instance,
            force,
            ..
        } => {
            let (instance, socket, announce) = match config {
                Some(path) => {
                    let c = Config::load(&path)?;
                    (c.instance, c.api.socket, c.announce)
                }
                None => {
                    let i = instance.unwrap_or_else(|| "default".into());
                    let s = config::default_socket(&i);
                    (i, s, config::AnnounceSpec::default())
                }
            };
            let done = service::down(&instance, &socket, force, &announce)?;
            if done.is_empty() {
                format!("nothing pinned for instance {instance}\n")
            } else {
                done.join("\n") + "\n"
            }
        }
        Command::Decap(DecapCmd::Attach {
            iface,
            instance,
            locals,
            xdp_mode,
            ..
        }) => {
            check_kernel()?;
            let (how, addrs) =
                decap::attach(&iface, &locals, xdp_mode, &decap::pin_dir(&instance))?;
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            format!(
                "vip_decap {} on {iface}, decapsulating for {}\n",
                match how {
                    xdp_link::Attached::New => "attached",
                    xdp_link::Attached::Adopted => "re-attached (adopted pinned link)",
                },
                addrs.join(", ")
            )
        }
        Command::Completions { shell } => manual::completions(Cli::command(), shell),
        Command::Man { dir } => {
            let pages = manual::man_pages(Cli::command(), &dir)?;
            format!("wrote {} man pages into {}\n", pages.len(), dir.display())
        }
        Command::Decap(DecapCmd::Detach { iface, instance }) => {
            if decap::detach(&iface, &decap::pin_dir(&instance))? {
                format!("vip_decap detached from {iface}\n")
            } else {
                format!("vip_decap was not attached to {iface} (instance {instance})\n")
            }
        }
    })
}
