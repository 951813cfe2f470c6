//! Function libraries in the node's VM (Redis 7 functions): running a
//! library's code so that it registers its functions, and the functions
//! by name for FCALL.
//!
//! A library's code runs once, at FUNCTION LOAD (or when the VM catches up
//! with libraries the log or a snapshot brought, [`Scripts::sync_libraries`]),
//! with Redis' load-time environment: its only global is `redis`, with
//! `register_function`, `log` and the constants (no `call`, no libraries
//! until its functions run), all read-only. The callbacks it registers share
//! one environment table whose lookups go to that load-time API while a
//! library loads and to the node's (read-only) globals otherwise, as Redis
//! swaps the globals' `__index`.

use hashbrown::HashMap;
use mlua::{Function, Table, Value};

use super::lua::Scripts;
use super::script_registry::{valid_name, ScriptRegistry};

/// The flags a function may declare.
pub const FLAGS: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// A registered function.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    pub name: String,
    pub func: Function,
    pub flags: Vec<String>,
    pub description: Option<String>,
}

impl FunctionDef {
    pub fn no_writes(&self) -> bool {
        self.flags.iter().any(|f| f == "no-writes")
    }
}

/// The libraries loaded in the VM.
#[derive(Default)]
pub struct Libraries {
    /// Function name → its library's name.
    by_name: HashMap<String, String>,
    /// Library name → its code and functions (registration order).
    libs: HashMap<String, (Box<[u8]>, Vec<FunctionDef>)>,
    /// The registry generation these reflect (None: never synced).
    synced: Option<u64>,
    env: Option<Env>,
}

/// The environment every library's code and callbacks run in.
struct Env {
    env: Table,
    /// `env`'s metatable: `__index` is the load API or the globals.
    meta: Table,
    /// The load-time globals and their `redis` table.
    api: Table,
    api_redis: Table,
}

/// An error `redis.register_function` raises: reported without a line.
#[derive(Debug)]
struct RegisterError(String);

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RegisterError {}

const ENV: &str = r#"
local G, api, api_redis = ...
local function missing(t, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end
local function readonly()
  error("Attempt to modify a readonly table", 2)
end
setmetatable(api, {__index = missing, __newindex = readonly})
setmetatable(api_redis, {__index = missing, __newindex = readonly})
local meta = {__index = G, __newindex = readonly}
return setmetatable({}, meta), meta
"#;

fn register_error(msg: &str) -> mlua::Error {
    mlua::Error::external(RegisterError(format!("ERR {msg}")))
}

/// The message of an error a library's code raised while loading.
fn load_error(e: &mlua::Error) -> String {
    match e {
        mlua::Error::ExternalError(x) => match x.downcast_ref::<RegisterError>() {
            Some(r) => r.0.clone(),
            None => format!("ERR {x}"),
        },
        mlua::Error::CallbackError { cause, .. } => load_error(cause),
        // Without the traceback the engine appends.
        mlua::Error::RuntimeError(m) => {
            let m = m.split("\nstack traceback:").next().unwrap_or(m);
            format!("ERR {m}")
        }
        mlua::Error::MemoryError(_) => "ERR script out of memory".into(),
        other => format!("ERR {other}"),
    }
}

/// A value as `lua_tostring` reads it: a string, or a number's text.
fn lua_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string_lossy()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Number(n) => Some(super::lua::fmt_number(*n)),
        _ => None,
    }
}

/// `redis.register_function`'s arguments: `(name, callback)` or one table
/// of named arguments.
fn parse_registration(mv: mlua::MultiValue) -> mlua::Result<FunctionDef> {
    let mut args: Vec<Value> = mv.into_iter().collect();
    let (name, func, flags, description) = match args.len() {
        1 => {
            let Some(Value::Table(t)) = args.pop() else {
                return Err(register_error("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments)."));
            };
            let (mut name, mut func, mut flags, mut description) = (None, None, Vec::new(), None);
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let key = match &k {
                    Value::String(s) => s.to_string_lossy(),
                    _ => String::new(),
                };
                let text = lua_string(&v);
                match (key.as_str(), v) {
                    ("function_name", _) if text.is_some() => name = text,
                    ("function_name", _) => {
                        return Err(register_error("function_name argument given to redis.register_function must be a string"))
                    }
                    ("callback", Value::Function(f)) => func = Some(f),
                    ("callback", _) => {
                        return Err(register_error("callback argument given to redis.register_function must be a function"))
                    }
                    ("description", _) if text.is_some() => description = text,
                    ("description", _) => {
                        return Err(register_error("description argument given to redis.register_function must be a string"))
                    }
                    ("flags", Value::Table(ft)) => {
                        for f in ft.sequence_values::<Value>() {
                            let flag = match f? {
                                Value::String(s) => s.to_string_lossy(),
                                _ => String::new(),
                            };
                            if !FLAGS.contains(&flag.as_str()) {
                                return Err(register_error("unknown flag given"));
                            }
                            flags.push(flag);
                        }
                    }
                    ("flags", _) => {
                        return Err(register_error("flags argument to redis.register_function must be a table representing function flags"))
                    }
                    _ => {
                        return Err(register_error(
                            "unknown argument given to redis.register_function",
                        ))
                    }
                }
            }
            let Some(name) = name else {
                return Err(register_error(
                    "redis.register_function must get a function name argument",
                ));
            };
            let Some(func) = func else {
                return Err(register_error(
                    "redis.register_function must get a callback argument",
                ));
            };
            (name, func, flags, description)
        }
        2 => {
            let func = match args.pop() {
                Some(Value::Function(f)) => f,
                _ => {
                    return Err(register_error(
                        "second argument to redis.register_function must be a function",
                    ))
                }
            };
            // As lua_tostring: a number is its text.
            let name = match args.pop().as_ref().and_then(lua_string) {
                Some(name) => name,
                None => {
                    return Err(register_error(
                        "first argument to redis.register_function must be a string",
                    ))
                }
            };
            (name, func, Vec::new(), None)
        }
        _ => {
            return Err(register_error(
                "wrong number of arguments to redis.register_function",
            ))
        }
    };
    if !valid_name(&name) {
        // Redis' message says "Library" here too.
        return Err(register_error("Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"));
    }
    Ok(FunctionDef {
        name,
        func,
        flags,
        description,
    })
}

