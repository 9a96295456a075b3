//! vipd's event loop: the owner sits in one loop that takes API requests, health
//! transitions, SIGHUP, metrics snapshots and next-hop changes as messages, so it is the
//! only writer of the maps. Everything that waits on the outside world runs on tasks of
//! its own: the API and metrics listeners (capped, [`super::listener`]), the health
//! checks, the next-hop resolver (netlink events) and the metrics refresher.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::{Notify, mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{
    announce::{Announcer, RouteChange, RouteTable},
    api::{self, Access, ApiLimits},
    ha::Ha,
    health::{self, Supervisor, Transition},
    listener,
    live_trace::{TraceNames, Tracer},
    metrics::{self, Metrics},
    nexthop::{self, NextHopCache},
};
use crate::{
    config::{AnnounceSpec, Config, MetricsSpec},
    control::{
        announce::{self, NodeState, Plan, VipRoute, Want},
        diff::{diff, warnings},
        owner::Owner,
        reconcile::BackendIdentity,
    },
    datapath::{tables::DatapathOps, trace::TraceMaps},
    protocol::{ApplyResult, NodeStatus, Request, Response, Status, VipAnnouncement},
};

/// A message to the owner loop.
#[derive(Debug)]
pub enum Msg {
    /// An API request and where to send the answer. Boxed: a request carries whole VIP
    /// specs (with https checks, over 200 bytes) and the channel's slots are sized for it.
    Api(Box<Request>, oneshot::Sender<Response>),
    /// The metrics refresher wants a snapshot.
    Status(oneshot::Sender<Status>),
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT: the datapath stays attached and keeps serving.
    Signal,
}

/// How long a down verdict that withdraws a VIP's route waits before it changes the
/// datapath: a withdrawal reaches the routers in 5-40 ms (BIRD, measured), and until
/// then flows still arriving here keep the backends every other node gives them.
const WITHDRAW_FIRST: Duration = Duration::from_millis(250);

/// Every allocated backend id with its address (the next hop is towards it in every
/// forwarding mode: the rewritten destination or the tunnel's outer destination).
fn backend_addrs<T: DatapathOps>(owner: &Owner<T>) -> Vec<(u32, IpAddr)> {
    let mut v: Vec<(u32, IpAddr)> = owner
        .backend_ids()
        .into_iter()
        .map(|((_, addr), id)| (id, addr.ip()))
        .collect();
    v.sort_unstable();
    v
}

/// The distinct addresses of `backends`, for the resolver.
fn address_set(backends: &[(u32, IpAddr)]) -> Arc<Vec<IpAddr>> {
    let set: BTreeSet<IpAddr> = backends.iter().map(|&(_, a)| a).collect();
    Arc::new(set.into_iter().collect())
}

/// A connection cap that fits the open-files limit: the listeners together may hold at
/// most half of it, so health checks, state-file writes and netlink always find a
/// descriptor however hard the listeners are flooded.
fn fit(what: &str, cap: usize, share: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else { return cap };
    let most = ((limit as usize) / 2 / share).max(1);
    if cap > most {
        tracing::warn!(
            listener = what,
            configured = cap,
            used = most,
            open_files = limit,
            "connection cap lowered to fit the open-files limit; raise LimitNOFILE to use the configured cap"
        );
    }
    cap.min(most)
}

/// The metrics endpoint: its listener task and its refresher, restarted only when
/// `[metrics]` changes (or its listener could not be bound last time).
#[derive(Debug, Default)]
struct MetricsEndpoint {
    running: Option<(MetricsSpec, JoinHandle<()>, JoinHandle<()>)>,
}

impl MetricsEndpoint {
    /// Stops both tasks and waits until they are gone, so the port is free again.
    async fn stop(&mut self) {
        if let Some((_, server, refresher)) = self.running.take() {
            server.abort();
            refresher.abort();
            let _ = server.await;
            let _ = refresher.await;
        }
    }

