//! Blocking-command templates for the random differential sequences
//! (`random_sequences.rs`): BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP,
//! BZPOPMIN, BZPOPMAX, BZMPOP and XREAD/XREADGROUP … BLOCK, in the cases that
//! answer without another client: data present (served at once), a wrong
//! type or a bad argument (an error at once), or empty keys with a timeout
//! of a few milliseconds (both servers answer their null when it expires).
//! Inside MULTI every one answers at once, as in Redis.
//!
//! Never generated: a timeout of 0, or one below a millisecond (`0.0001`
//! rounds to 0 in Redis): on empty keys both servers would wait forever.

pub(super) fn pool(kind: char) -> Option<&'static [&'static str]> {
    Some(match kind {
        // Timeouts in seconds (see the module comment), valid ones the
        // most often.
        'T' => &[
            "0.01", "0.02", "0.005", "1e-2", "0.01", "0.01", "0.015", "0.01", "x", "-1", "-0.01",
            "",
        ],
        // XREAD/XREADGROUP BLOCK in milliseconds.
        'B' => &["1", "10", "5", "1", "2", "1", "x", "-1", "2.5"],
        'C' => &["{k}la", "{k}lb"],
        'S' => &["{k}za", "{k}zb"],
        'V' => &["{k}xa", "{k}xb"],
        _ => return None,
    })
}

/// Lists, sorted sets and streams have keys of their own (pools `C`, `S`,
/// `V`), so that most pops find data of their type; a few templates use
/// the shared keys for wrong types.
pub(super) const BLOCKING: &[&str] = &[
    "=LPUSH $C0 $m0 $m1",
    "=RPUSH $C0 $m0 $m1 $m2",
    "=ZADD $S0 $z0 $m0 $z1 $m1",
    "=XADD $V0 $I0 f v",
    "=XGROUP CREATE $V0 g1 $Q0 MKSTREAM",
    "=BLPOP $C0 $T0",
    "=BLPOP $C0 $C1 $T0",
    "=BRPOP $C0 $C1 $T0",
    "=BLMOVE $C0 $C1 $w0 $w1 $T0",
    "=BRPOPLPUSH $C0 $C1 $T0",
    "=BLMPOP $T0 $u0 $C0 $C1 $w0",
    "=BLMPOP $T0 2 $C0 $C1 $w0 COUNT $n0",
    "=BLMPOP $T0 1 $C0 $w0 COUNT $n0 COUNT 1",
    "=BZPOPMIN $S0 $S1 $T0",
    "=BZPOPMAX $S0 $T0",
    "=BZPOPMIN $S0",
    "=BZMPOP $T0 $u0 $S0 $S1 MIN",
    "=BZMPOP $T0 2 $S0 $S1 MAX COUNT $n0",
    "=BZMPOP $T0 1 $S0 $w0",
    "=BZMPOP $T0 1 $S0 MIN COUNT $n0 COUNT 1",
    "=XREAD BLOCK $B0 STREAMS $V0 $X0",
    "=XREAD COUNT $n0 BLOCK $B0 STREAMS $V0 $V1 $X0 $X1",
    "=XREAD BLOCK $B0 COUNT $n0 STREAMS $V0 $X0",
    "=XREADGROUP GROUP g1 $E0 BLOCK $B0 STREAMS $V0 $O0",
    "=XREADGROUP GROUP g1 $E0 COUNT $n0 BLOCK $B0 NOACK STREAMS $V0 >",
    "=LRANGE $C0 0 -1",
    "=ZRANGE $S0 0 -1 WITHSCORES",
    "=XRANGE $V0 - +",
    "=LPUSH $k0 $m0",
    "=ZADD $k0 1 $m0",
    "=BLPOP $k0 $k1 $T0",
    "=BZPOPMAX $k0 $k1 $T0",
    "=BZMPOP $T0 2 $k0 $k1 MAX",
    "=XREAD BLOCK $B0 STREAMS $k0 $X0",
    "=SET $k0 $v0",
    "=DEL $k0",
];
