//! Scripts: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, SCRIPT LOAD|EXISTS|FLUSH|KILL.
//!
//! A script runs in the node's Lua VM (`node::lua`) on the event loop, so
//! nothing else runs meanwhile: it is atomic as in Redis. Its writes are
//! collected like a transaction's and logged as one group record (its
//! effects, never the script), so replicas and recovery never re-run code
//! and never hold half of a script's writes. Every key a script touches must
//! be in one slot: its declared keys' (CROSSSLOT otherwise, checked by
//! dispatch) or, without declared keys, the first key it touches.
//!
//! What is loaded (SCRIPT LOAD, EVAL) is part of the data set: a primary
//! logs each new script and SCRIPT FLUSH (`node::script_registry`), so
//! EVALSHA finds the script on a promoted replica too.

use std::cell::Cell;
use std::ffi::c_void;

use mlua::Value;

use super::flags::*;
use super::multi::{log_group, run_atomic};
use super::{key_positions, Args, CommandSpec, Ctx};
use crate::node::lua::{self, Scripts};
use crate::node::resp::{Frame, ReplyBuf};
use crate::node::script_registry::Change;
use crate::node::slots::key_slot;
use crate::node::wal::MARKER_SLOT;
use crate::node::{Node, Role};
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "eval",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: eval,
    },
    CommandSpec {
        name: "evalsha",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: evalsha,
    },
    CommandSpec {
        name: "eval_ro",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT | READONLY,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: eval_ro,
    },
    CommandSpec {
        name: "evalsha_ro",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT | READONLY,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: evalsha_ro,
    },
    CommandSpec {
        name: "script",
        arity: -2,
        flags: NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: script,
    },
];

fn eval(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    eval_generic(ctx, args, false, false);
}
fn evalsha(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    eval_generic(ctx, args, true, false);
}
fn eval_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    eval_generic(ctx, args, false, true);
}
fn evalsha_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    eval_generic(ctx, args, true, true);
}

/// The node's VM, created at the first script.
pub(crate) fn with_scripts<R>(
    node: &Node,
    f: impl FnOnce(&mut Scripts) -> Result<R, String>,
) -> Result<R, String> {
    let mut slot = node.scripts.borrow_mut();
    if slot.is_none() {
        let vm = Scripts::new(node.script_running.clone(), node.cfg.limits.max_reply)
            .and_then(|mut vm| {
                install(&mut vm)?;
                Ok(vm)
            })
            .map_err(|e| format!("ERR {e}"))?;
        let _ = node.script_running.clients.set(node.clients.clone());
        *slot = Some(vm);
    }
    match slot.as_mut() {
        Some(s) => f(s),
        None => Err("ERR the script engine is not available".into()),
    }
}

/// Whether this command may log a registry change: a primary's, not
/// replayed. A replica keeps what its clients load to itself.
pub(crate) fn can_log(ctx: &Ctx<'_>) -> bool {
    !ctx.replaying && ctx.node.role.get() == Role::Primary
}

/// Appends a registry record; the reply waits for it under the shard's
/// acknowledgement rule, so a script a client was told is loaded survives
/// a failover.
pub(crate) fn log_change(ctx: &mut Ctx<'_>, change: Change<'_>) {
    let lsn = ctx.node.wal.append(MARKER_SLOT, &change.args());
    ctx.effects.last_lsn = ctx.effects.last_lsn.max(lsn);
}

/// Records a script in the registry, and in the log when this node is a
/// primary and the log does not hold it yet.
fn register(ctx: &mut Ctx<'_>, sha: &str, body: &[u8]) {
    let log = can_log(ctx);
    let needed = match ctx.store.scripts.script(sha) {
        None => true,
        Some(e) => log && !e.logged,
    };
    if !needed {
        return;
    }
    ctx.store.scripts.add_script(sha.to_string(), body, log);
    if log {
        log_change(ctx, Change::LoadScript(body));
    }
}

