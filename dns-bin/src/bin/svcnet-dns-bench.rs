//! `svcnet-dns-bench`: helpers of `bench/dns/run.sh`.
//!
//! - `gen-cluster`: writes a synthetic cluster (services, EndpointSlices) as JSON `List`s, one
//!   file per group of namespaces.
//! - `export-zone`: builds the cluster zone of a manifest directory (timing the build) and
//!   writes one RFC 1035 zone file per origin.
//! - `queries`: writes dnsperf query files for the synthetic cluster (A, SRV, PTR, NXDOMAIN,
//!   and the 70/10/10/10 mix).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use svcnet_core::cache::new_cache;
use svcnet_core::dns::zone::{ClusterZone, ZoneOptions, reverse_name};
use svcnet_core::dns::zonefile;
use svcnet_core::model::{ClusterObject, Kind};
use svcnet_core::source::manifests::parse_manifest;

#[derive(Debug, Parser)]
#[command(name = "svcnet-dns-bench", about = "Benchmark helpers for svcnet-dns")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic cluster as manifests (`cluster-NNNN.json`) into DIR.
    GenCluster {
        /// Number of services.
        #[arg(long, default_value_t = 10_000)]
        services: u32,
        /// Total number of endpoints (spread evenly over the services).
        #[arg(long, default_value_t = 100_000)]
        endpoints: u32,
        /// Number of files to spread the objects over (by namespace).
        #[arg(long, default_value_t = 100)]
        files: u32,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the zone of a manifest directory and write `<origin>zone` files into DIR.
    ExportZone {
        /// Manifest directory.
        #[arg(long)]
        manifests: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write dnsperf query files (a, srv, ptr, nx, mix) for a generated cluster into DIR.
    Queries {
        /// Number of services the cluster was generated with.
        #[arg(long, default_value_t = 10_000)]
        services: u32,
        /// Lines in the mix file.
        #[arg(long, default_value_t = 100_000)]
        mix_lines: u32,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn namespace(i: u32) -> String {
    format!("ns-{}", i % 100)
}

fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i)
}

fn endpoint_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 1 + n)
}

fn gen_cluster(services: u32, endpoints: u32, files: u32, out: &Path) -> anyhow::Result<()> {
    if services == 0 || services > 1_000_000 {
        bail!("--services must be between 1 and 1000000");
    }
    let per = endpoints / services;
    let files = files.clamp(1, services);
    let mut items: Vec<Vec<serde_json::Value>> = vec![Vec::new(); files as usize];
    for i in 0..services {
        let items = &mut items[(i % files) as usize];
        let ns = namespace(i);
        let name = format!("svc-{i}");
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "clusterIP": cluster_ip(i).to_string(),
                "selector": {"app": name},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "port": 9100, "protocol": "TCP"}
                ]
            }
        }));
        let eps: Vec<_> = (0..per)
            .map(|j| {
                json!({
                    "addresses": [endpoint_ip(i * per + j).to_string()],
                    "conditions": {"ready": true},
                    "nodeName": format!("node-{}", j % 10),
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{name}-{j}")}
                })
            })
            .collect();
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "protocol": "TCP"}
            ],
            "endpoints": eps
        }));
    }
    std::fs::create_dir_all(out)?;
    for (f, items) in items.into_iter().enumerate() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        let path = out.join(format!("cluster-{f:04}.json"));
        std::fs::write(&path, serde_json::to_vec(&list)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote {files} files into {} ({services} services, {} endpoints)",
        out.display(),
        per * services
    );
    Ok(())
}

