//! Command templates and value pools for the random differential sequences
//! (`random_sequences.rs`).
//!
//! A template is one or more commands separated by `|`. Each command starts
//! with how its reply is compared:
//! - `=` exactly;
//! - `~` as a sorted array (the order is the collection's: SMEMBERS, HKEYS,
//!   HVALS, SINTER, SUNION, SDIFF, KEYS);
//! - `%` as a sorted array of pairs (HGETALL);
//! - `#` by length only (an array's length; any bulk string alike): replies
//!   of random commands (SPOP, SRANDMEMBER, HRANDFIELD, ZRANDMEMBER,
//!   RANDOMKEY);
//! - `@` a TTL-like integer by sign only (-2, -1, or "some time left"):
//!   remaining times depend on each server's clock;
//! - `^` a float result (INCRBYFLOAT, HINCRBYFLOAT) equal to 12 digits:
//!   Redis adds in 80-bit long double, the node in 64-bit floats, so
//!   sums past 2^53 differ in the last digits (docs/node.md). When they
//!   do, the node's stored value is set to Redis' before going on.
//!
//! `$` + a pool letter + a digit is a value from that pool; the same name
//! in one template is the same value. A pool value with spaces is several
//! arguments (option combinations).
//!
//! Deliberately not generated (see docs/node.md, "Known differences"):
//! - INCRBYFLOAT/HINCRBYFLOAT increments past the range of a 64-bit float
//!   (`1e400`): a long double holds them, the node refuses them.
//! - EXPIRE … GT/LT with relative times: two equal relative times set a
//!   few milliseconds apart compare by the clock; GT/LT use EXPIREAT with
//!   absolute times instead.
//! - Values with an exponent that APPEND could grow past a 64-bit float's
//!   range (`1e3` + `10` is `1e310`): a long double holds them.
//! - Key counts that reach into the options (`SINTERCARD 3 {k}a {k}b LIMIT
//!   1`): a cluster node takes the option words for keys and answers
//!   -CROSSSLOT, as Redis Cluster does; standalone Redis answers a syntax
//!   error. (LMPOP and ZMPOP, whose keys must be followed by a direction,
//!   answer the syntax error on both.)
//! - SETBIT/SETRANGE/BITFIELD offsets that grow a string to hundreds of
//!   megabytes (valid, but slow and memory-hungry on both servers).

/// The values a placeholder letter stands for. Simple values first: a
/// shrunk case uses them.
pub(super) fn pool(kind: char) -> &'static [&'static str] {
    match kind {
        // One hash tag: multi-key commands stay in one slot of the node.
        'k' => &["{k}a", "{k}b", "{k}c", "{k}d"],
        'v' => &[
            "a",
            "hello",
            "",
            "10",
            "-3",
            "3.5",
            "abc",
            "0",
            "9223372036854775807",
            "-9223372036854775808",
            "inf",
        ],
        'n' => &[
            "0",
            "1",
            "-1",
            "2",
            "-2",
            "3",
            "5",
            "-5",
            "10",
            "100",
            "2147483648",
            "-9223372036854775808",
            "9223372036854775807",
            "x",
            "1.5",
        ],
        // Counts of random commands: a huge negative count would ask for
        // billions of repeated elements.
        'c' => &["1", "2", "0", "-1", "-3", "5", "10", "-10", "x"],
        // Increments exact in binary (see the module comment).
        'f' => &[
            "1", "0.5", "-2.5", "3", "1e3", "0", "-0", "0.25", "-1.5", "1024", "inf", "nan", "x",
            "5e-1", "1e20",
        ],
        's' => &[
            "1", "0", "-1", "2.5", "3", "0.1", "inf", "-inf", "+inf", "nan", "x", "1e3", "-0",
            "1e20", "1e400", "1e-400",
        ],
        'm' => &["a", "b", "c", "d", "1", "2"],
        // Key counts (see the module comment).
        'u' => &["2", "1", "0", "-1", "x", "100", "9223372036854775807"],
        'b' => &[
            "0",
            "1",
            "7",
            "8",
            "15",
            "100",
            "8000",
            "-1",
            "4294967296",
            "x",
            "#2",
        ],
        'z' => &["1", "0", "1", "0", "2", "x"],
        't' => &[
            "100000",
            "200000",
            "0",
            "-1",
            "x",
            "9223372036854775807",
            "9223372036854775",
            "",
        ],
        // Absolute times: far future, past, nonsense.
        'a' => &["4000000000", "4100000000", "1", "0", "x"],
        'x' => &["NX", "XX"],
        'g' => &["GT", "LT", "NX", "XX", "NX GT", "GT LT", "FOO"],
        'w' => &["LEFT", "RIGHT", "left", "UP"],
        'l' => &[
            "-", "+", "[a", "(b", "[c", "(a", "[1", "a", "(", "[", "[d", "(2",
        ],
        'r' => &[
            "-inf", "+inf", "0", "(1", "1", "(2.5", "3", "x", "(", "inf", "(-inf", "2.5", "1e400",
            " 1", "",
        ],
        'o' => &[
            "NX",
            "XX",
            "GT",
            "LT",
            "CH",
            "INCR",
            "NX CH",
            "XX CH",
            "GT CH",
            "LT CH",
            "XX GT",
            "XX LT",
            "NX XX",
            "NX GT",
            "GT LT",
            "INCR NX",
            "INCR XX",
            "INCR GT",
            "XX GT CH INCR",
        ],
        'p' => &["SUM", "MIN", "MAX", "min", "AVG"],
        'y' => &[
            "u8", "i8", "u4", "i16", "u1", "i64", "u63", "u64", "x8", "I8", "i0",
        ],
        'q' => &["WRAP", "SAT", "FAIL", "NOPE"],
        other => super::random_streams::pool(other)
            .or_else(|| super::random_scripts::pool(other))
            .or_else(|| super::random_blocking::pool(other))
            .or_else(|| super::random_scan::pool(other))
            .unwrap_or_else(|| panic!("no value pool '{other}'")),
    }
}

