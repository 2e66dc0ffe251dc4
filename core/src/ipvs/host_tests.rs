use std::sync::Arc;

use super::*;
use crate::cache::new_cache;
use crate::ipvs::desired::build;
use crate::ipvs::fixtures::{endpoint, service, slice};
use crate::model::{ClusterObject, Kind, ServiceType, TrafficPolicy};

fn desired() -> DesiredState {
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let mut web = service(
        "default",
        "web",
        "10.96.0.20",
        &[("http", Protocol::Tcp, 80, 8080)],
    );
    web.service_type = ServiceType::NodePort;
    web.ports[0].node_port = Some(30080);
    web.external_ips = vec!["1.2.3.4".parse().unwrap()];
    web.external_traffic_policy = TrafficPolicy::Local;
    w.apply(ClusterObject::Service(web));
    w.apply(ClusterObject::EndpointSlice(slice(
        "default",
        "web-1",
        "web",
        &[("http", Protocol::Tcp, 8080)],
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    let mut dns = service(
        "kube-system",
        "dns",
        "10.96.0.10",
        &[("dns", Protocol::Udp, 53, 53)],
    );
    dns.cluster_ips.push("fd00::a".parse().unwrap());
    w.apply(ClusterObject::Service(dns));
    let node = NodeInfo {
        node_name: Some(Arc::from("node-a")),
        local_addresses: vec!["192.168.1.5".parse().unwrap()],
    };
    build(&w.snapshot(), &ProxyConfig::default(), &node)
}

#[test]
fn ipset_restore_golden() {
    let d = desired();
    let v4 = ipset_restore(&ipsets(&d, Family::V4));
    let want_start = "\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 10.96.0.10,udp:53
add KUBE-SVCNET-TMP 10.96.0.20,tcp:80
swap KUBE-SVCNET-TMP KUBE-CLUSTER-IP
destroy KUBE-SVCNET-TMP
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 10.244.1.10,tcp:8080,10.244.1.10
swap KUBE-SVCNET-TMP KUBE-LOOP-BACK
destroy KUBE-SVCNET-TMP
create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 1.2.3.4,tcp:80
swap KUBE-SVCNET-TMP KUBE-EXTERNAL-IP
destroy KUBE-SVCNET-TMP
create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 1.2.3.4,tcp:80
swap KUBE-SVCNET-TMP KUBE-EXTERNAL-IP-LOCAL
destroy KUBE-SVCNET-TMP
";
    assert!(v4.starts_with(want_start), "{v4}");
    assert!(v4.contains(
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist
create KUBE-SVCNET-TMP bitmap:port range 0-65535
add KUBE-SVCNET-TMP 30080
swap KUBE-SVCNET-TMP KUBE-NODE-PORT-TCP
"
    ));
    assert!(
        v4.contains("add KUBE-SVCNET-TMP 30080\nswap KUBE-SVCNET-TMP KUBE-NODE-PORT-LOCAL-TCP\n")
    );
    assert!(v4.ends_with(
        "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 1.2.3.4
add KUBE-SVCNET-TMP 10.96.0.10
add KUBE-SVCNET-TMP 10.96.0.20
swap KUBE-SVCNET-TMP KUBE-IPVS-IPS
destroy KUBE-SVCNET-TMP
"
    ));
    let v6 = ipset_restore(&ipsets(&d, Family::V6));
    assert!(v6.starts_with(
        "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port family inet6 hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP fd00::a,udp:53
swap KUBE-SVCNET-TMP KUBE-6-CLUSTER-IP
"
    ));
}

#[test]
fn iptables_restore_golden_with_cluster_cidr() {
    let config = ProxyConfig {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        ..ProxyConfig::default()
    };
    let got = iptables_restore(&config, Family::V4);
    let want = "\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j ACCEPT
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
-A KUBE-LOAD-BALANCER -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-UDP dst -j RETURN
-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
";
    assert_eq!(got, want);
    let v6 = iptables_restore(&config, Family::V6);
    assert!(
        v6.contains("-A KUBE-SERVICES ! -s fd00:10:244::/56 -m comment"),
        "{v6}"
    );
    assert!(v6.contains("--match-set KUBE-6-CLUSTER-IP dst,dst"), "{v6}");
}

#[test]
fn masquerade_all_and_mark_bit() {
    let config = ProxyConfig {
        masquerade_all: true,
        masquerade_bit: 10,
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let got = iptables_restore(&config, Family::V4);
    assert!(got.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"));
    assert!(!got.contains("! -s 10.244.0.0/16"));
    assert!(got.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x400\n"));
    // Neither masqueradeAll nor clusterCIDR: no cluster-IP masquerade rule.
    let plain = iptables_restore(&ProxyConfig::default(), Family::V4);
    assert!(!plain.contains("for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP"));
}

#[test]
fn iptables_variant_detection() {
    let legacy_rules = "*nat\n-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j X\nCOMMIT\n";
    let nft_rules = "*nat\n-A POSTROUTING -j Y\nCOMMIT\n";
    assert_eq!(
        choose_mode(Some(legacy_rules), Some(nft_rules)),
        IptablesMode::Legacy
    );
    assert_eq!(
        choose_mode(Some(nft_rules), Some(legacy_rules)),
        IptablesMode::Nft
    );
    assert_eq!(choose_mode(Some(""), Some("")), IptablesMode::Nft);
    assert_eq!(
        choose_mode(Some(""), None),
        IptablesMode::Legacy,
        "nft unusable (UML)"
    );
    assert_eq!(
        IptablesMode::Legacy.command(Family::V6, "-restore"),
        "ip6tables-legacy-restore"
    );
}

#[test]
fn sysctls_follow_strict_arp() {
    let base = sysctls(&ProxyConfig::default());
    assert!(base.contains(&("net/ipv4/vs/conntrack", "1")));
    assert!(base.contains(&("net/ipv4/vs/expire_nodest_conn", "1")));
    assert!(base.contains(&("net/ipv4/vs/expire_quiescent_template", "1")));
    assert!(base.contains(&("net/ipv4/ip_forward", "1")));
    assert!(!base.iter().any(|(k, _)| k.contains("arp")));
    let strict = sysctls(&ProxyConfig {
        strict_arp: true,
        ..ProxyConfig::default()
    });
    assert!(strict.contains(&("net/ipv4/conf/all/arp_ignore", "1")));
    assert!(strict.contains(&("net/ipv4/conf/all/arp_announce", "2")));
}

#[test]
fn ipset_diff_adds_and_deletes_only_what_changed() {
    let d = desired();
    let old = ipsets(&d, Family::V4);
    let mut new = old.clone();
    new[0].entries.remove("10.96.0.10,udp:53");
    new[0].entries.insert("10.96.0.30,tcp:443".to_string());
    let script = ipset_diff(&old, &new);
    assert_eq!(
        script,
        "del KUBE-CLUSTER-IP 10.96.0.10,udp:53 -exist\nadd KUBE-CLUSTER-IP 10.96.0.30,tcp:443 -exist\n"
    );
    assert_eq!(ipset_diff(&new, &new), "");
}
