use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use super::kernel::FILTER_MIN_GAP;
use super::*;
use crate::cache::new_cache;
use crate::ipvs::backend::BackendError;
use crate::ipvs::config::ProxyConfig;
use crate::ipvs::desired::build;
use crate::ipvs::desired::{DesiredState, NodeInfo};
use crate::ipvs::fixtures::{endpoint, service, slice};
use crate::ipvs::run::HostSetup;
use crate::ipvs::table::Family;
use crate::model::Protocol;
use crate::model::{ClusterObject, Kind, ServiceType, TrafficPolicy};

fn node() -> NodeInfo {
    NodeInfo {
        node_name: Some(Arc::from("node-a")),
        local_addresses: vec!["192.168.1.5".parse().unwrap()],
    }
}

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
    w.apply(ClusterObject::from(web));
    w.apply(ClusterObject::from(slice(
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
    w.apply(ClusterObject::from(dns));
    let node = NodeInfo {
        node_name: Some(Arc::from("node-a")),
        local_addresses: vec!["192.168.1.5".parse().unwrap()],
    };
    build(&w.snapshot(), &ProxyConfig::default(), &node)
}

#[test]
fn ipset_restore_golden() {
    let d = desired();
    let v4 = ipset_restore(&ipsets(&d, Family::V4)).unwrap();
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
    let v6 = ipset_restore(&ipsets(&d, Family::V6)).unwrap();
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
-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-LOCAL-SCTP-HASH dst,dst -j RETURN
-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source IP for packet filter purpose\" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
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
    // Neither masqueradeAll nor clusterCIDR: only what the node sends from a cluster IP.
    let plain = iptables_restore(&ProxyConfig::default(), Family::V4);
    let masq: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("--match-set KUBE-CLUSTER-IP") && l.ends_with("-j KUBE-MARK-MASQ"))
        .collect();
    assert_eq!(
        masq,
        [
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"
        ]
    );
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

/// `/proc/sys` as a map; writes fail with EROFS, as in an unprivileged container.
struct ReadOnlySysctls(BTreeMap<String, String>);

impl crate::ipvs::conntrack::sysctl::SysctlIo for ReadOnlySysctls {
    fn read(&mut self, path: &str) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn write(&mut self, _path: &str, _value: &str) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(30))
    }
}

#[test]
fn sysctls_already_set_need_no_write_access() {
    let config = ProxyConfig::default();
    let mut io = ReadOnlySysctls(
        sysctls(&config)
            .into_iter()
            .map(|(p, v)| (format!("/proc/sys/{p}"), format!("{v}\n")))
            .collect(),
    );
    assert_eq!(apply_sysctls(&mut io, &config), vec![]);
    io.0.insert("/proc/sys/net/ipv4/ip_forward".into(), "0\n".into());
    let failed = apply_sysctls(&mut io, &config);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "net/ipv4/ip_forward");
    assert!(failed[0].1.contains("Read-only"), "{failed:?}");
}

#[test]
fn ipset_diff_adds_and_deletes_only_what_changed() {
    let d = desired();
    let old = ipsets(&d, Family::V4);
    let mut new = old.clone();
    new[0].entries.remove("10.96.0.10,udp:53");
    new[0].entries.insert("10.96.0.30,tcp:443".to_string());
    let script = ipset_diff(&old, &new).unwrap();
    assert_eq!(
        script,
        "del KUBE-CLUSTER-IP 10.96.0.10,udp:53 -exist\nadd KUBE-CLUSTER-IP 10.96.0.30,tcp:443 -exist\n"
    );
    assert_eq!(ipset_diff(&new, &new).unwrap(), "");
}

#[test]
fn kubelet_marker_chains_decide_before_rule_counts() {
    let many_legacy = "*filter\n-A INPUT -j A\n-A INPUT -j B\n-A INPUT -j C\nCOMMIT\n";
    let nft_hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
    assert_eq!(
        choose_mode(Some(many_legacy), Some(nft_hint)),
        IptablesMode::Nft
    );
    let legacy_canary = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
    let many_nft = many_legacy;
    assert_eq!(
        choose_mode(Some(legacy_canary), Some(many_nft)),
        IptablesMode::Legacy
    );
    // A rule merely mentioning the name is no marker chain.
    let mention = "*filter\n-A INPUT -m comment --comment KUBE-IPTABLES-HINT -j ACCEPT\nCOMMIT\n";
    assert_eq!(choose_mode(Some(""), Some(mention)), IptablesMode::Nft);
    assert_eq!(choose_mode(Some(mention), Some("")), IptablesMode::Legacy);
}

/// One command a [`ScriptedRunner`] ran: program, arguments, standard input.
type Call = (String, Vec<String>, Option<String>);

