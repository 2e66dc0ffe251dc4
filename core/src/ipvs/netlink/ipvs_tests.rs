//! Golden bytes of the IPVS requests, written out by hand from the kernel's UAPI
//! (`include/uapi/linux/ip_vs.h`) for a little-endian host.

use super::neli_reference::{encode_op_neli, nest, service_ident};
use super::*;
use crate::ipvs::table::{FLAG_PERSISTENT, FLAG_SCHED1, FLAG_SCHED2};

const FAMILY: u16 = 0x0024;

fn svc(addr: &str, port: u16) -> ServiceId {
    ServiceId::new(Protocol::Tcp, addr.parse().unwrap(), port)
}

fn rr() -> ServiceParams {
    ServiceParams {
        scheduler: Scheduler::Rr,
        flags: 0,
        timeout: 0,
    }
}

fn encode(op: IpvsOp, ack: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode_op(&mut out, FAMILY, 7, &op, ack).unwrap();
    out
}

/// nlmsghdr + genlmsghdr for `len` total bytes, command `cmd`, flags `flags`, seq 7.
fn header(len: u32, flags: u16, cmd: u8) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&FAMILY.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&7u32.to_le_bytes()); // seq
    v.extend_from_slice(&0u32.to_le_bytes()); // pid
    v.extend_from_slice(&[cmd, 1, 0, 0]); // cmd, version 1, reserved
    v
}

#[rustfmt::skip]
const SERVICE_IDENT_V4_10_96_0_1_443: [u8; 44] = [
    6, 0, 1, 0,   2, 0, 0, 0,                       // AF = AF_INET
    6, 0, 2, 0,   6, 0, 0, 0,                       // PROTOCOL = TCP
    20, 0, 3, 0,  10, 96, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0, // ADDR (nf_inet_addr)
    6, 0, 4, 0,   0x01, 0xbb, 0, 0,                 // PORT 443 big-endian
];

#[test]
#[cfg(target_endian = "little")]
fn add_service_v4_round_robin() {
    let got = encode(IpvsOp::AddService(svc("10.96.0.1", 443), rr()), true);
    let mut want = header(104, 0x0005, 1); // NLM_F_REQUEST | NLM_F_ACK, IPVS_CMD_NEW_SERVICE
    want.extend_from_slice(&[84, 0, 0x01, 0x80]); // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    want.extend_from_slice(&SERVICE_IDENT_V4_10_96_0_1_443);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        7, 0, 6, 0,   b'r', b'r', 0, 0,                 // SCHED_NAME "rr\0" + pad
        12, 0, 7, 0,  0, 0, 0, 0,  0xff, 0xff, 0xff, 0xff, // FLAGS {flags 0, mask ~0}
        8, 0, 8, 0,   0, 0, 0, 0,                       // TIMEOUT 0
        8, 0, 9, 0,   0xff, 0xff, 0xff, 0xff,           // NETMASK /32
    ]);
    assert_eq!(got, want);
}

#[test]
#[cfg(target_endian = "little")]
fn add_service_with_persistence_and_update_in_place() {
    let p = ServiceParams {
        scheduler: Scheduler::Wrr,
        flags: FLAG_PERSISTENT,
        timeout: 10800,
    };
    let got = encode(IpvsOp::UpdateService(svc("10.96.0.1", 443), p), false);
    let mut want = header(104, 0x0001, 2); // NLM_F_REQUEST, IPVS_CMD_SET_SERVICE
    want.extend_from_slice(&[84, 0, 0x01, 0x80]);
    want.extend_from_slice(&SERVICE_IDENT_V4_10_96_0_1_443);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        8, 0, 6, 0,   b'w', b'r', b'r', 0,              // SCHED_NAME "wrr\0"
        12, 0, 7, 0,  1, 0, 0, 0,  0xff, 0xff, 0xff, 0xff, // FLAGS persistent
        8, 0, 8, 0,   0x30, 0x2a, 0, 0,                 // TIMEOUT 10800
        8, 0, 9, 0,   0xff, 0xff, 0xff, 0xff,
    ]);
    assert_eq!(got, want);
}