    /// Makes the endpoint serve `want`.
    async fn sync(
        &mut self,
        want: Option<MetricsSpec>,
        metrics: &Arc<Metrics>,
        tx: &mpsc::Sender<Msg>,
        poke: &Arc<Notify>,
    ) {
        if self.running.as_ref().map(|r| r.0) == want && want.is_some() {
            return;
        }
        self.stop().await;
        let Some(spec) = want else { return };
        let addr = spec.listen;
        let l = match metrics::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve metrics: fix [metrics] listen and send SIGHUP");
                return;
            }
        };
        let cap = fit(
            "metrics",
            spec.max_connections as usize,
            4,
            listener::open_files_limit(),
        );
        tracing::info!(%addr, max_connections = cap, refresh = %humantime::format_duration(spec.refresh), "serving Prometheus metrics");
        let (text_tx, text_rx) = watch::channel(None);
        let server = tokio::spawn(metrics::serve(l, text_rx, cap));
        let tx = tx.clone();
        let refresher = tokio::spawn(metrics::refresh(
            metrics.clone(),
            move || {
                let tx = tx.clone();
                async move {
                    let (rtx, rrx) = oneshot::channel();
                    tx.send(Msg::Status(rtx)).await.ok()?;
                    rrx.await.ok()
                }
            },
            spec.refresh,
            poke.clone(),
            text_tx,
        ));
        self.running = Some((spec, server, refresher));
    }
}

/// What the live trace's datapath ids mean now.
fn trace_names<T: DatapathOps>(owner: &Owner<T>) -> TraceNames {
    let vips: HashMap<u32, String> = owner
        .vip_ids()
        .into_iter()
        .map(|(v, id)| (id, v.to_string()))
        .collect();
    let backends = owner
        .backend_ids()
        .into_iter()
        .map(|((vip, addr), id)| (id, (vip.to_string(), addr)))
        .collect();
    TraceNames { vips, backends }
}

