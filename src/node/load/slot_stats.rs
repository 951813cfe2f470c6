//! `CLUSTER SLOT-STATS` (Valkey 8): per-slot statistics of the slots this
//! node's shard serves.
//!
//! Each entry is `[slot, {key-count, network-bytes-in, network-bytes-out,
//! commands}]`. `key-count` is the keys the slot holds now; the others count
//! what this node served on the slot since it started. `cpu-usec` is not
//! measured (a clock read per command would cost more than the rest of the
//! accounting together) and is neither reported nor accepted by `ORDERBY`;
//! `commands` is Tessera's own field.

use crate::node::cmd::{Args, Ctx};
use crate::node::slots::{SlotOwner, SLOTS};

/// The statistics a slot reports, in reply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    KeyCount,
    NetworkBytesIn,
    NetworkBytesOut,
    Commands,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::KeyCount,
        Metric::NetworkBytesIn,
        Metric::NetworkBytesOut,
        Metric::Commands,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::KeyCount => "key-count",
            Metric::NetworkBytesIn => "network-bytes-in",
            Metric::NetworkBytesOut => "network-bytes-out",
            Metric::Commands => "commands",
        }
    }

    fn parse(arg: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| arg.eq_ignore_ascii_case(m.name().as_bytes()))
    }
}

const ERR_SLOT: &str = "ERR Invalid or out of range slot";
const ERR_METRIC: &str = "ERR Unrecognized sort metric for ORDERBY.";
const ERR_LIMIT: &str = "ERR Limit has to lie in between 1 and 16384 (maximum number of slots).";
const ERR_REPEATED: &str = "ERR Multiple filters of the same type are disallowed.";

/// What the arguments after `SLOT-STATS` ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Range {
        start: u16,
        end: u16,
    },
    OrderBy {
        metric: Metric,
        limit: usize,
        desc: bool,
    },
}

/// Parses `SLOTSRANGE start end` or `ORDERBY metric [LIMIT n] [ASC|DESC]`
/// (arguments from index 2), with Valkey's error replies.
pub fn parse(args: &Args<'_>) -> Result<Request, String> {
    let syntax = || {
        format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(args.get(1))
        )
    };
    let slot = |i: usize| match args.int(i) {
        Ok(n) if (0..SLOTS as i64).contains(&n) => Ok(n as u16),
        _ => Err(ERR_SLOT.to_string()),
    };
    if args.len() == 5 && args.is(2, "slotsrange") {
        let (start, end) = (slot(3)?, slot(4)?);
        if start > end {
            return Err(format!(
                "ERR Start slot number {start} is greater than end slot number {end}"
            ));
        }
        return Ok(Request::Range { start, end });
    }
    if args.len() < 4 || !args.is(2, "orderby") {
        return Err(syntax());
    }
    let metric = Metric::parse(args.get(3)).ok_or_else(|| ERR_METRIC.to_string())?;
    let (mut limit, mut desc) = (SLOTS, true);
    let (mut limits, mut orders) = (0, 0);
    let mut i = 4;
    while i < args.len() {
        if args.is(i, "limit") && i + 1 < args.len() {
            limit = match args.int(i + 1) {
                Ok(n) if (1..=SLOTS as i64).contains(&n) => n as usize,
                _ => return Err(ERR_LIMIT.to_string()),
            };
            limits += 1;
            i += 1;
        } else if args.is(i, "asc") || args.is(i, "desc") {
            desc = args.is(i, "desc");
            orders += 1;
        } else {
            return Err(crate::node::cmd::ERR_SYNTAX.to_string());
        }
        if limits > 1 || orders > 1 {
            return Err(ERR_REPEATED.to_string());
        }
        i += 1;
    }
    Ok(Request::OrderBy {
        metric,
        limit,
        desc,
    })
}

fn value(ctx: &Ctx<'_>, slot: u16, m: Metric) -> u64 {
    let c = ctx.node.load.slot(slot);
    match m {
        Metric::KeyCount => ctx.store.slot_len(slot) as u64,
        Metric::NetworkBytesIn => c.bytes_in.get(),
        Metric::NetworkBytesOut => c.bytes_out.get(),
        Metric::Commands => c.commands.get(),
    }
}

/// Orders `(slot, value)` pairs: by value, ties by ascending slot.
pub fn order(entries: &mut [(u16, u64)], desc: bool) {
    if desc {
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    } else {
        entries.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    }
}

