//! Command table and dispatch: one file per command family.
//!
//! Every command is a [`CommandSpec`]: its name, arity, flags and where its
//! keys are (as Redis' COMMAND reports them). [`dispatch`] does what is common
//! to all commands — lookup, arity, authentication, slot ownership, `MOVED` /
//! `CROSSSLOT`, `maxmemory` — then calls the handler, then logs what the
//! command changed to the write-ahead log.

use std::ops::Range;

use hashbrown::HashMap;

use super::resp::ReplyBuf;
use super::slots::{key_slot, SlotOwner};
use super::store::Store;
use super::Node;

pub mod acl;
pub mod bitfield;
pub mod bits;
pub mod blocking;
pub mod cluster;
pub mod collections;
pub mod connection;
pub mod dump;
pub mod functions;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod memory;
pub mod multi;
pub mod object;
pub mod pubsub;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod sort;
pub mod stream_groups;
pub mod stream_info;
pub mod stream_log;
pub mod stream_read;
pub mod streams;
pub mod strings;
mod subcommands;
pub mod zset_ops;
pub mod zsets;

/// Command flags (a subset of Redis' command flags).
pub mod flags {
    pub const WRITE: u32 = 1;
    pub const READONLY: u32 = 1 << 1;
    /// Refused with -OOM when used memory exceeds maxmemory.
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const FAST: u32 = 1 << 4;
    /// Allowed before AUTH.
    pub const NO_AUTH: u32 = 1 << 5;
    /// Works on every node whatever its slots (CLUSTER, INFO, …).
    pub const LOADING_OK: u32 = 1 << 6;
    /// Keys follow a key count at argument 1 (LMPOP): COMMAND reports them
    /// as Redis does (first key 0, "movablekeys").
    pub const NUMKEYS: u32 = 1 << 7;
    /// EVAL's form: the key count at argument 2, the keys after it.
    pub const SCRIPT_KEYS: u32 = 1 << 8;
    /// Refused inside a script (MULTI, EVAL, SUBSCRIBE, WAIT, …).
    pub const NOSCRIPT: u32 = 1 << 9;
    /// XREADGROUP's form: the keys are the first half of what follows
    /// `STREAMS`.
    pub const STREAMS_KEYS: u32 = 1 << 10;
    /// SORT's form: the sorted key and the STORE destination, if any.
    pub const SORT_KEYS: u32 = 1 << 11;
    /// ZUNIONSTORE's form: a destination at argument 1, a key count at 2,
    /// the keys after it.
    pub const DEST_NUMKEYS: u32 = 1 << 12;
    /// A key count at argument 1 and the keys after it, with nothing
    /// required after them (ZUNION, SINTERCARD).
    pub const KEYCOUNT: u32 = 1 << 13;
}

pub type Handler = fn(&mut Ctx<'_>, &Args<'_>);

pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis convention: N = exactly N arguments (name included), -N = at least N.
    pub arity: i32,
    pub flags: u32,
    /// Position of the first key (0 = no keys), last (-1 = last argument), step.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub handler: Handler,
}

impl CommandSpec {
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }
}

/// The arguments of one request: byte ranges into the connection's buffer.
pub struct Args<'a> {
    pub buf: &'a [u8],
    pub ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.buf[self.ranges[i].clone()]
    }
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|r| &self.buf[r.clone()])
    }
    /// Argument `i` parsed as an integer, or the error Redis gives.
    pub fn int(&self, i: usize) -> Result<i64, &'static str> {
        parse_i64(self.get(i)).ok_or(ERR_NOT_INTEGER)
    }
    pub fn float(&self, i: usize) -> Result<f64, &'static str> {
        parse_f64(self.get(i)).ok_or(ERR_NOT_FLOAT)
    }
    /// Case-insensitive comparison of argument `i` with an ASCII word.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

pub const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";
pub const ERR_SYNTAX: &str = "ERR syntax error";

pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    // Redis refuses "+1", leading zeros and spaces; so do we.
    if (b[0] == b'0' && b.len() > 1) || (b[0] == b'-' && b.get(1) == Some(&b'0')) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if s.is_empty()
            || s.starts_with(char::is_whitespace)
            || s.ends_with(char::is_whitespace) =>
        {
            return None
        }
        _ => {
            let v: f64 = s.parse().ok()?;
            // Out of range (`1e400`, `1e-400`): refused, as Redis' strtod
            // check (ERANGE with an infinite or zero result) does.
            let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
            if v.is_infinite() || (v == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)))
            {
                return None;
            }
            v
        }
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// Per-connection state the commands see.
pub struct ConnState {
    pub id: u64,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    pub authenticated: bool,
    /// The ACL user (None: `default`, who may run everything).
    pub user: Option<std::rc::Rc<str>>,
    /// READONLY: reads may be served by a replica.
    pub readonly: bool,
    /// ASKING: the next command may touch an importing slot.
    pub asking: bool,
    pub close_after_reply: bool,
    pub addr: String,
    pub resp3: bool,
    /// Commands queued since MULTI (None: not in a transaction).
    pub multi: Option<multi::Queue>,
    /// WATCHed keys and whether one of them changed since.
    pub watch: multi::WatchState,
    /// A blocking command waiting for its keys (BLPOP …).
    pub block: Option<blocking::BlockState>,
    /// Pub/sub subscriptions and the messages waiting for this client.
    pub sub: Option<std::rc::Rc<super::pubsub::Subscriber>>,
    /// Waiting for input with nothing buffered (see `clients::serve_busy`).
    pub idle: std::rc::Rc<std::cell::Cell<bool>>,
}

/// Where a command's effects go: the records it appended to the log.
#[derive(Default)]
pub struct Effects {
    /// Highest LSN this batch's replies depend on; the reply waits for it
    /// (the local log, then the shard's acknowledgement rule).
    pub last_lsn: u64,
    /// Highest LSN of the expiry DELs this batch appended: logged (and so
    /// replicated) but not waited for, since a reply that found a key
    /// expired does not depend on the DEL's durability.
    pub expired_lsn: u64,
    /// TREPLICATE: the connection becomes a replication stream.
    pub replicate: Option<Vec<Vec<u8>>>,
    /// WAIT numreplicas timeout-ms: answered after the batch's writes.
    pub wait: Option<(usize, u64)>,
    /// A write hit a slot whose migration blocks writes: it did not run, and
    /// runs again once the pause ends (then MOVED, or served here).
    pub blocked: bool,
    /// A blocking command found nothing: it did not run, and runs again
    /// when one of its keys is written or its deadline passes
    /// (`ConnState::block`).
    pub block: bool,
}

