//! Loading whole Corefiles: CoreDNS's examples, defaults, errors with positions.

use std::time::Duration;

use super::*;

const KUBEADM: &str = r#".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"#;

fn files() -> MemoryFiles {
    let mut f = MemoryFiles::new();
    f.insert(
        "/etc/resolv.conf",
        "# generated\nsearch example.internal\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n",
    );
    f
}

fn load_text(text: &str, opts: &LoadOptions) -> Result<Corefile, CorefileError> {
    let env = |k: &str| (k == "UPSTREAM").then(|| "127.0.0.1:5353".to_string());
    load_from("Corefile", text, &files(), &env, opts)
}

fn load(text: &str) -> Result<Corefile, CorefileError> {
    load_text(text, &LoadOptions::default())
}

fn err_at(text: &str) -> (CorefileError, u32, u32) {
    let e = load(text).unwrap_err();
    let at = e.position().cloned().expect("a position");
    (e, at.line, at.column)
}

#[test]
fn kubeadm_default_loads_with_coredns_defaults() {
    let cf = load(KUBEADM).unwrap();
    assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    assert_eq!(cf.servers.len(), 1);
    let s = &cf.servers[0];
    assert_eq!(s.keys.len(), 1);
    assert_eq!((s.keys[0].zone.as_str(), s.keys[0].port), (".", 53));
    assert_eq!(s.listen_addrs(), vec!["0.0.0.0:53".parse().unwrap()]);
    let p = &s.plugins;
    assert!(p.errors.is_some());
    assert_eq!(p.health.as_ref().unwrap().lameduck, Duration::from_secs(5));
    assert_eq!(
        p.health.as_ref().unwrap().addr,
        "0.0.0.0:8080".parse().unwrap()
    );
    assert_eq!(
        p.ready.as_ref().unwrap().addr,
        "0.0.0.0:8181".parse().unwrap()
    );
    assert_eq!(
        p.prometheus.as_ref().unwrap().addr,
        "0.0.0.0:9153".parse().unwrap()
    );
    let k = p.kubernetes.as_ref().unwrap();
    assert_eq!(
        k.zones,
        vec!["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
    );
    assert_eq!(k.pods, PodsMode::Insecure);
    assert_eq!(k.ttl, 30);
    let ft = k.fallthrough.as_ref().unwrap();
    assert_eq!(ft.zones, vec!["in-addr.arpa.", "ip6.arpa."]);
    assert!(ft.applies("4.3.2.1.in-addr.arpa."));
    assert!(!ft.applies("x.cluster.local."));
    let f = p.forward.as_ref().unwrap();
    assert_eq!(f.from, ".");
    assert_eq!(
        f.to,
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(f.max_concurrent, 1000);
    assert_eq!(f.max_fails, 2);
    assert_eq!(f.health_check, Duration::from_millis(500));
    assert_eq!(f.expire, Duration::from_secs(10));
    assert_eq!(f.policy, Policy::Random);
    let c = p.cache.as_ref().unwrap();
    assert_eq!(c.zones, vec!["."]);
    assert_eq!(c.success.capacity, 9984);
    assert_eq!(c.success.max_ttl, Duration::from_secs(30));
    assert_eq!(c.denial.max_ttl, Duration::from_secs(30));
    assert_eq!(c.denial.min_ttl, Duration::from_secs(5));
    assert!(p.loop_detect && p.loadbalance);
    assert_eq!(p.reload, Some(ReloadConfig::default()));
    assert_eq!(p.reload.unwrap().interval, Duration::from_secs(30));
    assert_eq!(cf.files, vec![PathBuf::from("Corefile")]);
}

#[test]
fn kubeadm_default_in_one_line_form_is_the_same() {
    let one_line = ".:53 {\n errors\n health { lameduck 5s }\n ready\n kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa; ttl 30 }\n prometheus :9153\n forward . /etc/resolv.conf { max_concurrent 1000 }\n cache 30\n loop\n reload\n loadbalance\n}\n";
    let a = load(KUBEADM).unwrap();
    let b = load(one_line).unwrap();
    assert_eq!(a.servers[0].plugins, b.servers[0].plugins);
}

#[test]
fn forward_with_except_and_a_second_block() {
    let cf = load(
        ".:53 {\n  forward . 223.6.6.6 114.114.114.114 { max_concurrent 1000; except magedu.com. }\n  cache 30\n}\nmagedu.com {\n  forward . 10.20.111.1\n}\n",
    )
    .unwrap();
    assert_eq!(cf.servers.len(), 2);
    let f = cf.servers[0].plugins.forward.as_ref().unwrap();
    assert_eq!(f.to.len(), 2);
    assert_eq!(f.except, vec!["magedu.com."]);
    assert_eq!(f.max_concurrent, 1000);
    let s2 = &cf.servers[1];
    assert_eq!(
        (s2.keys[0].zone.as_str(), s2.keys[0].port),
        ("magedu.com.", 53)
    );
    assert_eq!(
        s2.plugins.forward.as_ref().unwrap().to,
        vec!["10.20.111.1:53".parse().unwrap()]
    );
}

#[test]
fn keys_with_ports_transports_and_cidrs() {
    let cf = load("dns://.:1053 example.org:1054 10.0.0.0/24:1055 {\n  log\n}\n").unwrap();
    let keys: Vec<_> = cf.servers[0]
        .keys
        .iter()
        .map(|k| (k.zone.as_str(), k.port))
        .collect();
    assert_eq!(
        keys,
        vec![
            (".", 1053),
            ("example.org.", 1054),
            ("0.0.10.in-addr.arpa.", 1055)
        ]
    );
    let (e, line, col) = err_at("grpc://.:853 {\n}\n");
    assert!(e.to_string().contains("grpc:// is not supported"), "{e}");
    assert_eq!((line, col), (1, 1));
    // tls:// is served, but only with a certificate.
    let (e, line, col) = err_at("tls://.:853 {\n}\n");
    assert!(
        e.to_string()
            .contains("needs a `tls CERT KEY [CA]` directive"),
        "{e}"
    );
    assert_eq!((line, col), (1, 1));
    let (e, _, _) = err_at(".:http {\n}\n");
    assert!(e.to_string().contains("not a port"), "{e}");
    let (e, line, _) = err_at(".:53 {\n log\n}\n.:53 {\n errors\n}\n");
    assert!(e.to_string().contains("more than once"), "{e}");
    assert_eq!(line, 4);
}

/// Found by the `corefile` fuzz target: a server block whose only key is empty (`""`, or a
/// lone `,`) and that has no body panicked the parser; it is a syntax error at the key.
#[test]
fn empty_server_block_keys_are_errors_not_panics() {
    for (text, col) in [
        ("\u{b}\"\"#{", 2),
        ("\"\"", 1),
        (",", 1),
        (",\n", 1),
        ("\"\" {\n}\n", 1),
    ] {
        let (e, line, column) = err_at(text);
        assert!(
            e.to_string().contains("empty server block key"),
            "{text:?}: {e}"
        );
        assert_eq!((line, column), (1, col), "{text:?}");
    }
    // A comma between keys still joins them.
    let cf = load("a.org , b.org {\n  log\n}\n").unwrap();
    assert_eq!(cf.servers[0].keys.len(), 2);
}

#[test]
fn unknown_plugin_and_option_name_their_position() {
    let (e, line, col) = err_at(".:53 {\n  errors\n  whoami2\n}\n");
    assert!(matches!(e, CorefileError::UnknownPlugin { ref name, .. } if name == "whoami2"));
    assert_eq!((line, col), (3, 3));
    assert_eq!(e.to_string(), "Corefile:3:3: unknown plugin \"whoami2\"");

    let (e, line, col) = err_at(".:53 {\n  cache 30 {\n    succes 100\n  }\n}\n");
    assert_eq!(
        e.to_string(),
        "Corefile:3:5: plugin/cache: unknown option \"succes\""
    );
    assert_eq!((line, col), (3, 5));
}

#[test]
fn allow_unknown_downgrades_to_warnings() {
    let opts = LoadOptions {
        allow_unknown: true,
        ..LoadOptions::default()
    };
    let cf = load_text(
        ".:53 {\n  whoami2\n  cache 30 {\n    succes 100\n  }\n  forward . 127.0.0.1 { tls_servername x }\n  loadbalance weighted\n}\n",
        &opts,
    )
    .unwrap();
    let msgs: Vec<String> = cf.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert!(
        msgs[0].starts_with("Corefile:2:3: unknown plugin \"whoami2\""),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("Corefile:4:5: plugin/cache: unknown option \"succes\""),
        "{msgs:?}"
    );
    assert!(
        msgs[2].starts_with("Corefile:6:3: plugin/forward: tls options have no effect"),
        "{msgs:?}"
    );
    assert!(
        msgs[3]
            .starts_with("Corefile:7:15: plugin/loadbalance: policy \"weighted\" is not supported"),
        "{msgs:?}"
    );
    assert_eq!(
        cf.servers[0].plugins.forward.as_ref().unwrap().to,
        vec!["127.0.0.1:53".parse().unwrap()]
    );
}

#[test]
fn tls_upstreams_default_to_port_853_and_bad_ones_name_the_token() {
    let cf = load(".:53 {\n  forward . tls://1.1.1.1 tls://[2606:4700::1111]:8853 9.9.9.9\n}\n")
        .unwrap();
    let f = cf.servers[0].plugins.forward.as_ref().unwrap();
    assert_eq!(
        f.to,
        vec![
            "1.1.1.1:853".parse().unwrap(),
            "[2606:4700::1111]:8853".parse().unwrap(),
            "9.9.9.9:53".parse().unwrap()
        ]
    );
    assert_eq!(f.to_tls, vec![true, true, false]);
    let (e, line, col) = err_at(".:53 {\n  forward . tls://dns.google\n}\n");
    assert_eq!((line, col), (2, 13));
    assert!(e.to_string().contains("not tls://IP"), "{e}");
}

#[test]
fn bad_values_name_the_token() {
    let cases = [
        (
            ".:53 {\n kubernetes cluster.local {\n  ttl 3601\n }\n}\n",
            3,
            7,
            "out of range",
        ),
        (
            ".:53 {\n kubernetes cluster.local {\n  pods maybe\n }\n}\n",
            3,
            8,
            "pods must be",
        ),
        (
            ".:53 {\n forward . 127.0.0.1 {\n  policy fastest\n }\n}\n",
            3,
            10,
            "unknown policy",
        ),
        (
            ".:53 {\n forward . example.org\n}\n",
            2,
            12,
            "not an IP address",
        ),
        (
            ".:53 {\n forward .\n}\n",
            2,
            10,
            "needs at least 2 arguments",
        ),
        (
            ".:53 {\n forward . /nonexistent/resolv.conf\n}\n",
            2,
            12,
            "cannot read upstreams",
        ),
        (
            ".:53 {\n health {\n  lameduck 5\n }\n}\n",
            3,
            12,
            "not a duration",
        ),
        (".:53 {\n reload 1s\n}\n", 2, 9, "at least 2s"),
        (
            ".:53 {\n cache 30 {\n  success 100 10 20\n }\n}\n",
            3,
            18,
            "minimum TTL",
        ),
        (".:53 {\n loop foo\n}\n", 2, 7, "at most 0 arguments"),
        (".:53 {\n cache\n cache\n}\n", 3, 2, "only be used once"),
        (".:53 {\n prometheus 9153\n}\n", 2, 13, "not an address"),
        (
            ".:53 {\n hosts {\n  10.0.0.x foo\n }\n}\n",
            3,
            3,
            "unknown option",
        ),
    ];
    for (text, line, col, msg) in cases {
        let (e, l, c) = err_at(text);
        assert!(e.to_string().contains(msg), "{text:?}: {e}");
        assert_eq!((l, c), (line, col), "{text:?}: {e}");
    }
}

#[test]
fn forward_options() {
    let cf = load(
        ".:53 {\n forward example.org 127.0.0.1:5300 dns://[::1]:5301 {\n  except a.example.org b.example.org\n  force_tcp\n  policy sequential\n  max_fails 5\n  health_check 1s no_rec domain probe.example.\n  expire 30s\n  read_timeout 500ms\n  next NXDOMAIN SERVFAIL\n  failover REFUSED\n  failfast_all_unhealthy_upstreams\n }\n}\n",
    )
    .unwrap();
    let f = cf.servers[0].plugins.forward.clone().unwrap();
    assert_eq!(f.from, "example.org.");
    assert_eq!(
        f.to,
        vec![
            "127.0.0.1:5300".parse().unwrap(),
            "[::1]:5301".parse().unwrap()
        ]
    );
    assert_eq!(f.except, vec!["a.example.org.", "b.example.org."]);
    assert!(f.force_tcp && !f.prefer_udp && f.failfast_all_unhealthy_upstreams);
    assert_eq!(f.policy, Policy::Sequential);
    assert_eq!(f.max_fails, 5);
    assert_eq!(f.health_check, Duration::from_secs(1));
    assert!(f.health_check_no_rec);
    assert_eq!(f.health_check_domain, "probe.example.");
    assert_eq!(f.expire, Duration::from_secs(30));
    assert_eq!(f.read_timeout, Duration::from_millis(500));
    assert_eq!(f.next, vec![3, 2]);
    assert_eq!(f.failover, vec![5]);
    let (e, _, _) = err_at(".:53 {\n forward . 127.0.0.1 {\n  force_tcp\n  prefer_udp\n }\n}\n");
    assert!(e.to_string().contains("mutually exclusive"));
}

#[test]
fn forward_anti_spoofing_options() {
    let f = |text: &str| {
        load(text).unwrap().servers[0]
            .plugins
            .forward
            .clone()
            .unwrap()
    };
    let d = f(".:53 {\n forward . 10.0.0.1\n}\n");
    assert_eq!(d.source_port, SourcePortMode::Auto);
    assert!(!d.case_randomization);
    let o = f(".:53 {\n forward . 10.0.0.1 {\n  source_port pooled\n  case_randomization\n }\n}\n");
    assert_eq!(o.source_port, SourcePortMode::Pooled);
    assert!(o.case_randomization);
    let r = f(".:53 {\n forward . 127.0.0.1 {\n  source_port random\n }\n}\n");
    assert_eq!(r.source_port, SourcePortMode::Random);
    let (e, line, _) = err_at(".:53 {\n forward . 10.0.0.1 {\n  source_port fixed\n }\n}\n");
    assert!(e.to_string().contains("random or pooled"), "{e}");
    assert_eq!(line, 3);
    let (e, _, _) = err_at(".:53 {\n forward . 10.0.0.1 {\n  case_randomization yes\n }\n}\n");
    assert!(e.to_string().contains("case_randomization"), "{e}");
}

#[test]
fn cache_options() {
    let cf = load(
        ".:53 {\n cache 300 example.org {\n  success 5000 600 10\n  denial 2000\n  prefetch 10 2m 20%\n  serve_stale 30m verify\n  servfail 0\n  disable denial sub.example.org\n  keepttl\n }\n}\n",
    )
    .unwrap();
    let c = cf.servers[0].plugins.cache.clone().unwrap();
    assert_eq!(c.zones, vec!["example.org."]);
    assert_eq!(
        c.success,
        CacheTier {
            capacity: 5000,
            max_ttl: Duration::from_secs(600),
            min_ttl: Duration::from_secs(10)
        }
    );
    assert_eq!(
        c.denial,
        CacheTier {
            capacity: 2000,
            max_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(5)
        }
    );
    assert_eq!(
        c.prefetch,
        Some(Prefetch {
            amount: 10,
            window: Duration::from_secs(120),
            percentage: 20
        })
    );
    assert_eq!(
        c.serve_stale,
        Some(ServeStale {
            duration: Duration::from_secs(1800),
            verify: true
        })
    );
    assert_eq!(c.servfail_ttl, Duration::ZERO);
    assert_eq!(c.disable_denial, vec!["sub.example.org."]);
    assert!(c.keepttl);
    // Defaults without arguments; a small TTL lowers the minimum too.
    let cf = load(".:53 {\n cache\n}\n").unwrap();
    let c = cf.servers[0].plugins.cache.clone().unwrap();
    assert_eq!(c.success.max_ttl, Duration::from_secs(3600));
    assert_eq!(c.denial.max_ttl, Duration::from_secs(1800));
    let cf = load(".:53 {\n cache 2\n}\n").unwrap();
    assert_eq!(
        cf.servers[0]
            .plugins
            .cache
            .as_ref()
            .unwrap()
            .success
            .min_ttl,
        Duration::from_secs(2)
    );
}

#[test]
fn hosts_inline_and_options() {
    let cf = load(
        "example.org {\n hosts /etc/hosts.extra example.org {\n  10.0.0.1 a.example.org A2.example.org\n  fd00::1 a.example.org\n  ttl 60\n  no_reverse\n  reload 0\n  fallthrough\n }\n}\n",
    )
    .unwrap();
    let h = cf.servers[0].plugins.hosts.clone().unwrap();
    assert_eq!(h.file, PathBuf::from("/etc/hosts.extra"));
    assert_eq!(h.zones, vec!["example.org."]);
    assert_eq!(h.inline.len(), 2);
    assert_eq!(h.inline[0].names, vec!["a.example.org.", "a2.example.org."]);
    assert_eq!(h.inline[1].ip, "fd00::1".parse::<IpAddr>().unwrap());
    assert_eq!(h.ttl, 60);
    assert!(h.no_reverse);
    assert_eq!(h.reload, Duration::ZERO);
    assert_eq!(h.fallthrough, Some(Fallthrough::default()));
    let cf = load(".:53 {\n hosts\n}\n").unwrap();
    let h = cf.servers[0].plugins.hosts.clone().unwrap();
    assert_eq!(
        (h.file.to_str().unwrap(), h.ttl, h.reload),
        ("/etc/hosts", 3600, Duration::from_secs(5))
    );
}

#[test]
fn kubernetes_options_and_ignored_ones() {
    let cf = load(
        "cluster.local:1053 {\n kubernetes {\n  endpoint_pod_names\n  noendpoints\n  ignore empty_service\n  namespaces default demo\n  kubeconfig /root/.kube/config ctx\n  endpoint https://10.0.0.1:6443\n  fallthrough\n }\n}\n",
    )
    .unwrap();
    let k = cf.servers[0].plugins.kubernetes.clone().unwrap();
    assert_eq!(k.zones, vec!["cluster.local."]);
    assert_eq!(k.ttl, 5);
    assert_eq!(k.pods, PodsMode::Disabled);
    assert!(k.endpoint_pod_names && k.noendpoints && k.ignore_empty_service);
    assert_eq!(k.namespaces, vec!["default", "demo"]);
    assert_eq!(
        k.kubeconfig,
        Some((PathBuf::from("/root/.kube/config"), Some("ctx".to_string())))
    );
    assert_eq!(k.endpoint, vec!["https://10.0.0.1:6443"]);
    assert_eq!(cf.warnings.len(), 2);
    assert!(
        cf.warnings[0]
            .to_string()
            .starts_with("Corefile:7:3: plugin/kubernetes: kubeconfig is ignored")
    );
    let (e, line, _) = err_at(".:53 {\n kubernetes {\n  namespace_labels env=prod\n }\n}\n");
    assert!(e.to_string().contains("not supported"), "{e}");
    assert_eq!(line, 3);
}

#[test]
fn kubernetes_labels_joins_its_arguments_as_coredns_does() {
    let cf = load(
        ".:53 {\n kubernetes cluster.local {\n  labels environment in (staging, qa),application=nginx\n }\n}\n",
    )
    .unwrap();
    let k = cf.servers[0].plugins.kubernetes.clone().unwrap();
    assert_eq!(
        k.labels.as_ref().map(|l| l.to_string()).as_deref(),
        Some("environment in (qa,staging),application=nginx")
    );
    assert_eq!(
        crate::dns::plugins::build::zone_options(&k).labels,
        k.labels
    );
    for bad in [
        "labels app in ()",
        "labels app > 3",
        "labels -bad=1",
        "labels",
    ] {
        let (e, line, _) = err_at(&format!(".:53 {{\n kubernetes {{\n  {bad}\n }}\n}}\n"));
        assert_eq!(line, 3, "{bad}: {e}");
        assert!(e.to_string().contains("plugin/kubernetes"), "{bad}: {e}");
    }
}

#[test]
fn observability_plugins() {
    let cf = load(
        ".:1053 {\n health 127.0.0.1:18080\n ready localhost:18181\n prometheus 127.0.0.1:19153\n log example.org \"{name} {rcode}\" {\n  class denial error\n }\n errors {\n  consolidate 5m \".* timeout$\"\n }\n debug\n bind 127.0.0.1 ::1\n}\n",
    )
    .unwrap();
    let p = &cf.servers[0].plugins;
    assert_eq!(
        p.health.as_ref().unwrap().addr,
        "127.0.0.1:18080".parse().unwrap()
    );
    assert_eq!(p.health.as_ref().unwrap().lameduck, Duration::ZERO);
    assert_eq!(
        p.ready.as_ref().unwrap().addr,
        "127.0.0.1:18181".parse().unwrap()
    );
    assert_eq!(
        p.prometheus.as_ref().unwrap().addr,
        "127.0.0.1:19153".parse().unwrap()
    );
    let log = p.log.as_ref().unwrap();
    assert_eq!(log.names, vec!["example.org."]);
    assert_eq!(log.format, "{name} {rcode}");
    assert_eq!(
        log.classes,
        LogClasses {
            success: false,
            denial: true,
            error: true
        }
    );
    assert_eq!(p.noops, vec!["debug"]);
    assert_eq!(
        cf.servers[0].listen_addrs(),
        vec![
            "127.0.0.1:1053".parse().unwrap(),
            "[::1]:1053".parse().unwrap()
        ]
    );
    // debug is noted (consolidate is supported).
    assert_eq!(cf.warnings.len(), 1, "{:?}", cf.warnings);
    let errors = p.errors.as_ref().unwrap();
    assert_eq!(errors.consolidate.len(), 1);
    assert_eq!(errors.consolidate[0].period, Duration::from_secs(300));
    assert_eq!(errors.consolidate[0].pattern.as_str(), ".* timeout$");
    assert_eq!(errors.consolidate[0].level, ConsolidateLevel::Error);
    // Defaults.
    let cf = load(".:53 {\n log\n prometheus\n}\n").unwrap();
    let p = &cf.servers[0].plugins;
    assert_eq!(
        p.log.as_ref().unwrap().format,
        directives::observe::COMMON_LOG_FORMAT
    );
    assert_eq!(
        p.prometheus.as_ref().unwrap().addr,
        "127.0.0.1:9153".parse().unwrap()
    );
}

#[test]
fn environment_snippets_and_imports() {
    let mut f = files();
    f.insert("/etc/coredns/custom/a.override", "log\n").insert(
        "/etc/coredns/custom/b.server",
        "b.example:1053 {\n  forward . 127.0.0.2\n}\n",
    );
    let text = "(common) {\n  errors\n  cache {$CACHE_TTL}30\n}\n.:1053 {\n  import common\n  forward . {$UPSTREAM} {env.UPSTREAM}\n  import custom/*.override\n}\nimport custom/*.server\n";
    let env = |k: &str| (k == "UPSTREAM").then(|| "127.0.0.1:5353".to_string());
    let cf = load_from(
        "/etc/coredns/Corefile",
        text,
        &f,
        &env,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(cf.servers.len(), 2);
    let p = &cf.servers[0].plugins;
    assert!(p.errors.is_some() && p.log.is_some());
    assert_eq!(
        p.cache.as_ref().unwrap().success.max_ttl,
        Duration::from_secs(30)
    );
    assert_eq!(
        p.forward.as_ref().unwrap().to,
        vec!["127.0.0.1:5353".parse().unwrap(); 2]
    );
    assert_eq!(cf.servers[1].keys[0].zone, "b.example.");
    assert_eq!(cf.files.len(), 3);
    // An error inside an imported file names that file.
    f.insert("/etc/coredns/custom/a.override", "\n  bogus\n");
    let e = load_from(
        "/etc/coredns/Corefile",
        text,
        &f,
        &env,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/coredns/custom/a.override:2:3: unknown plugin \"bogus\""
    );
}

#[test]
fn empty_file_is_an_error() {
    let e = load("# nothing\n").unwrap_err();
    assert!(e.to_string().contains("no server blocks"));
}

#[test]
fn rrl_limits_large_answers_with_defaults_and_options() {
    use crate::dns::rrl::LargeAnswerLimit;
    let cf = load(".:53 {\n  rrl\n}\n").unwrap();
    assert_eq!(cf.servers[0].plugins.rrl, Some(LargeAnswerLimit::new(100)));
    let cf = load(
        ".:53 {\n  rrl {\n    large-responses-per-second 20\n    ipv4-prefix-length 32\n    ipv6-prefix-length 64\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(
        cf.servers[0].plugins.rrl,
        Some(LargeAnswerLimit {
            per_second: 20,
            ipv4_prefix_length: 32,
            ipv6_prefix_length: 64
        })
    );
    assert_eq!(
        load(".:53 {\n  rrl 5\n}\n").unwrap().servers[0]
            .plugins
            .rrl
            .map(|l| l.per_second),
        Some(5)
    );
    for (text, needle) in [
        (".:53 {\n  rrl 0\n}\n", "out of range"),
        (
            ".:53 {\n  rrl 5 {\n    large-responses-per-second 6\n  }\n}\n",
            "twice",
        ),
        (
            ".:53 {\n  rrl {\n    ipv4-prefix-length 33\n  }\n}\n",
            "out of range",
        ),
        (
            ".:53 {\n  rrl {\n    responses-per-second 10\n  }\n}\n",
            "responses-per-second",
        ),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
        assert!(err.contains("Corefile:"), "names the place: {err}");
    }
}

#[test]
fn autopath_and_k8s_external_parse_with_coredns_defaults() {
    let cf = load(
        ".:53 {\n autopath @kubernetes\n k8s_external example.org 10.0.0.0/24 {\n  apex ns\n  ttl 30\n  headless\n }\n kubernetes cluster.local {\n  pods verified\n }\n}\n",
    )
    .unwrap();
    assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    let p = &cf.servers[0].plugins;
    let a = p.autopath.as_ref().unwrap();
    assert_eq!(a.zones, vec!["."]);
    // The host search domains come from /etc/resolv.conf (the test's in-memory one).
    assert_eq!(
        a.source,
        SearchSource::Kubernetes {
            host_search: vec!["example.internal.".into()]
        }
    );
    let e = p.k8s_external.as_ref().unwrap();
    assert_eq!(e.zones, vec!["example.org.", "0.0.10.in-addr.arpa."]);
    assert_eq!((e.apex.as_str(), e.ttl, e.headless), ("ns", 30, true));
    let cf = load(".:53 {\n k8s_external\n kubernetes\n}\n").unwrap();
    let e = cf.servers[0].plugins.k8s_external.clone().unwrap();
    assert_eq!(
        (e.zones, e.apex.as_str(), e.ttl, e.headless),
        (vec![".".to_string()], "dns", 5, false)
    );

    // A resolv.conf file gives one search path for every client.
    let mut f = files();
    f.insert(
        "/etc/my-resolv.conf",
        "domain ignored.example\nsearch A.example b.example.\n",
    );
    let cf = load_from(
        "Corefile",
        "example:53 {\n autopath example /etc/my-resolv.conf\n}\n",
        &f,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    let a = cf.servers[0].plugins.autopath.clone().unwrap();
    assert_eq!(a.zones, vec!["example."]);
    assert_eq!(
        a.source,
        SearchSource::Fixed(vec!["a.example.".into(), "b.example.".into()])
    );

    // Without pods verified, autopath @kubernetes does nothing: a warning.
    let cf = load(".:53 {\n autopath @kubernetes\n kubernetes\n}\n").unwrap();
    assert_eq!(cf.warnings.len(), 1);
    assert!(
        cf.warnings[0]
            .to_string()
            .starts_with("Corefile:2:2: plugin/autopath"),
        "{}",
        cf.warnings[0]
    );
}

#[test]
fn node_local_autopath_marks_only_autopath_blocks() {
    let opts = LoadOptions {
        autopath_node: Some("node-a".into()),
        ..LoadOptions::default()
    };
    let cf = load_text(
        ".:53 {\n autopath @kubernetes\n kubernetes\n}\nexample.org:53 {\n kubernetes example.org\n}\n",
        &opts,
    )
    .unwrap();
    // It has an effect now: no warning.
    assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    let k = |i: usize| cf.servers[i].plugins.kubernetes.clone().unwrap();
    assert_eq!(k(0).autopath_node.as_deref(), Some("node-a"));
    assert_eq!(k(0).pods, PodsMode::Disabled);
    assert_eq!(k(1).autopath_node, None);
    let kinds = crate::dns::plugins::serve::needed_kinds(&cf);
    assert!(kinds.contains(&crate::model::Kind::Pod));
    assert!(crate::dns::plugins::serve::needs_node_pods_only(&cf));
    // `pods verified` keeps its cluster-wide watch.
    let cf = load_text(
        ".:53 {\n autopath @kubernetes\n kubernetes {\n  pods verified\n }\n}\n",
        &opts,
    )
    .unwrap();
    assert!(!crate::dns::plugins::serve::needs_node_pods_only(&cf));
    // Without the node: no Pods.
    let cf = load(".:53 {\n autopath @kubernetes\n kubernetes\n}\n").unwrap();
    assert!(!crate::dns::plugins::serve::needed_kinds(&cf).contains(&crate::model::Kind::Pod));
}

#[test]
fn autopath_and_k8s_external_errors_name_their_position() {
    for (text, line, needle) in [
        (
            ".:53 {\n k8s_external example.org\n}\n",
            2,
            "needs the kubernetes plugin",
        ),
        (
            ".:53 {\n autopath @kubernetes\n}\n",
            2,
            "needs the kubernetes plugin",
        ),
        (
            ".:53 {\n kubernetes\n autopath @etcd\n}\n",
            3,
            "only @kubernetes",
        ),
        (
            ".:53 {\n kubernetes\n autopath\n}\n",
            3,
            "needs at least 1 argument",
        ),
        (
            ".:53 {\n kubernetes\n autopath /nonexistent/resolv.conf\n}\n",
            3,
            "failed to read",
        ),
        (
            ".:53 {\n kubernetes\n k8s_external {\n  ttl 4000\n }\n}\n",
            4,
            "out of range",
        ),
        (
            ".:53 {\n kubernetes\n k8s_external {\n  apex a..b\n }\n}\n",
            4,
            "not a domain name label",
        ),
        (
            ".:53 {\n kubernetes\n k8s_external {\n  fallthrough\n }\n}\n",
            4,
            "fallthrough",
        ),
        (
            ".:53 {\n kubernetes\n k8s_external {\n  headless yes\n }\n}\n",
            4,
            "headless",
        ),
    ] {
        let (e, l, _) = err_at(text);
        assert_eq!(l, line, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn bind_interfaces_except_and_repeated_binds() {
    // CoreDNS's bind README: interface names, `except`, several `bind` directives consolidated.
    use std::net::IpAddr;
    let mut f = files();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    f.insert_interface("lo", &[ip("127.0.0.1"), ip("::1")]);
    f.insert_interface(
        "nodelocaldns",
        &[ip("169.254.20.10"), ip("10.96.0.10"), ip("fe80::1")],
    );
    f.insert_interface("down0", &[]);
    let env = |_: &str| None;
    let load = |text: &str| load_from("Corefile", text, &f, &env, &LoadOptions::default());
    let binds = |text: &str| load(text).unwrap().servers[0].plugins.bind.clone();

    assert_eq!(
        binds(".:53 {\n bind lo\n}\n"),
        vec![ip("127.0.0.1"), ip("::1")]
    );
    assert_eq!(
        binds(".:53 {\n bind lo {\n  except 127.0.0.1\n }\n}\n"),
        vec![ip("::1")]
    );
    assert_eq!(
        binds(".:53 {\n bind 127.0.0.1\n bind ::1\n}\n"),
        binds(".:53 {\n bind 127.0.0.1 ::1\n}\n")
    );
    // The IPv6 link-local address needs a scope: left out.
    assert_eq!(
        binds(".:53 {\n bind nodelocaldns 127.0.0.1 {\n  except 10.96.0.10\n }\n}\n"),
        vec![ip("169.254.20.10"), ip("127.0.0.1")]
    );
    // Errors name the token: an unknown interface, nothing left, an empty except, an unknown
    // option; `except` applies to its own directive only.
    let err = |text: &str| {
        let e = load(text).unwrap_err();
        let at = e.position().cloned().expect("a position");
        (e.to_string(), at.line, at.column)
    };
    let (e, l, c) = err(".:53 {\n bind eth9\n}\n");
    assert!(e.contains("\"eth9\" is neither an IP address nor"), "{e}");
    assert_eq!((l, c), (2, 7));
    let (e, l, _) = err(".:53 {\n bind lo {\n  except lo\n }\n}\n");
    assert!(e.contains("no address left"), "{e}");
    assert_eq!(l, 2);
    let (e, l, _) = err(".:53 {\n bind lo {\n  except\n }\n}\n");
    assert!(e.contains("except needs at least one"), "{e}");
    assert_eq!(l, 3);
    let (e, l, _) = err(".:53 {\n bind lo {\n  only 127.0.0.1\n }\n}\n");
    assert!(e.contains("unknown option \"only\""), "{e}");
    assert_eq!(l, 3);
    let (e, l, _) = err(".:53 {\n bind lo\n bind 127.0.0.1 {\n  except 127.0.0.1\n }\n}\n");
    assert!(e.contains("no address left"), "{e}");
    assert_eq!(l, 3);
    // An interface without addresses is a warning, not an error, when others remain.
    let cf = load(".:53 {\n bind down0 127.0.0.1\n}\n").unwrap();
    assert!(
        cf.warnings
            .iter()
            .any(|w| w.message.contains("\"down0\" has no usable address")),
        "{:?}",
        cf.warnings
    );
    assert_eq!(cf.servers[0].plugins.bind, vec![ip("127.0.0.1")]);
}

#[test]
fn errors_consolidate_options_and_errors() {
    let cf = load(".:53 {\n errors {\n  consolidate 5m \".* i/o timeout$\" warning\n  consolidate 30s \"^Failed to .+\"\n }\n}\n").unwrap();
    let c = &cf.servers[0].plugins.errors.as_ref().unwrap().consolidate;
    assert_eq!(
        c.iter()
            .map(|r| (r.period.as_secs(), r.pattern.as_str(), r.level))
            .collect::<Vec<_>>(),
        vec![
            (300, ".* i/o timeout$", ConsolidateLevel::Warning),
            (30, "^Failed to .+", ConsolidateLevel::Error)
        ]
    );
    assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    for (text, line, col, what) in [
        (
            ".:53 {\n errors {\n  consolidate 5m \"(unclosed\"\n }\n}\n",
            3,
            18,
            "bad regular expression",
        ),
        (
            ".:53 {\n errors {\n  consolidate 5m x loud\n }\n}\n",
            3,
            20,
            "unknown level \"loud\"",
        ),
        (
            ".:53 {\n errors {\n  consolidate 0s x\n }\n}\n",
            3,
            15,
            "must be positive",
        ),
        (
            ".:53 {\n errors {\n  consolidate 5m\n }\n}\n",
            3,
            15,
            "consolidate needs at least 2 arguments",
        ),
    ] {
        let (e, l, c) = err_at(text);
        assert!(e.to_string().contains(what), "{e}");
        assert_eq!((l, c), (line, col), "{e}");
    }
}
