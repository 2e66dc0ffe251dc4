//! Turning a loaded [`Corefile`] into plugin chains, one [`ZoneRouter`] per listen address.
//!
//! Plugins run in CoreDNS's fixed order (not the order written): errors, log, local, acl,
//! any, loadbalance, cache, rewrite, autopath, minimal, template, hosts, k8s_external,
//! kubernetes, file, loop, forward, whoami. So the cache sees (and keeps) the answers of
//! hosts, the cluster zone and forward, and loadbalance rotates even cached answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::autopath::AutoPath;
use super::cache::Cache;
use super::external_name::ExternalNameUpstream;
use super::forward::Forward;
use super::hosts::Hosts;
use super::k8s_external::K8sExternal;
use super::loadbalance::LoadBalance;
use super::loop_detect::{Loop, LoopHandler};
use super::metrics::PluginMetrics;
use super::observe::{Errors, Log};
use super::rewrite::Rewrite;
use super::router::ZoneRouter;
use crate::dns::corefile::{
    Corefile, FileSource, KubernetesConfig, ServerBlock, ServerTransport, TlsConfig,
};
use crate::dns::handler::{Chain, Plugin};
use crate::dns::zone::{PodMode, ZoneOptions};

/// Makes the `kubernetes` plugin for given zone options (the runtime keeps and reuses
/// instances whose options did not change across reloads).
pub(crate) type ClusterFactory = Arc<dyn Fn(&ZoneOptions) -> Arc<dyn Plugin> + Send + Sync>;

/// What building chains needs from outside.
#[derive(Clone)]
pub struct BuildContext {
    /// Plugin metrics (shared across reloads).
    pub metrics: Option<PluginMetrics>,
    /// Creates the cluster zone plugin.
    pub cluster: ClusterFactory,
    /// Files (hosts files).
    pub files: Arc<dyn FileSource>,
    /// Called when `loop` finds a loop.
    pub on_loop: LoopHandler,
    /// Listen on this address instead of the Corefile's (e.g. `--listen` for tests); applies
    /// to `dns://` blocks, `tls://` and `https://` blocks keep their own addresses.
    pub listen_override: Option<SocketAddr>,
    /// Node-local DNS addresses each `dns://` block also listens on, port 53, unless its
    /// addresses (after `listen_override`) cover them.
    pub node_local: Vec<std::net::IpAddr>,
}

/// The chains of one listen address and the loop detectors to start on it.
#[derive(Clone)]
pub struct Listener {
    /// The address.
    pub addr: SocketAddr,
    /// Server blocks by zone.
    pub router: ZoneRouter,
    /// Loop detectors of the blocks on this address (probe after binding).
    pub loops: Vec<Arc<Loop>>,
    /// The large-answer rate limit (`rrl` of the first block on this address that has one).
    pub rrl: Option<crate::dns::rrl::LargeAnswerLimit>,
    /// What the address serves: `dns://` (UDP+TCP), `tls://` or `https://`.
    pub transport: ServerTransport,
    /// The certificate of a `tls://`/`https://` address (`tls` of its first block).
    pub tls: Option<TlsConfig>,
}

/// Why a Corefile cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two server blocks serve the same zone on the same address (after `--listen`).
    #[error("zone {zone} is served twice on {addr} (server blocks at {first} and {second})")]
    DuplicateZone {
        /// The zone.
        zone: String,
        /// The address.
        addr: SocketAddr,
        /// Where the first block is.
        first: String,
        /// Where the second block is.
        second: String,
    },
    /// Two server blocks want different transports on the same address.
    #[error(
        "{addr} is used for {first_transport}:// (block at {first}) and {second_transport}:// (block at {second})"
    )]
    TransportConflict {
        /// The address.
        addr: SocketAddr,
        /// The first block's transport scheme.
        first_transport: &'static str,
        /// Where the first block is.
        first: String,
        /// The second block's transport scheme.
        second_transport: &'static str,
        /// Where the second block is.
        second: String,
    },
}

/// The cluster zone options of a `kubernetes` directive.
pub(crate) fn zone_options(k: &KubernetesConfig) -> ZoneOptions {
    ZoneOptions {
        zones: k
            .zones
            .iter()
            .map(|z| z.trim_end_matches('.').to_string())
            .collect(),
        ttl: k.ttl,
        endpoint_pod_names: k.endpoint_pod_names,
        noendpoints: k.noendpoints,
        ignore_empty_service: k.ignore_empty_service,
        namespaces: k.namespaces.iter().cloned().collect(),
        labels: k.labels.clone(),
        pods: match k.pods {
            crate::dns::corefile::PodsMode::Disabled => PodMode::Disabled,
            crate::dns::corefile::PodsMode::Insecure => PodMode::Insecure,
            crate::dns::corefile::PodsMode::Verified => PodMode::Verified,
        },
        fallthrough: k.fallthrough.as_ref().map(|f| f.zones.clone()),
        autopath_node: k.autopath_node.clone(),
        ..ZoneOptions::default()
    }
}

