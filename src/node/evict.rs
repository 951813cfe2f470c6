//! Eviction: what a node does when a write finds used memory above
//! `maxmemory` (Redis' `maxmemory-policy`).
//!
//! Every key carries a 32-bit access clock (in [`Key`]'s spare bytes, so it
//! costs no memory): the low 24 bits are the second of its last access
//! (wrapping every 194 days, like Redis' LRU clock), the high 8 bits a
//! logarithmic access counter (Redis' LFU: incremented with probability
//! 1/((c-5)·10+1), decremented by one per idle minute). Both are kept on
//! every access, so the policy can change at run time.
//!
//! Victims are chosen the way Redis does: `maxmemory-samples` keys sampled
//! at random feed a pool of the 16 best candidates seen so far, and the
//! best of the pool goes. Evicted keys are queued like expired ones: the
//! command that evicted them logs a `DEL` for each before its own record,
//! so the log and every replica drop them too.

use std::time::{Duration, Instant};

use super::alloc;
use super::store::{Key, Store};

/// What to do when used memory exceeds `maxmemory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse writes that add data (-OOM); never delete anything.
    #[default]
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::AllKeysLfu => "allkeys-lfu",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    /// Only keys with a time to live are candidates.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Policy::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown maxmemory policy {s:?} (one of {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Redis' default `maxmemory-samples`.
pub const DEFAULT_SAMPLES: usize = 5;
/// Candidates kept between evictions (Redis' EVPOOL_SIZE).
const POOL_SIZE: usize = 16;
/// A new key's counter (Redis' LFU_INIT_VAL): new keys are not the first
/// to go just because they have not been read yet.
const LFU_INIT: u32 = 5;
const LFU_LOG_FACTOR: u32 = 10;
const CLOCK_MASK: u32 = 0x00ff_ffff;

/// The 24-bit clock at `now_ms` (seconds).
pub fn clock_at(now_ms: u64) -> u32 {
    ((now_ms / 1000) as u32) & CLOCK_MASK
}

/// Seconds since the access recorded in `meta`.
pub fn idle_secs(meta: u32, now: u32) -> u32 {
    now.wrapping_sub(meta & CLOCK_MASK) & CLOCK_MASK
}

/// The access counter of `meta` after its idle minutes' decay.
pub fn decayed_counter(meta: u32, now: u32) -> u32 {
    let counter = meta >> 24;
    counter.saturating_sub(idle_secs(meta, now) / 60)
}

/// The clock of a key created now.
pub fn fresh(now: u32) -> u32 {
    (LFU_INIT << 24) | now
}

/// The clock after an access at `now`; `rnd` is a uniform random u32.
pub fn touched(meta: u32, now: u32, rnd: u32) -> u32 {
    let mut c = decayed_counter(meta, now);
    if c < 255 {
        let base = c.saturating_sub(LFU_INIT);
        // Incremented with probability 1/(base·factor + 1).
        let p = u32::MAX / (base * LFU_LOG_FACTOR + 1);
        if rnd <= p {
            c += 1;
        }
    }
    (c << 24) | now
}

/// A small fast generator for sampling and the counter's coin (not for
/// anything an attacker may predict with profit).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Keys sampled from one slot: (key, its clock, its deadline).
type Sampled = (u16, Vec<(Key, u32, u64)>);

/// One candidate of the pool: higher `score` goes first.
#[derive(Debug)]
struct Candidate {
    score: u64,
    slot: u16,
    key: Key,
}

/// The eviction pool: the best candidates sampled so far, worst first.
#[derive(Debug, Default)]
pub struct Pool(Vec<Candidate>);

impl Pool {
    fn offer(&mut self, score: u64, slot: u16, key: &Key) {
        if self.0.len() == POOL_SIZE && score <= self.0[0].score {
            return;
        }
        if self.0.iter().any(|c| c.slot == slot && c.key == *key) {
            return;
        }
        let at = self.0.partition_point(|c| c.score < score);
        self.0.insert(
            at,
            Candidate {
                score,
                slot,
                key: key.clone(),
            },
        );
        if self.0.len() > POOL_SIZE {
            self.0.remove(0);
        }
    }
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// The slots that had candidates when last listed (see
/// [`Store::random_slot`]).
#[derive(Debug, Default)]
pub struct SampleSlots {
    volatile: bool,
    slots: Vec<u16>,
    uses_left: u32,
}

/// The victim score of an entry under `policy` (higher: evicted sooner).
fn score(policy: Policy, meta: u32, expire_at: u64, now: u32) -> u64 {
    match policy {
        Policy::AllKeysLru | Policy::VolatileLru => idle_secs(meta, now) as u64,
        Policy::AllKeysLfu | Policy::VolatileLfu => 255 - decayed_counter(meta, now) as u64,
        Policy::VolatileTtl => u64::MAX - expire_at,
        _ => 0,
    }
}

impl Store {
    /// A random slot with a candidate key. A few blind picks find one in
    /// a well-filled keyspace; a sparse one (few keys, or a shard's share
    /// of the slots) picks from a list of the slots with candidates,
    /// rebuilt every few hundred picks so new slots join it.
    fn random_slot(&mut self, volatile: bool) -> Option<u16> {
        let n = super::slots::SLOTS;
        for _ in 0..3 {
            let s = self.rng.below(n) as u16;
            if self.candidates_in(s, volatile) > 0 {
                return Some(s);
            }
        }
        for rebuilt in [false, true] {
            let stale = self.sample_slots.volatile != volatile || self.sample_slots.uses_left == 0;
            if rebuilt || stale {
                let slots = (0..n as u16)
                    .filter(|&s| self.candidates_in(s, volatile) > 0)
                    .collect();
                self.sample_slots = SampleSlots {
                    volatile,
                    slots,
                    uses_left: 256,
                };
            }
            self.sample_slots.uses_left -= 1;
            for _ in 0..8 {
                let len = self.sample_slots.slots.len();
                if len == 0 {
                    return None;
                }
                let s = self.sample_slots.slots[self.rng.below(len)];
                if self.candidates_in(s, volatile) > 0 {
                    return Some(s);
                }
            }
        }
        None
    }

