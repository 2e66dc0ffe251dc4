//! DNS wire format: parsing requests into [`Request`]s and encoding [`Response`]s with name
//! compression, EDNS(0) and truncation.
//!
//! Parsing uses hickory-proto's decoders for each part, but decides itself what a bad packet
//! deserves (RFC 1035/6891/8906): shorter than a header or a response → dropped; opcode other
//! than QUERY → NOTIMP; not exactly one question, undecodable sections, several OPT records →
//! FORMERR; EDNS version above 0 → BADVERS. Encoding is written here (not with hickory's
//! `BinEncoder`) so that names compress case-insensitively against every earlier name,
//! answers stay as small as Knot's, and one reusable buffer serves all queries of a worker.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding,
};

pub use super::handler::ADVERTISED_PAYLOAD;
use super::handler::{Request, Response, Transport};

/// Largest DNS message (TCP).
pub(crate) const MAX_MESSAGE: usize = 65535;

/// What to do with a received packet.
#[derive(Debug)]
pub enum Parsed {
    /// A well-formed query for the plugin chain.
    Query(Box<Request>),
    /// Answer at once with an error code (FORMERR, NOTIMP, BADVERS).
    Reject(Rejection),
    /// Send nothing (too short to answer, or a response rather than a query).
    Drop,
}

/// An error answer decided by the parser.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Message id.
    pub id: u16,
    /// Opcode as received (4 bits).
    pub opcode: u8,
    /// RD bit as received.
    pub recursion_desired: bool,
    /// The response code.
    pub rcode: ResponseCode,
    /// The question, echoed when it could be decoded.
    pub question: Option<Query>,
    /// Whether the client sent a usable OPT record (then the answer carries one).
    pub edns: Option<Edns>,
}

/// Parses one DNS message received from `client` over `transport`.
pub fn parse_request(bytes: &[u8], client: SocketAddr, transport: Transport) -> Parsed {
    if bytes.len() < 12 {
        return Parsed::Drop;
    }
    let mut decoder = BinDecoder::new(bytes);
    let Ok(header) = Header::read(&mut decoder) else {
        return Parsed::Drop;
    };
    if header.metadata.message_type == MessageType::Response {
        return Parsed::Drop;
    }
    let opcode = (bytes[2] >> 3) & 0x0f;
    let reject = |rcode: ResponseCode, question: Option<Query>, edns: Option<Edns>| {
        Parsed::Reject(Rejection {
            id: header.metadata.id,
            opcode,
            recursion_desired: header.metadata.recursion_desired,
            rcode,
            question,
            edns,
        })
    };
    let counts = header.counts;
    let question = if counts.queries == 1 {
        match Query::read(&mut decoder) {
            Ok(q) => Some(q),
            Err(_) => return reject(ResponseCode::FormErr, None, scan_opt(bytes)),
        }
    } else {
        None
    };
    if header.metadata.op_code != OpCode::Query {
        return reject(ResponseCode::NotImp, question, None);
    }
    let Some(question) = question else {
        return reject(ResponseCode::FormErr, None, scan_opt(bytes));
    };
    // Answer and authority sections of a query are unusual but legal: decode and skip them.
    for _ in 0..(u32::from(counts.answers) + u32::from(counts.authorities)) {
        if Record::read(&mut decoder).is_err() {
            return reject(ResponseCode::FormErr, Some(question), scan_opt(bytes));
        }
    }
    let mut edns: Option<Edns> = None;
    for _ in 0..counts.additionals {
        let Ok(record) = Record::read(&mut decoder) else {
            return reject(ResponseCode::FormErr, Some(question), edns);
        };
        if record.record_type() == RecordType::OPT {
            if edns.is_some() || !matches!(record.data, RData::OPT(_) | RData::Update0(_)) {
                let first = edns.or_else(|| scan_opt(bytes));
                return reject(ResponseCode::FormErr, Some(question), first);
            }
            edns = Some(Edns::from(&record));
        }
    }
    if let Some(e) = &edns
        && e.version() > 0
    {
        return reject(ResponseCode::BADVERS, Some(question), edns);
    }
    if question.query_type() == RecordType::OPT {
        return reject(ResponseCode::FormErr, Some(question), edns);
    }
    if let Some(e) = &edns
        && !cookies_well_formed(e)
    {
        return reject(ResponseCode::FormErr, Some(question), edns);
    }
    let mut request = Request::from_query(header.metadata.id, question, client, transport);
    request.recursion_desired = header.metadata.recursion_desired;
    request.checking_disabled = header.metadata.checking_disabled;
    request.edns = edns;
    Parsed::Query(Box::new(request))
}

