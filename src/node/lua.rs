//! The Lua 5.1 interpreter behind EVAL: one VM per node (as Redis has), its
//! sandbox, the script cache, and the conversions between Lua values and
//! RESP that Redis defines.
//!
//! The sandbox loads only the base, table, string and math libraries, and
//! removes from the base library what reaches the file system or the
//! process (`loadfile`, `dofile`, `print`). Globals are read-only as in
//! Redis 7: a script that assigns one gets "Attempt to modify a readonly
//! table", one that reads an undefined one gets "Script attempted to access
//! nonexistent global variable".

use std::cell::{Cell, OnceCell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use hashbrown::HashMap;
use std::ffi::c_int;

use mlua::{ffi, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use sha1::{Digest, Sha1};

use super::clients::Clients;
use super::resp::{Frame, ReplyBuf};

#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    #[error("the Lua interpreter could not be set up: {0}")]
    Setup(#[from] mlua::Error),
}

/// Redis' `lua-time-limit`: after this a running script makes the node
/// answer other clients `-BUSY`, and SCRIPT KILL may stop it.
pub const TIME_LIMIT_MS: u64 = 5_000;

/// A client's socket and whether its connection waits with nothing
/// buffered (`clients::serve_busy` answers only those).
pub type IdleSocket = (RawFd, Rc<Cell<bool>>);

/// The state of the script running now, shared with the interpreter's hook.
#[derive(Default)]
pub struct Running {
    /// When the running script started (None: none runs).
    pub since: Cell<Option<Instant>>,
    /// SCRIPT KILL asked for it to stop.
    pub kill: Cell<bool>,
    /// It wrote: SCRIPT KILL can no longer stop it (UNKILLABLE).
    pub wrote: Cell<bool>,
    /// It is a function (FCALL): FUNCTION KILL, not SCRIPT KILL, stops it.
    pub function: Cell<bool>,
    /// The connection whose command runs the script.
    pub caller: Cell<u64>,
    /// The node's clients, whose requests are answered while a script is
    /// busy (set when the VM is created).
    pub(crate) clients: OnceCell<Rc<RefCell<Clients>>>,
    /// The other clients' idle sockets, gathered when the running script
    /// first turns busy (None until then: a script that ends in time pays
    /// nothing per connection).
    pub sockets: RefCell<Option<Vec<IdleSocket>>>,
    /// When the busy handler last ran.
    last_busy: Cell<Option<Instant>>,
    /// Fuzzing only (`node::fuzzing::bound_scripts`): instruction-hook
    /// ticks Lua code may still run before it fails. None, the node's
    /// setting, bounds nothing.
    pub(super) budget: Cell<Option<u64>>,
    /// A FUNCTION LOAD's library code runs until then (Redis' 500 ms).
    pub(super) load_deadline: Cell<Option<Instant>>,
    /// The code is being stopped (killed, timed out, out of budget): the
    /// hook runs at every instruction.
    tight: Cell<bool>,
}

impl Running {
    /// The idle sockets of the clients other than the caller.
    fn idle_sockets(&self) -> Vec<IdleSocket> {
        match self.clients.get().map(|c| c.try_borrow()) {
            Some(Ok(c)) => c.idle_sockets(self.caller.get()),
            _ => Vec::new(),
        }
    }

    /// Whether a script has run past the time limit (clients get BUSY).
    pub fn busy(&self) -> bool {
        self.since
            .get()
            .is_some_and(|t| t.elapsed().as_millis() as u64 >= TIME_LIMIT_MS)
    }
}

/// The VM and its compiled scripts, by SHA1.
pub struct Scripts {
    pub lua: Lua,
    /// Shared with the instruction hook (time limits, kills).
    pub(crate) running: Rc<Running>,
    cache: HashMap<String, Function>,
    /// The `redis` table: `call` and `pcall` are set for each run (they
    /// borrow the running command's context).
    pub redis: Table,
    /// Lua's `xpcall`, saved before the globals are locked.
    pub xpcall: Function,
    /// `bind(f, keys, args)`: a function calling `f(keys, args)` (Lua 5.1's
    /// xpcall passes no arguments).
    bind: Function,
    /// Function libraries (`node::lua_functions`).
    pub(crate) functions: super::lua_functions::Libraries,
    /// The running command's context while a script runs, null between
    /// runs: what `redis.call` reaches (`cmd::scripting`).
    pub(crate) active: Rc<Cell<*mut std::ffi::c_void>>,
    /// The message handler scripts run under, made with the VM
    /// (`cmd::scripting`).
    pub(crate) handler: Option<Function>,
    /// The buffer `redis.call` has commands reply into, kept between calls.
    pub(crate) replies: Cell<Vec<u8>>,
    /// The heap limit.
    memory_limit: usize,
}

/// While alive, the VM's heap has no limit (see [`unbounded`]).
pub struct Unbounded<'a> {
    lua: &'a Lua,
    limit: Option<usize>,
}

impl Drop for Unbounded<'_> {
    fn drop(&mut self) {
        if let Some(limit) = self.limit {
            let _ = self.lua.set_memory_limit(limit);
        }
    }
}