impl Scripts {
    fn library_env(&mut self) -> mlua::Result<&Env> {
        if self.functions.env.is_none() {
            let lua = &self.lua;
            let g = lua.globals();
            let api = lua.create_table()?;
            let api_redis = lua.create_table()?;
            for k in [
                "log",
                "LOG_DEBUG",
                "LOG_VERBOSE",
                "LOG_NOTICE",
                "LOG_WARNING",
                "REDIS_VERSION",
                "REDIS_VERSION_NUM",
            ] {
                api_redis.raw_set(k, self.redis.raw_get::<Value>(k)?)?;
            }
            api.raw_set("redis", api_redis.clone())?;
            let (env, meta): (Table, Table) =
                lua.load(ENV)
                    .set_name("=functions")
                    .call((g, api.clone(), api_redis.clone()))?;
            self.functions.env = Some(Env {
                env,
                meta,
                api,
                api_redis,
            });
        }
        match &self.functions.env {
            Some(e) => Ok(e),
            None => Err(mlua::Error::runtime("the functions environment is missing")),
        }
    }

    /// Runs a library's code (the part after its first line) and returns
    /// the functions it registered, or Redis' error.
    pub fn evaluate_library(&mut self, code: &[u8]) -> Result<Vec<FunctionDef>, String> {
        let body = code
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&code[code.len()..], |at| &code[at..]);
        let env = self.library_env().map_err(|e| format!("ERR {e}"))?;
        let (envt, meta, api, api_redis) = (
            env.env.clone(),
            env.meta.clone(),
            env.api.clone(),
            env.api_redis.clone(),
        );
        let chunk = self
            .lua
            .load(body)
            .set_name("@user_function")
            .set_environment(envt)
            .into_function()
            .map_err(|e| {
                let msg = match &e {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                format!("ERR Error compiling function: {msg}")
            })?;
        let defs = std::cell::RefCell::new(Vec::<FunctionDef>::new());
        let g = self.lua.globals();
        let res = self.lua.scope(|scope| {
            let register = scope.create_function(|_, mv: mlua::MultiValue| {
                let def = parse_registration(mv)?;
                let mut defs = defs.borrow_mut();
                if defs.iter().any(|d| d.name == def.name) {
                    return Err(register_error("Function already exists in the library"));
                }
                defs.push(def);
                Ok(())
            })?;
            api_redis.raw_set("register_function", register)?;
            meta.raw_set("__index", api.clone())?;
            let r = chunk.call::<()>(());
            meta.raw_set("__index", g.clone())?;
            api_redis.raw_set("register_function", Value::Nil)?;
            r
        });
        if let Err(e) = res {
            return Err(format!(
                "ERR Error registering functions: {}",
                load_error(&e)
            ));
        }
        let defs = defs.into_inner();
        if defs.is_empty() {
            return Err("ERR No functions registered".into());
        }
        Ok(defs)
    }

    /// Installs an evaluated library (replacing one of the same name): Redis'
    /// error when one of its functions belongs to another library.
    pub fn install_library(
        &mut self,
        name: &str,
        code: &[u8],
        defs: Vec<FunctionDef>,
    ) -> Result<(), String> {
        let f = &mut self.functions;
        if let Some(d) = defs
            .iter()
            .find(|d| f.by_name.get(&d.name).is_some_and(|lib| lib != name))
        {
            return Err(format!("ERR Function {} already exists", d.name));
        }
        f.remove(name);
        for d in &defs {
            f.by_name.insert(d.name.clone(), name.to_string());
        }
        f.libs.insert(name.to_string(), (code.into(), defs));
        Ok(())
    }