/// Runs the owner loop until SIGTERM/SIGINT.
pub async fn run<T: DatapathOps>(
    mut owner: Owner<T>,
    mut cfg: Config,
    config_path: PathBuf,
    listener: UnixListener,
    access: Access,
    trace: Option<TraceMaps>,
) -> std::io::Result<Exit> {
    let metrics = Arc::new(Metrics::default());
    let (names_tx, names_rx) = watch::channel(Arc::new(trace_names(&owner)));
    let tracer = trace.map(|m| Arc::new(Tracer::new(m, names_rx)));
    let (tx, mut rx) = mpsc::channel::<Msg>(64);
    let (htx, mut hrx) = mpsc::unbounded_channel::<Transition>();
    let mut settled: HashSet<BackendIdentity> = HashSet::new();
    // Down verdicts whose datapath change waits for the withdrawal to reach the routers.
    let (dtx, mut drx) = mpsc::unbounded_channel::<(Transition, u64)>();
    let mut deferred: HashMap<BackendIdentity, u64> = HashMap::new();
    let mut deferrals = 0u64;
    let mut routes = RouteKeeper::default();
    let mut checks = Supervisor::default();
    checks.update(
        health::targets(owner.vips()),
        |i| owner.is_up(i),
        &htx,
        &metrics,
    );
    let mut backends = backend_addrs(&owner);
    let (addrs_tx, addrs_rx) = watch::channel(address_set(&backends));
    let (ntx, mut nrx) = mpsc::unbounded_channel::<nexthop::Update>();
    let resolver = tokio::spawn(nexthop::run(addrs_rx, ntx));
    let mut nexthops = NextHopCache::default();
    let mut resolve_failing = false;
    let open_files = listener::open_files_limit();
    let mut limits = ApiLimits::of(&cfg.api);
    limits.max_connections = fit("api", limits.max_connections, 2, open_files);
    limits.max_connections_per_user = limits.max_connections_per_user.min(limits.max_connections);
    let api_tx = tx.clone();
    let api_server = tokio::spawn(api::serve(listener, access, limits, tracer, move |req| {
        let tx = api_tx.clone();
        async move {
            let (rtx, rrx) = oneshot::channel();
            if tx.send(Msg::Api(Box::new(req), rtx)).await.is_err() {
                return Response::err("vipd is shutting down");
            }
            rrx.await
                .unwrap_or_else(|_| Response::err("vipd is shutting down"))
        }
    }));
    let poke = Arc::new(Notify::new());
    let mut endpoint = MetricsEndpoint::default();
    endpoint.sync(cfg.metrics, &metrics, &tx, &poke).await;
    let mut ha = match Ha::start(&cfg.groups, owner.tables_mut()) {
        Ok(ha) => ha,
        Err(e) => {
            tracing::error!(error = %e, "HA groups unavailable: no VIP is announced");
            Ha::default()
        }
    };
    sync_ha(&mut ha, &mut owner);
    ha.announce_active(owner.tables(), owner.vips());
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(
        socket = %cfg.api.socket.display(),
        vips = owner.vips().len(),
        checks = checks.len(),
        api_max_connections = limits.max_connections,
        "vipd serving"
    );
    // systemd (Type=notify): the API answers and the datapath is attached. Outside
    // systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not tell systemd that vipd is ready");
    }
    loop {
        // Whether this turn may have changed the VIPs, backends or health.
        let mut changed = true;
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                Msg::Api(req, reply) => match *req {
                    Request::NodeDrain { drained } => {
                        let resp = match owner.set_drained(drained) {
                            Ok(()) => {
                                tracing::info!(drained, "node {}", if drained { "drained: withdrawing every VIP route" } else { "undrained" });
                                let plan = route_plan(&owner, &cfg, &deferred, &settled);
                                routes.keep(cfg.announce, plan.clone(), &metrics).await;
                                Response::Node(routes.status(&cfg, owner.drained(), &plan))
                            }
                            Err(e) => Response::err(e),
                        };
                        let _ = reply.send(resp);
                    }
                    Request::NodeStatus => {
                        let plan = route_plan(&owner, &cfg, &deferred, &settled);
                        let _ = reply.send(Response::Node(routes.status(&cfg, owner.drained(), &plan)));
                    }
                    req => {
                        let reload = matches!(req, Request::Reload);
                        changed = matches!(req, Request::Change { .. } | Request::Apply { dry_run: false, .. } | Request::Reload);
                        let resp = handle(&mut owner, &mut ha, &mut cfg, &config_path, req);
                        if reload && !matches!(resp, Response::Error(_)) {
                            // Before answering: when `vipctl reload` returns, the endpoint
                            // serves what the file says.
                            endpoint.sync(cfg.metrics, &metrics, &tx, &poke).await;
                        }
                        let _ = reply.send(resp);
                    }
                },
                Msg::Status(reply) => {
                    changed = false;
                    let mut status = owner.status();
                    let vips = owner.vips().to_vec();
                    status.ha = ha.status(owner.tables(), &vips, &status).unwrap_or_default();
                    let _ = reply.send(status);
                }
            },
            Some(t) = hrx.recv() => {
                // Transitions that arrived together are applied together: one
                // reconcile, one state-file write.
                let mut batch = vec![t];
                while let Ok(t) = hrx.try_recv() {
                    batch.push(t);
                }
                let mut results: Vec<(BackendIdentity, bool)> = Vec::new();
                for t in batch {
                    settled.insert(t.ident);
                    let pending = deferred.remove(&t.ident).is_some();
                    if t.first && t.up == owner.is_up(&t.ident) && !pending {
                        continue; // a first verdict that changes nothing
                    }
                    tracing::info!(vip = %t.ident.0, backend = %t.ident.1, up = t.up, detail = %t.detail, "health check transition");
                    let down_is_news = !t.up && owner.is_up(&t.ident);
                    let up_after = |i: &BackendIdentity| {
                        owner.is_up(i)
                            && !deferred.contains_key(i)
                            && *i != t.ident
                            && !results.iter().any(|(r, up)| r == i && !up)
                    };
                    let node = node_state(&owner);
                    if down_is_news
                        && routes.withdraws(&cfg, owner.vips(), node, up_after, |i| settled.contains(i))
                    {
                        // Withdraw first: routers stop sending here within milliseconds,
                        // and until then this node keeps the backends every other node
                        // uses, so no flow crossing it is re-hashed.
                        deferrals += 1;
                        deferred.insert(t.ident, deferrals);
                        let dtx = dtx.clone();
                        let seq = deferrals;
                        tokio::spawn(async move {
                            tokio::time::sleep(WITHDRAW_FIRST).await;
                            let _ = dtx.send((t, seq));
                        });
                    } else {
                        results.push((t.ident, t.up));
                    }
                }
                if !results.is_empty()
                    && let Err(e) = owner.set_healths(&results)
                {
                    tracing::error!(error = %e, transitions = results.len(), "applying health changes failed");
                }
            }
            Some((t, seq)) = drx.recv() => {
                if deferred.get(&t.ident) == Some(&seq) {
                    deferred.remove(&t.ident);
                    if let Err(e) = owner.set_healths(&[(t.ident, t.up)]) {
                        tracing::error!(error = %e, "applying a health change failed");
                    }
                }
            }
            _ = hup.recv() => {
                tracing::info!(file = %config_path.display(), "SIGHUP: reloading the config file");
                match handle(&mut owner, &mut ha, &mut cfg, &config_path, Request::Reload) {
                    Response::Error(e) => tracing::error!(error = %e, "reload refused; still running the previous config"),
                    _ => endpoint.sync(cfg.metrics, &metrics, &tx, &poke).await,
                }
            }
            Some(update) = nrx.recv() => {
                changed = false;
                // Everything the resolver has sent so far, in one pass over the ids.
                let mut merged = HashMap::new();
                let mut failure = None;
                for u in std::iter::once(update).chain(std::iter::from_fn(|| nrx.try_recv().ok())) {
                    match u {
                        Ok(m) => merged.extend(m),
                        Err(e) => failure = Some(e),
                    }
                }
                match failure {
                    Some(e) if !resolve_failing => {
                        resolve_failing = true;
                        tracing::warn!(error = %e, "cannot resolve backends' next hops; the datapath keeps using bpf_fib_lookup");
                    }
                    Some(_) => {}
                    None => resolve_failing = false,
                }
                match nexthops.apply(owner.tables_mut(), &backends, merged) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(map_writes = n, "next hops updated"),
                    Err(e) => tracing::error!(error = %e, "writing next hops failed; the datapath uses bpf_fib_lookup for those backends"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if !changed {
            continue;
        }
        checks.update(
            health::targets(owner.vips()),
            |i| owner.is_up(i),
            &htx,
            &metrics,
        );
        settled.retain(|i| owner.is_configured(i));
        let names = trace_names(&owner);
        names_tx.send_if_modified(|old| {
            let differs = **old != names;
            if differs {
                *old = Arc::new(names);
            }
            differs
        });
        let plan = route_plan(&owner, &cfg, &deferred, &settled);
        routes.keep(cfg.announce, plan, &metrics).await;
        let now = backend_addrs(&owner);
        if now != backends {
            backends = now;
            // Ids that were removed or now mean another address are cleared at once; new
            // ids of addresses the resolver knows are written at once.
            if let Err(e) = nexthops.apply(owner.tables_mut(), &backends, HashMap::new()) {
                tracing::error!(error = %e, "updating the next hops of changed backends failed");
            }
            let set = address_set(&backends);
            addrs_tx.send_if_modified(|old| {
                let differs = *old != set;
                if differs {
                    *old = set;
                }
                differs
            });
        }
        poke.notify_one();
    }
    tracing::info!(
        "stopping; the datapath stays attached and keeps forwarding (`vipd down` detaches it)"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    resolver.abort();
    api_server.abort();
    endpoint.stop().await;
    // The socket is removed by whoever bound it (`lifecycle`), and only if it is still
    // the one it bound.
    Ok(Exit::Signal)
}

/// What the node allows: drained by the operator or not; the datapath is attached for as
/// long as this loop runs (vipd attaches it before and `vipd down` detaches it after).
fn node_state<T: DatapathOps>(owner: &Owner<T>) -> NodeState {
    NodeState {
        drained: owner.drained(),
        attached: true,
    }
}

/// The route plan now: a backend whose down verdict waits for its withdrawal counts as
/// down already.
fn route_plan<T: DatapathOps>(
    owner: &Owner<T>,
    cfg: &Config,
    deferred: &HashMap<BackendIdentity, u64>,
    settled: &HashSet<BackendIdentity>,
) -> Plan {
    announce::plan(
        owner.vips(),
        &cfg.announce,
        node_state(owner),
        |i| owner.is_up(i) && !deferred.contains_key(i),
        |i| settled.contains(i),
    )
}

/// Keeps the routing table equal to the announcement plan. Nothing is touched until some
/// VIP announces (an operator who never turns announcing on has no netlink traffic).
#[derive(Debug, Default)]
struct RouteKeeper {
    announcer: Option<Announcer>,
    /// The last failure was logged; quiet until it succeeds again.
    failing: bool,
}

impl RouteKeeper {
    /// Whether the health `up_after` describes withdraws a route that is announced now
    /// (or was until a moment ago).
    fn withdraws(
        &self,
        cfg: &Config,
        vips: &[crate::config::VipSpec],
        node: NodeState,
        up_after: impl Fn(&BackendIdentity) -> bool,
        settled: impl Fn(&BackendIdentity) -> bool,
    ) -> bool {
        let Some(a) = &self.announcer else {
            return false;
        };
        let after = announce::plan(vips, &cfg.announce, node, up_after, settled);
        after.routes.iter().any(|(addr, w)| {
            // Also a route removed a moment ago: the routers may not have heard yet.
            matches!(w, Want::Absent(_))
                && (a.is_installed(*addr) || a.removed_within(*addr, WITHDRAW_FIRST))
        })
    }

    /// `vipctl node status`.
    fn status(&self, cfg: &Config, drained: bool, plan: &Plan) -> NodeStatus {
        let installed = |a| self.announcer.as_ref().is_some_and(|r| r.is_installed(a));
        NodeStatus {
            drained,
            table: cfg.announce.table,
            protocol: cfg.announce.protocol,
            vips: plan
                .vips
                .iter()
                .map(|(vip, state)| {
                    let (state, reason) = match state {
                        VipRoute::Off => ("off", None),
                        VipRoute::AwaitingHealth => ("awaiting_health", None),
                        VipRoute::Announced => ("announced", None),
                        VipRoute::Withheld(w) => ("withheld", Some(w.to_string())),
                    };
                    VipAnnouncement {
                        vip: *vip,
                        state: state.into(),
                        reason,
                        route: installed(vip.addr),
                    }
                })
                .collect(),
        }
    }

    async fn keep(&mut self, spec: AnnounceSpec, plan: Plan, metrics: &Metrics) {
        if self.announcer.is_none() {
            if plan.routes.is_empty() {
                return;
            }
            let opened = match RouteTable::open(spec.table, spec.protocol) {
                Ok(t) => Announcer::adopt(t).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(a) => self.announcer = Some(a),
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::error!(error = %crate::Report(&e), "cannot manage VIP routes; no VIP is announced by this node until it works");
                    }
                    return;
                }
            }
        }
        let Some(a) = self.announcer.as_mut() else {
            return;
        };
        let (changes, err) = a.apply(&plan).await;
        for c in changes {
            match c {
                RouteChange::Added(addr) => tracing::info!(%addr, "VIP route announced"),
                RouteChange::Removed(addr, cause) => {
                    metrics.count_withdrawal(cause.label());
                    tracing::info!(%addr, cause = cause.label(), "VIP route withdrawn")
                }
            }
        }
        metrics.set_announced(
            &plan
                .vips
                .iter()
                .filter(|(_, state)| *state != VipRoute::Off)
                .map(|(vip, _)| (vip.to_string(), a.is_installed(vip.addr)))
                .collect::<Vec<_>>(),
        );
        match err {
            Some(e) if !std::mem::replace(&mut self.failing, true) => {
                tracing::error!(error = %crate::Report(&e), "changing VIP routes failed; retrying after the next event");
            }
            Some(_) => {}
            None => self.failing = false,
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
        // The event loop answers these itself (they need the routes); never sent here.
        Request::NodeDrain { .. } | Request::NodeStatus => {
            Response::err("node requests are answered by the event loop")
        }
        // Served on its API connection (`live_trace`); never sent here.
        Request::TraceLive { .. } => {
            Response::err("live traces are served by the API connection, not the owner")
        }
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
                    warnings: warnings(&before, owner.vips()),
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
            let mut changes = diff(owner.vips(), &vips);
            // `apply` says what runs: unmanaged VIPs go (or are replaced, if defined).
            changes.extend(
                owner
                    .unmanaged()
                    .iter()
                    .map(|u| format!("- unmanaged vip {}", u.vip)),
            );
            let warnings = warnings(owner.vips(), &vips);
            if dry_run {
                return Response::Applied(ApplyResult {
                    changes,
                    map_writes: 0,
                    warnings,
                });
            }
            tracing::info!(file = %origin, changes = changes.len(), "API apply");
            match owner.apply(vips) {
                Ok(stats) => Response::Applied(ApplyResult {
                    changes,
                    map_writes: stats.map_writes(),
                    warnings,
                }),
                Err(e) => Response::err(e),
            }
        }
        Request::Reload => {
            let new = match Config::load(config_path) {
                Ok(c) => c,
                Err(e) => return Response::err(format!("{e}\nnothing was changed")),
            };
            let restart_only = cfg.restart_only_changes(&new);
            if !restart_only.is_empty() {
                return Response::err(format!(
                    "{} changed in {}, and vipd applies that only when it starts: nothing was changed. Restore the running value and reload, or restart vipd (SIGTERM, then `vipd run`) to apply the whole file",
                    restart_only.join(", "),
                    config_path.display()
                ));
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
                    cfg.announce.enabled = new.announce.enabled;
                    Response::Applied(ApplyResult {
                        warnings: warnings(&before, owner.vips()),
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
