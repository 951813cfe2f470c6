//! Server commands: INFO, COMMAND, CONFIG, DBSIZE, FLUSHALL/FLUSHDB, TIME,
//! LASTSAVE, BGSAVE, SHUTDOWN.

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::info;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "info",
        arity: -1,
        flags: LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: info_cmd,
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: command,
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: ADMIN | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: config,
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: READONLY | FAST,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: dbsize,
    },
    CommandSpec {
        name: "flushall",
        arity: -1,
        flags: WRITE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: flushall,
    },
    CommandSpec {
        name: "flushdb",
        arity: -1,
        flags: WRITE,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: flushall,
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: time,
    },
    CommandSpec {
        name: "lastsave",
        arity: 1,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: lastsave,
    },
    CommandSpec {
        name: "shutdown",
        arity: -1,
        flags: ADMIN | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: shutdown,
    },
];

fn info_cmd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let wanted: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let text = info::render(ctx.node, ctx.store, &wanted);
    ctx.out.verbatim(&text);
}

fn flag_names(flags: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & WRITE != 0 {
        v.push("write");
    }
    if flags & READONLY != 0 {
        v.push("readonly");
    }
    if flags & DENYOOM != 0 {
        v.push("denyoom");
    }
    if flags & ADMIN != 0 {
        v.push("admin");
    }
    if flags & FAST != 0 {
        v.push("fast");
    }
    if flags & NO_AUTH != 0 {
        v.push("no_auth");
    }
    if flags & LOADING_OK != 0 {
        v.push("loading");
    }
    if flags & (NUMKEYS | KEYCOUNT | DEST_NUMKEYS | SCRIPT_KEYS | STREAMS_KEYS | SORT_KEYS) != 0 {
        v.push("movablekeys");
    }
    if flags & NOSCRIPT != 0 {
        v.push("noscript");
    }
    v
}

fn command_entry(ctx: &mut Ctx<'_>, spec: &super::CommandSpec) {
    let out = &mut *ctx.out;
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(spec.arity as i64);
    let flags = flag_names(spec.flags);
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(spec.first_key as i64);
    out.int(spec.last_key as i64);
    out.int(spec.step as i64);
    out.set(0); // ACL categories
    out.set(0); // tips
    out.set(0); // key specs
    out.set(0); // subcommands
}

/// COMMAND, COMMAND COUNT, COMMAND INFO name…, COMMAND DOCS (empty).
fn command(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let commands = &ctx.node.commands;
    if args.len() == 1 {
        ctx.out.array(commands.len());
        for spec in commands.all() {
            command_entry(ctx, spec);
        }
        return;
    }
    if args.is(1, "count") {
        ctx.out.int(commands.len() as i64);
    } else if args.is(1, "info") {
        ctx.out.array(args.len() - 2);
        for name in args.iter().skip(2) {
            match commands.lookup(name) {
                Some(i) => command_entry(ctx, commands.spec(i)),
                None => ctx.out.null_array(),
            }
        }
    } else if args.is(1, "docs") {
        ctx.out.map(0);
    } else if args.is(1, "getkeys") && args.len() >= 3 {
        let Some(i) = commands.lookup(args.get(2)) else {
            ctx.out.error("ERR Invalid command specified");
            return;
        };
        let spec = commands.spec(i);
        let inner = super::Args {
            buf: args.buf,
            ranges: &args.ranges[2..],
        };
        let keys: Vec<usize> = super::key_positions(spec, &inner).collect();
        if keys.is_empty() {
            ctx.out.error("ERR The command has no key arguments");
            return;
        }
        ctx.out.array(keys.len());
        for p in keys {
            ctx.out.bulk(args.get(p + 2));
        }
    } else {
        ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(args.get(1))
        ));
    }
}