    /// Brings the VM's libraries in line with the registry (after records
    /// from the log or a snapshot changed it).
    pub fn sync_libraries(&mut self, reg: &ScriptRegistry) {
        if self.functions.synced == Some(reg.generation()) {
            return;
        }
        let stale: Vec<String> = self
            .functions
            .libs
            .iter()
            .filter(|(n, (code, _))| reg.library(n) != Some(&**code))
            .map(|(n, _)| n.clone())
            .collect();
        for n in stale {
            self.functions.remove(&n);
        }
        for (name, code) in reg.libraries() {
            if self.functions.libs.contains_key(name) {
                continue;
            }
            let loaded = self
                .evaluate_library(code)
                .and_then(|defs| self.install_library(name, code, defs));
            if let Err(e) = loaded {
                tracing::warn!(library = name, error = %e, "a loaded function library does not run");
            }
        }
        self.functions.synced = Some(reg.generation());
    }

    /// Records that the VM reflects registry generation `generation` (after
    /// a change made here and in the registry both).
    pub fn libraries_synced(&mut self, generation: u64) {
        self.functions.synced = Some(generation);
    }

    pub fn remove_library(&mut self, name: &str) {
        self.functions.remove(name);
    }

    pub fn clear_libraries(&mut self) {
        self.functions.by_name.clear();
        self.functions.libs.clear();
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        let lib = self.functions.by_name.get(name)?;
        self.functions
            .libs
            .get(lib)
            .and_then(|(_, defs)| defs.iter().find(|d| d.name == name))
    }

    /// A library's functions (registration order).
    /// The library a function belongs to.
    pub fn function_library(&self, name: &str) -> Option<&str> {
        self.functions.by_name.get(name).map(String::as_str)
    }

    pub fn library_functions(&self, name: &str) -> &[FunctionDef] {
        self.functions
            .libs
            .get(name)
            .map_or(&[], |(_, defs)| defs.as_slice())
    }

    /// Libraries and functions loaded (FUNCTION STATS).
    pub fn library_counts(&self) -> (usize, usize) {
        (self.functions.libs.len(), self.functions.by_name.len())
    }
}

impl Libraries {
    fn remove(&mut self, name: &str) {
        if let Some((_, defs)) = self.libs.remove(name) {
            for d in defs {
                self.by_name.remove(&d.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn vm() -> Scripts {
        Scripts::new(Rc::new(Default::default()), 64 << 20).expect("a VM")
    }

    const LIB: &[u8] = b"#!lua name=l1\nredis.register_function('a', function(k, a) return #k + #a end)\nredis.register_function{function_name='b', callback=function() return 2 end, flags={'no-writes'}, description='two'}";

    #[test]
    fn a_library_registers_its_functions_and_another_may_not_take_their_names() {
        let mut s = vm();
        let defs = s.evaluate_library(LIB).expect("loads");
        let names: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(defs[1].no_writes() && !defs[0].no_writes());
        assert_eq!(defs[1].description.as_deref(), Some("two"));
        s.install_library("l1", LIB, defs).expect("installs");
        let other = b"#!lua name=l2\nredis.register_function('b', function() end)";
        let defs = s.evaluate_library(other).expect("loads");
        assert_eq!(
            s.install_library("l2", other, defs),
            Err("ERR Function b already exists".into())
        );
        let f = s.function("a").expect("registered").func.clone();
        let bound = s
            .bind_args(
                &f,
                s.lua.create_sequence_from([1, 2]).expect("keys"),
                s.lua.create_sequence_from([3]).expect("args"),
            )
            .expect("bound");
        assert_eq!(bound.call::<i64>(()).expect("runs"), 3);
        assert_eq!(s.library_counts(), (1, 2));
    }

    #[test]
    fn the_vm_follows_registry_changes_made_by_the_log() {
        let mut s = vm();
        let mut reg = ScriptRegistry::default();
        s.sync_libraries(&reg);
        assert!(s.function("a").is_none());
        reg.set_library("l1".into(), LIB);
        s.sync_libraries(&reg);
        assert!(s.function("a").is_some() && s.function("b").is_some());
        let replaced = b"#!lua name=l1\nredis.register_function('c', function() return 3 end)";
        reg.set_library("l1".into(), replaced);
        s.sync_libraries(&reg);
        assert!(s.function("a").is_none() && s.function("c").is_some());
        reg.delete_library("l1");
        s.sync_libraries(&reg);
        assert_eq!(s.library_counts(), (0, 0));
    }

    #[test]
    fn library_code_sees_only_redis_while_it_loads_and_the_globals_when_it_runs() {
        let mut s = vm();
        let err = s
            .evaluate_library(b"#!lua name=x\nlocal t = string.rep('a', 2)")
            .expect_err("no string library at load time");
        assert!(
            err.starts_with("ERR Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'string'"),
            "{err}"
        );
        let code =
            b"#!lua name=x\nredis.register_function('r', function() return string.rep('a', 2) end)";
        let defs = s.evaluate_library(code).expect("loads");
        assert_eq!(defs[0].func.call::<String>(()).expect("runs"), "aa");
        let err = s
            .evaluate_library(b"#!lua name=x\ny = 1")
            .expect_err("globals are read-only");
        assert!(err.contains("Attempt to modify a readonly table"), "{err}");
        assert_eq!(
            s.evaluate_library(b"#!lua name=x\nlocal y = 1").err(),
            Some("ERR No functions registered".into())
        );
    }
}