pub struct Ctx<'a> {
    pub node: &'a Node,
    pub store: &'a mut Store,
    pub out: &'a mut ReplyBuf,
    pub conn: &'a mut ConnState,
    pub effects: &'a mut Effects,
    /// Slot of the command's keys (None for keyless commands).
    pub slot: Option<u16>,
    /// True while replaying the log: nothing is logged again.
    pub replaying: bool,
    /// When replaying: the slot the log recorded for this command. The
    /// primary hashed the keys already (and the record's CRC covers the
    /// slot), so dispatch does not hash them again.
    pub logged_slot: Option<u16>,
    propagated: bool,
    /// The command running, as keyspace notifications name it
    /// (`notify::running_name`).
    pub(crate) running: &'static str,
    /// While EXEC or a script runs: the records its commands would log,
    /// encoded as the parts of one group record (see [`multi::log_group`]).
    pub(crate) group: Option<Vec<Vec<u8>>>,
    /// Keys the running write found absent: they get a `new` notification
    /// once they exist (`notify::new_key`).
    pub(crate) absent: Vec<Vec<u8>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        node: &'a Node,
        store: &'a mut Store,
        out: &'a mut ReplyBuf,
        conn: &'a mut ConnState,
        effects: &'a mut Effects,
    ) -> Self {
        Self {
            node,
            store,
            out,
            conn,
            effects,
            slot: None,
            replaying: false,
            logged_slot: None,
            propagated: false,
            running: "",
            group: None,
            absent: Vec::new(),
        }
    }

    /// The slot of this command's keys; valid in handlers of keyed commands.
    pub fn slot(&self) -> u16 {
        self.slot
            .expect("dispatch computes the slot of every command that declares keys")
    }

    /// Logs the command as received (it changed the data set).
    pub fn propagate(&mut self, args: &Args<'_>) {
        let v: Vec<&[u8]> = args.iter().collect();
        self.propagate_as(&v);
    }

    /// Logs a rewritten form of the command: relative times made absolute,
    /// random choices made explicit, so that replay is deterministic.
    pub fn propagate_as(&mut self, args: &[&[u8]]) {
        let slot = self.slot.unwrap_or(super::wal::GLOBAL_SLOT);
        multi::touch_watched(self.node, slot, args);
        if self.replaying {
            return;
        }
        // Expiry DELs found while this command ran come first in the log.
        self.log_expired();
        if let Some(group) = &mut self.group {
            group.push(multi::encode_part(slot, args));
            self.propagated = true;
            self.notify(slot, args);
            return;
        }
        let lsn = self.node.wal.append(slot, args);
        self.node.migrations.capture(slot, lsn, args);
        self.effects.last_lsn = self.effects.last_lsn.max(lsn);
        self.propagated = true;
        self.notify(slot, args);
    }

    /// Sends the keyspace notifications of a logged record.
    fn notify(&mut self, slot: u16, logged: &[&[u8]]) {
        let flags = self.node.notify.get();
        if flags == 0 || slot == super::wal::GLOBAL_SLOT {
            return;
        }
        // RENAME adds its destination before it notifies the source.
        if matches!(self.running, "rename" | "renamenx") && !self.absent.is_empty() {
            if let Some(dst) = logged.get(2) {
                super::notify::new_key(self, slot, dst);
            }
        }
        for (class, event, at) in super::notify::events(self.running, logged) {
            let Some(key) = logged.get(at) else { continue };
            if !self.absent.is_empty() {
                super::notify::new_key(self, slot, key);
            }
            super::notify::publish(self.node, flags, class, event, key);
            let removes = matches!(event, "del" | "rename_from");
            if !removes && self.store.peek(slot, key).is_none() {
                super::notify::publish(self.node, flags, super::notify::GENERIC, "del", key);
            }
        }
    }

    /// Logs the DELs of keys that expired or were evicted while this
    /// command ran.
    pub(crate) fn log_expired(&mut self) {
        if !self.store.has_expired_pending() {
            return;
        }
        let expired: Vec<_> = self.store.drain_expired().collect();
        let evicted: Vec<_> = self.store.drain_evicted().collect();
        if self.replaying {
            return;
        }
        let flags = self.node.notify.get();
        for (_, key) in &expired {
            super::notify::publish(self.node, flags, super::notify::EXPIRED, "expired", key);
        }
        for (_, key) in &evicted {
            super::notify::publish(self.node, flags, super::notify::EVICTED, "evicted", key);
        }
        for (slot, key) in expired.into_iter().chain(evicted) {
            multi::touch_watched(self.node, slot, &[b"DEL", &key]);
            if let Some(group) = &mut self.group {
                group.push(multi::encode_part(slot, &[b"DEL", &key]));
                continue;
            }
            let lsn = self.node.wal.append(slot, &[b"DEL", &key]);
            self.node.migrations.capture(slot, lsn, &[b"DEL", &key]);
            // Not `last_lsn`: a read must not wait for (or fail on) the
            // acknowledgement rule because it found a key expired. A write
            // in the same command logs after these DELs and covers them.
            self.effects.expired_lsn = self.effects.expired_lsn.max(lsn);
        }
    }
}

pub struct Commands {
    specs: Vec<&'static CommandSpec>,
    /// Names of up to 15 bytes, packed into an integer with their length:
    /// every command has one, and an integer key needs no memcmp (the
    /// replica looks up every record it applies). Hashed by one multiply:
    /// the keys are fixed command names, not attacker-chosen.
    by_packed: HashMap<u128, usize, PackedHash>,
    /// The longer names.
    by_name: HashMap<&'static [u8], usize>,
}

/// Hashes a packed name: fold the halves, multiply, keep the high bits.
#[derive(Default, Clone, Copy)]
struct PackedHash;

impl std::hash::BuildHasher for PackedHash {
    type Hasher = PackedHasher;
    fn build_hasher(&self) -> PackedHasher {
        PackedHasher(0)
    }
}

struct PackedHasher(u64);

impl std::hash::Hasher for PackedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys reach this table; a generic fallback keeps it
        // correct for anything else.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u128(&mut self, v: u128) {
        let folded = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        let h = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The table indexes by the low bits: mix the high ones in.
        self.0 = h ^ (h >> 29);
    }
}