/// Whether every COOKIE option of `edns` has a legal length (RFC 7873 §5.2.2: an 8-byte
/// client cookie, optionally followed by an 8 to 32-byte server cookie; anything else is
/// FORMERR).
fn cookies_well_formed(edns: &Edns) -> bool {
    edns.options()
        .get_all(EdnsCode::Cookie)
        .into_iter()
        .all(|o| matches!(o.len(), 8 | 16..=40))
}

/// Best effort for error answers: the message's OPT record, if every section up to it decodes
/// (RFC 6891 §7: a FORMERR answer to a query with OPT carries OPT too).
fn scan_opt(bytes: &[u8]) -> Option<Edns> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let counts = header.counts;
    for _ in 0..counts.queries {
        Query::read(&mut decoder).ok()?;
    }
    for _ in 0..(u32::from(counts.answers) + u32::from(counts.authorities)) {
        Record::read(&mut decoder).ok()?;
    }
    for _ in 0..counts.additionals {
        let record = Record::read(&mut decoder).ok()?;
        if record.record_type() == RecordType::OPT {
            return Some(Edns::from(&record));
        }
    }
    None
}

/// Encodes responses into a reusable buffer. One per worker.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
    /// (hash of the lower-cased suffix, offset of its first label) of names written so far.
    names: Vec<(u64, u16)>,
    scratch: Vec<u8>,
}

/// At most this many compression targets are remembered per message.
const MAX_COMPRESSION_ENTRIES: usize = 1024;

