//! The failover decisions, as pure functions of what was observed: is a
//! primary failed, may a replica be promoted without losing an acknowledged
//! write, and which one. The driver (`super`) performs the steps.
//!
//! ## The safety rule
//!
//! A shard has one primary and `n` replicas (`n = spec.replicas − 1`, the
//! replicas named in the pushed topology — the same `n` the nodes use). Under
//! `quorum`/`strong` a write is acknowledged once it is in the primary's log
//! **and** acknowledged by `k` replicas (`strong`: `k = n`; `quorum`:
//! `ceil(quorumPercentage × n / 100)` clamped to `1..=n`, default
//! `floor(n/2) + 1`). So every acknowledged write is on some set `A` of `k`
//! replicas. Fence a set `F` of reachable replicas with `|F| ≥ n − k + 1`:
//! `|A| + |F| ≥ n + 1 > n`, so `A ∩ F ≠ ∅`. The member of `F` whose log is
//! the most up to date ([`LogEnd`]: the epoch of its last record, then its
//! LSN) holds every acknowledged write some member of `F` holds — so every
//! acknowledged write. Fenced replicas stop acknowledging,
//! and at most `k − 1` replicas are left unfenced, so the old primary can
//! never again collect `k` acknowledgements: nothing it acknowledges later
//! can be missing from the new primary.
//!
//! `eventual` has `k = 0`: acknowledgement needs no replica, the rule would
//! need `n + 1` replicas and is never satisfiable. Eventual consistency
//! accepts loss by definition, so failover proceeds with the highest LSN and
//! says so (`dataLossPossible` in `lastFailover`, a Warning Event).
//! `allowDataLoss` does the same for `quorum`/`strong`.
//!
//! When the old primary itself answers (it was unready, or lost its lease),
//! it holds every acknowledged write; the rule holds trivially.
//!
//! ## Which log is the most up to date
//!
//! The Raft order: the log whose last record is of the newer epoch, then the
//! longer one. Within one epoch the logs are prefixes of that epoch's
//! primary's log, so the longer holds the shorter. A log that ends in epoch
//! `E` is a prefix of `E`'s primary's log past the point where that primary
//! was promoted, and that primary held every write acknowledged before
//! (its own promotion obeyed this rule), so it holds every write
//! acknowledged in an older epoch, however long an older-epoch log is: the
//! records an older log has past `E`'s start were never acknowledged (an old
//! primary's suffix). By LSN alone, a former primary's unacknowledged suffix
//! could outrank the newer history and truncate its acknowledged writes.
//! The epoch is the last *record*'s, not the node's `dataEpoch`: a replica
//! takes its primary's history before the records reach it, so its
//! `dataEpoch` can be newer than what its log holds.

use std::fmt;

use crate::api::ConsistencyLevel;
use crate::client::NodeInfo;

/// Replicas per shard (`n`) and acknowledgements a write needs (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRule {
    pub n: usize,
    pub k: usize,
}

impl AckRule {
    /// The node's own computation (`Replication::required`), mirrored.
    pub fn new(level: ConsistencyLevel, quorum_percentage: Option<i32>, n: usize) -> Self {
        let k = match level {
            ConsistencyLevel::Eventual => 0,
            ConsistencyLevel::Strong => n,
            ConsistencyLevel::Quorum => match quorum_percentage {
                Some(p) => ((p.max(0) as usize * n).div_ceil(100)).clamp(1.min(n), n),
                None => n / 2 + 1,
            },
        };
        Self { n, k: k.min(n) }
    }

    /// Fenced, reachable replicas needed before a promotion is safe:
    /// `n − k + 1`; `None` when no number is enough (`k = 0`).
    pub fn needed(&self) -> Option<usize> {
        (self.k > 0).then(|| self.n - self.k + 1)
    }
}

/// Where a log ends, ordered by how up to date it is: the epoch of its last
/// record first, then its LSN (the derived order: fields in this order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogEnd {
    /// The epoch of the record at `lsn` (`lastRecordEpoch` in the status).
    pub epoch: u64,
    pub lsn: u64,
}

impl fmt::Display for LogEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LSN {} (epoch {})", self.lsn, self.epoch)
    }
}

