//! Fuzzes the manifest projection: any text, read as a YAML and as a JSON manifest file, parses
//! to cluster objects or to an error naming the file. Objects that parse are loaded into the
//! cache and projected further, into the DNS cluster zone and into the IPVS desired state, as
//! the agent would. Nothing may panic.
//!
//! Run: `cargo +nightly fuzz run manifest fuzz/corpus/manifest`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use svcnet_core::dns::cluster::ClusterPlugin;
use svcnet_core::dns::zone::{PodMode, ZoneOptions};
use svcnet_core::ipvs::config::ProxyConfig;
use svcnet_core::ipvs::desired::{NodeInfo, build};
use svcnet_core::model::Kind;
use svcnet_core::new_cache;
use svcnet_core::source::manifests::parse_manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["fuzz.yaml", "fuzz.json"] {
        let objects = match parse_manifest(Path::new(name), text) {
            Ok(objects) => objects,
            Err(e) => {
                assert!(
                    e.to_string().contains(name),
                    "error does not name the file: {e}"
                );
                continue;
            }
        };
        let (mut writer, reader) = new_cache(Kind::ALL);
        for kind in Kind::ALL {
            writer.replace_kind(
                kind,
                objects
                    .iter()
                    .filter(|o| o.kind() == kind)
                    .cloned()
                    .collect(),
            );
        }
        let snapshot = reader.snapshot();
        let plugin = ClusterPlugin::new(ZoneOptions {
            pods: PodMode::Verified,
            ..ZoneOptions::default()
        });
        plugin.install(&snapshot);
        let node = NodeInfo {
            node_name: Some(Arc::from("node-a")),
            local_addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10))],
        };
        let desired = build(&snapshot, &ProxyConfig::default(), &node);
        let _ = desired.dest_count();
    }
});
