//! Request bytes for every set type the proxy writes, frozen after the same encodings were
//! accepted by the 6.1 kernel and listed by `ipset save` exactly as the `ipset restore` text of
//! the same operations (`tests/tests/vm_ipset.rs`). Byte order is the host's for lengths,
//! types and flags (little-endian on the machines this runs on).

use super::*;
use crate::ipvs::ipset_ops::{IpsetEntry, IpsetOp, SetType};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encoded(op: &IpsetOp, ack: bool, revision: u8) -> String {
    let mut out = Vec::new();
    encode_op(&mut out, op, 7, ack, revision);
    assert_eq!(
        u32::from_ne_bytes(out[..4].try_into().unwrap()) as usize,
        out.len(),
        "nlmsg_len covers the message"
    );
    hex(&out)
}

fn add(set: &str, kind: SetType, entry: &str) -> IpsetOp {
    IpsetOp::Add {
        set: set.into(),
        entry: IpsetEntry::parse(kind, entry).unwrap(),
        exist: true,
    }
}

/// Netlink header for `cmd` with `flags`, sequence 7, then nfgenmsg (inet, v0) and
/// `IPSET_ATTR_PROTOCOL` = 6.
fn head(len: u16, cmd: u8, flags: u16) -> String {
    format!(
        "{}0000{}06{}0700000000000000020000000500010006000000",
        hex(&len.to_le_bytes()),
        hex(&[cmd]),
        hex(&flags.to_le_bytes())
    )
}

#[test]
#[cfg(target_endian = "little")]
fn add_requests_of_every_set_type() {
    // SETNAME "KUBE-X\0" (attr 2, len 11, padded to 12).
    let name = "0b0002004b5542452d580000";
    // DATA (nested 7) { IP (nested 1) { IPADDR_IPV4 (1, net order) 10.96.0.1 } ...
    let ip4 = "0c000180080001400a600001";
    let port80 = "0600044000500000";
    let tcp = "0500070006000000";
    let cases: Vec<(SetType, &str, String)> = vec![
        (
            SetType::BitmapPort,
            "30080",
            format!("0c000780{}", "0600044075800000"),
        ),
        (SetType::HashIp, "10.96.0.1", format!("10000780{ip4}")),
        (
            SetType::HashNet,
            "10.0.0.0/8",
            format!(
                "18000780{}{}",
                "0c000180080001400a000000", "0500030008000000"
            ),
        ),
        (
            SetType::HashIpPort,
            "10.96.0.1,tcp:80",
            format!("20000780{ip4}{port80}{tcp}"),
        ),
        (
            SetType::HashIpPortIp,
            "10.96.0.1,tcp:80,10.244.1.10",
            format!("2c000780{ip4}{port80}{tcp}{}", "0c001480080001400af4010a"),
        ),
        (
            SetType::HashIpPortNet,
            "10.96.0.1,tcp:80,192.168.0.0/16",
            format!(
                "34000780{ip4}{port80}{tcp}{}{}",
                "0c00148008000140c0a80000", "0500150010000000"
            ),
        ),
    ];
    for (kind, entry, data) in cases {
        let body = format!("{name}{data}");
        let len = (16 + 4 + 8 + body.len() / 2) as u16;
        // NLM_F_REQUEST | NLM_F_ACK, no NLM_F_EXCL (-exist); command ADD (9).
        let want = format!("{}{body}", head(len, 9, 0x5));
        assert_eq!(
            encoded(&add("KUBE-X", kind, entry), true, 0),
            want,
            "{kind:?} {entry}"
        );
    }
}

#[test]
#[cfg(target_endian = "little")]
fn ipv6_entries_carry_sixteen_byte_addresses() {
    let op = add("KUBE-6-X", SetType::HashIpPortIp, "fd00::1,udp:53,fd00::2");
    let got = encoded(&op, false, 0);
    // IPADDR_IPV6 (2 | net order), 16 bytes, inside IP (nested 1) and IP2 (nested 20).
    let v6 = |nest: &str, last: &str| format!("1800{nest}8014000240fd00{}{last}", "0".repeat(26));
    assert!(got.contains(&v6("01", "01")), "{got}");
    assert!(got.contains(&v6("14", "02")), "{got}");
    // udp (17), port 53 big-endian.
    assert!(
        got.contains("0500070011000000") && got.contains("060004400035"),
        "{got}"
    );
    // No ACK asked: flags NLM_F_REQUEST only.
    assert_eq!(&got[12..16], "0100");
}

