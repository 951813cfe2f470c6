//! Redis 7 functions: FUNCTION LOAD|LIST|DELETE|FLUSH|KILL|STATS|DUMP|
//! RESTORE|HELP, FCALL, FCALL_RO.
//!
//! A library is part of the shard's data set like a loaded script: the
//! primary logs each change (`node::script_registry`), replicas, recovery
//! and snapshots carry them, and the VM runs a library's code again when
//! the registry changed under it (`node::lua_functions`). A function runs
//! as a script does (`scripting::execute`): atomically, its writes logged
//! as one group record, its keys in one slot. DUMP and RESTORE use Redis'
//! payload (`rdb::dump_libraries`), so libraries move both ways between
//! this node and Redis; a RESTORE is logged as one record.

use super::flags::*;
use super::scripting::{can_log, execute, log_change, with_scripts, Run};
use super::server::glob_match;
use super::{Args, CommandSpec, Ctx};
use crate::node::lua::Scripts;
use crate::node::script_registry::{library_name, Change, ScriptRegistry};
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "fcall",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: fcall,
    },
    CommandSpec {
        name: "fcall_ro",
        arity: -3,
        flags: SCRIPT_KEYS | NOSCRIPT | READONLY,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: fcall_ro,
    },
    CommandSpec {
        name: "function",
        arity: -2,
        flags: NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: function,
    },
];

/// What FUNCTION LOAD|DELETE|FLUSH are refused by, as a write command:
/// an ACL user without `@write`, a replica's role, a lost lease, memory.
static WRITE_SPEC: CommandSpec = CommandSpec {
    name: "function",
    arity: -2,
    flags: WRITE | DENYOOM | NOSCRIPT,
    first_key: 0,
    last_key: 0,
    step: 0,
    handler: function,
};

fn fcall(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    fcall_generic(ctx, args, false);
}
fn fcall_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    fcall_generic(ctx, args, true);
}

/// The VM with its libraries in line with the registry.
fn synced<R>(
    ctx: &Ctx<'_>,
    f: impl FnOnce(&mut Scripts, &ScriptRegistry) -> Result<R, String>,
) -> Result<R, String> {
    let reg = &ctx.store.scripts;
    with_scripts(ctx.node, |s| {
        s.sync_libraries(reg);
        f(s, reg)
    })
}

fn fcall_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, ro: bool) {
    let name = String::from_utf8_lossy(args.get(1)).into_owned();
    let found = synced(ctx, |s, _| {
        s.function(&name)
            .map(|d| (d.func.clone(), d.no_writes()))
            .ok_or_else(|| "ERR Function not found".to_string())
    });
    let (func, no_writes) = try_reply!(ctx, found.as_ref().map_err(String::as_str)).clone();
    let numkeys = match super::parse_i64(args.get(2)) {
        Some(n) => n,
        None => {
            ctx.out.error("ERR Bad number of keys provided");
            return;
        }
    };
    if numkeys > (args.len() - 3) as i64 {
        ctx.out
            .error("ERR Number of keys can't be greater than number of args");
        return;
    }
    if numkeys < 0 {
        ctx.out.error("ERR Number of keys can't be negative");
        return;
    }
    if ro && !no_writes {
        ctx.out
            .error("ERR Can not execute a script with write flag using *_ro command.");
        return;
    }
    let n = numkeys as usize;
    let keys: Vec<&[u8]> = (3..3 + n).map(|i| args.get(i)).collect();
    let argv: Vec<&[u8]> = (3 + n..args.len()).map(|i| args.get(i)).collect();
    let run = Run {
        func: &func,
        function: true,
        keys: &keys,
        argv: &argv,
        readonly: ro || no_writes,
    };
    execute(ctx, &name, run);
}

