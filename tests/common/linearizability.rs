//! A linearizability checker for single-register histories (Wing & Gong's
//! search with Lowe's memoization, as Knossos and Porcupine do it).
//!
//! Operations that failed with an ambiguous outcome (the connection died,
//! a timeout) are "indeterminate": a write may or may not have taken effect
//! at any point after its call, so it never returns (its return time is
//! infinite) and may be left out; an indeterminate read tells nothing and is
//! dropped by the caller.
#![allow(dead_code)]

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write(String),
    Read(Option<String>),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    /// Invocation and response times (any monotonic unit).
    pub call: u64,
    /// `None`: indeterminate (may have happened, any time after `call`).
    pub ret: Option<u64>,
}

/// Whether `history` (one register, initially `None`) is linearizable.
/// At most 128 events.
pub fn check(history: &[Event]) -> Result<(), String> {
    assert!(
        history.len() <= 128,
        "the checker handles at most 128 events"
    );
    let n = history.len();
    let must: u128 = history
        .iter()
        .enumerate()
        .filter(|(_, e)| e.ret.is_some())
        .fold(0, |m, (i, _)| m | (1u128 << i));
    let ret = |i: usize| history[i].ret.unwrap_or(u64::MAX);
    let mut seen: HashSet<(u128, Option<String>)> = HashSet::new();
    // Depth-first search over (linearized set, register value).
    let mut stack: Vec<(u128, Option<String>)> = vec![(0, None)];
    while let Some((done, value)) = stack.pop() {
        if done & must == must {
            return Ok(());
        }
        if !seen.insert((done, value.clone())) {
            continue;
        }
        // The earliest response among pending operations bounds which
        // operation may come next.
        let min_ret = (0..n)
            .filter(|&i| done & (1 << i) == 0)
            .map(ret)
            .min()
            .unwrap_or(u64::MAX);
        for (i, e) in history.iter().enumerate() {
            if done & (1 << i) != 0 || e.call > min_ret {
                continue;
            }
            match &e.op {
                Op::Write(v) => stack.push((done | (1 << i), Some(v.clone()))),
                Op::Read(v) => {
                    if *v == value {
                        stack.push((done | (1 << i), value.clone()));
                    }
                }
            }
        }
    }
    Err(format!(
        "not linearizable ({} events, {} with a known outcome)",
        n,
        must.count_ones()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, call: u64, ret: Option<u64>) -> Event {
        Event { op, call, ret }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            ev(Op::Write("a".into()), 0, Some(1)),
            ev(Op::Read(Some("a".into())), 2, Some(3)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn stale_read_is_not() {
        let h = vec![
            ev(Op::Write("a".into()), 0, Some(1)),
            ev(Op::Write("b".into()), 2, Some(3)),
            ev(Op::Read(Some("a".into())), 4, Some(5)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn indeterminate_write_may_apply_late() {
        let h = vec![
            ev(Op::Write("a".into()), 0, Some(1)),
            ev(Op::Write("b".into()), 2, None),
            ev(Op::Read(Some("a".into())), 3, Some(4)),
            ev(Op::Read(Some("b".into())), 5, Some(6)),
        ];
        assert!(check(&h).is_ok());
    }
}
