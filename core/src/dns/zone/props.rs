//! Property-style tests: a zone kept current with [`ClusterZone::update`] answers every query
//! exactly like a zone built from scratch from the same snapshot.
//!
//! A deterministic generator applies random batches of changes to a real cache (services of
//! every kind, EndpointSlices that move between services, shared and dual-stack addresses,
//! hostnames that differ only in case, pods, invalid names); after each batch the incremental
//! zone and a full build are asked the same few thousand questions (positive names, empty
//! non-terminals that come and go, SRV names, endpoint and pod names, PTR names and their
//! prefixes, absent names) and must give identical answers, and export identical records.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};

use super::entry::ServiceEntry;
use super::reverse_index::PtrEntry;
use super::*;
use crate::cache::{CacheWriter, new_cache};
use crate::model::{Kind, project};
use hickory_proto::rr::Record;

const NAMESPACES: [&str; 5] = ["default", "demo", "kube-system", "other", "Bad_NS"];
const SERVICES: [&str; 5] = ["svc-0", "web", "kube-dns", "Upper", "x"];
const PORT_NAMES: [&str; 4] = ["http", "dns", "", "metrics"];
const HOSTNAMES: [&str; 4] = ["web-0", "web-1", "Web-0", "pod-a"];
const POD_NAMES: [&str; 4] = ["pod-a", "pod-b", "pod-c", "p"];

fn cluster_ips() -> Vec<String> {
    let mut v: Vec<String> = (1..=6).map(|i| format!("10.96.0.{i}")).collect();
    v.extend((1..=3).map(|i| format!("fd00:96::{i:x}")));
    v
}

fn endpoint_ips_v4() -> Vec<String> {
    let mut v: Vec<String> = (1..=8).map(|i| format!("10.244.1.{i}")).collect();
    v.extend((1..=4).map(|i| format!("10.244.2.{i}")));
    // An endpoint sharing a cluster IP.
    v.push("10.96.0.1".into());
    v
}

/// External addresses (`externalIPs`, load-balancer ingress) shared by several services.
const EXTERNAL_IPS: [&str; 3] = ["203.0.113.1", "203.0.113.2", "2001:db8::7"];

fn endpoint_ips_v6() -> Vec<String> {
    (1..=4).map(|i| format!("fd00:244::{i:x}")).collect()
}

fn all_ips() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = cluster_ips()
        .iter()
        .chain(endpoint_ips_v4().iter())
        .chain(endpoint_ips_v6().iter())
        .map(|s| s.parse().expect("pool address"))
        .collect();
    v.sort();
    v.dedup();
    v
}

