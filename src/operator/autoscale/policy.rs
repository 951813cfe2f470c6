//! The autoscaling policy: a pure function from the primaries' figures,
//! the spec's targets and the recorded state to a decision.
//!
//! Scale-out is target tracking on the hottest primary: when its memory
//! share (used / maxmemory) or its commands per second stay above the
//! target for the scale-out window, the shard count grows to what brings
//! the hottest back to the target (at least one more, at most
//! `maxShards`). Scale-in removes one shard at a time, only when the
//! hottest primary stays under the (much lower) scale-in thresholds for
//! the scale-in window *and* the data would fit the remaining shards under
//! the memory target with 1.5× headroom — so a scale-in never lands the
//! cluster right back above its target (no flapping). After any resize the
//! cooldown must pass. A hot single slot carrying most of a shard's
//! commands is reported instead of adding shards that cannot spread it.

use std::time::Duration;

use crate::api::{AutoscalingSpec, AutoscalingStatus};

/// One primary's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Primary {
    pub shard: u32,
    /// Memory the data takes (the node's used memory less its replication
    /// ring): what moves with the slots, so what a resize changes.
    pub data_memory: u64,
    /// 0: no limit (memory is then not a signal).
    pub maxmemory: u64,
    pub ops_per_sec: f64,
    /// (slot, share of the keyed commands) of its busiest slot.
    pub hot_slot: Option<(u16, f64)>,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Change `spec.shards` to `to`; `why` names the figure and threshold.
    Scale { to: u32, why: String },
    /// Nothing to do (`None`), or why not now.
    Hold(Option<String>),
}

/// A slot carrying at least this share of an over-target shard's commands
/// is hot: more shards cannot split one slot.
pub const HOT_SLOT_SHARE: f64 = 0.5;

pub struct Inputs<'a> {
    pub spec: &'a AutoscalingSpec,
    /// Shards in the recorded topology.
    pub shards: u32,
    pub primaries: &'a [Primary],
    /// A failover, resharding or rolling update is in flight.
    pub busy: Option<String>,
    /// Seconds since the last resize finished (None: never).
    pub since_last_resize: Option<Duration>,
}

