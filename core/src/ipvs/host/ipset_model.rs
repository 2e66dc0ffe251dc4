//! The ipsets as last applied, kept so a sync's [`Delta`](crate::ipvs::desired::Delta) updates
//! them in proportion to what changed: every entry a virtual server puts in a set is counted
//! (several virtual servers share node-port and hairpin entries), and each virtual server's
//! entries are remembered so its old ones can be taken out when it changes or goes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use smallvec::SmallVec;

use super::ipset::{IPVS_IPS, IpSet, SET_COUNT, SetIndex, ipsets_counted, server_entries};
use crate::ipvs::desired::DesiredState;
use crate::ipvs::extras::HostExtras;
use crate::ipvs::ipset_ops::{EntryError, IpsetOp, SetName, entry_of};
use crate::ipvs::table::{Family, ServiceId};

/// The entries one virtual server holds: (set of its family, entry).
type Held = SmallVec<[(SetIndex, Box<str>); 2]>;

/// The sets of some families with who holds each entry.
#[derive(Debug, Clone)]
pub(crate) struct IpsetModel {
    /// The families modelled, ascending.
    families: Vec<Family>,
    /// Every set, family by family, each family's in [`ipsets_with`](super::ipsets_with) order.
    sets: Vec<IpSet>,
    /// For each set (same index as `sets`), how many virtual servers hold each entry.
    refs: Vec<HashMap<String, u32>>,
    /// Each virtual server's entries.
    servers: HashMap<ServiceId, Held>,
    /// The inputs the model was built with; another value needs a rebuild.
    extras: HostExtras,
    node_addresses: Vec<IpAddr>,
}

impl IpsetModel {
    /// The sets of `families` for `desired`, counted.
    pub(crate) fn build(
        desired: &DesiredState,
        families: &[Family],
        extras: &HostExtras,
        node_addresses: &[IpAddr],
    ) -> Self {
        let mut refs: Vec<HashMap<String, u32>> = vec![HashMap::new(); families.len() * SET_COUNT];
        let mut servers: HashMap<ServiceId, Held> = HashMap::with_capacity(desired.len());
        let mut sets = Vec::with_capacity(refs.len());
        for (i, f) in families.iter().enumerate() {
            let base = i * SET_COUNT;
            sets.extend(ipsets_counted(
                desired,
                *f,
                extras,
                node_addresses,
                |id, s, e| {
                    *refs[base + usize::from(s)].entry(e.to_owned()).or_default() += 1;
                    servers.entry(*id).or_default().push((s, e.into()));
                },
            ));
        }
        IpsetModel {
            families: families.to_vec(),
            sets,
            refs,
            servers,
            extras: extras.clone(),
            node_addresses: node_addresses.to_vec(),
        }
    }

    /// The sets, family by family.
    pub(crate) fn sets(&self) -> &[IpSet] {
        &self.sets
    }

    /// Whether the model can follow these families and inputs (else it must be rebuilt): the
    /// same families, node addresses, health-check ports and source ranges, and local endpoints
    /// known or unknown as before (which of them are local may change: see [`update`](Self::update)).
    pub(crate) fn fits(
        &self,
        families: &[Family],
        extras: &HostExtras,
        node_addresses: &[IpAddr],
    ) -> bool {
        self.families == families
            && self.node_addresses == node_addresses
            && self.extras.health_check_node_ports == extras.health_check_node_ports
            && self.extras.source_ranges == extras.source_ranges
            && self.extras.local_endpoints.is_some() == extras.local_endpoints.is_some()
    }

    /// The virtual servers whose hairpin entries change when the local endpoints become
    /// `extras`'s: those with a real server at an address that became or stopped being local.
    /// One pass over the real servers, and only when the local endpoints changed.
    fn with_local_changes(
        &self,
        desired: &DesiredState,
        extras: &HostExtras,
        services: &BTreeSet<ServiceId>,
    ) -> Option<BTreeSet<ServiceId>> {
        let (Some(old), Some(new)) = (&self.extras.local_endpoints, &extras.local_endpoints) else {
            return None;
        };
        if old == new {
            return None;
        }
        let moved: HashSet<IpAddr> = old.symmetric_difference(new).copied().collect();
        let mut all = services.clone();
        for (id, vs) in desired.servers() {
            if vs.dests.keys().any(|d| moved.contains(&d.addr)) {
                all.insert(*id);
            }
        }
        Some(all)
    }

