//! Generated cluster manifest directories (`--manifests DIR`) for the proxy's kernel tests and benchmark: one file
//! per Service holding the Service and its EndpointSlice, so a service can be changed or removed alone.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A ClusterIP or NodePort Service with one TCP port and its ready endpoints (on the `nodes`, in turn). It has no selector:
/// its EndpointSlice is written beside it, as for services whose pods are not in the directory.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// Service port.
    pub port: u16,
    /// Endpoint (target) port.
    pub target_port: u16,
    /// NodePort, making the service `type: NodePort`.
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` with this timeout.
    pub client_ip_affinity: Option<u32>,
    /// Ready endpoints.
    pub endpoints: Vec<Ipv4Addr>,
    /// Nodes the endpoints run on: endpoint `i` on `nodes[i % nodes.len()]`.
    pub nodes: Vec<String>,
}

impl ServiceSpec {
    /// A ClusterIP service `default/<name>` on port 80 → 8080 with `endpoints` on node `node-a`.
    pub fn cluster_ip(name: &str, cluster_ip: Ipv4Addr, endpoints: &[Ipv4Addr]) -> Self {
        Self {
            namespace: "default".to_owned(),
            name: name.to_owned(),
            cluster_ip,
            port: 80,
            target_port: 8080,
            node_port: None,
            client_ip_affinity: None,
            endpoints: endpoints.to_vec(),
            nodes: vec!["node-a".to_owned()],
        }
    }

    /// The same service made `type: NodePort` with `node_port`.
    pub fn with_node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }

    /// The Service and its EndpointSlice as a YAML stream.
    pub fn to_yaml(&self) -> String {
        let mut y = String::with_capacity(1024);
        let kind = if self.node_port.is_some() {
            "NodePort"
        } else {
            "ClusterIP"
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  type: {kind}\n  \
             clusterIP: {ip}\n  clusterIPs: [{ip}]\n",
            name = self.name,
            ns = self.namespace,
            ip = self.cluster_ip,
        );
        if let Some(timeout) = self.client_ip_affinity {
            let _ = write!(
                y,
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {timeout}}}}}\n"
            );
        }
        let _ = write!(
            y,
            "  ports:\n    - name: http\n      port: {}\n      protocol: TCP\n      targetPort: {}\n",
            self.port, self.target_port
        );
        if let Some(np) = self.node_port {
            let _ = writeln!(y, "      nodePort: {np}");
        }
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  \
             namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n  \
             - name: http\n    port: {tp}\n    protocol: TCP\nendpoints:",
            name = self.name,
            ns = self.namespace,
            tp = self.target_port,
        );
        if self.endpoints.is_empty() {
            y.push_str(" []\n");
        } else {
            y.push('\n');
            for (i, ep) in self.endpoints.iter().enumerate() {
                let _ = write!(
                    y,
                    "  - addresses: [{ep}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n    \
                     nodeName: {}\n",
                    self.nodes[i % self.nodes.len()]
                );
            }
        }
        y
    }

    /// File name of this service in a manifest directory.
    pub fn file_name(&self) -> String {
        format!("{}-{}.yaml", self.namespace, self.name)
    }

    /// Writes (or replaces, atomically by rename) this service's file in `dir`; returns its path.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(self.file_name());
        let tmp = dir.join(format!(".{}.tmp", self.file_name()));
        std::fs::write(&tmp, self.to_yaml())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(path)
    }

    /// Removes this service's file from `dir`.
    pub fn remove_from(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(self.file_name());
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }
}

/// Writes the Node object `name` with InternalIP `address` into `dir/nodes.yaml`.
pub fn write_node(dir: &Path, name: &str, address: Ipv4Addr) -> anyhow::Result<()> {
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  addresses:\n    \
         - {{type: InternalIP, address: {address}}}\n    - {{type: Hostname, address: {name}}}\n"
    );
    std::fs::write(dir.join("nodes.yaml"), yaml).context("writing nodes.yaml")
}

/// Nodes of the benchmark cluster: `node-a` (the proxy's) and 99 others.
pub const BENCH_NODES: usize = 100;

/// The benchmark cluster: `services` ClusterIP services `bench/svc-N` with cluster IPs from 10.100.0.0/16 upwards,
/// each with `endpoints` ready endpoints from 10.244.0.0/14 (all distinct), port 80 → 8080. The endpoints are spread
/// over [`BENCH_NODES`] nodes in turn (`node-a`, `node-1` ... `node-99`), so `node-a`, where the proxy runs, holds
/// one in a hundred of them, as a node of a real cluster of that size would (~1,000 local endpoints for 100,000).
pub fn bench_services(services: usize, endpoints: usize) -> Vec<ServiceSpec> {
    let node_names: Vec<String> = (0..BENCH_NODES)
        .map(|n| match n {
            0 => "node-a".to_owned(),
            n => format!("node-{n}"),
        })
        .collect();
    let mut next_ep: u32 = u32::from(Ipv4Addr::new(10, 244, 0, 2));
    (0..services)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + 1 + i as u32);
            let eps: Vec<Ipv4Addr> = (0..endpoints)
                .map(|_| {
                    let ep = Ipv4Addr::from(next_ep);
                    next_ep += 1;
                    ep
                })
                .collect();
            let mut spec = ServiceSpec::cluster_ip(&format!("svc-{i}"), ip, &eps);
            spec.namespace = "bench".to_owned();
            // Endpoint j of service i is the (i * endpoints + j)-th of the cluster: rotate the node list so the
            // whole cluster goes round the nodes in turn.
            let first = (i * endpoints) % BENCH_NODES;
            spec.nodes = node_names[first..]
                .iter()
                .chain(&node_names[..first])
                .cloned()
                .collect();
            spec
        })
        .collect()
}

/// The `ipvsadm -R` restore text programming the same table as `specs` would (rr, masquerading, weight 1).
pub fn ipvsadm_restore_text(specs: &[ServiceSpec]) -> String {
    let mut text = String::with_capacity(specs.len() * 600);
    for s in specs {
        let vip = format!("{}:{}", s.cluster_ip, s.port);
        let _ = writeln!(text, "-A -t {vip} -s rr");
        for ep in &s.endpoints {
            let _ = writeln!(text, "-a -t {vip} -r {ep}:{} -m -w 1", s.target_port);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use svcnet_core::ClusterObject;
    use svcnet_core::source::manifests::parse_manifest;

    #[test]
    fn generated_manifests_parse_to_the_intended_objects() {
        let spec = ServiceSpec::cluster_ip(
            "web",
            Ipv4Addr::new(10, 96, 10, 10),
            &[Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 1, 11)],
        )
        .with_node_port(30080);
        let objects = parse_manifest(Path::new("default-web.yaml"), &spec.to_yaml()).unwrap();
        assert_eq!(objects.len(), 2, "{objects:?}");
        let ClusterObject::Service(svc) = &objects[0] else {
            panic!("first object is not a Service: {:?}", objects[0]);
        };
        assert_eq!(&*svc.key.name, "web");
        assert_eq!(
            svc.cluster_ips,
            vec![std::net::IpAddr::from([10, 96, 10, 10])]
        );
        assert_eq!(svc.ports.len(), 1);
        let ClusterObject::EndpointSlice(slice) = &objects[1] else {
            panic!("second object is not an EndpointSlice: {:?}", objects[1]);
        };
        assert_eq!(slice.endpoints.len(), 2);
    }

    #[test]
    fn bench_table_has_distinct_addresses_and_matching_restore_text() {
        let specs = bench_services(300, 10);
        let vips: std::collections::BTreeSet<_> = specs.iter().map(|s| s.cluster_ip).collect();
        let eps: std::collections::BTreeSet<_> =
            specs.iter().flat_map(|s| s.endpoints.clone()).collect();
        assert_eq!((vips.len(), eps.len()), (300, 3000));
        let text = ipvsadm_restore_text(&specs);
        assert_eq!(text.lines().filter(|l| l.starts_with("-A ")).count(), 300);
        assert_eq!(text.lines().filter(|l| l.starts_with("-a ")).count(), 3000);
        assert!(text.starts_with(
            "-A -t 10.100.0.1:80 -s rr\n-a -t 10.100.0.1:80 -r 10.244.0.2:8080 -m -w 1\n"
        ));
        // One endpoint in a hundred is on the proxy's node, whole cluster round.
        let on_node_a = specs
            .iter()
            .flat_map(|s| {
                (0..s.endpoints.len()).filter(move |i| s.nodes[i % s.nodes.len()] == "node-a")
            })
            .count();
        assert_eq!(on_node_a, 3000 / BENCH_NODES);
        assert!(specs[1].to_yaml().contains("nodeName: node-10\n"));
    }
}
