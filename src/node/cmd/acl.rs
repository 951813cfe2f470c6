//! `ACL WHOAMI|LIST|USERS|SETUSER|DELUSER|GETUSER`: the users of
//! `node::acl`. Changes made here last until the node restarts; the
//! cluster's users come from its spec (`--acl-user`), which is what every
//! node starts with.

use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "acl",
    arity: -2,
    // No category flag: WHOAMI is for everyone; the handler checks the
    // rest is run by an administrator.
    flags: super::flags::LOADING_OK,
    first_key: 0,
    last_key: 0,
    step: 0,
    handler: acl,
}];

fn acl(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    if sub == b"whoami" {
        let me = ctx.conn.user.as_deref().unwrap_or("default").to_string();
        ctx.out.bulk(me.as_bytes());
        return;
    }
    if let Some(name) = ctx.conn.user.clone() {
        let admin = ctx
            .node
            .acl
            .borrow()
            .get(&name)
            .is_some_and(|u| u.is_admin());
        if !admin {
            ctx.out.error(&format!(
                "NOPERM User {name} has no permissions to run the 'acl|{}' command",
                String::from_utf8_lossy(&sub)
            ));
            return;
        }
    }
    let text = |i: usize| String::from_utf8_lossy(args.get(i)).into_owned();
    match sub.as_slice() {
        b"users" => {
            let acl = ctx.node.acl.borrow();
            ctx.out.array(acl.users().len() + 1);
            ctx.out.bulk(b"default");
            for u in acl.users() {
                ctx.out.bulk(u.name.as_bytes());
            }
        }
        b"list" => {
            let acl = ctx.node.acl.borrow();
            ctx.out.array(acl.users().len() + 1);
            let default = if ctx.node.cfg.password.is_some() {
                "user default on #<requirepass> ~* +@all"
            } else {
                "user default on nopass ~* +@all"
            };
            ctx.out.bulk(default.as_bytes());
            for u in acl.users() {
                ctx.out.bulk(u.describe().as_bytes());
            }
        }
        b"getuser" if args.len() == 3 => {
            let acl = ctx.node.acl.borrow();
            match acl.get(&text(2)) {
                Some(u) => ctx.out.bulk(u.describe().as_bytes()),
                None => ctx.out.null(),
            }
        }
        b"setuser" if args.len() >= 3 => {
            let rules: Vec<String> = (3..args.len()).map(text).collect();
            let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
            let res = ctx.node.acl.borrow_mut().set_user(&text(2), &rules);
            match res {
                Ok(()) => {
                    tracing::info!(user = %text(2), "ACL user set");
                    ctx.out.ok()
                }
                Err(e) => ctx.out.error(&e.to_string()),
            }
        }
        b"deluser" if args.len() >= 3 => {
            let mut acl = ctx.node.acl.borrow_mut();
            let n = (2..args.len()).filter(|&i| acl.del_user(&text(i))).count();
            ctx.out.int(n as i64);
        }
        _ => ctx.out.error(ERR_SYNTAX),
    }
}
