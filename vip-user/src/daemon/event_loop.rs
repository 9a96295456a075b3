//! vipd's event loop: the owner sits in one loop that takes API requests, health
//! transitions, SIGHUP, scrapes and next-hop resolutions as messages, so it is the only
//! writer of the maps.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use super::{
    api::{self, Access},
    ha::Ha,
    health::{self, Supervisor, Transition},
    metrics::{self, Metrics},
    nexthop::{self, NextHopCache, NextHopError},
};
use crate::{
    config::Config,
    control::{diff::diff, owner::Owner},
    datapath::tables::DatapathOps,
    protocol::{ApplyResult, Request, Response, Status},
};

/// A message to the owner loop.
#[derive(Debug)]
pub enum Msg {
    /// An API request and where to send the answer.
    Api(Request, oneshot::Sender<Response>),
    /// A metrics scrape wants a snapshot.
    Status(oneshot::Sender<Status>),
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT: the datapath stays attached and keeps serving.
    Signal,
}

/// How often backends' next hops are re-resolved from the kernel (routes and neighbours
/// change; a stale or failed neighbour must stop being used within about this long).
const NEXTHOP_REFRESH: Duration = Duration::from_secs(1);

/// Every allocated backend id with its address (the next hop is towards it in every
/// forwarding mode: the rewritten destination or the tunnel's outer destination).
fn backend_addrs<T: DatapathOps>(owner: &Owner<T>) -> Vec<(u32, IpAddr)> {
    owner
        .backend_ids()
        .into_iter()
        .map(|((_, addr), id)| (id, addr.ip()))
        .collect()
}