struct Gen {
    rng: fastrand::Rng,
}

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    fn ports(&mut self, slice: bool) -> Vec<Value> {
        (0..self.rng.usize(0..=2))
            .map(|i| {
                let proto = *self.pick(&["TCP", "UDP", "SCTP"]);
                let mut p = json!({
                    "name": *self.pick(&PORT_NAMES),
                    "protocol": proto,
                });
                if !slice || self.rng.u8(..10) > 0 {
                    p["port"] = json!(80 + i as u16 + self.rng.u16(..3));
                }
                p
            })
            .collect()
    }

    fn service(&mut self) -> Value {
        let ns = *self.pick(&NAMESPACES);
        let name = *self.pick(&SERVICES);
        let mut spec = json!({"ports": self.ports(false)});
        match self.rng.u8(..10) {
            0..=4 => {
                let ips = cluster_ips();
                let first = self.pick(&ips[..6]).clone();
                spec["clusterIP"] = json!(first);
                if self.rng.bool() {
                    let second = self.pick(&ips[6..]).clone();
                    spec["clusterIPs"] = json!([first, second]);
                }
            }
            5..=7 => spec["clusterIP"] = json!("None"),
            _ => {
                spec["type"] = json!("ExternalName");
                spec["externalName"] = json!(*self.pick(&[
                    "db.example.com",
                    "svc-0.default.svc.cluster.local",
                    "1.2.3.4",
                ]));
                spec["ports"] = json!([]);
            }
        }
        if self.rng.u8(..4) == 0 {
            spec["publishNotReadyAddresses"] = json!(true);
        }
        // External addresses for k8s_external (any kind may carry externalIPs).
        let mut status = json!({});
        if self.rng.u8(..3) == 0 {
            spec["externalIPs"] = json!([*self.pick(&EXTERNAL_IPS)]);
        }
        if self.rng.u8(..4) == 0 {
            spec["type"] = json!("LoadBalancer");
            spec.as_object_mut().map(|o| o.remove("externalName"));
            if spec.get("clusterIP").is_none() {
                spec["clusterIP"] = json!("None");
            }
            let ingress = if self.rng.bool() {
                json!({"ip": *self.pick(&EXTERNAL_IPS)})
            } else {
                json!({"hostname": "lb.example.net"})
            };
            status = json!({"loadBalancer": {"ingress": [ingress]}});
        }
        let mut metadata = json!({"name": name, "namespace": ns});
        // Labels for the `labels` option: some services have none, some a tier.
        if self.rng.bool() {
            metadata["labels"] = json!({"tier": *self.pick(&["front", "back", "db"])});
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec,
               "status": status})
    }

    fn slice(&mut self) -> Value {
        let ns = *self.pick(&NAMESPACES);
        let service = *self.pick(&SERVICES);
        let v6 = self.rng.u8(..4) == 0;
        let pool = if v6 {
            endpoint_ips_v6()
        } else {
            endpoint_ips_v4()
        };
        let endpoints: Vec<Value> = (0..self.rng.usize(0..=4))
            .map(|_| {
                let mut addrs = vec![self.pick(&pool).clone()];
                if self.rng.u8(..6) == 0 {
                    addrs.push(self.pick(&pool).clone());
                }
                let mut ep = json!({
                    "addresses": addrs,
                    "conditions": {"ready": self.rng.u8(..4) > 0},
                });
                if self.rng.u8(..3) == 0 {
                    ep["hostname"] = json!(*self.pick(&HOSTNAMES));
                }
                if self.rng.bool() {
                    ep["targetRef"] =
                        json!({"kind": "Pod", "namespace": ns, "name": *self.pick(&POD_NAMES)});
                }
                ep
            })
            .collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("slice-{}", self.rng.u8(..4)), "namespace": ns,
                            "labels": {"kubernetes.io/service-name": service}},
               "addressType": if v6 { "IPv6" } else { "IPv4" },
               "ports": self.ports(true), "endpoints": endpoints})
    }

    fn pod(&mut self) -> Value {
        let ns = *self.pick(&NAMESPACES);
        let pool = endpoint_ips_v4();
        let ip = self.pick(&pool).clone();
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": *self.pick(&POD_NAMES), "namespace": ns},
               "spec": {"containers": [{"name": "c", "image": "x"}]},
               "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    fn key(&mut self, names: &[&str]) -> ObjectKey {
        ObjectKey::new(*self.pick(&NAMESPACES), *self.pick(names))
    }

    /// Applies one batch of 1–6 random changes as one generation.
    fn batch(&mut self, writer: &mut CacheWriter) {
        let ops = self.rng.usize(1..=6);
        let mut objects = Vec::new();
        let mut deletes = Vec::new();
        for _ in 0..ops {
            match self.rng.u8(..14) {
                0..=2 => objects.push(self.service()),
                3..=5 => objects.push(self.slice()),
                6 => objects.push(self.pod()),
                7..=9 => deletes.push((Kind::Service, self.key(&SERVICES))),
                10 | 11 => {
                    let name = format!("slice-{}", self.rng.u8(..4));
                    deletes.push((
                        Kind::EndpointSlice,
                        ObjectKey::new(*self.pick(&NAMESPACES), name),
                    ));
                }
                _ => deletes.push((Kind::Pod, self.key(&POD_NAMES))),
            }
        }
        writer.update(|tx| {
            for o in objects {
                // Names the API server would refuse (`Bad_NS`, `Upper`, `Web-0`) are rejected
                // at projection, so no source hands them to the cache: skip them here too.
                match project::from_json(o) {
                    Ok(object) => tx.apply(object.expect("known kind")),
                    Err(e) => assert!(
                        matches!(&e, project::ProjectionError::Invalid { field, .. }
                            if field.ends_with("name") || field.ends_with("namespace")),
                        "generated object fails projection for another reason: {e}"
                    ),
                }
            }
            for (kind, key) in deletes {
                tx.delete(kind, &key);
            }
        });
    }
}

