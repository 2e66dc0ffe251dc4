//! Prepared answers: UDP answers kept in wire form per question and reused for the same
//! question, with only the message ID, the RD and CD bits and the question's letter case
//! patched in — the cluster zone already knows every answer, so a repeated question need not be
//! parsed, looked up and encoded again.
//!
//! An answer is kept only when the chain declares it a pure function of the question
//! ([`Plugin::answers_purely`](super::handler::Plugin::answers_purely): the cluster zone, behind
//! pass-through plugins such as the routers and `errors`), it is NOERROR or NXDOMAIN, not
//! truncated and small enough that the large-answer limit never applies. Every change that can
//! alter such an answer (a new zone, the zone becoming ready, a Corefile reload) bumps one
//! process-wide [`epoch`]; an answer prepared under another epoch is not used.
//!
//! Only plain queries take this path: opcode QUERY, one question without compression, no other
//! records but an optional EDNS(0) OPT of version 0 without options. Anything else (dig's
//! cookies, TSIG, ...) goes through the parser and the chain as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Changes of anything a pure answer depends on.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The current epoch: read before an answer is computed, stored with it.
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Invalidates every prepared answer. Call *after* the change is visible to queries.
pub(crate) fn bump() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// Answers kept per worker before the table is emptied and refilled.
const CAPACITY: usize = 32_768;

/// Length of an EDNS(0) OPT record without options.
const OPT_LEN: usize = 11;

/// What the metrics record of a prepared answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreparedMeta {
    /// The question type.
    pub(crate) record_type: RecordType,
    /// The answer's response code.
    pub(crate) rcode: ResponseCode,
    /// The plugin that wrote it.
    pub(crate) plugin: &'static str,
}

struct Prepared {
    epoch: u64,
    bytes: Box<[u8]>,
    meta: PreparedMeta,
}

/// One UDP worker's prepared answers (no locking: each worker has its own).
#[derive(Default)]
pub(crate) struct PreparedAnswers {
    map: HashMap<Box<[u8]>, Prepared>,
    /// The key of the last [`key`](Self::key) call.
    key: Vec<u8>,
    /// The question name's wire length in that datagram (0: no key).
    name_len: usize,
}

