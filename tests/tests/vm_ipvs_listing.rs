//! The kernel's text listing of the IPVS table (`/proc/net/ip_vs`, which svcnet's full sync reads real servers
//! from) must describe exactly what the netlink dumps do, on a real kernel (user-mode-linux guest): IPv4 and IPv6,
//! TCP/UDP/SCTP, persistence, weights including 0, every forwarding method ipvsadm can set, a fwmark service
//! (skipped by both), an empty virtual server, and a table changed between reads. The netlink dumps are read both
//! ways, batched through io_uring (the default) and one virtual server after the other, including virtual servers
//! whose real servers take two or many datagrams.

use std::net::IpAddr;

use anyhow::{Context, ensure};
use svcnet_core::ipvs::backend::{IpvsBackend, IpvsOp};
use svcnet_core::ipvs::netlink::NetlinkIpvs;
use svcnet_core::ipvs::table::{
    DestId, DestParams, FLAG_PERSISTENT, Forward, Scheduler, ServiceId, ServiceParams,
};
use svcnet_core::model::Protocol;
use svcnet_tests::vm::guest::run;
use svcnet_tests::vm::{self, Check, Vm};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Where `for_each_service` reads real servers from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The kernel's text listing.
    Text,
    /// Netlink dumps, 32 virtual servers at a time through io_uring (the default).
    BatchedDumps,
    /// Netlink dumps, one virtual server after the other.
    OneDumpEach,
}

/// Everything `for_each_service` reports, as sorted lines, reading real servers from `source`.
fn listing(source: Source) -> anyhow::Result<Vec<String>> {
    let mut nl = NetlinkIpvs::open().context("opening the IPVS netlink family")?;
    nl.set_text_listing(matches!(source, Source::Text));
    nl.set_batched_dumps(matches!(source, Source::BatchedDumps));
    let mut lines = Vec::new();
    nl.for_each_service(&mut |svc, dests| {
        lines.push(format!("{} {:?}", svc.id, svc.params));
        for d in dests {
            lines.push(format!(
                "{} -> {} {:?} active {} inactive {}",
                svc.id, d.id, d.params, d.conns.active, d.conns.inactive
            ));
        }
    })?;
    ensure!(
        nl.dumps_batched() == matches!(source, Source::BatchedDumps),
        "{source:?}: batched dumps {} (the guest kernel has io_uring)",
        if nl.dumps_batched() { "on" } else { "off" }
    );
    lines.sort();
    Ok(lines)
}

/// The listing, after checking the three sources agree.
fn same_listing() -> anyhow::Result<Vec<String>> {
    let one_each = listing(Source::OneDumpEach)?;
    for source in [Source::BatchedDumps, Source::Text] {
        let other = listing(source)?;
        ensure!(
            one_each == other,
            "{source:?} differs from one dump per virtual server\n--- one dump each\n{}\n--- {source:?}\n{}",
            one_each.join("\n"),
            other.join("\n")
        );
    }
    Ok(one_each)
}

