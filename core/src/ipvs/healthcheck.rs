//! Health-check node ports: what kube-proxy's `pkg/proxy/healthcheck/service_health.go` serves.
//!
//! Cloud load balancers of `type: LoadBalancer` Services with `externalTrafficPolicy: Local`
//! probe `http://<node>:<spec.healthCheckNodePort>/` on every node and send traffic only to the
//! nodes that answer 200, i.e. the nodes with a ready endpoint of the Service.
//!
//! - Pure part: [`HealthCheckIndex`] follows the control loop's [`ProxyView`](super::view::ProxyView) (the one view
//!   of each Service, computed once per change; only the Services that changed are looked at)
//!   and yields the [`HealthCheckTarget`] of every port ([`targets`] does it in one go); [`listen_addresses`] picks the addresses from
//!   `nodePortAddresses`; [`answer`] is the HTTP answer for one target.
//! - IO part: [`HealthCheckServer`] keeps one listener per port (tokio, hyper HTTP/1.1), each
//!   reading its current target from an [`ArcSwap`] slot, so an endpoint change changes the
//!   answer at once without touching the socket. A port that cannot be bound is logged and
//!   retried; it never stops the proxy.
//! - Driver: [`spawn`] runs both from the steps of the control loop's view (a
//!   [`ViewSubscriber`], see [`super::view::view_feed`]) and the live [`ProxyConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::ProxyConfig;
use super::desired::NodeInfo;
use super::run::StatusHandle;
#[cfg(test)]
use super::view::ProxyView;
use super::view::{ServiceView, ViewStep, ViewSubscriber};
use crate::model::ObjectKey;
use crate::runtime::http::{self, Reply, Routes};

/// How long after a failed bind the port is tried again.
pub(crate) const BIND_RETRY: Duration = Duration::from_secs(5);

/// What one health-check node port answers for: the Service and its ready endpoints on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckTarget {
    /// The Service (namespace and name).
    pub service: ObjectKey,
    /// Ready endpoints of the Service on this node, counted by address (as kube-proxy's
    /// `LocalReadyEndpoints`: one pod serving several ports counts once).
    pub local_endpoints: usize,
}

/// The addresses health-check ports listen on: the node addresses in `nodePortAddresses` when
/// it is set (none when no address matches, as kube-proxy), else the unspecified address `::`,
/// which [`HealthCheckServer`] binds dual-stack (falling back to `0.0.0.0` without IPv6).
pub fn listen_addresses(config: &ProxyConfig, local_addresses: &[IpAddr]) -> Vec<IpAddr> {
    if config.node_port_addresses.is_empty() {
        return vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)];
    }
    NodeInfo {
        node_name: None,
        local_addresses: local_addresses.to_vec(),
    }
    .node_port_addresses(config, &[])
}

/// The health-check targets of `view`, by port.
#[cfg(test)]
pub(crate) fn targets(view: &ProxyView) -> BTreeMap<u16, HealthCheckTarget> {
    let mut index = HealthCheckIndex::new();
    index.observe(view);
    index.targets()
}

/// What one Service contributes: its port and local endpoint count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: u16,
    local_endpoints: usize,
}

fn entry(sv: &ServiceView) -> Option<Entry> {
    Some(Entry {
        port: sv.health_check_node_port?,
        local_endpoints: sv.local_ready_endpoints,
    })
}

/// The Services with health-check node ports, kept in step with the proxy's [`ProxyView`](super::view::ProxyView)
/// (read directly, or through the steps a [`ViewSubscriber`] receives): it never computes a
/// Service's view itself.
///
/// Two Services claiming one port (the API server prevents it) share it: the first by
/// namespace and name answers, as if the other's listener had failed to bind.
#[derive(Debug, Default)]
pub struct HealthCheckIndex {
    /// The view revision last observed (0: none).
    #[cfg(test)]
    seen: u64,
    services: BTreeMap<ObjectKey, Entry>,
    ports: BTreeMap<u16, BTreeSet<ObjectKey>>,
}