/// CONFIG GET pattern… answers the settings tools look for; CONFIG SET is
/// refused: a node's settings come from its command line (the operator's).
fn config(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.is(1, "get") && args.len() >= 3 {
        let cfg = &ctx.node.cfg;
        let settings: Vec<(&str, String)> = vec![
            ("save", String::new()),
            (
                "appendonly",
                if cfg.persistence { "yes" } else { "no" }.into(),
            ),
            ("appendfsync", ctx.node.wal.policy().as_str().into()),
            ("maxmemory", ctx.node.memory.maxmemory.get().to_string()),
            (
                "maxmemory-policy",
                ctx.node.memory.policy.get().as_str().into(),
            ),
            (
                "maxmemory-samples",
                ctx.node.memory.samples.get().to_string(),
            ),
            ("maxclients", cfg.max_clients.to_string()),
            ("port", ctx.node.port.get().to_string()),
            ("databases", "1".into()),
            (
                "proto-max-bulk-len",
                crate::node::resp::MAX_BULK.to_string(),
            ),
            (
                "client-query-buffer-limit",
                cfg.limits.query_buffer.to_string(),
            ),
            (
                "client-output-buffer-limit",
                format!("normal {} 0 0", cfg.limits.output_buffer),
            ),
            ("cluster-enabled", "yes".into()),
            ("dir", cfg.data_dir.display().to_string()),
            (
                "requirepass",
                if cfg.password.is_some() {
                    "********"
                } else {
                    ""
                }
                .into(),
            ),
        ];
        let mut settings = settings;
        let set = ctx.node.config_set.borrow();
        for (name, default) in SETTABLE {
            let canonical = canonical(name);
            let v = set
                .get(canonical)
                .cloned()
                .unwrap_or_else(|| default.to_string());
            settings.push((name, v));
        }
        drop(set);
        let mut hits = Vec::new();
        for pat in args.iter().skip(2) {
            let pat = String::from_utf8_lossy(pat).to_ascii_lowercase();
            for (k, v) in &settings {
                if glob_match(pat.as_bytes(), k.as_bytes()) && !hits.iter().any(|(h, _)| h == k) {
                    hits.push((*k, v.clone()));
                }
            }
        }
        ctx.out.map(hits.len());
        for (k, v) in hits {
            ctx.out.bulk(k.as_bytes());
            ctx.out.bulk(v.as_bytes());
        }
    } else if args.is(1, "set") {
        config_set(ctx, args);
    } else if args.is(1, "resetstat") {
        ctx.out.ok();
    } else {
        ctx.out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args.get(1))
        ));
    }
}

fn dbsize(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.out.int(ctx.store.len() as i64);
}