/// Lifts the heap limit while the node, not a script's code, makes or
/// reads Lua values (KEYS and ARGV, a command's reply, the result). Under
/// a limit mlua runs each such step as a protected call, which in Lua 5.1
/// allocates two C closures: most of a short script's cost. Without one
/// it runs them directly, which is safe because nothing can raise a Lua
/// error there: an allocation without a limit does not fail (a process
/// out of memory aborts, as on any Rust allocation) and a collection runs
/// no script code (no `newproxy`). What the node makes is bounded by the
/// request and by `--max-reply-bytes` (a command's reply); the script's
/// own code always runs under the limit.
pub fn unbounded(lua: &Lua) -> Unbounded<'_> {
    Unbounded {
        lua,
        limit: lua.set_memory_limit(0).ok(),
    }
}

/// Instructions between two runs of [`instruction_hook`].
const HOOK_EVERY: u32 = 100_000;

/// How long a library's code may run in FUNCTION LOAD (Redis' limit).
pub const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs every [`HOOK_EVERY`] instructions: past the time limit other
/// clients are answered (BUSY, SCRIPT KILL) every 10 ms; a killed script,
/// a library load past its time and, under a fuzzing budget, code that used
/// it up fail.
fn instruction_hook(lua: &Lua, running: &Rc<Running>) -> mlua::Result<VmState> {
    if running.busy()
        && running
            .last_busy
            .get()
            .is_none_or(|t| t.elapsed().as_millis() >= 10)
    {
        running.last_busy.set(Some(Instant::now()));
        let mut sockets = running.sockets.borrow_mut();
        let sockets = sockets.get_or_insert_with(|| running.idle_sockets());
        super::clients::serve_busy(sockets, running);
    }
    let stop = if running.kill.get() {
        Some("ERR Script killed by user with SCRIPT KILL...")
    } else if running
        .load_deadline
        .get()
        .is_some_and(|d| Instant::now() >= d)
    {
        Some("FUNCTION LOAD timeout")
    } else {
        match running.budget.get() {
            Some(0) => Some("ERR script ran past the fuzzing instruction budget"),
            Some(n) => {
                running.budget.set(Some(n - 1));
                None
            }
            None => None,
        }
    };
    match stop {
        Some(why) => {
            if !running.tight.replace(true) {
                // From now on every instruction fails, so a `pcall` in a
                // loop cannot catch the error and run on.
                set_hook(lua, running, 1);
            }
            Err(mlua::Error::runtime(why))
        }
        None => {
            // The next code after a stop: back to the usual interval.
            if running.tight.replace(false) {
                set_hook(lua, running, HOOK_EVERY);
            }
            Ok(VmState::Continue)
        }
    }
}

fn set_hook(lua: &Lua, running: &Rc<Running>, every: u32) {
    let r = running.clone();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(every),
        move |lua, _| instruction_hook(lua, &r),
    );
}

/// Read-only globals, with Redis' messages.
const LOCK_GLOBALS: &str = r#"
local mt = {}
mt.__newindex = function(t, k, v)
  error("Attempt to modify a readonly table", 2)
