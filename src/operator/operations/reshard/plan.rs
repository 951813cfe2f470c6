//! The resharding planner: pure functions from who owns which slots (the
//! recorded `shards[].slots`) and the shard count asked for, to the slot
//! moves that reach an even split.
//!
//! The split is even by count: every remaining shard ends with as many
//! slots as the same shard of a fresh cluster of that size (`slot_ranges`),
//! so within one slot of every other. Reaching it moves the fewest slots
//! possible for those counts: a shard over its count gives away only its
//! surplus (its highest slots, so what it keeps stays contiguous), a shard
//! under it receives only its deficit, and a shard being removed gives all
//! of its slots, spread over the receivers in proportion to their deficits
//! (never all into one shard).

use crate::api::SLOTS;
use crate::operator::topology::{format_range, parse_range, slot_ranges};

/// Slots one shard owns, as inclusive ranges.
pub type Ranges = Vec<(u16, u16)>;

/// One planned move of slots from shard `source` to shard `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub source: u32,
    pub target: u32,
    pub slots: Ranges,
}

impl Move {
    pub fn count(&self) -> u32 {
        count(&self.slots)
    }
}

/// Number of slots in `ranges`.
pub fn count(ranges: &[(u16, u16)]) -> u32 {
    ranges.iter().map(|&(a, b)| (b - a) as u32 + 1).sum()
}

/// The recorded ranges (`"0-5460"`) of each shard; unparsable entries are
/// skipped (validation of the status is the writer's job).
pub fn parse_owned(slots: &[Vec<String>]) -> Vec<Ranges> {
    slots
        .iter()
        .map(|s| s.iter().filter_map(|r| parse_range(r)).collect())
        .collect()
}

pub fn format_ranges(r: &[(u16, u16)]) -> Vec<String> {
    r.iter().map(|&x| format_range(x)).collect()
}

/// How many slots each of `shards` shards (indexes beyond `desired`
/// included, with 0) owns at the end.
pub fn target_counts(len: usize, desired: u32) -> Vec<u32> {
    let fresh = slot_ranges(desired);
    (0..len)
        .map(|i| fresh.get(i).map_or(0, |&(a, b)| (b - a) as u32 + 1))
        .collect()
}

fn to_slots(r: &[(u16, u16)]) -> Vec<u16> {
    r.iter().flat_map(|&(a, b)| a..=b).collect()
}