/// The chain of one server block for `zone` (loop detectors are per zone), and its
/// `kubernetes` plugin's ExternalName completion (to be given the block's router).
fn block_chain(
    block: &ServerBlock,
    zone: &str,
    ctx: &BuildContext,
) -> (Chain, Option<Arc<Loop>>, Option<Arc<ExternalNameUpstream>>) {
    let p = &block.plugins;
    let m = ctx.metrics.clone();
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    if let Some(c) = &p.errors {
        plugins.push(Arc::new(Errors::new(c.clone())));
    }
    if let Some(c) = &p.log {
        plugins.push(Arc::new(Log::new(c.clone())));
    }
    if p.local {
        plugins.push(Arc::new(super::local::Local::new(m.clone())));
    }
    if !p.acl.is_empty() {
        plugins.push(Arc::new(super::acl::Acl::new(p.acl.clone(), m.clone())));
    }
    if p.any {
        plugins.push(Arc::new(super::any::Any));
    }
    if p.loadbalance {
        plugins.push(Arc::new(LoadBalance::new()));
    }
    if let Some(c) = &p.cache {
        plugins.push(Arc::new(Cache::new(c.clone(), m.clone())));
    }
    if !p.rewrite.is_empty() {
        plugins.push(Arc::new(Rewrite::new(p.rewrite.clone())));
    }
    // The cluster plugin first: autopath and k8s_external answer from its zone.
    let cluster = p
        .kubernetes
        .as_ref()
        .map(|k| (ctx.cluster)(&zone_options(k)));
    if let Some(c) = &p.autopath {
        let success = m.as_ref().map(|m| m.autopath_success.clone());
        plugins.push(Arc::new(AutoPath::new(c, cluster.clone(), success)));
    }
    if p.minimal {
        plugins.push(Arc::new(super::minimal::Minimal));
    }
    if !p.template.is_empty() {
        plugins.push(Arc::new(super::template::Template::new(
            p.template.clone(),
            m.clone(),
        )));
    }
    if let Some(c) = &p.hosts {
        plugins.push(Arc::new(Hosts::new(
            c.clone(),
            ctx.files.clone(),
            m.clone(),
        )));
    }
    if let (Some(c), Some(k)) = (&p.k8s_external, &cluster) {
        plugins.push(Arc::new(K8sExternal::new(c, k.clone())));
    }
    let mut external_name = None;
    if let Some(k) = cluster {
        let wrapped = Arc::new(ExternalNameUpstream::new(k));
        plugins.push(wrapped.clone());
        external_name = Some(wrapped);
    }
    if let Some(c) = &p.file {
        plugins.push(Arc::new(super::file::File::new(
            c.clone(),
            ctx.files.clone(),
            m.clone(),
        )));
    }
    let mut lp = None;
    if p.loop_detect {
        let l = Loop::new(zone, ctx.on_loop.clone());
        plugins.push(l.clone());
        lp = Some(l);
    }
    if let Some(c) = &p.forward {
        plugins.push(Arc::new(Forward::new(c.clone(), m)));
    }
    if p.whoami {
        plugins.push(Arc::new(super::whoami::Whoami));
    }
    (Chain::new(plugins), lp, external_name)
}

/// Routes (zone, chain, where the block is), loop detectors, `rrl`, transport (with the
/// block that set it) and `tls` of one address.
type AddrPlan = (
    Vec<(String, Chain, String)>,
    Vec<Arc<Loop>>,
    Option<crate::dns::rrl::LargeAnswerLimit>,
    Option<(ServerTransport, String)>,
    Option<TlsConfig>,
);

/// The port node-local DNS answers on (pods' `resolv.conf` names no port).
pub const NODE_LOCAL_PORT: u16 = 53;

/// The node-local listen addresses (port 53) that `listening` does not already cover: an
/// address is covered by itself or by the unspecified address of its family, on port 53.
pub fn node_local_listeners(
    listening: &[SocketAddr],
    addrs: &[std::net::IpAddr],
) -> Vec<SocketAddr> {
    addrs
        .iter()
        .filter(|a| {
            !listening.iter().any(|l| {
                l.port() == NODE_LOCAL_PORT
                    && (l.ip() == **a || (l.ip().is_unspecified() && l.is_ipv4() == a.is_ipv4()))
            })
        })
        .map(|a| SocketAddr::new(*a, NODE_LOCAL_PORT))
        .collect()
}