/// Every question asked of both zones.
fn questions(zone: &str) -> Vec<(String, RecordType)> {
    use RecordType::*;
    let mut q: Vec<(String, RecordType)> = Vec::new();
    let mut add = |name: String, types: &[RecordType]| {
        for t in types {
            q.push((name.clone(), *t));
        }
    };
    for fixed in [
        "",
        "svc.",
        "pod.",
        "dns.",
        "ns.dns.",
        "dns-version.",
        "x.",
        "x.svc.",
        "x.pod.",
    ] {
        add(format!("{fixed}{zone}"), &[A, AAAA, SOA, NS, TXT]);
    }
    let ips = all_ips();
    // Dashed names with the address type of their family (the other type is NODATA either way,
    // which other questions cover).
    let dashed: Vec<(String, RecordType)> = ips
        .iter()
        .map(|ip| (dashed_ip(*ip), if ip.is_ipv4() { A } else { AAAA }))
        .collect();
    for ns in NAMESPACES {
        let ns = ns.to_ascii_lowercase();
        add(format!("{ns}.svc.{zone}"), &[A, SRV]);
        add(format!("{ns}.pod.{zone}"), &[A]);
        add(format!("nope.{ns}.svc.{zone}"), &[A]);
        for (d, t) in &dashed {
            add(format!("{d}.{ns}.pod.{zone}"), &[*t]);
        }
        for svc in SERVICES {
            let svc = svc.to_ascii_lowercase();
            let base = format!("{svc}.{ns}.svc.{zone}");
            add(base.clone(), &[A, AAAA, SRV, CNAME, TXT, MX]);
            for proto in ["tcp", "udp", "sctp"] {
                add(format!("_{proto}.{base}"), &[A, SRV]);
                for port in ["http", "dns", "metrics", "nope"] {
                    add(format!("_{port}._{proto}.{base}"), &[SRV, A]);
                }
            }
            for label in HOSTNAMES.iter().chain(POD_NAMES.iter()) {
                add(format!("{}.{base}", label.to_ascii_lowercase()), &[A, AAAA]);
            }
            for (d, t) in &dashed {
                add(format!("{d}.{base}"), &[*t]);
            }
            add(format!("a.b.{base}"), &[A]);
        }
    }
    for ip in &ips {
        let full = reverse_name(*ip);
        add(full.clone(), &[PTR, A]);
        // Every proper prefix (empty non-terminals and absent ones).
        let labels: Vec<&str> = full.trim_end_matches('.').split('.').collect();
        for cut in 1..labels.len() - 2 {
            add(format!("{}.", labels[cut..].join(".")), &[PTR]);
        }
    }
    for extra in [
        "10.in-addr.arpa.",
        "11.in-addr.arpa.",
        "3.244.10.in-addr.arpa.",
        "1.2.3.4.in-addr.arpa.",
        "in-addr.arpa.",
        "ip6.arpa.",
        "example.com.",
    ] {
        add(extra.to_string(), &[PTR, SOA, A]);
    }
    q
}

/// The answer as comparable text.
fn answer_text(zone: &ClusterZone, name: &str, t: RecordType) -> String {
    let qname = Name::from_ascii(name).expect("question name");
    match zone.lookup(&qname, &lower_fqdn(&qname), t) {
        Lookup::NotServed => "not served".into(),
        Lookup::Answer(a) => format!(
            "{:?} origin {} answers {:?} additionals {:?}",
            a.rcode,
            a.origin,
            a.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            a.additionals
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
        ),
    }
}

/// What `k8s_external` answers, as comparable text.
fn external_text(zone: &ClusterZone, name: &str, t: RecordType, ext_zone: &str) -> String {
    let qname = Name::from_ascii(name).expect("question name");
    let opts = ExternalOptions {
        headless: true,
        ..ExternalOptions::default()
    };
    let a = zone.lookup_external(
        &qname,
        &lower_fqdn(&qname),
        t,
        ext_zone,
        "example.org.",
        &opts,
    );
    let text = |v: &[Record]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    format!(
        "{:?} {:?} {:?} {:?}",
        a.rcode,
        text(&a.answers),
        text(&a.authority),
        text(&a.additionals)
    )
}