/// `name` lowercased and packed with its length (None: longer than 15).
fn pack_name(name: &[u8]) -> Option<u128> {
    if name.len() > 15 {
        return None;
    }
    // Built in a register: bytes stored one by one into a stack array and
    // read back as one integer cannot be forwarded from the store buffer,
    // and the read then waits for every older store to reach the cache —
    // behind a replica's cold hash-table writes that was ~75 ns a record.
    let mut packed = (name.len() as u128) << 120;
    for (i, &c) in name.iter().enumerate() {
        packed |= (c.to_ascii_lowercase() as u128) << (8 * i);
    }
    Some(packed)
}

impl Commands {
    pub fn new() -> Self {
        let families: [&'static [CommandSpec]; 30] = [
            connection::COMMANDS,
            memory::COMMANDS,
            object::COMMANDS,
            acl::COMMANDS,
            server::COMMANDS,
            strings::COMMANDS,
            bits::COMMANDS,
            bitfield::COMMANDS,
            keys::COMMANDS,
            hashes::COMMANDS,
            lists::COMMANDS,
            sets::COMMANDS,
            zsets::COMMANDS,
            zset_ops::COMMANDS,
            collections::COMMANDS,
            streams::COMMANDS,
            stream_groups::COMMANDS,
            stream_info::COMMANDS,
            stream_log::COMMANDS,
            stream_read::COMMANDS,
            sort::COMMANDS,
            dump::COMMANDS,
            cluster::COMMANDS,
            replication::COMMANDS,
            multi::COMMANDS,
            scripting::COMMANDS,
            functions::COMMANDS,
            blocking::COMMANDS,
            pubsub::COMMANDS,
            super::migration::target::COMMANDS,
        ];
        let specs: Vec<&'static CommandSpec> = families.iter().flat_map(|f| f.iter()).collect();
        let (mut by_packed, mut by_name) = (HashMap::with_hasher(PackedHash), HashMap::new());
        for (i, s) in specs.iter().enumerate() {
            match pack_name(s.name.as_bytes()) {
                Some(k) => by_packed.insert(k, i),
                None => by_name.insert(s.name.as_bytes(), i),
            };
        }
        Self {
            specs,
            by_packed,
            by_name,
        }
    }

    /// Index of a command by name, case-insensitively, without allocating.
    pub fn lookup(&self, name: &[u8]) -> Option<usize> {
        if let Some(k) = pack_name(name) {
            return self.by_packed.get(&k).copied();
        }
        let mut lower = [0u8; 32];
        if name.len() > lower.len() {
            return None;
        }
        for (d, s) in lower.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        self.by_name.get(&lower[..name.len()]).copied()
    }

    pub fn spec(&self, i: usize) -> &'static CommandSpec {
        self.specs[i]
    }
    pub fn all(&self) -> &[&'static CommandSpec] {
        &self.specs
    }
    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

impl Default for Commands {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a command's keys are: a first position apart (ZUNIONSTORE's
/// destination), then evenly spaced ones.
pub type KeyPositions =
    std::iter::Chain<std::option::IntoIter<usize>, std::iter::StepBy<Range<usize>>>;

/// Positions of the keys of a command, as its spec declares them (or, for
/// [`flags::NUMKEYS`], [`flags::KEYCOUNT`] and [`flags::DEST_NUMKEYS`], as
/// its key count says:
/// none when the count is not valid, and the handler answers the error).
pub fn key_positions(spec: &CommandSpec, args: &Args<'_>) -> KeyPositions {
    key_positions_of(spec, args.len(), |i| (i < args.len()).then(|| args.get(i)))
}

/// [`key_positions`] from the argument count and a getter of arguments.
pub fn key_positions_of<'a>(
    spec: &CommandSpec,
    argc: usize,
    arg: impl Fn(usize) -> Option<&'a [u8]>,
) -> KeyPositions {
    if spec.flags & flags::DEST_NUMKEYS != 0 {
        // Redis' rule: 1 <= count <= the arguments after it.
        return match arg(2)
            .and_then(parse_i64)
            .filter(|&n| n >= 1 && (n as u64) <= (argc as u64).saturating_sub(3))
        {
            Some(n) => Some(1).into_iter().chain((3..3 + n as usize).step_by(1)),
            None => None.into_iter().chain((0..0).step_by(1)),
        };
    }
    None.into_iter()
        .chain(spread_key_positions(spec, argc, arg))
}