impl HealthCheckIndex {
    /// An empty index (the first [`observe`](Self::observe) reads every Service).
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the index up to `view`: only the Services the view read again since the revision
    /// last observed are looked at (all of them the first time, or when the index fell behind
    /// by more than one step). Returns the ports whose [`target`](Self::target) may have
    /// changed (appeared, went or answers differently). The health-check task receives the
    /// view's steps instead ([`apply`](Self::apply)); tests follow a view directly.
    #[cfg(test)]
    pub(crate) fn observe(&mut self, view: &ProxyView) -> BTreeSet<u16> {
        let changed = match view.changes_since(self.seen) {
            Some(keys) => self.apply_changes(
                keys.iter()
                    .map(|k| (k.clone(), view.service(k).and_then(|sv| entry(sv)))),
            ),
            None => self.apply_all(
                view.services()
                    .filter_map(|sv| Some((sv.service.key.clone(), entry(sv)?))),
            ),
        };
        self.seen = view.revision();
        changed
    }

    /// Applies one step received from the control loop's view (see [`observe`](Self::observe)
    /// for what is returned).
    pub(crate) fn apply(&mut self, step: ViewStep) -> BTreeSet<u16> {
        match step {
            ViewStep::Changes(changes) => self.apply_changes(
                changes
                    .into_iter()
                    .map(|(k, sv)| (k, sv.and_then(|sv| entry(&sv)))),
            ),
            ViewStep::All(all) => {
                self.apply_all(all.into_iter().filter_map(|(k, sv)| Some((k, entry(&sv)?))))
            }
        }
    }

    /// Sets the entries of the Services that changed; returns the ports that may answer
    /// differently.
    fn apply_changes(
        &mut self,
        changes: impl Iterator<Item = (ObjectKey, Option<Entry>)>,
    ) -> BTreeSet<u16> {
        let mut changed = BTreeSet::new();
        for (key, now) in changes {
            let before = self.set(key, now);
            if before != now {
                changed.extend(before.map(|e| e.port));
                changed.extend(now.map(|e| e.port));
            }
        }
        changed
    }

    /// Replaces every entry; returns the ports whose target changed.
    fn apply_all(&mut self, entries: impl Iterator<Item = (ObjectKey, Entry)>) -> BTreeSet<u16> {
        let old = self.targets();
        self.services.clear();
        self.ports.clear();
        for (key, e) in entries {
            self.set(key, Some(e));
        }
        let new = self.targets();
        let mut changed: BTreeSet<u16> = old.keys().chain(new.keys()).copied().collect();
        changed.retain(|p| old.get(p) != new.get(p));
        changed
    }

    /// Sets (or removes, with `None`) one Service's entry; returns the previous one.
    fn set(&mut self, key: ObjectKey, entry: Option<Entry>) -> Option<Entry> {
        let before = match entry {
            Some(e) => self.services.insert(key.clone(), e),
            None => self.services.remove(&key),
        };
        if before.map(|e| e.port) != entry.map(|e| e.port) {
            if let Some(b) = before
                && let Some(owners) = self.ports.get_mut(&b.port)
            {
                owners.remove(&key);
                if owners.is_empty() {
                    self.ports.remove(&b.port);
                }
            }
            if let Some(e) = entry {
                self.ports.entry(e.port).or_default().insert(key);
            }
        }
        before
    }

    /// The target answering on `port`, if any Service claims it.
    pub fn target(&self, port: u16) -> Option<HealthCheckTarget> {
        let key = self.ports.get(&port)?.first()?;
        let e = self.services.get(key)?;
        Some(HealthCheckTarget {
            service: key.clone(),
            local_endpoints: e.local_endpoints,
        })
    }

