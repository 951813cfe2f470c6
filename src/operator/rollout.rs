//! Changes that the StatefulSets' `OnDelete` strategy leaves to the
//! operator: restarting pods on an outdated template (replicas first, the
//! primary last, one at a time) and growing volumes. Decisions are pure.

use std::collections::BTreeMap;

use super::topology::ObservedNode;

const REVISION_LABEL: &str = "controller-revision-hash";

/// Bytes in a Kubernetes quantity (`1Gi`, `500M`, `1.5Gi`, `1024`).
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    Some(n * mult)
}

/// True when `want` is larger than `have` (both quantities).
pub fn grows(have: &str, want: &str) -> bool {
    matches!((quantity_bytes(have), quantity_bytes(want)), (Some(h), Some(w)) if w > h)
}

/// The next pod to restart so it picks up its StatefulSet's current
/// template: outdated replicas first, then the primary. `None` when every
/// pod is current or one is already missing (wait for it).
pub fn next_restart<'a>(
    nodes: &'a [ObservedNode],
    update_revision: &BTreeMap<u32, String>,
    roles: impl Fn(&str) -> Option<&'static str>,
) -> Option<&'a ObservedNode> {
    let outdated = |n: &&ObservedNode| {
        let want = update_revision.get(&n.shard);
        let have = n.labels.get(REVISION_LABEL);
        matches!((want, have), (Some(w), Some(h)) if w != h)
    };
    let mut candidates: Vec<&ObservedNode> = nodes.iter().filter(outdated).collect();
    candidates.sort_by_key(|n| (roles(&n.pod) == Some("primary"), n.shard, n.ordinal));
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(shard: u32, ordinal: u32, rev: &str) -> ObservedNode {
        ObservedNode {
            pod: format!("c-shard-{shard}-{ordinal}"),
            shard,
            ordinal,
            ip: None,
            pod_ready: true,
            info: None,
            labels: [(REVISION_LABEL.to_string(), rev.to_string())].into(),
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536.0));
        assert_eq!(quantity_bytes("12"), Some(12.0));
        assert_eq!(quantity_bytes("lots"), None);
        assert!(grows("1Gi", "2Gi"));
        assert!(!grows("1Gi", "1024Mi"));
        assert!(!grows("2Gi", "1Gi"));
    }

    #[test]
    fn replicas_restart_before_the_primary() {
        let revs: BTreeMap<u32, String> = [(0, "new".to_string())].into();
        let role = |p: &str| {
            if p.ends_with("-0") {
                Some("primary")
            } else {
                Some("replica")
            }
        };
        let nodes = vec![pod(0, 0, "old"), pod(0, 1, "old"), pod(0, 2, "new")];
        assert_eq!(
            next_restart(&nodes, &revs, role).map(|n| n.pod.as_str()),
            Some("c-shard-0-1")
        );
        let nodes = vec![pod(0, 0, "old"), pod(0, 1, "new"), pod(0, 2, "new")];
        assert_eq!(
            next_restart(&nodes, &revs, role).map(|n| n.pod.as_str()),
            Some("c-shard-0-0")
        );
        let nodes = vec![pod(0, 0, "new"), pod(0, 1, "new")];
        assert!(next_restart(&nodes, &revs, role).is_none());
    }
}
