//! Encoded UDP answers kept by a listener and sent again to the same question (the wire-form
//! answers of Knot DNS and NSD, for the cluster zone).
//!
//! Not the Corefile `cache` plugin (which keeps upstream answers and counts their TTL down):
//! this cache holds the exact bytes the server sent, and reuses them only where sending them
//! again is what the plugin chain would do anyway. That holds when
//! - every plugin of the chain declares it ([`Plugin::passes_answers_unchanged`]): its answers
//!   and its choice to pass a request on depend on nothing but the request's bytes and the
//!   served data (no client address, no clock, no rotation), and it leaves the answers of
//!   later plugins as they are;
//! - the answer says it was made from served data only ([`Response::reusable`]: the
//!   `kubernetes` plugin's zone answers);
//! - nothing served changed since: each change of served data or configuration calls
//!   [`invalidate_all`], and the cache drops what it holds when it sees the epoch move;
//! - the answer is NOERROR or NXDOMAIN and fits 512 bytes: it was not truncated, the large-answer
//!   limiter ([`super::rrl`]) was not consulted, and any client's payload size takes it.
//!
//! The key is the query's datagram itself with the message ID zeroed and the question name in
//! lower case, so two queries share an entry only when everything the server reads from them
//! but the ID and the name's case is the same. A hit copies the stored answer and writes the
//! query's ID and the query's question name (its case, for 0x20 clients) into it. Names in the
//! answer that repeat the question point at it (the encoder compresses case-insensitively), so
//! they follow the query's case too.
//!
//! One cache serves all UDP workers of a listener ([`AnswerCache`], in shards behind their
//! own locks, held for a lookup or an insert only); each worker keeps its key scratch and
//! epoch in an [`AnswerReuse`].
//!
//! [`Plugin::passes_answers_unchanged`]: super::handler::Plugin::passes_answers_unchanged
//! [`Response::reusable`]: super::handler::Response::reusable

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::rrl::LARGE_ANSWER;

/// Bumped whenever anything that answers may depend on changes (a zone, a chain, readiness).
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every worker of every server in the process drop its cached answers before it
/// answers its next batch. Called after a change is in place (the new zone stored), so a
/// worker that reads the new epoch also sees the change.
pub(crate) fn invalidate_all() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// The current epoch: read it before running the chain for the answers it may store.
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Bytes a listener's cache may hold, by default: about 30,000 typical cluster answers. A
/// shard that is full is emptied and fills again.
pub(crate) const DEFAULT_LIMIT_BYTES: usize = 4 << 20;

/// Shards of a cache (a power of two).
const SHARDS: usize = 16;

/// What one entry costs besides its bytes in the arena (its [`Entry`] and index slot).
const ENTRY_OVERHEAD: usize = 40;

/// One stored answer. Its key (the query with ID zeroed and the name in lower case) is not
/// stored whole: the query's header (after the ID) is kept here, its question is the
/// answer's (stored in lower case), and what follows the question (an OPT record) is kept in
/// the arena after the answer.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the answer starts in the arena; the query's tail follows it.
    offset: u32,
    answer_len: u16,
    tail_len: u16,
    /// The query's bytes 2..12: flags and section counts.
    header: [u8; 10],
    /// End of the question name (the same offset in query and answer).
    name_end: u16,
    /// The answer is NXDOMAIN (else NOERROR).
    nxdomain: bool,
    /// Index of the answering plugin's name in [`Shard::plugins`].
    plugin: u8,
}

/// What the metrics record of an answer sent from the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    /// The question's type.
    pub(crate) record_type: RecordType,
    /// The answer's response code.
    pub(crate) rcode: ResponseCode,
    /// The plugin that wrote it (metrics label).
    pub(crate) plugin: &'static str,
}

/// Hash values are already hashes: the index uses them as they are.
#[derive(Default, Clone, Copy)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("only u32 keys are hashed")
    }
    fn write_u32(&mut self, v: u32) {
        // Spread the 32 bits over the 64 the table takes its group and tag bits from.
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PrehashedState = std::hash::BuildHasherDefault<Prehashed>;

/// A listener's cache of encoded answers, shared by its UDP workers.
pub(crate) struct AnswerCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::FixedState,
    /// A shard can hold an answer (the limit is not 0).
    enabled: bool,
}

/// One shard: the bytes in one arena, entries in a vector, an index from the key's hash to
/// its entry (a colliding key replaces the entry; a lookup compares the whole key, so a
/// collision is only a miss).
struct Shard {
    epoch: u64,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    index: HashMap<u32, u32, PrehashedState>,
    /// Plugin names of the entries (a handful).
    plugins: Vec<&'static str>,
    limit_bytes: usize,
}