/// A member that answered the fence call (its log is frozen from then on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pod: String,
    /// What the node has received and applied (`lsn` in its status): under
    /// `everysec` a replica acknowledges written-but-not-fsynced records, so
    /// `durableLsn` can lag what was acknowledged.
    pub lsn: u64,
    /// The epoch of its last record (`NodeInfo::last_record_epoch`).
    pub last_record_epoch: u64,
    /// The primary being replaced (it answered after all).
    pub old_primary: bool,
    /// In the middle of a full resync: a partial copy, never promoted.
    pub resyncing: bool,
}

impl Candidate {
    pub fn end(&self) -> LogEnd {
        LogEnd {
            epoch: self.last_record_epoch,
            lsn: self.lsn,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Nobody answered the fence call.
    NoneReachable,
    /// Fewer than `n − k + 1` replicas answered.
    TooFewReplicas {
        reachable: usize,
        needed: usize,
        rule: AckRule,
    },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::NoneReachable => write!(
                f,
                "no member of the shard is reachable (or all are resyncing); the shard stays fenced until one returns"
            ),
            Blocked::TooFewReplicas { reachable, needed, rule } => write!(
                f,
                "{reachable} of {} replicas reachable, {needed} needed (n − k + 1 with k = {} acknowledgements per write) to be sure the promoted replica has every acknowledged write; the shard stays fenced until enough return (or set failover.allowDataLoss)",
                rule.n, rule.k
            ),
        }
    }
}

impl Blocked {
    pub fn reason(&self) -> &'static str {
        match self {
            Blocked::NoneReachable => "NoReplicaReachable",
            Blocked::TooFewReplicas { .. } => "TooFewReplicasReachable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Promote {
        pod: String,
        lsn: u64,
        /// The safety rule did not hold (eventual, or allowDataLoss).
        data_loss_possible: bool,
    },
    Blocked(Blocked),
}

/// Picks whom to promote among the members that answered the fence call.
///
/// Replicas come first: when enough of them answered, the one with the most
/// up-to-date log ([`LogEnd`]) holds every acknowledged write (ties: the
/// lowest pod name), and the primary that failed
/// (hung, cut off, flapping) is not handed its role back. Only when the
/// replicas alone do not satisfy the rule is an answering old primary
/// promoted again (it holds every acknowledged write itself).
pub fn choose(
    candidates: &[Candidate],
    rule: AckRule,
    level: ConsistencyLevel,
    allow_data_loss: bool,
) -> Choice {
    let usable: Vec<&Candidate> = candidates.iter().filter(|c| !c.resyncing).collect();
    let best_of = |it: &mut dyn Iterator<Item = &&Candidate>| {
        it.max_by_key(|c| (c.end(), std::cmp::Reverse(c.pod.clone())))
            .map(|c| (c.pod.clone(), c.lsn))
    };
    let best_replica = best_of(&mut usable.iter().filter(|c| !c.old_primary));
    let old_primary = best_of(&mut usable.iter().filter(|c| c.old_primary));
    let replicas = usable.iter().filter(|c| !c.old_primary).count();
    let promote = |(pod, lsn): (String, u64), loss: bool| Choice::Promote {
        pod,
        lsn,
        data_loss_possible: loss,
    };
    if let (Some(b), Some(need)) = (&best_replica, rule.needed()) {
        if replicas >= need {
            return promote(b.clone(), false);
        }
    }
    if let Some(o) = old_primary {
        return promote(o, false);
    }
    match best_replica {
        None => Choice::Blocked(Blocked::NoneReachable),
        Some(b) if level == ConsistencyLevel::Eventual || allow_data_loss => promote(b, true),
        Some(_) => Choice::Blocked(Blocked::TooFewReplicas {
            reachable: replicas,
            needed: rule.needed().unwrap_or(rule.n + 1),
            rule,
        }),
    }
}

