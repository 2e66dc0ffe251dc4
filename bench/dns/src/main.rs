//! `svcnet-dns-bench`: helpers of `bench/dns/run.sh`.
//!
//! - `gen-cluster`: writes a synthetic cluster (services, EndpointSlices) as JSON `List`s, one
//!   file per group of namespaces.
//! - `export-zone`: builds the cluster zone of a manifest directory (timing the build) and
//!   writes one RFC 1035 zone file per origin.
//! - `queries`: writes dnsperf query files for the synthetic cluster (A, SRV, PTR, NXDOMAIN,
//!   and the 70/10/10/10 mix).
//! - `zone-updates`: loads the synthetic cluster into a cache, runs the DNS zone updater on it
//!   as `svcnet-dns` does, and times how long a cache change (an endpoint change, a service
//!   added, a service deleted) takes to become visible to queries, next to a full rebuild of
//!   the zone measured in the same run.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use svcnet_core::cache::new_cache;
use svcnet_core::dns::cluster::ClusterPlugin;
use svcnet_core::dns::zone::export as zonefile;
use svcnet_core::dns::zone::{ClusterZone, Lookup, ZoneOptions, lower_fqdn, reverse_name};
use svcnet_core::model::{ClusterObject, Kind, ObjectKey, project};
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
    /// Time from a cache change to the change being visible in the served zone.
    ZoneUpdates {
        /// Number of services.
        #[arg(long, default_value_t = 10_000)]
        services: u32,
        /// Total number of endpoints (spread evenly over the services).
        #[arg(long, default_value_t = 100_000)]
        endpoints: u32,
        /// Changes of each kind to time.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
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
    let files = files.clamp(1, services.max(1));
    let mut items: Vec<Vec<serde_json::Value>> = vec![Vec::new(); files as usize];
    for (i, objects) in cluster_objects(services, endpoints)?
        .into_iter()
        .enumerate()
    {
        items[i % files as usize].extend(objects);
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
        (endpoints / services) * services
    );
    Ok(())
}

fn service_json(ns: &str, name: &str, cluster_ip: Ipv4Addr) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "protocol": "TCP"}
            ]
        }
    })
}

