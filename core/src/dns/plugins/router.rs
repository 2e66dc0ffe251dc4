//! Routing of queries to server blocks: the block with the longest zone containing the name
//! handles it (CoreDNS's rule); names outside every zone are REFUSED.

use crate::dns::corefile::names::in_zone;
use crate::dns::handler::{Chain, Next, Plugin, Reply, Request, Response, WeakChain};

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
    pub(crate) fn plugin_names(&self) -> Vec<&'static str> {
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

    /// A handle that routes like this router without keeping its chains alive (for plugins
    /// inside them that ask their own server, see [`super::external_name`]).
    pub(crate) fn downgrade(&self) -> WeakRouter {
        WeakRouter {
            routes: self
                .routes
                .iter()
                .map(|(z, c)| (z.clone(), c.downgrade()))
                .collect(),
        }
    }
}

/// A [`ZoneRouter`] held weakly: the chains are reached while they are still served.
#[derive(Clone)]
pub(crate) struct WeakRouter {
    /// (zone, chain), longest zone first.
    routes: Vec<(String, WeakChain)>,
}

impl WeakRouter {
    /// The chain for a lower-case fully qualified name, if one serves it and is still alive.
    pub(crate) fn route(&self, lower_name: &str) -> Option<Chain> {
        self.routes
            .iter()
            .find(|(z, _)| in_zone(lower_name, z))
            .and_then(|(_, c)| c.upgrade())
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

    /// Routing depends on the name alone: as its chains.
    fn passes_answers_unchanged(&self) -> bool {
        self.routes
            .iter()
            .all(|(_, c)| c.passes_answers_unchanged())
    }
}
