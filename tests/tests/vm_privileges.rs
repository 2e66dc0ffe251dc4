//! Least privilege for the node agent, in a real kernel (user-mode-linux guest; issue 19 item 9).
//!
//! The agent runs as the `svcnet-agent` DaemonSet runs it (`deploy/kustomize/base/node-agent.yaml`, read here):
//! `agentctl sysctls` first with full privileges (the init container), then `agentctl run --proxy` as root with
//! only the capabilities the manifest adds (bounding, permitted and effective sets; inheritable and ambient empty,
//! as containerd sets them), no_new_privs (`allowPrivilegeEscalation: false`), a seccomp filter equivalent to
//! containerd's `RuntimeDefault` profile (`tests/src/bin/seccomp-exec.rs`), and `/proc/sys` read-only in its own
//! mount namespace (runc's `readonlyPaths`). Checked: the restrictions are in force on the process; the IPVS
//! virtual servers, ipsets and iptables rules are programmed, traffic flows, and a Service added later is
//! programmed too; no sysctl warning (the init container set them). Controls: without NET_ADMIN the agent fails
//! with an error naming CAP_NET_ADMIN; without NET_RAW, iptables-legacy (which the agent runs) cannot work.
//!
//! Skipped (passes trivially, says so) where user-mode-linux is not installed, like the other `vm_*` tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use svcnet_tests::vm::cluster::{self, ServiceSpec};
use svcnet_tests::vm::guest::{self, Background, PodNetwork};
use svcnet_tests::vm::{self, Check, Vm};

const AGENTCTL_BIN: &str = "SVCNET_AGENTCTL_BIN";
const SECCOMP_BIN: &str = "SVCNET_SECCOMP_EXEC_BIN";
const WORK: &str = "/tmp/svcnet-privileges";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const ADMIN: &str = "127.0.0.1:9900";

struct Fixture {
    _net: PodNetwork,
    agent: Option<Background>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn env_path(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set by the host"))
}

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// The node agent DaemonSet's pod spec, from the Kustomize source.
fn node_agent_pod() -> anyhow::Result<Value> {
    let path = svcnet_tests::bins::repo_root().join("deploy/kustomize/base/node-agent.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let ds: Value = serde_saphyr::from_str(&text).with_context(|| format!("{}", path.display()))?;
    Ok(ds["spec"]["template"]["spec"].clone())
}

/// `capabilities.add` of the agent container, in setpriv's spelling (`net_admin`).
fn manifest_capabilities() -> anyhow::Result<Vec<String>> {
    let pod = node_agent_pod()?;
    let sc = &pod["containers"][0]["securityContext"];
    ensure!(
        sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "the agent container does not drop ALL: {sc}"
    );
    let caps: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .context("capabilities.add")?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_lowercase)
        .collect();
    ensure!(!caps.is_empty(), "no capabilities added: {sc}");
    Ok(caps)
}

/// The KubeProxyConfiguration of the `svcnet-proxy` ConfigMap the DaemonSet mounts.
fn manifest_proxy_config() -> anyhow::Result<String> {
    let path = svcnet_tests::bins::repo_root().join("deploy/kustomize/base/config.yaml");
    let text = std::fs::read_to_string(&path)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    docs.iter()
        .find(|d| d["metadata"]["name"] == "svcnet-proxy")
        .and_then(|d| d["data"]["config.conf"].as_str())
        .map(str::to_owned)
        .context("ConfigMap svcnet-proxy with config.conf")
}

/// `sh -c` script that runs `command` as the DaemonSet's container would: `/proc/sys` read-only in a private
/// mount namespace, root with only `caps` (bounding = permitted = effective; inheritable and ambient empty),
/// no_new_privs, then the RuntimeDefault-equivalent seccomp filter.
fn contained(caps: &[String], command: &[&str]) -> anyhow::Result<Vec<String>> {
    let bounding = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let seccomp = env_path(SECCOMP_BIN)?;
    let quoted: Vec<String> = command.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys /proc/sys && \
         exec setpriv --bounding-set {bounding} --inh-caps -all --no-new-privs -- {seccomp} -- {}",
        quoted.join(" ")
    );
    Ok(vec![
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        script,
    ])
}

/// Runs `command` contained with `caps` to completion; returns (success, stdout + stderr).
fn run_contained(caps: &[String], command: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new("unshare")
        .args(contained(caps, command)?)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn agent_args(admin: &str) -> Vec<String> {
    [
        "run",
        "--proxy",
        "--manifests",
        &format!("{WORK}/cluster"),
        "--proxy-config",
        &format!("{WORK}/config.conf"),
        "--node-name",
        "node-a",
        "--admin",
        admin,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    for (name, last) in [("pod-a", 10), ("pod-b", 11)] {
        net.add_pod(name, pod_ip(last))?;
    }
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    let dir = Path::new(WORK).join("cluster");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        Path::new(WORK).join("config.conf"),
        manifest_proxy_config()?,
    )?;
    cluster::write_node(&dir, "node-a", NODE_IP)?;
    let ab = [pod_ip(10), pod_ip(11)];
    ServiceSpec::cluster_ip("web", Ipv4Addr::new(10, 96, 10, 10), &ab).write_to(&dir)?;
    ServiceSpec::cluster_ip("web-np", Ipv4Addr::new(10, 96, 10, 12), &ab)
        .with_node_port(30080)
        .write_to(&dir)?;
    // An iptables-legacy host (this kernel has no nf_tables ip/inet families), as the proxy's detection expects.
    guest::run(
        "iptables-legacy",
        &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    )?;
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        _net: net,
        agent: None,
    });
    Ok(())
}

