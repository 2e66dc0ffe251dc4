//! DNS over TLS and DNS over HTTPS served by hickory-server's listeners behind the plugin
//! chain: `kdig +tls` and `kdig +https` against `tls://` and `https://` server blocks, a
//! `forward . tls://` to a second svcnet-dns serving DoT, a reload that applies a new
//! certificate (and keeps the old one when the new file is bad), and a missing certificate
//! file reported with its Corefile position.
//!
//! Needs `kdig` (Debian package knot-dnsutils), `openssl`, and the binary built
//! (`cargo build --workspace --bins`). Certificates are generated at test time.

mod corefile_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corefile_support::{RTYPE_A, Server, example_cluster, free_port, query};

const T: Duration = Duration::from_secs(3);

/// A CA and a certificate for `dns.test` (and 127.0.0.1) signed by it.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki(dir: &Path, tag: &str) -> Pki {
    let f = |s: &str| format!("{tag}-{s}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let subj = format!("/CN={tag} test CA");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (cak, cap) = (f("ca.key"), f("ca.pem"));
    args.extend(["-days", "2", "-subj", &subj, "-keyout", &cak, "-out", &cap]);
    openssl(dir, &args);
    let (key, csr) = (f("key.pem"), f("csr.pem"));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=dns.test", "-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let ext = f("ext.cnf");
    std::fs::write(dir.join(&ext), "subjectAltName=DNS:dns.test,IP:127.0.0.1\n").unwrap();
    let cert = f("cert.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &cap,
            "-CAkey",
            &cak,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    Pki {
        ca: dir.join(cap),
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// `kdig +short` over `transport` (`+tls` or `+https`) verifying the server against `ca` and
/// the name `dns.test`: the answer lines, or `None` when kdig got no answer.
fn kdig(port: u16, transport: &str, ca: &Path, name: &str) -> Option<Vec<String>> {
    let out = Command::new("kdig")
        .arg("@127.0.0.1")
        .args(["-p", &port.to_string()])
        .arg(transport)
        .arg(format!("+tls-ca={}", ca.display()))
        .arg("+tls-hostname=dns.test")
        .args(["+short", "+timeout=2", "+retry=0"])
        .args([name, "A"])
        .output()
        .expect("run kdig (package knot-dnsutils)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("failed") {
        eprintln!("kdig {transport} {name}: {stderr}");
        return None;
    }
    Some(stdout.lines().map(str::to_string).collect())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An encrypted server's Corefile: DoT on `tls`, DoH on `https`, the example cluster's zone
/// and one hosts entry.
fn encrypted_corefile(tls: u16, https: u16, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "tls://.:{tls} https://.:{https} {{\n    bind 127.0.0.1\n    tls {} {}\n    hosts {{\n        192.0.2.10 www.example.test\n        fallthrough\n    }}\n    kubernetes cluster.local\n{extra}}}\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn kdig_over_tls_and_https_and_forward_to_a_dot_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a");
    let b = pki(dir.path(), "b");
    let (p_tls, p_https) = (free_port(), free_port());
    let cf = write(
        dir.path(),
        "Corefile.upstream",
        &encrypted_corefile(p_tls, p_https, &a.cert, &a.key, ""),
    );
    let mut upstream = Server::start("dot", &cf, &example_cluster(), true);
    upstream.wait_log(T, "listening");

    // DoT and DoH with kdig, the server verified against its CA and name.
    let wait = |port, transport, name| {
        let start = Instant::now();
        loop {
            if let Some(lines) = kdig(port, transport, &a.ca, name) {
                return lines;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{transport}: no answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(
        wait(p_tls, "+tls", "kubernetes.default.svc.cluster.local"),
        vec!["10.96.0.1"]
    );
    assert_eq!(wait(p_tls, "+tls", "www.example.test"), vec!["192.0.2.10"]);
    assert_eq!(
        wait(p_https, "+https", "kubernetes.default.svc.cluster.local"),
        vec!["10.96.0.1"]
    );
    assert_eq!(
        wait(p_https, "+https", "www.example.test"),
        vec!["192.0.2.10"]
    );
    // NXDOMAIN comes back as an empty answer, not a failure.
    assert_eq!(
        wait(p_tls, "+tls", "nope.default.svc.cluster.local"),
        Vec::<String>::new()
    );
    // A client trusting another CA refuses the server's certificate.
    assert_eq!(kdig(p_tls, "+tls", &b.ca, "www.example.test"), None);
    assert_eq!(kdig(p_https, "+https", &b.ca, "www.example.test"), None);

    // A plain DNS server forwarding over TLS to it.
    let p_dns = free_port();
    let fwd = write(
        dir.path(),
        "Corefile.forward",
        &format!(
            ".:{p_dns} {{\n    bind 127.0.0.1\n    forward . tls://127.0.0.1:{p_tls} {{\n        tls_servername dns.test\n        tls {}\n    }}\n}}\n",
            a.ca.display()
        ),
    );
    let _forwarder = Server::start("fwd", &fwd, &example_cluster(), true);
    let dns: SocketAddr = ([127, 0, 0, 1], p_dns).into();
    for _ in 0..5 {
        let via = query(dns, "www.example.test", RTYPE_A, T).expect("an answer");
        assert_eq!(via.rcode, 0);
        assert_eq!(via.addrs(), vec!["192.0.2.10"]);
    }
    let k = query(dns, "demoapp.default.svc.cluster.local", RTYPE_A, T).expect("an answer");
    assert_eq!(k.addrs(), vec!["10.96.10.10"]);

    // The same forwarder with a CA that did not sign the upstream's certificate: SERVFAIL.
    let p_bad = free_port();
    let bad = write(
        dir.path(),
        "Corefile.badca",
        &format!(
            ".:{p_bad} {{\n    bind 127.0.0.1\n    forward . tls://127.0.0.1:{p_tls} {{\n        tls_servername dns.test\n        tls {}\n    }}\n}}\n",
            b.ca.display()
        ),
    );
    let _bad = Server::start("badca", &bad, &example_cluster(), true);
    let a2 = query(
        ([127, 0, 0, 1], p_bad).into(),
        "www.example.test",
        RTYPE_A,
        Duration::from_secs(8),
    )
    .expect("an answer");
    assert_eq!(a2.rcode, 2, "SERVFAIL when the upstream cannot be verified");
}

#[test]
fn reload_applies_a_new_certificate_and_keeps_the_old_one_when_the_new_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a");
    let b = pki(dir.path(), "b");
    let cert = dir.path().join("serving-cert.pem");
    let key = dir.path().join("serving-key.pem");
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let (p_tls, p_https) = (free_port(), free_port());
    let cf = write(
        dir.path(),
        "Corefile",
        &encrypted_corefile(p_tls, p_https, &cert, &key, "    reload 2s 1s\n"),
    );
    let mut server = Server::start("dot", &cf, &example_cluster(), true);
    let wait_for = |ca: &Path, transport: &str, want: Option<Vec<String>>| {
        let start = Instant::now();
        loop {
            let got = kdig(
                if transport == "+tls" { p_tls } else { p_https },
                transport,
                ca,
                "www.example.test",
            );
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{transport} with {}: {got:?}, wanted {want:?}",
                ca.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let answer = Some(vec!["192.0.2.10".to_string()]);
    wait_for(&a.ca, "+tls", answer.clone());
    assert_eq!(kdig(p_tls, "+tls", &b.ca, "www.example.test"), None);

    // Swap in B's certificate and key (each file replaced by a rename, as a Secret update).
    for (from, to) in [(&b.key, &key), (&b.cert, &cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    wait_for(&b.ca, "+tls", answer.clone());
    wait_for(&b.ca, "+https", answer.clone());
    assert_eq!(kdig(p_tls, "+tls", &a.ca, "www.example.test"), None);
    assert_eq!(kdig(p_https, "+https", &a.ca, "www.example.test"), None);
    server.wait_log(T, "running configuration replaced");

    // A certificate file that no longer parses: the reload is rejected, naming the Corefile
    // position, and B's certificate keeps serving.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let line = server.wait_log(Duration::from_secs(15), "Corefile rejected");
    assert!(line.contains(":3:9: plugin/tls"), "{line}");
    assert!(line.contains("no usable PEM certificate"), "{line}");
    assert_eq!(kdig(p_tls, "+tls", &b.ca, "www.example.test"), answer);
    assert_eq!(kdig(p_https, "+https", &b.ca, "www.example.test"), answer);
}

#[test]
fn a_missing_certificate_file_stops_the_start_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a");
    let missing = dir.path().join("nope.pem");
    let cf = write(
        dir.path(),
        "Corefile",
        &format!(
            "tls://.:{} {{\n    bind 127.0.0.1\n    tls {} {}\n}}\n",
            free_port(),
            missing.display(),
            a.key.display()
        ),
    );
    let mut server = Server::start("dot", &cf, &example_cluster(), false);
    let status = server.wait_exit(Duration::from_secs(10)).expect("it exits");
    assert!(!status.success());
    let lines = server.lines().join("\n");
    let want = format!(
        "{}:3:9: plugin/tls: cannot read certificate file {}",
        cf.display(),
        missing.display()
    );
    assert!(lines.contains(&want), "{lines}");
}