    fn candidates_in(&self, slot: u16, volatile: bool) -> usize {
        if volatile {
            self.slot_volatile(slot)
        } else {
            self.slot_len(slot)
        }
    }

    /// Up to `n` candidate keys of a random slot, from a random position.
    fn sample(&mut self, volatile: bool, n: usize) -> Option<Sampled> {
        let slot = self.random_slot(volatile)?;
        let len = self.slot_len(slot);
        let skip = self.rng.below(len);
        let picked = (0..len)
            .filter_map(|i| self.slot_key_at(slot, (skip + i) % len))
            .filter(|(_, e)| !volatile || e.expire_at() != 0)
            .take(n)
            .map(|(k, e)| (k.clone(), k.clock(), e.expire_at()))
            .collect();
        Some((slot, picked))
    }

    /// Deletes one key chosen by `policy`, queueing its DEL for the log.
    /// False when no key is a candidate (none at all, or none volatile).
    pub fn evict_one(&mut self, policy: Policy, samples: usize) -> bool {
        let volatile = policy.volatile_only();
        if policy == Policy::NoEviction || self.is_empty() || (volatile && self.volatile_len() == 0)
        {
            return false;
        }
        if matches!(policy, Policy::AllKeysRandom | Policy::VolatileRandom) {
            let Some((slot, keys)) = self.sample(volatile, 1) else {
                return false;
            };
            return match keys.into_iter().next() {
                Some((key, _, _)) => self.evict(slot, key),
                None => false,
            };
        }
        let now = clock_at(self.now_ms);
        // A pool left from another policy ranks by the wrong measure.
        if self.pool_policy != policy {
            self.pool.clear();
            self.pool_policy = policy;
        }
        for _ in 0..4 {
            let mut got = 0;
            while got < samples.max(1) {
                let Some((slot, keys)) = self.sample(volatile, samples.max(1) - got) else {
                    return false;
                };
                got += keys.len().max(1);
                for (key, meta, expire_at) in keys {
                    self.pool
                        .offer(score(policy, meta, expire_at, now), slot, &key);
                }
            }
            // The best candidate still present and as good as when sampled
            // (a key read since then is no longer cold).
            while let Some(c) = self.pool.0.pop() {
                let current = self
                    .peek_key(c.slot, &c.key)
                    .filter(|(_, e)| !volatile || e.expire_at() != 0)
                    .map(|(k, e)| score(policy, k.clock(), e.expire_at(), now));
                if current.is_some_and(|s| s >= c.score) {
                    return self.evict(c.slot, c.key);
                }
            }
        }
        false
    }

    fn evict(&mut self, slot: u16, key: Key) -> bool {
        if self.remove(slot, &key).is_none() {
            return false;
        }
        self.evicted.push((slot, key));
        self.evicted_total += 1;
        true
    }
}

/// A node's memory limit and policy (settable at run time by CONFIG SET).
#[derive(Debug)]
pub struct Memory {
    /// 0: no limit.
    pub maxmemory: std::cell::Cell<u64>,
    pub policy: std::cell::Cell<Policy>,
    pub samples: std::cell::Cell<usize>,
    /// Used memory when the node had started, before loading any data
    /// (Redis' used_memory_startup).
    pub startup: std::cell::Cell<u64>,
}

impl Memory {
    pub fn new(maxmemory: u64, policy: Policy, samples: usize) -> Self {
        Self {
            maxmemory: maxmemory.into(),
            policy: policy.into(),
            samples: samples.into(),
            startup: 0.into(),
        }
    }

    /// Whether used memory exceeds `maxmemory`.
    pub fn over(&self) -> bool {
        let max = self.maxmemory.get();
        max > 0 && alloc::allocated() as u64 > max
    }

