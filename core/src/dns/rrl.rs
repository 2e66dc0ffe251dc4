//! Response-rate limiting of large UDP answers (amplification protection).
//!
//! A spoofed UDP query makes the server send its answer to the victim whose address was forged;
//! the larger the answer, the more the attacker gains. Every UDP answer is already capped at
//! the size the server advertises ([`super::wire::ADVERTISED_PAYLOAD`]); on top of that, answers
//! larger than [`LARGE_ANSWER`] bytes are limited per client network (an IPv4 /24 or an IPv6
//! /56 by default, as Knot's and BIND's RRL). Beyond the rate, the answer is replaced by an
//! empty truncated one (TC=1, BIND's `slip 1`): a real client retries over TCP and gets its
//! answer, a forged victim only receives small packets.
//!
//! Small answers never touch the limiter, so the common query path stays free of locking; the
//! table is bounded ([`MAX_NETWORKS`]) and forgets networks whose allowance is full again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// UDP answers larger than this many bytes are rate-limited (what a client without EDNS could
/// receive at most).
pub const LARGE_ANSWER: usize = 512;

/// Networks tracked at most; beyond it (after forgetting idle ones) large answers to new
/// networks are truncated until entries free up.
pub(crate) const MAX_NETWORKS: usize = 65_536;

/// Settings of the large-answer rate limit (`--large-answer-rate`, Corefile `rrl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeAnswerLimit {
    /// Large answers allowed per second to one client network (also the burst allowance).
    pub per_second: u32,
    /// IPv4 clients are grouped by this prefix length (default 24).
    pub ipv4_prefix_length: u8,
    /// IPv6 clients are grouped by this prefix length (default 56).
    pub ipv6_prefix_length: u8,
}

impl LargeAnswerLimit {
    /// `per_second` large answers per /24 (IPv4) or /56 (IPv6) network.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
        }
    }

    /// The network key of `ip` (the address with its host bits cleared; IPv4 keys live in the
    /// IPv4-mapped range, so they never collide with native IPv6 ones).
    fn key(&self, ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let len = u32::from(self.ipv4_prefix_length.min(32));
                let masked = if len == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - len))
                };
                0xffff_0000_0000 | u128::from(masked)
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.key(IpAddr::V4(v4));
                }
                let bits = u128::from(v6);
                let len = u32::from(self.ipv6_prefix_length.min(128));
                if len == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - len))
                }
            }
        }
    }
}

/// One network's allowance, in thousandths of an answer.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// The per-network token buckets (pure: time is passed in).
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    entries: HashMap<u128, Bucket, foldhash::fast::RandomState>,
    last_prune_ms: Option<u64>,
}

impl Buckets {
    /// Whether one more large answer to `key` is allowed at `now_ms` with `per_second`.
    pub(crate) fn allow(&mut self, key: u128, per_second: u32, now_ms: u64) -> bool {
        let rate = u64::from(per_second);
        let capacity = rate * 1000;
        if rate == 0 {
            return false;
        }
        if self.entries.len() >= MAX_NETWORKS && !self.entries.contains_key(&key) {
            // Forget networks whose allowance has refilled (at most every 100 ms: the scan is
            // linear, and a flood of new networks must not make every answer pay for it).
            if self
                .last_prune_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= 100)
            {
                self.last_prune_ms = Some(now_ms);
                self.entries.retain(|_, b| {
                    let refilled = b.milli_tokens + now_ms.saturating_sub(b.last_ms) * rate;
                    refilled < capacity
                });
            }
            if self.entries.len() >= MAX_NETWORKS {
                return false;
            }
        }
        let b = self.entries.entry(key).or_insert(Bucket {
            milli_tokens: capacity,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.milli_tokens = (b.milli_tokens + elapsed * rate).min(capacity);
        b.last_ms = now_ms;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Networks currently tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The limiter of one listener; its setting can change on reload.
#[derive(Debug)]
pub(crate) struct LargeAnswerLimiter {
    started: Instant,
    inner: Mutex<(Option<LargeAnswerLimit>, Buckets)>,
}

impl LargeAnswerLimiter {
    /// A limiter with `limit` (`None`: large answers are not limited).
    pub(crate) fn new(limit: Option<LargeAnswerLimit>) -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::new((limit, Buckets::default())),
        }
    }

    /// Replaces the setting (a changed prefix length starts the table afresh).
    pub(crate) fn set(&self, limit: Option<LargeAnswerLimit>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0 != limit {
            *inner = (limit, Buckets::default());
        }
    }

    /// Whether a large answer may go to `client` now. Only called for answers larger than
    /// [`LARGE_ANSWER`].
    pub(crate) fn allow(&self, client: IpAddr) -> bool {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (limit, buckets) = &mut *inner;
        match limit {
            None => true,
            Some(l) => {
                let key = l.key(client);
                buckets.allow(key, l.per_second, now_ms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_refills_at_the_rate_and_caps_at_one_second() {
        let mut b = Buckets::default();
        // A full second's allowance at once, then nothing.
        for _ in 0..5 {
            assert!(b.allow(1, 5, 1000));
        }
        assert!(!b.allow(1, 5, 1000));
        // 200 ms later: one more (5 per second).
        assert!(!b.allow(1, 5, 1199));
        assert!(b.allow(1, 5, 1200));
        assert!(!b.allow(1, 5, 1200));
        // Other networks have their own allowance.
        assert!(b.allow(2, 5, 1200));
        // After a long pause the allowance is full again but not more than a second's worth.
        let allowed = (0..20).filter(|_| b.allow(1, 5, 60_000)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn clients_are_grouped_by_prefix() {
        let l = LargeAnswerLimit::new(1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(l.key(ip("192.0.2.1")), l.key(ip("192.0.2.200")));
        assert_ne!(l.key(ip("192.0.2.1")), l.key(ip("192.0.3.1")));
        assert_eq!(l.key(ip("::ffff:192.0.2.9")), l.key(ip("192.0.2.1")));
        assert_eq!(l.key(ip("2001:db8:0:1::1")), l.key(ip("2001:db8:0:ff::2")));
        assert_ne!(l.key(ip("2001:db8:0:100::1")), l.key(ip("2001:db8::1")));
        let host = LargeAnswerLimit {
            ipv4_prefix_length: 32,
            ..l
        };
        assert_ne!(host.key(ip("192.0.2.1")), host.key(ip("192.0.2.2")));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_refilled_networks() {
        let mut b = Buckets::default();
        for k in 0..MAX_NETWORKS as u128 {
            assert!(b.allow(k, 10, 0));
        }
        assert_eq!(b.len(), MAX_NETWORKS);
        // Full of networks still within their second: a new one is refused.
        assert!(!b.allow(u128::MAX, 10, 50));
        // A second later every allowance has refilled: the table is pruned and the new network
        // gets its answer.
        assert!(b.allow(u128::MAX, 10, 1100));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn limiter_without_a_limit_allows_everything_and_can_be_changed() {
        let l = LargeAnswerLimiter::new(None);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..100).all(|_| l.allow(ip)));
        l.set(Some(LargeAnswerLimit::new(2)));
        let allowed = (0..100).filter(|_| l.allow(ip)).count();
        assert!((2..=3).contains(&allowed), "{allowed}");
        l.set(None);
        assert!(l.allow(ip));
    }
}