/// Pools whose values are one argument each, spaces and all (script
/// bodies).
pub(super) fn whole(kind: char) -> bool {
    kind == 'e'
}

pub(super) const STRINGS: &[&str] = &[
    "=GET $k0",
    "=SET $k0 $v0",
    "=SET $k0 $v0 NX",
    "=SET $k0 $v0 XX",
    "=SET $k0 $v0 GET",
    "=SET $k0 $v0 NX GET",
    "=SET $k0 $v0 XX GET",
    "=SET $k0 $v0 KEEPTTL",
    "=SET $k0 $v0 EX $t0",
    "=SET $k0 $v0 PX $t0|@TTL $k0",
    "=SET $k0 $v0 NX XX",
    "=SET $k0 $v0 EX 100000 KEEPTTL",
    "=SET $k0 $v0 FOO",
    "=SET $k0",
    "=GET",
    "=APPEND $k0 $v0",
    "=INCR $k0",
    "=DECR $k0",
    "=INCRBY $k0 $n0",
    "=DECRBY $k0 $n0",
    "=INCRBY $k0",
    "^INCRBYFLOAT $k0 $f0",
    "=GETRANGE $k0 $n0 $n1",
    "=SETRANGE $k0 $n0 $v0",
    "=STRLEN $k0",
    "=MSET $k0 $v0 $k1 $v1",
    "=MSET $k0 $v0 $k1",
    "=MGET $k0 $k1 $k2",
    "=MSETNX $k0 $v0 $k1 $v1",
    "=GETDEL $k0",
    "=SETNX $k0 $v0",
    "=GETSET $k0 $v0",
    "=SETEX $k0 $t0 $v0",
    "=GETEX $k0 PERSIST|@TTL $k0",
    "=SUBSTR $k0 $n0 $n1",
    "=EXISTS $k0",
];

pub(super) const BITS: &[&str] = &[
    "=GET $k0",
    "=SETBIT $k0 $b0 $z0",
    "=GETBIT $k0 $b0",
    "=BITCOUNT $k0",
    "=BITCOUNT $k0 $n0 $n1",
    "=BITCOUNT $k0 $n0 $n1 BIT",
    "=BITCOUNT $k0 $n0 $n1 BYTE",
    "=BITCOUNT $k0 $n0",
    "=BITPOS $k0 $z0",
    "=BITPOS $k0 $z0 $n0",
    "=BITPOS $k0 $z0 $n0 $n1",
    "=BITPOS $k0 $z0 $n0 $n1 BIT",
    "=BITOP AND $k0 $k1 $k2",
    "=BITOP OR $k0 $k1 $k2",
    "=BITOP XOR $k0 $k1",
    "=BITOP NOT $k0 $k1",
    "=BITOP NOT $k0 $k1 $k2",
    "=BITOP FOO $k0 $k1",
    "=BITFIELD $k0 GET $y0 $b0",
    "=BITFIELD $k0 SET $y0 $b0 $n0",
    "=BITFIELD $k0 INCRBY $y0 $b0 $n0",
    "=BITFIELD $k0 OVERFLOW $q0 INCRBY $y0 $b0 $n0 GET $y1 $b1",
    "=BITFIELD_RO $k0 GET $y0 $b0",
    "=BITFIELD_RO $k0 SET $y0 $b0 $n0",
    "=BITFIELD $k0",
    "=BITFIELD $k0 GET $y0",
    "=BITFIELD $k0 OVERFLOW $q0 SET $y0 $b0 $n0 SET $y1 $b1 $n1",
    "=SET $k0 $v0",
    "=APPEND $k0 $v0",
    "=STRLEN $k0",
    "=SETBIT $k0 $b0",
];