    /// Every port with a target, ascending.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// Services that claim a port another Service (first by namespace and name) answers on.
    pub fn conflicts(&self) -> impl Iterator<Item = (u16, &ObjectKey)> + '_ {
        self.ports
            .iter()
            .flat_map(|(port, owners)| owners.iter().skip(1).map(move |k| (*port, k)))
    }

    /// Every target, by port.
    pub fn targets(&self) -> BTreeMap<u16, HealthCheckTarget> {
        self.ports()
            .filter_map(|p| self.target(p).map(|t| (p, t)))
            .collect()
    }
}

/// One health-check answer, as kube-proxy sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 200 with local endpoints and a healthy proxy, else 503.
    pub status: u16,
    /// `X-Load-Balancing-Endpoint-Weight`: the local endpoint count.
    pub weight: usize,
    /// The JSON body (kube-proxy's layout, tab-indented).
    pub body: String,
}

/// The answer for `target`: status 200 when it has local endpoints and the proxy is healthy,
/// 503 otherwise (also when the port has no target any more, a request racing a close).
pub fn answer(target: Option<&HealthCheckTarget>, proxy_healthy: bool) -> Answer {
    let Some(t) = target else {
        return Answer {
            status: 503,
            weight: 0,
            body: "{}".into(),
        };
    };
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        quote(&t.service.namespace),
        quote(&t.service.name),
        t.local_endpoints,
        proxy_healthy,
    );
    Answer {
        status: if t.local_endpoints > 0 && proxy_healthy {
            200
        } else {
            503
        },
        weight: t.local_endpoints,
        body,
    }
}

/// Whether the proxy itself is healthy (`serviceProxyHealthy` in answers).
pub(crate) type ProxyHealth = Arc<dyn Fn() -> bool + Send + Sync>;

/// The proxy's health as kube-proxy reports it to health checks: synced at least once, the
/// last sync succeeded and is recent (see [`StatusHandle::healthy`]).
pub(crate) fn proxy_health(
    status: StatusHandle,
    config: watch::Receiver<ProxyConfig>,
) -> ProxyHealth {
    Arc::new(move || {
        let period = config.borrow().sync_period;
        status.get().syncs > 0 && status.healthy(period)
    })
}

/// One open port: its listeners and the target they answer for.
struct Listener {
    slot: Arc<ArcSwap<HealthCheckTarget>>,
    #[cfg(test)]
    addresses: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The listeners of every health-check port. Needs a tokio runtime.
pub struct HealthCheckServer {
    healthy: ProxyHealth,
    /// The addresses ports are bound on (`None` before the first update).
    listen: Option<Vec<IpAddr>>,
    open: BTreeMap<u16, Listener>,
    /// Ports whose listener could not be opened, with the last error.
    failed: BTreeMap<u16, String>,
}

impl std::fmt::Debug for HealthCheckServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheckServer")
            .field("listen", &self.listen)
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .field("failed", &self.failed)
            .finish()
    }
}