    /// Evicts keys until used memory is under `maxmemory`, for at most a
    /// millisecond per call (a big excess is worked off over several
    /// commands, as Redis' eviction time limit does). False when memory is
    /// still over the limit and nothing more can be evicted: the caller
    /// refuses the write with -OOM.
    pub fn free(&self, store: &mut Store) -> bool {
        if !self.over() {
            return true;
        }
        let policy = self.policy.get();
        let samples = self.samples.get();
        let start = Instant::now();
        let mut n = 0u32;
        while self.over() {
            if !store.evict_one(policy, samples) {
                return false;
            }
            n += 1;
            if n % 16 == 0 && start.elapsed() > Duration::from_millis(1) {
                break;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::store::Value;

    fn s() -> Value {
        Value::Str(b"v".as_slice().into())
    }

    #[test]
    fn policy_names_round_trip_and_unknown_is_refused() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert_eq!("ALLKEYS-LRU".parse::<Policy>(), Ok(Policy::AllKeysLru));
        assert!("lru".parse::<Policy>().is_err());
    }

    #[test]
    fn clock_counts_idle_seconds_across_the_wrap() {
        let t = clock_at(5_000);
        assert_eq!(idle_secs(fresh(t), clock_at(65_000)), 60);
        // 24 bits of seconds wrap; idle time is still the difference.
        assert_eq!(idle_secs(fresh(CLOCK_MASK - 1), 3), 5);
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays_per_idle_minute() {
        let mut rng = Rng::new(7);
        let mut m = fresh(0);
        for _ in 0..100 {
            m = touched(m, 0, rng.next_u64() as u32);
        }
        let after_100 = m >> 24;
        for _ in 0..100_000 {
            m = touched(m, 0, rng.next_u64() as u32);
        }
        let after_100k = m >> 24;
        assert!(after_100 > LFU_INIT + 3 && after_100 < 40, "{after_100}");
        assert!(
            after_100k > after_100 + 20 && after_100k <= 255,
            "{after_100k}"
        );
        // Ten idle minutes take ten off.
        assert_eq!(decayed_counter(m, 600), after_100k - 10);
    }

    #[test]
    fn volatile_policies_evict_only_keys_with_a_ttl() {
        let mut st = Store::new();
        st.now_ms = 1_000;
        for i in 0..200u32 {
            let at = if i % 4 == 0 { 10_000_000 + i as u64 } else { 0 };
            st.set((i % 7) as u16, format!("k{i}").as_bytes(), s(), at);
        }
        for p in [
            Policy::VolatileLru,
            Policy::VolatileLfu,
            Policy::VolatileRandom,
            Policy::VolatileTtl,
        ] {
            let mut other = Store::new();
            other.now_ms = 1_000;
            for i in 0..200u32 {
                let at = if i % 4 == 0 { 10_000_000 } else { 0 };
                other.set((i % 7) as u16, format!("k{i}").as_bytes(), s(), at);
            }
            let mut n = 0;
            while other.evict_one(p, 5) {
                n += 1;
            }
            assert_eq!(n, 50, "{p}");
            assert_eq!(other.len(), 150, "{p}: the persistent keys stay");
            assert_eq!(other.volatile_len(), 0);
            assert_eq!(other.drain_evicted().count(), 50);
        }
        assert!(!st.evict_one(Policy::NoEviction, 5));
    }

    #[test]
    fn volatile_ttl_evicts_the_soonest_deadline_first() {
        let mut st = Store::new();
        st.now_ms = 1_000;
        for i in 0..100u64 {
            st.set(
                (i % 11) as u16,
                format!("k{i}").as_bytes(),
                s(),
                100_000 + i * 1000,
            );
        }
        for _ in 0..20 {
            assert!(st.evict_one(Policy::VolatileTtl, 10));
        }
        let gone: Vec<u64> = st
            .drain_evicted()
            .map(|(_, k)| String::from_utf8_lossy(&k)[1..].parse().unwrap_or(u64::MAX))
            .collect();
        let early = gone.iter().filter(|&&i| i < 40).count();
        assert!(early >= 17, "mostly the soonest deadlines: {gone:?}");
    }

    #[test]
    fn lru_evicts_cold_keys_before_hot_ones() {
        let mut st = Store::new();
        st.now_ms = 1_000;
        for i in 0..400u32 {
            st.set((i % 13) as u16, format!("k{i}").as_bytes(), s(), 0);
        }
        st.now_ms = 60_000;
        for i in (0..400u32).filter(|i| i % 2 == 0) {
            assert!(st
                .get((i % 13) as u16, format!("k{i}").as_bytes())
                .is_some());
        }
        for _ in 0..150 {
            assert!(st.evict_one(Policy::AllKeysLru, 5));
        }
        let hot_gone = st
            .drain_evicted()
            .filter(|(_, k)| String::from_utf8_lossy(&k[1..]).parse::<u32>().unwrap_or(1) % 2 == 0)
            .count();
        assert_eq!(hot_gone, 0, "only cold keys go while cold keys remain");
    }
}