impl AnswerCache {
    /// An empty cache holding at most about `limit_bytes` (0: none, every lookup misses).
    pub(crate) fn new(limit_bytes: usize) -> Self {
        let shard_limit = limit_bytes / SHARDS;
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        epoch: epoch(),
                        arena: Vec::new(),
                        entries: Vec::new(),
                        index: HashMap::default(),
                        plugins: Vec::new(),
                        limit_bytes: shard_limit,
                    })
                })
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_d115),
            enabled: shard_limit > 0,
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        let i = (hash >> 60) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many answers are stored.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().index.len())
            .sum()
    }
}

impl Shard {
    /// Moves the shard to `epoch` if that is newer (emptying it); whether the shard is then
    /// at `epoch` (a worker still on an older epoch neither reads nor writes it).
    fn sync(&mut self, epoch: u64) -> bool {
        if epoch > self.epoch {
            self.clear();
            self.epoch = epoch;
        }
        self.epoch == epoch
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.index.clear();
    }

    fn used(&self) -> usize {
        self.arena.len() + self.entries.len() * ENTRY_OVERHEAD
    }

    /// The answer stored for `key` (name ending at `name_end`), into `out`.
    fn get(&self, hash: u64, key: &[u8], name_end: usize, out: &mut Vec<u8>) -> Option<Hit> {
        let &i = self.index.get(&(hash as u32))?;
        let e = self.entries[i as usize];
        let start = e.offset as usize;
        let answer = &self.arena[start..start + usize::from(e.answer_len)];
        let tail =
            &self.arena[start + answer.len()..start + answer.len() + usize::from(e.tail_len)];
        let end = usize::from(e.name_end);
        if end != name_end
            || e.header != key[2..12]
            || answer[12..end + 4] != key[12..end + 4]
            || *tail != key[end + 4..]
        {
            return None;
        }
        out.clear();
        out.extend_from_slice(answer);
        Some(Hit {
            record_type: RecordType::from(u16::from_be_bytes([key[end], key[end + 1]])),
            rcode: if e.nxdomain {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            },
            plugin: self.plugins[usize::from(e.plugin)],
        })
    }

    /// Stores `answer` to `key`; the caller checked that it may be stored.
    fn put(
        &mut self,
        hash: u64,
        key: &[u8],
        name_end: usize,
        answer: &[u8],
        rcode: ResponseCode,
        plugin: &'static str,
    ) {
        let tail = &key[name_end + 4..];
        let cost = answer.len() + tail.len() + ENTRY_OVERHEAD;
        if cost > self.limit_bytes || tail.len() > usize::from(u16::MAX) {
            return;
        }
        if self.used() + cost > self.limit_bytes {
            self.clear();
        }
        let plugin = match self.plugins.iter().position(|p| *p == plugin) {
            Some(i) => i,
            None if self.plugins.len() < usize::from(u8::MAX) => {
                self.plugins.push(plugin);
                self.plugins.len() - 1
            }
            None => return,
        };
        if self.arena.capacity() == 0 {
            // Reserved once (pages are touched only as they fill): no copies while growing.
            self.arena.reserve_exact(self.limit_bytes);
        }
        let offset = self.arena.len();
        self.arena.extend_from_slice(answer);
        self.arena[offset + 12..offset + name_end].make_ascii_lowercase();
        self.arena.extend_from_slice(tail);
        let mut header = [0; 10];
        header.copy_from_slice(&key[2..12]);
        self.entries.push(Entry {
            offset: offset as u32,
            answer_len: answer.len() as u16,
            tail_len: tail.len() as u16,
            header,
            name_end: name_end as u16,
            nxdomain: rcode == ResponseCode::NXDomain,
            plugin: plugin as u8,
        });
        self.index
            .insert(hash as u32, (self.entries.len() - 1) as u32);
    }
}

/// A UDP worker's use of its listener's [`AnswerCache`]: the key of the query at hand and the
/// epoch of the batch at hand.
pub(crate) struct AnswerReuse {
    cache: Arc<AnswerCache>,
    enabled: bool,
    epoch: u64,
    /// The key of the last [`AnswerReuse::lookup`], for [`AnswerReuse::insert`].
    key: Vec<u8>,
    /// That key's hash and question name end (`None`: the last query cannot be stored).
    pending: Option<(u64, usize)>,
}

impl AnswerReuse {
    /// A worker's handle on `cache`.
    pub(crate) fn new(cache: Arc<AnswerCache>) -> Self {
        Self {
            enabled: cache.enabled,
            cache,
            epoch: epoch(),
            key: Vec::with_capacity(512),
            pending: None,
        }
    }

    /// Reads the current epoch: call before each batch. Answers the chain gives from then on
    /// are stored under it, and lookups ignore what was stored under an earlier one.
    pub(crate) fn sync(&mut self) {
        self.epoch = epoch();
    }

