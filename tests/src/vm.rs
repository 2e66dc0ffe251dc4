//! Running code on a real Linux kernel (with IPVS, dummy, veth, ipset, iptables-legacy) inside a throw-away
//! user-mode-linux guest, through `tests/vm/run.sh`.
//!
//! The guest's root is the host's `/` (read-only, with a tmpfs overlay), so binaries built on the host run there
//! unchanged. One guest boot costs about 2 s, so a test binary boots once and runs all its kernel checks inside:
//!
//! ```no_run
//! use svcnet_tests::vm::{self, Check};
//!
//! fn ipvs_module_answers() -> anyhow::Result<()> {
//!     vm::guest::run("ipvsadm", &["-Ln"])?;
//!     Ok(())
//! }
//!
//! #[test]
//! fn kernel() {
//!     vm::run_suite("kernel", vm::Vm::new(), &[Check::new("ipvs_module_answers", ipvs_module_answers)]);
//! }
//! ```
//!
//! On the host `run_suite` boots the guest and re-executes the same test binary there (filtered to the same test,
//! with a marker variable set); inside the guest it runs every check, reports each one, and fails if any failed.

pub mod cluster;
pub mod guest;

use std::ffi::OsString;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where Debian's `user-mode-linux` package installs the guest kernel.
pub const UML_KERNEL: &str = "/usr/bin/linux.uml";

/// Environment variable set inside the guest when a test binary re-executes itself there.
pub const GUEST_MARKER: &str = "SVCNET_IN_VM";

/// Optional comma-separated list of check names: only those run in the guest (for debugging one check).
pub const CHECK_FILTER: &str = "SVCNET_VM_CHECKS";

/// The guest kernel in use: `$SVCNET_UML` if set, else [`UML_KERNEL`].
pub fn kernel_path() -> PathBuf {
    std::env::var_os("SVCNET_UML").map_or_else(|| PathBuf::from(UML_KERNEL), PathBuf::from)
}

/// Whether the user-mode-linux kernel is installed, i.e. whether kernel tests can run on this machine.
pub fn uml_available() -> bool {
    kernel_path().is_file()
}

/// Whether this process runs inside a guest started by [`run_suite`].
pub fn in_guest() -> bool {
    std::env::var_os(GUEST_MARKER).is_some()
}

/// Path of the harness script `tests/vm/run.sh`.
pub fn run_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vm")
        .join("run.sh")
}

/// What a guest run produced.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The command's standard output.
    pub stdout: String,
    /// The command's standard error, followed by any harness messages (console log if the guest failed to boot).
    pub stderr: String,
    /// The command's exit code; 124 = timed out, 125 = harness failure (see `tests/vm/run.sh`).
    pub exit_code: i32,
    /// Wall time from starting the kernel until it powered off.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Settings for one guest boot.
#[derive(Debug, Clone)]
pub struct Vm {
    mem: String,
    timeout: Duration,
    env: Vec<(String, OsString)>,
    network: Option<(String, String)>,
}

impl Default for Vm {
    fn default() -> Self {
        Self::new()
    }
}

impl Vm {
    /// 256 MiB of guest memory, a 180 s timeout, no extra environment.
    pub fn new() -> Self {
        Self {
            mem: "256M".to_owned(),
            timeout: Duration::from_secs(180),
            env: Vec::new(),
            network: None,
        }
    }

    /// Connects the guest's `eth0` to the host's tap device `tap` (see [`HostTap`]), with
    /// `guest_cidr` (e.g. `10.231.0.2/30`) as its address.
    pub fn network(mut self, tap: &str, guest_cidr: &str) -> Self {
        self.network = Some((tap.to_owned(), guest_cidr.to_owned()));
        self
    }

    /// Guest memory in the kernel's syntax (`256M`, `1G`).
    pub fn mem(mut self, mem: &str) -> Self {
        mem.clone_into(&mut self.mem);
        self
    }

    /// How long the guest may run before it is stopped (SIGTERM to the UML process).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets an environment variable for the command in the guest.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Boots a guest, runs `program args...` in it (as root, cwd `/`), and returns its output once the guest has
    /// powered off. Errors only when the harness itself cannot be started; a failing command is an exit code.
    pub fn run(&self, program: &Path, args: &[OsString]) -> anyhow::Result<GuestOutput> {
        let script = run_script();
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("-m")
            .arg(&self.mem)
            .arg("-t")
            .arg(self.timeout.as_secs().max(1).to_string());
        for (name, value) in &self.env {
            let mut kv = OsString::from(format!("{name}="));
            kv.push(value);
            cmd.arg("-e").arg(kv);
        }
        if let Some((tap, cidr)) = &self.network {
            cmd.arg("-n").arg(format!("{tap}={cidr}"));
        }
        cmd.arg("--").arg(program).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        // Read both pipes concurrently so a chatty guest cannot block on a full pipe.
        let mut stderr_pipe = child.stderr.take().context("stderr pipe")?;
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut buf);
            buf
        });
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .context("stdout pipe")?
            .read_to_end(&mut stdout)
            .context("reading guest stdout")?;
        let status = child.wait().context("waiting for tests/vm/run.sh")?;
        let stderr = stderr_reader.join().unwrap_or_default();
        Ok(GuestOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_code: status.code().unwrap_or(125),
            elapsed: started.elapsed(),
        })
    }
}

/// A tap device on the host, up with an address, for a guest's `eth0` ([`Vm::network`]):
/// the guest reaches host services bound to that address (e.g. a fake API server outside the
/// guest's one CPU). Needs root (`CAP_NET_ADMIN`) and `/dev/net/tun`; removed on drop.
#[derive(Debug)]
pub struct HostTap {
    name: String,
}

