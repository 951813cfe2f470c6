//! Fuzz targets for Tessera's readers of untrusted bytes. Each target takes
//! raw bytes and must neither panic nor allocate past [`alloc_cap::CAP`]:
//! the driver (`src/main.rs`, libFuzzer) aborts on either and keeps the
//! input. How to run and add targets: docs/testing.md.

pub mod alloc_cap;
mod targets;

pub use targets::snapshot_file_bytes;

/// A fuzz target, by the name `make fuzz` and the corpus directories use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The RESP request parser (`node::resp`).
    Resp,
    /// The log: segment validation at recovery, records decoded in place.
    Wal,
    /// A snapshot section: keys and values of every type.
    Snapshot,
    /// A whole snapshot file: header, sections, scripts, footer, checksums.
    SnapshotFile,
    /// The replication stream a replica reads and applies.
    Replication,
    /// The admin API's JSON bodies and query parameters.
    Admin,
    /// A sequence of commands against an in-process node.
    Commands,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Resp,
        Target::Wal,
        Target::Snapshot,
        Target::SnapshotFile,
        Target::Replication,
        Target::Admin,
        Target::Commands,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Resp => "resp",
            Target::Wal => "wal",
            Target::Snapshot => "snapshot",
            Target::SnapshotFile => "snapshot-file",
            Target::Replication => "replication",
            Target::Admin => "admin",
            Target::Commands => "commands",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The target `TESSERA_FUZZ_TARGET` names (read once).
    pub fn from_env() -> Self {
        static T: std::sync::OnceLock<Target> = std::sync::OnceLock::new();
        *T.get_or_init(|| {
            let name = std::env::var("TESSERA_FUZZ_TARGET").unwrap_or_default();
            Self::from_name(&name).unwrap_or_else(|| {
                let all: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                eprintln!("TESSERA_FUZZ_TARGET={name:?}: not one of {all:?}");
                std::process::exit(2)
            })
        })
    }

    /// Runs one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Resp => targets::resp(data),
            Target::Wal => targets::wal(data),
            Target::Snapshot => targets::snapshot(data),
            Target::SnapshotFile => targets::snapshot_file(data),
            Target::Replication => targets::replication(data),
            Target::Admin => targets::admin(data),
            Target::Commands => targets::commands(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn corpus(target: Target) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target.name());
        let mut out = vec![];
        for e in std::fs::read_dir(&dir).expect("a seed corpus per target") {
            let p = e.expect("dir entry").path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            out.push((name.unwrap_or_default(), std::fs::read(&p).expect("seed")));
        }
        out
    }

    #[test]
    fn every_seed_runs_through_its_target() {
        for t in Target::ALL {
            let seeds = corpus(t);
            assert!(!seeds.is_empty(), "no seeds for {}", t.name());
            for (_, data) in seeds {
                t.run(&data);
            }
        }
    }

    fn seed(target: Target, name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target.name())
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn text(replies: &[Vec<u8>]) -> Vec<String> {
        replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Scripts run in the `commands` target (none is left out), and an
    /// endless one (plain, pcall'd, calling commands, a function, a
    /// library's load) fails once past the input's instruction budget, as
    /// does every script after it.
    #[test]
    fn command_seeds_run_scripts_and_bound_their_loops() {
        let budget = |r: &str| r.contains("fuzzing instruction budget");
        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "eval-loops",
        )));
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(r[0], ":1000\r\n");
        assert_eq!(r[1], ":100000\r\n");
        assert!(r[2].starts_with("-NOTBUSY"), "{}", r[2]);
        assert!(budget(&r[3]), "{}", r[3]);
        assert!(budget(&r[4]), "the budget is per input: {}", r[4]);

        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "eval-pcall-loop",
        )));
        assert!(budget(&r[0]) && budget(&r[1]), "{r:?}");
        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "eval-call-loop",
        )));
        assert!(budget(&r[0]), "{r:?}");
        let incrs: u64 = r[1]
            .trim_end()
            .rsplit('\n')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("GET n: {r:?}"));
        assert!(incrs > 1000, "the loop's calls ran: {incrs}");

        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "functions",
        )));
        assert_eq!(r[0], "$3\r\nlib\r\n", "FUNCTION LOAD: {r:?}");
        assert_eq!(r[1], "+OK\r\n", "FCALL put");
        assert_eq!(r[2], "$1\r\nv\r\n", "FCALL get");
        assert_eq!(r[3], "$1\r\nv\r\n", "FCALL_RO ro");
        assert!(budget(&r[6]), "FCALL spin: {}", r[6]);
        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "function-load-loop",
        )));
        assert!(budget(&r[0]), "a looping library: {r:?}");
        assert_eq!(r[1], "*0\r\n", "not loaded");

        let r = text(&targets::command_replies(&seed(
            Target::Commands,
            "eval-libs",
        )));
        assert!(r.iter().all(|x| !x.starts_with('-')), "{r:?}");
        let r = text(&targets::command_replies(&seed(Target::Commands, "eval")));
        assert_eq!(r[1], "*3\r\n$1\r\n1\r\n:2\r\n+x\r\n", "{r:?}");
    }

    /// The snapshot-file seeds are whole valid files (so fuzzing starts
    /// past every checksum), whether or not the harness fixes the CRCs.
    #[test]
    fn snapshot_file_seeds_load_whole() {
        for (name, data) in corpus(Target::SnapshotFile) {
            for fix in [0u8, 1] {
                let mut d = data.clone();
                d[0] = (d[0] & !1) | fix;
                let b = snapshot_file_bytes(&d).expect("a file");
                let mut store = tessera::node::store::Store::new();
                if let Err(e) = tessera::node::snapshot::load_bytes(&b, &mut store) {
                    panic!("{name} (fix {fix}): {e}");
                }
            }
        }
    }
}
