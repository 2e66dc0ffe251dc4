//! Runs the embedding examples of `svcnet-examples` (built by `cargo test --workspace` into
//! `target/debug/examples/`) against the demo cluster and checks what they print.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` (or `cargo build -p svcnet-examples --examples`) builds it",
        bin.display()
    );
    bin
}

fn cluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("examples/cluster")
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .arg(cluster())
        .args(args)
        .output()
        .expect("running example");
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn dns_in_process_answers_from_the_zone() {
    let out = run(
        "dns_in_process",
        &[
            "demoapp.default.svc.cluster.local/A",
            "_http._tcp.demoapp-svc.default.svc.cluster.local/SRV",
            "nope.default.svc.cluster.local/A",
            "example.org/A",
        ],
    );
    assert!(
        out.contains("demoapp.default.svc.cluster.local. 5 IN A 10.96.10.10"),
        "{out}"
    );
    assert!(out.contains("IN SRV 0 100 80 demoapp-svc.default.svc.cluster.local."));
    assert!(out.contains("status: NXDomain"), "{out}");
    assert!(out.contains("not in a served zone"), "{out}");
}

#[test]
fn ipvs_plan_prints_the_table_for_the_snapshot() {
    let out = run("ipvs_plan", &["node-a", "192.168.1.10"]);
    assert!(out.starts_with("IP Virtual Server version"), "{out}");
    assert!(out.contains("TCP  10.96.10.12:80 rr"), "{out}");
    assert!(
        out.contains("TCP  192.168.1.10:30080 rr"),
        "node port on the node IP"
    );
    assert!(out.contains("  -> 10.244.1.10:80"), "{out}");
}

#[test]
fn watch_cache_prints_a_change() {
    let dir = std::env::temp_dir().join(format!("svcnet-watch-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(cluster()).unwrap() {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let mut child = Command::new(example("watch_cache"))
        .arg(&dir)
        .env("SVCNET_EXAMPLE_MAX_CHANGES", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn watch_cache");
    // Watchdog: a hung example must not hang the test run.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    // Wait for the initial sync line, then remove a namespace's manifests.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert!(first.starts_with("synced "), "{first}");
    let started = Instant::now();
    std::fs::remove_file(dir.join("demo.yaml")).unwrap();
    let lines: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "watch_cache: {status}");
    eprintln!("change reported within {:?}", started.elapsed());
    let text = lines.join("\n");
    assert!(text.contains("service demo/web removed"), "{text}");
    assert!(
        text.contains("service demo/demoapp-externalip-svc removed"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