impl Encoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `resp` to `req`, truncating (TC=1, empty sections) when it exceeds what the
    /// transport allows. Returns the message bytes and whether it was truncated.
    pub fn encode(&mut self, req: &Request, resp: &Response) -> (&[u8], bool) {
        let limit = usize::from(req.max_payload());
        self.write_response(req, resp, false);
        if self.buf.len() <= limit {
            return (&self.buf, false);
        }
        self.write_response(req, resp, true);
        (&self.buf, true)
    }

    /// The message encoded last.
    pub fn message(&self) -> &[u8] {
        &self.buf
    }

    /// Encodes `resp` to `req` as an empty truncated answer (TC=1): the client retries over
    /// TCP. Used when a large UDP answer is over the rate limit.
    pub(crate) fn encode_truncated(&mut self, req: &Request, resp: &Response) -> &[u8] {
        self.write_response(req, resp, true);
        &self.buf
    }

    fn write_response(&mut self, req: &Request, resp: &Response, truncated: bool) {
        self.reset();
        let (an, ns, ar) = if truncated {
            (&[][..], &[][..], &[][..])
        } else {
            (
                &resp.answers[..],
                &resp.authority[..],
                &resp.additionals[..],
            )
        };
        let flags = Flags {
            opcode: 0,
            authoritative: resp.authoritative,
            truncated,
            recursion_desired: req.recursion_desired,
            recursion_available: resp.recursion_available,
            checking_disabled: req.checking_disabled,
        };
        self.write_header(req.id, flags, resp.rcode, 1);
        self.write_question(&req.query);
        let counts = [
            self.write_records(an),
            self.write_records(ns),
            self.write_records(ar) + self.write_opt(req.edns.as_ref(), resp.rcode),
        ];
        self.set_counts(counts);
    }

    /// Encodes an error answer decided by the parser.
    pub fn encode_rejection(&mut self, rej: &Rejection) -> &[u8] {
        self.reset();
        let flags = Flags {
            opcode: rej.opcode,
            recursion_desired: rej.recursion_desired,
            ..Flags::default()
        };
        let qd = u16::from(rej.question.is_some());
        self.write_header(rej.id, flags, rej.rcode, qd);
        if let Some(q) = &rej.question {
            self.write_question(q);
        }
        let opt = self.write_opt(rej.edns.as_ref(), rej.rcode);
        self.set_counts([0, 0, opt]);
        &self.buf
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.names.clear();
    }

    fn write_header(&mut self, id: u16, f: Flags, rcode: ResponseCode, qdcount: u16) {
        let b2 = 0x80
            | (f.opcode & 0x0f) << 3
            | u8::from(f.authoritative) << 2
            | u8::from(f.truncated) << 1
            | u8::from(f.recursion_desired);
        let b3 = u8::from(f.recursion_available) << 7
            | u8::from(f.checking_disabled) << 4
            | (rcode.low() & 0x0f);
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.buf.push(b2);
        self.buf.push(b3);
        self.buf.extend_from_slice(&qdcount.to_be_bytes());
        self.buf.extend_from_slice(&[0; 6]);
    }

    fn set_counts(&mut self, counts: [u16; 3]) {
        for (i, c) in counts.iter().enumerate() {
            self.buf[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
    }

    fn write_question(&mut self, q: &Query) {
        self.write_name(q.name(), true);
        self.buf
            .extend_from_slice(&u16::from(q.query_type()).to_be_bytes());
        self.buf
            .extend_from_slice(&u16::from(q.query_class()).to_be_bytes());
    }

    /// Writes the OPT record when the client sent one; returns how many records were added.
    fn write_opt(&mut self, client: Option<&Edns>, rcode: ResponseCode) -> u16 {
        let Some(client) = client else {
            return 0;
        };
        self.buf.push(0); // root owner
        self.buf
            .extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
        self.buf
            .extend_from_slice(&ADVERTISED_PAYLOAD.to_be_bytes());
        // TTL: extended rcode, version 0, DO copied from the query (RFC 3225).
        self.buf.push(rcode.high());
        self.buf.push(0);
        let flags: u16 = if client.flags().dnssec_ok { 0x8000 } else { 0 };
        self.buf.extend_from_slice(&flags.to_be_bytes());
        self.buf.extend_from_slice(&0u16.to_be_bytes());
        1
    }

    /// Writes records; returns how many (capped at u16::MAX; bigger sets are cut off).
    fn write_records(&mut self, records: &[Record]) -> u16 {
        let mut count: u16 = 0;
        for r in records {
            if r.record_type() == RecordType::OPT || count == u16::MAX {
                continue;
            }
            let start = self.buf.len();
            if self.write_record(r).is_err() || self.buf.len() > MAX_MESSAGE {
                self.buf.truncate(start);
                self.names.retain(|(_, off)| usize::from(*off) < start);
                continue;
            }
            count += 1;
        }
        count
    }

    fn write_record(&mut self, r: &Record) -> Result<(), ()> {
        self.write_name(&r.name, true);
        self.buf
            .extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
        self.buf
            .extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::AAAA(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::CNAME(n) => self.write_name(&n.0, true),
            RData::PTR(n) => self.write_name(&n.0, true),
            RData::NS(n) => self.write_name(&n.0, true),
            RData::SOA(soa) => {
                self.write_name(&soa.mname, true);
                self.write_name(&soa.rname, true);
                for v in [
                    soa.serial,
                    soa.refresh as u32,
                    soa.retry as u32,
                    soa.expire as u32,
                    soa.minimum,
                ] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            RData::SRV(srv) => {
                for v in [srv.priority, srv.weight, srv.port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 2782: the target is not compressed (later names may point into it).
                self.write_name(&srv.target, false);
            }
            RData::TXT(txt) => {
                for s in txt.txt_data.iter() {
                    let s = &s[..s.len().min(255)];
                    self.buf.push(s.len() as u8);
                    self.buf.extend_from_slice(s);
                }
            }
            other => {
                // Anything else: hickory's encoder, names uncompressed (RFC 3597).
                self.scratch.clear();
                let mut enc = BinEncoder::new(&mut self.scratch);
                enc.set_name_encoding(NameEncoding::Uncompressed);
                other.emit(&mut enc).map_err(|_| ())?;
                self.buf.extend_from_slice(&self.scratch);
            }
        }
        let rdlen = self.buf.len() - len_at - 2;
        let rdlen = u16::try_from(rdlen).map_err(|_| ())?;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        Ok(())
    }

    /// Writes `name`, pointing at an earlier copy of its longest known suffix when `compress`.
    /// Every newly written suffix becomes a compression target.
    fn write_name(&mut self, name: &Name, compress: bool) {
        let mut labels: [&[u8]; 128] = [&[]; 128];
        let mut n = 0;
        for label in name.iter() {
            if n == labels.len() {
                break;
            }
            labels[n] = label;
            n += 1;
        }
        let labels = &labels[..n];
        // Suffix hashes from the right: hashes[i] covers labels[i..].
        let mut hashes = [0u64; 128];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for i in (0..n).rev() {
            h = fnv_label(h, labels[i]);
            hashes[i] = h;
        }
        let mut first_known = n;
        let mut pointer = None;
        if compress {
            'outer: for i in 0..n {
                for &(hash, off) in &self.names {
                    if hash == hashes[i]
                        && suffix_matches(&self.buf, usize::from(off), &labels[i..])
                    {
                        first_known = i;
                        pointer = Some(off);
                        break 'outer;
                    }
                }
            }
        }
        for (i, label) in labels.iter().enumerate().take(first_known) {
            let off = self.buf.len();
            if off < 0x3fff && self.names.len() < MAX_COMPRESSION_ENTRIES {
                self.names.push((hashes[i], off as u16));
            }
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
        }
        match pointer {
            Some(off) => self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes()),
            None => self.buf.push(0),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Flags {
    opcode: u8,
    authoritative: bool,
    truncated: bool,
    recursion_desired: bool,
    recursion_available: bool,
    checking_disabled: bool,
}

fn fnv_label(mut h: u64, label: &[u8]) -> u64 {
    h ^= label.len() as u64;
    h = h.wrapping_mul(0x0100_0000_01b3);
    for b in label {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether the name written at `pos` in `buf` (following pointers) equals `labels`,
/// ignoring ASCII case.
fn suffix_matches(buf: &[u8], mut pos: usize, labels: &[&[u8]]) -> bool {
    let mut hops = 0;
    let mut next_label = |pos: &mut usize| -> Option<usize> {
        loop {
            let len = *buf.get(*pos)?;
            if len & 0xc0 == 0xc0 {
                let lo = *buf.get(*pos + 1)?;
                *pos = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                hops += 1;
                if hops > 64 {
                    return None;
                }
                continue;
            }
            return Some(usize::from(len));
        }
    };
    for label in labels {
        let Some(len) = next_label(&mut pos) else {
            return false;
        };
        if len != label.len() {
            return false;
        }
        let Some(bytes) = buf.get(pos + 1..pos + 1 + len) else {
            return false;
        };
        if !bytes.eq_ignore_ascii_case(label) {
            return false;
        }
        pos += 1 + len;
    }
    next_label(&mut pos) == Some(0)
}

/// Decodes a message with hickory (for tests and tools): `(header, answers...)` checks.
pub fn decode_message(bytes: &[u8]) -> Result<hickory_proto::op::Message, String> {
    hickory_proto::op::Message::from_vec(bytes).map_err(|e| e.to_string())
}

/// Whether `class` is one the cluster zone answers (IN; ANY is treated as IN for queries).
pub(crate) fn is_internet_class(class: DNSClass) -> bool {
    matches!(class, DNSClass::IN | DNSClass::ANY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::empty_records;
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::{A, PTR, SRV};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    fn client() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353)
    }

    fn query_bytes(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn parse_ok(bytes: &[u8]) -> Request {
        match parse_request(bytes, client(), Transport::Udp) {
            Parsed::Query(r) => *r,
            other => panic!("expected a query, got {other:?}"),
        }
    }

    fn rejection(bytes: &[u8]) -> Rejection {
        match parse_request(bytes, client(), Transport::Udp) {
            Parsed::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_query_with_edns() {
        let req = parse_ok(&query_bytes(
            "Web.Demo.svc.cluster.local.",
            RecordType::SRV,
            Some(4096),
        ));
        assert_eq!(req.id, 0x1234);
        assert_eq!(req.lower_name(), "web.demo.svc.cluster.local.");
        assert_eq!(req.record_type(), RecordType::SRV);
        assert!(req.recursion_desired);
        // The client's 4096 is kept for logs; answers are capped at the advertised 1232.
        assert_eq!(req.client_payload(), 4096);
        assert_eq!(req.max_payload(), ADVERTISED_PAYLOAD);
        let plain = parse_ok(&query_bytes("a.b.", RecordType::A, None));
        assert_eq!(plain.max_payload(), 512);
    }

    #[test]
    fn bad_packets_get_formerr_notimp_badvers_or_nothing() {
        assert!(matches!(
            parse_request(&[0; 5], client(), Transport::Udp),
            Parsed::Drop
        ));
        // A response is never answered.
        let mut resp = query_bytes("a.b.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(
            parse_request(&resp, client(), Transport::Udp),
            Parsed::Drop
        ));
        // No question.
        let mut none = query_bytes("a.b.", RecordType::A, None);
        none[5] = 0;
        assert_eq!(rejection(&none).rcode, ResponseCode::FormErr);
        // Two questions announced, one present: truncated packet.
        let mut two = query_bytes("a.b.", RecordType::A, None);
        two[5] = 2;
        assert_eq!(rejection(&two).rcode, ResponseCode::FormErr);
        // Truncated question.
        let full = query_bytes("demoapp.default.svc.cluster.local.", RecordType::A, None);
        assert_eq!(rejection(&full[..20]).rcode, ResponseCode::FormErr);
        // Opcode NOTIFY (4) / UPDATE (5).
        let mut notify = query_bytes("a.b.", RecordType::SOA, None);
        notify[2] |= 4 << 3;
        let r = rejection(&notify);
        assert_eq!((r.rcode, r.opcode), (ResponseCode::NotImp, 4));
        assert!(r.question.is_some());
        // EDNS version 1.
        let mut v1 = query_bytes("a.b.", RecordType::A, Some(1232));
        let opt_ttl = v1.len() - 6; // OPT: root, type, class, ttl(4), rdlen
        v1[opt_ttl + 1] = 1; // version: the 2nd byte of the TTL
        let r = rejection(&v1);
        assert_eq!(r.rcode, ResponseCode::BADVERS);
        let mut enc = Encoder::new();
        let msg = Message::from_vec(enc.encode_rejection(&r)).unwrap();
        assert_eq!(u16::from(msg.metadata.response_code), 16, "BADVERS");
    }

    fn response(answers: Vec<Record>) -> Response {
        Response::with_records(
            ResponseCode::NoError,
            Arc::from(answers),
            empty_records(),
            empty_records(),
        )
        .authoritative()
    }

    #[test]
    fn answers_compress_against_the_question_case_insensitively() {
        let req = parse_ok(&query_bytes(
            "DemoApp.Default.svc.cluster.local.",
            RecordType::A,
            Some(1232),
        ));
        let owner = Name::from_ascii("demoapp.default.svc.cluster.local.").unwrap();
        let resp = response(vec![Record::from_rdata(
            owner,
            5,
            RData::A(A(Ipv4Addr::new(10, 96, 10, 10))),
        )]);
        let mut enc = Encoder::new();
        let (bytes, tc) = enc.encode(&req, &resp);
        assert!(!tc);
        // header 12 + question (35 + 4) + answer (2 + 10 + 4) + OPT 11
        assert_eq!(bytes.len(), 12 + 39 + 16 + 11);
        let msg = Message::from_vec(bytes).unwrap();
        assert!(msg.metadata.authoritative);
        assert_eq!(msg.metadata.id, 0x1234);
        assert_eq!(
            msg.answers[0].name.to_ascii(),
            "DemoApp.Default.svc.cluster.local."
        );
        assert_eq!(
            msg.edns.as_ref().map(|e| e.max_payload()),
            Some(ADVERTISED_PAYLOAD)
        );
    }

    #[test]
    fn rdata_names_compress_and_decode() {
        let req = parse_ok(&query_bytes(
            "_http._tcp.web.demo.svc.cluster.local.",
            RecordType::SRV,
            None,
        ));
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        for i in 0..3u8 {
            let target = Name::from_ascii(format!("web-{i}.web.demo.svc.cluster.local.")).unwrap();
            answers.push(Record::from_rdata(
                req.name().clone(),
                5,
                RData::SRV(SRV::new(0, 33, 80, target.clone())),
            ));
            extra.push(Record::from_rdata(
                target,
                5,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        answers.push(Record::from_rdata(
            req.name().clone(),
            5,
            RData::PTR(PTR(Name::from_ascii("x.svc.cluster.local.").unwrap())),
        ));
        let resp = Response::with_records(
            ResponseCode::NoError,
            answers.into(),
            empty_records(),
            extra.into(),
        );
        let mut enc = Encoder::new();
        let (bytes, _) = enc.encode(&req, &resp);
        let msg = Message::from_vec(bytes).unwrap();
        assert_eq!(msg.answers.len(), 4);
        assert_eq!(msg.additionals.len(), 3);
        assert_eq!(
            msg.answers[1].data.to_string(),
            "0 33 80 web-1.web.demo.svc.cluster.local."
        );
        assert_eq!(msg.answers[3].data.to_string(), "x.svc.cluster.local.");
        assert_eq!(
            msg.additionals[2].name.to_ascii(),
            "web-2.web.demo.svc.cluster.local."
        );
        // Additional owners point at the SRV targets: 2 bytes each instead of ~33.
        let uncompressed = Message::from_vec(bytes).unwrap().to_vec().unwrap().len();
        assert!(
            bytes.len() <= uncompressed,
            "{} > {uncompressed}",
            bytes.len()
        );
    }

    #[test]
    fn oversized_udp_answers_are_truncated() {
        let req = parse_ok(&query_bytes(
            "web.demo.svc.cluster.local.",
            RecordType::A,
            None,
        ));
        let answers: Vec<Record> = (0..100u8)
            .map(|i| {
                Record::from_rdata(
                    req.name().clone(),
                    5,
                    RData::A(A(Ipv4Addr::new(10, 0, 1, i))),
                )
            })
            .collect();
        let resp = response(answers);
        let mut enc = Encoder::new();
        let (bytes, tc) = enc.encode(&req, &resp);
        assert!(tc);
        let msg = Message::from_vec(bytes).unwrap();
        assert!(msg.metadata.truncation);
        assert!(msg.answers.is_empty());
        let mut tcp = req.clone();
        tcp.transport = Transport::Tcp;
        let (bytes, tc) = enc.encode(&tcp, &resp);
        assert!(!tc);
        assert_eq!(Message::from_vec(bytes).unwrap().answers.len(), 100);
    }

    #[test]
    fn udp_answers_are_capped_at_the_advertised_size() {
        // A client advertising 65535 gets at most 1232 bytes over UDP.
        let req = parse_ok(&query_bytes(
            "web.demo.svc.cluster.local.",
            RecordType::A,
            Some(65535),
        ));
        assert_eq!(req.max_payload(), ADVERTISED_PAYLOAD);
        assert_eq!(req.client_payload(), 65535);
        let small = parse_ok(&query_bytes("a.b.", RecordType::A, Some(100)));
        assert_eq!(small.max_payload(), 512, "below 512 counts as 512");
        let answers: Vec<Record> = (0..100u8)
            .map(|i| {
                Record::from_rdata(
                    req.name().clone(),
                    5,
                    RData::A(A(Ipv4Addr::new(10, 0, 1, i))),
                )
            })
            .collect();
        let resp = response(answers);
        let mut enc = Encoder::new();
        let (bytes, tc) = enc.encode(&req, &resp);
        assert!(tc);
        assert!(bytes.len() <= usize::from(ADVERTISED_PAYLOAD));
        // 70 records (12 + 32 + 70 * 16 + 11 = 1175 bytes) still fit.
        let fits = response(resp.answers[..70].to_vec());
        let (bytes, tc) = enc.encode(&req, &fits);
        assert!(!tc);
        assert_eq!(bytes.len(), 12 + 32 + 70 * 16 + 11);
        // The truncated form of a large answer: header, question and OPT only.
        let t = Message::from_vec(enc.encode_truncated(&req, &resp)).unwrap();
        assert!(t.metadata.truncation);
        assert!(t.answers.is_empty());
        assert!(t.edns.is_some());
    }

    /// Appends an OPT record (payload 1232) with the given options to a message's additional
    /// section.
    fn with_opt(mut msg: Vec<u8>, options: &[(u16, &[u8])]) -> Vec<u8> {
        let ar = u16::from_be_bytes([msg[10], msg[11]]) + 1;
        msg[10..12].copy_from_slice(&ar.to_be_bytes());
        msg.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        let rdlen: usize = options.iter().map(|(_, d)| 4 + d.len()).sum();
        msg.extend_from_slice(&(rdlen as u16).to_be_bytes());
        for (code, data) in options {
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
            msg.extend_from_slice(data);
        }
        msg
    }

    #[test]
    fn formerr_answers_carry_opt_when_the_query_had_one() {
        let mut enc = Encoder::new();
        // No question, but an OPT record.
        let header_only = [
            0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, // no question, one additional
            0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0, // OPT, 4096
        ];
        let r = rejection(&header_only);
        assert_eq!(r.rcode, ResponseCode::FormErr);
        let msg = Message::from_vec(enc.encode_rejection(&r)).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(
            msg.edns.as_ref().map(|e| e.max_payload()),
            Some(ADVERTISED_PAYLOAD)
        );
        // Two OPT records: FORMERR, still with one OPT.
        let two = with_opt(query_bytes("a.b.", RecordType::A, Some(1232)), &[]);
        let r = rejection(&two);
        assert_eq!(r.rcode, ResponseCode::FormErr);
        let msg = Message::from_vec(enc.encode_rejection(&r)).unwrap();
        assert!(msg.edns.is_some());
        // Without OPT in the query, none in the answer.
        let mut plain = query_bytes("a.b.", RecordType::A, None);
        plain[5] = 0;
        let r = rejection(&plain[..12]);
        let msg = Message::from_vec(enc.encode_rejection(&r)).unwrap();
        assert!(msg.edns.is_none());
    }

    #[test]
    fn malformed_cookies_get_formerr() {
        let base = || query_bytes("a.b.", RecordType::A, None);
        let client = [7u8; 8];
        let full = [7u8; 24];
        // Legal: a client cookie alone, or with an 8..32-byte server cookie.
        parse_ok(&with_opt(base(), &[(10, &client)]));
        parse_ok(&with_opt(base(), &[(10, &full)]));
        parse_ok(&with_opt(base(), &[(10, &[1u8; 40])]));
        let mut enc = Encoder::new();
        for bad in [&[][..], &[1u8; 5][..], &[1u8; 12][..], &[1u8; 41][..]] {
            let r = rejection(&with_opt(base(), &[(10, bad)]));
            assert_eq!(
                r.rcode,
                ResponseCode::FormErr,
                "cookie of {} bytes",
                bad.len()
            );
            let msg = Message::from_vec(enc.encode_rejection(&r)).unwrap();
            assert!(msg.edns.is_some(), "FORMERR to an EDNS query carries OPT");
            assert_eq!(msg.queries.len(), 1);
        }
    }

    #[test]
    fn suffix_matching_follows_pointers() {
        let req = parse_ok(&query_bytes("a.b.c.", RecordType::A, None));
        let mut enc = Encoder::new();
        enc.write_response(&req, &Response::new(ResponseCode::NoError), false);
        let name = Name::from_ascii("X.B.C.").unwrap();
        enc.write_name(&name, true);
        // "X" label then a pointer to "b.c." at offset 12 + 2.
        assert_eq!(&enc.buf[enc.buf.len() - 4..], &[1, b'X', 0xc0, 14]);
    }
}
