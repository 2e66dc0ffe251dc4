//! Routing of queries to server blocks: the block with the longest zone containing the name
//! handles it (CoreDNS's rule); names outside every zone are REFUSED.

use crate::dns::corefile::names::in_zone;
use crate::dns::handler::{Chain, Next, Plugin, Reply, Request, Response};

/// The server blocks sharing one listen address, by zone.
#[derive(Clone, Debug)]
pub struct ZoneRouter {
    /// (zone, chain), longest zone first.
    routes: Vec<(String, Chain)>,
}

impl ZoneRouter {
    /// A router over `routes` (zone, chain).
    pub fn new(mut routes: Vec<(String, Chain)>) -> Self {
        routes.sort_by_key(|(z, _)| std::cmp::Reverse(if z == "." { 0 } else { z.len() }));
        Self { routes }
    }

    /// The chain for a lower-case fully qualified name.
    pub fn route(&self, lower_name: &str) -> Option<&Chain> {
        self.routes
            .iter()
            .find(|(z, _)| in_zone(lower_name, z))
            .map(|(_, c)| c)
    }

    /// The zones served, longest first.
    pub fn zones(&self) -> Vec<&str> {
        self.routes.iter().map(|(z, _)| z.as_str()).collect()
    }

    /// Names of the plugins of every chain.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (_, c) in &self.routes {
            for n in c.names() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Whether every chain is ready.
    pub fn ready(&self) -> bool {
        self.routes.iter().all(|(_, c)| c.ready())
    }
}

impl Plugin for ZoneRouter {
    fn name(&self) -> &'static str {
        "router"
    }

    fn handle(&self, req: &Request, _next: Next) -> Reply {
        match self.route(req.lower_name()) {
            Some(chain) => chain.handle(req),
            None => Reply::Ready(Response::unattributed_refused()),
        }
    }

    fn ready(&self) -> bool {
        ZoneRouter::ready(self)
    }
}