    fn base(&self, family: Family) -> Option<usize> {
        self.families
            .iter()
            .position(|f| *f == family)
            .map(|i| i * SET_COUNT)
    }

    /// Brings the sets to `desired` after its virtual servers `services` and bound addresses
    /// `addresses` changed, and returns the operations for it (`del`/`add` with `-exist`, per
    /// set deletions then additions, each sorted: what [`diff_ops`](super::ipset_restore::diff_ops)
    /// gives). `None`, with nothing changed, when a change is of a family the model lacks; an
    /// error for an entry that does not parse as its set's type (the model is then stale and
    /// must be rebuilt).
    pub(crate) fn update(
        &mut self,
        desired: &DesiredState,
        services: &BTreeSet<ServiceId>,
        addresses: &BTreeSet<IpAddr>,
        extras: &HostExtras,
    ) -> Option<Result<Vec<IpsetOp>, EntryError>> {
        let widened = self.with_local_changes(desired, extras, services);
        let services = widened.as_ref().unwrap_or(services);
        if services.iter().any(|id| self.base(id.family()).is_none())
            || addresses.iter().any(|a| self.base(Family::of(a)).is_none())
        {
            return None;
        }
        if widened.is_some() {
            self.extras.local_endpoints = extras.local_endpoints.clone();
        }
        // (set, entry) whose count or presence may have changed.
        let mut touched: BTreeSet<(usize, String)> = BTreeSet::new();
        for id in services {
            let base = self.base(id.family())?;
            if let Some(old) = self.servers.remove(id) {
                for (s, e) in old {
                    let set = base + usize::from(s);
                    if let Some(n) = self.refs[set].get_mut(&*e) {
                        *n -= 1;
                        if *n == 0 {
                            self.refs[set].remove(&*e);
                        }
                    }
                    touched.insert((set, e.into()));
                }
            }
            if let Some(vs) = desired.server(id) {
                let mut mine: Held = SmallVec::new();
                let refs = &mut self.refs;
                server_entries(id, vs, &self.extras, |s, e| {
                    let set = base + usize::from(s);
                    *refs[set].entry(e.clone()).or_default() += 1;
                    mine.push((s, e.as_str().into()));
                    touched.insert((set, e));
                });
                self.servers.insert(*id, mine);
            }
        }
        let mut bound: BTreeSet<(usize, String)> = BTreeSet::new();
        for a in addresses {
            let set = self.base(Family::of(a))? + usize::from(IPVS_IPS);
            let e = a.to_string();
            if desired.is_bound(a) {
                bound.insert((set, e.clone()));
            }
            touched.insert((set, e));
        }
        let mut dels: Vec<IpsetOp> = Vec::new();
        let mut adds: Vec<IpsetOp> = Vec::new();
        let mut out: Vec<IpsetOp> = Vec::new();
        let mut current: Option<usize> = None;
        for (set, e) in touched {
            if current != Some(set) {
                out.append(&mut dels);
                out.append(&mut adds);
                current = Some(set);
            }
            let now = if set % SET_COUNT == usize::from(IPVS_IPS) {
                bound.contains(&(set, e.clone()))
            } else {
                self.refs[set].contains_key(&e)
            };
            let IpSet {
                name,
                kind,
                entries,
                ..
            } = &mut self.sets[set];
            let add = now && !entries.contains(&e);
            if add || (!now && entries.contains(&e)) {
                let entry = match entry_of(name, kind, &e) {
                    Ok(entry) => entry,
                    Err(err) => return Some(Err(err)),
                };
                let set: SetName = name.as_str().into();
                if add {
                    adds.push(IpsetOp::Add {
                        set,
                        entry,
                        exist: true,
                    });
                    entries.insert(e);
                } else {
                    entries.remove(&e);
                    dels.push(IpsetOp::Del {
                        set,
                        entry,
                        exist: true,
                    });
                }
            }
        }
        out.append(&mut dels);
        out.append(&mut adds);
        Some(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::new_cache;
    use crate::ipvs::desired::{NodeInfo, build};
    use crate::ipvs::fixtures::{endpoint, service, slice};
    use crate::ipvs::host::{ipset_diff, ipsets_with};
    use crate::ipvs::{DesiredState, ProxyConfig};
    use crate::model::{ClusterObject, Kind, Protocol, ServiceType};

    fn node() -> NodeInfo {
        NodeInfo {
            node_name: Some(Arc::from("node-a")),
            local_addresses: vec!["192.168.1.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        }
    }

    fn all_sets(d: &DesiredState, families: &[Family], extras: &HostExtras) -> Vec<IpSet> {
        families
            .iter()
            .flat_map(|f| ipsets_with(d, *f, extras, &node().local_addresses))
            .collect()
    }

    /// Incremental updates give the same sets and the same script as a rebuild and diff,
    /// through additions, changes (shared node-port and hairpin entries) and removals.
    #[test]
    fn updates_from_deltas_match_a_rebuild_and_diff() {
        let config = ProxyConfig::default();
        let families = [Family::V4, Family::V6];
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let mut desired = build(&w.snapshot(), &config, &node());
        let mut extras = HostExtras::of_view(desired.view());
        let mut model = IpsetModel::build(&desired, &families, &extras, &node().local_addresses);
        let nodeport = |name: &str, ip: &str, np: u16| {
            let mut s = service("default", name, ip, &[("http", Protocol::Tcp, 80, 8080)]);
            s.service_type = ServiceType::NodePort;
            s.ports[0].node_port = Some(np);
            ClusterObject::from(s)
        };
        let eps = |name: &str, ips: &[&str]| {
            ClusterObject::from(slice(
                "default",
                &format!("{name}-1"),
                name,
                &[("http", Protocol::Tcp, 8080)],
                ips.iter()
                    .map(|ip| endpoint(ip, true, Some("node-a")))
                    .collect(),
            ))
        };
        type Step<'a> = Box<dyn Fn(&mut crate::cache::CacheWriter) + 'a>;
        let steps: Vec<Step<'_>> = vec![
            Box::new(|w| {
                w.apply(nodeport("a", "10.96.0.1", 30080));
            }),
            Box::new(|w| {
                w.apply(eps("a", &["10.244.1.10", "10.244.1.11"]));
            }),
            // Same node port and same endpoints under a second Service: shared entries.
            Box::new(|w| {
                w.apply(nodeport("b", "10.96.0.2", 30080));
            }),
            Box::new(|w| {
                w.apply(eps("b", &["10.244.1.10"]));
            }),
            Box::new(|w| {
                w.delete(Kind::Service, &crate::model::ObjectKey::new("default", "a"));
            }),
            Box::new(|w| {
                w.apply(eps("b", &["10.244.1.12"]));
            }),
            Box::new(|w| {
                let mut s = service("default", "c", "fd00::c", &[("dns", Protocol::Udp, 53, 53)]);
                s.cluster_ips.push("10.96.0.3".parse().unwrap());
                w.apply(ClusterObject::from(s));
            }),
            Box::new(|w| {
                w.delete(Kind::Service, &crate::model::ObjectKey::new("default", "b"));
            }),
        ];
        let mut hairpin = false;
        for (i, step) in steps.iter().enumerate() {
            let before = all_sets(&desired, &families, &extras);
            step(&mut w);
            let delta = desired.update(&w.snapshot(), &config, &node());
            extras = HostExtras::of_view(desired.view());
            assert!(!delta.full, "step {i}");
            let script = crate::ipvs::ipset_ops::render_text(
                &model
                    .update(&desired, &delta.services, &delta.addresses, &extras)
                    .expect("families known")
                    .expect("entries parse"),
            );
            let after = all_sets(&desired, &families, &extras);
            assert_eq!(model.sets(), after.as_slice(), "step {i}: sets");
            assert_eq!(
                script,
                ipset_diff(&before, &after).unwrap(),
                "step {i}: script"
            );
            let rebuilt = IpsetModel::build(&desired, &families, &extras, &node().local_addresses);
            assert_eq!(model.refs, rebuilt.refs, "step {i}: counts");
            hairpin |= after
                .iter()
                .any(|s| s.name == "KUBE-LOOP-BACK" && s.entries.len() > 1);
        }
        assert!(hairpin, "the steps exercise shared hairpin entries");
    }

    #[test]
    fn a_change_of_an_unmodelled_family_asks_for_a_rebuild() {
        let config = ProxyConfig::default();
        let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let mut desired = build(&w.snapshot(), &config, &node());
        let mut model = IpsetModel::build(&desired, &[Family::V4], &HostExtras::default(), &[]);
        w.apply(ClusterObject::from(service(
            "default",
            "v6",
            "fd00::1",
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        let delta = desired.update(&w.snapshot(), &config, &node());
        assert_eq!(
            model.update(
                &desired,
                &delta.services,
                &delta.addresses,
                &HostExtras::default()
            ),
            None
        );
        assert!(model.sets().iter().all(|s| s.entries.is_empty()));
    }
}