/// The compiled function of a registered script (NOSCRIPT otherwise).
fn by_sha(ctx: &mut Ctx<'_>, sha: &[u8]) -> Result<(String, mlua::Function), String> {
    let sha = match std::str::from_utf8(sha) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => s.to_owned(),
        _ => String::from_utf8_lossy(sha).to_ascii_lowercase(),
    };
    let (node, log) = (ctx.node, can_log(ctx));
    let Some(entry) = ctx.store.scripts.script(&sha) else {
        return Err("NOSCRIPT No matching script. Please use EVAL.".into());
    };
    let f = with_scripts(node, |s| s.compile(&sha, &entry.body))?;
    // Loaded while this node could not log it (as a replica): log it now.
    let relog = (log && !entry.logged).then(|| entry.body.clone());
    if let Some(body) = relog {
        register(ctx, &sha, &body);
    }
    Ok((sha, f))
}

/// Compiles a script's body and registers it (EVAL, SCRIPT LOAD).
fn by_body(ctx: &mut Ctx<'_>, body: &[u8]) -> Result<(String, mlua::Function), String> {
    let (sha, f) = with_scripts(ctx.node, |s| s.load(body))?;
    register(ctx, &sha, body);
    Ok((sha, f))
}

fn eval_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, by_sha: bool, readonly: bool) {
    let numkeys = try_reply!(ctx, args.int(2));
    if numkeys < 0 {
        ctx.out.error("ERR Number of keys can't be negative");
        return;
    }
    if numkeys as u64 > (args.len() - 3) as u64 {
        ctx.out
            .error("ERR Number of keys can't be greater than number of args");
        return;
    }
    let body = args.get(1);
    let loaded = if by_sha {
        self::by_sha(ctx, body)
    } else {
        by_body(ctx, body)
    };
    let (sha, func) = match loaded {
        Ok(found) => found,
        Err(msg) => {
            ctx.out.error(&msg);
            return;
        }
    };
    let n = numkeys as usize;
    let keys: Vec<&[u8]> = (3..3 + n).map(|i| args.get(i)).collect();
    let argv: Vec<&[u8]> = (3 + n..args.len()).map(|i| args.get(i)).collect();
    let run = Run {
        func: &func,
        function: false,
        keys: &keys,
        argv: &argv,
        readonly,
    };
    execute(ctx, &sha, run);
}

/// What runs: a script (KEYS and ARGV as globals) or a library's function
/// (called with them as its two arguments).
pub(crate) struct Run<'r> {
    pub func: &'r mlua::Function,
    pub function: bool,
    pub keys: &'r [&'r [u8]],
    pub argv: &'r [&'r [u8]],
    pub readonly: bool,
}

/// Runs a script or function atomically; its writes become one group
/// record. `name` (SHA1 or function name) goes in its error replies.
pub(crate) fn execute(ctx: &mut Ctx<'_>, name: &str, r: Run<'_>) {
    if let Some(s) = ctx.slot {
        if ctx.node.migrations.write_blocked(s) && !r.readonly {
            // The whole script runs once the migration's pause ends.
            ctx.effects.blocked = true;
            return;
        }
    }
    let node = ctx.node;
    let running = node.script_running.clone();
    running.since.set(Some(std::time::Instant::now()));
    running.kill.set(false);
    running.wrote.set(false);
    running.function.set(r.function);
    running.caller.set(ctx.conn.id);
    *running.sockets.borrow_mut() = None;
    let outer = ctx.group.is_some();
    if !outer {
        ctx.group = Some(Vec::new());
    }
    let slot = Cell::new(ctx.slot);
    let scripts = node.scripts.borrow();
    let res = match scripts.as_ref() {
        Some(s) => {
            let res = run(ctx, s, &r, &slot);
            s.settle();
            res
        }
        None => Err(ScriptError::from(
            "ERR the script engine is not available".to_string(),
        )),
    };
    drop(scripts);
    running.since.set(None);
    running.kill.set(false);
    *running.sockets.borrow_mut() = None;
    if !outer {
        let parts = ctx.group.take().unwrap_or_default();
        log_group(ctx, slot.get(), parts);
    }
    if let Err(ScriptError { msg, line }) = res {
        let source = if r.function {
            "@user_function"
        } else {
            "@user_script"
        };
        ctx.out
            .error(&format!("{msg} script: {name}, on {source}:{line}."));
    }
}