pub(super) const LISTS: &[&str] = &[
    "=LRANGE $k0 0 -1",
    "=LPUSH $k0 $m0",
    "=LPUSH $k0 $m0 $m1 $m2",
    "=RPUSH $k0 $m0 $m1",
    "=LPUSHX $k0 $m0",
    "=RPUSHX $k0 $m0",
    "=LPUSH $k0",
    "=LPOP $k0",
    "=RPOP $k0",
    "=LPOP $k0 $n0",
    "=RPOP $k0 $n0",
    "=LRANGE $k0 $n0 $n1",
    "=LINDEX $k0 $n0",
    "=LSET $k0 $n0 $m0",
    "=LREM $k0 $n0 $m0",
    "=LINSERT $k0 BEFORE $m0 $m1",
    "=LINSERT $k0 AFTER $m0 $m1",
    "=LINSERT $k0 MIDDLE $m0 $m1",
    "=LTRIM $k0 $n0 $n1",
    "=LLEN $k0",
    "=LPOS $k0 $m0",
    "=LPOS $k0 $m0 RANK $n0",
    "=LPOS $k0 $m0 COUNT $n0",
    "=LPOS $k0 $m0 RANK $n0 COUNT $n1 MAXLEN $n2",
    "=LPOS $k0 $m0 FOO",
    "=LMOVE $k0 $k1 $w0 $w1",
    "=RPOPLPUSH $k0 $k1",
    "=LMPOP $n0 $k0 $k1 $w0",
    "=LMPOP 2 $k0 $k1 $w0 COUNT $n0",
    "=LMPOP 1 $k0 RIGHT COUNT $n0 COUNT 1",
    "=SET $k0 $v0",
];

pub(super) const HASHES: &[&str] = &[
    "%HGETALL $k0",
    "=HSET $k0 $m0 $v0",
    "=HSET $k0 $m0 $v0 $m1 $v1",
    "=HSET $k0 $m0",
    "=HMSET $k0 $m0 $v0",
    "=HGET $k0 $m0",
    "=HDEL $k0 $m0 $m1",
    "=HLEN $k0",
    "=HINCRBY $k0 $m0 $n0",
    "^HINCRBYFLOAT $k0 $m0 $f0",
    "=HMGET $k0 $m0 $m1 $m2",
    "=HEXISTS $k0 $m0",
    "=HSETNX $k0 $m0 $v0",
    "=HSTRLEN $k0 $m0",
    "~HKEYS $k0",
    "~HVALS $k0",
    "#HRANDFIELD $k0",
    "#HRANDFIELD $k0 $c0",
    "#HRANDFIELD $k0 $c0 WITHVALUES",
    "=HGET $k0",
    "=SET $k0 $v0",
];

pub(super) const SETS: &[&str] = &[
    "~SMEMBERS $k0",
    "=SADD $k0 $m0",
    "=SADD $k0 $m0 $m1 $m2",
    "=SADD $k0",
    "=SREM $k0 $m0 $m1",
    "=SCARD $k0",
    "=SISMEMBER $k0 $m0",
    "=SMISMEMBER $k0 $m0 $m1",
    "=SINTERCARD 2 $k0 $k1",
    "=SINTERCARD $u0 $k0 $k1 LIMIT $n1",
    "=SMOVE $k0 $k1 $m0",
    "~SINTER $k0 $k1",
    "~SUNION $k0 $k1 $k2",
    "~SDIFF $k0 $k1",
    "=SINTERSTORE $k2 $k0 $k1",
    "=SUNIONSTORE $k2 $k0 $k1",
    "=SDIFFSTORE $k2 $k0 $k1",
    // A partial pop leaves different members on each side: the key is
    // compared by size, then dropped.
    "#SPOP $k0 $c0|=SCARD $k0|=DEL $k0",
    "#SPOP $k0|=SCARD $k0|=DEL $k0",
    "=SPOP $k0 0",
    "#SRANDMEMBER $k0",
    "#SRANDMEMBER $k0 $c0",
    "=SET $k0 $v0",
];

