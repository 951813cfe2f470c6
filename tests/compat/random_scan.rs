//! SCAN-family templates for the random differential sequences
//! (`random_sequences.rs`): SCAN (MATCH, COUNT, TYPE), HSCAN, SSCAN, ZSCAN
//! (MATCH, COUNT) over collections small enough for Redis' compact
//! encodings (returned whole) and large enough for its hash tables (real
//! cursors).
//!
//! Cursors, and which elements a step returns, legitimately differ, so a
//! `*` command is a whole iteration on each server, from cursor 0 until the
//! cursor is 0 again: the replies compared are the sets of elements (field
//! and value pairs kept together) each iteration returned. Nothing changes
//! the keys during an iteration, so every element must be there and none
//! other; an element returned twice counts once, as Redis' guarantee
//! allows. A first step that fails is compared as the error it is. Inside
//! MULTI a scan is one step, compared by its shape (`[cursor, elements]`)
//! or as the error.

use std::sync::OnceLock;

use tessera::node::resp::Frame;

use super::raw::Raw;

/// Steps after which an iteration that has not ended is a failure.
const MAX_STEPS: usize = 20_000;

/// `n` space-separated words made by `word(i)`, leaked for the pools.
fn words(n: usize, word: impl Fn(usize) -> String) -> &'static str {
    let all: Vec<String> = (0..n).map(word).collect();
    Box::leak(all.join(" ").into_boxed_str())
}

/// Collection contents of several sizes: a few (Redis' listpacks and
/// intsets), 40 and 300 (hash tables).
fn bulk(kind: char) -> &'static [&'static str] {
    static POOLS: OnceLock<[Vec<&'static str>; 4]> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        let sizes = [3, 40, 300];
        let member = |i: usize| match i % 3 {
            0 => format!("m{i}"),
            1 => format!("n{i}"),
            _ => i.to_string(),
        };
        [
            // Members; and integers only (a Redis intset).
            sizes
                .iter()
                .map(|&n| words(n, member))
                .chain([words(20, |i| i.to_string())])
                .collect(),
            // Hash fields and values.
            sizes
                .iter()
                .map(|&n| words(n, |i| format!("{} v{i}", member(i))))
                .collect(),
            // Sorted-set scores and members.
            sizes
                .iter()
                .map(|&n| words(n, |i| format!("{} {}", i % 7, member(i))))
                .collect(),
            // Keys and values for MSET, all in the `{k}` slot.
            [5, 60]
                .iter()
                .map(|&n| words(n, |i| format!("{{k}}x{i} v")))
                .collect(),
        ]
    });
    let i = match kind {
        'M' => 0,
        'P' => 1,
        'Z' => 2,
        _ => 3,
    };
    &pools[i]
}

pub(super) fn pool(kind: char) -> Option<&'static [&'static str]> {
    Some(match kind {
        'M' | 'P' | 'Z' | 'K' => bulk(kind),
        // MATCH patterns.
        'G' => &[
            "*", "m1*", "*5", "m?", "{k}*", "[mn]1*", "*x*", "\\{k\\}a", "nomatch", "1*", "[^m]*",
            "",
        ],
        'D' => &["1", "3", "10", "1000", "0", "-1", "x"],
        'U' => &[
            "string", "list", "set", "zset", "hash", "stream", "foo", "SET",
        ],
        _ => return None,
    })
}

pub(super) const SCANS: &[&str] = &[
    "=SADD $k0 $M0",
    "=HSET $k0 $P0",
    "=ZADD $k0 $Z0",
    "=MSET $K0",
    "=SREM $k0 m0 n1 2 m3",
    "=HDEL $k0 m0 n1 2 m3",
    "=ZREM $k0 m0 n1 2 m3",
    "=SET $k0 $v0",
    "=RPUSH $k0 $m0",
    "=XADD $k0 1-1 f v",
    "=DEL $k0",
    "*SCAN 0",
    "*SCAN 0 MATCH $G0",
    "*SCAN 0 COUNT $D0",
    "*SCAN 0 TYPE $U0",
    "*SCAN 0 MATCH $G0 COUNT $D0 TYPE $U0",
    "*SSCAN $k0 0",
    "*SSCAN $k0 0 MATCH $G0 COUNT $D0",
    "*HSCAN $k0 0",
    "*HSCAN $k0 0 MATCH $G0 COUNT $D0",
    "*ZSCAN $k0 0",
    "*ZSCAN $k0 0 MATCH $G0 COUNT $D0",
    "*SSCAN $k0 0 FOO 1",
    "*HSCAN $k0 0 TYPE $U0",
];

/// A `[cursor, elements]` step reply as its shape; anything else as is.
pub(super) fn page_shape(f: Frame) -> Frame {
    match f {
        Frame::Array(v) if matches!(&v[..], [Frame::Bulk(_), Frame::Array(_)]) => {
            Frame::Simple("<a scan step>".into())
        }
        other => other,
    }
}

/// Iterates `args` (cursor `0` at its place) to the end on `conn`: the
/// sorted set of elements returned (pairs kept together for HSCAN and
/// ZSCAN), or the first step's reply when it is not a step.
pub(super) fn full(conn: &mut Raw, args: &[&str]) -> Frame {
    let name = args[0].to_ascii_uppercase();
    let at = if name == "SCAN" { 1 } else { 2 };
    let per = if name == "HSCAN" || name == "ZSCAN" {
        2
    } else {
        1
    };
    let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut seen: Vec<Vec<Frame>> = Vec::new();
    for step in 0..MAX_STEPS {
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let reply = conn.cmd(&refs);
        let Frame::Array(mut v) = reply else {
            return if step == 0 {
                reply
            } else {
                Frame::Error(format!("step {step} of {args:?} answered {reply:?}"))
            };
        };
        let (Some(Frame::Array(items)), Some(Frame::Bulk(cursor)), None) =
            (v.pop(), v.pop(), v.pop())
        else {
            return Frame::Error(format!("step {step} of {args:?}: not [cursor, elements]"));
        };
        if items.len() % per != 0 {
            return Frame::Error(format!(
                "step {step} of {args:?}: an odd number of elements"
            ));
        }
        seen.extend(items.chunks(per).map(<[Frame]>::to_vec));
        if cursor == b"0" {
            seen.sort_by_key(|g| format!("{g:?}"));
            seen.dedup();
            return Frame::Array(seen.into_iter().flatten().collect());
        }
        argv[at] = String::from_utf8_lossy(&cursor).into_owned();
    }
    Frame::Error(format!("{args:?} did not end within {MAX_STEPS} steps"))
}