    /// The stored answer to `query` (a datagram as received), written into `out` with the
    /// query's ID and question name. A miss remembers the query's key for
    /// [`AnswerReuse::insert`].
    pub(crate) fn lookup(&mut self, query: &[u8], out: &mut Vec<u8>) -> Option<Hit> {
        use std::hash::BuildHasher;
        self.pending = None;
        if !self.enabled {
            return None;
        }
        let name_end = question_name_end(query)?;
        self.key.clear();
        self.key.extend_from_slice(query);
        self.key[0] = 0;
        self.key[1] = 0;
        self.key[12..name_end].make_ascii_lowercase();
        let hash = self.cache.hasher.hash_one(&self.key[..]);
        let hit = {
            let mut shard = self.cache.shard(hash);
            if shard.sync(self.epoch) {
                shard.get(hash, &self.key, name_end, out)
            } else {
                None
            }
        };
        match hit {
            Some(hit) => {
                out[..2].copy_from_slice(&query[..2]);
                out[12..name_end].copy_from_slice(&query[12..name_end]);
                Some(hit)
            }
            None => {
                self.pending = Some((hash, name_end));
                None
            }
        }
    }

    /// Stores `answer`, sent to the query of the last missed [`AnswerReuse::lookup`] in this
    /// batch, if it may be sent again: it is NOERROR or NXDOMAIN, not truncated, within 512
    /// bytes, with that query's question.
    pub(crate) fn insert(&mut self, answer: &[u8], rcode: ResponseCode, plugin: &'static str) {
        let Some((hash, name_end)) = self.pending.take() else {
            return;
        };
        if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
            || answer.len() > LARGE_ANSWER
            || answer.len() < name_end + 4
            // Truncated (too large for the client, or limited): the limiter decides anew.
            || answer[2] & 0x02 != 0
            // The question as the encoder wrote it must be the query's, byte for byte but case.
            || !answer[12..name_end].eq_ignore_ascii_case(&self.key[12..name_end])
            || answer[name_end..name_end + 4] != self.key[name_end..name_end + 4]
        {
            return;
        }
        let mut shard = self.cache.shard(hash);
        // A shard already on a newer epoch must not take an answer of this batch's.
        if shard.sync(self.epoch) {
            shard.put(hash, &self.key, name_end, answer, rcode, plugin);
        }
    }
}