pub(super) const ZSETS: &[&str] = &[
    "=ZRANGE $k0 0 -1 WITHSCORES",
    "=ZADD $k0 $s0 $m0",
    "=ZADD $k0 $s0 $m0 $s1 $m1",
    "=ZADD $k0 $o0 $s0 $m0",
    "=ZADD $k0 $o0 $s0 $m0 $s1 $m1",
    "=ZADD $k0 $s0",
    "=ZSCORE $k0 $m0",
    "=ZINCRBY $k0 $s0 $m0",
    "=ZMSCORE $k0 $m0 $m1",
    "=ZCARD $k0",
    "=ZRANGE $k0 $n0 $n1",
    "=ZRANGE $k0 $n0 $n1 REV WITHSCORES",
    "=ZRANGE $k0 $r0 $r1 BYSCORE",
    "=ZRANGE $k0 $r0 $r1 BYSCORE REV LIMIT $n0 $n1 WITHSCORES",
    "=ZRANGE $k0 $l0 $l1 BYLEX",
    "=ZRANGE $k0 $l0 $l1 BYLEX REV LIMIT $n0 $n1",
    "=ZRANGE $k0 $l0 $l1 BYLEX WITHSCORES",
    "=ZRANGE $k0 $n0 $n1 LIMIT 0 1",
    "=ZRANGEBYSCORE $k0 $r0 $r1 WITHSCORES LIMIT $n0 $n1",
    "=ZREVRANGEBYSCORE $k0 $r0 $r1",
    "=ZREVRANGEBYLEX $k0 $l0 $l1",
    "=ZRANK $k0 $m0",
    "=ZREVRANK $k0 $m0",
    "=ZCOUNT $k0 $r0 $r1",
    "=ZLEXCOUNT $k0 $l0 $l1",
    "=ZREM $k0 $m0 $m1",
    "=ZREMRANGEBYSCORE $k0 $r0 $r1",
    "=ZREMRANGEBYRANK $k0 $n0 $n1",
    "=ZREMRANGEBYLEX $k0 $l0 $l1",
    "=ZPOPMIN $k0",
    "=ZPOPMAX $k0 $n0",
    "=ZUNIONSTORE $k2 2 $k0 $k1",
    "=ZUNIONSTORE $k2 2 $k0 $k1 WEIGHTS $s0 $s1 AGGREGATE $p0",
    "=ZINTERSTORE $k2 2 $k0 $k1",
    "=ZINTERSTORE $k2 $u0 $k0 $k1 AGGREGATE $p0",
    "=ZDIFFSTORE $k2 2 $k0 $k1",
    "=ZUNION 2 $k0 $k1 WITHSCORES",
    "=ZINTER 2 $k0 $k1 WEIGHTS $s0 $s1 WITHSCORES",
    "=ZDIFF 2 $k0 $k1 WITHSCORES",
    "=ZRANGESTORE $k2 $k0 $n0 $n1",
    "=ZMPOP 2 $k0 $k1 MIN COUNT $n0",
    "=ZMPOP $n0 $k0 $k1 MAX",
    "#ZRANDMEMBER $k0 $c0 WITHSCORES",
    "=SADD $k0 $m0",
    "=SET $k0 $v0",
];

pub(super) const KEYS: &[&str] = &[
    "=TYPE $k0",
    "=SET $k0 $v0",
    "=LPUSH $k0 $m0",
    "=SADD $k0 $m0",
    "=HSET $k0 $m0 $v0",
    "=ZADD $k0 $s0 $m0",
    "=DEL $k0",
    "=DEL $k0 $k1",
    "=UNLINK $k0 $k1",
    "=EXISTS $k0 $k1 $k0",
    "=TOUCH $k0 $k1",
    "=RENAME $k0 $k1",
    "=RENAMENX $k0 $k1",
    "=COPY $k0 $k1",
    "=COPY $k0 $k1 REPLACE",
    "=COPY $k0 $k1 FOO",
    "=PERSIST $k0",
    "=EXPIRE $k0 $t0",
    "=EXPIRE $k0 $t0 $x0",
    "=PEXPIRE $k0 $t0",
    "=EXPIREAT $k0 $a0",
    "=EXPIREAT $k0 $a0 $g0",
    "=PEXPIREAT $k0 $a0 $g0",
    "@TTL $k0",
    "@PTTL $k0",
    "@EXPIRETIME $k0",
    "=DBSIZE",
    "~KEYS *",
    "~KEYS {k}[ab]",
    "#RANDOMKEY",
    "=EXPIRE $k0",
    "=RENAME $k0",
    "=GET $k0",
];
