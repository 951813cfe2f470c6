//! Fuzz targets for Tessera's readers of untrusted bytes. Each target takes
//! raw bytes and must neither panic nor allocate past [`alloc_cap::CAP`]:
//! the driver (`src/main.rs`, libFuzzer) aborts on either and keeps the
//! input. How to run and add targets: docs/testing.md.

pub mod alloc_cap;
mod targets;

/// A fuzz target, by the name `make fuzz` and the corpus directories use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The RESP request parser (`node::resp`).
    Resp,
    /// The log: segment validation at recovery, records decoded in place.
    Wal,
    /// A snapshot section: keys and values of every type.
    Snapshot,
    /// The replication stream a replica reads and applies.
    Replication,
    /// The admin API's JSON bodies and query parameters.
    Admin,
    /// A sequence of commands against an in-process node.
    Commands,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Resp,
        Target::Wal,
        Target::Snapshot,
        Target::Replication,
        Target::Admin,
        Target::Commands,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Resp => "resp",
            Target::Wal => "wal",
            Target::Snapshot => "snapshot",
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
            Target::Replication => targets::replication(data),
            Target::Admin => targets::admin(data),
            Target::Commands => targets::commands(data),
        }
    }
}