/// `CLUSTER SLOT-STATS …`.
pub fn command(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let req = match parse(args) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let local: Vec<bool> = {
        let map = ctx.node.slot_map.borrow();
        (0..SLOTS as u16)
            .map(|s| matches!(map.owner(s), SlotOwner::Local))
            .collect()
    };
    let slots: Vec<u16> = match req {
        Request::Range { start, end } => (start..=end).filter(|&s| local[s as usize]).collect(),
        Request::OrderBy {
            metric,
            limit,
            desc,
        } => {
            let mut entries: Vec<(u16, u64)> = (0..SLOTS as u16)
                .filter(|&s| local[s as usize])
                .map(|s| (s, value(ctx, s, metric)))
                .collect();
            order(&mut entries, desc);
            entries.truncate(limit);
            entries.into_iter().map(|(s, _)| s).collect()
        }
    };
    ctx.out.array(slots.len());
    for slot in slots {
        ctx.out.array(2);
        ctx.out.int(slot as i64);
        ctx.out.map(Metric::ALL.len());
        for m in Metric::ALL {
            let v = value(ctx, slot, m);
            ctx.out.bulk(m.name().as_bytes());
            ctx.out.int(v.min(i64::MAX as u64) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    fn parse_words(words: &[&str]) -> Result<Request, String> {
        let mut buf = Vec::new();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for w in words {
            ranges.push(buf.len()..buf.len() + w.len());
            buf.extend_from_slice(w.as_bytes());
        }
        parse(&Args {
            buf: &buf,
            ranges: &ranges,
        })
    }

    #[test]
    fn parses_slotsrange_and_orderby_with_valkeys_defaults() {
        let p = |w: &[&str]| parse_words(&[&["cluster", "slot-stats"], w].concat());
        assert_eq!(
            p(&["SLOTSRANGE", "0", "16383"]),
            Ok(Request::Range {
                start: 0,
                end: 16383
            })
        );
        assert_eq!(
            p(&["orderby", "KEY-COUNT"]),
            Ok(Request::OrderBy {
                metric: Metric::KeyCount,
                limit: SLOTS,
                desc: true
            })
        );
        assert_eq!(
            p(&["ORDERBY", "commands", "ASC", "LIMIT", "10"]),
            Ok(Request::OrderBy {
                metric: Metric::Commands,
                limit: 10,
                desc: false
            })
        );
    }

    #[test]
    fn refuses_what_valkey_refuses() {
        let p = |w: &[&str]| parse_words(&[&["cluster", "slot-stats"], w].concat());
        assert_eq!(p(&["SLOTSRANGE", "0", "16384"]), Err(ERR_SLOT.into()));
        assert_eq!(p(&["SLOTSRANGE", "-1", "3"]), Err(ERR_SLOT.into()));
        assert_eq!(
            p(&["SLOTSRANGE", "9", "3"]),
            Err("ERR Start slot number 9 is greater than end slot number 3".into())
        );
        assert!(p(&["SLOTSRANGE", "1"]).is_err_and(|e| e.contains("unknown subcommand")));
        assert!(p(&[]).is_err_and(|e| e.contains("unknown subcommand")));
        assert_eq!(p(&["ORDERBY", "cpu-usec"]), Err(ERR_METRIC.into()));
        assert_eq!(
            p(&["ORDERBY", "key-count", "LIMIT", "0"]),
            Err(ERR_LIMIT.into())
        );
        assert_eq!(
            p(&["ORDERBY", "key-count", "LIMIT", "16385"]),
            Err(ERR_LIMIT.into())
        );
        assert_eq!(
            p(&["ORDERBY", "key-count", "LIMIT", "2", "LIMIT", "3"]),
            Err(ERR_REPEATED.into())
        );
        assert_eq!(
            p(&["ORDERBY", "key-count", "ASC", "DESC"]),
            Err(ERR_REPEATED.into())
        );
        assert_eq!(
            p(&["ORDERBY", "key-count", "LIMIT"]),
            Err(crate::node::cmd::ERR_SYNTAX.into())
        );
    }

    #[test]
    fn orders_by_value_with_ties_by_ascending_slot() {
        let mut e = vec![(5, 1), (3, 7), (9, 7), (1, 0)];
        order(&mut e, true);
        assert_eq!(e, vec![(3, 7), (9, 7), (5, 1), (1, 0)]);
        order(&mut e, false);
        assert_eq!(e, vec![(1, 0), (5, 1), (3, 7), (9, 7)]);
    }
}