#[test]
#[cfg(target_endian = "little")]
fn add_service_ipv6_maglev() {
    let p = ServiceParams {
        scheduler: Scheduler::Mh,
        flags: FLAG_SCHED1 | FLAG_SCHED2,
        timeout: 0,
    };
    let id = ServiceId::new(Protocol::Udp, "fd00:10:96::a".parse().unwrap(), 53);
    let got = encode(IpvsOp::AddService(id, p), true);
    let mut want = header(104, 0x0005, 1);
    want.extend_from_slice(&[84, 0, 0x01, 0x80]);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        6, 0, 1, 0,   10, 0, 0, 0,                      // AF = AF_INET6
        6, 0, 2, 0,   17, 0, 0, 0,                      // PROTOCOL = UDP
        20, 0, 3, 0,  0xfd, 0, 0, 0x10, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
        6, 0, 4, 0,   0, 53, 0, 0,                      // PORT 53
        7, 0, 6, 0,   b'm', b'h', 0, 0,
        12, 0, 7, 0,  0x18, 0, 0, 0,  0xff, 0xff, 0xff, 0xff, // mh-fallback | mh-port
        8, 0, 8, 0,   0, 0, 0, 0,
        8, 0, 9, 0,   128, 0, 0, 0,                     // NETMASK 128
    ]);
    assert_eq!(got, want);
}

#[test]
#[cfg(target_endian = "little")]
fn add_dest_masquerade_weight_one() {
    let d = DestId::new("10.244.1.10".parse().unwrap(), 6443);
    let got = encode(
        IpvsOp::AddDest(svc("10.96.0.1", 443), d, DestParams::masq(1)),
        false,
    );
    let mut want = header(140, 0x0001, 5); // IPVS_CMD_NEW_DEST
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    want.extend_from_slice(&SERVICE_IDENT_V4_10_96_0_1_443);
    want.extend_from_slice(&[72, 0, 0x02, 0x80]); // IPVS_CMD_ATTR_DEST | NLA_F_NESTED
    #[rustfmt::skip]
    want.extend_from_slice(&[
        20, 0, 1, 0,  10, 244, 1, 10,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0, // ADDR
        6, 0, 2, 0,   0x19, 0x2b, 0, 0,                 // PORT 6443 big-endian
        8, 0, 3, 0,   0, 0, 0, 0,                       // FWD_METHOD masq
        8, 0, 4, 0,   1, 0, 0, 0,                       // WEIGHT 1
        8, 0, 5, 0,   0, 0, 0, 0,                       // U_THRESH
        8, 0, 6, 0,   0, 0, 0, 0,                       // L_THRESH
        6, 0, 11, 0,  2, 0, 0, 0,                       // ADDR_FAMILY AF_INET
    ]);
    assert_eq!(got, want);
}

#[test]
#[cfg(target_endian = "little")]
fn delete_dest_ipv6_carries_only_identity() {
    let id = ServiceId::new(Protocol::Tcp, "fd00::1".parse().unwrap(), 80);
    let d = DestId::new("fd00:10:244::5".parse().unwrap(), 8080);
    let got = encode(IpvsOp::DeleteDest(id, d), true);
    let mut want = header(108, 0x0005, 7); // IPVS_CMD_DEL_DEST
    want.extend_from_slice(&[48, 0, 0x01, 0x80]);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        6, 0, 1, 0,   10, 0, 0, 0,
        6, 0, 2, 0,   6, 0, 0, 0,
        20, 0, 3, 0,  0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        6, 0, 4, 0,   0, 80, 0, 0,
    ]);
    want.extend_from_slice(&[40, 0, 0x02, 0x80]);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        20, 0, 1, 0,  0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
        6, 0, 2, 0,   0x1f, 0x90, 0, 0,                 // PORT 8080
        6, 0, 11, 0,  10, 0, 0, 0,                      // ADDR_FAMILY AF_INET6
    ]);
    assert_eq!(got, want);
}

#[test]
fn a_batch_is_messages_back_to_back() {
    let mut out = Vec::new();
    let ops = [
        IpvsOp::AddService(svc("10.96.0.1", 443), rr()),
        IpvsOp::DeleteService(svc("10.96.0.2", 80)),
    ];
    encode_op(&mut out, FAMILY, 1, &ops[0], false).unwrap();
    encode_op(&mut out, FAMILY, 2, &ops[1], true).unwrap();
    let msgs = super::super::socket::messages(&out).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].seq, msgs[0].flags), (1, 0x0001));
    assert_eq!((msgs[1].seq, msgs[1].flags), (2, 0x0005));
    assert_eq!(msgs[1].body[0], cmd::DEL_SERVICE);
}