/// The k8s_external questions and the namespaces `autopath` finds, which must agree too.
/// Returns how many external answers had records and how many client addresses had a namespace.
fn check_external_and_clients(
    zone: &ClusterZone,
    full: &ClusterZone,
    context: &str,
) -> (usize, usize) {
    use RecordType::*;
    let (mut positive, mut clients) = (0, 0);
    for ns in NAMESPACES {
        for svc in SERVICES {
            for q in [
                format!("{svc}.{ns}.example.org."),
                format!("_http._tcp.{svc}.{ns}.example.org."),
                format!("web-0.{svc}.{ns}.example.org."),
            ] {
                for t in [A, AAAA, SRV] {
                    let got = external_text(zone, &q, t, "example.org.");
                    assert_eq!(
                        got,
                        external_text(full, &q, t, "example.org."),
                        "{context}: {q} {t}"
                    );
                    positive += usize::from(got.starts_with("NoError [\""));
                }
            }
        }
    }
    let externals: Vec<IpAddr> = EXTERNAL_IPS.iter().map(|s| s.parse().unwrap()).collect();
    for ip in externals.iter().chain(all_ips().iter()) {
        let q = reverse_name(*ip);
        let ext_zone = if ip.is_ipv4() {
            "in-addr.arpa."
        } else {
            "ip6.arpa."
        };
        let got = external_text(zone, &q, PTR, ext_zone);
        assert_eq!(
            got,
            external_text(full, &q, PTR, ext_zone),
            "{context}: {q}"
        );
        positive += usize::from(got.starts_with("NoError [\""));
    }
    let origin = zone
        .origin_of("cluster.local.")
        .expect("cluster.local is served");
    for ip in all_ips() {
        for ns in NAMESPACES {
            let q = format!("x.{}.svc.cluster.local.", ns.to_ascii_lowercase());
            let got = zone.client_namespace(ip, &q, origin);
            assert_eq!(
                got,
                full.client_namespace(ip, &q, origin),
                "{context}: client {ip} asking {q}"
            );
            clients += usize::from(got.is_some());
        }
    }
    (positive, clients)
}

/// Runs `steps` random batches with `options`, checking the incremental zone after each.
fn check(seed: u64, steps: usize, options: ZoneOptions) {
    let mut generator = Gen {
        rng: fastrand::Rng::with_seed(seed),
    };
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Pod]);
    for _ in 0..3 {
        generator.batch(&mut writer);
    }
    let questions = questions("cluster.local.");
    let mut zone = ClusterZone::build_with_serial(&reader.snapshot(), &options, 1);
    let mut nonempty_answers = 0usize;
    let mut negative = 0usize;
    let (mut external_positive, mut clients_found) = (0usize, 0usize);
    for step in 0..steps {
        generator.batch(&mut writer);
        // Sometimes let changes pile up over several generations before updating.
        if generator.rng.u8(..4) == 0 {
            generator.batch(&mut writer);
        }
        let snapshot = reader.snapshot();
        let changes = snapshot
            .changes_since(zone.generation())
            .expect("the journal reaches back to the last zone");
        let serial = step as u32 + 2;
        zone = zone.update(&snapshot, &changes, serial);
        let full = ClusterZone::build_with_serial(&snapshot, &options, serial);
        assert_eq!(zone.generation(), full.generation());
        assert_eq!(zone.service_count(), full.service_count(), "step {step}");
        for (name, t) in &questions {
            let got = answer_text(&zone, name, *t);
            let want = answer_text(&full, name, *t);
            assert_eq!(
                got, want,
                "seed {seed} step {step}: {name} {t} differs after changes {changes:?}"
            );
            if got.contains("NXDomain") {
                negative += 1;
            } else if !got.contains("answers []") {
                nonempty_answers += 1;
            }
        }
        if options.zones.iter().any(|z| z == "cluster.local") {
            let (p, c) =
                check_external_and_clients(&zone, &full, &format!("seed {seed} step {step}"));
            external_positive += p;
            clients_found += c;
        }
        let export = |z: &ClusterZone| -> Vec<String> {
            z.records().iter().map(|r| r.to_string()).collect()
        };
        assert_eq!(export(&zone), export(&full), "seed {seed} step {step}");
    }
    // The generator must exercise both outcomes, or the comparison proves little.
    assert!(
        nonempty_answers > steps * 8,
        "only {nonempty_answers} positive answers"
    );
    assert!(negative > steps * 100, "only {negative} NXDOMAIN answers");
    if options.zones.iter().any(|z| z == "cluster.local") {
        assert!(
            external_positive > steps,
            "only {external_positive} k8s_external answers with records"
        );
    }
    if options.pods == PodMode::Verified {
        assert!(clients_found > steps, "only {clients_found} clients found");
    }
}

