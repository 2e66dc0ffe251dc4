//! svcnet's netlink IPVS backend and reconciler against a real kernel (user-mode-linux guest): create, update in
//! place, dump and delete virtual and real servers; batched programming at scale with per-operation errors; and
//! adopting existing rules on restart without flushing. Every state is compared with what `ipvsadm -Ln` shows.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use svcnet_core::ipvs::backend::{AddressBackend, IpvsBackend, IpvsOp};
use svcnet_core::ipvs::memory::MemoryAddresses;
use svcnet_core::ipvs::netlink::{NetlinkAddresses, NetlinkIpvs};
use svcnet_core::ipvs::reconcile::Reconciler;
use svcnet_core::ipvs::table::{
    DestId, DestParams, FLAG_PERSISTENT, Scheduler, ServiceId, ServiceParams,
};
use svcnet_core::ipvs::{NodeInfo, ProxyConfig, build, render};
use svcnet_core::model::Protocol;
use svcnet_core::source::manifests::parse_manifest;
use svcnet_core::{Kind, new_cache};
use svcnet_tests::vm::cluster::ServiceSpec;
use svcnet_tests::vm::guest::{self, run};
use svcnet_tests::vm::{self, Check, Vm};

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

fn params(scheduler: Scheduler) -> ServiceParams {
    ServiceParams {
        scheduler,
        flags: 0,
        timeout: 0,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The kernel table as svcnet renders its dump must be what `ipvsadm -Ln` prints (same lines; ipvsadm lists in
/// the kernel's hash order, so both are compared sorted).
fn assert_render_matches_ipvsadm(backend: &mut NetlinkIpvs) -> anyhow::Result<()> {
    let ours = render::dump(&backend.dump()?, false);
    let theirs = guest::ipvsadm_list()?;
    let normalise = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        lines.sort();
        lines
    };
    ensure!(
        normalise(&ours) == normalise(&theirs),
        "svcnet's rendering of the kernel dump differs from ipvsadm -Ln\n--- svcnet\n{ours}--- ipvsadm\n{theirs}"
    );
    Ok(())
}

/// Create, dump, update in place, delete — virtual servers (TCP/UDP/IPv6, persistence) and real servers.
fn services_and_destinations() -> anyhow::Result<()> {
    let mut nl = NetlinkIpvs::open().context("opening the IPVS netlink family")?;
    let api = ServiceId::new(Protocol::Tcp, ip("10.96.0.1"), 443);
    let dns = ServiceId::new(Protocol::Udp, ip("10.96.0.10"), 53);
    let v6 = ServiceId::new(Protocol::Tcp, ip("fd00:10:96::a"), 80);
    let sticky = ServiceParams {
        scheduler: Scheduler::Wrr,
        flags: FLAG_PERSISTENT,
        timeout: 10800,
    };
    nl.add_service(api, params(Scheduler::Rr))?;
    nl.add_service(dns, sticky)?;
    nl.add_service(v6, params(Scheduler::Sh))?;
    nl.add_dest(
        api,
        DestId::new(ip("192.168.1.10"), 6443),
        DestParams::masq(1),
    )?;
    nl.add_dest(dns, DestId::new(ip("10.244.0.5"), 53), DestParams::masq(1))?;
    nl.add_dest(dns, DestId::new(ip("10.244.0.6"), 53), DestParams::masq(2))?;
    nl.add_dest(
        v6,
        DestId::new(ip("fd00:10:244::5"), 8080),
        DestParams::masq(1),
    )?;

    ensure!(
        guest::ipvsadm_table()?
            == [
                "TCP 10.96.0.1:443 rr",
                "TCP 10.96.0.1:443 rr -> 192.168.1.10:6443 Masq 1",
                "TCP [fd00:10:96::a]:80 sh",
                "TCP [fd00:10:96::a]:80 sh -> [fd00:10:244::5]:8080 Masq 1",
                "UDP 10.96.0.10:53 wrr persistent 10800",
                "UDP 10.96.0.10:53 wrr persistent 10800 -> 10.244.0.5:53 Masq 1",
                "UDP 10.96.0.10:53 wrr persistent 10800 -> 10.244.0.6:53 Masq 2",
            ],
        "after creation: {}",
        guest::ipvsadm_list()?
    );
    let dump = nl.dump()?;
    ensure!(dump.len() == 3, "dump has {} services", dump.len());
    let (dns_entry, dns_dests) = dump
        .iter()
        .find(|(s, _)| s.id == dns)
        .context("UDP service missing from the dump")?;
    ensure!(
        dns_entry.params.matches(&sticky),
        "dumped params {:?}",
        dns_entry.params
    );
    ensure!(dns_dests.len() == 2, "dumped dests {dns_dests:?}");
    ensure!(nl.list_services()?.len() == 3, "list_services");
    ensure!(
        nl.list_dests(&v6)?.len() == 1,
        "list_dests of the IPv6 service"
    );
    assert_render_matches_ipvsadm(&mut nl)?;

    // Scheduler change in place: the real servers stay (a delete + add would drop them).
    nl.update_service(api, params(Scheduler::Wrr))?;
    nl.update_dest(dns, DestId::new(ip("10.244.0.5"), 53), DestParams::masq(0))?;
    ensure!(
        guest::ipvsadm_table()?
            == [
                "TCP 10.96.0.1:443 wrr",
                "TCP 10.96.0.1:443 wrr -> 192.168.1.10:6443 Masq 1",
                "TCP [fd00:10:96::a]:80 sh",
                "TCP [fd00:10:96::a]:80 sh -> [fd00:10:244::5]:8080 Masq 1",
                "UDP 10.96.0.10:53 wrr persistent 10800",
                "UDP 10.96.0.10:53 wrr persistent 10800 -> 10.244.0.5:53 Masq 0",
                "UDP 10.96.0.10:53 wrr persistent 10800 -> 10.244.0.6:53 Masq 2",
            ],
        "after updates: {}",
        guest::ipvsadm_list()?
    );

    // Errors carry the kernel's errno.
    let dup = nl.add_service(api, params(Scheduler::Rr)).unwrap_err();
    ensure!(dup.errno() == Some(EEXIST), "duplicate add: {dup}");
    let missing = nl
        .delete_dest(api, DestId::new(ip("10.9.9.9"), 1))
        .unwrap_err();
    ensure!(
        matches!(missing.errno(), Some(ENOENT) | Some(ESRCH)),
        "deleting a missing real server: {missing}"
    );

    nl.delete_dest(dns, DestId::new(ip("10.244.0.5"), 53))?;
    nl.delete_service(v6)?;
    ensure!(
        guest::ipvsadm_table()?
            == [
                "TCP 10.96.0.1:443 wrr",
                "TCP 10.96.0.1:443 wrr -> 192.168.1.10:6443 Masq 1",
                "UDP 10.96.0.10:53 wrr persistent 10800",
                "UDP 10.96.0.10:53 wrr persistent 10800 -> 10.244.0.6:53 Masq 2",
            ],
        "after deletions: {}",
        guest::ipvsadm_list()?
    );
    nl.delete_service(api)?;
    nl.delete_service(dns)?;
    ensure!(
        guest::ipvsadm_table()?.is_empty(),
        "table not empty at the end"
    );
    Ok(())
}

/// 1,000 virtual servers × 5 real servers in one `apply`: few round trips, everything visible to ipvsadm, and a
/// bad operation in the middle of a batch is reported by index without stopping the others.
fn batched_programming() -> anyhow::Result<()> {
    let mut nl = NetlinkIpvs::open()?;
    let mut ops = Vec::new();
    for i in 0..1000u32 {
        let svc = ServiceId::new(
            Protocol::Tcp,
            IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + i)),
            80,
        );
        ops.push(IpvsOp::AddService(svc, params(Scheduler::Rr)));
        for d in 0..5u32 {
            let dest = DestId::new(IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * 5 + d)), 8080);
            ops.push(IpvsOp::AddDest(svc, dest, DestParams::masq(1)));
        }
    }
    let total = ops.len();
    // A duplicate in the middle of the batch.
    let dup_at = 3001;
    ops.insert(dup_at, ops[0]);
    let before = nl.socket_stats();
    let report = nl.apply(&ops)?;
    let after = nl.socket_stats();
    ensure!(
        report.failures.len() == 1 && report.failures[0].0 == dup_at,
        "expected exactly the duplicate at {dup_at} to fail: {:?}",
        report.failures
    );
    ensure!(
        report.failures[0].1.errno() == Some(EEXIST),
        "duplicate: {}",
        report.failures[0].1
    );
    ensure!(
        report.round_trips <= ops.len().div_ceil(50),
        "{} operations took {} round trips",
        ops.len(),
        report.round_trips
    );
    println!(
        "  {} operations: {} round trips, {} sends, {} receives",
        ops.len(),
        report.round_trips,
        after.sends - before.sends,
        after.recvs - before.recvs
    );
    let listed = guest::ipvsadm_table()?;
    ensure!(
        listed.len() == total,
        "ipvsadm shows {} lines, expected {total}",
        listed.len()
    );
    let dump = nl.dump()?;
    ensure!(
        dump.len() == 1000 && dump.iter().all(|(_, d)| d.len() == 5),
        "dump: {} services",
        dump.len()
    );
    assert_render_matches_ipvsadm(&mut nl)?;
    run("ipvsadm", &["-C"])?;
    Ok(())
}