/// What the operator sees of a shard's recorded primary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimaryView {
    /// The pod exists and is not being deleted.
    pub pod_present: bool,
    /// Its admin port answered `/v1/status`.
    pub reachable: bool,
    /// The node says it is ready (recovery done).
    pub ready: bool,
    /// The node reports the recorded node ID (a replaced volume gives a new
    /// ID: an empty node must not stay primary).
    pub same_node: bool,
    /// The node still considers itself the primary.
    pub is_primary: bool,
    /// `quorum`/`strong`: it holds its lease.
    pub lease_held: bool,
    /// It restarted recently and a replica's log is more up to date
    /// ([`LogEnd`]): it came
    /// back without part of what it acknowledged (its log tail was not on
    /// disk, or a force-deleted pod's old process kept writing while the
    /// new one recovered). Letting replicas reconnect would have them
    /// resync from it and drop acknowledged writes; a failover to the most
    /// advanced replica keeps them.
    pub behind: bool,
    /// Every replica of the shard answers, is ready and is not resyncing
    /// (then a lost lease means the primary is cut off from them — their
    /// links to it are down too — not that replicas are missing).
    pub replicas_all_up: bool,
    pub level: Option<ConsistencyLevel>,
}

/// Why the primary counts as failed, or `None` when it is healthy.
pub fn primary_failure(v: &PrimaryView) -> Option<&'static str> {
    if !v.pod_present {
        return Some("PodGone");
    }
    if !v.reachable {
        return Some("Unreachable");
    }
    if !v.same_node {
        return Some("NodeReplaced");
    }
    if !v.ready {
        return Some("NotReady");
    }
    if !v.is_primary {
        return Some("NotPrimary");
    }
    if v.behind {
        return Some("RestartedBehind");
    }
    let leased = matches!(
        v.level,
        Some(ConsistencyLevel::Quorum | ConsistencyLevel::Strong)
    );
    if leased && !v.lease_held && v.replicas_all_up {
        return Some("LeaseLost");
    }
    None
}

/// How long to wait after fencing before promoting: 1.1 × the lease plus a
/// margin (docs/replication.md: only clock *rates* matter; 10 % covers
/// them, the margin covers the fence calls' own latency).
pub fn lease_wait_ms(lease_ms: u64) -> u64 {
    lease_ms + lease_ms / 10 + 50
}

/// How long to wait after fencing when the old primary did not answer its
/// fence. It acknowledges a write only while `k` replicas echo a heartbeat
/// it sent less than a lease ago, and a fenced replica echoes nothing newer
/// than the last heartbeat it received: that replica's part of the lease is
/// over [`lease_wait_ms`] minus its `heartbeat_age_ms` after it answered.
/// Unreachable replicas, and fenced ones that report no heartbeat, may hold
/// it for the whole wait. The lease is over once fewer than `k` can.
/// (`ages`: one per fenced replica. `k = 0`, no lease in use: the full wait,
/// as before the ages were known.)
pub fn lease_wait_after_fence(
    lease_ms: u64,
    k: usize,
    unreachable: usize,
    ages: &[Option<u64>],
) -> u64 {
    let full = lease_wait_ms(lease_ms);
    if k == 0 || unreachable >= k {
        return full;
    }
    let mut left: Vec<u64> = ages
        .iter()
        .map(|a| a.map_or(full, |a| full.saturating_sub(a)))
        .collect();
    left.sort_unstable_by(|a, b| b.cmp(a));
    // The holders that last longest: once the (k − unreachable)-th of them
    // is over, too few remain.
    left.get(k - unreachable - 1).copied().unwrap_or(0)
}

