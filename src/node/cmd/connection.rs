//! Connection commands: PING, ECHO, QUIT, HELLO, AUTH, SELECT, CLIENT,
//! READONLY, READWRITE, ASKING.

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: ping,
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: echo,
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: FAST | NO_AUTH | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: quit,
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: FAST | NO_AUTH | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: hello,
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: FAST | NO_AUTH | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: auth,
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: select,
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: client,
    },
    CommandSpec {
        name: "readonly",
        arity: 1,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: readonly,
    },
    CommandSpec {
        name: "readwrite",
        arity: 1,
        flags: FAST | LOADING_OK,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: readwrite,
    },
    CommandSpec {
        name: "asking",
        arity: 1,
        flags: FAST,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: asking,
    },
];

fn ping(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() <= 2 && !ctx.conn.resp3 && super::pubsub::subscribed(ctx) {
        // A subscribed RESP2 connection: the reply is a message-like array.
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out
            .bulk(if args.len() == 2 { args.get(1) } else { b"" });
        return;
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => ctx
            .out
            .error("ERR wrong number of arguments for 'ping' command"),
    }
}

fn echo(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ctx.out.bulk(args.get(1));
}

fn quit(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.out.ok();
    ctx.conn.close_after_reply = true;
}

/// Checks a password in constant time with respect to its content.
fn password_matches(expected: &str, given: &[u8]) -> bool {
    let e = expected.as_bytes();
    if e.len() != given.len() {
        return false;
    }
    e.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// AUTH [username] password: the `default` user (requirepass) or an ACL
/// user (`node::acl`).
fn try_auth(ctx: &mut Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> Result<(), &'static str> {
    const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
    match user.filter(|u| *u != b"default") {
        None => {
            let Some(expected) = ctx.node.cfg.password.as_deref() else {
                if user.is_some() {
                    // `AUTH default <anything>` without requirepass: nopass.
                    ctx.conn.authenticated = true;
                    ctx.conn.user = None;
                    return Ok(());
                }
                return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            };
            if password_matches(expected, pass) {
                ctx.conn.authenticated = true;
                ctx.conn.user = None;
                Ok(())
            } else {
                Err(WRONGPASS)
            }
        }
        Some(name) => {
            let name = String::from_utf8_lossy(name);
            let acl = ctx.node.acl.borrow();
            match acl.get(&name) {
                Some(u) if u.enabled && u.password_ok(pass) => {
                    ctx.conn.user = Some(std::rc::Rc::from(name.as_ref()));
                    ctx.conn.authenticated = true;
                    Ok(())
                }
                _ => Err(WRONGPASS),
            }
        }
    }
}

fn auth(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let res = match args.len() {
        2 => try_auth(ctx, None, args.get(1)),
        3 => try_auth(ctx, Some(args.get(1)), args.get(2)),
        _ => Err(ERR_SYNTAX),
    };
    match res {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(e),
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]
fn hello(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut proto = if ctx.conn.resp3 { 3 } else { 2 };
    let mut i = 1;
    if args.len() > 1 {
        match args.int(1) {
            Ok(v @ (2 | 3)) => proto = v,
            Ok(_) => {
                ctx.out.error("NOPROTO unsupported protocol version");
                return;
            }
            Err(_) => {
                ctx.out
                    .error("ERR Protocol version is not an integer or out of range");
                return;
            }
        }
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        if args.is(i, "auth") && i + 2 < args.len() {
            if let Err(e) = try_auth(ctx, Some(args.get(i + 1)), args.get(i + 2)) {
                ctx.out.error(e);
                return;
            }
            i += 3;
        } else if args.is(i, "setname") && i + 1 < args.len() {
            name = Some(args.get(i + 1).to_vec());
            i += 2;
        } else {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    }
    if !ctx.conn.authenticated {
        ctx.out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if name.is_some() {
        ctx.conn.name = name;
    }
    ctx.conn.resp3 = proto == 3;
    ctx.out.resp3 = ctx.conn.resp3;
    sync_client(ctx);
    let role = match ctx.node.role.get() {
        crate::node::Role::Primary => "master",
        crate::node::Role::Replica => "replica",
    };
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(crate::node::info::REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto);
    out.bulk(b"id");
    out.int(ctx.conn.id as i64);
    out.bulk(b"mode");
    out.bulk(b"cluster");
    out.bulk(b"role");
    out.bulk(role.as_bytes());
    out.bulk(b"modules");
    out.array(0);
}

fn select(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    match args.int(1) {
        Ok(0) => ctx.out.ok(),
        Ok(_) => ctx.out.error("ERR SELECT is not allowed in cluster mode"),
        Err(e) => ctx.out.error(e),
    }
}

fn client(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"id", 2) => ctx.out.int(ctx.conn.id as i64),
        (b"getname", 2) => match &ctx.conn.name {
            Some(n) => {
                let n = n.clone();
                ctx.out.bulk(&n)
            }
            None => ctx.out.null(),
        },
        (b"setname", 3) => {
            let name = args.get(2);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                ctx.out.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
                return;
            }
            ctx.conn.name = if name.is_empty() {
                None
            } else {
                Some(name.to_vec())
            };
            sync_client(ctx);
            ctx.out.ok();
        }
        (b"setinfo", 4) => {
            let value = args.get(3).to_vec();
            if args.is(2, "lib-name") {
                ctx.conn.lib_name = Some(value);
            } else if args.is(2, "lib-ver") {
                ctx.conn.lib_ver = Some(value);
            } else {
                ctx.out.error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(args.get(2))
                ));
                return;
            }
            sync_client(ctx);
            ctx.out.ok();
        }
        (b"info", 2) => {
            let line = client_line(ctx);
            ctx.out.verbatim(&line);
        }
        (b"list", _) => client_list(ctx, args),
        (b"kill", n) if n >= 3 => client_kill(ctx, args),
        (b"no-evict" | b"no-touch", 3) => {
            // Nothing is evicted or sampled by access time on this node:
            // the flags are accepted and change nothing.
            if args.is(2, "on") || args.is(2, "off") {
                ctx.out.ok();
            } else {
                ctx.out.error(ERR_SYNTAX);
            }
        }
        (
            b"setname" | b"setinfo" | b"id" | b"getname" | b"info" | b"kill" | b"no-evict"
            | b"no-touch",
            _,
        ) => {
            ctx.out.error(&format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            ));
        }
        _ => ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}