fn flushall(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 2 || (args.len() == 2 && !args.is(1, "sync") && !args.is(1, "async")) {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    ctx.store.flush();
    ctx.propagate_as(&[b"FLUSHALL"]);
    ctx.out.ok();
}

/// What CONFIG SET accepts, with Redis 7's defaults: parameters
/// applications and tools set, reported back by CONFIG GET.
/// notify-keyspace-events turns keyspace notifications on (`node::notify`);
/// the hash and zset listpack thresholds set when small hashes and sorted
/// sets stay packed (`store::listpack`); the others change nothing (those
/// encodings are the node's own); everything else is the operator's, on the
/// command line.
const SETTABLE: &[(&str, &str)] = &[
    ("notify-keyspace-events", ""),
    ("hash-max-listpack-entries", "128"),
    ("hash-max-listpack-value", "64"),
    ("hash-max-ziplist-entries", "128"),
    ("hash-max-ziplist-value", "64"),
    ("set-max-intset-entries", "512"),
    ("set-max-listpack-entries", "128"),
    ("set-max-listpack-value", "64"),
    ("zset-max-listpack-entries", "128"),
    ("zset-max-listpack-value", "64"),
    ("zset-max-ziplist-entries", "128"),
    ("zset-max-ziplist-value", "64"),
    ("list-max-listpack-size", "-2"),
    ("list-max-ziplist-size", "-2"),
    ("list-compress-depth", "0"),
    ("stream-node-max-bytes", "4096"),
    ("stream-node-max-entries", "100"),
];

/// The name a setting is stored under (Redis' ziplist names are aliases).
fn canonical(name: &str) -> &str {
    match name {
        "hash-max-ziplist-entries" => "hash-max-listpack-entries",
        "hash-max-ziplist-value" => "hash-max-listpack-value",
        "zset-max-ziplist-entries" => "zset-max-listpack-entries",
        "zset-max-ziplist-value" => "zset-max-listpack-value",
        "list-max-ziplist-size" => "list-max-listpack-size",
        other => other,
    }
}

/// notify-keyspace-events as Redis 7.0 normalizes it, or None when a
/// character is not an event class.
pub fn keyspace_events(v: &[u8]) -> Option<String> {
    const CLASSES: &[u8] = b"g$lshzxetdn";
    let mut on = [false; 11];
    let (mut k, mut e, mut m) = (false, false, false);
    for &c in v {
        match c {
            b'A' => on[..10].iter_mut().for_each(|f| *f = true),
            b'K' => k = true,
            b'E' => e = true,
            b'm' => m = true,
            _ => on[CLASSES.iter().position(|&x| x == c)?] = true,
        }
    }
    let mut out = String::new();
    if on[..10].iter().all(|&f| f) {
        out.push('A');
    } else {
        for (i, &c) in CLASSES.iter().enumerate() {
            if on[i] {
                out.push(c as char);
            }
        }
    }
    for (f, c) in [(k, 'K'), (e, 'E'), (m, 'm')] {
        if f {
            out.push(c);
        }
    }
    Some(out)
}

fn config_set(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() < 4 || args.len() % 2 != 0 {
        ctx.out
            .error("ERR wrong number of arguments for 'config|set' command");
        return;
    }
    let failed = |name: &str, why: &str| {
        format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")
    };
    let mut changes: Vec<(String, String)> = Vec::new();
    let mut notify_flags: Option<u32> = None;
    let mut memory: Vec<MemorySetting> = Vec::new();
    for i in (2..args.len()).step_by(2) {
        let name = String::from_utf8_lossy(args.get(i)).to_ascii_lowercase();
        let value = args.get(i + 1);
        if let Some(setting) = memory_setting(&name, value) {
            match setting {
                Ok(m) if memory.iter().any(|x| x.name() == m.name()) => {
                    ctx.out.error(&failed(&name, "duplicate parameter"));
                    return;
                }
                Ok(m) => memory.push(m),
                Err(why) => {
                    ctx.out.error(&failed(&name, why));
                    return;
                }
            }
            continue;
        }
        let Some((name, _)) = SETTABLE.iter().find(|(n, _)| *n == name) else {
            ctx.out.error(&format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
            return;
        };
        let key = canonical(name);
        if changes.iter().any(|(k, _)| k == key) {
            ctx.out.error(&failed(name, "duplicate parameter"));
            return;
        }
        let v = if *name == "notify-keyspace-events" {
            match keyspace_events(value) {
                Some(v) => {
                    // From the value as given: Redis shows `A` without
                    // `n` ("An" reads back "A") but keeps `n` on.
                    notify_flags = Some(crate::node::notify::parse_flags(
                        &String::from_utf8_lossy(value),
                    ));
                    v
                }
                None => {
                    ctx.out.error(&failed(
                        name,
                        "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.",
                    ));
                    return;
                }
            }
        } else {
            let signed = name.starts_with("list-max");
            match super::parse_i64(value) {
                Some(n) if signed || n >= 0 => n.to_string(),
                Some(_) => {
                    ctx.out.error(&failed(
                        name,
                        "argument must be between 0 and 9223372036854775807 inclusive",
                    ));
                    return;
                }
                None => {
                    ctx.out
                        .error(&failed(name, "argument couldn't be parsed into an integer"));
                    return;
                }
            }
        };
        changes.push((key.to_string(), v));
    }
    if let Some(f) = notify_flags {
        ctx.node.notify.set(f);
    }
    for (k, v) in &changes {
        // The packed encodings' thresholds take effect for the next write.
        if let Ok(n) = v.parse::<usize>() {
            crate::node::store::listpack::set_limit(k, n);
        }
    }
    ctx.node.config_set.borrow_mut().extend(changes);
    for m in memory {
        let mem = &ctx.node.memory;
        match m {
            MemorySetting::Max(n) => {
                mem.maxmemory.set(n);
                // The replicas' ring stays within its share of the new limit.
                let configured = ctx.node.repl.cfg.borrow().ring_bytes;
                let cap = crate::node::replication::ring_capacity(configured, n);
                ctx.node.wal.set_ring_capacity(cap);
            }
            MemorySetting::Policy(p) => mem.policy.set(p),
            MemorySetting::Samples(n) => mem.samples.set(n),
        }
    }
    ctx.out.ok();
}

/// The memory settings CONFIG SET changes at run time (the command line
/// sets them at start).
enum MemorySetting {
    Max(u64),
    Policy(crate::node::evict::Policy),
    Samples(usize),
}

impl MemorySetting {
    fn name(&self) -> &'static str {
        match self {
            MemorySetting::Max(_) => "maxmemory",
            MemorySetting::Policy(_) => "maxmemory-policy",
            MemorySetting::Samples(_) => "maxmemory-samples",
        }
    }
}

/// None: not a memory setting; Some(Err(why)): a refused value.
fn memory_setting(name: &str, value: &[u8]) -> Option<Result<MemorySetting, &'static str>> {
    let text = String::from_utf8_lossy(value);
    Some(match name {
        "maxmemory" => parse_bytes(&text)
            .map(MemorySetting::Max)
            .ok_or("argument must be a memory value"),
        "maxmemory-policy" => text
            .parse()
            .map(MemorySetting::Policy)
            .map_err(|_| "argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction"),
        "maxmemory-samples" => match text.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(MemorySetting::Samples(n)),
            _ => Err("argument must be between 1 and 64 inclusive"),
        },
        _ => return None,
    })
}