fn function(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = String::from_utf8_lossy(args.get(1)).to_ascii_lowercase();
    // Unknown subcommands and wrong arities never get here: dispatch
    // refuses them first (`subcommands.rs`).
    if matches!(sub.as_str(), "load" | "delete" | "flush" | "restore") && !ctx.replaying {
        // An ACL user needs `@write` for them (`+function` allows it too).
        if let Some(e) = ctx
            .conn
            .user
            .is_some()
            .then(|| super::acl_refusal(ctx, &WRITE_SPEC, args))
            .flatten()
        {
            ctx.out.error(&e);
            return;
        }
        if let Some(e) = ctx.node.write_refusal(&WRITE_SPEC, ctx.store) {
            ctx.log_expired();
            ctx.out.error(&e);
            return;
        }
    }
    match sub.as_str() {
        "load" => load(ctx, args),
        "delete" => delete(ctx, args),
        "flush" => flush(ctx, args),
        "list" => list(ctx, args),
        // A function runs on the loop: one running past the time limit is
        // stopped by the busy handler (`clients::serve_busy`), not here.
        "kill" => ctx.out.error("NOTBUSY No scripts in execution right now."),
        "stats" => stats(ctx),
        "dump" => {
            let payload =
                crate::node::rdb::dump_libraries(ctx.store.scripts.libraries().map(|(_, c)| c));
            ctx.out.bulk(&payload);
        }
        "restore" => restore(ctx, args),
        "help" => help(ctx),
        _ => ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}

fn load(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut replace = false;
    for i in 2..args.len() - 1 {
        if args.is(i, "replace") {
            replace = true;
        } else {
            ctx.out.error(&format!(
                "ERR Unknown option given: {}",
                String::from_utf8_lossy(args.get(i))
            ));
            return;
        }
    }
    let code = args.get(args.len() - 1);
    let name = try_reply!(ctx, library_name(code).as_deref().map_err(String::as_str)).to_string();
    if !replace && ctx.store.scripts.library(&name).is_some() {
        ctx.out
            .error(&format!("ERR Library '{name}' already exists"));
        return;
    }
    let installed = synced(ctx, |s, _| {
        let defs = s.evaluate_library(code)?;
        s.install_library(&name, code, defs)
    });
    try_reply!(ctx, installed.as_ref().map_err(String::as_str));
    ctx.store.scripts.set_library(name.clone(), code);
    mark_synced(ctx);
    if can_log(ctx) {
        log_change(ctx, Change::LoadLibrary(code));
    }
    ctx.out.bulk(name.as_bytes());
}

/// FUNCTION RESTORE's policy for libraries already loaded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Flush,
    Append,
    Replace,
}

/// `FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]`: all the payload's
/// libraries or none, checked as Redis does before anything changes.
fn restore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 4 {
        ctx.out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(args.get(1))
        ));
        return;
    }
    let policy = match args.len() {
        3 => Policy::Append,
        _ if args.is(3, "flush") => Policy::Flush,
        _ if args.is(3, "append") => Policy::Append,
        _ if args.is(3, "replace") => Policy::Replace,
        _ => {
            ctx.out.error(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            );
            return;
        }
    };
    let codes = match crate::node::rdb::restore_libraries(args.get(2)) {
        Ok(c) => c,
        Err(e) => {
            ctx.out.error(&format!("ERR {e}"));
            return;
        }
    };
    let libs = match check_restore(ctx, &codes, policy) {
        Ok(l) => l,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    let names: Vec<String> = libs.iter().map(|(n, _, _)| n.clone()).collect();
    if policy == Policy::Flush {
        ctx.store.scripts.flush_libraries();
    }
    let installed = synced(ctx, |s, _| {
        if policy == Policy::Flush {
            s.clear_libraries();
        }
        for (name, code, defs) in libs {
            s.install_library(&name, code, defs)?;
        }
        Ok(())
    });
    for (name, code) in names.into_iter().zip(&codes) {
        ctx.store.scripts.set_library(name, code);
    }
    if installed.is_ok() {
        mark_synced(ctx);
    }
    if can_log(ctx) {
        let codes: Vec<&[u8]> = codes.iter().map(|c| &c[..]).collect();
        log_change(
            ctx,
            Change::RestoreLibraries {
                flush: policy == Policy::Flush,
                codes,
            },
        );
    }
    ctx.out.ok();
}

/// A library to install: name, code, functions.
type Restored<'c> = (
    String,
    &'c [u8],
    Vec<crate::node::lua_functions::FunctionDef>,
);

/// Evaluates the payload's libraries and finds the collisions Redis
/// refuses: within the payload first, then with the loaded libraries.
fn check_restore<'c>(
    ctx: &Ctx<'_>,
    codes: &'c [Box<[u8]>],
    policy: Policy,
) -> Result<Vec<Restored<'c>>, String> {
    synced(ctx, |s, reg| {
        let mut libs: Vec<Restored<'c>> = Vec::with_capacity(codes.len());
        for code in codes {
            let name = library_name(code)?;
            if libs.iter().any(|(n, _, _)| *n == name) {
                return Err(format!("ERR Library '{name}' already exists"));
            }
            let defs = s.evaluate_library(code)?;
            let taken = |f: &str| libs.iter().any(|(_, _, d)| d.iter().any(|d| d.name == f));
            if let Some(d) = defs.iter().find(|d| taken(&d.name)) {
                return Err(format!("ERR Function {} already exists", d.name));
            }
            libs.push((name, code, defs));
        }
        if policy == Policy::Flush {
            return Ok(libs);
        }
        if policy == Policy::Append {
            if let Some((name, _, _)) = libs.iter().find(|(n, _, _)| reg.library(n).is_some()) {
                return Err(format!("ERR Library {name} already exists"));
            }
        }
        // A function of a library that stays (not replaced) is taken.
        for (_, _, defs) in &libs {
            for d in defs {
                let owner = s.function_library(&d.name);
                if owner.is_some_and(|o| !libs.iter().any(|(n, _, _)| n == o)) {
                    return Err(format!("ERR Function {} already exists", d.name));
                }
            }
        }
        Ok(libs)
    })
}

