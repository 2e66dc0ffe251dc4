//! The proxy's ipsets written over netlink on a real kernel (user-mode-linux guest), read back with the real
//! `ipset` tool: every set type and family the proxy uses gives the same `ipset save` as the `ipset restore` text
//! of the same operations; entries follow a change one by one; a set that outgrows its `maxelem` is swapped into a
//! bigger one; sets left by a previous (interrupted) run and kube-proxy-style sets made beforehand with the `ipset`
//! tool are adopted with their contents replaced; a set of the wrong type is a clear error naming it, with no
//! temporary set left behind; and `KernelHost` (the proxy's host setup) writes them this way by default.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use svcnet_core::ipvs::host::{
    HostExtras, IpSet, KernelHost, SourceRanges, diff_ops, render_text, restore_ops,
};
use svcnet_core::ipvs::netlink::ipset::{IpsetError, IpsetNetlink};
use svcnet_core::ipvs::run::HostSetup;
use svcnet_core::ipvs::{DesiredState, NodeInfo, ProxyConfig};
use svcnet_core::model::Protocol;
use svcnet_tests::vm::guest::{run, sh};
use svcnet_tests::vm::{self, Check, Vm};

fn set(name: &str, kind: &'static str, family: Option<&'static str>, entries: &[&str]) -> IpSet {
    IpSet {
        name: name.to_owned(),
        kind,
        family,
        entries: entries.iter().map(|e| (*e).to_owned()).collect(),
    }
}

/// One set of every type and family the proxy writes (names as the proxy's), with entries of each form.
fn all_kinds() -> Vec<IpSet> {
    let v4 = Some("inet");
    let v6 = Some("inet6");
    vec![
        set(
            "KUBE-CLUSTER-IP",
            "hash:ip,port",
            v4,
            &[
                "10.96.0.1,tcp:443",
                "10.96.0.10,udp:53",
                "10.96.0.11,sctp:9000",
            ],
        ),
        set(
            "KUBE-LOOP-BACK",
            "hash:ip,port,ip",
            v4,
            &[
                "10.244.1.10,tcp:8080,10.244.1.10",
                "10.244.1.11,udp:53,10.244.1.11",
            ],
        ),
        set(
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            "hash:ip,port,net",
            v4,
            &[
                "203.0.113.10,tcp:443,10.0.0.0/8",
                "203.0.113.10,tcp:443,192.168.1.0/24",
            ],
        ),
        set(
            "KUBE-NODE-PORT-TCP",
            "bitmap:port",
            None,
            &["30080", "31000", "32767"],
        ),
        set("KUBE-IPVS-IPS", "hash:ip", v4, &["10.96.0.1", "10.96.0.10"]),
        set(
            "KUBE-SVCNET-TEST-NET",
            "hash:net",
            v4,
            &["10.0.0.0/8", "172.16.0.0/12"],
        ),
        set(
            "KUBE-6-CLUSTER-IP",
            "hash:ip,port",
            v6,
            &["fd00::1,tcp:443", "fd00::a,udp:53"],
        ),
        set(
            "KUBE-6-LOOP-BACK",
            "hash:ip,port,ip",
            v6,
            &["fd00:10::5,tcp:8080,fd00:10::5"],
        ),
        set(
            "KUBE-6-LOAD-BALANCER-SOURCE-CID",
            "hash:ip,port,net",
            v6,
            &["2001:db8::10,tcp:443,2001:db8:1::/48"],
        ),
        set("KUBE-6-IPVS-IPS", "hash:ip", v6, &["fd00::1"]),
        set("KUBE-6-SVCNET-TEST-NET", "hash:net", v6, &["2001:db8::/32"]),
    ]
}

/// `ipset save` with what differs between two creations of the same set left out (the random `initval`, the
/// `bucketsize` the revision may add), sorted.
fn saved() -> anyhow::Result<Vec<String>> {
    let text = run("ipset", &["save"])?;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut out = Vec::new();
            let mut words = l.split_whitespace();
            while let Some(w) = words.next() {
                if w == "initval" || w == "bucketsize" {
                    words.next();
                    continue;
                }
                out.push(w);
            }
            out.join(" ")
        })
        .collect();
    lines.sort();
    Ok(lines)
}

