//! The `k8s_external` plugin: the cluster's services under an external zone, answered from the
//! `kubernetes` plugin's live zone ([`ClusterZone::lookup_external`]).

use std::sync::Arc;

use crate::dns::corefile::K8sExternalConfig;
use crate::dns::handler::{Next, Plugin, Reply, Request, Response};
use crate::dns::zone::ExternalOptions;

/// The `k8s_external` plugin of one server block.
pub(crate) struct K8sExternal {
    /// Its zones, lower case with the trailing dot.
    zones: Vec<String>,
    /// The zone PTR targets are named in: the first forward zone.
    ptr_zone: String,
    options: ExternalOptions,
    /// The block's `kubernetes` plugin.
    cluster: Arc<dyn Plugin>,
}

impl K8sExternal {
    /// The plugin for `config`, answering from `cluster` (the block's `kubernetes` plugin).
    pub fn new(config: &K8sExternalConfig, cluster: Arc<dyn Plugin>) -> Self {
        let is_reverse = |z: &str| z.ends_with("in-addr.arpa.") || z.ends_with("ip6.arpa.");
        let ptr_zone = config
            .zones
            .iter()
            .find(|z| !is_reverse(z))
            .or(config.zones.first())
            .cloned()
            .unwrap_or_else(|| ".".into());
        Self {
            zones: config.zones.clone(),
            ptr_zone,
            options: ExternalOptions {
                apex: config.apex.clone(),
                ttl: config.ttl,
                headless: config.headless,
            },
            cluster,
        }
    }

    /// The longest of the plugin's zones that `lower_name` is in.
    fn zone_of(&self, lower_name: &str) -> Option<&str> {
        self.zones
            .iter()
            .filter(|z| crate::dns::corefile::names::in_zone(lower_name, z))
            .max_by_key(|z| z.len())
            .map(String::as_str)
    }
}

impl Plugin for K8sExternal {
    fn name(&self) -> &'static str {
        "k8s_external"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let Some(zone) = self.zone_of(req.lower_name()) else {
            return next.run(req);
        };
        // Until the cluster zone serves (startup), as the kubernetes plugin: SERVFAIL.
        let Some(cluster) = self.cluster.cluster_zone() else {
            return Reply::Ready(Response::servfail());
        };
        let a = cluster.lookup_external(
            req.name(),
            req.lower_name(),
            req.record_type(),
            zone,
            &self.ptr_zone,
            &self.options,
        );
        Reply::Ready(
            Response::with_records(
                a.rcode,
                a.answers.into(),
                a.authority.into(),
                a.additionals.into(),
            )
            .authoritative(),
        )
    }
}