fn export_zone(manifests: &Path, out: &Path) -> anyhow::Result<()> {
    let mut objects: Vec<ClusterObject> = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(manifests)
        .with_context(|| format!("reading {}", manifests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| svcnet_core::source::manifests::is_manifest(p))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path)?;
        objects.extend(parse_manifest(&path, &text)?);
    }
    let kinds = [Kind::Service, Kind::EndpointSlice];
    let (mut writer, reader) = new_cache(kinds);
    for kind in kinds {
        let of_kind = objects
            .iter()
            .filter(|o| o.kind() == kind)
            .cloned()
            .collect();
        writer.replace_kind(kind, of_kind);
    }
    let snapshot = reader.snapshot();
    drop(objects);
    let options = ZoneOptions::default();
    let rss_before = rss_kb();
    let one = ClusterZone::build(&snapshot, &options);
    let rss_after = rss_kb();
    println!(
        "zone_rss_mb {:.1}",
        (rss_after - rss_before) as f64 / 1024.0
    );
    eprintln!(
        "RSS {:.1} MB with the cache, +{:.1} MB for one zone",
        rss_before as f64 / 1024.0,
        (rss_after - rss_before) as f64 / 1024.0
    );
    drop(one);
    // Warm up once, then time a few builds: this is the cost of a full rebuild per change.
    let _ = ClusterZone::build(&snapshot, &options);
    // Time the builds only (the zones are dropped afterwards).
    let runs = 5;
    let mut zones = Vec::with_capacity(runs);
    let started = Instant::now();
    for _ in 0..runs {
        zones.push(ClusterZone::build(&snapshot, &options));
    }
    let per_build = started.elapsed() / runs as u32;
    let Some(zone) = zones.pop() else {
        bail!("no zone built");
    };
    drop(zones);
    eprintln!(
        "zone build: {:.1} ms for {} services, {} endpoint slices (mean of 5)",
        per_build.as_secs_f64() * 1000.0,
        snapshot.service_count(),
        snapshot.endpoint_slice_count()
    );
    println!("zone_build_ms {:.2}", per_build.as_secs_f64() * 1000.0);
    std::fs::create_dir_all(out)?;
    for file in zonefile::export(&zone) {
        let path = out.join(format!("{}zone", file.origin));
        std::fs::write(&path, &file.text)?;
        eprintln!("wrote {} ({} records)", path.display(), file.records);
    }
    Ok(())
}

/// Resident set size of this process in KiB (0 if unknown).
fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

fn queries(services: u32, mix_lines: u32, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let a = |i: u32| format!("svc-{i}.{}.svc.cluster.local A", namespace(i));
    let srv = |i: u32| format!("_http._tcp.svc-{i}.{}.svc.cluster.local SRV", namespace(i));
    let ptr = |i: u32| {
        format!(
            "{} PTR",
            reverse_name(std::net::IpAddr::V4(cluster_ip(i))).trim_end_matches('.')
        )
    };
    // What ndots:5 search lists produce: a service name tried under another search domain,
    // and names that are simply absent.
    let nx = |i: u32| {
        if i.is_multiple_of(2) {
            format!(
                "svc-{i}.{}.svc.cluster.local.{}.svc.cluster.local A",
                namespace(i),
                namespace(i + 1)
            )
        } else {
            format!("missing-{i}.{}.svc.cluster.local A", namespace(i))
        }
    };
    let kinds: [(&str, &dyn Fn(u32) -> String); 4] =
        [("a", &a), ("srv", &srv), ("ptr", &ptr), ("nx", &nx)];
    let mut rng = Lcg(42);
    for (file, make) in kinds {
        let mut text = String::new();
        for _ in 0..services {
            let _ = writeln!(text, "{}", make(rng.next() % services));
        }
        std::fs::write(out.join(format!("{file}.txt")), text)?;
    }
    let mut mix = String::new();
    for _ in 0..mix_lines {
        let i = rng.next() % services;
        let line = match rng.next() % 100 {
            0..70 => a(i),
            70..80 => srv(i),
            80..90 => ptr(i),
            _ => nx(i),
        };
        let _ = writeln!(mix, "{line}");
    }
    std::fs::write(out.join("mix.txt"), mix)?;
    eprintln!("wrote query files into {}", out.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::GenCluster {
            services,
            endpoints,
            files,
            out,
        } => gen_cluster(services, endpoints, files, &out),
        Command::ExportZone { manifests, out } => export_zone(&manifests, &out),
        Command::Queries {
            services,
            mix_lines,
            out,
        } => queries(services, mix_lines, &out),
    }
}
