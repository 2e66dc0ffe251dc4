use super::*;
use std::net::SocketAddr;

/// A host in memory: the link, addresses elsewhere, and an iptables-save text per command
/// that restores append to (enough to check what was installed and removed).
#[derive(Default)]
struct FakeLink {
    exists: bool,
    bound: Vec<IpAddr>,
    elsewhere: Vec<(u32, IpAddr)>,
    no_dummy: bool,
    fail_bind: bool,
}

impl LinkOps for FakeLink {
    fn link_exists(&mut self) -> Result<bool, BackendError> {
        Ok(self.exists)
    }
    fn create_link(&mut self) -> Result<(), BackendError> {
        if self.no_dummy {
            return Err(BackendError::Kernel {
                what: "creating dummy link nodelocaldns".into(),
                errno: 95,
            });
        }
        self.exists = true;
        Ok(())
    }
    fn delete_link(&mut self) -> Result<(), BackendError> {
        self.exists = false;
        self.bound.clear();
        Ok(())
    }
    fn addresses_elsewhere(&mut self) -> Result<Vec<(u32, IpAddr)>, BackendError> {
        Ok(self.elsewhere.clone())
    }
    fn bind(&mut self, addrs: &[IpAddr]) -> Result<(), BackendError> {
        if self.fail_bind {
            return Err(BackendError::Kernel {
                what: "NEWADDR".into(),
                errno: 1,
            });
        }
        assert!(self.exists, "bind before the link exists");
        self.bound.extend_from_slice(addrs);
        Ok(())
    }
}

/// iptables in memory: the rules per table as `iptables-save` prints them, changed by the
/// restore scripts this module writes (`:CHAIN` empties, `-A`, `-I`, `-D`, `-X`).
struct FakeIptables {
    /// table → (chains, rules).
    tables: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Commands that fail (program name).
    failing: Vec<String>,
    /// Every command run.
    log: Vec<String>,
}

impl FakeIptables {
    fn new() -> Self {
        let mut tables = std::collections::BTreeMap::new();
        for (t, chains) in [
            ("raw", vec!["PREROUTING", "OUTPUT"]),
            ("filter", vec!["INPUT", "FORWARD", "OUTPUT"]),
        ] {
            tables.insert(
                t.to_string(),
                (
                    chains.into_iter().map(String::from).collect(),
                    vec!["-A INPUT -i lo -j ACCEPT".to_string()]
                        .into_iter()
                        .filter(|_| t == "filter")
                        .collect(),
                ),
            );
        }
        Self {
            tables,
            failing: Vec::new(),
            log: Vec::new(),
        }
    }

