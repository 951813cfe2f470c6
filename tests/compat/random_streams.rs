//! Stream templates for the random differential sequences
//! (`random_sequences.rs`): XADD/XRANGE/XREVRANGE/XLEN/XDEL/XTRIM/XREAD,
//! and consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM, XINFO).
//!
//! IDs are explicit (`1-1`, `5-*`): a bare `*` takes the server's clock, so
//! the two servers would hold different IDs from then on and every later
//! reply naming them would differ. `*` is generated only right after an
//! add at `9999999999999-*`, an ID centuries ahead of the clock: `*` then
//! takes the stream's last ID plus one on both servers, which still runs
//! the auto-ID path.
//!
//! Replies marked `&` hold times (`idle`, `seen-time`, XPENDING's idle
//! column, the delivery times of XINFO STREAM FULL): both servers ran the
//! command a few milliseconds apart, so those integers must agree within
//! [`TIME_SLACK_MS`], everything else exactly. Idle filters and min-idle
//! times are 0 or far above any time a case takes (`10000000` ms), and
//! XCLAIM's IDLE/TIME set deliveries that far back, so which entries a
//! filter selects never depends on timing. XINFO's `radix-tree-keys` and
//! `radix-tree-nodes` describe Redis' encoding and are not compared
//! (docs/node.md).
//!
//! Not generated (docs/node.md, "Known differences"): `MAXLEN ~`/`MINID ~`
//! (approximate trimming: Redis keeps whole listpack nodes, the node trims
//! exactly, which the command allows).

use tessera::node::resp::Frame;

/// How far apart two servers' times of one command may be.
const TIME_SLACK_MS: i64 = 5000;

/// Keys whose integer value is a time.
const TIME_FIELDS: &[&str] = &[
    "idle",
    "seen-time",
    "active-time",
    "inactive",
    "delivery-time",
];

/// Keys whose integer value describes Redis' encoding.
const ENCODING_FIELDS: &[&str] = &["radix-tree-keys", "radix-tree-nodes"];

pub(super) fn pool(kind: char) -> Option<&'static [&'static str]> {
    Some(match kind {
        // IDs to add, delete, acknowledge and claim.
        'I' => &[
            "1-1",
            "1-2",
            "2-0",
            "2-*",
            "5-*",
            "3",
            "0-1",
            "0-0",
            "1-x",
            "x",
            "-1",
            "18446744073709551615-18446744073709551615",
            "18446744073709551615-*",
        ],
        // Range bounds.
        'J' => &[
            "-",
            "+",
            "0",
            "1-1",
            "(1-1",
            "2",
            "(2-0",
            "5",
            "1-2",
            "x",
            "(-",
            "(0-0",
            "(18446744073709551615-18446744073709551615",
        ],
        // Field/value lists (one odd list: an arity error).
        'F' => &["f v", "a 1 b 2", "f v f w", "f", "x y"],
        // Exact trimming (see the module comment).
        'L' => &[
            "MAXLEN 1",
            "MAXLEN 0",
            "MAXLEN = 2",
            "MINID 2",
            "MINID = 1-2",
            "MAXLEN -1",
            "MAXLEN x",
            "MINID x",
            "MAXLEN 2 LIMIT 1",
            "LIMIT 1 MAXLEN 2",
            "LIMIT 0 MINID 2",
            "LIMIT 3",
            "LIMIT 0",
            "LIMIT -1 MAXLEN 1",
            "MAXLEN 1 MINID 2",
            "MAXLEN ~",
            "MAXLEN",
            "FOO 1",
        ],
        // XREAD IDs.
        'X' => &["0", "1-1", "$", "x", "2", "+"],
        'R' => &["g1", "g2"],
        'E' => &["alice", "bob", "carol"],
        // Group start IDs.
        'Q' => &["0", "$", "1-1", "2", "x", "-"],
        // XGROUP CREATE options.
        'H' => &[
            "MKSTREAM",
            "ENTRIESREAD 1",
            "ENTRIESREAD -1",
            "ENTRIESREAD x",
            "MKSTREAM ENTRIESREAD 100",
            "ENTRIESREAD -5",
            "FOO",
        ],
        // XREADGROUP IDs.
        'O' => &[">", "0", "1-1", "$", "x"],
        // Idle thresholds (see the module comment).
        'W' => &["0", "10000000", "x", "-1"],
        // XCLAIM options.
        'Y' => &[
            "JUSTID",
            "FORCE",
            "RETRYCOUNT 5",
            "IDLE 10000000",
            "TIME 1",
            "LASTID 9-9",
            "JUSTID FORCE",
            "IDLE x",
            "RETRYCOUNT -1",
            "FOO",
        ],
        _ => return None,
    })
}

