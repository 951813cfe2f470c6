//! The scripts (EVAL's bodies by SHA1) and function libraries (FUNCTION
//! LOAD's code by name) a shard has loaded: part of the data set, so a
//! promoted replica, a restarted node and a fully resynced replica know
//! what the primary had loaded, and EVALSHA does not meet NOSCRIPT after a
//! failover.
//!
//! A primary logs each change as a record of slot `MARKER_SLOT`
//! (`TSCRIPT LOAD body`, `TSCRIPT FLUSH`, `TSCRIPT FUNCTION-LOAD code`,
//! `TSCRIPT FUNCTION-DELETE name`, `TSCRIPT FUNCTION-FLUSH`); replicas and
//! recovery apply them ([`apply_record`]), and a snapshot carries the whole
//! registry in its scripts section (docs/storage-format.md). Each record
//! sets an entry (or every entry) to a value that does not depend on what
//! was there, so replaying records a snapshot already reflects leaves the
//! same registry: replay needs no watermark for them.
//!
//! The registry lives in the [`Store`](super::store::Store), so whatever
//! replaces the keyspace (a full resync, a rejoin's rewind) replaces it too.
//! The Lua VM keeps only compiled functions (`node::lua`); this is what is
//! loaded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;

use super::Node;

/// First argument of a registry record.
pub const RECORD: &[u8] = b"TSCRIPT";

/// A loaded script's body, and whether it reached the log: a replica (or a
/// primary that cannot log) keeps what its own clients load without
/// logging it, and a primary logs such a script again when it is used.
#[derive(Debug, Clone)]
pub struct ScriptEntry {
    pub body: Box<[u8]>,
    pub logged: bool,
}

#[derive(Debug, Default)]
pub struct ScriptRegistry {
    /// Script bodies by lowercase hex SHA1.
    scripts: HashMap<String, ScriptEntry>,
    /// Function libraries' code by library name (ordered: FUNCTION LIST).
    libraries: BTreeMap<String, Box<[u8]>>,
    /// Changes with every change of `libraries`, unique across registries
    /// (0: none ever, so empty): the VM compares it to know whether the
    /// libraries it runs are these.
    generation: u64,
}

/// Source of [`ScriptRegistry::generation`] values.
static GENERATION: AtomicU64 = AtomicU64::new(1);

impl ScriptRegistry {
    pub fn script(&self, sha: &str) -> Option<&ScriptEntry> {
        self.scripts.get(sha)
    }

    /// Adds a script (or marks it logged); true when it is new.
    pub fn add_script(&mut self, sha: String, body: &[u8], logged: bool) -> bool {
        match self.scripts.get_mut(&sha) {
            Some(e) => {
                e.logged |= logged;
                false
            }
            None => {
                self.scripts.insert(
                    sha,
                    ScriptEntry {
                        body: body.into(),
                        logged,
                    },
                );
                true
            }
        }
    }

    pub fn flush_scripts(&mut self) {
        self.scripts = HashMap::new();
    }

    /// The logged scripts' bodies (what a snapshot holds).
    pub fn logged_scripts(&self) -> impl Iterator<Item = &[u8]> {
        self.scripts.values().filter(|e| e.logged).map(|e| &*e.body)
    }

    pub fn script_count(&self) -> usize {
        self.scripts.len()
    }

    pub fn library(&self, name: &str) -> Option<&[u8]> {
        self.libraries.get(name).map(|c| &**c)
    }

