//! Fuzzes the forward plugin's reply path: any bytes read from an upstream go through
//! `upstream::parse_reply` (the only decoding of upstream bytes), and a reply that parses is
//! turned into the client's answer (`forward::upstream_response`) and encoded for a UDP and a
//! TCP client, as the forwarder does. Nothing may panic; every encoded answer must decode again
//! with the client's id and fit the client's UDP payload size.
//!
//! Run: `cargo +nightly fuzz run forward_reply fuzz/corpus/forward_reply`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use svcnet_core::dns::handler::Transport;
use svcnet_core::dns::plugins::forward::upstream_response;
use svcnet_core::dns::plugins::upstream::{ExchangeError, parse_reply};
use svcnet_core::dns::wire::{Encoder, Parsed, decode_message, parse_request};

/// The client's query: id 0x1234, `example.org. IN A`, RD, EDNS with a 1232-byte payload.
const CLIENT_QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'o', b'r', b'g', 0, 0x00, 0x01, 0x00,
    0x01, //
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fuzz_target!(|data: &[u8]| {
    // The forwarder's id is whatever the reply carries half the time, a fixed one otherwise.
    let ids = match data.get(..2) {
        Some(b) => [u16::from_be_bytes([b[0], b[1]]), 0xbeef],
        None => [0xbeef, 0xbeef],
    };
    for id in ids {
        let msg = match parse_reply(data, id) {
            Ok(None) => continue,
            Err(ExchangeError::Malformed(m)) => {
                assert!(!m.is_empty());
                continue;
            }
            Err(e) => panic!("parsing cannot fail with {e}"),
            Ok(Some(msg)) => msg,
        };
        assert_eq!(msg.metadata.id, id);
        let resp = upstream_response(msg);
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);
        let mut encoder = Encoder::new();
        for transport in [Transport::Udp, Transport::Tcp] {
            let Parsed::Query(req) = parse_request(CLIENT_QUERY, client, transport) else {
                panic!("the fixed client query parses");
            };
            let (bytes, _) = encoder.encode(&req, &resp);
            if transport == Transport::Udp {
                assert!(bytes.len() <= usize::from(req.max_payload()));
            }
            let decoded = decode_message(bytes).unwrap_or_else(|e| {
                panic!(
                    "our own answer does not decode: {e}\nrecords: {:?}\nbytes: {bytes:02x?}",
                    resp.answers
                )
            });
            assert_eq!(decoded.metadata.id, 0x1234);
        }
    }
});