/// How a [`ScriptedRunner`] answers a command line: its output or the failure reason.
type Answer = Box<dyn FnMut(&str) -> Result<String, String> + Send>;

/// An in-memory [`CommandRunner`]: records every call and answers from `answer` (program and
/// arguments joined by spaces → result); the log is shared so tests can read it after handing
/// the runner to a [`KernelHost`].
struct ScriptedRunner {
    calls: Arc<Mutex<Vec<Call>>>,
    answer: Answer,
}

impl ScriptedRunner {
    fn new(
        answer: impl FnMut(&str) -> Result<String, String> + Send + 'static,
    ) -> (Self, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                calls: calls.clone(),
                answer: Box::new(answer),
            },
            calls,
        )
    }
}

impl CommandRunner for ScriptedRunner {
    fn run(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, BackendError> {
        self.calls.lock().unwrap().push((
            program.to_owned(),
            args.iter().map(|a| a.to_string()).collect(),
            stdin.map(str::to_owned),
        ));
        let line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        (self.answer)(&line).map_err(|reason| BackendError::Command {
            command: line,
            reason,
        })
    }
}

fn programs(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|(p, a, _)| format!("{p} {}", a.join(" ")).trim().to_owned())
        .collect()
}

/// The user-mode-linux kernel: both save commands succeed with empty tables, but iptables-nft
/// cannot change anything (no nf_tables). The tie prefers nft; the probe falls back to legacy.
#[test]
fn detection_falls_back_to_legacy_when_nft_cannot_change_rules() {
    let (mut runner, calls) = ScriptedRunner::new(|line| {
        if line.starts_with("iptables-nft-restore") {
            Err("exit status: 4: TABLE_ADD failed (Operation not supported): table filter".into())
        } else {
            Ok(String::new())
        }
    });
    assert_eq!(detect_mode(&mut runner), IptablesMode::Legacy);
    assert_eq!(
        programs(&calls),
        [
            "iptables-legacy-save",
            "iptables-nft-save",
            "iptables-nft-restore -w 5 --noflush",
            "iptables-legacy-restore -w 5 --noflush",
        ]
    );
    let probe = calls.lock().unwrap()[3].2.clone().unwrap();
    assert_eq!(
        probe,
        "*filter\n:KUBE-SVCNET-PROBE - [0:0]\n-X KUBE-SVCNET-PROBE\nCOMMIT\n"
    );
}

#[test]
fn detection_keeps_a_working_preferred_variant_and_survives_two_broken_ones() {
    let (mut runner, calls) = ScriptedRunner::new(|_| Ok(String::new()));
    assert_eq!(
        detect_mode(&mut runner),
        IptablesMode::Nft,
        "tie, nft works"
    );
    assert_eq!(programs(&calls).len(), 3, "no second probe: {calls:?}");

    let legacy_rules = "*nat\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
    let (mut runner, _) = ScriptedRunner::new(move |line| match line {
        "iptables-legacy-save" => Ok(legacy_rules.to_owned()),
        _ => Ok(String::new()),
    });
    assert_eq!(detect_mode(&mut runner), IptablesMode::Legacy);

    let (mut runner, calls) = ScriptedRunner::new(|line| {
        if line.contains("-restore") {
            Err("permission denied".into())
        } else {
            Ok(String::new())
        }
    });
    assert_eq!(
        detect_mode(&mut runner),
        IptablesMode::Nft,
        "nothing works: the preference stands"
    );
    assert_eq!(programs(&calls).len(), 4);
}

