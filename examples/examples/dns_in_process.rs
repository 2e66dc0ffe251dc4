//! Answer cluster DNS questions in-process from a manifest directory: no server, no sockets —
//! build the `cluster.local` zone from a cache snapshot and look names up in it.
//!
//! ```text
//! cargo run -p svcnet-examples --example dns_in_process -- examples/cluster \
//!     demoapp.default.svc.cluster.local/A _http._tcp.demoapp-svc.default.svc.cluster.local/SRV
//! ```
//! Each question is `NAME[/TYPE]` (type A by default); without questions a few samples are asked.

use std::str::FromStr;

use anyhow::{Context, Result};
use hickory_proto::rr::{Name, RecordType};
use svcnet_core::dns::zone::{ClusterZone, Lookup, ZoneOptions};
use svcnet_core::model::Kind;

const SAMPLES: &[&str] = &[
    "demoapp.default.svc.cluster.local/A",
    "_http._tcp.demoapp-svc.default.svc.cluster.local/SRV",
    "web-0.web.demo.svc.cluster.local/A",
    "mysql-external.default.svc.cluster.local/CNAME",
    "10.10.96.10.in-addr.arpa/PTR",
    "nope.default.svc.cluster.local/A",
];

#[tokio::main]
async fn main() -> Result<()> {
    let dir = svcnet_examples::manifest_dir_from_args();
    let mut questions: Vec<String> = std::env::args().skip(2).collect();
    if questions.is_empty() {
        questions = SAMPLES.iter().map(|s| s.to_string()).collect();
    }
    let (_source, snapshot) =
        svcnet_examples::start_synced(dir, &[Kind::Service, Kind::EndpointSlice]).await?;
    let zone = ClusterZone::build(&snapshot, &ZoneOptions::default());
    for q in &questions {
        let (name, rtype) = q.split_once('/').unwrap_or((q.as_str(), "A"));
        let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
            .with_context(|| format!("record type in {q:?}"))?;
        let mut qname = Name::from_utf8(name).with_context(|| format!("name in {q:?}"))?;
        qname.set_fqdn(true);
        let lower = qname.to_lowercase().to_string();
        println!(";; {qname} {rtype}");
        match zone.lookup(&qname, &lower, rtype) {
            Lookup::NotServed => println!("   not in a served zone (a server would forward it)"),
            Lookup::Answer(answer) => {
                println!("   status: {:?}", answer.rcode);
                for r in answer.answers.iter().chain(answer.additionals.iter()) {
                    println!("   {r}");
                }
            }
        }
    }
    Ok(())
}