/// The evenly spaced keys of [`key_positions_of`].
fn spread_key_positions<'a>(
    spec: &CommandSpec,
    argc: usize,
    arg: impl Fn(usize) -> Option<&'a [u8]>,
) -> std::iter::StepBy<Range<usize>> {
    if spec.flags & flags::SCRIPT_KEYS != 0 {
        let n = arg(2)
            .and_then(parse_i64)
            .filter(|&n| n >= 0 && (n as u64) <= (argc as u64).saturating_sub(3))
            .unwrap_or(0) as usize;
        return (3..3 + n).step_by(1);
    }
    if spec.flags & flags::SORT_KEYS != 0 {
        let (last, step) = sort::sort_keys(argc, &arg);
        return (1..last + 1).step_by(step);
    }
    if spec.flags & flags::STREAMS_KEYS != 0 {
        return match stream_read::streams_keys(argc, &arg) {
            Some((at, n)) => (at..at + n).step_by(1),
            None => (0..0).step_by(1),
        };
    }
    if spec.flags & (flags::NUMKEYS | flags::KEYCOUNT) != 0 {
        // LMPOP's form leaves room for the direction after the keys, so a
        // count that reaches it gets the syntax error standalone Redis
        // gives; without such an argument, Redis' rule: 1 <= count <= the
        // arguments after it.
        let room = u64::from(spec.flags & flags::NUMKEYS != 0);
        let n = arg(1)
            .and_then(parse_i64)
            .filter(|&n| n >= 1 && (n as u64) + room <= (argc as u64).saturating_sub(2))
            .unwrap_or(0) as usize;
        return (2..2 + n).step_by(1);
    }
    let first = spec.first_key.max(0) as usize;
    let last = if spec.last_key < 0 {
        argc as i64 + spec.last_key as i64
    } else {
        spec.last_key as i64
    };
    let step = spec.step.max(1) as usize;
    let range = if first == 0 || last < first as i64 {
        0..0
    } else {
        first..(last as usize + 1).min(argc)
    };
    range.step_by(step)
}

fn unknown_command(out: &mut ReplyBuf, args: &Args<'_>) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(args.get(0))
    );
    for a in args.iter().skip(1).take(10) {
        msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
    }
    out.error(&msg);
}

/// Why the connection's ACL user may not run this command (Redis' NOPERM).
pub(crate) fn acl_refusal(ctx: &Ctx<'_>, spec: &CommandSpec, args: &Args<'_>) -> Option<String> {
    let name = ctx.conn.user.as_deref()?;
    let acl = ctx.node.acl.borrow();
    let Some(user) = acl.get(name).filter(|u| u.enabled) else {
        return Some(format!(
            "NOPERM User {name} no longer exists or is disabled"
        ));
    };
    if !user.may_run(spec) {
        return Some(format!(
            "NOPERM User {name} has no permissions to run the '{}' command",
            spec.name
        ));
    }
    if key_positions(spec, args).any(|pos| !user.key_ok(args.get(pos))) {
        return Some("NOPERM No permissions to access a key".into());
    }
    None
}

/// Runs one command. Returns the index of the command that ran, if any.
pub fn dispatch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> Option<usize> {
    if ctx.conn.multi.is_some() && !ctx.replaying {
        return multi::queue(ctx, args);
    }
    let idx = match prepare(ctx, args, false) {
        Ok(idx) => idx,
        Err(ran) => return ran,
    };
    run(ctx, args, idx);
    Some(idx)
}

/// Calls the handler of a prepared command.
pub(crate) fn run(ctx: &mut Ctx<'_>, args: &Args<'_>, idx: usize) {
    ctx.propagated = false;
    let spec = ctx.node.commands.spec(idx);
    ctx.running = if ctx.node.notify.get() != 0 {
        super::notify::running_name(spec.name, args)
    } else {
        spec.name
    };
    super::notify::before_command(ctx, spec, args);
    (spec.handler)(ctx, args);
    ctx.log_expired();
    super::notify::after_command(ctx);
}