#[test]
fn service_and_dest_replies_decode() {
    // A dump reply has the same layout as a request body: reuse the encoder for the
    // attributes and add what only the kernel sends (hashed flag, connection counters).
    let p = ServiceParams {
        scheduler: Scheduler::Sh,
        flags: FLAG_PERSISTENT | 0x2,
        timeout: 60,
    };
    let mut out = Vec::new();
    encode_op(
        &mut out,
        FAMILY,
        1,
        &IpvsOp::AddService(svc("10.96.0.9", 8080), p),
        false,
    )
    .unwrap();
    let m = super::super::socket::messages(&out).unwrap()[0];
    let s = decode_service(m.body).unwrap().unwrap();
    assert_eq!(s.id, svc("10.96.0.9", 8080));
    assert_eq!(s.params.scheduler, Scheduler::Sh);
    assert!(s.params.matches(&ServiceParams {
        flags: FLAG_PERSISTENT,
        ..p
    }));

    let d = DestId::new("10.244.0.7".parse().unwrap(), 53);
    let mut body = vec![cmd::NEW_DEST, 1, 0, 0];
    let dest = nest(
        top::DEST,
        &[
            attr(dst::ADDR, &inet_addr(&d.addr)).unwrap(),
            attr(dst::PORT, &53u16.to_be_bytes()).unwrap(),
            attr(dst::WEIGHT, &0u32.to_ne_bytes()).unwrap(),
            attr(dst::ACTIVE_CONNS, &3u32.to_ne_bytes()).unwrap(),
            attr(dst::INACT_CONNS, &4u32.to_ne_bytes()).unwrap(),
        ],
    )
    .unwrap();
    let mut cur = Cursor::new(Vec::new());
    dest.to_bytes(&mut cur).unwrap();
    body.extend_from_slice(cur.get_ref());
    let e = decode_dest(&body, 2).unwrap();
    assert_eq!(e.id, d);
    assert_eq!(e.params.weight, 0);
    assert_eq!((e.conns.active, e.conns.inactive), (3, 4));
}

#[test]
fn opening_reports_a_clear_error_or_works() {
    // This host's kernel may lack IPVS; either way no panic and a named error.
    match NetlinkIpvs::open() {
        Ok(mut ipvs) => {
            ipvs.list_services().unwrap();
        }
        Err(e) => assert!(
            matches!(
                e,
                BackendError::NoIpvs
                    | BackendError::MissingCapability { .. }
                    | BackendError::Kernel { .. }
                    | BackendError::Io { .. }
            ),
            "{e}"
        ),
    }
}

#[test]
fn fast_encoder_writes_the_same_bytes_as_neli() {
    let v6 = ServiceId::new(Protocol::Sctp, "fd00::9".parse().unwrap(), 9);
    let params = [
        rr(),
        ServiceParams {
            scheduler: Scheduler::Lblcr,
            flags: FLAG_PERSISTENT,
            timeout: 5,
        },
        ServiceParams {
            scheduler: Scheduler::Mh,
            flags: FLAG_SCHED1 | FLAG_SCHED2,
            timeout: 0,
        },
    ];
    let dests = [
        DestId::new("10.0.0.1".parse().unwrap(), 1),
        DestId::new("fd00::1:2".parse().unwrap(), 65535),
    ];
    let mut ops = Vec::new();
    for id in [svc("10.96.0.1", 443), v6] {
        for p in params {
            ops.push(IpvsOp::AddService(id, p));
            ops.push(IpvsOp::UpdateService(id, p));
        }
        ops.push(IpvsOp::DeleteService(id));
        for d in dests {
            for w in [0, 1, 7] {
                ops.push(IpvsOp::AddDest(id, d, DestParams::masq(w)));
                ops.push(IpvsOp::UpdateDest(
                    id,
                    d,
                    DestParams {
                        weight: w,
                        forward: Forward::Route,
                    },
                ));
            }
            ops.push(IpvsOp::DeleteDest(id, d));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        for ack in [false, true] {
            let mut fast = vec![1, 2, 3, 4]; // appends after existing content
            let mut reference = vec![1, 2, 3, 4];
            encode_op(&mut fast, FAMILY, i as u32, op, ack).unwrap();
            encode_op_neli(&mut reference, FAMILY, i as u32, op, ack).unwrap();
            assert_eq!(fast, reference, "{op}");
        }
    }
}

#[test]
fn get_dests_request_matches_the_neli_built_one() {
    let id = svc("10.96.0.1", 443);
    let mut fast = Vec::new();
    encode_get_dests(&mut fast, FAMILY, 9, &id);
    let mut reference = Vec::new();
    encode_message(
        &mut reference,
        FAMILY,
        cmd::GET_DEST,
        NlmF::REQUEST | NlmF::DUMP,
        9,
        vec![nest(top::SERVICE, &service_ident(&id).unwrap()).unwrap()],
    )
    .unwrap();
    assert_eq!(fast, reference);
}