/// Runs the owner loop until SIGTERM/SIGINT.
pub async fn run<T: DatapathOps>(
    mut owner: Owner<T>,
    mut cfg: Config,
    config_path: PathBuf,
    listener: UnixListener,
    access: Access,
) -> std::io::Result<Exit> {
    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = mpsc::channel::<Msg>(64);
    let (htx, mut hrx) = mpsc::unbounded_channel::<Transition>();
    let (ntx, mut nrx) =
        mpsc::unbounded_channel::<Result<HashMap<IpAddr, vip_common::NextHop>, NextHopError>>();
    let mut nexthops = NextHopCache::default();
    let mut refresh = tokio::time::interval(NEXTHOP_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut resolving = false;
    let mut resolve_failing = false;
    let mut checks = Supervisor::default();
    checks.update(
        health::targets(owner.vips()),
        |i| owner.is_up(i),
        &htx,
        &metrics,
    );
    let mut ha = match Ha::start(&cfg.groups, owner.tables_mut()) {
        Ok(ha) => ha,
        Err(e) => {
            tracing::error!(error = %e, "HA groups unavailable: no VIP is announced");
            Ha::default()
        }
    };
    sync_ha(&mut ha, &mut owner);
    ha.announce_active(owner.tables(), owner.vips());
    let mut metrics_task = start_metrics(&cfg, &metrics, &tx).await;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(
        socket = %cfg.api.socket.display(),
        vips = owner.vips().len(),
        checks = checks.len(),
        "vipd serving"
    );
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((s, _)) = conn else { continue };
                let tx = tx.clone();
                tokio::spawn(api::serve_connection(s, access, move |req| async move {
                    let (rtx, rrx) = oneshot::channel();
                    if tx.send(Msg::Api(req, rtx)).await.is_err() {
                        return Response::err("vipd is shutting down");
                    }
                    rrx.await.unwrap_or_else(|_| Response::err("vipd is shutting down"))
                }));
            }
            Some(msg) = rx.recv() => match msg {
                Msg::Api(req, reply) => {
                    let resp = handle(&mut owner, &mut ha, &mut cfg, &config_path, req);
                    let _ = reply.send(resp);
                }
                Msg::Status(reply) => {
                    let mut status = owner.status();
                    let vips = owner.vips().to_vec();
                    status.ha = ha.status(owner.tables(), &vips, &status).unwrap_or_default();
                    let _ = reply.send(status);
                }
            },
            Some(t) = hrx.recv() => {
                tracing::info!(vip = %t.ident.0, backend = %t.ident.1, up = t.up, detail = %t.detail, "health check transition");
                if let Err(e) = owner.set_health(t.ident, t.up) {
                    tracing::error!(error = %e, "applying a health change failed");
                }
            }
            _ = hup.recv() => {
                tracing::info!(file = %config_path.display(), "SIGHUP: reloading the config file");
                let r = handle(&mut owner, &mut ha, &mut cfg, &config_path, Request::Reload);
                match r {
                    Response::Error(e) => tracing::error!(error = %e, "reload refused; still running the previous config"),
                    _ => {
                        if let Some(t) = metrics_task.take() { t.abort(); }
                        metrics_task = start_metrics(&cfg, &metrics, &tx).await;
                    }
                }
            }
            _ = refresh.tick(), if !resolving => {
                // `ip` runs off the loop; the answer comes back as a message so only this
                // loop writes the maps.
                resolving = true;
                let addrs: Vec<IpAddr> = backend_addrs(&owner).into_iter().map(|(_, a)| a).collect();
                let ntx = ntx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = ntx.send(nexthop::resolve_all(&addrs));
                });
            }
            Some(r) = nrx.recv() => {
                resolving = false;
                match r {
                    Ok(resolved) => {
                        resolve_failing = false;
                        let backends = backend_addrs(&owner);
                        match nexthops.apply(owner.tables_mut(), &backends, &resolved) {
                            Ok(0) => {}
                            Ok(n) => tracing::debug!(map_writes = n, "next hops updated"),
                            Err(e) => tracing::error!(error = %e, "writing next hops failed; the datapath uses bpf_fib_lookup for those backends"),
                        }
                    }
                    Err(e) if !resolve_failing => {
                        resolve_failing = true;
                        tracing::warn!(error = %e, "cannot resolve backends' next hops; the datapath keeps using bpf_fib_lookup");
                    }
                    Err(_) => {}
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        checks.update(
            health::targets(owner.vips()),
            |i| owner.is_up(i),
            &htx,
            &metrics,
        );
        let backends = backend_addrs(&owner);
        if let Err(e) = nexthops.forget_changed(owner.tables_mut(), &backends) {
            tracing::error!(error = %e, "clearing the next hops of removed backends failed");
        }
    }
    tracing::info!(
        "stopping; the datapath stays attached and keeps forwarding (`vipd down` detaches it)"
    );
    let _ = std::fs::remove_file(&cfg.api.socket);
    Ok(Exit::Signal)
}

async fn start_metrics(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    tx: &mpsc::Sender<Msg>,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = cfg.metrics?;
    match metrics::bind(addr).await {
        Ok(l) => {
            tracing::info!(%addr, "serving Prometheus metrics");
            let tx = tx.clone();
            Some(tokio::spawn(metrics::serve(
                l,
                metrics.clone(),
                move || {
                    let tx = tx.clone();
                    async move {
                        let (rtx, rrx) = oneshot::channel();
                        tx.send(Msg::Status(rtx)).await.ok()?;
                        rrx.await.ok()
                    }
                },
            )))
        }
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics: fix [metrics] listen and send SIGHUP");
            None
        }
    }
}

/// Brings the announced addresses to the owner's VIPs (after every change).
fn sync_ha<T: DatapathOps>(ha: &mut Ha, owner: &mut Owner<T>) {
    let vips = owner.vips().to_vec();
    if let Err(e) = ha.sync(owner.tables_mut(), &vips) {
        tracing::error!(error = %e, "updating the announced VIP addresses failed");
    }
}

/// Answers one API request (also used for SIGHUP).
pub fn handle<T: DatapathOps>(
    owner: &mut Owner<T>,
    ha: &mut Ha,
    cfg: &mut Config,
    config_path: &std::path::Path,
    req: Request,
) -> Response {
    let changes_vips = matches!(
        req,
        Request::Change { .. } | Request::Apply { dry_run: false, .. } | Request::Reload
    );
    let resp = handle_request(owner, ha, cfg, config_path, req);
    if changes_vips && !matches!(resp, Response::Error(_)) {
        sync_ha(ha, owner);
    }
    resp
}

