//! One name check for every subsystem (issue 19 item 7): a Service named `Bad_Name.with.dots`
//! in a manifest reaches neither the IPVS plan nor the DNS zone, the source reports the file and
//! the object, and the file's last good version stays in both.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RData, RecordType};
use svcnet_core::Snapshot;
use svcnet_core::dns::zone::{ClusterZone, Lookup, ZoneOptions};
use svcnet_core::ipvs::{NodeInfo, ProxyConfig};
use svcnet_core::model::Kind;
use svcnet_core::source::{self, SourceConfig};

fn service(name: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n"
    )
}

/// The cluster IPs the proxy would program as virtual servers.
fn proxy_vips(snap: &Snapshot) -> BTreeSet<IpAddr> {
    let node = NodeInfo {
        node_name: None,
        local_addresses: vec![],
    };
    let desired = svcnet_core::ipvs::build(snap, &ProxyConfig::default(), &node);
    desired.servers().map(|(id, _)| id.addr).collect()
}

/// The A answer DNS gives for `name.shop.svc.cluster.local`, if any.
fn dns_a(zone: &ClusterZone, name: &str) -> Option<IpAddr> {
    // Not every bad name is even a DNS name; those cannot be asked at all.
    let qname = Name::from_ascii(format!("{name}.shop.svc.cluster.local.")).ok()?;
    let lower = qname.to_lowercase().to_ascii();
    match zone.lookup(&qname, &lower, RecordType::A) {
        Lookup::Answer(a) => a.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        }),
        Lookup::NotServed => None,
    }
}

#[tokio::test]
async fn invalid_names_reach_neither_the_proxy_nor_dns() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let edited = dir.path().join("edited.yaml");
    std::fs::write(&good, service("web", "10.96.1.1")).unwrap();
    std::fs::write(&edited, service("neighbour", "10.96.1.3")).unwrap();
    let src = source::start(
        &SourceConfig::Manifests(dir.path().to_path_buf()),
        &[Kind::Service, Kind::EndpointSlice, Kind::Pod],
    )
    .await
    .unwrap();
    assert!(src.status().problems.is_empty(), "{:?}", src.status());

    // The edit adds a Service the API server would refuse next to a valid one.
    std::fs::write(
        &edited,
        service("neighbour", "10.96.1.3")
            + &service("Bad_Name.with.dots", "10.96.1.2")
            + &service("newcomer", "10.96.1.4"),
    )
    .unwrap();
    let start = Instant::now();
    let problems = loop {
        let problems = src.status().problems;
        if !problems.is_empty() {
            break problems;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bad edit was never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].location,
        format!("{}: document 1", edited.display())
    );
    assert!(
        problems[0].reason.starts_with(
            "Service shop/Bad_Name.with.dots: field metadata.name: \"Bad_Name.with.dots\" is \
             not a DNS-1035 label"
        ),
        "{problems:?}"
    );

    // The proxy and DNS see the same services: the good file, and the edited file's last good
    // version (`newcomer`, in the refused version, is not applied either).
    let snap = src.reader().snapshot();
    let zone = ClusterZone::build(&snap, &ZoneOptions::for_domain("cluster.local"));
    let expected: BTreeSet<IpAddr> = ["10.96.1.1", "10.96.1.3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(proxy_vips(&snap), expected);
    let from_dns: BTreeSet<IpAddr> = ["web", "neighbour", "Bad_Name.with.dots", "newcomer"]
        .iter()
        .filter_map(|n| dns_a(&zone, n))
        .collect();
    assert_eq!(from_dns, expected);
    assert_eq!(proxy_vips(&snap), from_dns, "proxy and DNS agree");

    // Fixed: the whole file applies in both.
    std::fs::write(
        &edited,
        service("neighbour", "10.96.1.3") + &service("bad-name-with-dots", "10.96.1.2"),
    )
    .unwrap();
    let start = Instant::now();
    while !src.status().problems.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "fix not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = src.reader().snapshot();
    let zone = ClusterZone::build(&snap, &ZoneOptions::for_domain("cluster.local"));
    assert!(proxy_vips(&snap).contains(&"10.96.1.2".parse().unwrap()));
    assert_eq!(
        dns_a(&zone, "bad-name-with-dots"),
        Some("10.96.1.2".parse().unwrap())
    );
}
