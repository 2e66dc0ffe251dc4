//! Fuzzes the DNS request path: parse any bytes as a request (UDP and TCP), run well-formed
//! ones through the cluster zone plugin, and encode the answer (or the error answer). Nothing
//! may panic, and every encoded answer must decode again with the same id.
//!
//! Run: `cargo +nightly fuzz run request fuzz/corpus/request` (cargo-fuzz), or check that it
//! builds with `cargo check --manifest-path fuzz/Cargo.toml`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use svcnet_core::dns::cluster::ClusterPlugin;
use svcnet_core::dns::handler::{Chain, Plugin, Reply, Transport};
use svcnet_core::dns::wire::{Encoder, Parsed, parse_request};
use svcnet_core::dns::zone::{PodMode, ZoneOptions};
use svcnet_core::model::Kind;
use svcnet_core::new_cache;
use svcnet_core::source::manifests::parse_manifest;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: demoapp-svc, namespace: default}
spec: {clusterIP: 10.96.10.11, clusterIPs: [10.96.10.11, "fd00::b"], ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demoapp-svc-1, namespace: default, labels: {kubernetes.io/service-name: demoapp-svc}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.10], conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.20], hostname: web-0, conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: ext.default.svc.cluster.local}
"#;

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let objects = parse_manifest(Path::new("fuzz.yaml"), CLUSTER).expect("fixture parses");
        let kinds = [Kind::Service, Kind::EndpointSlice];
        let (mut writer, reader) = new_cache(kinds);
        for kind in kinds {
            writer.replace_kind(
                kind,
                objects
                    .iter()
                    .filter(|o| o.kind() == kind)
                    .cloned()
                    .collect(),
            );
        }
        let plugin = ClusterPlugin::new(ZoneOptions {
            pods: PodMode::Insecure,
            ..ZoneOptions::default()
        });
        plugin.install(&reader.snapshot());
        Chain::new(vec![plugin as Arc<dyn Plugin>])
    })
}

fuzz_target!(|data: &[u8]| {
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);
    let mut encoder = Encoder::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let (bytes, id) = match parse_request(data, client, transport) {
            Parsed::Drop => continue,
            Parsed::Reject(rej) => (encoder.encode_rejection(&rej).to_vec(), rej.id),
            Parsed::Query(req) => {
                let Reply::Ready(resp) = chain().handle(&req) else {
                    panic!("the cluster zone answers synchronously");
                };
                let (bytes, _) = encoder.encode(&req, &resp);
                if transport == Transport::Udp {
                    assert!(bytes.len() <= usize::from(req.max_payload()));
                }
                (bytes.to_vec(), req.id)
            }
        };
        let decoded = svcnet_core::dns::wire::decode_message(&bytes)
            .unwrap_or_else(|e| panic!("our own answer does not decode: {e}"));
        assert_eq!(decoded.metadata.id, id);
    }
});