/// A transient `ipset restore` failure is retried on its own (the host stays pending) with
/// backoff, and the retry applies everything: the full ipset swap, the chains and the jumps.
#[test]
fn failed_filter_update_is_retried_with_backoff() {
    let d = desired();
    let config = ProxyConfig::default();
    let fail_ipset = Arc::new(Mutex::new(2));
    let fails = fail_ipset.clone();
    let (runner, calls) = ScriptedRunner::new(move |line| {
        let mut left = fails.lock().unwrap();
        if line == "ipset restore" && *left > 0 {
            *left -= 1;
            return Err("exit status: 1: Kernel error received: Invalid argument".into());
        }
        if line.contains(" -C ") {
            return Err("exit status: 1: rule does not exist".into());
        }
        Ok(String::new())
    });
    let mut host = KernelHost::with_runner(Box::new(runner));
    let t0 = Instant::now();
    let err = host.after_sync_at(t0, &d, &config, &node()).unwrap_err();
    assert!(err.to_string().contains("ipset restore"), "{err}");
    assert!(host.has_pending(), "a failure must schedule a retry");
    assert_eq!(programs(&calls), ["ipset list -t", "ipset restore"]);

    // Before the first retry delay: nothing runs, still pending.
    host.after_sync_at(t0 + Duration::from_millis(240), &d, &config, &node())
        .unwrap();
    assert!(host.has_pending());
    assert_eq!(programs(&calls).len(), 2);

    // Second failure doubles the delay.
    let t1 = t0 + retry_delay(1);
    host.after_sync_at(t1, &d, &config, &node()).unwrap_err();
    assert_eq!(
        programs(&calls).len(),
        4,
        "set sizes are read again after a failure"
    );
    host.after_sync_at(t1 + Duration::from_millis(400), &d, &config, &node())
        .unwrap();
    assert_eq!(programs(&calls).len(), 4, "still backing off (500 ms)");

    let t2 = t1 + retry_delay(2);
    host.after_sync_at(t2, &d, &config, &node()).unwrap();
    assert!(!host.has_pending());
    let ran = programs(&calls);
    let script = calls.lock().unwrap()[5].2.clone().unwrap();
    assert!(
        script.starts_with("create KUBE-CLUSTER-IP ") && script.contains("\nswap "),
        "after a failure the sets are swapped in whole: {script}"
    );
    assert_eq!(ran[4], "ipset list -t");
    assert_eq!(ran[6], "iptables-legacy-save");
    // The detection's save serves IPv4; IPv6 is saved once; each family is one restore that
    // inserts the missing jumps with our chains (no -C/-I processes on a host without them).
    assert_eq!(
        ran[7..],
        [
            "iptables-nft-save",
            "iptables-nft-restore -w 5 --noflush",
            "iptables-nft-restore --noflush",
            "ip6tables-nft-save",
            "ip6tables-nft-restore --noflush",
        ],
        "{ran:#?}"
    );
    for script in calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, a, _)| p.ends_with("tables-nft-restore") && a == &["--noflush"])
        .map(|(_, _, stdin)| stdin.clone().unwrap())
    {
        let inserted = script.lines().filter(|l| l.starts_with("-I ")).count();
        assert_eq!(inserted, JUMPS.len(), "{script}");
    }
    assert_eq!(host.mode(), Some(IptablesMode::Nft));

    // Recovered: the next update is the usual rate-limited incremental one, no backoff.
    let n = programs(&calls).len();
    host.after_sync_at(t2 + FILTER_MIN_GAP, &d, &config, &node())
        .unwrap();
    assert_eq!(programs(&calls).len(), n, "nothing changed, nothing to run");
}

/// The jumps missing from a save are inserted by the restore, at the end of their table's
/// section; one already there is left alone; one whose chain reaches its target in another
/// spelling is checked with `-C`; a failed save checks them all.
#[test]
fn jumps_missing_from_the_save_are_inserted_by_the_restore() {
    let config = ProxyConfig::default();
    let restore = iptables_restore(&config, Family::V4);
    let empty = plan_jumps("");
    assert_eq!(empty.insert, JUMPS.to_vec());
    assert!(empty.check.is_empty());
    let script = with_jumps(&restore, &empty.insert);
    assert!(script.starts_with(&restore[..restore.find("COMMIT").unwrap()]));
    let nat = &script[..script.find("*filter").unwrap()];
    assert!(
        nat.ends_with(
            "-I PREROUTING -m comment --comment kubernetes-service-portals -j KUBE-SERVICES
-I OUTPUT -m comment --comment kubernetes-service-portals -j KUBE-SERVICES
-I POSTROUTING -m comment --comment kubernetes-postrouting-rules -j KUBE-POSTROUTING
COMMIT
"
        ),
        "{nat}"
    );
    assert!(script.ends_with(
        "-I INPUT -m comment --comment kubernetes-ipvs-access-filter -j KUBE-IPVS-FILTER\nCOMMIT\n"
    ), "{script}");
    assert_eq!(
        script.lines().filter(|l| l.starts_with("-I ")).count(),
        JUMPS.len()
    );

    // A restart: the save lists every jump as iptables-save prints it.
    let mut saved = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for (table, chain, rule) in JUMPS {
        if *table == "nat" {
            saved.push_str(&format!("-A {chain} {rule}\n"));
        }
    }
    saved.push_str("COMMIT\n*filter\n");
    for (table, chain, rule) in JUMPS {
        if *table == "filter" {
            saved.push_str(&format!("-A {chain} {rule}\n"));
        }
    }
    saved.push_str("COMMIT\n");
    assert_eq!(plan_jumps(&saved), JumpPlan::default());
    assert_eq!(with_jumps(&restore, &[]), restore);

    // Someone else's spelling of a jump to KUBE-SERVICES; the filter table without ours.
    let other = "*nat\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
                 -A OUTPUT -j DOCKER\nCOMMIT\n";
    let plan = plan_jumps(other);
    assert_eq!(plan.check, [JUMPS[0]]);
    assert_eq!(plan.insert.len(), JUMPS.len() - 1);
    // Only filter jumps to insert, into a script with no filter section: one is added.
    let filter_only: Vec<Jump> = JUMPS.iter().copied().filter(|j| j.0 == "filter").collect();
    let nat_script = "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n";
    let script = with_jumps(nat_script, &filter_only);
    assert!(script.starts_with(nat_script), "{script}");
    assert!(
        script[nat_script.len()..].starts_with("*filter\n-I FORWARD "),
        "{script}"
    );
    assert!(script.ends_with("COMMIT\n"));
    assert_eq!(JumpPlan::check_all().check, JUMPS.to_vec());
}