/// The init container: `agentctl sysctls` with full privileges sets what the agent cannot.
fn init_container_sets_the_sysctls() -> anyhow::Result<()> {
    let _guard = fixture()?;
    guest::sysctl("net/ipv4/ip_forward", "0")?;
    let out = guest::run(
        &env_path(AGENTCTL_BIN)?,
        &["sysctls", "--proxy-config", &format!("{WORK}/config.conf")],
    )?;
    for (path, want) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "1"),
    ] {
        let got = guest::read_sysctl(path)?;
        ensure!(got == want, "{path} = {got} after agentctl sysctls:\n{out}");
    }
    // The same command without write access to /proc/sys says what it could not set.
    guest::sysctl("net/ipv4/ip_forward", "0")?;
    let caps = manifest_capabilities()?;
    let (ok, out) = run_contained(
        &caps,
        &[
            &env_path(AGENTCTL_BIN)?,
            "sysctls",
            "--proxy-config",
            &format!("{WORK}/config.conf"),
        ],
    )?;
    ensure!(
        !ok && out.contains("/proc/sys/net/ipv4/ip_forward") && out.contains("privileged"),
        "agentctl sysctls on a read-only /proc/sys: ok={ok}\n{out}"
    );
    guest::sysctl("net/ipv4/ip_forward", "1")?;
    Ok(())
}

/// What the contained launcher really gives a process: the DaemonSet's capabilities only, no_new_privs,
/// seccomp filtering, a read-only /proc/sys, and namespaces refused (as RuntimeDefault refuses them).
fn the_container_restrictions_hold() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let caps = manifest_capabilities()?;
    let (ok, status) = run_contained(&caps, &["cat", "/proc/self/status"])?;
    ensure!(ok, "cat in the container: {status}");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mut mask = 0u64;
    for c in &caps {
        mask |= 1
            << match c.as_str() {
                "net_admin" => 12,
                "net_raw" => 13,
                "net_bind_service" => 10,
                "sys_module" => 16,
                other => bail!("capability {other} not known to this test"),
            };
    }
    let want = format!("{mask:016x}");
    for name in ["CapEff:", "CapPrm:", "CapBnd:"] {
        ensure!(
            field(name) == want,
            "{name} {} (want {want}):\n{status}",
            field(name)
        );
    }
    ensure!(field("CapInh:") == "0000000000000000", "CapInh:\n{status}");
    ensure!(field("NoNewPrivs:") == "1", "no_new_privs:\n{status}");
    ensure!(field("Seccomp:") == "2", "seccomp filter mode:\n{status}");
    let (ok, out) = run_contained(
        &caps,
        &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    )?;
    ensure!(
        !ok && out.contains("Read-only"),
        "/proc/sys writable: {out}"
    );
    let (ok, out) = run_contained(&caps, &["unshare", "--net", "true"])?;
    ensure!(!ok, "unshare allowed under the filter: {out}");
    Ok(())
}

/// NET_RAW is needed: iptables-legacy opens a raw socket.
fn iptables_legacy_needs_net_raw() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let caps = manifest_capabilities()?;
    let (ok, out) = run_contained(&caps, &["iptables-legacy-save", "-t", "nat"])?;
    ensure!(ok, "iptables-legacy-save with {caps:?}: {out}");
    let without: Vec<String> = caps.iter().filter(|c| *c != "net_raw").cloned().collect();
    let (ok, out) = run_contained(&without, &["iptables-legacy-save", "-t", "nat"])?;
    ensure!(!ok, "iptables-legacy-save worked without NET_RAW: {out}");
    println!("  without NET_RAW: {}", out.trim());
    Ok(())
}