impl HostTap {
    /// Creates tap device `name` with `host_cidr` (e.g. `10.231.0.1/30`) and sets it up. Fails
    /// if the device exists already (another guest with a network is running).
    pub fn create(name: &str, host_cidr: &str) -> anyhow::Result<Self> {
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .with_context(|| format!("running ip {}", args.join(" ")))?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        let tap = Self {
            name: name.to_owned(),
        };
        ip(&["addr", "add", host_cidr, "dev", name])?;
        ip(&["link", "set", name, "up"])?;
        Ok(tap)
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// One named kernel check of a suite; it fails by returning an error or panicking.
#[derive(Clone, Copy)]
pub struct Check {
    /// Name printed in the report and usable in `SVCNET_VM_CHECKS`.
    pub name: &'static str,
    /// The check itself, run inside the guest.
    pub run: fn() -> anyhow::Result<()>,
}

impl Check {
    /// A check named `name`.
    pub const fn new(name: &'static str, run: fn() -> anyhow::Result<()>) -> Self {
        Self { name, run }
    }
}

/// The environment variable that carries the host-built `svcnet-proxy` binary's path into the
/// guest (set by [`run_proxy_suite`]).
pub const PROXY_BIN: &str = "SVCNET_PROXY_BIN";

/// Like [`run_suite`] for suites that run `svcnet-proxy` in the guest: on the host, builds it,
/// passes its path in [`PROXY_BIN`] (with `RUST_LOG=info`), boots with `timeout`, and prints how
/// long the `label` suite took.
pub fn run_proxy_suite(test_name: &str, label: &str, timeout: Duration, checks: &[Check]) {
    if in_guest() {
        run_suite(test_name, Vm::new(), checks);
        return;
    }
    let mut machine = Vm::new().timeout(timeout);
    if uml_available() {
        let bin = cargo_binary("svcnet-proxy", "svcnet-proxy")
            .unwrap_or_else(|e| panic!("building svcnet-proxy: {e:#}"));
        machine = machine.env(PROXY_BIN, bin).env("RUST_LOG", "info");
    }
    let started = Instant::now();
    run_suite(test_name, machine, checks);
    println!(
        "{label} suite took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Runs `checks` inside one guest boot. Call it from a `#[test] fn <test_name>()`.
///
/// On the host: skips with a printed reason if the UML kernel is absent; otherwise boots `vm`, re-executes this
/// test binary in it (`<test_name> --exact`), prints the guest's report and panics unless every check passed.
/// In the guest: runs each check (all of them, even after a failure), prints `check NAME ... ok|FAILED` lines with
/// timings and errors, and panics at the end if any failed.
pub fn run_suite(test_name: &str, vm: Vm, checks: &[Check]) {
    if in_guest() {
        run_checks_here(checks);
        return;
    }
    if !uml_available() {
        eprintln!(
            "SKIPPED {test_name}: {} not found; the kernel tests need Debian's user-mode-linux package",
            kernel_path().display()
        );
        return;
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut vm = vm.env(GUEST_MARKER, "1");
    if let Some(filter) = std::env::var_os(CHECK_FILTER) {
        vm = vm.env(CHECK_FILTER, filter);
    }
    // --include-ignored: a suite may be an #[ignore]d test (the benchmark); --exact keeps it to this one test.
    let args: Vec<OsString> = [
        test_name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let out = vm
        .run(&exe, &args)
        .unwrap_or_else(|e| panic!("cannot start the guest: {e:#}"));
    // Printed through the test harness: shown for failures, or always with --nocapture.
    println!("{}", out.stdout);
    eprintln!("{}", out.stderr);
    println!(
        "guest for {test_name} ran {:.1} s, exit code {}",
        out.elapsed.as_secs_f64(),
        out.exit_code
    );
    match out.exit_code {
        0 => {}
        124 => panic!("the guest timed out (see the output above for the last check that started)"),
        125 => panic!("the guest could not run the checks (harness failure, see the output above)"),
        code => {
            let failed: Vec<&str> = out
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("check ")?.strip_suffix(" FAILED"))
                .collect();
            panic!("kernel checks failed in the guest (exit code {code}): {failed:?}")
        }
    }
}

fn run_checks_here(checks: &[Check]) {
    let filter: Option<Vec<String>> = std::env::var(CHECK_FILTER)
        .ok()
        .map(|f| f.split(',').map(|s| s.trim().to_owned()).collect());
    let mut failed = Vec::new();
    let mut ran = 0;
    for check in checks {
        if let Some(filter) = &filter
            && !filter.iter().any(|f| f == check.name)
        {
            continue;
        }
        ran += 1;
        println!("check {} ... started", check.name);
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(check.run));
        let ms = started.elapsed().as_millis();
        match result {
            Ok(Ok(())) => println!("check {} ok ({ms} ms)", check.name),
            Ok(Err(e)) => {
                println!("  error: {e:#}");
                println!("check {} FAILED", check.name);
                failed.push(check.name);
            }
            Err(_) => {
                println!("  panicked (message above)");
                println!("check {} FAILED", check.name);
                failed.push(check.name);
            }
        }
    }
    assert!(ran > 0, "no check matched {CHECK_FILTER}={filter:?}");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}

/// Builds a binary of this workspace with cargo (a no-op when it is up to date) and returns its path, so a guest
/// can run it. Call it on the host before booting: `cargo_binary("svcnet-proxy", "svcnet-proxy")`. Uses the same
/// target directory and profile as the running test binary.
pub fn cargo_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the running test binary")?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not in target/<profile>/deps")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .context("profile directory name")?
        .to_owned();
    let target_dir = profile_dir
        .parent()
        .context("target directory")?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build -p {package} --bin {bin}"))?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {bin} failed ({status})");
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        bail!("cargo built {bin} but {} does not exist", path.display());
    }
    Ok(path)
}
