//! The corpus of real Corefiles (`tests/corefiles/<entry>/`), each loaded unchanged by
//! `svcnet-dns` and checked with `dig` against what CoreDNS answers for it.
//!
//! Every entry runs in its own network, mount and PID namespace (`unshare`, needs root), so the
//! Corefiles keep their `.:53`, `:8080`, `:9153` ... as written. In that namespace:
//! - `/etc` is an overlay, the entry's directory is bind-mounted at `/etc/coredns` (where the
//!   distributions mount their ConfigMaps), so absolute paths such as `/etc/coredns/NodeHosts` and
//!   `import /etc/coredns/custom/*.server` resolve exactly as for CoreDNS, and relative imports
//!   resolve against the Corefile's directory, as CoreDNS does;
//! - `/etc/resolv.conf` names `::1`, where a Knot DNS server plays the node's resolver;
//! - more Knot servers play the upstreams that the Kubernetes and CoreDNS documentation's
//!   examples name (`172.16.0.1`, a Consul server on `10.150.0.1`, AKS's `192.11.0.1`), with
//!   their addresses on `lo` (listening on port 5353, reached on port 53 through a DNAT rule, since
//!   the Corefiles bind `0.0.0.0:53`); the cluster is `examples/cluster` (`--manifests`).
//!
//! Each entry's `expect` file lists the checks (see [`parse_expect`]). An entry may `require`
//! plugins that other work adds: while svcnet rejects such a plugin, the entry is reported as
//! PENDING (its Corefile must fail on exactly that plugin), and [`PENDING_PLUGINS`] must name it;
//! once the plugin is accepted the entry runs in full, and [`pending_list_is_current`] fails until
//! the plugin is taken off the list.
//!
//! Needs root, `unshare`/`nsenter` (util-linux), `iptables`, `knotd`, `dig`, `curl` and the binary
//! built:
//! `cargo build --workspace --bins`.

mod corefile_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corefile_support::{binary, example_cluster, repo};
use svcnet_core::dns::corefile::{self, CorefileError, LoadOptions};

/// Plugins that corpus entries use and svcnet does not accept yet (other work adds them). Take a
/// plugin off this list when it lands: [`pending_list_is_current`] fails until then, and the
/// entries that need it then run in full.
const PENDING_PLUGINS: &[&str] = &[];

/// Addresses put on the namespace's `lo`: the documentation's upstreams, AKS's cluster DNS
/// (`10.0.0.10`), NodeLocal DNSCache's link-local address and the cluster DNS service address.
const LOCAL_ADDRS: &[&str] = &[
    "172.16.0.1",
    "10.150.0.1",
    "192.11.0.1",
    "10.0.0.10",
    "169.254.20.10",
    "10.96.0.10",
];

/// A zone served by an upstream: its origin and records.
type UpstreamZone = (&'static str, Vec<&'static str>);

/// The upstream DNS servers of every entry: (listen address, zones).
fn upstreams() -> Vec<(&'static str, Vec<UpstreamZone>)> {
    vec![
        // The node's resolver (`/etc/resolv.conf`).
        (
            "::1",
            vec![
                (
                    "example.com",
                    vec![
                        "www IN A 192.0.2.1",
                        "www IN AAAA 2001:db8::1",
                        "mysql IN A 192.0.2.50",
                    ],
                ),
                ("example.org", vec!["www IN A 192.0.2.2"]),
            ],
        ),
        // The explicit upstream of the Kubernetes docs' example (and k3s's lab.example).
        (
            "172.16.0.1",
            vec![
                ("example.com", vec!["www IN A 192.0.2.172"]),
                ("example.org", vec!["www IN A 192.0.2.173"]),
                ("lab.example", vec!["printer IN A 10.20.0.9"]),
            ],
        ),
        // The Consul server of the stub-domain example.
        (
            "10.150.0.1",
            vec![("consul.local", vec!["web.service IN A 10.150.1.10"])],
        ),
        // AKS's "test/dev DNS server".
        (
            "192.11.0.1",
            vec![("puglife.world", vec!["www IN A 192.0.2.11"])],
        ),
    ]
}