end
mt.__index = function(t, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end
setmetatable(_G, mt)
"#;

/// Whether a chunk name is a user's: a script's (EVAL) or a function
/// library's (FUNCTION LOAD).
pub fn is_user_source(source: Option<&str>) -> bool {
    matches!(source, Some("@user_script" | "@user_function"))
}

pub fn sha1_hex(body: &[u8]) -> String {
    let d = Sha1::digest(body);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Scripts {
    pub fn new(running: Rc<Running>, memory_limit: usize) -> Result<Self, LuaError> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        let _ = lua.set_memory_limit(memory_limit);
        let g = lua.globals();
        // `newproxy` (absent from Redis 7 too) is the only way a script
        // could give a value a `__gc` of its own; without it no collection
        // runs script code (see `unbounded`).
        for name in ["loadfile", "dofile", "print", "newproxy"] {
            g.raw_set(name, Value::Nil)?;
        }
        let redis = lua.create_table()?;
        redis.raw_set("REDIS_VERSION", "7.2.0")?;
        redis.raw_set("REDIS_VERSION_NUM", 0x070200)?;
        redis.raw_set("LOG_DEBUG", 0)?;
        redis.raw_set("LOG_VERBOSE", 1)?;
        redis.raw_set("LOG_NOTICE", 2)?;
        redis.raw_set("LOG_WARNING", 3)?;
        redis.raw_set(
            "sha1hex",
            lua.create_function(|_, s: mlua::String| Ok(sha1_hex(&s.as_bytes())))?,
        )?;
        redis.raw_set(
            "status_reply",
            lua.create_function(|lua, s: mlua::String| {
                let t = lua.create_table()?;
                t.raw_set("ok", s)?;
                Ok(t)
            })?,
        )?;
        redis.raw_set(
            "error_reply",
            lua.create_function(|lua, s: mlua::String| {
                let t = lua.create_table()?;
                t.raw_set("err", lua.create_string(error_reply_text(&s.as_bytes()))?)?;
                Ok(t)
            })?,
        )?;
        redis.raw_set(
            "log",
            lua.create_function(|_, (level, msg): (i64, mlua::String)| {
                tracing::info!(level, message = %msg.to_string_lossy(), "script log");
                Ok(())
            })?,
        )?;
        redis.raw_set(
            "setresp",
            lua.create_function(|_, v: i64| match v {
                2 => Ok(()),
                _ => Err(mlua::Error::runtime(
                    "RESP version must be 2 in this node's scripts",
                )),
            })?,
        )?;
        g.raw_set("redis", redis.clone())?;
        super::lua_libs::install(&lua)?;
        let xpcall: Function = g.raw_get("xpcall")?;
        let bind: Function = lua
            .load("return function(f, k, a) return function() return f(k, a) end end")
            .set_name("=bind")
            .call(())?;
        lua.load(LOCK_GLOBALS).set_name("=sandbox").exec()?;
        set_hook(&lua, &running, HOOK_EVERY);
        Ok(Self {
            lua,
            running,
            cache: HashMap::new(),
            redis,
            xpcall,
            bind,
            functions: Default::default(),
            active: Rc::new(Cell::new(std::ptr::null_mut())),
            handler: None,
            replies: Cell::new(Vec::new()),
            memory_limit,
        })
    }

    /// Collects garbage, with the limit lifted, when a run left the heap
    /// above its limit (values the node made for it may take it there), so
    /// that the next script starts under it.
    pub fn settle(&self) {
        if self.lua.used_memory() > self.memory_limit {
            let _lifted = unbounded(&self.lua);
            let _ = self.lua.gc_collect();
        }
    }

    /// Compiles `body` (or finds it compiled): its SHA1 and function.
    pub fn load(&mut self, body: &[u8]) -> Result<(String, Function), String> {
        let sha = sha1_hex(body);
        if let Some(f) = self.cache.get(&sha) {
            return Ok((sha, f.clone()));
        }
        let f = self
            .lua
            .load(body)
            .set_name("@user_script")
            .into_function()
            .map_err(|e| {
                let msg = match &e {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                format!("ERR Error compiling script (new function): {msg}")
            })?;
        self.cache.insert(sha.clone(), f.clone());
        Ok((sha, f))
    }

    /// The compiled function of a registered script (`sha` is its body's
    /// SHA1): the cached one, or compiled now (a script the log or a
    /// snapshot brought in is compiled at its first use).
    pub fn compile(&mut self, sha: &str, body: &[u8]) -> Result<Function, String> {
        if let Some(f) = self.cache.get(sha) {
            return Ok(f.clone());
        }
        self.load(body).map(|(_, f)| f)
    }

    /// Makes KEYS and ARGV, sequences of the given strings, in one
    /// protected call (rather than one per table and string): a script's
    /// become its globals (None returned); a function's are returned and
    /// both globals cleared (a function sees none, as in Redis).
    pub fn make_args(
        &self,
        keys: &[&[u8]],
        argv: &[&[u8]],
        globals: bool,
    ) -> mlua::Result<Option<(Table, Table)>> {
        let fill = |state: *mut ffi::lua_State| {
            for (name, items) in [(c"KEYS", keys), (c"ARGV", argv)] {
                // SAFETY: called by `exec_raw` inside a protected call (a
                // Lua error unwinds to it), which gives a C function at
                // least LUA_MINSTACK (20) free slots; at most five values
                // are on the stack here. Globals are set raw: their
                // metatable refuses assignments.
                unsafe {
                    ffi::lua_pushstring(state, name.as_ptr());
                    ffi::lua_createtable(state, items.len().min(1 << 20) as c_int, 0);
                    for (i, it) in items.iter().enumerate() {
                        ffi::lua_pushlstring(state, it.as_ptr().cast(), it.len());
                        ffi::lua_rawseti(state, -2, (i + 1) as ffi::lua_Integer);
                    }
                    if !globals {
                        // The table stays (returned); the global is cleared.
                        ffi::lua_insert(state, -2);
                        ffi::lua_pushnil(state);
                    }
                    ffi::lua_rawset(state, ffi::LUA_GLOBALSINDEX);
                }
            }
        };
        // SAFETY: `fill` keeps to the stack discipline above and leaves the
        // two tables (a function's) or nothing (a script's) on it.
        unsafe {
            if globals {
                self.lua.exec_raw::<()>((), fill)?;
                Ok(None)
            } else {
                self.lua.exec_raw::<(Table, Table)>((), fill).map(Some)
            }
        }
    }

    /// A function that calls `f(keys, argv)`.
    pub fn bind_args(&self, f: &Function, keys: Table, argv: Table) -> mlua::Result<Function> {
        self.bind.call((f.clone(), keys, argv))
    }

    pub fn flush(&mut self) {
        self.cache.clear();
        let _ = self.lua.gc_collect();
    }
}

/// `redis.error_reply`'s text: without a leading `-`, and with `ERR ` when
/// it has no error code (no space).
fn error_reply_text(s: &[u8]) -> Vec<u8> {
    let s = s.strip_prefix(b"-").unwrap_or(s);
    if s.contains(&b' ') {
        s.to_vec()
    } else {
        [b"ERR ".as_slice(), s].concat()
    }
}

/// Appends a Lua value as a command argument (strings and numbers, as
/// Lua 5.1's `tostring` prints numbers: `%.14g`); false for other types.
pub fn push_arg(buf: &mut Vec<u8>, v: &Value) -> bool {
    match v {
        Value::String(s) => buf.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => {
            use std::io::Write;
            let _ = write!(buf, "{i}");
        }
        Value::Number(n) => buf.extend_from_slice(fmt_number(*n).as_bytes()),
        _ => return false,
    }
    true
}

/// Lua 5.1's number format, `%.14g`.
pub fn fmt_number(n: f64) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: snprintf writes at most buf.len() bytes, NUL included, from
    // a constant format taking one double.
    let len = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.14g".as_ptr(), n) };
    let len = (len.max(0) as usize).min(buf.len() - 1);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// A RESP2 reply as Redis gives it to a script: status → `{ok=…}`, error →
/// `{err=…}` (and `true`: the command failed), integer → number, bulk →
/// string, nulls → `false`, arrays → tables.
pub fn reply_to_lua(lua: &Lua, f: &Frame) -> mlua::Result<(Value, bool)> {
    Ok(match f {
        Frame::Simple(s) => {
            let t = lua.create_table_with_capacity(0, 1)?;
            t.raw_set("ok", s.as_str())?;
            (Value::Table(t), false)
        }
        Frame::Error(s) => {
            let t = lua.create_table_with_capacity(0, 1)?;
            t.raw_set("err", s.as_str())?;
            (Value::Table(t), true)
        }
        Frame::Integer(n) => (Value::Number(*n as f64), false),
        Frame::Bulk(b) => (Value::String(lua.create_string(b)?), false),
        Frame::Null => (Value::Boolean(false), false),
        Frame::Boolean(b) => (Value::Boolean(*b), false),
        Frame::Double(d) => (Value::Number(*d), false),
        Frame::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, it) in items.iter().enumerate() {
                t.raw_set(i + 1, reply_to_lua(lua, it)?.0)?;
            }
            (Value::Table(t), false)
        }
        Frame::Map(pairs) => {
            let t = lua.create_table()?;
            for (k, v) in pairs {
                t.raw_set(reply_to_lua(lua, k)?.0, reply_to_lua(lua, v)?.0)?;
            }
            (Value::Table(t), false)
        }
    })
}