fn slice_json(ns: &str, name: &str, ips: &[Ipv4Addr]) -> serde_json::Value {
    let eps: Vec<_> = ips
        .iter()
        .enumerate()
        .map(|(j, ip)| {
            json!({
                "addresses": [ip.to_string()],
                "conditions": {"ready": true},
                "nodeName": format!("node-{}", j % 10),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{name}-{j}")}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "metrics", "port": 9100, "protocol": "TCP"}
        ],
        "endpoints": eps
    })
}

/// The synthetic cluster: per service, the Service and its one EndpointSlice (as JSON).
fn cluster_objects(services: u32, endpoints: u32) -> anyhow::Result<Vec<[serde_json::Value; 2]>> {
    if services == 0 || services > 1_000_000 {
        bail!("--services must be between 1 and 1000000");
    }
    let per = endpoints / services;
    Ok((0..services)
        .map(|i| {
            let ns = namespace(i);
            let name = format!("svc-{i}");
            let ips: Vec<Ipv4Addr> = (0..per).map(|j| endpoint_ip(i * per + j)).collect();
            [
                service_json(&ns, &name, cluster_ip(i)),
                slice_json(&ns, &name, &ips),
            ]
        })
        .collect())
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
    // Warm up once, then time a few builds: this is the cost of a full rebuild.
    drop(ClusterZone::build(&snapshot, &options));
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

/// Polls the served zone until `question` answers as `done` says; returns when it did.
fn wait_visible(
    plugin: &ClusterPlugin,
    name: &str,
    qtype: RecordType,
    done: impl Fn(&Lookup) -> bool,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let qname = Name::from_ascii(name)?;
    let lower = lower_fqdn(&qname);
    let deadline = Instant::now() + timeout;
    loop {
        if done(&plugin.zone().lookup(&qname, &lower, qtype)) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{name} {qtype} did not change within {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn answered(l: &Lookup) -> bool {
    matches!(l, Lookup::Answer(a) if !a.answers.is_empty())
}

fn nxdomain(l: &Lookup) -> bool {
    matches!(l, Lookup::Answer(a) if a.rcode == hickory_proto::op::ResponseCode::NXDomain)
}

/// `[median, p90, max]` in milliseconds.
fn summary(mut samples: Vec<Duration>) -> [f64; 3] {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    [at(0.5), at(0.9), at(1.0)]
}

fn zone_updates(services: u32, endpoints: u32, rounds: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let per = (endpoints / services).max(1);
    let project_all = |values: Vec<serde_json::Value>| -> anyhow::Result<Vec<ClusterObject>> {
        values
            .into_iter()
            .map(|v| {
                project::from_json(v)?.ok_or_else(|| anyhow::anyhow!("unknown kind in generator"))
            })
            .collect()
    };
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for [svc, slice] in cluster_objects(services, endpoints)? {
        svcs.push(svc);
        slices.push(slice);
    }
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    writer.replace_kind(Kind::Service, project_all(svcs)?);
    writer.replace_kind(Kind::EndpointSlice, project_all(slices)?);
    let options = ZoneOptions::default();
    let plugin = ClusterPlugin::new(options.clone());
    let _guard = runtime.enter();
    let updater = plugin.spawn_updater(reader.clone(), Duration::from_secs(60));
    let last = format!(
        "svc-{}.{}.svc.cluster.local.",
        services - 1,
        namespace(services - 1)
    );
    wait_visible(
        &plugin,
        &last,
        RecordType::A,
        answered,
        Duration::from_secs(60),
    )?;
    // The build time is recorded just after the swap.
    let first_build = loop {
        match plugin.last_build() {
            Some(took) => break took,
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };

    // A full rebuild of the same snapshot, measured in this run (mean of 5 after a warm-up).
    let snapshot = reader.snapshot();
    drop(ClusterZone::build(&snapshot, &options));
    let started = Instant::now();
    for _ in 0..5 {
        drop(ClusterZone::build(&snapshot, &options));
    }
    let full = started.elapsed() / 5;
    drop(snapshot);

    let mut endpoint_times = Vec::new();
    let mut add_times = Vec::new();
    let mut delete_times = Vec::new();
    let mut update_times = Vec::new();
    for r in 0..rounds {
        // One endpoint of one service gets a new address.
        let i = (r * 7919) % services;
        let (ns, name) = (namespace(i), format!("svc-{i}"));
        let mut ips: Vec<Ipv4Addr> = (0..per).map(|j| endpoint_ip(i * per + j)).collect();
        let moved = Ipv4Addr::new(10, 200, (r / 250) as u8, (r % 250 + 1) as u8);
        ips[0] = moved;
        let slice = project_all(vec![slice_json(&ns, &name, &ips)])?;
        let before = plugin.rebuilds();
        let t0 = Instant::now();
        writer.update(|tx| slice.into_iter().for_each(|o| tx.apply(o)));
        let t1 = wait_visible(
            &plugin,
            &reverse_name(std::net::IpAddr::V4(moved)),
            RecordType::PTR,
            answered,
            Duration::from_secs(10),
        )?;
        endpoint_times.push(t1 - t0);
        if plugin.rebuilds() > before {
            update_times.push(plugin.last_build().unwrap_or_default());
        }

        // A service is added, then deleted.
        let (ns, name) = ("ns-new".to_string(), format!("new-{r}"));
        let ip = Ipv4Addr::new(10, 97, (r / 250) as u8, (r % 250 + 1) as u8);
        let svc = project_all(vec![service_json(&ns, &name, ip)])?;
        let question = format!("{name}.{ns}.svc.cluster.local.");
        let t0 = Instant::now();
        writer.update(|tx| svc.into_iter().for_each(|o| tx.apply(o)));
        let t1 = wait_visible(
            &plugin,
            &question,
            RecordType::A,
            answered,
            Duration::from_secs(10),
        )?;
        add_times.push(t1 - t0);
        let t0 = Instant::now();
        writer.delete(Kind::Service, &ObjectKey::new(ns.as_str(), name.as_str()));
        let t1 = wait_visible(
            &plugin,
            &question,
            RecordType::A,
            nxdomain,
            Duration::from_secs(10),
        )?;
        delete_times.push(t1 - t0);
        // Let the updater go idle between rounds.
        std::thread::sleep(Duration::from_millis(5));
    }
    updater.abort();
    let lookups = lookup_costs(&plugin.zone(), services)?;
    let full_ms = full.as_secs_f64() * 1000.0;
    println!(
        "cluster {services} services, {} endpoints; {rounds} changes of each kind",
        per * services
    );
    println!("full_rebuild_ms {full_ms:.2}");
    println!(
        "first_zone_ms {:.2} (built once by the updater after the sync)",
        first_build.as_secs_f64() * 1000.0
    );
    let update = summary(update_times);
    println!(
        "incremental_update_ms median {:.3} p90 {:.3} max {:.3}",
        update[0], update[1], update[2]
    );
    for (what, samples) in [
        ("endpoint_change", endpoint_times),
        ("service_add", add_times),
        ("service_delete", delete_times),
    ] {
        let [median, p90, max] = summary(samples);
        println!(
            "visible_after_ms {what} median {median:.3} p90 {p90:.3} max {max:.3} (full rebuild / median: {:.0}x)",
            full_ms / median.max(0.001)
        );
    }
    println!(
        "lookup_ns {}",
        lookups
            .iter()
            .map(|(kind, ns)| format!("{kind} {ns:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("rss_mb {:.1}", rss_kb() as f64 / 1024.0);
    Ok(())
}

/// Mean cost of one zone lookup (answer records built, no wire encoding) per query kind.
fn lookup_costs(zone: &ClusterZone, services: u32) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    let kinds: [(&str, RecordType); 4] = [
        ("a", RecordType::A),
        ("srv", RecordType::SRV),
        ("ptr", RecordType::PTR),
        ("nx", RecordType::A),
    ];
    for (kind, qtype) in kinds {
        let names: Vec<(Name, String)> = (0..4096)
            .map(|_| {
                let i = rng.next() % services;
                let text = match kind {
                    "a" => format!("svc-{i}.{}.svc.cluster.local.", namespace(i)),
                    "srv" => format!("_http._tcp.svc-{i}.{}.svc.cluster.local.", namespace(i)),
                    "ptr" => reverse_name(std::net::IpAddr::V4(cluster_ip(i))),
                    _ => format!(
                        "svc-{i}.{}.svc.cluster.local.{}.svc.cluster.local.",
                        namespace(i),
                        namespace(i + 1)
                    ),
                };
                let name = Name::from_ascii(&text)?;
                Ok((name.clone(), lower_fqdn(&name)))
            })
            .collect::<anyhow::Result<_>>()?;
        let rounds = 50;
        let started = Instant::now();
        let mut answered = 0usize;
        for _ in 0..rounds {
            for (name, lower) in &names {
                if let Lookup::Answer(a) = zone.lookup(name, lower, qtype) {
                    answered += a.answers.len();
                }
            }
        }
        let per = started.elapsed().as_nanos() as f64 / (rounds * names.len()) as f64;
        if kind != "nx" && answered == 0 {
            bail!("{kind} lookups found nothing");
        }
        out.push((kind, per));
    }
    Ok(out)
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
        Command::ZoneUpdates {
            services,
            endpoints,
            rounds,
        } => zone_updates(services, endpoints, rounds),
    }
}