fn zone_text(origin: &str, lines: &[&str]) -> String {
    let mut z = format!(
        "$TTL 300\n@ IN SOA ns.{origin}. admin.{origin}. 1 3600 600 86400 60\n@ IN NS ns.{origin}.\nns IN A 192.0.2.53\n"
    );
    for l in lines {
        z.push_str(l);
        z.push('\n');
    }
    z
}

/// One `dig` check: `[gap NAME] [@ADDR] [+tcp] QNAME QTYPE STATUS [ttl=N] [[OWNER/]TYPE=RDATA ...]`
/// (STATUS `NOREPLY`: no answer at all).
#[derive(Debug, Clone)]
struct Query {
    line: usize,
    /// `gap NAME ...`: a known difference from CoreDNS, named; the check must still fail (and the
    /// test fails once svcnet answers like CoreDNS, so the marker is removed).
    gap: Option<String>,
    server: Option<String>,
    tcp: bool,
    name: String,
    qtype: String,
    status: String,
    ttl: Option<u32>,
    /// Expected answer records as `OWNER TYPE RDATA` (owner defaults to the query name; spaces
    /// in RDATA are written as `,`), compared as a sorted list.
    answers: Vec<String>,
}

/// One HTTP check: `http HOST:PORT/PATH SUBSTRING`.
#[derive(Debug, Clone)]
struct HttpCheck {
    line: usize,
    url: String,
    contains: String,
}

/// An entry's `expect` file.
#[derive(Debug, Default)]
struct Expect {
    /// Plugins the entry needs beyond what every Corefile uses (`requires P...`).
    requires: Vec<String>,
    /// The default address queried (`server ADDR`; default 127.0.0.1).
    server: String,
    /// Corefiles started before the entry's own (`also-run PATH`, relative to the entry).
    also_run: Vec<String>,
    queries: Vec<Query>,
    http: Vec<HttpCheck>,
}

