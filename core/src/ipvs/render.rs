//! `ipvsadm -Ln`-style text for a desired state or a kernel dump.

use std::fmt::Write as _;

use super::desired::DesiredState;
use super::table::{
    DestConns, DestParams, FLAG_PERSISTENT, FLAG_SCHED1, FLAG_SCHED2, Scheduler, ServiceId,
    ServiceParams, SocketText, Stats, TableDump,
};

/// The header `ipvsadm -Ln` prints.
pub const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n  \
-> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// The header `ipvsadm -Ln --stats` prints.
pub const STATS_HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  \
-> RemoteAddress:Port\n";

fn service_line(out: &mut String, id: &ServiceId, params: &ServiceParams) {
    let _ = write!(
        out,
        "{}  {} {}",
        id.protocol,
        SocketText(id.addr, id.port),
        params.scheduler
    );
    if params.flags & FLAG_PERSISTENT != 0 {
        let _ = write!(out, " persistent {}", params.timeout);
    }
    if matches!(params.scheduler, Scheduler::Sh | Scheduler::Mh) {
        let name = params.scheduler.as_str();
        if params.flags & FLAG_SCHED1 != 0 {
            let _ = write!(out, " {name}-fallback");
        }
        if params.flags & FLAG_SCHED2 != 0 {
            let _ = write!(out, " {name}-port");
        }
    }
    out.push('\n');
}

fn dest_line(
    out: &mut String,
    dest: &super::table::DestId,
    params: &DestParams,
    conns: &DestConns,
) {
    // ipvsadm: "  -> %-28s %-7s %-6d %-10u %-10u\n"
    let addr = dest.to_string();
    let _ = writeln!(
        out,
        "  -> {addr:<28} {:<7} {:<6} {:<10} {:<10}",
        params.forward.as_str(),
        params.weight,
        conns.active,
        conns.inactive
    );
}

fn stats_numbers(out: &mut String, s: &Stats) {
    let _ = writeln!(
        out,
        " {:>8} {:>8} {:>8} {:>8} {:>8}",
        s.conns, s.in_packets, s.out_packets, s.in_bytes, s.out_bytes
    );
}

/// Renders the desired state as `ipvsadm -Ln` would show it once programmed (no connections).
pub fn desired(state: &DesiredState) -> String {
    let mut out = String::from(HEADER);
    for (id, vs) in state.servers() {
        service_line(&mut out, id, &vs.params);
        for (dest, params) in &vs.dests {
            dest_line(&mut out, dest, params, &DestConns::default());
        }
    }
    out
}

/// Renders a kernel dump as `ipvsadm -Ln` does (sorted), or as `ipvsadm -Ln --stats` with
/// `stats`.
pub fn dump(table: &TableDump, stats: bool) -> String {
    let mut sorted: Vec<_> = table.iter().collect();
    sorted.sort_by_key(|(s, _)| s.id);
    let mut out = String::from(if stats { STATS_HEADER } else { HEADER });
    for (svc, dests) in sorted {
        let mut dests: Vec<_> = dests.iter().collect();
        dests.sort_by_key(|d| d.id);
        if stats {
            let head = format!(
                "{}  {}",
                svc.id.protocol,
                SocketText(svc.id.addr, svc.id.port)
            );
            let _ = write!(out, "{head:<33}");
            stats_numbers(&mut out, &svc.stats);
            for d in dests {
                let _ = write!(out, "  -> {:<28}", d.id.to_string());
                stats_numbers(&mut out, &d.stats);
            }
        } else {
            service_line(&mut out, &svc.id, &svc.params);
            for d in dests {
                dest_line(&mut out, &d.id, &d.params, &d.conns);
            }
        }
    }
    out
}
