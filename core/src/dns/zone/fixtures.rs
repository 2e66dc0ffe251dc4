//! Test fixtures of the cluster zone: a small cluster covering every record kind (shared with
//! the server and plugin tests) and a question helper.

use std::path::Path;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use crate::cache::{Snapshot, new_cache};
use crate::model::{ClusterObject, Kind};
use crate::source::manifests::parse_manifest;

use super::{ClusterZone, Lookup, ZoneOptions, lower_fqdn};

/// A small cluster covering every record kind (shared with the server tests).
pub(crate) const FIXTURE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: demoapp-svc, namespace: default}
spec:
  clusterIP: 10.96.10.11
  selector: {app: demoapp}
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demoapp-svc-1, namespace: default, labels: {kubernetes.io/service-name: demoapp-svc}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.10], conditions: {ready: true}, targetRef: {kind: Pod, namespace: default, name: demoapp-a}}
  - {addresses: [10.244.2.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: default, name: demoapp-b}}
  - {addresses: [10.244.1.12], conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: default}
spec:
  clusterIP: 10.96.10.20
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: mysql-external, namespace: default}
spec: {type: ExternalName, externalName: mysql.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec: {type: ExternalName, externalName: demoapp-svc.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.20], hostname: web-0, conditions: {ready: true}}
  - {addresses: [10.244.2.21], conditions: {ready: true}}
  - {addresses: [10.244.1.22], hostname: web-2, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: empty-headless, namespace: demo}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: eager, namespace: demo}
spec: {clusterIP: None, publishNotReadyAddresses: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: eager-1, namespace: demo, labels: {kubernetes.io/service-name: eager}}
addressType: IPv4
endpoints:
  - {addresses: [10.244.3.5], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: demo}
spec:
  clusterIP: 10.96.30.1
  clusterIPs: [10.96.30.1, "fd00:10:96::1e"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: demoapp-a, namespace: default}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
"#;

pub(crate) fn snapshot(yaml: &str) -> Arc<Snapshot> {
    let objects = parse_manifest(Path::new("fixture.yaml"), yaml).expect("fixture parses");
    let kinds = [Kind::Service, Kind::EndpointSlice, Kind::Pod];
    let (mut writer, reader) = new_cache(kinds);
    for kind in kinds {
        let of_kind: Vec<ClusterObject> = objects
            .iter()
            .filter(|o| o.kind() == kind)
            .cloned()
            .collect();
        writer.replace_kind(kind, of_kind);
    }
    reader.snapshot()
}

pub(crate) fn zone_with(opts: ZoneOptions) -> ClusterZone {
    ClusterZone::build(&snapshot(FIXTURE), &opts)
}

pub(crate) fn zone() -> ClusterZone {
    zone_with(ZoneOptions::default())
}

/// (rcode, answer rdata as text, additional owner+rdata as text)
pub(crate) fn ask(
    zone: &ClusterZone,
    name: &str,
    t: RecordType,
) -> (ResponseCode, Vec<String>, Vec<String>) {
    let qname = Name::from_ascii(name).unwrap();
    match zone.lookup(&qname, &lower_fqdn(&qname), t) {
        Lookup::NotServed => (ResponseCode::Refused, vec![], vec![]),
        Lookup::Answer(a) => {
            if let Some(first) = a.answers.first() {
                assert_eq!(
                    &first.name, &qname,
                    "answers are owned by the question name"
                );
            }
            for r in &a.answers {
                assert_eq!(
                    r.ttl,
                    zone.options()
                        .ttl
                        .min(if t == RecordType::SOA { 300 } else { u32::MAX })
                );
            }
            (
                a.rcode,
                a.answers.iter().map(|r| r.data.to_string()).collect(),
                a.additionals
                    .iter()
                    .map(|r| format!("{} {}", r.name, r.data))
                    .collect(),
            )
        }
    }
}

pub(crate) const NX: ResponseCode = ResponseCode::NXDomain;
pub(crate) const OK: ResponseCode = ResponseCode::NoError;