fn handle_request<T: DatapathOps>(
    owner: &mut Owner<T>,
    ha: &mut Ha,
    cfg: &mut Config,
    config_path: &std::path::Path,
    req: Request,
) -> Response {
    match req {
        Request::HaSet { group, role } => {
            let vips = owner.vips().to_vec();
            if let Err(e) = ha.set_role(owner.tables_mut(), &vips, &group, role) {
                return Response::err(e);
            }
            match ha.status(owner.tables(), &vips, &owner.status()) {
                Ok(s) => Response::Ha(s.into_iter().filter(|g| g.group == group).collect()),
                Err(e) => Response::err(e),
            }
        }
        Request::HaStatus => {
            let vips = owner.vips().to_vec();
            let status = owner.status();
            match ha.status(owner.tables(), &vips, &status) {
                Ok(s) => Response::Ha(s),
                Err(e) => Response::err(e),
            }
        }
        Request::Status => Response::Status(owner.status()),
        Request::Flow { proto, src, dst } => match owner.flow(proto, src, dst) {
            Ok(f) => Response::Flow(f),
            Err(e) => Response::err(e),
        },
        Request::Change { change } => {
            let before = owner.vips().to_vec();
            tracing::info!(?change, "API change");
            match owner.change(change) {
                Ok(stats) => Response::Applied(ApplyResult {
                    changes: diff(&before, owner.vips()),
                    map_writes: stats.map_writes(),
                }),
                Err(e) => Response::err(e),
            }
        }
        Request::Apply {
            text,
            origin,
            dry_run,
        } => {
            let vips = match Config::parse_vips(&text, &origin, owner.limits()) {
                Ok(v) => v,
                Err(e) => return Response::err(format!("{e}\nnothing was changed")),
            };
            let changes = diff(owner.vips(), &vips);
            if dry_run {
                return Response::Applied(ApplyResult {
                    changes,
                    map_writes: 0,
                });
            }
            tracing::info!(file = %origin, changes = changes.len(), "API apply");
            match owner.set_vips(vips) {
                Ok(stats) => Response::Applied(ApplyResult {
                    changes,
                    map_writes: stats.map_writes(),
                }),
                Err(e) => Response::err(e),
            }
        }
        Request::Reload => {
            let new = match Config::load(config_path) {
                Ok(c) => c,
                Err(e) => return Response::err(format!("{e}\nnothing was changed")),
            };
            for (what, same) in [
                ("instance", new.instance == cfg.instance),
                (
                    "[datapath] interfaces / xdp_mode",
                    new.datapath.interfaces == cfg.datapath.interfaces
                        && new.datapath.xdp_mode == cfg.datapath.xdp_mode,
                ),
                ("[api]", new.api == cfg.api),
                ("state_file", new.state_file == cfg.state_file),
                ("[[group]]", new.groups == cfg.groups),
            ] {
                if !same {
                    tracing::warn!(
                        "{what} changed in the config file: it takes effect when vipd restarts"
                    );
                }
            }
            let before = owner.vips().to_vec();
            match owner.reload(&new) {
                Ok(stats) => {
                    let changes = diff(&before, owner.vips());
                    tracing::info!(
                        changes = changes.len(),
                        map_writes = stats.map_writes(),
                        "config reloaded"
                    );
                    cfg.vips = new.vips;
                    cfg.datapath.mtu = new.datapath.mtu;
                    cfg.datapath.icmp_too_big = new.datapath.icmp_too_big;
                    cfg.datapath.tunnel_source_v4 = new.datapath.tunnel_source_v4;
                    cfg.datapath.tunnel_source_v6 = new.datapath.tunnel_source_v6;
                    cfg.metrics = new.metrics;
                    Response::Applied(ApplyResult {
                        changes,
                        map_writes: stats.map_writes(),
                    })
                }
                Err(e) => Response::err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