impl PreparedAnswers {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Computes the key of `datagram` for [`answer`](Self::answer) and
    /// [`insert`](Self::insert); false when the datagram is not a plain query.
    pub(crate) fn key(&mut self, datagram: &[u8]) -> bool {
        self.key.clear();
        self.name_len = 0;
        let Some(name_len) = plain_query(datagram) else {
            return false;
        };
        // Header bytes that shape the answer, without the ID, RD and CD (patched on use).
        self.key.push(datagram[2] & !0x01);
        self.key.push(datagram[3] & !0x10);
        self.key.push(datagram[11]);
        self.key.extend(
            datagram[12..12 + name_len]
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        self.key.extend_from_slice(&datagram[12 + name_len..]);
        self.name_len = name_len;
        true
    }

    /// Writes the prepared answer to the query `datagram` (whose key was just computed) into
    /// `out`, if there is one of the current epoch.
    pub(crate) fn answer(&self, datagram: &[u8], out: &mut Vec<u8>) -> Option<PreparedMeta> {
        if self.name_len == 0 {
            return None;
        }
        let p = self.map.get(&self.key[..])?;
        if p.epoch != epoch() {
            return None;
        }
        out.clear();
        out.extend_from_slice(&p.bytes);
        out[0] = datagram[0];
        out[1] = datagram[1];
        out[2] = (out[2] & !0x01) | (datagram[2] & 0x01);
        out[3] = (out[3] & !0x10) | (datagram[3] & 0x10);
        let name = 12..12 + self.name_len;
        out[name.clone()].copy_from_slice(&datagram[name]);
        Some(p.meta)
    }

    /// Keeps `answer` (the wire answer to the query whose key was just computed, computed under
    /// `epoch`) for the same question.
    pub(crate) fn insert(&mut self, epoch: u64, answer: &[u8], meta: PreparedMeta) {
        if self.name_len == 0 || answer.len() < 12 + self.name_len {
            return;
        }
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        self.map.insert(
            self.key.clone().into_boxed_slice(),
            Prepared {
                epoch,
                bytes: answer.into(),
                meta,
            },
        );
    }

    /// Answers kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Whether `rcode` answers may be prepared: positive and negative answers, not errors (which
/// are logged and may be transient).
pub(crate) fn preparable_rcode(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
}

/// The question name's wire length if `d` is a plain query: QR=0, opcode QUERY, TC=0, one
/// question, no answer or authority records, no additional record but an optional OPT of
/// version 0 without options, and a name without compression pointers.
fn plain_query(d: &[u8]) -> Option<usize> {
    if d.len() < 12 + 1 + 4 || d[2] & 0xFA != 0 {
        return None;
    }
    let counts = [d[4], d[5], d[6], d[7], d[8], d[9], d[10]];
    if counts != [0, 1, 0, 0, 0, 0, 0] || d[11] > 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*d.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
        if i - 12 > 255 {
            return None;
        }
    }
    let name_len = i - 12;
    let rest = d.len().checked_sub(i + 4)?;
    match (d[11], rest) {
        (0, 0) => Some(name_len),
        (1, OPT_LEN) => {
            let opt = &d[i + 4..];
            // Root owner, type OPT, extended rcode 0, version 0, no options.
            let ok = opt[0] == 0 && opt[1..3] == [0, 41] && opt[5] == 0 && opt[6] == 0;
            (ok && opt[9..11] == [0, 0]).then_some(name_len)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16, rd: bool, edns: Option<u16>) -> Vec<u8> {
        let mut d = vec![
            (id >> 8) as u8,
            id as u8,
            u8::from(rd),
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
        ];
        d.push(u8::from(edns.is_some()));
        for label in name.trim_end_matches('.').split('.') {
            d.push(label.len() as u8);
            d.extend_from_slice(label.as_bytes());
        }
        d.push(0);
        d.extend_from_slice(&qtype.to_be_bytes());
        d.extend_from_slice(&[0, 1]);
        if let Some(size) = edns {
            d.extend_from_slice(&[0, 0, 41]);
            d.extend_from_slice(&size.to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        d
    }

    /// An "answer": the query echoed with QR set and 4 bytes of data.
    fn answer_to(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x80;
        a.extend_from_slice(&[1, 2, 3, 4]);
        a
    }

    const META: PreparedMeta = PreparedMeta {
        record_type: RecordType::A,
        rcode: ResponseCode::NoError,
        plugin: "kubernetes",
    };

    #[test]
    fn a_prepared_answer_gets_the_new_id_flags_and_letter_case() {
        let mut p = PreparedAnswers::new();
        let first = query(7, "web.default.svc.cluster.local", 1, true, None);
        assert!(p.key(&first));
        let mut out = Vec::new();
        assert!(p.answer(&first, &mut out).is_none(), "nothing prepared yet");
        p.insert(epoch(), &answer_to(&first), META);

        let again = query(9, "WEB.Default.svc.cluster.local", 1, false, None);
        assert!(p.key(&again));
        let meta = p.answer(&again, &mut out).expect("prepared");
        assert_eq!(meta.plugin, "kubernetes");
        let mut expected = answer_to(&again);
        expected[2] &= !0x01; // RD of this query
        assert_eq!(out, expected);
        assert_eq!(&out[0..2], &[0, 9]);
    }

    #[test]
    fn another_type_size_or_epoch_is_not_the_same_answer() {
        let mut p = PreparedAnswers::new();
        let q = query(1, "web.default.svc.cluster.local", 1, true, Some(1232));
        assert!(p.key(&q));
        p.insert(epoch(), &answer_to(&q), META);
        let mut out = Vec::new();
        for other in [
            query(1, "web.default.svc.cluster.local", 28, true, Some(1232)),
            query(1, "web.default.svc.cluster.local", 1, true, Some(512)),
            query(1, "web.default.svc.cluster.local", 1, true, None),
            query(1, "api.default.svc.cluster.local", 1, true, Some(1232)),
        ] {
            assert!(p.key(&other));
            assert!(p.answer(&other, &mut out).is_none());
        }
        assert!(p.key(&q));
        assert!(p.answer(&q, &mut out).is_some());
        bump();
        assert!(p.answer(&q, &mut out).is_none(), "a change invalidates it");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn only_plain_queries_have_a_key() {
        let mut p = PreparedAnswers::new();
        let plain = query(1, "a.b", 1, true, None);
        assert!(p.key(&plain));
        let mut response = plain.clone();
        response[2] |= 0x80;
        let mut notify = plain.clone();
        notify[2] |= 4 << 3;
        let mut two_questions = plain.clone();
        two_questions[5] = 2;
        let mut compressed = plain.clone();
        compressed[12] = 0xC0;
        let mut with_option = query(1, "a.b", 1, true, Some(1232));
        with_option[12 + 5 + 4 + 10] = 4; // rdlen
        with_option.extend_from_slice(&[0, 10, 0, 0]);
        let mut edns1 = query(1, "a.b", 1, true, Some(1232));
        edns1[12 + 5 + 4 + 6] = 1; // version
        for bad in [
            &response[..],
            &notify,
            &two_questions,
            &compressed,
            &with_option,
            &edns1,
            &plain[..plain.len() - 1],
            &[0u8; 11][..],
        ] {
            assert!(!p.key(bad), "{bad:?}");
            assert!(p.answer(bad, &mut Vec::new()).is_none());
        }
    }
}