    fn save(&self) -> String {
        let mut out = String::new();
        for (t, (chains, rules)) in &self.tables {
            out.push_str(&format!("*{t}\n"));
            for c in chains {
                out.push_str(&format!(":{c} ACCEPT [0:0]\n"));
            }
            for r in rules {
                out.push_str(r);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    fn restore(&mut self, script: &str) -> Result<(), String> {
        let mut next = self.tables.clone();
        let mut table = String::new();
        for line in script.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
                continue;
            }
            let (chains, rules) = next.get_mut(&table).ok_or("no table")?;
            let chain_of = |r: &str| r.split_whitespace().nth(1).unwrap_or("").to_string();
            if let Some(c) = line.strip_prefix(':') {
                let c = c.split_whitespace().next().unwrap_or("").to_string();
                rules.retain(|r| chain_of(r) != c || !r.starts_with("-A "));
                if !chains.contains(&c) {
                    chains.push(c);
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                if !chains.contains(&chain_of(line)) {
                    return Err(format!("no chain in {line}"));
                }
                rules.push(format!("-A {rest}"));
            } else if let Some(rest) = line.strip_prefix("-I ") {
                let mut w = rest.split_whitespace();
                let chain = w.next().unwrap_or("");
                let _pos = w.next();
                let spec: Vec<&str> = w.collect();
                let pos = rules
                    .iter()
                    .position(|r| chain_of(r) == chain)
                    .unwrap_or(rules.len());
                rules.insert(pos, format!("-A {chain} {}", spec.join(" ")));
            } else if let Some(rest) = line.strip_prefix("-D ") {
                let want = format!("-A {rest}");
                let i = rules
                    .iter()
                    .position(|r| *r == want)
                    .ok_or(format!("no rule {want}"))?;
                rules.remove(i);
            } else if let Some(c) = line.strip_prefix("-X ") {
                if rules.iter().any(|r| r.ends_with(&format!("-j {c}"))) {
                    return Err(format!("chain {c} still referenced"));
                }
                chains.retain(|x| x != c);
            } else if line == "COMMIT" {
                continue;
            } else {
                return Err(format!("unknown line {line}"));
            }
        }
        self.tables = next;
        Ok(())
    }

    fn rules_mentioning(&self, needle: &str) -> usize {
        self.save().lines().filter(|l| l.contains(needle)).count()
    }
}

impl CommandRunner for FakeIptables {
    fn run(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, BackendError> {
        self.log.push(format!("{program} {}", args.join(" ")));
        let fail = |reason: &str| BackendError::Command {
            command: program.to_string(),
            reason: reason.to_string(),
        };
        if self.failing.iter().any(|f| f == program) {
            return Err(fail("No such file or directory (os error 2)"));
        }
        match program {
            "iptables-legacy-save" | "ip6tables-legacy-save" => Ok(self.save()),
            "iptables-nft-save" => Err(fail("not here")),
            "iptables-legacy-restore" | "ip6tables-legacy-restore" => {
                self.restore(stdin.unwrap_or("")).map_err(|e| fail(&e))?;
                Ok(String::new())
            }
            "iptables-nft-restore" => Err(fail("no nf_tables")),
            _ => Err(fail("unknown")),
        }
    }
}

fn options() -> NodeLocalOptions {
    NodeLocalOptions::default()
}

#[test]
fn rules_are_node_cache_s_notrack_and_accept_rules_for_udp_and_tcp() {
    let rules = chain_rules(&[DEFAULT_ADDRESS]);
    let text: Vec<String> = rules.iter().map(|(t, l)| format!("{t} {l}")).collect();
    for want in [
        "raw -A SVCNET-NODELOCAL-PRE -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK",
        "raw -A SVCNET-NODELOCAL-PRE -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j NOTRACK",
        "raw -A SVCNET-NODELOCAL-OUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -j NOTRACK",
        "raw -A SVCNET-NODELOCAL-OUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j NOTRACK",
        "filter -A SVCNET-NODELOCAL-IN -d 169.254.20.10/32 -p udp -m udp --dport 53 -j ACCEPT",
        "filter -A SVCNET-NODELOCAL-OUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j ACCEPT",
    ] {
        assert!(text.iter().any(|l| l == want), "{want} missing: {text:#?}");
    }
    // 5 rules per protocol per address, as node-cache (without its health-port rules).
    assert_eq!(rules.len(), 10);
    let v6 = chain_rules(&["fd00::53".parse().unwrap()]);
    assert!(v6[0].1.contains("-d fd00::53/128"), "{v6:?}");
}

#[test]
fn setup_script_declares_fills_and_jumps_once() {
    let script = setup_script(&[DEFAULT_ADDRESS], "");
    assert!(script.starts_with("*raw\n:SVCNET-NODELOCAL-PRE - [0:0]\n"));
    assert_eq!(script.matches("COMMIT").count(), 2);
    assert!(script.contains("-I PREROUTING 1 -j SVCNET-NODELOCAL-PRE\n"));
    assert!(script.contains("-I INPUT 1 -j SVCNET-NODELOCAL-IN\n"));
    // Jumps already there (a restart after a crash) are not added twice.
    let saved = "*raw\n:PREROUTING ACCEPT [0:0]\n:SVCNET-NODELOCAL-PRE - [0:0]\n\
                 -A PREROUTING -j SVCNET-NODELOCAL-PRE\nCOMMIT\n";
    let again = setup_script(&[DEFAULT_ADDRESS], saved);
    assert!(!again.contains("-I PREROUTING"), "{again}");
    assert!(
        again.contains("-I OUTPUT 1 -j SVCNET-NODELOCAL-OUT"),
        "{again}"
    );
}

#[test]
fn teardown_script_removes_every_jump_copy_and_the_chains() {
    assert_eq!(
        teardown_script("*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
        None
    );
    let saved = "*raw\n:PREROUTING ACCEPT [0:0]\n:SVCNET-NODELOCAL-PRE - [0:0]\n\
                 -A PREROUTING -j SVCNET-NODELOCAL-PRE\n-A PREROUTING -j SVCNET-NODELOCAL-PRE\n\
                 -A SVCNET-NODELOCAL-PRE -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK\n\
                 COMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
    let script = teardown_script(saved).expect("something to remove");
    assert_eq!(
        script,
        "*raw\n:SVCNET-NODELOCAL-PRE - [0:0]\n-D PREROUTING -j SVCNET-NODELOCAL-PRE\n\
         -D PREROUTING -j SVCNET-NODELOCAL-PRE\n-X SVCNET-NODELOCAL-PRE\nCOMMIT\n"
    );
}

#[test]
fn setup_then_teardown_leaves_the_host_as_it_was() {
    let mut link = FakeLink::default();
    let mut ipt = FakeIptables::new();
    let before = ipt.save();
    let n = NodeLocal::setup(&options(), &mut link, &mut ipt).unwrap();
    assert!(link.exists && link.bound == vec![DEFAULT_ADDRESS]);
    assert_eq!(ipt.rules_mentioning("-j NOTRACK"), 6);
    assert_eq!(ipt.rules_mentioning("-j ACCEPT"), 4 + 1);
    assert_eq!(
        ipt.rules_mentioning("-A PREROUTING -j SVCNET-NODELOCAL-PRE"),
        1
    );
    // Setting up again (a restart after a crash) changes nothing.
    let sorted = |s: String| {
        let mut l: Vec<String> = s.lines().map(String::from).collect();
        l.sort();
        l
    };
    let after_first = sorted(ipt.save());
    let n2 = NodeLocal::setup(&options(), &mut link, &mut ipt).unwrap();
    assert_eq!(sorted(ipt.save()), after_first);
    drop(n2);
    let errors = n.teardown(&mut link, &mut ipt);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ipt.save(), before);
    assert!(!link.exists);
}

#[test]
fn an_address_in_use_elsewhere_is_an_error_before_anything_changes() {
    let mut link = FakeLink {
        elsewhere: vec![(3, DEFAULT_ADDRESS)],
        ..Default::default()
    };
    let mut ipt = FakeIptables::new();
    let e = NodeLocal::setup(&options(), &mut link, &mut ipt)
        .err()
        .expect("in use");
    assert!(
        matches!(e, NodeLocalError::AddressInUse { index: 3, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("169.254.20.10 is already bound"),
        "{e}"
    );
    assert!(!link.exists && ipt.log.is_empty());
}

#[test]
fn no_dummy_module_is_named() {
    let mut link = FakeLink {
        no_dummy: true,
        ..Default::default()
    };
    let e = NodeLocal::setup(&options(), &mut link, &mut FakeIptables::new())
        .err()
        .expect("no dummy");
    assert!(e.to_string().contains("module `dummy` missing"), "{e}");
}

#[test]
fn missing_iptables_undoes_the_link_and_names_the_command() {
    let mut link = FakeLink::default();
    let mut ipt = FakeIptables::new();
    ipt.failing = vec![
        "iptables-legacy-save".into(),
        "iptables-legacy-restore".into(),
    ];
    let e = NodeLocal::setup(&options(), &mut link, &mut ipt)
        .err()
        .expect("iptables missing");
    assert!(
        e.to_string().contains("iptables-legacy-save") && e.to_string().contains("No such file"),
        "{e}"
    );
    assert!(!link.exists, "the link created is removed again");
}

#[test]
fn a_failing_restore_of_the_second_family_removes_the_first_family_s_rules() {
    let mut link = FakeLink::default();
    let mut ipt = FakeIptables::new();
    ipt.failing = vec!["ip6tables-legacy-restore".into()];
    let before = ipt.save();
    let opts = NodeLocalOptions {
        addresses: vec![DEFAULT_ADDRESS, "fd00::a9fe:140a".parse().unwrap()],
        ..options()
    };
    let e = NodeLocal::setup(&opts, &mut link, &mut ipt)
        .err()
        .expect("v6 fails");
    assert!(e.to_string().contains("ip6tables-legacy-restore"), "{e}");
    // The fake shares one table set for both families: the v4 rules are gone again.
    assert_eq!(ipt.save(), before);
    assert!(!link.exists);
}

#[test]
fn a_bind_failure_keeps_a_link_that_existed_before() {
    let mut link = FakeLink {
        exists: true,
        fail_bind: true,
        ..Default::default()
    };
    let mut ipt = FakeIptables::new();
    assert!(NodeLocal::setup(&options(), &mut link, &mut ipt).is_err());
    assert!(link.exists, "not ours to delete");
    assert!(ipt.log.is_empty(), "no rules touched: {:?}", ipt.log);
}

#[test]
fn unusable_addresses_are_refused() {
    for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1"] {
        let opts = NodeLocalOptions {
            addresses: vec![bad.parse().unwrap()],
            ..options()
        };
        let e = NodeLocal::setup(&opts, &mut FakeLink::default(), &mut FakeIptables::new())
            .err()
            .expect("refused");
        assert!(matches!(e, NodeLocalError::BadAddress(_)), "{bad}: {e}");
    }
}

#[test]
fn extra_listeners_skip_addresses_already_covered() {
    let a = DEFAULT_ADDRESS;
    let l = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(extra_listen_addrs(&[l("0.0.0.0:53")], &[a]).is_empty());
    assert!(extra_listen_addrs(&[l("169.254.20.10:53")], &[a]).is_empty());
    assert_eq!(
        extra_listen_addrs(&[l("127.0.0.1:5353")], &[a]),
        vec![l("169.254.20.10:53")]
    );
    assert_eq!(
        extra_listen_addrs(&[l("0.0.0.0:5353")], &[a]),
        vec![l("169.254.20.10:53")]
    );
    let v6: IpAddr = "fd00::53".parse().unwrap();
    assert_eq!(
        extra_listen_addrs(&[l("0.0.0.0:53")], &[a, v6]),
        vec![l("[fd00::53]:53")]
    );
}