/// A byte count as Redis writes memory values: `1000`, `100mb`, `2gb`, `64k`.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn time(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk_int(now.as_secs() as i64);
    ctx.out.bulk_int(now.subsec_micros() as i64);
}

fn lastsave(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let t = ctx
        .node
        .last_snapshot
        .borrow()
        .as_ref()
        .map_or(0, |s| s.finished_at_ms / 1000);
    ctx.out.int(t as i64);
}

fn shutdown(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    // Redis closes the connection without a reply on success.
    ctx.conn.close_after_reply = true;
    let _ = ctx.node.shutdown.send(true);
}

/// Redis-style glob matching: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    fn m(p: &[u8], t: &[u8], depth: usize) -> bool {
        if depth > 1000 {
            return false;
        }
        let (mut pi, mut ti) = (0, 0);
        while pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi + 1 < p.len() && p[pi + 1] == b'*' {
                        pi += 1;
                    }
                    if pi + 1 == p.len() {
                        return true;
                    }
                    for start in ti..=t.len() {
                        if m(&p[pi + 1..], &t[start..], depth + 1) {
                            return true;
                        }
                    }
                    return false;
                }
                b'?' => {
                    if ti >= t.len() {
                        return false;
                    }
                    ti += 1;
                    pi += 1;
                }
                b'[' => {
                    if ti >= t.len() {
                        return false;
                    }
                    let mut j = pi + 1;
                    let negate = j < p.len() && p[j] == b'^';
                    if negate {
                        j += 1;
                    }
                    let mut matched = false;
                    while j < p.len() && p[j] != b']' {
                        if p[j] == b'\\' && j + 1 < p.len() {
                            matched |= p[j + 1] == t[ti];
                            j += 2;
                        } else if j + 2 < p.len() && p[j + 1] == b'-' && p[j + 2] != b']' {
                            let (lo, hi) = if p[j] <= p[j + 2] {
                                (p[j], p[j + 2])
                            } else {
                                (p[j + 2], p[j])
                            };
                            matched |= (lo..=hi).contains(&t[ti]);
                            j += 3;
                        } else {
                            matched |= p[j] == t[ti];
                            j += 1;
                        }
                    }
                    if matched == negate {
                        return false;
                    }
                    pi = (j + 1).min(p.len());
                    ti += 1;
                }
                b'\\' if pi + 1 < p.len() => {
                    if ti >= t.len() || t[ti] != p[pi + 1] {
                        return false;
                    }
                    pi += 2;
                    ti += 1;
                }
                c => {
                    if ti >= t.len() || t[ti] != c {
                        return false;
                    }
                    pi += 1;
                    ti += 1;
                }
            }
        }
        ti == t.len()
    }
    m(pattern, text, 0)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"user:*:name", b"user:42:name"));
        assert!(!glob_match(b"user:*:name", b"user:42:age"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(glob_match(b"max*", b"maxmemory"));
    }
}