fn text_listing_matches_netlink() -> anyhow::Result<()> {
    let mut nl = NetlinkIpvs::open()?;
    let rr = ServiceParams {
        scheduler: Scheduler::Rr,
        flags: 0,
        timeout: 0,
    };
    let sticky = ServiceParams {
        scheduler: Scheduler::Sh,
        flags: FLAG_PERSISTENT,
        timeout: 180,
    };
    let mh = ServiceParams {
        scheduler: Scheduler::Mh,
        flags: Scheduler::Mh.flags(),
        timeout: 0,
    };
    let tcp = ServiceId::new(Protocol::Tcp, ip("10.96.0.10"), 80);
    let udp6 = ServiceId::new(Protocol::Udp, ip("fd00:10:96::a"), 53);
    let sctp = ServiceId::new(Protocol::Sctp, ip("10.96.0.11"), 3868);
    let empty = ServiceId::new(Protocol::Tcp, ip("10.96.0.12"), 443);
    let route = DestParams {
        weight: 3,
        forward: Forward::Route,
    };
    let tunnel = DestParams {
        weight: 2,
        forward: Forward::Tunnel,
    };
    let ops = [
        IpvsOp::AddService(tcp, rr),
        IpvsOp::AddDest(
            tcp,
            DestId::new(ip("10.244.0.2"), 8080),
            DestParams::masq(1),
        ),
        IpvsOp::AddDest(
            tcp,
            DestId::new(ip("10.244.0.3"), 8080),
            DestParams::masq(0),
        ),
        IpvsOp::AddDest(tcp, DestId::new(ip("10.244.0.4"), 80), route),
        IpvsOp::AddDest(tcp, DestId::new(ip("10.244.0.5"), 80), tunnel),
        IpvsOp::AddService(udp6, sticky),
        IpvsOp::AddDest(
            udp6,
            DestId::new(ip("fd00:10:244::5"), 5353),
            DestParams::masq(1),
        ),
        IpvsOp::AddService(sctp, mh),
        IpvsOp::AddDest(
            sctp,
            DestId::new(ip("10.244.1.9"), 3868),
            DestParams::masq(65535),
        ),
        IpvsOp::AddService(empty, rr),
    ];
    let report = nl.apply(&ops)?;
    ensure!(report.failures.is_empty(), "{:?}", report.failures);
    // A fwmark service with a real server: neither listing reports it.
    run("ipvsadm", &["-A", "-f", "7", "-s", "rr"])?;
    run("ipvsadm", &["-a", "-f", "7", "-r", "10.244.9.9", "-m"])?;

    let lines = same_listing()?;
    let services = lines.iter().filter(|l| !l.contains("->")).count();
    let dests = lines.iter().filter(|l| l.contains("->")).count();
    ensure!(
        (services, dests) == (4, 6),
        "expected 4 services and 6 real servers, got {services} and {dests}:\n{}",
        lines.join("\n")
    );

    // Changes show in the next read of both.
    let report = nl.apply(&[
        IpvsOp::DeleteDest(tcp, DestId::new(ip("10.244.0.2"), 8080)),
        IpvsOp::UpdateDest(
            tcp,
            DestId::new(ip("10.244.0.3"), 8080),
            DestParams::masq(5),
        ),
        IpvsOp::DeleteService(sctp),
    ])?;
    ensure!(report.failures.is_empty(), "{:?}", report.failures);
    let lines = same_listing()?;
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("10.244.0.3:8080") && l.contains("weight: 5")),
        "updated weight not listed:\n{}",
        lines.join("\n")
    );
    ensure!(
        !lines.iter().any(|l| l.contains("3868")),
        "deleted service still listed"
    );

    // A bigger table spanning many reads of the listing (it comes a page at a time).
    let big: Vec<IpvsOp> = (0..300u32)
        .flat_map(|i| {
            let id = ServiceId::new(
                Protocol::Tcp,
                IpAddr::from([10, 97, (i / 250) as u8, (i % 250) as u8 + 1]),
                80,
            );
            std::iter::once(IpvsOp::AddService(id, rr)).chain((0..10u32).map(move |e| {
                IpvsOp::AddDest(
                    id,
                    DestId::new(
                        IpAddr::from([10, 245, (i / 25) as u8, (i % 25 * 10 + e) as u8]),
                        8080,
                    ),
                    DestParams::masq(1),
                )
            }))
        })
        .collect();
    let report = nl.apply(&big)?;
    ensure!(report.failures.is_empty(), "{:?}", report.failures);
    let lines = same_listing()?;
    ensure!(
        lines.len() > 3300,
        "only {} lines listed for the big table",
        lines.len()
    );

    // Virtual servers whose real servers take two, then many datagrams of a dump (a batched
    // dump reads those on after its two ring receives).
    for (third, count) in [(1u8, 150u32), (2, 1500)] {
        let id = ServiceId::new(Protocol::Tcp, IpAddr::from([10, 98, third, 1]), 80);
        let ops: Vec<IpvsOp> = std::iter::once(IpvsOp::AddService(id, rr))
            .chain((0..count).map(|e| {
                IpvsOp::AddDest(
                    id,
                    DestId::new(IpAddr::from([10, 246, third, 0]), (10_000 + e) as u16),
                    DestParams::masq(1),
                )
            }))
            .collect();
        let report = nl.apply(&ops)?;
        ensure!(report.failures.is_empty(), "{:?}", report.failures);
    }
    let lines = same_listing()?;
    let long = lines
        .iter()
        .filter(|l| l.contains("10.98.2.1:80 ->"))
        .count();
    ensure!(
        long == 1500,
        "{long} of 1500 real servers listed for the long virtual server"
    );
    Ok(())
}

#[test]
fn ipvs_text_listing_kernel() {
    vm::run_suite(
        "ipvs_text_listing_kernel",
        Vm::new().mem("128M"),
        &[Check::new(
            "text listing matches netlink dumps",
            text_listing_matches_netlink,
        )],
    );
}