    pub fn libraries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.libraries.iter().map(|(n, c)| (n.as_str(), &**c))
    }

    pub fn set_library(&mut self, name: String, code: &[u8]) {
        self.libraries.insert(name, code.into());
        self.changed();
    }

    pub fn delete_library(&mut self, name: &str) -> bool {
        self.changed();
        self.libraries.remove(name).is_some()
    }

    pub fn flush_libraries(&mut self) {
        self.libraries.clear();
        self.changed();
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes held (INFO memory's `used_memory_scripts`).
    pub fn bytes(&self) -> usize {
        self.scripts
            .iter()
            .map(|(k, e)| k.len() + e.body.len())
            .chain(self.libraries.iter().map(|(k, c)| k.len() + c.len()))
            .sum()
    }
}

/// What a registry record changes.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    LoadScript(&'a [u8]),
    FlushScripts,
    /// A library's code (its name is in the code's first line).
    LoadLibrary(&'a [u8]),
    DeleteLibrary(&'a [u8]),
    FlushLibraries,
    /// FUNCTION RESTORE, as one record: the libraries (replacing those of
    /// the same name), after dropping every library when `flush`.
    RestoreLibraries {
        flush: bool,
        codes: Vec<&'a [u8]>,
    },
}

impl<'a> Change<'a> {
    /// The record's arguments.
    pub fn args(&self) -> Vec<&'a [u8]> {
        match *self {
            Change::RestoreLibraries { flush, ref codes } => {
                let policy: &[u8] = if flush { b"FLUSH" } else { b"KEEP" };
                let mut v = vec![RECORD, b"FUNCTION-RESTORE", policy];
                v.extend_from_slice(codes);
                v
            }
            Change::LoadScript(b) => vec![RECORD, b"LOAD", b],
            Change::FlushScripts => vec![RECORD, b"FLUSH"],
            Change::LoadLibrary(c) => vec![RECORD, b"FUNCTION-LOAD", c],
            Change::DeleteLibrary(n) => vec![RECORD, b"FUNCTION-DELETE", n],
            Change::FlushLibraries => vec![RECORD, b"FUNCTION-FLUSH"],
        }
    }

    /// Parses a record's arguments (`args[0]` is [`RECORD`]).
    pub fn parse(args: &[&'a [u8]]) -> Option<Self> {
        match args {
            [_, b"LOAD", body] => Some(Change::LoadScript(body)),
            [_, b"FLUSH"] => Some(Change::FlushScripts),
            [_, b"FUNCTION-LOAD", code] => Some(Change::LoadLibrary(code)),
            [_, b"FUNCTION-DELETE", name] => Some(Change::DeleteLibrary(name)),
            [_, b"FUNCTION-FLUSH"] => Some(Change::FlushLibraries),
            [_, b"FUNCTION-RESTORE", policy, codes @ ..] => Some(Change::RestoreLibraries {
                flush: match *policy {
                    b"FLUSH" => true,
                    b"KEEP" => false,
                    _ => return None,
                },
                codes: codes.to_vec(),
            }),
            _ => None,
        }
    }
}

/// A library's name, from its code's first line (`#!lua name=<name>`),
/// with Redis' errors for a malformed one.
pub fn library_name(code: &[u8]) -> Result<String, String> {
    if !code.starts_with(b"#!") {
        return Err("ERR Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid library metadata".into());
    };
    let line = String::from_utf8_lossy(&code[2..end]);
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or("");
    let mut name = None;
    for p in parts {
        match p.get(..5) {
            Some(k) if k.eq_ignore_ascii_case("name=") => {
                if name.is_some() {
                    return Err(
                        "ERR Invalid metadata value, name argument was given multiple times".into(),
                    );
                }
                name = Some(p[5..].to_string());
            }
            _ => return Err(format!("ERR Invalid metadata value given: {p}")),
        }
    }
    let Some(name) = name else {
        return Err("ERR Library name was not given".into());
    };
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Engine '{engine}' not found"));
    }
    if !valid_name(&name) {
        return Err("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long".into());
    }
    Ok(name)
}

/// Redis' rule for library and function names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Applies a logged registry record (a replica's stream, recovery, a
/// rejoin's rewind).
pub fn apply_record(node: &Node, lsn: u64, args: &[&[u8]]) {
    let Some(change) = Change::parse(args) else {
        tracing::warn!(lsn, "a malformed script record was skipped");
        return;
    };
    let mut store = node.store.borrow_mut();
    let reg = &mut store.scripts;
    match change {
        Change::LoadScript(body) => {
            reg.add_script(super::lua::sha1_hex(body), body, true);
        }
        Change::FlushScripts => {
            reg.flush_scripts();
            drop(store);
            // Compiled functions go too, as SCRIPT FLUSH drops them.
            if let Some(s) = node.scripts.borrow_mut().as_mut() {
                s.flush();
            }
        }
        Change::LoadLibrary(code) => match library_name(code) {
            Ok(name) => reg.set_library(name, code),
            Err(e) => tracing::warn!(lsn, error = %e, "a logged function library has no name"),
        },
        Change::DeleteLibrary(name) => {
            reg.delete_library(&String::from_utf8_lossy(name));
        }
        Change::FlushLibraries => reg.flush_libraries(),
        Change::RestoreLibraries { flush, codes } => {
            if flush {
                reg.flush_libraries();
            }
            for code in codes {
                match library_name(code) {
                    Ok(name) => reg.set_library(name, code),
                    Err(e) => {
                        tracing::warn!(lsn, error = %e, "a restored function library has no name")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_arguments() {
        for c in [
            Change::LoadScript(b"return 1"),
            Change::FlushScripts,
            Change::LoadLibrary(b"#!lua name=x\n"),
            Change::DeleteLibrary(b"x"),
            Change::FlushLibraries,
            Change::RestoreLibraries {
                flush: true,
                codes: vec![b"#!lua name=a\n", b"#!lua name=b\n"],
            },
            Change::RestoreLibraries {
                flush: false,
                codes: vec![],
            },
        ] {
            assert_eq!(Change::parse(&c.args()), Some(c));
        }
        assert_eq!(Change::parse(&[RECORD, b"LOAD"]), None);
        assert_eq!(Change::parse(&[RECORD, b"NOPE", b"x"]), None);
    }

    #[test]
    fn a_script_loaded_locally_is_logged_once_it_is_added_as_logged() {
        let mut r = ScriptRegistry::default();
        assert!(r.add_script("a".into(), b"return 1", false));
        assert_eq!(r.logged_scripts().count(), 0);
        assert!(!r.add_script("a".into(), b"return 1", true));
        assert_eq!(
            r.logged_scripts().collect::<Vec<_>>(),
            vec![&b"return 1"[..]]
        );
        r.flush_scripts();
        assert!(r.script("a").is_none());
    }
}
