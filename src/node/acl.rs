//! Users and what they may run: a subset of Redis ACLs.
//!
//! The `default` user is the one `requirepass` protects (or no password)
//! and may run everything. Other users are defined with Redis' `ACL
//! SETUSER` rules, on the command line (`--acl-user "app on ~* +@read"`,
//! passwords from files) or at run time. Supported rules:
//!
//! | rule | meaning |
//! |---|---|
//! | `on` / `off` | the user may (not) authenticate |
//! | `>pw` / `<pw` | add / remove a password |
//! | `nopass` / `resetpass` | any password / no password at all |
//! | `~pattern`, `allkeys`, `resetkeys` | keys the user may touch (glob) |
//! | `+@all` `-@all` `+@read` `-@read` `+@write` `-@write` `+@admin` `-@admin` | command categories |
//! | `+cmd` / `-cmd` | one command |
//! | `reset` | back to a new user: off, no passwords, no keys, no commands |
//!
//! Categories come from the command flags: `@read` the read-only commands,
//! `@write` the writes, `@admin` the administrative and link commands
//! (CONFIG, SHUTDOWN, TREPLICATE, TMIGRATE, TPUBLISH, ACL other than WHOAMI). Commands
//! in none of them (PING, HELLO, CLIENT, CLUSTER SLOTS, INFO, COMMAND…) are
//! allowed to every user, so any client library can connect and discover
//! the cluster. Later rules override earlier ones, as in Redis.

use super::cmd::{flags, CommandSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    All,
    Read,
    Write,
    Admin,
    Command(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    nopass: bool,
    passwords: Vec<Vec<u8>>,
    /// Glob patterns; empty = no keys.
    key_patterns: Vec<Vec<u8>>,
    /// `(allowed, what)`, in order; the last rule that matches wins.
    commands: Vec<(bool, Target)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("ERR Error in ACL SETUSER modifier '{0}': Syntax error")]
    Syntax(String),
    #[error("ERR Error in ACL SETUSER modifier '{0}': Unknown command category")]
    Category(String),
    #[error("ERR the default user is configured by requirepass and may run every command")]
    DefaultUser,
    #[error("ERR invalid user name '{0}'")]
    Name(String),
}

impl User {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: vec![],
            key_patterns: vec![],
            commands: vec![],
        }
    }

    /// Applies one `ACL SETUSER` rule.
    pub fn apply(&mut self, rule: &str) -> Result<(), AclError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.key_patterns = vec![b"*".to_vec()],
            "resetkeys" => self.key_patterns.clear(),
            "allcommands" => self.commands = vec![(true, Target::All)],
            "nocommands" => self.commands = vec![(false, Target::All)],
            "reset" => *self = User::new(&self.name),
            _ => {
                if let Some(pw) = rule.strip_prefix('>') {
                    self.nopass = false;
                    if !self.passwords.iter().any(|p| p == pw.as_bytes()) {
                        self.passwords.push(pw.as_bytes().to_vec());
                    }
                } else if let Some(pw) = rule.strip_prefix('<') {
                    self.passwords.retain(|p| p != pw.as_bytes());
                } else if let Some(p) = rule.strip_prefix('~') {
                    if p.is_empty() {
                        return Err(AclError::Syntax(rule.into()));
                    }
                    self.key_patterns.push(p.as_bytes().to_vec());
                } else if let Some(rest) = lower.strip_prefix(['+', '-']) {
                    let allow = lower.starts_with('+');
                    let target = match rest.strip_prefix('@') {
                        Some("all") => Target::All,
                        Some("read") => Target::Read,
                        Some("write") => Target::Write,
                        Some("admin") => Target::Admin,
                        Some(_) => return Err(AclError::Category(rule.into())),
                        None if !rest.is_empty() && !rest.contains('|') => {
                            Target::Command(rest.to_string())
                        }
                        None => return Err(AclError::Syntax(rule.into())),
                    };
                    if target == Target::All {
                        self.commands.clear();
                    }
                    self.commands.push((allow, target));
                } else {
                    return Err(AclError::Syntax(rule.into()));
                }
            }
        }
        Ok(())
    }

    /// Whether `given` is one of the user's passwords (constant time per
    /// password with respect to content).
    pub fn password_ok(&self, given: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        self.passwords.iter().fold(false, |ok, p| {
            ok | super::admin_token::constant_time_eq(p, given)
        })
    }

    /// Whether the user may run `spec` at all.
    pub fn may_run(&self, spec: &CommandSpec) -> bool {
        let f = spec.flags;
        let (read, write, admin) = (
            f & flags::READONLY != 0,
            f & flags::WRITE != 0,
            f & flags::ADMIN != 0,
        );
        if !read && !write && !admin {
            return true;
        }
        let mut allowed = false;
        for (allow, target) in &self.commands {
            let hit = match target {
                Target::All => true,
                Target::Read => read,
                Target::Write => write,
                Target::Admin => admin,
                Target::Command(c) => c == spec.name,
            };
            if hit {
                allowed = *allow;
            }
        }
        allowed
    }

    /// Whether the user may run administrative commands (ACL, CONFIG…).
    pub fn is_admin(&self) -> bool {
        let mut allowed = false;
        for (allow, target) in &self.commands {
            if matches!(target, Target::All | Target::Admin) {
                allowed = *allow;
            }
        }
        allowed
    }

    pub fn key_ok(&self, key: &[u8]) -> bool {
        self.key_patterns
            .iter()
            .any(|p| super::cmd::server::glob_match(p, key))
    }

    /// The user as `ACL LIST` shows it (passwords as SHA-256, like Redis).
    pub fn describe(&self) -> String {
        use sha2::Digest;
        let mut parts = vec![
            "user".to_string(),
            self.name.clone(),
            if self.enabled { "on" } else { "off" }.to_string(),
        ];
        if self.nopass {
            parts.push("nopass".into());
        }
        for p in &self.passwords {
            let h = sha2::Sha256::digest(p);
            parts.push(format!(
                "#{}",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
        }
        if self.key_patterns.is_empty() {
            parts.push("resetkeys".into());
        }
        for k in &self.key_patterns {
            parts.push(format!("~{}", String::from_utf8_lossy(k)));
        }
        if self.commands.is_empty() {
            parts.push("-@all".into());
        }
        for (allow, t) in &self.commands {
            let sign = if *allow { '+' } else { '-' };
            let what = match t {
                Target::All => "@all".to_string(),
                Target::Read => "@read".to_string(),
                Target::Write => "@write".to_string(),
                Target::Admin => "@admin".to_string(),
                Target::Command(c) => c.clone(),
            };
            parts.push(format!("{sign}{what}"));
        }
        parts.join(" ")
    }
}

/// The users other than `default`.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    users: Vec<User>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\'')
}