/// A desired state from generated manifests (what the proxy computes from its cache).
fn desired_from(specs: &[ServiceSpec]) -> anyhow::Result<svcnet_core::ipvs::DesiredState> {
    let (mut writer, _reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    for spec in specs {
        for object in parse_manifest(Path::new(&spec.file_name()), &spec.to_yaml())? {
            writer.apply(object);
        }
    }
    let node = NodeInfo {
        node_name: Some("node-a".into()),
        local_addresses: vec![ip("192.168.1.10")],
    };
    Ok(build(&writer.snapshot(), &ProxyConfig::default(), &node))
}

/// Rules already in the kernel (from an earlier run, or made by hand) are adopted: an unchanged virtual server
/// and its real servers are not touched, a changed one is fixed in place, and only stale entries go; a second
/// reconciler starting on the programmed kernel (a restart) changes nothing at all.
fn reconciler_adopts_existing_rules() -> anyhow::Result<()> {
    let ep = |last: u8| Ipv4Addr::new(10, 244, 1, last);
    let specs = [
        ServiceSpec::cluster_ip("web", Ipv4Addr::new(10, 96, 10, 10), &[ep(10), ep(11)]),
        ServiceSpec::cluster_ip("api", Ipv4Addr::new(10, 96, 10, 11), &[ep(20)]),
        ServiceSpec::cluster_ip("db", Ipv4Addr::new(10, 96, 10, 12), &[ep(30), ep(31)]),
    ];
    // What an earlier run left: web exactly right; api with the wrong scheduler and a stale real server; db
    // missing one real server; and a service that no longer exists.
    run(
        "sh",
        &[
            "-ec",
            "ipvsadm -A -t 10.96.10.10:80 -s rr
             ipvsadm -a -t 10.96.10.10:80 -r 10.244.1.10:8080 -m -w 1
             ipvsadm -a -t 10.96.10.10:80 -r 10.244.1.11:8080 -m -w 1
             ipvsadm -A -t 10.96.10.11:80 -s lc
             ipvsadm -a -t 10.96.10.11:80 -r 10.244.1.20:8080 -m -w 1
             ipvsadm -a -t 10.96.10.11:80 -r 10.244.1.99:8080 -m -w 1
             ipvsadm -A -t 10.96.10.12:80 -s rr
             ipvsadm -a -t 10.96.10.12:80 -r 10.244.1.30:8080 -m -w 1
             ipvsadm -A -t 10.96.99.99:80 -s rr",
        ],
    )?;
    let desired = desired_from(&specs)?;
    let config = ProxyConfig::default();
    let addresses = MemoryAddresses::new(vec![ip("192.168.1.10")]);
    let mut first = Reconciler::new(Box::new(NetlinkIpvs::open()?), Box::new(addresses.clone()));
    let report = first.full_sync(&desired, &config)?;
    println!("  first sync on existing rules: {report:?}");
    ensure!(report.failures == 0, "failures: {report:?}");
    ensure!(
        report.services_added == 0 && report.services_updated == 1 && report.services_deleted == 1,
        "services: expected 0 added, 1 updated (api scheduler), 1 deleted (stale): {report:?}"
    );
    // db gains 10.244.1.31; api's stale real server is drained (weight 0) rather than deleted, as TCP.
    ensure!(
        report.dests_added == 1 && report.dests_deleted + report.dests_updated == 1,
        "real servers: {report:?}"
    );
    let table = guest::ipvsadm_table()?;
    let has = |line: &str| table.iter().any(|l| l == line);
    ensure!(
        has("TCP 10.96.10.11:80 rr")
            && has("TCP 10.96.10.12:80 rr -> 10.244.1.31:8080 Masq 1")
            && !table.iter().any(|l| l.starts_with("TCP 10.96.99.99:80")),
        "after the first sync: {table:#?}"
    );
    ensure!(
        !table.iter().any(|l| l.ends_with("10.244.1.99:8080 Masq 1")),
        "stale real server still has weight: {table:#?}"
    );

    // Restart: a fresh reconciler on the programmed kernel has nothing to do.
    let mut second = Reconciler::new(Box::new(NetlinkIpvs::open()?), Box::new(addresses.clone()));
    let report = second.full_sync(&desired, &config)?;
    println!("  sync after restart: {report:?}");
    ensure!(
        report.operations() <= usize::from(first.draining_count() > 0),
        "a restart on an up-to-date kernel changed things: {report:?}"
    );
    // The desired state, rendered, is what the kernel shows (apart from a draining real server).
    let want = render::desired(&desired);
    let mut have = render::dump(&NetlinkIpvs::open()?.dump()?, false);
    have = have
        .lines()
        .filter(|l| !l.contains("10.244.1.99:8080"))
        .map(|l| format!("{l}\n"))
        .collect();
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
        v.sort();
        v
    };
    ensure!(
        sorted(&want) == sorted(&have),
        "desired vs kernel\n--- desired\n{want}--- kernel\n{have}"
    );
    run("ipvsadm", &["-C"])?;
    Ok(())
}

