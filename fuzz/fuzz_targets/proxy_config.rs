//! Fuzzes the KubeProxyConfiguration parser: any text parses to a validated configuration or
//! to an error naming the file. Nothing may panic.
//!
//! Run: `cargo +nightly fuzz run proxy_config fuzz/corpus/proxy_config`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use svcnet_core::ipvs::config::file::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "fuzz.yaml") {
        Ok(loaded) => {
            let _ = format!("{:?}", loaded.config);
        }
        Err(e) => assert!(
            e.to_string().contains("fuzz.yaml"),
            "error does not name the file: {e}"
        ),
    }
});
