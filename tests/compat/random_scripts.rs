//! Lua script templates for the random differential sequences
//! (`random_sequences.rs`): EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, SCRIPT
//! LOAD/EXISTS/FLUSH with small deterministic scripts — `redis.call` and
//! `redis.pcall`, error replies (the script's own, the commands', the
//! compiler's and the sandbox's), reply conversions, KEYS and ARGV.
//!
//! A script body (pool `e`) is one argument; pool `h` holds the SHA1 of
//! each body, in the same order (`$h0` in a template with `$e0` is that
//! body's SHA1). Every key a script touches is a `{k}` key, declared or
//! not, so all stay in one slot of the node (a key in another slot is
//! refused there, as in Redis Cluster). Each case starts with an
//! empty script cache on both servers (SCRIPT FLUSH between cases).
//!
//! Not generated (docs/node.md, "Known differences in these families"):
//! `cjson.decode` of malformed JSON, whose error the node words as its
//! JSON parser does, without Redis' `user_script:1:` position.

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

/// Script bodies. Simple ones first: a shrunk case uses them.
const BODIES: &[&str] = &[
    "return redis.call('GET',KEYS[1])",
    "return redis.call('SET',KEYS[1],ARGV[1])",
    "return redis.call('INCR',KEYS[1])",
    "return redis.pcall('INCR',KEYS[1])",
    "local r = redis.pcall('LPUSH',KEYS[1],ARGV[1]) if type(r) == 'table' and r.err then return 'caught: ' .. r.err end return r",
    "return {1, 2, 'three', 3.99, {4, 'five'}, nil, 7}",
    "return {ok='fine'}",
    "return {err='custom failure'}",
    "return redis.error_reply('my error')",
    "return redis.status_reply('DONE')",
    "return #KEYS + #ARGV",
    "return KEYS",
    "return ARGV",
    "return true",
    "return false",
    "return nil",
    "error('boom')",
    "error({err='table error'})",
    "return redis.call('NOSUCH')",
    "return redis.call('GET')",
    "this is not lua",
    "return redis.sha1hex(ARGV[1] or '')",
    "redis.call('SET',KEYS[1],'x') return redis.call('LPUSH',KEYS[1],'y')",
    "return 3.7",
    "return -2.5",
    "return tonumber(ARGV[1])",
    "local t = {} for i=1,#KEYS do t[i] = redis.call('EXISTS',KEYS[i]) end return t",
    "return redis.call('HGETALL',KEYS[1])",
    "return redis.call('ZRANGE',KEYS[1],0,-1,'WITHSCORES')",
    "return redis.call('DEL',KEYS[1],KEYS[2])",
    "x = 1",
    "return cjson.encode({1,2,'a',{true,false}})",
    "return cjson.decode('[1,\"a\",[2,[]],5.5]')",
    "return string.format('%d-%s', 5, 'x')",
    "return redis.call('EXPIRE',KEYS[1],100)",
    "return redis.call('SET',KEYS[1],ARGV[1],'EX',ARGV[2])",
    "return redis.pcall('GET')",
    "return redis.call('EVAL','return 1','0')",
    "return redis.call('RPUSH',KEYS[1],unpack(ARGV))",
    "return redis.call('LRANGE',KEYS[1],0,-1)",
    "redis.call('SADD','{k}z','m') return redis.call('SMEMBERS','{k}z')",
    "return {redis.call('TYPE',KEYS[1])}",
    "return redis.call('TYPE',KEYS[1])",
    "local n = 0 for i = 1, 100 do n = n + i end return n",
    "return math.floor(2^53)",
    "return bit.band(12, 10)",
    "return tostring(1/0)",
    "return {1, {2, {3, {4}}}}",
    "return string.rep('ab', 3)",
    "return pcall(error)",
    "return select('#', 1, 2, 3)",
    "",
];

/// The SHA1 of each body, in the same order.
fn shas() -> &'static [&'static str] {
    static SHAS: OnceLock<Vec<&'static str>> = OnceLock::new();
    SHAS.get_or_init(|| {
        BODIES
            .iter()
            .map(|b| {
                let hex: String = Sha1::digest(b.as_bytes())
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect();
                &*Box::leak(hex.into_boxed_str())
            })
            .collect()
    })
}

pub(super) fn pool(kind: char) -> Option<&'static [&'static str]> {
    Some(match kind {
        'e' => BODIES,
        'h' => shas(),
        // Key counts for EVAL with two keys and no arguments.
        'N' => &["0", "1", "2", "3", "-1", "x"],
        // Arguments: values, and keys of the key pool.
        'A' => &["10", "hello", "{k}a", "{k}b", "[1,2]", "5", "-3", ""],
        _ => return None,
    })
}

pub(super) const SCRIPTS: &[&str] = &[
    "=EVAL $e0 1 $k0 $A0",
    "=EVAL $e0 2 $k0 $k1 $A0 $A1",
    "=EVAL $e0 0",
    "=EVAL $e0 0 $A0",
    "=EVAL $e0 $N0 $k0 $k1",
    "=EVAL $e0",
    "=EVALSHA $h0 1 $k0 $A0",
    "=EVALSHA $h0 0",
    "=EVALSHA 0000000000000000000000000000000000000000 0",
    "=EVALSHA nope 1 $k0",
    "=EVAL_RO $e0 1 $k0 $A0",
    "=EVALSHA_RO $h0 1 $k0 $A0",
    "=SCRIPT LOAD $e0",
    "=SCRIPT EXISTS $h0 $h1",
    "=SCRIPT EXISTS",
    "=SCRIPT FLUSH",
    "=SCRIPT LOAD $e0|=EVALSHA $h0 2 $k0 $k1 $A0",
    "=GET $k0",
    "=SET $k0 $v0",
    "=LPUSH $k0 $m0",
    "=TYPE $k0",
];