/// FUNCTION HELP: one line per subcommand and its arguments.
fn help(ctx: &mut Ctx<'_>) {
    const LINES: &[&str] = &[
        "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "LOAD [REPLACE] <FUNCTION CODE>",
        "    Load a library (its name is on the code's first line); REPLACE overwrites one of that name.",
        "DELETE <LIBRARY NAME>",
        "    Remove a library and its functions.",
        "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
        "    Libraries with their engine and functions, their code with WITHCODE, filtered by name pattern.",
        "STATS",
        "    The function running now (none: this node serves nothing else meanwhile) and the engines.",
        "KILL",
        "    Stop the running function, if it has not written.",
        "FLUSH [ASYNC|SYNC]",
        "    Remove every library.",
        "DUMP",
        "    A payload holding every library, for FUNCTION RESTORE (Redis' format).",
        "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
        "    Load the payload's libraries. FLUSH removes every library first; APPEND (the default)",
        "    fails when a library exists; REPLACE replaces libraries of the same name. A function",
        "    name held by another library fails the restore either way.",
        "HELP",
        "    This text.",
    ];
    ctx.out.array(LINES.len());
    for l in LINES {
        ctx.out.simple(l);
    }
}

/// The VM and the registry were changed together.
fn mark_synced(ctx: &Ctx<'_>) {
    let generation = ctx.store.scripts.generation();
    if let Some(s) = ctx.node.scripts.borrow_mut().as_mut() {
        s.libraries_synced(generation);
    }
}

fn delete(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let name = String::from_utf8_lossy(args.get(2)).into_owned();
    if ctx.store.scripts.library(&name).is_none() {
        ctx.out.error("ERR Library not found");
        return;
    }
    let synced_before = synced(ctx, |_, _| Ok(()));
    ctx.store.scripts.delete_library(&name);
    if let Some(s) = ctx.node.scripts.borrow_mut().as_mut() {
        s.remove_library(&name);
    }
    if synced_before.is_ok() {
        mark_synced(ctx);
    }
    if can_log(ctx) {
        log_change(ctx, Change::DeleteLibrary(name.as_bytes()));
    }
    ctx.out.ok();
}

fn flush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 || (args.len() == 3 && !args.is(2, "sync") && !args.is(2, "async")) {
        ctx.out
            .error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
        return;
    }
    ctx.store.scripts.flush_libraries();
    if let Some(s) = ctx.node.scripts.borrow_mut().as_mut() {
        s.clear_libraries();
    }
    mark_synced(ctx);
    if can_log(ctx) {
        log_change(ctx, Change::FlushLibraries);
    }
    ctx.out.ok();
}

fn list(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (mut with_code, mut pattern): (bool, Option<&[u8]>) = (false, None);
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "withcode") && !with_code {
            with_code = true;
        } else if args.is(i, "libraryname") && pattern.is_none() {
            if i + 1 >= args.len() {
                ctx.out.error("ERR library name argument was not given");
                return;
            }
            pattern = Some(args.get(i + 1));
            i += 1;
        } else {
            ctx.out.error(&format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(args.get(i))
            ));
            return;
        }
        i += 1;
    }
    /// A function's name, description and flags.
    type Def = (String, Option<String>, Vec<String>);
    let listed = synced(ctx, |s, reg| {
        let libs: Vec<(String, Option<Vec<u8>>, Vec<Def>)> = reg
            .libraries()
            .filter(|(n, _)| pattern.is_none_or(|p| glob_match(p, n.as_bytes())))
            .map(|(name, code)| {
                let defs = s
                    .library_functions(name)
                    .iter()
                    .map(|d| (d.name.clone(), d.description.clone(), d.flags.clone()))
                    .collect();
                (name.to_string(), with_code.then(|| code.to_vec()), defs)
            })
            .collect();
        Ok(libs)
    });
    let libs = try_reply!(ctx, listed.as_ref().map_err(String::as_str));
    let out = &mut *ctx.out;
    out.array(libs.len());
    for (name, code, defs) in libs {
        out.map(if code.is_some() { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(defs.len());
        for (fname, description, flags) in defs {
            out.map(3);
            out.bulk(b"name");
            out.bulk(fname.as_bytes());
            out.bulk(b"description");
            match description {
                Some(t) => out.bulk(t.as_bytes()),
                None => out.null(),
            }
            out.bulk(b"flags");
            out.set(flags.len());
            for f in flags {
                out.bulk(f.as_bytes());
            }
        }
        if let Some(code) = code {
            out.bulk(b"library_code");
            out.bulk(code);
        }
    }
}

fn stats(ctx: &mut Ctx<'_>) {
    let counts = synced(ctx, |s, _| Ok(s.library_counts()));
    let (libs, funcs) = try_reply!(ctx, counts.as_ref().map_err(String::as_str)).to_owned();
    let out = &mut *ctx.out;
    out.map(2);
    out.bulk(b"running_script");
    out.null();
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(libs as i64);
    out.bulk(b"functions_count");
    out.int(funcs as i64);
}