/// Where the question name of a plain query ends (the offset after its root label), or `None`
/// for anything else: a response, an opcode other than QUERY, not exactly one question, a
/// compressed or overlong name. Such datagrams always take the full path.
fn question_name_end(query: &[u8]) -> Option<usize> {
    if query.len() < 17 || query[2] & 0xf8 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut pos = 12;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - 12 > 255 {
            return None;
        }
    }
    // Type and class must follow.
    (query.len() >= pos + 4).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (dotted, no trailing dot) of type A, with `id`, RD set.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    }

    /// An answer to `q`: its header as a response, its question, and one A record pointing at
    /// the question.
    fn answer(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] = 0x85;
        a[3] = 0x00;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        a
    }

    fn worker(limit: usize) -> AnswerReuse {
        let mut w = AnswerReuse::new(Arc::new(AnswerCache::new(limit)));
        w.sync();
        w
    }

    /// Looks `q` up and, on a miss, stores `answer` with `rcode`; how many answers are stored.
    fn fill(w: &mut AnswerReuse, q: &[u8], answer: &[u8], rcode: ResponseCode) -> usize {
        let mut out = Vec::new();
        if w.lookup(q, &mut out).is_none() {
            w.insert(answer, rcode, "kubernetes");
        }
        w.cache.len()
    }

    #[test]
    fn a_hit_carries_the_id_and_the_case_of_its_query() {
        let mut w = worker(DEFAULT_LIMIT_BYTES);
        let first = query(7, "svc.ns.svc.cluster.local");
        assert_eq!(
            fill(&mut w, &first, &answer(&first), ResponseCode::NoError),
            1
        );

        // Another worker of the same listener finds it.
        let mut other = AnswerReuse::new(w.cache.clone());
        other.sync();
        let second = query(0xbeef, "SvC.nS.svc.CLUSTER.local");
        let mut out = Vec::new();
        let hit = other
            .lookup(&second, &mut out)
            .expect("same question, other case");
        assert_eq!(hit.rcode, ResponseCode::NoError);
        assert_eq!(hit.plugin, "kubernetes");
        assert_eq!(
            out,
            answer(&second),
            "ID and question case from the second query"
        );
    }

    #[test]
    fn other_flags_types_or_a_moved_epoch_miss() {
        let mut w = worker(DEFAULT_LIMIT_BYTES);
        let q = query(1, "a.b.svc.cluster.local");
        fill(&mut w, &q, &answer(&q), ResponseCode::NXDomain);
        let mut out = Vec::new();

        let mut no_rd = q.clone();
        no_rd[2] = 0;
        assert!(w.lookup(&no_rd, &mut out).is_none(), "RD differs");
        let mut aaaa = q.clone();
        let n = aaaa.len();
        aaaa[n - 3] = 28;
        assert!(w.lookup(&aaaa, &mut out).is_none(), "type differs");
        let mut edns = q.clone();
        edns[11] = 1;
        edns.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        assert!(w.lookup(&edns, &mut out).is_none(), "OPT differs");
        let hit = w.lookup(&q, &mut out).expect("the same query");
        assert_eq!(hit.rcode, ResponseCode::NXDomain);

        invalidate_all();
        // Until its next batch, the worker still answers from what it saw.
        assert!(w.lookup(&q, &mut out).is_some());
        w.sync();
        assert!(w.lookup(&q, &mut out).is_none(), "epoch moved");
    }

    #[test]
    fn a_worker_behind_the_epoch_neither_reads_nor_writes() {
        let cache = Arc::new(AnswerCache::new(DEFAULT_LIMIT_BYTES));
        let mut behind = AnswerReuse::new(cache.clone());
        behind.sync();
        invalidate_all();
        let mut ahead = AnswerReuse::new(cache.clone());
        ahead.sync();
        let q = query(1, "c.svc.cluster.local");
        assert_eq!(fill(&mut ahead, &q, &answer(&q), ResponseCode::NoError), 1);
        let mut out = Vec::new();
        assert!(behind.lookup(&q, &mut out).is_none());
        behind.insert(&answer(&q), ResponseCode::NoError, "kubernetes");
        assert!(
            ahead.lookup(&q, &mut out).is_some(),
            "the newer entry stays"
        );
    }

    #[test]
    fn only_small_noerror_and_nxdomain_answers_of_the_question_are_stored() {
        let mut w = worker(DEFAULT_LIMIT_BYTES);
        let q = query(1, "x.y.svc.cluster.local");
        assert_eq!(fill(&mut w, &q, &answer(&q), ResponseCode::ServFail), 0);
        let mut big = answer(&q);
        big.resize(LARGE_ANSWER + 1, 0);
        assert_eq!(fill(&mut w, &q, &big, ResponseCode::NoError), 0);
        let mut truncated = answer(&q);
        truncated[2] |= 0x02;
        assert_eq!(fill(&mut w, &q, &truncated, ResponseCode::NoError), 0);
        let other = answer(&query(1, "z.y.svc.cluster.local"));
        assert_eq!(
            fill(&mut w, &q, &other, ResponseCode::NoError),
            0,
            "not this query's question"
        );
        assert_eq!(fill(&mut w, &q, &answer(&q), ResponseCode::NoError), 1);
    }

    #[test]
    fn a_full_shard_starts_over_and_a_zero_limit_stores_nothing() {
        let q1 = query(1, "one.svc.cluster.local");
        let q2 = query(1, "two.svc.cluster.local");
        let name_end = q1.len() - 4;
        let cost = answer(&q1).len() + ENTRY_OVERHEAD;
        let mut shard = Shard {
            epoch: 0,
            arena: Vec::new(),
            entries: Vec::new(),
            index: HashMap::default(),
            plugins: Vec::new(),
            limit_bytes: cost + cost / 2,
        };
        let mut out = Vec::new();
        shard.put(1, &q1, name_end, &answer(&q1), ResponseCode::NoError, "k");
        assert!(shard.get(1, &q1, name_end, &mut out).is_some());
        shard.put(2, &q2, name_end, &answer(&q2), ResponseCode::NoError, "k");
        assert_eq!(shard.index.len(), 1);
        assert!(shard.get(2, &q2, name_end, &mut out).is_some());
        assert!(shard.get(1, &q1, name_end, &mut out).is_none());
        // Same hash, other key: a miss, not a wrong answer.
        assert!(shard.get(2, &q1, name_end, &mut out).is_none());

        let mut none = worker(0);
        assert_eq!(fill(&mut none, &q1, &answer(&q1), ResponseCode::NoError), 0);
    }

    #[test]
    fn unusual_queries_are_never_keyed() {
        let q = query(1, "a.svc.cluster.local");
        let mut response = q.clone();
        response[2] |= 0x80;
        let mut two_questions = q.clone();
        two_questions[5] = 2;
        let mut pointer = q[..12].to_vec();
        pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let mut notify = q.clone();
        notify[2] |= 4 << 3;
        for bad in [
            &response,
            &two_questions,
            &pointer,
            &notify,
            &q[..15].to_vec(),
        ] {
            assert_eq!(question_name_end(bad), None, "{bad:?}");
        }
        assert_eq!(question_name_end(&q), Some(q.len() - 4));
    }
}