fn fqdn(n: &str) -> String {
    let mut n = n.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Parses an `expect` file: `#` comments, blank lines, `requires`, `server`, `also-run`,
/// `http` lines and query lines.
fn parse_expect(text: &str) -> Expect {
    let mut e = Expect {
        server: "127.0.0.1".to_string(),
        ..Expect::default()
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut words: Vec<&str> = l.split_whitespace().collect();
        match words[0] {
            "requires" => e.requires.extend(words[1..].iter().map(|s| s.to_string())),
            "server" => e.server = words[1].to_string(),
            "also-run" => e.also_run.push(words[1].to_string()),
            "http" => e.http.push(HttpCheck {
                line,
                url: words[1].to_string(),
                contains: words[2..].join(" "),
            }),
            _ => {
                let mut gap = None;
                if words[0] == "gap" {
                    gap = Some(words[1].to_string());
                    words.drain(..2);
                }
                let mut server = None;
                let mut tcp = false;
                while let Some(w) = words.first() {
                    if let Some(a) = w.strip_prefix('@') {
                        server = Some(a.to_string());
                    } else if *w == "+tcp" {
                        tcp = true;
                    } else {
                        break;
                    }
                    words.remove(0);
                }
                assert!(words.len() >= 3, "expect line {line}: {raw:?}");
                let name = fqdn(words[0]);
                let mut q = Query {
                    line,
                    gap,
                    server,
                    tcp,
                    name: name.clone(),
                    qtype: words[1].to_ascii_uppercase(),
                    status: words[2].to_string(),
                    ttl: None,
                    answers: Vec::new(),
                };
                for w in &words[3..] {
                    if let Some(t) = w.strip_prefix("ttl=") {
                        q.ttl = Some(t.parse().expect("ttl=N"));
                        continue;
                    }
                    let (lhs, rdata) = w
                        .split_once('=')
                        .unwrap_or_else(|| panic!("expect line {line}: {w:?} is not TYPE=RDATA"));
                    let (owner, rtype) = match lhs.rsplit_once('/') {
                        Some((o, t)) => (fqdn(o), t),
                        None => (name.clone(), lhs),
                    };
                    q.answers.push(format!(
                        "{owner} {} {}",
                        rtype.to_ascii_uppercase(),
                        rdata.replace(',', " ")
                    ));
                }
                q.answers.sort();
                e.queries.push(q);
            }
        }
    }
    e
}

/// Whether svcnet's Corefile parser knows `plugin` (any error but "unknown plugin" counts as
/// known: the plugin exists and merely wants arguments).
fn accepted(plugin: &str) -> bool {
    let text = format!(".:53 {{\n    {plugin}\n}}\n");
    !matches!(
        corefile::parse_str("probe", &text, &LoadOptions::default()),
        Err(CorefileError::UnknownPlugin { name, .. }) if name == plugin
    )
}

fn corpus_dir() -> PathBuf {
    repo().join("tests/corefiles")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// NodeLocal DNSCache's Corefile as node-cache writes it: first the operator's `sed` of the
/// install instructions for kube-proxy in IPVS mode (`__PILLAR__DNS__DOMAIN__`,
/// `__PILLAR__LOCAL__DNS__`, `__PILLAR__CLUSTER__DNS__` → the kube-dns service address), then
/// node-cache's own `updateCorefile`: `__PILLAR__UPSTREAM__SERVERS__` → `/etc/resolv.conf` (no
/// custom upstreams configured), `__PILLAR__LOCAL__DNS__` → its `-localip` list with commas as
/// spaces, and `__PILLAR__DNS__SERVER__` → nothing.
fn node_cache_corefile(base: &str, domain: &str, local_ip: &str, kube_dns: &str) -> String {
    let sed = base
        .replace("__PILLAR__LOCAL__DNS__", local_ip)
        .replace("__PILLAR__DNS__DOMAIN__", domain)
        .replace(",__PILLAR__DNS__SERVER__", "")
        .replace("__PILLAR__CLUSTER__DNS__", kube_dns);
    sed.replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf")
        .replace("__PILLAR__CLUSTER__DNS__", kube_dns)
        .replace("__PILLAR__LOCAL__DNS__", &local_ip.replace(',', " "))
        .replace("__PILLAR__DNS__SERVER__", "")
}

/// An entry's network namespace with its upstreams and `svcnet-dns` running; all killed on drop
/// (the namespace's init dies with `unshare --kill-child`, and the kernel ends the rest).
struct Netns {
    child: Child,
    dir: tempfile::TempDir,
}

impl Netns {
    /// Sets up the namespace for the entry copied to `dir/coredns` and starts everything.
    fn start(dir: tempfile::TempDir, also_run: &[String]) -> Netns {
        let d = dir.path().to_path_buf();
        let mut script = String::from("set -eu\nip link set lo up\n");
        for a in LOCAL_ADDRS {
            script.push_str(&format!("ip addr add {a}/32 dev lo\n"));
        }
        for (i, (addr, zones)) in upstreams().iter().enumerate() {
            let k = d.join(format!("knot{i}"));
            std::fs::create_dir_all(k.join("run")).unwrap();
            // svcnet-dns binds 0.0.0.0:53, so an IPv4 upstream listens on port 5353 and a DNAT
            // rule sends its port 53 there (the IPv6 resolver has port 53 to itself).
            let port = if addr.contains(':') {
                53
            } else {
                for proto in ["udp", "tcp"] {
                    script.push_str(&format!(
                        "iptables -t nat -A OUTPUT -d {addr} -p {proto} --dport 53 -j DNAT --to-destination {addr}:5353\n"
                    ));
                }
                5353
            };
            let mut conf = format!(
                "server:\n    listen: {addr}@{port}\n    rundir: {run}\ndatabase:\n    storage: {run}\ntemplate:\n  - id: default\n    storage: {k}\nlog:\n  - target: stderr\n    any: warning\nzone:\n",
                run = k.join("run").display(),
                k = k.display()
            );
            for (origin, lines) in zones {
                std::fs::write(k.join(format!("{origin}.zone")), zone_text(origin, lines)).unwrap();
                conf.push_str(&format!("  - domain: {origin}\n    file: {origin}.zone\n"));
            }
            std::fs::write(k.join("knot.conf"), conf).unwrap();
            script.push_str(&format!(
                "knotd -c {} 2>{}/knot.log &\n",
                k.join("knot.conf").display(),
                k.display()
            ));
        }
        script.push_str(&format!(
            "mkdir -p {d}/up {d}/work\nmount -t overlay overlay -o lowerdir=/etc,upperdir={d}/up,workdir={d}/work /etc\nrm -f /etc/resolv.conf\necho 'nameserver ::1' > /etc/resolv.conf\nmkdir -p /etc/coredns\nmount --bind {d}/coredns /etc/coredns\n",
            d = d.display()
        ));
        let bin = binary();
        let m = example_cluster();
        for (i, extra) in also_run.iter().enumerate() {
            script.push_str(&format!(
                "RUST_LOG=info NO_COLOR=1 {bin} --corefile /etc/coredns/{extra} --manifests {m} 2>{d}/also{i}.log &\n",
                bin = bin.display(),
                m = m.display(),
                d = d.display()
            ));
        }
        script.push_str(&format!(
            "RUST_LOG=info NO_COLOR=1 {bin} --corefile /etc/coredns/Corefile --manifests {m} 2>{d}/dns.log &\necho started\nwait\n",
            bin = bin.display(),
            m = m.display(),
            d = d.display()
        ));
        let mut child = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount-proc",
                "--mount",
                "--net",
                "--kill-child",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run unshare (needs root)");
        let out = child.stdout.take().unwrap();
        let mut first = String::new();
        BufReader::new(out).read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "started", "namespace setup failed");
        Netns { child, dir }
    }

    fn run(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.child.id().to_string())
            .args(["-n", "--", cmd])
            .args(args)
            .output()
            .expect("run nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `svcnet-dns --corefile /etc/coredns/Corefile --validate` in the namespace's file system:
    /// whether it succeeded, and what it printed.
    fn validate(&self) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.child.id().to_string())
            .args(["-m", "-n", "--"])
            .arg(binary())
            .args(["--corefile", "/etc/coredns/Corefile", "--validate"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run nsenter");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        for n in names {
            out.push_str(&format!("--- {n}\n{}", self.log(&n)));
        }
        out
    }

    /// `dig` inside the namespace: the status and the answer records as `OWNER TYPE RDATA`
    /// with their TTLs; `None` when no reply came.
    fn dig(&self, server: &str, tcp: bool, name: &str, qtype: &str) -> Option<Dig> {
        let at = format!("@{server}");
        let mut args = vec![
            at.as_str(),
            "+noall",
            "+comments",
            "+answer",
            "+time=2",
            "+tries=1",
        ];
        if tcp {
            args.push("+tcp");
        }
        args.extend([name, qtype]);
        let text = self.run("dig", &args);
        let status = text
            .lines()
            .find_map(|l| l.split("status: ").nth(1))?
            .split(',')
            .next()
            .unwrap_or("")
            .to_string();
        let mut answers = Vec::new();
        for l in text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            answers.push((
                f[1].parse::<u32>().unwrap_or(u32::MAX),
                format!(
                    "{} {} {}",
                    f[0].to_ascii_lowercase(),
                    f[3],
                    f[4..].join(" ")
                ),
            ));
        }
        Some(Dig { status, answers })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Dig {
    status: String,
    answers: Vec<(u32, String)>,
}

/// Runs one corpus entry: loads it (or confirms it is pending), starts it, runs every check and
/// fails with the full list of differences.
fn run_entry(name: &str) {
    let src = corpus_dir().join(name);
    let expect = parse_expect(
        &std::fs::read_to_string(src.join("expect"))
            .unwrap_or_else(|e| panic!("{name}/expect: {e}")),
    );
    assert!(
        !expect.queries.is_empty(),
        "{name}: the expect file has no checks"
    );
    let dir = tempfile::tempdir().unwrap();
    let coredns = dir.path().join("coredns");
    copy_dir(&src, &coredns);
    if let Ok(base) = std::fs::read_to_string(coredns.join("Corefile.base")) {
        std::fs::write(
            coredns.join("Corefile"),
            node_cache_corefile(&base, "cluster.local", "169.254.20.10", "10.96.0.10"),
        )
        .unwrap();
    }

    let missing: Vec<&String> = expect.requires.iter().filter(|p| !accepted(p)).collect();
    if !missing.is_empty() {
        for p in &missing {
            assert!(
                PENDING_PLUGINS.contains(&p.as_str()),
                "{name} requires plugin {p}, which svcnet rejects and PENDING_PLUGINS does not name"
            );
        }
        match corefile::load(&coredns.join("Corefile"), &LoadOptions::default()) {
            Err(CorefileError::UnknownPlugin { name: p, .. }) if missing.contains(&&p) => {}
            other => panic!(
                "{name}: pending on {missing:?}, so its Corefile must fail on one of them, got {other:?}"
            ),
        }
        eprintln!(
            "PENDING corpus entry {name}: needs plugin(s) {missing:?}, not in svcnet yet; its {} checks did not run",
            expect.queries.len() + expect.http.len()
        );
        return;
    }

    let ns = Netns::start(dir, &expect.also_run);
    // Ready when every upstream (a Knot started in the background) serves its first zone, the
    // first check's server answers anything (a name no check uses, so no cache entry of a
    // checked name is made early) and every `also-run` server listens. Without the upstreams'
    // check, a loaded machine could run the first forwarded check before its Knot listened.
    let first = &expect.queries[0];
    let server0 = first
        .server
        .clone()
        .unwrap_or_else(|| expect.server.clone());
    let start = Instant::now();
    while !upstreams().iter().all(|(addr, zones)| {
        ns.dig(addr, false, &format!("{}.", zones[0].0), "SOA")
            .is_some_and(|d| d.status == "NOERROR")
    }) || ns.dig(&server0, false, "probe.invalid.", "A").is_none()
        || (0..expect.also_run.len()).any(|i| {
            !ns.log(&format!("also{i}.log"))
                .contains("DNS server listening")
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: no answer from {server0} within 30 s\n{}",
            ns.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut failures = Vec::new();
    // `--validate` agrees, and nothing in the file was accepted with a warning.
    let (ok, report) = ns.validate();
    if !ok || !report.contains(": OK,") || !report.contains(" 0 warning(s)") {
        failures.push(format!("svcnet-dns --validate: {report}"));
    }
    let mut gaps = Vec::new();
    for q in &expect.queries {
        let mismatch = check(&ns, &expect, q);
        match (&q.gap, mismatch) {
            (None, None) => {}
            (None, Some(m)) => failures.push(m),
            (Some(gap), Some(m)) => gaps.push(format!("KNOWN GAP {gap}: {m}")),
            (Some(gap), None) => failures.push(format!(
                "line {}: known gap {gap} is closed (svcnet now answers as CoreDNS): drop the `gap` marker",
                q.line
            )),
        }
    }
    for g in &gaps {
        eprintln!("{name}: {g}");
    }
    for h in &expect.http {
        let body = ns.run(
            "curl",
            &["-s", "--max-time", "3", &format!("http://{}", h.url)],
        );
        if !body.contains(&h.contains) {
            failures.push(format!(
                "line {}: http://{} does not contain {:?}: {:?}",
                h.line,
                h.url,
                h.contains,
                body.chars().take(300).collect::<String>()
            ));
        }
    }
    let logs = ns.logs();
    if logs.contains("panicked") {
        failures.push("a server panicked".to_string());
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} checks failed:\n{}\n\nlogs:\n{logs}",
        failures.len(),
        expect.queries.len() + expect.http.len(),
        failures.join("\n")
    );
    eprintln!(
        "corpus entry {name}: {} checks passed, {} known gaps",
        expect.queries.len() + expect.http.len() - gaps.len(),
        gaps.len()
    );
}

/// Runs one query check; `Some(difference)` when the answer is not the expected one.
fn check(ns: &Netns, expect: &Expect, q: &Query) -> Option<String> {
    let server = q.server.clone().unwrap_or_else(|| expect.server.clone());
    let got = ns.dig(&server, q.tcp, &q.name, &q.qtype);
    if q.status == "NOREPLY" {
        return got.map(|g| {
            format!(
                "line {}: {} {} @{server}: want no reply, got {} {:?}",
                q.line, q.name, q.qtype, g.status, g.answers
            )
        });
    }
    let Some(got) = got else {
        return Some(format!(
            "line {}: {} {} @{server}: no reply",
            q.line, q.name, q.qtype
        ));
    };
    let mut answers: Vec<String> = got.answers.iter().map(|a| a.1.clone()).collect();
    answers.sort();
    if got.status != q.status || answers != q.answers {
        return Some(format!(
            "line {}: {} {} @{server}{}: want {} {:?}, got {} {:?}",
            q.line,
            q.name,
            q.qtype,
            if q.tcp { " (tcp)" } else { "" },
            q.status,
            q.answers,
            got.status,
            answers
        ));
    }
    if let Some(ttl) = q.ttl
        && let Some(bad) = got.answers.iter().find(|a| a.0 != ttl)
    {
        return Some(format!(
            "line {}: {} {}: want TTL {ttl}, got {}",
            q.line, q.name, q.qtype, bad.0
        ));
    }
    None
}

/// Every directory of the corpus, by name.
fn entries() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

macro_rules! corpus {
    ($($test:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_entry($dir);
            }
        )*

        /// Every corpus directory has a test above (a new entry cannot be forgotten).
        #[test]
        fn every_entry_has_a_test() {
            let tested: Vec<&str> = vec![$($dir),*];
            for (name, path) in entries() {
                assert!(
                    tested.contains(&name.as_str()),
                    "corpus entry {name} has no test in corefile_corpus.rs"
                );
                assert!(path.join("expect").exists(), "{name} has no expect file");
            }
        }
    };
}

corpus! {
    kubeadm => "kubeadm",
    k3s => "k3s",
    rke2 => "rke2",
    eks => "eks",
    aks => "aks",
    kubespray => "kubespray",
    kubespray_options => "kubespray-options",
    nodelocaldns => "nodelocaldns",
    docs_stub_domains => "docs-stub-domains",
    docs_upstream_per_domain => "docs-upstream-per-domain",
    docs_rewrite_service => "docs-rewrite-service",
    docs_template => "docs-template",
    docs_bind => "docs-bind",
}

/// [`PENDING_PLUGINS`] names only plugins svcnet still rejects.
#[test]
fn pending_list_is_current() {
    for p in PENDING_PLUGINS {
        assert!(
            !accepted(p),
            "plugin {p} is accepted now: remove it from PENDING_PLUGINS in corefile_corpus.rs so the corpus entries that need it run"
        );
    }
    assert!(accepted("rewrite") && accepted("hosts"), "probe works");
}

#[test]
fn node_cache_substitution() {
    let base = "__PILLAR__DNS__DOMAIN__:53 {\n bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n forward . __PILLAR__CLUSTER__DNS__\n}\n.:53 {\n forward . __PILLAR__UPSTREAM__SERVERS__\n}\n";
    assert_eq!(
        node_cache_corefile(base, "cluster.local", "169.254.20.10", "10.96.0.10"),
        "cluster.local:53 {\n bind 169.254.20.10 \n forward . 10.96.0.10\n}\n.:53 {\n forward . /etc/resolv.conf\n}\n"
    );
}