/// The entries of `name` as `ipset list` prints them.
fn members(name: &str) -> anyhow::Result<BTreeSet<String>> {
    let text = run("ipset", &["list", name])?;
    let (_, after) = text
        .split_once("Members:\n")
        .with_context(|| format!("no members section in {text}"))?;
    Ok(after
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn header_value(name: &str, key: &str) -> anyhow::Result<String> {
    let text = run("ipset", &["list", "-t", name])?;
    let header = text
        .lines()
        .find_map(|l| l.strip_prefix("Header: "))
        .with_context(|| format!("no header in {text}"))?;
    let mut words = header.split_whitespace();
    words.find(|w| *w == key);
    Ok(words
        .next()
        .with_context(|| format!("no {key} in {header}"))?
        .to_owned())
}

fn destroy_all() -> anyhow::Result<()> {
    run("ipset", &["destroy"]).map(|_| ())
}

fn expect(sets: &[IpSet]) -> anyhow::Result<()> {
    for s in sets {
        let got = members(&s.name)?;
        ensure!(
            got == s.entries,
            "{}: ipset list has {got:?}, expected {:?}",
            s.name,
            s.entries
        );
    }
    Ok(())
}

fn setup() -> anyhow::Result<()> {
    // The kernel loads ip_set and the set types on demand; check that netlink works at all.
    IpsetNetlink::open().context("opening the ipset netlink socket")?;
    Ok(())
}

/// Netlink and `ipset restore` of the same operations leave the same sets (every type and family).
fn netlink_matches_the_text_path() -> anyhow::Result<()> {
    destroy_all()?;
    let sets = all_kinds();
    let ops = restore_ops(&sets, &BTreeMap::new())?;
    let mut nl = IpsetNetlink::open()?;
    let report = nl.execute(&ops)?;
    let over_netlink = saved()?;
    expect(&sets)?;
    destroy_all()?;
    let text = render_text(&ops);
    let out = std::process::Command::new("sh")
        .args(["-c", "ipset restore"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })?;
    ensure!(
        out.status.success(),
        "ipset restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let over_text = saved()?;
    ensure!(
        over_netlink == over_text,
        "netlink:\n{}\ntext:\n{}",
        over_netlink.join("\n"),
        over_text.join("\n")
    );
    println!(
        "  {} sets, {} requests in {} batches; ipset save identical ({} lines)",
        sets.len(),
        report.requests,
        report.batches,
        over_text.len()
    );
    Ok(())
}

/// After the whole swap, a change is applied entry by entry (`del`/`add`), and the sets list exactly the new
/// entries.
fn entries_follow_a_change() -> anyhow::Result<()> {
    destroy_all()?;
    let old = all_kinds();
    let mut nl = IpsetNetlink::open()?;
    nl.execute(&restore_ops(&old, &BTreeMap::new())?)?;
    let mut new = old.clone();
    new[0].entries.remove("10.96.0.10,udp:53");
    new[0].entries.insert("10.96.0.12,tcp:80".into());
    new[1]
        .entries
        .insert("10.244.1.12,tcp:8080,10.244.1.12".into());
    new[3].entries.remove("31000");
    new[6].entries.insert("fd00::b,tcp:80".into());
    new[8].entries.clear();
    let ops = diff_ops(&old, &new)?;
    ensure!(
        ops.len() == 6,
        "one operation per changed entry: {}",
        render_text(&ops)
    );
    let report = nl.execute(&ops)?;
    ensure!(report.batches == 1, "one batch: {report:?}");
    expect(&new)
}

/// A set with more entries than its `maxelem` is filled into a bigger temporary set and swapped in.
fn outgrown_set_is_swapped_into_a_bigger_one() -> anyhow::Result<()> {
    destroy_all()?;
    let mut nl = IpsetNetlink::open()?;
    let small = set(
        "KUBE-LOOP-BACK",
        "hash:ip,port,ip",
        Some("inet"),
        &["10.244.0.1,tcp:80,10.244.0.1"],
    );
    nl.execute(&restore_ops(
        std::slice::from_ref(&small),
        &BTreeMap::new(),
    )?)?;
    ensure!(header_value("KUBE-LOOP-BACK", "maxelem")? == "65536");
    let mut big = small.clone();
    for i in 0..70_000u32 {
        let ip = IpAddr::from([10, 200, (i >> 8) as u8, i as u8]);
        big.entries
            .insert(format!("{ip},tcp:{},{ip}", 1000 + i / 65536));
    }
    let existing: BTreeMap<String, usize> = nl
        .list_headers()?
        .into_iter()
        .filter_map(|(n, h)| Some((n, h.maxelem? as usize)))
        .collect();
    let started = Instant::now();
    let report = nl.execute(&restore_ops(std::slice::from_ref(&big), &existing)?)?;
    let took = started.elapsed();
    ensure!(header_value("KUBE-LOOP-BACK", "maxelem")? == "131072");
    let listed = run("ipset", &["list", "-t", "KUBE-LOOP-BACK"])?;
    ensure!(
        listed.contains(&format!("Number of entries: {}", big.entries.len())),
        "{listed}"
    );
    println!(
        "  {} entries swapped in over netlink in {:.0} ms ({} requests, {} batches)",
        big.entries.len(),
        took.as_secs_f64() * 1e3,
        report.requests,
        report.batches
    );
    Ok(())
}

/// Sets left by a previous run (with a temporary set an interrupted run left) and sets kube-proxy made with the
/// `ipset` tool (other hashsize, comments, stale entries) are adopted: contents replaced, nothing left over.
fn previous_and_kube_proxy_sets_are_adopted() -> anyhow::Result<()> {
    destroy_all()?;
    sh(
        "ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 4096 maxelem 65536 comment\n\
        ipset add KUBE-CLUSTER-IP 10.96.0.1,tcp:443 comment \"kube-proxy\"\n\
        ipset add KUBE-CLUSTER-IP 10.96.99.99,tcp:80 comment stale\n\
        ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n\
        ipset add KUBE-NODE-PORT-TCP 30999\n\
        ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536\n\
        ipset add KUBE-IPVS-IPS 10.96.99.99\n\
        ipset create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536\n\
        ipset add KUBE-6-CLUSTER-IP fd00::99,tcp:80\n\
        ipset create KUBE-SVCNET-TMP hash:ip family inet\n\
        ipset add KUBE-SVCNET-TMP 10.1.1.1",
    )?;
    let sets = all_kinds();
    let mut nl = IpsetNetlink::open()?;
    let report = nl.execute(&restore_ops(&sets, &BTreeMap::new())?)?;
    ensure!(
        report.adopted == 4,
        "four existing sets adopted: {report:?}"
    );
    expect(&sets)?;
    let names: BTreeSet<String> = run("ipset", &["list", "-n"])?
        .lines()
        .map(str::to_owned)
        .collect();
    let wanted: BTreeSet<String> = sets.iter().map(|s| s.name.clone()).collect();
    ensure!(names == wanted, "sets after adoption: {names:?}");
    // The text path cannot adopt the kube-proxy set (other parameters): `create -exist` is refused.
    sh(
        "ipset destroy KUBE-CLUSTER-IP && ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 4096 \
        maxelem 65536 comment",
    )?;
    let text = render_text(&restore_ops(&sets[..1], &BTreeMap::new())?);
    let refused = sh(&format!("ipset restore <<'EOF'\n{text}EOF"));
    println!(
        "  netlink adopted {} sets; ipset restore of the kube-proxy set: {}",
        report.adopted,
        match &refused {
            Ok(_) => "accepted".to_owned(),
            Err(e) => format!(
                "refused ({})",
                e.to_string().lines().last().unwrap_or("").trim()
            ),
        }
    );
    let report = nl.execute(&restore_ops(&sets[..1], &BTreeMap::new())?)?;
    ensure!(report.adopted == 1);
    expect(&sets[..1])
}

/// A set of the wrong type is an error naming it and both types; nothing is half done (no temporary set left, the
/// other sets untouched).
fn wrong_type_is_a_clear_error() -> anyhow::Result<()> {
    destroy_all()?;
    sh("ipset create KUBE-LOOP-BACK hash:ip family inet && ipset add KUBE-LOOP-BACK 10.9.9.9")?;
    let sets = all_kinds();
    let mut nl = IpsetNetlink::open()?;
    let err = match nl.execute(&restore_ops(&sets, &BTreeMap::new())?) {
        Ok(r) => bail!("a hash:ip KUBE-LOOP-BACK was accepted: {r:?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    ensure!(
        matches!(err, IpsetError::WrongType { .. })
            && text.contains("KUBE-LOOP-BACK")
            && text.contains("hash:ip,port,ip")
            && text.contains("hash:ip family inet"),
        "{text}"
    );
    let names = run("ipset", &["list", "-n"])?;
    ensure!(
        names.trim() == "KUBE-LOOP-BACK",
        "nothing written before the check: {names}"
    );
    ensure!(members("KUBE-LOOP-BACK")? == BTreeSet::from(["10.9.9.9".to_owned()]));
    // An entry the kernel refuses (a port outside a bitmap set's range): the error names the operation.
    destroy_all()?;
    sh("ipset create KUBE-NODE-PORT-TCP bitmap:port range 30000-30010")?;
    let np = set("KUBE-NODE-PORT-TCP", "bitmap:port", None, &["31000"]);
    let err = nl
        .execute(&diff_ops(
            &[set("KUBE-NODE-PORT-TCP", "bitmap:port", None, &[])],
            &[np],
        )?)
        .err()
        .context("a port outside the bitmap's range was accepted")?;
    let text = err.to_string();
    ensure!(text.contains("add KUBE-NODE-PORT-TCP 31000"), "{text}");
    println!("  {text}");
    Ok(())
}

/// `KernelHost`, the proxy's host setup, writes its sets over netlink: health-check ports and source ranges, then
/// a change of both entry by entry.
fn kernel_host_writes_over_netlink() -> anyhow::Result<()> {
    destroy_all()?;
    let node = NodeInfo {
        node_name: None,
        local_addresses: vec!["192.168.1.10".parse()?],
    };
    let extras = |ports: &[u16], allowed: &[&str]| -> anyhow::Result<HostExtras> {
        Ok(HostExtras {
            health_check_node_ports: ports.iter().copied().collect(),
            source_ranges: vec![SourceRanges {
                ip: "203.0.113.10".parse()?,
                protocol: Protocol::Tcp,
                port: 443,
                allowed: allowed
                    .iter()
                    .map(|a| a.parse().with_context(|| format!("CIDR {a}")))
                    .collect::<anyhow::Result<_>>()?,
            }],
            local_endpoints: None,
        })
    };
    let mut host = KernelHost::new();
    host.set_extras(extras(&[31000], &["10.0.0.0/8"])?);
    let desired = DesiredState::default();
    host.after_sync(&desired, &ProxyConfig::default(), &node)
        .map_err(|e| anyhow::anyhow!("host setup: {e}"))?;
    ensure!(members("KUBE-HEALTH-CHECK-NODE-PORT")? == BTreeSet::from(["31000".to_owned()]));
    ensure!(
        members("KUBE-LOAD-BALANCER-SOURCE-CIDR")?
            == BTreeSet::from(["203.0.113.10,tcp:443,10.0.0.0/8".to_owned()])
    );
    std::thread::sleep(Duration::from_millis(250));
    host.set_extras(extras(&[31001], &["192.168.0.0/16"])?);
    host.after_sync(&desired, &ProxyConfig::default(), &node)
        .map_err(|e| anyhow::anyhow!("host setup: {e}"))?;
    ensure!(members("KUBE-HEALTH-CHECK-NODE-PORT")? == BTreeSet::from(["31001".to_owned()]));
    ensure!(
        members("KUBE-LOAD-BALANCER-SOURCE-CIDR")?
            == BTreeSet::from(["203.0.113.10,tcp:443,192.168.0.0/16".to_owned()])
    );
    let names = run("ipset", &["list", "-n"])?;
    ensure!(!names.contains("KUBE-SVCNET-TMP"), "{names}");
    Ok(())
}

#[test]
fn ipset_netlink_kernel() {
    vm::run_suite(
        "ipset_netlink_kernel",
        Vm::new().timeout(Duration::from_secs(240)),
        &[
            Check::new("setup", setup),
            Check::new(
                "netlink_matches_the_text_path",
                netlink_matches_the_text_path,
            ),
            Check::new("entries_follow_a_change", entries_follow_a_change),
            Check::new(
                "outgrown_set_is_swapped_into_a_bigger_one",
                outgrown_set_is_swapped_into_a_bigger_one,
            ),
            Check::new(
                "previous_and_kube_proxy_sets_are_adopted",
                previous_and_kube_proxy_sets_are_adopted,
            ),
            Check::new("wrong_type_is_a_clear_error", wrong_type_is_a_clear_error),
            Check::new(
                "kernel_host_writes_over_netlink",
                kernel_host_writes_over_netlink,
            ),
        ],
    );
}