impl HealthCheckServer {
    /// A server with no ports open; `healthy` is asked at every request.
    pub fn new(healthy: ProxyHealth) -> Self {
        Self {
            healthy,
            listen: None,
            open: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Follows `index`: `changed` are the ports [`HealthCheckIndex::observe`] reported. New
    /// ports are bound on `listen` (all ports are reopened when `listen` changed), gone ones
    /// closed, changed answers take effect at once. Ports that failed to bind before are tried
    /// again. Costs O(changed ports), plus the failed ones.
    pub fn update(&mut self, index: &HealthCheckIndex, changed: &BTreeSet<u16>, listen: &[IpAddr]) {
        let mut ports: BTreeSet<u16> = changed.clone();
        if self.listen.as_deref() != Some(listen) {
            if !self.open.is_empty() {
                tracing::info!(addresses = ?listen, "health-check node ports move to new addresses");
            }
            if listen.is_empty() {
                tracing::warn!(
                    "no node address matches nodePortAddresses: health-check node ports are not served"
                );
            }
            self.open.clear();
            self.listen = Some(listen.to_vec());
            ports.extend(index.ports());
        }
        ports.extend(self.failed.keys().copied());
        for port in ports {
            match index.target(port) {
                None => {
                    if self.open.remove(&port).is_some() {
                        tracing::info!(port, "health-check node port closed");
                    }
                    self.failed.remove(&port);
                }
                Some(target) => match self.open.get(&port) {
                    Some(l) => l.slot.store(Arc::new(target)),
                    None => self.open_port(port, target),
                },
            }
        }
    }

    fn open_port(&mut self, port: u16, target: HealthCheckTarget) {
        let listen = self.listen.as_deref().unwrap_or_default();
        let mut listeners = Vec::with_capacity(listen.len());
        for ip in listen {
            match bind(SocketAddr::new(*ip, port)) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let error = format!("{}: {e}", SocketAddr::new(*ip, port));
                    if self.failed.get(&port) != Some(&error) {
                        tracing::warn!(
                            service = %target.service,
                            port,
                            error = %error,
                            "cannot open the health-check node port; retrying"
                        );
                    }
                    self.failed.insert(port, error);
                    return;
                }
            }
        }
        let was_failed = self.failed.remove(&port).is_some();
        let slot = Arc::new(ArcSwap::from_pointee(target));
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        tracing::info!(
            service = %slot.load().service,
            port,
            addresses = ?addresses,
            after_failure = was_failed,
            "health-check node port open"
        );
        let tasks = listeners
            .into_iter()
            .map(|l| http::spawn(l, routes(slot.clone(), self.healthy.clone())))
            .collect();
        self.open.insert(
            port,
            Listener {
                slot,
                #[cfg(test)]
                addresses,
                tasks,
            },
        );
    }

    /// Whether some port still waits for a successful bind.
    pub(crate) fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Ports that could not be bound, with the last error.
    #[cfg(test)]
    pub(crate) fn failed(&self) -> &BTreeMap<u16, String> {
        &self.failed
    }

    /// The addresses `port` is being served on (empty when it is not open).
    #[cfg(test)]
    pub(crate) fn bound(&self, port: u16) -> &[SocketAddr] {
        self.open
            .get(&port)
            .map(|l| l.addresses.as_slice())
            .unwrap_or(&[])
    }

    /// Ports open, ascending.
    #[cfg(test)]
    pub(crate) fn open_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.open.keys().copied()
    }
}

/// Binds one listening socket. The unspecified IPv6 address is bound dual-stack, falling back
/// to `0.0.0.0` where IPv6 is unavailable.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(!addr.ip().is_unspecified())?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    match open(addr) {
        Err(e)
            if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && e.kind() != std::io::ErrorKind::AddrInUse =>
        {
            tracing::debug!(error = %e, "no dual-stack listener; using 0.0.0.0");
            open(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                addr.port(),
            ))
        }
        other => other,
    }
}

/// The route table of one health-check port: every path gets the Service's answer.
fn routes(slot: Arc<ArcSwap<HealthCheckTarget>>, healthy: ProxyHealth) -> Routes {
    Routes::new().any(move |_| {
        let a = answer(Some(&slot.load()), healthy());
        let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        Reply::new(status, "application/json", a.body)
            .with_header(
                hyper::header::X_CONTENT_TYPE_OPTIONS,
                hyper::header::HeaderValue::from_static("nosniff"),
            )
            .with_header(
                hyper::header::HeaderName::from_static("x-load-balancing-endpoint-weight"),
                hyper::header::HeaderValue::from(a.weight),
            )
    })
}

/// Options of [`spawn`].
#[derive(Clone)]
pub(crate) struct HealthCheckOptions {
    /// Node addresses instead of the kernel's (`--node-ip`), for `nodePortAddresses`.
    pub node_addresses: Option<Vec<IpAddr>>,
    /// Listen on these addresses instead of [`listen_addresses`] (tests: `127.0.0.1`).
    pub listen: Option<Vec<IpAddr>>,
    /// `serviceProxyHealthy`.
    pub proxy_healthy: ProxyHealth,
}