/// Sorted slots → inclusive ranges.
pub fn to_ranges(slots: &[u16]) -> Ranges {
    let mut out: Ranges = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Every move still needed to take `owned` (one entry per shard in the
/// status; pass empty entries for shards not yet added) to the even split
/// of `desired` shards, as one move per (source, target) pair, in a
/// deterministic order.
pub fn remaining(owned: &[Ranges], desired: u32) -> Vec<Move> {
    let len = owned.len().max(desired as usize);
    let targets = target_counts(len, desired);
    let mut donors: Vec<(u32, Vec<u16>)> = Vec::new();
    let mut deficits: Vec<(u32, u32)> = Vec::new();
    for (i, &want) in targets.iter().enumerate() {
        let slots = owned.get(i).map(|r| to_slots(r)).unwrap_or_default();
        let have = slots.len() as u32;
        if have > want {
            // The highest slots go, so what stays is the low end.
            let give = slots[want as usize..].to_vec();
            donors.push((i as u32, give));
        } else if have < want {
            deficits.push((i as u32, want - have));
        }
    }
    // Donated slots in ascending order, each tagged with its donor, are
    // dealt to the receivers in index order: a removed shard's slots go
    // back in proportion to every deficit, and the low receivers get the
    // low slots (usually the ones next to their own).
    let mut pool: Vec<(u16, u32)> = donors
        .iter()
        .flat_map(|(d, s)| s.iter().map(move |&x| (x, *d)))
        .collect();
    pool.sort_unstable();
    let mut moves: Vec<Move> = Vec::new();
    let mut at = 0usize;
    for (receiver, deficit) in deficits {
        let take = (deficit as usize).min(pool.len() - at);
        let mut by_donor: std::collections::BTreeMap<u32, Vec<u16>> = Default::default();
        for &(slot, donor) in &pool[at..at + take] {
            by_donor.entry(donor).or_default().push(slot);
        }
        at += take;
        for (donor, slots) in by_donor {
            moves.push(Move {
                source: donor,
                target: receiver,
                slots: to_ranges(&slots),
            });
        }
    }
    moves.sort_by_key(|m| (m.source, m.target));
    moves
}

/// Splits a move into moves of at most `max` slots, lowest slots first.
pub fn split(m: &Move, max: u32) -> Vec<Move> {
    let max = max.max(1) as usize;
    to_slots(&m.slots)
        .chunks(max)
        .map(|c| Move {
            source: m.source,
            target: m.target,
            slots: to_ranges(c),
        })
        .collect()
}

/// The moves to start now: the next chunk (at most `max_slots` slots) of
/// each remaining move whose source and target shard are both idle
/// (`busy` holds the shards of the moves in progress), at most one move
/// per source and per target shard.
pub fn next_moves(pending: &[Move], busy: &[u32], max_slots: u32) -> Vec<Move> {
    let mut busy: Vec<u32> = busy.to_vec();
    let mut out = Vec::new();
    for m in pending {
        if busy.contains(&m.source) || busy.contains(&m.target) {
            continue;
        }
        if let Some(first) = split(m, max_slots).into_iter().next() {
            busy.push(m.source);
            busy.push(m.target);
            out.push(first);
        }
    }
    out
}

/// `owned` after `m`: its slots leave the source and join the target.
pub fn apply(owned: &mut Vec<Ranges>, m: &Move) {
    let need = (m.source.max(m.target) + 1) as usize;
    if owned.len() < need {
        owned.resize(need, Vec::new());
    }
    let moving = to_slots(&m.slots);
    let src = to_slots(&owned[m.source as usize]);
    let kept: Vec<u16> = src.into_iter().filter(|s| !moving.contains(s)).collect();
    owned[m.source as usize] = to_ranges(&kept);
    let mut dst = to_slots(&owned[m.target as usize]);
    dst.extend(moving);
    dst.sort_unstable();
    dst.dedup();
    owned[m.target as usize] = to_ranges(&dst);
}

/// True when every slot has exactly one owner in `owned`.
pub fn covers_all_once(owned: &[Ranges]) -> bool {
    let mut seen = vec![false; SLOTS as usize];
    for r in owned {
        for s in to_slots(r) {
            if std::mem::replace(&mut seen[s as usize], true) {
                return false;
            }
        }
    }
    seen.into_iter().all(|x| x)
}

/// The scale-in memory rule: after the move the remaining shards must hold
/// everything with half again as much room (1.5× headroom). `used` is each
/// shard's primary's used memory, `limit` its `maxmemory` (0: unknown).
/// Returns why a scale-in to `desired` is refused, or None. With no known
/// limit on a remaining shard nothing can be judged and nothing is refused.
pub fn scale_in_refusal(used: &[u64], limit: &[u64], desired: u32) -> Option<String> {
    let desired = desired as usize;
    if desired >= used.len() {
        return None;
    }
    let remaining_limits = &limit[..desired.min(limit.len())];
    if remaining_limits.len() < desired || remaining_limits.contains(&0) {
        return None;
    }
    let total: u64 = used.iter().sum();
    let capacity: u64 = remaining_limits.iter().sum();
    let needed = total.saturating_mul(3) / 2;
    (needed > capacity).then(|| {
        format!(
            "scaling in to {desired} shards would put {} MiB of data on shards with {} MiB of maxmemory between them, less than the 1.5× headroom the move needs ({} MiB); raise the memory limit (spec.resources.limits.memory), free data, or keep {} shards",
            total >> 20,
            capacity >> 20,
            needed >> 20,
            used.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(n: u32) -> Vec<Ranges> {
        slot_ranges(n).into_iter().map(|r| vec![r]).collect()
    }

    /// Applies every remaining move, chunk by chunk, the way the executor
    /// does (respecting one move per source and target at a time).
    fn run(mut owned: Vec<Ranges>, desired: u32, chunk: u32) -> (Vec<Ranges>, u32) {
        let mut moved = 0;
        for _ in 0..100_000 {
            let pending = remaining(&owned, desired);
            if pending.is_empty() {
                return (owned, moved);
            }
            let batch = next_moves(&pending, &[], chunk);
            assert!(!batch.is_empty());
            for m in batch {
                moved += m.count();
                apply(&mut owned, &m);
                assert!(covers_all_once(&owned), "a slot unowned or owned twice");
            }
        }
        panic!("resharding did not converge");
    }

    fn counts(owned: &[Ranges]) -> Vec<u32> {
        owned.iter().map(|r| count(r)).collect()
    }

    #[test]
    fn three_to_four_moves_only_the_new_shards_share() {
        let (end, moved) = run(fresh(3), 4, 2048);
        assert_eq!(counts(&end), vec![4096, 4096, 4096, 4096]);
        // The minimum: the new shard's 4096 slots, nothing reshuffled.
        assert_eq!(moved, 4096);
        // Each old shard keeps the low end of its range.
        assert_eq!(end[0], vec![(0, 4095)]);
        assert_eq!(end[1], vec![(5461, 9556)]);
    }

    #[test]
    fn scale_in_spreads_the_drained_shard_over_all_others() {
        let pending = remaining(&fresh(4), 3);
        let targets: Vec<u32> = pending.iter().map(|m| m.target).collect();
        assert_eq!(targets, vec![0, 1, 2], "never all into one shard");
        assert!(pending.iter().all(|m| m.source == 3));
        let (end, moved) = run(fresh(4), 3, 2048);
        assert_eq!(moved, 4096);
        assert_eq!(end[3], Vec::<(u16, u16)>::new());
        let c = counts(&end);
        assert_eq!(&c[..3], &[5461, 5462, 5461]);
    }

    #[test]
    fn every_sequence_of_counts_ends_even_and_covered() {
        let mut owned = fresh(3);
        for desired in [4u32, 2, 3, 7, 1, 5] {
            let (end, _) = run(owned.clone(), desired, 777);
            let fresh_counts: Vec<u32> = slot_ranges(desired)
                .iter()
                .map(|&(a, b)| (b - a) as u32 + 1)
                .collect();
            assert_eq!(&counts(&end)[..desired as usize], &fresh_counts[..]);
            assert!(end[desired as usize..].iter().all(|r| r.is_empty()));
            owned = end[..desired as usize].to_vec();
        }
    }

    #[test]
    fn moves_respect_one_per_source_and_target() {
        // 2 → 4: shard 0 and 1 each give to 2 and 3.
        let pending = remaining(&fresh(2), 4);
        let batch = next_moves(&pending, &[], 10_000);
        let mut shards: Vec<u32> = batch.iter().flat_map(|m| [m.source, m.target]).collect();
        let n = shards.len();
        shards.sort_unstable();
        shards.dedup();
        assert_eq!(shards.len(), n, "a shard in two moves at once: {batch:?}");
        assert_eq!(batch.len(), 2);
        // Busy shards are skipped.
        assert!(next_moves(&pending, &[0, 1], 100).is_empty());
    }

    #[test]
    fn a_balanced_cluster_needs_no_move() {
        assert!(remaining(&fresh(5), 5).is_empty());
    }

    #[test]
    fn split_keeps_chunks_under_the_limit() {
        let m = Move {
            source: 0,
            target: 1,
            slots: vec![(0, 9), (20, 29)],
        };
        let parts = split(&m, 8);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].slots, vec![(0, 7)]);
        assert_eq!(parts[1].slots, vec![(8, 9), (20, 25)]);
        assert_eq!(parts.iter().map(|p| p.count()).sum::<u32>(), 20);
    }

    #[test]
    fn scale_in_is_refused_without_headroom() {
        let mib = 1u64 << 20;
        // 3 × 100 MiB onto 2 shards of 192 MiB: 450 > 384.
        let r = scale_in_refusal(&[100 * mib; 3], &[192 * mib; 3], 2);
        assert!(r.is_some_and(|m| m.contains("1.5×")));
        // 3 × 50 MiB: 225 ≤ 384.
        assert_eq!(scale_in_refusal(&[50 * mib; 3], &[192 * mib; 3], 2), None);
        // Unknown limits judge nothing; scale-out is never refused.
        assert_eq!(scale_in_refusal(&[100 * mib; 3], &[0; 3], 2), None);
        assert_eq!(scale_in_refusal(&[100 * mib; 3], &[1; 3], 4), None);
    }
}
