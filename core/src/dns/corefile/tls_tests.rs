//! `tls://` and `https://` server blocks, the `tls` directive and forward's DNS over TLS
//! options: defaults, file checks at load, errors with positions.

use super::*;
use crate::tls::ClientAuth;
use crate::tls::test_certs::{Pki, generate};

/// Two key pairs (A, B) as in-memory files `/pki/{a,b}-{cert,key,ca}.pem`.
fn pki_files() -> (MemoryFiles, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = MemoryFiles::new();
    for tag in ["a", "b"] {
        let Pki { ca, cert, key } = generate(dir.path(), tag, "dns.test");
        for (name, path) in [("cert", cert), ("key", key), ("ca", ca)] {
            files.insert(
                format!("/pki/{tag}-{name}.pem"),
                std::fs::read_to_string(path).unwrap(),
            );
        }
    }
    files.insert(
        "/pki/garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    (files, dir)
}

fn load_with(files: &MemoryFiles, text: &str) -> Result<Corefile, CorefileError> {
    load_from("Corefile", text, files, &|_| None, &LoadOptions::default())
}

fn err_with(files: &MemoryFiles, text: &str) -> (String, u32, u32) {
    let e = load_with(files, text).unwrap_err();
    let at = e.position().cloned().expect("a position");
    (e.to_string(), at.line, at.column)
}

#[test]
fn encrypted_server_blocks_get_their_default_ports_and_certificate() {
    let (files, _dir) = pki_files();
    let cf = load_with(
        &files,
        "tls://. https://example.org {\n  tls /pki/a-cert.pem /pki/a-key.pem /pki/a-ca.pem {\n    client_auth require_and_verify\n  }\n  whoami\n}\n"
            .replace("  whoami\n", "  log\n")
            .as_str(),
    )
    .unwrap();
    let s = &cf.servers[0];
    let keys: Vec<(&str, u16, ServerTransport)> = s
        .keys
        .iter()
        .map(|k| (k.zone.as_str(), k.port, k.transport))
        .collect();
    assert_eq!(
        keys,
        vec![
            (".", 853, ServerTransport::Tls),
            ("example.org.", 443, ServerTransport::Https)
        ]
    );
    let tls = s.plugins.tls.as_ref().unwrap();
    assert_eq!(tls.cert.path, PathBuf::from("/pki/a-cert.pem"));
    assert_eq!(
        tls.ca.as_ref().unwrap().path,
        PathBuf::from("/pki/a-ca.pem")
    );
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerify);
    // The key's content never shows in debug output.
    assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    // Certificate files are watched with the Corefile, so reload sees their changes.
    for f in ["/pki/a-cert.pem", "/pki/a-key.pem", "/pki/a-ca.pem"] {
        assert!(cf.files.contains(&PathBuf::from(f)), "{:?}", cf.files);
    }
    let listeners = s.listeners();
    assert_eq!(
        listeners,
        vec![
            ("0.0.0.0:853".parse().unwrap(), ServerTransport::Tls),
            ("0.0.0.0:443".parse().unwrap(), ServerTransport::Https)
        ]
    );
    // dns:// keys are unchanged, and explicit ports win.
    let cf = load_with(
        &files,
        "dns://.:1053 tls://.:8853 {\n  tls /pki/b-cert.pem /pki/b-key.pem\n}\n",
    )
    .unwrap();
    let ports: Vec<(u16, ServerTransport)> = cf.servers[0]
        .keys
        .iter()
        .map(|k| (k.port, k.transport))
        .collect();
    assert_eq!(
        ports,
        vec![(1053, ServerTransport::Dns), (8853, ServerTransport::Tls)]
    );
    assert_eq!(
        cf.servers[0].plugins.tls.as_ref().unwrap().client_auth,
        ClientAuth::NoCert
    );
}