/// The decision, the state to record, and the hot slot to report
/// (shard, slot, share) if any.
pub fn decide(
    i: &Inputs<'_>,
    prev: &AutoscalingStatus,
    now: &str,
    elapsed: impl Fn(&str) -> Option<Duration>,
) -> (Verdict, AutoscalingStatus, Option<(u32, u16, f64)>) {
    let s = i.spec;
    let mut st = prev.clone();
    st.holding = None;
    let mem = hottest_memory(i.primaries);
    let ops = i
        .primaries
        .iter()
        .max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    st.signal = signal(mem, ops);
    let mem_target = s.memory_target_percent as f64 / 100.0;
    let ops_target = s.ops_target_per_second as f64;
    let mem_over = mem.is_some_and(|(r, _)| r > mem_target);
    let ops_over = ops_target > 0.0 && ops.is_some_and(|p| p.ops_per_sec > ops_target);
    // A hot slot on the busiest primary: more shards cannot help the ops.
    let hot = ops
        .filter(|_| ops_over)
        .and_then(|p| p.hot_slot.map(|(slot, share)| (p.shard, slot, share)))
        .filter(|&(_, _, share)| share >= HOT_SLOT_SHARE);
    let ops_over = ops_over && hot.is_none();
    let under = mem.is_none_or(|(r, _)| r < s.scale_in_memory_percent as f64 / 100.0)
        && (ops_target == 0.0
            || ops.is_none_or(|p| {
                p.ops_per_sec < ops_target * s.scale_in_ops_percent as f64 / 100.0
            }));
    if mem_over || ops_over {
        st.below_since = None;
        st.above_since.get_or_insert_with(|| now.to_string());
    } else if under && !i.primaries.is_empty() {
        st.above_since = None;
        st.below_since.get_or_insert_with(|| now.to_string());
    } else {
        st.above_since = None;
        st.below_since = None;
    }
    let hold = |mut st: AutoscalingStatus, why: String| {
        st.holding = Some(why.clone());
        (Verdict::Hold(Some(why)), st, hot)
    };
    if let Some(b) = &i.busy {
        return hold(st, format!("waiting: {b}"));
    }
    let cooldown = Duration::from_secs(s.cooldown_seconds.max(0) as u64);
    let cooling = i.since_last_resize.is_some_and(|d| d < cooldown);
    let held = |since: &Option<String>, secs: i32| {
        since
            .as_deref()
            .and_then(&elapsed)
            .is_some_and(|d| d >= Duration::from_secs(secs.max(0) as u64))
    };
    if mem_over || ops_over {
        let max = s.max_shards.max(1) as u32;
        if i.shards >= max {
            let why = format!("{} is over target but maxShards is {max}", st.signal);
            return hold(st, why);
        }
        if !held(&st.above_since, s.scale_out_stabilization_seconds) {
            return (Verdict::Hold(None), st, hot);
        }
        if cooling {
            return hold(st, "cooldown after the last resize".into());
        }
        let factor = match (mem, ops) {
            (Some((r, _)), _) if mem_over => r / mem_target,
            (_, Some(p)) => p.ops_per_sec / ops_target,
            _ => 1.0,
        };
        let want = (i.shards as f64 * factor).ceil() as u32;
        let to = want.max(i.shards + 1).min(max);
        let why = if mem_over {
            let (r, shard) = mem.unwrap_or_default();
            format!(
                "data memory of shard {shard}'s primary at {:.0}% of its limit, above the {}% target for {}s",
                r * 100.0,
                s.memory_target_percent,
                s.scale_out_stabilization_seconds
            )
        } else {
            let p = ops.cloned().unwrap_or_default();
            format!(
                "shard {}'s primary at {:.0} commands/s, above the {} target for {}s",
                p.shard, p.ops_per_sec, s.ops_target_per_second, s.scale_out_stabilization_seconds
            )
        };
        st.last_scale = Some(format!("{} → {to} shards: {why}", i.shards));
        st.last_scale_time = Some(now.to_string());
        st.above_since = None;
        return (Verdict::Scale { to, why }, st, hot);
    }
    if under && !i.primaries.is_empty() {
        let min = s.min_shards.max(1) as u32;
        if !s.scale_in || i.shards <= min {
            return (Verdict::Hold(None), st, hot);
        }
        if !held(&st.below_since, s.scale_in_stabilization_seconds) {
            return (Verdict::Hold(None), st, hot);
        }
        if cooling {
            return hold(st, "cooldown after the last resize".into());
        }
        if let Some(why) = would_overfill(i.primaries, i.shards - 1, mem_target) {
            return hold(st, why);
        }
        let to = i.shards - 1;
        let why = format!(
            "load under the scale-in thresholds ({}% memory{}) for {}s",
            s.scale_in_memory_percent,
            if ops_target > 0.0 {
                format!(", {}% of the ops target", s.scale_in_ops_percent)
            } else {
                String::new()
            },
            s.scale_in_stabilization_seconds
        );
        st.last_scale = Some(format!("{} → {to} shards: {why}", i.shards));
        st.last_scale_time = Some(now.to_string());
        st.below_since = None;
        return (Verdict::Scale { to, why }, st, hot);
    }
    (Verdict::Hold(None), st, hot)
}

