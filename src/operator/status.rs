//! Conditions and phase. A condition's `lastTransitionTime` moves only when
//! its status does, so an idle cluster's status stops changing (and stops
//! waking watchers).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::DatabaseClusterStatus;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const RESHARDING: &str = "Resharding";
pub const HOT_SLOT: &str = "HotSlot";

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges `wanted` into `existing`: keeps the transition time of a condition
/// whose status did not change, keeps condition types it does not manage.
pub fn merge_conditions(
    existing: &[Condition],
    wanted: &[Cond],
    generation: i64,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.type_ == c.type_))
        .cloned()
        .collect();
    for w in wanted {
        let status = if w.status { "True" } else { "False" }.to_string();
        let last_transition_time = existing
            .iter()
            .find(|c| c.type_ == w.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        out.push(Condition {
            type_: w.type_.to_string(),
            status,
            reason: w.reason.clone(),
            message: w.message.clone(),
            observed_generation: Some(generation),
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// True when the two condition lists say the same thing (ignoring time).
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

/// `next` with `conds` merged into `prev`'s conditions and the generation
/// recorded as observed.
pub fn with_conditions(
    prev: &DatabaseClusterStatus,
    mut next: DatabaseClusterStatus,
    generation: i64,
    conds: &[Cond],
    now: Time,
) -> DatabaseClusterStatus {
    next.conditions = merge_conditions(&prev.conditions, conds, generation, now);
    next.observed_generation = Some(generation);
    next
}

/// True when writing `b` over `a` would change anything but the
/// conditions' transition times (an idle cluster writes nothing).
pub fn status_differs(a: &DatabaseClusterStatus, b: &DatabaseClusterStatus) -> bool {
    let strip = |s: &DatabaseClusterStatus| DatabaseClusterStatus {
        conditions: vec![],
        ..s.clone()
    };
    strip(a) != strip(b) || !same_conditions(&a.conditions, &b.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("valid time"))
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let first = merge_conditions(
            &[],
            &[Cond::new(READY, false, "Creating", "0/3")],
            1,
            t(100),
        );
        let same = merge_conditions(
            &first,
            &[Cond::new(READY, false, "Creating", "1/3")],
            1,
            t(200),
        );
        assert_eq!(same[0].last_transition_time, t(100));
        assert_eq!(same[0].message, "1/3");
        let flipped = merge_conditions(&same, &[Cond::new(READY, true, "Ready", "3/3")], 2, t(300));
        assert_eq!(flipped[0].last_transition_time, t(300));
        assert_eq!(flipped[0].observed_generation, Some(2));
        assert!(same_conditions(
            &flipped,
            &merge_conditions(
                &flipped,
                &[Cond::new(READY, true, "Ready", "3/3")],
                2,
                t(400)
            )
        ));
    }

    #[test]
    fn unmanaged_conditions_are_kept() {
        let other = merge_conditions(
            &[],
            &[Cond::new("LastBackupSucceeded", true, "Done", "")],
            1,
            t(1),
        );
        let merged = merge_conditions(
            &other,
            &[Cond::new(DEGRADED, false, "AsExpected", "")],
            1,
            t(2),
        );
        assert_eq!(merged.len(), 2);
    }
}
