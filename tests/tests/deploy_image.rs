//! The container image build (`deploy/image/build-image.sh`): a valid OCI image layout whose
//! config runs `agentctl run`, every blob matching its digest, the layer holding the very binary
//! given, and the same inputs giving the same digest and archive bytes.
//!
//! To stay fast the image is built from the debug `agentctl` and `svcnet-dns`, stripped
//! (`--allow-dynamic`); the static release build is the script's job outside CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};

const EPOCH: u64 = 1_700_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A binary to package: `$<env>`, else the debug build of `package`, built if missing.
fn debug_binary(env: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let bin = repo().join("target/debug").join(package);
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", package])
            .current_dir(repo())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
    }
    bin
}

/// A copy of `binary` without symbols or debug information (an eighth of a debug build's size,
/// which keeps the packing fast); returns its bytes.
fn stripped(binary: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(out)
        .arg(binary)
        .status()
        .expect("running strip");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

struct Build {
    digest: String,
    out: PathBuf,
}

/// Runs the script; `strip`: let it strip debug information itself (otherwise `--no-strip`).
fn build(binary: &Path, dns_binary: &Path, out: &Path, epoch: u64, strip: bool) -> Build {
    let output = Command::new(repo().join("deploy/image/build-image.sh"))
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args((!strip).then_some("--no-strip"))
        .arg("--binary")
        .arg(binary)
        .arg("--dns-binary")
        .arg(dns_binary)
        .arg("--allow-dynamic")
        .arg("--out")
        .arg(out)
        .args(["--tag", "0.0.0-test"])
        .output()
        .expect("running deploy/image/build-image.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "build-image.sh failed:\n{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let digest = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "the last line must be the image digest, got {stdout:?}"
    );
    Build {
        digest,
        out: out.to_path_buf(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the blob a descriptor points at, checking its size and digest.
fn blob(layout: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"));
    assert_eq!(
        Some(bytes.len() as u64),
        desc["size"].as_u64(),
        "size of {digest}"
    );
    assert_eq!(sha256_hex(&bytes), hex, "content of blob {digest}");
    bytes
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON blob")
}

struct Checked {
    layer_tar: Vec<u8>,
    config: Value,
}

/// Walks index.json → manifest → config and layers, checking every digest and media type.
fn check_layout(layout: &Path, digest: &str) -> Checked {
    let marker = json(&std::fs::read(layout.join("oci-layout")).expect("oci-layout"));
    assert_eq!(marker["imageLayoutVersion"], "1.0.0");
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "one image in the layout");
    let desc = &manifests[0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(desc["digest"], digest, "printed digest is the manifest's");
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "0.0.0-test"
    );
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        "docker.io/svcnet/agentctl:0.0.0-test"
    );
    let manifest = json(&blob(layout, desc));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json(&blob(layout, &manifest["config"]));
    let layers = manifest["layers"].as_array().expect("manifest.layers");
    assert_eq!(
        layers.len(),
        1,
        "one layer: the binary and two files in /etc"
    );
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let compressed = blob(layout, &layers[0]);
    let mut layer_tar = Vec::new();
    GzDecoder::new(&compressed[..])
        .read_to_end(&mut layer_tar)
        .expect("gzip layer");
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        diff_ids,
        &vec![Value::String(format!("sha256:{}", sha256_hex(&layer_tar)))],
        "diff_id is the digest of the uncompressed layer"
    );
    Checked { layer_tar, config }
}

#[test]
fn image_layout_is_valid_runs_agentctl_run_and_is_reproducible() {
    for t in ["umoci", "jq", "file", "strip"] {
        if !tool(t) {
            eprintln!("SKIPPED: {t} is not installed (Debian package {t}, see APT_PACKAGES.txt)");
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    // Packed as given (`--no-strip`), so the layer must hold exactly these bytes; the script's
    // own stripping is exercised by the small builds at the end.
    let (binary, dns_binary) = (
        tmp.path().join("agentctl.stripped"),
        tmp.path().join("svcnet-dns.stripped"),
    );
    let binary_bytes = stripped(&debug_binary("SVCNET_AGENTCTL", "agentctl"), &binary);
    let dns_bytes = stripped(&debug_binary("SVCNET_DNS", "svcnet-dns"), &dns_binary);
    // Two builds from the same inputs, side by side (two cores), to compare below.
    let second = std::thread::scope(|scope| {
        let (b, d, out) = (&binary, &dns_binary, tmp.path().join("b"));
        let second = scope.spawn(move || build(b, d, &out, EPOCH, false));
        let first = build(&binary, &dns_binary, &tmp.path().join("a"), EPOCH, false);
        (first, second.join().expect("second build"))
    });
    let (first, second) = second;
    let layout = first.out.join("oci");
    let Checked { layer_tar, config } = check_layout(&layout, &first.digest);

    // The config runs `agentctl run`, as amd64 Linux, stamped with SOURCE_DATE_EPOCH.
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/agentctl"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    for h in config["history"].as_array().expect("history") {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z");
    }

    // The layer: the given binary, executable, owned by root; nothing stamped with another time;
    // entries in sorted order.
    let mut archive = tar::Archive::new(&layer_tar[..]);
    let mut names = Vec::new();
    let mut found_binary = false;
    let mut found_dns = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header().clone();
        assert_eq!(header.mtime().unwrap(), EPOCH, "mtime of {path}");
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "owner of {path}"
        );
        if path == "agentctl" {
            assert_eq!(header.mode().unwrap() & 0o777, 0o755);
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert!(
                content == binary_bytes,
                "the layer's /agentctl is the given binary"
            );
            found_binary = true;
        }
        if path == "svcnet-dns" {
            assert_eq!(header.mode().unwrap() & 0o777, 0o755);
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert!(
                content == dns_bytes,
                "the layer's /svcnet-dns is the given binary"
            );
            found_dns = true;
        }
        names.push(path);
    }
    assert!(found_binary, "no /agentctl in the layer: {names:?}");
    assert!(found_dns, "no /svcnet-dns in the layer: {names:?}");
    for want in ["etc/passwd", "etc/group"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "layer entries in lexical order");
    // The programs the proxy runs to apply iptables rules and ipsets.
    let tools = [
        "usr/sbin/iptables-legacy-restore",
        "usr/sbin/iptables-legacy-save",
        "usr/sbin/iptables-nft-restore",
        "usr/sbin/iptables-nft-save",
        "usr/sbin/ip6tables-legacy-restore",
        "usr/sbin/ip6tables-nft-restore",
        "usr/sbin/ipset",
    ];
    for want in tools {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/usr/sbin:/"])
    );

    // The entrypoint and command, taken from the config and run from the layer, are a working
    // `agentctl run` (asked for its help, so nothing starts).
    let extracted = tmp.path().join("rootfs");
    tar::Archive::new(&layer_tar[..])
        .unpack(&extracted)
        .unwrap();
    let entrypoint = config["config"]["Entrypoint"][0].as_str().unwrap();
    let cmd: Vec<&str> = config["config"]["Cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let out = Command::new(extracted.join(entrypoint.trim_start_matches('/')))
        .args(&cmd)
        .arg("--help")
        .output()
        .expect("running the image's entrypoint");
    assert!(
        out.status.success(),
        "{entrypoint} {cmd:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Those tools start inside the image's root (their shared libraries and loader are there):
    // checked with chroot, which needs root.
    if is_root() {
        for (tool, args) in [
            ("/usr/sbin/iptables-legacy-restore", &["--version"][..]),
            ("/usr/sbin/iptables-nft-save", &["--version"][..]),
            ("/usr/sbin/ip6tables-nft-restore", &["--version"][..]),
            ("/usr/sbin/ipset", &["version"][..]),
        ] {
            let out = Command::new("chroot")
                .arg(&extracted)
                .arg(tool)
                .args(args)
                .output()
                .expect("running chroot");
            assert!(
                out.status.success(),
                "{tool} does not run inside the image: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!("not root: the netfilter tools are not started inside the image root");
    }

    let out = Command::new(extracted.join("svcnet-dns"))
        .arg("--help")
        .output()
        .expect("running /svcnet-dns from the layer");
    assert!(out.status.success(), "/svcnet-dns --help failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--corefile"));

    // Same inputs, same image and the same archive bytes; another SOURCE_DATE_EPOCH, another image.
    assert_eq!(first.digest, second.digest, "rebuild gives the same digest");
    let archive_name = "svcnet-0.0.0-test.oci.tar";
    let a = std::fs::read(first.out.join(archive_name)).expect("archive");
    let b = std::fs::read(second.out.join(archive_name)).expect("archive");
    assert!(a == b, "rebuild gives the same archive bytes");
    // Another SOURCE_DATE_EPOCH gives another image; small binaries suffice to show it, through
    // the script's default path (stripping debug information itself).
    let small = Path::new("/bin/true");
    let third = build(small, small, &tmp.path().join("c"), EPOCH, true);
    let fourth = build(small, small, &tmp.path().join("d"), EPOCH + 1, true);
    assert_ne!(
        third.digest, fourth.digest,
        "the timestamp comes from SOURCE_DATE_EPOCH"
    );

    // The archive is the layout, tarred: the same index and blobs.
    let unpacked = tmp.path().join("unpacked");
    tar::Archive::new(&a[..]).unpack(&unpacked).unwrap();
    check_layout(&unpacked, &first.digest);
    if tool("skopeo") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .arg(format!(
                "oci-archive:{}",
                first.out.join(archive_name).display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo cannot read the archive: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(format!("sha256:{}", sha256_hex(&out.stdout)), first.digest);
    } else {
        eprintln!("skopeo not installed: archive checked without it");
    }
}

#[test]
fn image_build_refuses_a_dynamic_binary_without_allow_dynamic() {
    if !tool("umoci") || !tool("file") || !tool("jq") {
        eprintln!("SKIPPED: umoci, file or jq is not installed");
        return;
    }
    // /bin/sh is dynamically linked on Debian: not fit for a FROM-scratch image.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("deploy/image/build-image.sh"))
        .args([
            "--binary",
            "/bin/sh",
            "--dns-binary",
            "/bin/sh",
            "--no-archive",
            "--out",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not statically linked"), "{stderr}");
}