#[test]
fn retry_delay_doubles_up_to_the_maximum() {
    assert_eq!(retry_delay(1), HOST_RETRY_FIRST);
    assert_eq!(retry_delay(2), HOST_RETRY_FIRST * 2);
    assert_eq!(retry_delay(4), HOST_RETRY_FIRST * 8);
    assert_eq!(retry_delay(8), HOST_RETRY_MAX);
    assert_eq!(retry_delay(u32::MAX), HOST_RETRY_MAX);
}

/// A LoadBalancer service with `loadBalancerSourceRanges` on two ingress IPs (one of each
/// family), one range covering the node, and a health-check node port.
fn extras() -> HostExtras {
    HostExtras {
        local_endpoints: None,
        health_check_node_ports: [32000, 31000].into_iter().collect(),
        source_ranges: vec![
            SourceRanges {
                ip: "203.0.113.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 443,
                allowed: vec![
                    "198.51.100.0/24".parse().unwrap(),
                    "192.168.1.0/24".parse().unwrap(),
                ],
            },
            SourceRanges {
                ip: "203.0.113.11".parse().unwrap(),
                protocol: Protocol::Udp,
                port: 53,
                allowed: vec!["198.51.100.0/24".parse().unwrap()],
            },
            SourceRanges {
                ip: "2001:db8::10".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 443,
                allowed: vec!["2001:db8:1::/48".parse().unwrap()],
            },
        ],
    }
}

fn set_text(sets: &[IpSet], name: &str) -> String {
    let set = sets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no set {name}"));
    ipset_restore(std::slice::from_ref(set)).unwrap()
}

