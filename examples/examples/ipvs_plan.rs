//! Compute the IPVS table the proxy would program for one snapshot, without touching the
//! kernel, and print it as `ipvsadm -Ln` would show it.
//!
//! ```text
//! cargo run -p svcnet-examples --example ipvs_plan -- examples/cluster node-a 192.168.1.10
//! ```
//! Arguments: manifest directory, node name (for `Local` traffic policies), node addresses
//! (node ports are served on them).

use anyhow::{Context, Result};
use svcnet_core::ipvs::{self, NodeInfo, ProxyConfig};
use svcnet_core::model::Kind;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = svcnet_examples::manifest_dir_from_args();
    let args: Vec<String> = std::env::args().skip(2).collect();
    let node_name = args.first().cloned().unwrap_or_else(|| "node-a".into());
    let local_addresses = args
        .iter()
        .skip(1)
        .map(|a| a.parse().with_context(|| format!("node address {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    let (_source, snapshot) =
        svcnet_examples::start_synced(dir, &[Kind::Service, Kind::EndpointSlice]).await?;
    let node = NodeInfo {
        node_name: Some(node_name.into()),
        local_addresses,
    };
    let state = ipvs::build(&snapshot, &ProxyConfig::default(), &node);
    print!("{}", ipvs::render::desired(&state));
    Ok(())
}