pub(super) const STREAMS: &[&str] = &[
    "=XRANGE $k0 - +",
    "=XADD $k0 $I0 $F0",
    "=XADD $k0 $I0 $F0",
    "=XADD $k0 NOMKSTREAM $I0 $F0",
    "=XADD $k0 $L0 $I0 $F0",
    "=XADD $k0 9999999999999-* f v|=XADD $k0 * $F0",
    "=XADD $k0",
    "=XLEN $k0",
    "=XRANGE $k0 $J0 $J1",
    "=XRANGE $k0 $J0 $J1 COUNT $n0",
    "=XREVRANGE $k0 $J0 $J1",
    "=XREVRANGE $k0 $J0 $J1 COUNT $n0",
    "=XRANGE $k0 - + FOO",
    "=XDEL $k0 $I0 $I1",
    "=XTRIM $k0 $L0",
    "=XREAD STREAMS $k0 $X0",
    "=XREAD COUNT $n0 STREAMS $k0 $k1 $X0 $X1",
    "=XREAD STREAMS $k0 $k1 $X0",
    "&XINFO STREAM $k0",
    "&XINFO STREAM $k0 FULL",
    "&XINFO STREAM $k0 FULL COUNT $n0",
    "=TYPE $k0",
    "=DEL $k0",
    "=SET $k0 $v0",
];

pub(super) const GROUPS: &[&str] = &[
    "=XGROUP CREATE $k0 $R0 $Q0",
    "=XGROUP CREATE $k0 $R0 $Q0 $H0",
    "=XGROUP SETID $k0 $R0 $Q0",
    "=XGROUP SETID $k0 $R0 $Q0 ENTRIESREAD $n0",
    "=XGROUP DESTROY $k0 $R0",
    "=XGROUP CREATECONSUMER $k0 $R0 $E0",
    "=XGROUP DELCONSUMER $k0 $R0 $E0",
    "=XREADGROUP GROUP $R0 $E0 STREAMS $k0 $O0",
    "=XREADGROUP GROUP $R0 $E0 STREAMS $k0 >",
    "=XREADGROUP GROUP $R0 $E0 COUNT $n0 STREAMS $k0 $O0",
    "=XREADGROUP GROUP $R0 $E0 NOACK STREAMS $k0 >",
    "=XREADGROUP GROUP $R0 STREAMS $k0 >",
    "=XACK $k0 $R0 $I0 $I1",
    "=XPENDING $k0 $R0",
    "&XPENDING $k0 $R0 - + $n0",
    "&XPENDING $k0 $R0 $J0 $J1 $n0 $E0",
    "&XPENDING $k0 $R0 IDLE $W0 - + $n0",
    "&XPENDING $k0 $R0 IDLE $W0 $J0 $J1 $n0 $E0",
    "=XCLAIM $k0 $R0 $E0 $W0 $I0 $I1 $Y0",
    "=XCLAIM $k0 $R0 $E0 0 $I0 JUSTID",
    "=XAUTOCLAIM $k0 $R0 $E0 $W0 $J0",
    "=XAUTOCLAIM $k0 $R0 $E0 $W0 $J0 COUNT $n0",
    "=XAUTOCLAIM $k0 $R0 $E0 0 $J0 JUSTID",
    "&XINFO GROUPS $k0",
    "&XINFO CONSUMERS $k0 $R0",
    "&XINFO STREAM $k0 FULL",
];

/// Is item `i` of `items` a time: the value after a time key, or the time
/// column of a pending-entry row (`[id, consumer, time, count]` in
/// XPENDING and XINFO STREAM FULL, `[id, time, count]` in a consumer's
/// list there)?
fn is_time(items: &[Frame], i: usize) -> bool {
    let key_is = |names: &[&str]| {
        i > 0
            && matches!(&items[i - 1], Frame::Bulk(b) if names.iter().any(|n| n.as_bytes() == &b[..]))
    };
    if key_is(TIME_FIELDS) {
        return true;
    }
    use Frame::{Bulk, Integer};
    match items {
        [Bulk(_), Bulk(_), Integer(_), Integer(_)] => i == 2,
        [Bulk(_), Integer(_), Integer(_)] => i == 1,
        _ => false,
    }
}

fn is_encoding(items: &[Frame], i: usize) -> bool {
    i > 0
        && matches!(&items[i - 1], Frame::Bulk(b) if ENCODING_FIELDS.iter().any(|n| n.as_bytes() == &b[..]))
}

/// Equal but for times within [`TIME_SLACK_MS`] and encoding counts.
pub(super) fn agree_times(ours: &Frame, theirs: &Frame) -> bool {
    match (ours, theirs) {
        (Frame::Array(a), Frame::Array(b)) => {
            a.len() == b.len()
                && (0..a.len()).all(|i| match (&a[i], &b[i]) {
                    (Frame::Integer(x), Frame::Integer(y)) if is_time(a, i) && is_time(b, i) => {
                        (x - y).abs() <= TIME_SLACK_MS
                    }
                    (Frame::Integer(_), Frame::Integer(_)) if is_encoding(a, i) => true,
                    (x, y) => agree_times(x, y),
                })
        }
        (a, b) => a == b,
    }
}