#[test]
fn load_balancer_source_ranges_and_health_check_ipsets_golden() {
    let d = desired();
    let node_ips: Vec<IpAddr> = vec!["192.168.1.5".parse().unwrap()];
    let v4 = ipsets_with(&d, Family::V4, &extras(), &node_ips);
    assert_eq!(
        set_text(&v4, "KUBE-LOAD-BALANCER-FW"),
        "\
create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 203.0.113.10,tcp:443
add KUBE-SVCNET-TMP 203.0.113.11,udp:53
swap KUBE-SVCNET-TMP KUBE-LOAD-BALANCER-FW
destroy KUBE-SVCNET-TMP
"
    );
    assert_eq!(
        set_text(&v4, "KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        "\
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 203.0.113.10,tcp:443,192.168.1.0/24
add KUBE-SVCNET-TMP 203.0.113.10,tcp:443,198.51.100.0/24
add KUBE-SVCNET-TMP 203.0.113.11,udp:53,198.51.100.0/24
swap KUBE-SVCNET-TMP KUBE-LOAD-BALANCER-SOURCE-CIDR
destroy KUBE-SVCNET-TMP
"
    );
    // Only the ingress whose ranges cover the node's address lets the node in.
    assert_eq!(
        set_text(&v4, "KUBE-LOAD-BALANCER-SOURCE-IP"),
        "\
create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 203.0.113.10,tcp:443,203.0.113.10
swap KUBE-SVCNET-TMP KUBE-LOAD-BALANCER-SOURCE-IP
destroy KUBE-SVCNET-TMP
"
    );
    assert_eq!(
        set_text(&v4, "KUBE-HEALTH-CHECK-NODE-PORT"),
        "\
create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535 -exist
create KUBE-SVCNET-TMP bitmap:port range 0-65535
add KUBE-SVCNET-TMP 31000
add KUBE-SVCNET-TMP 32000
swap KUBE-SVCNET-TMP KUBE-HEALTH-CHECK-NODE-PORT
destroy KUBE-SVCNET-TMP
"
    );
    // IPv6: the 32-character name is cut to the kernel's 31, as kube-proxy does.
    let v6 = ipsets_with(&d, Family::V6, &extras(), &node_ips);
    assert_eq!(
        set_text(&v6, "KUBE-6-LOAD-BALANCER-SOURCE-CID"),
        "\
create KUBE-6-LOAD-BALANCER-SOURCE-CID hash:ip,port,net family inet6 hashsize 1024 maxelem 65536 -exist
create KUBE-SVCNET-TMP hash:ip,port,net family inet6 hashsize 1024 maxelem 65536
add KUBE-SVCNET-TMP 2001:db8::10,tcp:443,2001:db8:1::/48
swap KUBE-SVCNET-TMP KUBE-6-LOAD-BALANCER-SOURCE-CID
destroy KUBE-SVCNET-TMP
"
    );
    assert!(v6.iter().all(|s| s.name.len() <= IPSET_NAME_MAX), "{v6:?}");
    assert!(
        v6.iter()
            .find(|s| s.name == "KUBE-6-LOAD-BALANCER-FW")
            .is_some_and(|s| s.entries.len() == 1)
    );
    // Without extras the sets exist but stay empty.
    let plain = ipsets(&d, Family::V4);
    for name in [
        "KUBE-LOAD-BALANCER-FW",
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "KUBE-HEALTH-CHECK-NODE-PORT",
    ] {
        assert!(
            plain.iter().any(|s| s.name == name && s.entries.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn node_without_access_to_a_source_restricted_load_balancer_is_filtered_on_output() {
    let node_ips: Vec<IpAddr> = vec!["192.168.1.5".parse().unwrap()];
    let v4 = iptables_restore_with(&ProxyConfig::default(), Family::V4, &extras(), &node_ips);
    let out: Vec<&str> = v4
        .lines()
        .filter(|l| l.starts_with("-A KUBE-IPVS-OUT-FILTER"))
        .collect();
    assert_eq!(
        out,
        [
            "-A KUBE-IPVS-OUT-FILTER -s 203.0.113.11 -m ipvs --vaddr 203.0.113.11 --vproto udp --vport 53 -j DROP"
        ]
    );
    // The rest of the rules does not depend on the extras.
    let without: String = v4
        .lines()
        .filter(|l| !l.starts_with("-A KUBE-IPVS-OUT-FILTER"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        without,
        iptables_restore(&ProxyConfig::default(), Family::V4)
    );
    let v6 = iptables_restore_with(&ProxyConfig::default(), Family::V6, &extras(), &node_ips);
    assert!(
        v6.contains("-A KUBE-IPVS-OUT-FILTER -s 2001:db8::10 -m ipvs --vaddr 2001:db8::10 --vproto tcp --vport 443 -j DROP\n"),
        "{v6}"
    );
    assert!(v6.contains("--match-set KUBE-6-LOAD-BALANCER-SOURCE-CID dst,dst,src -j RETURN"));
}

/// A host on a scripted runner (no jump rules present yet) after its first update of
/// [`desired`] at `t0`, with the runner's call log.
/// A host on a scripted node with none of our rules yet: `answer` gives a command's output
/// where it has one to give; otherwise `iptables -C` finds no rule and everything else succeeds
/// silently.
fn scripted_host(
    answer: impl Fn(&str) -> Option<String> + Send + 'static,
) -> (KernelHost, Arc<Mutex<Vec<Call>>>) {
    let (runner, calls) = ScriptedRunner::new(move |line| match answer(line) {
        Some(out) => Ok(out),
        None if line.contains(" -C ") => Err("exit status: 1".into()),
        None => Ok(String::new()),
    });
    (KernelHost::with_runner(Box::new(runner)), calls)
}

fn updated_host() -> (KernelHost, Arc<Mutex<Vec<Call>>>, Instant) {
    let (mut host, calls) = scripted_host(|_| None);
    let t0 = Instant::now();
    host.after_sync_at(t0, &desired(), &ProxyConfig::default(), &node())
        .unwrap();
    (host, calls, t0)
}

/// New extras make the host pending (applied without waiting for a sync) and reach the kernel
/// through the same full swap and restore.
#[test]
fn extras_are_applied_on_the_next_update() {
    let d = desired();
    let config = ProxyConfig::default();
    let (mut host, calls, t0) = updated_host();
    assert!(!host.has_pending());
    host.set_extras(extras());
    assert!(host.has_pending());
    let before = calls.lock().unwrap().len();
    host.after_sync_at(t0 + FILTER_MIN_GAP, &d, &config, &node())
        .unwrap();
    let calls = calls.lock().unwrap();
    let new = &calls[before..];
    let ipset = new[0].2.as_deref().unwrap();
    assert!(
        ipset.contains("add KUBE-LOAD-BALANCER-FW 203.0.113.10,tcp:443 -exist\n")
            && ipset.contains("add KUBE-HEALTH-CHECK-NODE-PORT 31000 -exist\n"),
        "{ipset}"
    );
    let restored = new
        .iter()
        .find(|(p, _, _)| p == "iptables-nft-restore")
        .and_then(|(_, _, stdin)| stdin.as_deref())
        .unwrap();
    assert!(restored.contains("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.11 "));
    host.set_extras(extras());
    assert!(!host.has_pending(), "the same extras again change nothing");
}

#[test]
fn extras_follow_the_services_of_the_snapshot() {
    use crate::model::{ClusterObject, Kind, Protocol, ServiceType, TrafficPolicy};
    let d = desired();
    let config = ProxyConfig::default();
    let (mut host, calls, t0) = updated_host();
    let (mut w, r) = crate::new_cache([Kind::Service]);
    let mut svc = crate::ipvs::fixtures::service(
        "default",
        "fenced",
        "10.96.0.20",
        &[("https", Protocol::Tcp, 443, 8443)],
    );
    svc.service_type = ServiceType::LoadBalancer;
    svc.load_balancer_ips = vec!["203.0.113.20".parse().unwrap()];
    svc.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    svc.external_traffic_policy = TrafficPolicy::Local;
    svc.health_check_node_port = Some(31500);
    w.apply(ClusterObject::from(svc));
    let fenced = build(&r.snapshot(), &config, &node());
    host.observe_update(
        &fenced,
        &crate::ipvs::desired::Delta {
            full: true,
            ..Default::default()
        },
    );
    assert!(host.has_pending(), "new extras wait for the next update");
    let before = calls.lock().unwrap().len();
    host.after_sync_at(t0 + FILTER_MIN_GAP, &d, &config, &node())
        .unwrap();
    let calls = calls.lock().unwrap();
    let ipset = calls[before].2.as_deref().unwrap();
    assert!(
        ipset.contains("add KUBE-LOAD-BALANCER-FW 203.0.113.20,tcp:443 -exist\n")
            && ipset.contains(
                "add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.20,tcp:443,192.0.2.0/24 -exist\n"
            )
            && ipset.contains("add KUBE-HEALTH-CHECK-NODE-PORT 31500 -exist\n"),
        "{ipset}"
    );
}

const LISTING: &str = "\
Name: KUBE-CLUSTER-IP
Type: hash:ip,port
Revision: 6
Header: family inet hashsize 16384 maxelem 131072 bucketsize 12 initval 0x52eee8f5
Size in memory: 382032
References: 2
Number of entries: 10000

Name: KUBE-HEALTH-CHECK-NODE-PORT
Type: bitmap:port
Revision: 3
Header: range 0-65535
Size in memory: 8264
References: 1
Number of entries: 0

Name: KUBE-LOOP-BACK
Type: hash:ip,port,ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x2b6a9a3c
Size in memory: 3032
References: 1
Number of entries: 0
";

#[test]
fn maxelems_are_read_from_the_terse_listing() {
    let sizes = parse_maxelems(LISTING);
    assert_eq!(
        sizes.into_iter().collect::<Vec<_>>(),
        [
            ("KUBE-CLUSTER-IP".to_owned(), 131072),
            ("KUBE-LOOP-BACK".to_owned(), 65536)
        ]
    );
    assert!(parse_maxelems("").is_empty());
    assert_eq!(maxelem_for(0), DEFAULT_MAXELEM);
    assert_eq!(maxelem_for(65536), 65536);
    assert_eq!(maxelem_for(65537), 131072);
}

fn big_set(name: &str, entries: usize) -> IpSet {
    IpSet {
        name: name.to_owned(),
        kind: "hash:ip,port",
        family: Some("inet"),
        entries: (0..entries)
            .map(|i| format!("10.{}.{}.{},tcp:80", i >> 16, (i >> 8) & 255, i & 255))
            .collect(),
    }
}

/// A set with more entries than ipset's default `maxelem` is filled through a larger temporary
/// set; the existing set is declared with its own size so `create -exist` accepts it.
#[test]
fn oversized_set_is_swapped_into_a_larger_set() {
    let set = big_set("KUBE-CLUSTER-IP", 70_000);
    let script = ipset_restore_sized(std::slice::from_ref(&set), &BTreeMap::new()).unwrap();
    let head: Vec<&str> = script.lines().take(2).collect();
    assert_eq!(
        head,
        [
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist",
            "create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 131072",
        ]
    );
    assert_eq!(
        script.lines().filter(|l| l.starts_with("add ")).count(),
        70_000
    );
    // Already enlarged (an earlier run): declared as it is, never shrunk.
    let existing = parse_maxelems(LISTING);
    let small = big_set("KUBE-CLUSTER-IP", 3);
    let script = ipset_restore_sized(std::slice::from_ref(&small), &existing).unwrap();
    assert!(
        script.starts_with(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 131072 -exist\n\
             create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 131072\n"
        ),
        "{script}"
    );
    assert_eq!(
        maxelems_after_restore(&[set], &BTreeMap::new())["KUBE-CLUSTER-IP"],
        131072
    );
}

/// The host reads the sets' sizes once before its first full swap, updates entry by entry
/// while they fit, and swaps in whole when a set outgrows its size.
#[test]
fn host_reads_set_sizes_once_and_swaps_when_a_set_outgrows_them() {
    let (mut host, calls) =
        scripted_host(|line| (line == "ipset list -t").then(|| LISTING.to_owned()));
    let config = ProxyConfig::default();
    let t0 = Instant::now();
    host.after_sync_at(t0, &desired(), &config, &node())
        .unwrap();
    let ran = programs(&calls);
    assert_eq!(ran[..2], ["ipset list -t", "ipset restore"]);
    let first = calls.lock().unwrap()[1].2.clone().unwrap();
    assert!(
        first.contains(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 131072 -exist\n"
        ),
        "the enlarged set is declared with its size: {first}"
    );

    // Say KUBE-CLUSTER-IP is known at the default size: 70,000 service ports outgrow it, and the
    // next update swaps it in whole instead of adding entries one by one.
    host.maxelems
        .as_mut()
        .unwrap()
        .insert("KUBE-CLUSTER-IP".to_owned(), DEFAULT_MAXELEM);
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.update(|tx| {
        for o in crate::ipvs::fixtures::synthetic_cluster(70_000, 0) {
            tx.apply(o);
        }
    });
    let big = build(&w.snapshot(), &config, &node());
    let n = calls.lock().unwrap().len();
    host.after_sync_at(t0 + FILTER_MIN_GAP, &big, &config, &node())
        .unwrap();
    let later: Vec<Call> = calls.lock().unwrap()[n..].to_vec();
    assert_eq!(later[0].0, "ipset");
    assert_eq!(later[0].1, ["restore"], "no second listing: {later:?}");
    let script = later[0].2.as_deref().unwrap();
    assert!(
        script.contains(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             create KUBE-SVCNET-TMP hash:ip,port family inet hashsize 1024 maxelem 131072\n"
        ),
        "whole swap into a larger set"
    );
    assert!(script.contains("\nswap KUBE-SVCNET-TMP KUBE-CLUSTER-IP\n"));
    assert_eq!(host.maxelems.as_ref().unwrap()["KUBE-CLUSTER-IP"], 131072);
}

/// `iptables-save` output of a node where the jumps are in place (as after a first run).
fn saved_with_jumps() -> String {
    let mut text = String::from("# Generated by iptables-save v1.8.9\n");
    for table in ["nat", "filter"] {
        let _ = writeln!(text, "*{table}\n:INPUT ACCEPT [0:0]");
        for (t, chain, rule) in JUMPS.iter().rev() {
            if *t == table {
                let _ = writeln!(text, "-A {chain} {rule}");
            }
        }
        text.push_str("COMMIT\n");
    }
    text
}

#[test]
fn saved_rules_are_matched_by_table_chain_and_whole_rule() {
    let saved = saved_with_jumps();
    for (table, chain, rule) in JUMPS {
        assert!(saved_has_rule(&saved, table, chain, rule), "{chain} {rule}");
    }
    let (_, chain, rule) = JUMPS[0]; // a nat rule
    assert!(
        !saved_has_rule(&saved, "filter", chain, rule),
        "other table"
    );
    assert!(
        !saved_has_rule(&saved, "nat", "POSTROUTING", rule),
        "other chain"
    );
    assert!(
        !saved_has_rule(&saved, "nat", chain, "-j KUBE-SERVICES"),
        "part of a rule"
    );
    assert!(!saved_has_rule("", "nat", chain, rule));
}

/// A restart finds the jumps in the save and runs no `-C`/`-I` for them.
#[test]
fn jumps_found_in_the_save_are_not_checked_again() {
    let saved = saved_with_jumps();
    let (mut host, calls) =
        scripted_host(move |line| line.ends_with("-save").then(|| saved.clone()));
    host.after_sync_at(Instant::now(), &desired(), &ProxyConfig::default(), &node())
        .unwrap();
    let ran = programs(&calls);
    assert!(
        !ran.iter().any(|c| c.contains(" -C ") || c.contains(" -I ")),
        "{ran:#?}"
    );
}

/// After an incremental sync of the state the host saw step by step, the sets follow the sync's
/// delta (only the changed virtual servers' entries are looked at), with the lines a rebuild and
/// diff would send; deferred deltas add up; a state built anew is rebuilt and diffed.
#[test]
fn incremental_syncs_update_the_sets_from_the_delta() {
    use crate::ipvs::desired::Delta;
    use crate::ipvs::extras::HostExtras;
    let config = ProxyConfig::default();
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let mut web = service(
        "default",
        "web",
        "10.96.0.20",
        &[("http", Protocol::Tcp, 80, 8080)],
    );
    web.service_type = ServiceType::NodePort;
    web.ports[0].node_port = Some(30080);
    w.apply(ClusterObject::from(web));
    let eps = |ips: &[&str]| {
        ClusterObject::from(slice(
            "default",
            "web-1",
            "web",
            &[("http", Protocol::Tcp, 8080)],
            ips.iter()
                .map(|ip| endpoint(ip, true, Some("node-a")))
                .collect(),
        ))
    };
    w.apply(eps(&["10.244.1.10"]));
    let mut d = build(&w.snapshot(), &config, &node());
    let (mut host, calls) = scripted_host(|_| None);
    let everything = Delta {
        full: true,
        ..Delta::default()
    };
    host.observe_update(&d, &everything);
    let t0 = Instant::now();
    host.after_sync_at(t0, &d, &config, &node()).unwrap();
    assert_eq!(host.rebuilds, 1);
    let sets = |d: &DesiredState| {
        let extras = HostExtras::of_view(d.view());
        ipsets_with(d, Family::V4, &extras, &node().local_addresses)
    };
    let last_ipset_script = |calls: &Arc<Mutex<Vec<Call>>>| {
        let calls = calls.lock().unwrap();
        let c = calls.iter().rev().find(|c| c.0 == "ipset").unwrap();
        c.2.clone().unwrap()
    };

    // One endpoint more: one hairpin entry, from the delta.
    let before = sets(&d);
    w.apply(eps(&["10.244.1.10", "10.244.1.11"]));
    let delta = d.update(&w.snapshot(), &config, &node());
    assert!(!delta.full);
    host.observe_update(&d, &delta);
    host.after_sync_at(t0 + FILTER_MIN_GAP, &d, &config, &node())
        .unwrap();
    assert_eq!(host.rebuilds, 1, "no rebuild for an incremental sync");
    let script = last_ipset_script(&calls);
    assert_eq!(script, ipset_diff(&before, &sets(&d)).unwrap());
    assert_eq!(
        script,
        "add KUBE-LOOP-BACK 10.244.1.11,tcp:8080,10.244.1.11 -exist\n"
    );

    // Two syncs inside the rate limit: the second applies both deltas.
    let before = sets(&d);
    w.apply(eps(&["10.244.1.11"]));
    let delta = d.update(&w.snapshot(), &config, &node());
    host.observe_update(&d, &delta);
    host.after_sync_at(
        t0 + FILTER_MIN_GAP + Duration::from_millis(1),
        &d,
        &config,
        &node(),
    )
    .unwrap();
    assert!(host.has_pending(), "rate-limited");
    w.apply(ClusterObject::from(service(
        "default",
        "api",
        "10.96.0.30",
        &[("https", Protocol::Tcp, 443, 8443)],
    )));
    let delta = d.update(&w.snapshot(), &config, &node());
    host.observe_update(&d, &delta);
    host.after_sync_at(t0 + FILTER_MIN_GAP * 2, &d, &config, &node())
        .unwrap();
    assert_eq!(host.rebuilds, 1);
    let script = last_ipset_script(&calls);
    assert_eq!(script, ipset_diff(&before, &sets(&d)).unwrap());
    assert!(
        script.contains("del KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10 -exist\n")
            && script.contains("add KUBE-CLUSTER-IP 10.96.0.30,tcp:443 -exist\n")
            && script.contains("add KUBE-IPVS-IPS 10.96.0.30 -exist\n"),
        "{script}"
    );

    // A state built anew (periodic resync): rebuilt and diffed, nothing to send.
    let n = calls.lock().unwrap().len();
    d = build(&w.snapshot(), &config, &node());
    host.observe_update(&d, &everything);
    host.after_sync_at(t0 + FILTER_MIN_GAP * 3, &d, &config, &node())
        .unwrap();
    assert_eq!(host.rebuilds, 2);
    assert!(
        calls.lock().unwrap()[n..].iter().all(|c| c.0 != "ipset"),
        "an unchanged rebuild sends no ipset restore"
    );
}
