//! Fuzzes the Corefile parser: any text (with an in-memory file set for `import`, zone and
//! hosts files, and a fixed environment for `{$VAR}` substitution) parses to a Corefile or to
//! an error. Nothing may panic or loop, and an error must render a message.
//!
//! Run: `cargo +nightly fuzz run corefile fuzz/corpus/corefile`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use svcnet_core::dns::corefile::files::MemoryFiles;
use svcnet_core::dns::corefile::{LoadOptions, load_from};

/// Files an `import`, `hosts` or `file` directive in the input may name.
fn files() -> &'static MemoryFiles {
    static FILES: OnceLock<MemoryFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut f = MemoryFiles::new();
        f.insert("/etc/coredns/snippet", "log\nerrors\n");
        f.insert("/etc/coredns/conf.d/a.conf", "example.org {\n  log\n}\n");
        f.insert("/etc/coredns/self", "import /etc/coredns/self\n");
        f.insert("/etc/hosts", "127.0.0.1 localhost\n10.0.0.1 a.example.org a\n::1 ip6-localhost\n");
        f.insert(
            "/etc/coredns/db.example.org",
            "$ORIGIN example.org.\n@ 3600 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 3600\nwww IN A 10.0.0.2\n",
        );
        f
    })
}

fn env(key: &str) -> Option<String> {
    match key {
        "PORT" => Some("1053".into()),
        "ZONE" => Some("cluster.local".into()),
        "EMPTY" => Some(String::new()),
        "BRACE" => Some("{".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for allow_unknown in [false, true] {
        let options = LoadOptions { allow_unknown };
        match load_from("Corefile", text, files(), &env, &options) {
            Ok(corefile) => assert!(!corefile.servers.is_empty(), "a Corefile without servers"),
            Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
        }
    }
});