/// (used / maxmemory, shard) of the primary with the highest share.
fn hottest_memory(p: &[Primary]) -> Option<(f64, u32)> {
    p.iter()
        .filter(|p| p.maxmemory > 0)
        .map(|p| (p.data_memory as f64 / p.maxmemory as f64, p.shard))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn signal(mem: Option<(f64, u32)>, ops: Option<&Primary>) -> String {
    let mut parts = vec![];
    if let Some((r, shard)) = mem {
        parts.push(format!("memory {:.0}% (shard {shard})", r * 100.0));
    }
    if let Some(p) = ops {
        parts.push(format!("{:.0} ops/s (shard {})", p.ops_per_sec, p.shard));
    }
    parts.join(", ")
}

/// Why removing a shard would put the data above the memory target (with
/// the 1.5× headroom the move itself needs), or None.
fn would_overfill(p: &[Primary], remaining: u32, target: f64) -> Option<String> {
    let limits: Vec<u64> = p.iter().map(|p| p.maxmemory).filter(|&m| m > 0).collect();
    if limits.len() != p.len() || remaining == 0 {
        return None;
    }
    let used: u64 = p.iter().map(|p| p.data_memory).sum();
    let per = *limits.iter().min().unwrap_or(&0) as f64;
    let capacity = per * remaining as f64;
    let projected = used as f64 * 1.5 / capacity;
    (projected > target).then(|| {
        format!(
            "load is low, but {remaining} shard(s) would hold the data at {:.0}% of their limit with 1.5× headroom, above the {:.0}% target",
            projected * 100.0,
            target * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AutoscalingSpec {
        serde_json::from_str(r#"{"maxShards": 8}"#).expect("defaults")
    }

    const MIB: u64 = 1 << 20;

    /// `shards` primaries sharing `total` bytes evenly, 1 GiB limit each.
    fn primaries(shards: u32, total: u64, ops: f64) -> Vec<Primary> {
        (0..shards)
            .map(|shard| Primary {
                shard,
                data_memory: total / shards as u64,
                maxmemory: 1024 * MIB,
                ops_per_sec: ops / shards as f64,
                hot_slot: None,
            })
            .collect()
    }

    /// Runs the policy once a minute over `minutes` of `total(m)` bytes,
    /// applying every resize at once; returns the resizes.
    fn simulate(
        spec: &AutoscalingSpec,
        start: u32,
        minutes: u64,
        total: impl Fn(u64) -> u64,
    ) -> Vec<(u64, u32)> {
        let mut shards = start;
        let mut st = AutoscalingStatus::default();
        let mut last_resize: Option<u64> = None;
        let mut out = vec![];
        for m in 0..minutes {
            let t = m * 60;
            let p = primaries(shards, total(m), 0.0);
            let now = t.to_string();
            let i = Inputs {
                spec,
                shards,
                primaries: &p,
                busy: None,
                since_last_resize: last_resize.map(|r| Duration::from_secs(t - r)),
            };
            let elapsed = |s: &str| s.parse::<u64>().ok().map(|s| Duration::from_secs(t - s));
            let (v, next, _) = decide(&i, &st, &now, elapsed);
            st = next;
            if let Verdict::Scale { to, .. } = v {
                out.push((m, to));
                shards = to;
                last_resize = Some(t);
            }
        }
        out
    }

    #[test]
    fn rising_memory_adds_shards_after_the_window_and_stays() {
        // 3 shards, data grows 20 MiB a minute from 1.5 GiB.
        let r = simulate(&spec(), 3, 240, |m| 1536 * MIB + m * 20 * MIB);
        assert!(!r.is_empty(), "never scaled out");
        assert!(
            r.windows(2).all(|w| w[1].1 > w[0].1),
            "shrank while rising: {r:?}"
        );
        // Each time it scaled, the hottest was over 70% for the window.
        let (first_minute, to) = r[0];
        assert!(to >= 4);
        let share = (1536 + first_minute * 20) as f64 / 3.0 / 1024.0;
        assert!(share > 0.7, "scaled at {share:.2}");
    }

    #[test]
    fn falling_memory_removes_one_shard_at_a_time_after_the_long_window() {
        // 6 shards, data drops from 3 GiB to 300 MiB and stays.
        let r = simulate(
            &spec(),
            6,
            300,
            |m| if m < 10 { 3072 * MIB } else { 300 * MIB },
        );
        assert!(!r.is_empty(), "never scaled in");
        assert!(r.windows(2).all(|w| w[1].1 + 1 == w[0].1), "{r:?}");
        // Not before 30 minutes under the threshold.
        assert!(r[0].0 >= 10 + 30, "{r:?}");
        // Never below what 300 MiB needs at 70% with 1.5× headroom.
        let last = r.last().map_or(6, |x| x.1);
        assert!(last >= 1);
    }

    #[test]
    fn a_30_minute_sine_resizes_at_most_twice_an_hour() {
        let r = simulate(&spec(), 3, 240, |m| {
            let phase = (m as f64 / 30.0) * std::f64::consts::TAU;
            // Between ~25% and ~95% of three shards' limits.
            ((1.8 + 1.05 * phase.sin()) * 1024.0 * MIB as f64) as u64
        });
        assert!(!r.is_empty(), "the peaks (95%) never scaled out");
        for hour in 0..4 {
            let n = r.iter().filter(|(m, _)| m / 60 == hour).count();
            assert!(n <= 2, "{n} resizes in hour {hour}: {r:?}");
        }
    }

    fn run(
        spec: &AutoscalingSpec,
        shards: u32,
        p: &[Primary],
        busy: Option<&str>,
        since_last_resize: Option<u64>,
        held: u64,
    ) -> (Verdict, AutoscalingStatus, Option<(u32, u16, f64)>) {
        let i = Inputs {
            spec,
            shards,
            primaries: p,
            busy: busy.map(str::to_string),
            since_last_resize: since_last_resize.map(Duration::from_secs),
        };
        decide(&i, &AutoscalingStatus::default(), "0", |_| {
            Some(Duration::from_secs(held))
        })
    }

    #[test]
    fn bounds_cooldown_and_scale_in_off_hold() {
        let mut s = spec();
        s.max_shards = 3;
        s.scale_out_stabilization_seconds = 0;
        let hot = primaries(3, 2900 * MIB, 0.0);
        let (v, st, _) = run(&s, 3, &hot, None, None, 0);
        assert!(
            matches!(v, Verdict::Hold(Some(ref w)) if w.contains("maxShards is 3")),
            "{v:?}"
        );
        assert!(st.holding.is_some());
        s.max_shards = 8;
        let (v, _, _) = run(&s, 3, &hot, None, Some(10), 0);
        assert_eq!(
            v,
            Verdict::Hold(Some("cooldown after the last resize".into()))
        );
        let (v, _, _) = run(&s, 3, &hot, Some("a failover of shard 1"), None, 0);
        assert!(matches!(v, Verdict::Hold(Some(ref w)) if w.contains("failover")));
        // scaleIn: false never removes a shard.
        s.scale_in = false;
        s.scale_in_stabilization_seconds = 0;
        let idle = primaries(3, 10 * MIB, 0.0);
        let (v, _, _) = run(&s, 3, &idle, None, None, 1 << 20);
        assert_eq!(v, Verdict::Hold(None));
        s.scale_in = true;
        let (v, _, _) = run(&s, 3, &idle, None, None, 1 << 20);
        assert!(matches!(v, Verdict::Scale { to: 2, .. }), "{v:?}");
    }

    #[test]
    fn a_hot_slot_is_reported_instead_of_scaling_for_ops() {
        let mut s = spec();
        s.ops_target_per_second = 10_000;
        s.scale_out_stabilization_seconds = 0;
        let mut p = primaries(3, 30 * MIB, 30_000.0);
        p[1].ops_per_sec = 40_000.0;
        p[1].hot_slot = Some((4242, 0.9));
        let (v, _, hot) = run(&s, 3, &p, None, None, 0);
        assert_eq!(v, Verdict::Hold(None));
        assert_eq!(hot, Some((1, 4242, 0.9)));
        // Spread load over the same threshold scales out (to 4× the
        // target's share: 3 × 40k / 10k).
        p[1].hot_slot = Some((4242, 0.05));
        let (v, _, hot) = run(&s, 3, &p, None, None, 0);
        assert!(
            matches!(v, Verdict::Scale { to: 8, ref why } if why.contains("commands/s")),
            "{v:?}"
        );
        assert_eq!(hot, None);
    }

    #[test]
    fn scale_in_never_lands_above_the_target() {
        let mut s = spec();
        s.scale_in_stabilization_seconds = 0;
        // 2 shards at 25% each (under 30%): one shard would hold 50% × 1.5
        // = 75% > 70%: hold.
        let p = primaries(2, 512 * MIB, 0.0);
        let (v, _, _) = run(&s, 2, &p, None, None, 1);
        assert!(
            matches!(v, Verdict::Hold(Some(ref w)) if w.contains("1.5×")),
            "{v:?}"
        );
        let p = primaries(2, 300 * MIB, 0.0);
        let (v, _, _) = run(&s, 2, &p, None, None, 1);
        assert!(matches!(v, Verdict::Scale { to: 1, .. }), "{v:?}");
    }
}