impl Acl {
    /// `ACL SETUSER name rules…`: creates the user (off, nothing allowed)
    /// when new, then applies the rules; nothing changes if one is invalid.
    pub fn set_user(&mut self, name: &str, rules: &[&str]) -> Result<(), AclError> {
        if name == "default" {
            return Err(AclError::DefaultUser);
        }
        if !valid_name(name) {
            return Err(AclError::Name(name.into()));
        }
        let mut user = self.get(name).cloned().unwrap_or_else(|| User::new(name));
        for r in rules {
            user.apply(r)?;
        }
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) => *u = user,
            None => self.users.push(user),
        }
        Ok(())
    }

    /// A `--acl-user` definition: `name rule rule…`.
    pub fn define(&mut self, line: &str) -> Result<(), AclError> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or_else(|| AclError::Syntax(line.into()))?;
        let rules: Vec<&str> = words.collect();
        self.set_user(name, &rules)
    }

    pub fn del_user(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        self.users.len() != before
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::cmd::Commands;

    fn spec(name: &str) -> &'static CommandSpec {
        let c = Commands::new();
        c.spec(c.lookup(name.as_bytes()).unwrap())
    }

    #[test]
    fn read_only_and_read_write_users() {
        let mut acl = Acl::default();
        acl.define("ro on >pw1 ~* +@read").unwrap();
        acl.define("rw on >pw2 ~* +@read +@write").unwrap();
        let (ro, rw) = (acl.get("ro").unwrap(), acl.get("rw").unwrap());
        assert!(ro.may_run(spec("get")) && !ro.may_run(spec("set")));
        assert!(rw.may_run(spec("get")) && rw.may_run(spec("set")));
        for u in [ro, rw] {
            // Connection and discovery commands for everyone; admin for none.
            assert!(u.may_run(spec("ping")) && u.may_run(spec("cluster")));
            assert!(!u.may_run(spec("config")) && !u.may_run(spec("treplicate")));
            assert!(!u.is_admin());
        }
        assert!(ro.password_ok(b"pw1") && !ro.password_ok(b"pw2"));
    }

    #[test]
    fn later_rules_override_and_key_patterns_apply() {
        let mut acl = Acl::default();
        acl.define("u on nopass ~cache:* +@all -set").unwrap();
        let u = acl.get("u").unwrap();
        assert!(u.may_run(spec("get")) && !u.may_run(spec("set")) && u.may_run(spec("del")));
        assert!(u.key_ok(b"cache:1") && !u.key_ok(b"users:1"));
        assert!(u.password_ok(b"anything"));
        acl.set_user("u", &["+set", "resetkeys"]).unwrap();
        let u = acl.get("u").unwrap();
        assert!(u.may_run(spec("set")) && !u.key_ok(b"cache:1"));
    }

    #[test]
    fn invalid_rules_change_nothing_and_default_is_not_editable() {
        let mut acl = Acl::default();
        acl.define("u on >a ~* +@read").unwrap();
        let before = acl.get("u").cloned();
        assert_eq!(
            acl.set_user("u", &["+@write", "+@nosuch"]),
            Err(AclError::Category("+@nosuch".into()))
        );
        assert_eq!(acl.get("u").cloned(), before);
        assert_eq!(
            acl.set_user("default", &["off"]),
            Err(AclError::DefaultUser)
        );
        assert!(acl.set_user("u", &["bogus"]).is_err());
    }

    #[test]
    fn a_new_user_is_off_with_nothing_allowed() {
        let mut acl = Acl::default();
        acl.set_user("n", &[]).unwrap();
        let n = acl.get("n").unwrap();
        assert!(!n.enabled && !n.password_ok(b"") && !n.may_run(spec("get")));
        assert_eq!(n.describe(), "user n off resetkeys -@all");
    }
}
