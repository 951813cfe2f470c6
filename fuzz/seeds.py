#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/) and the command dictionary.

Seeds are small valid inputs of each format; the fuzzer mutates from them.
CRCs are left zero: the harness rewrites them when the mode byte's bit 0 is
set (see fuzz/src/targets.rs). Rerun after a format change:
    python3 fuzz/seeds.py
"""
import glob, hashlib, json, os, re, struct

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_ID = "0" * 40


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def record(lsn, slot, *args):
    body = struct.pack("<QHI", lsn, slot, len(args))
    for a in args:
        body += struct.pack("<I", len(a)) + a
    return struct.pack("<II", len(body), 0) + body


def header(first):
    return b"TSWAL\0\0\x01" + struct.pack("<IQI", 1, first, 0)


def blob(b):
    return struct.pack("<I", len(b)) + b


def section(slot, keys):
    out = struct.pack("<HQQ", slot, 7, len(keys))
    for key, tag, expire, value in keys:
        out += blob(key) + bytes([tag]) + struct.pack("<Q", expire) + value
    return out


# --- resp ---------------------------------------------------------------
write("resp", "set", resp("SET", "k", "v"))
write("resp", "pipeline", resp("PING") + resp("GET", "k") + resp("MGET", "a", "b", "c"))
write("resp", "inline", b"PING\r\nSET k v\r\n\r\nGET k\n")
write("resp", "partial", resp("SET", "k", "value")[:-3])
write("resp", "malformed", b"*2\r\n$3\r\nGET\r\n$-5\r\n*x\r\n" + resp("PING"))
write("resp", "big-count", b"*1048577\r\n$1\r\na\r\n")
write("resp", "big-bulk", b"*1\r\n$536870913\r\nabc")
write("resp", "quotes", b'SET "k\\x00 y" \'v w\'\r\n')

# --- wal ----------------------------------------------------------------
recs = record(1, 866, b"SET", b"k", b"v") + record(2, 0xFFFF, b"FLUSHALL") + \
    record(3, 0xFFFE, b"TESSERA.TIME", struct.pack("<Q", 1700000000000))
write("wal", "segment", b"\x01" + header(1) + recs)
write("wal", "segment-last-torn", b"\x09" + header(1) + recs + b"\x30\0\0\0\x01\x02")
write("wal", "segment-prealloc-tail", b"\x09" + header(1) + recs + b"\0" * 64)
write("wal", "records", b"\x03" + recs)
write("wal", "records-skip", b"\x13" + recs)
write("wal", "bad-argc", b"\x03" + record(5, 1, b"x")[:-1] + b"\xff\xff\xff\x7f")

# --- snapshot -----------------------------------------------------------
zset = struct.pack("<Q", 2) + blob(b"a") + struct.pack("<d", 1.5) + blob(b"b") + struct.pack("<d", -2.0)
hashv = struct.pack("<Q", 1) + blob(b"f") + blob(b"v")
listv = struct.pack("<Q", 2) + blob(b"x") + blob(b"y")
setv = struct.pack("<Q", 2) + blob(b"m") + blob(b"n")
sid = lambda ms, seq: struct.pack("<QQ", ms, seq)
stream1 = sid(5, 0) + struct.pack("<Q", 1) + sid(5, 0) + struct.pack("<Q", 2) + blob(b"f") + blob(b"v")
group = blob(b"g") + sid(5, 0) + struct.pack("<Q", 1) + struct.pack("<Q", 1) + blob(b"c") + struct.pack("<Q", 9) \
    + struct.pack("<Q", 1) + sid(5, 0) + blob(b"c") + struct.pack("<QQ", 9, 1)
stream2 = sid(5, 0) + struct.pack("<Q", 1) + sid(0, 0) + struct.pack("<Q", 1) + sid(5, 0) + \
    struct.pack("<Q", 2) + blob(b"f") + blob(b"v") + struct.pack("<Q", 1) + group
write("snapshot", "string", section(12, [(b"k", 0, 0, blob(b"v"))]))
write("snapshot", "all-types", section(3, [
    (b"s", 0, 1700000000000, blob(b"v")), (b"h", 1, 0, hashv), (b"l", 2, 0, listv),
    (b"st", 3, 0, setv), (b"z", 4, 0, zset), (b"x1", 5, 0, stream1), (b"x2", 6, 0, stream2)]))
write("snapshot", "empty", section(16383, []))


# --- snapshot-file ------------------------------------------------------
def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc32c_table()


def crc32c(b, crc=0):
    crc ^= 0xFFFFFFFF
    for x in b:
        crc = _T[(crc ^ x) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def framed(body):
    return struct.pack("<II", len(body), crc32c(body)) + body


def snapshot_file(version, sections, scripts=None, keys=0, start=0, end=7):
    """(compact input, whole file): the input carries `sections` (slot
    order from 0), the harness pads the other slots with empty ones (mode
    bit 1). CRCs are right, so the seed loads with mode bit 0 clear too."""
    head = b"TSSNAP\0\x01" + struct.pack("<IH", version, len(NODE_ID)) + NODE_ID.encode()
    head += struct.pack("<I", crc32c(head))
    given = b"".join(framed(x) for x in sections)
    pad = b"".join(framed(struct.pack("<HQQ", slot, 0, 0)) for slot in range(len(sections), 16384))
    tail = b""
    if version >= 2:
        body = struct.pack("<Q", len(scripts or [])) + b"".join(blob(x) for x in scripts or [])
        tail += framed(body + struct.pack("<Q", 0))
    footer = b"TSSNEND\x01" + struct.pack("<QQQIQ", start, end, keys, 16384, 1700000000000)
    whole = head + given + pad + tail + footer
    footer += struct.pack("<I", crc32c(whole))
    return head + given + tail + footer


write("snapshot-file", "empty", b"\x02" + snapshot_file(2, [], end=0))
write("snapshot-file", "keys", b"\x02" + snapshot_file(2, [
    section(0, [(b"s", 0, 0, blob(b"v")), (b"h", 1, 0, hashv)]),
    section(1, [(b"z", 4, 1700000000000, zset)])], scripts=[b"return 1"], keys=3))
write("snapshot-file", "version-1", b"\x02" + snapshot_file(1, [section(0, [(b"k", 0, 0, blob(b"v"))])], keys=1))
write("snapshot-file", "fix-crcs", b"\x03" + snapshot_file(2, [section(0, [(b"l", 2, 0, listv)])], keys=1))

# --- replication --------------------------------------------------------
def frame(kind, payload):
    return kind + struct.pack("<I", len(payload)) + payload

write("replication", "records", b"\x01" + frame(b"R", record(1, 866, b"SET", b"k", b"v") +
      record(2, 5798, b"LPUSH", b"l", b"a", b"b")) + frame(b"H", struct.pack("<QQQ", 1, 2, 0)))
write("replication", "after-resync", b"\x07" + frame(b"R", record(1, 866, b"SET", b"k", b"v")))
write("replication", "history", b"\x00" + frame(b"Y", json.dumps([[1, 0], [2, 10]]).encode()))
write("replication", "group", b"\x01" + frame(b"R", record(1, 0xFFFF, b"FLUSHALL") +
      record(2, 0xFFFE, b"TESSERA.TIME", struct.pack("<Q", 1))))

# --- admin --------------------------------------------------------------
me = {"id": NODE_ID, "host": "127.0.0.1", "port": 6379}
other = {"id": "1" * 40, "host": "127.0.0.1", "port": 6380, "tlsPort": 6381}
topo = {"epoch": 3, "shards": [
    {"name": "s0", "slots": [[0, 8191]], "primary": me, "replicas": [other], "epoch": 2,
     "consistency": "quorum", "quorumPercent": 50, "leaseMs": 2000},
    {"name": "s1", "slots": [[8192, 16383]], "primary": other, "replicas": []}]}
write("admin", "topology", b"\x00" + json.dumps(topo).encode())
write("admin", "promote", b"\x01" + json.dumps({"epoch": 4, "replicas": 2}).encode())
write("admin", "follow", b"\x01" + json.dumps({"epoch": 4, "primary": other}).encode())
write("admin", "archived", b"\x02" + json.dumps({"lsn": 1234}).encode())
write("admin", "migration", b"\x03" + json.dumps({"id": "m-1", "slots": [[0, 10], [20, 20]],
      "target": other, "maxBytesPerSec": 1000000}).encode())
write("admin", "limits", b"\x04" + json.dumps({"writePauseTimeoutMs": 0, "handoffMaxLagBytes": 5}).encode())
write("admin", "ranges", b"\x05" + b"0-10,20,16383")

# --- commands -----------------------------------------------------------
C = lambda *cmds: b"".join(resp(*c) for c in cmds)
write("commands", "strings", C(("SET", "k", "v", "EX", "100"), ("APPEND", "k", "x"), ("SETRANGE", "k", "10", "y"),
      ("GETRANGE", "k", "0", "-1"), ("INCRBY", "n", "5"), ("INCRBYFLOAT", "n", "1.5"), ("MSET", "a", "1", "b", "2"),
      ("GETEX", "k", "PERSIST"), ("LCS", "a", "b"), ("STRLEN", "k")))
write("commands", "bits", C(("SETBIT", "b", "100", "1"), ("BITCOUNT", "b"), ("BITPOS", "b", "1"),
      ("BITOP", "XOR", "d", "b", "b"), ("BITFIELD", "b", "INCRBY", "u8", "0", "10", "GET", "i16", "4")))
write("commands", "lists", C(("RPUSH", "l", "a", "b", "c"), ("LPOS", "l", "b", "RANK", "-1"), ("LINSERT", "l", "BEFORE", "b", "x"),
      ("LRANGE", "l", "0", "-1"), ("LMOVE", "l", "m", "LEFT", "RIGHT"), ("LTRIM", "l", "1", "-1"), ("LMPOP", "1", "l", "LEFT", "COUNT", "2")))
write("commands", "hashes", C(("HSET", "h", "f", "v", "g", "1"), ("HINCRBY", "h", "g", "2"), ("HRANDFIELD", "h", "-5", "WITHVALUES"),
      ("HSCAN", "h", "0", "MATCH", "*", "COUNT", "10"), ("HGETALL", "h")))
write("commands", "sets", C(("SADD", "s", "a", "b", "c"), ("SADD", "t", "b"), ("SINTERCARD", "2", "s", "t", "LIMIT", "1"),
      ("SRANDMEMBER", "s", "-3"), ("SPOP", "s", "2"), ("SDIFFSTORE", "d", "s", "t"), ("SMISMEMBER", "s", "a", "z")))
write("commands", "zsets", C(("ZADD", "z", "1", "a", "2", "b", "3", "c"), ("ZRANGE", "z", "(1", "+inf", "BYSCORE", "LIMIT", "0", "2"),
      ("ZRANGEBYLEX", "z", "-", "+"), ("ZUNIONSTORE", "u", "2", "z", "z", "WEIGHTS", "1", "2"), ("ZRANDMEMBER", "z", "-2", "WITHSCORES"),
      ("ZPOPMIN", "z", "2"), ("ZINCRBY", "z", "1.5", "a")))
write("commands", "streams", C(("XADD", "x", "*", "f", "v"), ("XADD", "x", "MAXLEN", "~", "10", "*", "g", "w"),
      ("XGROUP", "CREATE", "x", "g", "0", "MKSTREAM"), ("XREADGROUP", "GROUP", "g", "c", "COUNT", "5", "STREAMS", "x", ">"),
      ("XPENDING", "x", "g", "-", "+", "10"), ("XAUTOCLAIM", "x", "g", "c2", "0", "0"), ("XINFO", "STREAM", "x", "FULL"),
      ("XTRIM", "x", "MINID", "0"), ("XRANGE", "x", "-", "+")))
write("commands", "keys", C(("SET", "a", "1"), ("EXPIRE", "a", "100", "NX"), ("TTL", "a"), ("RENAME", "a", "b"),
      ("COPY", "b", "c"), ("DUMP", "c"), ("SCAN", "0", "MATCH", "*", "TYPE", "string"), ("KEYS", "*"), ("SORT", "l", "ALPHA", "LIMIT", "0", "5"),
      ("OBJECT", "ENCODING", "b"), ("DEL", "b", "c"), ("FLUSHALL",)))
write("commands", "multi", C(("MULTI",), ("SET", "a", "1"), ("INCR", "a"), ("EXEC",), ("WATCH", "a"), ("MULTI",), ("DISCARD",)))
write("commands", "server", C(("INFO",), ("CONFIG", "SET", "notify-keyspace-events", "KEA"), ("CONFIG", "GET", "*"),
      ("CLIENT", "SETNAME", "x"), ("CLIENT", "LIST"), ("COMMAND", "COUNT"), ("HELLO", "3"), ("CLUSTER", "KEYSLOT", "k"),
      ("ACL", "SETUSER", "u", "on", ">p", "~*", "+@all"), ("ACL", "LIST"), ("SCRIPT", "LOAD", "return 1"), ("SUBSCRIBE", "c")))
write("commands", "restore", C(("RPUSH", "l", "a"), ("DUMP", "l"), ("RESTORE", "r", "0", b"\x0e\x01\x0b\x0b\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x01a\xff\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00", "REPLACE")))
write("commands", "blocking", C(("BLPOP", "l", "0.01"), ("BZPOPMIN", "z", "0"), ("XREAD", "BLOCK", "10", "STREAMS", "x", "$"), ("WAIT", "1", "10")))

# Scripts and functions: the target bounds the Lua instructions an input
# runs (`SCRIPT_TICKS`), so a loop ends in an error rather than a hang, and
# so does every script after it in the same input: loops come last.
LOOP = "local n = 0 while true do n = n + 1 end"
write("commands", "eval", C(("SET", "k", "1"),
      ("EVAL", "local v = redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], v .. ARGV[1]) return {v, #ARGV, {ok='x'}}", "1", "k", "a", "b"),
      ("EVAL", "return redis.pcall('INCR', KEYS[1])", "1", "k"),
      ("EVAL", "local r = redis.pcall('NOSUCH') return {r['err'], redis.error_reply('bad'), redis.status_reply('fine')}", "0"),
      ("EVAL", "return redis.call('LPUSH', KEYS[1], unpack(ARGV))", "1", "l", "x", "y", "z"),
      ("EVAL_RO", "return redis.call('LRANGE', KEYS[1], 0, -1)", "1", "l"),
      ("EVAL", "return redis.sha1hex(ARGV[1]) .. tostring(bit.band(12, 10)) .. string.format('%.3f', math.sqrt(2))", "0", "abc")))
write("commands", "eval-loops", C(("EVAL", "local t = {} for i = 1, 1000 do t[i] = i * i end return #t", "0"),
      ("EVAL", "local s = string.rep('x', 100000) return #s", "0"), ("SCRIPT", "KILL"),
      ("EVAL", LOOP, "0"), ("EVAL", "return 1", "0")))
write("commands", "eval-pcall-loop", C(("EVAL", "while true do pcall(function() while true do end end) end", "0"),
      ("EVAL", "return 1", "0")))
write("commands", "eval-call-loop", C(("EVAL", "while true do redis.call('INCR', KEYS[1]) end", "1", "n"),
      ("GET", "n")))
write("commands", "eval-libs", C(
      ("EVAL", "return cjson.encode({a = {1, 2, 3}, b = 'x', c = cjson.decode(ARGV[1])})", "0", '{"k":[1,2,{"z":null}],"f":1.5}'),
      ("EVAL", "local p = cmsgpack.pack({1, 'two', {three = 3}}, 4.5) local a, b = cmsgpack.unpack(p) return {a[2], tostring(b)}", "0"),
      ("EVAL", "return cjson.decode(ARGV[1])", "0", "[[[[[[1]]]]]]"),
      ("EVAL", "return cmsgpack.unpack(ARGV[1])", "0", b"\x93\x01\xa1a\xc0")))
SCRIPT = "return {KEYS[1], ARGV[1]}"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
write("commands", "evalsha", C(("SCRIPT", "LOAD", SCRIPT),
      ("EVALSHA", SHA, "1", "k", "v"),
      ("EVALSHA_RO", SHA, "1", "k", "v"),
      ("SCRIPT", "EXISTS", SHA, "0" * 40),
      ("MULTI",), ("EVAL", "return redis.call('INCR', KEYS[1])", "1", "n"), ("EXEC",), ("SCRIPT", "FLUSH")))
LIB = ("#!lua name=lib\n"
       "local function get(keys, args) return redis.call('GET', keys[1]) end\n"
       "redis.register_function('get', get)\n"
       "redis.register_function{function_name='put', callback=function(keys, args) return redis.call('SET', keys[1], args[1]) end}\n"
       "redis.register_function{function_name='ro', callback=get, flags={'no-writes'}}\n"
       "redis.register_function('spin', function(keys, args) " + LOOP + " end)\n")
write("commands", "functions", C(("FUNCTION", "LOAD", LIB), ("FCALL", "put", "1", "k", "v"), ("FCALL", "get", "1", "k"),
      ("FCALL_RO", "ro", "1", "k"), ("FUNCTION", "LIST", "WITHCODE"), ("FUNCTION", "DUMP"), ("FCALL", "spin", "0"),
      ("FUNCTION", "DELETE", "lib"), ("FUNCTION", "FLUSH")))
write("commands", "function-load-loop", C(("FUNCTION", "LOAD", "#!lua name=spinlib\n" + LOOP + "\n"),
      ("FUNCTION", "LIST")))

# --- dictionary: every command name ------------------------------------
names = set()
for p in glob.glob(os.path.join(HERE, "..", "src", "node", "cmd", "*.rs")):
    names.update(re.findall(r'name: "([^"]+)"', open(p).read()))
words = sorted(names) + ["redis.call(", "redis.pcall(", "KEYS[1]", "ARGV[1]", "while true do ", " end",
                         "cjson.encode(", "cjson.decode(", "cmsgpack.pack(", "cmsgpack.unpack(", "#!lua name=",
                         "redis.register_function(", "COUNT", "MATCH", "LIMIT", "WITHSCORES", "BYSCORE", "BYLEX", "REV", "STREAMS",
                         "GROUP", "MAXLEN", "MINID", "NX", "XX", "GT", "LT", "EX", "PX", "KEEPTTL", "REPLACE",
                         "LEFT", "RIGHT", "BEFORE", "AFTER", "+inf", "-inf", "*", "$", ">", "-", "+", "0-0"]
with open(os.path.join(HERE, "dict", "commands.dict"), "w") as f:
    f.write("# Command names and option words (fuzz/seeds.py writes this).\n")
    for w in words:
        f.write('"%s"\n' % w.replace("\\", "\\\\").replace('"', '\\"'))