/// Builds the listeners of `corefile`.
pub fn build(corefile: &Corefile, ctx: &BuildContext) -> Result<Vec<Listener>, BuildError> {
    let mut by_addr: BTreeMap<SocketAddr, AddrPlan> = BTreeMap::new();
    // ExternalName completions and the address whose router they ask.
    let mut completions: Vec<(Arc<ExternalNameUpstream>, SocketAddr)> = Vec::new();
    for block in &corefile.servers {
        // One chain per block (shared by its zones), as CoreDNS builds one plugin stack per block.
        let first_zone = block.keys.first().map_or(".", |k| k.zone.as_str());
        let (chain, lp, external_name) = block_chain(block, first_zone, ctx);
        let mut addrs: Vec<(SocketAddr, ServerTransport)> = Vec::new();
        for (sa, t) in block.listeners() {
            let sa = match (ctx.listen_override, t) {
                (Some(a), ServerTransport::Dns) => a,
                _ => sa,
            };
            if !addrs.contains(&(sa, t)) {
                addrs.push((sa, t));
            }
        }
        if !ctx.node_local.is_empty() {
            let plain: Vec<SocketAddr> = addrs
                .iter()
                .filter(|(_, t)| *t == ServerTransport::Dns)
                .map(|(a, _)| *a)
                .collect();
            if !plain.is_empty() {
                for a in node_local_listeners(&plain, &ctx.node_local) {
                    addrs.push((a, ServerTransport::Dns));
                }
            }
        }
        if let (Some(e), Some((addr, _))) = (external_name, addrs.first()) {
            completions.push((e, *addr));
        }
        for (addr, transport) in addrs {
            let entry = by_addr.entry(addr).or_default();
            match &entry.3 {
                Some((t, first)) if *t != transport => {
                    return Err(BuildError::TransportConflict {
                        addr,
                        first_transport: t.scheme(),
                        first: first.clone(),
                        second_transport: transport.scheme(),
                        second: block.at.to_string(),
                    });
                }
                Some(_) => {}
                None => entry.3 = Some((transport, block.at.to_string())),
            }
            if entry.4.is_none() && transport != ServerTransport::Dns {
                entry.4 = block.plugins.tls.clone();
            }
            for zone in block.zones() {
                if let Some((_, _, first)) = entry.0.iter().find(|(z, _, _)| *z == zone) {
                    return Err(BuildError::DuplicateZone {
                        zone,
                        addr,
                        first: first.clone(),
                        second: block.at.to_string(),
                    });
                }
                entry.0.push((zone, chain.clone(), block.at.to_string()));
            }
            if let Some(l) = &lp {
                entry.1.push(l.clone());
            }
            if entry.2.is_none() {
                entry.2 = block.plugins.rrl;
            }
        }
    }
    let listeners: Vec<Listener> = by_addr
        .into_iter()
        .map(|(addr, (routes, loops, rrl, transport, tls))| Listener {
            addr,
            router: ZoneRouter::new(routes.into_iter().map(|(z, c, _)| (z, c)).collect()),
            loops,
            rrl,
            transport: transport.map_or(ServerTransport::Dns, |(t, _)| t),
            tls,
        })
        .collect();
    // A block's ExternalName targets are asked through the server of its (first) address, as
    // CoreDNS's upstream asks the server that received the query.
    for (completion, addr) in completions {
        if let Some(l) = listeners.iter().find(|l| l.addr == addr) {
            completion.set_upstream(l.router.downgrade());
        }
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{LoadOptions, MemoryFiles, load_from};
    use crate::dns::handler::{Next, Reply, Request, Response};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{Name, RecordType};

    struct FakeCluster(Vec<String>);
    impl Plugin for FakeCluster {
        fn name(&self) -> &'static str {
            "kubernetes"
        }
        fn handle(&self, req: &Request, next: Next) -> Reply {
            if self
                .0
                .iter()
                .any(|z| req.lower_name().ends_with(&format!("{z}.")))
            {
                return Reply::Ready(Response::new(ResponseCode::NXDomain).authoritative());
            }
            next.run(req)
        }
    }

    fn ctx(listen: Option<SocketAddr>) -> BuildContext {
        BuildContext {
            metrics: None,
            cluster: Arc::new(|o: &ZoneOptions| {
                Arc::new(FakeCluster(o.zones.clone())) as Arc<dyn Plugin>
            }),
            files: Arc::new(MemoryFiles::new()),
            on_loop: Arc::new(|_| {}),
            listen_override: listen,
            node_local: Vec::new(),
        }
    }

    fn corefile(text: &str) -> Corefile {
        load_from(
            "Corefile",
            text,
            &MemoryFiles::new(),
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn order_and_routing() {
        let cf = corefile(
            ".:1053 {\n forward . 127.0.0.1:9\n loop\n rewrite name a.example b.example\n k8s_external example.com\n kubernetes cluster.local\n cache\n errors\n autopath @kubernetes\n rewrite type ANY HINFO\n loadbalance\n}\nexample.org:1053 {\n hosts {\n  10.0.0.1 a.example.org\n }\n}\nexample.net:1054 {\n log\n}\n",
        );
        let ls = build(&cf, &ctx(None)).unwrap();
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].addr, "0.0.0.0:1053".parse().unwrap());
        assert_eq!(ls[0].router.zones(), vec!["example.org.", "."]);
        let root = ls[0].router.route("x.cluster.local.").unwrap();
        assert_eq!(
            root.names(),
            vec![
                "errors",
                "loadbalance",
                "cache",
                "rewrite",
                "autopath",
                "k8s_external",
                "kubernetes",
                "loop",
                "forward"
            ]
        );
        assert_eq!(ls[0].loops.len(), 1);
        let org = ls[0].router.route("a.example.org.").unwrap();
        assert_eq!(org.names(), vec!["hosts"]);
        // example.net is served on 1054 only: REFUSED on 1053? No: "." on 1053 takes it.
        assert_eq!(
            ls[0].router.route("a.example.net.").unwrap().names()[0],
            "errors"
        );
        assert_eq!(ls[1].router.zones(), vec!["example.net."]);
        assert!(ls[1].router.route("a.example.org.").is_none());
        let req = Request::new(Name::from_ascii("a.example.org.").unwrap(), RecordType::A);
        match Chain::new(vec![Arc::new(ls[1].router.clone())]).handle(&req) {
            Reply::Ready(r) => assert_eq!(r.rcode, ResponseCode::Refused),
            Reply::Pending(_) => panic!("ready expected"),
        }
    }

    #[test]
    fn standalone_plugins_run_in_coredns_order() {
        let mut files = MemoryFiles::new();
        files.insert("/db.example.org", "@ 60 IN SOA ns h 1 2 3 4 5\n");
        let cf = load_from(
            "Corefile",
            ".:1053 {\n whoami\n file /db.example.org example.org\n template ANY AAAA {\n  rcode NOERROR\n }\n minimal\n any\n acl {\n  block type MX\n }\n local\n kubernetes cluster.local\n cache\n}\n",
            &files,
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap();
        let ls = build(&cf, &ctx(None)).unwrap();
        assert_eq!(
            ls[0].router.route("x.").unwrap().names(),
            vec![
                "local",
                "acl",
                "any",
                "cache",
                "minimal",
                "template",
                "kubernetes",
                "file",
                "whoami"
            ]
        );
    }

    #[test]
    fn listen_override_merges_and_detects_duplicates() {
        let cf = corefile(".:53 {\n log\n}\nexample.org:54 {\n log\n}\n");
        let ls = build(&cf, &ctx(Some("127.0.0.1:5300".parse().unwrap()))).unwrap();
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].router.zones(), vec!["example.org.", "."]);
        let cf = corefile(".:53 {\n log\n}\n.:54 {\n log\n}\n");
        let e = build(&cf, &ctx(Some("127.0.0.1:5300".parse().unwrap())))
            .err()
            .unwrap();
        assert!(e.to_string().contains("served twice"), "{e}");
    }

    #[test]
    fn node_local_addresses_join_blocks_that_do_not_cover_them() {
        let mut c = ctx(None);
        c.node_local = vec!["169.254.20.10".parse().unwrap()];
        let addrs = |text: &str, c: &BuildContext| {
            let mut v: Vec<String> = build(&corefile(text), c)
                .unwrap()
                .iter()
                .map(|l| l.addr.to_string())
                .collect();
            v.sort();
            v
        };
        // A block bound to the node address also answers on the node-local one, same chain.
        let text = "cluster.local:53 {\n bind 10.0.0.1\n log\n}\n.:53 {\n bind 10.0.0.1\n log\n}\n";
        assert_eq!(addrs(text, &c), vec!["10.0.0.1:53", "169.254.20.10:53"]);
        let ls = build(&corefile(text), &c).unwrap();
        let nl = ls
            .iter()
            .find(|l| {
                l.addr.port() == 53
                    && l.addr.ip() != "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
            })
            .unwrap();
        assert_eq!(nl.router.zones(), vec!["cluster.local.", "."]);
        // The wildcard covers it: no second socket on the same port.
        assert_eq!(addrs(".:53 {\n log\n}\n", &c), vec!["0.0.0.0:53"]);
        // A test override on another port: the node-local address still answers on 53.
        c.listen_override = Some("127.0.0.1:5300".parse().unwrap());
        assert_eq!(
            addrs(".:53 {\n log\n}\n", &c),
            vec!["127.0.0.1:5300", "169.254.20.10:53"]
        );
    }
}
