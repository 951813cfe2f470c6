//! Blocking-command templates for the random differential sequences
//! (`random_sequences.rs`): BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP,
//! BZPOPMIN, BZPOPMAX and XREAD/XREADGROUP … BLOCK, in the cases that
//! answer without another client: data present (served at once), a wrong
//! type or a bad argument (an error at once), or empty keys with a timeout
//! of a few milliseconds (both servers answer their null when it expires).
//! Inside MULTI every one answers at once, as in Redis.
//!
//! Never generated: a timeout of 0, or one below a millisecond (`0.0001`
//! rounds to 0 in Redis): on empty keys both servers would wait forever.

pub(super) fn pool(kind: char) -> Option<&'static [&'static str]> {
    Some(match kind {
        // Timeouts in seconds (see the module comment).
        'T' => &["0.01", "0.02", "x", "-1", "-0.01", "0.005", "1e-2", ""],
        // XREAD/XREADGROUP BLOCK in milliseconds.
        'B' => &["1", "10", "x", "-1", "2.5"],
        _ => return None,
    })
}

pub(super) const BLOCKING: &[&str] = &[
    "=LPUSH $k0 $m0 $m1",
    "=RPUSH $k0 $m0",
    "=ZADD $k0 $s0 $m0 $s1 $m1",
    "=XADD $k0 $I0 $F0",
    "=XGROUP CREATE $k0 g1 $Q0 MKSTREAM",
    "=BLPOP $k0 $T0",
    "=BLPOP $k0 $k1 $T0",
    "=BRPOP $k0 $k1 $T0",
    "=BLMOVE $k0 $k1 $w0 $w1 $T0",
    "=BRPOPLPUSH $k0 $k1 $T0",
    "=BLMPOP $T0 $u0 $k0 $k1 $w0",
    "=BLMPOP $T0 2 $k0 $k1 $w0 COUNT $n0",
    "=BLMPOP $T0 1 $k0 $w0 COUNT $n0 COUNT 1",
    "=BZPOPMIN $k0 $k1 $T0",
    "=BZPOPMAX $k0 $T0",
    "=BZPOPMIN $k0",
    "=XREAD BLOCK $B0 STREAMS $k0 $X0",
    "=XREAD COUNT $n0 BLOCK $B0 STREAMS $k0 $k1 $X0 $X1",
    "=XREAD BLOCK $B0 COUNT $n0 STREAMS $k0 $X0",
    "=XREADGROUP GROUP g1 $E0 BLOCK $B0 STREAMS $k0 $O0",
    "=XREADGROUP GROUP g1 $E0 COUNT $n0 BLOCK $B0 NOACK STREAMS $k0 >",
    "=LRANGE $k0 0 -1",
    "=ZRANGE $k0 0 -1 WITHSCORES",
    "=XRANGE $k0 - +",
    "=SET $k0 $v0",
    "=DEL $k0",
];