/// A script's error: the message and the script line it came from. Also
/// what `redis.call` raises for a failed command.
#[derive(Debug)]
struct ScriptError {
    msg: String,
    line: i64,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ScriptError {}

impl From<String> for ScriptError {
    fn from(msg: String) -> Self {
        Self { msg, line: 0 }
    }
}

/// The error `redis.call` raised, inside an engine error.
fn command_error(e: &mlua::Error) -> Option<&ScriptError> {
    match e {
        mlua::Error::ExternalError(x) => x.downcast_ref::<ScriptError>(),
        mlua::Error::CallbackError { cause, .. } => command_error(cause),
        _ => None,
    }
}

/// The line of the innermost script frame on the Lua stack.
fn script_line(lua: &mlua::Lua) -> i64 {
    for level in 0..64 {
        let Some(d) = lua.inspect_stack(level) else {
            break;
        };
        if lua::is_user_source(d.source().source.as_deref()) {
            return d.curr_line() as i64;
        }
    }
    0
}

/// The message of an error a script raised: a `{err=…}` table's text, a
/// string with `ERR ` before it, an engine error's innermost cause.
fn error_message(e: &Value) -> String {
    match e {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => s.to_string_lossy(),
            _ => "ERR unknown error".into(),
        },
        Value::String(s) => format!("ERR {}", s.to_string_lossy()),
        Value::Nil => "ERR nil".into(),
        Value::Error(err) => {
            let mut cause: &mlua::Error = err;
            while let mlua::Error::CallbackError { cause: c, .. } = cause {
                cause = c;
            }
            if let Some(e) = command_error(cause) {
                return e.msg.clone();
            }
            match cause {
                mlua::Error::RuntimeError(m) if m.starts_with("ERR ") => m.clone(),
                mlua::Error::RuntimeError(m) => format!("ERR {m}"),
                mlua::Error::MemoryError(_) => "ERR script out of memory".into(),
                other => format!("ERR {other}"),
            }
        }
        Value::Integer(i) => format!("ERR {i}"),
        Value::Number(n) => format!("ERR {}", lua::fmt_number(*n)),
        Value::Boolean(b) => format!("ERR {b}"),
        other => format!("ERR {}", other.type_name()),
    }
}

/// What `redis.call` and `redis.pcall` reach while a script runs: the
/// running command's context, whether the script is read-only, its slot.
struct Active<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    readonly: bool,
    slot: &'c Cell<Option<u16>>,
    /// The buffer commands write their replies to (kept in the VM).
    replies: &'c Cell<Vec<u8>>,
}

/// Clears the VM's pointer to the running command's context when the run
/// ends, however it ends.
struct Activation<'s>(&'s Cell<*mut c_void>);

impl Drop for Activation<'_> {
    fn drop(&mut self) {
        self.0.set(std::ptr::null_mut());
    }
}