/// What every command passes before its handler: lookup, arity,
/// authentication, slot (`CROSSSLOT`, `MOVED`, a migration's write pause)
/// and the write refusals. `Ok`: the command may run (`ctx.slot` is set);
/// `Err`: the error reply is written (with the index, when it was known).
/// `queueing` (MULTI): a migration's write pause is checked at EXEC.
pub(crate) fn prepare(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    queueing: bool,
) -> Result<usize, Option<usize>> {
    let node = ctx.node;
    let Some(idx) = node.commands.lookup(args.get(0)) else {
        unknown_command(ctx.out, args);
        return Err(None);
    };
    let spec = node.commands.spec(idx);
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
        return Err(Some(idx));
    }
    if let Some(e) = subcommands::refusal(spec.name, args) {
        ctx.out.error(&e);
        return Err(Some(idx));
    }
    if !ctx.conn.authenticated && spec.flags & flags::NO_AUTH == 0 {
        ctx.out.error("NOAUTH Authentication required.");
        return Err(Some(idx));
    }
    if let Some(err) = pubsub::context_refusal(ctx, spec.name) {
        ctx.out.error(&err);
        return Err(Some(idx));
    }
    if ctx.conn.user.is_some() {
        if let Some(e) = acl_refusal(ctx, spec, args) {
            ctx.out.error(&e);
            return Err(Some(idx));
        }
    }

    // All keys must share one slot, and this node must serve it.
    ctx.slot = None;
    let logged = ctx.logged_slot.take();
    let mut slot = logged.filter(|_| ctx.replaying && spec.first_key > 0);
    let hash_keys = slot.is_none();
    for pos in key_positions(spec, args).filter(|_| hash_keys) {
        let s = key_slot(args.get(pos));
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => {
                ctx.out
                    .error("CROSSSLOT Keys in request don't hash to the same slot");
                return Err(Some(idx));
            }
            _ => {}
        }
    }
    if let Some(s) = slot {
        if !ctx.replaying {
            if let Some(err) = node.route(s, spec.is_write(), ctx.conn) {
                ctx.out.error(&err);
                return Err(Some(idx));
            }
            if !queueing && spec.is_write() && node.migrations.write_blocked(s) {
                ctx.effects.blocked = true;
                return Err(Some(idx));
            }
        }
        ctx.slot = Some(s);
    }
    ctx.conn.asking = false;

    // As in Redis, a script (or EXEC) that has already written is not
    // refused halfway for the node's state (lease, memory): it would leave
    // part of its effects applied and answer an error that says "refused".
    let dirty = ctx.group.as_ref().is_some_and(|g| !g.is_empty());
    if spec.is_write() && !ctx.replaying && !dirty {
        let refusal = node.write_refusal(spec, ctx.store);
        // Keys evicted to make room are logged (and replicated) as DELs
        // whether the command then runs or not.
        ctx.log_expired();
        if let Some(err) = refusal {
            ctx.out.error(&err);
            return Err(Some(idx));
        }
    }
    Ok(idx)
}

/// Helper for handlers: reply with an error and return from the handler.
#[macro_export]
macro_rules! try_reply {
    ($ctx:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(msg) => {
                $ctx.out.error(msg);
                return;
            }
        }
    };
}

/// Is the command being replayed at a slot this node should not apply?
pub fn owner_is_local(node: &Node, slot: u16) -> bool {
    matches!(node.slot_map.borrow().owner(slot), SlotOwner::Local)
}

#[cfg(test)]
mod tests {
    use super::Commands;

    #[test]
    fn lookup_is_case_insensitive_and_exact_for_short_and_long_names() {
        let c = Commands::new();
        let set = c.lookup(b"set").expect("SET is a command");
        assert_eq!(c.spec(set).name, "set");
        assert_eq!(c.lookup(b"SET"), Some(set));
        assert_eq!(c.lookup(b"sEt"), Some(set));
        // The packed key carries the length: padding is not a match.
        assert_eq!(c.lookup(b"set\0"), None);
        assert_eq!(c.lookup(b"se"), None);
        assert_eq!(c.lookup(b""), None);
        // Longer than the packed form (16 bytes).
        let long = c.lookup(b"ZREVRANGEBYSCORE").expect("a 16-byte name");
        assert_eq!(c.spec(long).name, "zrevrangebyscore");
        assert_eq!(c.lookup(b"zrevrangebyscorex"), None);
        assert_eq!(c.lookup(&[b'a'; 40]), None);
        for (i, s) in c.all().iter().enumerate() {
            assert_eq!(c.lookup(s.name.as_bytes()), Some(i), "{}", s.name);
            let upper = s.name.to_ascii_uppercase();
            assert_eq!(c.lookup(upper.as_bytes()), Some(i), "{}", s.name);
        }
    }
}