#[test]
#[cfg(target_endian = "little")]
fn create_swap_destroy_and_del() {
    let create = IpsetOp::Create {
        name: "KUBE-X".into(),
        kind: SetType::HashIpPort,
        family: Some(Family::V4),
        hashsize: 1024,
        maxelem: 131072,
        exist: false,
    };
    // CREATE (2) with NLM_F_EXCL: SETNAME, TYPENAME "hash:ip,port", REVISION 6, FAMILY inet,
    // DATA { HASHSIZE 1024, MAXELEM 131072 } (u32 big-endian, net order flag).
    let body = "0b0002004b5542452d58000011000300686173683a69702c706f727400000000";
    let body = format!(
        "{body}050004000600000005000500020000001400078008001240{}08001340{}",
        "00000400", "00020000"
    );
    let len = (16 + 4 + 8 + body.len() / 2) as u16;
    assert_eq!(
        encoded(&create, true, 6),
        format!("{}{body}", head(len, 2, 0x205))
    );

    let bitmap = IpsetOp::Create {
        name: "KUBE-X".into(),
        kind: SetType::BitmapPort,
        family: None,
        hashsize: 1024,
        maxelem: 65536,
        exist: true,
    };
    let got = encoded(&bitmap, true, 3);
    // Family unspec, DATA { PORT 0, PORT_TO 65535 }.
    assert!(
        got.ends_with("050005000000000014000780060004400000000006000540ffff0000"),
        "{got}"
    );

    let swap = IpsetOp::Swap {
        from: "KUBE-T".into(),
        to: "KUBE-X".into(),
    };
    let body = "0b0002004b5542452d5400000b0003004b5542452d580000";
    let len = (16 + 4 + 8 + body.len() / 2) as u16;
    assert_eq!(
        encoded(&swap, true, 0),
        format!("{}{body}", head(len, 6, 0x5))
    );

    let destroy = IpsetOp::Destroy {
        set: "KUBE-T".into(),
    };
    let body = "0b0002004b5542452d540000";
    let len = (16 + 4 + 8 + body.len() / 2) as u16;
    assert_eq!(
        encoded(&destroy, false, 0),
        format!("{}{body}", head(len, 3, 0x1))
    );

    let del = IpsetOp::Del {
        set: "KUBE-X".into(),
        entry: IpsetEntry::Port(30080),
        exist: false,
    };
    let got = encoded(&del, true, 0);
    // DEL (10) without -exist: NLM_F_EXCL set.
    assert_eq!(&got[8..16], "0a060502");
}

#[test]
fn entries_parse_and_print_back() {
    for (kind, text) in [
        (SetType::HashIpPort, "10.96.0.1,tcp:80"),
        (SetType::HashIpPort, "fd00::a,sctp:9000"),
        (SetType::HashIpPortIp, "10.244.1.10,udp:53,10.244.1.10"),
        (SetType::HashIpPortNet, "203.0.113.10,tcp:443,10.0.0.0/8"),
        (SetType::HashNet, "2001:db8::/32"),
        (SetType::HashIp, "10.96.0.1"),
        (SetType::BitmapPort, "30080"),
    ] {
        assert_eq!(IpsetEntry::parse(kind, text).unwrap().to_string(), text);
    }
    for (kind, text) in [
        (SetType::HashIpPort, "10.96.0.1,icmp:80"),
        (SetType::HashIpPort, "10.96.0.1:80"),
        (SetType::HashIpPortIp, "10.96.0.1,tcp:80,fd00::1"),
        (SetType::HashNet, "10.0.0.0/33"),
        (SetType::BitmapPort, "70000"),
    ] {
        assert!(IpsetEntry::parse(kind, text).is_err(), "{kind:?} {text}");
    }
}

#[test]
fn header_dump_replies_decode() {
    // What the kernel sends for `KUBE-X hash:ip,port inet rev 6, maxelem 131072, 3 entries`.
    let mut body = vec![2, 0, 0, 0];
    let mut w = Writer(&mut body);
    w.u8(ATTR_PROTOCOL, 6);
    w.string(ATTR_SETNAME, "KUBE-X");
    w.string(ATTR_TYPENAME, "hash:ip,port");
    w.u8(ATTR_FAMILY, NFPROTO_IPV4);
    w.u8(ATTR_REVISION, 6);
    let d = w.begin(ATTR_DATA);
    w.be32(ATTR_HASHSIZE, 1024);
    w.be32(ATTR_MAXELEM, 131072);
    w.be32(ATTR_ELEMENTS, 3);
    w.end(d);
    let (name, h) = decode_header(&body).unwrap();
    assert_eq!(name, "KUBE-X");
    assert_eq!(
        h,
        SetHeader {
            kind: "hash:ip,port".into(),
            family: NFPROTO_IPV4,
            revision: 6,
            maxelem: Some(131072),
            elements: Some(3),
        }
    );
}

#[test]
fn kernel_errors_are_named_in_words() {
    let add = add("KUBE-X", SetType::HashIp, "10.0.0.1");
    assert_eq!(describe(4103, &add), "the entry is already in the set");
    let create = IpsetOp::Create {
        name: "KUBE-X".into(),
        kind: SetType::HashIp,
        family: Some(Family::V4),
        hashsize: 1024,
        maxelem: 65536,
        exist: true,
    };
    assert!(describe(4103, &create).contains("another type or other parameters"));
    assert!(describe(4102, &create).contains("different types"));
    assert!(describe(4352, &add).contains("maxelem"));
    assert_eq!(describe(2, &add), "the set does not exist");
}