/// Makes, once per VM, `redis.call`, `redis.pcall` and the error handler
/// scripts run under. The commands reach the running command's context
/// through `Scripts::active`, set by [`run`] for the script's duration.
fn install(vm: &mut Scripts) -> mlua::Result<()> {
    let lua = &vm.lua;
    // `redis.call` raises a failed command's error (with the script's
    // line: a Rust function keeps its caller's frame even when called in
    // tail position); `redis.pcall` returns it as `{err=…}`.
    for (name, raise) in [("call", true), ("pcall", false)] {
        let active = vm.active.clone();
        let f = lua.create_function(move |lua, mv: mlua::MultiValue| {
            // Taken for the command's duration: nothing it runs can reach
            // the context a second time.
            let p = active.replace(std::ptr::null_mut());
            if p.is_null() {
                return Err(mlua::Error::runtime(
                    "redis.call and redis.pcall run only inside a script",
                ));
            }
            // SAFETY: `run` stores a pointer to its `Active` only while it
            // calls the script and keeps it alive and unused meanwhile (an
            // `Activation` clears it before `run` goes on); taking it out
            // of the cell makes this the only reference.
            let a = unsafe { &mut *p.cast::<Active<'_, '_>>() };
            let res = call_command(lua, a, mv);
            active.set(p);
            let (v, failed) = res?;
            if failed && raise {
                let msg = match &v {
                    Value::Table(t) => t.raw_get::<String>("err")?,
                    _ => "ERR".into(),
                };
                let line = script_line(lua);
                return Err(mlua::Error::external(ScriptError { msg, line }));
            }
            Ok(v)
        })?;
        vm.redis.raw_set(name, f)?;
    }
    vm.handler = Some(lua.create_function(|lua, e: Value| {
        let t = lua.create_table()?;
        t.raw_set("err", error_message(&e))?;
        let line = match &e {
            Value::Error(err) => command_error(err).map(|c| c.line),
            _ => None,
        };
        t.raw_set("line", line.unwrap_or_else(|| script_line(lua)))?;
        Ok(t)
    })?);
    Ok(())
}

fn run(
    ctx: &mut Ctx<'_>,
    scripts: &Scripts,
    r: &Run<'_>,
    slot: &Cell<Option<u16>>,
) -> Result<(), ScriptError> {
    let lua = &scripts.lua;
    let engine = |e: mlua::Error| ScriptError::from(format!("ERR {e}"));
    let Some(handler) = &scripts.handler else {
        return Err("ERR the script engine is not available".to_string().into());
    };
    let made = scripts
        .make_args(r.keys, r.argv, !r.function)
        .map_err(engine)?;
    let func = match made {
        Some((keys, argv)) => scripts.bind_args(r.func, keys, argv).map_err(engine)?,
        None => r.func.clone(),
    };
    let res: mlua::Result<mlua::MultiValue> = {
        let mut active = Active {
            ctx: &mut *ctx,
            readonly: r.readonly,
            slot,
            replies: &scripts.replies,
        };
        let _activation = Activation(&scripts.active);
        scripts
            .active
            .set((&mut active as *mut Active<'_, '_>).cast());
        scripts.xpcall.call((func, handler))
    };
    let mut res = res.map_err(engine)?;
    let _lifted = lua::unbounded(lua);
    let ok = matches!(res.pop_front(), Some(Value::Boolean(true)));
    let value = res.pop_front().unwrap_or(Value::Nil);
    if !ok {
        let (msg, line) = match &value {
            Value::Table(t) => (
                t.raw_get::<String>("err").unwrap_or_else(|_| "ERR".into()),
                t.raw_get::<i64>("line").unwrap_or(0),
            ),
            other => (error_message(other), 0),
        };
        return Err(ScriptError { msg, line });
    }
    lua::lua_to_reply(ctx.out, &value, 0);
    Ok(())
}