impl std::fmt::Debug for HealthCheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheckOptions")
            .field("node_addresses", &self.node_addresses)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// The node's addresses for `nodePortAddresses`: the given ones, else read from the kernel
/// (an unreadable kernel means every address, as kube-proxy does on that error).
async fn node_addresses(options: &HealthCheckOptions) -> Option<Vec<IpAddr>> {
    if let Some(a) = &options.node_addresses {
        return Some(a.clone());
    }
    let read = tokio::task::spawn_blocking(|| {
        use super::backend::AddressBackend as _;
        super::netlink::NetlinkAddresses::open().and_then(|mut a| a.local_addresses())
    })
    .await;
    match read
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(a) => Some(a),
        Err(error) => {
            tracing::warn!(%error, "reading node addresses for health-check ports failed; listening on all");
            None
        }
    }
}

/// Serves health-check node ports for the Services of the control loop's view (`views`, the
/// subscriber end of [`super::view::view_feed`] whose publisher is in
/// [`RunOptions::view_feed`](super::run::RunOptions::view_feed)) until the task is aborted
/// (the listeners close with it). Follows every step of the view (the control loop resolves
/// the node name, `hostnameOverride` included) and every configuration change
/// (`nodePortAddresses`; node addresses are read again every sync period while
/// `nodePortAddresses` is set).
pub fn spawn(
    views: ViewSubscriber,
    config: watch::Receiver<ProxyConfig>,
    options: HealthCheckOptions,
) -> JoinHandle<()> {
    tokio::spawn(run(views, config, options))
}

async fn run(
    mut views: ViewSubscriber,
    mut config: watch::Receiver<ProxyConfig>,
    options: HealthCheckOptions,
) {
    // Ports open once the control loop has seen every Service (its first view follows the
    // cache's first complete list; a partial list would answer wrongly).
    let Some(mut step) = views.next().await.map(Some) else {
        return;
    };
    let mut index = HealthCheckIndex::new();
    let mut server = HealthCheckServer::new(options.proxy_healthy.clone());
    let mut config_open = true;
    let mut views_open = true;
    let mut addresses: Option<Vec<IpAddr>> = None;
    let mut read_addresses = true;
    loop {
        let (needs_addresses, period) = {
            let c = config.borrow_and_update();
            let needs = options.listen.is_none() && !c.node_port_addresses.is_empty();
            (needs, c.sync_period.max(Duration::from_secs(1)))
        };
        if needs_addresses && read_addresses {
            addresses = node_addresses(&options).await;
        }
        read_addresses = false;
        let listen = match (&options.listen, &addresses) {
            (Some(l), _) => l.clone(),
            (None, Some(a)) if needs_addresses => listen_addresses(&config.borrow(), a),
            (None, _) => listen_addresses(&ProxyConfig::default(), &[]),
        };
        let changed = step.take().map(|s| index.apply(s)).unwrap_or_default();
        for (port, svc) in index.conflicts().filter(|(p, _)| changed.contains(p)) {
            tracing::warn!(service = %svc, port, "health-check node port already used by another service");
        }
        server.update(&index, &changed, &listen);
        tokio::select! {
            next = views.next(), if views_open => {
                // The control loop gone: keep answering from the last state until aborted.
                views_open = next.is_some();
                step = next;
            }
            r = config.changed(), if config_open => {
                config_open = r.is_ok();
                read_addresses = true;
            }
            _ = tokio::time::sleep(BIND_RETRY), if server.has_failed() => {}
            _ = tokio::time::sleep(period), if needs_addresses => read_addresses = true,
            else => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
#[path = "healthcheck_tests.rs"]
mod tests;