#[test]
fn incremental_updates_match_full_builds_default_options() {
    for seed in [1, 2, 3] {
        check(seed, 40, ZoneOptions::default());
    }
}

#[test]
fn incremental_updates_match_full_builds_with_pods_verified() {
    check(
        11,
        40,
        ZoneOptions {
            pods: PodMode::Verified,
            ..ZoneOptions::default()
        },
    );
}

#[test]
fn incremental_updates_match_full_builds_with_pods_insecure_and_pod_names() {
    check(
        12,
        40,
        ZoneOptions {
            pods: PodMode::Insecure,
            endpoint_pod_names: true,
            ..ZoneOptions::default()
        },
    );
}

#[test]
fn incremental_updates_match_full_builds_with_ignore_empty_and_namespaces() {
    check(
        13,
        40,
        ZoneOptions {
            ignore_empty_service: true,
            namespaces: ["demo".to_string(), "default".to_string()].into(),
            ..ZoneOptions::default()
        },
    );
}

#[test]
fn incremental_updates_match_full_builds_with_a_label_selector() {
    check(
        16,
        40,
        ZoneOptions {
            labels: Some("tier notin (back),tier!=db".parse().unwrap()),
            ..ZoneOptions::default()
        },
    );
}

#[test]
fn incremental_updates_match_full_builds_without_endpoints_or_reverse_zones() {
    check(
        14,
        30,
        ZoneOptions {
            noendpoints: true,
            ..ZoneOptions::default()
        },
    );
    check(
        15,
        30,
        ZoneOptions {
            zones: vec!["cluster.local".into()],
            ..ZoneOptions::default()
        },
    );
}

#[test]
fn update_leaves_the_old_zone_unchanged() {
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let svc = |ip: &str| {
        project::from_json(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}))
        .unwrap()
        .unwrap()
    };
    writer.apply(svc("10.96.0.1"));
    let old = ClusterZone::build(&reader.snapshot(), &ZoneOptions::default());
    writer.apply(svc("10.96.0.2"));
    let snap = reader.snapshot();
    let new = old.update(&snap, &snap.changes_since(old.generation()).unwrap(), 9);
    let a = "a.n.svc.cluster.local.";
    assert!(answer_text(&old, a, RecordType::A).contains("10.96.0.1"));
    assert!(answer_text(&new, a, RecordType::A).contains("10.96.0.2"));
    assert!(answer_text(&old, "1.0.96.10.in-addr.arpa.", RecordType::PTR).contains("a.n.svc"));
    assert!(answer_text(&new, "1.0.96.10.in-addr.arpa.", RecordType::PTR).contains("NXDomain"));
    assert_eq!(new.serial(), 9);
    assert_eq!(
        new.origins()[0].soa[0].data.to_string().split(' ').nth(2),
        Some("9")
    );
    // Deleting the last service of a namespace removes `<ns>.svc` (an empty non-terminal).
    writer.delete(Kind::Service, &ObjectKey::new("n", "a"));
    let snap = reader.snapshot();
    let gone = new.update(&snap, &snap.changes_since(new.generation()).unwrap(), 10);
    assert!(answer_text(&new, "n.svc.cluster.local.", RecordType::A).contains("NoError"));
    assert!(answer_text(&gone, "n.svc.cluster.local.", RecordType::A).contains("NXDomain"));
    assert!(answer_text(&gone, "0.96.10.in-addr.arpa.", RecordType::PTR).contains("NXDomain"));
}

#[test]
fn per_service_and_per_address_entries_stay_small() {
    // 10,000 services and 110,000 addresses must stay a few megabytes (see bench/dns).
    assert!(std::mem::size_of::<ServiceEntry>() <= 64);
    assert_eq!(std::mem::size_of::<PtrEntry>(), 16);
}