/// Where a node's log ends, in the order logs are compared by
/// ([`LogEnd`]: the epoch of its last record, then its LSN).
pub fn log_end(i: &NodeInfo) -> LogEnd {
    LogEnd {
        epoch: i.last_record_epoch(),
        lsn: i.lsn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsistencyLevel::*;

    #[test]
    fn the_lease_wait_shrinks_by_what_the_fenced_replicas_last_heard() {
        let full = lease_wait_ms(2000);
        assert_eq!(full, 2250);
        // 2 of 2 needed, both fenced and silent for 3 s: over already.
        assert_eq!(
            lease_wait_after_fence(2000, 2, 0, &[Some(3000), Some(3000)]),
            0
        );
        // One heard 250 ms ago: the lease needs both, so the older decides.
        assert_eq!(
            lease_wait_after_fence(2000, 2, 0, &[Some(250), Some(1250)]),
            1000
        );
        // 1 of 2 needed: the freshest replica alone could hold it.
        assert_eq!(
            lease_wait_after_fence(2000, 1, 0, &[Some(250), Some(1250)]),
            2000
        );
        // 2 needed, one unreachable: it may hold its part; the fresher
        // fenced one decides.
        assert_eq!(
            lease_wait_after_fence(2000, 2, 1, &[Some(250), Some(1250)]),
            2000
        );
        assert_eq!(
            lease_wait_after_fence(2000, 2, 1, &[Some(2500), Some(1250)]),
            1000
        );
        // As many unreachable as needed: the whole wait.
        assert_eq!(lease_wait_after_fence(2000, 2, 2, &[Some(9000)]), full);
        // A replica with no heartbeat on record counts as fresh.
        assert_eq!(lease_wait_after_fence(2000, 2, 0, &[None, Some(9000)]), 0);
        assert_eq!(lease_wait_after_fence(2000, 2, 0, &[None, None]), full);
        // No lease in use (eventual): the whole wait, as always.
        assert_eq!(lease_wait_after_fence(2000, 0, 0, &[Some(9000)]), full);
    }

    /// A replica whose log ends in epoch 1 (the same for all: LSN decides).
    fn c(pod: &str, lsn: u64) -> Candidate {
        ce(pod, 1, lsn)
    }

    /// A replica whose last record is of `epoch`.
    fn ce(pod: &str, epoch: u64, lsn: u64) -> Candidate {
        Candidate {
            pod: pod.into(),
            lsn,
            last_record_epoch: epoch,
            old_primary: false,
            resyncing: false,
        }
    }

    fn promoted(choice: &Choice) -> (&str, u64, bool) {
        match choice {
            Choice::Promote {
                pod,
                lsn,
                data_loss_possible,
            } => (pod.as_str(), *lsn, *data_loss_possible),
            other => panic!("expected a promotion, got {other:?}"),
        }
    }

    #[test]
    fn a_newer_epoch_beats_a_longer_log_of_an_older_epoch() {
        // p-1's log ends in epoch 3 at LSN 120; p-2 is a former primary
        // whose epoch-2 suffix runs to LSN 150 (never acknowledged: epoch 3
        // started at a lower LSN). By LSN alone p-2 would win and the
        // epoch-3 writes p-1 holds would be truncated on rejoin.
        let rule = AckRule::new(Quorum, None, 2);
        for cands in [
            [ce("p-1", 3, 120), ce("p-2", 2, 150)],
            [ce("p-2", 2, 150), ce("p-1", 3, 120)],
        ] {
            assert_eq!(
                promoted(&choose(&cands, rule, Quorum, false)),
                ("p-1", 120, false)
            );
        }
        // The same order where the rule does not hold and loss is accepted.
        let ev = AckRule::new(Eventual, None, 3);
        let cands = [ce("p-1", 4, 7), ce("p-2", 3, 900), ce("p-3", 4, 6)];
        assert_eq!(
            promoted(&choose(&cands, ev, Eventual, false)),
            ("p-1", 7, true)
        );
        let few = AckRule::new(Quorum, Some(50), 4);
        assert_eq!(
            promoted(&choose(&cands[..2], few, Quorum, true)),
            ("p-1", 7, true)
        );
        // Too few replicas: an answering old primary is promoted whatever
        // the replicas' epochs (it holds every acknowledged write).
        let mut old = ce("p-0", 2, 500);
        old.old_primary = true;
        assert_eq!(
            promoted(&choose(&[old, ce("p-1", 3, 1)], few, Quorum, false)),
            ("p-0", 500, false)
        );
    }

    #[test]
    fn within_an_epoch_the_higher_lsn_then_the_lowest_pod_name_wins() {
        let rule = AckRule::new(Quorum, None, 3);
        let cands = [ce("p-3", 5, 40), ce("p-1", 5, 40), ce("p-2", 5, 39)];
        assert_eq!(
            promoted(&choose(&cands, rule, Quorum, false)),
            ("p-1", 40, false)
        );
        assert!(
            LogEnd { epoch: 5, lsn: 1 }
                > LogEnd {
                    epoch: 4,
                    lsn: 1_000
                }
                && LogEnd { epoch: 5, lsn: 41 } > LogEnd { epoch: 5, lsn: 40 }
        );
    }

    #[test]
    fn the_epoch_does_not_change_how_many_replicas_are_needed() {
        // n = 4, k = 2: 3 needed whatever the epochs; an older-epoch replica
        // counts (it is fenced: it acknowledges nothing more) but does not win.
        let rule = AckRule::new(Quorum, Some(50), 4);
        let two = [ce("p-1", 9, 5), ce("p-2", 9, 6)];
        assert!(matches!(
            choose(&two, rule, Quorum, false),
            Choice::Blocked(Blocked::TooFewReplicas {
                reachable: 2,
                needed: 3,
                ..
            })
        ));
        let three = [ce("p-1", 9, 5), ce("p-2", 9, 6), ce("p-3", 8, 60)];
        assert_eq!(
            promoted(&choose(&three, rule, Quorum, false)),
            ("p-2", 6, false)
        );
        // A resyncing replica of a newer epoch neither counts nor wins.
        let mut r = ce("p-4", 10, 100);
        r.resyncing = true;
        let with_resync = [r, ce("p-1", 9, 5), ce("p-2", 9, 6)];
        assert!(matches!(
            choose(&with_resync, rule, Quorum, false),
            Choice::Blocked(Blocked::TooFewReplicas { reachable: 2, .. })
        ));
    }

    #[test]
    fn ack_rule_mirrors_the_node() {
        assert_eq!(AckRule::new(Quorum, None, 2), AckRule { n: 2, k: 2 });
        assert_eq!(AckRule::new(Quorum, None, 4), AckRule { n: 4, k: 3 });
        assert_eq!(AckRule::new(Quorum, Some(60), 4), AckRule { n: 4, k: 3 });
        assert_eq!(AckRule::new(Quorum, Some(1), 4), AckRule { n: 4, k: 1 });
        assert_eq!(AckRule::new(Strong, None, 3), AckRule { n: 3, k: 3 });
        assert_eq!(AckRule::new(Eventual, None, 3), AckRule { n: 3, k: 0 });
        assert_eq!(AckRule::new(Quorum, None, 2).needed(), Some(1));
        assert_eq!(AckRule::new(Quorum, Some(25), 4).needed(), Some(4));
        assert_eq!(AckRule::new(Eventual, None, 2).needed(), None);
    }

    /// Exhaustive check of the intersection argument for small shards:
    /// every fenced set of size n − k + 1 meets every acknowledging set of
    /// size k.
    #[test]
    fn the_rule_intersects_every_acknowledging_set() {
        for n in 1..=6usize {
            for k in 1..=n {
                let need = AckRule { n, k }.needed().unwrap_or(usize::MAX);
                for acked in 0u32..(1 << n) {
                    if acked.count_ones() as usize != k {
                        continue;
                    }
                    for fenced in 0u32..(1 << n) {
                        if fenced.count_ones() as usize >= need {
                            assert_ne!(acked & fenced, 0, "n={n} k={k}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn highest_lsn_wins_when_the_rule_holds() {
        let rule = AckRule::new(Quorum, None, 2);
        let got = choose(&[c("p-1", 10), c("p-2", 12)], rule, Quorum, false);
        assert_eq!(
            got,
            Choice::Promote {
                pod: "p-2".into(),
                lsn: 12,
                data_loss_possible: false
            }
        );
        // 3x3 quorum (k = n = 2): one replica is enough.
        assert!(matches!(
            choose(&[c("p-1", 3)], rule, Quorum, false),
            Choice::Promote {
                data_loss_possible: false,
                ..
            }
        ));
    }

    #[test]
    fn too_few_replicas_block_unless_allowed() {
        // n = 4, k = 2 (quorumPercentage 50): needs 3 reachable.
        let rule = AckRule::new(Quorum, Some(50), 4);
        let two = [c("p-1", 5), c("p-2", 9)];
        match choose(&two, rule, Quorum, false) {
            Choice::Blocked(
                b @ Blocked::TooFewReplicas {
                    reachable: 2,
                    needed: 3,
                    ..
                },
            ) => {
                assert_eq!(b.reason(), "TooFewReplicasReachable");
                assert!(b
                    .to_string()
                    .contains("2 of 4 replicas reachable, 3 needed"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            choose(&two, rule, Quorum, true),
            Choice::Promote {
                pod: "p-2".into(),
                lsn: 9,
                data_loss_possible: true
            }
        );
        assert_eq!(
            choose(&[], rule, Quorum, true),
            Choice::Blocked(Blocked::NoneReachable)
        );
    }

    #[test]
    fn eventual_proceeds_and_says_loss_is_possible() {
        let rule = AckRule::new(Eventual, None, 2);
        assert_eq!(
            choose(&[c("p-1", 4)], rule, Eventual, false),
            Choice::Promote {
                pod: "p-1".into(),
                lsn: 4,
                data_loss_possible: true
            }
        );
    }

    #[test]
    fn replicas_first_then_an_answering_old_primary() {
        let rule = AckRule::new(Strong, None, 2);
        let mut old = c("p-0", 9);
        old.old_primary = true;
        // Alone, the old primary is safe (it has every acknowledged write).
        assert_eq!(
            choose(&[old.clone()], rule, Strong, false),
            Choice::Promote {
                pod: "p-0".into(),
                lsn: 9,
                data_loss_possible: false
            }
        );
        // With enough replicas, a replica wins even with a lower LSN: the
        // old primary's extra records were never acknowledged.
        assert!(matches!(
            choose(&[old.clone(), c("p-1", 7)], rule, Strong, false),
            Choice::Promote { ref pod, data_loss_possible: false, .. } if pod == "p-1"
        ));
        // n = 4, k = 2: one replica is not enough; the old primary is.
        let rule = AckRule::new(Quorum, Some(50), 4);
        assert!(matches!(
            choose(&[old, c("p-1", 7)], rule, Quorum, false),
            Choice::Promote { ref pod, data_loss_possible: false, .. } if pod == "p-0"
        ));
    }

    #[test]
    fn resyncing_replicas_neither_count_nor_win() {
        let rule = AckRule::new(Strong, None, 2);
        let mut r = c("p-1", 100);
        r.resyncing = true;
        // Only p-2 counts (n = 2, k = 2: one is needed) and only p-2 wins.
        assert!(matches!(
            choose(&[r.clone(), c("p-2", 5)], rule, Strong, false),
            Choice::Promote { ref pod, lsn: 5, data_loss_possible: false } if pod == "p-2"
        ));
        assert_eq!(
            choose(&[r], rule, Strong, false),
            Choice::Blocked(Blocked::NoneReachable)
        );
    }

    #[test]
    fn failure_detection() {
        let healthy = PrimaryView {
            pod_present: true,
            reachable: true,
            ready: true,
            same_node: true,
            is_primary: true,
            lease_held: true,
            behind: false,
            replicas_all_up: true,
            level: Some(Quorum),
        };
        assert_eq!(primary_failure(&healthy), None);
        let gone = PrimaryView::default();
        assert_eq!(primary_failure(&gone), Some("PodGone"));
        let mut v = healthy.clone();
        v.reachable = false;
        assert_eq!(primary_failure(&v), Some("Unreachable"));
        let mut v = healthy.clone();
        v.same_node = false;
        assert_eq!(primary_failure(&v), Some("NodeReplaced"));
        let mut v = healthy.clone();
        v.behind = true;
        assert_eq!(primary_failure(&v), Some("RestartedBehind"));
        // Lost lease while a replica is down: the replica is the problem.
        let mut v = healthy.clone();
        v.lease_held = false;
        v.replicas_all_up = false;
        assert_eq!(primary_failure(&v), None);
        v.replicas_all_up = true;
        assert_eq!(primary_failure(&v), Some("LeaseLost"));
        v.level = Some(Eventual);
        assert_eq!(primary_failure(&v), None);
        assert_eq!(lease_wait_ms(2000), 2250);
    }
}