/// The rtnetlink address backend: creates `kube-ipvs0`, binds and unbinds /32 and /128 addresses, reads them back,
/// and reports the node's own addresses without the ones on `kube-ipvs0`.
fn address_backend() -> anyhow::Result<()> {
    guest::add_dummy_link("eth0", "192.168.1.10/24")?;
    let mut addrs = NetlinkAddresses::open()?;
    ensure!(addrs.bound()?.is_empty(), "bound() without the link");
    addrs.ensure_link()?;
    addrs.ensure_link()?; // idempotent
    let link = run("ip", &["-d", "link", "show", "kube-ipvs0"])?;
    ensure!(
        link.contains("dummy"),
        "kube-ipvs0 is not a dummy link: {link}"
    );
    let vips = [ip("10.96.0.1"), ip("10.96.0.10"), ip("fd00:10:96::a")];
    let failures = addrs.bind(&vips)?;
    ensure!(failures.is_empty(), "bind failures: {failures:?}");
    let shown = run("ip", &["-o", "addr", "show", "dev", "kube-ipvs0"])?;
    for want in ["10.96.0.1/32", "10.96.0.10/32", "fd00:10:96::a/128"] {
        ensure!(
            shown.contains(want),
            "{want} missing on kube-ipvs0: {shown}"
        );
    }
    ensure!(
        addrs.bound()? == vips.iter().copied().collect(),
        "bound() = {:?}",
        addrs.bound()?
    );
    let local = addrs.local_addresses()?;
    ensure!(
        local.contains(&ip("192.168.1.10")) && !vips.iter().any(|v| local.contains(v)),
        "local addresses {local:?}"
    );
    // A 10.96.0.1 on the node answers locally (the address is usable for IPVS's LOCAL_IN hook).
    let route = run("ip", &["route", "get", "10.96.0.1"])?;
    ensure!(
        route.starts_with("local 10.96.0.1"),
        "route to a bound address: {route}"
    );
    let failures = addrs.unbind(&vips[..2])?;
    ensure!(failures.is_empty(), "unbind failures: {failures:?}");
    ensure!(
        addrs.bound()? == [vips[2]].into_iter().collect(),
        "after unbind: {:?}",
        addrs.bound()?
    );
    run("ip", &["link", "del", "kube-ipvs0"])?;
    run("ip", &["link", "del", "eth0"])?;
    Ok(())
}

#[test]
fn ipvs_backend_kernel() {
    vm::run_suite(
        "ipvs_backend_kernel",
        Vm::new().timeout(Duration::from_secs(120)),
        &[
            Check::new("services_and_destinations", services_and_destinations),
            Check::new("batched_programming", batched_programming),
            Check::new(
                "reconciler_adopts_existing_rules",
                reconciler_adopts_existing_rules,
            ),
            Check::new("address_backend", address_backend),
        ],
    );
}