/// This connection's line, after copying what it says about itself into
/// the node's client list.
fn client_line(ctx: &Ctx<'_>) -> String {
    sync_client(ctx);
    let clients = ctx.node.clients.borrow();
    match clients
        .list()
        .into_iter()
        .find(|(id, _)| *id == ctx.conn.id)
    {
        Some((id, e)) => crate::node::clients::line(id, e),
        None => format!("id={} addr={} db=0\n", ctx.conn.id, ctx.conn.addr),
    }
}

/// Copies the connection's name, library and protocol to the client list.
pub fn sync_client(ctx: &Ctx<'_>) {
    if let Some(e) = ctx.node.clients.borrow_mut().get_mut(ctx.conn.id) {
        e.name.clone_from(&ctx.conn.name);
        e.lib_name.clone_from(&ctx.conn.lib_name);
        e.lib_ver.clone_from(&ctx.conn.lib_ver);
        e.resp3 = ctx.conn.resp3;
    }
}

/// CLIENT LIST [ID id …]: every connection (TYPE normal lists them all;
/// other types list none: replicas and pub/sub clients are not told apart).
fn client_list(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    sync_client(ctx);
    let mut ids: Option<Vec<u64>> = None;
    let mut only_none = false;
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "id") && i + 1 < args.len() {
            let mut v = Vec::new();
            for a in args.iter().skip(i + 1) {
                match super::parse_i64(a).filter(|&n| n > 0) {
                    Some(n) => v.push(n as u64),
                    None => {
                        ctx.out.error("ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(v);
            break;
        } else if args.is(i, "type") && i + 1 < args.len() {
            only_none = !args.is(i + 1, "normal");
            i += 2;
        } else {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    }
    let clients = ctx.node.clients.borrow();
    let text: String = clients
        .list()
        .into_iter()
        .filter(|(id, _)| !only_none && ids.as_ref().is_none_or(|v| v.contains(id)))
        .map(|(id, e)| crate::node::clients::line(id, e))
        .collect();
    drop(clients);
    ctx.out.verbatim(&text);
}

/// CLIENT KILL addr (old form: +OK) or CLIENT KILL [ID id] [ADDR addr]
/// [SKIPME yes|no] (new form: the number killed).
fn client_kill(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (mut id, mut addr, mut skipme) = (None, None, true);
    let old_form = args.len() == 3;
    if old_form {
        addr = Some(String::from_utf8_lossy(args.get(2)).into_owned());
    } else {
        let mut i = 2;
        while i + 1 < args.len() {
            let v = args.get(i + 1);
            if args.is(i, "id") {
                match super::parse_i64(v).filter(|&n| n > 0) {
                    Some(n) => id = Some(n as u64),
                    None => {
                        ctx.out.error("ERR client-id should be greater than 0");
                        return;
                    }
                }
            } else if args.is(i, "addr") {
                addr = Some(String::from_utf8_lossy(v).into_owned());
            } else if args.is(i, "skipme") {
                skipme = match v.to_ascii_lowercase().as_slice() {
                    b"yes" => true,
                    b"no" => false,
                    _ => {
                        ctx.out.error(ERR_SYNTAX);
                        return;
                    }
                };
            } else {
                ctx.out.error(ERR_SYNTAX);
                return;
            }
            i += 2;
        }
        if i != args.len() {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    }
    let me = ctx.conn.id;
    let victims: Vec<u64> = ctx
        .node
        .clients
        .borrow()
        .list()
        .into_iter()
        .filter(|(cid, e)| {
            id.is_none_or(|x| x == *cid) && addr.as_ref().is_none_or(|a| *a == e.addr)
        })
        .map(|(cid, _)| cid)
        .filter(|cid| !(skipme && !old_form && *cid == me))
        .collect();
    for &v in &victims {
        if v == me {
            // Closed after this reply, as Redis does.
            ctx.conn.close_after_reply = true;
        } else {
            ctx.node.clients.borrow().kill(v);
        }
    }
    if old_form {
        if victims.is_empty() {
            ctx.out.error("ERR No such client");
        } else {
            ctx.out.ok();
        }
    } else {
        ctx.out.int(victims.len() as i64);
    }
}

fn readonly(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.conn.readonly = true;
    ctx.out.ok();
}

fn readwrite(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.conn.readonly = false;
    ctx.out.ok();
}

fn asking(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    ctx.conn.asking = true;
    ctx.out.ok();
}