#[test]
fn bad_certificate_files_are_errors_at_their_token() {
    let (files, _dir) = pki_files();
    let cases = [
        // A missing certificate file: the error names the file, at the CERT argument.
        (
            "tls://.:853 {\n  tls /pki/missing.pem /pki/a-key.pem\n}\n",
            (2, 7),
            "cannot read certificate file /pki/missing.pem",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/nokey.pem\n}\n",
            (2, 23),
            "cannot read key file /pki/nokey.pem",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/a-key.pem /pki/noca.pem\n}\n",
            (2, 38),
            "cannot read CA file /pki/noca.pem",
        ),
        (
            "tls://.:853 {\n  tls /pki/garbage.pem /pki/a-key.pem\n}\n",
            (2, 7),
            "/pki/garbage.pem: no usable PEM certificate",
        ),
        // A key file that holds a certificate only.
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/a-cert.pem\n}\n",
            (2, 23),
            "/pki/a-cert.pem: no usable PEM private key",
        ),
        // B's key with A's certificate.
        (
            "https://.:443 {\n  tls /pki/a-cert.pem /pki/b-key.pem\n}\n",
            (2, 23),
            "does not match the certificate /pki/a-cert.pem",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem\n}\n",
            (2, 7),
            "needs at least 2 arguments",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/a-key.pem {\n    client_auth sometimes\n  }\n}\n",
            (3, 17),
            "unknown client_auth \"sometimes\"",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/a-key.pem {\n    client_auth request\n  }\n}\n",
            (3, 17),
            "client_auth request (an unverified client certificate) is not supported",
        ),
        (
            "tls://.:853 {\n  tls /pki/a-cert.pem /pki/a-key.pem {\n    session_tickets off\n  }\n}\n",
            (3, 5),
            "session_tickets",
        ),
    ];
    for (text, (line, col), want) in cases {
        let (e, l, c) = err_with(&files, text);
        assert!(e.contains(want), "{text}: {e}");
        assert_eq!((l, c), (line, col), "{text}: {e}");
        assert!(e.starts_with(&format!("Corefile:{line}:{col}")), "{e}");
    }
}

#[test]
fn tls_in_a_plain_dns_block_is_a_warning() {
    let (files, _dir) = pki_files();
    let cf = load_with(
        &files,
        ".:53 {\n  log\n  tls /pki/a-cert.pem /pki/a-key.pem\n}\n",
    )
    .unwrap();
    let msgs: Vec<String> = cf.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with("Corefile:3:3: plugin/tls: has no effect"),
        "{msgs:?}"
    );
}

#[test]
fn forward_tls_options_follow_coredns() {
    let (files, _dir) = pki_files();
    let forward = |opts: &str| {
        let cf = load_with(
            &files,
            &format!(
                ".:53 {{\n  forward . tls://192.0.2.1 tls://192.0.2.2:8853 {{\n{opts}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        cf.servers[0].plugins.forward.clone().unwrap()
    };
    // No option: system CAs, the certificate must carry the IP address.
    let f = forward("");
    assert_eq!(f.to_tls, vec![true, true]);
    assert_eq!(f.tls, ForwardTls::default());
    // tls_servername, tls CA.
    let f = forward("    tls_servername dns.test\n    tls /pki/a-ca.pem");
    assert_eq!(f.tls.servername.as_deref(), Some("dns.test"));
    assert_eq!(
        f.tls.ca.as_ref().unwrap().path,
        PathBuf::from("/pki/a-ca.pem")
    );
    assert!(f.tls.cert.is_none() && f.tls.key.is_none());
    // tls CERT KEY: client authentication, system CAs.
    let f = forward("    tls /pki/b-cert.pem /pki/b-key.pem");
    assert_eq!(
        f.tls.cert.as_ref().unwrap().path,
        PathBuf::from("/pki/b-cert.pem")
    );
    assert!(f.tls.ca.is_none());
    // tls CERT KEY CA.
    let f = forward("    tls /pki/b-cert.pem /pki/b-key.pem /pki/a-ca.pem");
    assert!(f.tls.cert.is_some() && f.tls.key.is_some() && f.tls.ca.is_some());
    let cf = load_with(
        &files,
        ".:53 {\n  forward . tls://192.0.2.1 {\n    tls /pki/b-cert.pem /pki/b-key.pem /pki/a-ca.pem\n  }\n}\n",
    )
    .unwrap();
    for f in ["/pki/b-cert.pem", "/pki/b-key.pem", "/pki/a-ca.pem"] {
        assert!(cf.files.contains(&PathBuf::from(f)), "{:?}", cf.files);
    }

    let bad = [
        (
            "    tls /pki/nothere.pem",
            (3, 9),
            "cannot read CA file /pki/nothere.pem",
        ),
        (
            "    tls /pki/a-cert.pem /pki/b-key.pem",
            (3, 25),
            "does not match",
        ),
        (
            "    tls /pki/garbage.pem",
            (3, 9),
            "no usable PEM certificate",
        ),
        (
            "    tls_servername bad..name",
            (3, 20),
            "not a valid server name",
        ),
        ("    tls_servername", (3, 5), "needs 1 argument"),
    ];
    for (opts, (line, col), want) in bad {
        let (e, l, c) = err_with(
            &files,
            &format!(".:53 {{\n  forward . tls://192.0.2.1 {{\n{opts}\n  }}\n}}\n"),
        );
        assert!(e.contains(want), "{opts}: {e}");
        assert_eq!((l, c), (line, col), "{opts}: {e}");
    }
}