/// A C cast of a double to `long long` as Redis does it on x86-64: values
/// out of range (and NaN) become the minimum.
fn lua_number_to_int(n: f64) -> i64 {
    // ±2^63: the range an i64 holds.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.is_nan() || !(-LIMIT..LIMIT).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

/// A script's result as its reply, by Redis' rules: number → integer
/// (truncated), string → bulk, true → 1, false/nil → null, `{ok=…}` →
/// status, `{err=…}` → error, other tables → arrays up to the first nil.
pub fn lua_to_reply(out: &mut ReplyBuf, v: &Value, depth: usize) {
    match v {
        Value::Nil | Value::Boolean(false) => out.null(),
        Value::Boolean(true) => out.int(1),
        Value::Integer(i) => out.int(*i),
        Value::Number(n) => out.int(lua_number_to_int(*n)),
        Value::String(s) => out.bulk(&s.as_bytes()),
        Value::Table(t) => table_to_reply(out, t, depth),
        _ => out.null(),
    }
}

fn table_to_reply(out: &mut ReplyBuf, t: &Table, depth: usize) {
    if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
        out.error(&e.to_string_lossy());
        return;
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
        out.simple(&s.to_string_lossy());
        return;
    }
    if depth > 100 {
        // A table nested this deep (or containing itself) is cut here.
        out.error("ERR reached lua stack limit");
        return;
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(v),
        }
        if out.full() {
            break;
        }
    }
    out.array(items.len());
    for v in &items {
        lua_to_reply(out, v, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_lua_5_1_does() {
        assert_eq!(fmt_number(3.5), "3.5");
        assert_eq!(fmt_number(1e20), "1e+20");
        assert_eq!(fmt_number(0.1), "0.1");
        assert_eq!(fmt_number(-2.0), "-2");
        assert_eq!(fmt_number(1.0 / 3.0), "0.33333333333333");
    }

    #[test]
    fn error_reply_gets_a_code_only_when_it_has_none() {
        assert_eq!(error_reply_text(b"bad"), b"ERR bad");
        assert_eq!(error_reply_text(b"-x y"), b"x y");
        assert_eq!(error_reply_text(b"E bad"), b"E bad");
    }

    #[test]
    fn out_of_range_numbers_convert_as_a_c_cast_does() {
        assert_eq!(lua_number_to_int(3.99), 3);
        assert_eq!(lua_number_to_int(-3.99), -3);
        assert_eq!(lua_number_to_int(1e20), i64::MIN);
        assert_eq!(lua_number_to_int(f64::NAN), i64::MIN);
    }

    #[test]
    fn the_sandbox_has_no_file_or_process_access_and_locks_globals() {
        let s = Scripts::new(Rc::new(Running::default()), 64 << 20).expect("a VM");
        for name in [
            "io", "os", "loadfile", "dofile", "require", "package", "debug", "newproxy",
        ] {
            let r: mlua::Result<Value> = s.lua.load(format!("return {name}")).eval();
            let e = r.expect_err(name).to_string();
            assert!(e.contains("nonexistent global variable"), "{name}: {e}");
        }
        let e = s.lua.load("x = 1").exec().expect_err("a global assignment");
        assert!(
            e.to_string().contains("Attempt to modify a readonly table"),
            "{e}"
        );
    }

    #[test]
    fn script_code_stays_under_the_heap_limit_the_node_lifts_only_for_its_own_values() {
        let s = Scripts::new(Rc::new(Running::default()), 1 << 20).expect("a VM");
        let big = "return string.rep('x', 4 * 1024 * 1024)";
        let e = s.lua.load(big).exec().expect_err("4 MiB past a 1 MiB heap");
        assert!(matches!(e, mlua::Error::MemoryError(_)), "{e}");
        let kept = {
            let _lifted = unbounded(&s.lua);
            s.lua
                .create_string(vec![b'y'; 2 << 20])
                .expect("a lifted limit")
        };
        assert_eq!(kept.as_bytes().len(), 2 << 20);
        // The limit is back once the guard is gone.
        let e = s.lua.load(big).exec().expect_err("the limit restored");
        assert!(matches!(e, mlua::Error::MemoryError(_)), "{e}");
        // What the node made counts against the limit until it is freed.
        drop(kept);
        s.settle();
        assert!(s.lua.used_memory() < 1 << 20, "{}", s.lua.used_memory());
        let n: i64 = s
            .lua
            .load("return #string.rep('z', 1000)")
            .eval()
            .expect("a small run");
        assert_eq!(n, 1000);
    }

    #[test]
    fn make_args_sets_a_scripts_globals_and_hands_a_function_its_tables() {
        let s = Scripts::new(Rc::new(Running::default()), 64 << 20).expect("a VM");
        let keys: [&[u8]; 2] = [b"k1", b"k\x002"];
        let argv: [&[u8]; 1] = [b"a"];
        assert!(s.make_args(&keys, &argv, true).expect("globals").is_none());
        let seen: String = s
            .lua
            .load("return #KEYS .. #ARGV .. KEYS[1] .. #KEYS[2] .. ARGV[1]")
            .eval()
            .expect("KEYS and ARGV");
        assert_eq!(seen, "21k13a");
        let (k, a) = s
            .make_args(&keys, &[], false)
            .expect("tables")
            .expect("a function's tables");
        assert_eq!(k.raw_len(), 2);
        assert_eq!(
            k.raw_get::<mlua::String>(2)
                .expect("KEYS[2]")
                .as_bytes()
                .as_ref(),
            keys[1]
        );
        assert_eq!(a.raw_len(), 0);
        let e = s
            .lua
            .load("return KEYS")
            .exec()
            .expect_err("cleared globals");
        assert!(e.to_string().contains("nonexistent global variable"), "{e}");
    }

    #[test]
    fn a_fuzzing_budget_stops_endless_loops_even_under_pcall() {
        let running = Rc::new(Running::default());
        let s = Scripts::new(running.clone(), 64 << 20).expect("a VM");
        // No budget (the node's setting): a long loop runs to its end.
        let n: i64 = s
            .lua
            .load("local n = 0 for i = 1, 3000000 do n = n + 1 end return n")
            .eval()
            .expect("an unbounded run");
        assert_eq!(n, 3_000_000);
        running.budget.set(Some(3));
        for body in [
            "while true do end",
            "while true do pcall(function() while true do end end) end",
        ] {
            let e = s.lua.load(body).exec().expect_err(body).to_string();
            assert!(e.contains("fuzzing instruction budget"), "{body}: {e}");
        }
        assert_eq!(running.budget.get(), Some(0), "the budget is used up");
        // A new budget: code runs again, and is bounded again.
        running.budget.set(Some(3));
        let n: i64 = s.lua.load("return 6 * 7").eval().expect("a fresh budget");
        assert_eq!(n, 42);
        let e = s.lua.load("while true do end").exec().expect_err("a loop");
        assert!(e.to_string().contains("fuzzing instruction budget"), "{e}");
    }
}