/// `redis.call`/`redis.pcall`: runs one command for the script; the reply
/// as Lua sees it, and whether it is an error.
fn call_command(
    lua: &mlua::Lua,
    a: &mut Active<'_, '_>,
    mv: mlua::MultiValue,
) -> mlua::Result<(Value, bool)> {
    let (ctx, readonly, slot) = (&mut *a.ctx, a.readonly, a.slot);
    let err = |msg: &str| -> mlua::Result<(Value, bool)> {
        let t = lua.create_table()?;
        t.raw_set("err", msg)?;
        Ok((Value::Table(t), true))
    };
    if mv.is_empty() {
        return err("ERR Please specify at least one argument for this redis lib call");
    }
    let (mut buf, mut ranges) = (Vec::new(), Vec::with_capacity(mv.len()));
    for v in mv.iter() {
        let start = buf.len();
        if !lua::push_arg(&mut buf, v) {
            return err("ERR Lua redis lib command arguments must be strings or integers");
        }
        ranges.push(start..buf.len());
    }
    let args = Args {
        buf: &buf,
        ranges: &ranges,
    };
    let node = ctx.node;
    let Some(idx) = node.commands.lookup(args.get(0)) else {
        return err("ERR Unknown Redis command called from script");
    };
    let spec = node.commands.spec(idx);
    if spec.flags & NOSCRIPT != 0 {
        return err("ERR This Redis command is not allowed from script");
    }
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return err("ERR Wrong number of args calling Redis command from script");
    }
    if readonly && spec.is_write() {
        return err("ERR Write commands are not allowed from read-only scripts.");
    }
    for p in key_positions(spec, &args) {
        let s = key_slot(args.get(p));
        match slot.get() {
            Some(prev) if prev != s => {
                return err("ERR Script attempted to access keys that do not hash to the same slot")
            }
            _ => slot.set(Some(s)),
        }
    }
    if let (true, Some(s)) = (spec.is_write(), slot.get()) {
        if node.migrations.write_blocked(s) {
            return err("TRYAGAIN the slot is paused for a migration; retry the script");
        }
    }
    let mut buf = a.replies.take();
    buf.clear();
    let mut scratch = ReplyBuf {
        buf,
        resp3: false,
        errors: 0,
        limit: node.cfg.limits.max_reply,
        overflowed: false,
    };
    std::mem::swap(ctx.out, &mut scratch);
    let parts_before = ctx.group.as_ref().map_or(0, Vec::len);
    run_atomic(ctx, &args);
    if ctx.group.as_ref().map_or(0, Vec::len) > parts_before {
        node.script_running.wrote.set(true);
    }
    std::mem::swap(ctx.out, &mut scratch);
    let parsed = if scratch.overflowed {
        Err(format!(
            "ERR reply exceeds the limit of {} bytes (max-reply-bytes)",
            node.cfg.limits.max_reply
        ))
    } else {
        match Frame::parse(&scratch.buf) {
            Ok(Some((f, _))) => Ok(f),
            _ => Err("ERR the command gave no reply".to_string()),
        }
    };
    // The buffer serves the next call, unless a large reply grew it.
    if scratch.buf.capacity() <= REPLY_BUF_KEPT {
        a.replies.set(scratch.buf);
    }
    match parsed {
        Ok(f) => {
            // Bounded by `max-reply-bytes` (checked above).
            let _lifted = lua::unbounded(lua);
            lua::reply_to_lua(lua, &f)
        }
        Err(msg) => err(&msg),
    }
}

/// The largest reply buffer `redis.call` keeps for its next call.
const REPLY_BUF_KEPT: usize = 64 * 1024;

fn script(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = String::from_utf8_lossy(args.get(1)).to_ascii_uppercase();
    match (sub.as_str(), args.len()) {
        ("LOAD", 3) => {
            let loaded = by_body(ctx, args.get(2)).map(|(sha, _)| sha);
            let sha = try_reply!(ctx, loaded.as_ref().map_err(String::as_str));
            ctx.out.bulk(sha.as_bytes());
        }
        ("EXISTS", n) if n >= 3 => {
            let found: Vec<bool> = args
                .iter()
                .skip(2)
                .map(|sha| {
                    let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                    ctx.store.scripts.script(&sha).is_some()
                })
                .collect();
            ctx.out.array(found.len());
            for f in found {
                ctx.out.bool_int(f);
            }
        }
        ("FLUSH", 2) => {
            flush(ctx);
        }
        ("FLUSH", 3) if args.is(2, "sync") || args.is(2, "async") => {
            flush(ctx);
        }
        ("FLUSH", _) => ctx
            .out
            .error("ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
        ("KILL", 2) => {
            // A script runs on the loop: while one runs past the time limit
            // SCRIPT KILL is answered by the busy handler
            // (`clients::serve_busy`), never by this command.
            ctx.out.error("NOTBUSY No scripts in execution right now.");
        }
        _ => ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try SCRIPT HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}

fn flush(ctx: &mut Ctx<'_>) {
    ctx.store.scripts.flush_scripts();
    if let Some(s) = ctx.node.scripts.borrow_mut().as_mut() {
        s.flush();
    }
    if can_log(ctx) {
        log_change(ctx, Change::FlushScripts);
    }
    ctx.out.ok();
}