/// The agent as the DaemonSet runs it programs IPVS, ipsets and iptables rules.
fn contained_agent_programs_the_kernel() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let caps = manifest_capabilities()?;
    let mut command = vec![env_path(AGENTCTL_BIN)?];
    command.extend(agent_args(ADMIN));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let args = contained(&caps, &command)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Background::spawn("agent-contained", "unshare", &args)?;
    let admin: SocketAddr = ADMIN.parse()?;
    guest::wait_http(admin, "/ready", Duration::from_secs(60)).map_err(|e| {
        let alive = agent.is_running();
        e.context(format!("agent running: {alive}; log:\n{}", agent.log()))
    })?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))?;
    ensure!(
        status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"),
        "the agent runs unfiltered:\n{status}"
    );
    let table = guest::ipvsadm_table()?;
    for want in [
        "TCP 10.96.10.10:80 rr -> 10.244.1.10:8080 Masq 1",
        "TCP 10.96.10.12:80 rr -> 10.244.1.11:8080 Masq 1",
        "TCP 192.168.1.10:30080 rr -> 10.244.1.11:8080 Masq 1",
    ] {
        ensure!(
            table.iter().any(|l| l == want),
            "{want:?} missing: {table:#?}\nlog:\n{}",
            agent.log()
        );
    }
    // The ipsets and iptables rules come after the IPVS sync (rate-limited); wait for them.
    guest::wait_until("ipsets and iptables rules", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(200));
        let sets = guest::run("ipset", &["list", "KUBE-CLUSTER-IP"]).unwrap_or_default();
        let nat = guest::run("iptables-legacy-save", &["-t", "nat"]).unwrap_or_default();
        Ok(sets.contains("10.96.10.10,tcp:80")
            && nat.contains("-A KUBE-SERVICES")
            && nat.contains("--match-set KUBE-CLUSTER-IP"))
    })
    .map_err(|e| {
        e.context(format!(
            "ipsets/iptables not programmed; log:\n{}",
            agent.log()
        ))
    })?;
    let name = guest::http_get("10.96.10.10:80".parse()?, "/name", Duration::from_secs(2))?;
    ensure!(
        name.starts_with("pod-"),
        "traffic through the cluster IP: {name:?}"
    );
    // A Service added while running: a later sync under the same restrictions.
    let dir = PathBuf::from(WORK).join("cluster");
    ServiceSpec::cluster_ip("late", Ipv4Addr::new(10, 96, 10, 20), &[pod_ip(10)]).write_to(&dir)?;
    guest::wait_until("the late Service", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(200));
        let table = guest::ipvsadm_table().unwrap_or_default();
        let sets = guest::run("ipset", &["list", "KUBE-CLUSTER-IP"]).unwrap_or_default();
        Ok(table
            .iter()
            .any(|l| l == "TCP 10.96.10.20:80 rr -> 10.244.1.10:8080 Masq 1")
            && sets.contains("10.96.10.20,tcp:80"))
    })
    .map_err(|e| {
        e.context(format!(
            "the late Service was not programmed; log:\n{}",
            agent.log()
        ))
    })?;
    let log = agent.log();
    for bad in [
        "setting sysctl failed",
        "Operation not permitted",
        "panicked",
    ] {
        ensure!(
            !log.contains(bad),
            "{bad:?} in the contained agent's log:\n{log}"
        );
    }
    guard.as_mut().context("fixture")?.agent = Some(agent);
    Ok(())
}

/// The control: without NET_ADMIN the agent fails, and says which capability is missing.
fn without_net_admin_the_error_names_it() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    if let Some(agent) = guard.as_mut().and_then(|f| f.agent.take()) {
        agent.stop(Duration::from_secs(10));
    }
    let caps: Vec<String> = manifest_capabilities()?
        .into_iter()
        .filter(|c| c != "net_admin")
        .collect();
    let mut command = vec![env_path(AGENTCTL_BIN)?];
    command.extend(agent_args("127.0.0.1:9901"));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let args = contained(&caps, &command)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Background::spawn("agent-no-net-admin", "unshare", &args)?;
    // It exits, or stays unready reporting the error; either way the log names the capability.
    let named = guest::wait_until(
        "an error naming CAP_NET_ADMIN",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(100));
            Ok(agent.log().contains("CAP_NET_ADMIN"))
        },
    );
    let running = agent.is_running();
    let log = agent.stop(Duration::from_secs(5));
    named.map_err(|e| {
        e.context(format!(
            "no error naming CAP_NET_ADMIN (running: {running}); log:\n{log}"
        ))
    })?;
    println!(
        "  without NET_ADMIN: {}",
        log.lines()
            .find(|l| l.contains("CAP_NET_ADMIN"))
            .unwrap_or_default()
    );
    Ok(())
}

#[test]
fn node_agent_least_privilege_kernel() {
    let mut machine = Vm::new().timeout(Duration::from_secs(240));
    if !vm::in_guest() && vm::uml_available() {
        let agentctl = vm::cargo_binary("agentctl", "agentctl")
            .unwrap_or_else(|e| panic!("building agentctl: {e:#}"));
        let seccomp = vm::cargo_binary("svcnet-tests", "seccomp-exec")
            .unwrap_or_else(|e| panic!("building seccomp-exec: {e:#}"));
        machine = machine
            .env(AGENTCTL_BIN, agentctl)
            .env(SECCOMP_BIN, seccomp)
            .env("RUST_LOG", "info");
    }
    vm::run_suite(
        "node_agent_least_privilege_kernel",
        machine,
        &[
            Check::new("setup", setup),
            Check::new(
                "init_container_sets_the_sysctls",
                init_container_sets_the_sysctls,
            ),
            Check::new(
                "the_container_restrictions_hold",
                the_container_restrictions_hold,
            ),
            Check::new(
                "iptables_legacy_needs_net_raw",
                iptables_legacy_needs_net_raw,
            ),
            Check::new(
                "contained_agent_programs_the_kernel",
                contained_agent_programs_the_kernel,
            ),
            Check::new(
                "without_net_admin_the_error_names_it",
                without_net_admin_the_error_names_it,
            ),
        ],
    );
}
